//! Dead letters as plain data: their identity, the one-line summary the DLQ list shows, grouping
//! by origin version / reason / exception header / age, move filters, and the inspector's content.
//!
//! A dead letter is addressed by identity ([`DeadLetterId`]: its message id and a digest of its
//! content), never by its position: browsing a quorum queue on RabbitMQ 3.x requeues it out of
//! order, so "the Nth message" of one read is another message in the next.
//!
//! Nothing here does I/O or draws: `broker::browse` turns AMQP deliveries into
//! [`MessageView`]s, and the CLI and the TUI render the already-sanitised lines produced here.
//! Every string that came from the broker or a message passes through [`crate::text`] before it
//! leaves this module (the summary's fields, the inspector's lines, group keys).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::xdeath::{Attribution, Reason, version_of_queue};
use crate::text::{preview, sanitize, sanitize_multiline};

/// Default header carrying the worker's exception (class or message), used for grouping.
pub const DEFAULT_EXCEPTION_HEADER: &str = "x-exception";
/// Characters of body shown in a list row.
pub const LIST_PREVIEW_CHARS: usize = 120;
/// Bytes of body read to build a list preview (a 10 MB body costs no more than this).
pub const LIST_PREVIEW_BYTES: usize = 1024;
/// Bytes of body kept per message while browsing (memory bound of a page).
pub const BROWSE_BODY_BYTES: usize = 4096;
/// Bytes of body the inspector loads at most (the full message, within reason).
pub const INSPECT_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of body the inspector renders (the rest is summarised, not drawn).
pub const INSPECT_RENDER_BYTES: usize = 64 * 1024;

/// A message as seen by the browser or the inspector, with its AMQP data flattened to strings.
/// Values are raw (unsanitised); everything rendering them goes through [`crate::text`].
#[derive(Debug, Clone, PartialEq)]
pub struct MessageView {
    /// 0-based position in the queue when it was read.
    pub position: u64,
    /// Basic properties present, in AMQP order (`message_id`, `content_type`, …), raw.
    pub properties: Vec<(String, String)>,
    /// Application headers (except an `x-death` list, shown parsed), raw, values rendered
    /// compactly.
    pub headers: Vec<(String, String)>,
    /// Where it died, why, how often, how many replays.
    pub attribution: Attribution,
    /// Body bytes held (possibly cut).
    pub body: Vec<u8>,
    /// Full body length.
    pub body_len: usize,
    /// Had it been delivered before this read?
    pub redelivered: bool,
    /// `message_id` property, raw.
    pub message_id: Option<String>,
    /// `content_type` property, raw.
    pub content_type: Option<String>,
    /// `timestamp` property (unix seconds).
    pub timestamp: Option<i64>,
    /// Digest of the full message (`None` when it was built from a cut body and nobody computed
    /// it from the whole one).
    pub digest: Option<Digest>,
    /// Why its properties could not be read in full (raw), when they could not: the fields
    /// above hold only what could be read, so it is shown as unreadable and never republished
    /// by the client (a replay has the broker quarantine it).
    pub unreadable: Option<String>,
    /// The message exactly as received, when it was loaded whole (the inspector, an export);
    /// `None` for a page row. What makes an export re-importable.
    pub lossless: Option<Lossless>,
}

/// What an export needs beyond the flattened view to publish a message again unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Lossless {
    /// Properties and typed headers in lapin's serde form (`BasicProperties`).
    pub amqp_properties: serde_json::Value,
    /// The exchange it was published to (for a dead letter: the dead-letter exchange).
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
}

impl Default for MessageView {
    fn default() -> Self {
        Self {
            position: 0,
            properties: Vec::new(),
            headers: Vec::new(),
            attribution: Attribution {
                origin_queue: None,
                reason: Reason::Unknown,
                deaths: Vec::new(),
                replays: 0,
            },
            body: Vec::new(),
            body_len: 0,
            redelivered: false,
            message_id: None,
            content_type: None,
            timestamp: None,
            digest: None,
            unreadable: None,
            lossless: None,
        }
    }
}

impl MessageView {
    /// A header's raw value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The message's identity, when its digest is known.
    pub fn identity(&self) -> Option<DeadLetterId> {
        self.digest.map(|digest| DeadLetterId {
            message_id: self.message_id.clone(),
            digest,
        })
    }
    /// Unix seconds of the most recent death (or the timestamp property).
    pub fn died_at(&self) -> Option<i64> {
        self.attribution
            .deaths
            .first()
            .and_then(|d| d.time)
            .or(self.timestamp)
    }
}

/// Hex digits of a digest that lists show (48 bits: no two of a DLQ's messages share them in
/// practice; `dlq show` says so when a prefix is ambiguous).
pub const SHORT_DIGEST_HEX: usize = 12;
/// Fewest hex digits `dlq show` accepts as a digest prefix.
pub const MIN_DIGEST_PREFIX_HEX: usize = 8;
/// How a digest is written where an id is expected (`sha:3fa9c2e1b0a4`).
pub const DIGEST_PREFIX: &str = "sha:";

