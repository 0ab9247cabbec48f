//! The rollback's broker-facing steps other than dead letters and verification
//! (docs/architecture.md, "Operations"): the gate flip (through `ops::gate::apply`), waiting
//! for consumers, draining a version queue with the mover, evicting workers.

use super::*;

// ───────────────────────────── gate ─────────────────────────────

/// Current gate of the namespace and its problems (needs the management API).
pub async fn read_gate(env: &Env, m: &Mgmt) -> Result<(GateSplit, Vec<String>), OpError> {
    gate::read_gate(&env.session, m, &env.cfg, &env.ns, &[])
        .await
        .map(|v| (v.split, v.problems))
}

pub(super) async fn step_gate(c: &StepCtx<'_>, target: &GateSplit) -> StepResult {
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
        expect_before: None,
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

pub(super) async fn step_wait_consumers(c: &StepCtx<'_>, version: &str, min: u32) -> StepResult {
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
            .ask(
                DecisionKind::Timeout,
                format!(
                    "{} still has fewer than {min} consumer(s) after {}. Keep waiting?",
                    crate::text::sanitize(&q),
                    humantime::format_duration(patience)
                ),
                vec![],
            )
            .await;
        if let Some(r) = from_decision(d) {
            return r;
        }
    }
}

// ───────────────────────────── drain (move) ─────────────────────────────

pub(super) async fn step_drain(
    c: &StepCtx<'_>,
    from: &str,
    to: &str,
    limit: Option<u64>,
) -> StepResult {
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
    let unreadable = if r.counts.quarantined + r.counts.unreadable_left > 0 {
        format!(
            "; {} unreadable message(s) never republished: {} quarantined in {}, {} left in place",
            r.counts.quarantined + r.counts.unreadable_left,
            r.counts.quarantined,
            crate::text::sanitize(&env.names().quarantine_queue()),
            r.counts.unreadable_left
        )
    } else {
        String::new()
    };
    StepResult::done(
        format!(
            "moved {} message(s) {} → {}; {left} ready left (in flight at workers: not moved){unreadable}",
            r.counts.moved,
            crate::text::sanitize(&src),
            crate::text::sanitize(&dst)
        ),
        json!({"moved": r.counts.moved, "possible_duplicates": r.counts.possible_duplicates, "left_ready": left,
               "quarantined": r.counts.quarantined, "unreadable_left": r.counts.unreadable_left,
               "unreadable": r.unreadable}),
    )
}

/// Run the mover, forwarding its progress to the operator.
pub(super) async fn run_mover(
    c: &StepCtx<'_>,
    spec: &mover::MoveSpec,
    total: Option<u64>,
) -> mover::MoveReport {
    let control = mover::MoveControl::new();
    let mut rx = control.subscribe();
    let profile = c.env.session.profile().clone();
    let operator = c.env.cfg.operator.clone();
    // Large messages: a smaller prefetch, as for any client-engine move.
    let mut spec = spec.clone();
    let source = spec.source_queue.clone();
    crate::ops::replay::size_prefetch(
        c.env.mgmt.as_ref(),
        &source,
        total.unwrap_or(1),
        std::slice::from_mut(&mut spec),
    )
    .await;
    let fut = mover::run(&profile, &operator, &spec, &control);
    tokio::pin!(fut);
    let stop = super::stop_requested(c.operator.stop_signal());
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = &mut fut => return r,
            () = &mut stop, if !stopping => {
                // The operator's `x`: the mover stops after the messages it holds are confirmed.
                stopping = true;
                control.stop();
            }
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

// ───────────────────────────── evict ─────────────────────────────

/// The client-provided connection name of a version's workers (what an eviction closes).
pub(super) fn worker_connection_name(ns: &str, version: &str) -> String {
    format!("{ns} worker {version}")
}

pub(super) async fn step_evict(c: &StepCtx<'_>, version: &str) -> StepResult {
    let env = c.env;
    let Some(m) = &env.mgmt else {
        return StepResult::failed("evicting workers needs the management API");
    };
    let want = worker_connection_name(&env.ns, version);
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
        .ask(
            DecisionKind::Destructive,
            format!(
                "Close {} connection(s) named `{}`? Their unacked messages go back to the queue.",
                targets.len(),
                crate::text::sanitize(&want)
            ),
            vec![],
        )
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
