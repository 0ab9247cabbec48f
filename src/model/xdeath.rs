//! Dead-letter attribution from AMQP headers: the origin queue and reason from the first `x-death`
//! entry (or `x-first-death-*`), and our own replay counter `x-hopback-replays`.
//!
//! RabbitMQ 3.13+/4.x no longer accepts client-set `x-death` on publish, so replay loops are
//! counted with `x-hopback-replays`, never by reading back a modified `x-death`.

use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

/// Our replay counter header.
pub const REPLAYS_HEADER: &str = "x-hopback-replays";

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Rejected / nacked without requeue.
    Rejected,
    /// TTL expired.
    Expired,
    /// Dropped by a length limit.
    Maxlen,
    /// Over a quorum queue's delivery limit.
    DeliveryLimit,
    /// Something else (future broker versions).
    Other(String),
    /// No death information at all.
    Unknown,
}

impl Reason {
    /// Parse the broker's reason string.
    pub fn parse(s: &str) -> Self {
        match s {
            "rejected" => Reason::Rejected,
            "expired" => Reason::Expired,
            "maxlen" => Reason::Maxlen,
            "delivery_limit" => Reason::DeliveryLimit,
            other => Reason::Other(other.to_string()),
        }
    }
    /// The broker's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
            Reason::Other(s) => s,
            Reason::Unknown => "unknown",
        }
    }
}

/// One `x-death` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeathEntry {
    /// Queue the message died in.
    pub queue: String,
    /// Why.
    pub reason: Reason,
    /// How many times (for this queue+reason).
    pub count: u64,
    /// Exchange it had been published to.
    pub exchange: String,
    /// Routing keys.
    pub routing_keys: Vec<String>,
    /// When (unix seconds), if present.
    pub time: Option<i64>,
}

/// What we know about where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribution {
    /// The queue it first died in.
    pub origin_queue: Option<String>,
    /// Why it first died.
    pub reason: Reason,
    /// The full `x-death` history, most recent first.
    pub deaths: Vec<DeathEntry>,
    /// Times hopback replayed it.
    pub replays: u32,
}

fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok(),
        _ => None,
    }
}

/// Read an integer header (any integer width, or a numeric string).
pub fn header_u64(headers: Option<&FieldTable>, key: &str) -> Option<u64> {
    headers?.inner().get(key).and_then(as_u64)
}

/// Read a string header.
pub fn header_string(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    headers?.inner().get(key).and_then(as_string)
}

fn parse_entry(t: &FieldTable) -> DeathEntry {
    let m = t.inner();
    DeathEntry {
        queue: m.get("queue").and_then(as_string).unwrap_or_default(),
        reason: m
            .get("reason")
            .and_then(as_string)
            .map(|s| Reason::parse(&s))
            .unwrap_or(Reason::Unknown),
        count: m.get("count").and_then(as_u64).unwrap_or(1),
        exchange: m.get("exchange").and_then(as_string).unwrap_or_default(),
        routing_keys: match m.get("routing-keys") {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().filter_map(as_string).collect(),
            _ => Vec::new(),
        },
        time: m
            .get("time")
            .and_then(as_u64)
            .and_then(|t| i64::try_from(t).ok()),
    }
}

/// Attribute a dead letter from its headers.
pub fn attribute(headers: Option<&FieldTable>) -> Attribution {
    let deaths: Vec<DeathEntry> = match headers.and_then(|h| h.inner().get("x-death")) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(parse_entry(t)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // x-death is most-recent-first; the *first* death is the origin.
    let first_queue = header_string(headers, "x-first-death-queue")
        .or_else(|| deaths.last().map(|d| d.queue.clone()));
    let first_reason = header_string(headers, "x-first-death-reason")
        .map(|s| Reason::parse(&s))
        .or_else(|| deaths.last().map(|d| d.reason.clone()))
        .unwrap_or(Reason::Unknown);
    let replays = header_u64(headers, REPLAYS_HEADER)
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0);
    Attribution {
        origin_queue: first_queue.filter(|q| !q.is_empty()),
        reason: first_reason,
        deaths,
        replays,
    }
}

/// The version part of a convention queue name (`email.v2` → `v2`), if it is one of `ns`.
pub fn version_of_queue(ns: &str, queue: &str) -> Option<String> {
    let rest = queue.strip_prefix(ns)?.strip_prefix('.')?;
    is_version_name(rest).then(|| rest.to_string())
}

/// `v` followed by digits.
pub fn is_version_name(s: &str) -> bool {
    s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn death(queue: &str, reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert(
            ShortString::from("queue"),
            AMQPValue::LongString(LongString::from(queue)),
        );
        t.insert(
            ShortString::from("reason"),
            AMQPValue::LongString(LongString::from(reason)),
        );
        t.insert(ShortString::from("count"), AMQPValue::LongLongInt(2));
        AMQPValue::FieldTable(t)
    }

    #[test]
    fn origin_is_first_death() {
        let mut h = FieldTable::default();
        let arr = FieldArray::from(vec![
            death("email.v1", "expired"),
            death("email.v2", "rejected"),
        ]);
        h.insert(ShortString::from("x-death"), AMQPValue::FieldArray(arr));
        h.insert(ShortString::from(REPLAYS_HEADER), AMQPValue::LongInt(2));
        let a = attribute(Some(&h));
        assert_eq!(a.origin_queue.as_deref(), Some("email.v2"));
        assert_eq!(a.reason, Reason::Rejected);
        assert_eq!(a.replays, 2);
        assert_eq!(a.deaths.len(), 2);
        assert_eq!(a.deaths[0].count, 2);
    }

    #[test]
    fn first_death_header_wins_and_missing_is_unknown() {
        let mut h = FieldTable::default();
        h.insert(
            ShortString::from("x-first-death-queue"),
            AMQPValue::LongString(LongString::from("a.v3")),
        );
        h.insert(
            ShortString::from("x-first-death-reason"),
            AMQPValue::LongString(LongString::from("maxlen")),
        );
        let a = attribute(Some(&h));
        assert_eq!(a.origin_queue.as_deref(), Some("a.v3"));
        assert_eq!(a.reason, Reason::Maxlen);
        assert_eq!(attribute(None).reason, Reason::Unknown);
        assert_eq!(version_of_queue("a", "a.v3").as_deref(), Some("v3"));
        assert_eq!(version_of_queue("a", "a.dlq"), None);
        assert_eq!(version_of_queue("a", "ab.v1"), None);
    }
}
