//! hopback's broker layer: every AMQP and HTTP call — the session, the management API, the
//! metrics source, the mover, the shovel, the tap, TLS. It knows no operation built on it and
//! draws nothing (no ratatui, crossterm or clap in its `Cargo.toml`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod broker;

pub(crate) use hopback_core::{config, files, model, redact, text, topology};
