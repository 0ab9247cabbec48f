//! The operation views as components: one file per panel — [`gate`], [`dlq`] (dead-letter
//! browser), [`inspector`], [`moves`] (running replays), [`timeline`], [`rollback`], [`drill`],
//! [`feed`] (the live ledger feed) — each with its state, its key handling and its handling of the
//! runner's answers, and one shared [`confirm`] dialog. This module routes actions and answers to
//! them and applies what they return ([`Reply`]).
//!
//! Plain data plus the pure functions that change it (no ratatui, no lapin, no I/O). Work on the
//! broker is *asked for*: a panel returns an [`OpRequest`], the loop hands it to [`super::ops`],
//! and the answer comes back as an [`OpMsg`] (see [`super::protocol`] and `docs/architecture.md`).

pub mod canary;
pub mod confirm;
pub mod describe;
pub mod dlq;
pub mod drill;
pub mod feed;
pub mod gate;
pub mod inspector;
pub mod log;
pub mod moves;
pub mod rollback;
pub mod timeline;

pub use describe::DescribePanel;
pub use dlq::{DLQ_PAGE_SIZE, DlqDialog, DlqLevel, DlqPanel};
pub use drill::DrillPanel;
pub use feed::{FEED_LEN, FeedItem, FeedState};
pub use gate::{GATE_PRESETS, GatePanel, GatePlan, GateStage};
pub use inspector::InspectorPanel;
pub use log::LogPanel;
pub use moves::MoveJob;
pub use rollback::{RbStage, RbStep, RollbackPanel};
pub use timeline::{TIMELINE_MAX, TimelinePanel};

use super::action::Action;
use super::keymap::Context;
use super::protocol::{OpMsg, OpRequest};
use super::state::{AppState, Effect, Level, View};
use crate::model::deadletter::DeadLetterId;
use crate::model::snapshot::NamespaceSnapshot;
use crate::text::sanitize;

/// What the console says to a second replay while one runs.
pub const REPLAY_RUNNING: &str = "a replay is already running (p pause, x stop)";

/// What a panel reads of the rest of the console: the profile's rules, the clock, its
/// namespace's last snapshot and whether a replay runs — nothing else of [`AppState`].
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    /// Profile name.
    pub profile: &'a str,
    /// Mutations refused.
    pub read_only: bool,
    /// Production profile (typed confirmations).
    pub production: bool,
    /// Now (unix ms).
    pub now_ms: i64,
    /// The panel's namespace in the last snapshot.
    pub ns: Option<&'a NamespaceSnapshot>,
    /// A replay (move) is running.
    pub job_running: bool,
    /// Versions of the panel's namespace with an active alert of their own (error rate, no
    /// consumers, backlog) → why, in a few words: never a default target, always warned about.
    pub failing: std::collections::BTreeMap<String, String>,
}

impl Ctx<'_> {
    /// `refusing to WHAT: profile `p` is read-only (TAIL)`.
    pub fn read_only_refusal(&self, what: &str, tail: &str) -> String {
        format!(
            "refusing to {what}: profile `{}` is read-only{tail}",
            sanitize(self.profile)
        )
    }

    /// Why a move or removal may not start now: a read-only profile (`refusing to WHAT …TAIL`) or
    /// a replay already running (`busy`). `None`: it may.
    pub fn refuse_mutation(&self, what: &str, tail: &str, busy: &str) -> Option<Reply> {
        if self.read_only {
            Some(Reply::say(Level::Error, self.read_only_refusal(what, tail)))
        } else if self.job_running {
            Some(Reply::say(Level::Warn, busy))
        } else {
            None
        }
    }
}

/// A panel opening another view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Open {
    /// The inspector on one dead letter.
    Inspector {
        /// Namespace.
        ns: String,
        /// The message.
        id: DeadLetterId,
        /// Where the list showed it (display only).
        position: u64,
    },
    /// The describe view of one timeline event.
    Describe(Box<DescribePanel>),
}

/// What a panel wants done after an action or an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// Work for the runner.
    pub requests: Vec<OpRequest>,
    /// A status line message.
    pub say: Option<(Level, String)>,
    /// Close the view on top.
    pub pop_view: bool,
    /// Open another view.
    pub open: Option<Open>,
}

