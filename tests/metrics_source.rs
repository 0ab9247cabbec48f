//! Rates, unacked counts and error rates from every kind of production broker (issue 33): a fleet
//! of 100 tasks/s (50/s per version) whose v2 rejects 30 % reads v2's error rate between 20 and
//! 40 %, publish and ack rates within 10 % of what the producer did, and unacked known — in
//! `status --json` and in the console's app state.
//!
//! - on a node without management statistics (`management_agent.disable_metrics_collector =
//!   true`, `rabbitmq_prometheus` on): the Prometheus source. Needs the no-stats node, so these
//!   are `#[ignore]`d in the default run; CI runs them after starting it:
//!   `scripts/broker --version 4.0 --flavor no-stats && cargo test --test metrics_source --
//!   --include-ignored --test-threads=1` (the restart test stops and starts that node);
//! - on the test broker (`HOPBACK_TEST_URL`, the system 3.10 with the collector on): `auto`
//!   says which source it took and why, with the same numbers;
//! - the no-stats node restarted under a running console (its counters start again from 0):
//!   no rate is ever negative or huge, and rates come back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hopback::app::state::{AppState, Msg};
use hopback::broker::topology::QueueType;
use hopback::config::{self, Config, Overrides};
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::mpsc;

/// The no-stats node of `scripts/broker --version 4.0 --flavor no-stats`.
fn no_stats() -> Broker {
    Broker {
        url: env_or(
            "HOPBACK_NOSTATS_URL",
            "amqp://guest:guest@127.0.0.1:5674/%2f",
        ),
        mgmt_url: Some(env_or("HOPBACK_NOSTATS_MGMT_URL", "http://127.0.0.1:15674")),
        prometheus_url: Some(env_or(
            "HOPBACK_NOSTATS_PROMETHEUS_URL",
            "http://127.0.0.1:15694",
        )),
    }
}

