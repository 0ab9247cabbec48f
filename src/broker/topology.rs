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
use crate::model::xdeath::is_version_name;

/// Queue type of version queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated, durable (default).
    Quorum,
    /// Classic durable queue.
    Classic,
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
}

impl InitReport {
    /// Did this run change anything?
    pub fn changed(&self) -> bool {
        !self.created.is_empty() || self.gate.is_some()
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
    if existed {
        report.unchanged.push(format!("exchange {name}"))
    } else {
        report.created.push(format!("exchange {name}"))
    }
    Ok(!existed)
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
    if existed {
        report.unchanged.push(format!("queue {name}"))
    } else {
        report.created.push(format!("queue {name}"))
    }
    Ok(!existed)
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

/// Declare the convention for `ns` idempotently. The first version gets weight 100 only when the
/// entry exchange is new: an existing namespace's gate is never touched.
pub async fn init(
    session: &Session,
    ns: &str,
    versions: &[String],
    queue_type: QueueType,
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
    declare_exchange(
        session,
        &n.dlx,
        ExchangeKind::Fanout,
        FieldTable::default(),
        &mut report,
    )
    .await?;
    declare_queue(session, &n.dlq, table(&[]), &mut report).await?;
    bind(session, &n.dlq, &n.dlx, "").await?;
    declare_exchange(
        session,
        &n.unrouted,
        ExchangeKind::Fanout,
        FieldTable::default(),
        &mut report,
    )
    .await?;
    declare_queue(session, &n.unrouted, table(&[]), &mut report).await?;
    bind(session, &n.unrouted, &n.unrouted, "").await?;
    for v in versions {
        let mut args = vec![("x-dead-letter-exchange", s(&n.dlx))];
        if queue_type == QueueType::Quorum {
            args.push(("x-queue-type", s("quorum")));
        }
        declare_queue(session, &version_queue(v)?, table(&args), &mut report).await?;
    }
    let entry_args = table(&[
        ("hash-property", s("message_id")),
        ("alternate-exchange", s(&n.unrouted)),
    ]);
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
    for x in [&n.entry, &n.dlx, &n.unrouted] {
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
