//! The live dead-letter tap: one exclusive, auto-delete, server-named queue bound to every
//! namespace's dead-letter exchange (`NS.dlx`, a fanout — so the DLQ still gets every message; the
//! tap only sees a copy). Each copy is attributed (namespace from the exchange it came through,
//! origin version and reason from `x-death`), counted, turned into a safe one-line preview, and
//! dropped. Acks go out in batches (`multiple`), and counts reach the console in batches at most
//! [`FLUSH_INTERVAL`] apart, so a dead letter is on screen well under 250 ms after the nack while a
//! storm of thousands per second costs one message to the UI per flush.
//!
//! The tap owns its connection (`hopback console tap (operator)`), reconnects with backoff, and
//! re-binds when the set of namespaces changes (the refresh task publishes it on a watch channel).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::{mpsc, watch};

use crate::broker::amqp::consume_on;
use crate::broker::headers::attribute;
use crate::broker::session::{
    BrokerError, CALL_TIMEOUT, Session, backoff_delay, connect, short, timed,
};
use crate::config::Profile;
use crate::model::xdeath::version_of_queue;

/// Longest time counted dead letters wait before they are sent to the console.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Prefetch of the tap consumer (also the largest ack batch).
pub const TAP_PREFETCH: u16 = 1000;
/// At most this many samples (for the "last dead letters" list) per batch.
pub const MAX_SAMPLES_PER_BATCH: usize = 20;
/// Bytes of a body read for the preview.
pub const PREVIEW_BYTES: usize = 512;
/// Characters of the preview.
pub const PREVIEW_CHARS: usize = 120;

/// A namespace the tap listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapTarget {
    /// Namespace.
    pub ns: String,
    /// Its dead-letter exchange.
    pub dlx: String,
    /// Version queue → version, to attribute origins.
    pub queues: BTreeMap<String, String>,
}

/// The tap targets of a snapshot's namespaces (names from the one resolver).
pub fn tap_targets(
    cfg: &crate::config::Config,
    snap: &crate::model::snapshot::FleetSnapshot,
) -> Vec<TapTarget> {
    snap.namespaces
        .iter()
        .map(|ns| TapTarget {
            ns: ns.name.clone(),
            dlx: crate::topology::Namespace::resolve(cfg, &ns.name).dlx,
            queues: ns
                .versions
                .iter()
                .map(|v| (v.queue.clone(), v.version.clone()))
                .collect(),
        })
        .collect()
}

/// One dead letter as the tap saw it (all text already terminal-safe).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterSeen {
    /// Namespace.
    pub ns: String,
    /// Origin version, when the origin queue is a known version queue.
    pub version: Option<String>,
    /// Origin queue (sanitised), when known.
    pub origin_queue: Option<String>,
    /// `rejected`, `expired`, `maxlen`, `delivery_limit`, …
    pub reason: String,
    /// When the tap received it (unix ms).
    pub at_ms: i64,
    /// `message_id` (sanitised).
    pub message_id: Option<String>,
    /// One-line body preview via [`crate::text::preview`].
    pub preview: String,
}

/// Counts since the previous batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapBatch {
    /// When the batch was sent (unix ms).
    pub at_ms: i64,
    /// (namespace, origin version or `None`) → dead letters.
    pub by_version: BTreeMap<(String, Option<String>), u64>,
    /// (namespace, reason) → dead letters.
    pub by_reason: BTreeMap<(String, String), u64>,
    /// The most recent dead letters of the batch (at most [`MAX_SAMPLES_PER_BATCH`]).
    pub samples: Vec<DeadLetterSeen>,
}

impl TapBatch {
    /// Total dead letters in the batch.
    pub fn total(&self) -> u64 {
        self.by_version.values().sum()
    }
}

