//! The self-driving canary (docs/architecture.md, "A canary"): one long-running operation that
//! sets each step of a plan with the gate operation, holds it for the step time while it
//! analyses the new version against the old one, and advances, waits, holds or aborts on its own.
//!
//! It owns the namespace's gate for its whole run: it holds the gate lock on a connection named
//! `hopback canary ID (operator)` (`broker::lock::hold`), so every other flip — CLI, console,
//! another canary — is refused naming it, while its own steps (and its abort's rollback) pass
//! through `ops::gate::apply` on that same connection, with the same guards and compare-and-set.
//! Operators reach it through its control queue (`broker::control`, named by
//! `topology::Namespace::canary_control`), which exists exactly while it runs.
//!
//! Every step, analysis and decision is a ledger event (`ledger::canary` projects them back); a
//! killed canary leaves the gate where it was, and [`resume`] continues from the ledger. An
//! abort — by its analysis or an operator — puts the gate back on the old version at once, then
//! runs the rollback engine's non-interactive form (drain, dead letters as the plan says,
//! verification).

mod analysis;
pub mod control;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::broker::control::{ControlInbox, ControlRequest};
use crate::broker::lock::{BrokerLock, LockError};
use crate::broker::session::{self, Session};
use crate::ledger::canary::{CanaryState, canary_id_of};
use crate::ledger::{Event, EventKind, Ledger, Outcome, StreamStart};
use crate::model::canary::{Analysis, CanaryPlan, DeadLetters, StepClock, Verdict, decide};
use crate::model::gate::GateSplit;
use crate::ops::gate::{self, GateRequest};
use crate::ops::plan::{DlqChoice, StepKind};
use crate::ops::rollback::{self, AutoOperator, RollbackReport};
use crate::ops::{OpContext, OpError, Via};
use crate::text::sanitize;
use crate::topology::Namespace;
use analysis::WindowReader;
pub use control::{ControlCommand, ControlReport, control};

/// What to run.
#[derive(Debug, Clone)]
pub struct CanaryRequest {
    /// Namespace.
    pub namespace: String,
    /// The plan.
    pub plan: CanaryPlan,
    /// Why (journaled with the start).
    pub reason: Option<String>,
}

/// What the canary is doing, for whoever watches it (the CLI's lines, the drill).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CanaryUpdate {
    /// Started (or resumed) at step `first_step`.
    Started {
        /// Canary id.
        id: String,
        /// Namespace.
        namespace: String,
        /// Its plan.
        plan: CanaryPlan,
        /// The step it starts at (0-based).
        first_step: usize,
        /// Resumed from the ledger?
        resumed: bool,
    },
    /// A step is set.
    Step {
        /// Index.
        index: usize,
        /// The new version's weight.
        weight: u32,
    },
    /// One analysis and its verdict.
    Analysis {
        /// Step index.
        index: usize,
        /// Numbers.
        analysis: Analysis,
        /// Verdict.
        verdict: Verdict,
    },
    /// An operator's request was applied.
    Control {
        /// `pause`, `resume`, `promote`, `abort`.
        command: String,
        /// The broker user who asked.
        by: String,
    },
    /// The canary is aborting: the gate goes back, then the rollback runs.
    Aborting {
        /// Why.
        why: String,
    },
    /// Finished.
    Finished {
        /// How.
        outcome: CanaryOutcome,
    },
}

/// Watches a canary (default: ignore).
pub trait CanaryObserver: Send + Sync {
    /// Called on every update.
    fn update(&self, _u: &CanaryUpdate) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl CanaryObserver for Quiet {}

/// How a canary ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CanaryOutcome {
    /// The new version has 100 %.
    Promoted {
        /// An operator promoted it before the last step (their broker user).
        by: Option<String>,
    },
    /// Its connection was lost (its lock and control queue with it): the gate stays where it
    /// was, like a killed canary's; `--resume` continues.
    Interrupted {
        /// The step it was on.
        step: Option<usize>,
        /// What happened.
        why: String,
    },
    /// Rolled back to the old version.
    Aborted {
        /// The step it was on (0-based; `None`: before the first step was set).
        step: Option<usize>,
        /// The new version's weight then.
        weight: Option<u32>,
        /// Why, with the numbers.
        why: String,
        /// An operator aborted it (their broker user); `None`: its analysis did.
        by: Option<String>,
    },
}

