//! Refresh cost on a large broker: a throwaway vhost (`bench-refresh-…`) gets N queues (default
//! 10,000: ~1,000 convention namespaces × {v1, v2, dlq, unrouted} with their exchanges and gate
//! bindings, plus plain queues) through one definitions import, then:
//!
//! 1. **CPU per refresh**: `broker::stats::collect` at the console's cadence (every
//!    `refresh_interval_ms`, exchanges/bindings cached 5 s, the first screenful read exactly),
//!    process CPU (clock_gettime) around each call — median and p95 over ≥ 20 refreshes. Baseline:
//!    what the management UI's own call costs a client — `GET /api/queues/{vhost}` (all columns),
//!    received and parsed.
//! 2. **Management API calls per refresh**, counted by `Mgmt::calls`.
//! 3. **Idle CPU and RSS of the console**: a child process runs the console headless (refresh,
//!    tap and consumer tasks, ledger feed, a render per change like the real loop) for ≥ 20 s;
//!    the parent reads `/proc/PID/stat` and `VmRSS`. Baseline: a child that polls the UI's call
//!    every 5 s (the management UI's refresh) and parses it.
//!
//! The vhost is deleted at the end. `cargo bench --bench refresh -- [--queues N] [--seconds S]
//! [--smoke]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Figure, emit, quantile};
use hopback::broker::mgmt::Mgmt;
use hopback::broker::stats::{CollectOptions, TopologyCache, collect};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

type Res<T> = Result<T, String>;

