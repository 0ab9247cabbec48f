//! Basic properties that this crate's types cannot hold — a short string (`message_id`, `type`,
//! a header key, …) that is not UTF-8, headers nested deeper than the parsers accept, a value of
//! an unknown type — are legal on the wire as far as RabbitMQ is concerned: it accepts and
//! delivers them. Failing the content-header frame over them closes the whole connection and
//! leaves the message at the head of its queue, so every reader meets it again. Instead the
//! properties are read field by field, iteratively, and what cannot be read is left out and
//! named in one header, [`UNREADABLE_PROPERTIES_HEADER`]; the frame, the body and the delivery
//! go on as usual. A client seeing that header knows the properties it holds are not the
//! message's own, so it must not republish them as if they were.

use crate::{
    protocol::{UNREADABLE_PROPERTIES_HEADER, basic::AMQPProperties},
    types::{
        AMQPType, AMQPValue, FieldTable, LongString, ShortString,
        parsing::{MAX_NESTING_DEPTH, parse_field_table, parse_raw_value},
        scan::{self, Unreadable},
    },
};
use nom::Parser;

/// Longest header key quoted in the reason.
const MAX_QUOTED_KEY: usize = 64;

/// What reading the properties found.
pub(crate) enum Checked {
    /// Everything can be read: parse as usual.
    Readable,
    /// What could be read, and [`UNREADABLE_PROPERTIES_HEADER`] saying what could not.
    Unreadable(AMQPProperties),
}

#[derive(Clone, Copy)]
enum Kind {
    Short,
    Octet,
    Long64,
    Table,
}

/// The basic class's properties in flag order (bit 15 first).
const FIELDS: [(&str, Kind); 14] = [
    ("content_type", Kind::Short),
    ("content_encoding", Kind::Short),
    ("headers", Kind::Table),
    ("delivery_mode", Kind::Octet),
    ("priority", Kind::Octet),
    ("correlation_id", Kind::Short),
    ("reply_to", Kind::Short),
    ("expiration", Kind::Short),
    ("message_id", Kind::Short),
    ("timestamp", Kind::Long64),
    ("type", Kind::Short),
    ("user_id", Kind::Short),
    ("app_id", Kind::Short),
    ("cluster_id", Kind::Short),
];

/// Check the encoded basic properties in `bytes` (flags first) without recursion.
pub(crate) fn check_properties(bytes: &[u8]) -> Checked {
    if readable(bytes) {
        Checked::Readable
    } else {
        Checked::Unreadable(salvage(bytes))
    }
}

/// Can the generated parser read all of these properties? One pass, no allocation.
fn readable(bytes: &[u8]) -> bool {
    let Some(flags) = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    let mut pos = 2usize;
    for (bit, (_, kind)) in FIELDS.iter().enumerate() {
        if flags & (1 << (15 - bit)) == 0 {
            continue;
        }
        let rest = &bytes[pos.min(bytes.len())..];
        let taken = match kind {
            Kind::Short => {
                let n = rest.first().map(|n| usize::from(*n));
                match n.and_then(|n| rest.get(1..1 + n)) {
                    Some(raw) if std::str::from_utf8(raw).is_ok() => 1 + raw.len(),
                    _ => return false,
                }
            }
            Kind::Octet => 1,
            Kind::Long64 => 8,
            Kind::Table => match scan::scan_field_table(rest, MAX_NESTING_DEPTH) {
                Ok(n) => n,
                Err(_) => return false,
            },
        };
        if taken > rest.len() {
            return false;
        }
        pos += taken;
    }
    true
}

/// What can be read of properties [`readable`] refused, marked with what could not.
fn salvage(bytes: &[u8]) -> AMQPProperties {
    let mut problems: Vec<String> = Vec::new();
    let mut props = AMQPProperties::default();
    let Some(flags) = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return marked(props, &["the property flags are missing".into()]);
    };
    let mut pos = 2usize;
    for (bit, (name, kind)) in FIELDS.iter().enumerate() {
        if flags & (1 << (15 - bit)) == 0 {
            continue;
        }
        let rest = &bytes[pos.min(bytes.len())..];
        let taken = match kind {
            Kind::Short => short_string(rest).map(|(n, s)| {
                match s {
                    Some(s) => props = with_short(std::mem::take(&mut props), name, s),
                    None => problems.push(format!("property `{name}` is not UTF-8; left out")),
                }
                n
            }),
            Kind::Octet => rest.first().map(|b| {
                let p = std::mem::take(&mut props);
                props = if *name == "priority" {
                    p.with_priority(*b)
                } else {
                    p.with_delivery_mode(*b)
                };
                1
            }),
            Kind::Long64 => rest.get(..8).map(|b| {
                let mut t = [0u8; 8];
                t.copy_from_slice(b);
                props = std::mem::take(&mut props).with_timestamp(u64::from_be_bytes(t));
                8
            }),
            Kind::Table => match scan::scan_field_table(rest, MAX_NESTING_DEPTH) {
                Ok(n) => {
                    match parse_field_table(&rest[..n]) {
                        Ok((_, t)) => props = std::mem::take(&mut props).with_headers(t),
                        Err(_) => problems.push("the headers cannot be parsed; left out".into()),
                    }
                    Some(n)
                }
                Err(Unreadable { len: Some(n), .. }) => {
                    let (t, mut found) = salvage_headers(&rest[..n]);
                    problems.append(&mut found);
                    props = std::mem::take(&mut props).with_headers(t);
                    Some(n)
                }
                Err(Unreadable { problem, len: None }) => {
                    problems.push(format!("the headers: {problem}; left out"));
                    None
                }
            },
        };
        match taken {
            Some(n) => pos += n,
            None => {
                problems.push(format!(
                    "the properties end inside `{name}`; it and any after it are left out"
                ));
                break;
            }
        }
    }
    if problems.is_empty() {
        // Not expected (`readable` said otherwise); say so rather than pass it as whole.
        problems.push("the properties could not be parsed".into());
    }
    marked(props, &problems)
}

