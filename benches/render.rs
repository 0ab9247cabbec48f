//! Console benchmarks, each printed next to a baseline measured in the same run:
//!
//! 1. one full-frame render of the overview with 1,000 queue rows (500 namespaces × 2 versions,
//!    15 minutes of history each) vs. a 10-row fleet — target < 2 ms;
//! 2. first frame after start with the broker up: time to the first drawn frame, and to the first
//!    frame that shows broker data, vs. a bare AMQP connect — target < 150 ms;
//! 3. idle CPU of the running console (refresh + tap + consumer tasks + redraws, headless) against
//!    a throwaway vhost holding 1,000 queues, vs. the same time asleep — target < 2 % of a core.
//!
//! `cargo bench --bench render [-- --idle-seconds 20] [--skip-broker]`
//! `--smoke`: fewer iterations, no 1,000-queue idle test (benches/refresh.rs measures idle CPU).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hopback::app::keymap::Keymap;
use hopback::app::state::{AppState, Msg};
use hopback::config::{self, Config, Overrides};
use hopback::model::ConnState;
use hopback::model::gate::GateSplit;
use hopback::model::snapshot::{FleetSnapshot, NamespaceSnapshot, Rates, VersionSnapshot};
use hopback::ui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn fleet(namespaces: usize, now: i64) -> AppState {
    let cfg = config_for("amqp://guest:guest@127.0.0.1:5672/%2f");
    let mut s = AppState::new(&cfg, Keymap::default(), now);
    s.handle_msg(Msg::Conn(ConnState::Connected { since_ms: now }));
    for i in 0..900i64 {
        let t = now + i * 1000;
        let snap = FleetSnapshot {
            taken_at_ms: t,
            server_version: Some("3.10.8".into()),
            mgmt_available: true,
            metrics_source: Some(hopback::model::metrics::MetricsSource::Management),
            metrics_note: None,
            mgmt_error: None,
            mgmt_refused: false,
            broker_alarms: Vec::new(),
            nodes: None,
            namespaces: (0..namespaces)
                .map(|n| NamespaceSnapshot {
                    name: format!("ns-{n:04}"),
                    gate: Some(GateSplit::from_pairs([
                        ("v1".into(), 90),
                        ("v2".into(), 10),
                    ])),
                    versions: ["v1", "v2"]
                        .iter()
                        .map(|v| VersionSnapshot {
                            version: (*v).into(),
                            queue: format!("ns-{n:04}.{v}"),
                            exists: true,
                            weight: 50,
                            gate_percent: 50.0,
                            ready: Some(((i as u64 * 7 + n as u64) % 100) * 10),
                            unacked: Some(3),
                            consumers: Some(2),
                            rates: Some(Rates {
                                publish: 100.0,
                                deliver: 99.0,
                                ack: 98.0,
                                redeliver: 0.0,
                            }),
                            dead_letter_rate: Some(1.0),
                            error_rate: Some(0.01),
                            ..Default::default()
                        })
                        .collect(),
                    dlq_depth: Some(n as u64),
                    unrouted_depth: Some(0),
                    ..Default::default()
                })
                .collect(),
        };
        // Only the last samples matter for the frame; feed fewer full snapshots to keep setup fast.
        if i % 30 == 0 || i > 880 {
            s.handle_msg(Msg::Snapshot(Box::new(snap)));
        }
    }
    s
}

