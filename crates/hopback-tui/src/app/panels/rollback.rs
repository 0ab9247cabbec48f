//! The rollback view's state: the checklist the engine's updates fill in, the offer to resume an
//! unfinished rollback, the decision points (one confirm dialog whose buttons hold the engine's
//! decisions, with letter shortcuts from the keymap's `Rollback` context), and the outcome.

use super::Reply;
use super::confirm::{Answer, Button, ConfirmDialog, Tone};
use crate::app::action::Action;
use crate::app::keymap::Keymap;
use crate::app::protocol::OpRequest;
use crate::app::state::Level;
use crate::model::snapshot::NamespaceSnapshot;
use crate::ops::plan::DlqChoice;
use crate::ops::rollback::{Decision, DecisionKind, DecisionPoint, RollbackReport};
use crate::text::sanitize;

/// Engine types the view draws (re-exported so the views need nothing from `ops`).
use crate::model::rollback::{RollbackOutcome, StepState};
use crate::ops::rollback::Update;

/// One checklist row.
#[derive(Debug, Clone, PartialEq)]
pub struct RbStep {
    /// Title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// State.
    pub state: StepState,
    /// Detail line.
    pub detail: String,
    /// Progress inside the step (done, total).
    pub progress: Option<(u64, Option<u64>)>,
}

/// What the resume offer can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferChoice {
    /// Resume the unfinished rollback with this id.
    Resume(String),
    /// Start a new rollback.
    StartNew,
}

/// The rollback view's stage.
#[derive(Debug, Clone, PartialEq)]
pub enum RbStage {
    /// Looking in the ledger for an unfinished rollback.
    Checking,
    /// Offer to resume: one line per unfinished rollback, then Start new / Cancel.
    Offer {
        /// The offer.
        dialog: Box<ConfirmDialog<OfferChoice>>,
    },
    /// The engine runs.
    Running,
    /// Ended.
    Finished,
}

/// A decision point the engine waits on.
#[derive(Debug, Clone)]
pub struct PendingDecision {
    /// What the engine asks.
    pub point: DecisionPoint,
    /// Its buttons (each holds the decision it answers).
    pub dialog: ConfirmDialog<Decision>,
}

/// The rollback view.
#[derive(Debug, Clone)]
pub struct RollbackPanel {
    /// Namespace.
    pub ns: String,
    /// From version.
    pub from: String,
    /// To version.
    pub to: String,
    /// Stage.
    pub stage: RbStage,
    /// Rollback id.
    pub id: Option<String>,
    /// Plan name.
    pub plan: String,
    /// Steps.
    pub steps: Vec<RbStep>,
    /// Evidence.
    pub evidence: Vec<String>,
    /// A pending decision.
    pub decision: Option<PendingDecision>,
    /// The outcome.
    pub outcome: Option<RollbackOutcome>,
    /// A start failure.
    pub error: Option<String>,
}

/// Buttons of a decision point: (label, action config name of its key, decision).
pub fn decision_buttons(kind: DecisionKind) -> Vec<(&'static str, &'static str, Decision)> {
    match kind {
        // Explicit answers only: no "Skip" where skipping would mean going on (the first
        // question, a timed-out wait, the dead-letter choice — keeping them is the "no").
        DecisionKind::DlqChoice => vec![
            ("Abort", "decide_abort", Decision::Abort),
            ("Keep", "decide_keep", Decision::Choose(DlqChoice::Keep)),
            (
                "Export",
                "decide_export",
                Decision::Choose(DlqChoice::Export),
            ),
            (
                "Replay to old",
                "decide_replay",
                Decision::Choose(DlqChoice::Replay),
            ),
        ],
        DecisionKind::Timeout => vec![
            ("Abort", "decide_abort", Decision::Abort),
            ("Keep waiting", "decide_continue", Decision::Continue),
        ],
        DecisionKind::Confirm => vec![
            ("Abort", "decide_abort", Decision::Abort),
            ("Roll back", "decide_continue", Decision::Continue),
        ],
        DecisionKind::Destructive => vec![
            ("Abort", "decide_abort", Decision::Abort),
            ("Leave them", "decide_skip", Decision::Skip),
            ("Close them", "decide_continue", Decision::Continue),
        ],
    }
}

/// The decision a `Rollback`-context action stands for.
fn decision_of(action: &Action) -> Option<Decision> {
    Some(match action {
        Action::DecideContinue => Decision::Continue,
        Action::DecideSkip => Decision::Skip,
        Action::DecideAbort => Decision::Abort,
        Action::DecideReplay => Decision::Choose(DlqChoice::Replay),
        Action::DecideKeep => Decision::Choose(DlqChoice::Keep),
        Action::DecideExport => Decision::Choose(DlqChoice::Export),
        _ => return None,
    })
}

