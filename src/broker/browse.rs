//! Non-destructive reading of a queue (the DLQ browser's primitive): consume with manual ack and
//! prefetch = the number wanted, then `nack(multiple, requeue)` everything. A classic queue puts
//! the messages back in place, in order; if the console dies mid-browse, the broker requeues the
//! unacked messages itself, so nothing is lost either way.
//!
//! Quorum queues count each such delivery against `x-delivery-limit`: browsing one with a limit
//! can dead-letter or drop messages, so [`browse`] refuses unless `force` is set.

use std::time::Duration;

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;

use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, short, timed};

/// Longest wait for the next message once the broker has stopped pushing.
const NEXT_MESSAGE_TIMEOUT: Duration = Duration::from_millis(1500);

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
        "refusing to browse quorum queue `{}`: every browse counts as a delivery against its delivery limit and can dead-letter or drop messages (use --force to browse anyway)",
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
    let depth = match session.passive_queue(queue).await? {
        Some(c) => u64::from(c.ready),
        None => {
            return Err(BrokerError::NotFound(format!(
                "queue `{}` does not exist",
                crate::text::sanitize(queue)
            )));
        }
    };
    let want = depth.min(opts.skip.saturating_add(opts.take));
    if want == 0 || opts.skip >= depth {
        return Ok(Vec::new());
    }
    let pw = session.password().to_string();
    let ch = session.channel().await?;
    // Prefetch is a u16; pages past 65,535 messages in need a wider window than one browse gives.
    let prefetch = u16::try_from(want).unwrap_or(u16::MAX);
    timed(
        "basic.qos",
        CALL_TIMEOUT,
        &pw,
        ch.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await?;
    let tag = format!("hopback-browse-{}", uuid::Uuid::new_v4());
    let mut consumer = timed(
        "basic.consume",
        CALL_TIMEOUT,
        &pw,
        ch.basic_consume(
            short(queue)?,
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut out = Vec::new();
    let mut last_tag = None;
    let mut seen = 0u64;
    while seen < u64::from(prefetch) {
        let next = tokio::time::timeout(NEXT_MESSAGE_TIMEOUT, consumer.next()).await;
        let Ok(Some(Ok(d))) = next else { break };
        last_tag = Some(d.delivery_tag);
        if seen >= opts.skip {
            let body_len = d.data.len();
            let mut body = d.data;
            body.truncate(opts.max_body_bytes);
            out.push(Browsed {
                position: seen,
                properties: d.properties,
                body,
                body_len,
                redelivered: d.redelivered,
            });
        }
        seen += 1;
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
    Ok(out)
}
