//! hopback's bottom layer: plain data you can test in microseconds. The data model ([`model`]),
//! the one resolver of broker object names ([`topology`]), the validated configuration
//! ([`config`]), the one way untrusted text reaches a terminal ([`text`]), credential stripping
//! ([`redact`]) and the one way hopback writes a file ([`files`]). No async runtime, no AMQP, no
//! HTTP, no terminal: `Cargo.toml` says so, and the other crates build on this one.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// `Display` through the type's own name method (`as_str`, `name`): the enums whose names are a
/// table (`EventKind`, `Outcome`, `GroupBy`, `BodyMode`, `Scenario`) print what they parse.
#[macro_export]
macro_rules! display_as {
    ($ty:ty, $method:ident) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.$method())
            }
        }
    };
}

pub mod config;
pub mod files;
pub mod model;
pub mod redact;
pub mod text;
pub mod topology;