/// Describe a rollback outcome in one line.
pub fn outcome_line(o: &RollbackOutcome) -> String {
    match o {
        RollbackOutcome::Done => "done: every step completed and the recovery was verified".into(),
        RollbackOutcome::VerificationFailed { step, reason } => format!(
            "VERIFICATION FAILED at step {}: {}",
            step + 1,
            sanitize(reason)
        ),
        RollbackOutcome::Failed { step, reason } => {
            format!("FAILED at step {}: {}", step + 1, sanitize(reason))
        }
        RollbackOutcome::Aborted { step, state } => format!(
            "ABORTED at step {}; state left: {}",
            step + 1,
            sanitize(state)
        ),
    }
}

impl RollbackPanel {
    fn empty(ns: String, from: String, to: String, stage: RbStage) -> Self {
        RollbackPanel {
            ns,
            from,
            to,
            stage,
            id: None,
            plan: String::new(),
            steps: Vec::new(),
            evidence: Vec::new(),
            decision: None,
            outcome: None,
            error: None,
        }
    }

    /// A rollback of `ns` about to start: back to the oldest version, from the newest version
    /// still behind the gate (else the newest); the ledger is checked for an unfinished one first.
    pub fn checking(ns: String, n: Option<&NamespaceSnapshot>) -> Self {
        Self::checking_advised(ns, n, None)
    }

    /// [`RollbackPanel::checking`], going `from → to` when the alerts advise it (the failing
    /// canary back to a healthy older version) instead of guessing from the gate.
    pub fn checking_advised(
        ns: String,
        n: Option<&NamespaceSnapshot>,
        advice: Option<&crate::app::alerts::RollbackAdvice>,
    ) -> Self {
        if let Some(a) = advice {
            return Self::empty(ns, a.from.clone(), a.to.clone(), RbStage::Checking);
        }
        let versions = super::versions_of(n);
        let to = versions.first().cloned().unwrap_or_else(|| "v1".into());
        let bound: Vec<String> = n
            .and_then(|n| n.gate.as_ref())
            .map(|g| g.bound().map(|(v, _)| v.clone()).collect())
            .unwrap_or_default();
        let from = versions
            .iter()
            .rev()
            .find(|v| **v != to && bound.contains(v))
            .or_else(|| versions.iter().rev().find(|v| **v != to))
            .cloned()
            .unwrap_or_else(|| "v2".into());
        Self::empty(ns, from, to, RbStage::Checking)
    }

    /// The namespace of a rollback this panel has open — being checked, offered, running or
    /// waiting at a decision — `None` once it finished.
    pub fn open_namespace(&self) -> Option<&str> {
        (self.stage != RbStage::Finished).then_some(self.ns.as_str())
    }

    /// The offer of unfinished rollbacks found at console start (newest → oldest version).
    pub fn offered(
        ns: String,
        n: Option<&NamespaceSnapshot>,
        candidates: Vec<(String, String)>,
    ) -> Self {
        let versions = super::versions_of(n);
        let from = versions.last().cloned().unwrap_or_else(|| "v2".into());
        let to = versions.first().cloned().unwrap_or_else(|| "v1".into());
        let mut rb = Self::empty(ns, from, to, RbStage::Checking);
        rb.offer(candidates);
        rb
    }

    /// Offer to resume one of `candidates` (id, description), start new, or cancel.
    pub fn offer(&mut self, candidates: Vec<(String, String)>) {
        let mut buttons: Vec<Button<OfferChoice>> = candidates
            .into_iter()
            .map(|(id, d)| {
                Button::line(format!("Resume {}", sanitize(&d)), OfferChoice::Resume(id))
            })
            .collect();
        buttons.push(Button::run(
            format!(
                "Start a new rollback {} → {}",
                sanitize(&self.from),
                sanitize(&self.to)
            ),
            OfferChoice::StartNew,
        ));
        buttons.push(Button::cancel("Cancel"));
        // The default is Cancel (issue 18): a rollback read back from the ledger is resumed
        // only by choice, and the engine then shows its whole plan and author and asks again.
        let mut dialog = ConfirmDialog::new("resume rollback", Tone::Warn, buttons)
            .hint("↑/↓/Tab move · Enter choose · Esc back");
        dialog.vertical = true;
        dialog.spacer = false;
        self.stage = RbStage::Offer {
            dialog: Box::new(dialog),
        };
    }

