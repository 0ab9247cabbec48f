//! Hostile frames against the real broker (issue 31, item 3): messages RabbitMQ accepts but
//! lapin's parser could not read — header tables nested 2,000 and 10,000 deep (a stack overflow,
//! exit 134, before the patched parser in `vendor/amq-protocol`), short strings that are not
//! UTF-8 (a closed connection, and a mover that republished what it had prefetched on every
//! reconnect). Published byte for byte by `common::raw`. Every command exits normally, shows
//! them as unreadable, never republishes one, and the broker moves them whole to `NS.parked`
//! (replay) or they end in the export (purge); an unreadable ledger record is skipped with a
//! warning.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dlq_helpers;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine;
use common::TestNs;
use common::raw::{RawProps, RawPublisher, deep_headers, long_string, nested_table};
use common::record::{self, Outcome};
use dlq_helpers::*;
use futures::StreamExt;
use hopback::broker::headers::unreadable_reason;
use hopback::broker::topology::QueueType;
use hopback::ledger::{self, EventKind, Ledger};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

/// The environment of one test's CLI runs: its own data dir and ledger stream.
struct Env {
    _dir: tempfile::TempDir,
    vars: Vec<(&'static str, String)>,
    stream: String,
}

impl Env {
    fn new(ns: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stream = format!("hopback.ledger.{ns}");
        let vars = vec![
            (
                "HOPBACK_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            (
                "HOPBACK_LOG_FILE",
                dir.path().join("hopback.log").display().to_string(),
            ),
            ("HOPBACK_LEDGER_STREAM", stream.clone()),
        ];
        Env {
            _dir: dir,
            vars,
            stream,
        }
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self._dir.path().join(name)
    }
}

/// Run the CLI: (exit code, stdout, stderr). A process killed by a signal (the stack overflow's
/// SIGABRT) fails the test here, whatever the caller expects.
fn run(args: &[&str], env: &Env) -> (i32, String, String) {
    let mut c = common::bin();
    c.args(args);
    for (k, v) in &env.vars {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let Some(code) = out.status.code() else {
        panic!(
            "{args:?} was killed by a signal ({:?})\n{stderr}",
            out.status
        );
    };
    assert_ne!(code, 134, "{args:?} aborted\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("overflow"),
        "{args:?}\n{stderr}"
    );
    (code, stdout, stderr)
}

/// Publish raw messages to `queue` through the default exchange (blocking socket, own thread).
async fn publish_raw(queue: &str, messages: Vec<(RawProps, Vec<u8>)>) {
    publish_raw_to(&common::test_url(), queue, messages).await;
}

/// [`publish_raw`] on the broker and vhost of `url`.
async fn publish_raw_to(url: &str, queue: &str, messages: Vec<(RawProps, Vec<u8>)>) {
    let (q, url) = (queue.to_string(), url.to_string());
    tokio::task::spawn_blocking(move || {
        let mut p = RawPublisher::connect_to(&url);
        for (props, body) in &messages {
            p.publish("", &q, props, body);
        }
        p.close();
    })
    .await
    .unwrap();
}

/// A message with headers `depth` levels deep; `expire_now` makes it dead-letter at once when
/// published to a version queue.
fn deep_message(depth: usize, expire_now: bool) -> (RawProps, Vec<u8>) {
    (
        RawProps {
            headers: Some(deep_headers(
                depth,
                &[(b"x-exception", long_string(b"RecursionError"))],
            )),
            message_id: Some(format!("deep-{depth}").into_bytes()),
            expiration: expire_now.then(|| b"0".to_vec()),
            delivery_mode: Some(2),
            ..Default::default()
        },
        format!("deep body {depth}").into_bytes(),
    )
}

/// The two deep dead letters, in this order after the `before` already in the DLQ: 2,000 deep,
/// dead-lettered by the broker from v1 (so it carries x-death beside what cannot be read), and
/// 10,000 deep, published straight into the DLQ. (The broker re-encodes a table it decoded on
/// every delivery, in time quadratic in its depth: a 10,000-deep one costs 1.5–9 s per delivery
/// dead-lettered, ~3 s on 4.0.5 even published straight — the broker's cost, so this test
/// delivers it as few times as it can.)
async fn deep_dead_letters(s: &hopback::broker::session::Session, ns: &str, before: u32) {
    let dlq = format!("{ns}.dlq");
    publish_raw(&format!("{ns}.v1"), vec![deep_message(2_000, true)]).await;
    wait_depth(s, &dlq, before + 1, 20).await;
    publish_raw(&dlq, vec![deep_message(10_000, false)]).await;
    wait_depth(s, &dlq, before + 2, 20).await;
}

/// Everything in `queue`, consumed and removed: (body, why its properties are unreadable).
async fn take_all(
    session: &hopback::broker::session::Session,
    queue: &str,
) -> Vec<(Vec<u8>, Option<String>)> {
    let n = depth(session, queue).await as usize;
    let ch = session.channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "take-all".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the queue stopped delivering")
            .unwrap()
            .unwrap();
        out.push((d.data, unreadable_reason(d.properties.headers().as_ref())));
    }
    let _ = ch.close(200, "ok".into()).await;
    out
}

fn body(id: &str) -> Vec<u8> {
    format!("{{\"task\":\"{id}\"}}").into_bytes()
}

/// Warnings in `err` about a skipped ledger record that repeat an earlier one (the same record
/// reported twice by one run).
fn skipped_twice(err: &str) -> u64 {
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("skipped an unreadable record"))
        .collect();
    let distinct: BTreeSet<&str> = lines.iter().copied().collect();
    (lines.len() - distinct.len()) as u64
}

