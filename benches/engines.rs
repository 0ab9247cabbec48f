//! `cargo bench --bench engines` (`scripts/bench --only engines`; issue 20): hopback's two move
//! engines against RabbitMQ's bare dynamic shovel and a faithful pipelined pika mover
//! (`benches/pika_mover.py`), same broker, same run, rotating order, median of the runs.
//!
//! Each side gets a fresh namespace made by `ops::init` (journaled, as `hopback init` does) and N
//! real dead letters of 1 KiB (published to a version queue with `expiration = 0`, so the broker
//! dead-letters them with a real `x-death`), then moves them out of `NS.dlq`:
//! - `shovel`: a bare dynamic shovel to `NS.v1` (on-confirm, `src-delete-after` = N), timed
//!   until the last message is in `NS.v1` — the baseline;
//! - `fwd shovel`: the same with `dest-add-forward-headers` (what the broker engine adds where the
//!   replay-loop guard needs it, 4.x): the guard's own cost, reported against the baseline;
//! - `fanout shovel`: the bare shovel publishing through a fanout exchange bound to `NS.v1` alone
//!   (how the broker engine reaches a queue, so a dead letter's `CC`/`BCC` route nowhere else):
//!   that exchange's own cost, reported against the baseline;
//! - `auto → v1`: `ops::replay` with `--to v1`, auto engine (timed: the whole run, journaling and
//!   the read-back included);
//! - `auto → origin`: half of the dead letters from v1, half from v2, interleaved; every id is
//!   then counted in its own origin queue;
//! - `client`: `--engine client --to v1`;
//! - `pika`: the Python mover, prefetch 1000, original properties, ack on confirm (its own
//!   timer, from consume to the last ack).
//!
//! Usage: `cargo bench --bench engines -- [--messages N] [--runs R] [--queue-type classic|quorum]
//! [--smoke]`; broker from `HOPBACK_URL` / `HOPBACK_MGMT_URL`; pika from `PYTHONPATH`
//! (`scripts/bench` installs it into its cache).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopback::broker::mgmt::Mgmt;
use hopback::broker::session::{Session, connect};
use hopback::broker::topology::QueueType;
use hopback::config::Config;
use hopback::ops::replay::{self, Destination, EngineChoice, ReplayControl, ReplayRequest, Source};
use hopback::ops::{OpContext, Via};
use hopback::topology::Namespace;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;

/// The pika side's error when pika is not installed (the side is skipped, and said so).
const NO_PIKA: &str = "pika is not installed";

const SIDES: [&str; 7] = [
    "shovel",
    "auto → v1",
    "fwd shovel",
    "auto → origin",
    "fanout shovel",
    "client",
    "pika",
];

