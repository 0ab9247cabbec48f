//! The fleet snapshot: what one refresh knows about every namespace and version. Numbers that a
//! source could not provide are `None` ("unknown"), never 0 — a missing management plugin must not
//! look like an idle fleet.

use std::collections::BTreeMap;

use serde::Serialize;

use super::gate::GateSplit;

/// Message rates of one queue, per second (from the management API's 5 s sampling).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Published into the queue.
    pub publish: f64,
    /// Delivered to consumers.
    pub deliver: f64,
    /// Acknowledged.
    pub ack: f64,
    /// Redelivered.
    pub redeliver: f64,
}

/// One version of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VersionSnapshot {
    /// Version name (`v1`).
    pub version: String,
    /// Its queue.
    pub queue: String,
    /// Does the queue exist?
    pub exists: bool,
    /// Queue type (`classic`/`quorum`), when known.
    pub queue_type: Option<String>,
    /// The delivery limit in effect (argument, policy, or RabbitMQ 4.x's default of 20 for a
    /// quorum queue); `None`: no limit, or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_limit: Option<i64>,
    /// Does the queue dead-letter somewhere (argument or policy)? `None`: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<bool>,
    /// Gate weight (0 = not bound).
    pub weight: u32,
    /// Gate share in percent.
    pub gate_percent: f64,
    /// Ready messages.
    pub ready: Option<u64>,
    /// Delivered, not yet acknowledged.
    pub unacked: Option<u64>,
    /// Consumers.
    pub consumers: Option<u64>,
    /// Rates (management API).
    pub rates: Option<Rates>,
    /// Messages published into its queue since it was created (management API counter;
    /// `None`: unknown). Differences of two readings are the measured split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_total: Option<u64>,
    /// Dead letters at rest in the DLQ whose origin is this version.
    pub dead_letters: Option<u64>,
    /// Dead-lettered per second (live tap, or estimated).
    pub dead_letter_rate: Option<f64>,
    /// rejected/s ÷ (acked/s + rejected/s) from counters (the live tap's dead letters where no
    /// counter tells); `None`: unknown or no traffic — [`VersionSnapshot::error_state`] says which.
    pub error_rate: Option<f64>,
    /// Settled without an acknowledgement and not delivered again, per second (nacked or
    /// rejected without requeue), from the source's counters (`FleetSnapshot::metrics_source`);
    /// `None`: unknown.
    #[serde(default)]
    pub rejected_rate: Option<f64>,
    /// Client-provided connection names of its consumers (`None`: unknown — the management API
    /// could not list consumers, e.g. a node without the metrics collector; see
    /// `connections_note`).
    pub connections: Option<Vec<String>>,
    /// Why `connections` is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_note: Option<String>,
    /// Where the queue lives, from the management API (`None`: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// The measured split judged against the gate (see [`super::split::check`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitReport {
    /// The verdict.
    pub check: super::split::SplitCheck,
    /// Why it is off, ending in the remedy, when it can be seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The sample of tasks the cause was read from, if one was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<super::hash::HashInputs>,
}

impl SplitReport {
    /// One line: "gate v1 90% · v2 10%, measured v1 100% · v2 0% of 312 tasks in 60 s — cause".
    pub fn describe(
        &self,
        gate: &super::gate::GateSplit,
        measured: &super::split::MeasuredSplit,
    ) -> String {
        use super::split::SplitCheck;
        let head = match &self.check {
            SplitCheck::Unknown { why } => format!("measured split unknown ({why})"),
            SplitCheck::TooLittleTraffic { tasks } => format!(
                "measured {} — not enough traffic to tell yet ({tasks} of {} tasks)",
                measured.describe(),
                super::split::tasks_to_tell(gate)
            ),
            SplitCheck::Agrees { .. } => {
                format!("measured {} (as configured)", measured.describe())
            }
            SplitCheck::Differs { .. } => format!(
                "the split is not happening: gate {}, measured {}",
                gate.describe_percent(),
                measured.describe()
            ),
        };
        match &self.cause {
            Some(c) => format!("{head} — {c}"),
            None if matches!(self.check, SplitCheck::Differs { .. }) => {
                format!("{head} — cause not visible from here")
            }
            None => head,
        }
    }
    /// Is the split off (an alert)?
    pub fn differs(&self) -> bool {
        matches!(self.check, super::split::SplitCheck::Differs { .. })
    }
}

