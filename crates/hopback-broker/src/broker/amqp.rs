//! AMQP primitives for the rest of the crate, so that only `broker/` drives a lapin channel: a
//! [`Delivery`] whose ack / nack / reject say whether the frame went out, a [`Consumer`] with a
//! bounded prefetch, a [`Publisher`] whose publishes are confirmed one by one and classified
//! ([`Confirm`]), and queue declare / delete helpers.
//!
//! Every call is bounded by [`CALL_TIMEOUT`] (or the caller's limit) through
//! [`timed`], and errors are [`BrokerError`]s classified with the session's password scrubbed.
//! The header and property types are lapin's, re-exported here as plain data.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
pub use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
pub use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, PublisherConfirm};

use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, classify, short, timed};

/// A multi-call operation failed at `step` (e.g. `setting the reader's prefetch`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step}: {source}")]
pub struct StepError {
    /// What was being done, in words for a message (`subscribing to the stream`).
    pub step: &'static str,
    /// What the broker (or the timeout) said.
    #[source]
    pub source: BrokerError,
}

impl StepError {
    fn at(step: &'static str) -> impl FnOnce(BrokerError) -> StepError {
        move |source| StepError { step, source }
    }
}

/// A header table whose values are all strings (`LongString`s).
pub fn string_table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(*v)),
        );
    }
    t
}

/// A message delivered to a [`Consumer`]; settle it with [`Delivery::ack`], [`Delivery::nack`] or
/// [`Delivery::reject`] (once: a second settle does not go out).
pub struct Delivery {
    inner: lapin::message::Delivery,
    password: Arc<str>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery_tag", &self.inner.delivery_tag)
            .field("exchange", &self.inner.exchange.as_str())
            .field("routing_key", &self.inner.routing_key.as_str())
            .field("body_len", &self.inner.data.len())
            .finish()
    }
}

impl Delivery {
    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }
    /// The body, taken (the delivery can no longer be settled: ack first, or ack by tag through
    /// [`Consumer::ack_up_to`]).
    pub fn into_body(self) -> Vec<u8> {
        self.inner.data
    }
    /// The message properties (headers, message id, content type, …).
    pub fn properties(&self) -> &BasicProperties {
        &self.inner.properties
    }
    /// The headers table, if the message has one.
    pub fn headers(&self) -> Option<&FieldTable> {
        self.inner.properties.headers().as_ref()
    }
    /// The `message_id` property.
    pub fn message_id(&self) -> Option<&str> {
        self.inner
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
    }
    /// The channel's delivery tag (for [`Consumer::ack_up_to`]).
    pub fn delivery_tag(&self) -> u64 {
        self.inner.delivery_tag
    }
    /// Was it delivered before (to this or another consumer)?
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }
    /// The exchange it was published to (`""` for the default exchange).
    pub fn exchange(&self) -> &str {
        self.inner.exchange.as_str()
    }
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.inner.routing_key.as_str()
    }
    /// Acknowledge it. `Ok(true)`: the ack went out. `Ok(false)`: it did not (already settled, or
    /// the channel closed) and the broker will redeliver it — count a possible duplicate, never a
    /// loss. An error (or a timeout) means the same.
    pub async fn ack(&self) -> Result<bool, BrokerError> {
        timed(
            "basic.ack",
            CALL_TIMEOUT,
            &self.password,
            self.inner.acker.ack(BasicAckOptions::default()),
        )
        .await
    }
    /// Negatively acknowledge it: `requeue` puts it back in its queue, otherwise the queue
    /// dead-letters (or drops) it. The result means what [`Delivery::ack`]'s does.
    pub async fn nack(&self, requeue: bool) -> Result<bool, BrokerError> {
        timed(
            "basic.nack",
            CALL_TIMEOUT,
            &self.password,
            self.inner.acker.nack(BasicNackOptions {
                multiple: false,
                requeue,
            }),
        )
        .await
    }
    /// Reject it (like [`Delivery::nack`] of one message).
    pub async fn reject(&self, requeue: bool) -> Result<bool, BrokerError> {
        timed(
            "basic.reject",
            CALL_TIMEOUT,
            &self.password,
            self.inner.acker.reject(BasicRejectOptions { requeue }),
        )
        .await
    }
}

/// What [`Consumer::recv`] got.
// Returned once per delivery and matched at once: boxing would cost an allocation per message
// for nothing (lapin's own stream yields the delivery unboxed).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Received {
    /// A message.
    Delivery(Delivery),
    /// Nothing within the time limit.
    Idle,
    /// The consumer ended (cancelled, or its channel or connection closed).
    Ended,
}

/// A consumer on its own channel, manual ack, with a bounded prefetch.
pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    tag: String,
    password: Arc<str>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("tag", &self.tag).finish()
    }
}

