//! The guided rollback engine (DESIGN §3, issue 8): a [`Plan`] of idempotent steps, each with an
//! "already done?" check, an action, a verification and a timeout, journaled step by step so a
//! crashed rollback resumes where it was (`hopback rollback --resume ID`).
//!
//! The engine is headless. Whoever drives it — the CLI (`--yes` or a terminal prompt), the TUI's
//! rollback view, the drill's scripted operator — implements [`Operator`]: it answers decision
//! points and watches progress. The journal is the ledger; resume reads back the events of one
//! rollback id (`params.rollback_id`) and skips every step that
//! finished, so completed side effects are never repeated. The step that was running when the
//! process died runs again, which is safe because each step checks first whether its work is done
//! (a drain continues with what is still in the source queue).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Serialize;
use serde_json::json;

use crate::broker::headers::{REPLAYS_HEADER, attribute, header_u64};
use crate::broker::mgmt::Mgmt;
use crate::broker::mover;
use crate::broker::session::{CALL_TIMEOUT, Session, timed};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::ledger::event::{Event, EventKind, Outcome};
use crate::model::deadletter::Filter;
use crate::model::gate::GateSplit;
use crate::ops::gate;
use crate::ops::plan::{DlqChoice, Metric, Plan, Step, StepKind};
use crate::topology::Namespace;

/// Replays above this count are parked (left in the DLQ) instead of replayed again.
pub const MAX_REPLAYS: u64 = 3;

// ───────────────────────────── the operator ─────────────────────────────

/// What kind of question a decision point asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A `confirm` step: go on with the plan?
    Confirm,
    /// A destructive step (evicting workers) needs a yes.
    Destructive,
    /// Dead letters: replay, keep or export?
    DlqChoice,
    /// A step timed out (e.g. no consumers came): keep waiting, skip, or abort?
    Timeout,
}

/// A question to the operator, with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionPoint {
    /// Rollback id.
    pub rollback_id: String,
    /// 0-based step index.
    pub step_index: usize,
    /// Step title.
    pub step_title: String,
    /// Kind of question.
    pub kind: DecisionKind,
    /// The question.
    pub question: String,
    /// Evidence lines (error rates, depths, gate, counts) — already terminal-safe.
    pub evidence: Vec<String>,
}

/// The operator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go on (for a timeout: keep waiting).
    Continue,
    /// Skip this step.
    Skip,
    /// Stop the rollback here (state stays consistent; the report says what it is).
    Abort,
    /// For dead letters: what to do with them.
    Choose(DlqChoice),
}

/// State of one step in the checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached.
    Pending,
    /// In progress.
    Running,
    /// Done now.
    Done,
    /// Found already done (by its check, or by the journal of an earlier run).
    AlreadyDone,
    /// Skipped by the operator.
    Skipped,
    /// Failed.
    Failed,
}

impl StepState {
    /// Finished successfully (done, already done or skipped)?
    pub fn completed(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::AlreadyDone | StepState::Skipped
        )
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::AlreadyDone => "already_done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
        }
    }
}

/// Progress the engine reports while it runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// The rollback started (or resumed) with this plan.
    Started {
        /// Rollback id.
        rollback_id: String,
        /// Plan.
        plan: Plan,
        /// Evidence.
        evidence: Vec<String>,
    },
    /// A step changed state.
    Step {
        /// Index.
        index: usize,
        /// New state.
        state: StepState,
        /// Detail line.
        detail: String,
    },
    /// Progress inside a step (e.g. messages moved).
    Progress {
        /// Index.
        index: usize,
        /// Done so far.
        done: u64,
        /// Total, if known.
        total: Option<u64>,
    },
    /// Finished.
    Finished {
        /// How.
        outcome: RollbackOutcome,
    },
}

/// Answers decision points and watches progress.
pub trait Operator: Send + Sync {
    /// Answer a decision point.
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision>;
    /// Watch progress (default: ignore).
    fn observe(&self, _update: &Update) {}
}

/// The non-interactive operator of `--yes` and the drill's script: continue at every decision,
/// replay dead letters, abort when a step times out.
#[derive(Debug, Clone, Default)]
pub struct AutoOperator {
    /// Answers given, for tests and the drill's report.
    pub answered: Arc<Mutex<Vec<(DecisionKind, Decision)>>>,
}

impl Operator for AutoOperator {
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision> {
        let d = match point.kind {
            DecisionKind::Confirm | DecisionKind::Destructive => Decision::Continue,
            DecisionKind::DlqChoice => Decision::Choose(DlqChoice::Replay),
            DecisionKind::Timeout => Decision::Abort,
        };
        if let Ok(mut a) = self.answered.lock() {
            a.push((point.kind, d));
        }
        Box::pin(async move { d })
    }
}

// ───────────────────────────── the journal ─────────────────────────────

/// Every event of one rollback (`params.rollback_id == id`), oldest first, from the ledger.
pub async fn rollback_events(ledger: &Ledger, id: &str) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    ledger
        .fold(crate::ledger::StreamStart::First, |e| {
            if rollback_id_of(&e).as_deref() == Some(id) {
                out.push(e);
            }
        })
        .await
        .map_err(|f| f.message)?;
    Ok(out)
}

async fn journal(ledger: &Ledger, ev: Event) {
    if let Err(e) = ledger.append(ev).await {
        tracing::warn!(error = %e.message, "cannot journal a rollback event");
    }
}

