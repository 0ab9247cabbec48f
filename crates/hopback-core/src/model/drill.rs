//! Where a drill is and how its times read: plain data the console draws.

use serde::Serialize;

/// Where a drill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Creating the namespace, starting the fleet.
    Starting,
    /// Healthy canary, fault not yet injected.
    Running,
    /// Fault injected; waiting for the operator.
    Incident,
    /// v2 is off the gate; the fleet is finishing its work.
    Settling,
    /// Scored.
    Done,
}

/// `12.3 s` or `—`.
pub fn fmt_ms(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "—".to_string(),
    }
}
