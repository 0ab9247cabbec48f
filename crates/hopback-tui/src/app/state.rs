//! The console's state: plain data and the pure functions that change it — no ratatui, no lapin,
//! no I/O — so every behaviour (keys, alerts, staleness, the tap's error rates) is testable in
//! microseconds and the views in `ui/` only read it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::action::{Action, parse_command};
use super::alerts::{Alert, AlertTracker, Thresholds};
use super::keymap::Keymap;
pub use super::tap::{
    Buckets, HISTORY_SAMPLES, RECENT_DEAD_LETTERS, Sample, TAP_RATE_WINDOW_MS, TapState, VersionKey,
};
use crate::broker::stats::apply_dead_letter_rates;
use crate::broker::tap::TapEvent;
use crate::config::Config;
use crate::model::ConnState;
use crate::model::snapshot::{FleetSnapshot, NamespaceSnapshot};

/// Status messages disappear after this long.
pub const MESSAGE_TTL_MS: i64 = 8_000;

/// A message from a background task to the app loop.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A fresh snapshot.
    Snapshot(Box<FleetSnapshot>),
    /// A refresh failed (the last snapshot stays, marked stale).
    RefreshFailed {
        /// What went wrong (credential-free).
        error: String,
    },
    /// The refresh connection changed state.
    Conn(ConnState),
    /// The refresh connection is on this node (`host:port`; a cluster profile moves between
    /// its nodes).
    Node(String),
    /// The dead-letter tap.
    Tap(TapEvent),
    /// Consumer connection names per queue (management API, every ~5 s).
    Consumers(BTreeMap<String, Vec<String>>),
    /// Clock tick (unix ms): ages, message expiry, rate decay.
    Tick(i64),
    /// An answer of the operations runner (gate, dead letters, ledger, rollback, drill).
    Op(super::protocol::OpMsg),
}

/// What the loop must do after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Leave.
    Quit,
    /// Ask the refresh task for a refresh now.
    Refresh,
    /// Switch to this context (a profile name; `all`: the overview across contexts) — the
    /// console, which holds every context, does it.
    SwitchContext(String),
}

/// The views (a stack; Esc pops). The operation views keep their data in
/// [`AppState::ops`](super::panels::OpsState).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// The fleet table.
    Overview,
    /// One namespace: versions side by side.
    Namespace {
        /// Which.
        ns: String,
    },
    /// Keys and commands.
    Help,
    /// Every active alert, worst first (`!`).
    Alerts,
    /// The gate panel of a namespace.
    Gate {
        /// Which.
        ns: String,
    },
    /// The dead-letter browser of a namespace.
    DeadLetters {
        /// Which.
        ns: String,
    },
    /// One dead letter, in full.
    Inspector {
        /// Namespace.
        ns: String,
    },
    /// The incident timeline (the ledger).
    Timeline {
        /// Only this namespace.
        ns: Option<String>,
    },
    /// A guided rollback.
    Rollback {
        /// Namespace.
        ns: String,
    },
    /// Every field of one timeline event (Enter on a timeline row).
    Describe,
    /// hopback's own log file.
    Log,
    /// The context picker: every profile, its broker, version and health.
    Contexts,
}

/// What the operator is typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `/` filter text.
    Filter(String),
    /// `:` command text.
    Command(String),
}

/// Overview sort column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Namespace name.
    Name,
    /// Highest error rate of the namespace.
    ErrorRate,
    /// Total ready messages.
    Ready,
    /// Dead letters per second.
    DeadLetterRate,
}

impl SortKey {
    /// Every column, in header order.
    pub const ALL: [SortKey; 4] = [
        SortKey::Name,
        SortKey::Ready,
        SortKey::DeadLetterRate,
        SortKey::ErrorRate,
    ];
    /// The keymap's action name of "sort by this column".
    pub fn config_name(self) -> &'static str {
        match self {
            SortKey::Name => "sort_name",
            SortKey::ErrorRate => "sort_error",
            SortKey::Ready => "sort_ready",
            SortKey::DeadLetterRate => "sort_dl",
        }
    }
    /// Label for the table header.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::ErrorRate => "error %",
            SortKey::Ready => "ready",
            SortKey::DeadLetterRate => "DL/s",
        }
    }
    fn next(self) -> Self {
        match self {
            SortKey::Name => SortKey::ErrorRate,
            SortKey::ErrorRate => SortKey::Ready,
            SortKey::Ready => SortKey::DeadLetterRate,
            SortKey::DeadLetterRate => SortKey::Name,
        }
    }
}

