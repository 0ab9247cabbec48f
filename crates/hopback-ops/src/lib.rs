//! hopback's operations: every change to a broker owned end to end by one function in [`ops`]
//! (guard → journal intent → act → verify → journal outcome), the event-sourced [`ledger`] they
//! journal to, and the [`drill`]'s simulated fleet. No terminal: callers ask, confirm and show.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod drill;
pub mod ledger;
pub mod ops;

pub(crate) use hopback_broker::broker;
#[allow(unused_imports)]
pub(crate) use hopback_core::{config, display_as, errln, files, model, redact, text, topology};
