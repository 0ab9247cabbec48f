//! The topology convention of DESIGN §1: names, `init` (idempotent declaration), and discovery of
//! convention and adopted namespaces.
//!
//! Declaring over an existing object with other arguments makes the broker close the channel with
//! 406 PRECONDITION_FAILED; every declaration here uses its own throwaway channel so that error
//! becomes a clear message instead of killing the session.

use std::collections::{BTreeMap, BTreeSet};

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;

use crate::broker::mgmt::{ExchangeInfo, QueueInfo};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, short, timed};
use crate::config::Profile;
use crate::model::hash::HashOn;
use crate::model::xdeath::is_version_name;

/// Queue type of version queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated, durable (default).
    Quorum,
    /// Classic durable queue.
    Classic,
}

impl QueueType {
    /// Every queue type with its one-line description (the CLI's `--queue-type` values).
    pub const TABLE: &'static [(&'static str, &'static str)] = &[
        ("quorum", "Replicated, durable (default)"),
        ("classic", "Classic durable queue"),
    ];
}

impl std::str::FromStr for QueueType {
    type Err = crate::model::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quorum" => Ok(QueueType::Quorum),
            "classic" => Ok(QueueType::Classic),
            other => Err(format!("unknown queue type `{other}`; use quorum or classic").into()),
        }
    }
}

/// The object names of a namespace: the one resolver, [`crate::topology::Namespace`].
pub type Names = crate::topology::Namespace;

/// Check a namespace name: printable, no dots at the ends, fits in AMQP's 255 bytes with suffixes.
pub fn validate_namespace(ns: &str) -> Result<(), crate::model::Invalid> {
    if ns.is_empty() {
        return Err("the namespace name is empty".into());
    }
    if ns.len() > 200 {
        return Err(format!(
            "the namespace name is {} bytes; at most 200 leave room for `.unrouted`",
            ns.len()
        )
        .into());
    }
    if ns.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the namespace name contains whitespace or control characters".into());
    }
    if ns.starts_with('.') || ns.ends_with('.') || ns.starts_with("amq.") {
        return Err("the namespace name may not start or end with `.` or start with `amq.`".into());
    }
    Ok(())
}

/// Parse `v1,v2` into validated version names.
pub fn parse_versions(text: &str) -> Result<Vec<String>, crate::model::Invalid> {
    let mut out: Vec<String> = Vec::new();
    for v in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !is_version_name(v) {
            return Err(format!("`{v}` is not a version name; use v1, v2, …").into());
        }
        if out.iter().any(|x| x == v) {
            return Err(format!("version `{v}` is listed twice").into());
        }
        out.push(v.to_string());
    }
    if out.is_empty() {
        return Err("no versions given; use --versions v1,v2".into());
    }
    Ok(out)
}

/// What `init` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InitReport {
    /// Namespace.
    pub namespace: String,
    /// Objects created now.
    pub created: Vec<String>,
    /// Objects that were already there with the right arguments.
    pub unchanged: Vec<String>,
    /// Gate binding made (only for a new entry exchange).
    pub gate: Option<String>,
    /// What a new entry exchange hashes (`message_id`, `correlation_id`, `header:id`,
    /// `routing-key`); `None` when the entry existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Objects kept as an earlier hopback built them (not the cluster-safe convention of a
    /// quorum namespace): `hopback migrate NS` moves them over.
    pub legacy: Vec<String>,
}

impl InitReport {
    /// Did this run change anything?
    pub fn changed(&self) -> bool {
        !self.created.is_empty() || self.gate.is_some()
    }

