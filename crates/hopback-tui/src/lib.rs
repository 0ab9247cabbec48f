//! hopback's console: the [`app`] (the `Action` vocabulary, keymap, state and its pure updates,
//! one file per panel, the runner that executes requests with the operations in tokio tasks)
//! and the [`ui`] that turns its state into ratatui widgets. It talks to brokers only through
//! the operations and the broker layer's types (no lapin or reqwest in its `Cargo.toml`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod ui;

pub(crate) use hopback_broker::broker;
#[allow(unused_imports)]
pub(crate) use hopback_core::{config, errln, files, model, redact, text, topology};
pub(crate) use hopback_ops::{drill, ledger, ops};
