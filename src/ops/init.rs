//! The init operation: declare a namespace's convention idempotently (`broker::topology::init`)
//! and journal what it created. Guard (read-only, valid names) → act → the report says what
//! changed → journal the outcome. Its intent is not journaled: a second `init` changes nothing
//! and must journal nothing, and every declaration is idempotent, so an `init` that dies
//! half-way is finished by running it again (docs/architecture.md, "One rule over every
//! operation").

use super::{OpContext, OpError};
use crate::broker::topology::{self, InitReport, QueueType};
use crate::ledger::{Event, EventKind};

/// What `init` did, and the ledger event when it changed anything.
#[derive(Debug, Clone)]
pub struct InitDone {
    /// What was created and what was already there.
    pub report: InitReport,
    /// The outcome event (only when something changed).
    pub event: Option<Event>,
}

/// Validate, declare, journal.
pub async fn init(
    cx: &OpContext,
    ns: &str,
    versions: &str,
    queue_type: QueueType,
) -> Result<InitDone, OpError> {
    topology::validate_namespace(ns)
        .map_err(|e| OpError::invalid(e, "use a short printable name like `email`"))?;
    let versions = topology::parse_versions(versions)
        .map_err(|e| OpError::invalid(e, "e.g. --versions v1,v2"))?;
    cx.require_writable("init a namespace")?;
    let report = topology::init(&cx.session, ns, &versions, queue_type).await?;
    if !report.changed() {
        return Ok(InitDone {
            report,
            event: None,
        });
    }
    let mut after = serde_json::json!({ "created": report.created });
    if let Some((v, w)) = report.gate.as_deref().and_then(|g| g.split_once('=')) {
        after["gate"] = serde_json::json!({ v: w.parse::<u32>().unwrap_or(100) });
    }
    let e = cx
        .event(EventKind::Init, Some(&report.namespace))
        .params(serde_json::json!({ "versions": versions, "queue_type": queue_type }))
        .after(after);
    let event = cx.journal_outcome(e, "namespace created").await?;
    Ok(InitDone {
        report,
        event: Some(event),
    })
}
