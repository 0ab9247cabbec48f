//! The canaries as the ledger tells them: each canary's plan, the step it reached, whether it is
//! paused, its last analysis and decision, and how it ended — rebuilt from its events
//! (`params.canary_id`). `canary list`, `canary --resume`, the control verbs and the console all
//! read this one projection.
//!
//! Only the starter's events count: the first verified `canary_started` names the broker user
//! that started it, and later events count only when the broker verified the same user (an
//! operator's control request is journaled by that operator, and the canary journals what it did
//! with it under its own user). An unverified event never moves a canary's state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::ledger::event::{Event, EventKind, Outcome};
use crate::model::canary::{Analysis, CanaryPlan};
use crate::model::gate::GateSplit;

/// The `params.canary_id` of an event.
pub fn canary_id_of(e: &Event) -> Option<String> {
    e.params
        .get("canary_id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// One canary, as its events tell it.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryState {
    /// Id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// The plan it was started with.
    pub plan: CanaryPlan,
    /// Who started it: the operator name the event claims and the broker-verified user.
    pub started_by: (String, String),
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The last step it set (index into the plan's steps), and when.
    pub step: Option<(usize, DateTime<Utc>)>,
    /// The gate as the last step (or abort) left it.
    pub gate: Option<GateSplit>,
    /// Paused by an operator (and not resumed since).
    pub paused: bool,
    /// The last decision's name (`advance`, `hold`, `abort`, …) and its reason.
    pub last_decision: Option<(String, String)>,
    /// The last analysis journaled.
    pub last_analysis: Option<Analysis>,
    /// An abort was decided (the reason) and the canary has not finished since.
    pub aborting: Option<String>,
    /// How it ended, and why (`None`: not finished — running, or its process died).
    pub finished: Option<(Outcome, String)>,
    /// The automatic rollback's id, once one started.
    pub rollback_id: Option<String>,
    /// The time of its latest event.
    pub last_event_at: DateTime<Utc>,
    /// Events with its id that were not written by its starter (ignored).
    pub ignored: usize,
}

impl CanaryState {
    /// The new version's weight at the current step, in percent.
    pub fn weight(&self) -> Option<u32> {
        let (i, _) = self.step?;
        self.plan.steps.get(i).copied()
    }
    /// `step 3/5 (25 %)` or `not started`.
    pub fn step_label(&self) -> String {
        match (self.step, self.weight()) {
            (Some((i, _)), Some(w)) => {
                format!("step {}/{} ({w} %)", i + 1, self.plan.steps.len())
            }
            _ => "no step yet".into(),
        }
    }
}

/// Every canary in `events` (oldest first), by id.
pub fn project(events: &[Event]) -> BTreeMap<String, CanaryState> {
    let mut out: BTreeMap<String, CanaryState> = BTreeMap::new();
    let mut starters: BTreeMap<String, Event> = BTreeMap::new();
    for e in events.iter().filter(|e| is_canary_kind(e.kind)) {
        let Some(id) = canary_id_of(e) else { continue };
        if !e.is_verified() {
            if let Some(s) = out.get_mut(&id) {
                s.ignored += 1;
            }
            continue;
        }
        if let Some(start) = starters.get(&id) {
            if !e.same_author(start) {
                // Another operator's control request is theirs to journal; it never moves the
                // canary's own state.
                if let Some(s) = out.get_mut(&id)
                    && e.kind != EventKind::CanaryControl
                {
                    s.ignored += 1;
                }
                continue;
            }
        } else if e.kind == EventKind::CanaryStarted {
            let Some(plan) = e
                .params
                .get("plan")
                .and_then(|p| serde_json::from_value::<CanaryPlan>(p.clone()).ok())
                .filter(|p| p.validate().is_ok())
            else {
                continue;
            };
            starters.insert(id.clone(), e.clone());
            out.insert(
                id.clone(),
                CanaryState {
                    id: id.clone(),
                    namespace: e.namespace.clone().unwrap_or_default(),
                    plan,
                    started_by: (e.claimed_operator(), e.author_label()),
                    started_at: e.ts,
                    step: None,
                    gate: e.gate_before(),
                    paused: false,
                    last_decision: None,
                    last_analysis: None,
                    aborting: None,
                    finished: None,
                    rollback_id: None,
                    last_event_at: e.ts,
                    ignored: 0,
                },
            );
            continue;
        } else {
            continue;
        }
        let Some(s) = out.get_mut(&id) else { continue };
        s.last_event_at = e.ts;
        match e.kind {
            // A resume: a finished state never comes back, a paused one stays paused.
            EventKind::CanaryStarted
                if e.params.get("paused").and_then(Value::as_bool) == Some(true) =>
            {
                s.paused = true;
            }
            EventKind::CanaryStep if e.outcome == Outcome::Ok => {
                if let Some(i) = e.params.get("index").and_then(Value::as_u64) {
                    s.step = Some((i as usize, e.ts));
                }
                if let Some(g) = e.gate_after() {
                    s.gate = Some(g);
                }
            }
            EventKind::CanaryAnalysis => {
                if let Some(a) = e
                    .after
                    .get("analysis")
                    .and_then(|a| serde_json::from_value(a.clone()).ok())
                {
                    s.last_analysis = Some(a);
                }
            }
            EventKind::CanaryDecision => {
                let d = e
                    .params
                    .get("decision")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                match d.as_str() {
                    "pause" => s.paused = true,
                    "resume" => s.paused = false,
                    "abort" => s.aborting = Some(e.reason.clone().unwrap_or_default()),
                    _ => {}
                }
                if let Some(a) = e
                    .after
                    .get("analysis")
                    .and_then(|a| serde_json::from_value(a.clone()).ok())
                {
                    s.last_analysis = Some(a);
                }
                if let Some(g) = e.gate_after() {
                    s.gate = Some(g);
                }
                s.last_decision = Some((d, e.reason.clone().unwrap_or_default()));
            }
            EventKind::CanaryFinished => {
                s.finished = Some((e.outcome, e.reason.clone().unwrap_or_default()));
                s.aborting = None;
                if let Some(g) = e.gate_after() {
                    s.gate = Some(g);
                }
            }
            _ => {}
        }
        if let Some(r) = e.params.get("rollback_id").and_then(Value::as_str) {
            s.rollback_id = Some(r.to_string());
        }
    }
    out
}

fn is_canary_kind(k: EventKind) -> bool {
    matches!(
        k,
        EventKind::CanaryStarted
            | EventKind::CanaryStep
            | EventKind::CanaryAnalysis
            | EventKind::CanaryDecision
            | EventKind::CanaryControl
            | EventKind::CanaryFinished
    )
}

/// The timeline's line of a canary event (not yet sanitised: the caller does it).
pub fn summarize(e: &Event) -> String {
    let p = &e.params;
    let id = canary_id_of(e).unwrap_or_else(|| "?".into());
    let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    match e.kind {
        EventKind::CanaryStarted => {
            let plan = p
                .get("plan")
                .and_then(|v| serde_json::from_value::<CanaryPlan>(v.clone()).ok());
            let what = plan.map_or(String::new(), |pl| {
                format!(
                    " {} → {} over {} %",
                    pl.from,
                    pl.to,
                    pl.steps
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join("/")
                )
            });
            if p.get("resumed").and_then(Value::as_bool) == Some(true) {
                format!("canary {id} resumed{what}")
            } else {
                format!("canary {id} started{what}")
            }
        }
        EventKind::CanaryStep => format!(
            "canary {id} step {}: {} % on the new version",
            p.get("index").and_then(Value::as_u64).map_or(0, |i| i + 1),
            p.get("weight").and_then(Value::as_u64).unwrap_or(0)
        ),
        EventKind::CanaryAnalysis => format!("canary {id} analysis: {}", text("verdict")),
        EventKind::CanaryDecision => {
            let by = p
                .get("requested_by")
                .and_then(Value::as_str)
                .map(|u| format!(" (asked by {u})"))
                .unwrap_or_default();
            format!("canary {id} decision: {}{by}", text("decision"))
        }
        EventKind::CanaryControl => format!("canary {id}: {} requested", text("command")),
        EventKind::CanaryFinished => match e.outcome {
            Outcome::Ok => format!("canary {id} finished: promoted"),
            Outcome::Failed => format!("canary {id} finished: aborted by its analysis"),
            Outcome::Cancelled => format!("canary {id} finished: aborted by an operator"),
            o => format!("canary {id} finished: {o}"),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ev(kind: EventKind, author: &str, params: Value) -> Event {
        let mut e = Event::new(kind, Some("email"));
        e.operator = author.into();
        e.params = params;
        e.author = Some(author.into());
        e
    }

    #[test]
    fn the_starter_s_events_make_the_state_and_others_do_not() {
        let plan = serde_json::to_value(CanaryPlan::new("v1", "v2")).unwrap();
        let events = vec![
            ev(
                EventKind::CanaryStarted,
                "ana",
                json!({"canary_id": "c1", "plan": plan}),
            ),
            ev(
                EventKind::CanaryStep,
                "ana",
                json!({"canary_id": "c1", "index": 1, "weight": 5}),
            ),
            // A forged "promoted" by another broker user changes nothing.
            {
                let mut f = ev(
                    EventKind::CanaryFinished,
                    "mallory",
                    json!({"canary_id": "c1"}),
                );
                f.outcome = Outcome::Ok;
                f
            },
            ev(
                EventKind::CanaryControl,
                "bob",
                json!({"canary_id": "c1", "command": "pause"}),
            ),
            {
                let mut d = ev(
                    EventKind::CanaryDecision,
                    "ana",
                    json!({"canary_id": "c1", "decision": "pause", "requested_by": "bob"}),
                );
                d.reason = Some("paused by bob".into());
                d
            },
        ];
        let all = project(&events);
        let c = &all["c1"];
        assert_eq!(c.step.map(|s| s.0), Some(1));
        assert_eq!(c.weight(), Some(5));
        assert_eq!(c.step_label(), "step 2/5 (5 %)");
        assert!(c.paused);
        assert!(c.finished.is_none(), "a forged finish is ignored");
        assert_eq!(c.ignored, 1);
        assert_eq!(
            summarize(&events[4]),
            "canary c1 decision: pause (asked by bob)"
        );
    }
}