/// SHA-256 of a dead letter's content: every property, the headers (except the ones the broker
/// changes when it delivers the message again) and the whole body. Two copies of one message
/// share it; two messages that share a message id but differ anywhere do not.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// All 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// The first [`SHORT_DIGEST_HEX`] hex digits.
    pub fn short(&self) -> String {
        self.hex()[..SHORT_DIGEST_HEX].to_string()
    }
    /// `sha:` and the short hex: how a list names a message by its digest.
    pub fn label(&self) -> String {
        format!("{DIGEST_PREFIX}{}", self.short())
    }
    /// Does the hex form start with `prefix` (lowercase hex)?
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.hex().starts_with(prefix)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.label())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

/// Who a dead letter is: its `message_id` (raw) and the [`Digest`] of its content. Two entries
/// are the same identity only when both agree, so a selection or an inspector opened on one of
/// two messages sharing a message id finds that one; two byte-identical copies are one identity
/// (whichever is taken, the content is the same).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DeadLetterId {
    /// `message_id` property, raw (`None`: the producer set none).
    pub message_id: Option<String>,
    /// Content digest.
    pub digest: Digest,
}

impl DeadLetterId {
    /// How a list shows it (sanitised): the message id, or `sha:` and 12 hex digits of the digest
    /// when there is none — either is what `dlq show NS ID` takes.
    pub fn label(&self) -> String {
        match &self.message_id {
            Some(id) => sanitize(id).into_owned(),
            None => self.digest.label(),
        }
    }
}

/// What `dlq show NS ID` was given: a message id, a digest (`sha:` and / or 8+ hex digits), or a
/// position in this read (digits). The DLQ is read once and [`Lookup::resolve`] decides, in this
/// order: messages whose message id is the text; else messages whose digest starts with it;
/// else the message at that position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The text as given (raw).
    pub text: String,
    digest_prefix: Option<String>,
    position: Option<u64>,
}

/// How a [`Lookup`] was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedBy {
    /// Its message id.
    MessageId,
    /// Its digest.
    Digest,
    /// Its position in this read.
    Position,
}

/// The answer to a [`Lookup`] over one read of the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly one message (or `copies` byte-identical ones: the same content either way); the
    /// index into the candidates given.
    One {
        /// Index into the candidates.
        index: usize,
        /// How it was found.
        by: ResolvedBy,
        /// Identical copies found (1 = unique).
        copies: usize,
    },
    /// Several different messages answer: their identities (one each), in queue order.
    Ambiguous {
        /// How they were found.
        by: ResolvedBy,
        /// One identity per different message.
        ids: Vec<DeadLetterId>,
    },
    /// Nothing in the read answers.
    NotFound,
}

impl Lookup {
    /// Parse what the operator typed (empty is refused).
    pub fn parse(text: &str) -> Result<Self, crate::model::Invalid> {
        if text.is_empty() {
            return Err("an empty id names no dead letter".to_string().into());
        }
        let hex = text.strip_prefix(DIGEST_PREFIX).unwrap_or(text);
        let digest_prefix = (hex.len() >= MIN_DIGEST_PREFIX_HEX
            && hex.len() <= 64
            && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase());
        if text.starts_with(DIGEST_PREFIX) && digest_prefix.is_none() {
            return Err(format!(
                "`{}` is not a digest: `{DIGEST_PREFIX}` takes {MIN_DIGEST_PREFIX_HEX} to 64 hex digits",
                sanitize(text)
            )
            .into());
        }
        let position = text
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse::<u64>().ok())
            .flatten();
        Ok(Self {
            text: text.to_string(),
            digest_prefix,
            position,
        })
    }
    /// Could the message at `position` with identity `id` answer this lookup (the read keeps
    /// those; [`Lookup::resolve`] decides among them)?
    pub fn may_match(&self, position: u64, id: &DeadLetterId) -> bool {
        id.message_id.as_deref() == Some(self.text.as_str())
            || self
                .digest_prefix
                .as_deref()
                .is_some_and(|p| id.digest.starts_with(p))
            || self.position == Some(position)
    }
    /// Decide among the candidates a read kept (`(position, identity)`, in queue order).
    pub fn resolve(&self, candidates: &[(u64, DeadLetterId)]) -> Resolution {
        let by_id: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].1.message_id.as_deref() == Some(self.text.as_str()))
            .collect();
        let by_digest: Vec<usize> = match &self.digest_prefix {
            Some(p) => (0..candidates.len())
                .filter(|&i| candidates[i].1.digest.starts_with(p))
                .collect(),
            None => Vec::new(),
        };
        let by_position: Vec<usize> = (0..candidates.len())
            .filter(|&i| Some(candidates[i].0) == self.position)
            .take(1)
            .collect();
        let (by, hits) = if !by_id.is_empty() {
            (ResolvedBy::MessageId, by_id)
        } else if !by_digest.is_empty() {
            (ResolvedBy::Digest, by_digest)
        } else if !by_position.is_empty() {
            (ResolvedBy::Position, by_position)
        } else {
            return Resolution::NotFound;
        };
        let mut distinct: Vec<DeadLetterId> = Vec::new();
        for &i in &hits {
            if !distinct.contains(&candidates[i].1) {
                distinct.push(candidates[i].1.clone());
            }
        }
        if distinct.len() > 1 {
            return Resolution::Ambiguous { by, ids: distinct };
        }
        Resolution::One {
            index: hits[0],
            by,
            copies: hits.len(),
        }
    }
}