/// 2000 → "2,000" (the vector names in the reliability record).
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn headers_nested_2000_and_10000_deep_abort_nothing_and_are_quarantined_or_exported() {
    let t = TestNs::new("hfd", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let (v1, dlq, parked) = (
        format!("{ns}.v1"),
        format!("{ns}.dlq"),
        format!("{ns}.parked"),
    );
    let env = Env::new(&ns);
    // Three ordinary dead letters, then the two deep ones.
    publish(s, &v1, &ids("ok", 3), &body, None, true).await;
    wait_depth(s, &dlq, 3, 20).await;
    deep_dead_letters(s, &ns, 3).await;

    let (code, out, err) = run(&["status", &ns], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("2 dead letter(s) whose properties cannot be read"),
        "{out}"
    );

    let (code, out, err) = run(&["dlq", "list", &ns], &env);
    assert_eq!(code, 0, "{err}");
    let unreadable: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("unreadable (header `deep`: nested deeper than 64 levels"))
        .collect();
    assert_eq!(unreadable.len(), 2, "{out}");
    assert!(
        unreadable[0].contains("deep-2000") && unreadable[1].contains("deep-10000"),
        "{out}"
    );
    let listed = |d: usize| {
        unreadable
            .iter()
            .filter(|l| l.contains(&format!("deep-{d}")))
            .count() as u64
    };
    let listed = [listed(2_000), listed(10_000)];
    for (pos, depth) in [("3", 2_000), ("4", 10_000)] {
        let (code, out, err) = run(&["dlq", "show", &ns, pos], &env);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("unreadable (header `deep`"), "{out}");
        assert!(
            out.contains(&format!("deep body {depth}")),
            "the body is shown: {out}"
        );
        if depth == 2_000 {
            assert!(
                out.contains(&format!("origin: {v1}")),
                "x-death read: {out}"
            );
        }
    }
    wait_depth(s, &dlq, 5, 5).await;
    // Read paths: the 5 dead letters (3 readable, 2 deep) are all still in the DLQ, once.
    let after_reads = u64::from(depth(s, &dlq).await);
    let (read_lost, read_copied) = (
        5u64.saturating_sub(after_reads),
        after_reads.saturating_sub(5),
    );
    for (i, d) in [2_000, 10_000].into_iter().enumerate() {
        let vector = format!("hostile: headers nested {} deep", thousands(d));
        let kept = format!("DLQ held {after_reads} of the 5 dead letters after the reads");
        record::outcome(&Outcome {
            operation: "status".into(),
            fault: vector.clone(),
            lost: read_lost,
            duplicated: read_copied,
            result:
                "handled: exit 0, counted among `2 dead letter(s) whose properties cannot be read`"
                    .into(),
            note: kept.clone(),
            ..Default::default()
        });
        record::outcome(&Outcome {
            operation: "dlq list".into(),
            fault: vector.clone(),
            lost: read_lost,
            duplicated: read_copied + listed[i].saturating_sub(1),
            result:
                "handled: exit 0, listed as unreadable: header `deep` nested deeper than 64 levels"
                    .into(),
            note: format!("listed {} time(s); {kept}", listed[i]),
            ..Default::default()
        });
        record::outcome(&Outcome {
            operation: "dlq show".into(),
            fault: vector,
            lost: read_lost,
            duplicated: read_copied,
            result: if d == 2_000 {
                "handled: exit 0, shown as unreadable with its body and the x-death origin (v1)"
            } else {
                "handled: exit 0, shown as unreadable with its body (published straight to the DLQ: no x-death)"
            }
            .into(),
            note: kept,
            ..Default::default()
        });
    }

    // Replay (the client engine, which reads every message), first with a filter: judged on
    // what could be read, the 2,000-deep one (x-death says v1) is selected, the 10,000-deep one
    // (no origin) is not. The readable ones go home; the selected unreadable one is moved whole
    // by the broker to NS.parked — never republished.
    let (code, out, err) = run(
        &[
            "--json",
            "dlq",
            "replay",
            &ns,
            "--engine",
            "client",
            "--filter",
            "origin=v1",
            "--yes",
        ],
        &env,
    );
    assert_eq!(
        code, 4,
        "ran, but not everything reached the target\n{out}\n{err}"
    );
    assert!(
        err.contains("1 message(s)") && err.contains("could not be read"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["counts"]["moved"], 3, "{out}");
    assert_eq!(doc["counts"]["quarantined"], 1, "{out}");
    assert_eq!(doc["counts"]["unreadable_left"], 0, "{out}");
    assert_eq!(doc["counts"]["reconnects"], 0, "{out}");
    let kinds: Vec<(&str, &str)> = doc["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            assert_eq!(u["queue"], dlq.as_str(), "{out}");
            (
                u["outcome"]["kind"].as_str().unwrap(),
                u["outcome"]["queue"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("quarantined", parked.as_str()), ("not_selected", "")],
        "{out}"
    );
    assert_eq!(depth(s, &dlq).await, 1);
    // Then all: the one left is quarantined too.
    let (code, out, err) = run(
        &[
            "--json", "dlq", "replay", &ns, "--engine", "client", "--yes",
        ],
        &env,
    );
    assert_eq!(code, 4, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["counts"]["moved"], 0, "{out}");
    assert_eq!(doc["counts"]["quarantined"], 1, "{out}");
    assert_eq!(
        doc["unreadable"][0]["outcome"]["kind"], "quarantined",
        "{out}"
    );
    assert_eq!(depth(s, &dlq).await, 0);
    let home_ids: Vec<String> = drain_ids(s, &v1)
        .await
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let home: BTreeSet<String> = home_ids.iter().cloned().collect();
    assert_eq!(home, ids("ok", 3).into_iter().collect::<BTreeSet<_>>());
    let mut in_parked: Vec<(Vec<u8>, Option<String>)> = take_all(s, &parked).await;
    in_parked.sort();
    assert_eq!(in_parked.len(), 2, "nothing lost, nothing twice");
    for ((b, why), d) in in_parked.iter().zip([10_000, 2_000]) {
        assert_eq!(b, format!("deep body {d}").as_bytes());
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("nested deeper than 64")),
            "{why:?}"
        );
    }
    // Each deep one: found in NS.parked (by body) or in v1 (by message id), exactly once.
    let (ok_lost, ok_copied) = record::tally(&ids("ok", 3), &home_ids);
    for d in [2_000, 10_000] {
        let copies = in_parked
            .iter()
            .filter(|(b, _)| b == format!("deep body {d}").as_bytes())
            .count()
            + home_ids
                .iter()
                .filter(|i| **i == format!("deep-{d}"))
                .count();
        record::outcome(&Outcome {
            operation: "dlq replay (client engine)".into(),
            fault: format!("hostile: headers nested {} deep", thousands(d)),
            lost: u64::from(copies == 0),
            duplicated: (copies as u64).saturating_sub(1),
            result: if d == 2_000 {
                "quarantined: selected by `--filter origin=v1` (x-death readable), moved whole by the broker to NS.parked, never republished; exit 4"
            } else {
                "quarantined: not selected by `--filter origin=v1` (no x-death: no origin), left; the unfiltered replay moved it whole by the broker to NS.parked; exit 4"
            }
            .into(),
            note: format!(
                "in NS.parked or v1: {copies}; the 3 readable ones home in v1 ({ok_lost} lost, {ok_copied} copied); 0 reconnects"
            ),
            ..Default::default()
        });
    }

    // Purge: exported (body + reason), then removed; the export cannot be re-imported as if
    // its properties were whole.
    deep_dead_letters(s, &ns, 0).await;
    let export = env.path("purge.jsonl");
    let (code, out, err) = run(
        &[
            "dlq",
            "purge",
            &ns,
            "--yes",
            "--export",
            export.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(depth(s, &dlq).await, 0, "{out}\n{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut bodies: Vec<String> = lines
        .iter()
        .map(|l| {
            assert!(
                l["unreadable"]
                    .as_str()
                    .unwrap()
                    .contains("nested deeper than 64"),
                "{l}"
            );
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(l["body_base64"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec!["deep body 10000", "deep body 2000"]);
    for d in [2_000, 10_000] {
        let copies = bodies
            .iter()
            .filter(|b| **b == format!("deep body {d}"))
            .count() as u64;
        record::outcome(&Outcome {
            operation: "dlq purge".into(),
            fault: format!("hostile: headers nested {} deep", thousands(d)),
            lost: u64::from(copies == 0),
            duplicated: copies.saturating_sub(1),
            result: "handled: exported (body + why unreadable), then removed; exit 0".into(),
            note: format!("{copies} line(s) in the export; DLQ empty after"),
            ..Default::default()
        });
    }
    let (code, _, err) = run(
        &[
            "dlq",
            "replay",
            &ns,
            "--from-file",
            export.to_str().unwrap(),
            "--yes",
        ],
        &env,
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot be republished as it was"), "{err}");
    // Refused whole: nothing republished, the export unchanged.
    let republished = depth(s, &v1).await;
    assert_eq!(republished, 0, "a refused re-import republished");
    let still = std::fs::read_to_string(&export).unwrap();
    for d in [2_000, 10_000] {
        let kept = still
            .lines()
            .filter(|l| {
                l.contains(
                    &base64::engine::general_purpose::STANDARD
                        .encode(format!("deep body {d}").as_bytes()),
                )
            })
            .count() as u64;
        record::outcome(&Outcome {
            operation: "dlq replay --from-file".into(),
            fault: format!("hostile: headers nested {} deep", thousands(d)),
            lost: u64::from(kept == 0),
            duplicated: u64::from(republished),
            result: format!(
                "refused: exit {code}, a line marked unreadable cannot be republished as it was"
            ),
            note: format!(
                "v1 holds {republished} after the refusal; the export still holds its line ({kept})"
            ),
            ..Default::default()
        });
    }

    delete_queues(s, &[&parked]).await;
    let _ = ledger::delete_stream(s, &env.stream).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_drain_meets_a_non_utf8_message_id_once_and_quarantines_it() {
    let t = TestNs::new("hfu", &["v1", "v2"], QueueType::Quorum).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let (v1, v2, parked) = (
        format!("{ns}.v1"),
        format!("{ns}.v2"),
        format!("{ns}.parked"),
    );
    let env = Env::new(&ns);
    // 100 tasks, the bad one, 100 more: the mover has prefetched the second hundred when it
    // meets it (before the fix: 9 reconnects, each republishing what was prefetched).
    let (before, after) = (ids("a", 100), ids("b", 100));
    publish(s, &v2, &before, &body, None, false).await;
    publish_raw(
        &v2,
        vec![(
            RawProps {
                message_id: Some(b"bad\xff".to_vec()),
                delivery_mode: Some(2),
                ..Default::default()
            },
            b"the bad task".to_vec(),
        )],
    )
    .await;
    publish(s, &v2, &after, &body, None, false).await;
    wait_depth(s, &v2, 201, 10).await;

    let (code, out, err) = run(
        &[
            "--json", "dlq", "replay", &ns, "--from", "v2", "--to", "v1", "--yes",
        ],
        &env,
    );
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(
        err.contains("moved 200; 1 message(s)") && err.contains("1 quarantined"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["counts"]["moved"], 200, "{out}");
    assert_eq!(doc["counts"]["quarantined"], 1, "{out}");
    assert_eq!(doc["counts"]["reconnects"], 0, "{out}");
    assert_eq!(doc["counts"]["possible_duplicates"], 0, "{out}");
    let u = &doc["unreadable"][0];
    assert_eq!(u["queue"], v2.as_str(), "{out}");
    assert_eq!(u["position"], 100, "{out}");
    assert!(
        u["reason"]
            .as_str()
            .unwrap()
            .contains("`message_id` is not UTF-8"),
        "{out}"
    );
    assert_eq!(u["outcome"]["queue"], parked.as_str(), "{out}");

    // Exactly the 200 in v1, once each; the bad one in NS.parked, whole; v2 empty.
    let got = drain_ids(s, &v1).await;
    let counts: HashMap<String, usize> = counts(&got);
    assert_eq!(got.len(), 200, "{} delivered", got.len());
    assert_eq!(
        counts.len(),
        200,
        "duplicates: {}",
        got.len() - counts.len()
    );
    let want: BTreeSet<String> = before.iter().chain(&after).cloned().collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(depth(s, &v2).await, 0);
    let in_parked = take_all(s, &parked).await;
    assert_eq!(in_parked.len(), 1);
    assert_eq!(in_parked[0].0, b"the bad task");
    assert!(
        in_parked[0]
            .1
            .as_deref()
            .is_some_and(|w| w.contains("message_id")),
        "{in_parked:?}"
    );

    // The move's outcome is journaled with the quarantined message named.
    let ledger = Ledger::open_stream(s, &t.cfg, &env.stream).await;
    let events = ledger.read(ledger::StreamStart::First).await.unwrap();
    let outcome = events
        .iter()
        .find(|e| e.kind == EventKind::Move && e.outcome != ledger::Outcome::Started)
        .expect("the move's outcome event");
    assert_eq!(outcome.outcome, ledger::Outcome::VerificationFailed);
    assert_eq!(outcome.after["quarantined"], 1);
    assert_eq!(outcome.after["unreadable"][0]["position"], 100);
    let want: Vec<String> = want.into_iter().collect();
    let found: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    let (lost, copied) = record::tally(&want, &found);
    let bad = in_parked
        .iter()
        .filter(|(b, _)| b == b"the bad task")
        .count() as u64;
    record::outcome(&Outcome {
        operation: "drain (dlq replay --from v2)".into(),
        fault: "hostile: non-UTF-8 message_id among 200 tasks".into(),
        lost: lost + u64::from(bad == 0),
        duplicated: copied + bad.saturating_sub(1),
        result: "quarantined: met once (position 100), moved whole by the broker to NS.parked; the 200 others moved; exit 4, journaled verification_failed".into(),
        note: format!(
            "201 put in: {} of 200 in v1 ({} deliveries), {bad} in NS.parked; 0 reconnects, 0 possible duplicates",
            counts.len(),
            got.len()
        ),
        ..Default::default()
    });

    delete_queues(s, &[&parked]).await;
    let _ = ledger::delete_stream(s, &env.stream).await;
    t.cleanup().await;
}

#[tokio::test]
async fn an_unreadable_ledger_record_is_skipped_with_a_warning() {
    let t = TestNs::new("hfl", &["v1"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let env = Env::new(&ns);
    let ledger = Ledger::open_stream(&t.session, &t.cfg, &env.stream).await;
    assert!(ledger.is_stream());
    let before = ledger
        .append(
            ledger
                .event(EventKind::Note, Some(&ns))
                .reason("written before"),
        )
        .await
        .unwrap();
    // Two records a client cannot read: an event body under a non-UTF-8 message_id, and one
    // under headers 2,000 deep.
    let mut forged = before.clone();
    forged.id = uuid::Uuid::new_v4();
    let forged_body = serde_json::to_vec(&forged).unwrap();
    assert!(serde_json::from_slice::<hopback::ledger::Event>(&forged_body).is_ok());
    publish_raw(
        &env.stream,
        vec![
            (
                RawProps {
                    message_id: Some(b"ev\xfe".to_vec()),
                    ..Default::default()
                },
                forged_body.clone(),
            ),
            (
                RawProps {
                    headers: Some(deep_headers(2_000, &[])),
                    ..Default::default()
                },
                // Not an event either: a broker that stores stream records without their
                // nested headers (AMQP 1.0 application properties hold no tables) makes the
                // properties readable, and the record is then skipped for its body.
                b"{\"deep\": true}".to_vec(),
            ),
        ],
    )
    .await;
    ledger
        .append(
            ledger
                .event(EventKind::Note, Some(&ns))
                .reason("written after"),
        )
        .await
        .unwrap();

    // Twice: the second read starts from the local cache, which stops before the first
    // unreadable record, so it warns again.
    // Per run: the two readable notes not shown (lost); a note shown twice (the forged record is
    // a copy of "written before" under a new id) or a record warned about twice (copied).
    let (mut tl_lost, mut tl_copied) = (0u64, 0u64);
    for _ in 0..2 {
        let (code, out, err) = run(&["timeline", "--namespace", &ns], &env);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("written before") && out.contains("written after"),
            "{out}"
        );
        assert_eq!(
            err.matches("warning: ledger: skipped an unreadable record at offset")
                .count(),
            2,
            "{err}"
        );
        assert!(err.contains("`message_id` is not UTF-8"), "{err}");
        for note in ["written before", "written after"] {
            let shown = out.matches(note).count() as u64;
            tl_lost += u64::from(shown == 0);
            tl_copied += shown.saturating_sub(1);
        }
        tl_copied += skipped_twice(&err);
    }
    record::outcome(&Outcome {
        operation: "timeline".into(),
        fault: "hostile: unreadable ledger record".into(),
        lost: tl_lost,
        duplicated: tl_copied,
        result: "handled: exit 0, each unreadable record skipped with one warning naming its offset and why; the events around it shown".into(),
        note: "2 unreadable records (non-UTF-8 message_id on a copy of an event; headers 2,000 deep) between 2 notes; 2 runs (stream, then cache + stream)".into(),
        ..Default::default()
    });
    for (args, path) in [
        (vec!["history", ns.as_str()], "history"),
        (vec!["drill", "--history"], "drill --history"),
    ] {
        let (code, _, err) = run(&args, &env);
        assert_eq!(code, 0, "{args:?}: {err}");
        let warned = err.matches("skipped an unreadable record").count() as u64;
        assert_eq!(warned, 2, "{args:?}: {err}");
        record::outcome(&Outcome {
            operation: path.into(),
            fault: "hostile: unreadable ledger record".into(),
            // A readable record skipped would be a third warning.
            lost: warned.saturating_sub(2),
            duplicated: skipped_twice(&err),
            result: "handled: exit 0, the 2 unreadable records skipped with a warning each".into(),
            note: "lost = readable records skipped; copied = a record warned about twice".into(),
            ..Default::default()
        });
    }
    ledger::delete_stream(&t.session, &env.stream)
        .await
        .unwrap();
    t.cleanup().await;
}

/// The parser's own bound, without a broker: the iterative scan and the bounded recursive
/// parse, on a thread with a 1 MiB stack (recursing once per level of a 1,000,000-deep table
/// would need hundreds of megabytes).
#[test]
fn the_depth_scan_is_iterative_and_the_parse_bounded() {
    use lapin::types::parsing::{MAX_NESTING_DEPTH, parse_field_table};
    use lapin::types::scan::{Problem, scan_field_table};
    let handle = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(|| {
            let huge = nested_table(1_000_000);
            let err = scan_field_table(&huge, MAX_NESTING_DEPTH).unwrap_err();
            assert_eq!(
                err.problem,
                Problem::TooDeep {
                    max_depth: MAX_NESTING_DEPTH
                }
            );
            assert_eq!(err.len, Some(huge.len()));
            assert!(parse_field_table(&huge[..]).is_err());
            let ok = nested_table(MAX_NESTING_DEPTH);
            assert_eq!(scan_field_table(&ok, MAX_NESTING_DEPTH), Ok(ok.len()));
            assert!(parse_field_table(&ok[..]).is_ok());
            assert!(
                scan_field_table(&nested_table(MAX_NESTING_DEPTH + 1), MAX_NESTING_DEPTH).is_err()
            );
        })
        .unwrap();
    handle.join().unwrap();
}

/// The console in tmux (120×40) over the same hostile messages: the dead-letter view lists
/// them as unreadable, the inspector says why, a ledger record it cannot read is skipped with a
/// warning in the status line, and it quits normally (no abort, terminal restored). Waits are
/// long: each read of the page delivers the 10,000-deep message, ~3 s of broker time on 4.0.5.
#[tokio::test]
async fn the_console_shows_unreadable_messages_and_does_not_abort() {
    let t = TestNs::new("hft", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let env = Env::new(&ns);
    let ledger = Ledger::open_stream(s, &t.cfg, &env.stream).await;
    let bad_id = RawProps {
        message_id: Some(b"bad\xff".to_vec()),
        expiration: Some(b"0".to_vec()),
        ..Default::default()
    };
    publish_raw(
        &format!("{ns}.v1"),
        vec![deep_message(2_000, true), (bad_id, b"bad body".to_vec())],
    )
    .await;
    publish_raw(&format!("{ns}.dlq"), vec![deep_message(10_000, false)]).await;
    wait_depth(s, &format!("{ns}.dlq"), 3, 20).await;

    let mut vars: Vec<(&str, String)> = env.vars.clone();
    vars.push(("HOPBACK_CONFIG", "/nonexistent/hopback-test.toml".into()));
    vars.push(("TERM", "xterm-256color".into()));
    if let Ok(url) = std::env::var("HOPBACK_TEST_URL") {
        vars.push(("HOPBACK_URL", url));
    }
    if let Some(mgmt) = common::test_mgmt_override() {
        vars.push(("HOPBACK_MGMT_URL", mgmt));
    }
    let tm = common::tmux::Tmux::start("hostile", &vars);
    tm.literal(&format!(
        "{} ; echo EXITED $?",
        env!("CARGO_BIN_EXE_hopback")
    ));
    tm.keys(&["Enter"]);
    tm.wait(60, "the console", |s| s.contains(&ns));
    assert!(tm.alternate_on());
    tm.literal(":ns ");
    tm.literal(&ns);
    tm.keys(&["Enter"]);
    tm.keys(&["d"]);
    // The console starts with 32 KiB frames; the 10,000-deep headers (~70 KB) do not fit, the
    // broker's frame error closes that connection, and the console says to try again (new
    // connections take the broker's frame size) — the big-headers behaviour, unchanged here.
    let screen = tm.wait(60, "the dead-letter groups", |s| {
        s.contains(" group(s) · ") || s.contains("larger than this connection's frame")
    });
    let frame_retry = !screen.contains(" group(s) · ");
    if frame_retry {
        tm.keys(&["Escape"]);
        tm.keys(&["d"]);
        tm.wait(60, "the dead-letter groups", |s| s.contains(" group(s) · "));
    }
    // Both groups (v1: the 2,000-deep one and the bad message_id; ?: the 10,000-deep one)
    // hold only unreadable messages.
    let mut inspected = Vec::new();
    for group in 0..2 {
        if group > 0 {
            tm.keys(&["Escape"]);
            tm.wait(60, "the groups again", |s| s.contains(" group(s) · "));
            tm.keys(&["j"]);
        }
        tm.keys(&["Enter"]);
        tm.wait(60, "an unreadable message in the list", |s| {
            s.contains("unreadable (")
        });
        tm.keys(&["Enter"]);
        let screen = tm.wait(60, "the inspector", |s| {
            s.contains("could not be read in full") && s.contains("deep body")
                || s.contains("bad body")
        });
        inspected.extend(
            ["deep body 2000", "deep body 10000", "bad body"]
                .into_iter()
                .filter(|b| screen.contains(b)),
        );
        tm.keys(&["Escape"]);
    }
    // A ledger record the console cannot read, arriving live.
    publish_raw(
        &env.stream,
        vec![(
            RawProps {
                message_id: Some(b"ev\xfe".to_vec()),
                ..Default::default()
            },
            b"{}".to_vec(),
        )],
    )
    .await;
    tm.wait(60, "the skipped record's warning", |s| {
        s.contains("skipped an unreadable record")
    });
    tm.keys(&["q"]);
    let screen = tm.wait(60, "the shell after the console", |s| {
        s.lines()
            .any(|l| l.contains("EXITED ") && !l.contains("echo EXITED"))
    });
    assert!(
        screen.contains("EXITED 0"),
        "the console exited abnormally:\n{screen}"
    );
    assert!(
        !tm.alternate_on(),
        "still in the alternate screen:\n{screen}"
    );
    assert!(!screen.contains("panicked"), "{screen}");
    let kept = depth(s, &format!("{ns}.dlq")).await;
    assert_eq!(kept, 3, "browsing kept them");
    let (lost, copied) = (
        3u64.saturating_sub(kept.into()),
        u64::from(kept).saturating_sub(3),
    );
    for (vector, body) in [
        ("headers nested 2,000 deep", "deep body 2000"),
        ("headers nested 10,000 deep", "deep body 10000"),
        ("non-UTF-8 message_id", "bad body"),
    ] {
        let mut result = String::from("handled: listed as unreadable");
        if inspected.contains(&body) {
            result.push_str(", the inspector says it could not be read in full and shows the body");
        }
        if frame_retry && body == "deep body 10000" {
            result.push_str(
                "; the first page read was refused (larger than the 32 KiB frame) and said so, the retry listed it",
            );
        }
        result.push_str("; quit with exit 0, terminal restored");
        record::outcome(&Outcome {
            operation: "console".into(),
            fault: format!("hostile: {vector}"),
            lost,
            duplicated: copied,
            result,
            note: format!("tmux 120×40; the DLQ held {kept} of its 3 dead letters after browsing"),
            ..Default::default()
        });
    }
    record::outcome(&Outcome {
        operation: "console".into(),
        fault: "hostile: unreadable ledger record".into(),
        lost,
        duplicated: copied,
        result: "handled: a live record with a non-UTF-8 message_id skipped, warning in the status line; quit with exit 0, terminal restored".into(),
        note: format!("lost/copied count the 3 dead letters browsed alongside ({kept} kept)"),
        ..Default::default()
    });
    drop(tm);
    drop(ledger);
    let _ = ledger::delete_stream(s, &env.stream).await;
    t.cleanup().await;
}

/// A management API call for the test (guest, the test broker's API): panics unless 2xx.
async fn mgmt(method: reqwest::Method, path: &str, body: Option<serde_json::Value>) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", common::test_mgmt_url()))
        .basic_auth("guest", Some("guest"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

/// In a vhost of its own (named with a `/`, which a shovel URI must percent-encode — a bare
/// `amqp://` would mean the default vhost): the quarantine's shovels find the source and the
/// parking queue there.
#[tokio::test]
async fn a_quarantine_happens_in_the_moves_own_vhost() {
    let vhost = format!("{}/q", common::unique_ns("hfv"));
    let enc = percent_encoding::utf8_percent_encode(&vhost, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    mgmt(reqwest::Method::PUT, &format!("/api/vhosts/{enc}"), None).await;
    mgmt(
        reqwest::Method::PUT,
        &format!("/api/permissions/{enc}/guest"),
        Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    let base = url::Url::parse(&common::test_url()).unwrap();
    let url = format!(
        "amqp://guest:guest@{}:{}/{enc}",
        base.host_str().unwrap_or("127.0.0.1"),
        base.port().unwrap_or(5672)
    );
    let ns = common::unique_ns("hfv");
    let mut env = Env::new(&ns);
    env.vars.push(("HOPBACK_URL", url.clone()));
    env.vars.push(("HOPBACK_MGMT_URL", common::test_mgmt_url()));
    let (code, _, err) = run(&["init", &ns, "--versions", "v1,v2"], &env);
    assert_eq!(code, 0, "{err}");
    let task = |i: usize| {
        (
            RawProps {
                message_id: Some(format!("task-{i}").into_bytes()),
                ..Default::default()
            },
            body(&format!("task-{i}")),
        )
    };
    let mut messages: Vec<(RawProps, Vec<u8>)> = (0..10).map(task).collect();
    messages.push((
        RawProps {
            message_id: Some(b"bad\xff".to_vec()),
            ..Default::default()
        },
        b"the bad task".to_vec(),
    ));
    messages.extend((10..20).map(task));
    publish_raw_to(&url, &format!("{ns}.v2"), messages).await;

    let (code, out, err) = run(
        &[
            "--json", "dlq", "replay", &ns, "--from", "v2", "--to", "v1", "--yes",
        ],
        &env,
    );
    assert_eq!(code, 4, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["counts"]["moved"], 20, "{out}");
    assert_eq!(doc["counts"]["quarantined"], 1, "{out}");
    assert_eq!(doc["unreadable"][0]["position"], 10, "{out}");

    let cfg = hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        &std::path::PathBuf::from("/nonexistent/hopback-test.toml"),
        false,
        &hopback::config::Overrides {
            url: Some(url.clone()),
            mgmt_url: Some(common::test_mgmt_url()),
            ..Default::default()
        },
    )
    .unwrap();
    let s = common::connect(&cfg, "test").await;
    assert_eq!(depth(&s, &format!("{ns}.v1")).await, 20);
    assert_eq!(depth(&s, &format!("{ns}.v2")).await, 0);
    let parked = take_all(&s, &format!("{ns}.parked")).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, b"the bad task");
    let home: Vec<String> = drain_ids(&s, &format!("{ns}.v1"))
        .await
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let tasks: Vec<String> = (0..20).map(|i| format!("task-{i}")).collect();
    let (lost, copied) = record::tally(&tasks, &home);
    let bad = parked.iter().filter(|(b, _)| b == b"the bad task").count() as u64;
    record::outcome(&Outcome {
        operation: "drain (dlq replay --from v2)".into(),
        fault: "hostile: non-UTF-8 message_id in a vhost named with a `/`".into(),
        lost: lost + u64::from(bad == 0),
        duplicated: copied + bad.saturating_sub(1),
        result: "quarantined: the shovels' URIs carry the vhost; moved whole to NS.parked there; the 20 others moved; exit 4".into(),
        note: format!("21 put in: {} in v1, {bad} in NS.parked, v2 empty", home.len()),
        ..Default::default()
    });
    s.close().await;
    mgmt(reqwest::Method::DELETE, &format!("/api/vhosts/{enc}"), None).await;
}

/// When the broker cannot move it (here: the management API the shovels are declared through is
/// unreachable), the message stays in the source, is reported once, and the move neither loops
/// on it nor republishes anything twice.
#[tokio::test]
async fn an_unreadable_message_the_broker_cannot_move_is_left_and_reported_once() {
    let t = TestNs::new("hfn", &["v1", "v2"], QueueType::Quorum).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let (v1, v2) = (format!("{ns}.v1"), format!("{ns}.v2"));
    let mut env = Env::new(&ns);
    // Nothing listens on port 9 (discard): every management call fails at once.
    env.vars
        .push(("HOPBACK_MGMT_URL", "http://127.0.0.1:9".into()));
    publish(s, &v2, &ids("a", 10), &body, None, false).await;
    publish_raw(
        &v2,
        vec![(
            RawProps {
                message_id: Some(b"bad\xff".to_vec()),
                ..Default::default()
            },
            b"the bad task".to_vec(),
        )],
    )
    .await;
    publish(s, &v2, &ids("b", 10), &body, None, false).await;
    wait_depth(s, &v2, 21, 10).await;
    let (code, out, err) = run(
        &[
            "--json", "dlq", "replay", &ns, "--from", "v2", "--to", "v1", "--yes",
        ],
        &env,
    );
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("1 left in place"), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["counts"]["moved"], 20, "{out}");
    assert_eq!(doc["counts"]["quarantined"], 0, "{out}");
    assert_eq!(doc["counts"]["unreadable_left"], 1, "{out}");
    assert_eq!(doc["counts"]["reconnects"], 0, "{out}");
    let listed = doc["unreadable"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "reported once: {out}");
    assert_eq!(listed[0]["outcome"]["kind"], "left", "{out}");
    assert!(
        listed[0]["outcome"]["why"]
            .as_str()
            .unwrap()
            .contains("refused the shovel"),
        "{out}"
    );
    let got = drain_ids(s, &v1).await;
    assert_eq!(got.len(), 20);
    assert_eq!(counts(&got).len(), 20, "nothing twice");
    let left = depth(s, &v2).await;
    assert_eq!(left, 1, "the bad one stays in the source");
    let tasks: Vec<String> = ids("a", 10).into_iter().chain(ids("b", 10)).collect();
    let found: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    let (lost, copied) = record::tally(&tasks, &found);
    record::outcome(&Outcome {
        operation: "drain (dlq replay --from v2)".into(),
        fault: "hostile: non-UTF-8 message_id the broker cannot move (shovels refused)".into(),
        lost: lost + u64::from(left == 0),
        duplicated: copied + u64::from(left).saturating_sub(1),
        result: "handled: left in v2 and reported once (`left`: the management API refused the shovel), no loop; the 20 others moved; exit 4".into(),
        note: format!("21 put in: {} in v1, {left} left in v2; 0 reconnects", got.len()),
        ..Default::default()
    });
    let _ = ledger::delete_stream(s, &env.stream).await;
    t.cleanup().await;
}
