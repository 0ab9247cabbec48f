//! Projections of the ledger: the incident timeline (CLI, TUI `:timeline`, post-mortem Markdown),
//! the gate history per namespace (`hopback history`, `diff`, `revert`) and drift (the broker's
//! bindings versus the ledger's last known gate).
//!
//! Everything here is pure: it folds [`Event`]s (from [`crate::ledger::Ledger::fold`] or a test
//! vector) into plain data. The builders ([`Timeline`], [`GateHistory`]) keep a bounded number of
//! entries so projecting a ledger of any length stays bounded in memory. Every string that came
//! from the ledger (operators, reasons, notes, namespaces) is passed through [`crate::text`]:
//! the ledger is shared, so its text is untrusted.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::ledger::event::{Event, EventKind, Outcome};
use crate::model::gate::GateSplit;
use crate::text::sanitize;

/// Which events a timeline shows.
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    /// Only this namespace (global events such as notes without a namespace are kept).
    pub namespace: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Keep at most this many (the newest); 0 = the default of 10,000.
    pub max_entries: usize,
}

/// Default bound of a timeline.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

impl TimelineFilter {
    fn admits(&self, e: &Event) -> bool {
        if let Some(t) = self.since
            && e.ts < t
        {
            return false;
        }
        match (&self.namespace, &e.namespace) {
            (Some(want), Some(ns)) => want == ns,
            _ => true,
        }
    }
}

/// One line of the timeline, ready to show (all text already terminal-safe).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Event id.
    pub id: Uuid,
    /// First 8 hex digits of the id.
    pub short_id: String,
    /// When.
    pub ts: DateTime<Utc>,
    /// Who, as shown: the verified author with the claimed operator beside it
    /// ([`Event::who`]).
    pub who: String,
    /// The broker user that wrote it (verified by the broker; `None`: unverified).
    pub author: Option<String>,
    /// The operator name the event's body claims (anyone who can write the ledger can claim any).
    pub claimed_operator: String,
    /// Namespace (empty for global events).
    pub namespace: String,
    /// What kind of event.
    pub kind: EventKind,
    /// How it ended.
    pub outcome: Outcome,
    /// One-line human summary (`gate v1=100 → v1=90 v2=10 (v2 10%)`).
    pub summary: String,
    /// Why (reason or note text), if given.
    pub reason: Option<String>,
    /// Every field of the event as (name, value) — raw, not terminal-safe: the console's
    /// describe view sanitises each line (JSON documents pretty-printed, one line per key).
    #[serde(skip)]
    pub fields: Vec<(String, String)>,
}