/// The `params.rollback_id` of an event.
pub fn rollback_id_of(e: &Event) -> Option<String> {
    e.params
        .get("rollback_id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// What an earlier run of a rollback got to, rebuilt from its journal events.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Namespace.
    pub namespace: String,
    /// The plan as it was started.
    pub plan: Plan,
    /// Steps that finished (done, already done, skipped).
    pub completed: BTreeSet<usize>,
    /// The step that started and never finished, if any.
    pub interrupted: Option<usize>,
    /// Did the rollback already finish (and how)?
    pub finished: Option<Outcome>,
}

/// Rebuild a rollback's progress from its events.
pub fn progress_from_events(events: &[Event]) -> Result<Progress, String> {
    let start = events
        .iter()
        .find(|e| e.kind == EventKind::RollbackStarted)
        .ok_or("no rollback_started event for this id")?;
    let plan: Plan = serde_json::from_value(start.params.get("plan").cloned().unwrap_or_default())
        .map_err(|e| format!("the journaled plan cannot be read: {e}"))?;
    let namespace = start.namespace.clone().unwrap_or_default();
    let mut completed = BTreeSet::new();
    let mut started = BTreeSet::new();
    let mut finished = None;
    for e in events {
        match e.kind {
            EventKind::RollbackStep => {
                let Some(i) = e.params.get("index").and_then(|v| v.as_u64()) else {
                    continue;
                };
                let i = i as usize;
                match e.params.get("phase").and_then(|v| v.as_str()) {
                    Some("start") => {
                        started.insert(i);
                    }
                    Some("finish") => {
                        let state: Option<StepState> = e
                            .after
                            .get("state")
                            .and_then(|s| serde_json::from_value(s.clone()).ok());
                        if state.is_some_and(StepState::completed) {
                            completed.insert(i);
                        }
                    }
                    _ => {}
                }
            }
            EventKind::RollbackFinished => finished = Some(e.outcome),
            _ => {}
        }
    }
    let interrupted = started.difference(&completed).max().copied();
    Ok(Progress {
        namespace,
        plan,
        completed,
        interrupted,
        finished,
    })
}

// ───────────────────────────── reports ─────────────────────────────

/// How a rollback ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// Every step completed and every verification passed.
    Done,
    /// A verification step failed (exit 4).
    VerificationFailed {
        /// Step index.
        step: usize,
        /// Why.
        reason: String,
    },
    /// A step failed (exit 1).
    Failed {
        /// Step index.
        step: usize,
        /// Why.
        reason: String,
    },
    /// The operator aborted (exit 3).
    Aborted {
        /// Step index.
        step: usize,
        /// The state left behind.
        state: String,
    },
}

impl RollbackOutcome {
    fn ledger_outcome(&self) -> Outcome {
        match self {
            RollbackOutcome::Done => Outcome::Ok,
            RollbackOutcome::VerificationFailed { .. } => Outcome::VerificationFailed,
            RollbackOutcome::Failed { .. } => Outcome::Failed,
            RollbackOutcome::Aborted { .. } => Outcome::Cancelled,
        }
    }
}

/// One step in the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Index.
    pub index: usize,
    /// Title.
    pub title: String,
    /// Kind.
    pub kind: String,
    /// What it does.
    pub description: String,
    /// Final state.
    pub state: StepState,
    /// What happened.
    pub detail: String,
    /// Counts/values the step produced.
    pub data: serde_json::Value,
    /// Milliseconds it took.
    pub elapsed_ms: u64,
}

/// The result of a rollback run.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// Id (`--resume` takes it).
    pub rollback_id: String,
    /// Namespace.
    pub namespace: String,
    /// Plan name.
    pub plan: String,
    /// Was this a resumed run?
    pub resumed: bool,
    /// Steps.
    pub steps: Vec<StepReport>,
    /// How it ended.
    pub outcome: RollbackOutcome,
}

impl RollbackReport {
    /// Steps the operator skipped.
    pub fn skipped(&self) -> u32 {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Skipped)
            .count() as u32
    }
}

// ───────────────────────────── the engine ─────────────────────────────

/// What the engine works with.
#[derive(Clone)]
pub struct Env {
    /// AMQP session.
    pub session: Arc<Session>,
    /// Management API (gate read-back, rates, evictions).
    pub mgmt: Option<Mgmt>,
    /// Configuration (thresholds, operator).
    pub cfg: Config,
    /// Namespace.
    pub ns: String,
    /// The ledger: every step is journaled here, and resume reads it back.
    pub ledger: Arc<Ledger>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("ns", &self.ns).finish()
    }
}