/// Severity of a status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Informational.
    Info,
    /// Needs attention.
    Warn,
    /// Something failed.
    Error,
}

/// A transient status-line message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusMsg {
    /// Text (already safe).
    pub text: String,
    /// Severity.
    pub level: Level,
    /// When it was set (unix ms).
    pub at_ms: i64,
}

/// Where the overview table sits on screen (filled in by the UI after each draw, for mouse clicks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayoutHints {
    /// Terminal row of the first table body row.
    pub table_top: u16,
    /// Table body rows visible.
    pub table_rows: u16,
    /// Index of the first visible row.
    pub table_offset: usize,
    /// How far the help view can scroll (lines that did not fit).
    pub help_max_scroll: usize,
}

/// One row of the overview: a namespace index and one of its versions (`None` when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    /// Index into `snapshot.namespaces`.
    pub ns: usize,
    /// Index into that namespace's `versions`.
    pub version: Option<usize>,
}

/// Everything the console knows and shows.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Profile name.
    pub profile: String,
    /// `host:port` of the broker node in use (never credentials); [`Self::broker_label`] adds
    /// the node count of a cluster profile.
    pub broker: String,
    /// Nodes the profile names.
    pub nodes: usize,
    /// Virtual host.
    pub vhost: String,
    /// Production profile (red accent, badge).
    pub production: bool,
    /// Read-only profile (badge; mutations refused).
    pub read_only: bool,
    /// Alerts raised or cleared since the loop last took them, to be journaled
    /// ([`AppState::take_alert_records`]).
    pub alert_records: Vec<crate::ops::alert::AlertRecord>,
    /// Refresh interval.
    pub refresh_interval_ms: u64,
    /// Ring the bell when an alert starts.
    pub bell_enabled: bool,
    /// Keys.
    pub keymap: Keymap,
    /// Alert thresholds.
    pub thresholds: Thresholds,
    /// Refresh connection state.
    pub conn: ConnState,
    /// The last good snapshot.
    pub snapshot: Option<FleetSnapshot>,
    /// When the last good snapshot arrived (unix ms).
    pub last_ok_ms: Option<i64>,
    /// The last refresh error, while failing.
    pub last_error: Option<String>,
    /// "Now" for ages and rates (unix ms), advanced by ticks — fixed in tests.
    pub now_ms: i64,
    /// (ns, version) → history, oldest first.
    pub history: BTreeMap<(String, String), VecDeque<Sample>>,
    /// The tap.
    pub tap: TapState,
    /// Queue → consumer connection names (sanitised).
    pub consumers: BTreeMap<String, Vec<String>>,
    /// Has the consumer list been read at least once? Until then the names are unknown.
    pub consumers_seen: bool,
    /// Alerts.
    pub alerts: AlertTracker,
    /// View stack; the bottom is always the overview.
    pub views: Vec<View>,
    /// Selected overview row.
    pub selected: usize,
    /// Active filter (lower-case match on names).
    pub filter: String,
    /// Text being typed.
    pub input: Option<Input>,
    /// Sort column.
    pub sort: SortKey,
    /// Descending?
    pub sort_desc: bool,
    /// Status line message.
    pub message: Option<StatusMsg>,
    /// A new alert started: ring the bell on the next draw.
    pub bell_pending: bool,
    /// Scroll of the namespace view's dead-letter list.
    pub ns_scroll: usize,
    /// Scroll of the help view (lines).
    pub help_scroll: usize,
    /// The selected row of the alerts view (its namespace is "the selected namespace" there).
    pub alert_sel: usize,
    /// Draw in ASCII only (the locale is not UTF-8; see [`crate::ui::ascii`]).
    pub ascii: bool,
    /// Layout of the last frame.
    pub layout: LayoutHints,
    /// The operation views (gate, dead letters, timeline, rollback, drill) and the ledger feed.
    pub ops: super::panels::OpsState,
    /// The live view is paused since (unix ms): snapshots are held, not shown.
    pub paused_since_ms: Option<i64>,
    /// The newest snapshot that arrived while paused (shown on resume).
    pub held: Option<Box<FleetSnapshot>>,
    /// Refreshes held while paused.
    pub held_count: u64,
    /// Text to copy to the clipboard (OSC 52) on the next draw (already terminal-safe).
    pub clipboard_pending: Option<String>,
    /// Every profile the console knows, for the picker (filled by the console).
    pub contexts: Vec<super::contexts::ContextInfo>,
    /// The picker's selected row.
    pub context_sel: usize,
}