/// Where a queue lives in a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Classic: its node. Quorum: its leader (`None` when it has none: no majority).
    pub node: Option<String>,
    /// Quorum: every member.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Quorum: members online.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub online: Vec<String>,
    /// The queue exists but cannot serve now: its node (classic) is down, or its quorum has no
    /// majority online. Shown as "unavailable", never as "missing".
    pub unavailable: bool,
}

impl Placement {
    /// `leader c2 · 3/3 online` (quorum) or `on c1` (classic), with `UNAVAILABLE` when so.
    pub fn describe(&self) -> String {
        let short = |n: &str| n.split('@').next().unwrap_or(n).to_string();
        let mut s = if self.members.is_empty() {
            format!("on {}", self.node.as_deref().map_or("?".into(), short))
        } else {
            format!(
                "leader {} · {}/{} online",
                self.node.as_deref().map_or("none".into(), short),
                self.online.len(),
                self.members.len()
            )
        };
        if self.unavailable {
            s.push_str(" · UNAVAILABLE");
        }
        s
    }
}

/// One broker node of the cluster (management API's node list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeHealth {
    /// `rabbit@host`.
    pub name: String,
    /// Running (false: down or unreachable from the node answering).
    pub running: bool,
    /// Resource alarms in effect on it (`memory alarm`, `disk alarm`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// Nodes it is partitioned from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
}

/// One namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NamespaceSnapshot {
    /// Namespace name.
    pub name: String,
    /// Follows the naming convention (false = adopted from config).
    pub convention: bool,
    /// Entry exchange.
    pub entry_exchange: String,
    /// Entry exchange type, when known.
    pub entry_kind: Option<String>,
    /// The gate as read from the bindings (`None` without the management API).
    pub gate: Option<GateSplit>,
    /// Problems with the gate (e.g. a queue bound twice).
    pub gate_problems: Vec<String>,
    /// What the gate hashes (`message_id`, `correlation_id`, `header:id`, `routing-key`, or an
    /// unsupported setting as found); `None`: unknown (no management API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// The exchange holding the gate when it is not the entry exchange (after `gate hash-on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_exchange: Option<String>,
    /// New tasks per version over the last window, from the version queues' publish counters
    /// (`None`: not measured — a one-shot reading without a window, or no counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<super::split::MeasuredSplit>,
    /// The measured split against the gate, and why it is off when that can be seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_check: Option<SplitReport>,
    /// What keeps this quorum namespace from the cluster-safe convention (empty: nothing, or
    /// unknown without the management API); `hopback migrate NS` fixes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy: Vec<String>,
    /// Part of this namespace could not be read: the broker refused a permission (the refusal,
    /// naming it). What was read before the refusal is shown; the rest is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_permission: Option<String>,
    /// Versions, sorted.
    pub versions: Vec<VersionSnapshot>,
    /// DLQ name.
    pub dlq: String,
    /// DLQ depth.
    pub dlq_depth: Option<u64>,
    /// DLQ publish rate (all versions).
    pub dlq_rate: Option<f64>,
    /// Dead letters at rest by reason.
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// How many DLQ messages were inspected to attribute them (may be < depth for huge DLQs).
    pub dead_letters_sampled: Option<u64>,
    /// Of those, how many have properties the client could not read (shown as unreadable,
    /// quarantined by a replay).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_letters_unreadable: u64,
    /// Unrouted queue name.
    pub unrouted: String,
    /// Unrouted depth (> 0 is an alert).
    pub unrouted_depth: Option<u64>,
    /// Where the DLQ lives (management API; `None`: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlq_placement: Option<Placement>,
    /// Where the unrouted queue lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrouted_placement: Option<Placement>,
    /// What holds the gate lock, when something does (filled by `status`; the console's
    /// refresh leaves it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_lock: Option<crate::model::gate_lock::GateLock>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl NamespaceSnapshot {
    /// The DLQ's depth as shown: the count, `unavailable (c1 down)` when its node is down, `?`
    /// when unknown — never "missing" for a queue that exists elsewhere in the cluster.
    pub fn dlq_text(&self) -> String {
        queue_text(self.dlq_depth, self.dlq_placement.as_ref(), "?")
    }
    /// The unrouted queue's depth as shown (see [`NamespaceSnapshot::dlq_text`]); `missing` only
    /// when no source lists it.
    pub fn unrouted_text(&self) -> String {
        queue_text(
            self.unrouted_depth,
            self.unrouted_placement.as_ref(),
            "missing",
        )
    }
}

