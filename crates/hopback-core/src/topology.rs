//! The one topology resolver (docs/architecture.md, "Names"): every object name of a namespace —
//! entry exchange, version queues, dead-letter exchange and queue, unrouted safety net, parking
//! queue — comes from a [`Namespace`], built from the convention or from the profile's adoption
//! entry. Nothing else in the crate spells `NS.dlq` or `NS.vN`, so an adopted namespace works
//! everywhere a convention one does (gate, replay, purge, rollback, drill, stats).
//!
//! Pure data: no I/O. The version queues of a regex adoption are only known once the broker's
//! queue list has been seen ([`Namespace::with_queues`]).

use std::collections::BTreeMap;

use crate::config::{Adoption, AlertThresholds, Config, Profile, VersionQueues};
use crate::model::xdeath::is_version_name;

/// How a namespace's version queues are named.
#[derive(Debug, Clone)]
enum Versions {
    /// `NS.vN`.
    Convention,
    /// An explicit version → queue list (adoption).
    List(BTreeMap<String, String>),
    /// A regex with a named group `version` (adoption), plus the queues seen matching it.
    Regex(regex::Regex, BTreeMap<String, String>),
}

/// Every object name of one namespace.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The namespace (task type), e.g. `email`.
    pub name: String,
    /// Entry exchange producers publish to; its bindings are the gate.
    pub entry: String,
    /// Dead-letter exchange (fanout).
    pub dlx: String,
    /// Dead-letter queue.
    pub dlq: String,
    /// Unrouted safety net: the entry exchange's alternate exchange and its queue (same name).
    pub unrouted: String,
    /// Where replays park messages over the replay limit.
    pub parked: String,
    /// Follows the convention (not adopted in the profile).
    pub convention: bool,
    /// Alert thresholds of this namespace.
    pub alerts: AlertThresholds,
    versions: Versions,
}

impl PartialEq for Namespace {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.entry == other.entry
            && self.dlx == other.dlx
            && self.dlq == other.dlq
            && self.unrouted == other.unrouted
            && self.parked == other.parked
            && self.convention == other.convention
            && self.known_versions() == other.known_versions()
    }
}

impl Namespace {
    /// The convention's names for `ns`.
    pub fn convention(ns: &str) -> Self {
        Self::convention_with(ns, AlertThresholds::default())
    }

    fn convention_with(ns: &str, alerts: AlertThresholds) -> Self {
        Self {
            name: ns.to_string(),
            entry: ns.to_string(),
            dlx: format!("{ns}.dlx"),
            dlq: format!("{ns}.dlq"),
            unrouted: format!("{ns}.unrouted"),
            parked: format!("{ns}.parked"),
            convention: true,
            alerts,
            versions: Versions::Convention,
        }
    }

    /// Names from an adoption entry; what it leaves out follows the convention.
    pub fn adopted(ns: &str, a: &Adoption) -> Self {
        let base = Self::convention_with(ns, a.alerts.clone());
        Self {
            entry: a.entry_exchange.clone().unwrap_or(base.entry.clone()),
            dlx: a.dlx.clone().unwrap_or(base.dlx.clone()),
            dlq: a.dlq.clone().unwrap_or(base.dlq.clone()),
            unrouted: a.unrouted.clone().unwrap_or(base.unrouted.clone()),
            convention: false,
            versions: match &a.version_queues {
                VersionQueues::Convention => Versions::Convention,
                VersionQueues::List(l) => Versions::List(l.clone()),
                VersionQueues::Regex(r) => Versions::Regex(r.clone(), BTreeMap::new()),
            },
            ..base
        }
    }

    /// `ns` as the profile describes it: its adoption entry, else the convention (with the
    /// global alert thresholds).
    pub fn of_profile(profile: &Profile, defaults: &AlertThresholds, ns: &str) -> Self {
        match profile.namespaces.get(ns) {
            Some(a) => Self::adopted(ns, a),
            None => Self::convention_with(ns, defaults.clone()),
        }
    }

    /// `ns` as the configuration describes it (see [`Namespace::of_profile`]).
    pub fn resolve(cfg: &Config, ns: &str) -> Self {
        Self::of_profile(&cfg.profile, &cfg.alerts, ns)
    }