    /// Note `kind name` as unchanged (it `existed`) or created; returns whether it was created.
    fn record(&mut self, existed: bool, kind: &str, name: &str) -> bool {
        let list = if existed {
            &mut self.unchanged
        } else {
            &mut self.created
        };
        list.push(format!("{kind} {name}"));
        !existed
    }
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

async fn declare_exchange(
    session: &Session,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
    report: &mut InitReport,
) -> Result<bool, BrokerError> {
    let existed = session.exchange_exists(name).await?;
    let ch = session.channel().await?;
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    timed(
        "exchange.declare",
        CALL_TIMEOUT,
        session.password(),
        ch.exchange_declare(short(name)?, kind, opts, args),
    )
    .await
    .map_err(|e| conflict(e, "exchange", name))?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(report.record(existed, "exchange", name))
}

async fn declare_queue(
    session: &Session,
    name: &str,
    args: FieldTable,
    report: &mut InitReport,
) -> Result<bool, BrokerError> {
    let existed = session.passive_queue(name).await?.is_some();
    let ch = session.channel().await?;
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    timed(
        "queue.declare",
        CALL_TIMEOUT,
        session.password(),
        ch.queue_declare(short(name)?, opts, args),
    )
    .await
    .map_err(|e| conflict(e, "queue", name))?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(report.record(existed, "queue", name))
}

fn conflict(e: BrokerError, kind: &str, name: &str) -> BrokerError {
    match e {
        BrokerError::Precondition(detail) => BrokerError::Precondition(format!(
            "{kind} `{}` already exists with different arguments ({})",
            crate::text::sanitize(name),
            detail.split(" - ").nth(1).unwrap_or(&detail)
        )),
        other => other,
    }
}

async fn bind(
    session: &Session,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), BrokerError> {
    change_bindings(
        session,
        exchange,
        &[BindingChange::Bind {
            queue: queue.to_string(),
            key: key.to_string(),
        }],
    )
    .await
}

/// One change of an exchange's bindings to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    /// `queue.bind` with this key.
    Bind {
        /// Queue.
        queue: String,
        /// Binding key.
        key: String,
    },
    /// `queue.unbind` of the binding with this key.
    Unbind {
        /// Queue.
        queue: String,
        /// Binding key.
        key: String,
    },
}

/// Apply binding changes to `exchange` in order, on one dedicated channel (the gate's flips:
/// `ops::gate` plans the order, this only executes it). Stops at the first error.
pub async fn change_bindings(
    session: &Session,
    exchange: &str,
    changes: &[BindingChange],
) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let pw = session.password();
    for c in changes {
        match c {
            BindingChange::Bind { queue, key } => {
                timed(
                    "queue.bind",
                    CALL_TIMEOUT,
                    pw,
                    ch.queue_bind(
                        short(queue)?,
                        short(exchange)?,
                        short(key)?,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            }
            BindingChange::Unbind { queue, key } => {
                timed(
                    "queue.unbind",
                    CALL_TIMEOUT,
                    pw,
                    ch.queue_unbind(
                        short(queue)?,
                        short(exchange)?,
                        short(key)?,
                        FieldTable::default(),
                    ),
                )
                .await?;
            }
        }
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "bindings done".into())).await;
    Ok(())
}

/// The delivery limit of a quorum DLQ and unrouted queue: explicit, so RabbitMQ 4.x's default of
/// 20 never applies, and far above anything browsing reaches (each browse of a quorum queue counts
/// as a delivery; over the limit a message would be dropped — these queues have no dead-letter
/// target). Measured: 25 browses drop a message from a 4.0.5 quorum queue without it, keep it
/// with it; 3.10 accepts it too (`-1`, 4.x's "unlimited", makes 3.10 fail the declaration).
pub const STORE_DELIVERY_LIMIT: i64 = 1_000_000;

/// Arguments of the DLQ and the unrouted queue (the dead-letter stores). In a quorum namespace
/// they are quorum queues (replicated: a node down costs nothing) with [`STORE_DELIVERY_LIMIT`];
/// in a classic one, classic queues (issue 19, item 4; docs/architecture.md, "Topology").
fn store_args(queue_type: QueueType) -> FieldTable {
    match queue_type {
        QueueType::Quorum => table(&[
            ("x-queue-type", s("quorum")),
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(STORE_DELIVERY_LIMIT),
            ),
        ]),
        QueueType::Classic => table(&[]),
    }
}

