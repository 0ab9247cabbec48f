//! Change what a namespace's gate hashes (`hopback gate hash-on NS FIELD`), losing no task.
//!
//! An exchange's arguments cannot change in place, and the entry exchange producers publish to
//! must never disappear (a publish to a missing exchange fails, and a producer without confirms
//! never knows). So the entry stays; the gate moves (`broker::hashgate`): the new gate is built
//! on an exchange behind the entry that hashes the new field, bound to the same version queues
//! with the same weights; the entry is bound to it; then the entry's old routes are removed one
//! at a time. At every moment the entry has at least one binding and every binding leads to a
//! version queue (or on through the alternate exchange to the unrouted queue), so a task
//! published during the change goes to a version queue — by the old hash or the new one.
//! Changing back to what the entry itself hashes puts the gate back on the entry.
//!
//! One operation (docs/architecture.md, "One rule over every operation"): guard (read-only,
//! management API, a consistent-hash entry, a readable gate) → the gate lock → plan from what
//! the broker has (so a second run finishes an interrupted one) → journal the intent → act →
//! read the layout and the weights back → journal the outcome.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::broker::hashgate::{self, FORWARD_WEIGHT, GateLayout};
use crate::broker::mgmt::{BindingInfo, Mgmt, MgmtError};
use crate::broker::session::BrokerError;
use crate::broker::topology::{BindingChange, change_bindings};
use crate::ledger::{Event, EventKind, Outcome};
use crate::model::gate::GateSplit;
use crate::model::hash::HashOn;
use crate::ops::{OpContext, OpError};
use crate::text::sanitize;
use crate::topology::Namespace;

/// What to hash from now on.
#[derive(Debug, Clone)]
pub struct HashOnRequest {
    /// Namespace.
    pub namespace: String,
    /// The field.
    pub hash_on: HashOn,
    /// Why (journaled).
    pub reason: Option<String>,
    /// Plan only: change nothing, journal nothing.
    pub dry_run: bool,
}

/// One step of a change, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum HashStep {
    /// Remove a leftover gate exchange the entry does not route to (it carries nothing).
    DropIdle {
        /// The exchange.
        exchange: String,
    },
    /// Declare the new gate exchange.
    Declare {
        /// The exchange.
        exchange: String,
        /// What it hashes.
        hash_on: String,
    },
    /// Bind a version queue to the new gate with its weight.
    Bind {
        /// Gate exchange.
        exchange: String,
        /// Version.
        version: String,
        /// Its queue.
        queue: String,
        /// Weight.
        weight: u32,
    },
    /// Remove a binding of a version queue (a stale key on the new gate, or the entry's direct
    /// binding once the new gate takes the traffic).
    Unbind {
        /// Source exchange.
        exchange: String,
        /// Version.
        version: String,
        /// Its queue.
        queue: String,
        /// Binding key.
        key: String,
    },
    /// Route the entry to the new gate.
    Forward {
        /// The entry exchange.
        from: String,
        /// The gate exchange.
        to: String,
    },
    /// Stop routing the entry to an old gate.
    StopForward {
        /// The entry exchange.
        from: String,
        /// The old gate exchange.
        to: String,
    },
    /// Delete the old gate exchange (nothing routes to it any more).
    Delete {
        /// The exchange.
        exchange: String,
    },
}

impl HashStep {
    /// One line for the plan.
    pub fn describe(&self) -> String {
        let s = |x: &str| sanitize(x).into_owned();
        match self {
            HashStep::DropIdle { exchange } => {
                format!("delete the idle leftover `{}`", s(exchange))
            }
            HashStep::Declare { exchange, hash_on } => {
                format!("declare `{}` hashing {}", s(exchange), s(hash_on))
            }
            HashStep::Bind {
                exchange,
                version,
                weight,
                ..
            } => format!("bind {} weight {weight} to `{}`", s(version), s(exchange)),
            HashStep::Unbind {
                exchange,
                version,
                key,
                ..
            } => format!(
                "unbind {} (key {}) from `{}`",
                s(version),
                s(key),
                s(exchange)
            ),
            HashStep::Forward { from, to } => format!("route `{}` through `{}`", s(from), s(to)),
            HashStep::StopForward { from, to } => {
                format!("stop routing `{}` through `{}`", s(from), s(to))
            }
            HashStep::Delete { exchange } => format!("delete `{}`", s(exchange)),
        }
    }
}