/// A one-line summary of an event (terminal-safe).
pub fn summarize(e: &Event) -> String {
    let p = &e.params;
    let a = &e.after;
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64());
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(|s| sanitize(s).into_owned())
    };
    let s = match e.kind {
        EventKind::GateSet => {
            let before = e.gate_before().map(|g| g.describe());
            let after = e
                .gate_after()
                .or_else(|| gate_in(p, "target"))
                .map(|g| format!("{} ({})", g.describe(), g.describe_percent()));
            let mut s = format!(
                "gate {} → {}",
                before.unwrap_or_else(|| "?".into()),
                after.unwrap_or_else(|| "?".into())
            );
            if let Some(r) = text(p, "revert_of") {
                s.push_str(&format!(" (revert to {r})"));
            }
            if p.get("forced_zero_consumers").and_then(|v| v.as_bool()) == Some(true) {
                s.push_str(" [zero-consumer guard overridden]");
            }
            s
        }
        EventKind::GateUnlock => {
            let lock = e.before.get("lock");
            let queue = lock
                .and_then(|l| text(l, "queue"))
                .unwrap_or_else(|| "?".into());
            let how = match text(p, "action").as_deref() {
                Some("close_owner_connection") => format!(
                    "closed its owner connection `{}`",
                    lock.and_then(|l| text(l, "owner_connection"))
                        .unwrap_or_else(|| "?".into())
                ),
                Some("delete_queue") => "deleted the queue".to_string(),
                _ => "?".to_string(),
            };
            if e.outcome == Outcome::Started {
                format!("gate unlock starting: lock `{queue}`")
            } else {
                format!("gate unlock: lock `{queue}` removed ({how})")
            }
        }
        EventKind::Init => {
            let created = a.get("created").and_then(|c| c.as_array()).map(|c| c.len());
            let mut s = format!("init: {} object(s) created", created.unwrap_or(0));
            if let Some(g) = e.gate_after() {
                s.push_str(&format!(", gate {}", g.describe()));
            }
            s
        }
        EventKind::Replay | EventKind::Move => {
            let verb = if e.kind == EventKind::Replay {
                "replay"
            } else {
                "move"
            };
            // A re-import (`--from-file`) counts what the broker confirmed as `published`.
            let moved = num(a, "moved")
                .or_else(|| num(a, "count"))
                .or_else(|| num(a, "published"));
            let from = text(p, "from")
                .or_else(|| text(p, "source"))
                .or_else(|| text(p, "from_file"));
            let to = text(p, "to").or_else(|| text(p, "target"));
            let mut s = if e.outcome == Outcome::Started {
                format!("{verb} starting")
            } else {
                format!(
                    "{verb} {} message(s)",
                    moved.map_or("?".into(), |n| n.to_string())
                )
            };
            if let Some(f) = from {
                s.push_str(&format!(" from {f}"));
            }
            if let Some(t) = to {
                s.push_str(&format!(" to {t}"));
            }
            if let Some(n) = num(a, "parked").filter(|n| *n > 0) {
                s.push_str(&format!(", {n} parked"));
            }
            s
        }
        EventKind::Purge => {
            let mut s = format!(
                "purge {} message(s)",
                num(a, "count")
                    .or_else(|| num(a, "purged"))
                    .map_or("?".into(), |n| n.to_string())
            );
            if let Some(q) = text(p, "queue") {
                s.push_str(&format!(" from {q}"));
            }
            if let Some(x) = text(p, "export").or_else(|| text(a, "export")) {
                s.push_str(&format!(", exported to {x}"));
            }
            s
        }
        EventKind::Migrate => {
            if e.outcome == Outcome::Started {
                "migrate to the cluster-safe convention starting".into()
            } else {
                format!(
                    "migrate to the cluster-safe convention: {} dead letter(s) moved",
                    num(a, "moved").map_or("?".into(), |n| n.to_string())
                )
            }
        }
        EventKind::RollbackStarted => format!(
            "rollback started{}",
            text(p, "plan").map_or(String::new(), |p| format!(" ({p})"))
        ),
        EventKind::RollbackStep => {
            let step = text(p, "step")
                .or_else(|| text(p, "name"))
                .unwrap_or_else(|| "?".into());
            match num(p, "index") {
                // `index` is 0-based in the event; people count steps from 1 (as the view does).
                Some(i) => format!("rollback step {}: {step}", i + 1),
                None => format!("rollback step: {step}"),
            }
        }
        EventKind::RollbackFinished => "rollback finished".into(),
        EventKind::DrillStarted => format!(
            "drill started{}",
            text(p, "scenario").map_or(String::new(), |s| format!(" (scenario {s})"))
        ),
        EventKind::DrillFinished => "drill finished".into(),
        EventKind::GateHash => format!(
            "gate hashes {} → {}",
            text(&e.before, "hash_on").unwrap_or_else(|| "?".into()),
            text(a, "hash_on")
                .or_else(|| text(p, "hash_on"))
                .unwrap_or_else(|| "?".into())
        ),
        EventKind::Note => "note".into(),
        EventKind::AlertRaised => format!(
            "ALERT {}",
            text(p, "alert")
                .or_else(|| text(p, "metric"))
                .unwrap_or_else(|| "raised".into())
        ),
        EventKind::AlertCleared => format!(
            "alert cleared{}",
            text(p, "alert")
                .or_else(|| text(p, "metric"))
                .map_or(String::new(), |s| format!(": {s}"))
        ),
        EventKind::DriftDetected => format!(
            "DRIFT: ledger says {}, broker has {}",
            e.gate_before().map_or("?".into(), |g| g.describe()),
            e.gate_after().map_or("?".into(), |g| g.describe())
        ),
        EventKind::StaleMoveRemoved => format!(
            "{} broker-engine move left behind: shovel {}{}",
            if e.outcome == Outcome::Started {
                "removing a"
            } else {
                "removed a"
            },
            text(p, "shovel").unwrap_or_else(|| "?".into()),
            text(p, "source").map_or(String::new(), |q| format!(" on {q}"))
        ),
        EventKind::CanaryStarted
        | EventKind::CanaryStep
        | EventKind::CanaryAnalysis
        | EventKind::CanaryDecision
        | EventKind::CanaryControl
        | EventKind::CanaryFinished => crate::ledger::canary::summarize(e),
        EventKind::Unknown => "(event of a newer hopback)".into(),
    };
    sanitize(&s).into_owned()
}