/// Arguments of a version queue `queue`. Quorum version queues dead-letter *at least once* (a
/// dead letter stays in the version queue until the DLQ confirms it, so a DLQ electing a new
/// leader loses nothing; RabbitMQ requires `reject-publish` overflow for it) unless
/// `at_least_once` is false (the arguments an earlier hopback declared). With `keyed`, a dead
/// letter leaves with its queue's name as routing key (`x-dead-letter-routing-key`), so the
/// broker engine routes it back to its origin through a direct exchange rather than a headers
/// exchange (`broker::shovel::declare_origin_router`; measured on 4.0.5: ~1.0× the bare shovel
/// against ~0.8×, docs/performance.md §6). The producer's routing keys stay in `x-death`.
fn version_args(
    n: &Names,
    queue: &str,
    queue_type: QueueType,
    at_least_once: bool,
    keyed: bool,
) -> FieldTable {
    let mut args = vec![("x-dead-letter-exchange", s(&n.dlx))];
    if keyed {
        args.push(("x-dead-letter-routing-key", s(queue)));
    }
    if queue_type == QueueType::Quorum {
        args.push(("x-queue-type", s("quorum")));
        if at_least_once {
            args.push(("x-dead-letter-strategy", s("at-least-once")));
            args.push(("x-overflow", s("reject-publish")));
        }
    }
    table(&args)
}

/// The routing key of `q`'s dead letters is its own name (argument; a queue argument wins over a
/// policy for dead-lettering): the broker engine may route them home on the routing key alone.
pub fn dead_letters_keyed_by_queue(q: &crate::broker::mgmt::QueueInfo) -> bool {
    q.arguments
        .get("x-dead-letter-routing-key")
        .and_then(|v| v.as_str())
        == Some(q.name.as_str())
}

/// Declare `name` with `args`; when it already exists with arguments an earlier hopback gave it
/// (each of `earlier`, in order), keep it as it is, noting it in `report.legacy` when that
/// earlier form comes with a `why` (a difference that matters to the operator).
async fn declare_with_legacy(
    session: &Session,
    name: &str,
    args: FieldTable,
    earlier: &[(FieldTable, Option<&str>)],
    report: &mut InitReport,
) -> Result<bool, BrokerError> {
    let first = match declare_queue(session, name, args.clone(), report).await {
        Err(BrokerError::Precondition(first)) => first,
        other => return other,
    };
    for (legacy_args, why) in earlier.iter().filter(|(a, _)| *a != args) {
        if let Ok(created) = declare_queue(session, name, legacy_args.clone(), report).await {
            if let Some(why) = why {
                report.legacy.push(format!("queue {name} ({why})"));
            }
            return Ok(created);
        }
    }
    Err(BrokerError::Precondition(first))
}

/// Declare `name` as a dead-letter store of a quorum namespace (quorum, [`STORE_DELIVERY_LIMIT`])
/// — the DLQ or unrouted queue `migrate` builds. Idempotent; a classic queue of that name is a
/// precondition error.
pub async fn declare_store_queue(session: &Session, name: &str) -> Result<bool, BrokerError> {
    let mut report = InitReport::default();
    declare_queue(session, name, store_args(QueueType::Quorum), &mut report).await
}

/// Delete `queue` only if it is empty; a missing queue is fine. A classic queue is deleted with
/// `if_empty` (a message that arrived meanwhile makes the broker refuse, nothing is lost);
/// quorum queues do not support `if_empty` (RabbitMQ closes the *connection*), so a quorum queue
/// is counted first and deleted only at zero — callers unbind it before, so nothing can arrive.
pub async fn delete_if_empty(
    session: &Session,
    queue: &str,
    quorum: bool,
) -> Result<(), BrokerError> {
    if quorum {
        match session.passive_queue(queue).await? {
            None => return Ok(()),
            Some(c) if c.ready > 0 => {
                return Err(BrokerError::Other(format!(
                    "`{}` still holds {} message(s); not deleted",
                    crate::text::sanitize(queue),
                    c.ready
                )));
            }
            Some(_) => {}
        }
    }
    let ch = session.channel().await?;
    let r = timed(
        "queue.delete",
        CALL_TIMEOUT,
        session.password(),
        ch.queue_delete(
            short(queue)?,
            lapin::options::QueueDeleteOptions {
                if_empty: !quorum,
                ..Default::default()
            },
        ),
    )
    .await;
    let _ = ch.close(200, "ok".into()).await;
    r.map(|_| ())
}

/// Declare the convention for `ns` idempotently, its entry exchange hashing `message_id` (see
/// [`init_hashing`]).
pub async fn init(
    session: &Session,
    ns: &str,
    versions: &[String],
    queue_type: QueueType,
) -> Result<InitReport, BrokerError> {
    init_hashing(session, ns, versions, queue_type, &HashOn::MessageId).await
}

