//! What the gate hashes, and what the tasks give it to hash.
//!
//! The entry exchange (`x-consistent-hash`) splits by a hash of one field of each message: a
//! property (`hash-property`), a header (`hash-header`), or, with neither, the routing key. Tasks
//! that lack the field, or all carry the same value, hash alike and all land on one version —
//! whatever the weights say. Producers differ (Celery sets no `message_id`: its task id is
//! `correlation_id` and the `id` header; many publish with one constant routing key), so the
//! namespace says what to hash ([`HashOn`]), and [`HashInputs`] — a sample of real tasks — says
//! whether that field can split them, and which field could.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The field the entry exchange hashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub enum HashOn {
    /// The `message_id` property (`hash-property=message_id`, the convention's default).
    MessageId,
    /// The `correlation_id` property (`hash-property=correlation_id`; Celery's task id).
    CorrelationId,
    /// A header (`hash-header=NAME`; Celery's `id`).
    Header(String),
    /// The routing key (no hash argument).
    RoutingKey,
}

/// The spellings `--hash-on` takes.
pub const HASH_ON_CHOICES: &str = "message_id, correlation_id, header:NAME or routing-key";

impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::MessageId => f.write_str("message_id"),
            HashOn::CorrelationId => f.write_str("correlation_id"),
            HashOn::Header(h) => write!(f, "header:{h}"),
            HashOn::RoutingKey => f.write_str("routing-key"),
        }
    }
}

impl From<HashOn> for String {
    fn from(h: HashOn) -> String {
        h.to_string()
    }
}

impl std::str::FromStr for HashOn {
    type Err = crate::model::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "message_id" => Ok(HashOn::MessageId),
            "correlation_id" => Ok(HashOn::CorrelationId),
            "routing-key" | "routing_key" => Ok(HashOn::RoutingKey),
            other => match other.strip_prefix("header:") {
                Some("") => Err("`header:` needs a header name, e.g. header:id".into()),
                Some(h) if h.len() > 255 => {
                    Err("a header name is at most 255 bytes (an AMQP short string)".into())
                }
                Some(h) if h.chars().any(char::is_control) => {
                    Err("the header name contains control characters".into())
                }
                Some(h) => Ok(HashOn::Header(h.to_string())),
                None => Err(format!(
                    "unknown hash input `{}`; use {HASH_ON_CHOICES}",
                    crate::text::sanitize(other)
                )
                .into()),
            },
        }
    }
}

impl HashOn {
    /// The entry exchange's arguments that make it hash this field (besides its alternate
    /// exchange): `hash-property` or `hash-header`, nothing for the routing key.
    pub fn exchange_arguments(&self) -> Vec<(&'static str, String)> {
        match self {
            HashOn::MessageId => vec![("hash-property", "message_id".into())],
            HashOn::CorrelationId => vec![("hash-property", "correlation_id".into())],
            HashOn::Header(h) => vec![("hash-header", h.clone())],
            HashOn::RoutingKey => Vec::new(),
        }
    }

    /// What an `x-consistent-hash` exchange with these arguments (the management API's JSON
    /// object) hashes; `Err` names a setting hopback does not offer (`hash-property=timestamp`).
    pub fn from_arguments(
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<HashOn, String> {
        if let Some(h) = args.get("hash-header") {
            return match h.as_str() {
                Some(h) if !h.is_empty() => Ok(HashOn::Header(h.to_string())),
                _ => Err(format!("hash-header={h}")),
            };
        }
        match args.get("hash-property").map(|p| p.as_str()) {
            None => Ok(HashOn::RoutingKey),
            Some(Some("message_id")) => Ok(HashOn::MessageId),
            Some(Some("correlation_id")) => Ok(HashOn::CorrelationId),
            Some(other) => Err(format!("hash-property={}", other.unwrap_or("?"))),
        }
    }

    /// The field in words: `message_id`, `correlation_id`, `header id`, `routing key`.
    pub fn field(&self) -> String {
        match self {
            HashOn::MessageId => "message_id".into(),
            HashOn::CorrelationId => "correlation_id".into(),
            HashOn::Header(h) => format!("header {}", crate::text::sanitize(h)),
            HashOn::RoutingKey => "routing key".into(),
        }
    }
}

/// The hash inputs of one sampled task: the fields a gate could hash (raw values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskKeys {
    /// `message_id`.
    pub message_id: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// The routing key it was published with (for a dead letter, the one in `x-death`).
    pub routing_key: Option<String>,
    /// Headers with a scalar value, rendered (candidates for `hash-header`).
    pub headers: BTreeMap<String, String>,
}