fn gate_in(v: &serde_json::Value, key: &str) -> Option<GateSplit> {
    v.get(key)
        .and_then(|g| serde_json::from_value(g.clone()).ok())
}

impl TimelineEntry {
    /// Build the entry of one event.
    pub fn of(e: &Event) -> Self {
        Self {
            id: e.id,
            short_id: e.short_id(),
            ts: e.ts,
            who: e.who(),
            author: e.author.as_deref().map(|a| sanitize(a).into_owned()),
            claimed_operator: e.claimed_operator(),
            namespace: e
                .namespace
                .as_deref()
                .map(|n| sanitize(n).into_owned())
                .unwrap_or_default(),
            kind: e.kind,
            outcome: e.outcome,
            summary: summarize(e),
            reason: e.reason.as_deref().map(|r| sanitize(r).into_owned()),
            fields: fields_of(e),
        }
    }
}

/// Every field of an event, raw, for the describe view (`TimelineEntry::fields`).
fn fields_of(e: &Event) -> Vec<(String, String)> {
    let json = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "—".to_string(),
        v => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
    };
    vec![
        ("id".into(), e.id.to_string()),
        (
            "time (UTC)".into(),
            e.ts.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        ),
        ("kind".into(), e.kind.as_str().to_string()),
        ("outcome".into(), e.outcome.as_str().to_string()),
        (
            "namespace".into(),
            e.namespace.clone().unwrap_or_else(|| "—".into()),
        ),
        (
            "author (verified)".into(),
            e.author
                .clone()
                .unwrap_or_else(|| "unverified (no broker-checked user_id)".into()),
        ),
        ("operator (claimed)".into(), e.operator.clone()),
        ("host".into(), e.host.clone()),
        ("profile".into(), e.profile.clone()),
        ("summary".into(), summarize(e)),
        (
            "reason".into(),
            e.reason.clone().unwrap_or_else(|| "—".into()),
        ),
        ("params".into(), json(&e.params)),
        ("before".into(), json(&e.before)),
        ("after".into(), json(&e.after)),
    ]
}

/// A bounded, streaming timeline builder: push events in ledger order, keep the newest
/// `max_entries` that pass the filter.
#[derive(Debug, Clone)]
pub struct Timeline {
    filter: TimelineFilter,
    // Events, not entries: summarizing only the survivors keeps a long fold cheap.
    entries: VecDeque<Event>,
    /// Events that passed the filter but were dropped to stay within the bound.
    pub dropped: u64,
    /// Events seen in total.
    pub seen: u64,
}

impl Timeline {
    /// An empty timeline with this filter.
    pub fn new(filter: TimelineFilter) -> Self {
        Self {
            filter,
            entries: VecDeque::new(),
            dropped: 0,
            seen: 0,
        }
    }
    /// Add one event (ignored when the filter rejects it).
    pub fn push(&mut self, e: &Event) {
        self.seen += 1;
        if !self.filter.admits(e) {
            return;
        }
        let max = if self.filter.max_entries == 0 {
            DEFAULT_MAX_ENTRIES
        } else {
            self.filter.max_entries
        };
        if self.entries.len() >= max {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(e.clone());
    }
    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = TimelineEntry> + '_ {
        self.entries.iter().map(TimelineEntry::of)
    }
    /// The kept events themselves, oldest first (the post-mortem wants params/before/after).
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.entries.iter()
    }
    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The entries, oldest first.
    pub fn into_entries(self) -> Vec<TimelineEntry> {
        self.entries.iter().map(TimelineEntry::of).collect()
    }
}

/// The timeline of `events` (in ledger order) under `filter`, oldest first.
pub fn timeline<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    filter: &TimelineFilter,
) -> Vec<TimelineEntry> {
    let mut t = Timeline::new(filter.clone());
    for e in events {
        t.push(e);
    }
    t.into_entries()
}

/// A Markdown table cell (the one escaper: `text::md_cell`).
fn md_cell(s: &str) -> String {
    crate::text::md_cell(&s.replace('\\', "\\\\"))
}

/// Header information of a Markdown timeline.
#[derive(Debug, Clone, Default)]
pub struct MarkdownMeta {
    /// Title (`Incident timeline — email`).
    pub title: String,
    /// Where the events came from (the ledger's backend description).
    pub source: String,
    /// When it was generated.
    pub generated_at: Option<DateTime<Utc>>,
}

