//! The operation views' state: gate panel, dead-letter browser and inspector, move jobs
//! (replays), purge, timeline, rollback checklist, drill panel, and the live ledger feed.
//!
//! Plain data plus the pure functions that change it (no ratatui, no lapin, no I/O), like
//! [`super::state`]. Work on the broker is *asked for*: a key pushes an [`OpRequest`] onto
//! [`OpsState::requests`], the loop hands it to [`super::ops`], and the answer comes back as an
//! [`OpMsg`]. Modal dialogs (confirmations, typed counts, decision points) read raw keys so that
//! typing a namespace name or a count cannot trigger a binding.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use super::action::Action;
use super::state::{AppState, Effect, Level, View};
use crate::broker::mover::{MoveProgress, MoveReport, StopReason};
use crate::drill::{DrillResult, DrillStatus, Phase};
use crate::ledger::event::{Event, EventKind};
use crate::ledger::projection::{TimelineEntry, TimelineFilter, summarize};
use crate::model::deadletter::{
    BodyMode, Condition, DEFAULT_EXCEPTION_HEADER, Filter, Group, GroupBy, InspectorLine,
    MessageView, Summary, group, inspector_lines, summarize as summarize_dl,
};
use crate::model::gate::GateSplit;
use crate::ops::gate::ApplyReport;
use crate::ops::plan::DlqChoice;
use crate::ops::rollback::{
    Decision, DecisionKind, DecisionPoint, RollbackOutcome, RollbackReport, StepState, Update,
};
use crate::text::sanitize;

/// Gate presets: percent of traffic to the new version.
pub const GATE_PRESETS: [u32; 7] = [0, 1, 5, 10, 25, 50, 100];
/// Dead letters read per page of the browser.
pub const DLQ_PAGE_SIZE: u64 = 200;
/// Live ledger feed entries kept.
pub const FEED_LEN: usize = 50;
/// Timeline entries kept in the view.
pub const TIMELINE_MAX: usize = 5_000;
/// An event by this console's operator and host counts as our own when we acted on its
/// namespace this recently (ms) — it is echoed back by the ledger feed.
pub const OWN_ACTIVITY_MS: i64 = 5_000;

/// Where a replay sends messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayTarget {
    /// Each message's origin queue (from `x-death`).
    Origin,
    /// A version's queue.
    Version(String),
    /// The entry exchange (the gate decides).
    Entry,
}

impl ReplayTarget {
    /// Label for dialogs.
    pub fn label(&self) -> String {
        match self {
            ReplayTarget::Origin => "origin queue (from x-death)".into(),
            ReplayTarget::Version(v) => format!("version {}", sanitize(v)),
            ReplayTarget::Entry => "entry exchange (through the gate)".into(),
        }
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayScope {
    /// Everything in the DLQ.
    All,
    /// Every message matching a filter (a group by origin or reason).
    Filter(Filter),
    /// These message ids (selection, or a group that no filter expresses).
    Ids(Vec<String>),
}

/// Work for [`super::ops`]: asked by the state, executed in background tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum OpRequest {
    /// Ask the refresh task for a refresh now (after a change).
    Refresh,
    /// Flip the gate through `ops::gate::apply` (journaled, verified).
    GateApply {
        /// Namespace.
        ns: String,
        /// Target split.
        target: GateSplit,
        /// Zero-consumer guard explicitly overridden.
        force_zero_consumers: bool,
    },
    /// Replay `NS.unrouted` through the entry exchange.
    ReplayUnrouted {
        /// Namespace.
        ns: String,
    },
    /// Read one page of the DLQ (browse: nothing removed).
    DlqLoad {
        /// Namespace.
        ns: String,
        /// Page (0-based).
        page: u64,
        /// Page size.
        page_size: u64,
    },
    /// Load one message fully for the inspector.
    DlqInspect {
        /// Namespace.
        ns: String,
        /// Queue position.
        position: u64,
    },
    /// Export one message to a JSON file (loads it fully when not given).
    DlqExport {
        /// Namespace.
        ns: String,
        /// Queue position.
        position: u64,
        /// The message, when already loaded.
        message: Option<Box<MessageView>>,
    },
    /// Replay dead letters.
    DlqReplay {
        /// Namespace.
        ns: String,
        /// Which.
        scope: ReplayScope,
        /// Where to.
        target: ReplayTarget,
    },
    /// Pause the running move.
    MovePause,
    /// Resume the running move.
    MoveResume,
    /// Stop the running move (outstanding confirms finish; the rest stays in the source).
    MoveStop,
    /// Export the DLQ and hold its messages, then wait for the typed count.
    PurgePrepare {
        /// Namespace.
        ns: String,
    },
    /// Remove exactly the exported messages.
    PurgeCommit,
    /// Put them back.
    PurgeAbort,
    /// Read the timeline from the ledger.
    TimelineLoad {
        /// Only this namespace.
        ns: Option<String>,
    },
    /// Append an operator note.
    Note {
        /// About this namespace.
        ns: Option<String>,
        /// Text.
        text: String,
    },
    /// Look for unfinished rollbacks of a namespace in the ledger.
    RollbackCheck {
        /// Namespace.
        ns: String,
    },
    /// Start the default rollback plan.
    RollbackStart {
        /// Namespace.
        ns: String,
        /// From version.
        from: String,
        /// To version.
        to: String,
    },
    /// Look for unfinished rollbacks of every namespace (console start).
    RollbackScan,
    /// Resume an unfinished rollback.
    RollbackResume {
        /// Rollback id.
        id: String,
    },
    /// Answer the pending decision point.
    RollbackDecide(Decision),
    /// Write the drill's post-mortem draft to a file.
    WritePostmortem {
        /// Where.
        path: PathBuf,
        /// Markdown.
        text: String,
    },
}

/// Answers of [`super::ops`] to the state.
#[derive(Debug, Clone)]
pub enum OpMsg {
    /// A gate flip finished (`Err` = message and hint, nothing or part changed).
    GateApplied {
        /// Namespace.
        ns: String,
        /// Report or failure.
        result: Result<Box<ApplyReport>, String>,
    },
    /// A page of the DLQ.
    DlqPage {
        /// Namespace.
        ns: String,
        /// Page.
        page: u64,
        /// DLQ depth.
        depth: Option<u64>,
        /// Messages (bodies capped).
        result: Result<Vec<MessageView>, String>,
    },
    /// A message loaded for the inspector.
    Inspected {
        /// Namespace.
        ns: String,
        /// Position.
        position: u64,
        /// The message (`None`: no message there any more).
        result: Result<Option<Box<MessageView>>, String>,
    },
    /// An export was written.
    Exported(Result<PathBuf, String>),
    /// A move started (title for the progress bar).
    MoveStarted {
        /// Namespace.
        ns: String,
        /// What it does.
        title: String,
        /// Parts (runs) in total.
        parts: usize,
    },
    /// Progress of the running move (`part` is 1-based).
    MoveProgress {
        /// Progress.
        progress: MoveProgress,
        /// Part.
        part: usize,
    },
    /// The move ended.
    MoveDone {
        /// Namespace.
        ns: String,
        /// Summary line.
        summary: String,
        /// Failed?
        failed: bool,
    },
    /// The DLQ was exported and is held; waiting for the typed count.
    PurgePrepared(Result<(u64, PathBuf), String>),
    /// The purge ended.
    PurgeDone(Result<(u64, PathBuf), String>),
    /// The timeline.
    Timeline(Result<Vec<TimelineEntry>, String>),
    /// A live ledger event.
    Ledger(Box<Event>),
    /// The live ledger feed is down.
    LedgerDown(String),
    /// A note was appended (id) or not.
    NoteAdded(Result<String, String>),
    /// Unfinished rollbacks of a namespace: (id, description).
    RollbackResumable {
        /// Namespace.
        ns: String,
        /// Candidates.
        candidates: Vec<(String, String)>,
    },
    /// Unfinished rollbacks found at start: (namespace, id, description).
    UnfinishedRollbacks(Vec<(String, String, String)>),
    /// Engine progress.
    Rollback(Box<Update>),
    /// The engine waits for an answer.
    RollbackDecision(Box<DecisionPoint>),
    /// The rollback ended.
    RollbackDone(Box<RollbackReport>),
    /// The rollback could not start / resume.
    RollbackFailed(String),
    /// Drill status (every ~0.5 s).
    Drill(Box<DrillStatus>),
    /// The drill ended.
    DrillDone(Result<Box<DrillResult>, String>),
    /// The post-mortem was written.
    PostmortemWritten(Result<PathBuf, String>),
}

// ───────────────────────────── gate panel ─────────────────────────────

/// The gate panel's stage.
#[derive(Debug, Clone)]
pub enum GateStage {
    /// Choosing a preset.
    Choose,
    /// Confirming a target.
    Confirm {
        /// Target split.
        target: GateSplit,
        /// 0 = Cancel (default), 1 = Apply.
        focus: usize,
        /// Typed confirmation (production profiles: the namespace name).
        typed: String,
        /// Versions that would gain traffic with 0 consumers (the guard).
        zero_consumers: Vec<String>,
    },
    /// Applying.
    Applying {
        /// Target.
        target: GateSplit,
    },
    /// Done (verification result and ledger event) or failed.
    Result {
        /// Target.
        target: GateSplit,
        /// Outcome.
        result: Result<Box<ApplyReport>, String>,
    },
    /// Confirming a replay of the unrouted queue.
    ConfirmUnrouted {
        /// Messages in it.
        count: u64,
        /// 0 = Cancel, 1 = Replay.
        focus: usize,
    },
}

/// The gate panel.
#[derive(Debug, Clone)]
pub struct GatePanel {
    /// Namespace.
    pub ns: String,
    /// The old version (presets move traffic away from it).
    pub old: String,
    /// The new version.
    pub new: String,
    /// Selected preset row (0..=GATE_PRESETS.len(); the last is "all back to old").
    pub cursor: usize,
    /// Stage.
    pub stage: GateStage,
}

impl GatePanel {
    /// The target of a preset row.
    pub fn preset_target(&self, row: usize) -> GateSplit {
        match GATE_PRESETS.get(row) {
            Some(p) => GateSplit::from_pairs([(self.old.clone(), 100 - p), (self.new.clone(), *p)]),
            None => GateSplit::from_pairs([(self.old.clone(), 100)]),
        }
    }
    /// Labels of the preset rows.
    pub fn preset_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = GATE_PRESETS
            .iter()
            .map(|p| {
                format!(
                    "{p:>3}% to {}  ({}={} {}={})",
                    sanitize(&self.new),
                    sanitize(&self.old),
                    100 - p,
                    sanitize(&self.new),
                    p
                )
            })
            .collect();
        v.push(format!("all back to old  ({}=100)", sanitize(&self.old)));
        v
    }
}