impl Reply {
    /// Ask the runner for `r`.
    pub fn ask(r: OpRequest) -> Self {
        Self {
            requests: vec![r],
            ..Default::default()
        }
    }
    /// Say `text`.
    pub fn say(level: Level, text: impl Into<String>) -> Self {
        Self {
            say: Some((level, text.into())),
            ..Default::default()
        }
    }
    /// Also ask for `r`.
    pub fn and_ask(mut self, r: OpRequest) -> Self {
        self.requests.push(r);
        self
    }
    /// Also say `text`.
    pub fn and_say(mut self, level: Level, text: impl Into<String>) -> Self {
        self.say = Some((level, text.into()));
        self
    }
}

/// Everything the operation views keep.
#[derive(Debug, Clone, Default)]
pub struct OpsState {
    /// Requests for the ops runner (drained by the loop).
    pub requests: Vec<OpRequest>,
    /// This console's operator name (ledger identity).
    pub operator: String,
    /// This console's host.
    pub host: String,
    /// Gate panel.
    pub gate: Option<GatePanel>,
    /// Dead-letter browser.
    pub dlq: Option<DlqPanel>,
    /// Inspector.
    pub inspector: Option<InspectorPanel>,
    /// The current / last move.
    pub job: Option<MoveJob>,
    /// Timeline.
    pub timeline: TimelinePanel,
    /// The describe view (one timeline event, every field).
    pub describe: Option<DescribePanel>,
    /// The log view.
    pub log: LogPanel,
    /// Rollback.
    pub rollback: Option<RollbackPanel>,
    /// Drill.
    pub drill: Option<DrillPanel>,
    /// The live ledger feed and which of its events are this console's own.
    pub feed: FeedState,
    /// The canaries seen on the feed (the gate view shows its namespace's).
    pub canary: canary::CanaryBoard,
}

/// Versions of a namespace, oldest first (`v1, v2` when unknown).
pub fn versions_of(n: Option<&NamespaceSnapshot>) -> Vec<String> {
    fn number(v: &str) -> u32 {
        v.trim_start_matches('v').parse().unwrap_or(0)
    }
    let mut v: Vec<String> = n
        .map(|n| n.versions.iter().map(|v| v.version.clone()).collect())
        .unwrap_or_default();
    v.sort_by_key(|x| (number(x), x.clone()));
    if v.is_empty() {
        v = vec!["v1".into(), "v2".into()];
    }
    v
}

/// The dialog that has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modal {
    Drill,
    Gate,
    DeadLetters,
    RollbackOffer,
    RollbackDecision,
}

impl AppState {
    /// What a panel may read (see [`Ctx`]), next to the panels themselves.
    fn parts(&mut self, ns: Option<&str>) -> (Ctx<'_>, &mut OpsState) {
        let mut failing: std::collections::BTreeMap<String, String> = ns
            .map(|n| {
                self.alerts
                    .active
                    .iter()
                    .filter(|a| a.ns == n)
                    .filter_map(|a| Some((a.version.clone()?, a.kind.short())))
                    .collect()
            })
            .unwrap_or_default();
        // A version failing right now counts before its alert's window has passed: no dialog
        // may default towards it in the meantime.
        if let Some(n) = ns.and_then(|n| self.snapshot.as_ref()?.namespace(n)) {
            let threshold = self.thresholds.of(&n.name).error_rate_pct;
            for v in &n.versions {
                if let Some(pct) = v.error_rate.map(|e| e * 100.0).filter(|p| *p > threshold) {
                    failing
                        .entry(v.version.clone())
                        .or_insert_with(|| format!("error rate {pct:.0}% now"));
                }
            }
        }
        let ctx = Ctx {
            failing,
            profile: &self.profile,
            read_only: self.read_only,
            production: self.production,
            now_ms: self.now_ms,
            ns: ns.and_then(|n| self.snapshot.as_ref()?.namespace(n)),
            job_running: self.ops.job.as_ref().is_some_and(MoveJob::running),
        };
        (ctx, &mut self.ops)
    }

    fn ask(&mut self, r: OpRequest) {
        self.ops.requests.push(r);
    }

    /// Apply what a panel returned.
    fn run(&mut self, reply: Reply) {
        if let Some((level, text)) = reply.say {
            self.say(level, text);
        }
        self.ops.requests.extend(reply.requests);
        if reply.pop_view {
            self.views.pop();
        }
        match reply.open {
            Some(Open::Inspector { ns, id, position }) => {
                self.ops.inspector = Some(InspectorPanel::new(ns.clone(), id.clone(), position));
                self.ask(OpRequest::DlqInspect { ns: ns.clone(), id });
                self.push_view(View::Inspector { ns });
            }
            Some(Open::Describe(d)) => {
                self.ops.describe = Some(*d);
                self.push_view(View::Describe);
            }
            None => {}
        }
    }