/// What a canary run did.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    /// Id (`--resume`, `pause|resume|promote|abort` take it).
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// The plan.
    pub plan: CanaryPlan,
    /// Resumed from the ledger?
    pub resumed: bool,
    /// The steps it set, in order (weights of the new version).
    pub steps_set: Vec<u32>,
    /// Every decision: (name, why).
    pub decisions: Vec<(String, String)>,
    /// The last analysis.
    pub last_analysis: Option<Analysis>,
    /// How it ended.
    pub outcome: CanaryOutcome,
    /// The automatic rollback (after an abort).
    pub rollback: Option<RollbackReport>,
    /// The gate at the end.
    pub gate: GateSplit,
}

/// What a dry run shows: the gate now and each step's split.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryDryRun {
    /// Namespace.
    pub namespace: String,
    /// The gate now.
    pub gate: GateSplit,
    /// The plan.
    pub plan: CanaryPlan,
    /// The first step it would set (0-based).
    pub first_step: usize,
    /// The split of each step from the first.
    pub splits: Vec<GateSplit>,
    /// What a real run would refuse now (the first step's guard), if anything.
    pub would_be_refused: Option<String>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn mgmt_of(cx: &OpContext) -> Result<&crate::broker::mgmt::Mgmt, OpError> {
    cx.mgmt.as_ref().ok_or_else(|| {
        OpError::failed(
            "a canary reads the gate from the management API, and its client could not be built",
            "enable rabbitmq_management or fix mgmt_url (`hopback check`)",
        )
    })
}