/// Open a channel on `session` and set its prefetch (`basic.qos`).
pub(crate) async fn prefetch_channel(
    session: &Session,
    prefetch: u16,
) -> Result<Channel, StepError> {
    let ch = session
        .channel()
        .await
        .map_err(StepError::at("opening the reader channel"))?;
    timed(
        "basic.qos",
        CALL_TIMEOUT,
        session.password(),
        ch.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await
    .map_err(StepError::at("setting the reader's prefetch"))?;
    Ok(ch)
}

/// `basic.qos` (when `prefetch` is given; 0 = unlimited) and `basic.consume` of `queue` as `tag`
/// on a channel the caller owns, each with the call timeout: the raw consumer of the readers that
/// take lapin deliveries themselves (the mover's epoch, the browser, export-and-hold, the tap).
pub(crate) async fn consume_on(
    session: &Session,
    channel: &Channel,
    queue: &str,
    tag: &str,
    prefetch: Option<u16>,
    no_ack: bool,
) -> Result<lapin::Consumer, BrokerError> {
    if let Some(prefetch) = prefetch {
        timed(
            "basic.qos",
            CALL_TIMEOUT,
            session.password(),
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
    }
    timed(
        "basic.consume",
        CALL_TIMEOUT,
        session.password(),
        channel.basic_consume(
            short(queue)?,
            short(tag)?,
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

impl Consumer {
    /// Consume `queue` as `tag` (manual ack, at most `prefetch` unacked deliveries) on a new
    /// channel, with consumer arguments `args`.
    pub async fn open(
        session: &Session,
        queue: &str,
        tag: &str,
        prefetch: u16,
        args: FieldTable,
    ) -> Result<Consumer, StepError> {
        let ch = prefetch_channel(session, prefetch).await?;
        Self::start(session, ch, queue, tag, args).await
    }

    /// `basic.consume` on a channel prepared by the caller (see [`prefetch_channel`]).
    pub(crate) async fn start(
        session: &Session,
        channel: Channel,
        queue: &str,
        tag: &str,
        args: FieldTable,
    ) -> Result<Consumer, StepError> {
        let step = "subscribing to the queue";
        let inner = timed(
            "basic.consume",
            CALL_TIMEOUT,
            session.password(),
            channel.basic_consume(
                short(queue).map_err(StepError::at(step))?,
                short(tag).map_err(StepError::at(step))?,
                BasicConsumeOptions::default(),
                args,
            ),
        )
        .await
        .map_err(StepError::at(step))?;
        Ok(Consumer {
            channel,
            inner,
            tag: tag.to_string(),
            password: Arc::from(session.password()),
        })
    }

    /// The next delivery, waiting at most `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<Received, BrokerError> {
        match tokio::time::timeout(limit, self.inner.next()).await {
            Err(_) => Ok(Received::Idle),
            Ok(None) => Ok(Received::Ended),
            Ok(Some(Err(e))) => Err(classify(&e, &self.password)),
            Ok(Some(Ok(d))) => Ok(Received::Delivery(Delivery {
                inner: d,
                password: self.password.clone(),
            })),
        }
    }

    /// Is the consumer's channel still open?
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Acknowledge every delivery up to and including `delivery_tag` (`multiple`).
    pub async fn ack_up_to(&self, delivery_tag: u64) -> Result<(), BrokerError> {
        timed(
            "basic.ack",
            CALL_TIMEOUT,
            &self.password,
            self.channel
                .basic_ack(delivery_tag, BasicAckOptions { multiple: true }),
        )
        .await
    }

    /// Cancel the consumer and close its channel (best effort, each call bounded); unacked
    /// deliveries go back to the queue.
    pub async fn close(self) {
        if let Ok(tag) = short(&self.tag) {
            let _ = timed(
                "basic.cancel",
                CALL_TIMEOUT,
                &self.password,
                self.channel
                    .basic_cancel(tag, BasicCancelOptions::default()),
            )
            .await;
        }
        let _ = tokio::time::timeout(CALL_TIMEOUT, self.channel.close(200, "done".into())).await;
    }
}

/// How the broker answered a confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Taken: the broker acked it and did not return it.
    Acked,
    /// Acked **but returned** (a `mandatory` publish nothing could route): not delivered.
    Returned,
    /// Refused (`basic.nack`): not taken.
    Nacked,
    /// The channel is not in confirm mode, so nothing is known.
    NotRequested,
}

impl From<Confirmation> for Confirm {
    fn from(c: Confirmation) -> Self {
        match c {
            Confirmation::Ack(None) => Confirm::Acked,
            Confirmation::Ack(Some(_)) => Confirm::Returned,
            Confirmation::Nack(_) => Confirm::Nacked,
            Confirmation::NotRequested => Confirm::NotRequested,
        }
    }
}

/// A publish the broker has not confirmed yet.
pub struct PendingConfirm {
    inner: PublisherConfirm,
    password: Arc<str>,
    what: &'static str,
}

impl std::fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConfirm")
            .field("what", &self.what)
            .finish()
    }
}

impl PendingConfirm {
    /// Wait at most `limit` for the broker's confirm.
    pub async fn wait(self, limit: Duration) -> Result<Confirm, BrokerError> {
        timed(self.what, limit, &self.password, self.inner)
            .await
            .map(Confirm::from)
    }
}

/// A channel in publisher-confirm mode. Cheap to clone (clones share the channel).
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    password: Arc<str>,
    publish_what: &'static str,
    confirm_what: &'static str,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("open", &self.is_open())
            .finish()
    }
}

