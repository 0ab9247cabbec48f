//! Republish hygiene (docs/architecture.md, "Republish hygiene"): the one place that decides what
//! a message hopback publishes again keeps, for every engine.
//!
//! Two of a message's own fields act on every publish, not only the producer's:
//! - `CC` and `BCC` headers are sender-selected routing: each publish routes the message again to
//!   every queue they name, through whatever exchange it is published to. A dead letter is data
//!   anyone who can publish to the namespace's dead-letter exchange can write, so republishing it
//!   as it is would copy it out of the namespace (or into the ledger stream).
//! - `user_id` must equal the publishing connection's user, or the broker closes the channel
//!   (PRECONDITION_FAILED): one dead letter from another (validated) user would block a drain.
//!
//! The client side ([`client_properties`]: the mover's replays, moves and drains, and the
//! re-import of an export) moves `CC`/`BCC` to [`ORIGINAL_CC_HEADER`]/[`ORIGINAL_BCC_HEADER`] and
//! a foreign `user_id` to [`ORIGINAL_USER_ID_HEADER`], so nothing is lost and nothing routes.
//! The broker side cannot rewrite a header: a shovel to a queue publishes only through the move's
//! own fanout exchange bound to that queue alone ([`declare_move_exchange`]), where the extra
//! routing keys find no binding, and to an exchange only where its type ignores them
//! ([`exchange_ignores_sender_routing`]). The shovel itself publishes with the broker's internal
//! user, which the `user_id` check does not apply to, so a foreign `user_id` travels on unchanged
//! there — into the namespace's own queues only.

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::broker::headers::REPLAYS_HEADER;
use crate::broker::mgmt::Mgmt;
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, timed};

/// Where a republished message keeps the `CC` header it arrived with.
pub const ORIGINAL_CC_HEADER: &str = "x-hopback-original-cc";
/// Where a republished message keeps the `BCC` header it arrived with (the broker strips `BCC`
/// on delivery, so only an edited export file can carry one).
pub const ORIGINAL_BCC_HEADER: &str = "x-hopback-original-bcc";
/// Where a republished message keeps a `user_id` that was not the publishing connection's user.
pub const ORIGINAL_USER_ID_HEADER: &str = "x-hopback-original-user-id";

/// The headers RabbitMQ routes by on every publish, and where a republish keeps each.
const SENDER_ROUTING: [(&str, &str); 2] =
    [("CC", ORIGINAL_CC_HEADER), ("BCC", ORIGINAL_BCC_HEADER)];

/// What the client engine adds to a message it republishes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp<'a> {
    /// Set `x-hopback-replays` to this (a replay counts its hop).
    pub replays: Option<u64>,
    /// Mark the message with this run (`broker::mover::RUN_HEADER`), so the run knows it when
    /// it comes back.
    pub run: Option<(&'a str, &'a str)>,
}

/// The properties a client-side republish sends: the message's own, with `CC`/`BCC` moved aside
/// (they never route again), a `user_id` other than `connection_user` moved aside (it would
/// close the channel), and `stamp` applied. Everything else is kept as it was.
pub fn client_properties(
    props: BasicProperties,
    connection_user: &str,
    stamp: Stamp<'_>,
) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = props
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    let had_headers = props.headers().is_some();
    for (routing, kept) in SENDER_ROUTING {
        if let Some(v) = headers.remove(routing) {
            headers.insert(ShortString::from(kept), v);
        }
    }
    let foreign_user = props
        .user_id()
        .as_ref()
        .filter(|u| u.as_str() != connection_user)
        .cloned();
    if let Some(u) = &foreign_user {
        headers.insert(
            ShortString::from(ORIGINAL_USER_ID_HEADER),
            AMQPValue::LongString(LongString::from(u.as_str())),
        );
    }
    if let Some(n) = stamp.replays {
        headers.insert(
            ShortString::from(REPLAYS_HEADER),
            AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
        );
    }
    if let Some((key, run)) = stamp.run {
        headers.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(run)),
        );
    }
    let props = if foreign_user.is_some() {
        without_user_id(props)
    } else {
        props
    };
    if headers.is_empty() && !had_headers {
        props
    } else {
        props.with_headers(FieldTable::from(headers))
    }
}

/// `props` without its `user_id` (the properties have no setter that clears one).
fn without_user_id(p: BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! keep {
        ($get:ident, $set:ident) => {
            if let Some(v) = p.$get().clone() {
                out = out.$set(v);
            }
        };
    }
    keep!(content_type, with_content_type);
    keep!(content_encoding, with_content_encoding);
    keep!(headers, with_headers);
    keep!(delivery_mode, with_delivery_mode);
    keep!(priority, with_priority);
    keep!(correlation_id, with_correlation_id);
    keep!(reply_to, with_reply_to);
    keep!(expiration, with_expiration);
    keep!(message_id, with_message_id);
    keep!(timestamp, with_timestamp);
    keep!(kind, with_type);
    keep!(app_id, with_app_id);
    keep!(cluster_id, with_cluster_id);
    out
}

