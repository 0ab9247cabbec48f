//! The gate lock (`NS.gate-lock`, see `broker::lock`): taken by every real flip, and — when
//! something else holds it for good — named and removed.
//!
//! A flip that finds the lock held looks at what holds it. A hopback flip under way is waited
//! for ([`GATE_LOCK_WAIT`]); a squatter (a queue that is not exclusive, which no hopback declares)
//! or another program's exclusive queue is refused at once, naming it and the way out:
//! [`unlock`], the operation behind `hopback gate unlock NS`. It follows the rule of every
//! operation: guard (read-only; a live hopback flip's lock, or any exclusive lock, is removed only
//! when the caller names its owner connection) → journal the intent → act (delete a squatting
//! queue over AMQP, which can never delete another connection's exclusive queue; for an
//! exclusive lock, close the owner connection the caller named) → verify (the queue is gone, or
//! a hopback flip holds it now) → journal the outcome.

use std::time::Duration;

use serde::Serialize;

use super::{GATE_LOCK_WAIT, OpContext, OpError};
use crate::broker::lock::{BrokerLock, LockError, acquire, inspect, remove_squatter};
use crate::broker::mgmt::Mgmt;
use crate::broker::session::{BrokerError, Session};
use crate::config::Config;
use crate::ledger::{Event, EventKind, Outcome};
use crate::model::gate_lock::{GateLock, LockKind};
use crate::text::sanitize;
use crate::topology::Namespace;

/// How long [`unlock`] waits for the broker to show the lock gone.
const VERIFY_WAIT: Duration = Duration::from_secs(5);

/// What holds the gate lock of `ns` now (`None`: nothing).
pub async fn lock_holder(mgmt: &Mgmt, cfg: &Config, ns: &str) -> Result<Option<GateLock>, OpError> {
    let name = Namespace::resolve(cfg, ns).gate_lock();
    inspect(mgmt, &name).await.map_err(|e| {
        OpError::failed(
            format!(
                "cannot read the gate lock `{}`: {}",
                sanitize(&name),
                sanitize(&e.to_string())
            ),
            "the lock is read from the management API (`hopback check`)",
        )
    })
}

/// The refusal of a flip while `holder` holds the gate lock: names the holder, and the way out
/// when waiting will not help.
pub fn refusal_while_held(ns: &str, holder: &GateLock) -> OpError {
    let ns = sanitize(ns);
    match holder.kind() {
        LockKind::HopbackFlip | LockKind::ExclusiveOwnerUnknown => OpError::refused(
            format!(
                "another operator is flipping the gate of `{ns}` right now: {}; nothing changed",
                holder.describe()
            ),
            format!(
                "look at `hopback timeline --namespace {ns}` and `hopback gate show {ns}`, then decide again"
            ),
        ),
        LockKind::Canary => OpError::refused(
            format!(
                "the gate of `{ns}` is driven by canary {} (started by broker user `{}`): only its own steps flip it; nothing changed",
                sanitize(&holder.canary_id().unwrap_or_else(|| "?".into())),
                sanitize(holder.owner_user.as_deref().unwrap_or("?"))
            ),
            format!(
                "see it with `hopback canary list {ns}`; pause, promote or abort it with `hopback canary pause|promote|abort {}`",
                sanitize(&holder.canary_id().unwrap_or_else(|| "ID".into()))
            ),
        ),
        LockKind::ForeignConnection | LockKind::Squatter => OpError::refused(
            format!(
                "the gate of `{ns}` cannot be flipped: its lock {}; nothing changed",
                holder.describe()
            ),
            format!("remove it with `hopback gate unlock {ns}` (asks first; journaled)"),
        ),
    }
}

fn lock_broker_error(name: &str, e: BrokerError) -> OpError {
    if e.is_refusal() {
        return OpError::refused(
            format!(
                "cannot take the gate lock `{}`, nothing changed: {}",
                sanitize(name),
                sanitize(&e.to_string())
            ),
            format!(
                "grant CONFIGURE on `{}` (the namespace's names), or use a profile whose user has it",
                sanitize(name)
            ),
        );
    }
    OpError::failed(
        format!(
            "cannot take the gate lock `{}`, nothing changed: {}",
            sanitize(name),
            sanitize(&e.to_string())
        ),
        e.hint(),
    )
}