impl AppState {
    /// Why `ns` is not in the last refresh: not on the broker — or unknown, because the list of
    /// namespaces comes from the management API and it did not answer (a wrong `--mgmt-url`
    /// must not read as a missing namespace).
    pub fn missing_namespace(&self, ns: &str) -> String {
        match self.snapshot.as_ref() {
            Some(s) if !s.mgmt_available => format!(
                "namespace `{}` is unknown: the management API is unreachable ({}), and the namespace list comes from it — check mgmt_url / --mgmt-url (`hopback check`); `hopback status {}` reads it over AMQP",
                crate::text::sanitize(ns),
                crate::text::sanitize(s.mgmt_error.as_deref().unwrap_or("no reason given")),
                crate::text::sanitize(ns)
            ),
            _ => format!(
                "no namespace `{}` on this broker (as of the last refresh)",
                crate::text::sanitize(ns)
            ),
        }
    }
}

impl AppState {
    /// A fresh state for a config, before any data.
    pub fn new(cfg: &Config, keymap: Keymap, now_ms: i64) -> Self {
        let per_namespace = cfg
            .profile
            .namespaces
            .iter()
            .map(|(ns, a)| (ns.clone(), a.alerts.clone()))
            .collect();
        AppState {
            profile: cfg.profile.name.clone(),
            broker: cfg.profile.host_port(),
            nodes: cfg.profile.nodes(),
            vhost: cfg.profile.vhost.clone(),
            production: cfg.profile.production,
            read_only: cfg.profile.read_only,
            alert_records: Vec::new(),
            refresh_interval_ms: cfg.refresh_interval_ms,
            bell_enabled: cfg.alerts.bell,
            keymap,
            thresholds: Thresholds {
                defaults: cfg.alerts.clone(),
                per_namespace,
            },
            conn: ConnState::Connecting,
            snapshot: None,
            last_ok_ms: None,
            last_error: None,
            now_ms,
            history: BTreeMap::new(),
            tap: TapState::default(),
            consumers: BTreeMap::new(),
            consumers_seen: false,
            alerts: AlertTracker::default(),
            views: vec![View::Overview],
            selected: 0,
            filter: String::new(),
            input: None,
            sort: SortKey::Name,
            sort_desc: false,
            message: None,
            bell_pending: false,
            ns_scroll: 0,
            help_scroll: 0,
            alert_sel: 0,
            ascii: false,
            layout: LayoutHints::default(),
            ops: super::panels::OpsState {
                operator: cfg.operator.clone(),
                host: gethostname::gethostname().to_string_lossy().into_owned(),
                ..Default::default()
            },
            paused_since_ms: None,
            held: None,
            held_count: 0,
            clipboard_pending: None,
            contexts: Vec::new(),
            context_sel: 0,
        }
    }

    /// Is the live view paused?
    pub fn paused(&self) -> bool {
        self.paused_since_ms.is_some()
    }

    /// The `/` filter of the view on top (each view keeps its own); `None`: the view has none.
    pub fn view_filter(&self) -> Option<&str> {
        match self.view() {
            View::Overview => Some(&self.filter),
            View::Timeline { .. } => Some(&self.ops.timeline.filter),
            View::Log => Some(&self.ops.log.filter),
            _ => None,
        }
    }

    fn view_filter_mut(&mut self) -> Option<&mut String> {
        match self.view() {
            View::Overview => Some(&mut self.filter),
            View::Timeline { .. } => Some(&mut self.ops.timeline.filter),
            View::Log => Some(&mut self.ops.log.filter),
            _ => None,
        }
    }

    /// The view on top.
    pub fn view(&self) -> &View {
        self.views.last().unwrap_or(&View::Overview)
    }

    /// Age of the data in ms (`None` before the first snapshot).
    pub fn data_age_ms(&self) -> Option<i64> {
        self.last_ok_ms.map(|t| (self.now_ms - t).max(0))
    }

