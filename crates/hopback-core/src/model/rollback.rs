//! What a rollback's checklist and its ending are, as plain data the console draws.

use serde::Serialize;

use super::outcome::Outcome;

/// How a rollback ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// Every step completed and every verification passed.
    Done,
    /// A verification step failed (exit 4).
    VerificationFailed {
        /// Step index.
        step: usize,
        /// Why.
        reason: String,
    },
    /// A step failed (exit 1).
    Failed {
        /// Step index.
        step: usize,
        /// Why.
        reason: String,
    },
    /// The operator aborted (exit 3).
    Aborted {
        /// Step index.
        step: usize,
        /// The state left behind.
        state: String,
    },
}

impl RollbackOutcome {
    /// The ledger outcome of the rollback's finishing event.
    pub fn ledger_outcome(&self) -> Outcome {
        match self {
            RollbackOutcome::Done => Outcome::Ok,
            RollbackOutcome::VerificationFailed { .. } => Outcome::VerificationFailed,
            RollbackOutcome::Failed { .. } => Outcome::Failed,
            RollbackOutcome::Aborted { .. } => Outcome::Cancelled,
        }
    }
}

/// State of one step in the checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached.
    Pending,
    /// In progress.
    Running,
    /// Done now.
    Done,
    /// Found already done (by its check, or by the journal of an earlier run).
    AlreadyDone,
    /// Skipped by the operator.
    Skipped,
    /// Failed.
    Failed,
}

impl StepState {
    /// Finished successfully (done, already done or skipped)?
    pub fn completed(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::AlreadyDone | StepState::Skipped
        )
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::AlreadyDone => "already_done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
        }
    }
}
