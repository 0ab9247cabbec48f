//! The migrate operation: move a quorum namespace built by an earlier hopback to the cluster-safe
//! convention (issue 19, item 4; docs/architecture.md, "Topology") without losing a dead letter.
//!
//! Guard (read-only; the management API must tell queue types — unknown fails closed; the
//! namespace must exist) → plan (what differs: a classic DLQ or unrouted queue, quorum version
//! queues dead-lettering at most once) → journal the intent → act → verify (the management API
//! reads the namespace again: nothing left to migrate) → journal the outcome with the counts.
//!
//! A classic store queue `Q` (the DLQ or the unrouted queue) cannot change type in place, so it is
//! rebuilt through a quorum holding queue `Q.migrating`:
//! 1. declare `Q.migrating` (quorum) and give it `Q`'s bindings, then unbind `Q` — new dead
//!    letters now land in the holding queue (one arriving between the bind and the unbind lands in
//!    both: a possible duplicate, never a loss);
//! 2. drain `Q → Q.migrating` with the mover (confirm, then ack), delete `Q` only if empty;
//! 3. declare `Q` again as a quorum queue, bind it, unbind the holding queue, drain it back into
//!    `Q`, delete it only if empty.
//!
//! Every step is idempotent and each run starts from what it finds, so a migrate that is killed
//! half-way is finished by running it again. Version queues cannot change their arguments in
//! place either: they get at-least-once dead lettering from a policy (`hopback.NS.at-least-once`)
//! when no other policy applies to them; a queue with a policy of its own is left alone and named.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{OpContext, OpError};
use crate::broker::mgmt::{BindingInfo, QueueInfo};
use crate::broker::mover::{self, MoveControl, MoveSpec, StopReason};
use crate::broker::topology::{self, BindingChange, DiscoveredNamespace};
use crate::ledger::{EventKind, Outcome};
use crate::text::sanitize;

/// What `migrate` will do (the dry run) and, after it ran, what it did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MigratePlan {
    /// Namespace.
    pub namespace: String,
    /// Store queues (DLQ, unrouted) to rebuild as quorum queues, with their depth when planned.
    pub rebuild: Vec<(String, Option<u64>)>,
    /// Holding queues a killed earlier run left behind (finished first).
    pub resume: Vec<String>,
    /// Version queues that get at-least-once dead lettering through the policy.
    pub policy_for: Vec<String>,
    /// The policy's name.
    pub policy_name: String,
    /// Version queues left alone (they have a policy of their own), with that policy's advice.
    pub left_alone: Vec<String>,
}

impl MigratePlan {
    /// Is there nothing to do?
    pub fn is_empty(&self) -> bool {
        self.rebuild.is_empty() && self.resume.is_empty() && self.policy_for.is_empty()
    }
}

/// What a migrate did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MigrateReport {
    /// What it set out to do.
    pub plan: MigratePlan,
    /// Dead letters that ended in the rebuilt queues (each went through the holding queue).
    pub moved: u64,
    /// Messages the mover counted as possible duplicates (an ack that did not go out).
    pub possible_duplicates: u64,
    /// What still differs after the run (empty: done).
    pub still_legacy: Vec<String>,
}

/// The holding queue of a store queue being rebuilt.
pub fn holding_queue(queue: &str) -> String {
    format!("{queue}.migrating")
}

/// The policy `migrate` sets on a namespace's version queues.
pub fn policy_name(ns: &str) -> String {
    format!("hopback.{ns}.at-least-once")
}

/// Read what the management API says of `ns` (refusing when it cannot say).
async fn read(cx: &OpContext, ns: &str) -> Result<(DiscoveredNamespace, Vec<QueueInfo>), OpError> {
    let Some(m) = cx.mgmt.as_ref() else {
        return Err(OpError::refused(
            "migrate needs the management API to know each queue's type, and none is configured",
            "set mgmt_url in the profile (`hopback check`)",
        ));
    };
    let unknown = |e: crate::broker::mgmt::MgmtError| {
        OpError::refused(
            format!(
                "the queue types are unknown, so nothing was changed: {}",
                sanitize(&e.to_string())
            ),
            "`hopback check` says why the management API cannot be read",
        )
    };
    let queues = m.queues().await.map_err(unknown)?;
    let exchanges = m.exchanges().await.map_err(unknown)?;
    let found = topology::discover(&queues, &exchanges, &cx.cfg.profile)
        .into_iter()
        .find(|d| d.name == ns)
        .ok_or_else(|| {
            OpError::invalid(
                format!("namespace `{}` not found on this broker", sanitize(ns)),
                "`hopback status` lists the namespaces",
            )
        })?;
    Ok((found, queues))
}

