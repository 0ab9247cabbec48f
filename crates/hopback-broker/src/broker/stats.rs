//! Building a [`FleetSnapshot`]: one management API queue listing (rates, unacked, types) plus
//! exact passive `queue.declare` counts for the queues that matter, the gate read from bindings,
//! and (on demand) dead letters at rest attributed to their origin version by `x-death`.
//! Without the management plugin the snapshot still has depths and consumers; rates, unacked
//! counts and error rates come from the profile's metrics source (`broker::metrics`: Prometheus
//! counters, or the management API's statistics), and are `None` when neither has them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::broker::browse::{BrowseOptions, browse};
use crate::broker::headers::attribute;
use crate::broker::mgmt::{BindingInfo, ExchangeInfo, Mgmt, QueueInfo};
use crate::broker::session::{BrokerError, Session};
use crate::broker::topology::{DiscoveredNamespace, Names, discover};
use crate::config::{Config, Profile};
use crate::model::gate::GateSplit;
use crate::model::snapshot::{
    FleetSnapshot, NamespaceSnapshot, NodeHealth, Placement, Rates, VersionSnapshot, error_rate,
};

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Browse DLQs (classic only) to attribute dead letters at rest, up to this many per DLQ.
    pub attribute_dead_letters: Option<u64>,
    /// Namespaces whose depths are read exactly with passive declares (the ones on screen);
    /// `None` = all. The others use the management API's numbers (DESIGN §2: 1,000 passive
    /// declares in a row cost ~200 ms). Without the management API every depth is passive.
    pub exact_for: Option<BTreeSet<String>>,
    /// Reuse exchanges/bindings/version between refreshes (see [`TopologyCache`]); `None` =
    /// fetch everything every time (one-shot commands).
    pub topology: Option<std::sync::Arc<tokio::sync::Mutex<TopologyCache>>>,
    /// Namespaces known from earlier snapshots (the console's last good list): without the
    /// management API they are still read over AMQP, so the fleet shows "unknown" gates and live
    /// depths instead of vanishing (issue 17: unknown is not absent).
    pub known: BTreeSet<String>,
    /// The metrics source and its counter history between refreshes (see
    /// [`crate::broker::metrics`]); `None` = the management API's statistics only.
    pub metrics: Option<Arc<tokio::sync::Mutex<crate::broker::metrics::Metrics>>>,
}

/// Ready messages and consumers of a queue that exists; `None` inside: the management API has
/// no figure for it yet (a queue declared seconds ago, a quorum queue without a leader) —
/// unknown, never 0.
#[derive(Debug, Clone, Copy)]
struct Counts {
    ready: Option<u64>,
    consumers: Option<u64>,
}

/// Ready/consumers of `queue`: passive declare when `exact`, else the management API row;
/// `None`: the queue is missing.
async fn counts(
    session: &Session,
    exact: bool,
    info: Option<&QueueInfo>,
    queue: &str,
) -> Result<Option<Counts>, BrokerError> {
    if exact {
        return Ok(session.passive_queue(queue).await?.map(|c| Counts {
            ready: Some(u64::from(c.ready)),
            consumers: Some(u64::from(c.consumers)),
        }));
    }
    Ok(info.map(|i| Counts {
        ready: i.messages_ready,
        consumers: i.consumers,
    }))
}

/// The ready count of `queue` as [`counts`] reads it, from the refresh's queue index `qmap`.
async fn ready_of(
    session: &Session,
    exact: bool,
    qmap: &BTreeMap<&str, &QueueInfo>,
    queue: &str,
) -> Result<Option<u64>, BrokerError> {
    Ok(counts(session, exact, qmap.get(queue).copied(), queue)
        .await?
        .and_then(|c| c.ready))
}

/// Everything the management API told us in one refresh.
#[derive(Debug, Clone, Default)]
pub struct MgmtData {
    /// Queues (shared with the console's [`TopologyCache`]: a refresh clones no list).
    pub queues: Arc<Vec<QueueInfo>>,
    /// Rows newer than their copies in `queues`: the namespaces on screen, read by name while a
    /// large vhost's whole list is paced (see [`TopologyCache`]).
    pub screen: Arc<Vec<QueueInfo>>,
    /// Exchanges.
    pub exchanges: Arc<Vec<ExchangeInfo>>,
    /// Bindings.
    pub bindings: Arc<Vec<BindingInfo>>,
    /// Server version.
    pub version: Option<String>,
    /// Resource alarms in effect (see [`crate::broker::mgmt::alarms_of`]).
    pub alarms: Vec<String>,
    /// The cluster's nodes (`None`: the node list was refused).
    pub nodes: Option<Vec<NodeHealth>>,
}

/// Node health from the management API's node list.
pub fn node_health(nodes: &[crate::broker::mgmt::NodeInfo]) -> Vec<NodeHealth> {
    nodes
        .iter()
        .map(|n| NodeHealth {
            name: n.name.clone(),
            running: n.running,
            alarms: crate::broker::mgmt::alarms_of(std::slice::from_ref(n)),
            partitions: n.partitions.clone(),
        })
        .collect()
}

/// Where a queue lives, from its management API row (see [`Placement`]).
pub fn placement_of(q: &QueueInfo) -> Placement {
    let members = q.members.clone().unwrap_or_default();
    let online = q.online.clone().unwrap_or_default();
    let quorum = q.kind == "quorum";
    let state_down = q
        .state
        .as_deref()
        .is_some_and(|s| matches!(s, "down" | "minority" | "stopped" | "crashed"));
    let no_majority = quorum && !members.is_empty() && online.len() * 2 <= members.len();
    Placement {
        node: if quorum {
            q.leader.clone()
        } else {
            q.node.clone()
        },
        members,
        online,
        unavailable: state_down || no_majority,
    }
}