/// Take the gate lock of `ns` for a flip. Held by a flip under way: wait for it (up to
/// [`GATE_LOCK_WAIT`]); held by anything else: refuse now, naming the holder.
pub(crate) async fn take_gate_lock(
    session: &Session,
    mgmt: &Mgmt,
    cfg: &Config,
    ns: &str,
) -> Result<BrokerLock, OpError> {
    let name = Namespace::resolve(cfg, ns).gate_lock();
    match acquire(session, &name, Duration::ZERO).await {
        Ok(l) => return Ok(l),
        Err(LockError::Held { .. }) => {}
        Err(LockError::Broker(e)) => return Err(lock_broker_error(&name, e)),
    }
    // Waiting only helps when the holder goes away by itself.
    if let Ok(Some(h)) = inspect(mgmt, &name).await
        && h.is_stuck()
    {
        return Err(refusal_while_held(ns, &h));
    }
    match acquire(session, &name, GATE_LOCK_WAIT).await {
        Ok(l) => Ok(l),
        Err(LockError::Held { name, waited }) => match inspect(mgmt, &name).await {
            Ok(Some(h)) => Err(refusal_while_held(ns, &h)),
            _ => Err(OpError::refused(
                format!(
                    "another operator is flipping the gate of `{}` right now (lock `{}` still held after {:.0} s); nothing changed",
                    sanitize(ns),
                    sanitize(&name),
                    waited.as_secs_f64()
                ),
                format!(
                    "look at `hopback timeline --namespace {}` and `hopback gate show {}`, then decide again",
                    sanitize(ns),
                    sanitize(ns)
                ),
            )),
        },
        Err(LockError::Broker(e)) => Err(lock_broker_error(&name, e)),
    }
}

/// `gate unlock`: remove what holds a namespace's gate lock.
#[derive(Debug, Clone, Default)]
pub struct UnlockRequest {
    /// Namespace.
    pub namespace: String,
    /// Why (journaled).
    pub reason: Option<String>,
    /// The owner connection (server-side name) the caller confirmed: needed to remove an
    /// exclusive lock, which means closing that connection — a live hopback flip's included.
    pub confirmed_owner: Option<String>,
}

/// What [`unlock`] did.
#[derive(Debug, Clone, Serialize)]
pub struct UnlockReport {
    /// Namespace.
    pub namespace: String,
    /// What held the lock (`None`: nothing did; nothing changed, nothing journaled).
    pub holder: Option<GateLock>,
    /// `delete_queue` or `close_owner_connection` (`None` when nothing was held).
    pub action: Option<&'static str>,
    /// Messages the deleted queue held.
    pub messages_deleted: Option<u32>,
    /// The lock as read back afterwards (`None`: free).
    pub after: Option<GateLock>,
    /// The ledger's outcome event.
    pub event: Option<Event>,
}

/// What removing `holder` takes, or why not without more from the caller.
fn action_for(holder: &GateLock, confirmed_owner: Option<&str>) -> Result<&'static str, OpError> {
    let owner = holder.owner_connection.as_deref();
    let q = sanitize(&holder.queue);
    match holder.kind() {
        LockKind::Squatter => Ok("delete_queue"),
        LockKind::ExclusiveOwnerUnknown => Err(OpError::refused(
            format!(
                "{}; not removing a lock whose owner is unknown: nothing changed",
                holder.describe()
            ),
            "the management API names an exclusive queue's owner within a few seconds: run it again",
        )),
        _ if owner.is_some() && owner == confirmed_owner => Ok("close_owner_connection"),
        LockKind::HopbackFlip => Err(OpError::refused(
            format!(
                "{} — a live flip, which frees it when it ends; nothing changed",
                holder.describe()
            ),
            format!(
                "wait for the flip; to end it anyway (closing that connection), name its owner: --owner '{}'",
                sanitize(owner.unwrap_or("?"))
            ),
        )),
        LockKind::Canary => Err(OpError::refused(
            format!("{} — a running canary; nothing changed", holder.describe()),
            format!(
                "stop it with `hopback canary abort {}`; to end it anyway (closing that connection), name its owner: --owner '{}'",
                sanitize(&holder.canary_id().unwrap_or_else(|| "ID".into())),
                sanitize(owner.unwrap_or("?"))
            ),
        )),
        LockKind::ForeignConnection => Err(OpError::refused(
            format!(
                "{}; freeing `{q}` means closing that connection: nothing changed",
                holder.describe()
            ),
            format!(
                "confirm by naming the owner: --owner '{}'",
                sanitize(owner.unwrap_or("?"))
            ),
        )),
    }
}