// ───────────────────────────── moves ─────────────────────────────

/// A running (or finished) move: a replay of dead letters or of the unrouted queue.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveJob {
    /// Namespace.
    pub ns: String,
    /// What it does.
    pub title: String,
    /// Latest progress.
    pub progress: Option<MoveProgress>,
    /// Current part, parts in total (a selection replays one message id per part).
    pub part: (usize, usize),
    /// Paused by the operator?
    pub paused: bool,
    /// Stop asked?
    pub stopping: bool,
    /// Final summary, once done.
    pub done: Option<String>,
    /// Did it fail?
    pub failed: bool,
}

impl MoveJob {
    /// Still running?
    pub fn running(&self) -> bool {
        self.done.is_none()
    }
}

/// One line summary of a mover report (shared with the ops task).
pub fn move_summary(r: &MoveReport) -> String {
    let c = &r.counts;
    let how = match &r.stop {
        StopReason::Drained => "done (source drained)".to_string(),
        StopReason::BudgetReached => "done".to_string(),
        StopReason::LimitReached => "done (limit reached)".to_string(),
        StopReason::Stopped => "stopped".to_string(),
        StopReason::Failed(w) => format!("FAILED: {}", sanitize(w)),
    };
    format!(
        "{how}: moved {}, parked {}, left in place {}, possible duplicates {}, reconnects {}",
        c.moved,
        c.parked,
        c.skipped_by_filter + c.no_target + c.refused_replays + c.returned,
        c.possible_duplicates,
        c.reconnects
    )
}

// ───────────────────────────── dead letters ─────────────────────────────

/// Groups first, then the messages of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqLevel {
    /// The list of groups.
    Groups,
    /// The messages of group `n`.
    Messages(usize),
}

/// A modal dialog of the dead-letter browser.
#[derive(Debug, Clone, PartialEq)]
pub enum DlqDialog {
    /// Confirm a replay: choose scope and target, then Replay.
    Replay {
        /// Scopes offered: (label, count text, scope).
        scopes: Vec<(String, String, ReplayScope)>,
        /// Chosen scope.
        scope: usize,
        /// Targets offered.
        targets: Vec<ReplayTarget>,
        /// Chosen target.
        target: usize,
        /// Focus: 0 scope, 1 target, 2 Cancel (default), 3 Replay.
        focus: usize,
    },
    /// Exporting and holding before a purge.
    PurgePreparing,
    /// Exported; type the count to purge.
    PurgeReady {
        /// Messages exported (and held).
        count: u64,
        /// The export file.
        path: PathBuf,
        /// What was typed.
        typed: String,
        /// 0 = Cancel (default), 1 = Purge.
        focus: usize,
    },
    /// Purging.
    Purging {
        /// Count.
        count: u64,
    },
    /// Purge finished or failed.
    PurgeResult(Result<(u64, PathBuf), String>),
}

/// The dead-letter browser.
#[derive(Debug, Clone, PartialEq)]
pub struct DlqPanel {
    /// Namespace.
    pub ns: String,
    /// The DLQ's name.
    pub queue: String,
    /// Page shown.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// DLQ depth at the last read.
    pub depth: Option<u64>,
    /// Reading?
    pub loading: bool,
    /// Last error.
    pub error: Option<String>,
    /// Summaries of the page (sanitised).
    pub items: Vec<Summary>,
    /// Group by.
    pub group_by: GroupBy,
    /// Groups of the page.
    pub groups: Vec<Group>,
    /// Message ids by position (raw), for replaying a selection.
    pub ids: BTreeMap<u64, String>,
    /// Groups or messages.
    pub level: DlqLevel,
    /// Cursor in the group list.
    pub group_cursor: usize,
    /// Cursor in the message list.
    pub msg_cursor: usize,
    /// Selected positions.
    pub selected: BTreeSet<u64>,
    /// A dialog, if open.
    pub dialog: Option<DlqDialog>,
    /// Versions of the namespace (replay targets).
    pub versions: Vec<String>,
}

