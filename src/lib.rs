//! hopback — a terminal operations console for RabbitMQ worker fleets.
//!
//! The binary (`src/main.rs`) only wires; everything lives here so tests and benchmarks can call
//! it. Layout (DESIGN §7): [`config`] → [`broker`] (all I/O) → [`model`] (pure data) →
//! [`commands`] (the CLI's verbs), with [`text`] guarding the terminal from untrusted bytes.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod drill;
pub mod error;
pub mod ledger;
pub mod logging;
pub mod model;
pub mod ops;
pub mod redact;
pub mod text;
pub mod ui;
