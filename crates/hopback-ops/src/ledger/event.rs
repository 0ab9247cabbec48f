//! The ledger's one record type: an [`Event`] (who did what to which namespace, with the state
//! before and after and why). Events are plain serde JSON so every console version, `jq` and the
//! JSONL fallback file all read the same thing. Unknown kinds and outcomes written by a newer
//! hopback still parse (as `Unknown`), so an old console never chokes on a shared ledger.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened. Serialized in snake_case (`gate_set`, `rollback_step`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `hopback init` created (part of) a namespace; `after.gate` holds the initial gate.
    Init,
    /// The gate changed (or a change was refused/failed); `before.gate`/`after.gate` are splits.
    GateSet,
    /// A gate lock that blocked every flip was removed (`before.lock` names what held it).
    GateUnlock,
    /// Dead letters replayed; `params` holds filters and target, `after` the counts.
    Replay,
    /// Messages moved between queues; `after` holds the counts.
    Move,
    /// A queue was purged; `params.export` is the JSONL export path, `after.count` the number.
    Purge,
    /// A rollback began (`params` holds the plan).
    RollbackStarted,
    /// One step of a rollback (`params.step`, `params.index`).
    RollbackStep,
    /// A rollback ended (`outcome` says how).
    RollbackFinished,
    /// A drill began (`params` holds the scenario).
    DrillStarted,
    /// A drill ended (`after` holds the score).
    DrillFinished,
    /// What the gate hashes changed (`before.hash_on` → `after.hash_on`; `params.steps`).
    GateHash,
    /// A human note (`reason` holds the text) so the timeline carries context.
    Note,
    /// A namespace moved to the cluster-safe convention (`after` holds what changed and counts).
    Migrate,
    /// An alert started (`params` holds the metric and threshold).
    AlertRaised,
    /// An alert ended.
    AlertCleared,
    /// The broker's gate differed from the ledger's last known state (someone changed it by hand).
    DriftDetected,
    /// A broker-engine move's shovel outlived its hopback (killed) or its deadline and was removed
    /// (`params.shovel`, `params.move_id`, `params.source`, `params.count`; `reason` says why).
    StaleMoveRemoved,
    /// A self-driving canary began (`params.canary_id`, `params.plan`; `before.gate`), or a
    /// killed one was resumed (`params.resumed`).
    CanaryStarted,
    /// A canary set a step (`params.index`, `params.weight`; `after.gate`).
    CanaryStep,
    /// A canary's analysis of its step window (`after.analysis`, `params.verdict`).
    CanaryAnalysis,
    /// A canary decided: advance, hold, abort, promote, pause, resume (`params.decision`,
    /// `params.requested_by` when an operator asked; `after.analysis` holds the numbers).
    CanaryDecision,
    /// An operator asked a running canary to pause, resume, promote or abort (`params.command`).
    CanaryControl,
    /// A canary ended (`outcome`: ok = promoted, failed = aborted by its analysis, cancelled =
    /// aborted by an operator; `params.rollback_id` of the automatic rollback).
    CanaryFinished,
    /// Written by a newer hopback: kept, shown as-is, never interpreted.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The snake_case name used on the wire and in the timeline.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Init => "init",
            EventKind::Migrate => "migrate",
            EventKind::GateSet => "gate_set",
            EventKind::GateUnlock => "gate_unlock",
            EventKind::Replay => "replay",
            EventKind::Move => "move",
            EventKind::Purge => "purge",
            EventKind::RollbackStarted => "rollback_started",
            EventKind::RollbackStep => "rollback_step",
            EventKind::RollbackFinished => "rollback_finished",
            EventKind::DrillStarted => "drill_started",
            EventKind::DrillFinished => "drill_finished",
            EventKind::GateHash => "gate_hash",
            EventKind::Note => "note",
            EventKind::AlertRaised => "alert_raised",
            EventKind::AlertCleared => "alert_cleared",
            EventKind::DriftDetected => "drift_detected",
            EventKind::StaleMoveRemoved => "stale_move_removed",
            EventKind::CanaryStarted => "canary_started",
            EventKind::CanaryStep => "canary_step",
            EventKind::CanaryAnalysis => "canary_analysis",
            EventKind::CanaryDecision => "canary_decision",
            EventKind::CanaryControl => "canary_control",
            EventKind::CanaryFinished => "canary_finished",
            EventKind::Unknown => "unknown",
        }
    }
}

