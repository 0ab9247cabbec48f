//! Non-destructive reading of a queue (the DLQ browser's primitive): consume with manual ack and
//! prefetch = the number wanted, then `nack(multiple, requeue)` everything. A classic queue puts
//! the messages back in place, in order; if the console dies mid-browse, the broker requeues the
//! unacked messages itself, so nothing is lost either way.
//!
//! Quorum queues count each such delivery against `x-delivery-limit`: browsing one with a limit
//! can dead-letter or drop messages, so [`browse`] refuses unless `force` is set. On RabbitMQ 3.x
//! they also put browsed messages back out of order: a position is only good within one read,
//! and every browsed message carries its identity (`broker::identity`) for the next one.

use std::time::Duration;

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicCancelOptions, BasicNackOptions};
use lapin::types::AMQPValue;

use crate::broker::amqp::consume_on;
use crate::broker::headers::attribute;
use crate::broker::identity::identity_of;
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, classify, timed};
use crate::model::deadletter::{BROWSE_BODY_BYTES, DeadLetterId, Digest, MessageView};

/// Longest wait for the next message once the broker has stopped pushing.
const NEXT_MESSAGE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Longest wait for a message the queue's depth says is there: a 128 MiB body takes seconds to
/// arrive in full, and giving up earlier would show a short page as if the queue were shorter.
const EXPECTED_MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// One message seen while browsing.
#[derive(Debug, Clone)]
pub struct Browsed {
    /// 0-based position in the queue at browse time.
    pub position: u64,
    /// AMQP properties and headers.
    pub properties: BasicProperties,
    /// Body, cut at the caller's byte limit.
    pub body: Vec<u8>,
    /// Full body length.
    pub body_len: usize,
    /// Had it been delivered before?
    pub redelivered: bool,
    /// Digest of the whole message (body included, however much of it is kept).
    pub digest: Digest,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
}

/// How to browse.
#[derive(Debug, Clone, Copy)]
pub struct BrowseOptions {
    /// Skip this many messages from the head.
    pub skip: u64,
    /// Return at most this many.
    pub take: u64,
    /// Keep at most this many body bytes per message.
    pub max_body_bytes: usize,
    /// Browse a quorum queue even though it has a delivery limit.
    pub force: bool,
}

/// Why a browse was refused.
pub fn quorum_refusal(queue: &str) -> BrokerError {
    BrokerError::Other(format!(
        "refusing to browse `{}`: it is a quorum queue, or its type is unknown (the management API tells) — every browse of a quorum queue counts as a delivery against its delivery limit and can dead-letter or drop messages (use --force to browse anyway)",
        crate::text::sanitize(queue)
    ))
}

/// Read `take` messages after `skip` without removing any. `is_quorum_with_limit` comes from the
/// caller (management API arguments); when true and not forced, nothing is read.
pub async fn browse(
    session: &Session,
    queue: &str,
    opts: BrowseOptions,
    is_quorum_with_limit: bool,
) -> Result<Vec<Browsed>, BrokerError> {
    if is_quorum_with_limit && !opts.force {
        return Err(quorum_refusal(queue));
    }
    let depth = ready_depth(session, queue).await?;
    let want = depth.min(opts.skip.saturating_add(opts.take));
    if want == 0 || opts.skip >= depth {
        return Ok(Vec::new());
    }
    let skip = opts.skip;
    let mut pick = |position: u64, _: &DeadLetterId| {
        if position >= skip {
            Pick::Keep
        } else {
            Pick::Pass
        }
    };
    read_head(session, queue, depth, want, opts.max_body_bytes, &mut pick).await
}

/// The ready count of `queue` (passive declare); not found is an error.
pub(crate) async fn ready_depth(session: &Session, queue: &str) -> Result<u64, BrokerError> {
    match session.passive_queue(queue).await? {
        Some(c) => Ok(u64::from(c.ready)),
        None => Err(BrokerError::NotFound(format!(
            "queue `{}` does not exist",
            crate::text::sanitize(queue)
        ))),
    }
}

/// What [`read_head`] does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Not wanted: read on.
    Pass,
    /// Keep it and read on.
    Keep,
    /// Keep it; it was the last one wanted.
    KeepAndStop,
}

