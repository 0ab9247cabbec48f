//! RabbitMQ streams over AMQP 0.9.1 (the ledger's storage): declaring one (`x-queue-type=stream`,
//! an optional size limit) and reading it from an offset (`x-stream-offset`: `first`, `next`, a
//! timestamp or an absolute offset), with each delivery's offset read back from its headers.
//! Stream consumers need a prefetch and manual ack, which [`Consumer`] provides.

use lapin::options::QueueDeclareOptions;

use crate::broker::amqp::{
    AMQPValue, Consumer, Delivery, FieldTable, LongString, StepError, declare_queue,
    prefetch_channel,
};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, short, timed};

/// The consumer argument and message header carrying a stream offset.
pub const OFFSET_KEY: &str = "x-stream-offset";

/// Where a stream read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    /// The oldest message still retained.
    First,
    /// Only messages appended after the consumer starts.
    Next,
    /// Messages from this time on (unix seconds; the stream seeks by chunk, so somewhat older
    /// messages may come too).
    Timestamp(i64),
    /// From this absolute offset on.
    Absolute(u64),
}

impl StreamOffset {
    fn argument(self) -> AMQPValue {
        match self {
            StreamOffset::First => AMQPValue::LongString(LongString::from("first")),
            StreamOffset::Next => AMQPValue::LongString(LongString::from("next")),
            StreamOffset::Timestamp(secs) => AMQPValue::Timestamp(secs.max(0) as u64),
            StreamOffset::Absolute(o) => {
                AMQPValue::LongLongInt(i64::try_from(o).unwrap_or(i64::MAX))
            }
        }
    }
}

/// The queue arguments of a stream: `x-queue-type=stream`, and `x-max-length-bytes` when given.
pub fn stream_arguments(max_length_bytes: Option<u64>, replicas: Option<u8>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("stream")),
    );
    if let Some(max) = max_length_bytes {
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(max).unwrap_or(i64::MAX)),
        );
    }
    if let Some(n) = replicas {
        args.insert(
            "x-initial-cluster-size".into(),
            AMQPValue::LongInt(n.into()),
        );
    }
    args
}

/// Replicas of a stream hopback creates: without `x-initial-cluster-size` RabbitMQ was seen to
/// put the ledger on one node of a 3-node 4.0.5 cluster (all nodes up; quorum queues got three),
/// and losing that node stops the stream. On a single node the broker takes the one it has
/// (3.10.8 and 4.0.5 accept 3 there).
pub const STREAM_REPLICAS: u8 = 3;

/// Declare the durable stream `name` (see [`stream_arguments`]); `what` names the call in errors.
/// `replicas`: `x-initial-cluster-size` for a stream created now — an existing stream declared
/// without it refuses the argument (406), so a caller that may meet one declares again with
/// `None`.
pub async fn declare(
    session: &Session,
    what: &str,
    name: &str,
    max_length_bytes: Option<u64>,
    replicas: Option<u8>,
) -> Result<(), BrokerError> {
    declare_queue(
        session,
        what,
        name,
        true,
        stream_arguments(max_length_bytes, replicas),
    )
    .await
}

