//! Drill mode (DESIGN §5): a throwaway namespace `drill-<id>`, a simulated fleet with a faulty v2
//! canary, an operator (a human in another terminal, or the scripted one of `--headless`), and a
//! score stored in the ledger, followed by the post-mortem draft.
//!
//! [`fleet`] runs the producers and workers, [`scenario`] decides the faults, [`score`] does the
//! maths. This module runs a drill from start to score; [`DrillHandle`] is what a UI shows while
//! it runs (counters, phase, fault time, score).

pub mod fleet;
pub mod scenario;
pub mod score;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::broker::browse::{BrowseOptions, browse};
use crate::broker::mgmt::Mgmt;
use crate::broker::session::{self, Session};
use crate::broker::topology::{self, Names, QueueType};
use crate::config::Config;
use crate::ledger::event::{Event, EventKind, Outcome};
use crate::ledger::{Ledger, StreamStart};
use crate::model::gate::GateSplit;
use crate::ops::rollback::{self, AutoOperator, RollbackReport};
use crate::ops::{gate, plan};
use fleet::{Fleet, FleetShared, FleetSpec, FleetStats};
use scenario::{FaultParams, Scenario};
use score::{Score, Timings};

/// Why a drill could not run or finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DrillError {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] crate::broker::session::BrokerError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// An operation (the canary, the scripted rollback) failed or was refused.
    #[error(transparent)]
    Op(#[from] crate::ops::OpError),
    /// The drill's own configuration is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Anything else, with a hint.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// What to try.
        hint: String,
    },
}

