//! The post-mortem draft projected from the ledger: summary, impact figures, timeline, actions
//! (who, when, why), what the alerts said when, and empty Causes / Follow-ups sections for the
//! humans. Pure (apart from [`events_for_namespace`], which reads the ledger), so the CLI's
//! `hopback postmortem`, the drill and the snapshot tests all produce the same text.
//!
//! An incident is a rollback (its `rollback_id`) or a drill (its id, namespace `drill-<id>`).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::ledger::event::{Event, EventKind};
use crate::ledger::projection::summarize;
use crate::ledger::{Ledger, StreamStart};
use crate::text::sanitize;

/// What the post-mortem is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Drill id or rollback id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// `drill` or `rollback`.
    pub kind: IncidentKind,
}

/// Kind of incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentKind {
    /// A drill (all events of its namespace).
    Drill,
    /// A rollback (events of its namespace around it).
    Rollback,
}

impl Incident {
    /// A drill's incident.
    pub fn for_drill(id: &str, ns: &str) -> Self {
        Self {
            id: id.to_string(),
            namespace: ns.to_string(),
            kind: IncidentKind::Drill,
        }
    }
}

/// Every event of one namespace, oldest first.
pub async fn events_for_namespace(ledger: &Ledger, ns: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let _ = ledger
        .fold(StreamStart::First, |e| {
            if e.namespace.as_deref() == Some(ns) {
                out.push(e);
            }
        })
        .await;
    out
}

/// A Markdown table cell (the one escaper: `text::md_cell`).
fn cell(s: &str) -> String {
    crate::text::md_cell(s)
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn is_action(e: &Event) -> bool {
    match e.kind {
        EventKind::GateSet
        | EventKind::GateUnlock
        | EventKind::Replay
        | EventKind::Move
        | EventKind::Purge
        | EventKind::RollbackStarted
        | EventKind::RollbackFinished
        | EventKind::CanaryDecision
        | EventKind::CanaryControl
        | EventKind::CanaryFinished
        | EventKind::Note => true,
        EventKind::RollbackStep => e.params.get("phase").and_then(Value::as_str) == Some("finish"),
        _ => false,
    }
}

fn ms(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "—".into(),
    }
}

/// An operation's intent (`outcome: started`, journaled before it acted) is followed by its
/// outcome; the draft shows the outcome only. An intent with no outcome after it (the operation
/// died mid-way) stays: it is the only record of what was under way.
fn without_settled_intents(events: &[Event]) -> Vec<Event> {
    let is_op = |k: EventKind| {
        matches!(
            k,
            EventKind::GateSet | EventKind::Replay | EventKind::Move | EventKind::Purge
        )
    };
    events
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            !(is_op(e.kind)
                && e.outcome == crate::ledger::Outcome::Started
                && events[i + 1..].iter().any(|l| {
                    l.kind == e.kind
                        && l.namespace == e.namespace
                        && l.operator == e.operator
                        && l.author == e.author
                        && l.outcome != crate::ledger::Outcome::Started
                }))
        })
        .map(|(_, e)| e.clone())
        .collect()
}