/// One part of the management data the console keeps between refreshes, with its age.
#[derive(Debug, Default)]
struct Part<T> {
    at: Option<std::time::Instant>,
    value: T,
}

impl<T> Part<T> {
    /// How overdue the part is: age ÷ `max_age` (∞ when never fetched or invalidated).
    fn overdue(&self, max_age: std::time::Duration) -> f64 {
        self.at.map_or(f64::INFINITY, |t| {
            t.elapsed().as_secs_f64() / max_age.as_secs_f64()
        })
    }
    fn set(&mut self, value: T) {
        self.at = Some(std::time::Instant::now());
        self.value = value;
    }
}

/// The console's management data between refreshes. Each refresh makes exactly **one**
/// management API call — for whichever part is most overdue relative to its own maximum age
/// ([`QUEUES_MAX_AGE`], [`BINDINGS_MAX_AGE`], [`NODES_MAX_AGE`], [`EXCHANGES_MAX_AGE`]) — and
/// reuses the others; only the very first refresh fetches all four at once. The broker samples
/// its statistics every 5 s anyway, and the depths of the namespaces on screen are read exactly
/// over AMQP, so a queue list up to a few seconds old costs nothing visible; on a broker with
/// 10,000 queues the lists are megabytes, and one call per refresh keeps both sides cheap.
/// [`TopologyCache::invalidate`] (after an operation) makes bindings and exchanges due at once.
///
/// A large vhost's queue list is paced by its own cost: a list that took *t* is not asked for
/// again within [`QUEUES_PACE_FACTOR`] × *t* (at 100,000 queues it takes seconds of the broker's
/// time and a tenth of a second of ours). Meanwhile the rows of the namespaces on screen come from
/// a call filtered by name (a fifth part, [`QUEUES_MAX_AGE`] old at most — paced by its own cost
/// too, since the broker lists every queue before it filters by name). The binding list is paced
/// the same way.
#[derive(Debug, Default)]
pub struct TopologyCache {
    queues: Part<Arc<Vec<QueueInfo>>>,
    /// How long the last whole queue list took (its pace).
    queues_took: std::time::Duration,
    /// The whole list with statistics did not come back in time: the list is read without them
    /// (`Mgmt::queues_where_lean`), and only the on-screen rows carry statistics.
    lean: bool,
    /// How long the last binding list took (its pace, like the queue list's).
    bindings_took: std::time::Duration,
    /// The rows of the namespaces on screen, newer than `queues` (while it is paced).
    screen: Part<Arc<Vec<QueueInfo>>>,
    /// The namespaces `screen` was read for.
    screen_for: BTreeSet<String>,
    /// How long the last read of `screen` took (its pace: a broker filters by name only after
    /// listing every queue, so on a very large vhost this call is paced too).
    screen_took: std::time::Duration,
    exchanges: Part<Arc<Vec<ExchangeInfo>>>,
    bindings: Part<Arc<Vec<BindingInfo>>>,
    /// (server version, alarms, node health)
    nodes: Part<NodesPart>,
}

impl TopologyCache {
    /// Something changed the topology (a gate flip, an init): fetch bindings, then exchanges, on
    /// the next refreshes.
    pub fn invalidate(&mut self) {
        self.bindings.at = None;
        self.exchanges.at = None;
    }
}

/// The queue list is refetched when older than this (relative to the other parts' ages).
pub const QUEUES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);
/// A whole queue list that took `t` is not asked for again within this many `t`.
pub const QUEUES_PACE_FACTOR: u32 = 10;
/// Bindings (the gates): the management API's own sampling interval.
pub const BINDINGS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);
/// The node list (version, memory/disk alarms): small, and the alarm badge should not lag.
pub const NODES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);
/// Exchanges (a new namespace appears once its entry exchange is listed).
pub const EXCHANGES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(15);

/// Server version, alarms and node health, from the node list.
type NodesPart = (Option<String>, Vec<String>, Option<Vec<NodeHealth>>);

/// The version, alarms and nodes from the node list; without the `monitoring` tag the node list
/// is refused and the overview gives the version (alarms and nodes stay unknown).
async fn fetch_nodes(mgmt: &Mgmt) -> Result<NodesPart, crate::broker::mgmt::MgmtError> {
    match mgmt.nodes().await {
        Ok(nodes) => {
            let from_nodes = nodes
                .iter()
                .flat_map(|n| n.applications.iter())
                .find(|a| a.name == "rabbit")
                .map(|a| a.version.clone());
            // A node without the metrics collector lists no applications; its overview still
            // names the version.
            let version = match from_nodes {
                Some(v) => Some(v),
                None => mgmt
                    .overview()
                    .await
                    .ok()
                    .map(|o| o.rabbitmq_version)
                    .filter(|v| !v.is_empty()),
            };
            Ok((
                version,
                crate::broker::mgmt::alarms_of(&nodes),
                Some(node_health(&nodes)),
            ))
        }
        Err(_) => Ok((
            mgmt.overview().await.ok().map(|o| o.rabbitmq_version),
            Vec::new(),
            None,
        )),
    }
}

