//! Before a resume skips a step the journal says is done, the broker is asked whether that
//! step's effect still holds: a journal is a record of the past, and someone may have undone the
//! step since (flipped the gate back, published to the drained queue). A gate step is re-checked
//! by reading the bindings, a drain by its source's depth, a dead-letter step by counting its
//! origin's dead letters, an eviction by listing the connections, a wait by the consumer count.
//! Anything that cannot be read back fails closed: the step runs again (every step checks first
//! whether its work is done, so running it again is safe).

use super::*;

/// What the broker says about a step the journal calls done.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Recheck {
    /// The effect holds now (what was read).
    Holds(String),
    /// It does not hold (or cannot be read): the step runs again (why).
    Gone(String),
    /// The step leaves nothing to read back (a note, a question, a pause, a measurement, a
    /// limited drain, dead letters kept on purpose): the starter's journal is taken for it.
    Journal(&'static str),
}

/// Does the effect of `step` (which the journal says completed, recording `data`) hold now?
pub(super) async fn effect_holds(env: &Env, step: &Step, data: &serde_json::Value) -> Recheck {
    match &step.kind {
        StepKind::Gate { weights } => gate_holds(env, &GateSplit(weights.clone())).await,
        StepKind::WaitConsumers { version, min } => {
            let q = env.queue(version);
            match env.consumers(&q).await {
                Ok(n) if n >= u64::from(*min) => {
                    Recheck::Holds(format!("{} has {n} consumer(s)", crate::text::sanitize(&q)))
                }
                Ok(n) => Recheck::Gone(format!(
                    "{} has {n} consumer(s) now",
                    crate::text::sanitize(&q)
                )),
                Err(e) => Recheck::Gone(format!("its consumers cannot be counted ({e})")),
            }
        }
        StepKind::Drain {
            from, limit: None, ..
        } => {
            let q = env.queue(from);
            match env.ready(&q).await {
                Ok(0) => Recheck::Holds(format!(
                    "{} has no ready messages",
                    crate::text::sanitize(&q)
                )),
                Ok(n) => Recheck::Gone(format!(
                    "{} has {n} ready message(s)",
                    crate::text::sanitize(&q)
                )),
                Err(e) => Recheck::Gone(format!("its source cannot be read ({e})")),
            }
        }
        StepKind::Drain { limit: Some(_), .. } => {
            Recheck::Journal("a limited drain leaves the rest in its source on purpose")
        }
        StepKind::DlqReplay { action, .. }
            if *action == DlqChoice::Keep || data.get("kept").is_some() =>
        {
            Recheck::Journal("its dead letters were kept on purpose")
        }
        StepKind::DlqReplay { origin, .. } => match count_dead_letters(env, origin).await {
            Ok((0, _)) => Recheck::Holds(format!("no dead letters from {origin}")),
            Ok((n, _)) => Recheck::Gone(format!("{n} dead letter(s) from {origin} are in the DLQ")),
            Err(e) => Recheck::Gone(format!("the DLQ cannot be counted ({e})")),
        },
        StepKind::EvictConsumers { version } => evicted(env, version).await,
        StepKind::Verify { .. } => Recheck::Journal("a measurement, not a change"),
        StepKind::Note { .. } => Recheck::Journal("a note"),
        StepKind::Confirm { .. } => Recheck::Journal("a question the starter answered"),
        StepKind::Sleep { .. } => Recheck::Journal("a pause"),
    }
}

async fn gate_holds(env: &Env, target: &GateSplit) -> Recheck {
    let Some(m) = &env.mgmt else {
        return Recheck::Gone("the bindings cannot be read (no management API)".into());
    };
    match gate::read_gate(&env.session, m, &env.cfg, &env.ns, &[]).await {
        Ok(v) if gate::matches_target(&v, target) => {
            Recheck::Holds(format!("the gate is {}", v.split.describe()))
        }
        Ok(v) => Recheck::Gone(format!(
            "the gate is {}, not {}",
            v.split.describe(),
            target.describe()
        )),
        Err(e) => Recheck::Gone(format!("the gate cannot be read ({e})")),
    }
}

async fn evicted(env: &Env, version: &str) -> Recheck {
    let Some(m) = &env.mgmt else {
        return Recheck::Gone("the connections cannot be listed (no management API)".into());
    };
    let want = worker_connection_name(&env.ns, version);
    match m.connections().await {
        Ok(conns) => {
            let n = conns
                .iter()
                .filter(|c| c.user_provided_name.as_deref() == Some(want.as_str()))
                .count();
            if n == 0 {
                Recheck::Holds(format!(
                    "no connection named `{}`",
                    crate::text::sanitize(&want)
                ))
            } else {
                Recheck::Gone(format!(
                    "{n} connection(s) named `{}` are open",
                    crate::text::sanitize(&want)
                ))
            }
        }
        Err(e) => Recheck::Gone(format!("the connections cannot be listed ({e})")),
    }
}