/// Where the canary starts on the gate as it is: the first step above the new version's share.
fn first_step(plan: &CanaryPlan, ns: &str, gate: &GateSplit) -> Result<usize, OpError> {
    let foreign: Vec<&String> = gate
        .bound()
        .map(|(v, _)| v)
        .filter(|v| **v != plan.from && **v != plan.to)
        .collect();
    if !foreign.is_empty() {
        return Err(OpError::refused(
            format!(
                "the gate of `{}` routes to {} as well ({}): a canary from {} to {} starts from a gate on those two only; nothing changed",
                sanitize(ns),
                foreign
                    .iter()
                    .map(|v| sanitize(v).into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                gate.describe(),
                plan.from,
                plan.to
            ),
            format!(
                "set the gate first, e.g. `hopback gate set {} {}=100`",
                sanitize(ns),
                plan.from
            ),
        ));
    }
    plan.first_step_above(gate.percent(&plan.to))
        .ok_or_else(|| {
            OpError::refused(
                format!(
                    "{} already has 100 % of `{}`: nothing for a canary to do; nothing changed",
                    plan.to,
                    sanitize(ns)
                ),
                "roll back first (`hopback rollback`) if you meant to start over",
            )
        })
}

/// Show what [`start`] would do: the gate now, the steps, and whether the first step's guard
/// would refuse it. Changes nothing, journals nothing.
pub async fn dry_run(cx: &OpContext, req: &CanaryRequest) -> Result<CanaryDryRun, OpError> {
    req.plan
        .validate()
        .map_err(|e| OpError::invalid(e.0, "see `hopback canary --help`"))?;
    let mgmt = mgmt_of(cx)?;
    let also = vec![req.plan.from.clone(), req.plan.to.clone()];
    let view = gate::read_gate(&cx.session, mgmt, &cx.cfg, &req.namespace, &also).await?;
    let first = first_step(&req.plan, &req.namespace, &view.split)?;
    let would_be_refused = match gate::validate(&view, &req.plan.split_at(first), false) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    Ok(CanaryDryRun {
        namespace: req.namespace.clone(),
        gate: view.split.clone(),
        plan: req.plan.clone(),
        first_step: first,
        splits: (first..req.plan.steps.len())
            .map(|i| req.plan.split_at(i))
            .collect(),
        would_be_refused,
    })
}

/// The canary's own connection, its gate lock and its control queue.
struct Held {
    session: Arc<Session>,
    lock: BrokerLock,
    inbox: ControlInbox,
}

impl Held {
    async fn take(cx: &OpContext, ns: &str, id: &str) -> Result<Held, OpError> {
        let mgmt = mgmt_of(cx)?;
        let names = Namespace::resolve(&cx.cfg, ns);
        let session =
            session::connect(&cx.cfg.profile, &format!("canary {id}"), &cx.cfg.operator).await?;
        let lock_name = names.gate_lock();
        let lock = match crate::broker::lock::hold(&session, &lock_name).await {
            Ok(l) => l,
            Err(LockError::Held { .. }) => {
                session.close().await;
                return Err(match gate::lock_holder(mgmt, &cx.cfg, ns).await {
                    Ok(Some(h)) => gate::refusal_while_held(ns, &h),
                    _ => OpError::refused(
                        format!(
                            "the gate lock of `{}` is held (a flip or another canary); nothing changed",
                            sanitize(ns)
                        ),
                        format!("see `hopback canary list {}` and try again", sanitize(ns)),
                    ),
                });
            }
            Err(LockError::Broker(e)) => {
                session.close().await;
                return Err(OpError::refused(
                    format!(
                        "cannot take the gate lock `{}`, nothing changed: {}",
                        sanitize(&lock_name),
                        sanitize(&e.to_string())
                    ),
                    e.hint(),
                ));
            }
        };
        let inbox = match ControlInbox::open(&session, &names.canary_control(id)).await {
            Ok(i) => i,
            Err(e) => {
                crate::broker::lock::unhold(&session, lock).await;
                session.close().await;
                return Err(OpError::failed(
                    format!(
                        "cannot declare the canary's control queue: {}",
                        sanitize(&e.to_string())
                    ),
                    e.hint(),
                ));
            }
        };
        Ok(Held {
            session,
            lock,
            inbox,
        })
    }

    async fn release(self) {
        self.inbox.close().await;
        crate::broker::lock::unhold(&self.session, self.lock).await;
        self.session.close().await;
    }
}

/// Run a canary from the start (see the module doc). Returns once it promoted or aborted.
pub async fn start(
    cx: &OpContext,
    req: &CanaryRequest,
    obs: &dyn CanaryObserver,
) -> Result<CanaryReport, OpError> {
    cx.require_writable("run a canary")?;
    req.plan
        .validate()
        .map_err(|e| OpError::invalid(e.0, "see `hopback canary --help`"))?;
    let ns = req.namespace.as_str();
    let id = new_id();
    let held = Held::take(cx, ns, &id).await?;
    let ccx = canary_cx(cx, &held.session);
    let prepared = async {
        let mgmt = mgmt_of(&ccx)?;
        let also = vec![req.plan.from.clone(), req.plan.to.clone()];
        let view = gate::read_gate(&ccx.session, mgmt, &ccx.cfg, ns, &also).await?;
        for v in [&req.plan.from, &req.plan.to] {
            if !view.versions.contains_key(v) {
                return Err(OpError::invalid(
                    format!("`{}` has no version {v}; nothing changed", sanitize(ns)),
                    format!(
                        "create it with `hopback init {} --versions {},{}`",
                        sanitize(ns),
                        req.plan.from,
                        req.plan.to
                    ),
                ));
            }
        }
        let first = first_step(&req.plan, ns, &view.split)?;
        // The first step's guards refuse before anything is journaled or changed.
        gate::validate(&view, &req.plan.split_at(first), false)?;
        // The intent: nothing changes that the timeline would not show.
        ccx.journal_intent(
            ccx.event(EventKind::CanaryStarted, Some(ns))
                .params(json!({"canary_id": id, "plan": req.plan, "from": req.plan.from, "to": req.plan.to, "first_step": first}))
                .before(json!({"gate": view.split}))
                .reason(req.reason.clone().unwrap_or_else(|| format!(
                    "canary {} → {} over {} % steps of {}",
                    req.plan.from,
                    req.plan.to,
                    req.plan.steps.iter().map(u32::to_string).collect::<Vec<_>>().join("/"),
                    humantime::format_duration(req.plan.step_time())
                ))),
        )
        .await?;
        Ok((view.split, first))
    }
    .await;
    let (gate_now, first) = match prepared {
        Ok(p) => p,
        Err(e) => {
            held.release().await;
            return Err(e);
        }
    };
    let run = Run::new(&ccx, id, ns, req.plan.clone(), gate_now, false, obs);
    Ok(run.drive(held, first, false, None).await)
}

/// Continue a canary whose process died, from the ledger: the step it reached (set again, its
/// window started over), paused if it was, or the abort it had decided.
pub async fn resume(
    cx: &OpContext,
    id: &str,
    obs: &dyn CanaryObserver,
) -> Result<CanaryReport, OpError> {
    cx.require_writable("resume a canary")?;
    let state = find(&cx.ledger, id).await?;
    if let Some((o, why)) = &state.finished {
        return Err(OpError::refused(
            format!(
                "canary {} already finished ({o}: {}); nothing changed",
                sanitize(id),
                sanitize(why)
            ),
            format!(
                "start a new one with `hopback canary {} --to {}`",
                sanitize(&state.namespace),
                state.plan.to
            ),
        ));
    }
    let me = &cx.cfg.profile.username;
    if state.started_by.1 != sanitize(me) {
        return Err(OpError::refused(
            format!(
                "canary {} was started by broker user `{}`; only its events count, so it resumes as that user (you are `{}`); nothing changed",
                sanitize(id),
                state.started_by.1,
                sanitize(me)
            ),
            "resume it with a profile of that user, or abort it with `hopback canary abort ID` once it runs",
        ));
    }
    let ns = state.namespace.clone();
    if control::is_running(&cx.session, &cx.cfg, &ns, id).await? {
        return Err(OpError::refused(
            format!(
                "canary {} is running (its control queue is held); nothing changed",
                sanitize(id)
            ),
            format!(
                "pause, promote or abort it: `hopback canary pause|promote|abort {}`",
                sanitize(id)
            ),
        ));
    }
    let held = Held::take(cx, &ns, id).await?;
    let ccx = canary_cx(cx, &held.session);
    let checked = async {
        let mgmt = mgmt_of(&ccx)?;
        let also = vec![state.plan.from.clone(), state.plan.to.clone()];
        let view = gate::read_gate(&ccx.session, mgmt, &ccx.cfg, &ns, &also).await?;
        // Compare-and-set over the process's death: the gate must be what the canary left.
        if let Some(left) = &state.gate
            && !left.same_routing(&view.split)
        {
            return Err(OpError::refused(
                format!(
                    "the gate of `{}` changed since canary {} stopped: it left {}, the broker has {}; nothing changed",
                    sanitize(&ns),
                    sanitize(id),
                    left.describe(),
                    view.split.describe()
                ),
                "look at `hopback timeline`, then start a new canary",
            ));
        }
        let first = match state.step {
            Some((i, _)) => i,
            None => first_step(&state.plan, &ns, &view.split)?,
        };
        ccx.journal_intent(
            ccx.event(EventKind::CanaryStarted, Some(&ns))
                .params(json!({"canary_id": id, "plan": state.plan, "from": state.plan.from, "to": state.plan.to, "first_step": first, "resumed": true, "paused": state.paused, "aborting": state.aborting}))
                .before(json!({"gate": view.split}))
                .reason(format!("canary {} resumed from the ledger at {}", sanitize(id), state.step_label())),
        )
        .await?;
        Ok((view.split, first))
    }
    .await;
    let (gate_now, first) = match checked {
        Ok(p) => p,
        Err(e) => {
            held.release().await;
            return Err(e);
        }
    };
    let run = Run::new(
        &ccx,
        id.to_string(),
        &ns,
        state.plan.clone(),
        gate_now,
        true,
        obs,
    );
    Ok(run
        .drive(held, first, state.paused, state.aborting.clone())
        .await)
}

/// Every canary the ledger knows (of `ns` only, when given), newest first, with whether its
/// process runs now (`None`: finished, not asked).
pub async fn list(
    cx: &OpContext,
    ns: Option<&str>,
) -> Result<Vec<(CanaryState, Option<bool>)>, OpError> {
    let events = canary_events(&cx.ledger, None).await?;
    let mut out = Vec::new();
    for (_, st) in crate::ledger::canary::project(&events) {
        if ns.is_some_and(|n| n != st.namespace) {
            continue;
        }
        let running = if st.finished.is_some() {
            None
        } else {
            control::is_running(&cx.session, &cx.cfg, &st.namespace, &st.id)
                .await
                .ok()
        };
        out.push((st, running));
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0.started_at));
    Ok(out)
}