/// One row of the DLQ list: everything already sanitised and bounded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Position in the read it came from (a display order, not an address: see
    /// [`DeadLetterId`]).
    pub position: u64,
    /// The identity as lists show it and `dlq show` takes it (sanitised): the message id, else
    /// `sha:` and the digest's first hex digits; `?` when the digest is unknown.
    pub id: String,
    /// Full content digest (hex), when known.
    pub digest: Option<String>,
    /// `message_id` (sanitised).
    pub message_id: Option<String>,
    /// First death queue (sanitised).
    pub origin_queue: Option<String>,
    /// Version of the origin queue (`v2`), when it is a convention queue of the namespace.
    pub origin_version: Option<String>,
    /// First death reason.
    pub reason: String,
    /// Exception header value (sanitised, one line, cut to 120 chars).
    pub exception: Option<String>,
    /// Seconds since the most recent death, when known.
    pub age_s: Option<i64>,
    /// `x-hopback-replays`.
    pub replays: u32,
    /// Total deaths (sum of `x-death` counts).
    pub deaths: u64,
    /// Body length in bytes.
    pub body_len: usize,
    /// One-line body preview (sanitised, ≤ 120 chars); `unreadable (…)` for a message whose
    /// properties could not be read.
    pub preview: String,
    /// Why its properties could not be read (sanitised, one line), when they could not.
    pub unreadable: Option<String>,
}

/// `unreadable (why)`, one line, terminal-safe: how a message whose properties could not be
/// read is shown in lists.
pub fn unreadable_label(why: &str) -> String {
    format!(
        "unreadable ({})",
        preview(why.as_bytes(), LIST_PREVIEW_BYTES, LIST_PREVIEW_CHARS)
    )
}

/// Summarise a message for the list (`now_s` = current unix time, for the age).
pub fn summarize(ns: &str, m: &MessageView, exception_header: &str, now_s: i64) -> Summary {
    let origin = m.attribution.origin_queue.clone();
    Summary {
        position: m.position,
        id: match (m.identity(), &m.message_id) {
            (Some(id), _) => id.label(),
            (None, Some(mid)) => sanitize(mid).into_owned(),
            (None, None) => "?".to_string(),
        },
        digest: m.digest.map(|d| d.hex()),
        message_id: m.message_id.as_deref().map(|s| sanitize(s).into_owned()),
        origin_version: origin.as_deref().and_then(|q| version_of_queue(ns, q)),
        origin_queue: origin.as_deref().map(|s| sanitize(s).into_owned()),
        reason: sanitize(m.attribution.reason.as_str()).into_owned(),
        exception: m
            .header(exception_header)
            .map(|v| preview(v.as_bytes(), LIST_PREVIEW_BYTES, LIST_PREVIEW_CHARS)),
        age_s: m.died_at().map(|t| (now_s - t).max(0)),
        replays: m.attribution.replays,
        deaths: m.attribution.deaths.iter().map(|d| d.count).sum(),
        body_len: m.body_len,
        preview: match &m.unreadable {
            Some(why) => unreadable_label(why),
            None => preview(&m.body, LIST_PREVIEW_BYTES, LIST_PREVIEW_CHARS),
        },
        unreadable: m
            .unreadable
            .as_deref()
            .map(|why| preview(why.as_bytes(), LIST_PREVIEW_BYTES, LIST_PREVIEW_CHARS)),
    }
}

/// What to group the DLQ list by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Origin version (first `x-death` queue).
    Origin,
    /// Dead-letter reason.
    Reason,
    /// The exception header.
    Exception,
    /// Age bucket of the most recent death.
    Age,
}

impl GroupBy {
    /// Every choice: its name (as the CLI and JSON spell it) and a one-line description (the
    /// CLI's `--help` lists them).
    pub const CHOICES: [(GroupBy, &'static str, &'static str); 4] = [
        (
            GroupBy::Origin,
            "origin",
            "Origin version (first `x-death` queue)",
        ),
        (GroupBy::Reason, "reason", "Dead-letter reason"),
        (GroupBy::Exception, "exception", "The exception header"),
        (GroupBy::Age, "age", "Age bucket of the most recent death"),
    ];

    /// The name (`origin`, `reason`, `exception`, `age`).
    pub fn name(self) -> &'static str {
        choice_name(&Self::CHOICES, self)
    }
}

crate::display_as!(GroupBy, name);

impl std::str::FromStr for GroupBy {
    type Err = UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_choice(&Self::CHOICES, s)
    }
}

/// A name that is none of the choices of [`GroupBy`] or [`BodyMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{given}` (possible values: {expected})")]
pub struct UnknownChoice {
    /// What was given (sanitised).
    pub given: String,
    /// The possible values, comma-separated.
    pub expected: String,
}

fn choice_name<T: Copy + PartialEq>(
    choices: &[(T, &'static str, &'static str)],
    value: T,
) -> &'static str {
    choices
        .iter()
        .find(|(v, _, _)| *v == value)
        .map_or("", |(_, name, _)| name)
}