    fn start(&mut self) -> OpRequest {
        self.stage = RbStage::Running;
        OpRequest::RollbackStart {
            ns: self.ns.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }

    /// A dialog action: the resume offer or the decision point.
    pub fn on_dialog(&mut self, action: &Action) -> Reply {
        if let RbStage::Offer { dialog } = &mut self.stage {
            return match dialog.handle(action) {
                Answer::Confirmed {
                    action: OfferChoice::Resume(id),
                    ..
                } => {
                    self.id = Some(id.clone());
                    self.stage = RbStage::Running;
                    Reply::ask(OpRequest::RollbackResume { id })
                }
                Answer::Confirmed {
                    action: OfferChoice::StartNew,
                    ..
                } => Reply::ask(self.start()),
                Answer::Cancelled => {
                    self.stage = RbStage::Finished;
                    self.error = Some("not started".into());
                    Reply {
                        pop_view: true,
                        ..Default::default()
                    }
                }
                Answer::Escaped => Reply {
                    pop_view: true,
                    ..Default::default()
                },
                Answer::Pending | Answer::Refused(_) => Reply::default(),
            };
        }
        let Some(p) = self.decision.as_mut() else {
            return Reply::default();
        };
        let answer = match decision_of(action) {
            Some(wanted) => p.dialog.press_where(|d| *d == wanted),
            None => p.dialog.handle(action),
        };
        match answer {
            Answer::Confirmed { action, .. } => {
                self.decision = None;
                Reply::ask(OpRequest::RollbackDecide(action))
            }
            // Esc hides the view; the decision keeps waiting.
            Answer::Escaped => Reply {
                pop_view: true,
                ..Default::default()
            },
            _ => Reply::default(),
        }
    }

    /// The ledger check: start right away, or offer to resume.
    pub fn on_resumable(&mut self, candidates: Vec<(String, String)>) -> Reply {
        if candidates.is_empty() {
            Reply::ask(self.start())
        } else {
            self.offer(candidates);
            Reply::default()
        }
    }

    /// The engine waits for a decision: its buttons, labelled with their keys.
    pub fn on_decision(&mut self, point: DecisionPoint, keymap: &Keymap) {
        let buttons = decision_buttons(point.kind)
            .into_iter()
            .map(|(label, key, d)| Button::run(format!("{label} ({})", keymap.first_key(key)), d))
            .collect();
        let mut dialog = ConfirmDialog::new("decision", Tone::Alert, buttons).hint(
            "Tab/←/→ move · Enter or the letter chooses · Abort stops here and says what state it leaves · Esc hides (the decision waits)",
        );
        dialog.spacer = false;
        self.decision = Some(PendingDecision { point, dialog });
    }

    /// The rollback ended: the checklist's final states and the status line.
    pub fn on_done(&mut self, r: &RollbackReport) -> (Level, String) {
        self.stage = RbStage::Finished;
        self.decision = None;
        self.id = Some(r.rollback_id.clone());
        for s in &r.steps {
            if let Some(row) = self.steps.get_mut(s.index) {
                row.state = s.state;
                row.detail = s.detail.clone();
            }
        }
        self.outcome = Some(r.outcome.clone());
        let level = if r.outcome == RollbackOutcome::Done {
            Level::Info
        } else {
            Level::Error
        };
        (
            level,
            format!("rollback {}: {}", r.rollback_id, outcome_line(&r.outcome)),
        )
    }

    /// The rollback could not start or resume.
    pub fn on_failed(&mut self, e: &str) {
        self.stage = RbStage::Finished;
        self.error = Some(sanitize(e).into_owned());
    }

    /// Apply an engine update to the checklist.
    pub fn apply_update(&mut self, u: &Update) {
        match u {
            Update::Started {
                rollback_id,
                plan,
                evidence,
                descriptions,
            } => {
                self.id = Some(rollback_id.clone());
                self.plan = plan.name.clone();
                self.from = plan.from.clone();
                self.to = plan.to.clone();
                self.evidence = evidence.iter().map(|e| sanitize(e).into_owned()).collect();
                self.stage = RbStage::Running;
                self.steps = plan
                    .steps
                    .iter()
                    .zip(descriptions)
                    .map(|(s, description)| RbStep {
                        title: s.title.clone(),
                        description: description.clone(),
                        state: StepState::Pending,
                        detail: String::new(),
                        progress: None,
                    })
                    .collect();
            }
            Update::Step {
                index,
                state,
                detail,
            } => {
                if let Some(s) = self.steps.get_mut(*index) {
                    s.state = *state;
                    s.detail = sanitize(detail).into_owned();
                    if *state != StepState::Running {
                        s.progress = None;
                    }
                }
            }
            Update::Progress { index, done, total } => {
                if let Some(s) = self.steps.get_mut(*index) {
                    s.progress = Some((*done, *total));
                }
            }
            Update::Finished { outcome } => {
                self.outcome = Some(outcome.clone());
                self.stage = RbStage::Finished;
            }
        }
    }
}