/// Render the Markdown draft from the incident's events (oldest first).
pub fn render(events: &[Event], incident: &Incident) -> String {
    let events = &without_settled_intents(events)[..];
    let mut md = String::new();
    let ns = sanitize(&incident.namespace).into_owned();
    let kind = match incident.kind {
        IncidentKind::Drill => "drill",
        IncidentKind::Rollback => "rollback",
    };
    md.push_str(&format!(
        "# Post-mortem (draft): {kind} `{}` on `{ns}`\n\n",
        sanitize(&incident.id)
    ));
    md.push_str("_Drafted by hopback from the ledger. Everything below the Timeline is for the team to complete._\n\n");

    // ── summary
    let first = events.first().map(|e| e.ts);
    let last = events.last().map(|e| e.ts);
    // Responders are who the broker verified (the operator names beside them are claims);
    // the outcome and the figures come from verified events only.
    let mut responders: Vec<String> = events
        .iter()
        .filter(|e| is_action(e))
        .map(Event::who)
        .collect();
    responders.sort();
    responders.dedup();
    let rollback_end = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::RollbackFinished && e.is_verified());
    let drill_end = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::DrillFinished && e.is_verified());
    md.push_str("## Summary\n\n");
    md.push_str(&format!("- **Namespace:** `{ns}`\n"));
    if let (Some(a), Some(b)) = (first, last) {
        let secs = (b - a).num_milliseconds().max(0) as f64 / 1000.0;
        md.push_str(&format!(
            "- **Window:** {} → {} ({secs:.0} s)\n",
            time(&a),
            time(&b)
        ));
    }
    if let Some(d) = drill_end
        && let Some(s) = d.params.get("scenario").and_then(Value::as_str)
    {
        md.push_str(&format!("- **Drill scenario:** {}\n", sanitize(s)));
    }
    match rollback_end {
        Some(r) => md.push_str(&format!(
            "- **Rollback:** {} — {}\n",
            r.outcome,
            sanitize(r.reason.as_deref().unwrap_or(""))
        )),
        None => md.push_str("- **Rollback:** none recorded\n"),
    }
    // A canary that aborted by itself: the step it failed at and the numbers, as it journaled them.
    for c in events
        .iter()
        .filter(|e| e.kind == EventKind::CanaryFinished && e.is_verified())
    {
        md.push_str(&format!(
            "- **Canary {}:** {} — {}\n",
            sanitize(
                c.params
                    .get("canary_id")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ),
            c.outcome,
            sanitize(c.reason.as_deref().unwrap_or(""))
        ));
    }
    md.push_str(&format!(
        "- **Responders:** {}\n\n",
        if responders.is_empty() {
            "none recorded".into()
        } else {
            responders.join(", ")
        }
    ));

    // ── impact
    md.push_str("## Impact\n\n| figure | value |\n|---|---|\n");
    if let Some(score) = drill_end.and_then(|d| d.after.get("score")) {
        let acc = score.get("accounting").cloned().unwrap_or(Value::Null);
        let n = |k: &str| {
            acc.get(k)
                .and_then(Value::as_u64)
                .map_or("—".into(), |v| v.to_string())
        };
        md.push_str(&format!("| messages published | {} |\n", n("published")));
        md.push_str(&format!("| processed | {} |\n", n("processed")));
        md.push_str(&format!(
            "| dead-lettered (still in the DLQ) | {} |\n",
            n("dead_lettered")
        ));
        md.push_str(&format!("| parked | {} |\n", n("parked")));
        md.push_str(&format!("| still queued | {} |\n", n("still_queued")));
        md.push_str(&format!("| **lost** | **{}** |\n", n("lost")));
        md.push_str(&format!(
            "| duplicates processed | {} |\n",
            n("duplicates_processed")
        ));
        md.push_str(&format!(
            "| time to detect | {} |\n",
            ms(score.get("time_to_detect_ms"))
        ));
        md.push_str(&format!(
            "| time to mitigate | {} |\n",
            ms(score.get("time_to_mitigate_ms"))
        ));
        md.push_str(&format!(
            "| drill score | {} / 100 |\n",
            score.get("points").and_then(Value::as_u64).unwrap_or(0)
        ));
    }
    let mut moved = 0u64;
    let mut replayed = 0u64;
    let mut parked = 0u64;
    for e in events.iter().filter(|e| {
        e.kind == EventKind::RollbackStep
            && e.params.get("phase").and_then(Value::as_str) == Some("finish")
    }) {
        let data = e.after.get("data").cloned().unwrap_or(Value::Null);
        moved += data.get("moved").and_then(Value::as_u64).unwrap_or(0);
        replayed += data.get("replayed").and_then(Value::as_u64).unwrap_or(0);
        parked += data.get("parked").and_then(Value::as_u64).unwrap_or(0);
    }
    let gate_changes = events
        .iter()
        .filter(|e| e.kind == EventKind::GateSet)
        .count();
    md.push_str(&format!("| gate changes | {gate_changes} |\n"));
    md.push_str(&format!("| messages drained by the rollback | {moved} |\n"));
    md.push_str(&format!(
        "| dead letters replayed by the rollback | {replayed} |\n"
    ));
    md.push_str(&format!(
        "| dead letters parked by the rollback | {parked} |\n\n"
    ));

    // ── timeline
    md.push_str("## Timeline\n\n| time (UTC) | who | event | outcome |\n|---|---|---|---|\n");
    for e in events {
        if e.kind == EventKind::RollbackStep
            && e.params.get("phase").and_then(Value::as_str) == Some("start")
        {
            continue;
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            e.ts.format("%H:%M:%S"),
            cell(&e.who()),
            cell(&summarize(e)),
            e.outcome
        ));
    }
    md.push('\n');

    // ── actions
    md.push_str("## Actions\n\n");
    let mut any = false;
    for e in events.iter().filter(|e| is_action(e)) {
        any = true;
        md.push_str(&format!(
            "- **{}** `{}` — {}{}\n",
            e.ts.format("%H:%M:%S"),
            e.who(),
            sanitize(&summarize(e)),
            match e.reason.as_deref() {
                Some(r) => format!(". Why: {}", sanitize(r)),
                None => String::new(),
            }
        ));
    }
    if !any {
        md.push_str("_No operator actions were recorded._\n");
    }
    md.push('\n');

    // ── alerts
    md.push_str("## Alerts\n\n");
    let alerts: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::AlertRaised | EventKind::AlertCleared))
        .collect();
    if alerts.is_empty() {
        md.push_str("_No alerts were recorded in the ledger for this incident._\n");
    }
    for e in alerts {
        md.push_str(&format!(
            "- **{}** {}{}\n",
            e.ts.format("%H:%M:%S"),
            sanitize(&summarize(e)),
            e.reason
                .as_deref()
                .map(|r| format!(" — {}", sanitize(r)))
                .unwrap_or_default()
        ));
    }
    md.push('\n');
    md.push_str("## Causes\n\n_To be written by the team._\n\n");
    md.push_str("## Follow-ups\n\n- [ ] _To be written by the team._\n");
    md
}

