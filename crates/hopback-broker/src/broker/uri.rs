//! Credential stripping for broker code: [`crate::redact`] under its historical path.

pub use crate::redact::{redact, scrub};