/// What a change did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct HashOnReport {
    /// Namespace.
    pub namespace: String,
    /// What the gate hashed before.
    pub before: String,
    /// What it hashes now (equals `before` on a dry run or a no-op).
    pub after: String,
    /// The exchange that held the gate before.
    pub gate_before: String,
    /// The exchange that holds it now.
    pub gate_after: String,
    /// The weights, the same before and after.
    pub split: GateSplit,
    /// The steps planned (and run unless a dry run).
    pub steps: Vec<HashStep>,
    /// Did anything change on the broker?
    pub changed: bool,
    /// Dry run?
    pub dry_run: bool,
    /// Read back and found as planned?
    pub verified: bool,
    /// The outcome's ledger event.
    pub event: Option<Event>,
    /// Milliseconds from the first read to the outcome.
    pub elapsed_ms: f64,
}

/// What the plan starts from: the layout, the weights, and the gate exchanges behind the entry.
#[derive(Debug, Clone)]
pub struct Current {
    /// Where the gate is.
    pub layout: GateLayout,
    /// What the entry exchange itself hashes.
    pub entry_hash: Result<HashOn, String>,
    /// Version → queue.
    pub versions: BTreeMap<String, String>,
    /// The gate's weights.
    pub split: GateSplit,
    /// The entry exchange's bindings.
    pub entry_bindings: Vec<BindingInfo>,
    /// Each gate exchange behind the entry that exists: (name, what it hashes, its bindings).
    pub behind: Vec<(String, Result<HashOn, String>, Vec<BindingInfo>)>,
}

fn mgmt_failed(e: MgmtError) -> OpError {
    OpError::failed(
        format!("cannot read the gate: {}", sanitize(&e.to_string())),
        "the gate is read from the management API: `hopback check`",
    )
}

/// Read what the plan needs.
pub async fn current(cx: &OpContext, mgmt: &Mgmt, names: &Namespace) -> Result<Current, OpError> {
    let view = crate::ops::gate::read_gate(&cx.session, mgmt, &cx.cfg, &names.name, &[]).await?;
    let layout = view.layout.clone().ok_or_else(|| {
        OpError::failed(
            format!(
                "namespace `{}` has no entry exchange",
                sanitize(&names.name)
            ),
            "create it with `hopback init NS --versions v1,v2`",
        )
    })?;
    let entry = mgmt
        .exchange(&names.entry)
        .await
        .map_err(mgmt_failed)?
        .ok_or_else(|| {
            OpError::failed("the entry exchange disappeared", "read `gate show` again")
        })?;
    if entry.kind != "x-consistent-hash" {
        return Err(OpError::failed(
            format!(
                "entry exchange `{}` is of type `{}`: only an x-consistent-hash exchange hashes anything; nothing was changed",
                sanitize(&names.entry),
                sanitize(&entry.kind)
            ),
            "a fanout entry sends every task to the one bound version; adopt a consistent-hash entry for canaries",
        ));
    }
    let entry_bindings = mgmt
        .bindings_from(&names.entry)
        .await
        .map_err(mgmt_failed)?;
    let mut behind = Vec::new();
    for g in names.hash_gates() {
        if let Some(x) = mgmt.exchange(&g).await.map_err(mgmt_failed)? {
            let b = mgmt.bindings_from(&g).await.map_err(mgmt_failed)?;
            behind.push((g, HashOn::from_arguments(&x.arguments), b));
        }
    }
    // In an unfinished change the layout reads the entry's direct bindings as the gate; when it
    // has none, the weights are those of the gate exchange the entry routes to.
    let mut split = view.split.clone();
    let mut versions = view.versions.clone();
    if split.total() == 0
        && let Some((_, _, b)) = behind
            .iter()
            .find(|(g, _, _)| layout.also_routes_to.contains(g))
    {
        let (s, _) = crate::broker::stats::gate_from_bindings(
            &b.first().map(|x| x.source.clone()).unwrap_or_default(),
            &names.versions_among(b.iter().map(|x| x.destination.as_str())),
            b,
        );
        split = s;
        versions.extend(names.versions_among(b.iter().map(|x| x.destination.as_str())));
    }
    Ok(Current {
        layout,
        entry_hash: HashOn::from_arguments(&entry.arguments),
        versions,
        split,
        entry_bindings,
        behind,
    })
}

