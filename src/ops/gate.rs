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
use std::time::Instant;

use serde::Serialize;

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

/// One binding of the entry exchange to a version queue, as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentBinding {
    /// Version.
    pub version: String,
    /// Binding key (the weight, as text).
    pub key: String,
}

/// One step of a flip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Bind the version's queue to the entry exchange with this weight.
    Bind {
        /// Version.
        version: String,
        /// Weight (binding key).
        weight: u32,
    },
    /// Remove one binding of the version's queue (identified by its key).
    Unbind {
        /// Version.
        version: String,
        /// The binding key to remove.
        key: String,
    },
}

impl Step {
    /// `bind v2 weight 10` / `unbind v1 (key 100)`.
    pub fn describe(&self) -> String {
        match self {
            Step::Bind { version, weight } => format!("bind {version} weight {weight}"),
            Step::Unbind { version, key } => {
                format!("unbind {version} (key {})", sanitize(key))
            }
        }
    }
}

fn group(current: &[CurrentBinding]) -> BTreeMap<&str, Vec<&str>> {
    let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in current {
        m.entry(b.version.as_str())
            .or_default()
            .push(b.key.as_str());
    }
    m
}

/// The bindings a clean gate `split` consists of (one per bound version).
pub fn bindings_of(split: &GateSplit) -> Vec<CurrentBinding> {
    split
        .bound()
        .map(|(v, w)| CurrentBinding {
            version: v.clone(),
            key: w.to_string(),
        })
        .collect()
}

/// Plan a flip from a clean gate to `target` (see [`plan_bindings`]).
pub fn plan(current: &GateSplit, target: &GateSplit) -> Vec<Step> {
    plan_bindings(&bindings_of(current), target)
}

/// Plan a flip from the broker's actual bindings (possibly doubled) to `target`:
/// newcomers bound first, then each re-weighted version unbound completely and bound once (while
/// the others keep routing), then removed versions unbound. Empty = nothing to do. A lone bound
/// version with one binding already routes everything, whatever its weight, so it is left alone.
///
/// Flipping *to* a single version that is already bound once (the rollback "back to v1") only
/// unbinds the leaving versions: the survivor's old key does not matter once it is alone, and
/// re-weighting it first would leave the leaving (failing) version as the only route for the
/// moment between the unbind and the rebind.
pub fn plan_bindings(current: &[CurrentBinding], target: &GateSplit) -> Vec<Step> {
    let cur = group(current);
    let tgt: Vec<(&String, &u32)> = target.bound().collect();
    let mut steps = Vec::new();
    if tgt.len() == 1
        && let Some(keys) = cur.get(tgt[0].0.as_str())
        && keys.len() == 1
    {
        for (v, keys) in &cur {
            if *v != tgt[0].0.as_str() {
                for k in keys {
                    steps.push(Step::Unbind {
                        version: (*v).to_string(),
                        key: (*k).to_string(),
                    });
                }
            }
        }
        return steps;
    }
    for (v, w) in &tgt {
        if !cur.contains_key(v.as_str()) {
            steps.push(Step::Bind {
                version: (*v).clone(),
                weight: **w,
            });
        }
    }
    for (v, w) in &tgt {
        let Some(keys) = cur.get(v.as_str()) else {
            continue;
        };
        let want = w.to_string();
        if keys.len() == 1 && keys[0] == want {
            continue;
        }
        for k in keys {
            steps.push(Step::Unbind {
                version: (*v).clone(),
                key: (*k).to_string(),
            });
        }
        steps.push(Step::Bind {
            version: (*v).clone(),
            weight: **w,
        });
    }
    for (v, keys) in &cur {
        if target.weight(v) == 0 {
            for k in keys {
                steps.push(Step::Unbind {
                    version: (*v).to_string(),
                    key: (*k).to_string(),
                });
            }
        }
    }
    steps
}