/// Fetch the management data with one API call (see [`TopologyCache`]).
pub async fn fetch_mgmt_cached(
    mgmt: &Mgmt,
    cache: &tokio::sync::Mutex<TopologyCache>,
    profile: &Profile,
    on_screen: Option<&BTreeSet<String>>,
) -> Result<MgmtData, crate::broker::mgmt::MgmtError> {
    let mut c = cache.lock().await;
    if c.queues.at.is_none() || c.nodes.at.is_none() {
        if !c.lean
            && c.queues_took.is_zero()
            && let Ok(o) = mgmt.overview().await
            && o.object_totals
                .and_then(|t| t.queues)
                .is_some_and(|n| n > crate::broker::mgmt::LARGE_BROKER_QUEUES)
        {
            c.lean = true;
        }
        let started = std::time::Instant::now();
        let d = match fetch_mgmt(mgmt, profile, c.lean).await {
            Err(e) if too_large(&e) && !c.lean => {
                c.lean = true;
                fetch_mgmt(mgmt, profile, true).await?
            }
            other => other?,
        };
        c.queues_took = started.elapsed();
        c.screen = Part::default();
        c.queues.set(d.queues.clone());
        c.exchanges.set(d.exchanges.clone());
        c.bindings.set(d.bindings.clone());
        c.nodes
            .set((d.version.clone(), d.alarms.clone(), d.nodes.clone()));
        return Ok(d);
    }
    // The most overdue part; ties go to the queue list.
    let queues_max_age = if c.lean {
        // Paced, and the on-screen rows (with statistics) come by name in between.
        (QUEUES_MAX_AGE * 2).max(c.queues_took * QUEUES_PACE_FACTOR)
    } else {
        QUEUES_MAX_AGE.max(c.queues_took * QUEUES_PACE_FACTOR)
    };
    // Only convention namespaces can be asked for by name; an adoption's rows are in the list.
    let screen: BTreeSet<String> = on_screen
        .filter(|_| (c.lean || queues_max_age > QUEUES_MAX_AGE) && profile.namespaces.is_empty())
        .cloned()
        .unwrap_or_default();
    if screen != c.screen_for {
        c.screen = Part::default();
        c.screen_for = screen.clone();
    }
    let screen_due = if screen.is_empty() {
        f64::NEG_INFINITY
    } else {
        c.screen
            .overdue(QUEUES_MAX_AGE.max(c.screen_took * QUEUES_PACE_FACTOR))
    };
    let due = [
        (0, c.queues.overdue(queues_max_age)),
        (
            1,
            c.bindings
                .overdue(BINDINGS_MAX_AGE.max(c.bindings_took * QUEUES_PACE_FACTOR)),
        ),
        (2, c.nodes.overdue(NODES_MAX_AGE)),
        (3, c.exchanges.overdue(EXCHANGES_MAX_AGE)),
        (4, screen_due),
    ]
    .into_iter()
    .fold(
        (0, f64::NEG_INFINITY),
        |best, p| if p.1 > best.1 { p } else { best },
    )
    .0;
    match due {
        1 => {
            let started = std::time::Instant::now();
            let b = keep_gate_bindings(mgmt.bindings().await?);
            c.bindings_took = started.elapsed();
            c.bindings.set(Arc::new(b));
        }
        2 => {
            let n = fetch_nodes(mgmt).await?;
            c.nodes.set(n);
        }
        3 => {
            let x = mgmt.exchanges().await?;
            c.exchanges.set(Arc::new(x));
        }
        4 => {
            let prefixes: Vec<String> = screen.iter().map(|n| format!("{n}.")).collect();
            let started = std::time::Instant::now();
            let rows = mgmt.queues_with_prefixes(&prefixes).await?;
            c.screen_took = started.elapsed();
            c.screen.set(Arc::new(rows));
        }
        _ => {
            // Drop the old list before parsing the new one (one list alive at a time); if the
            // call fails, the next refresh refetches everything (`at` is cleared).
            c.queues.value = Arc::default();
            c.queues.at = None;
            let started = std::time::Instant::now();
            let keep = namespace_rows(profile);
            let q = if c.lean {
                mgmt.queues_where_lean(&keep).await?
            } else {
                match mgmt.queues_where(&keep).await {
                    Err(e) if too_large(&e) => {
                        c.lean = true;
                        mgmt.queues_where_lean(&keep).await?
                    }
                    other => other?,
                }
            };
            c.queues_took = started.elapsed();
            c.screen = Part::default();
            c.queues.set(Arc::new(q));
        }
    }
    Ok(MgmtData {
        queues: c.queues.value.clone(),
        screen: c.screen.value.clone(),
        exchanges: c.exchanges.value.clone(),
        bindings: c.bindings.value.clone(),
        version: c.nodes.value.0.clone(),
        alarms: c.nodes.value.1.clone(),
        nodes: c.nodes.value.2.clone(),
    })
}

/// Did the whole queue list fail for its size (the broker did not answer in time, or dropped
/// the request: it closes a request after 60 s)? Then it is asked for without statistics.
fn too_large(e: &crate::broker::mgmt::MgmtError) -> bool {
    use crate::broker::mgmt::MgmtError;
    matches!(
        e,
        MgmtError::Timeout { .. }
            | MgmtError::Unreachable { .. }
            | MgmtError::Status {
                status: 500..=599,
                ..
            }
    )
}

/// Which rows of the queue list a snapshot can use: a convention namespace's queues are named
/// `NS.vN`, `NS.dlq` and `NS.unrouted`; an adopted namespace's may be named anything, so a
/// profile with adoptions keeps every row. On a vhost of 100,000 queues most are nobody's
/// namespace: their rows are read and dropped, not held.
pub fn namespace_rows(profile: &Profile) -> impl Fn(&str) -> bool + Sync + use<> {
    let every = !profile.namespaces.is_empty();
    move |name: &str| {
        every
            || name.rsplit_once('.').is_some_and(|(ns, last)| {
                !ns.is_empty()
                    && (last == "dlq"
                        || last == "unrouted"
                        || crate::model::xdeath::is_version_name(last))
            })
    }
}