/// The plan: what differs from the cluster-safe convention (nothing is changed).
pub async fn plan(cx: &OpContext, ns: &str) -> Result<MigratePlan, OpError> {
    let (d, queues) = read(cx, ns).await?;
    let find = |name: &str| queues.iter().find(|q| q.name == name);
    let mut plan = MigratePlan {
        namespace: ns.to_string(),
        policy_name: policy_name(ns),
        ..Default::default()
    };
    let quorum_versions: Vec<&QueueInfo> = d
        .versions
        .values()
        .filter_map(|q| find(q))
        .filter(|q| q.kind == "quorum")
        .collect();
    for store in [&d.names.dlq, &d.names.unrouted] {
        if find(&holding_queue(store)).is_some() {
            plan.resume.push(store.clone());
        } else if !quorum_versions.is_empty() && find(store).is_some_and(|q| q.kind == "classic") {
            let depth = match cx.session.passive_queue(store).await {
                Ok(Some(c)) => Some(u64::from(c.ready)),
                _ => find(store).and_then(|q| q.messages),
            };
            plan.rebuild.push((store.clone(), depth));
        }
    }
    for q in quorum_versions {
        if topology::dead_letters_at_least_once(q) {
            continue;
        }
        let own_policy = q
            .effective_policy_definition
            .as_ref()
            .and_then(|d| d.as_object())
            .is_some_and(|d| !d.is_empty());
        if own_policy {
            plan.left_alone.push(q.name.clone());
        } else {
            plan.policy_for.push(q.name.clone());
        }
    }
    Ok(plan)
}

/// Guard, plan, journal the intent, migrate, verify, journal the outcome.
pub async fn run(cx: &OpContext, ns: &str) -> Result<MigrateReport, OpError> {
    cx.require_writable("migrate a namespace")?;
    let plan = plan(cx, ns).await?;
    let mut report = MigrateReport {
        plan: plan.clone(),
        ..Default::default()
    };
    if plan.is_empty() {
        return Ok(report);
    }
    let base = cx
        .event(EventKind::Migrate, Some(ns))
        .params(serde_json::to_value(&plan).unwrap_or_default());
    cx.journal_intent(base.clone()).await?;
    let acted = act(cx, ns, &plan, &mut report).await;
    // Verify: read the namespace again (a new policy shows in the management API with the next
    // stats emission: ~5 s measured on 3.10).
    if acted.is_ok() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            report.still_legacy = still_legacy(cx, ns, &plan).await?;
            if report.still_legacy.is_empty() || std::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    let after = serde_json::json!({
        "moved": report.moved,
        "possible_duplicates": report.possible_duplicates,
        "still_legacy": report.still_legacy,
    });
    let outcome = match &acted {
        Ok(()) if report.still_legacy.is_empty() => base.after(after).outcome(Outcome::Ok),
        Ok(()) => base
            .after(after)
            .outcome(Outcome::Failed)
            .reason("verification: the namespace still differs from the convention"),
        Err(e) => base
            .after(after)
            .outcome(Outcome::Failed)
            .reason(e.one_line()),
    };
    cx.journal_outcome(
        outcome,
        &format!("migrated, {} dead letter(s) moved", report.moved),
    )
    .await?;
    acted?;
    if !report.still_legacy.is_empty() {
        return Err(OpError::verification(
            format!(
                "after the migrate `{}` still differs: {}",
                sanitize(ns),
                sanitize(&report.still_legacy.join("; "))
            ),
            "run `hopback migrate NS` again: every step resumes from what it finds",
        ));
    }
    Ok(report)
}

/// What still differs from the convention (version queues left alone on purpose do not count).
async fn still_legacy(
    cx: &OpContext,
    ns: &str,
    plan: &MigratePlan,
) -> Result<Vec<String>, OpError> {
    let (d, queues) = read(cx, ns).await?;
    let mut out = topology::legacy_parts(&d, &queues);
    out.retain(|p| plan.left_alone.is_empty() || !p.contains("at most once"));
    for store in [&d.names.dlq, &d.names.unrouted] {
        if queues.iter().any(|q| q.name == holding_queue(store)) {
            out.push(format!(
                "holding queue `{}` still there",
                holding_queue(store)
            ));
        }
    }
    Ok(out)
}

async fn act(
    cx: &OpContext,
    ns: &str,
    plan: &MigratePlan,
    report: &mut MigrateReport,
) -> Result<(), OpError> {
    let stores: BTreeSet<&String> = plan
        .resume
        .iter()
        .chain(plan.rebuild.iter().map(|(q, _)| q))
        .collect();
    for store in stores {
        rebuild_store(cx, ns, store, report).await?;
    }
    if !plan.policy_for.is_empty() {
        set_policy(cx, plan).await?;
    }
    Ok(())
}

fn failed(what: &str, e: impl std::fmt::Display) -> OpError {
    OpError::failed(
        format!("migrate: {what} failed: {}", sanitize(&e.to_string())),
        "nothing was lost; run `hopback migrate NS` again to finish from where it stopped",
    )
}

/// The bindings of `queue` (exchange and key), without the default exchange's implicit one.
async fn bindings_of(cx: &OpContext, queue: &str) -> Result<Vec<BindingInfo>, OpError> {
    let Some(m) = cx.mgmt.as_ref() else {
        return Ok(Vec::new());
    };
    let all = m
        .bindings()
        .await
        .map_err(|e| failed("reading the bindings", e))?;
    Ok(all
        .into_iter()
        .filter(|b| b.destination == queue && b.destination_type == "queue" && !b.source.is_empty())
        .collect())
}

