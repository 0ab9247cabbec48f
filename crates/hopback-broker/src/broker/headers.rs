//! Reading AMQP headers: integers and strings of any AMQP width, and the dead-letter
//! [`Attribution`] from `x-death` / `x-first-death-*` / `x-hopback-replays`. The types it fills
//! are plain data in [`crate::model::xdeath`]; only this module knows how lapin spells a header.

use lapin::types::{AMQPValue, FieldTable};

pub use crate::model::xdeath::REPLAYS_HEADER;
use crate::model::xdeath::{Attribution, DeathEntry, Reason};

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

/// The header lapin's parser (hopback's patched amq-protocol, `vendor/amq-protocol`) sets on a
/// delivery whose properties it could not read in full — a short string that is not UTF-8,
/// headers nested deeper than it parses — naming what it left out.
pub use lapin::protocol::UNREADABLE_PROPERTIES_HEADER as UNREADABLE_HEADER;

/// Why a message's properties could not be read (its [`UNREADABLE_HEADER`]), if they could
/// not: such a message must never be republished by the client — the properties it holds are
/// not the message's own — only moved by the broker.
pub fn unreadable_reason(headers: Option<&FieldTable>) -> Option<String> {
    let v = headers?.inner().get(UNREADABLE_HEADER)?;
    Some(as_string(v).unwrap_or_else(|| "the properties could not be read".into()))
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
    let replays = replays_of(headers).min(u64::from(u32::MAX)) as u32;
    Attribution {
        origin_queue: first_queue.filter(|q| !q.is_empty()),
        reason: first_reason,
        deaths,
        replays,
    }
}

/// The header a dynamic shovel adds one entry to per hop (`dest-add-forward-headers`).
pub const SHOVELLED_HEADER: &str = "x-shovelled";

/// Replays a message went through, as the replay-loop guard counts them: the larger of
/// - the hops it carries: the client engine's own `x-hopback-replays` plus one per `x-shovelled`
///   entry of a hopback broker-engine move (where forward headers are on, 4.x), and
/// - its deaths minus the first: where the broker counts a republished message's deaths in
///   `x-death` (3.x, `broker::shovel::broker_counts_republished_deaths`), each replay that came
///   back dead-lettered added one, whichever engine (or tool) replayed it. On 4.x a republished
///   message starts a fresh `x-death`, so this term is 0 there and the hops decide.
///
/// A message that also died in an in-broker retry cycle counts those deaths too: the guard
/// parks it early (never loses it; `--force` or `--max-replays` moves it anyway).
pub fn replays_of(headers: Option<&FieldTable>) -> u64 {
    let own = header_u64(headers, REPLAYS_HEADER).unwrap_or(0);
    own.saturating_add(shovel_hops(headers))
        .max(deaths(headers).saturating_sub(1))
}

/// Deaths recorded in `x-death` (the sum of its entries' counts).
fn deaths(headers: Option<&FieldTable>) -> u64 {
    match headers.and_then(|h| h.inner().get("x-death")) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.inner().get("count").and_then(as_u64).unwrap_or(1),
                _ => 0,
            })
            .fold(0u64, u64::saturating_add),
        _ => 0,
    }
}

/// `x-shovelled` entries written by hopback's broker engine.
pub fn shovel_hops(headers: Option<&FieldTable>) -> u64 {
    match headers.and_then(|h| h.inner().get(SHOVELLED_HEADER)) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter(|e| match e {
                AMQPValue::FieldTable(t) => header_string(Some(t), "shovel-name")
                    .is_some_and(|n| n.starts_with(crate::topology::MOVE_SHOVEL_PREFIX)),
                _ => false,
            })
            .count() as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    use crate::model::xdeath::Reason;

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
        // Two replays in the header, but 4 deaths (2 + 2): the deaths decide.
        assert_eq!(a.replays, 3);
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
    }

    #[test]
    fn replays_are_the_larger_of_hops_and_later_deaths() {
        let one = |count: i64| {
            let mut t = FieldTable::default();
            t.insert(ShortString::from("count"), AMQPValue::LongLongInt(count));
            AMQPValue::FieldTable(t)
        };
        let mut h = FieldTable::default();
        assert_eq!(replays_of(Some(&h)), 0);
        h.insert(
            ShortString::from("x-death"),
            AMQPValue::FieldArray(FieldArray::from(vec![one(1)])),
        );
        assert_eq!(replays_of(Some(&h)), 0, "the first death is not a replay");
        h.insert(ShortString::from(REPLAYS_HEADER), AMQPValue::LongInt(1));
        assert_eq!(replays_of(Some(&h)), 1, "4.x: the header counts");
        h.insert(
            ShortString::from("x-death"),
            AMQPValue::FieldArray(FieldArray::from(vec![one(3), one(1)])),
        );
        assert_eq!(replays_of(Some(&h)), 3, "3.x: the deaths count");
        assert_eq!(replays_of(None), 0);
    }
}
