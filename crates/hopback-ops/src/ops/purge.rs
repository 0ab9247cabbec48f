//! The purge operation: guard (read-only, the broker's write permission on the DLQ, the quorum
//! delivery-limit guard) → export every dead letter and hold it (`broker::export`) → the
//! operator confirms the count → journal the intent → remove exactly what was exported →
//! journal the outcome. Never `queue.purge`: a message that arrives after the export is never
//! removed. The CLI (`hopback dlq purge`) and the console (`P`) call [`prepare`], show the count
//! and the path, and then [`PreparedPurge::commit`] or [`PreparedPurge::abort`].

use std::path::PathBuf;

use super::{OpContext, OpError};
use crate::broker::export;
pub use crate::broker::export::{PurgeReport, default_export_path};
use crate::broker::stats::browse_guard;
use crate::ledger::{Event, EventKind, Outcome};
use crate::text::sanitize;
use crate::topology::Namespace;

/// An export done and its messages held, waiting for the operator's decision.
#[derive(Debug)]
pub struct PreparedPurge {
    cx: OpContext,
    held: export::PreparedPurge,
    /// Namespace.
    pub namespace: String,
    /// The dead-letter queue.
    pub queue: String,
    /// Messages exported and held.
    pub count: u64,
    /// Where the export is.
    pub export_path: PathBuf,
}

/// Guard, then export every dead letter of `ns` to `export_path` (default: the data dir's
/// `exports/`) and hold them. Nothing is removed until [`PreparedPurge::commit`].
pub async fn prepare(
    cx: &OpContext,
    ns: &str,
    export_path: Option<PathBuf>,
    force: bool,
) -> Result<PreparedPurge, OpError> {
    cx.require_writable("purge dead letters")?;
    let names = Namespace::resolve(&cx.cfg, ns);
    let queue = names.dlq.clone();
    // RabbitMQ lets a read-only user consume (and so remove) messages; a purge is a write.
    cx.session.probe_write(&queue).await?;
    super::dlq_depth(&cx.session, &queue).await?;
    let quorum = browse_guard(cx.mgmt.as_ref(), &queue, force).await?;
    let path = export_path.unwrap_or_else(|| default_export_path(&queue));
    let held = export::prepare(cx.session.clone(), &queue, &path, quorum, force).await?;
    Ok(PreparedPurge {
        cx: cx.clone(),
        count: held.count,
        namespace: ns.to_string(),
        queue,
        export_path: path,
        held,
    })
}

impl PreparedPurge {
    fn event(&self) -> Event {
        self.cx
            .event(EventKind::Purge, Some(&self.namespace))
            .params(serde_json::json!({"queue": self.queue, "export": self.export_path}))
    }

    /// The operator confirmed: journal the intent, remove exactly the exported messages,
    /// journal the outcome (returned with the report).
    pub async fn commit(self) -> Result<(PurgeReport, Event), OpError> {
        if let Err(e) = self
            .cx
            .journal_intent(
                self.event()
                    .after(serde_json::json!({"count": self.count, "exported": self.count})),
            )
            .await
        {
            self.held.abort().await;
            return Err(e);
        }
        let (cx, count, base) = (self.cx.clone(), self.count, self.event());
        let r = self.held.commit().await;
        let event = match &r {
            Ok(r) => base
                .after(serde_json::json!({"count": r.removed, "exported": r.exported}))
                .outcome(Outcome::Ok),
            Err(e) => base
                .after(serde_json::json!({"count": 0, "exported": count}))
                .outcome(Outcome::Failed)
                .reason(e.to_string()),
        };
        let journaled = cx
            .journal_outcome(event, &format!("purged {count} message(s)"))
            .await;
        let report = r.map_err(|e| {
            OpError::failed(
                format!("the purge failed: {}", sanitize(&e.to_string())),
                "the messages that were not removed are still in the queue; the export stays",
            )
        })?;
        Ok((report, journaled?))
    }

    /// Put everything back (the export file stays). With a reason (`not confirmed`), the
    /// refusal is journaled.
    pub async fn abort(self, reason: Option<&str>) {
        let (cx, event) = (self.cx.clone(), self.event());
        let count = self.count;
        self.held.abort().await;
        if let Some(r) = reason {
            let e = event
                .after(serde_json::json!({"count": 0, "exported": count}))
                .outcome(Outcome::Refused)
                .reason(r);
            let _ = cx.journal_outcome(e, "nothing").await;
        }
    }
}