/// Find the incident: `id` names a rollback id or a drill id; `None` = the latest finished one.
pub fn find_incident(events: &[Event], id: Option<&str>) -> Option<Incident> {
    let candidates = events.iter().rev().filter(|e| {
        matches!(
            e.kind,
            EventKind::RollbackFinished | EventKind::DrillFinished | EventKind::RollbackStarted
        )
    });
    for e in candidates {
        let ns = e.namespace.clone().unwrap_or_default();
        let (iid, kind) = match e.kind {
            EventKind::DrillFinished => (
                e.params
                    .get("drill_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                IncidentKind::Drill,
            ),
            _ => (e.rollback_id(), IncidentKind::Rollback),
        };
        let Some(iid) = iid else { continue };
        if id.is_none_or(|want| want == iid || (kind == IncidentKind::Drill && ns == want)) {
            return Some(Incident {
                id: iid,
                namespace: ns,
                kind,
            });
        }
    }
    None
}

/// Whose incident [`find_own_incident`] looks for: the broker user the ledger verifies (the
/// connection's user) and the operator name this hopback writes into its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own<'a> {
    /// The broker user (an event's verified `author` must be this).
    pub author: &'a str,
    /// The operator name (an event's claimed `operator` must be this).
    pub operator: &'a str,
}

/// The newest incident the operator handled: a finished rollback or drill whose closing event
/// (or, for a rollback still open, its start) the broker verified as written by `own.author`
/// with `own.operator` in its body. Another operator's incident — even a newer one on the same
/// broker — is never taken. Returns the incident and the event that chose it.
pub fn find_own_incident<'e>(events: &'e [Event], own: &Own<'_>) -> Option<(Incident, &'e Event)> {
    events
        .iter()
        .rev()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::RollbackFinished | EventKind::DrillFinished | EventKind::RollbackStarted
            ) && e.author.as_deref() == Some(own.author)
                && e.operator == own.operator
        })
        .find_map(|e| {
            let (id, kind) = match e.kind {
                EventKind::DrillFinished => (
                    e.params
                        .get("drill_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    IncidentKind::Drill,
                ),
                _ => (e.rollback_id(), IncidentKind::Rollback),
            };
            Some((
                Incident {
                    id: id?,
                    namespace: e.namespace.clone().unwrap_or_default(),
                    kind,
                },
                e,
            ))
        })
}