/// How one field shows up in a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyStats {
    /// Tasks carrying it.
    pub present: u64,
    /// Distinct values among them.
    pub distinct: u64,
}

/// Headers worth proposing first (task ids of the common worker frameworks).
const ID_HEADERS: [&str; 3] = ["id", "task_id", "MessageId"];
/// At most this many header names are tracked per sample.
const MAX_HEADER_NAMES: usize = 32;
/// A sample smaller than this says nothing about a field.
pub const MIN_SAMPLE: u64 = 10;

/// What a sample of real tasks offers the gate to hash.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HashInputs {
    /// Tasks sampled.
    pub sampled: u64,
    /// Where they were read (queue names, raw).
    pub sources: Vec<String>,
    /// `message_id`.
    pub message_id: KeyStats,
    /// `correlation_id`.
    pub correlation_id: KeyStats,
    /// The routing key.
    pub routing_key: KeyStats,
    /// Scalar headers by name.
    pub headers: BTreeMap<String, KeyStats>,
}

fn stats<'a>(values: impl Iterator<Item = Option<&'a String>>) -> KeyStats {
    let mut present = 0;
    let mut seen = BTreeSet::new();
    for v in values.flatten() {
        present += 1;
        seen.insert(v.as_str());
    }
    KeyStats {
        present,
        distinct: seen.len() as u64,
    }
}

impl HashInputs {
    /// Summarise sampled tasks read from `sources`.
    pub fn from_keys(keys: &[TaskKeys], sources: Vec<String>) -> Self {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for k in keys {
            for h in k.headers.keys() {
                if names.len() < MAX_HEADER_NAMES || ID_HEADERS.contains(&h.as_str()) {
                    names.insert(h);
                }
            }
        }
        Self {
            sampled: keys.len() as u64,
            sources,
            message_id: stats(keys.iter().map(|k| k.message_id.as_ref())),
            correlation_id: stats(keys.iter().map(|k| k.correlation_id.as_ref())),
            routing_key: stats(keys.iter().map(|k| k.routing_key.as_ref())),
            headers: names
                .into_iter()
                .map(|h| (h.to_string(), stats(keys.iter().map(|k| k.headers.get(h)))))
                .collect(),
        }
    }

    /// How the field `h` shows up.
    pub fn of(&self, h: &HashOn) -> KeyStats {
        match h {
            HashOn::MessageId => self.message_id,
            HashOn::CorrelationId => self.correlation_id,
            HashOn::RoutingKey => self.routing_key,
            HashOn::Header(n) => self.headers.get(n).copied().unwrap_or_default(),
        }
    }

    /// Can hashing `h` split these tasks by weight? Every task carries it and (nearly) every
    /// value differs. `None`: the sample is too small to say.
    pub fn splits(&self, h: &HashOn) -> Option<bool> {
        if self.sampled < MIN_SAMPLE {
            return None;
        }
        let s = self.of(h);
        Some(s.present == self.sampled && s.distinct * 10 >= s.present * 9)
    }

    /// The field to hash for these tasks: the first that splits them, in the order
    /// `message_id`, `correlation_id`, a task-id header, other headers (most distinct first),
    /// the routing key. `None`: the sample is too small, or no field splits them.
    pub fn best(&self) -> Option<HashOn> {
        let mut order = vec![HashOn::MessageId, HashOn::CorrelationId];
        order.extend(
            ID_HEADERS
                .iter()
                .filter(|h| self.headers.contains_key(**h))
                .map(|h| HashOn::Header((*h).to_string())),
        );
        let mut others: Vec<(&String, &KeyStats)> = self
            .headers
            .iter()
            .filter(|(h, _)| !ID_HEADERS.contains(&h.as_str()))
            .collect();
        others.sort_by_key(|(_, s)| std::cmp::Reverse(s.distinct));
        order.extend(others.into_iter().map(|(h, _)| HashOn::Header(h.clone())));
        order.push(HashOn::RoutingKey);
        order.into_iter().find(|h| self.splits(h) == Some(true))
    }

