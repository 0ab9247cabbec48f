//! hopback — a terminal operations console for RabbitMQ worker fleets.
//!
//! The binary (`src/main.rs`) only wires; the CLI verbs ([`cli`], [`commands`]) and the edge
//! where typed errors become exit codes ([`error`]) live here. The layers are crates of the
//! workspace (docs/architecture.md): `hopback-core` (model, names, config, text), `hopback-broker`
//! (all AMQP and HTTP), `hopback-ops` (operations, ledger, drill) and `hopback-tui` (the
//! console). They are re-exported under their module names so tests and benchmarks reach every
//! layer as `hopback::broker`, `hopback::ops`, ….
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub use hopback_broker::broker;
pub use hopback_core::{
    config, display_as, err, errln, files, model, out, outln, redact, text, topology,
};
pub use hopback_ops::{drill, ledger, ops};
pub use hopback_tui::{app, ui};

pub mod cli;
pub mod commands;
pub mod error;
pub mod logging;