/// The ledger's events of canaries (of canary `id` only, when given), oldest first.
pub async fn canary_events(ledger: &Ledger, id: Option<&str>) -> Result<Vec<Event>, OpError> {
    let mut out = Vec::new();
    ledger
        .fold(StreamStart::First, |e| {
            if let Some(c) = canary_id_of(&e)
                && id.is_none_or(|want| want == c)
            {
                out.push(e);
            }
        })
        .await
        .map_err(|e| OpError::failed(e.message, "check the ledger with `hopback check`"))?;
    Ok(out)
}

/// Canary `id` as the ledger tells it.
pub async fn find(ledger: &Ledger, id: &str) -> Result<CanaryState, OpError> {
    let events = canary_events(ledger, Some(id)).await?;
    crate::ledger::canary::project(&events)
        .remove(id)
        .ok_or_else(|| {
            OpError::failed(
                format!(
                    "no canary with id `{}` in the ledger (a verified canary_started event)",
                    sanitize(id)
                ),
                "list canaries with `hopback canary list`",
            )
        })
}

fn canary_cx(cx: &OpContext, session: &Arc<Session>) -> OpContext {
    OpContext {
        session: session.clone(),
        mgmt: cx.mgmt.clone(),
        ledger: cx.ledger.clone(),
        cfg: cx.cfg.clone(),
        via: Via::Canary,
        journal_sink: cx.journal_sink.clone(),
    }
}

