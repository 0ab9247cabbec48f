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
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use lapin::types::FieldTable;
use serde::Serialize;

use crate::broker::amqp::consume_on;
use crate::broker::browse::{message_view, quorum_refusal};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, timed};
use crate::model::deadletter::export_document;

pub use crate::model::deadletter::EXPORT_FORMAT;

/// One exported message, decoded for re-publishing (`dlq replay --from-file`).
#[derive(Debug, Clone)]
pub struct ExportedMessage {
    /// 1-based line in the file.
    pub line: usize,
    /// The body, whole.
    pub body: Vec<u8>,
    /// Properties and typed headers as received.
    pub properties: lapin::BasicProperties,
    /// The queue it was exported from.
    pub queue: String,
}

/// Read and validate a whole export file (every record, before anything is published): a
/// sequence of format-2 records — one per line (a purge's JSONL) or pretty-printed (`dlq show
/// --export`, the console's `e`) — each with its whole body and decodable properties. The error
/// names the line the bad record starts on.
pub fn read_export(path: &Path) -> Result<Vec<ExportedMessage>, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut records = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    loop {
        let before = records.byte_offset();
        let start = before + (text[before..].len() - text[before..].trim_start().len());
        let doc = match records.next() {
            None => break,
            Some(Ok(doc)) => doc,
            Some(Err(e)) => return Err(format!("line {}: not JSON ({e})", e.line())),
        };
        let n = line_of(start);
        if doc["format"].as_u64() != Some(u64::from(EXPORT_FORMAT)) {
            return Err(format!(
                "line {n}: not a format-{EXPORT_FORMAT} export record (exports before format 2 are not lossless)"
            ));
        }
        if doc["body_truncated"].as_bool() != Some(false) {
            return Err(format!("line {n}: the body was not exported whole"));
        }
        if doc["amqp_properties"].is_null() {
            return Err(format!(
                "line {n}: the record has no amqp_properties (the message was not loaded whole when it was exported)"
            ));
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(doc["body_base64"].as_str().unwrap_or_default())
            .map_err(|e| format!("line {n}: body_base64: {e}"))?;
        let properties: lapin::BasicProperties =
            serde_json::from_value(doc["amqp_properties"].clone())
                .map_err(|e| format!("line {n}: amqp_properties: {e}"))?;
        let unreadable = doc["unreadable"]
            .as_str()
            .map(str::to_string)
            .or_else(|| crate::broker::headers::unreadable_reason(properties.headers().as_ref()));
        if let Some(why) = unreadable {
            return Err(format!(
                "line {n}: its properties could not be read when it was exported ({}), so it cannot be republished as it was; remove the line to import the rest",
                crate::text::preview(why.as_bytes(), 1024, 200)
            ));
        }
        out.push(ExportedMessage {
            line: n,
            body,
            properties,
            queue: doc["queue"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(out)
}

/// Longest wait for the next message the queue's depth says is there: the broker can take
/// seconds to send one (a 128 MiB body; headers nested 10,000 deep, which RabbitMQ re-encodes
/// in time quadratic in the depth), and giving up earlier would export and purge only part of
/// the queue while saying it was all of it.
const EXPORT_IDLE: Duration = Duration::from_secs(20);

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
    // Exports hold message bodies: readable by this user only.
    let file = crate::files::create_new(export_path).map_err(|e| io_err(export_path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let pw = session.password().to_string();
    let channel = session.channel().await?;
    // Prefetch 0 = unlimited: every exported message stays held until the decision.
    let tag = format!("hopback-purge-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = consume_on(&session, &channel, queue, &tag, Some(0), false).await?;
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
        let props = d.properties.clone();
        let (exchange, routing_key) = (d.exchange.to_string(), d.routing_key.to_string());
        let mut view = message_view(seen - 1, &d.properties, d.data, len, d.redelivered);
        if !keep(&view) {
            continue;
        }
        // Lossless: the properties exactly as received — every header with its AMQP type —
        // in lapin's serde form, plus where the message was published (README "Export format").
        view.lossless = Some(crate::model::deadletter::Lossless {
            amqp_properties: serde_json::to_value(&props)
                .map_err(|e| io_err(export_path, std::io::Error::other(e)))?,
            exchange,
            routing_key,
        });
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

/// Where each message of an export goes when re-imported into a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportPlan {
    /// (index into the messages, target queue, parked?).
    #[serde(skip)]
    pub targets: Vec<(usize, String, bool)>,
    /// Messages going to a version queue.
    pub to_versions: u64,
    /// Messages parked: over the replay limit, or an origin outside the namespace.
    pub parked: u64,
    /// Of those: origins naming a queue outside the namespace's version queues.
    pub foreign_origin: u64,
}

/// Plan a re-import: to version queue `to`, or (`None`) each message's origin — only the
/// namespace's own version queues; a foreign origin or a message already replayed `max_replays`
/// times goes to the parking queue (the mover's rules).
pub fn plan_import(
    msgs: &[ExportedMessage],
    names: &crate::topology::Namespace,
    to: Option<&str>,
    max_replays: u64,
) -> Result<ImportPlan, crate::topology::UnknownVersion> {
    use crate::broker::headers::{REPLAYS_HEADER, attribute, header_u64};
    let fixed = match to {
        Some(v) => Some(names.require_version_queue(v)?),
        None => None,
    };
    let mut plan = ImportPlan::default();
    for (i, m) in msgs.iter().enumerate() {
        let headers = m.properties.headers().as_ref();
        let replays = header_u64(headers, REPLAYS_HEADER).unwrap_or(0);
        let target = match &fixed {
            Some(q) => Some(q.clone()),
            None => attribute(headers)
                .origin_queue
                .filter(|q| names.version_of_queue(q).is_some()),
        };
        match target {
            Some(q) if replays < max_replays => {
                plan.to_versions += 1;
                plan.targets.push((i, q, false));
            }
            Some(_) => {
                plan.parked += 1;
                plan.targets.push((i, names.parked.clone(), true));
            }
            None => {
                plan.parked += 1;
                plan.foreign_origin += 1;
                plan.targets.push((i, names.parked.clone(), true));
            }
        }
    }
    Ok(plan)
}

/// Publish the planned messages with their original body, properties and typed headers (plus
/// `x-hopback-replays` + 1 for those not parked), `mandatory`, each confirm awaited; the parking
/// queue is declared (classic, durable) when needed. Returns how many the broker confirmed.
pub async fn republish(
    session: &Session,
    msgs: &[ExportedMessage],
    plan: &ImportPlan,
) -> Result<u64, BrokerError> {
    use crate::broker::headers::{REPLAYS_HEADER, header_u64};
    let pw = session.password().to_string();
    if let Some((_, park, _)) = plan.targets.iter().find(|t| t.2) {
        crate::broker::amqp::declare_queue(
            session,
            "declaring the parking queue",
            park,
            true,
            FieldTable::default(),
        )
        .await?;
    }
    let ch = session.confirm_channel().await?;
    let mut confirmed = 0u64;
    for chunk in plan.targets.chunks(500) {
        let mut pending = Vec::with_capacity(chunk.len());
        for (i, queue, parked) in chunk {
            let m = &msgs[*i];
            // What the re-imported message keeps is `broker::republish`'s decision, as for the
            // mover: its CC/BCC and a foreign user_id moved aside.
            let replays = (!*parked).then(|| {
                header_u64(m.properties.headers().as_ref(), REPLAYS_HEADER).unwrap_or(0) + 1
            });
            let props = crate::broker::republish::client_properties(
                m.properties.clone(),
                &session.profile().username,
                crate::broker::republish::Stamp { replays, run: None },
            );
            let p = timed(
                "basic.publish",
                CALL_TIMEOUT,
                &pw,
                ch.basic_publish(
                    "".into(),
                    crate::broker::session::short(queue)?,
                    lapin::options::BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &m.body,
                    props,
                ),
            )
            .await?;
            pending.push(p);
        }
        for p in pending {
            match timed("publisher confirm", Duration::from_secs(30), &pw, p).await? {
                lapin::Confirmation::Ack(None) => confirmed += 1,
                other => {
                    return Err(BrokerError::Other(format!(
                        "the broker did not take a re-imported message ({other:?}); {confirmed} were confirmed before it"
                    )));
                }
            }
        }
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    Ok(confirmed)
}

/// Write a file only this user can read (`crate::files::write`): exports hold message bodies.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::files::write(path, bytes)
}