crate::display_as!(EventKind, as_str);

pub use crate::model::outcome::Outcome;

/// One ledger record. Build it with [`crate::ledger::Ledger::event`] (fills id, time, operator,
/// host and profile) and the chained setters, then [`crate::ledger::Ledger::append`] it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (also the AMQP `message_id` on the stream).
    pub id: Uuid,
    /// When it was recorded (UTC).
    pub ts: DateTime<Utc>,
    /// Who: the configured operator name or `user@host`.
    pub operator: String,
    /// The machine the console ran on.
    #[serde(default)]
    pub host: String,
    /// The profile name it ran under.
    #[serde(default)]
    pub profile: String,
    /// The namespace concerned (none for global events).
    #[serde(default)]
    pub namespace: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// The inputs (targets, filters, plan, counts asked for).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// State before (e.g. `{"gate": {"v1": 100}}`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub before: serde_json::Value,
    /// State after (e.g. `{"gate": {"v1": 90, "v2": 10}}`) or the counts achieved.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub after: serde_json::Value,
    /// How it ended.
    #[serde(default)]
    pub outcome: Outcome,
    /// Why (operator-given reason, note text, failure message).
    #[serde(default)]
    pub reason: Option<String>,
    /// The authenticated author: the broker user the stream record's AMQP `user_id` names — the
    /// broker refuses a `user_id` that is not the publishing connection's user — or `local file`
    /// for the file fallback. Never read from the event's own JSON (a forger writes that);
    /// `None` = unverified: shown as such, and it never drives an action (resume, revert, drill
    /// accounting).
    #[serde(skip)]
    pub author: Option<String>,
}

/// Records larger than this are not trusted (a forged multi-megabyte "plan"): unverified.
pub const MAX_VERIFIED_EVENT_BYTES: usize = 256 * 1024;

/// The author recorded for events of the local file fallback (only this OS user can write it).
pub const LOCAL_FILE_AUTHOR: &str = "local file";

