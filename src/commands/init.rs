//! `hopback init NS --versions v1,v2`: declare the convention idempotently and say what changed.

use crate::broker::topology::{self, QueueType};
use crate::commands::Ctx;
use crate::error::Failure;

/// Run `init`.
pub async fn run(
    ctx: &Ctx,
    ns: &str,
    versions: &str,
    queue_type: QueueType,
) -> Result<(), Failure> {
    topology::validate_namespace(ns)
        .map_err(|e| Failure::usage(e, "use a short printable name like `email`"))?;
    let versions = topology::parse_versions(versions)
        .map_err(|e| Failure::usage(e, "e.g. --versions v1,v2"))?;
    ctx.require_writable("init a namespace")?;
    let session = ctx.connect().await?;
    let report = topology::init(&session, ns, &versions, queue_type).await;
    let journaled = match &report {
        Ok(r) if r.changed() => Some(journal_init(ctx, &session, r, &versions, queue_type).await),
        _ => None,
    };
    session.close().await;
    let report = report?;
    let event = journaled.transpose()?;
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "namespace": report.namespace, "changed": report.changed(),
            "created": report.created, "unchanged": report.unchanged, "gate": report.gate,
            "ledger_event": event.as_ref().map(|e| e.id),
        }));
    }
    if !report.changed() {
        println!(
            "namespace `{ns}`: nothing to change ({} objects already as the convention wants)",
            report.unchanged.len()
        );
        return Ok(());
    }
    println!(
        "namespace `{ns}`: created {} object(s)",
        report.created.len()
    );
    for c in &report.created {
        println!("  + {c}");
    }
    if !report.unchanged.is_empty() {
        println!(
            "  ({} already present and unchanged)",
            report.unchanged.len()
        );
    }
    if let Some(g) = &report.gate {
        println!(
            "gate: {g} (all new tasks go to {})",
            g.split('=').next().unwrap_or("?")
        );
    }
    if let Some(e) = &event {
        println!("ledger event {}", e.short_id());
    }
    Ok(())
}

/// Journal an `init` that changed something; the command reports done only once it is confirmed.
async fn journal_init(
    ctx: &Ctx,
    session: &std::sync::Arc<crate::broker::session::Session>,
    report: &topology::InitReport,
    versions: &[String],
    queue_type: QueueType,
) -> Result<crate::ledger::Event, Failure> {
    let ledger = crate::ledger::Ledger::open(session, &ctx.cfg).await;
    let mut after = serde_json::json!({ "created": report.created });
    if let Some((v, w)) = report.gate.as_deref().and_then(|g| g.split_once('=')) {
        after["gate"] = serde_json::json!({ v: w.parse::<u32>().unwrap_or(100) });
    }
    let e = ledger
        .event(crate::ledger::EventKind::Init, Some(&report.namespace))
        .params(serde_json::json!({ "versions": versions, "queue_type": queue_type }))
        .after(after);
    ledger.append(e).await.map_err(|f| Failure {
        message: format!("namespace created, but {}", f.message),
        ..f
    })
}