fn queue_text(depth: Option<u64>, placement: Option<&Placement>, none: &str) -> String {
    match (depth, placement) {
        (_, Some(p)) if p.unavailable => format!(
            "unavailable ({} down)",
            p.node
                .as_deref()
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
                .unwrap_or_else(|| "its node".into())
        ),
        (Some(d), _) => d.to_string(),
        (None, _) => none.to_string(),
    }
}

/// Everything one refresh knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetSnapshot {
    /// When it was taken (unix ms).
    pub taken_at_ms: i64,
    /// Broker version.
    pub server_version: Option<String>,
    /// Was the management API available?
    pub mgmt_available: bool,
    /// Where rates, unacked counts and error rates came from (`None`: no source had them —
    /// they are unknown, not zero).
    pub metrics_source: Option<super::metrics::MetricsSource>,
    /// Why the source is what it is, when it is not the one asked for (or there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_note: Option<String>,
    /// Why not, if not.
    pub mgmt_error: Option<String>,
    /// The management API refused this user (401/403: a missing tag or permission), as opposed
    /// to being down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mgmt_refused: bool,
    /// Resource alarms blocking publishers (`memory alarm`, `disk alarm`), from the management
    /// API's node list (refetched with the topology, at most every 5 s) or our own blocked
    /// connection. Empty = none known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub broker_alarms: Vec<String>,
    /// The cluster's nodes (`None`: unknown — no management API, or a user without the
    /// `monitoring` tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeHealth>>,
    /// Namespaces, sorted by name.
    pub namespaces: Vec<NamespaceSnapshot>,
}

/// dead-lettered/s ÷ (acked/s + dead-lettered/s); `None` when there is no traffic to judge.
pub fn error_rate(ack_per_s: f64, dead_per_s: f64) -> Option<f64> {
    let denom = ack_per_s + dead_per_s;
    (denom > 1e-9).then(|| (dead_per_s / denom).clamp(0.0, 1.0))
}

impl FleetSnapshot {
    /// Find a namespace.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceSnapshot> {
        self.namespaces.iter().find(|n| n.name == name)
    }
}

impl NamespaceSnapshot {
    /// Find a version.
    pub fn version(&self, v: &str) -> Option<&VersionSnapshot> {
        self.versions.iter().find(|x| x.version == v)
    }
}

/// A version's error rate as it can be shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorState {
    /// rejected ÷ (acked + rejected), 0..1.
    Ratio(f64),
    /// The counters are known and nothing was acked or rejected.
    NoTraffic,
    /// No source tells (no metrics, not enough readings yet).
    Unknown,
}

impl VersionSnapshot {
    /// The error rate, telling "no traffic" apart from "unknown".
    pub fn error_state(&self) -> ErrorState {
        match self.error_rate {
            Some(e) => ErrorState::Ratio(e),
            None if self.rates.is_some()
                && (self.rejected_rate.is_some() || self.dead_letter_rate.is_some()) =>
            {
                ErrorState::NoTraffic
            }
            None => ErrorState::Unknown,
        }
    }
    /// A delivery limit with nowhere to dead-letter to: a message over it is dropped.
    pub fn drops_over_limit(&self) -> bool {
        self.delivery_limit.is_some() && self.dead_letter_target == Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_maths() {
        assert_eq!(error_rate(0.0, 0.0), None);
        assert_eq!(error_rate(90.0, 10.0), Some(0.1));
        assert_eq!(error_rate(0.0, 5.0), Some(1.0));
    }
}