impl Env {
    /// The namespace's names, from the one resolver (adopted namespaces included).
    fn names(&self) -> Namespace {
        Namespace::resolve(&self.cfg, &self.ns)
    }
    /// The queue of version `v`; a version the adoption does not name gets a name no queue
    /// has, so the step that uses it fails with "does not exist" instead of guessing.
    fn queue(&self, v: &str) -> String {
        self.names()
            .version_queue(v)
            .unwrap_or_else(|| format!("{}.<no queue for {v}>", self.ns))
    }
    /// The operations context of this rollback's steps.
    fn cx(&self) -> crate::ops::OpContext {
        crate::ops::OpContext {
            session: self.session.clone(),
            mgmt: self.mgmt.clone(),
            ledger: self.ledger.clone(),
            cfg: self.cfg.clone(),
            via: crate::ops::Via::Rollback,
        }
    }
    async fn counts(&self, queue: &str) -> Result<crate::broker::session::QueueCounts, String> {
        match self.session.passive_queue(queue).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(format!(
                "queue `{}` does not exist",
                crate::text::sanitize(queue)
            )),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn ready(&self, queue: &str) -> Result<u64, String> {
        self.counts(queue).await.map(|c| u64::from(c.ready))
    }
    async fn consumers(&self, queue: &str) -> Result<u64, String> {
        self.counts(queue).await.map(|c| u64::from(c.consumers))
    }
}

/// The evidence shown at the first decision point and journaled with the start.
pub async fn evidence(env: &Env, from: &str, to: &str) -> Vec<String> {
    let n = env.names();
    let mut out = Vec::new();
    for v in [from, to] {
        let q = env.queue(v);
        match env.session.passive_queue(&q).await {
            Ok(Some(c)) => out.push(format!(
                "{}: {} ready, {} consumer(s)",
                crate::text::sanitize(&q),
                c.ready,
                c.consumers
            )),
            Ok(None) => out.push(format!("{}: missing", crate::text::sanitize(&q))),
            Err(e) => out.push(format!("{}: {e}", crate::text::sanitize(&q))),
        }
    }
    if let Ok(d) = env.ready(&n.dlq).await {
        let from_origin = match count_dead_letters(env, from).await {
            Ok((m, _)) if d > 0 => format!(", {m} of them from {from}"),
            _ => String::new(),
        };
        out.push(format!(
            "{}: {d} dead letter(s) at rest{from_origin}",
            crate::text::sanitize(&n.dlq)
        ));
    }
    if let Ok(d) = env.ready(&n.unrouted).await {
        out.push(format!(
            "{}: {d} unrouted",
            crate::text::sanitize(&n.unrouted)
        ));
    }
    if let Some(m) = &env.mgmt {
        if let Ok((g, problems)) = read_gate(env, m).await {
            out.push(format!("gate: {}", g.describe()));
            out.extend(problems);
        }
        if let Ok(qs) = m.queues().await {
            for v in [from, to] {
                let q = env.queue(v);
                if let Some(qi) = qs.iter().find(|x| x.name == q)
                    && let Some(s) = &qi.message_stats
                {
                    out.push(format!(
                        "{v}: ack {:.1}/s, deliver {:.1}/s, redeliver {:.1}/s",
                        s.ack_details.rate, s.deliver_get_details.rate, s.redeliver_details.rate
                    ));
                }
            }
        }
    }
    out
}

/// Run a plan from the start. `dry_run` is [`dry_run`]'s job, not this one's.
pub async fn run(env: &Env, plan: Plan, operator: &dyn Operator) -> RollbackReport {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let ev = evidence(env, &plan.from, &plan.to).await;
    let start = env
        .ledger
        .event(EventKind::RollbackStarted, Some(&env.ns))
        .params(json!({"rollback_id": id, "plan": plan, "from": plan.from, "to": plan.to, "staging": env.cfg.profile.staging, "production": env.cfg.profile.production}))
        .before(json!({"evidence": ev}))
        .outcome(Outcome::Started)
        .reason(format!("{}: {}", plan.name, ev.join("; ")));
    journal(&env.ledger, start).await;
    execute(env, id, plan, BTreeSet::new(), false, ev, operator).await
}

/// Resume a rollback from its journal: completed steps are not run again.
pub async fn resume(
    env_for: impl FnOnce(&str) -> Env,
    ledger: &Ledger,
    id: &str,
    operator: &dyn Operator,
) -> Result<RollbackReport, String> {
    let events = rollback_events(ledger, id).await?;
    if events.is_empty() {
        return Err(format!(
            "no rollback with id `{}` in the ledger",
            crate::text::sanitize(id)
        ));
    }
    let p = progress_from_events(&events)?;
    if let Some(o) = p.finished {
        return Err(format!(
            "rollback {} already finished ({o}); start a new one with `hopback rollback {}`",
            crate::text::sanitize(id),
            crate::text::sanitize(&p.namespace)
        ));
    }
    let env = env_for(&p.namespace);
    let ev = evidence(&env, &p.plan.from, &p.plan.to).await;
    let note = env
        .ledger
        .event(EventKind::RollbackStep, Some(&env.ns))
        .params(json!({"rollback_id": id, "phase": "resume", "completed": p.completed, "interrupted": p.interrupted}))
        .reason(format!(
            "resumed at step {}",
            p.interrupted
                .or_else(|| (0..p.plan.steps.len()).find(|i| !p.completed.contains(i)))
                .map(|i| i + 1)
                .unwrap_or(0)
        ));
    journal(&env.ledger, note).await;
    Ok(execute(
        &env,
        id.to_string(),
        p.plan,
        p.completed,
        true,
        ev,
        operator,
    )
    .await)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    env: &Env,
    id: String,
    plan: Plan,
    completed: BTreeSet<usize>,
    resumed: bool,
    evidence: Vec<String>,
    operator: &dyn Operator,
) -> RollbackReport {
    operator.observe(&Update::Started {
        rollback_id: id.clone(),
        plan: plan.clone(),
        evidence: evidence.clone(),
    });
    let mut report = RollbackReport {
        rollback_id: id.clone(),
        namespace: env.ns.clone(),
        plan: plan.name.clone(),
        resumed,
        steps: Vec::new(),
        outcome: RollbackOutcome::Done,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let description = step.kind.describe(&env.ns);
        if completed.contains(&i) {
            operator.observe(&Update::Step {
                index: i,
                state: StepState::AlreadyDone,
                detail: "completed in an earlier run (journal)".into(),
            });
            report.steps.push(StepReport {
                index: i,
                title: step.title.clone(),
                kind: step.kind_name().into(),
                description,
                state: StepState::AlreadyDone,
                detail: "completed in an earlier run (journal)".into(),
                data: serde_json::Value::Null,
                elapsed_ms: 0,
            });
            continue;
        }
        journal(
                &env.ledger,
                env.ledger
                    .event(EventKind::RollbackStep, Some(&env.ns))
                    .params(json!({"rollback_id": id, "index": i, "step": step.title, "kind": step.kind_name(), "phase": "start"}))
                    .outcome(Outcome::Started)
                    .reason(description.clone()),
            )
            .await;
        operator.observe(&Update::Step {
            index: i,
            state: StepState::Running,
            detail: description.clone(),
        });
        let t0 = Instant::now();
        let ctx = StepCtx {
            env,
            id: &id,
            index: i,
            step,
            plan: &plan,
            operator,
            evidence: &evidence,
        };
        let result = match tokio::time::timeout(step.timeout, run_step(&ctx)).await {
            Ok(r) => r,
            Err(_) => StepResult::failed(format!(
                "timed out after {}",
                humantime::format_duration(step.timeout)
            )),
        };
        let elapsed_ms = t0.elapsed().as_millis() as u64;
        let outcome = match result.state {
            StepState::Failed if result.verification => Outcome::VerificationFailed,
            StepState::Failed => Outcome::Failed,
            _ if result.abort => Outcome::Cancelled,
            _ => Outcome::Ok,
        };
        journal(
                &env.ledger,
                env.ledger
                    .event(EventKind::RollbackStep, Some(&env.ns))
                    .params(json!({"rollback_id": id, "index": i, "step": step.title, "kind": step.kind_name(), "phase": "finish"}))
                    .after(json!({"state": result.state, "data": result.data, "elapsed_ms": elapsed_ms}))
                    .outcome(outcome)
                    .reason(result.detail.clone()),
            )
            .await;
        operator.observe(&Update::Step {
            index: i,
            state: result.state,
            detail: result.detail.clone(),
        });
        report.steps.push(StepReport {
            index: i,
            title: step.title.clone(),
            kind: step.kind_name().into(),
            description,
            state: result.state,
            detail: result.detail.clone(),
            data: result.data.clone(),
            elapsed_ms,
        });
        if result.abort {
            report.outcome = RollbackOutcome::Aborted {
                step: i,
                state: state_after(env, &plan, i, &report).await,
            };
            break;
        }
        if result.state == StepState::Failed {
            report.outcome = if result.verification {
                RollbackOutcome::VerificationFailed {
                    step: i,
                    reason: result.detail,
                }
            } else {
                RollbackOutcome::Failed {
                    step: i,
                    reason: result.detail,
                }
            };
            break;
        }
    }
    let reason = match &report.outcome {
        RollbackOutcome::Done => "rollback complete; recovery verified".to_string(),
        RollbackOutcome::VerificationFailed { step, reason } => {
            format!("verification failed at step {}: {reason}", step + 1)
        }
        RollbackOutcome::Failed { step, reason } => format!("step {} failed: {reason}", step + 1),
        RollbackOutcome::Aborted { step, state } => {
            format!("aborted at step {}: {state}", step + 1)
        }
    };
    journal(
            &env.ledger,
            env.ledger
                .event(EventKind::RollbackFinished, Some(&env.ns))
                .params(json!({"rollback_id": id, "plan": plan.name, "skipped": report.skipped()}))
                .after(json!({"steps": report.steps.iter().map(|s| json!({"title": s.title, "state": s.state})).collect::<Vec<_>>()}))
                .outcome(report.outcome.ledger_outcome())
                .reason(reason),
        )
        .await;
    operator.observe(&Update::Finished {
        outcome: report.outcome.clone(),
    });
    report
}

/// Describe the state left when a rollback stops at step `i`.
async fn state_after(env: &Env, plan: &Plan, i: usize, report: &RollbackReport) -> String {
    let done: Vec<String> = report
        .steps
        .iter()
        .filter(|s| matches!(s.state, StepState::Done | StepState::AlreadyDone))
        .map(|s| s.title.clone())
        .collect();
    let mut parts = vec![if done.is_empty() {
        "nothing was changed".to_string()
    } else {
        format!("completed: {}", done.join(", "))
    }];
    if let Some(m) = &env.mgmt
        && let Ok((g, _)) = read_gate(env, m).await
    {
        parts.push(format!("gate is {}", g.describe()));
    }
    for v in [&plan.from, &plan.to] {
        if let Ok(r) = env.ready(&env.queue(v)).await {
            parts.push(format!("{v} has {r} ready"));
        }
    }
    let _ = i;
    parts.join("; ")
}

struct StepCtx<'a> {
    env: &'a Env,
    id: &'a str,
    index: usize,
    step: &'a Step,
    plan: &'a Plan,
    operator: &'a dyn Operator,
    evidence: &'a [String],
}