/// Plan the change from `cur` to hashing `want` (empty: nothing to do). Pure.
pub fn plan(names: &Namespace, cur: &Current, want: &HashOn) -> Result<Vec<HashStep>, OpError> {
    let entry = names.entry.as_str();
    let forwards: Vec<&str> = cur
        .entry_bindings
        .iter()
        .filter(|b| b.destination_type == "exchange" && names.is_hash_gate(&b.destination))
        .map(|b| b.destination.as_str())
        .collect();
    let hash_of = |g: &str| {
        cur.behind
            .iter()
            .find(|(n, _, _)| n == g)
            .map(|(_, h, _)| h)
    };
    // Where the gate goes: the entry itself when it hashes `want`; else a gate exchange behind
    // it that already does and is routed to (an interrupted change), else one not in use.
    let target: String = if cur.entry_hash.as_ref() == Ok(want) {
        entry.to_string()
    } else if let Some(g) = forwards
        .iter()
        .find(|g| hash_of(g).is_some_and(|h| h.as_ref() == Ok(want)))
    {
        g.to_string()
    } else {
        names
            .hash_gates()
            .into_iter()
            .find(|g| !forwards.contains(&g.as_str()))
            .ok_or_else(|| {
                OpError::failed(
                    "the entry exchange routes through both gate exchanges; nothing was changed",
                    "finish by hand: keep the one that hashes what you want, unbind the other",
                )
            })?
    };
    if cur.split.bound().count() == 0 {
        return Err(OpError::failed(
            "the gate binds no version, so there are no weights to carry over; nothing was changed",
            "set the gate first (`hopback gate set NS v1=100`)",
        ));
    }
    let mut steps = Vec::new();
    let queue = |v: &str| {
        cur.versions.get(v).cloned().ok_or_else(|| {
            OpError::failed(
                format!("version `{}` has no queue", sanitize(v)),
                "read `hopback gate show NS`",
            )
        })
    };
    // The target's current bindings to version queues.
    let target_bindings: Vec<&BindingInfo> = if target == entry {
        cur.entry_bindings
            .iter()
            .filter(|b| b.destination_type == "queue")
            .collect()
    } else {
        cur.behind
            .iter()
            .find(|(n, _, _)| *n == target)
            .map(|(_, _, b)| b.iter().filter(|b| b.destination_type == "queue").collect())
            .unwrap_or_default()
    };
    if target != entry {
        let exists = cur.behind.iter().find(|(n, _, _)| *n == target);
        if let Some((_, h, _)) = exists
            && h.as_ref() != Ok(want)
        {
            // Not routed to (checked above), so it carries nothing: rebuild it.
            steps.push(HashStep::DropIdle {
                exchange: target.clone(),
            });
        }
    }
    let rebuilt = steps.iter().any(|s| matches!(s, HashStep::DropIdle { .. }));
    if target != entry && (rebuilt || !cur.behind.iter().any(|(n, _, _)| *n == target)) {
        steps.push(HashStep::Declare {
            exchange: target.clone(),
            hash_on: want.to_string(),
        });
    }
    let lone = cur.split.bound().count() == 1;
    for (v, w) in cur.split.bound() {
        let q = queue(v)?;
        let keys: Vec<&str> = if rebuilt {
            Vec::new()
        } else {
            target_bindings
                .iter()
                .filter(|b| b.destination == q)
                .map(|b| b.routing_key.as_str())
                .collect()
        };
        let right = keys.len() == 1 && (lone || keys[0] == w.to_string());
        if right {
            continue;
        }
        for k in keys {
            steps.push(HashStep::Unbind {
                exchange: target.clone(),
                version: v.clone(),
                queue: q.clone(),
                key: k.to_string(),
            });
        }
        steps.push(HashStep::Bind {
            exchange: target.clone(),
            version: v.clone(),
            queue: q.clone(),
            weight: *w,
        });
    }
    if target != entry && !forwards.contains(&target.as_str()) {
        steps.push(HashStep::Forward {
            from: entry.to_string(),
            to: target.clone(),
        });
    }
    if target != entry {
        // Smallest weight first: while the old routes go, the canary's direct share shrinks
        // instead of growing.
        let mut direct: Vec<&BindingInfo> = cur
            .entry_bindings
            .iter()
            .filter(|b| b.destination_type == "queue")
            .collect();
        direct.sort_by_key(|b| b.routing_key.trim().parse::<u64>().unwrap_or(u64::MAX));
        for b in direct {
            steps.push(HashStep::Unbind {
                exchange: entry.to_string(),
                version: names
                    .version_of_queue(&b.destination)
                    .unwrap_or_else(|| b.destination.clone()),
                queue: b.destination.clone(),
                key: b.routing_key.clone(),
            });
        }
    }
    for g in forwards.iter().filter(|g| **g != target) {
        steps.push(HashStep::StopForward {
            from: entry.to_string(),
            to: g.to_string(),
        });
    }
    for (g, _, _) in cur.behind.iter().filter(|(g, _, _)| *g != target) {
        steps.push(HashStep::Delete {
            exchange: g.clone(),
        });
    }
    Ok(steps)
}

