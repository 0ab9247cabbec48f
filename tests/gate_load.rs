//! The gate under load (issue 6 "Must show"): no message lost or duplicated while the gate flips
//! ≥ 50 times through random targets under a full-speed producer, and canary accuracy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use hopback::ledger::{self, Ledger};
use hopback::model::gate::GateSplit;
use hopback::ops::gate::{self, GateRequest};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use rand::Rng;
use tokio::sync::Mutex;

/// Publish ids `0..n` to the entry exchange with a window of confirms; returns how many were
/// not confirmed as routed (returned or nacked) — must be 0.
async fn produce(cfg: &hopback::config::Config, ns: &str, n: u64) -> u64 {
    let s = common::connect(cfg, "producer").await;
    let ch = s.confirm_channel().await.unwrap();
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut bad = 0u64;
    for i in 0..n {
        let c = ch
            .basic_publish(
                ns.into(),
                "".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &i.to_le_bytes(),
                BasicProperties::default().with_message_id(i.to_string().as_str().into()),
            )
            .await
            .unwrap();
        inflight.push(c);
        while inflight.len() >= 2000 {
            let conf = inflight.next().await.unwrap().unwrap();
            if !matches!(conf, lapin::Confirmation::Ack(None)) {
                bad += 1;
            }
        }
    }
    while let Some(conf) = inflight.next().await {
        if !matches!(conf.unwrap(), lapin::Confirmation::Ack(None)) {
            bad += 1;
        }
    }
    s.close().await;
    bad
}

type Seen = Arc<Mutex<HashMap<u64, Vec<String>>>>;

async fn consume_all(
    cfg: &hopback::config::Config,
    queues: Vec<String>,
    seen: Seen,
) -> Arc<hopback::broker::session::Session> {
    let s = common::connect(cfg, "collector").await;
    for q in queues {
        let ch = s.channel().await.unwrap();
        ch.basic_qos(2000, BasicQosOptions::default())
            .await
            .unwrap();
        let mut c = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let seen = seen.clone();
        tokio::spawn(async move {
            let _ch = ch;
            while let Some(Ok(d)) = c.next().await {
                let id: u64 = d
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .as_str()
                    .parse()
                    .unwrap();
                seen.lock().await.entry(id).or_default().push(q.clone());
            }
        });
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_no_duplication_while_flipping_under_load() {
    const N: u64 = 200_000;
    let t = common::TestNs::new("gateload", &["v1", "v2", "v3"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let stream = format!("hopback.ledger.{}", t.ns);
    let ledger = std::sync::Arc::new(Ledger::open_stream(&t.session, &t.cfg, &stream).await);
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let mut queues: Vec<String> = t.versions.iter().map(|v| format!("{}.{v}", t.ns)).collect();
    queues.push(format!("{}.unrouted", t.ns));
    let collector = consume_all(&t.cfg, queues, seen.clone()).await;

    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let cfg = t.cfg.clone();
        let ns = t.ns.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let bad = produce(&cfg, &ns, N).await;
            done.store(true, Ordering::SeqCst);
            bad
        })
    };
    let targets = [
        vec![("v1", 100)],
        vec![("v2", 100)],
        vec![("v3", 100)],
        vec![("v1", 90), ("v2", 10)],
        vec![("v1", 50), ("v2", 50)],
        vec![("v1", 1), ("v2", 99)],
        vec![("v1", 10), ("v2", 20), ("v3", 70)],
        vec![("v2", 95), ("v3", 5)],
    ];
    let mut flips = 0u32;
    let mut latencies = Vec::new();
    let mut rng = rand::rng();
    let started = Instant::now();
    while !done.load(Ordering::SeqCst) || flips < 50 {
        let pick = &targets[rng.random_range(0..targets.len())];
        let target = GateSplit::from_pairs(pick.iter().map(|(v, w)| (v.to_string(), *w)));
        let r = gate::apply(
            &hopback::ops::OpContext::of(
                &t.session,
                &mgmt,
                &ledger,
                &t.cfg,
                hopback::ops::Via::Cli,
            ),
            &GateRequest {
                namespace: t.ns.clone(),
                target,
                reason: Some(format!("flip {flips}")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(r.verified);
        if r.changed {
            flips += 1;
            latencies.push(r.elapsed_ms);
        }
    }
    let flipped_during_publish = done.load(Ordering::SeqCst);
    let bad = producer.await.unwrap();
    assert_eq!(bad, 0, "publishes not confirmed as routed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().await.len() < N as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().await;
    let lost: Vec<u64> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    let dup: Vec<(&u64, &Vec<String>)> = seen.iter().filter(|(_, qs)| qs.len() > 1).collect();
    let unexpected: Vec<&u64> = seen.keys().filter(|i| **i >= N).collect();
    let unrouted = seen
        .values()
        .filter(|qs| qs[0].ends_with(".unrouted"))
        .count();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "gate under load: {N} messages, {flips} flips in {:.1} s (median flip {:.1} ms), lost {}, duplicated {}, unexpected {}, landed in unrouted {unrouted}",
        started.elapsed().as_secs_f64(),
        latencies[latencies.len() / 2],
        lost.len(),
        dup.len(),
        unexpected.len()
    );
    assert!(flips >= 50 && flipped_during_publish, "only {flips} flips");
    assert!(
        lost.is_empty(),
        "lost {} ids, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        dup.is_empty(),
        "duplicated {} ids, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(5)]
    );
    assert!(unexpected.is_empty());
    assert_eq!(
        unrouted, 0,
        "correct flip order must never leave the exchange without bindings"
    );
    collector.close().await;
    ledger::delete_stream(&t.session, &stream).await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_ten_percent_is_accurate() {
    const N: u64 = 100_000;
    let t = common::TestNs::new("canary", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
    let target = GateSplit::from_pairs([("v1".to_string(), 90), ("v2".to_string(), 10)]);
    let r = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &GateRequest {
            namespace: t.ns.clone(),
            target,
            force_zero_consumers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.verified);
    assert_eq!(produce(&t.cfg, &t.ns, N).await, 0);
    let v1 = t
        .session
        .passive_queue(&format!("{}.v1", t.ns))
        .await
        .unwrap()
        .unwrap()
        .ready;
    let v2 = t
        .session
        .passive_queue(&format!("{}.v2", t.ns))
        .await
        .unwrap()
        .unwrap()
        .ready;
    let pct = f64::from(v2) * 100.0 / N as f64;
    eprintln!("canary v1=90 v2=10 over {N} ids: v1 {v1}, v2 {v2} ({pct:.2} %)");
    assert_eq!(u64::from(v1 + v2), N);
    assert!((8.5..=11.5).contains(&pct), "v2 got {pct:.2} %");
    t.cleanup().await;
}