/// Declare the fanout exchange a broker-engine move to `queue` publishes through
/// (`Namespace::move_exchange`), bound to `queue` alone: a fanout routes by its bindings, so the
/// keys a message's `CC`/`BCC` add find nothing else. Durable, so it outlives a broker restart
/// as the shovel does; the move deletes it when it ends ([`delete_move_exchange`]).
pub async fn declare_move_exchange(
    session: &Session,
    exchange: &str,
    queue: &str,
) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let pw = session.password().to_string();
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declared = async {
        timed(
            "exchange.declare (move exchange)",
            CALL_TIMEOUT,
            &pw,
            ch.exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Fanout,
                opts,
                FieldTable::default(),
            ),
        )
        .await?;
        timed(
            "queue.bind (move exchange)",
            CALL_TIMEOUT,
            &pw,
            ch.queue_bind(
                queue.into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    declared
}

/// Delete a move's fanout exchange (a missing one is fine).
pub async fn delete_move_exchange(session: &Session, exchange: &str) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let pw = session.password().to_string();
    let r = timed(
        "exchange.delete (move exchange)",
        CALL_TIMEOUT,
        &pw,
        ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    match r {
        Ok(()) | Err(BrokerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Can the broker engine publish to `exchange` as it is? Only where sender-selected routing
/// cannot add a destination: a consistent-hash exchange (one queue per message, whatever the
/// keys), a fanout or a headers exchange (keys ignored), each bound to queues only (an
/// exchange-to-exchange binding would hand the keys on). `Err` says why not.
pub async fn exchange_ignores_sender_routing(mgmt: &Mgmt, exchange: &str) -> Result<(), String> {
    let x = match mgmt.exchange(exchange).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            return Err(format!(
                "exchange `{}` does not exist",
                crate::text::sanitize(exchange)
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot read exchange `{}`: {e}",
                crate::text::sanitize(exchange)
            ));
        }
    };
    if !matches!(x.kind.as_str(), "x-consistent-hash" | "fanout" | "headers") {
        return Err(format!(
            "a dead letter's CC/BCC headers would route it again through `{}` (a {} exchange); the client engine moves them aside",
            crate::text::sanitize(exchange),
            crate::text::sanitize(&x.kind)
        ));
    }
    let bindings = mgmt.bindings_from(exchange).await.map_err(|e| {
        format!(
            "cannot read the bindings of `{}`: {e}",
            crate::text::sanitize(exchange)
        )
    })?;
    if bindings.iter().any(|b| b.destination_type != "queue") {
        return Err(format!(
            "`{}` is bound to another exchange, which a dead letter's CC/BCC headers could route through; the client engine moves them aside",
            crate::text::sanitize(exchange)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::headers::{header_string, header_u64};
    use lapin::types::FieldArray;

    fn cc(to: &[&str]) -> AMQPValue {
        AMQPValue::FieldArray(FieldArray::from(
            to.iter()
                .map(|q| AMQPValue::LongString(LongString::from(*q)))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn sender_routing_and_a_foreign_user_are_moved_aside() {
        let mut h = FieldTable::default();
        h.insert("CC".into(), cc(&["victim"]));
        h.insert("BCC".into(), cc(&["hopback.ledger"]));
        h.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("email.v2".into()),
        );
        let p = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_user_id("mallory".into())
            .with_delivery_mode(2)
            .with_headers(h);
        let q = client_properties(
            p,
            "hopback",
            Stamp {
                replays: Some(2),
                run: Some(("x-hopback-run", "r-1")),
            },
        );
        let h = q.headers().clone().unwrap_or_default();
        assert!(!h.contains_key("CC") && !h.contains_key("BCC"), "{h:?}");
        assert_eq!(h.inner().get(ORIGINAL_CC_HEADER), Some(&cc(&["victim"])));
        assert_eq!(
            h.inner().get(ORIGINAL_BCC_HEADER),
            Some(&cc(&["hopback.ledger"]))
        );
        assert_eq!(q.user_id(), &None);
        assert_eq!(
            header_string(Some(&h), ORIGINAL_USER_ID_HEADER).as_deref(),
            Some("mallory")
        );
        assert_eq!(header_u64(Some(&h), REPLAYS_HEADER), Some(2));
        assert_eq!(
            header_string(Some(&h), "x-hopback-run").as_deref(),
            Some("r-1")
        );
        assert_eq!(
            header_string(Some(&h), "x-first-death-queue").as_deref(),
            Some("email.v2")
        );
        assert_eq!(q.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(*q.delivery_mode(), Some(2));
    }

    #[test]
    fn our_own_user_and_plain_messages_stay_as_they_are() {
        let p = BasicProperties::default()
            .with_user_id("hopback".into())
            .with_correlation_id("c".into());
        let q = client_properties(p.clone(), "hopback", Stamp::default());
        assert_eq!(q, p, "nothing to move aside, nothing added");
        let r = client_properties(BasicProperties::default(), "hopback", Stamp::default());
        assert_eq!(r.headers(), &None);
    }

    #[test]
    fn without_user_id_keeps_every_other_property() {
        let p = BasicProperties::default()
            .with_content_type("a".into())
            .with_content_encoding("b".into())
            .with_headers(FieldTable::default())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_correlation_id("c".into())
            .with_reply_to("d".into())
            .with_expiration("5".into())
            .with_message_id("e".into())
            .with_timestamp(7)
            .with_type("f".into())
            .with_app_id("g".into())
            .with_cluster_id("h".into());
        assert_eq!(without_user_id(p.clone().with_user_id("u".into())), p);
    }
}