    /// Is the data on screen stale? (connection not live, or no good refresh for 3 intervals)
    pub fn is_stale(&self) -> bool {
        // Paused: the data is old on purpose, and the header says so instead.
        if self.snapshot.is_none() || self.paused() {
            return false;
        }
        let too_old = self
            .data_age_ms()
            .is_some_and(|a| a > (3 * self.refresh_interval_ms as i64).max(3_000));
        !self.conn.is_live() || too_old || self.last_error.is_some()
    }

    /// `host:port` of the node in use, or `host:port (of 3 nodes)` for a cluster profile.
    pub fn broker_label(&self) -> String {
        if self.nodes > 1 {
            format!("{} (of {} nodes)", self.broker, self.nodes)
        } else {
            self.broker.clone()
        }
    }

    /// Header text for the connection: `connected`, or `stale 12 s — reconnecting (attempt 3)`.
    pub fn conn_label(&self) -> String {
        if self.is_stale() {
            let age_s = self.data_age_ms().unwrap_or(0) / 1000;
            let what = match &self.conn {
                ConnState::Reconnecting { attempt, .. } => {
                    format!("reconnecting (attempt {attempt})")
                }
                ConnState::Failed { .. } => "connection failed".to_string(),
                ConnState::Connecting => "connecting".to_string(),
                ConnState::Connected { .. } => "refresh failing".to_string(),
            };
            format!("stale {age_s} s — {what}")
        } else {
            crate::text::sanitize(&self.conn.label()).into_owned()
        }
    }

    /// `broker blocked: memory alarm` (or disk, or both) while the last snapshot saw a resource
    /// alarm; publishes (replays, ledger events) wait until it clears.
    pub fn blocked_label(&self) -> Option<String> {
        let alarms = &self.snapshot.as_ref()?.broker_alarms;
        if alarms.is_empty() {
            return None;
        }
        Some(format!(
            "broker blocked: {}",
            crate::text::sanitize(&alarms.join(", "))
        ))
    }

    /// Set the status line.
    pub fn say(&mut self, level: Level, text: impl Into<String>) {
        self.message = Some(StatusMsg {
            text: text.into(),
            level,
            at_ms: self.now_ms,
        });
    }

