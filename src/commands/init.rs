//! `hopback init NS --versions v1,v2`: declare the convention idempotently and say what changed.

use crate::broker::topology::{self, QueueType};
use crate::commands::Ctx;
use crate::error::Failure;
use crate::model::hash::{HASH_ON_CHOICES, HashOn};
use crate::ops::init::InitDone;
use crate::ops::{OpContext, Via};

/// Run `init`.
pub async fn run(
    ctx: &Ctx,
    ns: &str,
    versions: &str,
    queue_type: QueueType,
    hash_on: Option<&str>,
) -> Result<(), Failure> {
    // The operation validates first; read-only refuses before connecting.
    topology::validate_namespace(ns)
        .map_err(|e| Failure::usage(e, "use a short printable name like `email`"))?;
    let hash_on = hash_on
        .map(str::parse::<HashOn>)
        .transpose()
        .map_err(|e| Failure::usage(e, format!("--hash-on takes {HASH_ON_CHOICES}")))?;
    ctx.require_writable("init a namespace")?;
    let session = ctx.connect().await?;
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let done = crate::ops::init::init_with(&cx, ns, versions, queue_type, hash_on).await;
    session.close().await;
    let InitDone {
        report,
        event,
        hash_chosen,
    } = done?;
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "namespace": report.namespace, "changed": report.changed(),
            "created": report.created, "unchanged": report.unchanged, "gate": report.gate,
            "legacy": report.legacy, "hash_on": report.hash_on, "hash_on_why": hash_chosen,
            "ledger_event": event.as_ref().map(|e| e.id),
        }));
    }
    let legacy_hint = || {
        if !report.legacy.is_empty() {
            crate::outln!(
                "  {} object(s) kept as an earlier hopback built them:",
                report.legacy.len()
            );
            for l in &report.legacy {
                crate::outln!("  ~ {l}");
            }
            crate::outln!(
                "  hint: `hopback migrate {ns}` moves them to the cluster-safe convention without loss"
            );
        }
    };
    if !report.changed() {
        crate::outln!(
            "namespace `{ns}`: nothing to change ({} objects already there)",
            report.unchanged.len()
        );
        legacy_hint();
        return Ok(());
    }
    crate::outln!(
        "namespace `{ns}`: created {} object(s)",
        report.created.len()
    );
    for c in &report.created {
        crate::outln!("  + {c}");
    }
    if !report.unchanged.is_empty() {
        crate::outln!(
            "  ({} already present and unchanged)",
            report.unchanged.len()
        );
    }
    if let Some(g) = &report.gate {
        crate::outln!(
            "gate: {g} (all new tasks go to {})",
            g.split('=').next().unwrap_or("?")
        );
    }
    if let Some(h) = &report.hash_on {
        crate::outln!(
            "the gate hashes {h}{}",
            hash_chosen
                .as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        );
    }
    legacy_hint();
    if let Some(e) = &event {
        crate::outln!("ledger event {}", e.short_id());
    }
    Ok(())
}
