//! The self-driving canary against the real broker with the drill's simulated fleet (issue 35's
//! Must-show), each test on its own namespace and ledger stream, the canary run as the `hopback`
//! binary (a child process a test can kill and a second process can control):
//! - a healthy v2 reaches 100 % through every step;
//! - a v2 failing 30 % is rolled back automatically within one step time plus one metrics
//!   refresh, with 0 tasks lost and the abort's evidence in the ledger and the post-mortem;
//! - an idle v2 (no traffic) holds, then aborts, never advances;
//! - pause / resume / abort from a second process, while another operator's flip is refused
//!   naming the canary;
//! - a killed canary leaves the gate where it was and resumes from the ledger.
//!
//! Step times are a few seconds. The broker's statistics (and so its counters, Prometheus's
//! included) move every 5 s, so a step's analysis sees its first counts up to 5 s late.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopback::broker::mgmt::Mgmt;
use hopback::broker::session::Session;
use hopback::broker::topology::QueueType;
use hopback::config::{self, Config, Overrides};
use hopback::drill::fleet::{Fleet, FleetSpec};
use hopback::drill::scenario::Scenario;
use hopback::ledger::event::{Event, EventKind, Outcome};
use hopback::ledger::{self, Ledger, StreamStart};
use hopback::model::gate::GateSplit;
use serde_json::Value;

/// The broker statistics interval: counters move this often.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Broker {
    url: String,
    mgmt_url: Option<String>,
    prometheus_url: Option<String>,
}

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
}

struct Env {
    broker: Broker,
    cfg: Config,
    ns: String,
    session: Arc<Session>,
    stream: String,
    ledger: Arc<Ledger>,
    mgmt: Mgmt,
}

async fn setup(prefix: &str, broker: Broker) -> Env {
    let cfg = broker.config();
    let session = hopback::broker::session::connect(&cfg.profile, "test", "test")
        .await
        .unwrap();
    let ns = common::unique_ns(prefix);
    hopback::broker::topology::init(
        &session,
        &ns,
        &["v1".to_string(), "v2".to_string()],
        QueueType::Classic,
    )
    .await
    .unwrap();
    let stream = format!("t-canary-ledger-{}", uuid::Uuid::new_v4().simple());
    let ledger = Arc::new(Ledger::open_stream(&session, &cfg, &stream).await);
    assert!(ledger.is_stream(), "{}", ledger.backend_description());
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    Env {
        broker,
        cfg,
        ns,
        session,
        stream,
        ledger,
        mgmt,
    }
}

fn split(pairs: &[(&str, u32)]) -> GateSplit {
    GateSplit(pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect())
}