/// Give stream `name` an exchange of its own name (direct, durable, auto-delete) bound to it with routing key
/// `name`, so writers publish with WRITE on that one name instead of WRITE on the default
/// exchange — which would let them publish into every queue of the vhost. One regex,
/// `^hopback\.ledger$`, then covers every permission a ledger writer needs. `Ok(true)`: publish
/// to the exchange; `Ok(false)`: it is not there and this user may not make it (a ledger an
/// earlier hopback made): publish through the default exchange as before.
pub async fn ensure_own_exchange(session: &Session, name: &str) -> Result<bool, BrokerError> {
    let existed = session.exchange_exists(name).await?;
    if !existed {
        let ch = session.channel().await?;
        let declared = timed(
            "declaring the ledger exchange",
            CALL_TIMEOUT,
            session.password(),
            ch.exchange_declare(
                short(name)?,
                lapin::ExchangeKind::Direct,
                // Auto-delete: it goes with its stream (the binding's removal), so a deleted
                // ledger leaves nothing behind.
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        match declared {
            Ok(()) => {}
            Err(BrokerError::AccessRefused(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let ch = session.channel().await?;
    let bound = timed(
        "binding the ledger stream to its exchange",
        CALL_TIMEOUT,
        session.password(),
        ch.queue_bind(
            short(name)?,
            short(name)?,
            short(name)?,
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    match bound {
        Ok(()) => {
            let _ = ch.close(200, "ok".into()).await;
            Ok(true)
        }
        // A writer without the binding's permissions uses the binding whoever made the exchange
        // made (a missing one returns the event: the append fails, never silently).
        Err(BrokerError::AccessRefused(_)) => Ok(existed),
        Err(e) => Err(e),
    }
}

/// A consumer of a stream, and the stream's message count when it started.
#[derive(Debug)]
pub struct StreamConsumer {
    /// The consumer (manual ack; ack in batches with [`Consumer::ack_up_to`]).
    pub consumer: Consumer,
    /// The stream's message count (passive `queue.declare`) just before consuming.
    pub message_count: u64,
}

/// How long [`subscribe`] waits for the stream's replica on the connected node: a node that has
/// just come back (a cluster after a node loss) starts its replica a few seconds later, and until
/// then RabbitMQ refuses the subscription ("does not have a running replica on the local node").
const REPLICA_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Read stream `name` from `offset` as consumer `tag`, at most `prefetch` unacked. Waits up to
/// [`REPLICA_PATIENCE`] for the local replica of a node that is starting again.
pub async fn subscribe(
    session: &Session,
    name: &str,
    tag: &str,
    prefetch: u16,
    offset: StreamOffset,
) -> Result<StreamConsumer, StepError> {
    let deadline = std::time::Instant::now() + REPLICA_PATIENCE;
    loop {
        let ch = prefetch_channel(session, prefetch).await?;
        match subscribe_on(session, ch, name, tag, offset).await {
            Err(e)
                if e.source
                    .to_string()
                    .contains("does not have a running replica")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// One attempt of [`subscribe`], on channel `ch`.
async fn subscribe_on(
    session: &Session,
    ch: lapin::Channel,
    name: &str,
    tag: &str,
    offset: StreamOffset,
) -> Result<StreamConsumer, StepError> {
    let looking_up = |source| StepError {
        step: "looking up the stream",
        source,
    };
    // The stream's size right now: a catch-up read stops when it has seen this many.
    let declared = timed(
        "passive queue.declare",
        CALL_TIMEOUT,
        session.password(),
        ch.queue_declare(
            short(name).map_err(looking_up)?,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .map_err(looking_up)?;
    let mut args = FieldTable::default();
    args.insert(OFFSET_KEY.into(), offset.argument());
    let consumer = Consumer::start(session, ch, name, tag, args)
        .await
        .map_err(|e| StepError {
            step: "subscribing to the stream",
            source: e.source,
        })?;
    Ok(StreamConsumer {
        consumer,
        message_count: u64::from(declared.message_count()),
    })
}

/// The stream offset of a delivery (its `x-stream-offset` header), if it has one.
pub fn offset_of(d: &Delivery) -> Option<u64> {
    match d.headers()?.inner().get(OFFSET_KEY)? {
        AMQPValue::LongLongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongUInt(i) => Some(u64::from(*i)),
        AMQPValue::LongInt(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_arguments() {
        assert_eq!(
            StreamOffset::First.argument(),
            AMQPValue::LongString(LongString::from("first"))
        );
        assert_eq!(
            StreamOffset::Timestamp(-5).argument(),
            AMQPValue::Timestamp(0)
        );
        assert_eq!(
            StreamOffset::Absolute(u64::MAX).argument(),
            AMQPValue::LongLongInt(i64::MAX)
        );
        let a = stream_arguments(Some(1_000), Some(STREAM_REPLICAS));
        assert_eq!(
            a.inner().get("x-max-length-bytes"),
            Some(&AMQPValue::LongLongInt(1_000))
        );
        assert_eq!(
            a.inner().get("x-initial-cluster-size"),
            Some(&AMQPValue::LongInt(3))
        );
        assert_eq!(stream_arguments(None, None).inner().len(), 1);
    }
}