/// Remove what holds the gate lock of `req.namespace` (see the module doc).
pub async fn unlock(cx: &OpContext, req: &UnlockRequest) -> Result<UnlockReport, OpError> {
    cx.require_writable("unlock the gate")?;
    let Some(mgmt) = cx.mgmt.as_ref() else {
        return Err(OpError::failed(
            "the gate lock is read from the management API, and its client could not be built",
            "enable rabbitmq_management or fix mgmt_url (`hopback check`)",
        ));
    };
    let ns = req.namespace.as_str();
    let mut report = UnlockReport {
        namespace: ns.to_string(),
        holder: None,
        action: None,
        messages_deleted: None,
        after: None,
        event: None,
    };
    let Some(holder) = lock_holder(mgmt, &cx.cfg, ns).await? else {
        return Ok(report);
    };
    let action = action_for(&holder, req.confirmed_owner.as_deref())?;
    report.holder = Some(holder.clone());
    report.action = Some(action);
    let lock_json = serde_json::json!({ "lock": holder, "kind": holder.kind() });
    let params = serde_json::json!({
        "action": action,
        "confirmed_owner": req.confirmed_owner,
    });
    cx.journal_intent(
        cx.event(EventKind::GateUnlock, Some(ns))
            .params(params.clone())
            .before(lock_json.clone())
            .reason_opt(req.reason.as_deref()),
    )
    .await?;
    let acted: Result<(), OpError> = match action {
        "close_owner_connection" => {
            let owner = holder.owner_connection.clone().unwrap_or_default();
            mgmt.close_connection(
                &owner,
                "hopback gate unlock: this connection held the gate lock",
            )
            .await
            .map_err(|e| {
                OpError::failed(
                    format!(
                        "cannot close connection `{}`: {}",
                        sanitize(&owner),
                        sanitize(&e.to_string())
                    ),
                    "closing a connection needs the `administrator` tag or the connection's own user (`hopback check`)",
                )
            })
        }
        _ => match remove_squatter(&cx.session, &holder.queue).await {
            Ok(n) => {
                report.messages_deleted = Some(n);
                Ok(())
            }
            Err(e @ BrokerError::AccessRefused(_)) => Err(OpError::refused(
                format!(
                    "cannot delete `{}`: {}",
                    sanitize(&holder.queue),
                    sanitize(&e.to_string())
                ),
                "deleting the queue needs CONFIGURE on its name: use a profile whose user has it",
            )),
            Err(e) => Err(OpError::failed(
                format!(
                    "cannot delete `{}`: {}",
                    sanitize(&holder.queue),
                    sanitize(&e.to_string())
                ),
                e.hint(),
            )),
        },
    };
    // Read back whatever happened: the queue gone — or already taken by a real flip.
    let deadline = tokio::time::Instant::now() + VERIFY_WAIT;
    let after = loop {
        let now = lock_holder(mgmt, &cx.cfg, ns).await;
        let settled = match &now {
            Ok(None) => true,
            Ok(Some(h)) => h.kind() == LockKind::HopbackFlip && *h != holder,
            Err(_) => false,
        };
        if settled || acted.is_err() || tokio::time::Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (outcome, failure) = match (&acted, &after) {
        (Err(e), _) => (
            match e {
                OpError::Refused { .. } => Outcome::Refused,
                _ => Outcome::Failed,
            },
            Some(e.clone()),
        ),
        (Ok(()), Ok(None)) => (Outcome::Ok, None),
        (Ok(()), Ok(Some(h))) if h.kind() == LockKind::HopbackFlip && *h != holder => {
            (Outcome::Ok, None)
        }
        (Ok(()), Ok(Some(h))) => (
            Outcome::VerificationFailed,
            Some(OpError::verification(
                format!("the gate lock is still held: {}", h.describe()),
                format!("look again with `hopback gate unlock {}`", sanitize(ns)),
            )),
        ),
        (Ok(()), Err(e)) => (
            Outcome::VerificationFailed,
            Some(OpError::verification(
                format!("the lock was removed but could not be read back: {e}"),
                format!("check it with `hopback status {}`", sanitize(ns)),
            )),
        ),
    };
    report.after = after.ok().flatten();
    let mut event = cx
        .event(EventKind::GateUnlock, Some(ns))
        .params(params)
        .before(lock_json)
        .after(serde_json::json!({ "lock": report.after, "messages_deleted": report.messages_deleted }))
        .outcome(outcome)
        .reason_opt(req.reason.as_deref());
    if let Some(f) = &failure {
        event.params["error"] = serde_json::json!(f.to_string());
    }
    let done = format!(
        "the gate lock of `{}` was removed ({})",
        sanitize(ns),
        holder.describe()
    );
    let journaled = cx.journal_outcome(event, &done).await;
    crate::ops::settle(failure, journaled, report, |r, e| r.event = Some(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn exclusive(client: &str) -> GateLock {
        GateLock {
            queue: "email.gate-lock".into(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            owner_connection: Some("c1".into()),
            owner_user: Some("guest".into()),
            owner_client_name: Some(client.into()),
            messages: Some(0),
            consumers: Some(0),
        }
    }

    #[test]
    fn exclusive_locks_are_removed_only_when_the_owner_is_named() {
        let flip = exclusive("hopback gate (ana)");
        assert!(matches!(
            action_for(&flip, None),
            Err(OpError::Refused { .. })
        ));
        assert!(action_for(&flip, Some("c2")).is_err());
        assert_eq!(
            action_for(&flip, Some("c1")).unwrap(),
            "close_owner_connection"
        );
        let foreign = exclusive("billing");
        let err = action_for(&foreign, None).unwrap_err();
        assert!(err.hint().contains("--owner 'c1'"), "{}", err.hint());
        let unknown = GateLock {
            owner_connection: None,
            ..foreign.clone()
        };
        assert!(action_for(&unknown, Some("c1")).is_err());
        let squat = GateLock {
            durable: true,
            exclusive: false,
            auto_delete: false,
            owner_connection: None,
            ..foreign
        };
        assert_eq!(action_for(&squat, None).unwrap(), "delete_queue");
    }
}