/// The timeline as Markdown: a title, a source line, a table, then the notes and reasons in full
/// (the post-mortem draft starts from this).
pub fn render_markdown(entries: &[TimelineEntry], meta: &MarkdownMeta) -> String {
    let mut out = String::new();
    out.push_str(&format!("# {}\n\n", md_cell(&meta.title)));
    if let Some(t) = meta.generated_at {
        out.push_str(&format!(
            "_Generated {} from {}; {} event(s)._\n\n",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            md_cell(&meta.source),
            entries.len()
        ));
    }
    if entries.is_empty() {
        out.push_str("No events.\n");
        return out;
    }
    out.push_str("| time (UTC) | id | who | namespace | what | outcome | why |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for e in entries {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} |\n",
            e.ts.format("%Y-%m-%d %H:%M:%S"),
            e.short_id,
            md_cell(&e.who),
            md_cell(&e.namespace),
            md_cell(&e.summary),
            e.outcome,
            md_cell(e.reason.as_deref().unwrap_or("")),
        ));
    }
    let notes: Vec<&TimelineEntry> = entries
        .iter()
        .filter(|e| e.kind == EventKind::Note)
        .collect();
    if !notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for n in notes {
            out.push_str(&format!(
                "- **{}** {}: {}\n",
                n.ts.format("%H:%M:%S"),
                md_cell(&n.who),
                md_cell(n.reason.as_deref().unwrap_or(""))
            ));
        }
    }
    out
}

/// One known state of a namespace's gate, from the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateState {
    /// The event that recorded it.
    pub event_id: Uuid,
    /// First 8 hex digits of the id.
    pub short_id: String,
    /// When.
    pub ts: DateTime<Utc>,
    /// Who, as shown: the verified author with the claimed operator beside it
    /// ([`Event::who`]).
    pub who: String,
    /// The operator name the event's body claims.
    pub claimed_operator: String,
    /// `init`, `gate_set` or `drift_detected`.
    pub kind: EventKind,
    /// Outcome of that event (a failed flip still records the state read back).
    pub outcome: Outcome,
    /// The gate after the event.
    pub split: GateSplit,
    /// The gate before the event, when recorded.
    pub before: Option<GateSplit>,
    /// Why.
    pub reason: Option<String>,
    /// The event's authenticated author (`None`: unverified — never reverted to).
    pub author: Option<String>,
}

/// A bounded, streaming gate-history builder for one namespace.
#[derive(Debug, Clone)]
pub struct GateHistory {
    namespace: String,
    states: VecDeque<GateState>,
    max: usize,
}

impl GateHistory {
    /// Empty history of `namespace`, keeping at most `max` states (0 = 10,000).
    pub fn new(namespace: &str, max: usize) -> Self {
        Self {
            namespace: namespace.to_string(),
            states: VecDeque::new(),
            max: if max == 0 { DEFAULT_MAX_ENTRIES } else { max },
        }
    }
    /// Add an event (only gate-carrying events of this namespace count).
    pub fn push(&mut self, e: &Event) {
        if e.namespace.as_deref() != Some(self.namespace.as_str()) {
            return;
        }
        if !matches!(
            e.kind,
            EventKind::GateSet | EventKind::Init | EventKind::DriftDetected
        ) {
            return;
        }
        let Some(split) = e.gate_after() else { return };
        if self.states.len() >= self.max {
            self.states.pop_front();
        }
        self.states.push_back(GateState {
            event_id: e.id,
            short_id: e.short_id(),
            ts: e.ts,
            who: e.who(),
            claimed_operator: e.claimed_operator(),
            kind: e.kind,
            outcome: e.outcome,
            split,
            before: e.gate_before(),
            reason: e.reason.as_deref().map(|r| sanitize(r).into_owned()),
            author: e.author.clone(),
        });
    }
    /// [`GateHistory::find`], refusing a state an unverified event recorded: a forged
    /// `gate_set` in the ledger must not become a gate flip.
    pub fn find_verified(&self, id: &str) -> Result<&GateState, crate::model::Invalid> {
        let s = self.find(id)?;
        if s.author.is_none() {
            return Err(format!(
                "state `{}` comes from an unverified ledger event (no authenticated author: not written by hopback through the broker); not reverting to it",
                s.short_id
            )
            .into());
        }
        Ok(s)
    }
    /// The states, oldest first.
    pub fn states(&self) -> &VecDeque<GateState> {
        &self.states
    }
    /// The last state a verified event recorded: what drift is measured against (a forged
    /// `gate_set` must not make the broker's real gate look drifted, nor hide a drift).
    pub fn last_known(&self) -> Option<&GateState> {
        self.states.iter().rev().find(|s| s.author.is_some())
    }
    /// Find a state by event id (full or a prefix of ≥ 4 hex digits). Ambiguous prefixes fail.
    pub fn find(&self, id: &str) -> Result<&GateState, crate::model::Invalid> {
        let t = id.trim().to_ascii_lowercase().replace('-', "");
        if t.len() < 4 {
            return Err(
                format!("`{id}` is too short: give at least 4 hex digits of the id").into(),
            );
        }
        let hits: Vec<&GateState> = self
            .states
            .iter()
            .filter(|s| s.event_id.simple().to_string().starts_with(&t))
            .collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "no gate state with id `{}` for namespace `{}` (see `hopback history {}`)",
                sanitize(id),
                sanitize(&self.namespace),
                sanitize(&self.namespace)
            )
            .into()),
            _ => Err(format!(
                "`{}` matches {} events: give more digits",
                sanitize(id),
                hits.len()
            )
            .into()),
        }
    }
}