    /// Requests for the runner (the loop calls this after every key and message).
    pub fn take_requests(&mut self) -> Vec<OpRequest> {
        std::mem::take(&mut self.ops.requests)
    }

    fn refuse_read_only(&mut self, what: &str) -> bool {
        if self.read_only {
            let m = self
                .parts(None)
                .0
                .read_only_refusal(what, " (nothing was changed)");
            self.say(Level::Error, m);
        }
        self.read_only
    }

    fn push_view(&mut self, v: View) {
        if self.view() == &v {
            return;
        }
        if matches!(self.view(), View::Help) {
            self.views.pop();
        }
        self.views.push(v);
    }

    /// Open the gate panel.
    pub fn open_gate(&mut self, ns: String) {
        self.ops.gate = Some(GatePanel::open(ns.clone(), self.namespace(&ns)));
        self.push_view(View::Gate { ns });
    }

    /// Open the dead-letter browser.
    pub fn open_dead_letters(&mut self, ns: String) {
        if self.ops.dlq.as_ref().is_none_or(|d| d.ns != ns) {
            self.ops.dlq = Some(DlqPanel::open(ns.clone(), self.namespace(&ns)));
        }
        if let Some(r) = self.ops.dlq.as_mut().map(DlqPanel::reload) {
            self.ask(r);
        }
        self.push_view(View::DeadLetters { ns });
    }

    /// Open the timeline.
    pub fn open_timeline(&mut self, ns: Option<String>) {
        self.ops.timeline = TimelinePanel {
            ns: ns.clone(),
            loading: true,
            ..Default::default()
        };
        self.ask(OpRequest::TimelineLoad { ns: ns.clone() });
        self.push_view(View::Timeline { ns });
    }

    /// Open the rollback view (resume offer first when the ledger has an unfinished one).
    pub fn open_rollback(&mut self, ns: String) {
        if let Some(rb) = &self.ops.rollback
            && rb.ns == ns
            && rb.stage != RbStage::Finished
        {
            self.push_view(View::Rollback { ns });
            return;
        }
        if self.refuse_read_only("roll back") {
            return;
        }
        if self
            .ops
            .rollback
            .as_ref()
            .is_some_and(|r| r.stage == RbStage::Running)
        {
            self.say(
                Level::Warn,
                "another rollback is running in this console; finish or abort it first",
            );
            return;
        }
        // `r` after this console's rollback of `ns` was aborted resumes that rollback (as the
        // view's "continue later" line says): the engine shows its whole plan and author and
        // asks before anything runs.
        if let Some(rb) = self.ops.rollback.as_mut().filter(|r| {
            r.ns == ns
                && matches!(
                    r.outcome,
                    Some(crate::model::rollback::RollbackOutcome::Aborted { .. })
                )
        }) && let Some(id) = rb.id.clone()
        {
            rb.stage = RbStage::Running;
            rb.outcome = None;
            rb.decision = None;
            rb.error = None;
            self.ask(OpRequest::RollbackResume { id });
            self.push_view(View::Rollback { ns });
            return;
        }
        let advice = self
            .alerts
            .active
            .iter()
            .filter(|a| a.ns == ns)
            .find_map(|a| a.rollback.clone());
        self.ops.rollback = Some(RollbackPanel::checking_advised(
            ns.clone(),
            self.namespace(&ns),
            advice.as_ref(),
        ));
        self.ask(OpRequest::RollbackCheck { ns: ns.clone() });
        self.push_view(View::Rollback { ns });
    }

    fn modal_kind(&self) -> Option<Modal> {
        if self.ops.drill.as_ref().is_some_and(DrillPanel::dialog_open) {
            return Some(Modal::Drill);
        }
        match self.view() {
            View::Gate { .. } => self
                .ops
                .gate
                .as_ref()
                .and_then(|g| g.dialog())
                .map(|_| Modal::Gate),
            View::DeadLetters { .. } => self
                .ops
                .dlq
                .as_ref()
                .filter(|d| d.modal())
                .map(|_| Modal::DeadLetters),
            View::Rollback { .. } => self.ops.rollback.as_ref().and_then(|r| {
                if matches!(r.stage, RbStage::Offer { .. }) {
                    Some(Modal::RollbackOffer)
                } else {
                    r.decision.as_ref().map(|_| Modal::RollbackDecision)
                }
            }),
            _ => None,
        }
    }

