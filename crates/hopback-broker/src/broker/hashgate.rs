//! Where a namespace's gate lives, and the primitives that move it (the operation is
//! `ops::hash_on`, which guards, plans and journals; docs/architecture.md).
//!
//! An exchange's arguments cannot change in place, and deleting the entry exchange producers
//! publish to would make their publishes fail while it is gone. So the entry exchange stays, and
//! a change of what the gate hashes builds the gate on a second `x-consistent-hash` exchange
//! ([`crate::topology::Namespace::hash_gates`]) that hashes the new field, then makes that
//! exchange the entry's only destination (an exchange-to-exchange binding: with one binding, a
//! consistent-hash exchange routes every message there, whatever it hashes). [`layout`] reads
//! which exchange holds the gate: the entry itself, or the one behind it.

use lapin::ExchangeKind;
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;

use crate::broker::mgmt::{BindingInfo, ExchangeInfo, Mgmt, MgmtError};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, short, timed};
use crate::model::hash::HashOn;
use crate::topology::Namespace;

/// The binding key (weight) of the entry's binding to the exchange behind it. Alone, any weight
/// routes everything; while a change still has the entry's old routes in place, a large one
/// sends most tasks the new way at once.
pub const FORWARD_WEIGHT: &str = "1000";

/// Where the gate is and what it hashes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateLayout {
    /// The exchange producers publish to.
    pub entry: String,
    /// The exchange whose bindings to version queues are the gate: `entry`, or the exchange
    /// behind it after a `gate hash-on` change.
    pub gate: String,
    /// The gate exchange's type.
    pub gate_kind: String,
    /// What the gate exchange hashes; `Err` names a setting hopback does not offer.
    #[serde(serialize_with = "hash_text")]
    pub hash_on: Result<HashOn, String>,
    /// Exchanges the entry routes to besides the gate's version queues (an unfinished change).
    pub also_routes_to: Vec<String>,
    /// What is wrong with the layout (an unfinished change), one sentence each.
    pub problems: Vec<String>,
}

fn hash_text<S: serde::Serializer>(h: &Result<HashOn, String>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Ok(h) => s.serialize_str(&h.to_string()),
        Err(raw) => s.serialize_str(raw),
    }
}

impl GateLayout {
    /// Is the gate behind the entry exchange (moved there by a `gate hash-on` change)?
    pub fn behind(&self) -> bool {
        self.gate != self.entry
    }
    /// `message_id`, or the unsupported setting as found.
    pub fn hash_text(&self) -> String {
        match &self.hash_on {
            Ok(h) => h.to_string(),
            Err(raw) => raw.clone(),
        }
    }
}

/// Read the layout from what the management API says about the entry exchange, the exchanges
/// behind it (`lookup`) and the entry's bindings. Pure, so the console's refresh (one listing of
/// everything) and the gate operations (a few calls) share it.
pub fn layout(
    names: &Namespace,
    entry: &ExchangeInfo,
    lookup: &dyn Fn(&str) -> Option<ExchangeInfo>,
    entry_bindings: &[BindingInfo],
) -> GateLayout {
    let from_entry = entry_bindings.iter().filter(|b| b.source == names.entry);
    let behind: Vec<&BindingInfo> = from_entry
        .clone()
        .filter(|b| b.destination_type == "exchange" && names.is_hash_gate(&b.destination))
        .collect();
    let direct = from_entry.filter(|b| b.destination_type == "queue").count();
    let mut out = GateLayout {
        entry: names.entry.clone(),
        gate: names.entry.clone(),
        gate_kind: entry.kind.clone(),
        hash_on: hash_of(entry),
        also_routes_to: Vec::new(),
        problems: Vec::new(),
    };
    let mut gates: Vec<&str> = behind.iter().map(|b| b.destination.as_str()).collect();
    gates.sort_unstable();
    gates.dedup();
    if let [only] = gates.as_slice()
        && direct == 0
        && let Some(x) = lookup(only)
    {
        out.gate = x.name.clone();
        out.gate_kind = x.kind.clone();
        out.hash_on = hash_of(&x);
        return out;
    }
    if !gates.is_empty() {
        out.also_routes_to = gates.iter().map(|g| g.to_string()).collect();
        out.problems.push(format!(
            "a `gate hash-on` change did not finish: the entry exchange routes {}through {} — re-run `hopback gate hash-on {} FIELD` to finish it",
            if direct > 0 { "both to version queues and " } else { "" },
            gates
                .iter()
                .map(|g| format!("`{}`", crate::text::sanitize(g)))
                .collect::<Vec<_>>()
                .join(" and "),
            crate::text::sanitize(&names.name)
        ));
    }
    out
}

/// What an exchange hashes: only an `x-consistent-hash` exchange hashes anything (a fanout
/// entry sends every task to each bound version).
fn hash_of(x: &ExchangeInfo) -> Result<HashOn, String> {
    if x.kind == "x-consistent-hash" {
        HashOn::from_arguments(&x.arguments)
    } else {
        Err(format!("nothing ({} exchange)", x.kind))
    }
}

/// Read the layout of `names` from the management API (`None`: no entry exchange).
pub async fn read_layout(mgmt: &Mgmt, names: &Namespace) -> Result<Option<GateLayout>, MgmtError> {
    Ok(read_gate_exchange(mgmt, names).await?.map(|g| g.0))
}

