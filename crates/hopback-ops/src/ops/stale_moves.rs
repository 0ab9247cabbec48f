//! Broker-engine moves left behind (docs/architecture.md, "A broker-engine move left behind"): a
//! dynamic shovel outlives the hopback that declared it when that process is killed, and keeps
//! waiting for its count — taking the next dead letters with no ledger record of them if
//! anything else consumed from its source. The next hopback that sees such a shovel (`check`,
//! `status`, every replay's plan, the console's refresh) removes it here, one operation per
//! shovel: guard (read-only: shown, not removed) → journal the intent → remove the shovel and the
//! move's own exchange (`broker::shovel::remove_left_behind`) → verify it is gone → journal the
//! outcome. Whether a move is left behind is the broker primitive's call
//! (`broker::shovel::stale_moves`: its deadline, its owner's connection); a shovel whose owner
//! cannot be known is shown, never removed on a guess.

use serde::Serialize;

use super::OpContext;
use crate::broker::mgmt::Mgmt;
use crate::broker::shovel::{FoundMove, Verdict};
use crate::config::Config;
use crate::ledger::{EventKind, Outcome};
use crate::text::sanitize;
use crate::topology::Namespace;

/// What became of one broker-engine shovel found in the vhost.
#[derive(Debug, Clone, Serialize)]
pub struct SweptMove {
    /// The shovel.
    pub shovel: String,
    /// The namespace it moves out of (the profile's adoption whose entry exchange it names,
    /// else the entry exchange's name).
    pub namespace: String,
    /// Why it is live, stale or unknown (terminal-safe).
    pub why: String,
    /// What was done.
    pub action: SweepAction,
}

/// What was done with a shovel found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum SweepAction {
    /// Its move is watched: left alone.
    Running,
    /// Left behind: removed, journaled.
    Removed,
    /// Left behind, not removed: the profile is read-only.
    ReadOnly,
    /// Whether it is left behind is unknown: shown, not removed.
    Unknown,
    /// Left behind, and removing it failed (the reason; terminal-safe).
    Failed(String),
}

impl SweptMove {
    /// The command that removes it by hand, for a hint (vhost and name quoted for a shell).
    pub fn manual_removal(&self, vhost: &str) -> String {
        let q = |s: &str| shlex::try_quote(s).map_or_else(|_| "NAME".into(), |c| c.into_owned());
        format!(
            "rabbitmqctl clear_parameter -p {} shovel {}",
            q(vhost),
            q(&self.shovel)
        )
    }
}

/// The namespace whose entry exchange is `entry`: an adoption of the profile that names it, else
/// the convention's (the entry exchange is the namespace's name).
fn namespace_of(cfg: &Config, entry: &str) -> String {
    cfg.profile
        .namespaces
        .keys()
        .find(|ns| Namespace::resolve(cfg, ns).entry == entry)
        .cloned()
        .unwrap_or_else(|| entry.to_string())
}

/// The broker-engine shovels of the vhost (of `scope` only, when given) and their verdicts. Ask
/// this first: [`sweep`] needs an [`OpContext`] (a ledger) only when something is to be removed.
pub async fn find(mgmt: &Mgmt, scope: Option<&Namespace>) -> Result<Vec<FoundMove>, String> {
    crate::broker::shovel::stale_moves(mgmt, scope.map(|n| n.entry.as_str()))
        .await
        .map_err(|e| format!("cannot list the shovels: {e}"))
}

/// Does any of `found` need [`sweep`] to act (a stale one)?
pub fn any_stale(found: &[FoundMove]) -> bool {
    found.iter().any(|f| matches!(f.verdict, Verdict::Stale(_)))
}

/// `found` as a report, nothing removed (a read-only profile, or nothing stale): what [`sweep`]
/// would say without acting.
pub fn unswept(cfg: &Config, found: Vec<FoundMove>) -> Vec<SweptMove> {
    found
        .into_iter()
        .map(|f| {
            let (why, action) = match f.verdict {
                Verdict::Live(why) => (why, SweepAction::Running),
                Verdict::Unknown(why) => (why, SweepAction::Unknown),
                Verdict::Stale(why) => (why, SweepAction::ReadOnly),
            };
            SweptMove {
                namespace: namespace_of(cfg, &f.parsed.entry),
                shovel: f.name,
                why: sanitize(&why).into_owned(),
                action,
            }
        })
        .collect()
}

/// Remove every stale shovel of `found`, each journaled as its own operation; report on all of
/// them. Read-only, or a ledger that does not take the intent: nothing is removed.
pub async fn sweep(cx: &OpContext, found: Vec<FoundMove>) -> Vec<SweptMove> {
    let mut out = Vec::with_capacity(found.len());
    for f in found {
        let namespace = namespace_of(&cx.cfg, &f.parsed.entry);
        let (why, action) = match &f.verdict {
            Verdict::Live(why) => (why.clone(), SweepAction::Running),
            Verdict::Unknown(why) => (why.clone(), SweepAction::Unknown),
            Verdict::Stale(why) => (why.clone(), remove_one(cx, &f, &namespace, why).await),
        };
        out.push(SweptMove {
            shovel: f.name.clone(),
            namespace,
            why: sanitize(&why).into_owned(),
            action,
        });
    }
    out
}

/// One stale shovel: guard → journal intent → remove → verify → journal outcome.
async fn remove_one(cx: &OpContext, f: &FoundMove, namespace: &str, why: &str) -> SweepAction {
    if cx
        .require_writable("remove a broker-engine move left behind")
        .is_err()
    {
        return SweepAction::ReadOnly;
    }
    let Some(mgmt) = cx.mgmt.as_ref() else {
        return SweepAction::Failed("the management API is not configured".into());
    };
    let stamp = f.parsed.stamp.as_ref();
    let params = serde_json::json!({
        "shovel": f.name,
        "move_id": stamp.map(|s| s.move_id.clone()),
        "started_unix": stamp.map(|s| s.start_unix),
        "deadline_unix": stamp.map(|s| s.deadline_unix),
        "source": f.definition.get("src-queue"),
        "count": f.definition.get("src-delete-after"),
        "dest_exchange": f.definition.get("dest-exchange"),
        "dest_queue": f.definition.get("dest-queue"),
    });
    let reason = format!(
        "broker-engine move left behind: shovel `{}` — {}",
        sanitize(&f.name),
        sanitize(why)
    );
    let intent = cx
        .event(EventKind::StaleMoveRemoved, Some(namespace))
        .params(params.clone())
        .reason(reason.clone());
    if let Err(e) = cx.journal_intent(intent).await {
        return SweepAction::Failed(format!("not removed: {e}"));
    }
    let removed = crate::broker::shovel::remove_left_behind(&cx.session, mgmt, f).await;
    let (outcome, action, reason) = match removed {
        Ok(()) => (Outcome::Ok, SweepAction::Removed, reason),
        Err(e) => (
            Outcome::Failed,
            SweepAction::Failed(sanitize(&e).into_owned()),
            format!("{reason}; {}", sanitize(&e)),
        ),
    };
    let event = cx
        .event(EventKind::StaleMoveRemoved, Some(namespace))
        .params(params)
        .outcome(outcome)
        .reason(reason);
    match cx
        .journal_outcome(event, &format!("removed shovel `{}`", sanitize(&f.name)))
        .await
    {
        Ok(_) => action,
        Err(e) if action == SweepAction::Removed => SweepAction::Failed(e.to_string()),
        Err(_) => action,
    }
}