fn parse_choice<T: Copy>(
    choices: &[(T, &'static str, &'static str)],
    given: &str,
) -> Result<T, UnknownChoice> {
    choices
        .iter()
        .find(|(_, name, _)| *name == given)
        .map(|(v, _, _)| *v)
        .ok_or_else(|| UnknownChoice {
            given: sanitize(given).into_owned(),
            expected: choices
                .iter()
                .map(|(_, name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// An age bucket label for `age_s` (`None` = unknown).
pub fn age_bucket(age_s: Option<i64>) -> &'static str {
    match age_s {
        None => "unknown age",
        Some(s) if s < 60 => "< 1 min",
        Some(s) if s < 600 => "1–10 min",
        Some(s) if s < 3600 => "10–60 min",
        Some(s) if s < 86_400 => "1–24 h",
        Some(_) => "> 1 day",
    }
}

fn age_rank(label: &str) -> u8 {
    match label {
        "< 1 min" => 0,
        "1–10 min" => 1,
        "10–60 min" => 2,
        "1–24 h" => 3,
        "> 1 day" => 4,
        _ => 5,
    }
}

/// The group key of a summary.
pub fn group_key(s: &Summary, by: GroupBy) -> String {
    match by {
        GroupBy::Origin => s
            .origin_version
            .clone()
            .or_else(|| s.origin_queue.clone())
            .unwrap_or_else(|| "no origin".into()),
        GroupBy::Reason => s.reason.clone(),
        GroupBy::Exception => s
            .exception
            .clone()
            .unwrap_or_else(|| "no exception header".into()),
        GroupBy::Age => age_bucket(s.age_s).to_string(),
    }
}

/// One group of dead letters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The key (sanitised): `v2`, `rejected`, an exception, an age bucket.
    pub key: String,
    /// Messages in the group.
    pub count: usize,
    /// Their queue positions, ascending.
    pub positions: Vec<u64>,
    /// Oldest age in the group, seconds.
    pub oldest_age_s: Option<i64>,
}

/// Group summaries: largest group first (age groups young → old), ties by key.
pub fn group(items: &[Summary], by: GroupBy) -> Vec<Group> {
    let mut map: BTreeMap<String, Group> = BTreeMap::new();
    for s in items {
        let key = group_key(s, by);
        let g = map.entry(key.clone()).or_insert_with(|| Group {
            key,
            count: 0,
            positions: Vec::new(),
            oldest_age_s: None,
        });
        g.count += 1;
        g.positions.push(s.position);
        g.oldest_age_s = match (g.oldest_age_s, s.age_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let mut groups: Vec<Group> = map.into_values().collect();
    for g in &mut groups {
        g.positions.sort_unstable();
    }
    if by == GroupBy::Age {
        groups.sort_by_key(|g| age_rank(&g.key));
    } else {
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    }
    groups
}

/// One condition of a move/replay filter. All conditions of a [`Filter`] must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Condition {
    /// First death reason equals (`rejected`, `expired`, `maxlen`, `delivery_limit`).
    Reason(String),
    /// Origin version equals (`v2`) — or the origin queue's full name.
    Origin(String),
    /// A header equals a value (string comparison of the rendered value).
    Header(String, String),
    /// The body contains this text (bytes).
    BodyContains(String),
    /// `message_id` equals.
    MessageId(String),
    /// This very dead letter: message id and content digest both equal (a selection in the
    /// console). A message whose digest was not computed never matches.
    Identity(DeadLetterId),
}

/// A conjunction of conditions; empty = everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// Conditions, all required.
    pub conditions: Vec<Condition>,
}

impl Filter {
    /// Parse CLI `K=V` filters: `reason=rejected`, `origin=v2`, `body~=text` (or `body=text`),
    /// `message_id=…`, `header.NAME=V` (or any other key, taken as a header name).
    pub fn parse(items: &[String]) -> Result<Self, crate::model::Invalid> {
        let mut conditions = Vec::new();
        for item in items {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("filter `{item}` is not K=V (e.g. reason=rejected)"))?;
            let k = k.trim();
            let c = match k {
                "reason" => Condition::Reason(v.to_string()),
                "origin" | "version" => Condition::Origin(v.to_string()),
                "body" | "body~" => Condition::BodyContains(v.to_string()),
                "message_id" | "id" => Condition::MessageId(v.to_string()),
                _ if k.is_empty() => return Err(format!("filter `{item}` has an empty key").into()),
                _ => Condition::Header(
                    k.strip_prefix("header.").unwrap_or(k).to_string(),
                    v.to_string(),
                ),
            };
            conditions.push(c);
        }
        Ok(Self { conditions })
    }
    /// Is the filter empty?
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
    /// Does matching need each message's digest ([`MessageView::digest`] filled in)?
    pub fn needs_digest(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| matches!(c, Condition::Identity(_)))
    }
    /// Does a message match? `ns` resolves origin versions; `body` is the full body.
    pub fn matches(&self, ns: &str, m: &MessageView) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::Reason(r) => m.attribution.reason.as_str() == r,
            Condition::Origin(o) => {
                m.attribution.origin_queue.as_deref().is_some_and(|q| {
                    q == o || version_of_queue(ns, q).as_deref() == Some(o.as_str())
                })
            }
            Condition::Header(k, v) => m.header(k) == Some(v.as_str()),
            Condition::BodyContains(t) => contains(&m.body, t.as_bytes()),
            Condition::MessageId(id) => m.message_id.as_deref() == Some(id.as_str()),
            Condition::Identity(id) => m.identity().as_ref() == Some(id),
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// How the inspector shows a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    /// JSON pretty-printed when it parses, text otherwise.
    #[default]
    Auto,
    /// Text (invalid UTF-8 shown as `�`).
    Text,
    /// Pretty JSON (falls back to text with a note).
    Json,
    /// Hex dump, 16 bytes a line.
    Hex,
}

impl BodyMode {
    /// Every choice: its name (as the CLI and JSON spell it) and a one-line description (the
    /// CLI's `--help` lists them).
    pub const CHOICES: [(BodyMode, &'static str, &'static str); 4] = [
        (
            BodyMode::Auto,
            "auto",
            "JSON pretty-printed when it parses, text otherwise",
        ),
        (BodyMode::Text, "text", "Text (invalid UTF-8 shown as `�`)"),
        (
            BodyMode::Json,
            "json",
            "Pretty JSON (falls back to text with a note)",
        ),
        (BodyMode::Hex, "hex", "Hex dump, 16 bytes a line"),
    ];

    /// The name (`auto`, `text`, `json`, `hex`).
    pub fn name(self) -> &'static str {
        choice_name(&Self::CHOICES, self)
    }
}