impl StepCtx<'_> {
    fn point(&self, kind: DecisionKind, question: String, evidence: Vec<String>) -> DecisionPoint {
        DecisionPoint {
            rollback_id: self.id.to_string(),
            step_index: self.index,
            step_title: self.step.title.clone(),
            kind,
            question,
            evidence,
        }
    }
    fn progress(&self, done: u64, total: Option<u64>) {
        self.operator.observe(&Update::Progress {
            index: self.index,
            done,
            total,
        });
    }
}

#[derive(Debug, Clone)]
struct StepResult {
    state: StepState,
    detail: String,
    data: serde_json::Value,
    verification: bool,
    abort: bool,
}

impl StepResult {
    fn done(detail: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            state: StepState::Done,
            detail: detail.into(),
            data,
            verification: false,
            abort: false,
        }
    }
    fn already(detail: impl Into<String>) -> Self {
        Self {
            state: StepState::AlreadyDone,
            ..Self::done(detail, serde_json::Value::Null)
        }
    }
    fn skipped(detail: impl Into<String>) -> Self {
        Self {
            state: StepState::Skipped,
            ..Self::done(detail, serde_json::Value::Null)
        }
    }
    fn failed(detail: impl Into<String>) -> Self {
        Self {
            state: StepState::Failed,
            ..Self::done(detail, serde_json::Value::Null)
        }
    }
    fn verification_failed(detail: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            state: StepState::Failed,
            verification: true,
            ..Self::done(detail, data)
        }
    }
    fn aborted(detail: impl Into<String>) -> Self {
        Self {
            state: StepState::Skipped,
            abort: true,
            ..Self::done(detail, serde_json::Value::Null)
        }
    }
}

fn from_decision(d: Decision) -> Option<StepResult> {
    match d {
        Decision::Abort => Some(StepResult::aborted("aborted by the operator")),
        Decision::Skip => Some(StepResult::skipped("skipped by the operator")),
        _ => None,
    }
}

async fn run_step(c: &StepCtx<'_>) -> StepResult {
    let env = c.env;
    match &c.step.kind {
        StepKind::Note { text } => {
            StepResult::done(crate::text::sanitize(text), serde_json::Value::Null)
        }
        StepKind::Confirm { question } => {
            let mut ev = c.evidence.to_vec();
            ev.push(format!("plan: {}", c.plan.name));
            for (i, s) in c.plan.steps.iter().enumerate().skip(c.index + 1) {
                ev.push(format!("  {}. {}", i + 1, s.kind.describe(&env.ns)));
            }
            let d = c
                .operator
                .decide(&c.point(DecisionKind::Confirm, question.clone(), ev))
                .await;
            from_decision(d)
                .unwrap_or_else(|| StepResult::done("confirmed", serde_json::Value::Null))
        }
        StepKind::Gate { weights } => step_gate(c, &GateSplit(weights.clone())).await,
        StepKind::WaitConsumers { version, min } => step_wait_consumers(c, version, *min).await,
        StepKind::Drain { from, to, limit } => step_drain(c, from, to, *limit).await,
        StepKind::DlqReplay { origin, to, action } => step_dlq(c, origin, to, *action).await,
        StepKind::EvictConsumers { version } => step_evict(c, version).await,
        StepKind::Verify {
            metric,
            version,
            threshold_pct,
            window,
        } => step_verify(c, *metric, version.as_deref(), *threshold_pct, *window).await,
        StepKind::Sleep { duration } => {
            tokio::time::sleep(*duration).await;
            StepResult::done(
                format!("waited {}", humantime::format_duration(*duration)),
                serde_json::Value::Null,
            )
        }
    }
}

// ───────────────────────────── gate ─────────────────────────────

/// Current gate of the namespace and its problems (needs the management API).
pub async fn read_gate(env: &Env, m: &Mgmt) -> Result<(GateSplit, Vec<String>), String> {
    gate::read_gate(&env.session, m, &env.cfg, &env.ns, &[])
        .await
        .map(|v| (v.split, v.problems))
        .map_err(|f| f.to_string())
}

