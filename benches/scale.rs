//! Scale: a throwaway vhost (`bench-scale-…`) of N queues (1,000 / 10,000 / 100,000 by default;
//! a tenth of them in convention namespaces of 4 queues, with their exchanges and gate bindings,
//! the rest plain queues) built by one definitions import, then, per size and in the same run:
//!
//! - **what the broker's own tools cost**: the management UI's call
//!   (`GET /api/queues/V?page=1&page_size=100&name=&use_regex=false&pagination=true`, as the UI
//!   asks), hopback's projected listing (`Mgmt::queues`, `columns=`), the same listing through
//!   `rabbitmq_http_client` (`list_queues_in`: whole objects), hopback's Prometheus call
//!   (`/metrics/detailed?vhost=V&family=…`, scanned) and one full Prometheus scrape
//!   (`/metrics/per-object`, what a Prometheus server asks) — wall time, bytes, client CPU;
//! - **the refresh with each metrics source** (`management`, `prometheus`): `broker::stats::collect`
//!   with the source at the console's cadence, the first screenful read exactly — process CPU
//!   (clock_gettime) per refresh, p95;
//! - **first frame with data from process start**: a child process runs the console headless
//!   (like `app::run_console` without a terminal); spawn → the first drawn frame that shows
//!   namespaces;
//! - **console RSS** over `--rss-seconds` (largest size only; 900 for the real run): `VmRSS` of
//!   that child every 5 s — first, highest, last, and the growth over the second half.
//!
//! The definitions go in by import, in parts (the management API limits a request body).
//! Point it at a node of its own (`scripts/broker --version 4.0 --flavor scale`; `scripts/bench
//! --only scale` does): `HOPBACK_URL`, `HOPBACK_MGMT_URL`, `HOPBACK_PROMETHEUS_URL`. Each vhost is
//! deleted after its size. `cargo bench --bench scale -- [--sizes 1000,10000,100000]
//! [--rss-seconds S] [--refreshes R] [--smoke]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Figure, emit, quantile};
use hopback::broker::metrics::Metrics;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::prometheus::{Prometheus, Scanner};
use hopback::broker::stats::{CollectOptions, TopologyCache, collect};
use hopback::config::MetricsMode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

type Res<T> = Result<T, String>;

/// Namespaces read exactly: what a 120×40 console shows.
const ON_SCREEN: usize = 15;