    /// Is a dialog open on the current view (its keys come from the keymap's dialog contexts)?
    pub fn modal(&self) -> bool {
        self.modal_kind().is_some()
    }

    /// The keymap contexts of the open dialog, most specific first (`None`: no dialog).
    pub fn dialog_contexts(&self) -> Option<Vec<Context>> {
        self.modal_kind().map(|m| match m {
            Modal::Drill => vec![Context::Drill, Context::Dialog],
            Modal::RollbackDecision => vec![Context::Rollback, Context::Dialog],
            _ => vec![Context::Dialog],
        })
    }

    /// A key while a dialog is open: typed confirmations take characters as text first, every
    /// other key is looked up in the dialog's contexts (nothing else: the dialog is modal).
    pub fn handle_dialog_key(&mut self, key: &str) -> Effect {
        let Some(modal) = self.modal_kind() else {
            return Effect::None;
        };
        let typed = match modal {
            Modal::Gate => self
                .ops
                .gate
                .as_mut()
                .and_then(|g| g.dialog_mut())
                .is_some_and(|d| d.type_key(key)),
            Modal::DeadLetters => self.ops.dlq.as_mut().is_some_and(|d| d.type_key(key)),
            _ => false,
        };
        if typed {
            return Effect::None;
        }
        let contexts = self.dialog_contexts().unwrap_or_default();
        let Some(action) = self.keymap.lookup_in(&contexts, key).cloned() else {
            return Effect::None;
        };
        if action == Action::Quit {
            return Effect::Quit;
        }
        let reply = match modal {
            Modal::Drill => self
                .ops
                .drill
                .as_mut()
                .map(|d| d.on_dialog(&action))
                .unwrap_or_default(),
            Modal::Gate => {
                let ns = self.ops.gate.as_ref().map(|g| g.ns.clone());
                let (ctx, ops) = self.parts(ns.as_deref());
                ops.gate
                    .as_mut()
                    .map(|g| g.on_dialog(&action, &ctx))
                    .unwrap_or_default()
            }
            Modal::DeadLetters => {
                let (ctx, ops) = self.parts(None);
                ops.dlq
                    .as_mut()
                    .map(|d| d.on_dialog(&action, &ctx))
                    .unwrap_or_default()
            }
            Modal::RollbackOffer | Modal::RollbackDecision => self
                .ops
                .rollback
                .as_mut()
                .map(|r| r.on_dialog(&action))
                .unwrap_or_default(),
        };
        self.run(reply);
        Effect::None
    }