/// What the tap tells the console.
#[derive(Debug, Clone, PartialEq)]
pub enum TapEvent {
    /// Listening to these namespaces since this time (unix ms).
    Bound {
        /// Namespaces whose DLX is bound.
        namespaces: BTreeSet<String>,
        /// Since when the tap has been consuming (rates are computed over at most this span).
        since_ms: i64,
    },
    /// Dead letters counted since the last batch.
    Batch(TapBatch),
    /// The tap lost its connection (retrying).
    Down {
        /// Why (sanitised, credential-free).
        error: String,
        /// Reconnect attempt.
        attempt: u32,
    },
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Attribute one delivery.
pub fn see(
    targets_by_dlx: &BTreeMap<String, TapTarget>,
    exchange: &str,
    headers: Option<&FieldTable>,
    message_id: Option<&str>,
    body: &[u8],
    at_ms: i64,
) -> DeadLetterSeen {
    let a = attribute(headers);
    let target = targets_by_dlx.get(exchange);
    let ns = target.map(|t| t.ns.clone()).unwrap_or_else(|| {
        exchange
            .strip_suffix(".dlx")
            .unwrap_or(exchange)
            .to_string()
    });
    let version = a.origin_queue.as_ref().and_then(|q| {
        target
            .and_then(|t| t.queues.get(q).cloned())
            .or_else(|| version_of_queue(&ns, q))
    });
    DeadLetterSeen {
        version,
        origin_queue: a
            .origin_queue
            .as_deref()
            .map(|q| crate::text::sanitize(q).into_owned()),
        reason: crate::text::sanitize(a.reason.as_str()).into_owned(),
        at_ms,
        message_id: message_id.map(|m| crate::text::sanitize(m).into_owned()),
        preview: crate::text::preview(body, PREVIEW_BYTES, PREVIEW_CHARS),
        ns,
    }
}

impl TapBatch {
    /// Count one dead letter.
    pub fn add(&mut self, d: DeadLetterSeen) {
        *self
            .by_version
            .entry((d.ns.clone(), d.version.clone()))
            .or_default() += 1;
        *self
            .by_reason
            .entry((d.ns.clone(), d.reason.clone()))
            .or_default() += 1;
        if self.samples.len() >= MAX_SAMPLES_PER_BATCH {
            self.samples.remove(0);
        }
        self.samples.push(d);
    }
}

/// Run the tap until the event receiver is dropped: connect, bind, count, reconnect on failure.
pub async fn run(
    profile: Profile,
    operator: String,
    mut targets: watch::Receiver<Vec<TapTarget>>,
    events: mpsc::Sender<TapEvent>,
) {
    let mut attempt = 0u32;
    loop {
        match run_once(&profile, &operator, &mut targets, &events, &mut attempt).await {
            Ok(()) => return,
            Err(e) => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "dead-letter tap failed; reconnecting");
                if events
                    .send(TapEvent::Down {
                        error: e.to_string(),
                        attempt,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(backoff_delay(attempt.saturating_sub(1))).await;
            }
        }
    }
}

async fn bind_all(
    session: &Session,
    queue: &str,
    wanted: &[TapTarget],
    bound: &mut BTreeSet<String>,
) -> Result<(), BrokerError> {
    let wanted_dlx: BTreeSet<&str> = wanted.iter().map(|t| t.dlx.as_str()).collect();
    let pw = session.password().to_string();
    let mut ch: Option<lapin::Channel> = None;
    let missing: Vec<&str> = wanted_dlx
        .iter()
        .copied()
        .filter(|d| !bound.contains(*d))
        .collect();
    for dlx in missing {
        let c = open_channel(session, &mut ch).await?;
        match timed(
            "binding the dead-letter tap",
            CALL_TIMEOUT,
            &pw,
            c.queue_bind(
                short(queue)?,
                short(dlx)?,
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        {
            Ok(()) => {
                bound.insert(dlx.to_string());
            }
            // The DLX is gone (namespace deleted between refreshes): skip it, the channel is closed.
            Err(BrokerError::NotFound(_)) => ch = None,
            Err(e) => return Err(e),
        }
    }
    let stale: Vec<String> = bound
        .iter()
        .filter(|d| !wanted_dlx.contains(d.as_str()))
        .cloned()
        .collect();
    for dlx in stale {
        bound.remove(&dlx);
        let c = open_channel(session, &mut ch).await?;
        if timed(
            "unbinding the dead-letter tap",
            CALL_TIMEOUT,
            &pw,
            c.queue_unbind(
                short(queue)?,
                short(&dlx)?,
                "".into(),
                FieldTable::default(),
            ),
        )
        .await
        .is_err()
        {
            ch = None;
        }
    }
    if let Some(c) = ch {
        let _ = tokio::time::timeout(Duration::from_secs(1), c.close(200, "ok".into())).await;
    }
    Ok(())
}

/// The channel in `ch` while it is open, else a new one (kept in `ch` for the next call): a
/// failed bind closes its channel, the next bind gets a fresh one.
async fn open_channel(
    session: &Session,
    ch: &mut Option<lapin::Channel>,
) -> Result<lapin::Channel, BrokerError> {
    match ch {
        Some(c) if c.status().connected() => Ok(c.clone()),
        _ => {
            let c = session.channel().await?;
            *ch = Some(c.clone());
            Ok(c)
        }
    }
}

fn bound_namespaces(
    bound: &BTreeSet<String>,
    by_dlx: &BTreeMap<String, TapTarget>,
) -> BTreeSet<String> {
    bound
        .iter()
        .filter_map(|d| by_dlx.get(d).map(|t| t.ns.clone()))
        .collect()
}

/// Declare the tap's exclusive, auto-delete, server-named queue on `ch` and consume it (manual
/// ack with [`TAP_PREFETCH`], or `no_ack`). Shared by the console's tap and [`count_window`].
async fn tap_queue(
    session: &Session,
    ch: &lapin::Channel,
    no_ack: bool,
    tag: &str,
) -> Result<(String, lapin::Consumer), BrokerError> {
    let pw = session.password().to_string();
    let q = timed(
        "declaring the dead-letter tap queue",
        CALL_TIMEOUT,
        &pw,
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    let qname = q.name().as_str().to_string();
    let prefetch = (!no_ack).then_some(TAP_PREFETCH);
    let consumer = consume_on(session, ch, &qname, tag, prefetch, no_ack).await?;
    Ok((qname, consumer))
}

/// Count, for `window`, the dead letters passing through `target`'s dead-letter exchange whose
/// *latest* death was in the queue of `version` (the rollback's verify step: is the version we
/// rolled back to rejecting work now?). The same tap queue as the console's, bound to one DLX
/// for a bounded time, on the caller's session.
pub async fn count_window(
    session: &Session,
    target: &TapTarget,
    version: &str,
    window: Duration,
) -> Result<u64, BrokerError> {
    Ok(count_window_by_version(session, target, window)
        .await?
        .get(version)
        .copied()
        .unwrap_or(0))
}

/// Count, for `window`, the dead letters passing through `target`'s dead-letter exchange, per
/// version whose queue was their *latest* death (`status`'s short-window error rate; the
/// rollback's verify step).
pub async fn count_window_by_version(
    session: &Session,
    target: &TapTarget,
    window: Duration,
) -> Result<BTreeMap<String, u64>, BrokerError> {
    let ch = session.channel().await?;
    let (qname, mut consumer) = tap_queue(session, &ch, true, "hopback-verify-tap").await?;
    let mut bound = BTreeSet::new();
    bind_all(session, &qname, std::slice::from_ref(target), &mut bound).await?;
    let deadline = tokio::time::Instant::now() + window;
    let mut dead: BTreeMap<String, u64> = BTreeMap::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await {
        let a = attribute(d.properties.headers().as_ref());
        // The most recent death says who rejected it now.
        let latest = a.deaths.first().map(|x| x.queue.clone()).or(a.origin_queue);
        if let Some(v) = latest.and_then(|q| target.queues.get(&q).cloned()) {
            *dead.entry(v).or_default() += 1;
        }
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "tap done".into())).await;
    Ok(dead)
}

async fn run_once(
    profile: &Profile,
    operator: &str,
    targets: &mut watch::Receiver<Vec<TapTarget>>,
    events: &mpsc::Sender<TapEvent>,
    attempt: &mut u32,
) -> Result<(), BrokerError> {
    let session = connect(profile, "console tap", operator).await?;
    let pw = session.password().to_string();
    let ch = session.channel().await?;
    let (qname, mut consumer) = tap_queue(&session, &ch, false, "hopback-tap").await?;
    let mut bound: BTreeSet<String> = BTreeSet::new();
    let wanted = targets.borrow_and_update().clone();
    let mut by_dlx: BTreeMap<String, TapTarget> =
        wanted.iter().map(|t| (t.dlx.clone(), t.clone())).collect();
    bind_all(&session, &qname, &wanted, &mut bound).await?;
    let consuming_since = now_ms();
    let _ = events
        .send(TapEvent::Bound {
            namespaces: bound_namespaces(&bound, &by_dlx),
            since_ms: consuming_since,
        })
        .await;
    *attempt = 0;
    let mut batch = TapBatch::default();
    let mut last_tag: Option<u64> = None;
    let mut flush_at: Option<tokio::time::Instant> = None;
    let mut health = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            d = consumer.next() => {
                let Some(d) = d else {
                    return Err(BrokerError::Other("the dead-letter tap consumer was cancelled".into()));
                };
                let d = d.map_err(|e| crate::broker::session::classify(&e, &pw))?;
                let seen = see(
                    &by_dlx,
                    d.exchange.as_str(),
                    d.properties.headers().as_ref(),
                    d.properties.message_id().as_ref().map(|m| m.as_str()),
                    &d.data,
                    now_ms(),
                );
                batch.add(seen);
                last_tag = Some(d.delivery_tag);
                if flush_at.is_none() {
                    flush_at = Some(tokio::time::Instant::now() + FLUSH_INTERVAL);
                }
                if batch.total() >= u64::from(TAP_PREFETCH / 2) {
                    flush_at = Some(tokio::time::Instant::now());
                }
            }
            _ = async {
                match flush_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                flush_at = None;
                if let Some(tag) = last_tag.take() {
                    timed(
                        "acking the dead-letter tap",
                        CALL_TIMEOUT,
                        &pw,
                        ch.basic_ack(tag, BasicAckOptions { multiple: true }),
                    )
                    .await?;
                }
                let mut out = std::mem::take(&mut batch);
                out.at_ms = now_ms();
                if events.send(TapEvent::Batch(out)).await.is_err() {
                    session.close().await;
                    return Ok(());
                }
            }
            changed = targets.changed() => {
                if changed.is_err() {
                    session.close().await;
                    return Ok(());
                }
                let wanted = targets.borrow_and_update().clone();
                for t in &wanted {
                    by_dlx.insert(t.dlx.clone(), t.clone());
                }
                let before = bound.clone();
                bind_all(&session, &qname, &wanted, &mut bound).await?;
                if before != bound {
                    let _ = events
                        .send(TapEvent::Bound {
                            namespaces: bound_namespaces(&bound, &by_dlx),
                            since_ms: consuming_since,
                        })
                        .await;
                }
            }
            _ = health.tick() => {
                if !session.is_connected() || !ch.status().connected() {
                    return Err(BrokerError::Other("the dead-letter tap lost its connection".into()));
                }
                if events.is_closed() {
                    session.close().await;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldArray, LongString};

    #[test]
    fn attributes_and_sanitises() {
        let mut death = FieldTable::default();
        death.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from("email.v2")),
        );
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("rejected")),
        );
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        let targets: BTreeMap<String, TapTarget> = [(
            "email.dlx".to_string(),
            TapTarget {
                ns: "email".into(),
                dlx: "email.dlx".into(),
                queues: [("email.v2".to_string(), "v2".to_string())].into(),
            },
        )]
        .into();
        let s = see(
            &targets,
            "email.dlx",
            Some(&h),
            Some("id\u{1b}[2J"),
            b"\x1b]52;c;aGk=\x07 body",
            5,
        );
        assert_eq!(s.ns, "email");
        assert_eq!(s.version.as_deref(), Some("v2"));
        assert_eq!(s.reason, "rejected");
        assert!(crate::text::is_terminal_safe(&s.preview));
        assert!(crate::text::is_terminal_safe(
            s.message_id.as_deref().unwrap_or("")
        ));
        let mut b = TapBatch::default();
        b.add(s);
        assert_eq!(b.total(), 1);
    }
}