async fn step_gate(c: &StepCtx<'_>, target: &GateSplit) -> StepResult {
    let env = c.env;
    if env.mgmt.is_none() {
        return StepResult::failed(
            "the gate step needs the management API to read the bindings back; check --mgmt-url",
        );
    }
    let mut extra = serde_json::Map::new();
    extra.insert("rollback_id".into(), json!(c.id));
    let req = gate::GateRequest {
        namespace: env.ns.clone(),
        target: target.clone(),
        reason: Some(format!(
            "rollback {} step {}: {}",
            c.id,
            c.index + 1,
            c.step.title
        )),
        // Rolling back to the old version must not wait for its consumers here: the next step
        // (wait_consumers) does, and the messages wait safely in its queue meanwhile.
        force_zero_consumers: true,
        dry_run: false,
        extra_params: extra,
    };
    match gate::apply(&env.cx(), &req).await {
        Ok(r) if !r.changed && r.verified => {
            StepResult::already(format!("gate already {}", r.after.describe()))
        }
        Ok(r) if r.verified => StepResult::done(
            format!(
                "gate {} → {} (verified)",
                r.before.describe(),
                r.after.describe()
            ),
            json!({"before": r.before, "after": r.after, "warnings": r.warnings}),
        ),
        Ok(r) => StepResult::verification_failed(
            format!(
                "gate read back as {} instead of {}",
                r.after.describe(),
                target.describe()
            ),
            json!({"before": r.before, "after": r.after}),
        ),
        Err(f) => StepResult::failed(format!("gate change failed: {f}")),
    }
}

// ───────────────────────────── wait for consumers ─────────────────────────────

async fn step_wait_consumers(c: &StepCtx<'_>, version: &str, min: u32) -> StepResult {
    let env = c.env;
    let q = env.queue(version);
    let patience = c
        .step
        .timeout
        .saturating_sub(Duration::from_secs(5))
        .max(Duration::from_secs(1));
    loop {
        let t0 = Instant::now();
        while t0.elapsed() < patience {
            match env.consumers(&q).await {
                Ok(n) if n >= u64::from(min) => {
                    return StepResult::done(
                        format!("{} has {n} consumer(s)", crate::text::sanitize(&q)),
                        json!({"consumers": n}),
                    );
                }
                Ok(_) => {}
                Err(e) => return StepResult::failed(e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let d = c
            .operator
            .decide(&c.point(
                DecisionKind::Timeout,
                format!(
                    "{} still has fewer than {min} consumer(s) after {}. Keep waiting?",
                    crate::text::sanitize(&q),
                    humantime::format_duration(patience)
                ),
                vec![],
            ))
            .await;
        if let Some(r) = from_decision(d) {
            return r;
        }
    }
}

// ───────────────────────────── drain (move) ─────────────────────────────

async fn step_drain(c: &StepCtx<'_>, from: &str, to: &str, limit: Option<u64>) -> StepResult {
    let env = c.env;
    let (src, dst) = (env.queue(from), env.queue(to));
    let total = match env.ready(&src).await {
        Ok(0) => {
            return StepResult::already(format!(
                "{} has no ready messages",
                crate::text::sanitize(&src)
            ));
        }
        Ok(n) => n,
        Err(e) => return StepResult::failed(e),
    };
    if let Err(e) = env.ready(&dst).await {
        return StepResult::failed(format!("cannot drain into it: {e}"));
    }
    let mut spec = mover::MoveSpec::drain(&env.names(), &src, &dst);
    spec.limit = limit;
    spec.connection_purpose = "rollback drain".into();
    let want = limit.map(|l| l.min(total)).or(Some(total));
    let r = run_mover(c, &spec, want).await;
    if r.failed() {
        return StepResult::failed(format!(
            "drain stopped after moving {}: {:?}",
            r.counts.moved, r.stop
        ));
    }
    let left = env.ready(&src).await.unwrap_or(0);
    StepResult::done(
        format!(
            "moved {} message(s) {} → {}; {left} ready left (in flight at workers: not moved)",
            r.counts.moved,
            crate::text::sanitize(&src),
            crate::text::sanitize(&dst)
        ),
        json!({"moved": r.counts.moved, "possible_duplicates": r.counts.possible_duplicates, "left_ready": left}),
    )
}

/// Run the mover, forwarding its progress to the operator.
async fn run_mover(
    c: &StepCtx<'_>,
    spec: &mover::MoveSpec,
    total: Option<u64>,
) -> mover::MoveReport {
    let control = mover::MoveControl::new();
    let mut rx = control.subscribe();
    let profile = c.env.session.profile().clone();
    let operator = c.env.cfg.operator.clone();
    let fut = mover::run(&profile, &operator, spec, &control);
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            changed = rx.changed() => {
                if changed.is_err() {
                    return fut.await;
                }
                let p = rx.borrow_and_update().clone();
                if let Some(p) = p {
                    c.progress(p.counts.moved + p.counts.parked, p.total.or(total));
                }
            }
        }
    }
}

// ───────────────────────────── dead letters ─────────────────────────────

/// Counts of a dead-letter pass.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DlqCounts {
    /// Dead letters of the origin seen.
    pub matched: u64,
    /// Replayed (confirmed at the target, removed from the DLQ).
    pub replayed: u64,
    /// Exported (written and synced, removed from the DLQ).
    pub exported: u64,
    /// Parked: over the replay limit, left in the DLQ.
    pub parked: u64,
    /// Of other origins, left in place.
    pub others: u64,
}

/// Dead letters in `NS.dlq` from `origin`: count them (browse) without changing anything.
pub async fn count_dead_letters(env: &Env, origin: &str) -> Result<(u64, u64), String> {
    let dlq = env.names().dlq;
    let depth = env.ready(&dlq).await?;
    let msgs = crate::broker::browse::browse(
        &env.session,
        &dlq,
        crate::broker::browse::BrowseOptions {
            skip: 0,
            take: depth.min(10_000),
            max_body_bytes: 0,
            force: false,
        },
        false,
    )
    .await
    .map_err(|e| e.to_string())?;
    let matched = msgs
        .iter()
        .filter(|m| {
            origin_version(&env.names(), m.properties.headers().as_ref()).as_deref() == Some(origin)
        })
        .count() as u64;
    Ok((matched, depth))
}