    /// Panel behaviour of an action; `None` = not a panel matter (the normal handling applies).
    pub fn apply_panel(&mut self, action: &Action) -> Option<Effect> {
        match action {
            Action::Yank => {
                self.yank();
                return Some(Effect::None);
            }
            Action::OpenLog => {
                if self.view() != &View::Log {
                    self.ops.log.loading = true;
                    self.ops.log.scroll = 0;
                    self.ask(OpRequest::LogLoad);
                    self.push_view(View::Log);
                }
                return Some(Effect::None);
            }
            Action::OpenGate { ns } => {
                let ns = self.resolve_panel_ns(ns.clone())?;
                self.open_gate(ns);
                return Some(Effect::None);
            }
            Action::OpenDeadLetters { ns } => {
                let ns = self.resolve_panel_ns(ns.clone())?;
                self.open_dead_letters(ns);
                return Some(Effect::None);
            }
            Action::OpenTimeline { ns } => {
                let ns = ns.clone().or_else(|| match self.view() {
                    View::Namespace { ns }
                    | View::Gate { ns }
                    | View::DeadLetters { ns }
                    | View::Rollback { ns } => Some(ns.clone()),
                    _ => None,
                });
                self.open_timeline(ns);
                return Some(Effect::None);
            }
            Action::StartRollback { ns } => {
                let ns = match ns {
                    Some(n) => Some(n.clone()),
                    None if self.view() == &View::Overview => self
                        .rollback_recommendation()
                        .map(|a| a.ns.clone())
                        .or_else(|| self.selected_namespace()),
                    None => self.panel_namespace().or_else(|| self.selected_namespace()),
                };
                let Some(ns) = ns else {
                    self.say(Level::Warn, "no namespace selected");
                    return Some(Effect::None);
                };
                let Some(ns) = self.known_ns(ns) else {
                    return Some(Effect::None);
                };
                self.open_rollback(ns);
                return Some(Effect::None);
            }
            Action::Note { text } => {
                let ns = self.panel_namespace().or_else(|| match self.view() {
                    View::Timeline { ns } => ns.clone(),
                    _ => None,
                });
                if text.trim().is_empty() {
                    self.say(
                        Level::Warn,
                        "`:note` needs text, e.g. `:note paged the v2 team`",
                    );
                } else {
                    self.ask(OpRequest::Note {
                        ns,
                        text: text.trim().to_string(),
                    });
                    self.say(Level::Info, "adding the note to the ledger…");
                }
                return Some(Effect::None);
            }
            Action::StartNote => {
                self.input = Some(super::state::Input::Command("note ".into()));
                return Some(Effect::None);
            }
            Action::CanaryControl { command } => {
                let View::Gate { ns } = self.view().clone() else {
                    self.say(Level::Warn, "canary keys work in the gate view (g)");
                    return Some(Effect::None);
                };
                let Some(c) = self.ops.canary.active_for(&ns).cloned() else {
                    self.say(
                        Level::Info,
                        format!(
                            "no running canary seen on {} since this console started",
                            sanitize(&ns)
                        ),
                    );
                    return Some(Effect::None);
                };
                if self.read_only {
                    let msg = format!(
                        "refusing to {} canary {}: this profile is read-only (nothing changed)",
                        command.as_str(),
                        sanitize(&c.id)
                    );
                    self.say(Level::Error, msg);
                    return Some(Effect::None);
                }
                if let Some(g) = self.ops.gate.as_mut() {
                    g.confirm_canary(&c, *command);
                }
                return Some(Effect::None);
            }
            // `x` in the rollback view stops the engine's running step (its move stops at a
            // consistent point; the rollback ends aborted and says what state it left).
            Action::StopJob
                if matches!(self.view(), View::Rollback { .. })
                    && self
                        .ops
                        .rollback
                        .as_ref()
                        .is_some_and(|r| matches!(r.stage, RbStage::Running)) =>
            {
                self.run(Reply::ask(OpRequest::RollbackStop).and_say(
                    Level::Warn,
                    "stopping the running step: a move finishes the messages it holds, then the rollback ends aborted",
                ));
                return Some(Effect::None);
            }
            // No move of this console's own, but a rollback runs (its drain or dead-letter
            // step moves messages): say what `p` / `x` can do to it instead of "no replay".
            Action::PauseResume | Action::StopJob
                if !self.ops.job.as_ref().is_some_and(MoveJob::running)
                    && self
                        .ops
                        .rollback
                        .as_ref()
                        .is_some_and(|r| matches!(r.stage, RbStage::Running)) =>
            {
                let key = self.keymap.first_key("rollback");
                self.say(
                    Level::Info,
                    format!(
                        "the rollback's own moves cannot be paused (each step is journaled whole); to stop it, open the rollback view ({key}) and press x — it ends aborted at a consistent point, and {key} resumes it"
                    ),
                );
                return Some(Effect::None);
            }
            Action::PauseResume | Action::StopJob => {
                let reply = moves::on_action(&mut self.ops.job, action);
                self.run(reply);
                return Some(Effect::None);
            }
            _ => {}
        }
        let reply = match self.view().clone() {
            View::Gate { ns } => {
                let (ctx, ops) = self.parts(Some(&ns));
                ops.gate.as_mut().and_then(|g| g.on_action(action, &ctx))
            }
            View::DeadLetters { ns } => {
                let (ctx, ops) = self.parts(Some(&ns));
                ops.dlq.as_mut().and_then(|d| d.on_action(action, &ctx))
            }
            View::Inspector { .. } => self
                .ops
                .inspector
                .as_mut()
                .and_then(|i| i.on_action(action)),
            View::Timeline { .. } => self.ops.timeline.on_action(action),
            View::Describe => self.ops.describe.as_mut().and_then(|d| d.on_action(action)),
            View::Log => self.ops.log.on_action(action),
            View::Rollback { .. } => None,
            _ => match action {
                Action::Select
                | Action::Replay
                | Action::Purge
                | Action::Export
                | Action::BodyMode
                | Action::NextPage
                | Action::PrevPage => Some(Reply::say(
                    Level::Info,
                    format!(
                        "`{}` works in the dead-letter browser (d) and the gate panel (g)",
                        action.config_name()
                    ),
                )),
                _ => None,
            },
        };
        let reply = reply?;
        self.run(reply);
        Some(Effect::None)
    }

    fn panel_namespace(&self) -> Option<String> {
        match self.view() {
            View::Namespace { ns }
            | View::Gate { ns }
            | View::DeadLetters { ns }
            | View::Inspector { ns }
            | View::Rollback { ns } => Some(ns.clone()),
            _ => None,
        }
    }