    /// Why hashing `h` cannot split these tasks, in one sentence naming the share
    /// ("92 % of 50 sampled tasks have no message_id: the gate cannot split them"), or `None`
    /// when it can (or the sample is too small to say).
    pub fn cause(&self, h: &HashOn) -> Option<String> {
        if self.splits(h)? {
            return None;
        }
        let s = self.of(h);
        let missing = self.sampled - s.present.min(self.sampled);
        let what = if missing > 0 {
            format!(
                "{:.0} % of {} sampled tasks have no {}",
                missing as f64 * 100.0 / self.sampled as f64,
                self.sampled,
                h.field()
            )
        } else {
            format!(
                "the {} sampled tasks carry only {} distinct {} value(s)",
                self.sampled,
                s.distinct,
                h.field()
            )
        };
        Some(format!("{what}: the gate cannot split them"))
    }
}

/// The default `--hash-on` for a namespace whose tasks were sampled: the field that splits them
/// ([`HashInputs::best`]); `message_id` when there is no sample (no traffic yet) or no field
/// splits them.
pub fn default_hash_on(sample: Option<&HashInputs>) -> HashOn {
    sample
        .and_then(HashInputs::best)
        .unwrap_or(HashOn::MessageId)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_prints_every_spelling() {
        for s in ["message_id", "correlation_id", "header:id", "routing-key"] {
            assert_eq!(s.parse::<HashOn>().unwrap().to_string(), s);
        }
        assert_eq!("routing_key".parse::<HashOn>().unwrap(), HashOn::RoutingKey);
        assert!("header:".parse::<HashOn>().is_err());
        assert!("timestamp".parse::<HashOn>().is_err());
        assert!("header:a\u{1b}b".parse::<HashOn>().is_err());
    }

    #[test]
    fn arguments_round_trip() {
        for h in [
            HashOn::MessageId,
            HashOn::CorrelationId,
            HashOn::Header("id".into()),
            HashOn::RoutingKey,
        ] {
            let mut args = serde_json::Map::new();
            args.insert("alternate-exchange".into(), "x.unrouted".into());
            for (k, v) in h.exchange_arguments() {
                args.insert(k.into(), v.into());
            }
            assert_eq!(HashOn::from_arguments(&args), Ok(h));
        }
        let mut ts = serde_json::Map::new();
        ts.insert("hash-property".into(), "timestamp".into());
        assert_eq!(
            HashOn::from_arguments(&ts),
            Err("hash-property=timestamp".into())
        );
    }

    fn celery(n: usize) -> Vec<TaskKeys> {
        (0..n)
            .map(|i| TaskKeys {
                message_id: None,
                correlation_id: Some(format!("c-{i}")),
                routing_key: Some("celery".into()),
                headers: [
                    ("id".to_string(), format!("c-{i}")),
                    ("task".to_string(), "tasks.add".to_string()),
                ]
                .into_iter()
                .collect(),
            })
            .collect()
    }

    #[test]
    fn a_celery_sample_names_the_missing_message_id_and_proposes_correlation_id() {
        let mut keys = celery(46);
        // A few tasks from another producer that does set a message id.
        for i in 0..4 {
            keys.push(TaskKeys {
                message_id: Some(format!("m-{i}")),
                correlation_id: Some(format!("x-{i}")),
                routing_key: Some("orders".into()),
                ..Default::default()
            });
        }
        let s = HashInputs::from_keys(&keys, vec!["q".into()]);
        assert_eq!(s.splits(&HashOn::MessageId), Some(false));
        assert_eq!(
            s.cause(&HashOn::MessageId).unwrap(),
            "92 % of 50 sampled tasks have no message_id: the gate cannot split them"
        );
        assert_eq!(s.best(), Some(HashOn::CorrelationId));
        assert_eq!(default_hash_on(Some(&s)), HashOn::CorrelationId);
        assert!(
            s.cause(&HashOn::RoutingKey)
                .unwrap()
                .contains("only 2 distinct")
        );
        assert_eq!(s.cause(&HashOn::CorrelationId), None);
    }

    #[test]
    fn without_a_sample_the_default_is_message_id() {
        assert_eq!(default_hash_on(None), HashOn::MessageId);
        let small = HashInputs::from_keys(&celery(3), vec![]);
        assert_eq!(small.splits(&HashOn::MessageId), None);
        assert_eq!(small.cause(&HashOn::MessageId), None);
        assert_eq!(default_hash_on(Some(&small)), HashOn::MessageId);
    }
}
