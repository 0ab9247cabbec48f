//! The gate operation (DESIGN §1, §3): read a namespace's gate, plan a flip that never leaves the
//! entry exchange without bindings, apply it on a dedicated channel, read the bindings back and
//! journal before/after/reason in the ledger. Headless: the CLI, the console's gate panel, the
//! rollback engine and the drill's scripted operator all call [`apply`].
//!
//! The consistent-hash exchange counts only the first binding per queue, and unbinding any of a
//! queue's bindings takes it off the hash ring (measured on 3.10.8). So a queue never holds two
//! bindings: to re-weight it we unbind every binding it has, then bind once. Newcomers are bound
//! first, re-weights next (one queue at a time, while the others keep routing), removals last.
//!
//! Refusals happen before anything changes: unknown version, weights summing to 0, a missing
//! version queue, an entry exchange that is neither `x-consistent-hash` nor `fanout` (or a canary
//! on a fanout, which would copy every message), and traffic moved onto a version with no
//! consumers unless the caller overrides the guard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

mod flip;
mod lock;

use flip::group;
pub use flip::{CurrentBinding, Step, bindings_of, has_zero_binding_window, plan, plan_bindings};
pub(crate) use lock::take_gate_lock;
pub use lock::{UnlockReport, UnlockRequest, lock_holder, refusal_while_held, unlock};

use crate::broker::mgmt::{BindingInfo, Mgmt, MgmtError};
use crate::broker::session::{BrokerError, Session};
use crate::broker::topology::{BindingChange, change_bindings};
use crate::config::Config;
use crate::ledger::{Event, EventKind, Outcome};
use crate::model::gate::GateSplit;
use crate::model::xdeath::is_version_name;
use crate::ops::{OpContext, OpError};
use crate::text::sanitize;
use crate::topology::Namespace;

/// A namespace's gate as the broker has it now.
#[derive(Debug, Clone, Serialize)]
pub struct GateView {
    /// Namespace.
    pub namespace: String,
    /// Entry exchange.
    pub entry: String,
    /// Its type (`x-consistent-hash`, `fanout`, …).
    pub entry_kind: String,
    /// Known versions → queue names.
    pub versions: BTreeMap<String, String>,
    /// The entry exchange's bindings to version queues, in the broker's order.
    pub bindings: Vec<CurrentBinding>,
    /// The effective split (first binding per queue).
    pub split: GateSplit,
    /// Problems: double bindings, non-weight keys, foreign destinations.
    pub problems: Vec<String>,
    /// Consumers per version (`None` = its queue is missing).
    pub consumers: BTreeMap<String, Option<u32>>,
    /// Ready messages per version.
    pub ready: BTreeMap<String, Option<u32>>,
    /// Ready messages in the unrouted safety net (`None` = missing).
    pub unrouted_ready: Option<u32>,
    /// Name of the unrouted queue.
    pub unrouted: String,
    /// Where the gate lives (the entry exchange, or the exchange behind it) and what it hashes.
    pub layout: Option<crate::broker::hashgate::GateLayout>,
}

impl GateView {
    /// Can the gate be flipped at all on this entry exchange? (`Err` = why not)
    pub fn flippable(&self) -> Result<(), crate::model::Invalid> {
        match self.entry_kind.as_str() {
            "x-consistent-hash" | "fanout" => Ok(()),
            other => Err(format!(
                "entry exchange `{}` is of type `{}`: hopback can only flip gates on an x-consistent-hash exchange (weighted) or a fanout exchange (one version at a time)",
                sanitize(&self.entry),
                sanitize(other)
            ).into()),
        }
    }
}

fn mgmt_failure(what: &str, e: MgmtError) -> OpError {
    if e.is_refusal() {
        return OpError::refused(
            format!("{what}: {}", sanitize(&e.to_string())),
            "the gate is read from the management API: give the user the `monitoring` tag (`rabbitmqctl set_user_tags USER monitoring`) or use a profile whose user has it",
        );
    }
    OpError::failed(
        format!("{what}: {}", sanitize(&e.to_string())),
        format!("the gate is read from the management API: {}", e.hint()),
    )
}