impl DlqPanel {
    /// Take a page of messages.
    pub fn absorb(&mut self, page: u64, depth: Option<u64>, msgs: &[MessageView], now_s: i64) {
        self.page = page;
        self.depth = depth;
        self.loading = false;
        self.error = None;
        self.items = msgs
            .iter()
            .map(|m| summarize_dl(&self.ns, m, DEFAULT_EXCEPTION_HEADER, now_s))
            .collect();
        self.ids = msgs
            .iter()
            .filter_map(|m| m.message_id.clone().map(|id| (m.position, id)))
            .collect();
        self.regroup();
    }
    /// Recompute the groups (after a page or a group-by change).
    pub fn regroup(&mut self) {
        self.groups = group(&self.items, self.group_by);
        self.group_cursor = self.group_cursor.min(self.groups.len().saturating_sub(1));
        if let DlqLevel::Messages(g) = self.level
            && g >= self.groups.len()
        {
            self.level = DlqLevel::Groups;
        }
        self.msg_cursor = 0;
    }
    /// The messages of group `g`, in queue order.
    pub fn group_items(&self, g: usize) -> Vec<&Summary> {
        let Some(grp) = self.groups.get(g) else {
            return Vec::new();
        };
        self.items
            .iter()
            .filter(|s| grp.positions.binary_search(&s.position).is_ok())
            .collect()
    }
    /// The message under the cursor (messages level).
    pub fn cursor_item(&self) -> Option<&Summary> {
        match self.level {
            DlqLevel::Messages(g) => self.group_items(g).get(self.msg_cursor).copied(),
            DlqLevel::Groups => None,
        }
    }
    /// The focused group (cursor in the group list, or the open group).
    pub fn focused_group(&self) -> Option<&Group> {
        match self.level {
            DlqLevel::Groups => self.groups.get(self.group_cursor),
            DlqLevel::Messages(g) => self.groups.get(g),
        }
    }
    fn replay_scopes(&self) -> Vec<(String, String, ReplayScope)> {
        let mut out = Vec::new();
        if !self.selected.is_empty() {
            let ids: Vec<String> = self
                .selected
                .iter()
                .filter_map(|p| self.ids.get(p).cloned())
                .collect();
            let missing = self.selected.len() - ids.len();
            let note = if missing > 0 {
                format!(
                    "{} message(s); {missing} without message_id cannot be picked",
                    ids.len()
                )
            } else {
                format!("{} message(s)", ids.len())
            };
            out.push(("selected".to_string(), note, ReplayScope::Ids(ids)));
        }
        if let Some(g) = self.focused_group() {
            let label = format!("group `{}`", g.key);
            let filter = match self.group_by {
                GroupBy::Origin if g.key != "no origin" => Some(Condition::Origin(g.key.clone())),
                GroupBy::Reason => Some(Condition::Reason(g.key.clone())),
                _ => None,
            };
            match filter {
                Some(c) => out.push((
                    label,
                    format!(
                        "{} on this page; every matching message of the DLQ",
                        g.count
                    ),
                    ReplayScope::Filter(Filter {
                        conditions: vec![c],
                    }),
                )),
                None => {
                    let ids: Vec<String> = g
                        .positions
                        .iter()
                        .filter_map(|p| self.ids.get(p).cloned())
                        .collect();
                    out.push((
                        label,
                        format!("{} message(s) of this page", ids.len()),
                        ReplayScope::Ids(ids),
                    ));
                }
            }
        }
        out.push((
            "all".to_string(),
            format!(
                "{} message(s) in the DLQ",
                self.depth.map_or("?".into(), |d| d.to_string())
            ),
            ReplayScope::All,
        ));
        out
    }
}

/// The inspector.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectorPanel {
    /// Namespace.
    pub ns: String,
    /// Position.
    pub position: u64,
    /// The message, once loaded.
    pub message: Option<MessageView>,
    /// Loading?
    pub loading: bool,
    /// Error.
    pub error: Option<String>,
    /// Body mode.
    pub mode: BodyMode,
    /// Rendered lines (sanitised), rebuilt on load and mode change.
    pub lines: Vec<InspectorLine>,
    /// Scroll.
    pub scroll: usize,
}

impl InspectorPanel {
    /// Rebuild the lines.
    pub fn rebuild(&mut self) {
        self.lines = self
            .message
            .as_ref()
            .map(|m| inspector_lines(m, self.mode))
            .unwrap_or_default();
    }
}

// ───────────────────────────── timeline ─────────────────────────────

/// The timeline view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimelinePanel {
    /// Namespace filter.
    pub ns: Option<String>,
    /// Entries, oldest first.
    pub entries: Vec<TimelineEntry>,
    /// Loading?
    pub loading: bool,
    /// Error.
    pub error: Option<String>,
    /// Lines scrolled up from the newest.
    pub scroll: usize,
}

impl TimelinePanel {
    /// Entries that pass the namespace filter and the `/` text filter.
    pub fn visible(&self, text_filter: &str) -> Vec<&TimelineEntry> {
        let f = text_filter.to_lowercase();
        self.entries
            .iter()
            .filter(|e| {
                f.is_empty()
                    || e.namespace.to_lowercase().contains(&f)
                    || e.summary.to_lowercase().contains(&f)
                    || e.operator.to_lowercase().contains(&f)
            })
            .collect()
    }
}

// ───────────────────────────── rollback ─────────────────────────────

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

/// The rollback view's stage.
#[derive(Debug, Clone, PartialEq)]
pub enum RbStage {
    /// Looking in the ledger for an unfinished rollback.
    Checking,
    /// Offer to resume: candidates and focus (0..n = resume that one, n = start new, n+1 = cancel).
    Offer {
        /// (id, description).
        candidates: Vec<(String, String)>,
        /// Focus.
        focus: usize,
    },
    /// The engine runs.
    Running,
    /// Ended.
    Finished,
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
    pub decision: Option<DecisionPoint>,
    /// Focus in the decision's buttons.
    pub focus: usize,
    /// The outcome.
    pub outcome: Option<RollbackOutcome>,
    /// A start failure.
    pub error: Option<String>,
}

/// Buttons of a decision point: (label, key, decision).
pub fn decision_buttons(kind: DecisionKind) -> Vec<(&'static str, char, Decision)> {
    match kind {
        DecisionKind::DlqChoice => vec![
            ("Replay to old", 'r', Decision::Choose(DlqChoice::Replay)),
            ("Keep", 'k', Decision::Choose(DlqChoice::Keep)),
            ("Export", 'e', Decision::Choose(DlqChoice::Export)),
            ("Skip", 's', Decision::Skip),
            ("Abort", 'a', Decision::Abort),
        ],
        DecisionKind::Timeout => vec![
            ("Keep waiting", 'c', Decision::Continue),
            ("Skip", 's', Decision::Skip),
            ("Abort", 'a', Decision::Abort),
        ],
        DecisionKind::Confirm | DecisionKind::Destructive => vec![
            ("Continue", 'c', Decision::Continue),
            ("Skip", 's', Decision::Skip),
            ("Abort", 'a', Decision::Abort),
        ],
    }
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

// ───────────────────────────── drill ─────────────────────────────

/// The drill panel (console drill mode).
#[derive(Debug, Clone, Default)]
pub struct DrillPanel {
    /// Latest status.
    pub status: Option<DrillStatus>,
    /// The result, at the end.
    pub result: Option<DrillResult>,
    /// The drill failed.
    pub error: Option<String>,
    /// Where the post-mortem was written by the operator's request.
    pub written: Option<String>,
    /// End dialog focus: 0 = write post-mortem, 1 = close.
    pub focus: usize,
    /// End dialog dismissed.
    pub dismissed: bool,
}

impl DrillPanel {
    /// Is the drill over?
    pub fn over(&self) -> bool {
        self.result.is_some()
            || self.error.is_some()
            || self.status.as_ref().is_some_and(|s| s.phase == Phase::Done)
    }
}

// ───────────────────────────── feed ─────────────────────────────

/// One line of the live ledger feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// When it arrived (unix ms).
    pub at_ms: i64,
    /// Namespace.
    pub ns: Option<String>,
    /// Text (safe).
    pub text: String,
    /// From another operator or console?
    pub other: bool,
}

// ───────────────────────────── the whole ─────────────────────────────

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
    /// Rollback.
    pub rollback: Option<RollbackPanel>,
    /// Drill.
    pub drill: Option<DrillPanel>,
    /// Live ledger feed, newest last.
    pub feed: VecDeque<FeedItem>,
    /// The ledger feed is down (why).
    pub feed_down: Option<String>,
    /// Namespace → when this console last acted on it (unix ms).
    pub own_activity: BTreeMap<String, i64>,
}

fn is_version(v: &str) -> u32 {
    v.trim_start_matches('v').parse().unwrap_or(0)
}

impl AppState {
    fn ask(&mut self, r: OpRequest) {
        let ns = match &r {
            OpRequest::GateApply { ns, .. }
            | OpRequest::ReplayUnrouted { ns }
            | OpRequest::DlqReplay { ns, .. }
            | OpRequest::PurgePrepare { ns }
            | OpRequest::RollbackStart { ns, .. } => Some(ns.clone()),
            OpRequest::Note { ns, .. } => ns.clone(),
            _ => None,
        };
        if let Some(ns) = ns {
            self.ops.own_activity.insert(ns, self.now_ms);
        }
        self.ops.requests.push(r);
    }

    /// Requests for the runner (the loop calls this after every key and message).
    pub fn take_requests(&mut self) -> Vec<OpRequest> {
        std::mem::take(&mut self.ops.requests)
    }

    fn versions_of(&self, ns: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .namespace(ns)
            .map(|n| n.versions.iter().map(|v| v.version.clone()).collect())
            .unwrap_or_default();
        v.sort_by_key(|x| (is_version(x), x.clone()));
        if v.is_empty() {
            v = vec!["v1".into(), "v2".into()];
        }
        v
    }

