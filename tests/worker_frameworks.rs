//! Real worker fleets (issue 37): tasks exactly as a Celery 5 producer publishes them (the
//! fixture recorded from a real `send_task`, tests/fixtures/workers/README.md) and dead letters
//! as Spring AMQP's republisher leaves them.
//!
//! - a canary at 90/10 splits within a few points for each `--hash-on` (a Celery-shaped fleet
//!   with no `message_id` included);
//! - changing what the gate hashes under a running producer loses and duplicates no task, and
//!   is journaled;
//! - a fleet the gate cannot split is named by `status`, with the cause;
//! - `init` picks the field from tasks already in the namespace's queues;
//! - Spring's exception header groups dead letters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::session::Session;
use hopback::broker::topology::QueueType;
use hopback::ledger::{EventKind, Ledger, Outcome, StreamStart};
use hopback::model::gate::GateSplit;
use hopback::model::hash::HashOn;
use hopback::ops::gate::GateRequest;
use hopback::ops::hash_on::{HashOnRequest, change};
use hopback::ops::{OpContext, Via};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The recorded Celery task: its properties (typed headers included) and body.
fn celery_fixture() -> (BasicProperties, Vec<u8>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/workers/celery5_send_task.jsonl");
    let mut m = hopback::broker::export::read_export(&path).unwrap();
    let m = m.remove(0);
    (m.properties, m.body)
}

/// A new task as the same producer would publish it: a fresh task id in `correlation_id` and
/// the `id` and `root_id` headers, everything else exactly as recorded.
fn celery_task(base: &BasicProperties, id: &str) -> BasicProperties {
    let mut h = base.headers().clone().unwrap();
    for k in ["id", "root_id"] {
        h.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(id)),
        );
    }
    base.clone().with_correlation_id(id.into()).with_headers(h)
}

/// A namespace made with `init_hashing` (cleaned up by `TestNs::cleanup`, which also removes
/// the gate exchanges behind the entry).
async fn namespace(prefix: &str, hash: &HashOn) -> common::TestNs {
    let cfg = common::test_config();
    let session = common::connect(&cfg, "test").await;
    let ns = common::unique_ns(prefix);
    let versions = vec!["v1".to_string(), "v2".to_string()];
    hopback::broker::topology::init_hashing(&session, &ns, &versions, QueueType::Classic, hash)
        .await
        .unwrap();
    common::TestNs {
        ns,
        versions,
        cfg,
        session,
    }
}

fn cx(t: &common::TestNs, ledger: &Arc<Ledger>) -> OpContext {
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    OpContext::of(&t.session, &mgmt, ledger, &t.cfg, Via::Cli)
}

