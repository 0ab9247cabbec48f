//! Dead letters by identity: the content digest of a delivery, and finding a message by its
//! identity (or by what an operator typed) in one fresh read of the queue.
//!
//! Browsing a quorum queue on RabbitMQ 3.x puts the messages back out of order, so a position
//! seen in one read names another message in the next. The inspector, the export of one message
//! and `dlq show` therefore read the queue again and pick the message whose identity
//! ([`DeadLetterId`]: message id and digest) is the one asked for — and say so when it is gone.
//!
//! The digest covers every property and the whole body, and the headers except those the broker
//! rewrites when it delivers a message again ([`VOLATILE_HEADERS`]), so a message keeps its digest
//! across browses. Field tables are walked with an explicit stack (no recursion: a header nested
//! thousands deep costs memory, never the stack).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use sha2::{Digest as _, Sha256};

use crate::broker::browse::quorum_refusal;
use crate::broker::browse::{Browsed, Pick, read_head, ready_depth};
use crate::broker::session::{BrokerError, Session};
use crate::model::deadletter::{DeadLetterId, Digest, INSPECT_BODY_BYTES, Lookup, MessageView};

/// Headers the broker sets or changes on redelivery (a quorum queue counts deliveries in them):
/// left out of the digest so browsing does not change a message's identity.
pub const VOLATILE_HEADERS: [&str; 2] = ["x-delivery-count", "x-acquired-count"];

/// Most messages one lookup reads (the prefetch window of one read is a `u16`).
pub const FIND_SCAN_MAX: u64 = u16::MAX as u64;

/// Most matching messages a lookup keeps in full (the others are only counted).
const FIND_KEEP_MAX: usize = 16;

/// The identity of a delivery: its message id and the digest of its properties and `body`
/// (the whole body: a cut one gives another digest).
pub fn identity_of(props: &BasicProperties, body: &[u8]) -> DeadLetterId {
    DeadLetterId {
        message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
        digest: digest_of(props, body),
    }
}

/// The content digest of a message (see the module doc for what it covers).
pub fn digest_of(props: &BasicProperties, body: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"hopback dead letter v1\0");
    let short =
        |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.as_str().as_bytes().to_vec());
    // Each present property: its number, length and bytes (absent ones add nothing).
    let fields: [(u8, Option<Vec<u8>>); 13] = [
        (1, short(props.content_type())),
        (2, short(props.content_encoding())),
        (4, props.delivery_mode().map(|m| vec![m])),
        (5, props.priority().map(|p| vec![p])),
        (6, short(props.correlation_id())),
        (7, short(props.reply_to())),
        (8, short(props.expiration())),
        (9, short(props.message_id())),
        (10, props.timestamp().map(|t| t.to_be_bytes().to_vec())),
        (11, short(props.kind())),
        (12, short(props.user_id())),
        (13, short(props.app_id())),
        (14, short(props.cluster_id())),
    ];
    for (tag, value) in &fields {
        if let Some(v) = value {
            framed(&mut h, &[*tag], v);
        }
    }
    if let Some(t) = props.headers() {
        h.update([3]);
        hash_table(&mut h, t, true);
    }
    framed(&mut h, &[15], body);
    Digest(h.finalize().into())
}