    /// Learn a regex adoption's version queues from the broker's queue names (a no-op for the
    /// convention and for explicit lists).
    pub fn with_queues<'a>(mut self, queue_names: impl IntoIterator<Item = &'a str>) -> Self {
        if let Versions::Regex(re, seen) = &mut self.versions {
            for q in queue_names {
                if let Some(v) = re.captures(q).and_then(|c| c.name("version")) {
                    seen.insert(v.as_str().to_string(), q.to_string());
                }
            }
        }
        self
    }

    /// The gate's lock (an exclusive queue, see `broker::lock`): `ENTRY.gate-lock`.
    pub fn gate_lock(&self) -> String {
        format!("{}.gate-lock", self.entry)
    }

    /// The control queue of canary `id` on this namespace (`ENTRY.canary.ID`): exclusive to the
    /// running canary's connection, so it exists exactly while the canary runs
    /// (`broker::control`).
    pub fn canary_control(&self, id: &str) -> String {
        format!("{}.canary.{id}", self.entry)
    }

    /// The two exchanges a `gate hash-on` change can move the gate to, behind the entry
    /// exchange (`ENTRY.gate-a`, `ENTRY.gate-b`): a change builds the gate on the one not in
    /// use, so the old and the new routing coexist until the entry is switched over.
    pub fn hash_gates(&self) -> [String; 2] {
        [
            format!("{}.gate-a", self.entry),
            format!("{}.gate-b", self.entry),
        ]
    }

    /// Is `exchange` one of [`Self::hash_gates`]?
    pub fn is_hash_gate(&self, exchange: &str) -> bool {
        self.hash_gates().iter().any(|g| g == exchange)
    }

    /// The broker engine's dynamic shovel of one move out of this namespace (one at a time):
    /// `hopback-move-ENTRY.ID.START-DEADLINE` — the move's id (its owner's connection carries
    /// it too) and when it started and must be over (Unix seconds), so any hopback that sees the
    /// shovel can tell whether it outlived its move ([`MoveShovelName::parse`]).
    pub fn move_shovel(&self, move_id: &str, start_unix: u64, deadline_unix: u64) -> String {
        format!(
            "{MOVE_SHOVEL_PREFIX}{}.{move_id}.{start_unix}-{deadline_unix}",
            self.entry
        )
    }

    /// Does the broker-engine shovel `name` move out of this namespace (whatever its move)?
    pub fn owns_move_shovel(&self, name: &str) -> bool {
        MoveShovelName::parse(name).is_some_and(|n| n.entry == self.entry)
    }

    /// The fanout exchange a broker-engine move to a queue publishes through, bound to that
    /// queue alone, so a dead letter's own `CC`/`BCC` headers find no other binding
    /// (`ENTRY.replay-move-ID`).
    pub fn move_exchange(&self, move_id: &str) -> String {
        move_exchange(&self.entry, move_id)
    }

    /// Where a move quarantines a message it cannot read: the parking queue.
    pub fn quarantine_queue(&self) -> String {
        self.parked.clone()
    }

    /// The broker engine's "to origin" router: a headers exchange that sends a dead letter to the
    /// version queue named by its `x-first-death-queue` (`ENTRY.replay-origin`).
    pub fn origin_router(&self) -> String {
        origin::headers_router(&self.entry)
    }

    /// The router's alternate exchange: origins that are not a version queue of this namespace
    /// go to the parking queue through it (`ENTRY.replay-unknown`).
    pub fn origin_fallback(&self) -> String {
        origin::fallback(&self.entry)
    }

    /// The keyed "to origin" router: a direct exchange that sends a dead letter keyed by its
    /// queue (`broker::topology::dead_letters_keyed_by_queue`) straight home, anything else on
    /// to [`Self::origin_router`] (`ENTRY.replay-origin-keyed`).
    pub fn origin_keyed_router(&self) -> String {
        origin::keyed_router(&self.entry)
    }

    /// The queue of version `v`: `NS.v2` by convention, the adoption's entry otherwise (`None`
    /// when the adoption does not name it, or `v` is not a version name).
    pub fn version_queue(&self, v: &str) -> Option<String> {
        match &self.versions {
            Versions::Convention => is_version_name(v).then(|| format!("{}.{v}", self.name)),
            Versions::List(l) => l.get(v).cloned(),
            Versions::Regex(_, seen) => seen.get(v).cloned(),
        }
    }

    /// The version whose queue `queue` is, if it is one of this namespace's version queues.
    pub fn version_of_queue(&self, queue: &str) -> Option<String> {
        match &self.versions {
            Versions::Convention => queue
                .strip_prefix(self.name.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .filter(|v| is_version_name(v))
                .map(str::to_string),
            Versions::List(l) => l
                .iter()
                .find(|(_, q)| q.as_str() == queue)
                .map(|(v, _)| v.clone()),
            Versions::Regex(re, _) => re
                .captures(queue)
                .and_then(|c| c.name("version"))
                .map(|m| m.as_str().to_string()),
        }
    }

    /// Version → queue for every version known without asking the broker (an explicit list, or
    /// what [`Namespace::with_queues`] learnt); empty for the convention.
    pub fn known_versions(&self) -> BTreeMap<String, String> {
        match &self.versions {
            Versions::Convention => BTreeMap::new(),
            Versions::List(l) => l.clone(),
            Versions::Regex(_, seen) => seen.clone(),
        }
    }

    /// What every queue of this namespace's own starts with (`NS.`), when that holds: a
    /// convention namespace. `None` for an adoption (its queues may be named anything), where
    /// only the whole queue list finds them.
    pub fn queue_prefix(&self) -> Option<String> {
        self.convention.then(|| format!("{}.", self.name))
    }

    /// Version → queue among `queue_names` (the broker's queue list): what exists now.
    pub fn versions_among<'a>(
        &self,
        queue_names: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for q in queue_names {
            if let Some(v) = self.version_of_queue(q) {
                out.insert(v, q.to_string());
            }
        }
        if let Versions::List(l) = &self.versions {
            // An explicit list names its queues even when the list given here misses one.
            for (v, q) in l {
                out.entry(v.clone()).or_insert_with(|| q.clone());
            }
        }
        out
    }

    /// The queue of a version, or a one-line explanation of why there is none.
    pub fn require_version_queue(&self, v: &str) -> Result<String, UnknownVersion> {
        self.version_queue(v).ok_or_else(|| UnknownVersion {
            namespace: self.name.clone(),
            version: v.to_string(),
            known: self.known_versions().into_keys().collect(),
        })
    }

    /// Is `queue` one of this namespace's version queues?
    pub fn is_version_queue(&self, queue: &str) -> bool {
        self.version_of_queue(queue).is_some()
    }
}