/// [`read_layout`], plus the gate exchange itself and its bindings — what a gate reading needs,
/// in two calls when the gate is on the entry exchange.
pub async fn read_gate_exchange(
    mgmt: &Mgmt,
    names: &Namespace,
) -> Result<Option<(GateLayout, ExchangeInfo, Vec<BindingInfo>)>, MgmtError> {
    let (x, b) = tokio::join!(
        mgmt.exchange(&names.entry),
        mgmt.bindings_from(&names.entry)
    );
    let Some(x) = x? else { return Ok(None) };
    let b = b?;
    let mut behind = Vec::new();
    for g in names.hash_gates() {
        if b.iter()
            .any(|bb| bb.destination == g && bb.destination_type == "exchange")
            && let Some(info) = mgmt.exchange(&g).await?
        {
            behind.push(info);
        }
    }
    let lookup = |n: &str| behind.iter().find(|x| x.name == n).cloned();
    let l = layout(names, &x, &lookup, &b);
    if !l.behind() {
        return Ok(Some((l, x, b)));
    }
    let gate_bindings = mgmt.bindings_from(&l.gate).await?;
    let gate_x = lookup(&l.gate).unwrap_or(x);
    Ok(Some((l, gate_x, gate_bindings)))
}

fn arguments(hash: &HashOn, unrouted: &str) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in hash.exchange_arguments() {
        t.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    t.insert(
        ShortString::from("alternate-exchange"),
        AMQPValue::LongString(LongString::from(unrouted)),
    );
    t
}

/// The entry exchange's arguments for `hash` (and its unrouted safety net).
pub fn entry_arguments(hash: &HashOn, unrouted: &str) -> FieldTable {
    arguments(hash, unrouted)
}

/// Declare `name` as a gate exchange hashing `hash` (durable `x-consistent-hash`, unroutable
/// messages to `unrouted`). Idempotent; other arguments on an existing one are a precondition
/// error.
pub async fn declare_gate(
    session: &Session,
    name: &str,
    hash: &HashOn,
    unrouted: &str,
) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let r = timed(
        "exchange.declare",
        CALL_TIMEOUT,
        session.password(),
        ch.exchange_declare(
            short(name)?,
            ExchangeKind::Custom("x-consistent-hash".into()),
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments(hash, unrouted),
        ),
    )
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    r
}

/// Bind (or, with `bind == false`, unbind) exchange `destination` to `source` with `key`.
pub async fn exchange_binding(
    session: &Session,
    destination: &str,
    source: &str,
    key: &str,
    bind: bool,
) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let pw = session.password();
    let r = if bind {
        timed(
            "exchange.bind",
            CALL_TIMEOUT,
            pw,
            ch.exchange_bind(
                short(destination)?,
                short(source)?,
                short(key)?,
                ExchangeBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    } else {
        timed(
            "exchange.unbind",
            CALL_TIMEOUT,
            pw,
            ch.exchange_unbind(
                short(destination)?,
                short(source)?,
                short(key)?,
                lapin::options::ExchangeUnbindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    };
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    r
}

/// Delete exchange `name` (a missing one is fine).
pub async fn delete_exchange(session: &Session, name: &str) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let r = timed(
        "exchange.delete",
        CALL_TIMEOUT,
        session.password(),
        ch.exchange_delete(short(name)?, ExchangeDeleteOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn x(name: &str, hash: &HashOn) -> ExchangeInfo {
        let mut arguments = serde_json::Map::new();
        for (k, v) in hash.exchange_arguments() {
            arguments.insert(k.into(), v.into());
        }
        ExchangeInfo {
            name: name.into(),
            kind: "x-consistent-hash".into(),
            arguments,
        }
    }
    fn b(src: &str, dst: &str, kind: &str, key: &str) -> BindingInfo {
        BindingInfo {
            source: src.into(),
            destination: dst.into(),
            destination_type: kind.into(),
            routing_key: key.into(),
        }
    }

    #[test]
    fn the_gate_is_the_entry_or_the_one_exchange_behind_it() {
        let n = Namespace::convention("email");
        let entry = x("email", &HashOn::MessageId);
        let behind = x("email.gate-a", &HashOn::CorrelationId);
        let lookup = |name: &str| (name == "email.gate-a").then(|| behind.clone());
        let direct = layout(
            &n,
            &entry,
            &lookup,
            &[
                b("email", "email.v1", "queue", "90"),
                b("email", "email.v2", "queue", "10"),
            ],
        );
        assert_eq!(direct.gate, "email");
        assert_eq!(direct.hash_on, Ok(HashOn::MessageId));
        assert!(!direct.behind() && direct.problems.is_empty());
        let moved = layout(
            &n,
            &entry,
            &lookup,
            &[b("email", "email.gate-a", "exchange", "1")],
        );
        assert_eq!(moved.gate, "email.gate-a");
        assert_eq!(moved.hash_on, Ok(HashOn::CorrelationId));
        assert!(moved.behind() && moved.problems.is_empty());
        let half = layout(
            &n,
            &entry,
            &lookup,
            &[
                b("email", "email.v1", "queue", "90"),
                b("email", "email.gate-a", "exchange", "1"),
            ],
        );
        assert_eq!(half.gate, "email");
        assert_eq!(half.also_routes_to, vec!["email.gate-a".to_string()]);
        assert!(
            half.problems[0].contains("did not finish"),
            "{:?}",
            half.problems
        );
    }
}