async fn execute(cx: &OpContext, names: &Namespace, steps: &[HashStep]) -> Result<(), BrokerError> {
    let s = &*cx.session;
    for st in steps {
        match st {
            HashStep::DropIdle { exchange } | HashStep::Delete { exchange } => {
                hashgate::delete_exchange(s, exchange).await?;
            }
            HashStep::Declare { exchange, hash_on } => {
                let h: HashOn = hash_on
                    .parse()
                    .map_err(|e: crate::model::Invalid| BrokerError::Other(e.to_string()))?;
                hashgate::declare_gate(s, exchange, &h, &names.unrouted).await?;
            }
            HashStep::Bind {
                exchange,
                queue,
                weight,
                ..
            } => {
                let change = BindingChange::Bind {
                    queue: queue.clone(),
                    key: weight.to_string(),
                };
                change_bindings(s, exchange, &[change]).await?;
            }
            HashStep::Unbind {
                exchange,
                queue,
                key,
                ..
            } => {
                let change = BindingChange::Unbind {
                    queue: queue.clone(),
                    key: key.clone(),
                };
                change_bindings(s, exchange, &[change]).await?;
            }
            HashStep::Forward { from, to } => {
                hashgate::exchange_binding(s, to, from, FORWARD_WEIGHT, true).await?;
            }
            HashStep::StopForward { from, to } => {
                for key in forward_keys(cx, from, to).await {
                    hashgate::exchange_binding(s, to, from, &key, false).await?;
                }
            }
        }
    }
    Ok(())
}

/// The keys of the entry's bindings to `to` (normally just [`FORWARD_WEIGHT`]).
async fn forward_keys(cx: &OpContext, from: &str, to: &str) -> Vec<String> {
    let listed = match &cx.mgmt {
        Some(m) => m.bindings_from(from).await.ok(),
        None => None,
    };
    match listed {
        Some(b) => b
            .into_iter()
            .filter(|b| b.destination == to && b.destination_type == "exchange")
            .map(|b| b.routing_key)
            .collect(),
        None => vec![FORWARD_WEIGHT.to_string()],
    }
}

/// Plan, apply, verify and journal a change of what the gate hashes.
pub async fn change(cx: &OpContext, req: &HashOnRequest) -> Result<HashOnReport, OpError> {
    if !req.dry_run {
        cx.require_writable("change what the gate hashes")?;
    }
    let Some(mgmt) = cx.mgmt.as_ref() else {
        return Err(OpError::failed(
            "the gate is read from the management API, and its client could not be built",
            "enable rabbitmq_management or fix mgmt_url (`hopback check`)",
        ));
    };
    let started = Instant::now();
    let names = Namespace::resolve(&cx.cfg, &req.namespace);
    let lock = if req.dry_run {
        None
    } else {
        Some(crate::ops::gate::take_gate_lock(&cx.session, mgmt, &cx.cfg, &req.namespace).await?)
    };
    let result = change_locked(cx, mgmt, &names, req, started).await;
    if let Some(l) = lock {
        l.release().await;
    }
    result
}