    fn resolve_panel_ns(&mut self, ns: Option<String>) -> Option<String> {
        let ns = ns
            .or_else(|| self.panel_namespace())
            .or_else(|| self.selected_namespace());
        if ns.is_none() {
            self.say(Level::Warn, "no namespace selected");
        }
        self.known_ns(ns?)
    }

    /// `ns`, unless the last refresh shows it is not on the broker (a typo in `:gate NS`, a
    /// drill's namespace removed): then nothing opens and the status line says so. Before the
    /// first refresh nothing is known, and it opens (the panel says what it finds).
    fn known_ns(&mut self, ns: String) -> Option<String> {
        if self.snapshot.is_some() && self.namespace(&ns).is_none() {
            let text = self.missing_namespace(&ns);
            self.say(Level::Error, text);
            return None;
        }
        Some(ns)
    }

    /// Apply an answer of the ops runner; returns whether anything visible changed.
    pub fn handle_op(&mut self, msg: OpMsg) -> bool {
        // Ledger events this console caused: the feed marks their echo as its own.
        let own = match &msg {
            OpMsg::GateApplied { event_id, .. }
            | OpMsg::MoveDone { event_id, .. }
            | OpMsg::PurgeDone { event_id, .. }
            | OpMsg::NoteAdded { event_id, .. } => event_id.clone(),
            OpMsg::Journaled { event_id } => Some(event_id.clone()),
            _ => None,
        };
        if let Some(id) = own {
            self.own_event(feed::Own::Event(id));
        }
        let reply = match msg {
            OpMsg::GateApplied { ns, result, .. } => {
                let (level, text) = gate::applied_message(&ns, &result);
                if let Some(g) = self.ops.gate.as_mut() {
                    g.on_applied(&ns, result);
                }
                Reply::say(level, text).and_ask(OpRequest::Refresh)
            }
            OpMsg::GatePreview { ns, target, result } => {
                if let Some(g) = self.ops.gate.as_mut() {
                    g.on_preview(&ns, &target, result);
                }
                Reply::default()
            }
            OpMsg::DlqPage {
                ns,
                page,
                depth,
                result,
            } => {
                let now_s = self.now_ms / 1000;
                if let Some(d) = self.ops.dlq.as_mut().filter(|d| d.ns == ns) {
                    d.on_page(page, depth, result, now_s);
                }
                Reply::default()
            }
            OpMsg::Inspected { ns, id, result } => {
                if let Some(i) = self.ops.inspector.as_mut() {
                    i.on_inspected(&ns, &id, result);
                }
                Reply::default()
            }
            OpMsg::Exported(r) => match r {
                Ok(p) => Reply::say(Level::Info, format!("exported to {}", p.display())),
                Err(e) => Reply::say(Level::Error, format!("export failed: {e}")),
            },
            OpMsg::MoveStarted { ns, title, parts } => {
                self.ops.job = Some(MoveJob::started(ns, title, parts));
                Reply::default()
            }
            OpMsg::MoveProgress { progress, part } => {
                if let Some(j) = self.ops.job.as_mut() {
                    j.part.0 = part;
                    j.progress = Some(progress);
                }
                Reply::default()
            }
            OpMsg::MoveDone {
                ns,
                summary,
                failed,
                ..
            } => {
                if let Some(j) = self.ops.job.as_mut() {
                    j.done = Some(summary.clone());
                    j.failed = failed;
                }
                let mut reply =
                    Reply::say(if failed { Level::Error } else { Level::Info }, summary);
                if let Some(r) = self
                    .ops
                    .dlq
                    .as_mut()
                    .filter(|d| d.ns == ns)
                    .map(DlqPanel::reload)
                {
                    reply.requests.push(r);
                }
                reply.and_ask(OpRequest::Refresh)
            }
            OpMsg::PurgePrepared(r) => match self.ops.dlq.as_mut() {
                Some(d) => d.on_purge_prepared(r),
                None => Reply::ask(OpRequest::PurgeAbort),
            },
            OpMsg::PurgeDone { result, .. } => {
                let mut reply = Reply::ask(OpRequest::Refresh);
                if let Some(d) = self.ops.dlq.as_mut() {
                    reply.requests.insert(0, d.on_purge_done(result));
                }
                reply
            }
            OpMsg::Timeline(r) => {
                self.ops.timeline.on_loaded(r);
                Reply::default()
            }
            OpMsg::Log(r) => {
                self.ops.log.on_loaded(r);
                Reply::default()
            }
            OpMsg::Ledger(e) => {
                self.absorb_event(&e);
                Reply::default()
            }
            OpMsg::LedgerSkipped(what) => {
                self.ops.feed.warn(&what, self.now_ms);
                Reply::say(Level::Warn, format!("⚠ {}", sanitize(&what)))
            }
            OpMsg::LedgerDown(why) => {
                self.ops.feed.down = Some(sanitize(&why).into_owned());
                Reply::default()
            }
            // Subscribed again (after a lost connection): no longer "down".
            OpMsg::LedgerUp => {
                self.ops.feed.down = None;
                Reply::default()
            }
            // Marked as ours above; nothing else to show.
            OpMsg::Journaled { .. } => Reply::default(),
            OpMsg::CanaryControlled { id, result } => match result {
                Ok(msg) => Reply::say(Level::Info, format!("canary {}: {}", sanitize(&id), msg)),
                Err(e) => Reply::say(Level::Error, format!("canary {}: {e}", sanitize(&id))),
            },
            OpMsg::NoteAdded { result, .. } => match result {
                Ok(id) => Reply::say(Level::Info, format!("note added to the ledger ({id})")),
                Err(e) => Reply::say(Level::Error, format!("cannot add the note: {e}")),
            },
            OpMsg::RollbackResumable { ns, candidates } => self
                .ops
                .rollback
                .as_mut()
                .filter(|r| r.ns == ns && r.stage == RbStage::Checking)
                .map(|rb| rb.on_resumable(candidates))
                .unwrap_or_default(),
            OpMsg::UnfinishedRollbacks(found) => {
                // Offer the first one right away (unless a rollback or a drill is already on).
                let busy = self.ops.rollback.is_some() || self.ops.drill.is_some();
                if let Some((ns, _, _)) = found.first().filter(|_| !busy && !self.read_only) {
                    let ns = ns.clone();
                    let candidates: Vec<(String, String)> = found
                        .iter()
                        .filter(|(n, _, _)| *n == ns)
                        .map(|(_, id, d)| (id.clone(), d.clone()))
                        .collect();
                    let rb = RollbackPanel::offered(ns.clone(), self.namespace(&ns), candidates);
                    self.ops.rollback = Some(rb);
                    self.push_view(View::Rollback { ns });
                }
                Reply::say(
                    Level::Warn,
                    format!(
                        "{} unfinished rollback(s) in the ledger — resume, start new, or cancel",
                        found.len()
                    ),
                )
            }
            OpMsg::Rollback(u) => {
                if let crate::ops::rollback::Update::Started { rollback_id, .. } = &*u {
                    self.own_event(feed::Own::Rollback(rollback_id.clone()));
                }
                if let Some(rb) = self.ops.rollback.as_mut() {
                    rb.apply_update(&u);
                }
                if matches!(*u, crate::ops::rollback::Update::Step { .. }) {
                    Reply::ask(OpRequest::Refresh)
                } else {
                    Reply::default()
                }
            }
            OpMsg::RollbackDecision(p) => {
                let in_view = matches!(self.view(), View::Rollback { .. });
                let keymap = self.keymap.clone();
                match self.ops.rollback.as_mut() {
                    Some(rb) => {
                        rb.on_decision(*p, &keymap);
                        if in_view {
                            Reply::default()
                        } else {
                            Reply::say(
                                Level::Warn,
                                format!(
                                    "rollback of {} waits for your decision — press {}",
                                    sanitize(&rb.ns),
                                    keymap.first_key("rollback")
                                ),
                            )
                        }
                    }
                    None => Reply::default(),
                }
            }
            OpMsg::RollbackDone(r) => {
                self.own_event(feed::Own::Rollback(r.rollback_id.clone()));
                let mut reply = Reply::ask(OpRequest::Refresh);
                if let Some(rb) = self.ops.rollback.as_mut() {
                    reply.say = Some(rb.on_done(&r));
                }
                reply
            }
            OpMsg::RollbackFailed(e) => {
                if let Some(rb) = self.ops.rollback.as_mut() {
                    rb.on_failed(&e);
                }
                Reply::say(Level::Error, format!("rollback: {e}"))
            }
            OpMsg::Drill(s) => {
                let d = self.ops.drill.get_or_insert_with(DrillPanel::default);
                let first = d.status.is_none();
                let ns = s.namespace.clone();
                d.status = Some(*s);
                if first {
                    // The drill's namespace, selected: its view is where the incident shows.
                    self.views.truncate(1);
                    self.views.push(View::Namespace { ns });
                }
                Reply::default()
            }
            OpMsg::DrillDone(r) => {
                self.ops
                    .drill
                    .get_or_insert_with(DrillPanel::default)
                    .on_done(r);
                Reply::default()
            }
            OpMsg::PostmortemWritten(r) => match r {
                Ok(p) => {
                    if let Some(d) = self.ops.drill.as_mut() {
                        d.on_written(&p);
                    }
                    Reply::say(
                        Level::Info,
                        format!("post-mortem draft written to {}", p.display()),
                    )
                }
                Err(e) => Reply::say(Level::Error, format!("cannot write the post-mortem: {e}")),
            },
        };
        self.run(reply);
        true
    }