    /// Overview rows after filter and sort.
    pub fn rows(&self) -> Vec<RowRef> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let f = self.filter.to_lowercase();
        let mut nss: Vec<usize> = (0..snap.namespaces.len())
            .filter(|i| {
                let ns = &snap.namespaces[*i];
                f.is_empty()
                    || ns.name.to_lowercase().contains(&f)
                    || ns
                        .versions
                        .iter()
                        .any(|v| v.queue.to_lowercase().contains(&f))
            })
            .collect();
        let key = |ns: &NamespaceSnapshot| -> f64 {
            match self.sort {
                SortKey::Name => 0.0,
                SortKey::ErrorRate => ns
                    .versions
                    .iter()
                    .filter_map(|v| v.error_rate)
                    .fold(-1.0, f64::max),
                SortKey::Ready => ns.versions.iter().filter_map(|v| v.ready).sum::<u64>() as f64,
                SortKey::DeadLetterRate => ns
                    .versions
                    .iter()
                    .filter_map(|v| v.dead_letter_rate)
                    .sum::<f64>(),
            }
        };
        nss.sort_by(|a, b| {
            let (na, nb) = (&snap.namespaces[*a], &snap.namespaces[*b]);
            let ord = match self.sort {
                SortKey::Name => na.name.cmp(&nb.name),
                _ => key(na)
                    .partial_cmp(&key(nb))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| nb.name.cmp(&na.name)),
            };
            // Numeric columns read best largest-first; `S` flips either way.
            let natural_desc = self.sort != SortKey::Name;
            if natural_desc ^ self.sort_desc {
                ord.reverse()
            } else {
                ord
            }
        });
        let mut out = Vec::new();
        for i in nss {
            let n = snap.namespaces[i].versions.len();
            if n == 0 {
                out.push(RowRef {
                    ns: i,
                    version: None,
                });
            }
            for v in 0..n {
                out.push(RowRef {
                    ns: i,
                    version: Some(v),
                });
            }
        }
        out
    }

    /// The namespace of the selected row.
    pub fn selected_namespace(&self) -> Option<String> {
        if let View::Namespace { ns }
        | View::Gate { ns }
        | View::DeadLetters { ns }
        | View::Inspector { ns }
        | View::Rollback { ns } = self.view()
        {
            return Some(ns.clone());
        }
        if self.view() == &View::Alerts {
            let a = &self.alerts.active;
            return a
                .get(self.alert_sel.min(a.len().saturating_sub(1)))
                .map(|a| a.ns.clone());
        }
        let rows = self.rows();
        let r = rows.get(self.selected.min(rows.len().saturating_sub(1)))?;
        self.snapshot
            .as_ref()
            .map(|s| s.namespaces[r.ns].name.clone())
    }

    /// Namespaces visible in the last frame (their depths are worth exact passive reads).
    pub fn visible_namespaces(&self) -> BTreeSet<String> {
        let Some(snap) = &self.snapshot else {
            return BTreeSet::new();
        };
        match self.view() {
            View::Namespace { ns }
            | View::Gate { ns }
            | View::DeadLetters { ns }
            | View::Inspector { ns }
            | View::Rollback { ns } => [ns.clone()].into(),
            _ => self
                .rows()
                .iter()
                .skip(self.layout.table_offset)
                .take(usize::from(self.layout.table_rows))
                .map(|r| snap.namespaces[r.ns].name.clone())
                .collect(),
        }
    }

    /// The namespace snapshot by name.
    pub fn namespace(&self, ns: &str) -> Option<&NamespaceSnapshot> {
        self.snapshot.as_ref()?.namespace(ns)
    }

    /// Alerts raised or cleared since the last call, for the ledger (the loop hands them to
    /// the runner as [`crate::app::protocol::OpRequest::JournalAlert`]).
    pub fn take_alert_records(&mut self) -> Vec<crate::ops::alert::AlertRecord> {
        std::mem::take(&mut self.alert_records)
    }

    /// Alerts that recommend a rollback, first one.
    pub fn rollback_recommendation(&self) -> Option<&Alert> {
        if self.read_only {
            return None;
        }
        self.alerts.active.iter().find(|a| a.rollback.is_some())
    }

    fn recompute(&mut self) {
        let now = self.now_ms;
        self.tap.expire(now);
        if let Some(snap) = &mut self.snapshot {
            let exact =
                snap.metrics_source == Some(crate::model::metrics::MetricsSource::Prometheus);
            for ns in &mut snap.namespaces {
                if self.tap.bound.contains(&ns.name) {
                    let rates = self.tap.rates(&ns.name, now);
                    apply_dead_letter_rates(ns, &rates, exact);
                }
            }
            let new = self.alerts.evaluate(snap, &self.thresholds, now);
            // The split that happened, beside the gate (the console's own window of counters).
            for ns in &mut snap.namespaces {
                ns.measured = self.alerts.measured_split(&ns.name);
                ns.split_check = match (&ns.gate, &ns.measured) {
                    (Some(g), Some(m)) => {
                        let check = crate::model::split::check(g, m);
                        let hash = ns
                            .hash_on
                            .as_deref()
                            .and_then(|h| h.parse::<crate::model::hash::HashOn>().ok());
                        Some(crate::model::snapshot::SplitReport {
                            cause: crate::model::split::cause(
                                &check,
                                hash.as_ref(),
                                None,
                                &ns.name,
                            ),
                            check,
                            sample: None,
                        })
                    }
                    _ => None,
                };
            }
            if !self.read_only {
                let record =
                    |a: &crate::app::alerts::Alert, raised: bool| crate::ops::alert::AlertRecord {
                        namespace: a.ns.clone(),
                        version: a.version.clone(),
                        metric: a.kind.tag().to_string(),
                        text: if raised {
                            a.describe()
                        } else {
                            a.describe_cleared()
                        },
                        raised,
                    };
                self.alert_records
                    .extend(new.iter().map(|a| record(a, true)));
                let cleared = self.alerts.cleared.clone();
                self.alert_records
                    .extend(cleared.iter().map(|a| record(a, false)));
            }
            if !new.is_empty() {
                let bell = new
                    .iter()
                    .any(|a| self.thresholds.of(&a.ns).bell && self.bell_enabled);
                self.bell_pending |= bell;
            }
        }
    }

    fn record_history(&mut self) {
        let Some(snap) = &self.snapshot else { return };
        for ns in &snap.namespaces {
            for v in &ns.versions {
                let h = self
                    .history
                    .entry((ns.name.clone(), v.version.clone()))
                    .or_default();
                if h.len() >= HISTORY_SAMPLES {
                    h.pop_front();
                }
                h.push_back(Sample::new(
                    v.ready.unwrap_or(0) + v.unacked.unwrap_or(0),
                    v.error_rate,
                ));
            }
        }
        let live: BTreeSet<(String, String)> = snap
            .namespaces
            .iter()
            .flat_map(|n| {
                n.versions
                    .iter()
                    .map(|v| (n.name.clone(), v.version.clone()))
            })
            .collect();
        self.history.retain(|k, _| live.contains(k));
        self.alerts.record_dlq(snap, self.now_ms);
    }

    /// Apply a background message; returns whether anything visible changed.
    pub fn handle_msg(&mut self, msg: Msg) -> bool {
        if self.paused() {
            match msg {
                Msg::Snapshot(s) => {
                    self.held = Some(s);
                    self.held_count += 1;
                    return true;
                }
                Msg::Tick(now) => {
                    self.now_ms = now;
                    if self
                        .message
                        .as_ref()
                        .is_some_and(|m| now - m.at_ms > MESSAGE_TTL_MS)
                    {
                        self.message = None;
                    }
                    return true;
                }
                Msg::Tap(TapEvent::Batch(b)) => {
                    // Counted (the rates stay right), shown on resume.
                    self.tap.absorb(b);
                    return false;
                }
                Msg::Consumers(c) => {
                    self.consumers = c;
                    return false;
                }
                other => return self.handle_live_msg(other),
            }
        }
        self.handle_live_msg(msg)
    }

    fn handle_live_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Snapshot(s) => {
                let mut s = *s;
                for ns in &mut s.namespaces {
                    for v in &mut ns.versions {
                        v.connections = self
                            .consumers_seen
                            .then(|| self.consumers.get(&v.queue).cloned().unwrap_or_default());
                    }
                }
                self.now_ms = self.now_ms.max(s.taken_at_ms);
                self.last_ok_ms = Some(self.now_ms);
                self.snapshot = Some(s);
                self.last_error = None;
                self.recompute();
                self.record_history();
                true
            }
            Msg::RefreshFailed { error } => {
                self.last_error = Some(crate::text::sanitize(&error).into_owned());
                true
            }
            Msg::Node(node) => {
                self.broker = node;
                true
            }
            Msg::Conn(c) => {
                let changed = self.conn != c;
                self.conn = c;
                changed
            }
            Msg::Tap(TapEvent::Bound {
                namespaces,
                since_ms,
            }) => {
                self.tap.bound = namespaces;
                self.tap.since_ms = Some(since_ms);
                self.tap.down = None;
                self.recompute();
                true
            }
            Msg::Tap(TapEvent::Batch(b)) => {
                self.now_ms = self.now_ms.max(b.at_ms);
                let any = b.total() > 0;
                self.tap.absorb(b);
                if any {
                    self.recompute();
                }
                any
            }
            Msg::Tap(TapEvent::Down { error, attempt }) => {
                self.tap.down = Some(format!(
                    "{} (attempt {attempt})",
                    crate::text::sanitize(&error)
                ));
                self.tap.bound.clear();
                true
            }
            Msg::Consumers(c) => {
                if let Some(snap) = &mut self.snapshot {
                    for ns in &mut snap.namespaces {
                        for v in &mut ns.versions {
                            v.connections = Some(c.get(&v.queue).cloned().unwrap_or_default());
                        }
                    }
                }
                let changed = self.consumers != c || !self.consumers_seen;
                self.consumers = c;
                self.consumers_seen = true;
                changed
            }
            Msg::Tick(now) => {
                self.now_ms = now;
                if self
                    .message
                    .as_ref()
                    .is_some_and(|m| now - m.at_ms > MESSAGE_TTL_MS)
                {
                    self.message = None;
                }
                self.recompute();
                // Ages in the header change every second.
                true
            }
            Msg::Op(m) => self.handle_op(m),
        }
    }

    /// Handle one key (normalised name, see [`super::keymap::normalize`]).
    pub fn handle_key(&mut self, key: &str) -> Effect {
        if let Some(input) = self.input.clone() {
            return self.handle_input_key(input, key);
        }
        if self.modal() {
            return self.handle_dialog_key(key);
        }
        match self.keymap.lookup(key).cloned() {
            Some(a) => self.apply(a),
            None => Effect::None,
        }
    }

    fn handle_input_key(&mut self, input: Input, key: &str) -> Effect {
        let (mut text, is_filter) = match input {
            Input::Filter(t) => (t, true),
            Input::Command(t) => (t, false),
        };
        match key {
            "esc" => {
                self.input = None;
                if is_filter && let Some(f) = self.view_filter_mut() {
                    f.clear();
                }
                return Effect::None;
            }
            "enter" => {
                self.input = None;
                if is_filter {
                    return Effect::None;
                }
                return match parse_command(&text) {
                    Ok(a) => self.apply(a),
                    Err(e) => {
                        self.say(Level::Error, e);
                        Effect::None
                    }
                };
            }
            "backspace" => {
                text.pop();
            }
            "space" => text.push(' '),
            k if k.chars().count() == 1 => text.push_str(k),
            _ => return Effect::None,
        }
        if is_filter {
            if let Some(f) = self.view_filter_mut() {
                f.clone_from(&text);
            }
            match self.view() {
                View::Overview => self.selected = 0,
                View::Timeline { .. } => self.ops.timeline.scroll = 0,
                View::Log => self.ops.log.scroll = 0,
                _ => {}
            }
            self.input = Some(Input::Filter(text));
        } else {
            self.input = Some(Input::Command(text));
        }
        Effect::None
    }

    fn resolve_ns(&mut self, ns: Option<String>) -> Option<String> {
        let ns = ns.or_else(|| self.selected_namespace());
        if ns.is_none() {
            self.say(Level::Warn, "no namespace selected");
        }
        ns
    }

    fn move_selection(&mut self, delta: i64) {
        if self.view() == &View::Help {
            let max = self.layout.help_max_scroll as i64;
            self.help_scroll = (self.help_scroll as i64 + delta).clamp(0, max) as usize;
            return;
        }
        if matches!(self.view(), View::Namespace { .. }) {
            self.ns_scroll = (self.ns_scroll as i64 + delta).max(0) as usize;
            return;
        }
        if self.view() == &View::Alerts {
            let max = self.alerts.active.len().saturating_sub(1) as i64;
            self.alert_sel = (self.alert_sel as i64 + delta).clamp(0, max) as usize;
            return;
        }
        if self.view() == &View::Contexts {
            let max = self.contexts.len() as i64; // row 0 is "all"
            self.context_sel = (self.context_sel as i64 + delta).clamp(0, max) as usize;
            return;
        }
        let n = self.rows().len();
        if n == 0 {
            self.selected = 0;
            return;
        }
        self.selected = (self.selected as i64 + delta).clamp(0, n as i64 - 1) as usize;
    }

    /// Apply an action.
    pub fn apply(&mut self, action: Action) -> Effect {
        let page = i64::from(self.layout.table_rows.max(5));
        if let Some(effect) = self.apply_panel(&action) {
            return effect;
        }
        match action {
            Action::Quit => return Effect::Quit,
            Action::Back => {
                if self.message.is_some() {
                    self.message = None;
                }
                if self.views.len() > 1 {
                    self.views.pop();
                    self.ns_scroll = 0;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                }
            }
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-page),
            Action::PageDown => self.move_selection(page),
            Action::Top => self.move_selection(-i64::MAX / 2),
            Action::Bottom => self.move_selection(i64::MAX / 2),
            Action::OpenNamespace { ns: None } if self.view() == &View::Contexts => {
                let name = match self.context_sel {
                    0 => super::contexts::ALL.to_string(),
                    i => match self.contexts.get(i - 1) {
                        Some(c) => c.name.clone(),
                        None => return Effect::None,
                    },
                };
                return self.apply(Action::SwitchContext { name });
            }
            Action::OpenNamespace { ns } => {
                if let Some(ns) = self.resolve_ns(ns) {
                    if self.namespace(&ns).is_none() && self.snapshot.is_some() {
                        let text = self.missing_namespace(&ns);
                        self.say(Level::Error, text);
                    } else {
                        if matches!(
                            self.view(),
                            View::Namespace { .. } | View::Help | View::Alerts
                        ) {
                            self.views.pop();
                        }
                        self.ns_scroll = 0;
                        self.views.push(View::Namespace { ns });
                    }
                }
            }
            Action::Help => {
                if self.view() != &View::Help {
                    self.help_scroll = 0;
                    self.views.push(View::Help);
                }
            }
            Action::OpenAlerts => {
                if self.view() != &View::Alerts {
                    if self.view() == &View::Help {
                        self.views.pop();
                    }
                    self.alert_sel = 0;
                    self.views.push(View::Alerts);
                }
            }
            Action::StartFilter => match self.view_filter().map(str::to_string) {
                Some(f) => self.input = Some(Input::Filter(f)),
                None => self.say(
                    Level::Info,
                    "`/` filters the overview, the timeline and the log; this view has no filter",
                ),
            },
            Action::StartCommand => self.input = Some(Input::Command(String::new())),
            Action::SortNext => {
                self.sort = self.sort.next();
                self.say(Level::Info, format!("sorted by {}", self.sort.label()));
            }
            Action::SortReverse => self.sort_desc = !self.sort_desc,
            Action::SortBy { key } => {
                if self.sort == key {
                    self.sort_desc = !self.sort_desc;
                } else {
                    self.sort = key;
                    self.sort_desc = false;
                }
                self.say(Level::Info, format!("sorted by {}", self.sort.label()));
            }
            Action::PauseLive => match self.paused_since_ms.take() {
                Some(_) => {
                    let held = std::mem::take(&mut self.held_count);
                    if let Some(s) = self.held.take() {
                        self.handle_live_msg(Msg::Snapshot(s));
                    }
                    self.say(
                        Level::Info,
                        format!("live view resumed ({held} refresh(es) were held)"),
                    );
                }
                None => {
                    self.paused_since_ms = Some(self.now_ms);
                    self.say(
                        Level::Info,
                        format!(
                            "live view paused: refreshes are held until you press {} again (operations still run)",
                            self.keymap.first_key("pause_live")
                        ),
                    );
                }
            },
            Action::OpenContexts => {
                if self.view() != &View::Contexts {
                    if matches!(self.view(), View::Help | View::Alerts) {
                        self.views.pop();
                    }
                    self.context_sel = self.contexts.iter().position(|c| c.active).unwrap_or(0);
                    self.views.push(View::Contexts);
                }
            }
            Action::SwitchContext { name } => {
                let known = name == super::contexts::ALL
                    || self.contexts.iter().any(|c| c.name == name)
                    || (self.contexts.is_empty() && name == self.profile);
                if known {
                    if self.view() == &View::Contexts {
                        self.views.pop();
                    }
                    return Effect::SwitchContext(name);
                }
                let mut names: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
                if names.is_empty() {
                    names.push(&self.profile);
                }
                self.say(
                    Level::Error,
                    format!(
                        "no context `{}` (profiles: {}; `all` shows them together) — add a [profiles.NAME] table to the config",
                        crate::text::sanitize(&name),
                        crate::text::sanitize(&names.join(", "))
                    ),
                );
            }
            Action::Refresh => {
                self.say(Level::Info, "refreshing…");
                return Effect::Refresh;
            }
            // Handled by `apply_panel` (see `panels.rs`); nothing to do elsewhere.
            Action::OpenGate { .. }
            | Action::OpenDeadLetters { .. }
            | Action::OpenTimeline { .. }
            | Action::StartRollback { .. }
            | Action::Select
            | Action::Replay
            | Action::Purge
            | Action::Export
            | Action::BodyMode
            | Action::PauseResume
            | Action::StopJob
            | Action::NextPage
            | Action::PrevPage
            | Action::StartNote
            | Action::Note { .. }
            | Action::Yank
            | Action::CanaryControl { .. }
            | Action::OpenLog => {}
            // Dialog keys: only looked up while a dialog is open (see `panels::confirm`).
            Action::FocusNext
            | Action::FocusPrev
            | Action::OptionPrev
            | Action::OptionNext
            | Action::Confirm
            | Action::Cancel
            | Action::DecideContinue
            | Action::DecideSkip
            | Action::DecideAbort
            | Action::DecideReplay
            | Action::DecideKeep
            | Action::DecideExport
            | Action::WritePostmortem => {}
            Action::ClickRow { row } => {
                if self.view() == &View::Overview && row >= self.layout.table_top {
                    let idx = self.layout.table_offset + usize::from(row - self.layout.table_top);
                    if idx < self.rows().len()
                        && row < self.layout.table_top + self.layout.table_rows
                    {
                        if idx == self.selected {
                            return self.apply(Action::OpenNamespace { ns: None });
                        }
                        self.selected = idx;
                    }
                }
            }
        }
        Effect::None
    }
}