impl Event {
    /// A new event with a fresh id and the current time; who/where are filled by the caller.
    pub fn new(kind: EventKind, namespace: Option<&str>) -> Self {
        Self {
            id: Uuid::new_v4(),
            ts: Utc::now(),
            operator: String::new(),
            host: String::new(),
            profile: String::new(),
            namespace: namespace.map(str::to_string),
            kind,
            params: serde_json::Value::Null,
            before: serde_json::Value::Null,
            after: serde_json::Value::Null,
            outcome: Outcome::Ok,
            reason: None,
            author: None,
        }
    }
    /// Was it written by an authenticated broker user (or the local file)?
    pub fn is_verified(&self) -> bool {
        self.author.is_some()
    }
    /// Who did it, as shown everywhere (sanitised): the broker-verified author first, the
    /// operator name the body claims beside it — `mallory (claims alice@bastion-1)`, or just
    /// `alice` when both agree; `UNVERIFIED (claims …)` when no broker user vouches for the
    /// event. The verified part comes first, so a narrow column that cuts the text keeps it:
    /// a body naming Alice must never read as Alice.
    pub fn who(&self) -> String {
        let claimed = self.claimed_operator();
        match self.author.as_deref() {
            None => format!("UNVERIFIED (claims {claimed})"),
            // Only this OS user can write the fallback file: its operator name is its own.
            Some(LOCAL_FILE_AUTHOR) => format!("{claimed} ({LOCAL_FILE_AUTHOR})"),
            Some(a) => {
                let author = crate::text::sanitize(a);
                if author == claimed {
                    author.into_owned()
                } else {
                    format!("{author} (claims {claimed})")
                }
            }
        }
    }
    /// The operator name the event's body claims (sanitised): a claim, not an identity.
    pub fn claimed_operator(&self) -> String {
        crate::text::sanitize(&self.operator).into_owned()
    }
    /// `guest` / `local file`, or `UNVERIFIED`: the verified author alone.
    pub fn author_label(&self) -> String {
        match &self.author {
            Some(a) => crate::text::sanitize(a).into_owned(),
            None => "UNVERIFIED".into(),
        }
    }
    /// Was it written by the same verified author as `other` (both verified)?
    pub fn same_author(&self, other: &Event) -> bool {
        self.author.is_some() && self.author == other.author
    }
    /// Set the inputs.
    pub fn params(mut self, v: serde_json::Value) -> Self {
        self.params = v;
        self
    }
    /// Set the state before.
    pub fn before(mut self, v: serde_json::Value) -> Self {
        self.before = v;
        self
    }
    /// Set the state after.
    pub fn after(mut self, v: serde_json::Value) -> Self {
        self.after = v;
        self
    }
    /// Set the outcome.
    pub fn outcome(mut self, o: Outcome) -> Self {
        self.outcome = o;
        self
    }
    /// Set the reason (empty strings count as none).
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        let r = r.into();
        self.reason = Some(r).filter(|r| !r.trim().is_empty());
        self
    }
    /// Set the reason from an option.
    pub fn reason_opt(self, r: Option<&str>) -> Self {
        match r {
            Some(r) => self.reason(r),
            None => self,
        }
    }
    /// The `params.rollback_id` of a rollback's events (`None` for any other event).
    pub fn rollback_id(&self) -> Option<String> {
        self.params
            .get("rollback_id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
    /// The first 8 hex digits of the id, as shown in tables (accepted wherever an id is asked).
    pub fn short_id(&self) -> String {
        self.id.simple().to_string()[..8].to_string()
    }
    /// Does `text` name this event (full uuid or a prefix of at least 4 hex digits)?
    pub fn matches_id(&self, text: &str) -> bool {
        let t = text.trim().to_ascii_lowercase().replace('-', "");
        t.len() >= 4 && self.id.simple().to_string().starts_with(&t)
    }
    /// The gate split stored under `after.gate` (gate_set, init), if any.
    pub fn gate_after(&self) -> Option<crate::model::gate::GateSplit> {
        gate_of(&self.after)
    }
    /// The gate split stored under `before.gate`, if any.
    pub fn gate_before(&self) -> Option<crate::model::gate::GateSplit> {
        gate_of(&self.before)
    }
}

fn gate_of(v: &serde_json::Value) -> Option<crate::model::gate::GateSplit> {
    v.get("gate")
        .and_then(|g| serde_json::from_value(g.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_unknown_kinds() {
        let e = Event::new(EventKind::GateSet, Some("email"))
            .after(serde_json::json!({"gate": {"v1": 90, "v2": 10}}))
            .reason("canary");
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"kind\":\"gate_set\""), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.gate_after().unwrap().weight("v2"), 10);
        let future = text
            .replace("gate_set", "teleport")
            .replace("\"ok\"", "\"exploded\"");
        let f: Event = serde_json::from_str(&future).unwrap();
        assert_eq!(f.kind, EventKind::Unknown);
        assert_eq!(f.outcome, Outcome::Unknown);
        assert!(e.matches_id(&e.short_id()));
        assert!(!e.matches_id("zz"));
        assert_eq!(Event::new(EventKind::Note, None).reason("  ").reason, None);
    }

    #[test]
    fn who_puts_the_verified_author_first_and_the_claim_beside_it() {
        let mut e = Event::new(EventKind::Note, None);
        e.operator = "alice@bastion-1".into();
        assert_eq!(e.who(), "UNVERIFIED (claims alice@bastion-1)");
        e.author = Some("mallory".into());
        assert_eq!(e.who(), "mallory (claims alice@bastion-1)");
        e.author = Some("alice@bastion-1".into());
        assert_eq!(e.who(), "alice@bastion-1");
        e.author = Some(LOCAL_FILE_AUTHOR.into());
        assert_eq!(e.who(), "alice@bastion-1 (local file)");
        e.author = Some("m\x1b]0;x\x07".into());
        assert!(!e.who().contains('\x1b'), "{}", e.who());
        let mut f = e.clone();
        assert!(e.same_author(&f));
        f.author = None;
        assert!(!e.same_author(&f) && !f.same_author(&f));
    }
}