fn mgmt_base() -> String {
    std::env::var("HOPBACK_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The definitions of `queues` queues: `namespaces` convention namespaces, the rest plain.
fn definitions(queues: usize, namespaces: usize) -> serde_json::Value {
    let mut qs = Vec::with_capacity(queues);
    let mut xs = Vec::new();
    let mut bs = Vec::new();
    let q = |name: String| serde_json::json!({"name": name, "durable": true, "auto_delete": false, "arguments": {}});
    for n in 0..namespaces {
        let ns = format!("scale{n:05}");
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
        qs.push(q(format!("scale-other-{i:06}")));
    }
    serde_json::json!({"queues": qs, "exchanges": xs, "bindings": bs})
}

fn http() -> Res<reqwest::Client> {
    reqwest::Client::builder()
        .gzip(true)
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())
}

/// One management call as guest: (status, body).
async fn mgmt_call(
    c: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Res<(u16, Vec<u8>)> {
    let mut r = c
        .request(method, format!("{}{path}", mgmt_base()))
        .basic_auth("guest", Some("guest"));
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.map_err(|e| format!("{path}: {e}"))?;
    let status = resp.status().as_u16();
    let b = resp.bytes().await.map_err(|e| format!("{path}: {e}"))?;
    Ok((status, b.to_vec()))
}

/// How many queues the API lists in `vhost` (one tiny page: `filtered_count`).
async fn listed(c: &reqwest::Client, vhost: &str) -> Res<u64> {
    let (_, b) = mgmt_call(
        c,
        reqwest::Method::GET,
        &format!("/api/queues/{}?page=1&page_size=1&columns=name", enc(vhost)),
        None,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
    Ok(v["filtered_count"].as_u64().unwrap_or(0))
}

async fn setup(vhost: &str, queues: usize, namespaces: usize) -> Res<()> {
    let c = http()?;
    common::create_vhost(vhost).await?;
    let t = Instant::now();
    // The management API refuses a body over its limit (`management.http.max_body_size`; the
    // 100,000-queue file is 18 MB): the definitions go in parts — queues 20,000 at a time (the
    // exchanges with the first), then the bindings.
    let defs = definitions(queues, namespaces);
    let list = |k: &str| defs[k].as_array().cloned().unwrap_or_default();
    let (qs, xs, bs) = (list("queues"), list("exchanges"), list("bindings"));
    let mut parts = Vec::new();
    for (i, chunk) in qs.chunks(20_000).enumerate() {
        let mut p = serde_json::json!({ "queues": chunk });
        if i == 0 {
            p["exchanges"] = serde_json::Value::Array(xs.clone());
        }
        parts.push(p);
    }
    for chunk in bs.chunks(40_000) {
        parts.push(serde_json::json!({ "bindings": chunk }));
    }
    drop(defs);
    for part in &parts {
        let (s, body) = mgmt_call(
            &c,
            reqwest::Method::POST,
            &format!("/api/definitions/{}", enc(vhost)),
            Some(part),
        )
        .await?;
        if !(200..300).contains(&s) {
            return Err(format!(
                "definitions import: HTTP {s}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let n = listed(&c, vhost).await.unwrap_or(0);
        if n as usize >= queues {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {queues} queues listed after 900 s"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    traffic(vhost, namespaces).await?;
    println!(
        "  created {queues} queues ({namespaces} convention namespaces) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(if common::is_smoke() { 1 } else { 6 })).await;
    Ok(())
}

/// One message in v1, v2 and the DLQ of each namespace, so rows carry statistics and the
/// Prometheus families have series for them.
async fn traffic(vhost: &str, namespaces: usize) -> Res<()> {
    let cfg = common::config(Some(vhost))?;
    let session = hopback::broker::session::connect(&cfg.profile, "bench setup", "bench")
        .await
        .map_err(|e| e.to_string())?;
    let ch = session.channel().await.map_err(|e| e.to_string())?;
    for n in 0..namespaces {
        for s in ["v1", "v2", "dlq"] {
            drop(
                ch.basic_publish(
                    "".into(),
                    format!("scale{n:05}.{s}").as_str().into(),
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
    Ok(())
}

/// A call measured a few times: median wall ms, median client CPU ms, bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall_ms: f64,
    cpu_ms: f64,
    bytes: f64,
}

async fn cost<F, Fut>(runs: usize, mut f: F) -> Res<Cost>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<usize>>,
{
    let (mut wall, mut cpu, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    for _ in 0..runs {
        let c0 = common::process_cpu_s();
        let t0 = Instant::now();
        bytes = f().await?;
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        cpu.push((common::process_cpu_s() - c0) * 1000.0);
    }
    Ok(Cost {
        wall_ms: quantile(&wall, 0.5),
        cpu_ms: quantile(&cpu, 0.5),
        bytes: bytes as f64,
    })
}

/// The management UI's own call: the first page of the queue list, as the UI asks for it.
async fn ui_call(c: &reqwest::Client, vhost: &str) -> Res<usize> {
    let (s, b) = mgmt_call(
        c,
        reqwest::Method::GET,
        &format!(
            "/api/queues/{}?page=1&page_size=100&name=&use_regex=false&pagination=true",
            enc(vhost)
        ),
        None,
    )
    .await?;
    if s != 200 {
        return Err(format!("UI call: HTTP {s}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
    drop(v);
    Ok(b.len())
}

/// One Prometheus GET, scanned as it streams (every queue kept); the bytes read.
async fn prometheus_get(c: &reqwest::Client, url: url::Url) -> Res<usize> {
    let mut resp = c.get(url).send().await.map_err(|e| e.to_string())?;
    if resp.status().as_u16() != 200 {
        return Err(format!("Prometheus: HTTP {}", resp.status()));
    }
    let all = |_: &str| true;
    let mut scanner = Scanner::new(0, &all);
    let mut n = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        n += chunk.len();
        scanner.feed(&chunk);
    }
    drop(scanner.finish());
    Ok(n)
}

/// `rabbitmq_http_client`'s listing of the vhost's queues (whole objects, typed).
async fn crate_list(vhost: &str) -> Res<usize> {
    let endpoint = format!("{}/api", mgmt_base().trim_end_matches('/'));
    let http = reqwest13::Client::builder()
        .gzip(true)
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let client =
        rabbitmq_http_client::api::Client::from_http_client(http, endpoint, "guest", "guest");
    let qs = client
        .list_queues_in(vhost)
        .await
        .map_err(|e| format!("rabbitmq_http_client: {e}"))?;
    Ok(qs.len())
}

/// Per size, in the same run.
struct Broker {
    ui: Cost,
    projected: Cost,
    crate_list: Option<Cost>,
    crate_err: Option<String>,
    prometheus: Cost,
    full_scrape: Option<Cost>,
}

async fn broker_costs(vhost: &str, queues: usize) -> Res<Broker> {
    let c = http()?;
    let cfg = common::config(Some(vhost))?;
    let runs = if common::is_smoke() {
        1
    } else if queues >= 100_000 {
        3
    } else {
        5
    };
    let ui = cost(runs, || ui_call(&c, vhost)).await?;
    // hopback's projected list, as `Mgmt::queues` asks for and reads it (raw here, for its size).
    let projected = match cost(runs, || async {
        let (s, b) = mgmt_call(
            &c,
            reqwest::Method::GET,
            &format!(
                "/api/queues/{}?columns={}",
                enc(vhost),
                hopback::broker::mgmt::QUEUE_COLUMNS
            ),
            None,
        )
        .await?;
        if s != 200 {
            return Err(format!("projected list: HTTP {s}"));
        }
        let rows: Vec<hopback::broker::mgmt::QueueInfo> =
            serde_json::from_slice(&b).map_err(|e| e.to_string())?;
        drop(rows);
        Ok(b.len())
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            // At 100,000 queues the broker may not answer the whole list at all (it drops a
            // request after 60 s): recorded, not fatal.
            println!("  hopback's projected list (columns=): FAILED: {e}");
            Cost {
                wall_ms: f64::NAN,
                cpu_ms: f64::NAN,
                bytes: f64::NAN,
            }
        }
    };
    // The crate's rows are counted, not sized: measure the bytes of the same call.
    let (crate_list, crate_err) = match cost(runs, || crate_list(vhost)).await {
        Ok(x) => (Some(x), None),
        Err(e) => (None, Some(e)),
    };
    let prom = Prometheus::new(&cfg.profile).map_err(|e| format!("{e}"))?;
    let url = prom.detailed_url(0).ok_or("no Prometheus URL")?;
    let prometheus = cost(runs, || prometheus_get(&c, url.clone()))
        .await
        .unwrap_or_else(|e| {
            println!("  Prometheus detailed: FAILED: {e}");
            Cost {
                wall_ms: f64::NAN,
                cpu_ms: f64::NAN,
                bytes: f64::NAN,
            }
        });
    let mut full = url.clone();
    full.set_path("/metrics/per-object");
    full.set_query(None);
    let full_scrape = if common::is_smoke() || std::env::args().any(|a| a == "--no-full-scrape") {
        None
    } else {
        match cost(1, || prometheus_get(&c, full.clone())).await {
            Ok(x) => Some(x),
            Err(e) => {
                println!("  full Prometheus scrape: FAILED: {e}");
                None
            }
        }
    };
    Ok(Broker {
        ui,
        projected,
        crate_list,
        crate_err,
        prometheus,
        full_scrape,
    })
}

/// The refresh with one metrics source, at the console's cadence: CPU per refresh (ms) and
/// the wall time of each.
async fn refreshes(
    vhost: &str,
    namespaces: usize,
    mode: MetricsMode,
    count: usize,
) -> Res<(Vec<f64>, Vec<f64>, Option<String>)> {
    let mut cfg = common::config(Some(vhost))?;
    cfg.profile.metrics = mode;
    let session = hopback::broker::session::connect(&cfg.profile, "bench scale", "bench")
        .await
        .map_err(|e| e.to_string())?;
    let mgmt = Mgmt::new(&cfg.profile).map_err(|e| e.to_string())?;
    let topology = Arc::new(tokio::sync::Mutex::new(TopologyCache::default()));
    let metrics = Arc::new(tokio::sync::Mutex::new(Metrics::new(&cfg.profile)));
    let on_screen: BTreeSet<String> = (0..ON_SCREEN.min(namespaces))
        .map(|n| format!("scale{n:05}"))
        .collect();
    let interval = Duration::from_millis(cfg.refresh_interval_ms);
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    let mut source = None;
    let mut failed = 0;
    for _ in 0..count {
        let opts = CollectOptions {
            exact_for: Some(on_screen.clone()),
            topology: Some(topology.clone()),
            metrics: Some(metrics.clone()),
            ..Default::default()
        };
        let c0 = common::process_cpu_s();
        let t0 = Instant::now();
        let snap = collect(&session, Some(&mgmt), &cfg, &opts)
            .await
            .map_err(|e| e.to_string())?;
        let took = t0.elapsed();
        if !snap.mgmt_available {
            failed += 1;
        } else {
            cpu.push((common::process_cpu_s() - c0) * 1000.0);
            wall.push(took.as_secs_f64() * 1000.0);
            source = snap
                .metrics_source
                .map(|s| s.to_string())
                .or(snap.metrics_note.clone());
        }
        tokio::time::sleep(interval.saturating_sub(took)).await;
    }
    session.close().await;
    if cpu.len() < count / 2 {
        return Err(format!("{failed} of {count} refreshes failed"));
    }
    Ok((cpu, wall, source))
}

/// Child: the console headless on `vhost` (the profile's metrics source) for `secs` seconds.
/// Prints `READY` at the first drawn frame that shows namespaces, `DONE` at the end.
async fn child_console(vhost: &str, secs: u64) -> Res<()> {
    let started = Instant::now();
    let cfg = common::config(Some(vhost))?;
    let theme = hopback::ui::theme::Theme::builtin("dark", false).map_err(|e| e.to_string())?;
    hopback::broker::session::use_lean_frames();
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
            if ready_at.is_none()
                && state
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| !s.namespaces.is_empty())
            {
                ready_at = Some(tokio::time::Instant::now());
                println!("READY");
            }
        }
        let deadline = ready_at.map(|t| t + Duration::from_secs(secs));
        tokio::select! {
            Some(m) = rx.recv() => {
                if std::env::var_os("HOPBACK_BENCH_TRACE").is_some() && ready_at.is_none() {
                    eprintln!("{:>6} ms {}", started.elapsed().as_millis(), format!("{m:?}").chars().take(60).collect::<String>());
                }
                dirty |= state.handle_msg(m)
            }
            _ = tick.tick() => dirty |= state.handle_msg(hopback::app::state::Msg::Tick(chrono::Utc::now().timestamp_millis())),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        if dirty {
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
    }
    println!(
        "DONE namespaces={} source={:?}",
        state
            .snapshot
            .as_ref()
            .map(|s| s.namespaces.len())
            .unwrap_or(0),
        state.snapshot.as_ref().and_then(|s| s.metrics_source)
    );
    feed.abort();
    tasks.abort();
    Ok(())
}

/// What the console child showed: spawn → first frame with data, and its RSS samples (MB).
struct ChildRun {
    first_frame_ms: f64,
    rss: Vec<f64>,
    cpu_pct: f64,
}

async fn run_child(vhost: &str, secs: u64, mode: MetricsMode) -> Res<ChildRun> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .args(["--child-console", vhost, &secs.to_string()])
        .env("HOPBACK_METRICS", mode.name())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id().ok_or("child has no pid")?.to_string();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .map_err(|_| "console child: no READY within 120 s".to_string())?
        .map_err(|e| e.to_string())?;
    let first_frame_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if ready.as_deref() != Some("READY") {
        return Err(format!("console child: expected READY, got {ready:?}"));
    }
    let c0 = common::proc_cpu_s(&pid).ok_or("no /proc stat")?;
    let t1 = Instant::now();
    let mut rss = Vec::new();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            l = lines.next_line() => {
                match l.map_err(|e| e.to_string())? {
                    Some(l) if l.starts_with("DONE") => { println!("    console child: {l}"); break; }
                    Some(_) => {}
                    None => return Err("console child exited before DONE".into()),
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                if let Some(kb) = common::status_kb(&pid, "VmRSS:") {
                    rss.push(kb as f64 / 1024.0);
                }
                next += Duration::from_secs(5);
            }
        }
    }
    let cpu = common::proc_cpu_s(&pid).ok_or("no /proc stat")? - c0;
    let wall = t1.elapsed().as_secs_f64().max(1e-3);
    if let Some(kb) = common::status_kb(&pid, "VmRSS:") {
        rss.push(kb as f64 / 1024.0);
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("console child: {status}"));
    }
    Ok(ChildRun {
        first_frame_ms,
        rss,
        cpu_pct: cpu / wall * 100.0,
    })
}

fn mb(b: f64) -> String {
    format!("{:.2} MB", b / 1e6)
}

async fn measure(
    vhost: &str,
    queues: usize,
    namespaces: usize,
    count: usize,
    rss_secs: Option<u64>,
) -> Res<()> {
    let b = broker_costs(vhost, queues).await?;
    let calls_only = std::env::args().any(|a| a == "--calls-only");
    println!(
        "  broker calls ({queues} queues), median: UI page {:.0} ms {} cpu {:.1} ms · hopback columns= list {:.0} ms {} cpu {:.1} ms · rabbitmq_http_client list_queues_in {} · Prometheus detailed (vhost, 4 families) {:.0} ms {} scan {:.1} ms · full scrape /metrics/per-object {}",
        b.ui.wall_ms,
        mb(b.ui.bytes),
        b.ui.cpu_ms,
        b.projected.wall_ms,
        mb(b.projected.bytes),
        b.projected.cpu_ms,
        match (&b.crate_list, &b.crate_err) {
            (Some(c), _) => format!("{:.0} ms cpu {:.1} ms", c.wall_ms, c.cpu_ms),
            (None, Some(e)) => format!("failed: {e}"),
            _ => "—".into(),
        },
        b.prometheus.wall_ms,
        mb(b.prometheus.bytes),
        b.prometheus.cpu_ms,
        b.full_scrape
            .map(|c| format!("{:.0} ms {}", c.wall_ms, mb(c.bytes)))
            .unwrap_or_else(|| "not run".into())
    );
    let label = format!("{queues} queues");
    if let Some(c) = b.crate_list {
        emit(&Figure {
            figure: &format!("rabbitmq_http_client list_queues_in, {label} (wall, median)"),
            measured: c.wall_ms,
            unit: "ms",
            target: "reference (no target)",
            baseline: Some((b.projected.wall_ms, "hopback's projected list (columns=)")),
            ratio: Some(c.wall_ms / b.projected.wall_ms.max(1e-9)),
            pass: None,
            note: format!(
                "client CPU {:.1} ms vs {:.1} ms (ratio {:.2}×)",
                c.cpu_ms,
                b.projected.cpu_ms,
                c.cpu_ms / b.projected.cpu_ms.max(1e-9)
            ),
        });
    } else if let Some(e) = &b.crate_err {
        println!("  rabbitmq_http_client: {e}");
    }
    let ui_note = format!(
        "UI's page of 100: {:.0} ms wall, {}; one full Prometheus scrape: {}",
        b.ui.wall_ms,
        mb(b.ui.bytes),
        b.full_scrape
            .map(|c| format!("{:.0} ms, {}", c.wall_ms, mb(c.bytes)))
            .unwrap_or_else(|| "not run".into())
    );
    let modes: &[MetricsMode] = if calls_only {
        &[]
    } else {
        &[MetricsMode::Management, MetricsMode::Prometheus]
    };
    for &mode in modes {
        let (cpu, wall, source) = refreshes(vhost, namespaces, mode, count).await?;
        let (c50, c95) = (quantile(&cpu, 0.5), quantile(&cpu, 0.95));
        println!(
            "  refresh, metrics = {} ({} refreshes, source {:?}): CPU median {c50:.1} ms p95 {c95:.1} ms · wall median {:.0} ms p95 {:.0} ms",
            mode.name(),
            cpu.len(),
            source,
            quantile(&wall, 0.5),
            quantile(&wall, 0.95)
        );
        let base = match mode {
            MetricsMode::Prometheus => (
                b.prometheus.cpu_ms,
                "client CPU of one Prometheus detailed call",
            ),
            _ => (b.ui.cpu_ms, "client CPU of the UI's queue page"),
        };
        emit(&Figure {
            figure: &format!("refresh CPU, {label}, metrics = {} (p95)", mode.name()),
            measured: c95,
            unit: "ms",
            target: "< 50 ms",
            baseline: Some(base),
            ratio: Some(c95 / base.0.max(1e-9)),
            pass: Some(c95 < 50.0),
            note: format!(
                "median {c50:.1} ms over {} refreshes; wall median {:.0} ms; source {}; {ui_note}",
                cpu.len(),
                quantile(&wall, 0.5),
                source.unwrap_or_else(|| "?".into())
            ),
        });
    }
    // The smoke (CI, < 60 s for every bench) starts one console child.
    let children: &[MetricsMode] = if calls_only {
        &[]
    } else if common::is_smoke() {
        &[MetricsMode::Management]
    } else {
        &[MetricsMode::Management, MetricsMode::Prometheus]
    };
    for &mode in children {
        let secs = match rss_secs {
            Some(s) if mode == MetricsMode::Prometheus => s,
            _ if common::is_smoke() => 0,
            _ => 2,
        };
        let run = run_child(vhost, secs, mode).await?;
        println!(
            "  console child, metrics = {}: first frame with data {:.0} ms after spawn",
            mode.name(),
            run.first_frame_ms
        );
        emit(&Figure {
            figure: &format!(
                "first frame with data from process start, {label}, metrics = {}",
                mode.name()
            ),
            measured: run.first_frame_ms,
            unit: "ms",
            target: "< 1,000 ms",
            baseline: Some((b.ui.wall_ms, "the UI's queue page")),
            ratio: Some(run.first_frame_ms / b.ui.wall_ms.max(1e-9)),
            pass: Some(run.first_frame_ms < 1000.0),
            note: format!(
                "headless console child (spawn → first drawn frame with namespaces); {ui_note}"
            ),
        });
        if rss_secs.is_some() && mode == MetricsMode::Prometheus && !run.rss.is_empty() {
            let first = run.rss[0];
            let last = *run.rss.last().unwrap_or(&first);
            let peak = run.rss.iter().copied().fold(0.0, f64::max);
            let mid = run.rss[run.rss.len() / 2];
            let growth = last - mid;
            emit(&Figure {
                figure: &format!("console RSS, {label}, over {secs} s (highest)"),
                measured: peak,
                unit: "MB",
                target: "< 60 MB, flat",
                baseline: Some((first, "its RSS at the first frame")),
                ratio: Some(peak / first.max(1e-9)),
                pass: Some(peak < 60.0 && growth < 5.0),
                note: format!(
                    "{} samples every 5 s: first {first:.1} MB, middle {mid:.1} MB, last {last:.1} MB (second half {growth:+.1} MB); console CPU {:.2} % of a core",
                    run.rss.len(),
                    run.cpu_pct
                ),
            });
        }
    }
    Ok(())
}

/// `--probe-crate`: which of `rabbitmq_http_client`'s calls hopback would use read this broker
/// (3.10, 4.0 with and without the metrics collector), and what they make of numbers the broker
/// does not send.
async fn probe_crate() -> Res<()> {
    let endpoint = format!("{}/api", mgmt_base().trim_end_matches('/'));
    let http = reqwest13::Client::builder()
        .gzip(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let c = rabbitmq_http_client::api::Client::from_http_client(http, endpoint, "guest", "guest");
    fn say<T>(
        what: &str,
        r: Result<T, rabbitmq_http_client::error::HttpClientError>,
        detail: impl Fn(&T) -> String,
    ) {
        match r {
            Ok(x) => println!("  crate {what}: ok {}", detail(&x)),
            Err(e) => println!("  crate {what}: ERROR {e}"),
        }
    }
    say("overview", c.overview().await, |o| {
        format!(
            "version {} · queue_totals.messages {} · object_totals.queues {}",
            o.rabbitmq_version, o.queue_totals.messages, o.object_totals.queues
        )
    });
    say("list_nodes", c.list_nodes().await, |n| {
        format!("{} nodes", n.len())
    });
    say("list_users", c.list_users().await, |u| {
        format!("{} users", u.len())
    });
    say("current_user", c.current_user().await, |u| {
        u.name.to_string()
    });
    say(
        "list_permissions_in /",
        c.list_permissions_in("/").await,
        |p| format!("{} rows", p.len()),
    );
    say("list_bindings_in /", c.list_bindings_in("/").await, |b| {
        format!("{} rows", b.len())
    });
    say("list_exchanges_in /", c.list_exchanges_in("/").await, |b| {
        format!("{} rows", b.len())
    });
    say("list_shovels_in /", c.list_shovels_in("/").await, |b| {
        format!("{} rows", b.len())
    });
    say("list_consumers_in /", c.list_consumers_in("/").await, |b| {
        format!("{} rows", b.len())
    });
    say("list_connections", c.list_connections().await, |b| {
        format!("{} rows", b.len())
    });
    say(
        "export_vhost_definitions_as_data /",
        c.export_vhost_definitions_as_data("/").await,
        |d| format!("{} queues", d.queues.len()),
    );
    say("list_queues_in /", c.list_queues_in("/").await, |q| {
        q.first()
            .map(|q| {
                format!(
                    "first `{}`: messages {} unacked {} consumers {} (the crate's types have no unknown)",
                    q.name, q.message_count, q.unacknowledged_message_count, q.consumer_count
                )
            })
            .unwrap_or_else(|| "0 rows".into())
    });
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--probe-crate") {
        return match probe_crate().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("probe: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.get(1).is_some_and(|a| a == "--child-console") {
        let vhost = args.get(2).cloned().unwrap_or_default();
        let secs = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
        return match child_console(&vhost, secs).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("scale bench child: {}", hopback::text::sanitize(&e));
                std::process::ExitCode::FAILURE
            }
        };
    }
    let smoke = common::is_smoke();
    let sizes: Vec<usize> = common::arg::<String>("--sizes")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if smoke {
                vec![1_000]
            } else {
                vec![1_000, 10_000, 100_000]
            }
        });
    let rss_secs: u64 = common::arg("--rss-seconds").unwrap_or(if smoke { 3 } else { 900 });
    let count: usize = common::arg("--refreshes").unwrap_or(if smoke { 2 } else { 20 });
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut failed = false;
    for queues in sizes {
        let namespaces = (queues / 10).max(1);
        // `--vhost NAME`: a vhost already built with these definitions (the same shape, imported
        // beforehand, e.g. while the bench compiles); it is measured and deleted like our own.
        let given: Option<String> = common::arg("--vhost");
        let vhost = given.clone().unwrap_or_else(|| {
            format!(
                "bench-scale-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        println!("== scale: {queues} queues ({namespaces} namespaces) in vhost {vhost}");
        let r = async {
            if given.is_some() {
                traffic(&vhost, namespaces).await?;
            } else {
                setup(&vhost, queues, namespaces).await?;
            }
            measure(
                &vhost,
                queues,
                namespaces,
                count,
                (queues == largest).then_some(rss_secs),
            )
            .await
        }
        .await;
        // Deleting 100,000 queues takes the broker longer than the call's timeout: it goes on.
        match common::delete_vhost(&vhost).await {
            Ok(()) => println!("  deleted vhost {vhost}"),
            Err(e) => println!("  deleting vhost {vhost}: {e} (the broker goes on deleting it)"),
        }
        if let Err(e) = r {
            eprintln!("scale bench: {}", hopback::text::sanitize(&e));
            failed = true;
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