/// A version the namespace does not name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("namespace `{}` has no queue for version `{}`{}", crate::text::sanitize(namespace), crate::text::sanitize(version), if known.is_empty() { String::new() } else { format!(" (known: {})", known.join(", ")) })]
pub struct UnknownVersion {
    /// Namespace.
    pub namespace: String,
    /// The version asked for.
    pub version: String,
    /// The versions it does name (adoptions only).
    pub known: Vec<String>,
}

/// What every broker-engine shovel's name starts with ([`Namespace::move_shovel`]).
pub const MOVE_SHOVEL_PREFIX: &str = "hopback-move-";

/// The per-move fanout exchange of the move `move_id` out of the namespace whose entry exchange
/// is `entry` ([`Namespace::move_exchange`]).
pub fn move_exchange(entry: &str, move_id: &str) -> String {
    format!("{entry}.replay-move-{move_id}")
}

/// A broker-engine shovel's name read back ([`Namespace::move_shovel`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveShovelName {
    /// The entry exchange of the namespace it moves out of.
    pub entry: String,
    /// The move's id, start and deadline (Unix seconds); `None` for a shovel named by a hopback
    /// before moves carried them (`hopback-move-ENTRY`): its owner and age are unknown.
    pub stamp: Option<MoveStamp>,
}

/// Who a broker-engine move is and how long it may live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveStamp {
    /// The move's id (12 hex digits).
    pub move_id: String,
    /// When it started (Unix seconds, the starting hopback's clock).
    pub start_unix: u64,
    /// When it must be over (Unix seconds).
    pub deadline_unix: u64,
}

impl MoveShovelName {
    /// Read a shovel name; `None` when it is not a hopback broker-engine shovel.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(MOVE_SHOVEL_PREFIX)?;
        if rest.is_empty() {
            return None;
        }
        Some(Self::stamped(rest).unwrap_or_else(|| Self {
            entry: rest.to_string(),
            stamp: None,
        }))
    }

    /// `ENTRY.ID.START-DEADLINE`, when `rest` is exactly that.
    fn stamped(rest: &str) -> Option<Self> {
        let (left, times) = rest.rsplit_once('.')?;
        let (start, deadline) = times.split_once('-')?;
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let (start_unix, deadline_unix) = (number(start)?, number(deadline)?);
        let (entry, id) = left.rsplit_once('.')?;
        let hex = id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (hex && !entry.is_empty()).then(|| Self {
            entry: entry.to_string(),
            stamp: Some(MoveStamp {
                move_id: id.to_string(),
                start_unix,
                deadline_unix,
            }),
        })
    }

    /// The move's fanout exchange ([`Namespace::move_exchange`]), when the name carries its id.
    pub fn exchange(&self) -> Option<String> {
        self.stamp
            .as_ref()
            .map(|s| move_exchange(&self.entry, &s.move_id))
    }
}

/// The broker engine's three "to origin" exchanges of the namespace whose entry exchange is
/// `entry`: the headers router, its fallback to parking, the keyed (direct) router.
pub fn origin_routers(entry: &str) -> [String; 3] {
    [
        origin::headers_router(entry),
        origin::fallback(entry),
        origin::keyed_router(entry),
    ]
}

