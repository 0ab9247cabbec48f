//! Pure data: the fleet snapshot, rates, x-death parsing, the gate's weights and the error-rate
//! maths. No I/O, no ratatui, no lapin, no clap (docs/architecture.md, "Dependency rules") —
//! everything here is testable in microseconds.

pub mod canary;
pub mod conn;
pub mod deadletter;
pub mod drill;
pub mod gate;
pub mod gate_lock;
pub mod hash;
pub mod invalid;
pub mod metrics;
pub mod outcome;
pub mod rollback;
pub mod snapshot;
pub mod split;
pub mod xdeath;

pub use conn::ConnState;
pub use gate::{GateSplit, GateWeight};
pub use invalid::Invalid;
pub use snapshot::{FleetSnapshot, NamespaceSnapshot, Rates, VersionSnapshot};