async fn change_locked(
    cx: &OpContext,
    mgmt: &Mgmt,
    names: &Namespace,
    req: &HashOnRequest,
    started: Instant,
) -> Result<HashOnReport, OpError> {
    let ns = req.namespace.as_str();
    let cur = current(cx, mgmt, names).await?;
    let steps = plan(names, &cur, &req.hash_on)?;
    let mut report = HashOnReport {
        namespace: ns.to_string(),
        before: cur.layout.hash_text(),
        after: cur.layout.hash_text(),
        gate_before: cur.layout.gate.clone(),
        gate_after: cur.layout.gate.clone(),
        split: cur.split.clone(),
        steps: steps.clone(),
        changed: false,
        dry_run: req.dry_run,
        verified: steps.is_empty(),
        event: None,
        elapsed_ms: 0.0,
    };
    if steps.is_empty() || req.dry_run {
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        return Ok(report);
    }
    let params = serde_json::json!({
        "hash_on": req.hash_on.to_string(),
        "steps": steps.iter().map(HashStep::describe).collect::<Vec<_>>(),
        "gate": cur.split,
    });
    let before = serde_json::json!({"hash_on": report.before, "gate_exchange": report.gate_before});
    cx.journal_intent(
        cx.event(EventKind::GateHash, Some(ns))
            .params(params.clone())
            .before(before.clone())
            .reason_opt(req.reason.as_deref()),
    )
    .await?;
    let executed = execute(cx, names, &steps)
        .await
        .map_err(|e| cx.session.explain(e));
    report.changed = true;
    let back = current(cx, mgmt, names).await;
    let want = req.hash_on.to_string();
    let (outcome, failure) = match (&executed, &back) {
        (Err(e), _) => (
            Outcome::Failed,
            Some(OpError::failed(
                format!(
                    "changing what the gate of `{}` hashes stopped part-way: {}; every task still reaches a version queue (or the unrouted queue)",
                    sanitize(ns),
                    sanitize(&e.to_string())
                ),
                format!(
                    "re-run `hopback gate hash-on {} {}`: it continues from what the broker has",
                    sanitize(ns),
                    sanitize(&want)
                ),
            )),
        ),
        (Ok(()), Err(e)) => (
            Outcome::VerificationFailed,
            Some(OpError::verification(
                format!("the gate changed but could not be read back: {e}"),
                format!("check it with `hopback gate show {}`", sanitize(ns)),
            )),
        ),
        (Ok(()), Ok(b))
            if b.layout.hash_text() != want
                || !b.layout.problems.is_empty()
                || !b.split.same_routing(&cur.split)
                || (b.layout.behind() && b.entry_bindings.len() != 1) =>
        {
            (
                Outcome::VerificationFailed,
                Some(OpError::verification(
                    format!(
                        "the gate of `{}` should hash {} with weights {}; the broker has it hashing {} with {}{}",
                        sanitize(ns),
                        sanitize(&want),
                        cur.split.describe(),
                        sanitize(&b.layout.hash_text()),
                        b.split.describe(),
                        b.layout
                            .problems
                            .first()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default()
                    ),
                    "someone may be changing the gate at the same time; check `hopback timeline` and re-run",
                )),
            )
        }
        _ => (Outcome::Ok, None),
    };
    if let Ok(b) = &back {
        report.after = b.layout.hash_text();
        report.gate_after = b.layout.gate.clone();
    }
    report.verified = outcome == Outcome::Ok;
    let mut event = cx
        .event(EventKind::GateHash, Some(ns))
        .params(params)
        .before(before)
        .after(serde_json::json!({"hash_on": report.after, "gate_exchange": report.gate_after}))
        .reason_opt(req.reason.as_deref())
        .outcome(outcome);
    if let Some(f) = &failure {
        event.params["error"] = serde_json::json!(f.to_string());
    }
    let done = format!(
        "the gate of `{}` now hashes {}",
        sanitize(ns),
        sanitize(&report.after)
    );
    let journaled = cx.journal_outcome(event, &done).await;
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    crate::ops::settle(failure, journaled, report, |r, e| r.event = Some(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b(src: &str, dst: &str, kind: &str, key: &str) -> BindingInfo {
        BindingInfo {
            source: src.into(),
            destination: dst.into(),
            destination_type: kind.into(),
            routing_key: key.into(),
        }
    }

    fn direct() -> (Namespace, Current) {
        let n = Namespace::convention("email");
        let entry_bindings = vec![
            b("email", "email.v1", "queue", "90"),
            b("email", "email.v2", "queue", "10"),
        ];
        let cur = Current {
            layout: GateLayout {
                entry: "email".into(),
                gate: "email".into(),
                gate_kind: "x-consistent-hash".into(),
                hash_on: Ok(HashOn::MessageId),
                also_routes_to: vec![],
                problems: vec![],
            },
            entry_hash: Ok(HashOn::MessageId),
            versions: [
                ("v1".to_string(), "email.v1".to_string()),
                ("v2".to_string(), "email.v2".to_string()),
            ]
            .into(),
            split: GateSplit::from_pairs([("v1".into(), 90), ("v2".into(), 10)]),
            entry_bindings,
            behind: vec![],
        };
        (n, cur)
    }

    #[test]
    fn moving_the_gate_builds_it_behind_then_switches_the_entry_over() {
        let (n, cur) = direct();
        let steps = plan(&n, &cur, &HashOn::CorrelationId).unwrap();
        let lines: Vec<String> = steps.iter().map(HashStep::describe).collect();
        assert_eq!(
            lines,
            vec![
                "declare `email.gate-a` hashing correlation_id",
                "bind v1 weight 90 to `email.gate-a`",
                "bind v2 weight 10 to `email.gate-a`",
                "route `email` through `email.gate-a`",
                "unbind v2 (key 10) from `email`",
                "unbind v1 (key 90) from `email`",
            ]
        );
        assert!(plan(&n, &cur, &HashOn::MessageId).unwrap().is_empty());
    }

    #[test]
    fn moving_again_uses_the_other_exchange_and_back_home_drops_both() {
        let (n, mut cur) = direct();
        cur.entry_bindings = vec![b("email", "email.gate-a", "exchange", "1")];
        cur.layout.gate = "email.gate-a".into();
        cur.layout.hash_on = Ok(HashOn::CorrelationId);
        cur.behind = vec![(
            "email.gate-a".into(),
            Ok(HashOn::CorrelationId),
            vec![
                b("email.gate-a", "email.v1", "queue", "90"),
                b("email.gate-a", "email.v2", "queue", "10"),
            ],
        )];
        let to_header = plan(&n, &cur, &HashOn::Header("id".into())).unwrap();
        assert_eq!(
            to_header.first(),
            Some(&HashStep::Declare {
                exchange: "email.gate-b".into(),
                hash_on: "header:id".into()
            })
        );
        assert_eq!(
            to_header.last(),
            Some(&HashStep::Delete {
                exchange: "email.gate-a".into()
            })
        );
        let home: Vec<String> = plan(&n, &cur, &HashOn::MessageId)
            .unwrap()
            .iter()
            .map(HashStep::describe)
            .collect();
        assert_eq!(
            home,
            vec![
                "bind v1 weight 90 to `email`",
                "bind v2 weight 10 to `email`",
                "stop routing `email` through `email.gate-a`",
                "delete `email.gate-a`",
            ]
        );
    }

    #[test]
    fn an_interrupted_change_is_finished_not_restarted() {
        let (n, mut cur) = direct();
        // Killed after the entry was routed through gate-a, before the direct bindings went.
        cur.entry_bindings
            .push(b("email", "email.gate-a", "exchange", "1"));
        cur.layout.also_routes_to = vec!["email.gate-a".into()];
        cur.behind = vec![(
            "email.gate-a".into(),
            Ok(HashOn::CorrelationId),
            vec![
                b("email.gate-a", "email.v1", "queue", "90"),
                b("email.gate-a", "email.v2", "queue", "10"),
            ],
        )];
        let lines: Vec<String> = plan(&n, &cur, &HashOn::CorrelationId)
            .unwrap()
            .iter()
            .map(HashStep::describe)
            .collect();
        assert_eq!(
            lines,
            vec![
                "unbind v2 (key 10) from `email`",
                "unbind v1 (key 90) from `email`",
            ]
        );
    }
}