impl Env {
    /// Start the fleet and wait until both versions have their workers (a canary's first step
    /// refuses to move traffic onto a version without consumers).
    async fn start_fleet(&self, rate: u32, producers: usize) -> Fleet {
        let fleet = Fleet::start(self.fleet(rate, producers));
        let deadline = Instant::now() + Duration::from_secs(20);
        for v in ["v1", "v2"] {
            let q = format!("{}.{v}", self.ns);
            loop {
                let c = self.session.passive_queue(&q).await.unwrap().unwrap();
                if c.consumers > 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "no workers on {q}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        fleet
    }
    fn fleet(&self, rate: u32, producers: usize) -> FleetSpec {
        let mut spec = FleetSpec::new(self.cfg.profile.clone(), &self.ns, Scenario::Poison, rate);
        spec.fault.poison_fraction = 0.3;
        spec.producers = producers;
        spec
    }
    /// The `hopback` binary on this broker and ledger stream.
    fn bin(&self, args: &[&str]) -> std::process::Command {
        let mut c = common::bin();
        c.env("HOPBACK_URL", &self.broker.url)
            .env("HOPBACK_LEDGER_STREAM", &self.stream)
            .env(
                "HOPBACK_DATA_DIR",
                std::env::temp_dir().join("hopback-canary-tests"),
            )
            .env_remove("HOPBACK_METRICS");
        match &self.broker.mgmt_url {
            Some(m) => c.env("HOPBACK_MGMT_URL", m),
            None => c.env_remove("HOPBACK_MGMT_URL"),
        };
        match &self.broker.prometheus_url {
            Some(p) => c.env("HOPBACK_PROMETHEUS_URL", p),
            None => c.env_remove("HOPBACK_PROMETHEUS_URL"),
        };
        c.args(args);
        c
    }
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.bin(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }
    /// `hopback --json canary NS --to v2 --yes` with short times and `extra`.
    fn canary_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "--json",
            "canary",
            self.ns.as_str(),
            "--to",
            "v2",
            "--refresh",
            "1s",
            "--verify-window",
            "2s",
            "--yes",
        ];
        a.extend_from_slice(extra);
        a
    }
    async fn gate(&self) -> GateSplit {
        hopback::ops::gate::read_gate(&self.session, &self.mgmt, &self.cfg, &self.ns, &[])
            .await
            .unwrap()
            .split
    }
    async fn events(&self) -> Vec<Event> {
        self.ledger
            .read(StreamStart::First)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.namespace.as_deref() == Some(self.ns.as_str()))
            .collect()
    }
    /// Wait until an event matching `f` is in the ledger.
    async fn wait_event(&self, what: &str, f: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(e) = self.events().await.into_iter().find(|e| f(e)) {
                return e;
            }
            assert!(Instant::now() < deadline, "no {what} in the ledger");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    async fn cleanup(self) {
        if let Ok(ch) = self.session.channel().await {
            let _ = ch
                .queue_delete(
                    hopback::topology::Namespace::convention(&self.ns)
                        .parked
                        .as_str()
                        .into(),
                    Default::default(),
                )
                .await;
        }
        ledger::delete_stream(&self.session, &self.stream)
            .await
            .unwrap();
        hopback::broker::topology::delete_namespace(
            &self.session,
            &self.ns,
            &["v1".to_string(), "v2".to_string()],
        )
        .await
        .unwrap();
        self.session.close().await;
    }
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn of_kind(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

fn decisions(events: &[Event]) -> Vec<String> {
    of_kind(events, EventKind::CanaryDecision)
        .iter()
        .map(|e| e.params["decision"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Stop the fleet and count every id: nothing lost, nothing processed twice.
async fn assert_nothing_lost(env: &Env, mut fleet: Fleet) -> hopback::drill::score::Accounting {
    fleet.stop_producers().await;
    assert!(fleet.wait_idle(Duration::from_secs(30)).await);
    fleet.stop_workers().await;
    let shared = fleet.shared();
    let (published, processed) = shared.id_sets();
    let acc = hopback::drill::account_ids(
        &env.session,
        &env.ns,
        &published,
        &processed,
        shared.stats().duplicates_skipped,
    )
    .await
    .unwrap();
    assert!(acc.published > 0, "{acc:?}");
    assert_eq!(acc.lost, 0, "{acc:?}");
    assert_eq!(acc.duplicates_processed, 0, "{acc:?}");
    assert_eq!(
        acc.processed + acc.dead_lettered + acc.parked + acc.still_queued,
        acc.published,
        "{acc:?}"
    );
    acc
}

#[tokio::test]
async fn a_healthy_v2_reaches_100_through_every_step() {
    let env = setup("canary-ok", test_broker()).await;
    let fleet = env.start_fleet(120, 1).await;
    let t0 = Instant::now();
    let out = env
        .run(&env.canary_args(&[
            "--steps",
            "20,50,100",
            "--step-time",
            "3s",
            "--min-processed",
            "10",
            // The simulated fleet has a small baseline of failures on both versions (v1 too):
            // a healthy v2 stays far below this, a poisoned one (30 %) far above.
            "--max-error-rate",
            "10",
            "--max-hold",
            "20s",
        ]))
        .await;
    let report = json_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {report}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "healthy canary: promoted in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(report["outcome"]["outcome"], "promoted", "{report}");
    assert_eq!(report["steps_set"], serde_json::json!([20, 50, 100]));
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(g.same_routing(&split(&[("v2", 100)])), "gate {g:?}");
    }
    let id = report["id"].as_str().unwrap().to_string();
    let events = env.events().await;
    // Every step set through the gate operation, each one passed by an analysis.
    let gate_sets: Vec<&Event> = of_kind(&events, EventKind::GateSet)
        .into_iter()
        .filter(|e| e.outcome == Outcome::Ok && e.params["canary_id"] == id.as_str())
        .collect();
    assert_eq!(gate_sets.len(), 3, "{gate_sets:#?}");
    assert_eq!(of_kind(&events, EventKind::CanaryStep).len(), 3);
    let d = decisions(&events);
    assert_eq!(d.iter().filter(|x| *x == "advance").count(), 3, "{d:?}");
    assert!(!d.contains(&"abort".to_string()), "{d:?}");
    let advance = of_kind(&events, EventKind::CanaryDecision)
        .into_iter()
        .find(|e| e.params["decision"] == "advance")
        .unwrap();
    assert!(
        advance.after["analysis"]["new"]["acked"].as_u64().unwrap() >= 10,
        "{:?}",
        advance.after
    );
    let fin = of_kind(&events, EventKind::CanaryFinished);
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].outcome, Outcome::Ok);
    assert!(fin[0].is_verified());
    assert_nothing_lost(&env, fleet).await;
    env.cleanup().await;
}

async fn failing_v2_is_rolled_back(broker: Broker, prefix: &str) {
    let env = setup(prefix, broker).await;
    let fleet = env.start_fleet(120, 1).await;
    fleet.inject_fault(); // v2 rejects 30 % of its tasks from the start
    let step_time = Duration::from_secs(4);
    let refresh = Duration::from_secs(1);
    let out = env
        .run(&env.canary_args(&[
            "--steps",
            "25,50,100",
            "--step-time",
            "4s",
            "--min-processed",
            "10",
            "--max-error-rate",
            "2",
        ]))
        .await;
    let report = json_of(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"]["outcome"], "aborted", "{report}");
    assert_eq!(
        report["steps_set"],
        serde_json::json!([25]),
        "never advanced"
    );
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(g.same_routing(&split(&[("v1", 100)])), "gate {g:?}");
    }
    let id = report["id"].as_str().unwrap().to_string();
    let events = env.events().await;
    // Within one step time plus one refresh of the broker's counters (and the canary's own).
    let step = of_kind(&events, EventKind::CanaryStep)[0].ts;
    let back = of_kind(&events, EventKind::GateSet)
        .into_iter()
        .find(|e| {
            e.outcome == Outcome::Ok
                && e.params["canary_id"] == id.as_str()
                && e.gate_after()
                    .is_some_and(|g| g.same_routing(&split(&[("v1", 100)])))
        })
        .expect("the abort's gate flip");
    let took = (back.ts - step).to_std().unwrap();
    eprintln!(
        "failing canary: gate back on v1 {:.1} s after the step was set (step time {} s)",
        took.as_secs_f64(),
        step_time.as_secs()
    );
    assert!(
        took <= step_time + STATS_INTERVAL + refresh + Duration::from_secs(1),
        "rolled back after {took:?}"
    );
    // The evidence: the abort decision with the numbers, journaled before the gate flip.
    let abort = of_kind(&events, EventKind::CanaryDecision)
        .into_iter()
        .find(|e| e.params["decision"] == "abort")
        .expect("an abort decision");
    assert!(abort.ts <= back.ts);
    let why = abort.reason.clone().unwrap_or_default();
    assert!(
        why.contains("v2 error rate") && why.contains("> max 2%"),
        "{why}"
    );
    let rejected = abort.after["analysis"]["new"]["rejected"].as_u64().unwrap();
    let acked = abort.after["analysis"]["new"]["acked"].as_u64().unwrap();
    let pct = rejected as f64 * 100.0 / (rejected + acked) as f64;
    assert!(pct > 10.0, "{:?}", abort.after);
    assert!(back.reason.clone().unwrap_or_default().contains("aborted"));
    // The rest of the rollback ran, non-interactively, and the canary says how it ended.
    let fin = of_kind(&events, EventKind::CanaryFinished);
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].outcome, Outcome::Failed);
    let rollback_id = fin[0].params["rollback_id"].as_str().unwrap().to_string();
    assert!(
        events.iter().any(|e| e.kind == EventKind::RollbackFinished
            && e.rollback_id().as_deref() == Some(rollback_id.as_str())),
        "the rollback did not finish"
    );
    // The post-mortem draft names the step and the evidence.
    let inc = hopback::ledger::postmortem::find_incident(&events, Some(&rollback_id)).unwrap();
    let md = hopback::ledger::postmortem::render(
        &hopback::ledger::postmortem::incident_events(&events, &inc),
        &inc,
    );
    assert!(md.contains("step 1 (25 %)"), "{md}");
    assert!(md.contains("> max 2%"), "{md}");
    assert_nothing_lost(&env, fleet).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_v2_failing_30_percent_is_rolled_back_by_itself() {
    failing_v2_is_rolled_back(test_broker(), "canary-bad").await;
}

#[tokio::test]
#[ignore = "needs the no-stats node: scripts/broker --version 4.0 --flavor no-stats"]
async fn a_v2_failing_30_percent_is_rolled_back_on_a_node_without_management_stats() {
    failing_v2_is_rolled_back(no_stats(), "canary-bad-ns").await;
}

#[tokio::test]
async fn an_idle_v2_holds_then_aborts_and_never_advances() {
    let env = setup("canary-idle", test_broker()).await;
    // Workers on both versions, no producer: v2 gets no traffic.
    let fleet = env.start_fleet(1, 0).await;
    let out = env
        .run(&env.canary_args(&[
            "--steps",
            "50,100",
            "--step-time",
            "2s",
            "--min-processed",
            "5",
            "--max-hold",
            "3s",
        ]))
        .await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(4), "{report}");
    assert_eq!(report["steps_set"], serde_json::json!([50]), "{report}");
    let why = report["outcome"]["why"].as_str().unwrap();
    assert!(why.starts_with("held for"), "{why}");
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(g.same_routing(&split(&[("v1", 100)])), "gate {g:?}");
    }
    let events = env.events().await;
    let d = decisions(&events);
    assert!(d.contains(&"hold".to_string()), "{d:?}");
    assert!(!d.contains(&"advance".to_string()), "{d:?}");
    assert_eq!(d.last().map(String::as_str), Some("abort"), "{d:?}");
    drop(fleet);
    env.cleanup().await;
}

