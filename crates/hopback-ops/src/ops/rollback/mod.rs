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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::json;

use crate::broker::headers::attribute;
use crate::broker::mgmt::Mgmt;
use crate::broker::mover;
use crate::broker::session::{BrokerError, Session};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::ledger::event::{Event, EventKind, Outcome};
use crate::model::deadletter::Filter;
use crate::model::gate::GateSplit;
use crate::ops::OpError;
use crate::ops::gate;
use crate::ops::plan::{DlqChoice, Metric, Plan, Step, StepKind};
use crate::topology::Namespace;

/// Replays above this count are parked (left in the DLQ) instead of replayed again.
pub const MAX_REPLAYS: u64 = 3;

mod dead_letters;
mod journal;
mod operator;
mod recheck;
mod steps;
mod verify;

use dead_letters::*;
pub use dead_letters::{DlqCounts, count_dead_letters};
use journal::*;
pub use journal::{Progress, progress_from_events, rollback_events, rollback_id_of};
pub use operator::*;
pub use steps::read_gate;
use steps::*;
use verify::*;
pub use verify::{DryRunLine, dry_run};

// ───────────────────────────── reports ─────────────────────────────

pub use crate::model::rollback::RollbackOutcome;

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
    /// When this environment's connection is gone (a cluster lost the node it was on): a fresh
    /// one to any live node of the profile, with the ledger over it, so the next step runs
    /// instead of failing on a dead connection (issue 19). `None` while the connection is fine,
    /// or when no node answers (the step then fails and says why).
    pub async fn reconnected(&self) -> Option<Env> {
        if self.session.is_connected() {
            return None;
        }
        let session =
            crate::broker::session::connect(&self.cfg.profile, "rollback", &self.cfg.operator)
                .await
                .ok()?;
        let ledger = match self.ledger.reopen_on(&session, &self.cfg).await {
            Some(l) => Arc::new(l),
            None => self.ledger.clone(),
        };
        tracing::warn!(node = %session.node(), "rollback: connection lost; continuing on another node");
        Some(Env {
            session,
            mgmt: self.mgmt.clone(),
            cfg: self.cfg.clone(),
            ns: self.ns.clone(),
            ledger,
        })
    }

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
            journal_sink: None,
        }
    }
    async fn counts(
        &self,
        queue: &str,
    ) -> Result<crate::broker::session::QueueCounts, BrokerError> {
        self.session.passive_queue(queue).await?.ok_or_else(|| {
            BrokerError::NotFound(format!(
                "queue `{}` does not exist",
                crate::text::sanitize(queue)
            ))
        })
    }
    async fn ready(&self, queue: &str) -> Result<u64, BrokerError> {
        self.counts(queue).await.map(|c| u64::from(c.ready))
    }
    async fn consumers(&self, queue: &str) -> Result<u64, BrokerError> {
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
        for v in [from, to] {
            if let Ok(Some(qi)) = m.queue(&env.queue(v)).await
                && let Some(s) = &qi.message_stats
            {
                out.push(format!(
                    "{v}: ack {:.1}/s, deliver {:.1}/s, redeliver {:.1}/s",
                    s.ack_details.rate, s.deliver_get_details.rate, s.redeliver_details.rate
                ));
            }
        }
    }
    out
}

/// A plan that moves messages (drain, dead-letter replay) republishes them through the default
/// exchange: a user without WRITE on it would see the gate flip and then the move refused. Ask
/// the broker before anything changes.
async fn moves_are_permitted(env: &Env, plan: &Plan) -> Result<(), OpError> {
    let moves = plan.steps.iter().any(|s| {
        matches!(
            s.kind,
            crate::ops::plan::StepKind::Drain { .. } | crate::ops::plan::StepKind::DlqReplay { .. }
        )
    });
    if !moves {
        return Ok(());
    }
    crate::broker::amqp::Publisher::probe_write(&env.session, "")
        .await
        .map_err(|e| match e {
            crate::broker::session::BrokerError::AccessRefused(m) => OpError::refused(
                format!("this plan moves messages, and this user may not publish through the default exchange: {m}"),
                "grant WRITE on `amq.default` (README \"Permissions\", the rollback line), or roll back with a user that has it; nothing was changed",
            ),
            other => other.into(),
        })
}

