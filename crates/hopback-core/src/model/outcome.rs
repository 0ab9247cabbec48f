//! How an operation ended, as the ledger records it and every view shows it.

use serde::{Deserialize, Serialize};

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done and verified.
    #[default]
    Ok,
    /// Tried and failed (the event says how far it got).
    Failed,
    /// Refused before anything changed (read-only, guard, not confirmed).
    Refused,
    /// A long operation began; a later event says how it ended.
    Started,
    /// Stopped by the operator.
    Cancelled,
    /// Applied, but the read-back differs from what was asked.
    VerificationFailed,
    /// Written by a newer hopback.
    #[serde(other)]
    Unknown,
}

impl Outcome {
    /// The snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Started => "started",
            Outcome::Cancelled => "cancelled",
            Outcome::VerificationFailed => "verification_failed",
            Outcome::Unknown => "unknown",
        }
    }
}

crate::display_as!(Outcome, as_str);
