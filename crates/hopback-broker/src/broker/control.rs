//! A control queue: how a second process reaches a long-running one through the broker (a
//! canary's pause, resume, promote and abort).
//!
//! The owner declares the queue exclusive, so it exists exactly as long as the owner's
//! connection: a request published to it with `mandatory` comes back when the owner is gone,
//! which is how a sender tells "not running" from "refused". Requests carry the sender's
//! AMQP `user_id` — the broker refuses a `user_id` that is not the publishing connection's user —
//! so the owner knows who asked without trusting the body; a request without one is unverified.
//! Answers go back over direct reply-to (`amq.rabbitmq.reply-to`), so the sender declares nothing.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::amqp::{BasicProperties, Confirm};
use super::session::{BrokerError, CALL_TIMEOUT, Session, classify, short, timed};

/// The pseudo-queue of direct reply-to.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A request as the owner received it.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    /// The body (the command, as the sender wrote it).
    pub body: Vec<u8>,
    /// The sender's broker user, verified by the broker (`None`: the sender set none).
    pub user_id: Option<String>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
}

/// The owner's end: an exclusive queue and a consumer on it.
pub struct ControlInbox {
    ch: lapin::Channel,
    consumer: lapin::Consumer,
    password: String,
    queue: String,
}

impl std::fmt::Debug for ControlInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlInbox")
            .field("queue", &self.queue)
            .finish()
    }
}

impl ControlInbox {
    /// Declare `queue` exclusive to `session`'s connection and consume it.
    pub async fn open(session: &Session, queue: &str) -> Result<ControlInbox, BrokerError> {
        let ch = session.channel().await?;
        timed(
            "declaring the control queue",
            CALL_TIMEOUT,
            session.password(),
            ch.queue_declare(
                short(queue)?,
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|e| session.explain(e))?;
        let consumer = timed(
            "consuming the control queue",
            CALL_TIMEOUT,
            session.password(),
            ch.basic_consume(
                short(queue)?,
                "hopback-control".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(ControlInbox {
            ch,
            consumer,
            password: session.password().to_string(),
            queue: queue.to_string(),
        })
    }

    /// The next request (`Err` when the consumer ended: the connection is gone). Cancel-safe.
    pub async fn next(&mut self) -> Result<ControlRequest, BrokerError> {
        match self.consumer.next().await {
            Some(Ok(d)) => {
                let p = &d.properties;
                Ok(ControlRequest {
                    body: d.data.clone(),
                    user_id: p.user_id().as_ref().map(|u| u.to_string()),
                    reply_to: p.reply_to().as_ref().map(|u| u.to_string()),
                    correlation_id: p.correlation_id().as_ref().map(|u| u.to_string()),
                })
            }
            Some(Err(e)) => Err(classify(&e, &self.password)),
            None => Err(BrokerError::Other(
                "the control queue's consumer ended".into(),
            )),
        }
    }

    /// Answer `req` (nothing when it asked for no answer). Best effort: a sender that gave up
    /// waiting is gone, and its request was handled anyway.
    pub async fn reply(&self, req: &ControlRequest, body: &[u8]) {
        let Some(to) = req.reply_to.as_deref() else {
            return;
        };
        let Ok(rk) = short(to) else { return };
        let mut props = BasicProperties::default();
        if let Some(c) = &req.correlation_id {
            props = props.with_correlation_id(c.as_str().into());
        }
        let _ = timed(
            "answering a control request",
            CALL_TIMEOUT,
            &self.password,
            self.ch
                .basic_publish("".into(), rk, BasicPublishOptions::default(), body, props),
        )
        .await;
    }

    /// Close the channel (the queue goes with the connection, or now: it is auto-delete).
    pub async fn close(self) {
        let _ = tokio::time::timeout(CALL_TIMEOUT, self.ch.close(200, "".into())).await;
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAnswer {
    /// The owner answered.
    Answered(Vec<u8>),
    /// The queue does not exist: no owner is running.
    NoOwner,
    /// Delivered, but no answer came within the wait.
    NoAnswer,
}

/// Send `body` to the control queue `queue` as `session`'s user and wait up to `wait` for the
/// owner's answer.
pub async fn request(
    session: &Session,
    queue: &str,
    body: &[u8],
    wait: Duration,
) -> Result<ControlAnswer, BrokerError> {
    // Direct reply-to: consume the pseudo-queue (no-ack) on the publishing channel first.
    let ch = session.confirm_channel().await?;
    let mut replies = timed(
        "consuming direct reply-to",
        CALL_TIMEOUT,
        session.password(),
        ch.basic_consume(
            REPLY_TO.into(),
            "hopback-control-reply".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    let correlation = uuid::Uuid::new_v4().simple().to_string();
    let props = BasicProperties::default()
        .with_user_id(session.profile().username.as_str().into())
        .with_reply_to(REPLY_TO.into())
        .with_correlation_id(correlation.as_str().into())
        .with_content_type("application/json".into());
    let pending = timed(
        "sending the control request",
        CALL_TIMEOUT,
        session.password(),
        ch.basic_publish(
            "".into(),
            short(queue)?,
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        ),
    )
    .await?;
    let confirm = Confirm::from(
        timed(
            "the control request's confirm",
            CALL_TIMEOUT,
            session.password(),
            pending,
        )
        .await?,
    );
    let answer = match confirm {
        Confirm::Returned => ControlAnswer::NoOwner,
        Confirm::Acked | Confirm::NotRequested => {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, replies.next()).await {
                    Err(_) => break ControlAnswer::NoAnswer,
                    Ok(None) => break ControlAnswer::NoAnswer,
                    Ok(Some(Err(e))) => return Err(classify(&e, session.password())),
                    Ok(Some(Ok(d))) => {
                        let mine = d
                            .properties
                            .correlation_id()
                            .as_ref()
                            .is_some_and(|c| c.as_str() == correlation);
                        if mine {
                            break ControlAnswer::Answered(d.data);
                        }
                    }
                }
            }
        }
        Confirm::Nacked => {
            return Err(BrokerError::Other(
                "the broker refused the control request (nack)".into(),
            ));
        }
    };
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "".into())).await;
    Ok(answer)
}
