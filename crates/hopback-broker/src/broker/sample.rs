//! A sample of real tasks' hash inputs (`model::hash::HashInputs`): what the fleet's producers
//! actually send, read where it can be read without harm.
//!
//! The entry exchange itself cannot be tapped: on a consistent-hash exchange any extra binding
//! joins the hash ring and takes a share of the tasks. So the sample comes from copies and
//! leftovers — dead letters (the DLQ keeps each task's properties and headers, and its
//! original routing key in `x-death`), the unrouted queue, and version queues' ready tasks —
//! browsed (get + requeue) only where a browse costs nothing: classic queues and quorum queues
//! whose delivery limit no browse reaches. A quorum version queue with RabbitMQ 4's default
//! limit of 20 is never read. Bodies are not read.

use std::collections::BTreeMap;

use lapin::types::AMQPValue;

use crate::broker::browse::{BrowseOptions, browse, render_value};
use crate::broker::headers::attribute;
use crate::broker::mgmt::Mgmt;
use crate::broker::session::Session;
use crate::broker::stats::{QueueKind, queue_kind};
use crate::model::hash::{HashInputs, TaskKeys};
use crate::topology::Namespace;

/// Tasks read at most per sample.
pub const SAMPLE_MAX: u64 = 50;

fn keys_of(b: &crate::broker::browse::Browsed) -> TaskKeys {
    let p = &b.properties;
    let headers = p.headers().as_ref();
    let deaths = attribute(headers).deaths;
    // A dead letter's routing key is the dead-letter exchange's; the producer's is in x-death.
    let routing_key = match deaths.last() {
        Some(d) => d.routing_keys.first().cloned(),
        None => Some(b.routing_key.clone()),
    };
    let scalar = |v: &AMQPValue| {
        !matches!(
            v,
            AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::Void
        )
    };
    TaskKeys {
        message_id: p.message_id().as_ref().map(|s| s.as_str().to_string()),
        correlation_id: p.correlation_id().as_ref().map(|s| s.as_str().to_string()),
        routing_key,
        headers: headers
            .map(|h| {
                h.inner()
                    .iter()
                    .filter(|(k, v)| !k.as_str().starts_with("x-") && scalar(v))
                    .map(|(k, v)| (k.as_str().to_string(), render_value(v)))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default(),
    }
}

/// Sample the tasks of `names`: its DLQ, its unrouted queue, then `version_queues`, up to
/// [`SAMPLE_MAX`] tasks, skipping any queue a browse could harm or whose type is unknown.
/// `None` when nothing could be read (no queue, no task, no management API to tell the types).
pub async fn hash_inputs(
    session: &Session,
    mgmt: Option<&Mgmt>,
    names: &Namespace,
    version_queues: &[String],
) -> Option<HashInputs> {
    let mut keys = Vec::new();
    let mut sources = Vec::new();
    let queues = [names.dlq.clone(), names.unrouted.clone()]
        .into_iter()
        .chain(version_queues.iter().cloned());
    for q in queues {
        let want = SAMPLE_MAX.saturating_sub(keys.len() as u64);
        if want == 0 {
            break;
        }
        match session.passive_queue(&q).await {
            Ok(Some(c)) if c.ready > 0 => {}
            _ => continue,
        }
        if !matches!(
            queue_kind(mgmt, &q).await,
            QueueKind::Classic | QueueKind::QuorumBrowseSafe
        ) {
            continue;
        }
        let opts = BrowseOptions {
            skip: 0,
            take: want,
            max_body_bytes: 0,
            force: false,
        };
        let Ok(found) = browse(session, &q, opts, false).await else {
            continue;
        };
        if !found.is_empty() {
            sources.push(q.clone());
            keys.extend(found.iter().map(keys_of));
        }
    }
    (!keys.is_empty()).then(|| HashInputs::from_keys(&keys, sources))
}
