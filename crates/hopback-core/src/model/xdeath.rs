//! Dead-letter attribution as plain data: the origin queue and reason from the first `x-death`
//! entry (or `x-first-death-*`), and our own replay counter `x-hopback-replays`. Reading them out
//! of AMQP headers is `broker::headers`' job; this module only names and interprets them.
//!
//! RabbitMQ 3.13+/4.x no longer accepts client-set `x-death` on publish, so replay loops are
//! counted with `x-hopback-replays`, never by reading back a modified `x-death`.

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

    #[test]
    fn version_names_and_queues() {
        assert_eq!(version_of_queue("a", "a.v3").as_deref(), Some("v3"));
        assert_eq!(version_of_queue("a", "a.dlq"), None);
        assert_eq!(version_of_queue("a", "ab.v1"), None);
        assert!(is_version_name("v12"));
        assert!(!is_version_name("v"));
        assert!(!is_version_name("v1a"));
        assert_eq!(Reason::parse("delivery_limit"), Reason::DeliveryLimit);
        assert_eq!(Reason::parse("odd").as_str(), "odd");
    }
}