/// The rollback an abort runs after the gate is back: the default plan without its question
/// (the canary decided), dead letters as the plan says.
pub fn abort_rollback_plan(plan: &CanaryPlan) -> crate::ops::plan::Plan {
    let mut p = crate::ops::plan::default_plan(
        &plan.to,
        &plan.from,
        Duration::from_millis(plan.verify_window_ms),
    );
    p.name = format!("canary abort {} → {}", plan.to, plan.from);
    p.steps
        .retain(|s| !matches!(s.kind, StepKind::Confirm { .. }));
    for s in &mut p.steps {
        if let StepKind::DlqReplay { action, .. } = &mut s.kind {
            *action = match plan.dead_letters {
                DeadLetters::Replay => DlqChoice::Replay,
                DeadLetters::Keep => DlqChoice::Keep,
            };
        }
    }
    p
}

/// One canary process's run.
struct Run<'a> {
    cx: &'a OpContext,
    id: String,
    ns: String,
    plan: CanaryPlan,
    gate: GateSplit,
    resumed: bool,
    obs: &'a dyn CanaryObserver,
    steps_set: Vec<u32>,
    decisions: Vec<(String, String)>,
    last_analysis: Option<Analysis>,
}

/// What ends the analysis of a step.
enum StepEnd {
    Advance,
    Promote {
        by: String,
    },
    Abort {
        why: String,
        by: Option<String>,
    },
    /// The canary's connection is gone (its lock and control queue with it).
    Lost {
        why: String,
    },
}

/// How a run ends.
enum Ending {
    Promote { by: Option<String> },
    Abort { why: String, by: Option<String> },
    Lost { why: String },
}

impl<'a> Run<'a> {
    fn new(
        cx: &'a OpContext,
        id: String,
        ns: &str,
        plan: CanaryPlan,
        gate: GateSplit,
        resumed: bool,
        obs: &'a dyn CanaryObserver,
    ) -> Self {
        Self {
            cx,
            id,
            ns: ns.to_string(),
            plan,
            gate,
            resumed,
            obs,
            steps_set: Vec::new(),
            decisions: Vec::new(),
            last_analysis: None,
        }
    }

    fn names(&self) -> Namespace {
        Namespace::resolve(&self.cx.cfg, &self.ns)
    }

