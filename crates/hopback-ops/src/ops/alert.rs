//! Alerts in the ledger: the console records every alert it raises and clears, so the incident
//! timeline and the post-mortem's "Alerts" section show them (docs/architecture.md,
//! "Operations"). A read-only profile records nothing.

use super::{OpContext, OpError};
use crate::ledger::{Event, EventKind};

/// One alert raised or cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// Namespace.
    pub namespace: String,
    /// Version, for per-version alerts.
    pub version: Option<String>,
    /// The alert's stable tag (`error`, `backlog`, `consumers`, `dlq`, `unrouted`).
    pub metric: String,
    /// One line saying what is wrong (terminal-safe).
    pub text: String,
    /// Raised (true) or cleared (false).
    pub raised: bool,
}

/// Append the alert to the ledger.
pub async fn record(cx: &OpContext, a: &AlertRecord) -> Result<Event, OpError> {
    cx.require_writable("record an alert")?;
    let kind = if a.raised {
        EventKind::AlertRaised
    } else {
        EventKind::AlertCleared
    };
    let e = cx
        .event(kind, Some(&a.namespace))
        .params(serde_json::json!({
            "alert": a.text,
            "metric": a.metric,
            "version": a.version,
        }));
    cx.journal_outcome(e, "the alert").await
}