/// Read the gate of `ns`: entry exchange type and bindings (management API), plus exact
/// consumer/ready counts of the bound versions and of `also` (passive declares), and the unrouted
/// depth. Used by `gate show`, the console's gate panel, the rollback engine and [`apply`].
pub async fn read_gate(
    session: &Session,
    mgmt: &Mgmt,
    cfg: &Config,
    ns: &str,
    also: &[String],
) -> Result<GateView, OpError> {
    let names = Namespace::resolve(cfg, ns);
    let entry = names.entry.clone();
    // The gate may sit behind the entry exchange (after `gate hash-on`): read it where it is.
    let found = crate::broker::hashgate::read_gate_exchange(mgmt, &names)
        .await
        .map_err(|e| mgmt_failure("reading the entry exchange", e))?;
    let Some((layout, x, raw)) = found else {
        return Err(OpError::failed(
            format!(
                "namespace `{}` has no entry exchange `{}`",
                sanitize(ns),
                sanitize(&entry)
            ),
            format!(
                "create it with `hopback init {} --versions v1,v2`, or adopt it in the profile config",
                sanitize(ns)
            ),
        ));
    };
    let mut view = view_from_bindings(cfg, ns, &layout.gate, &x.kind, &raw);
    view.unrouted = names.unrouted.clone();
    view.problems.extend(layout.problems.iter().cloned());
    view.layout = Some(layout);
    let mut wanted: Vec<String> = view.bindings.iter().map(|b| b.version.clone()).collect();
    wanted.extend(also.iter().cloned());
    wanted.extend(names.known_versions().into_keys());
    wanted.sort();
    wanted.dedup();
    for v in wanted {
        // A regex adoption's queues are known from the bindings (or not at all).
        let Some(q) = names
            .version_queue(&v)
            .or_else(|| view.versions.get(&v).cloned())
        else {
            continue;
        };
        let counts = session.passive_queue(&q).await?;
        view.consumers
            .insert(v.clone(), counts.map(|c| c.consumers));
        view.ready.insert(v.clone(), counts.map(|c| c.ready));
        if counts.is_some() {
            view.versions.insert(v, q);
        }
    }
    // A version asked for that has no queue (a typo, `v9`): the refusal names the versions the
    // namespace has, so list its queues — only on this path, a flip pays no extra call.
    if also.iter().any(|v| !view.versions.contains_key(v))
        && let Some(prefix) = names.queue_prefix()
        && let Ok(queues) = mgmt.queues_with_prefix(&prefix).await
    {
        for (v, q) in names.versions_among(queues.iter().map(|q| q.name.as_str())) {
            view.versions.entry(v).or_insert(q);
        }
    }
    view.unrouted_ready = session
        .passive_queue(&names.unrouted)
        .await?
        .map(|c| c.ready);
    Ok(view)
}