/// Declare the convention for `ns` idempotently, the entry exchange hashing `hash` (an existing
/// entry must already be declared so). The first version gets weight 100 only when the entry
/// exchange is new: an existing namespace's gate is never touched.
pub async fn init_hashing(
    session: &Session,
    ns: &str,
    versions: &[String],
    queue_type: QueueType,
    hash: &HashOn,
) -> Result<InitReport, BrokerError> {
    let n = Names::convention(ns);
    let version_queue = |v: &str| {
        n.version_queue(v).ok_or_else(|| {
            BrokerError::Other(format!(
                "`{}` is not a version name",
                crate::text::sanitize(v)
            ))
        })
    };
    let mut report = InitReport {
        namespace: ns.to_string(),
        ..Default::default()
    };
    // Order: everything a binding or argument points to exists before it is referenced.
    // The two stores, each a fanout exchange and its one queue.
    for (exchange, queue, legacy) in [
        (&n.dlx, &n.dlq, "classic DLQ: lost while its node is down"),
        (
            &n.unrouted,
            &n.unrouted,
            "classic unrouted queue: lost while its node is down",
        ),
    ] {
        declare_exchange(
            session,
            exchange,
            ExchangeKind::Fanout,
            FieldTable::default(),
            &mut report,
        )
        .await?;
        declare_with_legacy(
            session,
            queue,
            store_args(queue_type),
            &[(store_args(QueueType::Classic), Some(legacy))],
            &mut report,
        )
        .await?;
        bind(session, queue, exchange, "").await?;
    }
    for v in versions {
        let q = version_queue(v)?;
        let args = |at_least_once, keyed| version_args(&n, &q, queue_type, at_least_once, keyed);
        declare_with_legacy(
            session,
            &q,
            args(true, true),
            // Unkeyed dead letters only cost the broker engine speed: kept without a note.
            &[
                (args(true, false), None),
                (args(false, false), Some("dead-letters at most once")),
            ],
            &mut report,
        )
        .await?;
    }
    let entry_args = crate::broker::hashgate::entry_arguments(hash, &n.unrouted);
    let entry_new = declare_exchange(
        session,
        &n.entry,
        ExchangeKind::Custom("x-consistent-hash".into()),
        entry_args,
        &mut report,
    )
    .await?;
    if entry_new && let Some(first) = versions.first() {
        bind(session, &version_queue(first)?, &n.entry, "100").await?;
        report.gate = Some(format!("{first}=100"));
    }
    if entry_new {
        report.hash_on = Some(hash.to_string());
    }
    Ok(report)
}