fn origin_version(ns: &Namespace, headers: Option<&FieldTable>) -> Option<String> {
    attribute(headers)
        .origin_queue
        .and_then(|q| ns.version_of_queue(&q))
}

/// One pass over the DLQ (as deep as it was at the start): dead letters of `origin` are replayed
/// to `dst` (with `x-hopback-replays` + 1) or exported to `export` and removed; everything else,
/// and anything over [`MAX_REPLAYS`], goes back in place.
pub async fn process_dead_letters(
    env: &Env,
    origin: &str,
    dst: &str,
    export: Option<&std::path::Path>,
    mut progress: impl FnMut(u64),
) -> Result<DlqCounts, String> {
    let session = &env.session;
    let dlq = env.names().dlq;
    let depth = env.ready(&dlq).await?;
    let mut counts = DlqCounts::default();
    if depth == 0 {
        return Ok(counts);
    }
    let pw = session.password().to_string();
    let cin = session.channel().await.map_err(|e| e.to_string())?;
    let cout = session.confirm_channel().await.map_err(|e| e.to_string())?;
    let prefetch = u16::try_from(depth.min(5_000)).unwrap_or(5_000);
    timed(
        "basic.qos",
        CALL_TIMEOUT,
        &pw,
        cin.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let tag = format!("hopback-dlq-{}", uuid::Uuid::new_v4());
    let mut consumer = timed(
        "basic.consume",
        CALL_TIMEOUT,
        &pw,
        cin.basic_consume(
            dlq.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut file = match export {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut put_back = Vec::new();
    let mut exported = Vec::new();
    let mut error = None;
    let mut seen = 0u64;
    while seen < depth.min(u64::from(prefetch)) {
        let d = match tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            _ => break,
        };
        seen += 1;
        let headers = d.properties.headers().clone();
        if origin_version(&env.names(), headers.as_ref()).as_deref() != Some(origin) {
            counts.others += 1;
            put_back.push(d);
            continue;
        }
        counts.matched += 1;
        let replays = header_u64(headers.as_ref(), REPLAYS_HEADER).unwrap_or(0);
        if let Some(f) = file.as_mut() {
            let line = json!({
                "message_id": d.properties.message_id().as_ref().map(|s| s.to_string()),
                "origin": origin,
                "replays": replays,
                "body": String::from_utf8_lossy(&d.data),
            });
            if writeln!(f, "{line}").is_err() {
                error = Some("cannot write the export file".to_string());
                put_back.push(d);
                break;
            }
            exported.push(d);
            continue;
        }
        if replays >= MAX_REPLAYS {
            counts.parked += 1;
            put_back.push(d);
            continue;
        }
        let mut h = headers.unwrap_or_default();
        h.insert(
            ShortString::from(REPLAYS_HEADER),
            AMQPValue::LongLongInt((replays + 1) as i64),
        );
        let props = d.properties.clone().with_headers(h);
        let ok = match timed(
            "basic.publish",
            CALL_TIMEOUT,
            &pw,
            cout.basic_publish(
                "".into(),
                dst.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &d.data,
                props,
            ),
        )
        .await
        {
            Ok(pc) => matches!(
                timed("publisher confirm", CALL_TIMEOUT, &pw, pc).await,
                Ok(Confirmation::Ack(None))
            ),
            Err(_) => false,
        };
        if !ok {
            error = Some(format!(
                "`{}` did not confirm a replayed message; stopped",
                crate::text::sanitize(dst)
            ));
            put_back.push(d);
            break;
        }
        match tokio::time::timeout(CALL_TIMEOUT, d.acker.ack(BasicAckOptions::default())).await {
            Ok(Ok(true)) => {
                counts.replayed += 1;
                progress(counts.replayed);
            }
            _ => {
                error = Some("an ack did not reach the broker; stopped (one dead letter may be replayed twice)".into());
                break;
            }
        }
    }
    if let Some(f) = file.as_mut() {
        if f.sync_all().is_ok() {
            for d in exported.drain(..) {
                if let Ok(Ok(true)) =
                    tokio::time::timeout(CALL_TIMEOUT, d.acker.ack(BasicAckOptions::default()))
                        .await
                {
                    counts.exported += 1;
                }
            }
        } else {
            error = Some("cannot sync the export file; nothing removed from the DLQ".into());
        }
    }
    for d in put_back.into_iter().chain(exported) {
        let _ = tokio::time::timeout(
            CALL_TIMEOUT,
            d.acker.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            }),
        )
        .await;
    }
    let _ = timed(
        "basic.cancel",
        CALL_TIMEOUT,
        &pw,
        cin.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, cin.close(200, "done".into())).await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, cout.close(200, "done".into())).await;
    match error {
        Some(e) => Err(e),
        None => Ok(counts),
    }
}