/// Build the binding part of a [`GateView`] from the management API's binding list.
pub fn view_from_bindings(
    cfg: &Config,
    ns: &str,
    entry: &str,
    entry_kind: &str,
    raw: &[BindingInfo],
) -> GateView {
    let names = Namespace::resolve(cfg, ns);
    let mut view = GateView {
        namespace: ns.to_string(),
        entry: entry.to_string(),
        entry_kind: entry_kind.to_string(),
        versions: BTreeMap::new(),
        bindings: Vec::new(),
        split: GateSplit::default(),
        problems: Vec::new(),
        consumers: BTreeMap::new(),
        ready: BTreeMap::new(),
        unrouted_ready: None,
        unrouted: String::new(),
        layout: None,
    };
    let fanout = entry_kind == "fanout";
    for b in raw
        .iter()
        .filter(|b| b.source == entry && b.destination_type == "queue")
    {
        let Some(v) = names.version_of_queue(&b.destination) else {
            view.problems.push(format!(
                "the entry exchange is bound to `{}`, which is not a version queue",
                sanitize(&b.destination)
            ));
            continue;
        };
        let already = view.bindings.iter().any(|c| c.version == v);
        view.bindings.push(CurrentBinding {
            version: v.clone(),
            key: b.routing_key.clone(),
        });
        view.versions.insert(v.clone(), b.destination.clone());
        if already {
            continue;
        }
        let weight = match b.routing_key.trim().parse::<u32>() {
            Ok(w) => w,
            Err(_) if fanout => 100,
            Err(_) => {
                view.problems.push(format!(
                    "{v}: binding key `{}` is not a weight",
                    sanitize(&b.routing_key)
                ));
                continue;
            }
        };
        view.split.0.insert(v, weight);
    }
    for (v, keys) in group(&view.bindings) {
        if keys.len() > 1 {
            view.problems.push(format!(
                "{v} has {} bindings ({}): the consistent-hash exchange routes by the first only and drops the queue from the ring when any is removed, so the binding list does not show the real split — `hopback gate set` repairs it (rebinds once)",
                keys.len(),
                keys.iter().map(|k| sanitize(k).into_owned()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if fanout && view.split.bound().count() > 1 {
        view.problems.push(
            "fanout entry exchange bound to several versions: every message is copied to each of them"
                .into(),
        );
    }
    // The bound weights as the broker has them: a lone version left at its old key is shown
    // with that key and its 100 % share (`GateSplit::idle_weight`), never rewritten to 100.
    view
}

/// What to flip to, and how.
#[derive(Debug, Clone, Default)]
pub struct GateRequest {
    /// Namespace.
    pub namespace: String,
    /// The target split.
    pub target: GateSplit,
    /// Why (journaled).
    pub reason: Option<String>,
    /// Allow moving traffic onto a version with no consumers.
    pub force_zero_consumers: bool,
    /// Plan and validate only; change nothing, journal nothing.
    pub dry_run: bool,
    /// Extra parameters to journal (e.g. `{"revert_of": "<event id>"}`, `{"rollback": id}`).
    pub extra_params: serde_json::Map<String, serde_json::Value>,
    /// Compare-and-set: the split the operator saw when confirming (the dry run's `before`).
    /// If the broker's bindings, read just before acting, differ, nothing changes and the flip
    /// is refused ("the gate changed since you confirmed").
    pub expect_before: Option<GateSplit>,
}

/// How a plan's warning about the zero-consumer override starts (the console's dialog words it
/// itself, before anything is overridden).
pub const GUARD_OVERRIDDEN: &str = "zero-consumer guard overridden";

/// How long a flip waits for another operator's flip of the same gate to finish.
pub const GATE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// What [`apply`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// Namespace.
    pub namespace: String,
    /// The gate before.
    pub before: GateSplit,
    /// The target asked for.
    pub target: GateSplit,
    /// The gate read back after (equals `before` on a no-op or a dry run).
    pub after: GateSplit,
    /// The steps planned (and executed unless a dry run).
    pub steps: Vec<Step>,
    /// Did anything change on the broker?
    pub changed: bool,
    /// Was this a dry run?
    pub dry_run: bool,
    /// Were the bindings read back and found as planned?
    pub verified: bool,
    /// Warnings shown to the operator (zero-consumer override, zero-binding window).
    pub warnings: Vec<String>,
    /// The ledger event (none for no-ops and dry runs).
    pub event: Option<Event>,
    /// Wall time of plan + apply + verify (+ journal), in milliseconds.
    pub elapsed_ms: f64,
    /// A dry run of a flip that a real run would refuse (the zero-consumer guard): why. The CLI
    /// then exits as the real run would (3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_be_refused: Option<String>,
}

/// Validate `target` against the broker's gate without changing anything: returns the plan and
/// warnings, or a refusal saying why (exit 3 for the zero-consumer guard, 2 for a bad target,
/// 1 for a topology that cannot be flipped).
pub fn validate(
    view: &GateView,
    target: &GateSplit,
    force_zero_consumers: bool,
) -> Result<(Vec<Step>, Vec<String>), OpError> {
    view.flippable().map_err(|why| {
        OpError::failed(
            why,
            "flip this gate with your own tooling, or adopt an entry exchange of a supported type",
        )
    })?;
    if let Some(p) = view.layout.as_ref().and_then(|l| l.problems.first()) {
        return Err(OpError::failed(
            format!("{p}; nothing was changed"),
            "finish the change first, then flip the gate",
        ));
    }
    if target.total() == 0 {
        return Err(OpError::invalid(
            "the weights sum to 0: that would route nothing; nothing was changed",
            "give at least one version a positive weight, e.g. v1=100",
        ));
    }
    for (v, w) in target.0.iter() {
        // A version with weight 0 changes nothing, but naming one the namespace does not have is
        // a typo the operator must hear about (`v1=100 v9=0`).
        if !view.versions.contains_key(v) && (!is_version_name(v) || *w == 0) {
            return Err(OpError::invalid(
                format!("unknown version `{}`; nothing was changed", sanitize(v)),
                format!(
                    "versions of `{}`: {}",
                    sanitize(&view.namespace),
                    known_versions(view)
                ),
            ));
        }
    }
    for (v, _) in target.bound() {
        if !view.versions.contains_key(v) {
            return Err(OpError::failed(
                format!(
                    "version `{}` has no queue (`{}` does not exist); nothing was changed",
                    sanitize(v),
                    sanitize(
                        &Namespace::convention(&view.namespace)
                            .version_queue(v)
                            .unwrap_or_else(|| v.clone())
                    )
                ),
                format!(
                    "create it with `hopback init {} --versions …,{}` first; known versions: {}",
                    sanitize(&view.namespace),
                    sanitize(v),
                    known_versions(view)
                ),
            ));
        }
    }
    // Versions left out of the target get no traffic. That is what `v2=100` says; `v2=10` with
    // v1 left out would send 100 % to v2, which is never what it looks like.
    let left_out: Vec<&String> = view
        .versions
        .keys()
        .filter(|v| !target.0.contains_key(*v))
        .collect();
    if !left_out.is_empty() && target.total() != 100 {
        let listed = left_out
            .iter()
            .map(|v| sanitize(v).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(OpError::invalid(
            format!(
                "{listed} not in the target and the weights sum to {}: that would route {} — nothing was changed",
                target.total(),
                target.describe_percent()
            ),
            "give every version a weight (e.g. v1=90 v2=10), or weights that sum to 100 with the others left out (e.g. v2=100)",
        ));
    }
    if view.entry_kind == "fanout" && target.bound().count() > 1 {
        return Err(OpError::failed(
            format!(
                "entry exchange `{}` is a fanout: a canary would copy every message to each version; nothing was changed",
                sanitize(&view.entry)
            ),
            "on a fanout entry, flip to one version at a time (e.g. v2=100); canaries need x-consistent-hash",
        ));
    }
    let mut warnings = Vec::new();
    let mut empty = Vec::new();
    for (v, _) in target.bound() {
        let gains = target.percent(v) > view.split.percent(v) + 1e-9;
        if gains && view.consumers.get(v).copied().flatten() == Some(0) {
            empty.push(v.clone());
        }
    }
    if !empty.is_empty() {
        let list = empty.join(", ");
        if !force_zero_consumers {
            return Err(OpError::refused(
                format!(
                    "refusing to move traffic onto {list}: its queue has 0 consumers, so tasks would pile up unprocessed; nothing was changed"
                ),
                "start workers for it first, or pass --force-zero-consumers if that is what you want",
            ));
        }
        warnings.push(format!(
            "{GUARD_OVERRIDDEN}: {list} has no consumers; its tasks will wait in the queue"
        ));
    }
    let steps = plan_bindings(&view.bindings, target);
    if has_zero_binding_window(&view.bindings, &steps) {
        warnings.push(
            "repairing a doubly bound lone version leaves the entry exchange without bindings for a moment: messages published then go to the unrouted queue (replayable, not lost)"
                .into(),
        );
    }
    Ok((steps, warnings))
}

fn known_versions(view: &GateView) -> String {
    if view.versions.is_empty() {
        "(none found)".into()
    } else {
        view.versions.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Is the broker's gate exactly `target` (one binding per bound version, nothing else bound)?
pub fn matches_target(view: &GateView, target: &GateSplit) -> bool {
    if !view.problems.is_empty() {
        return false;
    }
    let g = group(&view.bindings);
    let bound: Vec<(&String, &u32)> = target.bound().collect();
    if g.len() != bound.len() {
        return false;
    }
    if bound.len() == 1 {
        // A lone version routes everything whatever its key.
        return g.get(bound[0].0.as_str()).is_some_and(|k| k.len() == 1);
    }
    bound.iter().all(|(v, w)| {
        g.get(v.as_str())
            .is_some_and(|k| k.len() == 1 && k[0] == w.to_string())
    })
}

fn gate_json(s: &GateSplit) -> serde_json::Value {
    serde_json::json!({ "gate": s })
}

async fn execute(session: &Session, view: &GateView, steps: &[Step]) -> Result<(), BrokerError> {
    let queue = |v: &str| {
        view.versions
            .get(v)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound(format!("no queue for {v}")))
    };
    let mut changes = Vec::with_capacity(steps.len());
    for st in steps {
        changes.push(match st {
            Step::Bind { version, weight } => BindingChange::Bind {
                queue: queue(version)?,
                key: weight.to_string(),
            },
            Step::Unbind { version, key } => BindingChange::Unbind {
                queue: queue(version)?,
                key: key.clone(),
            },
        });
    }
    change_bindings(session, &view.entry, &changes).await
}

/// Plan, apply, verify and journal a gate change. Refusals change nothing. Applying the current
/// state is a no-op that says so (`changed == false`, nothing journaled). The report is returned
/// only after the ledger confirmed the event; if the ledger fails, the error says the gate *was*
/// changed but not journaled.
pub async fn apply(cx: &OpContext, req: &GateRequest) -> Result<ApplyReport, OpError> {
    if !req.dry_run {
        cx.require_writable("flip the gate")?;
    }
    let (session, cfg) = (&*cx.session, &cx.cfg);
    let Some(mgmt) = cx.mgmt.as_ref() else {
        return Err(OpError::failed(
            "the gate is read from the management API, and its client could not be built",
            "enable rabbitmq_management or fix mgmt_url (`hopback check`)",
        ));
    };
    let started = Instant::now();
    let ns = req.namespace.as_str();
    // One flip of a gate at a time, across operators and machines: the broker-side lock is held
    // from the read the plan is made from until the outcome is journaled.
    let lock = if req.dry_run {
        None
    } else {
        Some(lock::take_gate_lock(session, mgmt, cfg, ns).await?)
    };
    let result = apply_locked(cx, mgmt, req, started).await;
    if let Some(l) = lock {
        l.release().await;
    }
    result
}

async fn apply_locked(
    cx: &OpContext,
    mgmt: &Mgmt,
    req: &GateRequest,
    started: Instant,
) -> Result<ApplyReport, OpError> {
    let (session, cfg) = (&*cx.session, &cx.cfg);
    let ns = req.namespace.as_str();
    let also: Vec<String> = req.target.0.keys().cloned().collect();
    let view = read_gate(session, mgmt, cfg, ns, &also).await?;
    if let Some(seen) = &req.expect_before
        && *seen != view.split
    {
        return Err(OpError::refused(
            format!(
                "the gate of `{}` changed since you confirmed: you saw {}, the broker now has {}; nothing changed",
                sanitize(ns),
                seen.describe(),
                view.split.describe()
            ),
            "review the new split and confirm again",
        ));
    }
    let mut would_be_refused = None;
    let (steps, warnings) = match validate(&view, &req.target, req.force_zero_consumers) {
        // A dry run shows the whole plan and says what a real run would refuse.
        Err(OpError::Refused { message, .. }) if req.dry_run => {
            let (steps, mut w) = validate(&view, &req.target, true)?;
            w.retain(|x| !x.starts_with(GUARD_OVERRIDDEN));
            w.insert(0, format!("a real run would be refused: {message}"));
            would_be_refused = Some(message);
            (steps, w)
        }
        other => other?,
    };
    let before = view.split.clone();
    let mut report = ApplyReport {
        namespace: ns.to_string(),
        before: before.clone(),
        target: req.target.clone(),
        after: before.clone(),
        steps: steps.clone(),
        changed: false,
        dry_run: req.dry_run,
        verified: false,
        warnings,
        event: None,
        elapsed_ms: 0.0,
        would_be_refused,
    };
    if steps.is_empty() {
        report.verified = matches_target(&view, &req.target);
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        return Ok(report);
    }
    if req.dry_run {
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        return Ok(report);
    }
    let mut params = serde_json::Map::new();
    params.insert("target".into(), serde_json::json!(req.target));
    params.insert(
        "steps".into(),
        serde_json::json!(steps.iter().map(Step::describe).collect::<Vec<_>>()),
    );
    if req.force_zero_consumers && !report.warnings.is_empty() {
        params.insert("forced_zero_consumers".into(), serde_json::json!(true));
    }
    for (k, v) in &req.extra_params {
        params.insert(k.clone(), v.clone());
    }
    // The intent first: a flip the timeline would not show must not happen.
    cx.journal_intent(
        cx.event(EventKind::GateSet, Some(ns))
            .params(serde_json::Value::Object(params.clone()))
            .before(gate_json(&before))
            .reason_opt(req.reason.as_deref()),
    )
    .await?;
    // A blocked connection (memory/disk alarm) shows as timeouts: name the alarm instead.
    let executed = execute(session, &view, &steps)
        .await
        .map_err(|e| session.explain(e));
    report.changed = true;
    // Read back whatever happened, success or not: the ledger records the real state.
    let back = mgmt
        .bindings_from(&view.entry)
        .await
        .map(|raw| view_from_bindings(cfg, ns, &view.entry, &view.entry_kind, &raw));
    let base = cx
        .event(EventKind::GateSet, Some(ns))
        .params(serde_json::Value::Object(params))
        .before(gate_json(&before))
        .reason_opt(req.reason.as_deref());
    let (outcome, failure) = match (&executed, &back) {
        // The broker refused the first change for want of a permission and the bindings read
        // back unchanged: a refusal (exit 3), not a half-done flip.
        (Err(e @ BrokerError::AccessRefused(_)), Ok(v)) if v.split == before => (
            Outcome::Refused,
            Some(OpError::refused(
                format!(
                    "gate flip of `{}` refused, nothing changed: {}",
                    sanitize(ns),
                    sanitize(&e.to_string())
                ),
                format!(
                    "grant the user write on the version queues and read on the entry exchange (`rabbitmqctl set_permissions -p {} {} …`), or use a profile whose user has them",
                    shlex::try_quote(&cfg.profile.vhost).unwrap_or_else(|_| "VHOST".into()),
                    shlex::try_quote(&cfg.profile.username).unwrap_or_else(|_| "USER".into())
                ),
            )),
        ),
        (Err(e), _) => (
            Outcome::Failed,
            Some(OpError::failed(
                format!(
                    "gate flip of `{}` failed part-way: {}",
                    sanitize(ns),
                    sanitize(&e.to_string())
                ),
                format!(
                    "see the real state with `hopback gate show {}` and re-run the same `gate set` (it is idempotent)",
                    sanitize(ns)
                ),
            )),
        ),
        (Ok(()), Err(e)) => (
            Outcome::VerificationFailed,
            Some(OpError::verification(
                format!(
                    "gate of `{}` changed but could not be read back: {}",
                    sanitize(ns),
                    sanitize(&e.to_string())
                ),
                format!("check it with `hopback gate show {}`", sanitize(ns)),
            )),
        ),
        (Ok(()), Ok(v)) if !matches_target(v, &req.target) => (
            Outcome::VerificationFailed,
            Some(OpError::verification(
                format!(
                    "gate of `{}` verification failed: asked for {}, the broker has {}{}",
                    sanitize(ns),
                    req.target.describe(),
                    v.split.describe(),
                    if v.problems.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", v.problems.join("; "))
                    }
                ),
                "someone may be changing the gate at the same time; check `hopback timeline` and re-run",
            )),
        ),
        _ => (Outcome::Ok, None),
    };
    if let Ok(v) = &back {
        report.after = v.split.clone();
    }
    report.verified = outcome == Outcome::Ok;
    let mut event = base.outcome(outcome);
    if let Ok(v) = &back {
        event = event.after(gate_json(&v.split));
    }
    if let Some(f) = &failure {
        event.params["error"] = serde_json::json!(f.to_string());
    }
    let done = format!(
        "gate of `{}` is now {} (verified)",
        sanitize(ns),
        report.after.describe()
    );
    let journaled = cx.journal_outcome(event, &done).await;
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    crate::ops::settle(failure, journaled, report, |r, e| r.event = Some(e))
}
