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
    /// Steps that finished (done, already done, skipped), by the starter's own events. A resume
    /// still re-checks against the broker that each one's effect holds before skipping it.
    pub completed: BTreeSet<usize>,
    /// What each completed step's `finish` event recorded (`after.data`).
    pub completed_data: std::collections::BTreeMap<usize, serde_json::Value>,
    /// The step that started and never finished, if any.
    pub interrupted: Option<usize>,
    /// Did the rollback already finish (and how)? An abort is not a finish: an aborted
    /// rollback is resumable.
    pub finished: Option<Outcome>,
    /// Who started it: the operator name the event claims and the broker-verified user.
    pub started_by: (String, String),
    /// Events of this rollback that were ignored because they are unverified (no authenticated
    /// author: not written by hopback through the broker).
    pub ignored_unverified: usize,
    /// Events of this rollback written by other broker users than its starter (verified, but
    /// not the starter's: ignored), per user.
    pub ignored_other_authors: std::collections::BTreeMap<String, usize>,
}

impl Progress {
    /// One line on the events a resume ignored (`None`: none).
    pub fn ignored_note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.ignored_unverified > 0 {
            parts.push(format!("{} unverified", self.ignored_unverified));
        }
        for (who, n) in &self.ignored_other_authors {
            parts.push(format!("{n} by broker user {who}"));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "ignored event(s) of this id not written by its starter: {}",
                parts.join(", ")
            )
        })
    }
}

/// Rebuild a rollback's progress from its events. Only the starter's events count: the first
/// verified `rollback_started` names the broker user that started it, and a step or finish
/// event counts only when the broker verified the same user for it. An unverified event, or one
/// another broker user wrote (whatever operator name its body claims), is ignored — a forged
/// "done" must not make a resume skip a step, nor a forged "finished" stop it. The plan is
/// validated like a plan file.
pub fn progress_from_events(events: &[Event]) -> Result<Progress, crate::model::Invalid> {
    let ignored_unverified = events.iter().filter(|e| !e.is_verified()).count();
    let start = events
        .iter()
        .find(|e| e.is_verified() && e.kind == EventKind::RollbackStarted)
        .ok_or(if ignored_unverified > 0 {
            "no verified rollback_started event for this id (its events have no authenticated author: not resumable)"
        } else {
            "no rollback_started event for this id"
        })?;
    let plan: Plan = serde_json::from_value(start.params.get("plan").cloned().unwrap_or_default())
        .map_err(|e| format!("the journaled plan cannot be read: {e}"))?;
    crate::ops::plan::validate_plan(&plan)
        .map_err(|e| format!("the journaled plan is not valid: {e}"))?;
    let started_by = (start.claimed_operator(), start.author_label());
    let mut ignored_other_authors = std::collections::BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.is_verified() && !e.same_author(start))
    {
        *ignored_other_authors.entry(e.author_label()).or_insert(0) += 1;
    }
    let namespace = start.namespace.clone().unwrap_or_default();
    let mut completed = BTreeSet::new();
    let mut completed_data = std::collections::BTreeMap::new();
    let mut started = BTreeSet::new();
    let mut finished = None;
    for e in events.iter().filter(|e| e.same_author(start)) {
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
                            completed_data
                                .insert(i, e.after.get("data").cloned().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            // An aborted rollback stopped at a consistent point on purpose, to be continued:
            // it stays resumable (its steps done are skipped); any other end closes it. The
            // last end counts: a resumed run that completes closes it.
            EventKind::RollbackFinished => {
                finished = (e.outcome != Outcome::Cancelled).then_some(e.outcome)
            }
            _ => {}
        }
    }
    let interrupted = started.difference(&completed).max().copied();
    Ok(Progress {
        namespace,
        plan,
        completed,
        completed_data,
        interrupted,
        finished,
        started_by,
        ignored_unverified,
        ignored_other_authors,
    })
}
