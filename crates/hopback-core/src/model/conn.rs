//! The connection state the UI shows in its header.

use serde::Serialize;

/// Where the console's broker connection stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnState {
    /// First connection attempt in progress.
    Connecting,
    /// Connected since this unix time (ms).
    Connected { since_ms: i64 },
    /// Lost; retrying since this unix time (ms).
    Reconnecting {
        since_ms: i64,
        attempt: u32,
        last_error: String,
    },
    /// Given up (e.g. authentication refused): needs the operator.
    Failed { reason: String },
}

impl ConnState {
    /// Is the data on screen live?
    pub fn is_live(&self) -> bool {
        matches!(self, ConnState::Connected { .. })
    }
    /// A short label: `connected`, `reconnecting (attempt 3)`, …
    pub fn label(&self) -> String {
        match self {
            ConnState::Connecting => "connecting".into(),
            ConnState::Connected { .. } => "connected".into(),
            ConnState::Reconnecting { attempt, .. } => format!("reconnecting (attempt {attempt})"),
            ConnState::Failed { reason } => format!("failed: {reason}"),
        }
    }
}