async fn step_dlq(c: &StepCtx<'_>, origin: &str, to: &str, action: DlqChoice) -> StepResult {
    let env = c.env;
    let (matched, depth) = match count_dead_letters(env, origin).await {
        Ok(x) => x,
        Err(e) => return StepResult::failed(e),
    };
    if matched == 0 {
        return StepResult::already(format!(
            "no dead letters from {origin} ({depth} in the DLQ)"
        ));
    }
    let choice = match action {
        DlqChoice::Ask => {
            let d = c
                .operator
                .decide(&c.point(
                    DecisionKind::DlqChoice,
                    format!(
                        "{matched} dead letter(s) from {origin} in {}.dlq: replay to {}, keep, or export?",
                        env.ns,
                        env.queue(to)
                    ),
                    vec![format!("{depth} dead letter(s) in the DLQ, {matched} from {origin}")],
                ))
                .await;
            match d {
                Decision::Choose(ch) => ch,
                Decision::Continue => DlqChoice::Replay,
                other => {
                    return from_decision(other).unwrap_or_else(|| StepResult::skipped("skipped"));
                }
            }
        }
        other => other,
    };
    let dst = env.queue(to);
    let export_path = crate::config::data_dir().join(format!(
        "export-{}-{}-{}.jsonl",
        env.ns,
        origin,
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    ));
    let result = match choice {
        DlqChoice::Keep => {
            return StepResult::done(
                format!("kept {matched} dead letter(s) from {origin} in the DLQ"),
                json!({"kept": matched}),
            );
        }
        DlqChoice::Export => {
            if let Some(dir) = export_path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            process_dead_letters(env, origin, &dst, Some(&export_path), |n| {
                c.progress(n, Some(matched))
            })
            .await
        }
        DlqChoice::Replay | DlqChoice::Ask => {
            // Workers of the old version may still be finishing (and dead-lettering) tasks they
            // held when the gate flipped; repeat the pass until one finds nothing new.
            let mut total = DlqCounts::default();
            let mut res = Ok(total);
            // The origin's queue by name: the mover matches it whatever the adoption calls it.
            let filter = match Filter::parse(&[format!("origin={}", env.queue(origin))]) {
                Ok(f) => f,
                Err(e) => return StepResult::failed(e),
            };
            for pass in 0..5 {
                // Bound each pass by what is there now: a DLQ that keeps growing with other
                // origins' dead letters must not keep a pass going.
                let now_matched = if pass == 0 {
                    matched
                } else {
                    match count_dead_letters(env, origin).await {
                        Ok((m, _)) => m,
                        Err(e) => {
                            res = Err(e);
                            break;
                        }
                    }
                };
                if now_matched == 0 {
                    break;
                }
                let mut spec =
                    mover::MoveSpec::replay(&env.names(), mover::Target::Queue(dst.clone()));
                spec.limit = Some(now_matched);
                spec.filter = filter.clone();
                spec.connection_purpose = "rollback replay".into();
                let r = run_mover(c, &spec, Some(matched)).await;
                total.matched += r.counts.moved + r.counts.parked;
                total.replayed += r.counts.moved;
                total.parked += r.counts.parked;
                total.others = r.counts.skipped_by_filter;
                if r.failed() {
                    res = Err(format!("replay stopped: {:?}", r.stop));
                    break;
                }
                res = Ok(total);
                if r.counts.moved + r.counts.parked == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            res
        }
    };
    match result {
        Ok(k) if choice == DlqChoice::Export => StepResult::done(
            format!(
                "exported {} dead letter(s) to {}",
                k.exported,
                export_path.display()
            ),
            json!({"exported": k.exported, "file": export_path.display().to_string()}),
        ),
        Ok(k) => StepResult::done(
            format!(
                "replayed {} dead letter(s) from {origin} to {}{}",
                k.replayed,
                crate::text::sanitize(&dst),
                if k.parked > 0 {
                    format!(
                        "; {} parked in {} (replayed {MAX_REPLAYS}× already)",
                        k.parked,
                        env.names().parked
                    )
                } else {
                    String::new()
                }
            ),
            json!({"replayed": k.replayed, "parked": k.parked, "others": k.others}),
        ),
        Err(e) => StepResult::failed(e),
    }
}

// ───────────────────────────── evict ─────────────────────────────

async fn step_evict(c: &StepCtx<'_>, version: &str) -> StepResult {
    let env = c.env;
    let Some(m) = &env.mgmt else {
        return StepResult::failed("evicting workers needs the management API");
    };
    let want = format!("{} worker {version}", env.ns);
    let conns = match m.connections().await {
        Ok(c) => c,
        Err(e) => return StepResult::failed(format!("cannot list connections: {e}")),
    };
    let targets: Vec<String> = conns
        .iter()
        .filter(|c| c.user_provided_name.as_deref() == Some(want.as_str()))
        .map(|c| c.name.clone())
        .collect();
    if targets.is_empty() {
        return StepResult::already(format!(
            "no connection named `{}`",
            crate::text::sanitize(&want)
        ));
    }
    let d = c
        .operator
        .decide(&c.point(
            DecisionKind::Destructive,
            format!(
                "Close {} connection(s) named `{}`? Their unacked messages go back to the queue.",
                targets.len(),
                crate::text::sanitize(&want)
            ),
            vec![],
        ))
        .await;
    if let Some(r) = from_decision(d) {
        return r;
    }
    let mut closed = 0u64;
    for name in &targets {
        if m.close_connection(name, "hopback rollback: evicting workers")
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    StepResult::done(
        format!("closed {closed} of {} connection(s)", targets.len()),
        json!({"closed": closed}),
    )
}

// ───────────────────────────── verify ─────────────────────────────

async fn ack_total(m: &Mgmt, queue: &str) -> Option<u64> {
    m.queues()
        .await
        .ok()?
        .into_iter()
        .find(|q| q.name == queue)
        .and_then(|q| q.message_stats.map(|s| s.ack))
}

/// Count dead letters of `version` arriving at the namespace's DLX for `window`: the tap's own
/// primitive ([`crate::broker::tap::count_window`]).
async fn tap_dead_letters(env: &Env, version: &str, window: Duration) -> Result<u64, String> {
    let names = env.names();
    let target = crate::broker::tap::TapTarget {
        ns: names.name.clone(),
        dlx: names.dlx.clone(),
        queues: [(env.queue(version), version.to_string())]
            .into_iter()
            .collect(),
    };
    crate::broker::tap::count_window(&env.session, &target, version, window)
        .await
        .map_err(|e| e.to_string())
}

async fn step_verify(
    c: &StepCtx<'_>,
    metric: Metric,
    version: Option<&str>,
    threshold_pct: f64,
    window: Duration,
) -> StepResult {
    let env = c.env;
    match metric {
        Metric::UnroutedEmpty => {
            let q = env.names().unrouted;
            match env.ready(&q).await {
                Ok(0) => StepResult::done(
                    format!("{} is empty", crate::text::sanitize(&q)),
                    json!({"unrouted": 0}),
                ),
                Ok(n) => StepResult::verification_failed(
                    format!(
                        "{} holds {n} message(s): replay them (hopback dlq replay) once the gate is right",
                        crate::text::sanitize(&q)
                    ),
                    json!({"unrouted": n}),
                ),
                Err(e) => StepResult::failed(e),
            }
        }
        Metric::ReadyZero => {
            let v = version.unwrap_or_default();
            let q = env.queue(v);
            match env.ready(&q).await {
                Ok(0) => StepResult::done(
                    format!("{} has no ready messages", crate::text::sanitize(&q)),
                    json!({"ready": 0}),
                ),
                Ok(n) => StepResult::verification_failed(
                    format!("{} still has {n} ready", crate::text::sanitize(&q)),
                    json!({"ready": n}),
                ),
                Err(e) => StepResult::failed(e),
            }
        }
        Metric::ErrorRate => {
            let v = version.unwrap_or_default();
            let q = env.queue(v);
            let consumers = env.consumers(&q).await.unwrap_or(0);
            let acks0 = match &env.mgmt {
                Some(m) => ack_total(m, &q).await,
                None => None,
            };
            let dead = match tap_dead_letters(env, v, window).await {
                Ok(n) => n,
                Err(e) => return StepResult::failed(format!("cannot watch the dead letters: {e}")),
            };
            let acks1 = match &env.mgmt {
                Some(m) => ack_total(m, &q).await,
                None => None,
            };
            let acked = match (acks0, acks1) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            let pct = match acked {
                Some(a) if a + dead > 0 => dead as f64 * 100.0 / (a + dead) as f64,
                Some(_) => 0.0,
                None if dead == 0 => 0.0,
                None => 100.0,
            };
            let data = json!({"dead_lettered": dead, "acked": acked, "error_rate_pct": pct, "consumers": consumers, "window_s": window.as_secs_f64()});
            let what = format!(
                "{v}: {dead} dead-lettered{} in {} → error rate {pct:.1}% (threshold {threshold_pct}%)",
                acked.map(|a| format!(", {a} acked")).unwrap_or_default(),
                humantime::format_duration(window)
            );
            if consumers == 0 {
                StepResult::verification_failed(
                    format!("{what}; but {} has no consumers", crate::text::sanitize(&q)),
                    data,
                )
            } else if dead > 0 && pct >= threshold_pct {
                StepResult::verification_failed(what, data)
            } else {
                StepResult::done(what, data)
            }
        }
    }
}

// ───────────────────────────── dry run ─────────────────────────────

/// One line of a dry run: the step and the live counts it would act on.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunLine {
    /// 1-based step number.
    pub number: usize,
    /// Title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// What it would act on now.
    pub live: String,
}

/// Describe every step with the live counts it would act on; changes nothing.
pub async fn dry_run(env: &Env, plan: &Plan) -> Vec<DryRunLine> {
    let mut out = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let live = match &s.kind {
            StepKind::Note { .. } | StepKind::Sleep { .. } => String::new(),
            StepKind::Confirm { .. } => "asks the operator (Continue / Skip / Abort)".into(),
            StepKind::Gate { weights } => {
                let target = GateSplit(weights.clone());
                match &env.mgmt {
                    Some(m) => match read_gate(env, m).await {
                        Ok((g, _)) if g.same_routing(&target) => {
                            format!("gate is {} already: nothing to do", g.describe())
                        }
                        Ok((g, _)) => format!("gate now {} → {}", g.describe(), target.describe()),
                        Err(e) => format!("cannot read the gate: {e}"),
                    },
                    None => "cannot read the gate without the management API".into(),
                }
            }
            StepKind::WaitConsumers { version, .. } => {
                match env.consumers(&env.queue(version)).await {
                    Ok(n) => format!("{} has {n} consumer(s) now", env.queue(version)),
                    Err(e) => e,
                }
            }
            StepKind::Drain { from, .. } => match env.ready(&env.queue(from)).await {
                Ok(n) => format!("would move {n} ready message(s)"),
                Err(e) => e,
            },
            StepKind::DlqReplay { origin, .. } => match count_dead_letters(env, origin).await {
                Ok((m, d)) => format!("{m} dead letter(s) from {origin} ({d} in the DLQ)"),
                Err(e) => e,
            },
            StepKind::EvictConsumers { version } => match &env.mgmt {
                Some(m) => {
                    let want = format!("{} worker {version}", env.ns);
                    match m.connections().await {
                        Ok(cs) => format!(
                            "would close {} connection(s)",
                            cs.iter()
                                .filter(|c| c.user_provided_name.as_deref() == Some(want.as_str()))
                                .count()
                        ),
                        Err(e) => e.to_string(),
                    }
                }
                None => "needs the management API".into(),
            },
            StepKind::Verify {
                metric, version, ..
            } => match metric {
                Metric::UnroutedEmpty => match env.ready(&env.names().unrouted).await {
                    Ok(n) => format!("unrouted holds {n} now"),
                    Err(e) => e,
                },
                _ => match version {
                    Some(v) => match env.ready(&env.queue(v)).await {
                        Ok(n) => format!("{} has {n} ready now", env.queue(v)),
                        Err(e) => e,
                    },
                    None => String::new(),
                },
            },
        };
        out.push(DryRunLine {
            number: i + 1,
            title: s.title.clone(),
            description: s.kind.describe(&env.ns),
            live,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn step_event(id: &str, i: usize, phase: &str, state: Option<StepState>) -> Event {
        let mut e = Event::new(EventKind::RollbackStep, Some("ns"))
            .params(json!({"rollback_id": id, "index": i, "phase": phase}));
        if let Some(s) = state {
            e = e.after(json!({"state": s}));
        }
        e
    }

    #[test]
    fn progress_is_rebuilt_from_the_journal() {
        let plan = crate::ops::plan::default_plan("v2", "v1", Duration::from_secs(5));
        let start = Event::new(EventKind::RollbackStarted, Some("ns"))
            .params(json!({"rollback_id": "abc", "plan": plan}));
        let events = vec![
            start,
            step_event("abc", 0, "start", None),
            step_event("abc", 0, "finish", Some(StepState::Done)),
            step_event("abc", 1, "start", None),
            step_event("abc", 1, "finish", Some(StepState::AlreadyDone)),
            step_event("abc", 2, "start", None),
            step_event("abc", 2, "finish", Some(StepState::Skipped)),
            step_event("abc", 3, "start", None),
        ];
        let p = progress_from_events(&events).unwrap();
        assert_eq!(p.completed, [0, 1, 2].into());
        assert_eq!(p.interrupted, Some(3));
        assert_eq!(p.finished, None);
        assert_eq!(p.namespace, "ns");
        assert_eq!(p.plan, plan);
        let failed = vec![
            events[0].clone(),
            step_event("abc", 0, "start", None),
            step_event("abc", 0, "finish", Some(StepState::Failed)),
        ];
        let p = progress_from_events(&failed).unwrap();
        assert!(p.completed.is_empty());
        assert_eq!(p.interrupted, Some(0));
        assert!(progress_from_events(&events[1..]).is_err());
    }
}