/// The definitions of `queues` queues: `ns` convention namespaces, the rest plain queues.
fn definitions(queues: usize, namespaces: usize) -> serde_json::Value {
    let mut qs = Vec::new();
    let mut xs = Vec::new();
    let mut bs = Vec::new();
    let q = |name: String| serde_json::json!({"name": name, "durable": true, "auto_delete": false, "arguments": {}});
    for n in 0..namespaces {
        let ns = format!("bench{n:04}");
        for s in ["v1", "v2", "dlq", "unrouted"] {
            qs.push(q(format!("{ns}.{s}")));
        }
        xs.push(serde_json::json!({"name": ns, "type": "x-consistent-hash", "durable": true, "auto_delete": false, "internal": false,
            "arguments": {"hash-property": "message_id", "alternate-exchange": format!("{ns}.unrouted")}}));
        for x in ["dlx", "unrouted"] {
            xs.push(serde_json::json!({"name": format!("{ns}.{x}"), "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}));
        }
        let b = |src: String, dst: String, key: &str| serde_json::json!({"source": src, "destination": dst, "destination_type": "queue", "routing_key": key, "arguments": {}});
        bs.push(b(ns.clone(), format!("{ns}.v1"), "90"));
        bs.push(b(ns.clone(), format!("{ns}.v2"), "10"));
        bs.push(b(format!("{ns}.dlx"), format!("{ns}.dlq"), ""));
        bs.push(b(format!("{ns}.unrouted"), format!("{ns}.unrouted"), ""));
    }
    for i in 0..queues.saturating_sub(namespaces * 4) {
        qs.push(q(format!("bench-other-{i:05}")));
    }
    serde_json::json!({"queues": qs, "exchanges": xs, "bindings": bs})
}

async fn setup(vhost: &str, queues: usize, namespaces: usize) -> Res<()> {
    common::create_vhost(vhost).await?;
    let t = Instant::now();
    let enc = percent_encoding::utf8_percent_encode(vhost, percent_encoding::NON_ALPHANUMERIC);
    let (s, body) = common::mgmt_raw(
        reqwest::Method::POST,
        &format!("/api/definitions/{enc}"),
        Some(definitions(queues, namespaces)),
    )
    .await?;
    if !(200..300).contains(&s) {
        return Err(format!(
            "definitions import: HTTP {s}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    // Some traffic, so the rows carry message_stats like a busy fleet's do.
    let cfg = common::config(Some(vhost))?;
    let session = hopback::broker::session::connect(&cfg.profile, "bench setup", "bench")
        .await
        .map_err(|e| e.to_string())?;
    let ch = session.channel().await.map_err(|e| e.to_string())?;
    for n in 0..namespaces {
        for s in ["v1", "v2", "dlq"] {
            // A plain channel: the returned confirm resolves at once (nothing to await).
            drop(
                ch.basic_publish(
                    "".into(),
                    format!("bench{n:04}.{s}").as_str().into(),
                    Default::default(),
                    b"{\"bench\":true}",
                    lapin::BasicProperties::default().with_message_id("m".into()),
                )
                .await
                .map_err(|e| e.to_string())?,
            );
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    session.close().await;
    // Wait until the management API lists them all.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, b) = common::mgmt_raw(
            reqwest::Method::GET,
            &format!("/api/queues/{enc}?columns=name"),
            None,
        )
        .await?;
        let n = serde_json::from_slice::<Vec<serde_json::Value>>(&b)
            .map(|v| v.len())
            .unwrap_or(0);
        if n >= queues {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {queues} queues listed after 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "  created {queues} queues ({namespaces} convention namespaces) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Let the stats of the published messages arrive (5 s sampling; the smoke run only checks
    // that everything works).
    let settle_s = if common::is_smoke() { 1 } else { 6 };
    tokio::time::sleep(Duration::from_secs(settle_s)).await;
    Ok(())
}

/// Child: the console headless on `vhost` for `secs` seconds, like `app::run_console` without a
/// terminal. Prints `READY` once the first snapshot is drawn, `DONE` at the end.
async fn child_console(vhost: &str, secs: u64) -> Res<()> {
    let cfg = common::config(Some(vhost))?;
    let theme = hopback::ui::theme::Theme::builtin("dark", false).map_err(|e| e.to_string())?;
    hopback::broker::session::use_lean_frames(); // as `app::run_console` does
    let mut state = hopback::app::initial_state(&cfg).map_err(|e| format!("{e:?}"))?;
    let mut term = Terminal::new(TestBackend::new(120, 40)).map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(&cfg, tx.clone());
    let runner = hopback::app::ops::OpsRunner::new(&cfg, tx.clone());
    let feed = runner.spawn_ledger_feed();
    drop(tx);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ready_at: Option<tokio::time::Instant> = None;
    let mut dirty = true;
    loop {
        if dirty {
            let mut hints = state.layout;
            term.draw(|f| hints = hopback::ui::draw(f, &state, &theme))
                .map_err(|e| e.to_string())?;
            state.layout = hints;
            let visible = state.visible_namespaces();
            tasks.on_screen.send_if_modified(|cur| {
                if cur.as_ref() != Some(&visible) {
                    *cur = Some(visible);
                    true
                } else {
                    false
                }
            });
            dirty = false;
            if ready_at.is_none() && state.snapshot.is_some() {
                ready_at = Some(tokio::time::Instant::now());
                println!("READY");
            }
        }
        let deadline = ready_at.map(|t| t + Duration::from_secs(secs));
        tokio::select! {
            Some(m) = rx.recv() => dirty |= state.handle_msg(m),
            _ = tick.tick() => dirty |= state.handle_msg(hopback::app::state::Msg::Tick(chrono::Utc::now().timestamp_millis())),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        // Coalesce like the real loop (≤ 30 fps).
        if dirty {
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
    }
    println!(
        "DONE namespaces={}",
        state
            .snapshot
            .as_ref()
            .map(|s| s.namespaces.len())
            .unwrap_or(0)
    );
    feed.abort();
    tasks.abort();
    Ok(())
}

/// Child: the management UI's polling: `GET /api/queues/{vhost}` every 5 s, parsed.
async fn child_poller(vhost: &str, secs: u64) -> Res<()> {
    let enc = percent_encoding::utf8_percent_encode(vhost, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let client = reqwest::Client::builder()
        .gzip(true)
        .build()
        .map_err(|e| e.to_string())?;
    let fetch = || async {
        let b = client
            .get(format!("http://127.0.0.1:15672/api/queues/{enc}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
    };
    let mut held = fetch().await?;
    println!("READY");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(5).min(end - Instant::now())).await;
        // A 500 from a loaded management API: skip this poll, like the UI does.
        if let Ok(v) = fetch().await {
            held = v;
        }
    }
    println!(
        "DONE rows={}",
        held.as_array().map(|a| a.len()).unwrap_or(0)
    );
    Ok(())
}

struct ChildStats {
    cpu_pct: f64,
    rss_mb: f64,
    peak_rss_mb: f64,
}

/// Start `--child-MODE vhost secs`, wait for READY, measure CPU over the run and RSS at the end.
async fn measure_child(mode: &str, vhost: &str, secs: u64) -> Res<ChildStats> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args([mode, vhost, &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id().ok_or("child has no pid")?.to_string();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| format!("{mode}: no READY within 60 s"))?
        .map_err(|e| e.to_string())?;
    if ready.as_deref() != Some("READY") {
        return Err(format!("{mode}: expected READY, got {ready:?}"));
    }
    let c0 = common::proc_cpu_s(&pid).ok_or("no /proc stat")?;
    let t0 = Instant::now();
    let mut rss_mb: f64 = 0.0;
    loop {
        tokio::select! {
            l = lines.next_line() => {
                match l.map_err(|e| e.to_string())? {
                    Some(l) if l.starts_with("DONE") => {
                        println!("  {mode}: {l}");
                        break;
                    }
                    Some(_) => {}
                    None => return Err(format!("{mode}: exited before DONE")),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if let Some(kb) = common::status_kb(&pid, "VmRSS:") {
            rss_mb = kb as f64 / 1024.0;
        }
    }
    let cpu = common::proc_cpu_s(&pid).ok_or("no /proc stat")? - c0;
    let wall = t0.elapsed().as_secs_f64();
    let peak = common::status_kb(&pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    if let Some(kb) = common::status_kb(&pid, "VmRSS:") {
        rss_mb = kb as f64 / 1024.0;
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{mode}: {status}"));
    }
    Ok(ChildStats {
        cpu_pct: cpu / wall * 100.0,
        rss_mb,
        peak_rss_mb: peak,
    })
}

async fn measure(
    vhost: &str,
    queues: usize,
    namespaces: usize,
    secs: u64,
    refreshes: usize,
) -> Res<()> {
    let cfg = common::config(Some(vhost))?;
    let enc = percent_encoding::utf8_percent_encode(vhost, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    // Baseline: the management UI's own call, received and parsed by a client.
    let client = reqwest::Client::builder()
        .gzip(true)
        .build()
        .map_err(|e| e.to_string())?;
    let mut base_cpu = Vec::new();
    let mut base_wall = Vec::new();
    let mut base_bytes = 0usize;
    for _ in 0..5 {
        let c = common::process_cpu_s();
        let t = Instant::now();
        let b = client
            .get(format!("http://127.0.0.1:15672/api/queues/{enc}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
        base_wall.push(t.elapsed().as_secs_f64() * 1000.0);
        base_cpu.push((common::process_cpu_s() - c) * 1000.0);
        base_bytes = b.len();
        drop(v);
    }
    let ours_bytes = client
        .get(format!(
            "http://127.0.0.1:15672/api/queues/{enc}?columns={}",
            hopback::broker::mgmt::QUEUE_COLUMNS
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?
        .len();
    println!(
        "  baseline GET /api/queues/{vhost} (UI call): {:.0} ms wall, {:.1} ms client CPU, {:.1} MB · hopback's columns= answer {:.2} MB",
        quantile(&base_wall, 0.5),
        quantile(&base_cpu, 0.5),
        base_bytes as f64 / 1e6,
        ours_bytes as f64 / 1e6
    );

    // The console child and the UI-poller child run while this process refreshes.
    let console = measure_child("--child-console", vhost, secs);
    let poller = measure_child("--child-poller", vhost, secs);
    let refresh = async {
        let session = hopback::broker::session::connect(&cfg.profile, "bench refresh", "bench")
            .await
            .map_err(|e| e.to_string())?;
        let mgmt = Mgmt::new(&cfg.profile).map_err(|e| e.to_string())?;
        let topology = std::sync::Arc::new(tokio::sync::Mutex::new(TopologyCache::default()));
        // The first screenful (120×40 shows ~15 namespaces) is read exactly, like the console.
        let on_screen: BTreeSet<String> = (0..15.min(namespaces))
            .map(|n| format!("bench{n:04}"))
            .collect();
        let (mut cpu, mut wall, mut calls) = (Vec::new(), Vec::new(), Vec::new());
        let mut failed: Vec<String> = Vec::new();
        let mut found = 0;
        let interval = Duration::from_millis(cfg.refresh_interval_ms);
        for _ in 0..refreshes {
            let opts = CollectOptions {
                exact_for: Some(on_screen.clone()),
                topology: Some(topology.clone()),
                ..Default::default()
            };
            let n0 = mgmt.calls();
            let c0 = common::process_cpu_s();
            let t0 = Instant::now();
            let snap = collect(&session, Some(&mgmt), &cfg, &opts)
                .await
                .map_err(|e| e.to_string())?;
            if !snap.mgmt_available {
                // The console keeps its last snapshot (marked stale) when this happens; the
                // bench counts it and measures the next refresh.
                failed.push(snap.mgmt_error.unwrap_or_default());
                tokio::time::sleep(interval.saturating_sub(t0.elapsed())).await;
                continue;
            }
            wall.push(t0.elapsed().as_secs_f64() * 1000.0);
            cpu.push((common::process_cpu_s() - c0) * 1000.0);
            calls.push((mgmt.calls() - n0) as f64);
            found = snap.namespaces.len();
            tokio::time::sleep(interval.saturating_sub(t0.elapsed())).await;
        }
        session.close().await;
        if cpu.len() < refreshes / 2 {
            return Err(format!(
                "{} of {refreshes} refreshes failed: {}",
                failed.len(),
                failed.join("; ")
            ));
        }
        Ok::<_, String>((cpu, wall, calls, found, failed.len()))
    };
    let (console, poller, refresh) = tokio::join!(console, poller, refresh);
    let (cpu, wall, calls, found, failed) = refresh?;
    let (console, poller) = (console?, poller?);
    if found != namespaces {
        return Err(format!(
            "collect found {found} namespaces, expected {namespaces}"
        ));
    }
    let (cm, c95) = (quantile(&cpu, 0.5), quantile(&cpu, 0.95));
    let mean_calls = calls.iter().sum::<f64>() / calls.len().max(1) as f64;
    println!(
        "  refresh ({} refreshes, {found} namespaces): CPU median {cm:.1} ms p95 {c95:.1} ms max {:.1} ms · wall median {:.0} ms p95 {:.0} ms · mgmt calls median {} mean {mean_calls:.2} max {}",
        cpu.len(),
        quantile(&cpu, 1.0),
        quantile(&wall, 0.5),
        quantile(&wall, 0.95),
        quantile(&calls, 0.5),
        quantile(&calls, 1.0)
    );
    println!(
        "  console child: idle CPU {:.2} % · RSS {:.1} MB (peak {:.1} MB) · UI-poller child: CPU {:.2} % · RSS {:.1} MB",
        console.cpu_pct, console.rss_mb, console.peak_rss_mb, poller.cpu_pct, poller.rss_mb
    );
    let label = format!("{queues} queues");
    let base_cpu_ms = quantile(&base_cpu, 0.5);
    emit(&Figure {
        figure: &format!("refresh CPU, {label} (p95)"),
        measured: c95,
        unit: "ms",
        target: "< 100 ms",
        baseline: Some((base_cpu_ms, "client CPU of the UI's GET /api/queues")),
        ratio: Some(c95 / base_cpu_ms.max(1e-9)),
        pass: Some(c95 < 100.0),
        note: format!(
            "median {cm:.1} ms over {} refreshes at {} ms ({failed} more failed: mgmt API error); wall median {:.0} ms; answer {:.2} MB vs UI's {:.1} MB (UI call {:.0} ms wall)",
            cpu.len(),
            cfg.refresh_interval_ms,
            quantile(&wall, 0.5),
            ours_bytes as f64 / 1e6,
            base_bytes as f64 / 1e6,
            quantile(&base_wall, 0.5)
        ),
    });
    // The first refresh of a console fetches all four lists at once; every later one makes
    // exactly one call (the most overdue part, see `TopologyCache`).
    let steady_max = calls.iter().skip(1).copied().fold(0.0, f64::max);
    emit(&Figure {
        figure: &format!("mgmt API calls per refresh, {label} (max after the first)"),
        measured: steady_max,
        unit: "calls",
        target: "= 1",
        baseline: None,
        ratio: None,
        pass: Some(steady_max <= 1.0),
        note: format!(
            "first refresh {} (all four lists), mean {mean_calls:.2} over {} refreshes",
            calls.first().copied().unwrap_or(0.0),
            calls.len()
        ),
    });
    emit(&Figure {
        figure: &format!("console idle CPU, {label}"),
        measured: console.cpu_pct,
        unit: "%",
        target: "< 2 % of a core",
        baseline: Some((poller.cpu_pct, "UI-style poll every 5 s")),
        ratio: (poller.cpu_pct >= 0.05).then(|| console.cpu_pct / poller.cpu_pct),
        pass: Some(console.cpu_pct < 2.0),
        note: format!(
            "over {secs} s, refresh every {} ms",
            cfg.refresh_interval_ms
        ),
    });
    emit(&Figure {
        figure: &format!("console RSS, {label}, after {secs} s"),
        measured: console.rss_mb,
        unit: "MB",
        target: "< 40 MB",
        baseline: Some((poller.rss_mb, "UI-style poller")),
        ratio: Some(console.rss_mb / poller.rss_mb.max(1e-9)),
        pass: Some(console.rss_mb < 40.0 && console.peak_rss_mb < 40.0),
        note: format!(
            "peak {:.1} MB after {secs} s; the per-version history (app::state::HISTORY_SAMPLES) keeps growing for 15 min: see docs/performance.md",
            console.peak_rss_mb
        ),
    });
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode) = args.get(1).filter(|a| a.starts_with("--child-")) {
        let vhost = args.get(2).cloned().unwrap_or_default();
        let secs = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
        let r = match mode.as_str() {
            "--child-console" => child_console(&vhost, secs).await,
            _ => child_poller(&vhost, secs).await,
        };
        return match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("refresh bench child: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let smoke = common::is_smoke();
    let queues: usize = common::arg("--queues").unwrap_or(if smoke { 400 } else { 10_000 });
    let namespaces = (queues / 10).max(1);
    let secs: u64 = common::arg("--seconds").unwrap_or(if smoke { 4 } else { 25 });
    let refreshes = if smoke { 5 } else { (secs as usize).max(20) };
    let vhost = format!(
        "bench-refresh-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    println!("== refresh cost with {queues} queues ({namespaces} namespaces) in vhost {vhost}");
    let r = async {
        setup(&vhost, queues, namespaces).await?;
        measure(&vhost, queues, namespaces, secs, refreshes).await
    }
    .await;
    let d = common::delete_vhost(&vhost).await;
    println!("  deleted vhost {vhost}");
    match r.and(d) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refresh bench: {}", hopback::text::sanitize(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