    async fn journal(&self, e: Event) {
        let params = e.params.clone();
        let e = e.params({
            let mut p = match params {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            p.insert("canary_id".into(), json!(self.id));
            p.insert("via".into(), json!(Via::Canary.as_str()));
            serde_json::Value::Object(p)
        });
        if let Err(f) = self.cx.ledger.append(e).await {
            tracing::warn!(error = %f.message, "cannot journal a canary event");
        }
    }

    async fn decision(&mut self, name: &str, why: &str, by: Option<&str>, a: Option<&Analysis>) {
        self.decisions.push((name.to_string(), why.to_string()));
        let mut params = json!({"decision": name, "step": self.steps_set.len()});
        if let Some(u) = by {
            params["requested_by"] = json!(u);
        }
        let mut e = self
            .cx
            .event(EventKind::CanaryDecision, Some(&self.ns))
            .params(params)
            .reason(why.to_string())
            .after(json!({"gate": self.gate}));
        if let Some(a) = a {
            e.after["analysis"] = json!(a);
        }
        self.journal(e).await;
    }

    /// Drive the plan from step `first` to a promotion or an abort, then release what it holds.
    async fn drive(
        mut self,
        mut held: Held,
        first: usize,
        mut paused: bool,
        aborting: Option<String>,
    ) -> CanaryReport {
        self.obs.update(&CanaryUpdate::Started {
            id: self.id.clone(),
            namespace: self.ns.clone(),
            plan: self.plan.clone(),
            first_step: first,
            resumed: self.resumed,
        });
        let names = self.names();
        let new_q = names
            .version_queue(&self.plan.to)
            .unwrap_or_else(|| format!("{}.{}", self.ns, self.plan.to));
        let old_q = names
            .version_queue(&self.plan.from)
            .unwrap_or_else(|| format!("{}.{}", self.ns, self.plan.from));
        let mut reader = WindowReader::new(&self.cx.cfg.profile, new_q, old_q);
        let mut index = first;
        let end = if let Some(why) = aborting {
            Ending::Abort { why, by: None }
        } else {
            loop {
                if let Err(e) = self.set_step(index).await {
                    break Ending::Abort {
                        why: format!(
                            "step {} ({} %) could not be set: {}",
                            index + 1,
                            self.plan.steps.get(index).copied().unwrap_or(0),
                            e
                        ),
                        by: None,
                    };
                }
                match self
                    .watch_step(&mut held, &mut reader, index, &mut paused)
                    .await
                {
                    StepEnd::Advance if index + 1 < self.plan.steps.len() => index += 1,
                    StepEnd::Advance => break Ending::Promote { by: None },
                    StepEnd::Promote { by } => break Ending::Promote { by: Some(by) },
                    StepEnd::Abort { why, by } => break Ending::Abort { why, by },
                    StepEnd::Lost { why } => break Ending::Lost { why },
                }
            }
        };
        let (outcome, rollback) = match end {
            Ending::Lost { why } => {
                // Like a killed process: the gate stays, nothing is journaled as finished, and
                // `--resume` continues from the ledger.
                let outcome = CanaryOutcome::Interrupted {
                    step: self.steps_set.len().checked_sub(1),
                    why,
                };
                self.obs.update(&CanaryUpdate::Finished {
                    outcome: outcome.clone(),
                });
                held.release().await;
                return self.report(outcome, None);
            }
            Ending::Promote { by } => {
                if by.is_some()
                    && let Err(e) = self
                        .set_gate(
                            self.plan.split_at(self.plan.steps.len() - 1),
                            "promoted by an operator",
                        )
                        .await
                {
                    let why = format!("the promotion could not set the gate: {e}");
                    self.abort(&mut held, why, by).await
                } else {
                    (CanaryOutcome::Promoted { by }, None)
                }
            }
            Ending::Abort { why, by } => self.abort(&mut held, why, by).await,
        };
        let (ev_outcome, reason) = match &outcome {
            CanaryOutcome::Promoted { by } => (
                Outcome::Ok,
                format!(
                    "promoted: {} has 100 %{}",
                    self.plan.to,
                    by.as_ref()
                        .map(|b| format!(" (promoted by {})", sanitize(b)))
                        .unwrap_or_default()
                ),
            ),
            CanaryOutcome::Interrupted { why, .. } => (Outcome::Failed, why.clone()),
            CanaryOutcome::Aborted { why, by, .. } => (
                if by.is_some() {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed
                },
                format!("aborted at {}: {}", self.step_label(), why),
            ),
        };
        let mut params = json!({"steps_set": self.steps_set});
        if let Some(r) = &rollback {
            params["rollback_id"] = json!(r.rollback_id);
            params["rollback_outcome"] = json!(r.outcome);
        }
        self.journal(
            self.cx
                .event(EventKind::CanaryFinished, Some(&self.ns))
                .params(params)
                .after(json!({"gate": self.gate, "analysis": self.last_analysis}))
                .outcome(ev_outcome)
                .reason(reason),
        )
        .await;
        self.obs.update(&CanaryUpdate::Finished {
            outcome: outcome.clone(),
        });
        held.release().await;
        self.report(outcome, rollback)
    }

    fn report(self, outcome: CanaryOutcome, rollback: Option<RollbackReport>) -> CanaryReport {
        CanaryReport {
            id: self.id,
            namespace: self.ns,
            plan: self.plan,
            resumed: self.resumed,
            steps_set: self.steps_set,
            decisions: self.decisions,
            last_analysis: self.last_analysis,
            outcome,
            rollback,
            gate: self.gate,
        }
    }

    fn step_label(&self) -> String {
        match self.steps_set.last() {
            Some(w) => format!("step {} ({w} %)", self.steps_set.len()),
            None => "the start".into(),
        }
    }

    async fn set_gate(&mut self, target: GateSplit, why: &str) -> Result<(), OpError> {
        let mut extra = serde_json::Map::new();
        extra.insert("canary_id".into(), json!(self.id));
        let r = gate::apply(
            self.cx,
            &GateRequest {
                namespace: self.ns.clone(),
                target,
                reason: Some(format!("canary {}: {why}", self.id)),
                extra_params: extra,
                expect_before: Some(self.gate.clone()),
                ..Default::default()
            },
        )
        .await?;
        self.gate = r.after;
        Ok(())
    }

    async fn set_step(&mut self, index: usize) -> Result<(), OpError> {
        let weight = self.plan.steps.get(index).copied().unwrap_or(100);
        self.set_gate(
            self.plan.split_at(index),
            &format!(
                "step {}/{}: {} at {weight} %",
                index + 1,
                self.plan.steps.len(),
                self.plan.to
            ),
        )
        .await?;
        self.steps_set.push(weight);
        self.journal(
            self.cx
                .event(EventKind::CanaryStep, Some(&self.ns))
                .params(json!({"index": index, "weight": weight, "steps": self.plan.steps.len()}))
                .after(json!({"gate": self.gate})),
        )
        .await;
        self.obs.update(&CanaryUpdate::Step { index, weight });
        Ok(())
    }

    /// Watch one step until it passes, an operator promotes or aborts, or the analysis aborts.
    async fn watch_step(
        &mut self,
        held: &mut Held,
        reader: &mut WindowReader,
        index: usize,
        paused: &mut bool,
    ) -> StepEnd {
        reader.restart();
        let started = Instant::now();
        let mut paused_total = Duration::ZERO;
        let mut paused_since = paused.then(Instant::now);
        let mut hold_since: Option<Instant> = None;
        let mut last_journaled: Option<String> = None;
        let mut tick = tokio::time::interval(self.plan.refresh());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let a = reader.read(&held.session, self.cx.mgmt.as_ref()).await;
                    let now = Instant::now();
                    let paused_now = paused_since.map_or(Duration::ZERO, |p| now - p);
                    let clock = StepClock {
                        elapsed: (now - started).saturating_sub(paused_total + paused_now),
                        held_for: hold_since.map_or(Duration::ZERO, |h| now - h),
                        paused: *paused,
                    };
                    let v = decide(&self.plan, &a, clock);
                    self.last_analysis = Some(a.clone());
                    self.obs.update(&CanaryUpdate::Analysis { index, analysis: a.clone(), verdict: v.clone() });
                    // Journal each change of verdict (and every abort or advance), not every tick.
                    let key = v.name().to_string();
                    if last_journaled.as_deref() != Some(key.as_str()) {
                        last_journaled = Some(key.clone());
                        self.journal(
                            self.cx
                                .event(EventKind::CanaryAnalysis, Some(&self.ns))
                                .params(json!({"index": index, "verdict": key}))
                                .after(json!({"analysis": a, "verdict": v}))
                                .reason(format!("{}: {}", a.describe(&self.plan), v.why())),
                        )
                        .await;
                    }
                    match v {
                        Verdict::Wait { .. } => hold_since = None,
                        Verdict::Hold { why } => {
                            if hold_since.is_none() && !*paused {
                                hold_since = Some(now);
                                self.decision("hold", &why, None, Some(&a)).await;
                            }
                        }
                        Verdict::Advance { why } => {
                            self.decision("advance", &why, None, Some(&a)).await;
                            return StepEnd::Advance;
                        }
                        Verdict::Abort { why } => return StepEnd::Abort { why, by: None },
                    }
                }
                req = held.inbox.next() => {
                    let req = match req {
                        Ok(r) => r,
                        Err(e) => {
                            // The connection is gone: the lock went with it. Stop here; the
                            // gate stays where it is and `--resume` continues.
                            tracing::warn!(error = %e, "canary control queue lost");
                            return StepEnd::Lost {
                                why: format!("the canary's connection was lost ({e}); the gate stays as it is — resume with `hopback canary --resume {}`", self.id),
                            };
                        }
                    };
                    match self.control(held, &req, paused).await {
                        Some(ControlCommand::Pause) => {
                            paused_since = Some(Instant::now());
                            hold_since = None;
                        }
                        Some(ControlCommand::Resume) => {
                            if let Some(p) = paused_since.take() {
                                paused_total += p.elapsed();
                            }
                        }
                        Some(ControlCommand::Promote) => {
                            return StepEnd::Promote { by: req.user_id.clone().unwrap_or_default() };
                        }
                        Some(ControlCommand::Abort) => {
                            return StepEnd::Abort {
                                why: format!("aborted by broker user {}", sanitize(req.user_id.as_deref().unwrap_or("?"))),
                                by: req.user_id.clone(),
                            };
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Apply one control request (journaled with its verified author) and answer it. Returns
    /// the command applied (`None`: refused).
    async fn control(
        &mut self,
        held: &Held,
        req: &ControlRequest,
        paused: &mut bool,
    ) -> Option<ControlCommand> {
        let parsed = control::parse_request(&req.body);
        let id = self.id.clone();
        let answer = move |ok: bool, message: String| {
            serde_json::to_vec(&json!({"ok": ok, "message": message, "canary_id": id}))
                .unwrap_or_default()
        };
        let Some(user) = req.user_id.clone() else {
            let msg = "refused: the request carries no user_id, so its author is not verified"
                .to_string();
            self.decision("ignored", &msg, None, None).await;
            held.inbox.reply(req, &answer(false, msg)).await;
            return None;
        };
        let cmd = match parsed {
            Ok(c) => c,
            Err(why) => {
                held.inbox.reply(req, &answer(false, why)).await;
                return None;
            }
        };
        let (applied, msg) = match cmd {
            ControlCommand::Pause if *paused => (None, "already paused".to_string()),
            ControlCommand::Resume if !*paused => (None, "not paused".to_string()),
            ControlCommand::Pause => {
                *paused = true;
                (Some(cmd), format!("paused at {}", self.step_label()))
            }
            ControlCommand::Resume => {
                *paused = false;
                (Some(cmd), format!("resumed at {}", self.step_label()))
            }
            ControlCommand::Promote => (
                Some(cmd),
                format!("promoting: {} goes to 100 % now", self.plan.to),
            ),
            ControlCommand::Abort => (
                Some(cmd),
                format!(
                    "aborting: the gate goes back to {} now, then the rollback runs",
                    self.plan.from
                ),
            ),
        };
        if applied.is_some() && !matches!(cmd, ControlCommand::Abort | ControlCommand::Promote) {
            let why = format!("{msg} (asked by broker user {})", sanitize(&user));
            self.decision(cmd.as_str(), &why, Some(&user), None).await;
        }
        if let Some(c) = applied {
            self.obs.update(&CanaryUpdate::Control {
                command: c.as_str().into(),
                by: user.clone(),
            });
        }
        held.inbox.reply(req, &answer(applied.is_some(), msg)).await;
        applied
    }

    /// Put the gate back on the old version at once, then run the rollback non-interactively.
    async fn abort(
        &mut self,
        held: &mut Held,
        why: String,
        by: Option<String>,
    ) -> (CanaryOutcome, Option<RollbackReport>) {
        let step = self.steps_set.len().checked_sub(1);
        let weight = self.steps_set.last().copied();
        let outcome = CanaryOutcome::Aborted {
            step,
            weight,
            why: why.clone(),
            by: by.clone(),
        };
        self.obs
            .update(&CanaryUpdate::Aborting { why: why.clone() });
        let analysis = self.last_analysis.clone();
        self.decision("abort", &why, by.as_deref(), analysis.as_ref())
            .await;
        let back = self.plan.rollback_split();
        let mut extra = serde_json::Map::new();
        extra.insert("canary_id".into(), json!(self.id));
        // The old version takes the traffic back even if it has no consumer right now: its tasks
        // wait in its queue, where the rollback's next step waits for workers.
        let flipped = gate::apply(
            self.cx,
            &GateRequest {
                namespace: self.ns.clone(),
                target: back,
                reason: Some(format!(
                    "canary {} aborted at {}: {why}",
                    self.id,
                    self.step_label()
                )),
                extra_params: extra,
                force_zero_consumers: true,
                ..Default::default()
            },
        )
        .await;
        match flipped {
            Ok(r) => self.gate = r.after,
            Err(e) => {
                tracing::warn!(error = %e, "canary abort: the gate flip failed; the rollback's gate step tries again")
            }
        }
        let env = rollback::Env {
            session: held.session.clone(),
            mgmt: self.cx.mgmt.clone(),
            cfg: self.cx.cfg.clone(),
            ns: self.ns.clone(),
            ledger: self.cx.ledger.clone(),
        };
        let report = match rollback::run(
            &env,
            abort_rollback_plan(&self.plan),
            &AutoOperator::default(),
        )
        .await
        {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "canary abort: the rollback did not run");
                None
            }
        };
        if let Some(mgmt) = self.cx.mgmt.as_ref()
            && let Ok(v) = gate::read_gate(&held.session, mgmt, &self.cx.cfg, &self.ns, &[]).await
        {
            self.gate = v.split;
        }
        (outcome, report)
    }
}