/// The names of the "to origin" exchanges ([`Namespace::origin_router`] and its siblings say
/// what each does).
mod origin {
    pub(super) fn headers_router(entry: &str) -> String {
        format!("{entry}.replay-origin")
    }
    pub(super) fn fallback(entry: &str) -> String {
        format!("{entry}.replay-unknown")
    }
    pub(super) fn keyed_router(entry: &str) -> String {
        format!("{entry}.replay-origin-keyed")
    }
}

/// The holding queue of one quarantine (a move's run `token`) in front of the parking queue
/// `parked`: `PARKED.quarantine-TOKEN`. The broker moves an unreadable message there first so
/// the mover can check it is the one it met before it goes on to `parked`.
pub fn quarantine_holding(parked: &str, token: &str) -> String {
    format!("{parked}.quarantine-{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_shovel_names_read_back() {
        let n = Namespace::convention("a.b");
        let name = n.move_shovel("0123456789ab", 1_700_000_000, 1_700_000_600);
        assert_eq!(name, "hopback-move-a.b.0123456789ab.1700000000-1700000600");
        let p = MoveShovelName::parse(&name).unwrap_or_else(|| unreachable!());
        assert_eq!(p.entry, "a.b");
        assert_eq!(
            p.stamp,
            Some(MoveStamp {
                move_id: "0123456789ab".into(),
                start_unix: 1_700_000_000,
                deadline_unix: 1_700_000_600,
            })
        );
        assert_eq!(
            p.exchange().as_deref(),
            Some("a.b.replay-move-0123456789ab")
        );
        assert!(n.owns_move_shovel(&name));
        assert!(!Namespace::convention("a").owns_move_shovel(&name));
        // Named by an earlier hopback: the namespace is known, the owner and age are not.
        let old = MoveShovelName::parse("hopback-move-email").unwrap_or_else(|| unreachable!());
        assert_eq!((old.entry.as_str(), &old.stamp), ("email", &None));
        assert_eq!(old.exchange(), None);
        // An entry that merely looks stamped is read as a legacy name, never half-parsed.
        let odd =
            MoveShovelName::parse("hopback-move-x.NOTHEX.1-2").unwrap_or_else(|| unreachable!());
        assert_eq!((odd.entry.as_str(), &odd.stamp), ("x.NOTHEX.1-2", &None));
        assert_eq!(MoveShovelName::parse("hopback-move-"), None);
        assert_eq!(MoveShovelName::parse("other"), None);
    }

    #[test]
    fn convention_names() {
        let n = Namespace::convention("email");
        assert_eq!(n.entry, "email");
        assert_eq!(n.dlq, "email.dlq");
        assert_eq!(n.dlx, "email.dlx");
        assert_eq!(n.unrouted, "email.unrouted");
        assert_eq!(n.parked, "email.parked");
        assert_eq!(n.hash_gates(), ["email.gate-a", "email.gate-b"]);
        assert!(n.is_hash_gate("email.gate-b") && !n.is_hash_gate("email"));
        assert_eq!(n.version_queue("v2").as_deref(), Some("email.v2"));
        assert_eq!(n.version_queue("x"), None);
        assert_eq!(n.version_of_queue("email.v3").as_deref(), Some("v3"));
        assert_eq!(n.version_of_queue("email.dlq"), None);
        assert_eq!(n.version_of_queue("emailx.v3"), None);
    }

    #[test]
    fn adopted_list_and_regex() {
        let a = Adoption {
            entry_exchange: Some("legacy.in".into()),
            version_queues: VersionQueues::List(
                [("v1".to_string(), "legacy.old".to_string())]
                    .into_iter()
                    .collect(),
            ),
            dlq: Some("legacy.dead".into()),
            dlx: None,
            unrouted: None,
            alerts: AlertThresholds::default(),
        };
        let n = Namespace::adopted("legacy", &a);
        assert_eq!(n.entry, "legacy.in");
        assert_eq!(n.dlq, "legacy.dead");
        assert_eq!(n.dlx, "legacy.dlx");
        assert_eq!(n.version_queue("v1").as_deref(), Some("legacy.old"));
        assert_eq!(n.version_queue("v2"), None);
        assert!(n.require_version_queue("v2").is_err());
        assert_eq!(n.version_of_queue("legacy.old").as_deref(), Some("v1"));
        assert_eq!(n.version_of_queue("legacy.v1"), None);

        let r = Adoption {
            version_queues: VersionQueues::Regex(
                regex::Regex::new(r"^orders-(?P<version>v\d+)$").unwrap_or_else(|_| unreachable!()),
            ),
            ..a
        };
        let n = Namespace::adopted("orders", &r).with_queues(["orders-v1", "orders-v2", "x"]);
        assert_eq!(n.version_queue("v2").as_deref(), Some("orders-v2"));
        assert_eq!(n.version_of_queue("orders-v7").as_deref(), Some("v7"));
        assert_eq!(n.known_versions().len(), 2);
    }
}