/// Does executing `steps` from `current` ever leave the exchange with no routing queue?
/// (Only possible when a lone, doubly bound version must be repaired.) Modelled on 3.10.8's
/// consistent-hash exchange: a queue joins the ring with its first binding and leaves it at the
/// first unbind, whatever bindings remain.
pub fn has_zero_binding_window(current: &[CurrentBinding], steps: &[Step]) -> bool {
    // version → (keys, on the ring)
    let mut state: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for b in current {
        let e = state
            .entry(b.version.clone())
            .or_insert_with(|| (Vec::new(), true));
        e.0.push(b.key.clone());
    }
    let routing = |s: &BTreeMap<String, (Vec<String>, bool)>| s.values().filter(|e| e.1).count();
    let had = routing(&state) > 0;
    for st in steps {
        match st {
            Step::Bind { version, weight } => {
                let e = state
                    .entry(version.clone())
                    .or_insert_with(|| (Vec::new(), true));
                e.0.push(weight.to_string());
            }
            Step::Unbind { version, key } => {
                if let Some(e) = state.get_mut(version) {
                    if let Some(i) = e.0.iter().position(|k| k == key) {
                        e.0.remove(i);
                    }
                    e.1 = false;
                    if e.0.is_empty() {
                        state.remove(version);
                    }
                }
            }
        }
        if had && routing(&state) == 0 {
            return true;
        }
    }
    false
}

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
    if let MgmtError::Unauthorized { .. } = e {
        return OpError::refused(
            format!("{what}: {}", sanitize(&e.to_string())),
            "the gate is read from the management API: give the user the `monitoring` tag (`rabbitmqctl set_user_tags USER monitoring`) or use a profile whose user has it",
        );
    }
    OpError::failed(
        format!("{what}: {}", sanitize(&e.to_string())),
        "the gate is read from the management API: enable rabbitmq_management or fix mgmt_url (`hopback check`)",
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
    let (x, b) = tokio::join!(mgmt.exchange(&entry), mgmt.bindings_from(&entry));
    let Some(x) = x.map_err(|e| mgmt_failure("reading the entry exchange", e))? else {
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
    let raw = b.map_err(|e| mgmt_failure("reading the gate's bindings", e))?;
    let mut view = view_from_bindings(cfg, ns, &entry, &x.kind, &raw);
    view.unrouted = names.unrouted.clone();
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
    if view.problems.is_empty() {
        view.split = std::mem::take(&mut view.split).normalised();
    }
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
}

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
            "zero-consumer guard overridden: {list} has no consumers; its tasks will wait in the queue"
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
    let also: Vec<String> = req.target.0.keys().cloned().collect();
    let view = read_gate(session, mgmt, cfg, ns, &also).await?;
    let (steps, warnings) = match validate(&view, &req.target, req.force_zero_consumers) {
        // A dry run shows the whole plan and says what a real run would refuse.
        Err(OpError::Refused { message, .. }) if req.dry_run => {
            let (steps, mut w) = validate(&view, &req.target, true)?;
            w.retain(|x| !x.starts_with("zero-consumer guard overridden"));
            w.insert(0, format!("a real run would be refused: {message}"));
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
                "grant the user write on the version queues and read on the entry exchange (`rabbitmqctl set_permissions`), or use a profile whose user has them",
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
    match (failure, journaled) {
        (Some(f), _) => Err(f),
        (None, Ok(e)) => {
            report.event = Some(e);
            Ok(report)
        }
        (None, Err(j)) => Err(j),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u32)]) -> GateSplit {
        GateSplit::from_pairs(pairs.iter().map(|(v, w)| (v.to_string(), *w)))
    }
    fn cb(v: &str, k: &str) -> CurrentBinding {
        CurrentBinding {
            version: v.into(),
            key: k.into(),
        }
    }

    /// Apply steps to a binding list like the broker would.
    fn run(current: &[CurrentBinding], steps: &[Step]) -> Vec<CurrentBinding> {
        let mut s: Vec<CurrentBinding> = current.to_vec();
        for st in steps {
            match st {
                Step::Bind { version, weight } => s.push(cb(version, &weight.to_string())),
                Step::Unbind { version, key } => {
                    if let Some(i) = s
                        .iter()
                        .position(|b| &b.version == version && &b.key == key)
                    {
                        s.remove(i);
                    }
                }
            }
        }
        s
    }

    #[test]
    fn canary_and_back() {
        let p = plan(&split(&[("v1", 100)]), &split(&[("v1", 90), ("v2", 10)]));
        assert_eq!(
            p,
            vec![
                Step::Bind {
                    version: "v2".into(),
                    weight: 10
                },
                Step::Unbind {
                    version: "v1".into(),
                    key: "100".into()
                },
                Step::Bind {
                    version: "v1".into(),
                    weight: 90
                },
            ]
        );
        // Back to v1: only v2 is unbound; v1 (alone, any key) never leaves the ring.
        let back = plan(&split(&[("v1", 90), ("v2", 10)]), &split(&[("v1", 100)]));
        assert_eq!(
            back,
            vec![Step::Unbind {
                version: "v2".into(),
                key: "10".into()
            }]
        );
        let back3 = plan(
            &split(&[("v1", 50), ("v2", 25), ("v3", 25)]),
            &split(&[("v1", 100)]),
        );
        assert_eq!(back3.len(), 2);
        assert!(
            back3
                .iter()
                .all(|s| matches!(s, Step::Unbind { version, .. } if version != "v1"))
        );
        assert!(plan(&split(&[("v1", 100)]), &split(&[("v1", 100)])).is_empty());
        assert!(plan(&split(&[("v1", 100)]), &split(&[("v1", 5), ("v2", 0)])).is_empty());
    }

    #[test]
    fn repairs_double_bindings() {
        let cur = vec![cb("v1", "10"), cb("v1", "90"), cb("v2", "50")];
        let steps = plan_bindings(&cur, &split(&[("v1", 50), ("v2", 50)]));
        let end = run(&cur, &steps);
        assert_eq!(end.iter().filter(|b| b.version == "v1").count(), 1);
        assert!(!has_zero_binding_window(&cur, &steps));
        // A lone doubly bound version: the repair must pass through zero, and says so.
        let lone = vec![cb("v1", "10"), cb("v1", "90")];
        let steps = plan_bindings(&lone, &split(&[("v1", 100)]));
        assert!(has_zero_binding_window(&lone, &steps));
        assert_eq!(run(&lone, &steps), vec![cb("v1", "100")]);
    }

    #[test]
    fn random_plans_never_zero_and_reach_target() {
        use rand::Rng;
        let mut rng = rand::rng();
        let versions = ["v1", "v2", "v3"];
        for _ in 0..5000 {
            let mut cur = Vec::new();
            for v in versions {
                if rng.random_bool(0.5) {
                    cur.push(cb(v, &rng.random_range(1..=100u32).to_string()));
                }
            }
            let mut target = GateSplit::default();
            for v in versions {
                if rng.random_bool(0.5) {
                    target.0.insert(v.to_string(), rng.random_range(0..=100u32));
                }
            }
            if target.total() == 0 {
                continue;
            }
            let steps = plan_bindings(&cur, &target);
            assert!(
                !has_zero_binding_window(&cur, &steps),
                "{cur:?} → {target:?}: {steps:?}"
            );
            let end = run(&cur, &steps);
            let got = group(&end);
            assert!(got.values().all(|k| k.len() == 1), "{end:?}");
            let bound: Vec<_> = target.bound().collect();
            assert_eq!(got.len(), bound.len(), "{cur:?} → {target:?}: {end:?}");
            if bound.len() > 1 {
                for (v, w) in bound {
                    assert_eq!(got[v.as_str()], vec![w.to_string().as_str()]);
                }
            }
        }
    }
}
