//! Reaching a running canary from another process: `canary pause|resume|promote|abort ID`.
//! The request is an operation of its own — guard (read-only) → journal the intent (the
//! requester's verified author) → send it over the canary's control queue → the canary's answer
//! → journal the outcome. The canary journals what it did with it under its own user, naming who
//! asked (the `user_id` the broker verified on the request).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::broker::control::{ControlAnswer, request};
use crate::broker::session::{BrokerError, Session};
use crate::config::Config;
use crate::ledger::{EventKind, Outcome};
use crate::ops::{OpContext, OpError};
use crate::text::sanitize;
use crate::topology::Namespace;

pub use crate::model::canary::ControlCommand;

/// How long a requester waits for the canary's answer (it answers between two readings).
pub const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// The body of a request (`{"command": "pause"}`), as the canary reads it.
pub(super) fn parse_request(body: &[u8]) -> Result<ControlCommand, String> {
    #[derive(serde::Deserialize)]
    struct Body {
        command: ControlCommand,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.command)
        .map_err(|e| format!("refused: not a control request ({e})"))
}

/// Is canary `id` of `ns` running now? Its control queue exists exactly while its process does
/// (exclusive to it: another connection's passive declare is refused as locked).
pub async fn is_running(
    session: &Session,
    cfg: &Config,
    ns: &str,
    id: &str,
) -> Result<bool, OpError> {
    let q = Namespace::resolve(cfg, ns).canary_control(id);
    match session.passive_queue(&q).await {
        Ok(Some(_)) | Err(BrokerError::Locked(_)) => Ok(true),
        Ok(None) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What [`control`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ControlReport {
    /// Canary id.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// What was asked.
    pub command: ControlCommand,
    /// Did the canary apply it?
    pub applied: bool,
    /// The canary's answer.
    pub message: String,
}

/// Ask canary `id` (of `ns`, or the namespace the ledger names) to pause, resume, promote or
/// abort. A canary that is not running is an error that says where it left the gate.
pub async fn control(
    cx: &OpContext,
    id: &str,
    command: ControlCommand,
    ns: Option<&str>,
) -> Result<ControlReport, OpError> {
    cx.require_writable(&format!("{} a canary", command.as_str()))?;
    let (ns, state) = match ns {
        Some(n) => (n.to_string(), None),
        None => {
            let st = super::find(&cx.ledger, id).await?;
            (st.namespace.clone(), Some(st))
        }
    };
    let params = json!({"canary_id": id, "command": command.as_str()});
    cx.journal_intent(
        cx.event(EventKind::CanaryControl, Some(&ns))
            .params(params.clone()),
    )
    .await?;
    let queue = Namespace::resolve(&cx.cfg, &ns).canary_control(id);
    let body = serde_json::to_vec(&json!({"command": command, "operator": cx.cfg.operator}))
        .unwrap_or_default();
    let sent = request(&cx.session, &queue, &body, ANSWER_WAIT).await;
    let (outcome, result): (Outcome, Result<ControlReport, OpError>) = match sent {
        Ok(ControlAnswer::Answered(a)) => {
            let v: serde_json::Value = serde_json::from_slice(&a).unwrap_or_default();
            let applied = v.get("ok").and_then(|o| o.as_bool()).unwrap_or(false);
            let message =
                sanitize(v.get("message").and_then(|m| m.as_str()).unwrap_or("?")).into_owned();
            let report = ControlReport {
                id: id.to_string(),
                namespace: ns.clone(),
                command,
                applied,
                message: message.clone(),
            };
            if applied {
                (Outcome::Ok, Ok(report))
            } else {
                (
                    Outcome::Refused,
                    Err(OpError::refused(
                        format!(
                            "canary {} did not {}: {message}",
                            sanitize(id),
                            command.as_str()
                        ),
                        format!("see it with `hopback canary list {}`", sanitize(&ns)),
                    )),
                )
            }
        }
        Ok(ControlAnswer::NoOwner) => {
            let left = match &state {
                Some(st) => match &st.finished {
                    Some((o, _)) => format!("it finished ({o})"),
                    None => format!(
                        "its process is gone; it left the gate at {}",
                        st.gate
                            .as_ref()
                            .map_or_else(|| "?".into(), |g| g.describe())
                    ),
                },
                None => "its process is gone".into(),
            };
            (
                Outcome::Failed,
                Err(OpError::failed(
                    format!("canary {} is not running: {left}", sanitize(id)),
                    format!(
                        "resume it with `hopback canary --resume {}` (or see `hopback canary list`)",
                        sanitize(id)
                    ),
                )),
            )
        }
        Ok(ControlAnswer::NoAnswer) => (
            Outcome::Failed,
            Err(OpError::failed(
                format!(
                    "canary {} took the request but did not answer within {} s",
                    sanitize(id),
                    ANSWER_WAIT.as_secs()
                ),
                "it answers between two readings of its metrics: look at `hopback timeline` for its decision",
            )),
        ),
        Err(e) => (
            Outcome::Failed,
            Err(OpError::failed(
                format!(
                    "cannot reach canary {}: {}",
                    sanitize(id),
                    sanitize(&e.to_string())
                ),
                e.hint(),
            )),
        ),
    };
    let mut ev = cx
        .event(EventKind::CanaryControl, Some(&ns))
        .params(params)
        .outcome(outcome);
    match &result {
        Ok(r) => ev = ev.reason(r.message.clone()),
        Err(e) => ev = ev.reason(e.to_string()),
    }
    let done = format!("canary {} was asked to {}", sanitize(id), command.as_str());
    let journaled = cx.journal_outcome(ev, &done).await;
    let report = result?;
    journaled?;
    Ok(report)
}
