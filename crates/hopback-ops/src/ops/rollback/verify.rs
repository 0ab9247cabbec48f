//! The rollback's verification step (error rate through the tap's primitive, unrouted empty)
//! and the dry run that shows a plan's steps without changing anything.

use super::*;

// ───────────────────────────── verify ─────────────────────────────

pub(super) async fn ack_total(m: &Mgmt, queue: &str) -> Option<u64> {
    m.queue(queue)
        .await
        .ok()
        .flatten()
        .and_then(|q| q.message_stats.map(|s| s.ack))
}

/// Count dead letters of `version` arriving at the namespace's DLX for `window`: the tap's own
/// primitive ([`crate::broker::tap::count_window`]).
pub(super) async fn tap_dead_letters(
    env: &Env,
    version: &str,
    window: Duration,
) -> Result<u64, BrokerError> {
    let names = env.names();
    let target = crate::broker::tap::TapTarget {
        ns: names.name.clone(),
        dlx: names.dlx.clone(),
        queues: [(env.queue(version), version.to_string())]
            .into_iter()
            .collect(),
    };
    crate::broker::tap::count_window(&env.session, &target, version, window).await
}

pub(super) async fn step_verify(
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
            StepKind::Confirm { .. } => "asks the operator (Roll back / Abort)".into(),
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
                    Err(e) => e.to_string(),
                }
            }
            StepKind::Drain { from, .. } => match env.ready(&env.queue(from)).await {
                Ok(n) => format!("would move {n} ready message(s)"),
                Err(e) => e.to_string(),
            },
            StepKind::DlqReplay { origin, .. } => match count_dead_letters(env, origin).await {
                Ok((m, d)) => format!("{m} dead letter(s) from {origin} ({d} in the DLQ)"),
                Err(e) => e.to_string(),
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
                    Err(e) => e.to_string(),
                },
                _ => match version {
                    Some(v) => match env.ready(&env.queue(v)).await {
                        Ok(n) => format!("{} has {n} ready now", env.queue(v)),
                        Err(e) => e.to_string(),
                    },
                    None => String::new(),
                },
            },
        };
        out.push(DryRunLine {
            number: i + 1,
            title: s.title.clone(),
            description: s.kind.describe(&env.names()),
            live,
        });
    }
    out
}
