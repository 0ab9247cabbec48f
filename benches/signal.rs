//! Error signal latency: a v2 worker nacks (`requeue=false`) → the dead letter is visible in the
//! console's app state (the tap, `broker::tap::run`, → `Msg::Tap` → `AppState::handle_msg` →
//! `state.tap.totals`). Messages are published to `NS.v2` of a throwaway classic namespace
//! (`bench-signal-…`) at a steady rate; the worker records when it sends each nack; the figure is
//! p99 of nack → visible over ≥ 200 samples (target < 250 ms).
//!
//! Baseline, in the same run: what a management-API client sees — time from a nack until
//! `GET /api/queues/{vhost}/NS.dlq` shows the dead-letter queue's depth change (the API's 5 s
//! sampling).
//!
//! `cargo bench --bench signal -- [--samples N] [--baseline-samples N] [--smoke]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Figure, emit, quantile};
use futures::StreamExt;
use hopback::app::state::Msg;
use hopback::broker::tap::{self, TapEvent, TapTarget};
use hopback::broker::topology::{self, QueueType};
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn run(samples: usize, baseline_samples: usize) -> Res<()> {
    let cfg = common::config(None)?;
    let session = hopback::broker::session::connect(&cfg.profile, "bench signal", "bench").await?;
    let ns = format!(
        "bench-signal-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let versions = vec!["v1".to_string(), "v2".to_string()];
    topology::init(&session, &ns, &versions, QueueType::Classic).await?;
    let result = measure(&cfg, &session, &ns, samples, baseline_samples).await;
    topology::delete_namespace(&session, &ns, &versions).await?;
    session.close().await;
    result
}

async fn measure(
    cfg: &hopback::config::Config,
    session: &Arc<hopback::broker::session::Session>,
    ns: &str,
    samples: usize,
    baseline_samples: usize,
) -> Res<()> {
    let v2 = format!("{ns}.v2");
    let dlq = format!("{ns}.dlq");
    // The console's state and its tap, bound to this namespace's DLX.
    let mut state = hopback::app::initial_state(cfg).map_err(|e| format!("{e:?}"))?;
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(vec![TapTarget {
        ns: ns.to_string(),
        dlx: format!("{ns}.dlx"),
        queues: [
            (format!("{ns}.v1"), "v1".to_string()),
            (v2.clone(), "v2".to_string()),
        ]
        .into(),
    }]);
    let (tap_tx, mut tap_rx) = tokio::sync::mpsc::channel::<TapEvent>(64);
    let tap_task = tokio::spawn(tap::run(
        cfg.profile.clone(),
        "bench".into(),
        targets_rx,
        tap_tx,
    ));
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), tap_rx.recv())
            .await?
            .ok_or("tap ended")?;
        let bound = matches!(&ev, TapEvent::Bound { namespaces, .. } if namespaces.contains(ns));
        state.handle_msg(Msg::Tap(ev));
        if bound {
            break;
        }
    }

    // The v2 worker: nack every message without requeue, noting when.
    let nacked: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let worker =
        hopback::broker::session::connect(&cfg.profile, &format!("{ns} worker v2"), "bench")
            .await?;
    let wch = worker.channel().await?;
    wch.basic_qos(50, BasicQosOptions::default()).await?;
    let mut consumer = wch
        .basic_consume(
            v2.as_str().into(),
            "bench-worker".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await?;
    let n2 = nacked.clone();
    let worker_task = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let id: u64 = d
                .properties
                .message_id()
                .as_ref()
                .and_then(|m| m.as_str().strip_prefix("sig-"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            n2.lock().unwrap().insert(id, Instant::now());
            if d.acker
                .nack(BasicNackOptions {
                    requeue: false,
                    multiple: false,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });

    // Publish at a steady 40/s; count what the app state shows.
    let pch = session.channel().await?;
    let key: (String, Option<String>) = (ns.to_string(), Some("v2".to_string()));
    let mut latencies_ms = Vec::new();
    let mut next_publish = tokio::time::Instant::now();
    let mut published = 0u64;
    let mut counted = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30 + samples as u64 / 20);
    while (latencies_ms.len() as u64) < samples as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {samples} dead letters became visible",
                latencies_ms.len()
            )
            .into());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_publish), if published < samples as u64 => {
                pch.basic_publish(
                    "".into(),
                    v2.as_str().into(),
                    Default::default(),
                    b"{\"task\":\"bench\"}",
                    lapin::BasicProperties::default().with_message_id(format!("sig-{published}").into()),
                ).await?;
                published += 1;
                next_publish += Duration::from_millis(25);
            }
            ev = tap_rx.recv() => {
                let ev = ev.ok_or("tap ended")?;
                state.handle_msg(Msg::Tap(ev));
                let now = Instant::now();
                let total = state.tap.totals.get(&key).copied().unwrap_or(0);
                let nacked = nacked.lock().unwrap();
                while counted < total {
                    // Serial publishes: the k-th dead letter counted is message k.
                    if let Some(t) = nacked.get(&counted) {
                        latencies_ms.push(now.duration_since(*t).as_secs_f64() * 1000.0);
                    }
                    counted += 1;
                }
            }
        }
    }
    let (p50, p99) = (quantile(&latencies_ms, 0.5), quantile(&latencies_ms, 0.99));
    println!(
        "  nack → visible in app state over {} samples: median {p50:.1} ms · p99 {p99:.1} ms · max {:.1} ms",
        latencies_ms.len(),
        quantile(&latencies_ms, 1.0)
    );

    // Baseline: the management API's view of the DLQ depth.
    let mgmt = hopback::broker::mgmt::Mgmt::new(&cfg.profile)?;
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let path = format!(
        "/api/queues/{}/{}?columns=messages",
        enc(&cfg.profile.vhost),
        enc(&dlq)
    );
    let depth = || async {
        let (_, b) = common::mgmt_raw(reqwest::Method::GET, &path, None).await?;
        let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
        Ok::<_, String>(v.get("messages").and_then(|m| m.as_u64()).unwrap_or(0))
    };
    drop(mgmt);
    let mut api_ms = Vec::new();
    for _ in 0..baseline_samples {
        // Start from a settled value.
        let before = depth().await?;
        let t0 = {
            pch.basic_publish(
                "".into(),
                v2.as_str().into(),
                Default::default(),
                b"{}",
                lapin::BasicProperties::default()
                    .with_message_id(format!("sig-{published}").into()),
            )
            .await?;
            published += 1;
            // The nack happens a millisecond later; wait for it so the clock starts at the nack.
            let want = published - 1;
            let start = Instant::now();
            loop {
                if let Some(t) = nacked.lock().unwrap().get(&want).copied() {
                    break t;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    return Err("the worker did not nack".into());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let limit = Instant::now() + Duration::from_secs(15);
        loop {
            if depth().await? > before {
                api_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > limit {
                return Err("the management API did not show the dead letter within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let api_median = quantile(&api_ms, 0.5);
    println!(
        "  baseline: management API shows the DLQ depth change after median {api_median:.0} ms (max {:.0} ms, {} samples, polled every 50 ms)",
        quantile(&api_ms, 1.0),
        api_ms.len()
    );
    emit(&Figure {
        figure: "error signal: nack → app state (p99)",
        measured: p99,
        unit: "ms",
        target: "p99 < 250 ms",
        baseline: Some((api_median, "mgmt API DLQ depth change, median")),
        ratio: Some(p99 / api_median.max(1e-9)),
        pass: Some(p99 < 250.0),
        note: format!(
            "{} samples, median {p50:.1} ms; tap flush interval {} ms",
            latencies_ms.len(),
            tap::FLUSH_INTERVAL.as_millis()
        ),
    });
    worker_task.abort();
    worker.close().await;
    tap_task.abort();
    drop(targets_tx);
    Ok(())
}

fn main() -> Res<()> {
    let smoke = common::is_smoke();
    let samples: usize = common::arg("--samples").unwrap_or(if smoke { 60 } else { 300 });
    let baseline: usize = common::arg("--baseline-samples").unwrap_or(if smoke { 2 } else { 6 });
    println!("== error signal latency ({samples} samples; baseline {baseline} samples)");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(samples, baseline))
}