impl DrillError {
    /// What to try next.
    pub fn hint(&self) -> String {
        match self {
            DrillError::Broker(b) => b.hint().to_string(),
            DrillError::Ledger(l) => l.hint.clone(),
            DrillError::Op(o) => o.hint(),
            DrillError::Config(c) => c.hint.clone().unwrap_or_default(),
            DrillError::Other { hint, .. } => hint.clone(),
        }
    }
    /// A failure with a hint.
    pub fn other(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Other {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Prefix of drill namespaces.
pub const NAMESPACE_PREFIX: &str = "drill-";

/// Ends a drill early (the CLI's Ctrl-C, the console's quit): the drill stops waiting for the
/// fault or the mitigation and goes on to settle, score and clean up — after any rollback of its
/// namespace has finished. Cheap to clone; every clone stops the same drill.
#[derive(Clone)]
pub struct DrillStop {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for DrillStop {
    fn default() -> Self {
        Self {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl std::fmt::Debug for DrillStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillStop")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl DrillStop {
    /// Ask the drill to end.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
    /// Has it been asked to end?
    pub fn is_stopped(&self) -> bool {
        *self.tx.borrow()
    }
    /// Resolves once the drill has been asked to end.
    pub async fn stopped(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// How to run a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Scenario (`random` is resolved and hidden until the end).
    pub scenario: Scenario,
    /// Messages per second.
    pub rate_per_s: u32,
    /// v2's canary weight (out of 100).
    pub canary_weight: u32,
    /// Delay before the fault; `None` = random 10–40 s.
    pub fault_delay: Option<Duration>,
    /// Headless: the scripted operator rolls back `auto_respond_after` after the fault.
    pub headless: bool,
    /// Scripted operator's reaction time.
    pub auto_respond_after: Duration,
    /// Keep the namespace afterwards.
    pub keep: bool,
    /// Fault tunables.
    pub fault: FaultParams,
    /// Verification window of the rollback's error-rate check.
    pub verify_window: Duration,
    /// Longest wait for the fleet to finish its work at the end.
    pub settle_timeout: Duration,
    /// Interactive drills end on their own after this long.
    pub max_duration: Duration,
    /// Print a status line on stderr every second (interactive mode without the console).
    pub status_lines: bool,
    /// Ends the drill early (the CLI wires Ctrl-C to it, the console its quit).
    pub stop: DrillStop,
}

impl Default for DrillOptions {
    fn default() -> Self {
        Self {
            scenario: Scenario::Random,
            rate_per_s: 50,
            canary_weight: 20,
            fault_delay: None,
            headless: false,
            auto_respond_after: Duration::from_secs(5),
            keep: false,
            fault: FaultParams::default(),
            verify_window: Duration::from_secs(5),
            settle_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(15 * 60),
            status_lines: true,
            stop: DrillStop::default(),
        }
    }
}

pub use crate::model::drill::Phase;

/// Live view of a drill, shared with whoever shows it (status line, the console's drill panel).
#[derive(Debug)]
pub struct DrillHandle {
    /// Drill id (`drill-<id>` is the namespace).
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// The scenario actually played.
    pub scenario: Scenario,
    /// Was it chosen at random (hidden until the end)?
    pub hidden: bool,
    fleet: Arc<FleetShared>,
    phase: Mutex<Phase>,
    timings: Mutex<Timings>,
    score: Mutex<Option<Score>>,
    /// Rollbacks on the namespace that started and have not finished (from the ledger): the
    /// drill does not end under a running rollback.
    open_rollbacks: Mutex<BTreeSet<String>>,
    /// The console running this drill has a rollback of its namespace open (being checked,
    /// offered, waiting at a decision or running) — before and beyond what the ledger shows.
    console_rollback: AtomicBool,
    /// The drill has decided to end (stop the workers, score, delete the namespace): a rollback
    /// of its namespace can no longer start.
    ending: AtomicBool,
    /// The verification window of the drill's rollbacks (the console's included).
    pub verify_window: Duration,
}

/// A plain-data snapshot of a [`DrillHandle`].
#[derive(Debug, Clone, Serialize)]
pub struct DrillStatus {
    /// Drill id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Scenario (`hidden` while a random one runs).
    pub scenario: String,
    /// Phase.
    pub phase: Phase,
    /// Fleet counters.
    pub fleet: FleetStats,
    /// Timings so far.
    pub timings: Timings,
    /// Score, once done.
    pub score: Option<Score>,
    /// A rollback of the namespace is running or waiting at a decision: the drill ends after it.
    pub rollback_open: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DrillHandle {
    /// Snapshot for display.
    pub fn status(&self) -> DrillStatus {
        let phase = *lock(&self.phase);
        let mut timings = lock(&self.timings).clone();
        timings.fault_at_ms = self.fleet.fault_at_ms();
        timings.last_v2_failure_at_ms = self.fleet.last_failure_ms();
        DrillStatus {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            scenario: if self.hidden && phase != Phase::Done {
                "hidden".into()
            } else {
                self.scenario.to_string()
            },
            phase,
            fleet: self.fleet.stats(),
            timings,
            score: lock(&self.score).clone(),
            rollback_open: self.rollback_open(),
        }
    }
    /// Is a rollback of the drill's namespace running or waiting at a decision (in the ledger,
    /// or in the console running the drill)?
    pub fn rollback_open(&self) -> bool {
        self.console_rollback.load(Ordering::SeqCst) || !lock(&self.open_rollbacks).is_empty()
    }
    /// The console has (or no longer has) a rollback of the drill's namespace open.
    pub fn set_console_rollback(&self, open: bool) {
        self.console_rollback.store(open, Ordering::SeqCst);
    }
    /// A rollback of `ns` is about to start in the console running this drill: `false` when it
    /// must not (the drill is ending: its namespace is being scored and deleted). Other
    /// namespaces are not the drill's business (`true`).
    pub fn begin_rollback(&self, ns: &str) -> bool {
        if ns != self.namespace {
            return true;
        }
        // Marked open first, then `ending` read: with the drill's store-then-read in
        // `hold_for_rollbacks`, one of the two always sees the other.
        self.console_rollback.store(true, Ordering::SeqCst);
        if self.ending.load(Ordering::SeqCst) {
            self.console_rollback.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }
    /// One status line. `reveal` = show the fault's traces (failures per version, fault time);
    /// an interactive drill keeps them hidden until the end — finding them is the exercise.
    pub fn line(&self, reveal: bool) -> String {
        let s = self.status();
        let t = &s.timings;
        let clock = |ms: Option<u64>| score::fmt_ms(ms);
        let elapsed = score::fmt_ms(Some(s.fleet.elapsed_ms));
        if reveal || s.phase == Phase::Done {
            return format!(
                "[{} {:?} {elapsed}] {} · fault {} · first action {} · v2 off gate {}",
                s.namespace,
                s.phase,
                s.fleet.line(),
                clock(t.fault_at_ms),
                clock(t.first_action_at_ms),
                clock(t.gate_off_v2_at_ms),
            );
        }
        let done: Vec<String> = s
            .fleet
            .per_version
            .iter()
            .map(|(v, c)| format!("{v} {}", c.processed))
            .collect();
        let phase = match s.phase {
            Phase::Starting => "starting",
            Phase::Running | Phase::Incident => "running",
            Phase::Settling => "settling",
            Phase::Done => "done",
        };
        // No times before the end: "your first action at …" would say the fault has happened
        // (only actions after it count).
        format!(
            "[{} {phase} {elapsed}] published {} · processed {} · times shown at the end",
            s.namespace,
            s.fleet.published,
            done.join(", "),
        )
    }
    fn set_phase(&self, p: Phase) {
        *lock(&self.phase) = p;
    }
    fn now_ms(&self) -> u64 {
        self.fleet.now_ms()
    }
}

/// What a finished drill reports.
#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    /// Final status (with the score).
    pub status: DrillStatus,
    /// Score.
    pub score: Score,
    /// The scripted operator's rollback (headless), or the canary's automatic one.
    pub rollback: Option<RollbackReport>,
    /// The self-driving canary's report (scenario `canary`).
    pub canary: Option<crate::ops::canary::CanaryReport>,
    /// Post-mortem draft written here.
    pub postmortem_path: Option<String>,
    /// The post-mortem Markdown.
    #[serde(skip)]
    pub postmortem: String,
    /// Where the ledger keeps events.
    pub ledger: String,
    /// Was the namespace kept?
    pub kept: bool,
}

/// Run a whole drill. `on_start` receives the handle as soon as the fleet runs (the console shows
/// it; the CLI prints status lines from it).
pub async fn run(
    cfg: &Config,
    opts: &DrillOptions,
    on_start: impl FnOnce(Arc<DrillHandle>),
) -> Result<DrillResult, DrillError> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let ns = format!("{NAMESPACE_PREFIX}{id}");
    let versions = vec!["v1".to_string(), "v2".to_string()];
    let session = session::connect(&cfg.profile, "drill", &cfg.operator).await?;
    let Some(mgmt) = Mgmt::new(&cfg.profile).ok() else {
        return Err(DrillError::other(
            "a drill needs the management API (gate, workers)",
            "enable rabbitmq_management or set --mgmt-url; `hopback check` diagnoses it",
        ));
    };
    let ledger = Arc::new(Ledger::open(&session, cfg).await);
    topology::init(&session, &ns, &versions, QueueType::Classic).await?;
    let result = run_in_namespace(cfg, opts, &id, &ns, &session, &mgmt, &ledger, on_start).await;
    if !opts.keep
        && let Err(e) = delete_drill_namespace(&session, &ns, &versions).await
    {
        tracing::warn!(error = %e, "drill cleanup failed");
    }
    session.close().await;
    result.map(|mut r| {
        r.kept = opts.keep;
        r
    })
}

/// Delete a drill namespace, its park queue included.
pub async fn delete_drill_namespace(
    session: &Session,
    ns: &str,
    versions: &[String],
) -> Result<(), DrillError> {
    topology::delete_namespace(session, ns, versions).await?;
    if let Ok(ch) = session.channel().await {
        let _ = session::timed(
            "queue.delete",
            session::CALL_TIMEOUT,
            session.password(),
            ch.queue_delete(
                Names::convention(ns).parked.as_str().into(),
                Default::default(),
            ),
        )
        .await;
        let _ = tokio::time::timeout(session::CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_in_namespace(
    cfg: &Config,
    opts: &DrillOptions,
    id: &str,
    ns: &str,
    session: &Arc<Session>,
    mgmt: &Mgmt,
    ledger: &Arc<Ledger>,
    on_start: impl FnOnce(Arc<DrillHandle>),
) -> Result<DrillResult, DrillError> {
    let hidden = opts.scenario == Scenario::Random;
    let scenario = opts.scenario.resolve();
    let mut spec = FleetSpec::new(cfg.profile.clone(), ns, scenario, opts.rate_per_s);
    spec.fault = opts.fault;
    let _ = ledger
        .append(
            ledger
                .event(EventKind::DrillStarted, Some(ns))
                .params(json!({
                    "drill_id": id,
                    "scenario": if hidden { "random".to_string() } else { scenario.to_string() },
                    "rate_per_s": opts.rate_per_s,
                    "canary_weight": opts.canary_weight,
                    "headless": opts.headless,
                }))
                .outcome(Outcome::Started)
                .reason("drill started: simulated fleet with a v2 canary"),
        )
        .await;
    let mut fleet = Fleet::start(spec);
    let handle = Arc::new(DrillHandle {
        id: id.to_string(),
        namespace: ns.to_string(),
        scenario,
        hidden,
        fleet: fleet.shared(),
        phase: Mutex::new(Phase::Starting),
        timings: Mutex::new(Timings::default()),
        score: Mutex::new(None),
        open_rollbacks: Mutex::new(BTreeSet::new()),
        console_rollback: AtomicBool::new(false),
        ending: AtomicBool::new(false),
        verify_window: opts.verify_window,
    });
    // Workers first, then the canary: traffic never goes to a version without consumers.
    wait_for_workers(session, ns, Duration::from_secs(15)).await?;
    let canary = GateSplit(
        [
            ("v1".to_string(), 100u32.saturating_sub(opts.canary_weight)),
            ("v2".to_string(), opts.canary_weight.min(100)),
        ]
        .into(),
    );
    let cx = crate::ops::OpContext {
        session: session.clone(),
        mgmt: Some(mgmt.clone()),
        ledger: ledger.clone(),
        cfg: cfg.clone(),
        via: crate::ops::Via::Drill,
        journal_sink: None,
    };
    // The `canary` scenario leaves the gate on v1: the self-driving canary moves it.
    let self_driving = scenario == Scenario::Canary;
    if !self_driving {
        gate::apply(
            &cx,
            &gate::GateRequest {
                namespace: ns.to_string(),
                target: canary,
                reason: Some("drill: v2 canary".into()),
                extra_params: [("drill_id".to_string(), json!(id))].into_iter().collect(),
                ..Default::default()
            },
        )
        .await?;
    }
    handle.set_phase(Phase::Running);
    on_start(handle.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(monitor(
        handle.clone(),
        mgmt.clone(),
        ledger.clone(),
        stop_rx,
    ));
    let status = opts.status_lines.then(|| {
        let h = handle.clone();
        let reveal = opts.headless;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                crate::errln!("{}", h.line(reveal));
            }
        })
    });

    let fault_delay = if self_driving {
        Duration::ZERO
    } else {
        opts.fault_delay
            .unwrap_or_else(|| Duration::from_secs(rand::random_range(10..=40)))
    };
    let interrupted = tokio::select! {
        _ = tokio::time::sleep(fault_delay) => false,
        _ = opts.stop.stopped() => true,
    };
    let mut rollback_report = None;
    let mut canary_report = None;
    if !interrupted {
        fleet.inject_fault();
        handle.set_phase(Phase::Incident);
        tracing::info!(ns, scenario = %scenario, "drill fault injected");
        if self_driving {
            let report = self_driving_canary(&cx, ns, opts, &handle).await?;
            rollback_report = report.rollback.clone();
            canary_report = Some(report);
        } else if opts.headless {
            tokio::time::sleep(opts.auto_respond_after).await;
            {
                let mut t = lock(&handle.timings);
                if t.first_action_at_ms.is_none() {
                    t.first_action_at_ms = Some(handle.now_ms());
                }
            }
            let env = rollback::Env {
                session: session.clone(),
                mgmt: Some(mgmt.clone()),
                cfg: cfg.clone(),
                ns: ns.to_string(),
                ledger: ledger.clone(),
            };
            let plan = plan::default_plan("v2", "v1", opts.verify_window);
            rollback_report = Some(rollback::run(&env, plan, &AutoOperator::default()).await?);
        } else {
            wait_for_mitigation(&handle, session, ns, opts.max_duration, &opts.stop).await;
        }
    }
    // A rollback begun meanwhile finishes with the producers still running (its verification
    // watches live traffic).
    wait_while_rollback_open(&handle, opts.max_duration).await;
    handle.set_phase(Phase::Settling);
    fleet.stop_producers().await;
    // v2's own queue may still hold work if the operator never drained it: its workers finish
    // it (or dead-letter it) — either way it is accounted for.
    fleet.wait_idle(opts.settle_timeout).await;
    // A rollback started while the fleet settled (the operator pressed `r` after "settling")
    // runs to its end with the workers still there (its drain and replays need them); only then
    // does the drill stop them, score and clean up.
    while hold_for_rollbacks(&handle, opts.max_duration).await {
        fleet.wait_idle(opts.settle_timeout).await;
    }
    fleet.stop_workers().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), monitor).await;
    if let Some(s) = status {
        s.abort();
    }
    let accounting = account(session, ledger, ns, &handle.fleet).await?;
    let mut timings = lock(&handle.timings).clone();
    timings.fault_at_ms = handle.fleet.fault_at_ms();
    timings.last_v2_failure_at_ms = handle.fleet.last_failure_ms();
    let skipped = rollback_report.as_ref().map(|r| r.skipped()).unwrap_or(0);
    let mut score = score::score(scenario.as_str(), &timings, accounting, skipped);
    score.headless = opts.headless;
    *lock(&handle.score) = Some(score.clone());
    *lock(&handle.timings) = timings;
    handle.set_phase(Phase::Done);
    let outcome = if score.lost > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    let _ = ledger
        .append(
            ledger
                .event(EventKind::DrillFinished, Some(ns))
                .params(json!({"drill_id": id, "scenario": scenario.to_string(), "headless": opts.headless, "interrupted": interrupted}))
                .after(json!({"score": score}))
                .outcome(outcome)
                .reason(format!(
                    "drill over: {} — {} points, detect {}, mitigate {}, lost {}",
                    scenario.explanation(),
                    score.points,
                    score::fmt_ms(score.time_to_detect_ms),
                    score::fmt_ms(score.time_to_mitigate_ms),
                    score.lost
                )),
        )
        .await;
    // A stream read right after an append can stop short of it: read until our last event shows.
    let mut events = Vec::new();
    for _ in 0..10 {
        events = crate::ledger::postmortem::events_for_namespace(ledger, ns).await;
        if events.iter().any(|e| e.kind == EventKind::DrillFinished) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let postmortem = crate::ledger::postmortem::render(
        &events,
        &crate::ledger::postmortem::Incident::for_drill(id, ns),
    );
    let path = crate::config::data_dir().join(format!("postmortem-{ns}.md"));
    let postmortem_path = crate::files::write(&path, postmortem.as_bytes())
        .ok()
        .map(|_| path.display().to_string());
    Ok(DrillResult {
        status: handle.status(),
        score,
        rollback: rollback_report,
        canary: canary_report,
        postmortem_path,
        postmortem,
        ledger: ledger.backend_description(),
        kept: false,
    })
}

/// The plan of the `canary` scenario: v1 → v2 in three short steps.
pub fn drill_canary_plan(verify_window: Duration) -> crate::model::canary::CanaryPlan {
    crate::model::canary::CanaryPlan {
        steps: vec![10, 50, 100],
        step_time_ms: 5_000,
        refresh_ms: 1_000,
        min_processed: 10,
        max_hold_ms: 30_000,
        verify_window_ms: u64::try_from(verify_window.as_millis()).unwrap_or(10_000),
        ..crate::model::canary::CanaryPlan::new("v1", "v2")
    }
}

/// Marks detection when the canary decides to abort.
struct CanaryWatch<'a>(&'a DrillHandle);

impl crate::ops::canary::CanaryObserver for CanaryWatch<'_> {
    fn update(&self, u: &crate::ops::canary::CanaryUpdate) {
        if matches!(u, crate::ops::canary::CanaryUpdate::Aborting { .. }) {
            self.0.mark_first_action();
        }
    }
}

/// The `canary` scenario's operator: no person, the self-driving canary.
async fn self_driving_canary(
    cx: &crate::ops::OpContext,
    ns: &str,
    opts: &DrillOptions,
    handle: &DrillHandle,
) -> Result<crate::ops::canary::CanaryReport, DrillError> {
    let req = crate::ops::canary::CanaryRequest {
        namespace: ns.to_string(),
        plan: drill_canary_plan(opts.verify_window),
        reason: Some("drill: a self-driving canary rolls out v2".into()),
    };
    Ok(crate::ops::canary::start(cx, &req, &CanaryWatch(handle)).await?)
}

async fn wait_for_workers(session: &Session, ns: &str, limit: Duration) -> Result<(), DrillError> {
    let t0 = Instant::now();
    loop {
        let mut ok = true;
        let names = Names::convention(ns);
        for q in ["v1", "v2"].iter().filter_map(|v| names.version_queue(v)) {
            let c = session.passive_queue(&q).await?;
            ok &= c.is_some_and(|c| c.consumers > 0);
        }
        if ok {
            return Ok(());
        }
        if t0.elapsed() > limit {
            return Err(DrillError::other(
                "the drill's workers did not connect in time",
                "check the broker with `hopback check`",
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watch the gate (is v2 still bound?) and the ledger (first operator action after the fault).
async fn monitor(
    handle: Arc<DrillHandle>,
    mgmt: Mgmt,
    ledger: Arc<Ledger>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sub = ledger.subscribe(StreamStart::Next).await.ok();
    let v2_queue = format!("{}.v2", handle.namespace);
    loop {
        if *stop.borrow() {
            break;
        }
        let fault = handle.fleet.fault_at_ms();
        if let Ok(bindings) = mgmt.bindings_from(&handle.namespace).await {
            let v2_bound = bindings.iter().any(|b| b.destination == v2_queue);
            let now = handle.now_ms();
            let mut t = lock(&handle.timings);
            if fault.is_some() {
                match (v2_bound, t.gate_off_v2_at_ms) {
                    (false, None) => t.gate_off_v2_at_ms = Some(now),
                    (true, Some(_)) => t.gate_off_v2_at_ms = None,
                    _ => {}
                }
            }
        }
        match sub.as_mut() {
            Some(s) => {
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline {
                    match s.next_within(Duration::from_millis(100)).await {
                        Ok(Some(e)) => note_action(&handle, &e),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_millis(500), stop.changed()).await;
            }
        }
    }
    if let Some(s) = sub {
        s.close().await;
    }
}

impl DrillHandle {
    /// The operator looked into the drill's namespace from the console (opened its dead letters,
    /// inspected one, opened its timeline): after the fault that is detection, like a journaled
    /// action. Investigation leaves no ledger event, so the console reports it here.
    pub fn note_investigation(&self, namespace: &str) {
        if namespace != self.namespace {
            return;
        }
        self.mark_first_action();
    }
    fn mark_first_action(&self) {
        let Some(fault) = self.fleet.fault_at_ms() else {
            return;
        };
        let now = self.now_ms();
        if now < fault {
            return;
        }
        let mut t = lock(&self.timings);
        if t.first_action_at_ms.is_none() {
            t.first_action_at_ms = Some(now);
        }
    }
}

/// An operator's event on the drill's namespace after the fault is the moment of detection.
fn note_action(handle: &DrillHandle, e: &Event) {
    if e.namespace.as_deref() != Some(handle.namespace.as_str()) {
        return;
    }
    if let Some(id) = crate::ops::rollback::rollback_id_of(e) {
        match e.kind {
            EventKind::RollbackStarted => {
                lock(&handle.open_rollbacks).insert(id);
            }
            EventKind::RollbackFinished => {
                lock(&handle.open_rollbacks).remove(&id);
            }
            _ => {}
        }
    }
    // A canary's own steps and analyses are not a response; its abort decision is (the
    // `canary` scenario's observer marks it as it happens).
    if crate::ledger::canary::canary_id_of(e).is_some()
        && !(e.kind == EventKind::CanaryDecision
            && e.params.get("decision").and_then(|d| d.as_str()) == Some("abort"))
    {
        return;
    }
    if matches!(
        e.kind,
        EventKind::DrillStarted
            | EventKind::DrillFinished
            | EventKind::AlertRaised
            | EventKind::AlertCleared
            | EventKind::DriftDetected
            | EventKind::StaleMoveRemoved
    ) {
        return;
    }
    handle.mark_first_action();
}

/// Wait while a rollback of the drill's namespace is running or waiting at a decision (at most
/// `limit`). Returns whether it waited.
async fn wait_while_rollback_open(handle: &DrillHandle, limit: Duration) -> bool {
    let t0 = Instant::now();
    let mut waited = false;
    while handle.rollback_open() && t0.elapsed() < limit {
        if !waited {
            tracing::info!(ns = %handle.namespace, "drill waits for the rollback of its namespace");
        }
        waited = true;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    waited
}

/// The drill's last look before it ends: waits for any open rollback, then marks itself ending
/// so no new one starts in its console. Returns whether a rollback was waited for (the fleet
/// then settles again before the drill looks once more).
async fn hold_for_rollbacks(handle: &DrillHandle, limit: Duration) -> bool {
    if wait_while_rollback_open(handle, limit).await {
        return true;
    }
    handle.ending.store(true, Ordering::SeqCst);
    if handle.rollback_open() {
        // A rollback began between the look and the mark: it runs, the drill waits for it.
        handle.ending.store(false, Ordering::SeqCst);
        return true;
    }
    false
}

/// Interactive: wait until v2 is off the gate, its queue is empty, it stopped failing for 5 s and
/// no rollback on the namespace is still running (or the drill is stopped, or the time limit).
async fn wait_for_mitigation(
    handle: &DrillHandle,
    session: &Session,
    ns: &str,
    limit: Duration,
    stop: &DrillStop,
) {
    let t0 = Instant::now();
    let v2 = Names::convention(ns)
        .version_queue("v2")
        .unwrap_or_default();
    loop {
        let sleep = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = sleep => {}
            _ = stop.stopped() => return,
        }
        if t0.elapsed() > limit {
            return;
        }
        let off = lock(&handle.timings).gate_off_v2_at_ms.is_some();
        let quiet = handle
            .fleet
            .last_failure_ms()
            .is_none_or(|t| handle.now_ms().saturating_sub(t) > 5_000);
        let empty = matches!(session.passive_queue(&v2).await, Ok(Some(c)) if c.ready == 0);
        let rollback_running = handle.rollback_open();
        if off && quiet && empty && !rollback_running {
            return;
        }
    }
}

async fn ids_in(
    session: &Session,
    queue: &str,
    out: &mut BTreeSet<String>,
) -> Result<(), DrillError> {
    let depth = match session.passive_queue(queue).await? {
        Some(c) => u64::from(c.ready),
        None => return Ok(()),
    };
    if depth == 0 {
        return Ok(());
    }
    let msgs = browse(
        session,
        queue,
        BrowseOptions {
            skip: 0,
            take: depth,
            max_body_bytes: 0,
            force: true,
        },
        false,
    )
    .await?;
    if (msgs.len() as u64) < depth {
        tracing::warn!(
            queue,
            depth,
            seen = msgs.len(),
            "drill accounting saw fewer messages than the depth"
        );
    }
    out.extend(
        msgs.iter()
            .filter_map(|m| m.properties.message_id().as_ref().map(|s| s.to_string())),
    );
    Ok(())
}

/// Where every published id ended up.
async fn account(
    session: &Session,
    ledger: &Ledger,
    ns: &str,
    fleet: &FleetShared,
) -> Result<score::Accounting, DrillError> {
    let (published, processed) = fleet.id_sets();
    let exported = exported_ids(ledger, ns).await;
    account_ids_with(
        session,
        ns,
        &published,
        &processed,
        fleet.stats().duplicates_skipped,
        &exported,
    )
    .await
}

/// Ids a rollback of `ns` exported to a file (its "export" choice): the files are named in the
/// ledger's rollback step events (`after.data.file`) and read back. Exported dead letters left
/// the broker on purpose; they are accounted for, not lost.
async fn exported_ids(ledger: &Ledger, ns: &str) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let _ = ledger
        .fold(StreamStart::First, |e| {
            // Only verified events, and only files in hopback's data dir: a forged event must
            // not make the drill read (or count) anything else.
            if e.kind == EventKind::RollbackStep
                && e.is_verified()
                && e.namespace.as_deref() == Some(ns)
                && let Some(f) = e.after["data"]["file"].as_str()
                && std::path::Path::new(f).starts_with(crate::config::data_dir())
                && !f.contains("..")
            {
                files.insert(f.to_string());
            }
        })
        .await;
    let mut ids = BTreeSet::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(id) = doc["properties"]["message_id"].as_str()
            {
                ids.insert(id.to_string());
            }
        }
    }
    ids
}

/// Account for `published` ids in a convention namespace: processed (from the workers' store),
/// or found (by browsing, nothing removed) in the DLQ, the park queue, a version queue or the
/// unrouted queue. Used by drills and by the rollback tests.
pub async fn account_ids(
    session: &Session,
    ns: &str,
    published: &BTreeSet<String>,
    processed: &std::collections::BTreeMap<String, u32>,
    duplicates_skipped: u64,
) -> Result<score::Accounting, DrillError> {
    account_ids_with(
        session,
        ns,
        published,
        processed,
        duplicates_skipped,
        &BTreeSet::new(),
    )
    .await
}

/// [`account_ids`], counting `exported` ids (written to an export file, removed from the
/// broker) with the parked ones.
pub async fn account_ids_with(
    session: &Session,
    ns: &str,
    published: &BTreeSet<String>,
    processed: &std::collections::BTreeMap<String, u32>,
    duplicates_skipped: u64,
    exported: &BTreeSet<String>,
) -> Result<score::Accounting, DrillError> {
    let n = Names::convention(ns);
    let mut dlq = BTreeSet::new();
    ids_in(session, &n.dlq, &mut dlq).await?;
    let mut parked = exported.clone();
    ids_in(session, &n.parked, &mut parked).await?;
    let mut queued = BTreeSet::new();
    for q in ["v1", "v2"]
        .iter()
        .filter_map(|v| n.version_queue(v))
        .chain([n.unrouted.clone()])
    {
        ids_in(session, &q, &mut queued).await?;
    }
    Ok(score::account(
        published,
        processed,
        &dlq,
        &parked,
        &queued,
        duplicates_skipped,
    ))
}

/// One past drill's score, as the ledger recorded it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillRecord {
    /// When it finished.
    pub ts: chrono::DateTime<chrono::Utc>,
    /// Who, as shown: the broker-verified author with the claimed operator beside it.
    pub who: String,
    /// The broker user that wrote the result (verified by the broker).
    pub author: String,
    /// The operator name the event's body claims.
    pub claimed_operator: String,
    /// The score.
    pub score: Score,
}

/// Past drills from the ledger.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DrillHistory {
    /// Verified drill results, newest last.
    pub drills: Vec<DrillRecord>,
    /// `drill_finished` events left out because no broker user vouches for them (a score
    /// anyone could have written).
    pub ignored_unverified: u64,
}

/// Scores of past drills from the ledger (newest last). Only verified results count: an
/// unverified `drill_finished` is counted in `ignored_unverified`, never listed.
pub async fn history(ledger: &Ledger) -> Result<DrillHistory, DrillError> {
    let mut out = DrillHistory::default();
    ledger
        .fold(StreamStart::First, |e| {
            if e.kind != EventKind::DrillFinished {
                return;
            }
            let Some(author) = e.author.as_deref() else {
                out.ignored_unverified += 1;
                return;
            };
            if let Some(mut s) = e
                .after
                .get("score")
                .and_then(|s| serde_json::from_value::<Score>(s.clone()).ok())
            {
                // Scores stored before `Score::headless` existed: the event's params say it.
                s.headless |= e.params.get("headless").and_then(|h| h.as_bool()) == Some(true);
                out.drills.push(DrillRecord {
                    ts: e.ts,
                    who: e.who(),
                    author: crate::text::sanitize(author).into_owned(),
                    claimed_operator: e.claimed_operator(),
                    score: s,
                });
            }
        })
        .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> DrillHandle {
        let cfg = crate::config::resolve(
            crate::config::raw::RawConfig::default(),
            std::path::Path::new("/nonexistent/hopback-test.toml"),
            false,
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let spec = FleetSpec::new(cfg.profile, "drill-x", Scenario::Poison, 10);
        DrillHandle {
            id: "x".into(),
            namespace: "drill-x".into(),
            scenario: Scenario::Poison,
            hidden: true,
            fleet: Arc::new(FleetShared::new(spec)),
            phase: Mutex::new(Phase::Incident),
            timings: Mutex::new(Timings::default()),
            score: Mutex::new(None),
            open_rollbacks: Mutex::new(BTreeSet::new()),
            console_rollback: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            verify_window: Duration::from_secs(5),
        }
    }

    #[test]
    fn looking_into_the_drill_namespace_after_the_fault_is_detection() {
        let h = handle();
        // Before the fault: looking is not detection.
        h.note_investigation("drill-x");
        assert_eq!(h.status().timings.first_action_at_ms, None);
        h.fleet.set_fault_at_ms(0);
        // Another namespace does not count.
        h.note_investigation("drill-y");
        assert_eq!(h.status().timings.first_action_at_ms, None);
        h.note_investigation("drill-x");
        let first = h.status().timings.first_action_at_ms;
        assert!(first.is_some());
        std::thread::sleep(Duration::from_millis(5));
        h.note_investigation("drill-x");
        assert_eq!(
            h.status().timings.first_action_at_ms,
            first,
            "only the first look counts"
        );
    }
}