/// The events of an incident: a drill's whole namespace; for a rollback, its namespace from 30
/// minutes before the rollback started to 10 minutes after it finished.
pub fn incident_events(all: &[Event], inc: &Incident) -> Vec<Event> {
    let in_ns = all
        .iter()
        .filter(|e| e.namespace.as_deref() == Some(inc.namespace.as_str()));
    match inc.kind {
        IncidentKind::Drill => in_ns.cloned().collect(),
        IncidentKind::Rollback => {
            let mine: Vec<&Event> = all
                .iter()
                .filter(|e| e.rollback_id().as_deref() == Some(inc.id.as_str()))
                .collect();
            let start = mine.first().map(|e| e.ts - chrono::Duration::minutes(30));
            let end = mine.last().map(|e| e.ts + chrono::Duration::minutes(10));
            in_ns
                .filter(|e| start.is_none_or(|s| e.ts >= s) && end.is_none_or(|x| e.ts <= x))
                .cloned()
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_incident_is_the_operators_latest_verified_one() {
        let ev = |kind, ns: &str, id: &str, author: Option<&str>, op: &str| {
            let mut e = Event::new(kind, Some(ns))
                .params(serde_json::json!({"rollback_id": id, "drill_id": id}));
            e.author = author.map(str::to_string);
            e.operator = op.into();
            e
        };
        let all = vec![
            ev(
                EventKind::RollbackFinished,
                "pay",
                "mine1",
                Some("guest"),
                "alice",
            ),
            // Newer, but another operator's drill on the same broker user.
            ev(
                EventKind::DrillFinished,
                "drill-x",
                "x",
                Some("guest"),
                "bob",
            ),
            // Newer still, claims alice but nobody vouches for it.
            ev(EventKind::RollbackFinished, "pay", "forged", None, "alice"),
            // Claims alice, written by another broker user.
            ev(
                EventKind::RollbackFinished,
                "pay",
                "other",
                Some("mallory"),
                "alice",
            ),
        ];
        let own = Own {
            author: "guest",
            operator: "alice",
        };
        let (inc, e) = find_own_incident(&all, &own).unwrap();
        assert_eq!(inc.id, "mine1");
        assert_eq!(inc.kind, IncidentKind::Rollback);
        assert_eq!(e.kind, EventKind::RollbackFinished);
        let bob = Own {
            author: "guest",
            operator: "bob",
        };
        let (inc, _) = find_own_incident(&all, &bob).unwrap();
        assert_eq!((inc.id.as_str(), inc.kind), ("x", IncidentKind::Drill));
        let nobody = Own {
            author: "guest",
            operator: "carol",
        };
        assert!(find_own_incident(&all, &nobody).is_none());
    }

    #[test]
    fn finds_the_latest_incident_and_renders_every_section() {
        let mut a = Event::new(EventKind::RollbackStarted, Some("pay"))
            .params(serde_json::json!({"rollback_id": "r1"}));
        a.operator = "alice".into();
        a.author = Some("guest".into());
        let g = Event::new(EventKind::GateSet, Some("pay"))
            .before(serde_json::json!({"gate": {"v1": 90, "v2": 10}}))
            .after(serde_json::json!({"gate": {"v1": 100}}))
            .reason("v2 | rejects\u{1b}[2J everything");
        let f = Event::new(EventKind::RollbackFinished, Some("pay"))
            .params(serde_json::json!({"rollback_id": "r1"}))
            .reason("rollback complete");
        let mut forged_end = f.clone();
        forged_end.reason = Some("forged: all fine".into());
        let mut f = f;
        f.author = Some("guest".into());
        let other = Event::new(EventKind::Note, Some("elsewhere")).reason("unrelated");
        let all = vec![a, g, f, forged_end, other];
        let inc = find_incident(&all, None).unwrap();
        assert_eq!(inc.id, "r1");
        let events = incident_events(&all, &inc);
        assert_eq!(events.len(), 4);
        let md = render(&events, &inc);
        for section in [
            "## Summary",
            "## Impact",
            "## Timeline",
            "## Actions",
            "## Alerts",
            "## Causes",
            "## Follow-ups",
        ] {
            assert!(md.contains(section), "{section} missing:\n{md}");
        }
        assert!(md.contains("guest (claims alice)"), "{md}");
        // The unverified gate flip is shown as such; the unverified "finished" is no outcome.
        assert!(md.contains("UNVERIFIED (claims"), "{md}");
        assert!(
            md.contains("**Rollback:** ok — rollback complete\n"),
            "{md}"
        );
        assert!(
            !md.contains('\u{1b}'),
            "escape sequences must not reach the file"
        );
        assert!(!md.contains("unrelated"));
        assert!(find_incident(&all, Some("nope")).is_none());
    }
}
