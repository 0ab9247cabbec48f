//! Benchmark: gate flip latency — plan + apply + verify (+ the ledger append that makes it done) —
//! on a throwaway classic namespace, against two baselines measured in the same run: one
//! management API `GET …/bindings/source` (the read-back every flip needs) and one bare AMQP
//! `queue.bind` + `queue.unbind` pair. The target is < 50 ms per flip on the local broker.
//!
//! Usage: `cargo bench --bench gate [-- FLIPS]` (default 40).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::{self, QueueType};
use hopback::ledger::Ledger;
use hopback::model::gate::GateSplit;
use hopback::ops::gate::{self, GateRequest};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95), v[v.len() - 1])
}

async fn run(flips: usize) -> Res<()> {
    let over = hopback::config::Overrides {
        url: std::env::var("HOPBACK_URL").ok(),
        ..Default::default()
    };
    let cfg = hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        std::path::Path::new("/nonexistent/hopback-bench.toml"),
        false,
        &over,
    )?;
    let session = hopback::broker::session::connect(&cfg.profile, "gate-bench", "bench").await?;
    let mgmt = Mgmt::new(&cfg.profile)?;
    let ns = format!(
        "bench-gate-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let versions = vec!["v1".to_string(), "v2".to_string()];
    topology::init(&session, &ns, &versions, QueueType::Classic).await?;
    let stream = format!("hopback.ledger.{ns}");
    let ledger = std::sync::Arc::new(Ledger::open_stream(&session, &cfg, &stream).await);

    // Baselines.
    let mut get_ms = Vec::new();
    for _ in 0..flips {
        let t = Instant::now();
        mgmt.bindings_from(&ns).await?;
        get_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let ch = session.channel().await?;
    let mut bind_ms = Vec::new();
    for _ in 0..flips {
        let t = Instant::now();
        ch.queue_bind(
            format!("{ns}.v2").as_str().into(),
            ns.as_str().into(),
            "7".into(),
            Default::default(),
            Default::default(),
        )
        .await?;
        ch.queue_unbind(
            format!("{ns}.v2").as_str().into(),
            ns.as_str().into(),
            "7".into(),
            Default::default(),
        )
        .await?;
        bind_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let targets = [
        GateSplit::from_pairs([("v1".to_string(), 90), ("v2".to_string(), 10)]),
        GateSplit::from_pairs([("v2".to_string(), 100)]),
        GateSplit::from_pairs([("v1".to_string(), 50), ("v2".to_string(), 50)]),
        GateSplit::from_pairs([("v1".to_string(), 100)]),
    ];
    let mut flip_ms = Vec::new();
    let mut steps = 0usize;
    for i in 0..flips {
        let t = Instant::now();
        let r = gate::apply(
            &hopback::ops::OpContext::of(&session, &mgmt, &ledger, &cfg, hopback::ops::Via::Cli),
            &GateRequest {
                namespace: ns.clone(),
                target: targets[i % targets.len()].clone(),
                reason: Some("bench".into()),
                force_zero_consumers: true,
                ..Default::default()
            },
        )
        .await?;
        if !(r.changed && r.verified) {
            return Err("a flip did not change or verify".into());
        }
        steps += r.steps.len();
        flip_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (fm, f95, fmax) = stats(flip_ms);
    let (gm, _, _) = stats(get_ms);
    let (bm, _, _) = stats(bind_ms);
    println!(
        "gate flip latency over {flips} flips ({:.1} steps/flip, ledger: {}):",
        steps as f64 / flips as f64,
        if ledger.is_stream() { "stream" } else { "file" }
    );
    println!(
        "  flip (plan+apply+verify+journal)  median {fm:.1} ms  p95 {f95:.1} ms  max {fmax:.1} ms"
    );
    println!(
        "  baseline mgmt GET bindings        median {gm:.1} ms  → flip = {:.1}× one GET",
        fm / gm.max(0.001)
    );
    println!(
        "  baseline AMQP bind+unbind pair    median {bm:.2} ms  → flip = {:.1}× one pair",
        fm / bm.max(0.001)
    );
    println!(
        "  target < 50 ms: {}",
        if fm < 50.0 { "met (median)" } else { "NOT met" }
    );
    common::emit(&common::Figure {
        figure: "gate flip end-to-end (median)",
        measured: fm,
        unit: "ms",
        target: "< 50 ms",
        baseline: Some((gm, "one mgmt GET of the bindings")),
        ratio: Some(fm / gm.max(0.001)),
        pass: Some(fm < 50.0),
        note: format!(
            "{flips} flips, p95 {f95:.1} ms; plan + apply + read-back verify + ledger append; AMQP bind+unbind pair {bm:.2} ms"
        ),
    });
    hopback::ledger::delete_stream(&session, &stream).await?;
    topology::delete_namespace(&session, &ns, &versions).await?;
    session.close().await;
    Ok(())
}

fn main() -> Res<()> {
    let flips = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|s| s.parse().ok())
        .unwrap_or(if common::is_smoke() { 10 } else { 40 });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(flips))
}