/// The default exchange's implicit binding of every queue is no gate: not kept.
fn keep_gate_bindings(b: Vec<BindingInfo>) -> Vec<BindingInfo> {
    b.into_iter().filter(|b| !b.source.is_empty()).collect()
}

/// Fetch the management data (queues, exchanges, bindings, version and alarms). The node list
/// gives both the version and the alarms in one call; a user without the `monitoring` tag may not
/// read it, and then the overview gives the version (alarms stay unknown).
pub async fn fetch_mgmt(
    mgmt: &Mgmt,
    profile: &Profile,
    lean: bool,
) -> Result<MgmtData, crate::broker::mgmt::MgmtError> {
    let keep = namespace_rows(profile);
    let queues = async {
        if lean {
            mgmt.queues_where_lean(&keep).await
        } else {
            mgmt.queues_where(&keep).await
        }
    };
    let (q, x, b, n) = tokio::join!(queues, mgmt.exchanges(), mgmt.bindings(), fetch_nodes(mgmt));
    let (version, alarms, nodes) = n?;
    Ok(MgmtData {
        queues: Arc::new(q?),
        screen: Arc::default(),
        exchanges: Arc::new(x?),
        bindings: Arc::new(keep_gate_bindings(b?)),
        version,
        alarms,
        nodes,
    })
}

/// The gate of an entry exchange from the binding list, plus problems (a queue bound twice).
pub fn gate_from_bindings(
    entry: &str,
    versions: &BTreeMap<String, String>,
    bindings: &[BindingInfo],
) -> (GateSplit, Vec<String>) {
    let mut split = BTreeMap::new();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for b in bindings
        .iter()
        .filter(|b| b.source == entry && b.destination_type == "queue")
    {
        *seen.entry(b.destination.as_str()).or_default() += 1;
        let version = versions
            .iter()
            .find(|(_, q)| **q == b.destination)
            .map(|(v, _)| v.clone());
        match (version, b.routing_key.trim().parse::<u32>()) {
            (Some(v), Ok(w)) => {
                split.entry(v).or_insert(w);
            }
            (Some(v), Err(_)) => problems.push(format!(
                "{v}: binding key `{}` is not a weight",
                crate::text::sanitize(&b.routing_key)
            )),
            (None, _) => problems.push(format!(
                "entry exchange is bound to `{}`, which is not a version queue",
                crate::text::sanitize(&b.destination)
            )),
        }
    }
    for (q, n) in seen {
        if n > 1 {
            problems.push(format!(
                "queue `{}` has {n} bindings: the consistent-hash exchange routes by the first only, so the binding list does not show the real split (repair: `hopback gate set` rebinds it once)",
                crate::text::sanitize(q)
            ));
        }
    }
    // The bound weights as they are: a lone version keeps its key (its share is 100 %, see
    // `GateSplit::idle_weight`).
    (GateSplit(split), problems)
}

/// The queue's publish counter; `None` when the broker collects no metrics (as [`rates_of`]).
fn published_total(q: &QueueInfo) -> Option<u64> {
    if q.message_stats.is_none() && q.messages.is_none() {
        return None;
    }
    Some(q.message_stats.as_ref().map_or(0, |s| s.publish))
}

/// Rejected per second from the management API's sampled rates: deliveries in manual-ack mode
/// that were neither acknowledged nor delivered again; `None` when it collects no metrics.
fn rejected_of(q: &QueueInfo) -> Option<f64> {
    rates_of(q)?;
    let Some(s) = q.message_stats.as_ref() else {
        return Some(0.0);
    };
    let delivered_ack = s.deliver_details.rate + s.get_details.rate;
    Some((delivered_ack - s.ack_details.rate - s.redeliver_details.rate).max(0.0))
}

fn rates_of(q: &QueueInfo) -> Option<Rates> {
    // No message stats and no message counts: the broker collects no metrics (stats disabled,
    // `management_agent.disable_metrics_collector`) — unknown, not 0/s. Counts without stats: a
    // queue that has seen no traffic yet, really 0/s.
    if q.message_stats.is_none() && q.messages.is_none() {
        return None;
    }
    let s = q.message_stats.as_ref();
    Some(Rates {
        publish: s.map(|s| s.publish_details.rate).unwrap_or(0.0),
        deliver: s.map(|s| s.deliver_get_details.rate).unwrap_or(0.0),
        ack: s.map(|s| s.ack_details.rate).unwrap_or(0.0),
        redeliver: s.map(|s| s.redeliver_details.rate).unwrap_or(0.0),
    })
}

/// Is this a quorum queue whose every browse counts against a delivery limit it could reach
/// (unsafe to browse)? `server_major` is the broker's major version when known: RabbitMQ 4.0+
/// gives every quorum queue a default limit of 20 even without `x-delivery-limit`, earlier
/// versions none. A quorum queue with an explicit limit of at least [`BROWSE_SAFE_DELIVERY_LIMIT`]
/// (or `-1`, 4.x's "unlimited") — the DLQ `init` makes, issue 19 item 4 — is safe.
pub fn is_quorum_with_limit(q: Option<&QueueInfo>, server_major: Option<u32>) -> bool {
    let Some(q) = q else { return false };
    if q.kind != "quorum" {
        return false;
    }
    match effective_delivery_limit(q) {
        Some(limit) => limit < BROWSE_SAFE_DELIVERY_LIMIT,
        None => server_major.is_none_or(|m| m >= 4),
    }
}

/// RabbitMQ 4.x's delivery limit of a quorum queue that sets none.
pub const QUORUM_DEFAULT_DELIVERY_LIMIT: i64 = 20;

/// A quorum queue whose delivery limit is at least this can be browsed: a message would have to
/// be browsed that many times before the broker drops it.
pub const BROWSE_SAFE_DELIVERY_LIMIT: i64 = 10_000;

