//! The canaries the console has seen on the live ledger feed (`ledger::canary::project` over
//! their events): the gate view shows the one running on its namespace — step, time left in the
//! step, the last analysis, the last and the next decision — and its keys (pause, resume,
//! promote, abort) open a confirmation whose answer the runner sends over the canary's control
//! queue (`ops::canary::control`).

use std::collections::{BTreeMap, VecDeque};

use crate::ledger::canary::{CanaryState, canary_id_of, project};
use crate::ledger::event::Event;
use crate::ops::canary::ControlCommand;
use crate::text::sanitize;

/// Canary events kept (the projection is rebuilt from them).
const EVENTS_KEPT: usize = 2_000;

/// The canaries seen on the feed.
#[derive(Debug, Clone, Default)]
pub struct CanaryBoard {
    events: VecDeque<Event>,
    states: BTreeMap<String, CanaryState>,
}

impl CanaryBoard {
    /// Take an event from the feed (anything but a canary's is ignored).
    pub fn absorb(&mut self, e: &Event) {
        if canary_id_of(e).is_none() {
            return;
        }
        if self.events.len() >= EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e.clone());
        self.states = project(self.events.make_contiguous());
    }

    /// The canary of `ns` that has not finished (the latest started), if any.
    pub fn active_for(&self, ns: &str) -> Option<&CanaryState> {
        self.states
            .values()
            .filter(|s| s.namespace == ns && s.finished.is_none())
            .max_by_key(|s| s.started_at)
    }

    /// Lines for the gate view of `ns` (terminal-safe; empty: no canary there).
    pub fn lines_for(&self, ns: &str, now_ms: i64) -> Vec<String> {
        let Some(c) = self.active_for(ns) else {
            return Vec::new();
        };
        let p = &c.plan;
        let left = match c.step {
            Some((_, at)) if !c.paused => {
                let spent = (now_ms - at.timestamp_millis()).max(0) as u64;
                let left = p.step_time_ms.saturating_sub(spent);
                if left == 0 {
                    "step time up: analysing".to_string()
                } else {
                    format!("{:.0} s left in the step", left as f64 / 1000.0)
                }
            }
            Some(_) => "PAUSED".into(),
            None => "starting".into(),
        };
        let mut out = vec![format!(
            "CANARY {} · {} → {} · {} · {left} · by {}",
            sanitize(&c.id),
            p.from,
            p.to,
            c.step_label(),
            c.started_by.1
        )];
        out.push(match &c.last_analysis {
            Some(a) => format!("analysis: {}", sanitize(&a.describe(p))),
            None => "analysis: none yet (the first reading sets the window's base)".into(),
        });
        if let Some((d, why)) = &c.last_decision {
            out.push(format!("last decision: {d} — {}", sanitize(why)));
        }
        out.push(match &c.aborting {
            Some(_) => format!("next: rolling back to {}", p.from),
            None if c.paused => "next: nothing until resumed (an error rate above the limit still aborts)".into(),
            None => format!(
                "next: advance once the step time is up with ≥ {} task(s) at ≤ {}% errors; abort above it or after a {} s hold",
                p.min_processed.max(1),
                p.max_error_rate_pct,
                p.max_hold_ms / 1000
            ),
        });
        out.push("keys: Z pause · U resume · M promote now · A abort".into());
        out
    }
}

/// The confirmation's question and button label of a control request.
pub fn question(c: &CanaryState, command: ControlCommand) -> (String, String) {
    let id = sanitize(&c.id);
    match command {
        ControlCommand::Pause => (
            format!(
                "Pause canary {id} at {}? It stops advancing (a failing {} still aborts it).",
                c.step_label(),
                c.plan.to
            ),
            "Pause canary".into(),
        ),
        ControlCommand::Resume => (
            format!("Resume canary {id} at {}?", c.step_label()),
            "Resume canary".into(),
        ),
        ControlCommand::Promote => (
            format!(
                "Promote canary {id} now: {} gets 100 % of the traffic, skipping the remaining steps?",
                c.plan.to
            ),
            format!("Promote {} to 100 %", c.plan.to),
        ),
        ControlCommand::Abort => (
            format!(
                "Abort canary {id}: the gate goes back to {} now, then the rollback runs?",
                c.plan.from
            ),
            "Abort and roll back".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ledger::event::EventKind;
    use crate::model::canary::CanaryPlan;

    fn ev(kind: EventKind, params: serde_json::Value) -> Event {
        let mut e = Event::new(kind, Some("email"));
        e.operator = "ana".into();
        e.author = Some("ana".into());
        e.params = params;
        e
    }

    #[test]
    fn the_gate_view_lines_of_a_running_canary() {
        let mut b = CanaryBoard::default();
        let plan = serde_json::to_value(CanaryPlan::new("v1", "v2")).unwrap();
        b.absorb(&ev(
            EventKind::CanaryStarted,
            serde_json::json!({"canary_id": "c1", "plan": plan}),
        ));
        let step = ev(
            EventKind::CanaryStep,
            serde_json::json!({"canary_id": "c1", "index": 2, "weight": 25}),
        );
        let at = step.ts.timestamp_millis();
        b.absorb(&step);
        let lines = b.lines_for("email", at + 20_000);
        assert!(lines[0].contains("CANARY c1"), "{lines:?}");
        assert!(lines[0].contains("step 3/5 (25 %)"), "{lines:?}");
        assert!(lines[0].contains("100 s left"), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("next: advance")));
        assert!(b.lines_for("other", at).is_empty());
        let mut fin = ev(
            EventKind::CanaryFinished,
            serde_json::json!({"canary_id": "c1"}),
        );
        fin.outcome = crate::ledger::Outcome::Ok;
        b.absorb(&fin);
        assert!(b.lines_for("email", at).is_empty(), "finished: not shown");
        let (q, _) = question(
            &project(&[ev(
                EventKind::CanaryStarted,
                serde_json::json!({"canary_id": "c2", "plan": serde_json::to_value(CanaryPlan::new("v1", "v2")).unwrap()}),
            )])["c2"],
            ControlCommand::Abort,
        );
        assert!(q.contains("goes back to v1"));
    }
}