crate::display_as!(BodyMode, name);

impl std::str::FromStr for BodyMode {
    type Err = UnknownChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_choice(&Self::CHOICES, s)
    }
}

/// The kind of an inspector line, so the UI can style it (the CLI ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A section title.
    Title,
    /// `key: value`.
    Field,
    /// Body text.
    Body,
    /// JSON key line (for highlighting).
    JsonKey,
    /// A note from hopback (truncation, fallbacks).
    Note,
    /// Blank separator.
    Blank,
}

/// One line of the inspector: sanitised, no control characters, no newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectorLine {
    /// How to style it.
    pub kind: LineKind,
    /// The text, terminal-safe.
    pub text: String,
}

fn line(kind: LineKind, text: impl Into<String>) -> InspectorLine {
    InspectorLine {
        kind,
        text: text.into(),
    }
}

fn field(k: &str, v: &str) -> InspectorLine {
    line(
        LineKind::Field,
        format!("{}: {}", sanitize(k), preview(v.as_bytes(), 4096, 1000)),
    )
}

/// The inspector's content for one message: properties, headers, x-death history, replay count,
/// then the body in `mode`. Every line is terminal-safe (no control or bidi characters).
pub fn inspector_lines(m: &MessageView, mode: BodyMode) -> Vec<InspectorLine> {
    let label = match m.identity() {
        Some(id) => id.label(),
        None => m.message_id.as_deref().map_or_else(
            || "(no message id)".to_string(),
            |s| sanitize(s).into_owned(),
        ),
    };
    let mut out = vec![line(
        LineKind::Title,
        format!("Message {label} (#{} in this read)", m.position),
    )];
    if let Some(why) = &m.unreadable {
        out.push(line(LineKind::Note, unreadable_label(why)));
        out.push(line(
            LineKind::Note,
            "Its properties could not be read in full: only what could is shown. hopback never republishes it; a replay has the broker move it to the parking queue, a purge exports its body.",
        ));
    }
    if let Some(d) = &m.digest {
        out.push(field("digest", &format!("{DIGEST_PREFIX}{}", d.hex())));
    }
    let a = &m.attribution;
    out.push(field(
        "origin",
        a.origin_queue.as_deref().unwrap_or("(unknown)"),
    ));
    out.push(field("reason", a.reason.as_str()));
    out.push(field("replays (x-hopback-replays)", &a.replays.to_string()));
    out.push(field(
        "redelivered",
        if m.redelivered { "yes" } else { "no" },
    ));
    out.push(line(LineKind::Blank, ""));
    out.push(line(LineKind::Title, "Properties"));
    if m.properties.is_empty() {
        out.push(line(LineKind::Note, "(none)"));
    }
    for (k, v) in &m.properties {
        out.push(field(k, v));
    }
    out.push(line(LineKind::Blank, ""));
    out.push(line(LineKind::Title, "Headers"));
    if m.headers.is_empty() {
        out.push(line(LineKind::Note, "(none)"));
    }
    for (k, v) in &m.headers {
        out.push(field(k, v));
    }
    out.push(line(LineKind::Blank, ""));
    out.push(line(
        LineKind::Title,
        format!(
            "x-death history ({} entries, most recent first)",
            a.deaths.len()
        ),
    ));
    for d in &a.deaths {
        let when = d
            .time
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "?".into());
        out.push(line(
            LineKind::Field,
            format!(
                "{} ×{}  queue={}  exchange={}  keys={}  at {}",
                sanitize(d.reason.as_str()),
                d.count,
                sanitize(&d.queue),
                sanitize(&d.exchange),
                sanitize(&d.routing_keys.join(",")),
                when
            ),
        ));
    }
    out.push(line(LineKind::Blank, ""));
    out.extend(body_lines(m, mode));
    debug_assert!(out.iter().all(|l| crate::text::is_terminal_safe(&l.text)));
    out
}

