//! Operations (DESIGN §3): gate flips, moves/replays, purges, rollbacks. Headless — the CLI, the
//! console, the rollback engine and the drill all call the same functions — and every one of them
//! is journaled in the ledger.

pub mod gate;
pub mod mover;
pub mod plan;
pub mod purge;
pub mod rollback;
