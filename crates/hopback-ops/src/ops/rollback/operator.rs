//! The rollback's operator (docs/architecture.md, "Stopping a running rollback step"): the
//! decision points the engine asks, the answers, the progress updates it reports, and the
//! [`Operator`] trait the CLI, the console and the drill implement ([`AutoOperator`] for `--yes`).

use super::*;

/// What kind of question a decision point asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A `confirm` step: go on with the plan?
    Confirm,
    /// A destructive step (evicting workers) needs a yes.
    Destructive,
    /// Dead letters: replay, keep or export?
    DlqChoice,
    /// A step timed out (e.g. no consumers came): keep waiting, skip, or abort?
    Timeout,
}

/// A question to the operator, with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionPoint {
    /// Rollback id.
    pub rollback_id: String,
    /// 0-based step index.
    pub step_index: usize,
    /// Step title.
    pub step_title: String,
    /// Kind of question.
    pub kind: DecisionKind,
    /// The question.
    pub question: String,
    /// Evidence lines (error rates, depths, gate, counts) — already terminal-safe.
    pub evidence: Vec<String>,
}

/// The operator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go on (for a timeout: keep waiting).
    Continue,
    /// Skip this step.
    Skip,
    /// Stop the rollback here (state stays consistent; the report says what it is).
    Abort,
    /// For dead letters: what to do with them.
    Choose(DlqChoice),
}

impl Decision {
    /// The answer in words, as the operator would give it (`replay the dead letters to the
    /// target version`, `roll back / go on`, …).
    pub fn describe(&self) -> &'static str {
        match self {
            Decision::Continue => "go on",
            Decision::Skip => "skip this step",
            Decision::Abort => "abort",
            Decision::Choose(crate::ops::plan::DlqChoice::Replay) => {
                "replay the dead letters to the target version"
            }
            Decision::Choose(crate::ops::plan::DlqChoice::Keep) => "keep the dead letters",
            Decision::Choose(crate::ops::plan::DlqChoice::Export) => {
                "export the dead letters, then remove them from the DLQ"
            }
            Decision::Choose(crate::ops::plan::DlqChoice::Ask) => "ask",
        }
    }
}

pub use crate::model::rollback::StepState;

/// Progress the engine reports while it runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// The rollback started (or resumed) with this plan.
    Started {
        /// Rollback id.
        rollback_id: String,
        /// Plan.
        plan: Plan,
        /// Evidence.
        evidence: Vec<String>,
        /// One line per step, names resolved (see [`crate::ops::plan::StepKind::describe`]).
        descriptions: Vec<String>,
    },
    /// A step changed state.
    Step {
        /// Index.
        index: usize,
        /// New state.
        state: StepState,
        /// Detail line.
        detail: String,
    },
    /// Progress inside a step (e.g. messages moved).
    Progress {
        /// Index.
        index: usize,
        /// Done so far.
        done: u64,
        /// Total, if known.
        total: Option<u64>,
    },
    /// Finished.
    Finished {
        /// How.
        outcome: RollbackOutcome,
    },
}

/// Answers decision points and watches progress.
pub trait Operator: Send + Sync {
    /// Answer a decision point.
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision>;
    /// Watch progress (default: ignore).
    fn observe(&self, _update: &Update) {}
    /// A signal that turns `true` when the operator asks to stop the running step (the console's
    /// `x`); `None` (the default): this operator never stops a step. A stopped move ends at a
    /// consistent point (every message acked only after its confirm); the rollback then ends as
    /// aborted and says what state it left.
    fn stop_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// Resolves once `signal` is `true`; never without a signal (or when its sender is gone).
pub(crate) async fn stop_requested(signal: Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(mut rx) = signal
        && rx.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await
}

/// How long a stopped step may take to reach its consistent point (a move finishing the
/// messages it holds) before it is dropped.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(15);

/// The non-interactive operator of `--yes` and the drill's script: continue at every decision,
/// replay dead letters, abort when a step times out.
#[derive(Debug, Clone, Default)]
pub struct AutoOperator {
    /// Answers given, for tests and the drill's report.
    pub answered: Arc<Mutex<Vec<(DecisionKind, Decision)>>>,
}

impl Operator for AutoOperator {
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision> {
        let d = match point.kind {
            DecisionKind::Confirm | DecisionKind::Destructive => Decision::Continue,
            DecisionKind::DlqChoice => Decision::Choose(DlqChoice::Replay),
            DecisionKind::Timeout => Decision::Abort,
        };
        if let Ok(mut a) = self.answered.lock() {
            a.push((point.kind, d));
        }
        Box::pin(async move { d })
    }
}
