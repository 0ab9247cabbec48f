//! The init operation: declare a namespace's convention idempotently (`broker::topology::init`)
//! and journal what it created. Guard (read-only, valid names) → act → the report says what
//! changed → journal the outcome. Its intent is not journaled: a second `init` changes nothing
//! and must journal nothing, and every declaration is idempotent, so an `init` that dies
//! half-way is finished by running it again (docs/architecture.md, "One rule over every
//! operation").

use super::{OpContext, OpError};
use crate::broker::topology::{self, InitReport, QueueType};
use crate::ledger::{Event, EventKind};
use crate::model::hash::{HashOn, default_hash_on};
use crate::text::sanitize;

/// What `init` did, and the ledger event when it changed anything.
#[derive(Debug, Clone)]
pub struct InitDone {
    /// What was created and what was already there.
    pub report: InitReport,
    /// The outcome event (only when something changed).
    pub event: Option<Event>,
    /// For a new entry exchange: why it hashes what it does.
    pub hash_chosen: Option<String>,
}

/// Validate, declare, journal; the entry exchange hashes what [`hash_for`] chooses.
pub async fn init(
    cx: &OpContext,
    ns: &str,
    versions: &str,
    queue_type: QueueType,
) -> Result<InitDone, OpError> {
    init_with(cx, ns, versions, queue_type, None).await
}

/// [`init`] with `--hash-on`: `Some` names the field, `None` chooses it ([`hash_for`]).
pub async fn init_with(
    cx: &OpContext,
    ns: &str,
    versions: &str,
    queue_type: QueueType,
    hash: Option<HashOn>,
) -> Result<InitDone, OpError> {
    topology::validate_namespace(ns)
        .map_err(|e| OpError::invalid(e, "use a short printable name like `email`"))?;
    let versions = topology::parse_versions(versions)
        .map_err(|e| OpError::invalid(e, "e.g. --versions v1,v2"))?;
    cx.require_writable("init a namespace")?;
    let (declare_as, chosen) = hash_for(cx, ns, &versions, hash).await?;
    let mut report =
        topology::init_hashing(&cx.session, ns, &versions, queue_type, &declare_as).await?;
    if report.hash_on.is_some() {
        report.hash_on = Some(declare_as.to_string());
    }
    if !report.changed() {
        return Ok(InitDone {
            report,
            event: None,
            hash_chosen: None,
        });
    }
    let mut after = serde_json::json!({ "created": report.created });
    if let Some((v, w)) = report.gate.as_deref().and_then(|g| g.split_once('=')) {
        after["gate"] = serde_json::json!({ v: w.parse::<u32>().unwrap_or(100) });
    }
    if let Some(h) = &report.hash_on {
        after["hash_on"] = serde_json::json!(h);
    }
    let e = cx
        .event(EventKind::Init, Some(&report.namespace))
        .params(serde_json::json!({ "versions": versions, "queue_type": queue_type, "hash_on_chosen": chosen }))
        .after(after);
    let event = cx.journal_outcome(e, "namespace created").await?;
    Ok(InitDone {
        report,
        event: Some(event),
        hash_chosen: chosen,
    })
}

/// What the entry exchange is declared hashing, and (for a new one) why. An existing entry is
/// declared with its own arguments — `init` never changes a gate — and a `--hash-on` that
/// differs from what its gate hashes is refused with the way to change it. A new one hashes
/// `wanted`, or — asked for nothing — what a sample of the namespace's tasks already in its
/// queues can be split by (`model::hash::default_hash_on`), `message_id` without traffic.
pub async fn hash_for(
    cx: &OpContext,
    ns: &str,
    versions: &[String],
    wanted: Option<HashOn>,
) -> Result<(HashOn, Option<String>), OpError> {
    let names = crate::topology::Namespace::resolve(&cx.cfg, ns);
    if cx.session.exchange_exists(&names.entry).await? {
        let Some(mgmt) = cx.mgmt.as_ref() else {
            return Ok((wanted.unwrap_or(HashOn::MessageId), None));
        };
        let entry = mgmt.exchange(&names.entry).await.ok().flatten();
        let own = entry.and_then(|x| HashOn::from_arguments(&x.arguments).ok());
        let layout = crate::broker::hashgate::read_layout(mgmt, &names)
            .await
            .ok()
            .flatten();
        if let (Some(w), Some(l)) = (&wanted, &layout)
            && l.hash_on.as_ref() != Ok(w)
        {
            return Err(OpError::invalid(
                format!(
                    "namespace `{}` exists and its gate hashes {}; init never changes an existing gate",
                    sanitize(ns),
                    sanitize(&l.hash_text())
                ),
                format!("change it with `hopback gate hash-on {} {w}`", sanitize(ns)),
            ));
        }
        return Ok((own.or(wanted).unwrap_or(HashOn::MessageId), None));
    }
    if let Some(w) = wanted {
        return Ok((w, Some("asked for with --hash-on".into())));
    }
    let queues: Vec<String> = versions
        .iter()
        .filter_map(|v| names.version_queue(v))
        .collect();
    let sample =
        crate::broker::sample::hash_inputs(&cx.session, cx.mgmt.as_ref(), &names, &queues).await;
    let chosen = default_hash_on(sample.as_ref());
    let why = match &sample {
        Some(s) if s.best().is_some() => format!(
            "chosen from {} task(s) already in {}: they can be split by {}",
            s.sampled,
            s.sources.join(", "),
            chosen.field()
        ),
        Some(s) => format!(
            "{} task(s) sampled, none split by any field{}; message_id by default",
            s.sampled,
            s.cause(&HashOn::MessageId)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ),
        None => "no traffic to sample yet: message_id by default; change it later with `hopback gate hash-on`".into(),
    };
    Ok((chosen, Some(why)))
}
