//! The rollback's journal: its events in the ledger, and the progress (completed steps, where
//! it stopped) read back from them for a resume.

use super::*;

// ───────────────────────────── the journal ─────────────────────────────

/// Every event of one rollback (`params.rollback_id == id`), oldest first, from the ledger.
pub async fn rollback_events(
    ledger: &Ledger,
    id: &str,
) -> Result<Vec<Event>, crate::ledger::LedgerError> {
    let mut out = Vec::new();
    ledger
        .fold(crate::ledger::StreamStart::First, |e| {
            if rollback_id_of(&e).as_deref() == Some(id) {
                out.push(e);
            }
        })
        .await?;
    Ok(out)
}

pub(super) async fn journal(ledger: &Ledger, ev: Event) {
    if let Err(e) = ledger.append(ev).await {
        tracing::warn!(error = %e.message, "cannot journal a rollback event");
    }
}

/// The `params.rollback_id` of an event.
pub fn rollback_id_of(e: &Event) -> Option<String> {
    e.params
        .get("rollback_id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// What an earlier run of a rollback got to, rebuilt from its journal events.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Namespace.
    pub namespace: String,
    /// The plan as it was started.
    pub plan: Plan,
    /// Steps that finished (done, already done, skipped).
    pub completed: BTreeSet<usize>,
    /// The step that started and never finished, if any.
    pub interrupted: Option<usize>,
    /// Did the rollback already finish (and how)?
    pub finished: Option<Outcome>,
    /// Who started it: the operator name and the authenticated broker user.
    pub started_by: (String, String),
    /// Events of this rollback that were ignored because they are unverified (no authenticated
    /// author: not written by hopback through the broker).
    pub ignored_unverified: usize,
}

/// Rebuild a rollback's progress from its events. Only verified events count (issue 18): an
/// unverified `rollback_started` is refused, an unverified step event is ignored (a forged
/// "finished" must not make a resume skip a step), and the plan is validated like a plan file.
pub fn progress_from_events(events: &[Event]) -> Result<Progress, crate::model::Invalid> {
    let ignored_unverified = events.iter().filter(|e| !e.is_verified()).count();
    let events: Vec<&Event> = events.iter().filter(|e| e.is_verified()).collect();
    let start = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackStarted)
        .ok_or(if ignored_unverified > 0 {
            "no verified rollback_started event for this id (its events have no authenticated author: not resumable)"
        } else {
            "no rollback_started event for this id"
        })?;
    let plan: Plan = serde_json::from_value(start.params.get("plan").cloned().unwrap_or_default())
        .map_err(|e| format!("the journaled plan cannot be read: {e}"))?;
    crate::ops::plan::validate_plan(&plan)
        .map_err(|e| format!("the journaled plan is not valid: {e}"))?;
    let started_by = (
        crate::text::sanitize(&start.operator).into_owned(),
        start.author_label(),
    );
    let namespace = start.namespace.clone().unwrap_or_default();
    let mut completed = BTreeSet::new();
    let mut started = BTreeSet::new();
    let mut finished = None;
    for e in events.iter().copied() {
        match e.kind {
            EventKind::RollbackStep => {
                let Some(i) = e.params.get("index").and_then(|v| v.as_u64()) else {
                    continue;
                };
                let i = i as usize;
                match e.params.get("phase").and_then(|v| v.as_str()) {
                    Some("start") => {
                        started.insert(i);
                    }
                    Some("finish") => {
                        let state: Option<StepState> = e
                            .after
                            .get("state")
                            .and_then(|s| serde_json::from_value(s.clone()).ok());
                        if state.is_some_and(StepState::completed) {
                            completed.insert(i);
                        }
                    }
                    _ => {}
                }
            }
            EventKind::RollbackFinished => finished = Some(e.outcome),
            _ => {}
        }
    }
    let interrupted = started.difference(&completed).max().copied();
    Ok(Progress {
        namespace,
        plan,
        completed,
        interrupted,
        finished,
        started_by,
        ignored_unverified,
    })
}