async fn rebind(
    cx: &OpContext,
    bindings: &[BindingInfo],
    queue: &str,
    bind: bool,
) -> Result<(), OpError> {
    for b in bindings {
        let change = if bind {
            BindingChange::Bind {
                queue: queue.to_string(),
                key: b.routing_key.clone(),
            }
        } else {
            BindingChange::Unbind {
                queue: queue.to_string(),
                key: b.routing_key.clone(),
            }
        };
        topology::change_bindings(&cx.session, &b.source, &[change])
            .await
            .map_err(|e| failed("changing a binding", e))?;
    }
    Ok(())
}

async fn drain(cx: &OpContext, ns: &str, from: &str, to: &str) -> Result<(u64, u64), OpError> {
    let names = crate::topology::Namespace::resolve(&cx.cfg, ns);
    let mut spec = MoveSpec::drain(&names, from, to);
    spec.connection_purpose = "migrate".into();
    let profile = cx.session.profile().clone();
    let r = mover::run(&profile, &cx.cfg.operator, &spec, &MoveControl::new()).await;
    match r.stop {
        StopReason::Failed(why) => Err(failed(&format!("moving {from} → {to}"), why)),
        _ => Ok((r.counts.moved, r.counts.possible_duplicates)),
    }
}

/// Rebuild one store queue as a quorum queue through its holding queue (module doc, steps 1–3).
async fn rebuild_store(
    cx: &OpContext,
    ns: &str,
    store: &str,
    report: &mut MigrateReport,
) -> Result<(), OpError> {
    let hold = holding_queue(store);
    let s = &cx.session;
    let store_exists = s
        .passive_queue(store)
        .await
        .map_err(|e| failed("looking up the queue", e))?
        .is_some();
    // The bindings to keep: the store's while it still has any, else the holding queue's
    // (a run killed after step 1).
    let mut bindings = bindings_of(cx, store).await?;
    if bindings.is_empty() {
        bindings = bindings_of(cx, &hold).await?;
    }
    if bindings.is_empty() {
        return Err(OpError::refused(
            format!(
                "`{}` and `{}` have no bindings, so the dead letters' route is unknown; nothing was changed",
                sanitize(store),
                sanitize(&hold)
            ),
            "bind the queue to its dead-letter exchange again, then run migrate",
        ));
    }
    // Step 1: the holding queue takes over the route.
    topology::declare_store_queue(s, &hold)
        .await
        .map_err(|e| failed("declaring the holding queue", e))?;
    rebind(cx, &bindings, &hold, true).await?;
    let store_is_classic = store_exists
        && matches!(
            crate::broker::stats::queue_kind(cx.mgmt.as_ref(), store).await,
            crate::broker::stats::QueueKind::Classic
        );
    if store_is_classic {
        rebind(cx, &bindings, store, false).await?;
        // Step 2: empty the classic queue into the holding queue, then remove it.
        let (_, dups) = drain(cx, ns, store, &hold).await?;
        report.possible_duplicates += dups;
        topology::delete_if_empty(s, store, false)
            .await
            .map_err(|e| failed("deleting the emptied classic queue", e))?;
    }
    // Step 3: the quorum queue under the old name takes the route back.
    topology::declare_store_queue(s, store)
        .await
        .map_err(|e| failed("declaring the quorum queue", e))?;
    rebind(cx, &bindings, store, true).await?;
    rebind(cx, &bindings, &hold, false).await?;
    // Drain until the holding queue reads empty (a redelivery can land after the mover's idle
    // end), then remove it.
    for _ in 0..3 {
        let (moved, dups) = drain(cx, ns, &hold, store).await?;
        report.moved += moved;
        report.possible_duplicates += dups;
        let left = s
            .passive_queue(&hold)
            .await
            .map_err(|e| failed("counting the holding queue", e))?
            .map_or(0, |c| c.ready);
        if left == 0 {
            break;
        }
    }
    topology::delete_if_empty(s, &hold, true)
        .await
        .map_err(|e| failed("deleting the emptied holding queue", e))?;
    Ok(())
}

/// At-least-once dead lettering for version queues without a policy of their own.
async fn set_policy(cx: &OpContext, plan: &MigratePlan) -> Result<(), OpError> {
    let Some(m) = cx.mgmt.as_ref() else {
        return Ok(());
    };
    let pattern = format!(
        "^(?:{})$",
        plan.policy_for
            .iter()
            .map(|q| regex::escape(q))
            .collect::<Vec<_>>()
            .join("|")
    );
    m.put_policy(
        &plan.policy_name,
        serde_json::json!({
            "pattern": pattern,
            "apply-to": "queues",
            "priority": 0,
            "definition": {
                "dead-letter-strategy": "at-least-once",
                "overflow": "reject-publish",
            },
        }),
    )
    .await
    .map_err(|e| failed("setting the at-least-once policy", e))
}