/// The gate history of `namespace` from `events` (in ledger order).
pub fn gate_history<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    namespace: &str,
) -> GateHistory {
    let mut h = GateHistory::new(namespace, 0);
    for e in events {
        h.push(e);
    }
    h
}

/// One version whose weight differs between two gates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightChange {
    /// Version.
    pub version: String,
    /// Weight in the first gate (0 = unbound).
    pub from: u32,
    /// Weight in the second gate.
    pub to: u32,
}

/// The per-version differences between two gates (empty = same routing).
pub fn diff_gates(a: &GateSplit, b: &GateSplit) -> Vec<WeightChange> {
    let mut versions: Vec<&String> = a.0.keys().chain(b.0.keys()).collect();
    versions.sort();
    versions.dedup();
    versions
        .into_iter()
        .filter_map(|v| {
            // A weight left alone can still change its share (the other versions unbound):
            // that is a change of where traffic goes.
            let (from, to) = (a.weight(v), b.weight(v));
            let share_moved = (a.percent(v) - b.percent(v)).abs() > 1e-9;
            (from != to || share_moved).then(|| WeightChange {
                version: v.clone(),
                from,
                to,
            })
        })
        .collect()
}

/// The broker's gate differs from the ledger's last known state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// What the ledger last recorded.
    pub expected: GateSplit,
    /// The event that recorded it.
    pub expected_event: Uuid,
    /// What the broker has now.
    pub actual: GateSplit,
    /// The differences.
    pub changes: Vec<WeightChange>,
}

impl Drift {
    /// `drift: v1 90→100, v2 10→0 (ledger event 1a2b3c4d)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|c| format!("{} {}→{}", c.version, c.from, c.to))
            .collect();
        format!(
            "drift: the broker's gate differs from the ledger ({}; last recorded by event {})",
            parts.join(", "),
            &self.expected_event.simple().to_string()[..8]
        )
    }
}

/// Compare the broker's gate with the ledger's last known state (`None` = no drift, or nothing
/// known). Zero weights are ignored; a lone bound version's weight does not matter for routing.
pub fn drift(last_known: Option<&GateState>, actual: &GateSplit) -> Option<Drift> {
    let known = last_known?;
    if equivalent_routing(&known.split, actual) {
        return None;
    }
    Some(Drift {
        expected: known.split.clone(),
        expected_event: known.event_id,
        actual: actual.clone(),
        changes: diff_gates(&known.split, actual),
    })
}