fn config_for(url: &str) -> Config {
    let raw = config::raw::RawConfig::default();
    config::resolve(
        raw,
        &PathBuf::from("/nonexistent/bench.toml"),
        false,
        &Overrides {
            url: Some(url.into()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn render_ms(state: &AppState, w: u16, h: u16, theme: &Theme, iters: usize) -> f64 {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        term.draw(|f| {
            hopback::ui::draw(f, state, theme);
        })
        .unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(samples)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn mgmt_call(method: reqwest::Method, path: &str, body: Option<serde_json::Value>) {
    let c = reqwest::Client::new();
    let mut r = c
        .request(method, format!("http://127.0.0.1:15672{path}"))
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("management API");
    assert!(
        resp.status().is_success() || resp.status().as_u16() == 404,
        "{path}: {}",
        resp.status()
    );
}

/// Run the console headless (tasks + state + a render per change, coalesced like the real loop).
async fn headless(cfg: &Config, for_how_long: Duration, theme: &Theme) -> (f64, Option<f64>, f64) {
    let start = Instant::now();
    let mut state = hopback::app::initial_state(cfg).unwrap();
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    term.draw(|f| {
        hopback::ui::draw(f, &state, theme);
    })
    .unwrap();
    let first_frame_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(cfg, tx);
    let mut first_data_ms = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + for_how_long;
    let mut frames = 0u64;
    let cpu0 = cpu_seconds();
    let mut cpu_start = None;
    loop {
        let mut dirty = false;
        tokio::select! {
            Some(m) = rx.recv() => dirty |= state.handle_msg(m),
            _ = tick.tick() => dirty |= state.handle_msg(Msg::Tick(chrono::Utc::now().timestamp_millis())),
            _ = tokio::time::sleep_until(deadline) => break,
        }
        if dirty {
            term.draw(|f| {
                hopback::ui::draw(f, &state, theme);
            })
            .unwrap();
            frames += 1;
            if first_data_ms.is_none() && state.snapshot.is_some() {
                first_data_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
                // Measure idle CPU from the first data on (start-up is measured separately).
                cpu_start = Some((cpu_seconds(), Instant::now()));
            }
        }
    }
    let (c0, t0) = cpu_start.unwrap_or((cpu0, start));
    let cpu_pct = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
    tasks.abort();
    eprintln!(
        "  ({frames} frames drawn; {} namespaces in the last snapshot)",
        state
            .snapshot
            .as_ref()
            .map(|s| s.namespaces.len())
            .unwrap_or(0)
    );
    (first_frame_ms, first_data_ms, cpu_pct)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idle_s: u64 = args
        .iter()
        .position(|a| a == "--idle-seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let skip_broker = args.iter().any(|a| a == "--skip-broker");
    let smoke = common::is_smoke();
    let iters = if smoke { 30 } else { 300 };
    let theme = Theme::builtin("dark", false).unwrap();
    let now = chrono::Utc::now().timestamp_millis();

    println!("== 1. full-frame render (overview)");
    let big = fleet(500, now);
    let small = fleet(5, now);
    assert_eq!(big.rows().len(), 1000);
    for (w, h) in [(80u16, 24u16), (120, 40), (240, 70)] {
        let base = render_ms(&small, w, h, &theme, iters);
        let full = render_ms(&big, w, h, &theme, iters);
        println!(
            "  {w}x{h}: 1,000 rows {full:.3} ms · baseline 10 rows {base:.3} ms · ratio {:.2} · target < 2 ms: {}",
            full / base,
            if full < 2.0 { "ok" } else { "MISSED" }
        );
        if (w, h) == (240, 70) {
            common::emit(&common::Figure {
                figure: "render full frame, 1,000 rows (240×70)",
                measured: full,
                unit: "ms",
                target: "< 2 ms",
                baseline: Some((base, "same frame, 10 rows")),
                ratio: Some(full / base),
                pass: Some(full < 2.0),
                note: format!("median of {iters} draws on ratatui's TestBackend"),
            });
        }
    }
    if skip_broker {
        return;
    }

    println!("== 2. first frame after start (broker up, default vhost)");
    let cfg = config_for("amqp://guest:guest@127.0.0.1:5672/%2f");
    let t = Instant::now();
    let s = hopback::broker::session::connect(&cfg.profile, "bench", "bench")
        .await
        .expect("broker up (scripts/broker)");
    let connect_ms = t.elapsed().as_secs_f64() * 1000.0;
    s.close().await;
    let (first_frame, first_data, _) = headless(&cfg, Duration::from_secs(3), &theme).await;
    let first_data = first_data.unwrap_or(f64::NAN);
    println!(
        "  first frame {first_frame:.1} ms · first frame with broker data {first_data:.1} ms · baseline bare AMQP connect {connect_ms:.1} ms · ratio {:.2} · target < 150 ms: {}",
        first_data / connect_ms,
        if first_data < 150.0 { "ok" } else { "MISSED" }
    );
    common::emit(&common::Figure {
        figure: "first frame with broker data after start",
        measured: first_data,
        unit: "ms",
        target: "< 150 ms",
        baseline: Some((connect_ms, "bare AMQP connect")),
        ratio: Some(first_data / connect_ms),
        pass: Some(first_data < 150.0),
        note: format!("first (empty) frame {first_frame:.1} ms"),
    });
    if smoke {
        return;
    }

    println!("== 3. idle CPU with 1,000 queues (throwaway vhost)");
    let vhost = format!(
        "hopback-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    mgmt_call(reqwest::Method::PUT, &format!("/api/vhosts/{vhost}"), None).await;
    mgmt_call(
        reqwest::Method::PUT,
        &format!("/api/permissions/{vhost}/guest"),
        Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    let vcfg = config_for(&format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"));
    let session = hopback::broker::session::connect(&vcfg.profile, "bench setup", "bench")
        .await
        .unwrap();
    let t = Instant::now();
    // Plain durable queues named by the convention (NS.v1, NS.v2, NS.dlq, NS.unrouted): enough
    // for discovery, cheap to create.
    let ch = session.channel().await.unwrap();
    for i in 0..250 {
        for suffix in ["v1", "v2", "dlq", "unrouted"] {
            ch.queue_declare(
                format!("bench{i:03}.{suffix}").as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        }
    }
    session.close().await;
    println!(
        "  created 250 namespaces × 4 = 1,000 queues in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Let the management API's stats catch up before measuring.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_s.min(10))).await;
    let asleep_pct = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
    let (_, data_ms, cpu_pct) = headless(&vcfg, Duration::from_secs(idle_s), &theme).await;
    println!(
        "  console idle CPU {cpu_pct:.2} % of a core over {idle_s} s (refresh every {} ms; first data after {:.0} ms) · baseline asleep {asleep_pct:.2} % · target < 2 %: {}",
        vcfg.refresh_interval_ms,
        data_ms.unwrap_or(f64::NAN),
        if cpu_pct < 2.0 { "ok" } else { "MISSED" }
    );
    common::emit(&common::Figure {
        figure: "console idle CPU, 1,000 queues",
        measured: cpu_pct,
        unit: "%",
        target: "< 2 % of a core",
        baseline: Some((asleep_pct, "same process asleep")),
        ratio: None,
        pass: Some(cpu_pct < 2.0),
        note: format!(
            "over {idle_s} s in-process (the 10,000-queue figure runs in its own process)"
        ),
    });
    mgmt_call(
        reqwest::Method::DELETE,
        &format!("/api/vhosts/{vhost}"),
        None,
    )
    .await;
    println!("  deleted vhost {vhost}");
}