/// One pass over the head of `queue` (`want` messages at most, of the `depth` it holds): every
/// message is delivered once, shown to `pick` with its position and identity, and put back
/// (`nack(multiple, requeue)`) at the end — one read, so positions and identities agree within it.
/// Kept messages carry at most `max_body_bytes` of body.
pub(crate) async fn read_head(
    session: &Session,
    queue: &str,
    depth: u64,
    want: u64,
    max_body_bytes: usize,
    pick: &mut (dyn FnMut(u64, &DeadLetterId) -> Pick + Send),
) -> Result<Vec<Browsed>, BrokerError> {
    let pw = session.password().to_string();
    let ch = session.channel().await?;
    // Prefetch is a u16; pages past 65,535 messages in need a wider window than one browse gives.
    let prefetch = u16::try_from(want).unwrap_or(u16::MAX);
    let tag = format!("hopback-browse-{}", uuid::Uuid::new_v4());
    let mut consumer = consume_on(session, &ch, queue, &tag, Some(prefetch), false).await?;
    let mut out = Vec::new();
    let mut last_tag = None;
    let mut seen = 0u64;
    let mut failed = None;
    while seen < u64::from(prefetch) {
        let limit = if seen < want {
            EXPECTED_MESSAGE_TIMEOUT
        } else {
            NEXT_MESSAGE_TIMEOUT
        };
        let d = match tokio::time::timeout(limit, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            // Quiet: the queue holds no more for us (another consumer took some meanwhile).
            Err(_) => break,
            // The reader ended under us (its channel or connection closed — a message whose
            // properties do not fit this connection's frame closes it): a short or empty page
            // would read as "no more dead letters", so it is an error.
            Ok(Some(Err(e))) => {
                failed = Some(session.explain(classify(&e, &pw)));
                break;
            }
            Ok(None) => {
                failed = Some(BrokerError::Other(format!(
                    "the reader of `{}` ended before the page was read ({})",
                    crate::text::sanitize(queue),
                    if session.is_connected() {
                        "the queue was deleted, or its channel closed"
                    } else {
                        "the connection to the broker was lost"
                    }
                )));
                break;
            }
        };
        last_tag = Some(d.delivery_tag);
        let id = identity_of(&d.properties, &d.data);
        let picked = pick(seen, &id);
        if picked != Pick::Pass {
            let body_len = d.data.len();
            // Copy the kept prefix so a cut 10 MB body does not keep its allocation alive.
            let body = d.data[..body_len.min(max_body_bytes)].to_vec();
            out.push(Browsed {
                position: seen,
                properties: d.properties,
                body,
                body_len,
                redelivered: d.redelivered,
                digest: id.digest,
                exchange: d.exchange.to_string(),
                routing_key: d.routing_key.to_string(),
            });
        }
        seen += 1;
        if picked == Pick::KeepAndStop {
            break;
        }
    }
    let _ = timed(
        "basic.cancel",
        CALL_TIMEOUT,
        &pw,
        ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await;
    if let Some(t) = last_tag {
        // Put everything back, in order. If this fails the channel close below requeues them too.
        let _ = timed(
            "basic.nack",
            CALL_TIMEOUT,
            &pw,
            ch.basic_nack(
                t,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            ),
        )
        .await;
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "browse done".into())).await;
    if let Some(e) = failed {
        return Err(e);
    }
    if last_tag.is_some() {
        wait_requeued(session, queue, depth).await;
    }
    Ok(out)
}

/// Longest wait, after a browse, for the queue's ready count to show the messages it put back.
const REQUEUE_SETTLE_MAX: Duration = Duration::from_millis(500);

/// Return only once the broker counts the browsed messages as ready again (or after
/// [`REQUEUE_SETTLE_MAX`], if someone else consumed meanwhile). The requeue (`basic.nack`) is
/// asynchronous, and the classic queue process (a gen_server2 with message priorities) may
/// answer a passive `queue.declare` before it has applied requeues still in its mailbox; without
/// this the next read right after a browse — the inspector loading message N, a replay's
/// preflight — could see the queue short by the messages just put back and show an empty page
/// or move nothing (seen once in CI: the inspector found no message at a position the page had
/// just listed).
async fn wait_requeued(session: &Session, queue: &str, depth: u64) {
    let deadline = tokio::time::Instant::now() + REQUEUE_SETTLE_MAX;
    loop {
        match session.passive_queue(queue).await {
            Ok(Some(c)) if u64::from(c.ready) >= depth => return,
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return,
        }
    }
}