    fn refuse_read_only(&mut self, what: &str) -> bool {
        if self.read_only {
            self.say(
                Level::Error,
                format!(
                    "refusing to {what}: profile `{}` is read-only (nothing was changed)",
                    sanitize(&self.profile)
                ),
            );
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
        let versions = self.versions_of(&ns);
        let old = versions.first().cloned().unwrap_or_else(|| "v1".into());
        let new = versions.last().cloned().unwrap_or_else(|| "v2".into());
        // Start on the preset closest to the current split.
        let cur = self
            .namespace(&ns)
            .and_then(|n| n.gate.as_ref())
            .map(|g| g.percent(&new))
            .unwrap_or(0.0);
        let cursor = GATE_PRESETS
            .iter()
            .enumerate()
            .min_by(|a, b| {
                (f64::from(*a.1) - cur)
                    .abs()
                    .total_cmp(&(f64::from(*b.1) - cur).abs())
            })
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.ops.gate = Some(GatePanel {
            ns: ns.clone(),
            old,
            new,
            cursor,
            stage: GateStage::Choose,
        });
        self.push_view(View::Gate { ns });
    }

    /// Open the dead-letter browser.
    pub fn open_dead_letters(&mut self, ns: String) {
        let queue = self
            .namespace(&ns)
            .map(|n| n.dlq.clone())
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| format!("{ns}.dlq"));
        let keep = self.ops.dlq.as_ref().is_some_and(|d| d.ns == ns);
        if !keep {
            self.ops.dlq = Some(DlqPanel {
                ns: ns.clone(),
                queue,
                page: 0,
                page_size: DLQ_PAGE_SIZE,
                depth: None,
                loading: true,
                error: None,
                items: Vec::new(),
                group_by: GroupBy::Origin,
                groups: Vec::new(),
                ids: BTreeMap::new(),
                level: DlqLevel::Groups,
                group_cursor: 0,
                msg_cursor: 0,
                selected: BTreeSet::new(),
                dialog: None,
                versions: self.versions_of(&ns),
            });
        }
        let page = self.ops.dlq.as_ref().map_or(0, |d| d.page);
        if let Some(d) = self.ops.dlq.as_mut() {
            d.loading = true;
        }
        self.ask(OpRequest::DlqLoad {
            ns: ns.clone(),
            page,
            page_size: DLQ_PAGE_SIZE,
        });
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
        let versions = self.versions_of(&ns);
        let to = versions.first().cloned().unwrap_or_else(|| "v1".into());
        // Roll back from the newest version still behind the gate, else the newest.
        let bound: Vec<String> = self
            .namespace(&ns)
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
        self.ops.rollback = Some(RollbackPanel {
            ns: ns.clone(),
            from,
            to,
            stage: RbStage::Checking,
            id: None,
            plan: String::new(),
            steps: Vec::new(),
            evidence: Vec::new(),
            decision: None,
            focus: 0,
            outcome: None,
            error: None,
        });
        self.ask(OpRequest::RollbackCheck { ns: ns.clone() });
        self.push_view(View::Rollback { ns });
    }

    fn open_rollback_offer(&mut self, ns: String, candidates: Vec<(String, String)>) {
        let versions = self.versions_of(&ns);
        self.ops.rollback = Some(RollbackPanel {
            ns: ns.clone(),
            from: versions.last().cloned().unwrap_or_else(|| "v2".into()),
            to: versions.first().cloned().unwrap_or_else(|| "v1".into()),
            stage: RbStage::Offer {
                candidates,
                focus: 0,
            },
            id: None,
            plan: String::new(),
            steps: Vec::new(),
            evidence: Vec::new(),
            decision: None,
            focus: 0,
            outcome: None,
            error: None,
        });
        self.push_view(View::Rollback { ns });
    }

    /// Is a modal dialog open on the current view (it reads raw keys)?
    pub fn modal(&self) -> bool {
        if self.drill_dialog_open() {
            return true;
        }
        match self.view() {
            View::Gate { .. } => self.ops.gate.as_ref().is_some_and(|g| {
                matches!(
                    g.stage,
                    GateStage::Confirm { .. } | GateStage::ConfirmUnrouted { .. }
                )
            }),
            View::DeadLetters { .. } => self.ops.dlq.as_ref().is_some_and(|d| {
                matches!(
                    d.dialog,
                    Some(DlqDialog::Replay { .. } | DlqDialog::PurgeReady { .. })
                )
            }),
            View::Rollback { .. } => {
                self.ops.rollback.as_ref().is_some_and(|r| {
                    r.decision.is_some() || matches!(r.stage, RbStage::Offer { .. })
                })
            }
            _ => self.drill_dialog_open(),
        }
    }

    fn drill_dialog_open(&self) -> bool {
        self.ops
            .drill
            .as_ref()
            .is_some_and(|d| d.result.is_some() && !d.dismissed)
    }

    /// A raw key while a modal dialog is open.
    pub fn handle_modal_key(&mut self, key: &str) -> Effect {
        if key == "ctrl-c" {
            return Effect::Quit;
        }
        if self.drill_dialog_open() {
            self.drill_modal_key(key);
            return Effect::None;
        }
        match self.view().clone() {
            View::Gate { .. } => self.gate_modal_key(key),
            View::DeadLetters { .. } => self.dlq_modal_key(key),
            View::Rollback { .. } => self.rollback_modal_key(key),
            _ => self.drill_modal_key(key),
        }
        Effect::None
    }

    fn gate_modal_key(&mut self, key: &str) {
        let production = self.production;
        let read_only = self.read_only;
        let profile = self.profile.clone();
        let Some(g) = self.ops.gate.as_mut() else {
            return;
        };
        let ns = g.ns.clone();
        let mut say: Option<(Level, String)> = None;
        let mut request = None;
        match &mut g.stage {
            GateStage::Confirm {
                target,
                focus,
                typed,
                zero_consumers,
            } => match key {
                "esc" => g.stage = GateStage::Choose,
                "tab" | "right" | "left" | "backtab" => *focus = 1 - *focus,
                "backspace" if production => {
                    typed.pop();
                }
                "enter" => {
                    if *focus == 0 {
                        g.stage = GateStage::Choose;
                        say = Some((Level::Info, "gate change cancelled; nothing changed".into()));
                    } else if read_only {
                        say = Some((
                            Level::Error,
                            format!(
                                "refusing to change the gate: profile `{}` is read-only (nothing was changed)",
                                sanitize(&profile)
                            ),
                        ));
                    } else if production && typed.as_str() != ns {
                        say = Some((
                            Level::Warn,
                            format!(
                                "production profile: type the namespace name `{}` to confirm",
                                sanitize(&ns)
                            ),
                        ));
                    } else {
                        let t = target.clone();
                        request = Some(OpRequest::GateApply {
                            ns: ns.clone(),
                            target: t.clone(),
                            force_zero_consumers: !zero_consumers.is_empty(),
                        });
                        g.stage = GateStage::Applying { target: t };
                    }
                }
                "space" if production => typed.push(' '),
                k if production && k.chars().count() == 1 => typed.push_str(k),
                _ => {}
            },
            GateStage::ConfirmUnrouted { focus, .. } => match key {
                "esc" => g.stage = GateStage::Choose,
                "tab" | "right" | "left" | "backtab" => *focus = 1 - *focus,
                "enter" => {
                    if *focus == 1 {
                        if read_only {
                            say = Some((
                                Level::Error,
                                format!(
                                    "refusing to replay: profile `{}` is read-only",
                                    sanitize(&profile)
                                ),
                            ));
                        } else {
                            request = Some(OpRequest::ReplayUnrouted { ns: ns.clone() });
                        }
                    }
                    g.stage = GateStage::Choose;
                }
                _ => {}
            },
            _ => {}
        }
        if let Some((l, t)) = say {
            self.say(l, t);
        }
        if let Some(r) = request {
            self.ask(r);
        }
    }

