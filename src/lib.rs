//! hopback — a terminal operations console for RabbitMQ worker fleets.
//!
//! The binary (`src/main.rs`) only wires; everything lives here so tests and benchmarks can call
//! it. The parts and their dependency rules are in `docs/architecture.md`: [`config`] and
//! [`topology`] (the one name resolver) at the bottom, [`broker`] (all AMQP and HTTP, including
//! the mover and the tap) and [`ledger`] above them, [`ops`] (every operation owned end to end)
//! on top, and three callers — [`commands`] (the CLI), [`app`]/[`ui`] (the console) and
//! [`drill`]. [`model`] is pure data; [`text`] guards the terminal from untrusted bytes.
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

pub mod app;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod drill;
pub mod error;
pub mod files;
pub mod ledger;
pub mod logging;
pub mod model;
pub mod ops;
pub mod redact;
pub mod text;
pub mod topology;
pub mod ui;