impl Publisher {
    /// Open a new channel in confirm mode on `session`.
    pub async fn open(session: &Session) -> Result<Publisher, BrokerError> {
        Ok(Publisher {
            channel: session.confirm_channel().await?,
            password: Arc::from(session.password()),
            publish_what: "basic.publish",
            confirm_what: "publisher confirm",
        })
    }

    /// Name the calls in errors and timeouts (`ledger publish`, `ledger publisher confirm`)
    /// instead of `basic.publish` / `publisher confirm`.
    pub fn labelled(mut self, publish: &'static str, confirm: &'static str) -> Self {
        self.publish_what = publish;
        self.confirm_what = confirm;
        self
    }

    /// Does this user have WRITE on `exchange`? Publishes an empty message with a routing key no
    /// queue or binding has (`hopback.write-probe.<uuid>`), so nothing is delivered anywhere, and
    /// waits for the confirm: a refusal closes the channel with ACCESS_REFUSED before it.
    pub async fn probe_write(session: &Session, exchange: &str) -> Result<(), BrokerError> {
        let p = Publisher::open(session).await?.labelled(
            "basic.publish (probing the write permission)",
            "publisher confirm (probing the write permission)",
        );
        let key = format!("hopback.write-probe.{}", uuid::Uuid::new_v4().simple());
        let pending = p
            .publish(exchange, &key, false, b"", BasicProperties::default())
            .await?;
        let r = pending.wait(CALL_TIMEOUT).await;
        // Bounded: a connection the broker blocks (a resource alarm) may never answer the close.
        if p.is_open() {
            let _ = tokio::time::timeout(CALL_TIMEOUT, p.channel.close(200, "ok".into())).await;
        }
        r.map(|_| ())
    }

    /// Is the channel still open?
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publish `body` to `exchange` with `routing_key`; the confirm is awaited separately. With
    /// `mandatory`, a message nothing routes comes back as [`Confirm::Returned`].
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, BrokerError> {
        let inner = timed(
            self.publish_what,
            CALL_TIMEOUT,
            &self.password,
            self.channel.basic_publish(
                short(exchange)?,
                short(routing_key)?,
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                properties,
            ),
        )
        .await?;
        Ok(PendingConfirm {
            inner,
            password: self.password.clone(),
            what: self.confirm_what,
        })
    }
}

/// Declare queue `name` (`durable` or not, with `args`) on a channel of its own, which is closed
/// after a successful declare (a refused one is closed by the broker). `what` names the call in
/// errors (`declaring the ledger stream`).
pub async fn declare_queue(
    session: &Session,
    what: &str,
    name: &str,
    durable: bool,
    args: FieldTable,
) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let opts = QueueDeclareOptions {
        durable,
        ..Default::default()
    };
    timed(
        what,
        CALL_TIMEOUT,
        session.password(),
        ch.queue_declare(short(name)?, opts, args),
    )
    .await?;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    Ok(())
}

/// Delete queue `name` (whatever it holds) on a channel of its own.
pub async fn delete_queue(session: &Session, name: &str) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    timed(
        "queue.delete",
        CALL_TIMEOUT,
        session.password(),
        ch.queue_delete(short(name)?, Default::default()),
    )
    .await?;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_classified() {
        assert_eq!(Confirm::from(Confirmation::Ack(None)), Confirm::Acked);
        assert_eq!(Confirm::from(Confirmation::Nack(None)), Confirm::Nacked);
        assert_eq!(
            Confirm::from(Confirmation::NotRequested),
            Confirm::NotRequested
        );
    }

    #[test]
    fn string_tables_hold_long_strings() {
        let t = string_table(&[("a", "1"), ("b", "two")]);
        assert_eq!(
            t.inner().get("b"),
            Some(&AMQPValue::LongString(LongString::from("two")))
        );
        assert_eq!(t.inner().len(), 2);
    }
}