struct Args {
    /// Only these sides (comma-separated names, e.g. `shovel,client`), for quick looks.
    sides: Option<String>,
    messages: u64,
    runs: usize,
    queue_type: QueueType,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sides: None,
        messages: 100_000,
        runs: 3,
        queue_type: QueueType::Classic,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--messages" => a.messages = val()?.parse().map_err(|e| format!("{e}"))?,
            "--runs" => a.runs = val()?.parse().map_err(|e| format!("{e}"))?,
            "--queue-type" => {
                a.queue_type = match val()?.as_str() {
                    "classic" => QueueType::Classic,
                    "quorum" => QueueType::Quorum,
                    o => return Err(format!("unknown queue type {o}")),
                }
            }
            "--sides" => a.sides = Some(val()?),
            "--bench" => {}
            "--smoke" => {
                a.messages = 2_000;
                a.runs = 1;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

async fn depth(s: &Session, q: &str) -> Result<u64, String> {
    Ok(s.passive_queue(q)
        .await
        .map_err(|e| e.to_string())?
        .map(|c| u64::from(c.ready))
        .unwrap_or(0))
}

async fn wait_depth(s: &Session, q: &str, n: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let d = depth(s, q).await?;
        if d >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{q}: depth {d} after {limit:?}, expected {n}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// N dead letters of 1 KiB with a real `x-death`: published to the version queues with
/// `expiration = 0`. `mixed`: alternating blocks of 500 from v1 (`a-…`) and v2 (`b-…`);
/// otherwise all from v2.
async fn dead_letters(s: &Session, ns: &Namespace, n: u64, mixed: bool) -> Result<(), String> {
    let ch = s.confirm_channel().await.map_err(|e| e.to_string())?;
    let body = vec![b'x'; 1024];
    let (v1, v2) = (
        ns.version_queue("v1").unwrap_or_default(),
        ns.version_queue("v2").unwrap_or_default(),
    );
    let mut sent = 0u64;
    while sent < n {
        let batch = (n - sent).min(500);
        let from_v1 = mixed && (sent / 500).is_multiple_of(2);
        let (q, tag) = if from_v1 { (&v1, "a") } else { (&v2, "b") };
        let mut confirms = Vec::with_capacity(batch as usize);
        for i in 0..batch {
            let p = BasicProperties::default()
                .with_message_id(format!("{tag}-{}", sent + i).into())
                .with_delivery_mode(2)
                .with_expiration("0".into());
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    p,
                )
                .await
                .map_err(|e| e.to_string())?,
            );
        }
        for c in confirms {
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .map_err(|_| "confirm timeout".to_string())?
                .map_err(|e| e.to_string())?;
        }
        sent += batch;
    }
    let _ = ch.close(200, "ok".into()).await;
    wait_depth(s, &ns.dlq, n, Duration::from_secs(300)).await
}

/// Every id in `q` starts with `prefix`, and there are `n` of them, each once.
async fn count_ids(s: &Session, q: &str, prefix: &str, n: u64) -> Result<(), String> {
    use futures::StreamExt;
    let ch = s.channel().await.map_err(|e| e.to_string())?;
    ch.basic_qos(5000, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let total = depth(s, q).await?;
    if total != n {
        return Err(format!("{q} holds {total}, expected {n}"));
    }
    let mut c = ch
        .basic_consume(
            q.into(),
            "bench count".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    while (seen.len() as u64) < n {
        let d = tokio::time::timeout(Duration::from_secs(20), c.next())
            .await
            .map_err(|_| format!("{q}: counting stalled at {}", seen.len()))?
            .ok_or("consumer ended")?
            .map_err(|e| e.to_string())?;
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if !id.starts_with(prefix) {
            return Err(format!("{q} holds {id}, not from its own origin"));
        }
        if !seen.insert(id.clone()) {
            return Err(format!("{q} holds {id} twice"));
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// The bare shovel; `forward_headers`: with `dest-add-forward-headers`, as the broker engine
/// runs where the replay-loop guard needs them (4.x) — the guard's own cost, same run;
/// `via_fanout`: through a fanout exchange bound to `NS.v1` alone, as the broker engine reaches a
/// queue — that exchange's cost, same run.
async fn shovel_side(
    s: &Session,
    m: &Mgmt,
    ns: &Namespace,
    n: u64,
    forward_headers: bool,
    via_fanout: bool,
) -> Result<f64, String> {
    let name = format!("hopback-bench-{}", uuid::Uuid::new_v4().simple());
    let v1 = ns.version_queue("v1").unwrap_or_default();
    let uri = hopback::broker::shovel::vhost_uri(&s.profile().vhost);
    let mut value = serde_json::json!({
        "src-protocol": "amqp091",
        "src-uri": uri,
        "src-queue": ns.dlq,
        "src-prefetch-count": 1000,
        "src-delete-after": n,
        "dest-protocol": "amqp091",
        "dest-uri": uri,
        "dest-queue": v1,
        "ack-mode": "on-confirm",
    });
    if forward_headers {
        value["dest-add-forward-headers"] = serde_json::json!(true);
    }
    let fanout = ns.move_exchange(&hopback::broker::shovel::new_move_id());
    if via_fanout {
        hopback::broker::republish::declare_move_exchange(s, &fanout, &v1)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(v) = value.as_object_mut() {
            v.remove("dest-queue");
            v.insert("dest-exchange".into(), serde_json::json!(fanout));
        }
    }
    let start = Instant::now();
    m.put_shovel(&name, value)
        .await
        .map_err(|e| e.to_string())?;
    let waited = wait_depth(s, &v1, n, Duration::from_secs(900)).await;
    let secs = start.elapsed().as_secs_f64();
    let _ = hopback::broker::shovel::remove(m, &name).await;
    if via_fanout {
        let _ = hopback::broker::republish::delete_move_exchange(s, &fanout).await;
    }
    waited?;
    Ok(n as f64 / secs)
}

async fn hopback_side(
    cx: &OpContext,
    ns: &Namespace,
    n: u64,
    to: Destination,
    engine: EngineChoice,
) -> Result<(f64, String), String> {
    let req = ReplayRequest {
        engine,
        ..ReplayRequest::new(&ns.name, Source::Dlq, to)
    };
    let plan = replay::prepare(cx, &req).await.map_err(|e| e.to_string())?;
    let which = format!("{} ({})", plan.engine.name(), plan.engine_reason);
    let start = Instant::now();
    let report = replay::run(cx, &plan, &ReplayControl::new(), |_, _| {})
        .await
        .map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    if let Some(e) = report.error() {
        return Err(e.to_string());
    }
    let moved = report.counts.moved + report.counts.parked;
    if moved != n {
        return Err(format!("moved {moved} of {n}: {:?}", report.counts));
    }
    Ok((n as f64 / secs, which))
}

async fn pika_side(cfg: &Config, ns: &Namespace, n: u64) -> Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pika_mover.py");
    let url =
        std::env::var("HOPBACK_URL").unwrap_or_else(|_| hopback::config::DEFAULT_URL.to_string());
    let _ = cfg;
    let out = tokio::process::Command::new("python3")
        .args([
            script,
            &url,
            &ns.dlq,
            &ns.version_queue("v1").unwrap_or_default(),
            &n.to_string(),
        ])
        .output()
        .await
        .map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if String::from_utf8_lossy(&out.stderr).contains("No module named 'pika'") {
        return Err(NO_PIKA.into());
    }
    if !out.status.success() {
        return Err(format!(
            "pika mover failed (is pika installed? scripts/bench installs it): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let secs: f64 = text
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("pika mover printed {text}"))?;
    Ok(n as f64 / secs)
}

async fn cleanup(s: &Arc<Session>, m: &Mgmt, ns: &Namespace) {
    for name in hopback::broker::shovel::move_shovels_of(m, ns)
        .await
        .unwrap_or_default()
    {
        let _ = hopback::broker::shovel::remove(m, &name).await;
    }
    if let Ok(ch) = s.channel().await {
        for x in hopback::topology::origin_routers(&ns.entry) {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        let _ = ch
            .queue_delete(ns.parked.as_str().into(), Default::default())
            .await;
        let _ = ch.close(200, "ok".into()).await;
    }
    let _ = hopback::broker::topology::delete_namespace(
        s,
        &ns.name,
        &["v1".to_string(), "v2".to_string()],
    )
    .await;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

async fn bench() -> Result<(), String> {
    let a = parse_args()?;
    let cfg = common::config(None)?;
    let s = connect(&cfg.profile, "bench", "bench")
        .await
        .map_err(|e| e.to_string())?;
    let m = Mgmt::new(&cfg.profile).map_err(|e| e.to_string())?;
    let version = m
        .overview()
        .await
        .map(|o| o.rabbitmq_version)
        .map_err(|e| e.to_string())?;
    let cx = OpContext::open(s.clone(), &cfg, Via::Cli).await;
    println!(
        "RabbitMQ {version}: moving {} dead letters of 1 KiB (real x-death) out of a {:?} DLQ, {} run(s), rotating order",
        a.messages, a.queue_type, a.runs
    );
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut engines: BTreeMap<&str, String> = BTreeMap::new();
    for run in 0..a.runs {
        for k in 0..SIDES.len() {
            let side = SIDES[(k + run) % SIDES.len()];
            if a.sides
                .as_deref()
                .is_some_and(|f| !f.split(',').any(|x| side.starts_with(x.trim())))
            {
                continue;
            }
            let name = format!(
                "bench-eng-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            hopback::ops::init::init(&cx, &name, "v1,v2", a.queue_type)
                .await
                .map_err(|e| e.to_string())?;
            let ns = Namespace::resolve(&cfg, &name);
            let mixed = side == "auto → origin";
            let r = async {
                dead_letters(&s, &ns, a.messages, mixed).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let v1 = Destination::Version("v1".into());
                match side {
                    "shovel" => shovel_side(&s, &m, &ns, a.messages, false, false).await,
                    "fwd shovel" => shovel_side(&s, &m, &ns, a.messages, true, false).await,
                    "fanout shovel" => shovel_side(&s, &m, &ns, a.messages, false, true).await,
                    "auto → v1" => {
                        let (r, e) =
                            hopback_side(&cx, &ns, a.messages, v1, EngineChoice::Auto).await?;
                        engines.insert(side, e);
                        Ok(r)
                    }
                    "auto → origin" => {
                        let (r, e) = hopback_side(
                            &cx,
                            &ns,
                            a.messages,
                            Destination::Origin,
                            EngineChoice::Auto,
                        )
                        .await?;
                        engines.insert(side, e);
                        let half = a.messages / 2;
                        let v1q = ns.version_queue("v1").unwrap_or_default();
                        let v2q = ns.version_queue("v2").unwrap_or_default();
                        count_ids(&s, &v1q, "a-", half).await?;
                        count_ids(&s, &v2q, "b-", a.messages - half).await?;
                        Ok(r)
                    }
                    "client" => {
                        let (r, e) =
                            hopback_side(&cx, &ns, a.messages, v1, EngineChoice::Client).await?;
                        engines.insert(side, e);
                        Ok(r)
                    }
                    _ => pika_side(&cfg, &ns, a.messages).await,
                }
            }
            .await;
            cleanup(&s, &m, &ns).await;
            if side == "pika" && r.as_ref().is_err_and(|e| e == NO_PIKA) {
                println!(
                    "run {}: pika skipped: {NO_PIKA} (scripts/bench installs it)",
                    run + 1
                );
                continue;
            }
            let r = r.map_err(|e| format!("{side}: {e}"))?;
            println!("run {}: {side:<14} {r:>9.0} msg/s", run + 1);
            rates.entry(side).or_default().push(r);
        }
    }
    let med = |k: &str| median(rates.get(k).cloned().unwrap_or_default());
    let sh = med("shovel");
    let pika = med("pika");
    for (side, e) in &engines {
        println!("{side}: engine {e}");
    }
    let figure = |label: &str, side: &str, base: f64, base_label: &str, target: f64| {
        if !rates.contains_key(side) || base <= 0.0 {
            println!("{label}: not measured ({side} or its baseline was skipped)");
            return;
        }
        let v = med(side);
        common::emit(&common::Figure {
            figure: &format!(
                "RabbitMQ {version}: {label}, {} × 1 KiB dead letters ({:?} DLQ, median of {})",
                a.messages, a.queue_type, a.runs
            ),
            measured: v,
            unit: "msg/s",
            target: &if target > 0.0 {
                format!("≥ {target}× {base_label}")
            } else {
                "reference (no target)".to_string()
            },
            baseline: Some((base, base_label)),
            ratio: Some(v / base.max(1e-9)),
            pass: (target > 0.0).then_some(v >= target * base),
            note: format!(
                "runs {:?}; {}",
                rates
                    .get(side)
                    .map(|r| r.iter().map(|x| x.round()).collect::<Vec<_>>())
                    .unwrap_or_default(),
                engines.get(side).cloned().unwrap_or_else(|| side.into())
            ),
        });
    };
    figure(
        "replay --to v1 (auto)",
        "auto → v1",
        sh,
        "bare shovel",
        0.95,
    );
    figure(
        "replay to origin, mixed v1/v2 (auto, ids counted)",
        "auto → origin",
        sh,
        "bare shovel",
        0.9,
    );
    figure(
        "client engine --to v1",
        "client",
        pika,
        "pipelined pika mover",
        1.2,
    );
    figure(
        "bare shovel with forward headers (the replay-loop guard's cost where it needs them)",
        "fwd shovel",
        sh,
        "bare shovel",
        0.0,
    );
    figure(
        "bare shovel through a fanout exchange bound to v1 alone (what keeps CC/BCC from routing)",
        "fanout shovel",
        sh,
        "bare shovel",
        0.0,
    );
    if !hopback::broker::shovel::broker_counts_republished_deaths(&version) {
        // Here the broker engine runs the shovel with forward headers: against that same
        // shovel, what hopback itself adds (declaring, watching, journaling, the router).
        let fwd = med("fwd shovel");
        figure(
            "replay --to v1 (auto) against the shovel with forward headers (reference)",
            "auto → v1",
            fwd,
            "shovel with forward headers",
            0.0,
        );
        figure(
            "replay to origin (auto) against the shovel with forward headers (reference)",
            "auto → origin",
            fwd,
            "shovel with forward headers",
            0.0,
        );
    }
    figure(
        "pipelined pika mover (reference)",
        "pika",
        sh,
        "bare shovel",
        0.0,
    );
    s.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match bench().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hopback-bench: {}", hopback::text::sanitize(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