async fn gate(t: &common::TestNs, ledger: &Arc<Ledger>, v1: u32, v2: u32) {
    let r = hopback::ops::gate::apply(
        &cx(t, ledger),
        &GateRequest {
            namespace: t.ns.clone(),
            target: GateSplit::from_pairs([("v1".into(), v1), ("v2".into(), v2)]),
            force_zero_consumers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.verified);
}

/// How a test producer shapes each task: its properties and routing key, from its id.
type Shape = dyn Fn(&str) -> (BasicProperties, String) + Sync;

/// Publish `n` tasks to the entry exchange with confirms and `mandatory`; `shape` gives each
/// task's properties and routing key. Returns the ids the broker confirmed.
async fn publish(
    session: &Session,
    exchange: &str,
    n: usize,
    shape: &Shape,
    body: &[u8],
) -> Vec<String> {
    let ch = session.confirm_channel().await.unwrap();
    let mut ok = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for chunk in ids.chunks(500) {
        let mut pending = Vec::new();
        for id in chunk {
            let (p, rk) = shape(id);
            let c = ch
                .basic_publish(
                    exchange.into(),
                    rk.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    body,
                    p,
                )
                .await
                .unwrap();
            pending.push((id.clone(), c));
        }
        for (id, c) in pending {
            let conf = c.await.unwrap();
            assert!(matches!(conf, lapin::Confirmation::Ack(None)), "{conf:?}");
            ok.push(id);
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    ok
}

async fn ready(session: &Session, q: &str) -> u64 {
    u64::from(session.passive_queue(q).await.unwrap().unwrap().ready)
}

/// Wait until v1 + v2 + unrouted hold `n` messages; returns (v1, v2, unrouted).
async fn settled(t: &common::TestNs, n: u64) -> (u64, u64, u64) {
    let ns = &t.ns;
    let mut last = (0, 0, 0);
    for _ in 0..100 {
        last = (
            ready(&t.session, &format!("{ns}.v1")).await,
            ready(&t.session, &format!("{ns}.v2")).await,
            ready(&t.session, &format!("{ns}.unrouted")).await,
        );
        if last.0 + last.1 + last.2 >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[test]
fn the_fixture_is_what_celery_publishes() {
    let (p, body) = celery_fixture();
    assert_eq!(p.message_id(), &None, "Celery sets no message_id");
    let h = p.headers().as_ref().unwrap().inner();
    let id = match h.get(&ShortString::from("id")) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("id header: {other:?}"),
    };
    assert_eq!(p.correlation_id().as_ref().map(|c| c.to_string()), Some(id));
    assert_eq!(h.get(&ShortString::from("eta")), Some(&AMQPValue::Void));
    match h.get(&ShortString::from("timelimit")) {
        Some(AMQPValue::FieldArray(a)) => {
            assert_eq!(a.as_slice(), &[AMQPValue::Void, AMQPValue::Void]);
        }
        other => panic!("timelimit: {other:?}"),
    }
    assert_eq!(
        h.get(&ShortString::from("stamps")),
        Some(&AMQPValue::FieldTable(FieldTable::default()))
    );
    assert!(body.starts_with(b"[[2, 3]"));
}

/// For each `--hash-on`, 1,000 tasks through a 90/10 gate: v2 gets 5–15 %, nothing is unrouted.
#[tokio::test]
async fn a_90_10_canary_splits_within_a_few_points_for_each_hash_on() {
    let (base, body) = celery_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(HashOn, Box<Shape>)> = vec![
        // A producer that sets message_id (Celery does not; see the README).
        (
            HashOn::MessageId,
            Box::new({
                let b = base.clone();
                move |id| {
                    (
                        celery_task(&b, id).with_message_id(id.into()),
                        "celery".into(),
                    )
                }
            }),
        ),
        // Celery as recorded: no message_id, the constant routing key `celery`.
        (
            HashOn::CorrelationId,
            Box::new({
                let b = base.clone();
                move |id| (celery_task(&b, id), "celery".into())
            }),
        ),
        (
            HashOn::Header("id".into()),
            Box::new({
                let b = base.clone();
                move |id| (celery_task(&b, id), "celery".into())
            }),
        ),
        // A producer that routes by key (per task).
        (
            HashOn::RoutingKey,
            Box::new({
                let b = base.clone();
                move |id| (celery_task(&b, id), id.to_string())
            }),
        ),
    ];
    for (hash, shape) in cases {
        let t = namespace("hash", &hash).await;
        let ledger = Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
        gate(&t, &ledger, 90, 10).await;
        let sent = publish(&t.session, &t.ns, 1000, shape.as_ref(), &body).await;
        assert_eq!(sent.len(), 1000);
        let (v1, v2, unrouted) = settled(&t, 1000).await;
        assert_eq!((v1 + v2, unrouted), (1000, 0), "{hash}");
        let pct = v2 as f64 / 10.0;
        assert!((5.0..=15.0).contains(&pct), "{hash}: v2 got {pct} %");
        common::record::figure(
            &format!("canary_v2_pct_{hash}"),
            pct,
            "%",
            "1,000 Celery-shaped tasks through a 90/10 gate",
        );
        t.cleanup().await;
    }
}

/// Drain `queue`, returning each task id (the `id` header) and how often it was seen.
async fn drain_ids(session: &Session, queue: &str, into: &mut HashMap<String, usize>) {
    let ch = session.channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut c = ch
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(1500), c.next()).await {
        let id = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(&ShortString::from("id")).cloned())
        {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("a message without a task id: {other:?}"),
        };
        *into.entry(id).or_default() += 1;
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// A producer publishes Celery tasks (confirms, `mandatory`) without pause while the gate's hash
/// moves message_id → header:id → correlation_id → message_id → correlation_id: every confirmed
/// task is in a version queue exactly once, none is returned or unrouted; each change is
/// journaled (started, then ok) and verified; the weights never change; afterwards the canary
/// splits by the new field.
#[tokio::test]
async fn changing_what_the_gate_hashes_under_a_running_producer_loses_nothing() {
    let (base, body) = celery_fixture();
    let t = namespace("hashmove", &HashOn::MessageId).await;
    let ns = t.ns.clone();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
    gate(&t, &ledger, 90, 10).await;

    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, base, body, ns) = (stop.clone(), base.clone(), body.clone(), ns.clone());
        let session = common::connect(&t.cfg, "producer").await;
        tokio::spawn(async move {
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let b = base.clone();
                let batch = publish(
                    &session,
                    &ns,
                    100,
                    &move |id| (celery_task(&b, id), "celery".into()),
                    &body,
                )
                .await;
                sent.extend(batch);
            }
            session.close().await;
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = 0;
    for field in [
        HashOn::Header("id".into()),
        HashOn::CorrelationId,
        HashOn::MessageId,
        HashOn::CorrelationId,
    ] {
        let r = change(
            &cx(&t, &ledger),
            &HashOnRequest {
                namespace: ns.clone(),
                hash_on: field.clone(),
                reason: Some("test".into()),
                dry_run: false,
            },
        )
        .await
        .unwrap();
        assert!(r.changed && r.verified, "{r:?}");
        assert_eq!(r.after, field.to_string());
        assert_eq!(
            r.split,
            GateSplit::from_pairs([("v1".into(), 90), ("v2".into(), 10)])
        );
        events += 2;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = producer.await.unwrap();
    assert!(
        sent.len() > 500,
        "the producer ran throughout ({} tasks)",
        sent.len()
    );
    let (v1, v2, unrouted) = settled(&t, sent.len() as u64).await;
    assert_eq!(unrouted, 0);
    assert_eq!(v1 + v2, sent.len() as u64);
    let mut seen = HashMap::new();
    for q in ["v1", "v2", "unrouted"] {
        drain_ids(&t.session, &format!("{ns}.{q}"), &mut seen).await;
    }
    let lost: Vec<&String> = sent.iter().filter(|id| !seen.contains_key(*id)).collect();
    let dup: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(dup.is_empty(), "duplicated: {dup:?}");
    assert_eq!(seen.len(), sent.len(), "nothing unexpected arrived");
    common::record::figure(
        "hash_change_tasks_during",
        sent.len() as f64,
        "tasks",
        "published with confirms during four hash changes; 0 lost, 0 duplicated",
    );

    // The gate now hashes correlation_id, behind the entry: Celery tasks split 90/10.
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let layout = hopback::broker::hashgate::read_layout(
        &mgmt,
        &hopback::topology::Namespace::convention(&ns),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(layout.behind() && layout.problems.is_empty());
    let b = base.clone();
    publish(
        &t.session,
        &ns,
        1000,
        &move |id| (celery_task(&b, id), "celery".into()),
        &body,
    )
    .await;
    let (v1, v2, _) = settled(&t, 1000).await;
    assert_eq!(v1 + v2, 1000);
    assert!((50..=150).contains(&v2), "v2 got {v2} of 1000");

    let journal: Vec<_> = ledger
        .read(StreamStart::First)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::GateHash)
        .collect();
    assert_eq!(journal.len(), events);
    assert!(
        journal
            .iter()
            .step_by(2)
            .all(|e| e.outcome == Outcome::Started)
    );
    assert!(
        journal
            .iter()
            .skip(1)
            .step_by(2)
            .all(|e| e.outcome == Outcome::Ok)
    );
    t.cleanup().await;
}

/// Read-only refuses, a dry run changes nothing, and `init --hash-on` on an existing namespace
/// that hashes something else is refused with the way to change it.
#[tokio::test]
async fn refusals_change_nothing() {
    let t = namespace("hashref", &HashOn::MessageId).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
    let mut ro = t.cfg.clone();
    ro.profile.read_only = true;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let req = HashOnRequest {
        namespace: t.ns.clone(),
        hash_on: HashOn::CorrelationId,
        reason: None,
        dry_run: false,
    };
    let e = change(
        &OpContext::of(&t.session, &mgmt, &ledger, &ro, Via::Cli),
        &req,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "refused");
    let dry = change(
        &cx(&t, &ledger),
        &HashOnRequest {
            dry_run: true,
            ..req
        },
    )
    .await
    .unwrap();
    assert!(!dry.changed && !dry.steps.is_empty() && dry.event.is_none());
    let names = hopback::topology::Namespace::convention(&t.ns);
    let layout = hopback::broker::hashgate::read_layout(&mgmt, &names)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(layout.hash_on, Ok(HashOn::MessageId));
    assert!(!layout.behind());
    assert!(ledger.read(StreamStart::First).await.unwrap().is_empty());

    let out = common::bin()
        .env("HOPBACK_DATA_DIR", dir.path())
        .env("HOPBACK_LEDGER_STREAM", format!("hopback.ledger.{}", t.ns))
        .args([
            "init",
            &t.ns,
            "--queue-type",
            "classic",
            "--hash-on",
            "correlation_id",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("hashes message_id") && err.contains("gate hash-on"),
        "{err}"
    );
    let _ = hopback::ledger::delete_stream(&t.session, &format!("hopback.ledger.{}", t.ns)).await;
    t.cleanup().await;
}

/// The must-show of issue 37: a Celery fleet (no message_id) through a gate hashing message_id
/// at 90/10 — `status` says the split is not happening, and why, from a sample of the tasks.
#[tokio::test]
async fn status_says_the_split_is_not_happening_and_why() {
    let (base, body) = celery_fixture();
    let t = namespace("hashstat", &HashOn::MessageId).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
    gate(&t, &ledger, 90, 10).await;
    let b = base.clone();
    publish(
        &t.session,
        &t.ns,
        300,
        &move |id| (celery_task(&b, id), "celery".into()),
        &body,
    )
    .await;
    let (v1, v2, _) = settled(&t, 300).await;
    // Every Celery task hashes alike on message_id: all on one version (which one depends on
    // where the hash of "no value" falls).
    assert!(
        (v1, v2) == (300, 0) || (v1, v2) == (0, 300),
        "every Celery task hashes alike on message_id: {v1}/{v2}"
    );
    let cold = if v1 == 0 { "v1" } else { "v2" };
    // An idle v2 worker, named as Celery fleets are named here: `status --json` lists it.
    let worker = hopback::broker::session::connect_named(
        &t.cfg.profile,
        &format!("{} worker v2 (celery)", t.ns),
    )
    .await
    .unwrap();
    let wch = worker.channel().await.unwrap();
    let _consumer = wch
        .basic_consume(
            format!("{}.v2", t.ns).as_str().into(),
            "celery-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The broker samples its counters every 5 s: poll `status` until they show the tasks.
    let mut last = serde_json::Value::Null;
    for _ in 0..40 {
        let out = common::bin()
            .env("HOPBACK_LEDGER_STREAM", format!("hopback.ledger.{}", t.ns))
            .args(["--json", "status", &t.ns, "--no-attribution"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = serde_json::from_slice(&out.stdout).unwrap();
        // Done when the counters show the tasks, the sample was read (a browse that lost a
        // race with another test's load is retried by the next reading) and the worker is listed.
        let n = &last["namespaces"][0];
        if n["split_check"]["check"]["verdict"] == "differs"
            && n["split_check"]["sample"]["sampled"].as_u64() > Some(0)
            && n["versions"][1]["connections"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = &last["namespaces"][0];
    assert_eq!(n["hash_on"], "message_id");
    assert_eq!(n["split_check"]["check"]["verdict"], "differs", "{n}");
    assert_eq!(n["split_check"]["check"]["degenerate"], true);
    assert_eq!(n["measured"]["tasks"][cold], 0);
    assert_eq!(
        n["versions"][1]["connections"],
        serde_json::json!([format!("{} worker v2 (celery)", t.ns)]),
        "{n}"
    );
    let cause = n["split_check"]["cause"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("100 % of")
            && cause.contains("have no message_id: the gate cannot split them"),
        "{n}"
    );
    assert!(cause.contains("gate hash-on"), "{cause}");
    // The human table says it too.
    let out = common::bin()
        .args(["status", &t.ns, "--no-attribution"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(!) the split is not happening"), "{text}");
    assert!(text.contains("v2 workers: "), "{text}");
    worker.close().await;
    let _ = hopback::ledger::delete_stream(&t.session, &format!("hopback.ledger.{}", t.ns)).await;
    t.cleanup().await;
}

/// `init` without `--hash-on` in front of a queue that already holds Celery tasks picks the
/// field that splits them (`correlation_id`), and says why.
#[tokio::test]
async fn init_chooses_what_to_hash_from_tasks_already_there() {
    let (base, body) = celery_fixture();
    let cfg = common::test_config();
    let session = common::connect(&cfg, "test").await;
    let ns = common::unique_ns("hashinit");
    let v1 = format!("{ns}.v1");
    // The version queue exactly as `init --queue-type classic` declares it, tasks already in it.
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(format!("{ns}.dlx").as_str().into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(v1.as_str().into()),
    );
    let ch = session.channel().await.unwrap();
    ch.queue_declare(
        v1.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let b = base.clone();
    publish(
        &session,
        "",
        20,
        &move |id| (celery_task(&b, id), v1.clone()),
        &body,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("hopback.ledger.{ns}");
    let out = common::bin()
        .env("HOPBACK_DATA_DIR", dir.path())
        .env("HOPBACK_LEDGER_STREAM", &stream)
        .args(["--json", "init", &ns, "--queue-type", "classic"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["hash_on"], "correlation_id", "{j}");
    assert!(
        j["hash_on_why"]
            .as_str()
            .unwrap()
            .contains("20 task(s) already in"),
        "{j}"
    );
    let _ = hopback::ledger::delete_stream(&session, &stream).await;
    hopback::broker::topology::delete_namespace(&session, &ns, &["v1".into(), "v2".into()])
        .await
        .unwrap();
    session.close().await;
}

/// Dead letters as Spring AMQP's `RepublishMessageRecoverer` republishes them (its four headers)
/// group by `--exception-header x-exception-message`; a Celery task rejected from v1 is
/// attributed to v1 by its `x-death`.
#[tokio::test]
async fn spring_and_celery_dead_letters_group_and_attribute() {
    let (base, body) = celery_fixture();
    let t = namespace("hashdl", &HashOn::CorrelationId).await;
    let ns = t.ns.clone();
    let spring = |msg: &str| {
        let mut h = FieldTable::default();
        for (k, v) in [
            (
                "x-exception-stacktrace",
                format!(
                    "org.springframework.amqp.AmqpRejectAndDontRequeueException: {msg}\n\tat com.example.Listener.onMessage(Listener.java:42)\n"
                ),
            ),
            ("x-exception-message", msg.to_string()),
            ("x-original-exchange", ns.clone()),
            ("x-original-routingKey", "orders".to_string()),
        ] {
            h.insert(k.into(), AMQPValue::LongString(v.as_str().into()));
        }
        BasicProperties::default()
            .with_message_id(uuid::Uuid::new_v4().to_string().as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(h)
    };
    let dlq = format!("{ns}.dlq");
    for m in ["Order 17 not found", "Order 17 not found", "timeout"] {
        let (p, q) = (spring(m), dlq.clone());
        publish(&t.session, "", 1, &move |_| (p.clone(), q.clone()), b"{}").await;
    }
    // A Celery task that expires in v1: a real dead letter with x-death.
    let v1 = format!("{ns}.v1");
    let b = base.clone();
    publish(
        &t.session,
        "",
        1,
        &move |id| (celery_task(&b, id).with_expiration("0".into()), v1.clone()),
        &body,
    )
    .await;
    for _ in 0..50 {
        if ready(&t.session, &format!("{ns}.dlq")).await == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = common::bin()
        .args([
            "--json",
            "dlq",
            "list",
            &ns,
            "--group-by",
            "exception",
            "--exception-header",
            "x-exception-message",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups: BTreeMap<String, u64> = j["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(groups.get("Order 17 not found"), Some(&2), "{groups:?}");
    assert_eq!(groups.get("timeout"), Some(&1), "{groups:?}");
    let celery = j["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"].is_null())
        .unwrap();
    assert_eq!(celery["origin_version"], "v1", "{celery}");
    assert_eq!(celery["reason"], "expired");
    t.cleanup().await;
}

/// `gate set` (its measured-split check is on by default): with Celery tasks flowing, a flip the tasks cannot follow
/// (the gate hashes message_id) fails its verification (exit 4) and journals an alert; after
/// `gate hash-on correlation_id` the same kind of flip verifies.
// Two worker threads: the producer keeps publishing while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_s_verification_includes_the_measured_split() {
    let (base, body) = celery_fixture();
    let t = namespace("hashflip", &HashOn::MessageId).await;
    let ns = t.ns.clone();
    let stream = format!("hopback.ledger.{ns}");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, base, body, ns) = (stop.clone(), base.clone(), body.clone(), ns.clone());
        let session = common::connect(&t.cfg, "producer").await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let b = base.clone();
                publish(
                    &session,
                    &ns,
                    20,
                    &move |id| (celery_task(&b, id), "celery".into()),
                    &body,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            session.close().await;
        })
    };
    let run = |args: &[&str]| {
        let out = common::bin()
            .env("HOPBACK_LEDGER_STREAM", &stream)
            // The real default of the split check.
            .env_remove("HOPBACK_VERIFY_SPLIT")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let flip = |v1: &str, v2: &str| {
        vec![
            "gate".to_string(),
            "set".into(),
            ns.clone(),
            format!("v1={v1}"),
            format!("v2={v2}"),
            "--yes".into(),
            "--force-zero-consumers".into(),
            "--verify-split".into(),
            "40s".into(),
        ]
    };
    // The flip checks the split only when the management API has seen tasks in the last
    // minute: wait for the producer to show in its samples.
    let mgmt = hopback::broker::mgmt::Mgmt::new(&t.cfg.profile).unwrap();
    let names = hopback::topology::Namespace::resolve(&t.cfg, &ns);
    let queues: std::collections::BTreeMap<String, String> = ["v1", "v2"]
        .iter()
        .filter_map(|v| Some((v.to_string(), names.version_queue(v)?)))
        .collect();
    let seen = tokio::time::Instant::now() + Duration::from_secs(30);
    while hopback::broker::split::measure(&mgmt, &queues, 60)
        .await
        .is_none_or(|m| m.total() == 0)
    {
        assert!(
            tokio::time::Instant::now() < seen,
            "no publish samples in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let a = flip("90", "10");
    let (code, out, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(4), "{out}{err}");
    assert!(out.contains("checking the split that happens"), "{out}");
    assert!(
        out.contains("(!) since the flip: the split is not happening"),
        "{out}"
    );
    assert!(
        err.contains("do not follow it") && err.contains("gate hash-on"),
        "{err}"
    );
    let (code, out, err) = run(&["gate", "hash-on", &ns, "correlation_id", "--yes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The default: the same check, without asking for it.
    let mut b = flip("50", "50");
    b.truncate(b.len() - 2);
    let (code, out, err) = run(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("since the flip: measured") && out.contains("(as configured)"),
        "{out}"
    );
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let (code, out, _) = run(&["--json", "timeline", "--namespace", &ns, "--format", "json"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("alert_raised") && out.contains("ALERT the split is not happening"),
        "{out}"
    );
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}

/// `gate hash-on NS auto` (an adopted or existing namespace with traffic): the field a sample of
/// the tasks waiting in its queues can be split by.
#[tokio::test]
async fn hash_on_auto_picks_the_field_the_tasks_carry() {
    let (base, body) = celery_fixture();
    let t = namespace("hashauto", &HashOn::MessageId).await;
    let v1 = format!("{}.v1", t.ns);
    let b = base.clone();
    publish(
        &t.session,
        "",
        20,
        &move |id| (celery_task(&b, id), v1.clone()),
        &body,
    )
    .await;
    let stream = format!("hopback.ledger.{}", t.ns);
    let out = common::bin()
        .env("HOPBACK_LEDGER_STREAM", &stream)
        .args(["--json", "gate", "hash-on", &t.ns, "auto", "--yes"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("20 sampled task(s)"), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["after"], "correlation_id", "{j}");
    assert_eq!(j["verified"], true);
    // The sampled tasks are all still there.
    assert_eq!(ready(&t.session, &format!("{}.v1", t.ns)).await, 20);
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}