/// One step of the walk over a header table.
enum Item<'a> {
    Value(&'a AMQPValue),
    Key(&'a str),
}

/// Feed a field table to the hash, type-tagged and length-prefixed, without recursion.
/// `top`: skip [`VOLATILE_HEADERS`] (only at the top level, where the broker puts them).
fn hash_table(h: &mut Sha256, table: &FieldTable, top: bool) {
    let mut stack: Vec<Item<'_>> = Vec::new();
    push_table(&mut stack, h, table, top);
    while let Some(item) = stack.pop() {
        let v = match item {
            Item::Key(k) => {
                framed(h, b"k", k.as_bytes());
                continue;
            }
            Item::Value(v) => v,
        };
        match v {
            AMQPValue::Boolean(b) => framed(h, b"t", &[u8::from(*b)]),
            AMQPValue::ShortShortInt(n) => framed(h, b"b", &n.to_be_bytes()),
            AMQPValue::ShortShortUInt(n) => framed(h, b"B", &n.to_be_bytes()),
            AMQPValue::ShortInt(n) => framed(h, b"s", &n.to_be_bytes()),
            AMQPValue::ShortUInt(n) => framed(h, b"u", &n.to_be_bytes()),
            AMQPValue::LongInt(n) => framed(h, b"I", &n.to_be_bytes()),
            AMQPValue::LongUInt(n) => framed(h, b"i", &n.to_be_bytes()),
            AMQPValue::LongLongInt(n) => framed(h, b"l", &n.to_be_bytes()),
            AMQPValue::Float(f) => framed(h, b"f", &f.to_bits().to_be_bytes()),
            AMQPValue::Double(f) => framed(h, b"d", &f.to_bits().to_be_bytes()),
            AMQPValue::DecimalValue(d) => {
                let mut b = vec![d.scale];
                b.extend_from_slice(&d.value.to_be_bytes());
                framed(h, b"D", &b);
            }
            AMQPValue::ShortString(s) => framed(h, b"S", s.as_str().as_bytes()),
            AMQPValue::LongString(s) => framed(h, b"L", s.as_bytes()),
            AMQPValue::Timestamp(t) => framed(h, b"T", &t.to_be_bytes()),
            AMQPValue::ByteArray(a) => framed(h, b"x", a.as_slice()),
            AMQPValue::Void => framed(h, b"V", &[]),
            AMQPValue::FieldArray(a) => {
                let items = a.as_slice();
                h.update(b"A");
                h.update((items.len() as u64).to_be_bytes());
                // Reversed onto the stack, so they come off in order.
                stack.extend(items.iter().rev().map(Item::Value));
            }
            AMQPValue::FieldTable(t) => push_table(&mut stack, h, t, false),
        }
    }
}

/// A tag, the length and the bytes.
fn framed(h: &mut Sha256, tag: &[u8], bytes: &[u8]) {
    h.update(tag);
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Hash a table's entry count and push its entries (key, then value) for the walk.
fn push_table<'a>(stack: &mut Vec<Item<'a>>, h: &mut Sha256, t: &'a FieldTable, top: bool) {
    let entries: Vec<_> = t
        .inner()
        .iter()
        .filter(|(k, _)| !(top && VOLATILE_HEADERS.contains(&k.as_str())))
        .collect();
    h.update(b"F");
    h.update((entries.len() as u64).to_be_bytes());
    // Reversed onto the stack, so they come off in the table's (sorted) order.
    for (k, v) in entries.into_iter().rev() {
        stack.push(Item::Value(v));
        stack.push(Item::Key(k.as_str()));
    }
}

/// Find the dead letter `id` in one fresh read of `queue` (the first copy, body up to
/// [`INSPECT_BODY_BYTES`]); the read stops there. `None`: it is no longer in the first
/// [`FIND_SCAN_MAX`] messages (replayed, purged or expired since it was listed).
pub async fn find(
    session: &Session,
    queue: &str,
    id: &DeadLetterId,
    is_quorum_with_limit: bool,
    force: bool,
) -> Result<Option<MessageView>, BrokerError> {
    if is_quorum_with_limit && !force {
        return Err(quorum_refusal(queue));
    }
    let depth = ready_depth(session, queue).await?;
    if depth == 0 {
        return Ok(None);
    }
    let mut pick = |_: u64, seen: &DeadLetterId| {
        if seen == id {
            Pick::KeepAndStop
        } else {
            Pick::Pass
        }
    };
    let got = read_head(
        session,
        queue,
        depth,
        depth.min(FIND_SCAN_MAX),
        INSPECT_BODY_BYTES,
        &mut pick,
    )
    .await?;
    Ok(got.first().map(Browsed::view_lossless))
}

/// What one read of a queue found for a [`Lookup`].
#[derive(Debug, Clone)]
pub struct Looked {
    /// The messages that may answer it, in queue order (at most 16 kept in full).
    pub candidates: Vec<MessageView>,
    /// More candidates seen but not kept.
    pub more: u64,
    /// Messages read.
    pub scanned: u64,
    /// The queue's depth before the read.
    pub depth: u64,
}

impl Looked {
    /// `(position, identity)` of each candidate, as [`Lookup::resolve`] takes them.
    pub fn identities(&self) -> Vec<(u64, DeadLetterId)> {
        self.candidates
            .iter()
            .filter_map(|m| m.identity().map(|id| (m.position, id)))
            .collect()
    }
}

/// Read `queue` once (up to [`FIND_SCAN_MAX`] messages) and keep every message that may answer
/// `lookup` — all of them, so an id two messages share is seen as ambiguous.
pub async fn lookup(
    session: &Session,
    queue: &str,
    lookup: &Lookup,
    is_quorum_with_limit: bool,
    force: bool,
) -> Result<Looked, BrokerError> {
    if is_quorum_with_limit && !force {
        return Err(quorum_refusal(queue));
    }
    let depth = ready_depth(session, queue).await?;
    let want = depth.min(FIND_SCAN_MAX);
    if want == 0 {
        return Ok(Looked {
            candidates: Vec::new(),
            more: 0,
            scanned: 0,
            depth,
        });
    }
    let mut kept = 0usize;
    let mut more = 0u64;
    let mut scanned = 0u64;
    let mut pick = |position: u64, id: &DeadLetterId| {
        scanned = position + 1;
        if !lookup.may_match(position, id) {
            Pick::Pass
        } else if kept < FIND_KEEP_MAX {
            kept += 1;
            Pick::Keep
        } else {
            more += 1;
            Pick::Pass
        }
    };
    let got = read_head(session, queue, depth, want, INSPECT_BODY_BYTES, &mut pick).await?;
    Ok(Looked {
        candidates: got.iter().map(Browsed::view_lossless).collect(),
        more,
        scanned,
        depth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn props(headers: FieldTable) -> BasicProperties {
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_headers(headers)
    }

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    #[test]
    fn digest_ignores_redelivery_counters_and_sees_everything_else() {
        let base = table(&[("x-exception", AMQPValue::LongString("Boom".into()))]);
        let d = digest_of(&props(base.clone()), b"body");
        assert_eq!(d, digest_of(&props(base.clone()), b"body"));
        let mut counted = base.clone();
        counted.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        assert_eq!(d, digest_of(&props(counted), b"body"), "redelivery counter");
        assert_ne!(d, digest_of(&props(base.clone()), b"body!"), "body");
        let other = table(&[("x-exception", AMQPValue::LongString("Other".into()))]);
        assert_ne!(d, digest_of(&props(other), b"body"), "header value");
        // Same rendering, other type: another message.
        let typed = table(&[("n", AMQPValue::LongInt(1))]);
        let text = table(&[("n", AMQPValue::LongString(LongString::from("1")))]);
        assert_ne!(digest_of(&props(typed), b""), digest_of(&props(text), b""));
        // Lengths are framed: moving a byte from key to value changes the digest.
        let a = table(&[("ab", AMQPValue::LongString("c".into()))]);
        let b = table(&[("a", AMQPValue::LongString("bc".into()))]);
        assert_ne!(digest_of(&props(a), b""), digest_of(&props(b), b""));
        let no_id = BasicProperties::default();
        assert_ne!(
            digest_of(&no_id, b"body"),
            digest_of(&no_id.clone().with_message_id("".into()), b"body"),
            "an empty message id is not a missing one"
        );
    }

    #[test]
    fn a_header_nested_deep_is_hashed_without_recursion() {
        // Far deeper than a recursive walk would survive; built without recursion and leaked
        // (dropping it would recurse).
        let mut v = AMQPValue::Void;
        for _ in 0..200_000 {
            v = AMQPValue::FieldArray(FieldArray::from(vec![v]));
        }
        let mut deep = FieldTable::default();
        deep.insert("deep".into(), v);
        let p = props(deep);
        let d1 = digest_of(&p, b"");
        assert_eq!(d1, digest_of(&p, b""));
        assert_ne!(d1, digest_of(&props(FieldTable::default()), b""));
        std::mem::forget(p);
    }
}