    /// What `c` copies in the view on top: the event id (timeline, describe) or the message id
    /// (dead-letter browser, inspector); `None` with the reason when there is nothing.
    pub fn yank_target(&self) -> Result<(&'static str, String), &'static str> {
        match self.view() {
            View::Timeline { .. } => self
                .ops
                .timeline
                .selected()
                .map(|e| ("event id", e.id.to_string()))
                .ok_or("no event selected"),
            View::Describe => self
                .ops
                .describe
                .as_ref()
                .map(|d| ("event id", d.id.clone()))
                .ok_or("no event shown"),
            View::DeadLetters { .. } => self
                .ops
                .dlq
                .as_ref()
                .and_then(DlqPanel::cursor_item)
                .map(|m| match &m.message_id {
                    Some(id) => ("message id", id.clone()),
                    None => ("content digest", m.digest.clone().unwrap_or(m.id.clone())),
                })
                .ok_or("open a group (Enter) and put the cursor on a message first"),
            View::Inspector { .. } => self
                .ops
                .inspector
                .as_ref()
                .and_then(|i| i.message.as_ref())
                .and_then(|m| match (&m.message_id, &m.digest) {
                    (Some(id), _) => Some(("message id", id.clone())),
                    (None, Some(d)) => Some(("content digest", format!("sha:{}", d.hex()))),
                    (None, None) => None,
                })
                .ok_or("this message has no id and no digest to copy"),
            _ => Err(
                "nothing to copy here: c copies a message id (dead letters, inspector) or an event id (timeline)",
            ),
        }
    }

    /// Copy the id under the cursor: OSC 52 on the next draw, and the id on the message line
    /// (the fallback for a terminal that ignores OSC 52). Ids come from the broker: sanitised.
    fn yank(&mut self) {
        match self.yank_target() {
            Ok((what, id)) => {
                let id = sanitize(&id).into_owned();
                self.clipboard_pending = Some(id.clone());
                self.say(
                    Level::Info,
                    format!("copied {what} to the clipboard (OSC 52): {id}"),
                );
            }
            Err(why) => self.say(Level::Info, why),
        }
    }

    /// Remember an event (or a rollback) as this console's own; an echo that arrived before
    /// this answer is re-marked, and its "someone else" warning taken back.
    fn own_event(&mut self, own: feed::Own) {
        if self.ops.feed.mark_own(own) {
            self.message = None;
        }
    }

    fn absorb_event(&mut self, e: &crate::ledger::event::Event) {
        // Our drill's namespace; while it is still starting (no status yet), the namespace of a
        // drill event (`via: drill`) — the drill's own setup flip is not "someone elsewhere".
        let drill_ns = self.ops.drill.as_ref().and_then(|d| match &d.status {
            Some(s) => Some(s.namespace.clone()),
            None if e.params.get("via").and_then(|v| v.as_str()) == Some("drill") => {
                e.namespace.clone()
            }
            None => None,
        });
        let who = (self.ops.operator.clone(), self.ops.host.clone());
        let warning = self
            .ops
            .feed
            .absorb(e, self.now_ms, drill_ns.as_deref(), (&who.0, &who.1));
        match warning {
            Some((true, w)) => {
                self.say(Level::Warn, w);
                self.ops.feed.warned = Some(e.id.to_string());
            }
            // Routine work of others is a notice: it never replaces a warning or an error
            // still on the message line.
            Some((false, w)) if self.message.as_ref().is_none_or(|m| m.level == Level::Info) => {
                self.say(Level::Info, w);
            }
            _ => {}
        }
        let in_view = matches!(self.view(), View::Timeline { .. });
        self.ops.timeline.add_live(e, in_view);
        self.ops.canary.absorb(e);
    }
}