    fn dlq_modal_key(&mut self, key: &str) {
        let read_only = self.read_only;
        let Some(d) = self.ops.dlq.as_mut() else {
            return;
        };
        let ns = d.ns.clone();
        let mut request = None;
        let mut say = None;
        match &mut d.dialog {
            Some(DlqDialog::Replay {
                scopes,
                scope,
                targets,
                target,
                focus,
            }) => match key {
                "esc" => d.dialog = None,
                "tab" | "right" => *focus = (*focus + 1) % 4,
                "backtab" | "left" => *focus = (*focus + 3) % 4,
                "up" | "k" => match *focus {
                    0 => *scope = scope.saturating_sub(1),
                    1 => *target = target.saturating_sub(1),
                    _ => {}
                },
                "down" | "j" => match *focus {
                    0 => *scope = (*scope + 1).min(scopes.len().saturating_sub(1)),
                    1 => *target = (*target + 1).min(targets.len().saturating_sub(1)),
                    _ => {}
                },
                "enter" => match *focus {
                    0 | 1 => *focus += 1,
                    2 => {
                        d.dialog = None;
                        say = Some((Level::Info, "replay cancelled; nothing moved".to_string()));
                    }
                    _ => {
                        if read_only {
                            say = Some((
                                Level::Error,
                                "refusing to replay: the profile is read-only (nothing moved)"
                                    .to_string(),
                            ));
                        } else if let (Some(s), Some(t)) =
                            (scopes.get(*scope), targets.get(*target))
                        {
                            request = Some(OpRequest::DlqReplay {
                                ns: ns.clone(),
                                scope: s.2.clone(),
                                target: t.clone(),
                            });
                        }
                        d.dialog = None;
                        d.selected.clear();
                    }
                },
                _ => {}
            },
            Some(DlqDialog::PurgeReady {
                count,
                typed,
                focus,
                ..
            }) => match key {
                "esc" => {
                    request = Some(OpRequest::PurgeAbort);
                    d.dialog = None;
                    say = Some((
                        Level::Info,
                        "purge cancelled; every message is back in the DLQ".to_string(),
                    ));
                }
                "tab" | "right" | "left" | "backtab" => *focus = 1 - *focus,
                "backspace" => {
                    typed.pop();
                }
                "enter" => {
                    if *focus == 0 {
                        request = Some(OpRequest::PurgeAbort);
                        d.dialog = None;
                        say = Some((
                            Level::Info,
                            "purge cancelled; every message is back in the DLQ".to_string(),
                        ));
                    } else if typed.trim() == count.to_string() {
                        request = Some(OpRequest::PurgeCommit);
                        d.dialog = Some(DlqDialog::Purging { count: *count });
                    } else {
                        say = Some((
                            Level::Warn,
                            format!("type the count {count} to purge (nothing removed yet)"),
                        ));
                    }
                }
                k if k.chars().count() == 1 && k.chars().all(|c| c.is_ascii_digit()) => {
                    typed.push_str(k)
                }
                _ => {}
            },
            _ => {}
        }
        if let Some((l, t)) = say {
            self.say(l, t);
        }
        if let Some(r) = request {
            self.ask(r);
        }
    }

    fn rollback_modal_key(&mut self, key: &str) {
        if key == "esc" {
            self.views.pop();
            return;
        }
        let Some(rb) = self.ops.rollback.as_mut() else {
            return;
        };
        let mut request = None;
        if let RbStage::Offer { candidates, focus } = &mut rb.stage {
            let n = candidates.len() + 2;
            match key {
                "tab" | "right" | "down" | "j" => *focus = (*focus + 1) % n,
                "backtab" | "left" | "up" | "k" => *focus = (*focus + n - 1) % n,
                "enter" => {
                    if let Some((id, _)) = candidates.get(*focus) {
                        request = Some(OpRequest::RollbackResume { id: id.clone() });
                        rb.id = Some(id.clone());
                        rb.stage = RbStage::Running;
                    } else if *focus == candidates.len() {
                        request = Some(OpRequest::RollbackStart {
                            ns: rb.ns.clone(),
                            from: rb.from.clone(),
                            to: rb.to.clone(),
                        });
                        rb.stage = RbStage::Running;
                    } else {
                        rb.stage = RbStage::Finished;
                        rb.error = Some("not started".into());
                        self.views.pop();
                    }
                }
                _ => {}
            }
        } else if let Some(point) = &rb.decision {
            let buttons = decision_buttons(point.kind);
            let n = buttons.len();
            let chosen = match key {
                "tab" | "right" => {
                    rb.focus = (rb.focus + 1) % n;
                    None
                }
                "backtab" | "left" => {
                    rb.focus = (rb.focus + n - 1) % n;
                    None
                }
                "enter" => buttons.get(rb.focus).map(|b| b.2),
                k => buttons
                    .iter()
                    .find(|b| k.chars().count() == 1 && k.starts_with(b.1))
                    .map(|b| b.2),
            };
            if let Some(d) = chosen {
                rb.decision = None;
                rb.focus = 0;
                request = Some(OpRequest::RollbackDecide(d));
            }
        }
        if let Some(r) = request {
            if let OpRequest::RollbackStart { ns, .. } = &r {
                self.ops.own_activity.insert(ns.clone(), self.now_ms);
            }
            self.ask(r);
        }
    }

