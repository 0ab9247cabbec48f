//! The app ↔ runner protocol: what the console asks of the operations runner
//! ([`super::ops`]) as [`OpRequest`]s and what comes back as [`OpMsg`]s — plain data, so panels
//! and tests speak it without a broker (see `docs/architecture.md`, the console).

use std::path::PathBuf;

use crate::broker::mover::{MoveProgress, MoveReport, StopReason};
use crate::drill::{DrillResult, DrillStatus};
use crate::ledger::event::Event;
use crate::ledger::projection::TimelineEntry;
use crate::model::deadletter::{DeadLetterId, Filter, MessageView};
use crate::model::gate::GateSplit;
use crate::ops::gate::ApplyReport;
use crate::ops::rollback::{Decision, DecisionPoint, RollbackReport, Update};
use crate::text::sanitize;

/// Why a request of the console did not succeed, as the status line shows it: the kind
/// (refused, failed, not journaled) and one terminal-safe line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct Failed {
    /// Refused, failed or not journaled.
    pub kind: FailKind,
    /// What happened — what to try (terminal-safe).
    pub text: String,
}

/// The kinds of [`Failed`] the console tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// Refused before anything changed (read-only, a guard, a permission, an invalid request).
    Refused,
    /// Tried and failed (or the broker could not be reached).
    Failed,
    /// Done, but the ledger did not confirm it.
    NotJournaled,
}

impl From<String> for Failed {
    fn from(text: String) -> Self {
        Self {
            kind: FailKind::Failed,
            text,
        }
    }
}

impl From<&str> for Failed {
    fn from(text: &str) -> Self {
        text.to_string().into()
    }
}

impl From<crate::ops::OpError> for Failed {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError;
        let kind = match &e {
            OpError::NotJournaled { .. } => FailKind::NotJournaled,
            OpError::Refused { .. } | OpError::Invalid { .. } => FailKind::Refused,
            OpError::Broker(b) if b.is_refusal() => FailKind::Refused,
            _ => FailKind::Failed,
        };
        Self {
            kind,
            text: e.one_line(),
        }
    }
}

/// The line, for callers that only show it.
impl std::ops::Deref for Failed {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

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
    /// These dead letters by identity (selection, or a group that no filter expresses); an
    /// identity listed twice is two identical copies, both taken.
    Ids(Vec<DeadLetterId>),
}