/// A short string at the start of `input`: (bytes taken, the string if it is UTF-8).
fn short_string(input: &[u8]) -> Option<(usize, Option<ShortString>)> {
    let n = usize::from(*input.first()?);
    let raw = input.get(1..1 + n)?;
    Some((
        1 + n,
        std::str::from_utf8(raw).ok().map(|s| ShortString::from(s)),
    ))
}

fn with_short(props: AMQPProperties, name: &str, s: ShortString) -> AMQPProperties {
    match name {
        "content_type" => props.with_content_type(s),
        "content_encoding" => props.with_content_encoding(s),
        "correlation_id" => props.with_correlation_id(s),
        "reply_to" => props.with_reply_to(s),
        "expiration" => props.with_expiration(s),
        "message_id" => props.with_message_id(s),
        "type" => props.with_type(s),
        "user_id" => props.with_user_id(s),
        "app_id" => props.with_app_id(s),
        _ => props.with_cluster_id(s),
    }
}

/// The readable entries of an unreadable headers table (`table` is exactly the table's bytes,
/// length prefix included), and what was left out.
fn salvage_headers(table: &[u8]) -> (FieldTable, Vec<String>) {
    let mut out = FieldTable::default();
    let mut problems = Vec::new();
    let mut pos = 4usize;
    while pos < table.len() {
        let Some((key_len, key)) = short_string(&table[pos..]) else {
            problems.push("the headers end inside a key; the rest is left out".into());
            break;
        };
        pos += key_len;
        let Some(&type_id) = table.get(pos) else {
            problems.push("the headers end after a key; the rest is left out".into());
            break;
        };
        pos += 1;
        let named = match &key {
            Some(k) => format!("header `{}`", quoted(k.as_str())),
            None => "a header whose key is not UTF-8".to_string(),
        };
        // The headers table is depth 1: a table in it starts at depth 2.
        match scan::scan_value(type_id, &table[pos..], MAX_NESTING_DEPTH - 1) {
            Ok(n) => {
                let value = &table[pos..pos + n];
                pos += n;
                let Some(key) = key else {
                    problems.push(format!("{named}: left out"));
                    continue;
                };
                let parsed = AMQPType::from_id(type_id as char)
                    .and_then(|t| parse_raw_value(t).parse(value).ok())
                    .map(|(_, v)| v);
                match parsed {
                    Some(v) => {
                        out.insert(key, v);
                    }
                    None => problems.push(format!("{named}: cannot be parsed; left out")),
                }
            }
            Err(Unreadable { problem, len }) => {
                let problem = match problem {
                    // Counted from the headers table, as the parsers count it.
                    scan::Problem::TooDeep { .. } => scan::Problem::TooDeep {
                        max_depth: MAX_NESTING_DEPTH,
                    },
                    other => other,
                };
                problems.push(format!("{named}: {problem}; left out"));
                match len {
                    Some(n) => pos += n,
                    None => {
                        problems.push("the headers after it cannot be delimited".into());
                        break;
                    }
                }
            }
        }
    }
    (out, problems)
}

/// A key as quoted in the reason: at most [`MAX_QUOTED_KEY`] characters.
fn quoted(key: &str) -> String {
    let mut s: String = key.chars().take(MAX_QUOTED_KEY).collect();
    if s.len() < key.len() {
        s.push('…');
    }
    s
}

/// `props` with [`UNREADABLE_PROPERTIES_HEADER`] = the problems, one after the other.
fn marked(props: AMQPProperties, problems: &[String]) -> AMQPProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(UNREADABLE_PROPERTIES_HEADER),
        AMQPValue::LongString(LongString::from(problems.join("; "))),
    );
    props.with_headers(headers)
}
