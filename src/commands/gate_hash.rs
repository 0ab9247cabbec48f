//! `hopback gate hash-on NS FIELD`: change what the gate hashes, the CLI face of
//! [`crate::ops::hash_on`]. Prints the step plan with the weights it keeps, asks (typed on
//! production profiles), runs, verifies and names the ledger event.

use crate::commands::{Ctx, confirm};
use crate::error::Failure;
use crate::ledger::Ledger;
use crate::model::hash::{HASH_ON_CHOICES, HashOn};
use crate::ops::hash_on::{HashOnReport, HashOnRequest, change};
use crate::ops::{OpContext, Via};
use crate::text::sanitize;

/// Run `gate hash-on`.
pub async fn run(
    ctx: &Ctx,
    ns: &str,
    field: &str,
    reason: Option<String>,
    yes: bool,
    dry_run: bool,
) -> Result<(), Failure> {
    let hash_on: HashOn = field
        .parse()
        .map_err(|e| Failure::usage(e, format!("FIELD is {HASH_ON_CHOICES}")))?;
    if !dry_run {
        ctx.require_writable("change what the gate hashes")?;
    }
    let mgmt = super::gate::require_mgmt(ctx)?;
    let session = ctx.connect().await?;
    // The plan is the operation's own dry run: it journals nothing, so no ledger is opened.
    let quiet = OpContext {
        session: session.clone(),
        mgmt: Some(mgmt),
        ledger: std::sync::Arc::new(Ledger::file(std::path::Path::new(""), "not used", &ctx.cfg)),
        cfg: ctx.cfg.clone(),
        via: Via::Cli,
        journal_sink: None,
    };
    let mut req = HashOnRequest {
        namespace: ns.to_string(),
        hash_on,
        reason,
        dry_run: true,
    };
    let planned = change(&quiet, &req).await;
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            session.close().await;
            return Err(e.into());
        }
    };
    if dry_run || planned.steps.is_empty() {
        session.close().await;
        return print(ctx, &planned);
    }
    if !ctx.json {
        print_plan(&planned, &req.hash_on);
    }
    let question = format!(
        "Make the gate of `{}` hash {} on profile `{}`?",
        sanitize(ns),
        req.hash_on,
        sanitize(&ctx.cfg.profile.name)
    );
    let typed = ctx.cfg.profile.production.then_some(ns);
    if let Err(f) = confirm(&question, yes, typed) {
        session.close().await;
        return Err(f);
    }
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    req.dry_run = false;
    let done = change(&cx, &req).await;
    session.close().await;
    print(ctx, &done?)
}

fn print_plan(r: &HashOnReport, want: &HashOn) {
    crate::outln!(
        "gate of `{}` hashes {} (on `{}`) → {}; weights kept: {} ({})",
        sanitize(&r.namespace),
        sanitize(&r.before),
        sanitize(&r.gate_before),
        want,
        r.split.describe(),
        r.split.describe_percent()
    );
    crate::outln!(
        "plan ({} step(s); the entry exchange keeps a route to every version throughout):",
        r.steps.len()
    );
    for (i, s) in r.steps.iter().enumerate() {
        crate::outln!("  {}. {}", i + 1, s.describe());
    }
}

fn print(ctx: &Ctx, r: &HashOnReport) -> Result<(), Failure> {
    if ctx.json {
        return ctx.print_json(r);
    }
    if r.steps.is_empty() {
        crate::outln!(
            "the gate of `{}` already hashes {}: nothing to change",
            sanitize(&r.namespace),
            sanitize(&r.before)
        );
        return Ok(());
    }
    if r.dry_run {
        crate::outln!("dry run — nothing was changed.");
        let want = r
            .steps
            .iter()
            .find_map(|s| match s {
                crate::ops::hash_on::HashStep::Declare { hash_on, .. } => Some(hash_on.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "?".into());
        crate::outln!(
            "gate of `{}` hashes {} (on `{}`) → {want}; weights kept: {}",
            sanitize(&r.namespace),
            sanitize(&r.before),
            sanitize(&r.gate_before),
            r.split.describe()
        );
        for (i, s) in r.steps.iter().enumerate() {
            crate::outln!("  {}. {}", i + 1, s.describe());
        }
        return Ok(());
    }
    crate::outln!(
        "the gate of `{}` now hashes {} (on `{}`, weights {}), verified in {:.0} ms",
        sanitize(&r.namespace),
        sanitize(&r.after),
        sanitize(&r.gate_after),
        r.split.describe(),
        r.elapsed_ms
    );
    if let Some(e) = &r.event {
        crate::outln!("ledger event {} ({})", e.short_id(), e.id);
    }
    Ok(())
}

/// The split that happened next to the gate of `view` (`gate show`): measured over the last
/// minute, judged, and the cause when it is off.
pub async fn measured_split(
    ctx: &Ctx,
    session: &crate::broker::session::Session,
    mgmt: &crate::broker::mgmt::Mgmt,
    view: &crate::ops::gate::GateView,
) -> (
    Option<crate::model::split::MeasuredSplit>,
    crate::model::snapshot::SplitReport,
) {
    let names = crate::topology::Namespace::resolve(&ctx.cfg, &view.namespace);
    let hash = view.layout.as_ref().and_then(|l| l.hash_on.clone().ok());
    let measured =
        crate::broker::split::measure(mgmt, &view.versions, crate::broker::split::WINDOW_S).await;
    let report = crate::broker::split::judge(
        session,
        Some(mgmt),
        &names,
        &view.versions,
        &view.split,
        hash.as_ref(),
        measured.as_ref(),
    )
    .await;
    (measured, report)
}
