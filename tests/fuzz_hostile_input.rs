//! Property-based fuzzing (proptest) of the three parsers that eat untrusted input: the config
//! loader (TOML from disk), the x-death / header decoder (AMQP tables from any producer) and the
//! text sanitiser (every byte that reaches the terminal). Each property must hold for every input:
//! no panic, and for the sanitiser, no control/bidi character in the output. Each target records
//! its case count and run time for the reliability report (`HOPBACK_FUZZ_CASES` sets the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hopback::broker::headers::attribute;
use hopback::config;
use hopback::text::{is_terminal_safe, preview, sanitize, sanitize_bytes, sanitize_multiline};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

mod common;

use common::record;

fn cases() -> u32 {
    std::env::var("HOPBACK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Strings biased towards what hurts terminals: ESC sequences, C1, bidi, NUL, long runs.
fn hostile_string() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("\x1b]52;c;aGVsbG8=\x07".to_string()),
        Just("\x1b[2J".to_string()),
        Just("\x1b[6n".to_string()),
        Just("\x1bc".to_string()),
        Just("\u{9b}".to_string()),
        Just("\u{202e}".to_string()),
        Just("\u{2066}".to_string()),
        Just("\x00\x07\x08\x7f".to_string()),
        any::<char>().prop_map(|c| c.to_string()),
        "[a-z0-9 .=]{0,8}",
    ];
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

fn amqp_value(depth: u32) -> BoxedStrategy<AMQPValue> {
    let leaf = prop_oneof![
        hostile_string().prop_map(|s| AMQPValue::LongString(LongString::from(s))),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        Just(AMQPValue::Void),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => prop::collection::vec(amqp_value(depth - 1), 0..4).prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
        1 => prop::collection::vec((prop_oneof![Just("queue".to_string()), Just("reason".to_string()), Just("count".to_string()), Just("time".to_string()), Just("routing-keys".to_string()), "[a-z-]{1,10}"], amqp_value(depth - 1)), 0..5)
            .prop_map(|kv| {
                let mut t = FieldTable::default();
                for (k, v) in kv {
                    t.insert(ShortString::from(k), v);
                }
                AMQPValue::FieldTable(t)
            }),
    ]
    .boxed()
}

/// Run one property for `cases()` cases with proptest's runner, time it, and record it for the
/// reliability report (`record::fuzz`); a failing case fails the test with the minimal input.
fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = cases();
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let started = std::time::Instant::now();
    if let Err(e) = runner.run(&strategy, property) {
        panic!("{target}: {e}");
    }
    record::fuzz(target, u64::from(cases), started.elapsed().as_secs_f64());
}

#[test]
fn sanitiser_never_emits_controls() {
    fuzz(
        "text sanitiser (sanitize, sanitize_multiline, sanitize_bytes, preview)",
        (hostile_string(), prop::collection::vec(any::<u8>(), 0..200)),
        |(s, bytes)| {
            prop_assert!(is_terminal_safe(&sanitize(&s)));
            let multi = sanitize_multiline(&s);
            prop_assert!(
                multi
                    .chars()
                    .all(|c| c == '\n' || is_terminal_safe(&c.to_string()))
            );
            prop_assert!(is_terminal_safe(&sanitize_bytes(&bytes)));
            let p = preview(&bytes, 64, 20);
            prop_assert!(is_terminal_safe(&p));
            prop_assert!(p.chars().count() <= 20);
            Ok(())
        },
    );
}

#[test]
fn header_decoder_never_panics() {
    fuzz(
        "x-death / header decoder (attribute)",
        (
            prop::collection::vec(amqp_value(3), 0..6),
            hostile_string(),
            amqp_value(0),
        ),
        |(entries, first, replays)| {
            let mut h = FieldTable::default();
            h.insert(
                ShortString::from("x-death"),
                AMQPValue::FieldArray(FieldArray::from(entries)),
            );
            h.insert(
                ShortString::from("x-first-death-queue"),
                AMQPValue::LongString(LongString::from(first.clone())),
            );
            h.insert(ShortString::from("x-hopback-replays"), replays);
            let a = attribute(Some(&h));
            if !first.is_empty() {
                prop_assert_eq!(a.origin_queue.as_deref(), Some(first.as_str()));
            }
            // x-death of the wrong type is tolerated too.
            let mut h2 = FieldTable::default();
            h2.insert(
                ShortString::from("x-death"),
                AMQPValue::LongString(LongString::from(first)),
            );
            prop_assert!(attribute(Some(&h2)).deaths.is_empty());
            Ok(())
        },
    );
}

#[test]
fn config_loader_never_panics_and_errors_are_one_safe_line() {
    let text = prop_oneof![
        hostile_string(),
        // Structurally plausible TOML with hostile values and keys.
        (hostile_string(), hostile_string(), "[a-z_]{1,12}").prop_map(|(a, b, k)| format!(
            "default_profile = {a:?}\n[profiles.p]\nurl = {b:?}\n{k} = 1\n"
        )),
        ("[a-z_]{1,12}", any::<i64>()).prop_map(|(k, v)| format!(
            "[profiles.x]\n{k} = {v}\n[profiles.x.namespaces.n]\nversion_queue_regex = \"(?P<version>v\\\\d+\"\n"
        )),
    ];
    fuzz("config loader (parse + resolve)", text, |text| {
        match config::parse(&text, Path::new("fuzz.toml")) {
            Ok(raw) => {
                let r = config::resolve(
                    raw,
                    Path::new("fuzz.toml"),
                    true,
                    &config::Overrides::default(),
                );
                if let Err(e) = r {
                    prop_assert!(is_terminal_safe(&e.to_string()), "{}", e);
                }
            }
            Err(e) => {
                let line = e.to_string();
                prop_assert!(is_terminal_safe(&line), "{}", line);
                prop_assert!(!line.contains('\n'));
                prop_assert!(line.contains("fuzz.toml"));
            }
        }
        Ok(())
    });
}

#[test]
fn headers_nested_100_deep_are_decoded_without_stack_trouble() {
    let mut v = AMQPValue::LongString(LongString::from("leaf"));
    for _ in 0..100 {
        let mut t = FieldTable::default();
        t.insert(ShortString::from("queue"), v);
        v = AMQPValue::FieldTable(t);
    }
    let mut h = FieldTable::default();
    h.insert(
        ShortString::from("x-death"),
        AMQPValue::FieldArray(FieldArray::from(vec![v])),
    );
    let a = attribute(Some(&h));
    assert_eq!(a.deaths.len(), 1);
    assert_eq!(
        a.deaths[0].queue, "",
        "a table where a string belongs is not a queue name"
    );
}