/// The test broker as every other test uses it (its Prometheus URL derived).
fn test_broker() -> Broker {
    Broker {
        url: common::test_url(),
        mgmt_url: common::test_mgmt_override(),
        prometheus_url: None,
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[derive(Clone)]
struct Broker {
    url: String,
    mgmt_url: Option<String>,
    prometheus_url: Option<String>,
}

impl Broker {
    fn config(&self) -> Config {
        config::resolve(
            config::raw::RawConfig::default(),
            &PathBuf::from("/nonexistent/hopback-test.toml"),
            false,
            &Overrides {
                url: Some(self.url.clone()),
                mgmt_url: self.mgmt_url.clone(),
                prometheus_url: self.prometheus_url.clone(),
                ..Default::default()
            },
        )
        .unwrap()
    }
    fn bin(&self) -> std::process::Command {
        let mut c = common::bin();
        c.env("HOPBACK_URL", &self.url);
        match &self.mgmt_url {
            Some(m) => c.env("HOPBACK_MGMT_URL", m),
            None => c.env_remove("HOPBACK_MGMT_URL"),
        };
        match &self.prometheus_url {
            Some(p) => c.env("HOPBACK_PROMETHEUS_URL", p),
            None => c.env_remove("HOPBACK_PROMETHEUS_URL"),
        };
        c.env_remove("HOPBACK_METRICS");
        c
    }
}

/// A namespace of the broker, its producer and its two workers.
struct Fleet {
    ns: String,
    cfg: Config,
    session: Arc<hopback::broker::Session>,
    /// Tasks published per version since the start.
    published: Arc<AtomicU64>,
    started: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Tasks per second per version.
const RATE_PER_VERSION: u64 = 50;

impl Fleet {
    async fn start(broker: &Broker, prefix: &str) -> Fleet {
        let cfg = broker.config();
        let session = common::connect(&cfg, "test").await;
        let ns = common::unique_ns(prefix);
        let versions = vec!["v1".to_string(), "v2".to_string()];
        hopback::broker::topology::init(&session, &ns, &versions, QueueType::Classic)
            .await
            .unwrap();
        let mut f = Fleet {
            ns,
            cfg,
            session,
            published: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        };
        f.workers().await;
        f.producer().await;
        f
    }

    /// The same namespace on new connections (the node restarted under the old ones).
    async fn reconnect(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.session = common::connect(&self.cfg, "test").await;
        self.published.store(0, Ordering::Relaxed);
        self.started = Instant::now();
        self.workers().await;
        self.producer().await;
    }

    /// v1 acknowledges every task; v2 rejects 3 of every 10 (nack without requeue → NS.dlx).
    async fn workers(&mut self) {
        for (v, reject) in [("v1", false), ("v2", true)] {
            let ch = self.session.channel().await.unwrap();
            ch.basic_qos(20, BasicQosOptions::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(
                    format!("{}.{v}", self.ns).as_str().into(),
                    format!("worker-{v}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            self.tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(Ok(d)) = consumer.next().await {
                    n += 1;
                    if reject && n % 10 < 3 {
                        let _ = d
                            .acker
                            .nack(BasicNackOptions {
                                requeue: false,
                                ..Default::default()
                            })
                            .await;
                    } else {
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                    }
                }
                drop(ch);
            }));
        }
    }

    /// 50 tasks/s to each version queue, on a fixed schedule that catches up when late.
    async fn producer(&mut self) {
        let ch = self.session.channel().await.unwrap();
        let (ns, published, stop) = (self.ns.clone(), self.published.clone(), self.stop.clone());
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_VERSION));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for v in ["v1", "v2"] {
                    if ch
                        .basic_publish(
                            "".into(),
                            format!("{ns}.{v}").as_str().into(),
                            BasicPublishOptions::default(),
                            format!("task {i}").as_bytes(),
                            BasicProperties::default().with_message_id(format!("{i}-{v}").into()),
                        )
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                published.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    /// The producer's rate per version so far.
    fn producer_rate(&self) -> f64 {
        self.published.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
        }
        let versions = vec!["v1".to_string(), "v2".to_string()];
        let _ =
            hopback::broker::topology::delete_namespace(&self.session, &self.ns, &versions).await;
        self.session.close().await;
    }
}

/// What one reading said about a version: publish/s, ack/s, rejected/s, error rate, unacked.
#[derive(Debug, Clone, Copy)]
struct Seen {
    publish: f64,
    ack: f64,
    rejected: f64,
    error_rate: f64,
    unacked: Option<u64>,
}

fn within(x: f64, want: f64, tolerance: f64) -> bool {
    (x - want).abs() <= want * tolerance
}

/// The numbers for both versions (`rate` = the producer's rate per version).
fn assert_fleet_numbers(where_: &str, v1: Seen, v2: Seen, rate: f64) {
    assert!(
        (0.20..=0.40).contains(&v2.error_rate),
        "{where_}: v2 error rate {} (want 20–40 %): {v2:?}",
        v2.error_rate
    );
    assert!(v1.error_rate < 0.02, "{where_}: v1 error rate {v1:?}");
    for (v, s) in [("v1", v1), ("v2", v2)] {
        assert!(
            within(s.publish, rate, 0.10),
            "{where_}: {v} publish {:.1}/s vs producer {rate:.1}/s",
            s.publish
        );
        assert!(
            within(s.ack + s.rejected, rate, 0.10),
            "{where_}: {v} ack {:.1}/s + rejected {:.1}/s vs producer {rate:.1}/s",
            s.ack,
            s.rejected
        );
        assert!(s.unacked.is_some(), "{where_}: {v} unacked unknown");
    }
    assert!(
        within(v1.ack, rate, 0.10),
        "{where_}: v1 ack {:.1}/s vs {rate:.1}/s",
        v1.ack
    );
}

fn seen_json(ns: &serde_json::Value, v: &str) -> Option<Seen> {
    let x = ns["versions"]
        .as_array()?
        .iter()
        .find(|x| x["version"] == v)?;
    Some(Seen {
        publish: x["rates"]["publish"].as_f64()?,
        ack: x["rates"]["ack"].as_f64()?,
        rejected: x["rejected_rate"].as_f64()?,
        error_rate: x["error_rate"].as_f64()?,
        unacked: x["unacked"].as_u64(),
    })
}

/// `status --json NS` until both versions' numbers are known (the management API's samples
/// need a few seconds on a fresh queue), then the numbers.
async fn status_shows_the_fleet(broker: &Broker, f: &Fleet, source: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut c = broker.bin();
        c.args(["--json", "status", &f.ns, "--no-attribution"]);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["metrics_source"], source, "{doc:#}");
        let ns = &doc["namespaces"][0];
        let rate = f.producer_rate();
        if let (Some(v1), Some(v2)) = (seen_json(ns, "v1"), seen_json(ns, "v2")) {
            // The management API's 5 s samples lag a fleet that just started: give them time.
            let settled = within(v2.publish, rate, 0.10) && within(v1.publish, rate, 0.10);
            if settled || Instant::now() > deadline {
                assert_fleet_numbers(&format!("status ({source})"), v1, v2, rate);
                return doc;
            }
        } else {
            assert!(
                Instant::now() < deadline,
                "status never knew both versions' numbers: {doc:#}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Apply the console's messages until `done(state)` or `limit`.
async fn until(
    state: &mut AppState,
    rx: &mut mpsc::Receiver<Msg>,
    limit: Duration,
    mut done: impl FnMut(&AppState) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done(state) {
            return true;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => { state.handle_msg(m); }
                None => return false,
            },
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

fn seen_state(state: &AppState, ns: &str, v: &str) -> Option<Seen> {
    let x = state.namespace(ns)?.version(v)?;
    let r = x.rates?;
    Some(Seen {
        publish: r.publish,
        ack: r.ack,
        rejected: x.rejected_rate?,
        error_rate: x.error_rate?,
        unacked: x.unacked,
    })
}

/// The console's app state (its real refresh task) shows the same numbers.
async fn console_shows_the_fleet(f: &Fleet, source: hopback::model::metrics::MetricsSource) {
    let mut cfg = f.cfg.clone();
    cfg.refresh_interval_ms = 500;
    cfg.operator = format!("test-{}", f.ns);
    let mut state = hopback::app::initial_state(&cfg).unwrap();
    let (tx, mut rx) = mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(&cfg, tx);
    let ns = f.ns.clone();
    let mut last = None;
    // Numbers known, then a full rate window of them.
    let known = until(&mut state, &mut rx, Duration::from_secs(30), |s| {
        s.snapshot
            .as_ref()
            .is_some_and(|x| x.metrics_source == Some(source))
            && seen_state(s, &ns, "v2").is_some()
            && seen_state(s, &ns, "v1").is_some()
    })
    .await;
    assert!(
        known,
        "the console never knew the numbers: {:?}",
        state.snapshot
    );
    let settle = tokio::time::Instant::now() + Duration::from_secs(6);
    let _ = until(&mut state, &mut rx, Duration::from_secs(20), |s| {
        let (v1, v2) = (seen_state(s, &ns, "v1"), seen_state(s, &ns, "v2"));
        last = v1.zip(v2);
        let rate = f.producer_rate();
        tokio::time::Instant::now() > settle
            && last.is_some_and(|(a, b)| {
                within(a.publish, rate, 0.10) && within(b.publish, rate, 0.10)
            })
    })
    .await;
    let (v1, v2) = last.expect("numbers known");
    assert_fleet_numbers(&format!("console ({source})"), v1, v2, f.producer_rate());
    let header =
        hopback::ui::widgets::header::header(&state, &hopback::ui::theme::Theme::plain(), 200)
            .to_string();
    assert!(
        header.contains(&format!("metrics {source}")),
        "the header names the source: {header}"
    );
    tasks.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the no-stats node: scripts/broker --version 4.0 --flavor no-stats"]
async fn no_stats_node_shows_rates_and_error_rate_from_prometheus() {
    let broker = no_stats();
    let f = Fleet::start(&broker, "promfleet").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let doc = status_shows_the_fleet(&broker, &f, "prometheus").await;
    assert!(doc.get("metrics_note").is_none(), "{doc:#}");
    assert_eq!(doc["server_version"], "4.0.5");
    // The node refuses to list consumers: the workers' names are unknown (null and why), not [].
    for v in doc["namespaces"][0]["versions"].as_array().unwrap() {
        assert!(v["connections"].is_null(), "{v:#}");
        assert!(
            v["connections_note"]
                .as_str()
                .is_some_and(|n| n.contains("cannot list consumers")),
            "{v:#}"
        );
    }
    // The human table says the same: `workers: ?`, never nothing.
    let mut c = broker.bin();
    c.env("HOPBACK_METRICS", "management");
    c.args(["status", &f.ns, "--no-attribution"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("v2 workers: ? ("), "{text}");
    // The human table says where ERR% comes from, and shows it.
    let mut c = broker.bin();
    c.args(["status", &f.ns, "--no-attribution"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("metrics: prometheus"), "{text}");
    for row in text
        .lines()
        .filter(|l| (l.contains(" v1 ") || l.contains(" v2 ")) && !l.contains("workers:"))
    {
        let cols: Vec<&str> = row.split_whitespace().collect();
        // READY UNACKED CONS IN/s ACK/s REDLV/s … ERR%: all known (DEAD is not browsed here).
        let n = cols.len();
        for c in cols[n - 8..n - 2].iter().chain([&cols[n - 1]]) {
            assert!(c.parse::<f64>().is_ok(), "unknown `{c}` in: {text}");
        }
    }
    console_shows_the_fleet(&f, hopback::model::metrics::MetricsSource::Prometheus).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the no-stats node: scripts/broker --version 4.0 --flavor no-stats"]
async fn no_stats_node_without_prometheus_is_unknown_never_no_traffic() {
    // metrics = management on a node without statistics: nothing to read the rates from.
    let broker = no_stats();
    let f = Fleet::start(&broker, "promnone").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut c = broker.bin();
    c.env("HOPBACK_METRICS", "management");
    c.args(["--json", "status", &f.ns, "--no-attribution"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["metrics_source"].is_null(), "{doc:#}");
    assert!(
        doc["metrics_note"]
            .as_str()
            .is_some_and(|n| n.contains("collects no statistics")),
        "{doc:#}"
    );
    // Its node list names no applications; the overview names the version.
    assert_eq!(doc["server_version"], "4.0.5", "{doc:#}");
    for v in doc["namespaces"][0]["versions"].as_array().unwrap() {
        assert!(v["rates"].is_null() && v["error_rate"].is_null(), "{v:#}");
    }
    let mut c = broker.bin();
    c.env("HOPBACK_METRICS", "management");
    c.args(["status", &f.ns, "--no-attribution"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v2_row = text.lines().find(|l| l.contains(" v2 ")).unwrap();
    assert!(
        v2_row.trim_end().ends_with('?'),
        "ERR% unknown, not `-`: {text}"
    );
    assert!(
        !text.contains("- = no traffic)") || text.contains("? = unknown"),
        "{text}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_on_broker_shows_the_same_numbers() {
    let broker = test_broker();
    let f = Fleet::start(&broker, "mgmtfleet").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let doc = status_shows_the_fleet(&broker, &f, "management").await;
    // `auto` said why it did not take Prometheus (3.10's endpoint has no per-queue counters;
    // on another broker the derived endpoint is not this one's).
    assert!(
        doc["metrics_note"]
            .as_str()
            .is_some_and(|n| n.contains("Prometheus not used")),
        "{doc:#}"
    );
    console_shows_the_fleet(&f, hopback::model::metrics::MetricsSource::Management).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the no-stats node: scripts/broker --version 4.0 --flavor no-stats"]
async fn a_node_restart_never_shows_a_negative_or_huge_rate() {
    let broker = no_stats();
    let mut f = Fleet::start(&broker, "promreset").await;
    let ns = f.ns.clone();
    let mut cfg = f.cfg.clone();
    cfg.refresh_interval_ms = 500;
    cfg.operator = format!("test-{ns}");
    let mut state = hopback::app::initial_state(&cfg).unwrap();
    let (tx, mut rx) = mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(&cfg, tx);
    let rate = RATE_PER_VERSION as f64;
    // Every rate the console shows for the namespace, before, during and after the restart.
    let highest = std::cell::Cell::new(0.0f64);
    let lowest = std::cell::Cell::new(0.0f64);
    let readings = std::cell::Cell::new(0u32);
    let watch = |s: &AppState| {
        for v in ["v1", "v2"] {
            if let Some(r) = s
                .namespace(&ns)
                .and_then(|n| n.version(v))
                .and_then(|x| x.rates)
            {
                readings.set(readings.get() + 1);
                for x in [r.publish, r.ack, r.deliver, r.redeliver] {
                    highest.set(highest.get().max(x));
                    lowest.set(lowest.get().min(x));
                }
            }
        }
    };
    assert!(
        until(&mut state, &mut rx, Duration::from_secs(20), |s| {
            watch(s);
            seen_state(s, &ns, "v1").is_some_and(|v| v.publish > 0.0)
        })
        .await,
        "rates never known before the restart"
    );
    // Let the counters grow well above what the fleet counts after the restart (a tracker that
    // only took positive differences would show 0/s for as long as they take to catch up).
    let _ = until(&mut state, &mut rx, Duration::from_secs(12), |s| {
        watch(s);
        false
    })
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker");
    let restart = tokio::task::spawn_blocking(move || {
        let stop = std::process::Command::new(script)
            .args(["--version", "4.0", "--flavor", "no-stats", "--stop"])
            .status()
            .unwrap();
        let start = std::process::Command::new(script)
            .args(["--version", "4.0", "--flavor", "no-stats"])
            .status()
            .unwrap();
        stop.success() && start.success()
    });
    let mut restart = std::pin::pin!(restart);
    loop {
        tokio::select! {
            done = &mut restart => { assert!(done.unwrap(), "the node restarted"); break; }
            m = rx.recv() => { if let Some(m) = m { state.handle_msg(m); watch(&state); } }
        }
    }
    // The same namespace (durable queues, counters from 0 again) fed on new connections: the
    // console that lived through the restart has the old counters' last values.
    f.reconnect().await;
    let before = readings.get();
    let came_back = until(&mut state, &mut rx, Duration::from_secs(15), |s| {
        watch(s);
        seen_state(s, &ns, "v1").is_some_and(|v| within(v.publish, rate, 0.10))
    })
    .await;
    let _ = until(&mut state, &mut rx, Duration::from_secs(4), |s| {
        watch(s);
        false
    })
    .await;
    assert!(
        came_back,
        "rates did not come back after the restart: {:?}",
        state.snapshot
    );
    assert!(readings.get() > before, "no reading after the restart");
    assert!(
        lowest.get() >= 0.0,
        "a rate went negative: {}",
        lowest.get()
    );
    assert!(
        highest.get() <= rate * 1.5,
        "a rate jumped to {}/s (the producer does {rate}/s)",
        highest.get()
    );
    tasks.abort();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_management_api_the_version_comes_from_the_amqp_server_properties() {
    let broker = test_broker();
    let cfg = broker.config();
    let version = hopback::broker::mgmt::Mgmt::new(&cfg.profile)
        .unwrap()
        .overview()
        .await
        .unwrap()
        .rabbitmq_version;
    assert!(!version.is_empty());
    let t = common::TestNs::new("srvver", &["v1"], QueueType::Classic).await;
    // Nothing answers HTTP on port 9: no management API, no Prometheus.
    let blind = Broker {
        mgmt_url: Some("http://127.0.0.1:9/".into()),
        prometheus_url: Some("http://127.0.0.1:9/".into()),
        ..broker
    };
    let mut c = blind.bin();
    c.args(["--json", "status", &t.ns, "--no-attribution"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(doc["mgmt_available"], false, "{doc:#}");
    assert_eq!(doc["server_version"], version.as_str(), "{doc:#}");
    t.cleanup().await;
}