/// Render an AMQP field value compactly (raw: callers sanitise before display).
pub fn render_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::DecimalValue(d) => format!("{}e-{}", d.value, d.scale),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::FieldArray(a) => format!(
            "[{}]",
            a.as_slice()
                .iter()
                .map(render_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::FieldTable(t) => format!(
            "{{{}}}",
            t.inner()
                .iter()
                .map(|(k, v)| format!("{}: {}", k.as_str(), render_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AMQPValue::ByteArray(b) => format!("<{} bytes>", b.len()),
        AMQPValue::Void => "void".into(),
    }
}

/// Flatten AMQP properties into `(name, raw value)` pairs, in AMQP order, headers excluded.
pub fn property_pairs(p: &BasicProperties) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut s = |k: &str, v: &Option<lapin::types::ShortString>| {
        if let Some(v) = v {
            out.push((k.to_string(), v.as_str().to_string()));
        }
    };
    s("content_type", p.content_type());
    s("content_encoding", p.content_encoding());
    s("correlation_id", p.correlation_id());
    s("reply_to", p.reply_to());
    s("expiration", p.expiration());
    s("message_id", p.message_id());
    s("type", p.kind());
    s("user_id", p.user_id());
    s("app_id", p.app_id());
    s("cluster_id", p.cluster_id());
    if let Some(m) = p.delivery_mode() {
        out.push((
            "delivery_mode".into(),
            match m {
                2 => "2 (persistent)".into(),
                1 => "1 (transient)".into(),
                n => n.to_string(),
            },
        ));
    }
    if let Some(n) = p.priority() {
        out.push(("priority".into(), n.to_string()));
    }
    if let Some(t) = p.timestamp() {
        let when = i64::try_from(*t)
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|d| d.format(" (%Y-%m-%d %H:%M:%S UTC)").to_string())
            .unwrap_or_default();
        out.push(("timestamp".into(), format!("{t}{when}")));
    }
    out
}

/// Turn a delivery's AMQP data into the pure [`MessageView`] the model and the UI work with.
pub fn message_view(
    position: u64,
    props: &BasicProperties,
    body: Vec<u8>,
    body_len: usize,
    redelivered: bool,
) -> MessageView {
    let headers = props.headers().as_ref();
    let header_pairs = headers
        .map(|h| {
            h.inner()
                .iter()
                // The x-death history is shown parsed; one that is not the broker's list (a
                // publisher wrote something else there) stays visible here, raw.
                .filter(|(k, v)| k.as_str() != "x-death" || !matches!(v, AMQPValue::FieldArray(_)))
                .map(|(k, v)| (k.as_str().to_string(), render_value(v)))
                .collect()
        })
        .unwrap_or_default();
    MessageView {
        position,
        properties: property_pairs(props),
        headers: header_pairs,
        attribution: attribute(headers),
        body,
        body_len,
        redelivered,
        message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
        content_type: props
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        timestamp: props.timestamp().and_then(|t| i64::try_from(t).ok()),
        digest: None,
        unreadable: crate::broker::headers::unreadable_reason(headers),
        lossless: None,
    }
}

impl Browsed {
    /// The pure view of this message (with its digest).
    pub fn view(&self) -> MessageView {
        MessageView {
            digest: Some(self.digest),
            ..message_view(
                self.position,
                &self.properties,
                self.body.clone(),
                self.body_len,
                self.redelivered,
            )
        }
    }
    /// The view with what a lossless export needs (the message loaded whole).
    pub fn view_lossless(&self) -> MessageView {
        let mut v = self.view();
        v.lossless = lossless(&self.properties, &self.exchange, &self.routing_key);
        v
    }
}

/// The properties and typed headers as received, for an export record (`None` only if lapin's
/// serde form of them cannot be built, which the export then says).
pub fn lossless(
    props: &BasicProperties,
    exchange: &str,
    routing_key: &str,
) -> Option<crate::model::deadletter::Lossless> {
    Some(crate::model::deadletter::Lossless {
        amqp_properties: serde_json::to_value(props).ok()?,
        exchange: exchange.to_string(),
        routing_key: routing_key.to_string(),
    })
}

/// One page of a queue (`page` is 0-based): prefetch = what the page needs, everything put back
/// with nack-requeue; bodies capped at [`BROWSE_BODY_BYTES`] so a page's memory is bounded.
pub async fn browse_page(
    session: &Session,
    queue: &str,
    page: u64,
    page_size: u64,
    is_quorum_with_limit: bool,
    force: bool,
) -> Result<Vec<MessageView>, BrokerError> {
    let opts = BrowseOptions {
        skip: page.saturating_mul(page_size),
        take: page_size,
        max_body_bytes: BROWSE_BODY_BYTES,
        force,
    };
    Ok(browse(session, queue, opts, is_quorum_with_limit)
        .await?
        .iter()
        .map(Browsed::view)
        .collect())
}