/// The delivery limit in effect: the lower of the `x-delivery-limit` argument and the policy's
/// `delivery-limit` (`-1`, unlimited, counts as no limit at all); `None` when neither sets one.
pub fn effective_delivery_limit(q: &QueueInfo) -> Option<i64> {
    let arg = q.arguments.get("x-delivery-limit").and_then(|v| v.as_i64());
    let policy = q
        .effective_policy_definition
        .as_ref()
        .and_then(|d| d.get("delivery-limit"))
        .and_then(|v| v.as_i64());
    [arg, policy]
        .into_iter()
        .flatten()
        .map(|l| if l < 0 { i64::MAX } else { l })
        .min()
}

/// The major version of a `3.10.8` / `4.0.5` version string.
pub fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

/// May `queue` be a quorum queue (each browse or hold counts as a delivery)? Asked of the
/// management API. The guard fails closed (issue 18): a type that cannot be known — no API, the
/// API failed or refused, the queue not in its list — counts as quorum, so nothing is browsed on
/// a guess (`--force` overrides). The one lookup the browser, the purge, the rollback's
/// dead-letter count and the console share.
pub async fn queue_is_quorum(mgmt: Option<&Mgmt>, queue: &str) -> bool {
    !matches!(
        queue_kind(mgmt, queue).await,
        QueueKind::Classic | QueueKind::QuorumBrowseSafe
    )
}

/// A queue's type as far as browsing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueKind {
    /// Classic: browsing (get + requeue) is harmless.
    Classic,
    /// Quorum with a delivery limit no browse reaches (see [`is_quorum_with_limit`]): harmless.
    QuorumBrowseSafe,
    /// Quorum: every browse counts against the delivery limit.
    Quorum,
    /// Cannot be known, and why (no API, refused, not listed).
    Unknown(String),
}

/// The type of `queue` per the management API (see [`QueueKind`]).
pub async fn queue_kind(mgmt: Option<&Mgmt>, queue: &str) -> QueueKind {
    let Some(m) = mgmt else {
        return QueueKind::Unknown("no management API is configured".into());
    };
    // A queue declared a moment ago may not be listed yet: the management API learns of new
    // queues asynchronously (seen under load on 3.10). Ask again for a few seconds before
    // calling its type unknown.
    let deadline = std::time::Instant::now() + NOT_LISTED_PATIENCE;
    loop {
        match m.queue(queue).await {
            Ok(Some(q)) if q.kind == "quorum" => {
                // The broker's version only matters for a quorum queue without a limit of its own.
                let major = match effective_delivery_limit(&q) {
                    Some(_) => None,
                    None => m
                        .overview()
                        .await
                        .ok()
                        .and_then(|o| major_version(&o.rabbitmq_version)),
                };
                return if is_quorum_with_limit(Some(&q), major) {
                    QueueKind::Quorum
                } else {
                    QueueKind::QuorumBrowseSafe
                };
            }
            Ok(Some(_)) => return QueueKind::Classic,
            Ok(None) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok(None) => {
                return QueueKind::Unknown("the management API does not list it".into());
            }
            Err(e) => return QueueKind::Unknown(format!("the management API failed: {e}")),
        }
    }
}

