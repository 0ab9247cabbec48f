//! The guided rollback against the real broker with simulated workers (issue 8's Must-show):
//! - a v2 rejecting everything under continuous production: `rollback NS --yes` ends with the
//!   gate at v1=100, `NS.v2` empty, v2's dead letters replayed to v1 and processed, exit 0, 0 lost;
//! - SIGKILL in the middle of the drain, then `--resume`: same end state, 0 lost, no step repeated
//!   (the ledger shows it);
//! - v1 failing too: the recovery verification fails → exit 4, state consistent, failure journaled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestNs;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use hopback::drill::fleet::{Fleet, FleetSpec};
use hopback::drill::scenario::Scenario;
use hopback::ledger::event::{Event, EventKind, Outcome};
use hopback::ledger::{self, Ledger, StreamStart};
use hopback::model::gate::GateSplit;
use hopback::ops::gate;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::Value;

struct Env {
    t: TestNs,
    stream: String,
    ledger: Arc<Ledger>,
    mgmt: Mgmt,
}

async fn setup(prefix: &str) -> Env {
    let t = TestNs::new(prefix, &["v1", "v2"], QueueType::Classic).await;
    let stream = format!("t-rb-ledger-{}", uuid::Uuid::new_v4().simple());
    let ledger = Arc::new(Ledger::open_stream(&t.session, &t.cfg, &stream).await);
    assert!(ledger.is_stream(), "{}", ledger.backend_description());
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    Env {
        t,
        stream,
        ledger,
        mgmt,
    }
}

