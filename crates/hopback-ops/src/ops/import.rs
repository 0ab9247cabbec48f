//! Re-import an export (`hopback dlq replay NS --from-file FILE`): the messages a purge or a
//! rollback exported go back into the namespace with their original body, properties and typed
//! headers. One operation (docs/architecture.md, "One rule over every operation"): guard
//! (read-only; the whole file validated before anything is published) → journal the intent →
//! publish with confirms (`broker::export::republish`) → verify the count → journal the outcome.
//! "To origin" means the namespace's own version queues only, and the replay limit holds, as for
//! the mover: anything else is parked.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use crate::broker::export::{ImportPlan, plan_import, read_export, republish};
use crate::ledger::event::{Event, EventKind, Outcome};
use crate::ops::{OpContext, OpError};
use crate::topology::Namespace;

/// What to import, and where to.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// Namespace.
    pub namespace: String,
    /// The export file.
    pub file: PathBuf,
    /// A version (`v1`); `None`: each message's origin (the namespace's version queues only).
    pub to: Option<String>,
    /// Replays allowed before a message is parked.
    pub max_replays: u32,
    /// Plan only.
    pub dry_run: bool,
}

/// What an import did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Namespace.
    pub namespace: String,
    /// The file.
    pub file: String,
    /// Messages in the file.
    pub messages: u64,
    /// The plan (to versions / parked / foreign origins).
    pub plan: ImportPlan,
    /// Confirmed by the broker.
    pub published: u64,
    /// Dry run?
    pub dry_run: bool,
    /// The outcome's ledger event.
    pub event: Option<Event>,
}

/// Validate the file and plan; with `dry_run`, stop there.
pub async fn import(cx: &OpContext, req: &ImportRequest) -> Result<ImportReport, OpError> {
    if !req.dry_run {
        cx.require_writable("replay messages from a file")?;
    }
    let msgs = read_export(&req.file).map_err(|e| {
        OpError::invalid(
            format!("{}: {e}; nothing was published", req.file.display()),
            "give a file written by `hopback dlq purge` (export format 2)",
        )
    })?;
    let names = Namespace::resolve(&cx.cfg, &req.namespace);
    let plan = plan_import(&msgs, &names, req.to.as_deref(), u64::from(req.max_replays))
        .map_err(|e| OpError::invalid(e.to_string(), "give one of the namespace's versions"))?;
    let mut report = ImportReport {
        namespace: req.namespace.clone(),
        file: req.file.display().to_string(),
        messages: msgs.len() as u64,
        plan: plan.clone(),
        published: 0,
        dry_run: req.dry_run,
        event: None,
    };
    if req.dry_run || msgs.is_empty() {
        return Ok(report);
    }
    let params = json!({
        "from_file": report.file,
        "to": req.to.clone().unwrap_or_else(|| "origin".into()),
        "messages": report.messages,
        "to_versions": plan.to_versions,
        "parked": plan.parked,
        "foreign_origin": plan.foreign_origin,
    });
    cx.journal_intent(
        cx.event(EventKind::Replay, Some(&req.namespace))
            .params(params.clone()),
    )
    .await?;
    let published = republish(&cx.session, &msgs, &plan).await;
    let (outcome, failure) = match &published {
        Ok(n) if *n == report.messages => (Outcome::Ok, None),
        Ok(n) => (
            Outcome::VerificationFailed,
            Some(OpError::verification(
                format!(
                    "{n} of {} re-imported message(s) confirmed",
                    report.messages
                ),
                "re-run the import after checking the queues (consumers deduplicate on message_id)",
            )),
        ),
        Err(e) => (
            Outcome::Failed,
            Some(OpError::failed(
                format!("re-import stopped: {e}"),
                "what was confirmed is in place; re-running publishes the file again (consumers deduplicate on message_id)",
            )),
        ),
    };
    report.published = *published.as_ref().unwrap_or(&0);
    let event = cx
        .event(EventKind::Replay, Some(&req.namespace))
        .params(params)
        .after(json!({"published": report.published}))
        .outcome(outcome);
    let done = format!(
        "re-imported {} message(s) from {}",
        report.published, report.file
    );
    let journaled = cx.journal_outcome(event, &done).await;
    super::settle(failure, journaled, report, |r, e| r.event = Some(e))
}