/// How long [`queue_kind`] waits for the management API to list a queue it does not know yet.
const NOT_LISTED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The browse guard with its reason: `Ok(is_quorum)` to pass on to the browser (which refuses a
/// quorum queue itself unless forced), or — when the type cannot be known and the browse is not
/// forced — the refusal, saying why it is unknown (e.g. the missing permission).
pub async fn browse_guard(
    mgmt: Option<&Mgmt>,
    queue: &str,
    force: bool,
) -> Result<bool, BrokerError> {
    match queue_kind(mgmt, queue).await {
        QueueKind::Classic | QueueKind::QuorumBrowseSafe => Ok(false),
        QueueKind::Quorum => Ok(true),
        QueueKind::Unknown(_) if force => Ok(true),
        QueueKind::Unknown(why) => {
            let text = format!(
                "refusing to browse `{}`: its type is unknown ({}), and a quorum queue counts every browse as a delivery against its delivery limit (use --force if you know it is classic)",
                crate::text::sanitize(queue),
                crate::text::sanitize(&why)
            );
            // Unknown because the management API refused this user: a refusal (exit 3), like
            // every other missing permission.
            if crate::broker::session::is_permission_denial(&why) {
                Err(BrokerError::AccessRefused(text))
            } else {
                Err(BrokerError::Other(text))
            }
        }
    }
}

/// Collect a snapshot. Without the management API, `namespaces` must be known from `opts` or the
/// config; versions are then probed as `NS.v1` … `NS.v9`.
pub async fn collect(
    session: &Session,
    mgmt: Option<&Mgmt>,
    cfg: &Config,
    opts: &CollectOptions,
) -> Result<FleetSnapshot, BrokerError> {
    let mut snap = FleetSnapshot {
        taken_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let data = match mgmt {
        Some(m) => match match &opts.topology {
            Some(cache) => fetch_mgmt_cached(m, cache, &cfg.profile, opts.exact_for.as_ref()).await,
            None => fetch_mgmt(m, &cfg.profile, false).await,
        } {
            Ok(d) => {
                snap.mgmt_available = true;
                snap.server_version = d.version.clone();
                snap.broker_alarms = d.alarms.clone();
                snap.nodes = d.nodes.clone();
                Some(d)
            }
            Err(e) => {
                snap.mgmt_error = Some(format!("{e}; hint: {}", e.hint()));
                snap.mgmt_refused = e.is_refusal();
                None
            }
        },
        None => {
            snap.mgmt_error = Some("management API not configured".into());
            None
        }
    };
    // The management API did not name the version (no API, no `monitoring` tag, a node that
    // lists no applications): the broker's own AMQP server properties do.
    if snap.server_version.is_none() {
        snap.server_version = session.server_version().await;
    }
    // Our own connection blocked (it published during an alarm): known even without the API.
    if let Some(a) = session.alarm()
        && !snap.broker_alarms.iter().any(|x| x.starts_with(&a))
    {
        snap.broker_alarms.push(a);
    }
    let mut found: Vec<DiscoveredNamespace> = match &data {
        Some(d) => discover(&d.queues, &d.exchanges, &cfg.profile),
        None => {
            let mut names: BTreeSet<String> = cfg.profile.namespaces.keys().cloned().collect();
            names.extend(opts.known.iter().cloned());
            if let Some(ns) = &opts.namespace {
                names.insert(ns.clone());
            }
            let mut out = Vec::new();
            for ns in names {
                let names = Names::of_profile(&cfg.profile, &cfg.alerts, &ns);
                let mut versions = BTreeMap::new();
                // Without the queue list: an adoption's named queues, else probe v1…v9.
                let candidates: Vec<(String, String)> = if names.known_versions().is_empty() {
                    (1..=9)
                        .filter_map(|i| {
                            let v = format!("v{i}");
                            names.version_queue(&v).map(|q| (v, q))
                        })
                        .collect()
                } else {
                    names.known_versions().into_iter().collect()
                };
                for (v, q) in candidates {
                    if session.passive_queue(&q).await?.is_some() {
                        versions.insert(v, q);
                    }
                }
                out.push(DiscoveredNamespace {
                    name: ns.clone(),
                    convention: !cfg.profile.namespaces.contains_key(&ns),
                    names,
                    versions,
                });
            }
            out
        }
    };
    if let Some(ns) = &opts.namespace {
        found.retain(|d| &d.name == ns);
    }
    let qmap: BTreeMap<&str, &QueueInfo> = data
        .as_ref()
        .map(|d| {
            d.queues
                .iter()
                .chain(d.screen.iter())
                .map(|q| (q.name.as_str(), q))
                .collect()
        })
        .unwrap_or_default();
    // Indexed once per refresh: with 1,000 namespaces a scan of every exchange and binding per
    // namespace was O(namespaces × bindings) (docs/performance.md).
    let xmap: BTreeMap<&str, &ExchangeInfo> = data
        .as_ref()
        .map(|d| d.exchanges.iter().map(|x| (x.name.as_str(), x)).collect())
        .unwrap_or_default();
    let mut by_source: BTreeMap<&str, Vec<BindingInfo>> = BTreeMap::new();
    if let Some(d) = &data {
        // The entry exchanges, and the exchanges a `gate hash-on` change may have put the gate
        // behind them on.
        let gates: Vec<[String; 2]> = found.iter().map(|n| n.names.hash_gates()).collect();
        let entries: BTreeSet<&str> = found
            .iter()
            .map(|n| n.names.entry.as_str())
            .chain(gates.iter().flatten().map(String::as_str))
            .collect();
        for b in d
            .bindings
            .iter()
            .filter(|b| entries.contains(b.source.as_str()))
        {
            by_source
                .entry(b.source.as_str())
                .or_default()
                .push(b.clone());
        }
    }
    for d in found {
        let mut ns = NamespaceSnapshot {
            name: d.name.clone(),
            convention: d.convention,
            entry_exchange: d.names.entry.clone(),
            dlq: d.names.dlq.clone(),
            unrouted: d.names.unrouted.clone(),
            ..Default::default()
        };
        if data.is_some() {
            ns.legacy = crate::broker::topology::legacy_parts_by(&d, &|n| qmap.get(n).copied());
            ns.entry_kind = xmap.get(d.names.entry.as_str()).map(|x| x.kind.clone());
            let bindings_of = |x: &str| by_source.get(x).map(Vec::as_slice).unwrap_or(&[]);
            let layout = xmap.get(d.names.entry.as_str()).map(|x| {
                let lookup = |n: &str| xmap.get(n).map(|x| (*x).clone());
                crate::broker::hashgate::layout(&d.names, x, &lookup, bindings_of(&d.names.entry))
            });
            let gate_exchange = layout
                .as_ref()
                .map_or(d.names.entry.as_str(), |l| l.gate.as_str());
            let (gate, mut problems) =
                gate_from_bindings(gate_exchange, &d.versions, bindings_of(gate_exchange));
            if let Some(l) = &layout {
                problems.extend(l.problems.iter().cloned());
                ns.hash_on = Some(l.hash_text());
                if l.behind() {
                    ns.entry_kind = Some(l.gate_kind.clone());
                    ns.gate_exchange = Some(l.gate.clone());
                }
            }
            ns.gate = Some(gate);
            ns.gate_problems = problems;
        }
        // A namespace this user may not read (another team's DLQ) is marked, not fatal: the
        // others are still shown (least privilege, issue 36).
        let server_version = snap.server_version.clone();
        let read: Result<(), BrokerError> = async {
            let exact = data.is_none()
                || opts
                    .exact_for
                    .as_ref()
                    .is_none_or(|set| set.contains(&d.name));
            for (v, q) in &d.versions {
                let info = qmap.get(q.as_str()).copied();
                let passive = counts(session, exact, info, q).await?;
                let weight = ns.gate.as_ref().map(|g| g.weight(v)).unwrap_or(0);
                let placement = info.map(placement_of);
                let unavailable = placement.as_ref().is_some_and(|p| p.unavailable);
                let major = server_version.as_deref().and_then(major_version);
                let delivery_limit = info.and_then(|q| {
                    effective_delivery_limit(q)
                        .filter(|l| *l != i64::MAX)
                        .or_else(|| {
                            (q.kind == "quorum" && major.is_some_and(|m| m >= 4))
                                .then_some(QUORUM_DEFAULT_DELIVERY_LIMIT)
                        })
                });
                let dead_letter_target = info.map(|q| {
                    q.arguments.contains_key("x-dead-letter-exchange")
                        || q.effective_policy_definition
                            .as_ref()
                            .and_then(|d| d.get("dead-letter-exchange"))
                            .is_some()
                });
                ns.versions.push(VersionSnapshot {
                    version: v.clone(),
                    queue: q.clone(),
                    // A queue the API lists whose node is down is unavailable, not missing.
                    exists: passive.is_some() || placement.as_ref().is_some_and(|p| p.unavailable),
                    placement,
                    queue_type: info.map(|i| i.kind.clone()),
                    delivery_limit,
                    dead_letter_target,
                    weight,
                    gate_percent: ns.gate.as_ref().map(|g| g.percent(v)).unwrap_or(0.0),
                    ready: passive
                        .and_then(|p| p.ready)
                        .or_else(|| info.and_then(|i| i.messages_ready)),
                    unacked: info.and_then(|i| i.messages_unacknowledged),
                    consumers: passive
                        .and_then(|p| p.consumers)
                        .or_else(|| info.and_then(|i| i.consumers)),
                    // An unavailable queue's last rates are history, not "0/s now": unknown.
                    rates: if unavailable {
                        None
                    } else {
                        info.and_then(rates_of)
                    },
                    published_total: info.and_then(published_total),
                    rejected_rate: if unavailable {
                        None
                    } else {
                        info.and_then(rejected_of)
                    },
                    ..Default::default()
                });
            }
            ns.dlq_placement = qmap.get(d.names.dlq.as_str()).map(|q| placement_of(q));
            ns.unrouted_placement = qmap.get(d.names.unrouted.as_str()).map(|q| placement_of(q));
            ns.dlq_depth = ready_of(session, exact, &qmap, &d.names.dlq).await?;
            ns.dlq_rate = qmap
                .get(d.names.dlq.as_str())
                .and_then(|q| rates_of(q))
                .map(|r| r.publish);
            ns.unrouted_depth = ready_of(session, exact, &qmap, &d.names.unrouted).await?;
            if let (Some(cap), Some(depth)) = (opts.attribute_dead_letters, ns.dlq_depth) {
                let dlq_info = qmap.get(d.names.dlq.as_str()).copied();
                // Only a DLQ the management API says is classic is browsed (fail closed).
                let major = server_version.as_deref().and_then(major_version);
                if depth > 0 && dlq_info.is_some_and(|i| !is_quorum_with_limit(Some(i), major)) {
                    let msgs = browse(
                        session,
                        &d.names.dlq,
                        BrowseOptions {
                            skip: 0,
                            take: cap,
                            max_body_bytes: 0,
                            force: false,
                        },
                        false,
                    )
                    .await?;
                    let mut by_version: BTreeMap<String, u64> = BTreeMap::new();
                    for m in &msgs {
                        if crate::broker::headers::unreadable_reason(
                            m.properties.headers().as_ref(),
                        )
                        .is_some()
                        {
                            ns.dead_letters_unreadable += 1;
                        }
                        let a = attribute(m.properties.headers().as_ref());
                        *ns.dead_letters_by_reason
                            .entry(a.reason.as_str().to_string())
                            .or_default() += 1;
                        if let Some(q) = a.origin_queue
                            && let Some((v, _)) = d.versions.iter().find(|(_, vq)| **vq == q)
                        {
                            *by_version.entry(v.clone()).or_default() += 1;
                        }
                    }
                    ns.dead_letters_sampled = Some(msgs.len() as u64);
                    for vs in &mut ns.versions {
                        vs.dead_letters = Some(by_version.get(&vs.version).copied().unwrap_or(0));
                    }
                } else if depth == 0 {
                    ns.dead_letters_sampled = Some(0);
                    for vs in &mut ns.versions {
                        vs.dead_letters = Some(0);
                    }
                }
            }
            Ok(())
        }
        .await;
        match read {
            Ok(()) => {}
            Err(e) if e.is_refusal() => ns.no_permission = Some(e.to_string()),
            Err(e) => return Err(e),
        }
        snap.namespaces.push(ns);
    }
    match &opts.metrics {
        Some(m) => m.lock().await.apply(mgmt, &mut snap).await,
        None => {
            crate::broker::metrics::Metrics::management_only(&cfg.profile)
                .apply(mgmt, &mut snap)
                .await
        }
    }
    Ok(snap)
}

/// The most namespaces `status` samples at once (each holds a tap queue for the window).
pub const SAMPLE_MAX_NAMESPACES: usize = 20;

/// A one-shot reading's error rates (`status`): count each namespace's dead letters per version
/// for `window` through a temporary tap on its DLX (all namespaces at once), and divide by the
/// management API's ack rates. Returns why it could not, if it could not.
pub async fn sample_error_rates(
    session: &Session,
    cfg: &Config,
    snap: &mut FleetSnapshot,
    window: std::time::Duration,
) -> Option<String> {
    if snap.namespaces.len() > SAMPLE_MAX_NAMESPACES {
        return Some(format!(
            "error rates are sampled for at most {SAMPLE_MAX_NAMESPACES} namespaces: name one (`hopback status NS`)"
        ));
    }
    let targets = crate::broker::tap::tap_targets(cfg, snap);
    let counts = futures::future::join_all(
        targets
            .iter()
            .map(|t| crate::broker::tap::count_window_by_version(session, t, window)),
    )
    .await;
    let mut failed = None;
    let exact = snap.metrics_source == Some(crate::model::metrics::MetricsSource::Prometheus);
    for (ns, c) in snap.namespaces.iter_mut().zip(counts) {
        match c {
            Ok(c) => {
                let per_s: BTreeMap<String, f64> = c
                    .into_iter()
                    .map(|(v, n)| (v, n as f64 / window.as_secs_f64()))
                    .collect();
                apply_dead_letter_rates(ns, &per_s, exact);
                // A version whose error rate comes from the tap, and whose queue the
                // management API has not sampled yet (no delivery or ack rate), would read
                // 100 % from its dead letters alone: unknown instead.
                for v in &mut ns.versions {
                    if !exact && v.rates.is_some_and(|r| r.deliver <= 0.0 && r.ack <= 0.0) {
                        v.error_rate = None;
                    }
                }
            }
            Err(e) => failed = Some(format!("cannot tap the dead letters of `{}`: {e}", ns.name)),
        }
    }
    failed
}

/// Fill dead-letter rates from live per-version dead-letter rates (the tap), and the error rate
/// from them unless `exact_counters` (Prometheus: its counters are exact and as fresh as the
/// tap, and the tap also counts expired and over-length dead letters, which are no worker's
/// error). The management API's counters are 5 s samples: the tap is faster there (an alert
/// within a second of the first rejection), so it wins where it is bound.
pub fn apply_dead_letter_rates(
    ns: &mut NamespaceSnapshot,
    dead_per_s: &BTreeMap<String, f64>,
    exact_counters: bool,
) {
    for v in &mut ns.versions {
        let dl = dead_per_s.get(&v.version).copied().unwrap_or(0.0);
        v.dead_letter_rate = Some(dl);
        if !(exact_counters && v.rejected_rate.is_some()) {
            v.error_rate = match v.rates {
                Some(r) => error_rate(r.ack, dl),
                None => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_unknown_when_the_broker_collects_no_metrics() {
        let q = |json: serde_json::Value| -> QueueInfo { serde_json::from_value(json).unwrap() };
        // Stats disabled: neither counts nor message stats.
        assert_eq!(rates_of(&q(serde_json::json!({"name": "a"}))), None);
        // Counts but no traffic yet: really 0/s.
        let idle = rates_of(&q(serde_json::json!({"name": "a", "messages": 0}))).unwrap();
        assert_eq!(idle.publish, 0.0);
        let busy = rates_of(&q(serde_json::json!({"name": "a", "messages": 3,
            "message_stats": {"publish_details": {"rate": 2.5}}})))
        .unwrap();
        assert_eq!(busy.publish, 2.5);
    }

    #[test]
    fn browse_safety_follows_the_delivery_limit() {
        let q = |json: serde_json::Value| -> QueueInfo { serde_json::from_value(json).unwrap() };
        let classic = q(serde_json::json!({"name": "a", "type": "classic"}));
        assert!(!is_quorum_with_limit(Some(&classic), Some(4)));
        let bare = q(serde_json::json!({"name": "a", "type": "quorum"}));
        assert!(
            is_quorum_with_limit(Some(&bare), Some(4)),
            "4.x default of 20"
        );
        assert!(!is_quorum_with_limit(Some(&bare), Some(3)), "3.x: no limit");
        assert!(
            is_quorum_with_limit(Some(&bare), None),
            "version unknown: fail closed"
        );
        let store = q(serde_json::json!({"name": "a", "type": "quorum",
            "arguments": {"x-delivery-limit": 1_000_000}}));
        assert!(!is_quorum_with_limit(Some(&store), Some(4)));
        let unlimited = q(serde_json::json!({"name": "a", "type": "quorum",
            "arguments": {"x-delivery-limit": -1}}));
        assert!(!is_quorum_with_limit(Some(&unlimited), Some(4)));
        // A policy with a lower limit wins.
        let policed = q(serde_json::json!({"name": "a", "type": "quorum",
            "arguments": {"x-delivery-limit": 1_000_000},
            "effective_policy_definition": {"delivery-limit": 5}}));
        assert!(is_quorum_with_limit(Some(&policed), Some(4)));
        assert_eq!(effective_delivery_limit(&policed), Some(5));
    }

    fn b(src: &str, dst: &str, key: &str) -> BindingInfo {
        BindingInfo {
            source: src.into(),
            destination: dst.into(),
            destination_type: "queue".into(),
            routing_key: key.into(),
        }
    }

    #[test]
    fn gate_reads_weights_and_flags_double_binding() {
        let versions: BTreeMap<String, String> =
            [("v1".into(), "e.v1".into()), ("v2".into(), "e.v2".into())].into();
        let (g, p) = gate_from_bindings(
            "e",
            &versions,
            &[
                b("e", "e.v1", "90"),
                b("e", "e.v2", "10"),
                b("x", "e.v2", "5"),
            ],
        );
        assert_eq!(g.describe(), "v1=90 v2=10");
        assert!(p.is_empty());
        let (g, p) = gate_from_bindings("e", &versions, &[b("e", "e.v2", "10")]);
        // The weight the broker has; the share says a lone version routes everything.
        assert_eq!(g.describe(), "v2=10");
        assert_eq!(g.percent("v2"), 100.0);
        assert!(g.idle_weight_note().is_some());
        assert!(p.is_empty());
        let (g, p) = gate_from_bindings(
            "e",
            &versions,
            &[b("e", "e.v1", "10"), b("e", "e.v1", "90")],
        );
        assert_eq!(g.weight("v1"), 10);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("2 bindings"));
    }
}