/// Delete every object of a convention namespace (drills and tests clean up with this).
pub async fn delete_namespace(
    session: &Session,
    ns: &str,
    versions: &[String],
) -> Result<(), BrokerError> {
    let n = Names::convention(ns);
    let ch = session.channel().await?;
    let pw = session.password().to_string();
    // The broker engine's origin routers (declared on a first replay to origin; deleting a
    // missing exchange is a no-op on RabbitMQ).
    let routers = crate::topology::origin_routers(&n.entry);
    let gates = n.hash_gates();
    for x in [&n.entry, &n.dlx, &n.unrouted]
        .into_iter()
        .chain(&routers)
        .chain(&gates)
    {
        timed(
            "exchange.delete",
            CALL_TIMEOUT,
            &pw,
            ch.exchange_delete(short(x)?, Default::default()),
        )
        .await?;
    }
    let mut queues: Vec<String> = versions.iter().filter_map(|v| n.version_queue(v)).collect();
    queues.push(n.dlq.clone());
    queues.push(n.unrouted.clone());
    // The mover parks over-replayed messages here (declared on first use); queue.delete of a
    // missing queue is a no-op on RabbitMQ, so this is safe when nothing was ever parked.
    queues.push(n.parked.clone());
    for q in queues {
        timed(
            "queue.delete",
            CALL_TIMEOUT,
            &pw,
            ch.queue_delete(short(&q)?, Default::default()),
        )
        .await?;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// A namespace found on the broker (or in the config) and where its parts are.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredNamespace {
    /// Name.
    pub name: String,
    /// Follows the convention.
    pub convention: bool,
    /// Object names.
    pub names: Names,
    /// version → queue name.
    pub versions: BTreeMap<String, String>,
}

/// Find namespaces: convention ones from the queue and exchange lists (a namespace is `NS` with an
/// `NS.dlq` queue or an `NS` exchange next to at least one `NS.vN` queue), plus every adopted one.
pub fn discover(
    queues: &[QueueInfo],
    exchanges: &[ExchangeInfo],
    profile: &Profile,
) -> Vec<DiscoveredNamespace> {
    let qnames: BTreeSet<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    let xnames: BTreeSet<&str> = exchanges.iter().map(|x| x.name.as_str()).collect();
    let mut by_ns: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for q in &qnames {
        if let Some((ns, v)) = q.rsplit_once('.')
            && is_version_name(v)
            && !ns.is_empty()
            && (qnames.contains(Names::convention(ns).dlq.as_str()) || xnames.contains(ns))
        {
            by_ns
                .entry(ns.to_string())
                .or_default()
                .insert(v.to_string(), q.to_string());
        }
    }
    let mut out: Vec<DiscoveredNamespace> = by_ns
        .into_iter()
        .filter(|(ns, _)| !profile.namespaces.contains_key(ns))
        .map(|(ns, versions)| DiscoveredNamespace {
            names: Names::convention(&ns),
            name: ns,
            convention: true,
            versions,
        })
        .collect();
    for (ns, a) in &profile.namespaces {
        let names = Names::adopted(ns, a).with_queues(qnames.iter().copied());
        let versions = names.versions_among(qnames.iter().copied());
        out.push(DiscoveredNamespace {
            name: ns.clone(),
            convention: false,
            names,
            versions,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What keeps a quorum namespace from the cluster-safe convention (issue 19, item 4), one
/// phrase each: a classic DLQ or unrouted queue (its dead letters are unavailable, or lost, while
/// its node is down), a quorum version queue dead-lettering at most once. Empty for a namespace
/// built the current way and for a classic namespace (classic version queues are a choice:
/// `init --queue-type classic`). Queues the management API does not list are not judged.
pub fn legacy_parts(d: &DiscoveredNamespace, queues: &[QueueInfo]) -> Vec<String> {
    legacy_parts_by(d, &|name| queues.iter().find(|q| q.name == name))
}

/// [`legacy_parts`] with a lookup of the listed queues by name (the refresh indexes its list once:
/// a scan per namespace is O(namespaces × queues) on a large vhost).
pub fn legacy_parts_by<'a>(
    d: &DiscoveredNamespace,
    find: &dyn Fn(&str) -> Option<&'a QueueInfo>,
) -> Vec<String> {
    let quorum_versions: Vec<(&String, &QueueInfo)> = d
        .versions
        .iter()
        .filter_map(|(v, q)| find(q).map(|info| (v, info)))
        .filter(|(_, q)| q.kind == "quorum")
        .collect();
    if quorum_versions.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (what, name) in [("DLQ", &d.names.dlq), ("unrouted queue", &d.names.unrouted)] {
        if find(name).is_some_and(|q| q.kind == "classic") {
            out.push(format!("{what} `{name}` is classic"));
        }
    }
    let at_most_once: Vec<&str> = quorum_versions
        .iter()
        .filter(|(_, q)| !dead_letters_at_least_once(q))
        .map(|(v, _)| v.as_str())
        .collect();
    if !at_most_once.is_empty() {
        out.push(format!(
            "{} dead-letter at most once",
            at_most_once.join(", ")
        ));
    }
    out
}

/// Does this queue dead-letter at least once (argument or policy)?
pub fn dead_letters_at_least_once(q: &QueueInfo) -> bool {
    let by_arg = q.arguments.get("x-dead-letter-strategy");
    let by_policy = q
        .effective_policy_definition
        .as_ref()
        .and_then(|d| d.get("dead-letter-strategy"));
    by_arg.or(by_policy).and_then(|v| v.as_str()) == Some("at-least-once")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validation() {
        let n = Names::convention("email");
        assert_eq!(n.version_queue("v2").as_deref(), Some("email.v2"));
        assert_eq!(n.dlq, "email.dlq");
        assert!(validate_namespace("email").is_ok());
        assert!(validate_namespace("bad\x1bname").is_err());
        assert!(validate_namespace("amq.x").is_err());
        assert_eq!(parse_versions("v1, v2").unwrap(), vec!["v1", "v2"]);
        assert!(parse_versions("v1,x").is_err());
        assert!(parse_versions("v1,v1").is_err());
    }
}