/// The body section alone (the inspector's body pane switches modes without rebuilding the rest).
pub fn body_lines(m: &MessageView, mode: BodyMode) -> Vec<InspectorLine> {
    let shown = &m.body[..m.body.len().min(INSPECT_RENDER_BYTES)];
    let mut out = Vec::new();
    let parsed = match mode {
        BodyMode::Auto | BodyMode::Json if shown.len() == m.body_len => {
            serde_json::from_slice::<serde_json::Value>(shown).ok()
        }
        _ => None,
    };
    let effective = match (mode, &parsed) {
        (BodyMode::Auto, Some(_)) => BodyMode::Json,
        (BodyMode::Auto, None) => BodyMode::Text,
        (m, _) => m,
    };
    out.push(line(
        LineKind::Title,
        format!(
            "Body ({} bytes, {})",
            m.body_len,
            match effective {
                BodyMode::Json => "json",
                BodyMode::Hex => "hex",
                _ => "text",
            }
        ),
    ));
    match effective {
        BodyMode::Json => match parsed {
            Some(v) => {
                let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
                for l in pretty.lines() {
                    let kind = if l.trim_start().starts_with('"') && l.contains("\": ") {
                        LineKind::JsonKey
                    } else {
                        LineKind::Body
                    };
                    out.push(line(kind, sanitize(l).into_owned()));
                }
            }
            None => {
                out.push(line(
                    LineKind::Note,
                    "(not valid JSON, or too large to parse — shown as text)",
                ));
                out.extend(text_lines(shown));
            }
        },
        BodyMode::Hex => {
            // Hex is ~4.7× the bytes it shows: dump a quarter of the text budget.
            let shown = &shown[..shown.len().min(INSPECT_RENDER_BYTES / 4)];
            for (i, chunk) in shown.chunks(16).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let ascii: String = chunk
                    .iter()
                    .map(|&b| {
                        if (0x20..0x7f).contains(&b) {
                            b as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                out.push(line(
                    LineKind::Body,
                    format!("{:08x}  {:<47}  {}", i * 16, hex.join(" "), ascii),
                ));
            }
        }
        _ => out.extend(text_lines(shown)),
    }
    let shown_len = if effective == BodyMode::Hex {
        shown.len().min(INSPECT_RENDER_BYTES / 4)
    } else {
        shown.len()
    };
    if m.body_len > shown_len {
        out.push(line(
            LineKind::Note,
            format!(
                "… {} more bytes not shown (export the message to see all of it)",
                m.body_len - shown_len
            ),
        ));
    }
    out
}

fn text_lines(body: &[u8]) -> Vec<InspectorLine> {
    let text = String::from_utf8_lossy(body);
    let safe = sanitize_multiline(&text);
    safe.split('\n')
        .map(|l| {
            // Very long lines are cut so one line cannot cost the UI a megabyte of layout.
            let cut: String = l.chars().take(2000).collect();
            let cut = if l.chars().nth(2000).is_some() {
                format!("{cut}…")
            } else {
                cut
            };
            line(LineKind::Body, cut)
        })
        .collect()
}

/// The export record's format version (`format` in every record): 2 adds `amqp_properties`
/// (the properties and typed headers exactly as received), `exchange` and `routing_key`.
pub const EXPORT_FORMAT: u32 = 2;

/// The export record of one message — the one format of every export (`e` in the console,
/// `dlq show --export`, a purge's or a rollback's JSONL): raw values, JSON-escaped, the body as
/// base64 plus UTF-8 text when it is valid, and, when the message was loaded whole
/// ([`MessageView::lossless`]), its properties and typed headers as received, which is what
/// `dlq replay --from-file` publishes again. Without them `amqp_properties` is null and a
/// re-import refuses the record.
pub fn export_document(queue: &str, m: &MessageView) -> serde_json::Value {
    use base64::Engine;
    let body_text = std::str::from_utf8(&m.body).ok();
    let lossless = m.lossless.as_ref();
    serde_json::json!({
        "format": EXPORT_FORMAT,
        "queue": queue,
        "position": m.position,
        "digest": m.digest.map(|d| d.hex()),
        "exported_at": chrono::Utc::now().to_rfc3339(),
        "properties": m.properties.iter().cloned().collect::<BTreeMap<_, _>>(),
        "headers": m.headers.iter().cloned().collect::<BTreeMap<_, _>>(),
        "x_death": m.attribution.deaths,
        "origin_queue": m.attribution.origin_queue,
        "reason": m.attribution.reason.as_str(),
        "replays": m.attribution.replays,
        "redelivered": m.redelivered,
        "body_len": m.body_len,
        "body_truncated": m.body.len() < m.body_len,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&m.body),
        "body_text": body_text,
        "unreadable": m.unreadable,
        "amqp_properties": lossless.map(|l| l.amqp_properties.clone()),
        "exchange": lossless.map(|l| l.exchange.as_str()),
        "routing_key": lossless.map(|l| l.routing_key.as_str()),
    })
}

/// A dead letter's age, short: `42s`, `15m`, `3h`, `2d`; `?` when unknown.
pub fn fmt_age(s: Option<i64>) -> String {
    match s {
        None => "?".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) if s < 172_800 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::xdeath::DeathEntry;
    use crate::text::is_terminal_safe;

    #[test]
    fn choices_parse_and_print_their_names() {
        for (g, name, help) in GroupBy::CHOICES {
            assert_eq!(name.parse::<GroupBy>(), Ok(g));
            assert_eq!(g.to_string(), name);
            assert!(!help.is_empty());
        }
        for (b, name, _) in BodyMode::CHOICES {
            assert_eq!(name.parse::<BodyMode>(), Ok(b));
            assert_eq!(b.to_string(), name);
        }
        // The same spelling as serde's (JSON output) and clap's before: lowercase, exact case.
        assert_eq!(
            serde_json::to_value(GroupBy::Exception).ok(),
            Some(serde_json::json!("exception"))
        );
        let err = "Hex".parse::<BodyMode>().err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("invalid value `Hex` (possible values: auto, text, json, hex)")
        );
    }

    fn msg(
        pos: u64,
        origin: &str,
        reason: Reason,
        exc: Option<&str>,
        t: Option<i64>,
    ) -> MessageView {
        MessageView {
            position: pos,
            headers: exc
                .map(|e| vec![("x-exception".to_string(), e.to_string())])
                .unwrap_or_default(),
            attribution: Attribution {
                origin_queue: Some(origin.to_string()),
                reason: reason.clone(),
                deaths: vec![DeathEntry {
                    queue: origin.to_string(),
                    reason,
                    count: 1,
                    exchange: String::new(),
                    routing_keys: vec![],
                    time: t,
                }],
                replays: 0,
            },
            body: b"{\"a\":1}".to_vec(),
            body_len: 7,
            message_id: Some(format!("id-{pos}")),
            ..Default::default()
        }
    }

    fn ident(id: Option<&str>, byte: u8) -> DeadLetterId {
        DeadLetterId {
            message_id: id.map(str::to_string),
            digest: Digest([byte; 32]),
        }
    }

    #[test]
    fn lookup_prefers_message_id_then_digest_then_position() {
        let a = ident(Some("7"), 0xab);
        let b = ident(None, 0xcd);
        let c = ident(Some("order-1"), 0x12);
        let read = vec![(0, a.clone()), (7, b.clone()), (9, c.clone())];
        let one = |text: &str| Lookup::parse(text).unwrap().resolve(&read);
        // "7" is a message id here: the id wins over position 7.
        assert_eq!(
            one("7"),
            Resolution::One {
                index: 0,
                by: ResolvedBy::MessageId,
                copies: 1
            }
        );
        assert_eq!(b.label(), "sha:cdcdcdcdcdcd");
        for text in [
            "sha:cdcdcdcdcdcd",
            "cdcdcdcdcdcd",
            "CDCDCDCD",
            &b.digest.hex(),
        ] {
            assert_eq!(
                one(text),
                Resolution::One {
                    index: 1,
                    by: ResolvedBy::Digest,
                    copies: 1
                },
                "{text}"
            );
        }
        assert_eq!(
            one("9"),
            Resolution::One {
                index: 2,
                by: ResolvedBy::Position,
                copies: 1
            }
        );
        assert_eq!(one("8"), Resolution::NotFound);
        assert_eq!(one("order-2"), Resolution::NotFound);
        assert!(Lookup::parse("").is_err());
        assert!(Lookup::parse("sha:xyz").is_err());
        assert!(Lookup::parse("sha:abc").is_err(), "too short a prefix");
    }

    #[test]
    fn a_shared_message_id_is_ambiguous_unless_the_copies_are_identical() {
        let x1 = ident(Some("dup"), 1);
        let x2 = ident(Some("dup"), 2);
        let read = vec![(0, x1.clone()), (1, x2.clone()), (2, x1.clone())];
        let l = Lookup::parse("dup").unwrap();
        assert_eq!(
            l.resolve(&read),
            Resolution::Ambiguous {
                by: ResolvedBy::MessageId,
                ids: vec![x1.clone(), x2.clone()]
            }
        );
        // Its digest disambiguates; the two byte-identical copies are one message shown once.
        let by_digest = Lookup::parse(&x1.digest.label()).unwrap();
        assert_eq!(
            by_digest.resolve(&read),
            Resolution::One {
                index: 0,
                by: ResolvedBy::Digest,
                copies: 2
            }
        );
        assert!(by_digest.may_match(5, &x1) && !by_digest.may_match(5, &x2));
    }

    #[test]
    fn identity_condition_needs_the_digest() {
        let mut m = msg(0, "e.v2", Reason::Rejected, None, None);
        let id = ident(Some("id-0"), 9);
        let f = Filter {
            conditions: vec![Condition::Identity(id.clone())],
        };
        assert!(f.needs_digest());
        assert!(!f.matches("e", &m), "unknown digest never matches");
        m.digest = Some(Digest([9; 32]));
        assert!(f.matches("e", &m));
        m.digest = Some(Digest([8; 32]));
        assert!(!f.matches("e", &m), "same message id, other content");
        let s = summarize("e", &m, "x-exception", 0);
        assert_eq!(s.id, "id-0");
        m.message_id = None;
        let s = summarize("e", &m, "x-exception", 0);
        assert_eq!(s.id, "sha:080808080808");
        assert!(
            inspector_lines(&m, BodyMode::Auto)[0]
                .text
                .contains("sha:080808080808")
        );
    }

    #[test]
    fn groups_by_origin_reason_exception_and_age() {
        let now = 1_000_000;
        let items: Vec<Summary> = [
            msg(0, "e.v2", Reason::Rejected, Some("Boom"), Some(now - 10)),
            msg(1, "e.v2", Reason::Rejected, Some("Boom"), Some(now - 7200)),
            msg(2, "e.v1", Reason::Expired, None, None),
        ]
        .iter()
        .map(|m| summarize("e", m, "x-exception", now))
        .collect();
        let g = group(&items, GroupBy::Origin);
        assert_eq!(g[0].key, "v2");
        assert_eq!(g[0].count, 2);
        assert_eq!(g[0].positions, vec![0, 1]);
        assert_eq!(g[1].key, "v1");
        let r = group(&items, GroupBy::Reason);
        assert_eq!((r[0].key.as_str(), r[0].count), ("rejected", 2));
        assert_eq!((r[1].key.as_str(), r[1].count), ("expired", 1));
        let e = group(&items, GroupBy::Exception);
        assert_eq!(e[0].key, "Boom");
        assert_eq!(e[1].key, "no exception header");
        let a = group(&items, GroupBy::Age);
        let keys: Vec<&str> = a.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, vec!["< 1 min", "1–24 h", "unknown age"]);
        assert_eq!(a[1].oldest_age_s, Some(7200));
    }

    #[test]
    fn filters_parse_and_match() {
        let m = msg(0, "e.v2", Reason::Rejected, Some("Boom"), None);
        let f = |s: &[&str]| Filter::parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert!(
            f(&["reason=rejected", "origin=v2"])
                .unwrap()
                .matches("e", &m)
        );
        assert!(f(&["origin=e.v2"]).unwrap().matches("e", &m));
        assert!(!f(&["origin=v1"]).unwrap().matches("e", &m));
        assert!(f(&["x-exception=Boom"]).unwrap().matches("e", &m));
        assert!(f(&["header.x-exception=Boom"]).unwrap().matches("e", &m));
        assert!(!f(&["x-exception=Other"]).unwrap().matches("e", &m));
        assert!(f(&["body=\"a\""]).unwrap().matches("e", &m));
        assert!(!f(&["body=zzz"]).unwrap().matches("e", &m));
        assert!(f(&["id=id-0"]).unwrap().matches("e", &m));
        assert!(f(&["nokv"]).is_err());
        assert!(Filter::default().matches("e", &m));
    }

    #[test]
    fn hostile_message_renders_safely_in_every_mode() {
        let hostile = "\x1b]52;c;aGVsbG8=\x07\x1b]8;;http://evil\x1b\\x\x1b[2J\x1b[6n\x1bc\u{9b}31m invoice\u{202e}fdp.exe";
        let mut body = hostile.as_bytes().to_vec();
        body.extend_from_slice(b"\xff\xfe");
        let mut m = msg(
            3,
            "e.v2\x1b[2J",
            Reason::Other("x\x1bc".into()),
            Some(hostile),
            None,
        );
        m.properties = vec![("message_id".into(), hostile.into())];
        m.headers.push(("k\u{202e}".into(), hostile.into()));
        m.body_len = body.len();
        m.body = body;
        for mode in [
            BodyMode::Auto,
            BodyMode::Text,
            BodyMode::Json,
            BodyMode::Hex,
        ] {
            for l in inspector_lines(&m, mode) {
                assert!(is_terminal_safe(&l.text), "{mode:?}: {:?}", l.text);
                assert!(!l.text.contains('\n'));
            }
        }
        let s = summarize("e", &m, "x-exception", 0);
        for t in [
            s.preview.as_str(),
            s.exception.as_deref().unwrap_or(""),
            s.origin_queue.as_deref().unwrap_or(""),
            s.reason.as_str(),
        ] {
            assert!(is_terminal_safe(t), "{t:?}");
        }
        assert!(s.preview.contains('␛'));
    }

    #[test]
    fn json_body_is_pretty_and_hex_is_dumped() {
        let m = msg(0, "e.v1", Reason::Rejected, None, None);
        let lines = body_lines(&m, BodyMode::Auto);
        assert!(lines[0].text.contains("json"));
        assert!(
            lines
                .iter()
                .any(|l| l.kind == LineKind::JsonKey && l.text.contains("\"a\": 1"))
        );
        let hex = body_lines(&m, BodyMode::Hex);
        assert!(hex[1].text.starts_with("00000000  7b 22 61 22 3a 31 7d"));
    }

    #[test]
    fn big_body_is_bounded_in_the_inspector() {
        let mut m = msg(0, "e.v1", Reason::Rejected, None, None);
        m.body = vec![b'A'; 10 * 1024 * 1024];
        m.body_len = m.body.len();
        let lines = body_lines(&m, BodyMode::Text);
        let total: usize = lines.iter().map(|l| l.text.len()).sum();
        assert!(total < 10_000, "{total}");
        assert!(lines.last().unwrap().text.contains("more bytes not shown"));
        let doc = export_document("e.dlq", &m);
        assert_eq!(doc["body_len"], 10 * 1024 * 1024);
    }
}