/// Run a plan from the start. `dry_run` is [`dry_run`]'s job, not this one's.
pub async fn run(
    env: &Env,
    plan: Plan,
    operator: &dyn Operator,
) -> Result<RollbackReport, OpError> {
    env.cx().require_writable("roll back")?;
    moves_are_permitted(env, &plan).await?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let ev = evidence(env, &plan.from, &plan.to).await;
    let start = env
        .ledger
        .event(EventKind::RollbackStarted, Some(&env.ns))
        .params(json!({"rollback_id": id, "plan": plan, "from": plan.from, "to": plan.to, "staging": env.cfg.profile.staging, "production": env.cfg.profile.production}))
        .before(json!({"evidence": ev}))
        .outcome(Outcome::Started)
        .reason(format!("{}: {}", plan.name, ev.join("; ")));
    // The start is the rollback's intent: a ledger that cannot take it stops the rollback here.
    env.cx().journal_intent(start).await?;
    Ok(execute(env, id, plan, Default::default(), false, ev, operator).await)
}

/// Resume a rollback from its journal: completed steps are not run again.
pub async fn resume(
    env_for: impl FnOnce(&str) -> Env,
    ledger: &Ledger,
    id: &str,
    operator: &dyn Operator,
) -> Result<RollbackReport, OpError> {
    let events = rollback_events(ledger, id)
        .await
        .map_err(|e| OpError::failed(e.message, "check the ledger with `hopback check`"))?;
    if events.is_empty() {
        return Err(OpError::failed(
            format!(
                "no rollback with id `{}` in the ledger",
                crate::text::sanitize(id)
            ),
            "list rollbacks with `hopback timeline`",
        ));
    }
    let p = progress_from_events(&events)
        .map_err(|e| OpError::failed(e, "list rollbacks with `hopback timeline`"))?;
    if let Some(o) = p.finished {
        return Err(OpError::failed(
            format!(
                "rollback {} already finished ({o}); start a new one with `hopback rollback {}`",
                crate::text::sanitize(id),
                crate::text::sanitize(&p.namespace)
            ),
            "list rollbacks with `hopback timeline`",
        ));
    }
    let env = env_for(&p.namespace);
    env.cx().require_writable("resume a rollback")?;
    moves_are_permitted(&env, &p.plan).await?;
    let ev = evidence(&env, &p.plan.from, &p.plan.to).await;
    // A plan read back from the ledger is shown in full, with who started it, before anything
    // runs; the operator confirms (Abort is the default in the console; `--yes` continues).
    let names = env.names();
    let mut shown = vec![format!(
        "started by broker user {} (claims {}); only its events count{}",
        p.started_by.1,
        p.started_by.0,
        p.ignored_note()
            .map(|n| format!("; {n}"))
            .unwrap_or_default()
    )];
    for (i, st) in p.plan.steps.iter().enumerate() {
        shown.push(format!(
            "{}{}. {}",
            if p.completed.contains(&i) {
                "done (re-checked before it is skipped) "
            } else {
                ""
            },
            i + 1,
            st.kind.describe(&names)
        ));
    }
    let point = DecisionPoint {
        rollback_id: id.to_string(),
        step_index: 0,
        step_title: "resume".into(),
        kind: DecisionKind::Confirm,
        question: format!(
            "Resume rollback {} of {} ({} → {}) from the ledger?",
            crate::text::sanitize(id),
            crate::text::sanitize(&p.namespace),
            crate::text::sanitize(&p.plan.from),
            crate::text::sanitize(&p.plan.to)
        ),
        evidence: shown,
    };
    if operator.decide(&point).await != Decision::Continue {
        return Err(OpError::refused(
            format!(
                "resume of rollback {} not confirmed; nothing changed",
                crate::text::sanitize(id)
            ),
            "start a new rollback instead, or resume again",
        ));
    }
    let note = env
        .ledger
        .event(EventKind::RollbackStep, Some(&env.ns))
        .params(json!({"rollback_id": id, "phase": "resume", "completed": p.completed, "interrupted": p.interrupted, "ignored_unverified": p.ignored_unverified, "ignored_other_authors": p.ignored_other_authors}))
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
        p.completed_data,
        true,
        ev,
        operator,
    )
    .await)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    env0: &Env,
    id: String,
    plan: Plan,
    // Steps an earlier run completed (by the starter's journal), with what each recorded.
    completed: std::collections::BTreeMap<usize, serde_json::Value>,
    resumed: bool,
    evidence: Vec<String>,
    operator: &dyn Operator,
) -> RollbackReport {
    let names = env0.names();
    // Replaced when the connection is lost between steps (see [`Env::reconnected`]).
    let mut fresh: Option<Env> = None;
    operator.observe(&Update::Started {
        rollback_id: id.clone(),
        plan: plan.clone(),
        evidence: evidence.clone(),
        descriptions: plan.steps.iter().map(|s| s.kind.describe(&names)).collect(),
    });
    let mut report = RollbackReport {
        rollback_id: id.clone(),
        namespace: env0.ns.clone(),
        plan: plan.name.clone(),
        resumed,
        steps: Vec::new(),
        outcome: RollbackOutcome::Done,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        if let Some(e) = fresh.as_ref().unwrap_or(env0).reconnected().await {
            fresh = Some(e);
        }
        let env = fresh.as_ref().unwrap_or(env0);
        let description = step.kind.describe(&env.names());
        // A step the journal says is done is skipped only while its effect holds on the broker
        // (someone may have undone it since); otherwise it runs again, and says why.
        let mut run_again = None;
        if let Some(data) = completed.get(&i) {
            let detail = match recheck::effect_holds(env, step, data).await {
                recheck::Recheck::Holds(what) => {
                    format!("completed in an earlier run (journal); re-checked: {what}")
                }
                recheck::Recheck::Journal(why) => {
                    format!("completed in an earlier run (journal; nothing to re-check: {why})")
                }
                recheck::Recheck::Gone(why) => {
                    run_again = Some(format!(
                        "the journal says it completed, but {why}: running it again"
                    ));
                    String::new()
                }
            };
            if run_again.is_none() {
                operator.observe(&Update::Step {
                    index: i,
                    state: StepState::AlreadyDone,
                    detail: detail.clone(),
                });
                report.steps.push(StepReport {
                    index: i,
                    title: step.title.clone(),
                    kind: step.kind_name().into(),
                    description,
                    state: StepState::AlreadyDone,
                    detail,
                    data: serde_json::Value::Null,
                    elapsed_ms: 0,
                });
                continue;
            }
        }
        journal(
                &env.ledger,
                env.ledger
                    .event(EventKind::RollbackStep, Some(&env.ns))
                    .params(json!({"rollback_id": id, "index": i, "step": step.title, "kind": step.kind_name(), "phase": "start"}))
                    .outcome(Outcome::Started)
                    .reason(match &run_again {
                        Some(why) => format!("{description} ({why})"),
                        None => description.clone(),
                    }),
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
        let timed_out = || {
            StepResult::failed(format!(
                "timed out after {}",
                humantime::format_duration(step.timeout)
            ))
        };
        let step_fut = tokio::time::timeout(step.timeout, run_step(&ctx));
        tokio::pin!(step_fut);
        let result = tokio::select! {
            r = &mut step_fut => r.unwrap_or_else(|_| timed_out()),
            () = stop_requested(operator.stop_signal()) => {
                // A move sees the same signal and stops after the messages it holds; waits and
                // reads are dropped. Either way the rollback ends here, aborted.
                let finished = tokio::time::timeout(STOP_GRACE, &mut step_fut).await;
                match finished {
                    Ok(Ok(done)) => StepResult {
                        data: done.data,
                        ..StepResult::aborted(format!("stopped by the operator ({})", done.detail))
                    },
                    _ => StepResult::aborted("stopped by the operator"),
                }
            }
        };
        let elapsed_ms = t0.elapsed().as_millis() as u64;
        let mut result = result;
        if let Some(why) = &run_again {
            result.detail = format!("{} ({why})", result.detail);
        }
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
    if let Some(e) = fresh.as_ref().unwrap_or(env0).reconnected().await {
        fresh = Some(e);
    }
    let env = fresh.as_ref().unwrap_or(env0);
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
    /// Ask the operator at a decision point of this step.
    async fn ask(&self, kind: DecisionKind, question: String, evidence: Vec<String>) -> Decision {
        let point = DecisionPoint {
            rollback_id: self.id.to_string(),
            step_index: self.index,
            step_title: self.step.title.clone(),
            kind,
            question,
            evidence,
        };
        self.operator.decide(&point).await
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
    fn failed(detail: impl std::fmt::Display) -> Self {
        Self {
            state: StepState::Failed,
            ..Self::done(detail.to_string(), serde_json::Value::Null)
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
                ev.push(format!("  {}. {}", i + 1, s.kind.describe(&env.names())));
            }
            let d = c.ask(DecisionKind::Confirm, question.clone(), ev).await;
            // "Skip" is never a way to say yes: skipping the question that asks whether to roll
            // back at all stops the rollback before anything changes.
            let d = if d == Decision::Skip {
                Decision::Abort
            } else {
                d
            };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// As read back from the stream: the broker-verified author set.
    fn verified(mut e: Event) -> Event {
        e.author = Some("guest".into());
        e
    }

    fn step_event(id: &str, i: usize, phase: &str, state: Option<StepState>) -> Event {
        let mut e = Event::new(EventKind::RollbackStep, Some("ns"))
            .params(json!({"rollback_id": id, "index": i, "phase": phase}));
        if let Some(s) = state {
            e = e.after(json!({"state": s}));
        }
        verified(e)
    }

    #[test]
    fn progress_is_rebuilt_from_the_journal() {
        let plan = crate::ops::plan::default_plan("v2", "v1", Duration::from_secs(5));
        let start = verified(
            Event::new(EventKind::RollbackStarted, Some("ns"))
                .params(json!({"rollback_id": "abc", "plan": plan})),
        );
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
        // An unverified "finish" (forged) does not make a resume skip step 3.
        let mut forged = events.clone();
        forged.push(
            Event::new(EventKind::RollbackStep, Some("ns"))
                .params(json!({"rollback_id": "abc", "index": 3, "phase": "finish"}))
                .after(json!({"state": StepState::Done})),
        );
        let p = progress_from_events(&forged).unwrap();
        assert_eq!(p.interrupted, Some(3));
        assert_eq!(p.ignored_unverified, 1);
        // Another broker user's "finish" (verified, its body claiming the starter's operator
        // name) does not count either, nor does its "finished".
        let mut other = forged.clone();
        for (kind, phase) in [
            (EventKind::RollbackStep, Some("finish")),
            (EventKind::RollbackFinished, None),
        ] {
            let mut e = Event::new(kind, Some("ns"))
                .params(json!({"rollback_id": "abc", "index": 3, "phase": phase}))
                .after(json!({"state": StepState::Done}));
            e.operator = other[0].operator.clone();
            e.author = Some("mallory".into());
            other.push(e);
        }
        let p = progress_from_events(&other).unwrap();
        assert_eq!(p.interrupted, Some(3));
        assert!(!p.completed.contains(&3));
        assert_eq!(p.finished, None);
        assert_eq!(p.ignored_other_authors.get("mallory"), Some(&2));
        let note = p.ignored_note().unwrap();
        assert!(
            note.contains("2 by broker user mallory") && note.contains("1 unverified"),
            "{note}"
        );
        // A journaled plan that a plan file could not be is refused.
        let mut bad = plan.clone();
        bad.from = "../../etc".into();
        let bad_start = verified(
            Event::new(EventKind::RollbackStarted, Some("ns"))
                .params(json!({"rollback_id": "abd", "plan": bad})),
        );
        assert!(progress_from_events(&[bad_start]).is_err());
    }
}
