//! Export-and-hold, the broker primitive behind a purge without regret (the operation is
//! `ops::purge`, which guards and journals; docs/architecture.md): export first, then remove
//! exactly what was exported.
//!
//! [`prepare`] consumes the queue with manual ack and *holds* every message unacked while writing
//! it to a JSONL file (one [`export_document`] per line, full body in base64) and syncing the file.
//! The operator then sees the count and the path and confirms; [`PreparedPurge::commit`] acks the
//! held messages (one `basic.ack multiple` up to the last exported delivery tag) and closes the
//! channel, whose `close-ok` proves the broker processed the ack. [`PreparedPurge::abort`] closes
//! the channel without acking, and the broker puts everything back in place.
//!
//! Never `queue.purge`: a message that arrives between the export and the confirmation is not in
//! the file, so it must not be removed — it never is, because only delivery tags up to the last
//! exported one are acked. If the console dies while the question is on screen, the held messages
//! return to the queue by themselves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Serialize;

use crate::broker::browse::{message_view, quorum_refusal};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, timed};
use crate::model::deadletter::export_document;

/// Quiet time after which the export counts the queue as read.
const EXPORT_IDLE: Duration = Duration::from_millis(1500);

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// The queue.
    pub queue: String,
    /// Messages written to the export.
    pub exported: u64,
    /// Messages removed from the queue (= exported on success).
    pub removed: u64,
    /// The JSONL export.
    pub export_path: PathBuf,
}

/// An export done and its messages held, waiting for the operator's decision.
pub struct PreparedPurge {
    session: Arc<Session>,
    channel: Channel,
    /// Delivery tags of the exported messages, in order.
    tags: Vec<u64>,
    /// Was every held message exported (no filter skipped one)?
    all_exported: bool,
    /// The queue.
    pub queue: String,
    /// Messages exported and held.
    pub count: u64,
    /// Where the export is.
    pub export_path: PathBuf,
}

impl std::fmt::Debug for PreparedPurge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedPurge")
            .field("queue", &self.queue)
            .field("count", &self.count)
            .field("export_path", &self.export_path)
            .finish()
    }
}

/// `DATA_DIR/exports/QUEUE-YYYYMMDDTHHMMSSZ.jsonl` (the queue name made file-safe).
pub fn default_export_path(queue: &str) -> PathBuf {
    let safe: String = queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    crate::config::data_dir().join("exports").join(format!(
        "{safe}-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ))
}

fn io_err(path: &Path, e: std::io::Error) -> BrokerError {
    BrokerError::Other(format!("cannot write the export {}: {e}", path.display()))
}

/// Export every message of `queue` to `export_path` (JSONL) and hold them unacked.
/// Refuses a quorum queue with a delivery limit unless `force` (holding then releasing counts as a
/// delivery). Nothing is removed until [`PreparedPurge::commit`].
pub async fn prepare(
    session: Arc<Session>,
    queue: &str,
    export_path: &Path,
    is_quorum_with_limit: bool,
    force: bool,
) -> Result<PreparedPurge, BrokerError> {
    prepare_matching(
        session,
        queue,
        export_path,
        is_quorum_with_limit,
        force,
        &|_| true,
    )
    .await
}

/// [`prepare`] for the messages `keep` accepts only (the rollback's "export v2's dead letters"):
/// the others are held too, never exported, and go back in place when the channel closes.
pub async fn prepare_matching(
    session: Arc<Session>,
    queue: &str,
    export_path: &Path,
    is_quorum_with_limit: bool,
    force: bool,
    keep: &(dyn Fn(&crate::model::deadletter::MessageView) -> bool + Sync),
) -> Result<PreparedPurge, BrokerError> {
    if is_quorum_with_limit && !force {
        return Err(quorum_refusal(queue));
    }
    let depth = session.passive_queue(queue).await?.ok_or_else(|| {
        BrokerError::NotFound(format!(
            "queue `{}` does not exist",
            crate::text::sanitize(queue)
        ))
    })?;
    let depth = u64::from(depth.ready);
    if let Some(dir) = export_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(export_path)
        .map_err(|e| io_err(export_path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let pw = session.password().to_string();
    let channel = session.channel().await?;
    // Prefetch 0 = unlimited: every exported message stays held until the decision.
    timed(
        "basic.qos",
        CALL_TIMEOUT,
        &pw,
        channel.basic_qos(0, BasicQosOptions::default()),
    )
    .await?;
    let tag = format!("hopback-purge-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = timed(
        "basic.consume",
        CALL_TIMEOUT,
        &pw,
        channel.basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut count = 0u64;
    let mut seen = 0u64;
    let mut tags = Vec::new();
    while seen < depth {
        let d = match tokio::time::timeout(EXPORT_IDLE, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => return Err(crate::broker::session::classify(&e, &pw)),
            Ok(None) | Err(_) => break,
        };
        seen += 1;
        let len = d.data.len();
        let view = message_view(seen - 1, &d.properties, d.data, len, d.redelivered);
        if !keep(&view) {
            continue;
        }
        let doc = export_document(queue, &view);
        serde_json::to_writer(&mut out, &doc)
            .map_err(|e| io_err(export_path, std::io::Error::other(e)))?;
        out.write_all(b"\n").map_err(|e| io_err(export_path, e))?;
        tags.push(d.delivery_tag);
        count += 1;
    }
    // Stop deliveries; anything delivered after the last exported tag is never acked.
    timed(
        "basic.cancel",
        CALL_TIMEOUT,
        &pw,
        channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await?;
    let file = out
        .into_inner()
        .map_err(|e| io_err(export_path, e.into_error()))?;
    file.sync_all().map_err(|e| io_err(export_path, e))?;
    Ok(PreparedPurge {
        session,
        channel,
        all_exported: seen == count,
        tags,
        queue: queue.to_string(),
        count,
        export_path: export_path.to_path_buf(),
    })
}

impl PreparedPurge {
    /// Remove exactly the exported messages. The channel's `close-ok` proves the broker processed
    /// the ack; if anything fails, the messages return to the queue (nothing is lost either way).
    pub async fn commit(self) -> Result<PurgeReport, BrokerError> {
        let pw = self.session.password().to_string();
        // Everything held was exported: one `multiple` ack covers it; otherwise only the
        // exported tags, one by one (the rest goes back when the channel closes).
        let acks: Vec<(u64, bool)> = match (self.all_exported, self.tags.last()) {
            (true, Some(&t)) => vec![(t, true)],
            _ => self.tags.iter().map(|&t| (t, false)).collect(),
        };
        for (t, multiple) in acks {
            timed(
                "basic.ack",
                CALL_TIMEOUT,
                &pw,
                self.channel.basic_ack(t, BasicAckOptions { multiple }),
            )
            .await?;
        }
        timed(
            "channel.close",
            CALL_TIMEOUT,
            &pw,
            self.channel.close(200, "purged".into()),
        )
        .await
        .map_err(|e| {
            BrokerError::Other(format!(
                "could not confirm the purge of `{}` ({e}); the messages may still be there — check the depth and retry",
                crate::text::sanitize(&self.queue)
            ))
        })?;
        Ok(PurgeReport {
            queue: self.queue,
            exported: self.count,
            removed: self.count,
            export_path: self.export_path,
        })
    }
    /// Put everything back (the export file stays).
    pub async fn abort(self) {
        let _ = tokio::time::timeout(
            CALL_TIMEOUT,
            self.channel.close(200, "purge aborted".into()),
        )
        .await;
    }
}