    fn drill_modal_key(&mut self, key: &str) {
        let Some(d) = self.ops.drill.as_mut() else {
            return;
        };
        match key {
            "tab" | "right" | "left" | "backtab" => d.focus = 1 - d.focus,
            "esc" => d.dismissed = true,
            "w" | "enter" if key == "w" || d.focus == 0 => {
                if let Some(r) = &d.result {
                    let path = PathBuf::from(format!(
                        "postmortem-{}.md",
                        r.status
                            .namespace
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            })
                            .collect::<String>()
                    ));
                    let text = r.postmortem.clone();
                    self.ops
                        .requests
                        .push(OpRequest::WritePostmortem { path, text });
                }
            }
            "enter" => d.dismissed = true,
            _ => {}
        }
    }

    /// Panel behaviour of an action; `None` = not a panel matter (the normal handling applies).
    pub fn apply_panel(&mut self, action: &Action) -> Option<Effect> {
        match action {
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
            Action::PauseResume => {
                match self.ops.job.as_mut().filter(|j| j.running()) {
                    Some(j) => {
                        j.paused = !j.paused;
                        let r = if j.paused {
                            OpRequest::MovePause
                        } else {
                            OpRequest::MoveResume
                        };
                        self.ops.requests.push(r);
                    }
                    None => self.say(Level::Info, "no replay is running"),
                }
                return Some(Effect::None);
            }
            Action::StopJob => {
                match self.ops.job.as_mut().filter(|j| j.running()) {
                    Some(j) => {
                        j.stopping = true;
                        self.ops.requests.push(OpRequest::MoveStop);
                        self.say(
                            Level::Info,
                            "stopping: outstanding confirms finish, the rest stays in the source",
                        );
                    }
                    None => self.say(Level::Info, "no replay is running"),
                }
                return Some(Effect::None);
            }
            _ => {}
        }
        match self.view().clone() {
            View::Gate { .. } => self.gate_action(action),
            View::DeadLetters { .. } => self.dlq_action(action),
            View::Inspector { .. } => self.inspector_action(action),
            View::Timeline { .. } => self.timeline_action(action),
            View::Rollback { .. } => None,
            _ => match action {
                Action::Select
                | Action::Replay
                | Action::Purge
                | Action::Export
                | Action::BodyMode
                | Action::NextPage
                | Action::PrevPage => {
                    self.say(
                        Level::Info,
                        format!(
                            "`{}` works in the dead-letter browser (d) and the gate panel (g)",
                            action.config_name()
                        ),
                    );
                    Some(Effect::None)
                }
                _ => None,
            },
        }
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
        ns
    }

    fn gate_action(&mut self, action: &Action) -> Option<Effect> {
        let unrouted = self
            .ops
            .gate
            .as_ref()
            .and_then(|g| self.namespace(&g.ns))
            .and_then(|n| n.unrouted_depth)
            .unwrap_or(0);
        let zero: BTreeMap<String, bool> = self
            .ops
            .gate
            .as_ref()
            .and_then(|g| self.namespace(&g.ns))
            .map(|n| {
                n.versions
                    .iter()
                    .map(|v| (v.version.clone(), v.consumers == Some(0)))
                    .collect()
            })
            .unwrap_or_default();
        let current = self
            .ops
            .gate
            .as_ref()
            .and_then(|g| self.namespace(&g.ns))
            .and_then(|n| n.gate.clone());
        let read_only = self.read_only;
        let g = self.ops.gate.as_mut()?;
        let rows = GATE_PRESETS.len() + 1;
        let mut say = None;
        match action {
            Action::Up => g.cursor = g.cursor.saturating_sub(1),
            Action::Down => g.cursor = (g.cursor + 1).min(rows - 1),
            Action::Top => g.cursor = 0,
            Action::Bottom => g.cursor = rows - 1,
            Action::OpenNamespace { ns: None } => match &g.stage {
                GateStage::Choose | GateStage::Result { .. } => {
                    let target = g.preset_target(g.cursor);
                    if current.as_ref().is_some_and(|c| c.same_routing(&target)) {
                        say = Some((
                            Level::Info,
                            format!(
                                "the gate is already {}: nothing to change",
                                target.describe_percent()
                            ),
                        ));
                    } else {
                        let before = current.clone().unwrap_or_default();
                        let zero_consumers: Vec<String> = target
                            .bound()
                            .filter(|(v, _)| {
                                target.percent(v) > before.percent(v) + 1e-9
                                    && zero.get(*v).copied().unwrap_or(false)
                            })
                            .map(|(v, _)| v.clone())
                            .collect();
                        g.stage = GateStage::Confirm {
                            target,
                            focus: 0,
                            typed: String::new(),
                            zero_consumers,
                        };
                        if read_only {
                            say = Some((
                                Level::Warn,
                                "read-only profile: the plan is shown, applying will be refused"
                                    .to_string(),
                            ));
                        }
                    }
                }
                _ => {}
            },
            Action::Replay => {
                if unrouted == 0 {
                    say = Some((
                        Level::Info,
                        "the unrouted queue is empty: nothing to replay".to_string(),
                    ));
                } else if self.ops.job.as_ref().is_some_and(MoveJob::running) {
                    say = Some((
                        Level::Warn,
                        "a replay is already running (p pause, x stop)".to_string(),
                    ));
                } else {
                    g.stage = GateStage::ConfirmUnrouted {
                        count: unrouted,
                        focus: 0,
                    };
                }
            }
            _ => return None,
        }
        if let Some((l, t)) = say {
            self.say(l, t);
        }
        Some(Effect::None)
    }

    fn dlq_action(&mut self, action: &Action) -> Option<Effect> {
        let job_running = self.ops.job.as_ref().is_some_and(MoveJob::running);
        let read_only = self.read_only;
        let profile = self.profile.clone();
        let d = self.ops.dlq.as_mut()?;
        let ns = d.ns.clone();
        let mut request = None;
        let mut say: Option<(Level, String)> = None;
        let mut inspect = None;
        let len = match d.level {
            DlqLevel::Groups => d.groups.len(),
            DlqLevel::Messages(g) => d.group_items(g).len(),
        };
        let cur = match d.level {
            DlqLevel::Groups => &mut d.group_cursor,
            DlqLevel::Messages(_) => &mut d.msg_cursor,
        };
        let last = len.saturating_sub(1);
        match action {
            Action::Up => *cur = cur.saturating_sub(1),
            Action::Down => *cur = (*cur + 1).min(last),
            Action::PageUp => *cur = cur.saturating_sub(10),
            Action::PageDown => *cur = (*cur + 10).min(last),
            Action::Top => *cur = 0,
            Action::Bottom => *cur = last,
            Action::Back => {
                if matches!(d.dialog, Some(DlqDialog::PurgeResult(_))) {
                    d.dialog = None;
                    return Some(Effect::None);
                }
                if let DlqLevel::Messages(g) = d.level {
                    d.level = DlqLevel::Groups;
                    d.group_cursor = g;
                    return Some(Effect::None);
                }
                return None;
            }
            Action::OpenNamespace { ns: None } => match d.level {
                DlqLevel::Groups => {
                    if !d.groups.is_empty() {
                        d.level = DlqLevel::Messages(d.group_cursor);
                        d.msg_cursor = 0;
                    }
                }
                DlqLevel::Messages(_) => {
                    if let Some(s) = d.cursor_item() {
                        inspect = Some(s.position);
                    }
                }
            },
            Action::SortNext => {
                d.group_by = match d.group_by {
                    GroupBy::Origin => GroupBy::Reason,
                    GroupBy::Reason => GroupBy::Exception,
                    GroupBy::Exception => GroupBy::Age,
                    GroupBy::Age => GroupBy::Origin,
                };
                d.level = DlqLevel::Groups;
                d.group_cursor = 0;
                d.regroup();
                say = Some((
                    Level::Info,
                    format!("grouped by {:?}", d.group_by).to_lowercase(),
                ));
            }
            Action::Select => match d.cursor_item().map(|s| s.position) {
                Some(p) => {
                    if !d.selected.remove(&p) {
                        d.selected.insert(p);
                    }
                    d.msg_cursor = (d.msg_cursor + 1).min(last);
                }
                None => {
                    // On a group: select all of its messages.
                    if let Some(g) = d.groups.get(d.group_cursor) {
                        let all = g.positions.iter().all(|p| d.selected.contains(p));
                        for p in g.positions.clone() {
                            if all {
                                d.selected.remove(&p);
                            } else {
                                d.selected.insert(p);
                            }
                        }
                    }
                }
            },
            Action::NextPage | Action::PrevPage => {
                let next = if *action == Action::NextPage {
                    d.page + 1
                } else {
                    d.page.saturating_sub(1)
                };
                let max_page = d
                    .depth
                    .map(|x| x.saturating_sub(1) / d.page_size.max(1))
                    .unwrap_or(0);
                if next != d.page && next <= max_page {
                    d.loading = true;
                    d.selected.clear();
                    d.level = DlqLevel::Groups;
                    request = Some(OpRequest::DlqLoad {
                        ns: ns.clone(),
                        page: next,
                        page_size: d.page_size,
                    });
                } else {
                    say = Some((Level::Info, "no more pages".into()));
                }
            }
            Action::Refresh => {
                d.loading = true;
                request = Some(OpRequest::DlqLoad {
                    ns: ns.clone(),
                    page: d.page,
                    page_size: d.page_size,
                });
            }
            Action::Export => match d.cursor_item() {
                Some(s) => {
                    request = Some(OpRequest::DlqExport {
                        ns: ns.clone(),
                        position: s.position,
                        message: None,
                    })
                }
                None => {
                    say = Some((
                        Level::Info,
                        "open a group and pick a message to export".into(),
                    ))
                }
            },
            Action::Replay => {
                if read_only {
                    say = Some((
                        Level::Error,
                        format!(
                            "refusing to replay: profile `{}` is read-only (nothing moved)",
                            sanitize(&profile)
                        ),
                    ));
                } else if job_running {
                    say = Some((
                        Level::Warn,
                        "a replay is already running (p pause, x stop)".into(),
                    ));
                } else if d.depth == Some(0) {
                    say = Some((Level::Info, "the DLQ is empty: nothing to replay".into()));
                } else {
                    let scopes = d.replay_scopes();
                    let mut targets = vec![ReplayTarget::Origin];
                    targets.extend(d.versions.iter().cloned().map(ReplayTarget::Version));
                    targets.push(ReplayTarget::Entry);
                    d.dialog = Some(DlqDialog::Replay {
                        scopes,
                        scope: 0,
                        targets,
                        target: 0,
                        focus: 2,
                    });
                }
            }
            Action::Purge => {
                if read_only {
                    say = Some((
                        Level::Error,
                        format!(
                            "refusing to purge: profile `{}` is read-only (nothing removed)",
                            sanitize(&profile)
                        ),
                    ));
                } else if job_running {
                    say = Some((Level::Warn, "wait for the running replay to end".into()));
                } else {
                    d.dialog = Some(DlqDialog::PurgePreparing);
                    request = Some(OpRequest::PurgePrepare { ns: ns.clone() });
                }
            }
            _ => return None,
        }
        if let Some(p) = inspect {
            self.ops.inspector = Some(InspectorPanel {
                ns: ns.clone(),
                position: p,
                message: None,
                loading: true,
                error: None,
                mode: BodyMode::Auto,
                lines: Vec::new(),
                scroll: 0,
            });
            self.ask(OpRequest::DlqInspect {
                ns: ns.clone(),
                position: p,
            });
            self.push_view(View::Inspector { ns });
        }
        if let Some((l, t)) = say {
            self.say(l, t);
        }
        if let Some(r) = request {
            self.ask(r);
        }
        Some(Effect::None)
    }

    fn inspector_action(&mut self, action: &Action) -> Option<Effect> {
        let i = self.ops.inspector.as_mut()?;
        let mut request = None;
        match action {
            Action::Up => i.scroll = i.scroll.saturating_sub(1),
            Action::Down => i.scroll = (i.scroll + 1).min(i.lines.len().saturating_sub(1)),
            Action::PageUp => i.scroll = i.scroll.saturating_sub(15),
            Action::PageDown => i.scroll = (i.scroll + 15).min(i.lines.len().saturating_sub(1)),
            Action::Top => i.scroll = 0,
            Action::Bottom => i.scroll = i.lines.len().saturating_sub(1),
            Action::BodyMode => {
                i.mode = match i.mode {
                    BodyMode::Auto => BodyMode::Text,
                    BodyMode::Text => BodyMode::Json,
                    BodyMode::Json => BodyMode::Hex,
                    BodyMode::Hex => BodyMode::Auto,
                };
                i.rebuild();
            }
            Action::Export => {
                if let Some(m) = &i.message {
                    request = Some(OpRequest::DlqExport {
                        ns: i.ns.clone(),
                        position: i.position,
                        message: Some(Box::new(m.clone())),
                    });
                }
            }
            Action::OpenNamespace { ns: None } => {}
            _ => return None,
        }
        if let Some(r) = request {
            self.ask(r);
        }
        Some(Effect::None)
    }

    fn timeline_action(&mut self, action: &Action) -> Option<Effect> {
        let t = &mut self.ops.timeline;
        let n = t.entries.len();
        match action {
            Action::Up => t.scroll = (t.scroll + 1).min(n.saturating_sub(1)),
            Action::Down => t.scroll = t.scroll.saturating_sub(1),
            Action::PageUp => t.scroll = (t.scroll + 15).min(n.saturating_sub(1)),
            Action::PageDown => t.scroll = t.scroll.saturating_sub(15),
            Action::Top => t.scroll = n.saturating_sub(1),
            Action::Bottom => t.scroll = 0,
            Action::Refresh => {
                let ns = t.ns.clone();
                t.loading = true;
                self.ask(OpRequest::TimelineLoad { ns });
            }
            Action::OpenNamespace { ns: None } => {}
            _ => return None,
        }
        Some(Effect::None)
    }

    fn is_own(&self, e: &Event) -> bool {
        if e.operator != self.ops.operator || e.host != self.ops.host {
            return false;
        }
        let Some(ns) = &e.namespace else {
            return true;
        };
        let drill = self
            .ops
            .drill
            .as_ref()
            .and_then(|d| d.status.as_ref())
            .is_some_and(|s| &s.namespace == ns);
        drill
            || self
                .ops
                .own_activity
                .get(ns)
                .is_some_and(|t| self.now_ms - t < OWN_ACTIVITY_MS)
            || self
                .ops
                .rollback
                .as_ref()
                .is_some_and(|r| &r.ns == ns && r.stage == RbStage::Running)
    }

    /// Apply an answer of the ops runner; returns whether anything visible changed.
    pub fn handle_op(&mut self, msg: OpMsg) -> bool {
        match msg {
            OpMsg::GateApplied { ns, result } => {
                self.ops.own_activity.insert(ns.clone(), self.now_ms);
                match &result {
                    Ok(r) if r.changed => self.say(
                        if r.verified {
                            Level::Info
                        } else {
                            Level::Error
                        },
                        format!(
                            "gate of {} is now {}{}",
                            sanitize(&ns),
                            r.after.describe_percent(),
                            if r.verified {
                                " (verified)"
                            } else {
                                " — NOT VERIFIED"
                            }
                        ),
                    ),
                    Ok(_) => self.say(Level::Info, "nothing to change"),
                    Err(e) => self.say(Level::Error, format!("gate flip failed: {e}")),
                }
                if let Some(g) = self.ops.gate.as_mut().filter(|g| g.ns == ns)
                    && let GateStage::Applying { target } = &g.stage
                {
                    g.stage = GateStage::Result {
                        target: target.clone(),
                        result,
                    };
                }
                self.ops.requests.push(OpRequest::Refresh);
            }
            OpMsg::DlqPage {
                ns,
                page,
                depth,
                result,
            } => {
                let now_s = self.now_ms / 1000;
                if let Some(d) = self.ops.dlq.as_mut().filter(|d| d.ns == ns) {
                    match result {
                        Ok(msgs) => d.absorb(page, depth, &msgs, now_s),
                        Err(e) => {
                            d.loading = false;
                            d.depth = depth.or(d.depth);
                            d.error = Some(e);
                        }
                    }
                }
            }
            OpMsg::Inspected {
                ns,
                position,
                result,
            } => {
                if let Some(i) = self
                    .ops
                    .inspector
                    .as_mut()
                    .filter(|i| i.ns == ns && i.position == position)
                {
                    i.loading = false;
                    match result {
                        Ok(Some(m)) => {
                            i.message = Some(*m);
                            i.rebuild();
                        }
                        Ok(None) => {
                            i.error = Some(format!(
                                "no message at position {position} any more (the DLQ changed); go back and refresh"
                            ))
                        }
                        Err(e) => i.error = Some(e),
                    }
                }
            }
            OpMsg::Exported(r) => match r {
                Ok(p) => self.say(Level::Info, format!("exported to {}", p.display())),
                Err(e) => self.say(Level::Error, format!("export failed: {e}")),
            },
            OpMsg::MoveStarted { ns, title, parts } => {
                self.ops.own_activity.insert(ns.clone(), self.now_ms);
                self.ops.job = Some(MoveJob {
                    ns,
                    title,
                    progress: None,
                    part: (1, parts),
                    paused: false,
                    stopping: false,
                    done: None,
                    failed: false,
                });
            }
            OpMsg::MoveProgress { progress, part } => {
                if let Some(j) = self.ops.job.as_mut() {
                    j.part.0 = part;
                    j.progress = Some(progress);
                    self.ops.own_activity.insert(j.ns.clone(), self.now_ms);
                }
            }
            OpMsg::MoveDone {
                ns,
                summary,
                failed,
            } => {
                self.ops.own_activity.insert(ns.clone(), self.now_ms);
                self.say(
                    if failed { Level::Error } else { Level::Info },
                    summary.clone(),
                );
                if let Some(j) = self.ops.job.as_mut() {
                    j.done = Some(summary);
                    j.failed = failed;
                }
                if let Some(d) = self.ops.dlq.as_mut().filter(|d| d.ns == ns) {
                    d.loading = true;
                    let (page, size) = (d.page, d.page_size);
                    self.ops.requests.push(OpRequest::DlqLoad {
                        ns,
                        page,
                        page_size: size,
                    });
                }
                self.ops.requests.push(OpRequest::Refresh);
            }
            OpMsg::PurgePrepared(r) => {
                let mut abort = false;
                match (self.ops.dlq.as_mut(), r) {
                    (Some(d), Ok((0, path))) => {
                        d.dialog = None;
                        abort = true;
                        self.message = None;
                        self.say(
                            Level::Info,
                            format!(
                                "the DLQ is empty; nothing to purge (empty export {})",
                                path.display()
                            ),
                        );
                    }
                    (Some(d), Ok((count, path))) => {
                        d.dialog = Some(DlqDialog::PurgeReady {
                            count,
                            path,
                            typed: String::new(),
                            focus: 0,
                        })
                    }
                    (Some(d), Err(e)) => d.dialog = Some(DlqDialog::PurgeResult(Err(e))),
                    (None, _) => abort = true,
                }
                if abort {
                    self.ops.requests.push(OpRequest::PurgeAbort);
                }
            }
            OpMsg::PurgeDone(r) => {
                if let Some(d) = self.ops.dlq.as_mut() {
                    d.dialog = Some(DlqDialog::PurgeResult(r));
                    d.loading = true;
                    let (ns, page, size) = (d.ns.clone(), 0, d.page_size);
                    d.selected.clear();
                    self.ops.requests.push(OpRequest::DlqLoad {
                        ns,
                        page,
                        page_size: size,
                    });
                }
                self.ops.requests.push(OpRequest::Refresh);
            }
            OpMsg::Timeline(r) => {
                let t = &mut self.ops.timeline;
                t.loading = false;
                match r {
                    Ok(mut entries) => {
                        // Keep live events that arrived while loading.
                        let seen: BTreeSet<_> = entries.iter().map(|e| e.id).collect();
                        let late: Vec<TimelineEntry> = t
                            .entries
                            .drain(..)
                            .filter(|e| !seen.contains(&e.id))
                            .collect();
                        entries.extend(late);
                        let extra = entries.len().saturating_sub(TIMELINE_MAX);
                        entries.drain(..extra);
                        t.entries = entries;
                        t.error = None;
                    }
                    Err(e) => t.error = Some(e),
                }
            }
            OpMsg::Ledger(e) => self.absorb_event(&e),
            OpMsg::LedgerDown(why) => {
                self.ops.feed_down = Some(sanitize(&why).into_owned());
            }
            OpMsg::NoteAdded(r) => match r {
                Ok(id) => self.say(Level::Info, format!("note added to the ledger ({id})")),
                Err(e) => self.say(Level::Error, format!("cannot add the note: {e}")),
            },
            OpMsg::RollbackResumable { ns, candidates } => {
                if let Some(rb) = self
                    .ops
                    .rollback
                    .as_mut()
                    .filter(|r| r.ns == ns && r.stage == RbStage::Checking)
                {
                    if candidates.is_empty() {
                        rb.stage = RbStage::Running;
                        let r = OpRequest::RollbackStart {
                            ns: ns.clone(),
                            from: rb.from.clone(),
                            to: rb.to.clone(),
                        };
                        self.ask(r);
                    } else {
                        rb.stage = RbStage::Offer {
                            candidates,
                            focus: 0,
                        };
                    }
                }
            }
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
                    self.open_rollback_offer(ns, candidates);
                }
                let others = found.len();
                self.say(
                    Level::Warn,
                    format!(
                        "{others} unfinished rollback(s) in the ledger — resume, start new, or cancel"
                    ),
                );
            }
            OpMsg::Rollback(u) => {
                if let Some(rb) = self.ops.rollback.as_mut() {
                    apply_update(rb, &u);
                }
                if matches!(*u, Update::Step { .. }) {
                    self.ops.requests.push(OpRequest::Refresh);
                }
            }
            OpMsg::RollbackDecision(p) => {
                if let Some(rb) = self.ops.rollback.as_mut() {
                    rb.focus = 0;
                    rb.decision = Some(*p);
                    let ns = rb.ns.clone();
                    if !matches!(self.view(), View::Rollback { .. }) {
                        self.say(
                            Level::Warn,
                            format!(
                                "rollback of {} waits for your decision — press {}",
                                sanitize(&ns),
                                self.keymap.first_key("rollback")
                            ),
                        );
                    }
                }
            }
            OpMsg::RollbackDone(r) => {
                if let Some(rb) = self.ops.rollback.as_mut() {
                    rb.stage = RbStage::Finished;
                    rb.decision = None;
                    rb.id = Some(r.rollback_id.clone());
                    for s in &r.steps {
                        if let Some(row) = rb.steps.get_mut(s.index) {
                            row.state = s.state;
                            row.detail = s.detail.clone();
                        }
                    }
                    let line = outcome_line(&r.outcome);
                    rb.outcome = Some(r.outcome.clone());
                    let level = if r.outcome == RollbackOutcome::Done {
                        Level::Info
                    } else {
                        Level::Error
                    };
                    self.say(level, format!("rollback {}: {line}", r.rollback_id));
                }
                self.ops.requests.push(OpRequest::Refresh);
            }
            OpMsg::RollbackFailed(e) => {
                if let Some(rb) = self.ops.rollback.as_mut() {
                    rb.stage = RbStage::Finished;
                    rb.error = Some(sanitize(&e).into_owned());
                }
                self.say(Level::Error, format!("rollback: {e}"));
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
            }
            OpMsg::DrillDone(r) => {
                let d = self.ops.drill.get_or_insert_with(DrillPanel::default);
                match r {
                    Ok(res) => {
                        d.status = Some(res.status.clone());
                        d.result = Some(*res);
                    }
                    Err(e) => d.error = Some(sanitize(&e).into_owned()),
                }
                d.dismissed = false;
                d.focus = 0;
            }
            OpMsg::PostmortemWritten(r) => match r {
                Ok(p) => {
                    if let Some(d) = self.ops.drill.as_mut() {
                        d.written = Some(p.display().to_string());
                        d.dismissed = true;
                    }
                    self.say(
                        Level::Info,
                        format!("post-mortem draft written to {}", p.display()),
                    );
                }
                Err(e) => self.say(Level::Error, format!("cannot write the post-mortem: {e}")),
            },
        }
        true
    }

    fn absorb_event(&mut self, e: &Event) {
        let other = !self.is_own(e);
        let text = summarize(e);
        let who = sanitize(&e.operator).into_owned();
        let ns = e.namespace.clone();
        if other {
            let ns_txt = ns
                .as_deref()
                .map(|n| sanitize(n).into_owned())
                .unwrap_or_default();
            let line = match e.kind {
                EventKind::GateSet => Some(format!(
                    "⚠ {who} (elsewhere) just flipped the gate of {ns_txt}: {text}"
                )),
                EventKind::RollbackStarted => Some(format!(
                    "⚠ {who} (elsewhere) started a rollback of {ns_txt}"
                )),
                EventKind::Purge | EventKind::Replay | EventKind::Move => {
                    Some(format!("{who} (elsewhere) on {ns_txt}: {text}"))
                }
                EventKind::Note => Some(format!("note by {who}: {text}")),
                _ => None,
            };
            if let Some(l) = line {
                self.say(Level::Warn, l);
            }
        }
        self.ops.feed.push_back(FeedItem {
            at_ms: self.now_ms,
            ns: ns.clone(),
            text: format!("{} {who}: {text}", e.ts.format("%H:%M:%S")),
            other,
        });
        while self.ops.feed.len() > FEED_LEN {
            self.ops.feed.pop_front();
        }
        let in_view = matches!(self.view(), View::Timeline { .. });
        let t = &mut self.ops.timeline;
        if !t.loading || !t.entries.is_empty() || in_view {
            let filter = TimelineFilter {
                namespace: t.ns.clone(),
                ..Default::default()
            };
            let add = crate::ledger::projection::timeline([e], &filter);
            if !t.entries.iter().any(|x| x.id == e.id) {
                t.entries.extend(add);
                if t.scroll > 0 {
                    t.scroll += 1;
                }
            }
            let extra = t.entries.len().saturating_sub(TIMELINE_MAX);
            t.entries.drain(..extra);
        }
    }
}

/// Apply an engine update to the checklist.
pub fn apply_update(rb: &mut RollbackPanel, u: &Update) {
    match u {
        Update::Started {
            rollback_id,
            plan,
            evidence,
        } => {
            rb.id = Some(rollback_id.clone());
            rb.plan = plan.name.clone();
            rb.from = plan.from.clone();
            rb.to = plan.to.clone();
            rb.evidence = evidence.iter().map(|e| sanitize(e).into_owned()).collect();
            rb.stage = RbStage::Running;
            rb.steps = plan
                .steps
                .iter()
                .map(|s| RbStep {
                    title: s.title.clone(),
                    description: s.kind.describe(&rb.ns),
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
            if let Some(s) = rb.steps.get_mut(*index) {
                s.state = *state;
                s.detail = sanitize(detail).into_owned();
                if *state != StepState::Running {
                    s.progress = None;
                }
            }
        }
        Update::Progress { index, done, total } => {
            if let Some(s) = rb.steps.get_mut(*index) {
                s.progress = Some((*done, *total));
            }
        }
        Update::Finished { outcome } => {
            rb.outcome = Some(outcome.clone());
            rb.stage = RbStage::Finished;
        }
    }
}