/// Same routing: the same bound versions with the same weights, or one lone bound version
/// (see [`GateSplit::same_routing`]).
pub fn equivalent_routing(a: &GateSplit, b: &GateSplit) -> bool {
    a.same_routing(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: EventKind, ns: Option<&str>) -> Event {
        let mut e = Event::new(kind, ns);
        e.operator = "ana@box".into();
        e.author = Some("guest".into());
        e
    }

    #[test]
    fn gate_history_and_drift() {
        let a = ev(EventKind::Init, Some("email")).after(json!({"gate": {"v1": 100}}));
        let b = ev(EventKind::GateSet, Some("email"))
            .before(json!({"gate": {"v1": 100}}))
            .after(json!({"gate": {"v1": 90, "v2": 10}}))
            .reason("canary");
        let other = ev(EventKind::GateSet, Some("pay")).after(json!({"gate": {"v2": 100}}));
        let note = ev(EventKind::Note, Some("email")).reason("looks good");
        let evs = vec![a.clone(), b.clone(), other, note];
        let h = gate_history(&evs, "email");
        assert_eq!(h.states().len(), 2);
        assert_eq!(h.last_known().unwrap().split.weight("v2"), 10);
        assert_eq!(h.find(&a.short_id()).unwrap().event_id, a.id);
        assert!(h.find("zz").is_err());
        let actual = GateSplit::from_pairs([("v1".to_string(), 100)]);
        let d = drift(h.last_known(), &actual).unwrap();
        assert_eq!(
            d.changes,
            vec![
                WeightChange {
                    version: "v1".into(),
                    from: 90,
                    to: 100
                },
                WeightChange {
                    version: "v2".into(),
                    from: 10,
                    to: 0
                }
            ]
        );
        assert!(drift(h.last_known(), &h.last_known().unwrap().split).is_none());
        // A lone version's weight does not change routing.
        assert!(equivalent_routing(
            &GateSplit::from_pairs([("v1".to_string(), 100)]),
            &GateSplit::from_pairs([("v1".to_string(), 7)])
        ));
    }

    #[test]
    fn a_re_import_and_a_hash_change_read_as_what_they_did() {
        let e = ev(EventKind::Replay, Some("email"))
            .params(json!({"from_file": "/x/dlq.jsonl", "to": "v1", "messages": 3}))
            .after(json!({"published": 3}));
        assert_eq!(summarize(&e), "replay 3 message(s) from /x/dlq.jsonl to v1");
        let h = ev(EventKind::GateHash, Some("email"))
            .before(json!({"hash_on": "message_id"}))
            .after(json!({"hash_on": "correlation_id"}));
        assert_eq!(summarize(&h), "gate hashes message_id → correlation_id");
    }

    #[test]
    fn timeline_filters_bounds_and_escapes() {
        let mut evs = Vec::new();
        for i in 0..10 {
            evs.push(
                ev(EventKind::Note, Some(if i % 2 == 0 { "a" } else { "b" }))
                    .reason(format!("n{i}")),
            );
        }
        evs.push(ev(EventKind::Note, None).reason("global | \x1b]52;c;aGk=\x07 evil"));
        let t = timeline(
            &evs,
            &TimelineFilter {
                namespace: Some("a".into()),
                max_entries: 3,
                ..Default::default()
            },
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].reason.as_deref(), Some("n6"));
        assert_eq!(t[2].namespace, "");
        let md = render_markdown(
            &t,
            &MarkdownMeta {
                title: "T".into(),
                ..Default::default()
            },
        );
        assert!(!md.contains('\x1b'), "{md}");
        assert!(md.contains("global \\| "), "{md}");
    }

    #[test]
    fn the_verified_author_is_the_identity_and_forgeries_do_not_count() {
        let genuine =
            ev(EventKind::GateSet, Some("email")).after(json!({"gate": {"v1": 50, "v2": 50}}));
        let mut other_user =
            ev(EventKind::GateSet, Some("email")).after(json!({"gate": {"v1": 100}}));
        other_user.author = Some("mallory".into());
        let mut forged = ev(EventKind::GateSet, Some("email")).after(json!({"gate": {"v2": 100}}));
        forged.author = None;
        let t = timeline([&genuine, &other_user, &forged], &TimelineFilter::default());
        assert_eq!(t[0].who, "guest (claims ana@box)");
        assert_eq!(t[1].who, "mallory (claims ana@box)");
        assert_eq!(t[1].author.as_deref(), Some("mallory"));
        assert_eq!(t[1].claimed_operator, "ana@box");
        assert_eq!(t[2].who, "UNVERIFIED (claims ana@box)");
        assert_eq!(t[2].author, None);
        let md = render_markdown(&t, &MarkdownMeta::default());
        assert!(md.contains("| mallory (claims ana@box) |"), "{md}");
        assert!(md.contains("| UNVERIFIED (claims ana@box) |"), "{md}");
        // The last known state is the last verified one: the forged "v2 only" is not it.
        let h = gate_history([&genuine, &other_user, &forged], "email");
        assert_eq!(h.states().len(), 3);
        assert_eq!(h.last_known().unwrap().split.weight("v1"), 100);
        assert_eq!(h.states()[2].who, "UNVERIFIED (claims ana@box)");
    }
}