impl Env {
    async fn set_gate(&self, pairs: &[(&str, u32)]) {
        let target = GateSplit(pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect());
        gate::apply(
            &hopback::ops::OpContext::of(
                &self.t.session,
                &self.mgmt,
                &self.ledger,
                &self.t.cfg,
                hopback::ops::Via::Cli,
            ),
            &gate::GateRequest {
                namespace: self.t.ns.clone(),
                target,
                force_zero_consumers: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    async fn gate(&self) -> GateSplit {
        gate::read_gate(&self.t.session, &self.mgmt, &self.t.cfg, &self.t.ns, &[])
            .await
            .unwrap()
            .split
    }
    async fn ready(&self, v: &str) -> u32 {
        self.t
            .session
            .passive_queue(&format!("{}.{v}", self.t.ns))
            .await
            .unwrap()
            .unwrap()
            .ready
    }
    fn rollback(&self, args: &[&str]) -> std::process::Command {
        let mut c = common::bin();
        c.args(["--url", &common::test_url(), "--json", "rollback"])
            .args(args)
            .env("HOPBACK_LEDGER_STREAM", &self.stream)
            .env(
                "HOPBACK_DATA_DIR",
                std::env::temp_dir().join("hopback-rb-tests"),
            );
        c
    }
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.rollback(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }
    /// Events of one rollback, waiting until its `rollback_finished` is readable.
    async fn rollback_events(&self, id: &str, want_finished: bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.ledger.read(StreamStart::First).await.unwrap();
            let mine: Vec<Event> = all
                .into_iter()
                .filter(|e| hopback::ops::rollback::rollback_id_of(e).as_deref() == Some(id))
                .collect();
            let done = mine.iter().any(|e| e.kind == EventKind::RollbackFinished);
            if done == want_finished || Instant::now() > deadline {
                return mine;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    async fn cleanup(self) {
        if let Ok(ch) = self.t.session.channel().await {
            let _ = ch
                .queue_delete(
                    hopback::topology::Namespace::convention(&self.t.ns)
                        .parked
                        .as_str()
                        .into(),
                    Default::default(),
                )
                .await;
        }
        ledger::delete_stream(&self.t.session, &self.stream)
            .await
            .unwrap();
        self.t.cleanup().await;
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

fn fleet_spec(env: &Env, rate: u32, poison_fraction: f64) -> FleetSpec {
    let mut spec = FleetSpec::new(env.t.cfg.profile.clone(), &env.t.ns, Scenario::Poison, rate);
    spec.fault.poison_fraction = poison_fraction;
    spec
}

#[tokio::test]
async fn default_plan_rolls_back_a_rejecting_v2_under_production() {
    let env = setup("rb-ok").await;
    let mut spec = fleet_spec(&env, 80, 1.0);
    spec.workers_per_version = 2;
    let mut fleet = Fleet::start(spec);
    fleet.inject_fault();
    env.set_gate(&[("v1", 50), ("v2", 50)]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = fleet.shared().stats();
    assert!(
        before.per_version["v2"].rejected > 10,
        "v2 should be rejecting: {before:?}"
    );

    let out = env
        .run(&[&env.t.ns, "--yes", "--verify-window", "3s"])
        .await;
    let report = json_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {report}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"]["outcome"], "done", "{report}");
    let replayed: u64 = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["data"]["replayed"].as_u64())
        .sum();
    assert!(
        replayed > 0,
        "v2's dead letters were not replayed: {report}"
    );

    // End state: gate on v1 only, v2's queue empty.
    let g = env.gate().await;
    // All on v1 (a lone version may keep its old weight: the share is what routes).
    assert!(
        g.same_routing(&GateSplit([("v1".to_string(), 100)].into())),
        "{g:?}"
    );
    assert_eq!(env.ready("v2").await, 0);

    // Production continued through the rollback; now let the fleet finish and count every id.
    fleet.stop_producers().await;
    assert!(fleet.wait_idle(Duration::from_secs(30)).await);
    fleet.stop_workers().await;
    let shared = fleet.shared();
    let (published, processed) = shared.id_sets();
    let acc = hopback::drill::account_ids(
        &env.t.session,
        &env.t.ns,
        &published,
        &processed,
        shared.stats().duplicates_skipped,
    )
    .await
    .unwrap();
    assert_eq!(acc.lost, 0, "{acc:?}");
    assert_eq!(acc.duplicates_processed, 0, "{acc:?}");
    assert_eq!(
        acc.processed + acc.dead_lettered + acc.parked + acc.still_queued,
        acc.published
    );
    assert_eq!(acc.parked, 0, "{acc:?}");
    // Only v2's in-flight stragglers (prefetch 10 × 2 workers) may still sit in the DLQ.
    assert!(acc.dead_lettered <= 20, "{acc:?}");
    assert!(
        acc.processed >= acc.published - 20,
        "the replayed dead letters must have been processed by v1: {acc:?}"
    );
    drop(fleet);
    env.cleanup().await;
}

/// Publish `n` messages with unique ids through the entry exchange, every confirm awaited.
async fn publish(env: &Env, n: usize) -> BTreeSet<String> {
    let ch = env.t.session.confirm_channel().await.unwrap();
    let mut ids = BTreeSet::new();
    let body = vec![b'x'; 256];
    for chunk in 0..n.div_ceil(500) {
        let mut confirms = Vec::new();
        for i in 0..500.min(n - chunk * 500) {
            let id = format!("{}-{:06}", env.t.ns, chunk * 500 + i);
            let c = ch
                .basic_publish(
                    env.t.ns.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push((id, c));
        }
        for (id, c) in confirms {
            let conf = tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(conf, lapin::Confirmation::Ack(None)));
            ids.insert(id);
        }
    }
    ids
}

#[tokio::test]
async fn killed_mid_drain_then_resumed_without_repeating_a_step() {
    let env = setup("rb-kill").await;
    env.set_gate(&[("v2", 100)]).await;
    let n = 20_000;
    let published = publish(&env, n).await;
    assert_eq!(env.ready("v2").await as usize, n);
    // Only v1 workers: v2's backlog waits for the drain.
    let mut spec = fleet_spec(&env, 1, 0.0);
    spec.versions = vec!["v1".into()];
    spec.producers = 0;
    spec.workers_per_version = 3;
    spec.prefetch = 100;
    spec.base_latency = Duration::ZERO;
    let mut fleet = Fleet::start(spec);

    let mut child = env
        .rollback(&[&env.t.ns, "--yes", "--from", "v2", "--verify-window", "2s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as the drain is under way (v2's depth falling, not yet zero).
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let r = env.ready("v2").await as usize;
        if r < n * 9 / 10 && r > 0 {
            child.kill().unwrap(); // SIGKILL
            break r;
        }
        assert!(r > 0, "the drain finished before it could be killed");
        assert!(Instant::now() < deadline, "the drain never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.ready("v2").await > 0,
        "killed at {killed_at}: nothing left to resume"
    );

    // The rollback id, from the ledger.
    let id = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = env.ledger.read(StreamStart::First).await.unwrap();
            if let Some(e) = all.iter().find(|e| {
                e.kind == EventKind::RollbackStarted && e.namespace.as_deref() == Some(&env.t.ns)
            }) {
                break hopback::ops::rollback::rollback_id_of(e).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no rollback_started in the ledger"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let before = env.rollback_events(&id, false).await;
    assert!(!before.iter().any(|e| e.kind == EventKind::RollbackFinished));

    let out = env.run(&["--resume", &id, "--yes"]).await;
    let report = json_of(&out);
    assert!(
        out.status.success(),
        "resume exit {:?}: {report}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["resumed"], true);
    let states: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(&states[..3], ["already_done"; 3], "{states:?}");
    assert_eq!(states[3], "done", "the drain continues: {states:?}");

    // The ledger: every step finished exactly once; only the interrupted drain started twice;
    // the gate was flipped once.
    let events = env.rollback_events(&id, true).await;
    let count = |i: u64, phase: &str| {
        events
            .iter()
            .filter(|e| {
                e.kind == EventKind::RollbackStep
                    && e.params["index"].as_u64() == Some(i)
                    && e.params["phase"] == phase
            })
            .count()
    };
    for i in 0..7u64 {
        assert_eq!(count(i, "finish"), 1, "step {i} finished ≠ once");
        let starts = if i == 3 { 2 } else { 1 };
        assert_eq!(count(i, "start"), starts, "step {i} started ≠ {starts}×");
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::GateSet && e.outcome != Outcome::Started)
            .count(),
        1,
        "the gate step was repeated"
    );
    let fin = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackFinished)
        .unwrap();
    assert_eq!(fin.outcome, Outcome::Ok);

    // Same end state as an uninterrupted rollback, and every id processed exactly once.
    assert!(
        env.gate()
            .await
            .same_routing(&GateSplit([("v1".to_string(), 100)].into()))
    );
    assert_eq!(env.ready("v2").await, 0);
    assert!(fleet.wait_idle(Duration::from_secs(60)).await);
    fleet.stop_workers().await;
    let shared = fleet.shared();
    let (_, processed) = shared.id_sets();
    let acc = hopback::drill::account_ids(
        &env.t.session,
        &env.t.ns,
        &published,
        &processed,
        shared.stats().duplicates_skipped,
    )
    .await
    .unwrap();
    assert_eq!(acc.lost, 0, "{acc:?}");
    assert_eq!(acc.processed, n as u64, "{acc:?}");
    assert_eq!(acc.duplicates_processed, 0, "{acc:?}");
    drop(fleet);
    env.cleanup().await;
}

#[tokio::test]
async fn failing_verification_exits_4_and_is_journaled() {
    let env = setup("rb-vfail").await;
    let mut spec = fleet_spec(&env, 60, 1.0);
    spec.faulty_versions = vec!["v1".into(), "v2".into()];
    let mut fleet = Fleet::start(spec);
    fleet.inject_fault();
    env.set_gate(&[("v1", 50), ("v2", 50)]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let out = env
        .run(&[&env.t.ns, "--yes", "--verify-window", "2s"])
        .await;
    let report = json_of(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report["outcome"]["outcome"], "verification_failed",
        "{report}"
    );
    assert_eq!(report["outcome"]["step"], 5, "{report}");
    // Consistent state: traffic on v1 only, v2 drained; the failure is in the ledger.
    assert!(
        env.gate()
            .await
            .same_routing(&GateSplit([("v1".to_string(), 100)].into()))
    );
    assert_eq!(env.ready("v2").await, 0);
    let id = report["rollback_id"].as_str().unwrap();
    let events = env.rollback_events(id, true).await;
    let fin = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackFinished)
        .expect("rollback_finished journaled");
    assert_eq!(fin.outcome, Outcome::VerificationFailed);
    assert!(
        fin.reason
            .as_deref()
            .unwrap_or("")
            .contains("verification failed"),
        "{fin:?}"
    );

    fleet.stop_producers().await;
    fleet.wait_idle(Duration::from_secs(20)).await;
    fleet.stop_workers().await;
    let shared = fleet.shared();
    let (published, processed) = shared.id_sets();
    let acc = hopback::drill::account_ids(
        &env.t.session,
        &env.t.ns,
        &published,
        &processed,
        shared.stats().duplicates_skipped,
    )
    .await
    .unwrap();
    assert_eq!(acc.lost, 0, "{acc:?}");
    assert!(acc.dead_lettered + acc.parked > 0, "{acc:?}");
    drop(fleet);
    env.cleanup().await;
}

/// Answers "Skip" at every decision point.
struct Skipper;

impl hopback::ops::rollback::Operator for Skipper {
    fn decide<'a>(
        &'a self,
        _point: &'a hopback::ops::rollback::DecisionPoint,
    ) -> futures::future::BoxFuture<'a, hopback::ops::rollback::Decision> {
        Box::pin(async { hopback::ops::rollback::Decision::Skip })
    }
}

/// Issue 17: "Skip" at the first question ("Roll back from v2 to v1?") is not a yes — the
/// rollback stops there and the gate does not change.
#[tokio::test]
async fn skip_at_the_first_question_changes_nothing() {
    let env = setup("rb-skip").await;
    env.set_gate(&[("v1", 50), ("v2", 50)]).await;
    let renv = hopback::ops::rollback::Env {
        session: env.t.session.clone(),
        mgmt: Some(env.mgmt.clone()),
        cfg: env.t.cfg.clone(),
        ns: env.t.ns.clone(),
        ledger: env.ledger.clone(),
    };
    let report = hopback::ops::rollback::run(
        &renv,
        hopback::ops::plan::default_plan("v2", "v1", Duration::from_secs(1)),
        &Skipper,
    )
    .await
    .unwrap();
    assert!(
        !matches!(
            report.outcome,
            hopback::ops::rollback::RollbackOutcome::Done
        ),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        report.steps.len(),
        1,
        "only the first question ran: {report:?}"
    );
    assert_eq!(
        env.gate().await,
        GateSplit([("v1".to_string(), 50), ("v2".to_string(), 50)].into())
    );
    env.cleanup().await;
}

/// Continues at every question and asks to stop as soon as the drain reports progress.
struct Stopper {
    stop: tokio::sync::watch::Sender<bool>,
}

impl hopback::ops::rollback::Operator for Stopper {
    fn decide<'a>(
        &'a self,
        _point: &'a hopback::ops::rollback::DecisionPoint,
    ) -> futures::future::BoxFuture<'a, hopback::ops::rollback::Decision> {
        Box::pin(async { hopback::ops::rollback::Decision::Continue })
    }
    fn observe(&self, update: &hopback::ops::rollback::Update) {
        if let hopback::ops::rollback::Update::Progress { done, .. } = update
            && *done > 0
        {
            self.stop.send_replace(true);
        }
    }
    fn stop_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.stop.subscribe())
    }
}

/// Issue 17: a running step can be stopped — the drain ends at a consistent point (every message
/// in exactly one of the two queues), the rollback ends aborted, and the journal says so.
#[tokio::test]
async fn a_running_drain_can_be_stopped_without_loss() {
    use hopback::ops::plan::StepKind;
    use hopback::ops::rollback::{RollbackOutcome, StepState};
    let env = setup("rb-stop").await;
    env.set_gate(&[("v2", 100)]).await;
    let n = 20_000;
    publish(&env, n).await;
    assert_eq!(env.ready("v2").await as usize, n);
    let mut plan = hopback::ops::plan::default_plan("v2", "v1", Duration::from_secs(1));
    plan.steps
        .retain(|s| matches!(s.kind, StepKind::Confirm { .. } | StepKind::Drain { .. }));
    let renv = hopback::ops::rollback::Env {
        session: env.t.session.clone(),
        mgmt: Some(env.mgmt.clone()),
        cfg: env.t.cfg.clone(),
        ns: env.t.ns.clone(),
        ledger: env.ledger.clone(),
    };
    let op = Stopper {
        stop: tokio::sync::watch::channel(false).0,
    };
    let report = hopback::ops::rollback::run(&renv, plan, &op).await.unwrap();
    assert!(
        matches!(report.outcome, RollbackOutcome::Aborted { step: 1, .. }),
        "{:?}",
        report.outcome
    );
    let drain = &report.steps[1];
    assert_eq!(drain.state, StepState::Skipped, "{drain:?}");
    assert!(
        drain.detail.contains("stopped by the operator"),
        "{drain:?}"
    );
    let (v1, v2) = (
        env.ready("v1").await as usize,
        env.ready("v2").await as usize,
    );
    assert!(
        v2 > 0,
        "the drain finished before the stop: v1 {v1}, v2 {v2}"
    );
    assert!(v1 > 0, "nothing moved before the stop");
    let dups = drain.data["possible_duplicates"].as_u64().unwrap_or(0) as usize;
    assert!(
        v1 + v2 >= n && v1 + v2 <= n + dups,
        "lost or multiplied: v1 {v1} + v2 {v2} vs {n} (+{dups} possible duplicates)"
    );
    let id = report.rollback_id.clone();
    let events = env.rollback_events(&id, true).await;
    let finished = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackFinished)
        .expect("rollback_finished journaled");
    assert_eq!(finished.outcome, Outcome::Cancelled, "{finished:?}");
    env.cleanup().await;
}
