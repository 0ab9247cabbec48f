//! Benchmark: read a ledger of N events (default 100,000) into the timeline and gate-history
//! projections, from the stream and — as the baseline measured in the same run — from the same
//! events in a local JSONL file. Each read runs in a fresh child process so its RSS is the
//! reader's own. Prints the figures and the ratio; the target is < 1 s, bounded memory.
//!
//! Usage: `cargo bench --bench ledger [-- N]` (broker from HOPBACK_URL or the
//! local default). The throwaway stream is deleted at the end.

use std::time::Instant;

use futures::StreamExt;
use hopback::ledger::projection::{GateHistory, Timeline, TimelineFilter};
use hopback::ledger::{EventKind, Ledger, StreamStart};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn config() -> Res<hopback::config::Config> {
    let over = hopback::config::Overrides {
        config_path: None,
        url: std::env::var("HOPBACK_URL").ok(),
        ..Default::default()
    };
    Ok(hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        std::path::Path::new("/nonexistent/hopback-bench.toml"),
        false,
        &over,
    )?)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Baseline: drain the stream over AMQP without decoding anything (the transport's ceiling).
async fn read_raw(stream: &str) -> Res<()> {
    use lapin::options::{BasicAckOptions, BasicQosOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let cfg = config()?;
    let session =
        hopback::broker::session::connect(&cfg.profile, "ledger-bench-raw", "bench").await?;
    let ch = session.channel().await?;
    ch.basic_qos(10_000, BasicQosOptions::default()).await?;
    let n = session.passive_queue(stream).await?.map_or(0, |c| c.ready);
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let started = Instant::now();
    let mut c = ch
        .basic_consume(stream.into(), "raw".into(), Default::default(), args)
        .await?;
    let mut got = 0u64;
    while got < u64::from(n) {
        let Some(d) = c.next().await else { break };
        let d = d?;
        got += 1;
        if got.is_multiple_of(2000) {
            ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", serde_json::json!({"events": got, "ms": ms}));
    session.close().await;
    Ok(())
}

async fn read(mode: &str, target: &str) -> Res<()> {
    let cfg = config()?;
    let rss_before = status_kb("VmRSS:");
    let session =
        hopback::broker::session::connect(&cfg.profile, "ledger-bench-reader", "bench").await?;
    let ledger = if mode == "read-stream" {
        Ledger::open_stream(&session, &cfg, target).await
    } else {
        Ledger::file(std::path::Path::new(target), "bench baseline", &cfg)
    };
    if std::env::var("LEDGER_BENCH_DEBUG").is_ok() {
        let sub = ledger.subscribe(StreamStart::First).await?;
        eprintln!("end hint: {:?}", sub.end_hint());
        sub.close().await;
    }
    let started = Instant::now();
    let mut timeline = Timeline::new(TimelineFilter::default());
    let mut history = GateHistory::new("bench", 0);
    let mut first_at = None;
    let n = ledger
        .fold(StreamStart::First, |e| {
            first_at.get_or_insert_with(Instant::now);
            timeline.push(&e);
            history.push(&e);
        })
        .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if std::env::var("LEDGER_BENCH_DEBUG").is_ok() {
        eprintln!(
            "{mode}: first event after {:?}",
            first_at.map(|t| t - started)
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "events": n, "ms": ms, "timeline_entries": timeline.len(), "gate_states": history.states().len(),
            "rss_before_kb": rss_before, "rss_after_kb": status_kb("VmRSS:"), "peak_rss_kb": status_kb("VmHWM:"),
        })
    );
    session.close().await;
    Ok(())
}

fn child(mode: &str, target: &str, data_dir: &std::path::Path) -> Res<serde_json::Value> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .env("HOPBACK_DATA_DIR", data_dir)
        .args([mode, target])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("{mode} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn bench(n: u64) -> Res<()> {
    let cfg = config()?;
    let session = hopback::broker::session::connect(&cfg.profile, "ledger-bench", "bench").await?;
    let stream = format!(
        "hopback.ledger.bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let ledger = std::sync::Arc::new(Ledger::open_stream(&session, &cfg, &stream).await);
    if !ledger.is_stream() {
        return Err(ledger.backend_description().into());
    }
    let dir = std::env::temp_dir().join(format!("hopback-bench-{}", std::process::id()));
    let file = Ledger::file(&dir.join("ledger.jsonl"), "bench baseline", &cfg);
    let started = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut events = Vec::new();
    for i in 0..n {
        let e = if i % 4 == 0 {
            ledger
                .event(EventKind::GateSet, Some("bench"))
                .before(serde_json::json!({"gate": {"v1": 100}}))
                .after(serde_json::json!({"gate": {"v1": 90, "v2": 10}}))
                .params(serde_json::json!({"target": {"v1": 90, "v2": 10}, "steps": ["bind v2 weight 10", "unbind v1 (key 100)", "bind v1 weight 90"]}))
                .reason(format!("canary {i}"))
        } else {
            ledger
                .event(EventKind::Note, Some("bench"))
                .reason(format!("operator note number {i}: v2 looks fine"))
        };
        events.push(e.clone());
        inflight.push(ledger.append(e));
        while inflight.len() >= 1000 {
            if let Some(r) = inflight.next().await {
                r?;
            }
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let append_s = started.elapsed().as_secs_f64();
    for e in events {
        file.append(e).await?;
    }
    eprintln!(
        "populated {n} events in {append_s:.1} s ({:.0} appends/s with confirms, 1000 in flight)",
        n as f64 / append_s
    );
    let s = child("read-stream", &stream, &dir)?;
    let w = child("read-stream", &stream, &dir)?;
    let f = child(
        "read-file",
        &dir.join("ledger.jsonl").to_string_lossy(),
        &dir,
    )?;
    let raw = child("read-raw", &stream, &dir)?;
    let (sms, fms) = (
        s["ms"].as_f64().unwrap_or(0.0),
        f["ms"].as_f64().unwrap_or(0.0),
    );
    println!("ledger read + timeline/gate-history projection of {n} events:");
    println!(
        "  stream, cold (no cache) {:>8.1} ms  ({} events, timeline kept {}, RSS {} → {} kB, peak {} kB)",
        sms,
        s["events"],
        s["timeline_entries"],
        s["rss_before_kb"],
        s["rss_after_kb"],
        s["peak_rss_kb"]
    );
    let wms = w["ms"].as_f64().unwrap_or(0.0);
    println!(
        "  stream, warm local cache {:>8.1} ms  ({} events, RSS {} → {} kB, peak {} kB)",
        wms, w["events"], w["rss_before_kb"], w["rss_after_kb"], w["peak_rss_kb"]
    );
    println!(
        "  file    {:>8.1} ms  ({} events, RSS {} → {} kB, peak {} kB)  [baseline]",
        fms, f["events"], f["rss_before_kb"], f["rss_after_kb"], f["peak_rss_kb"]
    );
    let rms = raw["ms"].as_f64().unwrap_or(0.0);
    println!(
        "  raw AMQP drain, no decoding {:>8.1} ms  ({} messages)  [baseline: the transport's ceiling]",
        rms, raw["events"]
    );
    println!(
        "  ratio stream/raw drain: {:.2}× (decode + projection overhead over the transport)",
        sms / rms.max(0.001)
    );
    println!(
        "  ratio cold stream/file: {:.2}×, warm/file: {:.2}×; target < 1000 ms: cold {}, warm {}",
        sms / fms.max(0.001),
        wms / fms.max(0.001),
        if sms < 1000.0 { "met" } else { "NOT met" },
        if wms < 1000.0 { "met" } else { "NOT met" }
    );
    hopback::ledger::delete_stream(&session, &stream).await?;
    let _ = std::fs::remove_dir_all(&dir);
    session.close().await;
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("read-raw") => rt.block_on(read_raw(args.get(2).map_or("", String::as_str))),
        Some(m @ ("read-stream" | "read-file")) => {
            rt.block_on(read(m, args.get(2).map_or("", String::as_str)))
        }
        other => rt.block_on(bench(other.and_then(|s| s.parse().ok()).unwrap_or(100_000))),
    }
}