/// Work for [`super::ops`]: asked by the state, executed in background tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum OpRequest {
    /// Ask the refresh task for a refresh now (after a change).
    Refresh,
    /// Record an alert raised or cleared in the ledger (`ops::alert::record`).
    JournalAlert(crate::ops::alert::AlertRecord),
    /// Flip the gate through `ops::gate::apply` (journaled, verified).
    GateApply {
        /// Namespace.
        ns: String,
        /// Target split.
        target: GateSplit,
        /// Zero-consumer guard explicitly overridden.
        force_zero_consumers: bool,
        /// The split the confirmed plan was made from (compare-and-set; see
        /// [`crate::ops::gate::GateRequest::expect_before`]).
        expect_before: Option<GateSplit>,
    },
    /// Plan a gate change without making it (`ops::gate::apply` with `dry_run`): the
    /// confirmation shows exactly the steps and warnings the runner would act on.
    GatePreview {
        /// Namespace.
        ns: String,
        /// Target split.
        target: GateSplit,
        /// Plan with the zero-consumer guard overridden (as the apply would be).
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
    /// Load one message fully for the inspector: found by identity in a fresh read (a
    /// position would name another message after a quorum queue's requeue).
    DlqInspect {
        /// Namespace.
        ns: String,
        /// The message.
        id: DeadLetterId,
    },
    /// Export one message to a JSON file (found by identity in a fresh read when not given).
    DlqExport {
        /// Namespace.
        ns: String,
        /// The message.
        id: DeadLetterId,
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
    /// Read the tail of hopback's own log file.
    LogLoad,
    /// Read the timeline from the ledger.
    TimelineLoad {
        /// Only this namespace.
        ns: Option<String>,
    },
    /// Ask a running canary to pause, resume, promote or abort (`ops::canary::control`).
    CanaryControl {
        /// Namespace.
        ns: String,
        /// Canary id.
        id: String,
        /// What.
        command: crate::ops::canary::ControlCommand,
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
    /// Stop the rollback's running step (`x` in the rollback view).
    RollbackStop,
    /// The operator pressed Enter on the drill's start screen (the console loop starts it).
    DrillStart,
    /// The operator left the drill's start screen (the console quits; nothing was created).
    DrillQuit,
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
        result: Result<Box<ApplyReport>, Failed>,
        /// The ledger event journaled for it (none for no-ops and failures before the flip).
        event_id: Option<String>,
    },
    /// The dry-run plan of a gate change (answer to [`OpRequest::GatePreview`]).
    GatePreview {
        /// Namespace.
        ns: String,
        /// Target split asked about.
        target: GateSplit,
        /// The dry-run report (steps and warnings) or why it could not be planned.
        result: Result<Box<ApplyReport>, Failed>,
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
        result: Result<Vec<MessageView>, Failed>,
    },
    /// A message loaded for the inspector.
    Inspected {
        /// Namespace.
        ns: String,
        /// The identity asked for.
        id: DeadLetterId,
        /// The message (`None`: it is no longer in the DLQ).
        result: Result<Option<Box<MessageView>>, Failed>,
    },
    /// An export was written.
    Exported(Result<PathBuf, Failed>),
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
        /// The ledger event journaled for it.
        event_id: Option<String>,
    },
    /// The DLQ was exported and is held; waiting for the typed count.
    PurgePrepared(Result<(u64, PathBuf), Failed>),
    /// The purge ended.
    PurgeDone {
        /// Messages removed and the export, or why not.
        result: Result<(u64, PathBuf), Failed>,
        /// The ledger event journaled for it.
        event_id: Option<String>,
    },
    /// The timeline.
    Timeline(Result<Vec<TimelineEntry>, Failed>),
    /// The log file's tail: (its path, its lines made terminal-safe), or why it cannot be read.
    Log(Result<(String, Vec<String>), Failed>),
    /// A live ledger event.
    Ledger(Box<Event>),
    /// The live ledger feed skipped a record it cannot read (terminal-safe description).
    LedgerSkipped(String),
    /// The live ledger feed is down.
    LedgerDown(String),
    /// The live ledger feed is (back) up.
    LedgerUp,
    /// An operation of this console appended this event (its intent or its outcome): its echo
    /// on the feed is ours.
    Journaled {
        /// The event's id.
        event_id: String,
    },
    /// A canary answered a control request (its message), or the request failed.
    CanaryControlled {
        /// Canary id.
        id: String,
        /// The canary's answer, or why not.
        result: Result<String, Failed>,
    },
    /// A note was appended (short id) or not.
    NoteAdded {
        /// Short id of the note, or why it failed.
        result: Result<String, Failed>,
        /// The ledger event.
        event_id: Option<String>,
    },
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
    DrillDone(Result<Box<DrillResult>, Failed>),
    /// The post-mortem was written.
    PostmortemWritten(Result<PathBuf, Failed>),
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
    let foreign = if c.foreign_origin > 0 {
        format!(
            " — ⚠ {} named an origin outside the namespace: parked, not sent there",
            c.foreign_origin
        )
    } else {
        String::new()
    };
    let unreadable = if c.quarantined + c.unreadable_left > 0 {
        format!(
            " — ⚠ {} unreadable (never republished): {} quarantined, {} left in place",
            c.quarantined + c.unreadable_left,
            c.quarantined,
            c.unreadable_left
        )
    } else {
        String::new()
    };
    format!(
        "{how}: moved {}, parked {}, left in place {}, possible duplicates {}, reconnects {}{unreadable}{foreign}",
        c.moved,
        c.parked,
        c.skipped_by_filter + c.no_target + c.refused_replays + c.returned,
        c.possible_duplicates,
        c.reconnects
    )
}