/// Start a canary as a child process; wait until its first step is journaled; its id.
async fn spawn_canary(env: &Env, extra: &[&str]) -> (std::process::Child, String) {
    let child = env
        .bin(&env.canary_args(extra))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let step = env
        .wait_event("first canary step", |e| e.kind == EventKind::CanaryStep)
        .await;
    let id = step.params["canary_id"].as_str().unwrap().to_string();
    (child, id)
}

#[tokio::test]
async fn pause_resume_and_abort_from_a_second_process() {
    let env = setup("canary-ctl", test_broker()).await;
    let fleet = env.start_fleet(100, 1).await;
    let (child, id) = spawn_canary(
        &env,
        &[
            "--steps",
            "20,50,100",
            "--step-time",
            "3s",
            "--min-processed",
            "10",
        ],
    )
    .await;
    let out = env.run(&["canary", "pause", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another operator's flip is refused, naming the canary.
    let flip = env.run(&["gate", "set", &env.ns, "v1=100", "--yes"]).await;
    assert_eq!(flip.status.code(), Some(3));
    let err = String::from_utf8_lossy(&flip.stderr);
    assert!(err.contains(&format!("canary {id}")), "{err}");
    // Paused: no advance although the step time passes twice over.
    tokio::time::sleep(Duration::from_secs(6)).await;
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(
            g.same_routing(&split(&[("v1", 80), ("v2", 20)])),
            "gate {g:?}"
        );
    }
    let list = env.run(&["canary", "list", &env.ns]).await;
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains(&id) && text.contains("PAUSED"), "{text}");
    let out = env.run(&["canary", "resume", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.run(&["canary", "abort", &id, "--yes"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(done.status.code(), Some(3), "aborted by an operator");
    let report = json_of(&done);
    assert_eq!(report["outcome"]["by"], "guest", "{report}");
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(g.same_routing(&split(&[("v1", 100)])), "gate {g:?}");
    }
    let events = env.events().await;
    // Each request journaled by its requester, and applied by the canary naming who asked.
    let asked: Vec<&Event> = of_kind(&events, EventKind::CanaryControl)
        .into_iter()
        .filter(|e| e.outcome == Outcome::Ok)
        .collect();
    assert_eq!(asked.len(), 3, "{asked:#?}");
    assert!(asked.iter().all(|e| e.author.as_deref() == Some("guest")));
    for cmd in ["pause", "resume", "abort"] {
        let d = of_kind(&events, EventKind::CanaryDecision)
            .into_iter()
            .find(|e| e.params["decision"] == cmd)
            .unwrap_or_else(|| panic!("no {cmd} decision"));
        assert_eq!(d.params["requested_by"], "guest", "{cmd}");
    }
    let fin = of_kind(&events, EventKind::CanaryFinished);
    assert_eq!(fin[0].outcome, Outcome::Cancelled);
    // A finished canary is not running: a request says so.
    let late = env.run(&["canary", "pause", &id]).await;
    assert_eq!(late.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("not running"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );
    assert_nothing_lost(&env, fleet).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_killed_canary_leaves_the_gate_and_resumes_from_the_ledger() {
    let env = setup("canary-kill", test_broker()).await;
    let fleet = env.start_fleet(120, 1).await;
    let (mut child, id) = spawn_canary(
        &env,
        &[
            "--steps",
            "50,100",
            "--step-time",
            "3s",
            "--min-processed",
            "10",
        ],
    )
    .await;
    // Killed in the middle of its first step.
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The gate stays where the canary left it; nobody holds its lock any more.
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(
            g.same_routing(&split(&[("v1", 50), ("v2", 50)])),
            "gate {g:?}"
        );
    }
    let list = env.run(&["canary", "list", &env.ns]).await;
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("NOT RUNNING") && text.contains("--resume"),
        "{text}"
    );
    let out = env
        .run(&["--json", "canary", "--resume", &id, "--yes"])
        .await;
    let report = json_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {report}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["resumed"], true);
    assert_eq!(report["outcome"]["outcome"], "promoted");
    // It went on from the step it had reached (set again: its window starts over).
    assert_eq!(
        report["steps_set"],
        serde_json::json!([50, 100]),
        "{report}"
    );
    {
        // The shares the bindings make (a lone version may keep its old weight).
        let g = env.gate().await;
        assert!(g.same_routing(&split(&[("v2", 100)])), "gate {g:?}");
    }
    let events = env.events().await;
    let starts = of_kind(&events, EventKind::CanaryStarted);
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1].params["resumed"], true);
    assert_eq!(
        of_kind(&events, EventKind::CanaryFinished)[0].outcome,
        Outcome::Ok
    );
    // Resuming a finished canary is refused.
    let again = env.run(&["canary", "--resume", &id, "--yes"]).await;
    assert_eq!(again.status.code(), Some(3));
    assert_nothing_lost(&env, fleet).await;
    env.cleanup().await;
}
