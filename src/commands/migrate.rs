//! `hopback migrate NS [--dry-run] [--yes]`: show what differs from the cluster-safe convention,
//! confirm, and run [`crate::ops::migrate`] (which guards, journals and verifies).

use crate::commands::{Ctx, confirm};
use crate::error::Failure;
use crate::ops::migrate::{self, MigratePlan};
use crate::ops::{OpContext, Via};

fn describe(plan: &MigratePlan) {
    for (q, depth) in &plan.rebuild {
        crate::outln!(
            "  ~ rebuild `{q}` as a quorum queue ({} dead letter(s) moved through `{}` and back)",
            depth.map_or("? (count unknown)".into(), |d| d.to_string()),
            migrate::holding_queue(q)
        );
    }
    for q in &plan.resume {
        crate::outln!(
            "  ~ finish rebuilding `{q}` (an earlier run stopped; `{}` holds its dead letters)",
            migrate::holding_queue(q)
        );
    }
    if !plan.policy_for.is_empty() {
        crate::outln!(
            "  ~ policy `{}`: at-least-once dead lettering for {}",
            plan.policy_name,
            plan.policy_for.join(", ")
        );
    }
    for q in &plan.left_alone {
        crate::outln!(
            "  = `{q}` has a policy of its own: add dead-letter-strategy=at-least-once and overflow=reject-publish to it"
        );
    }
}

/// Run `migrate`.
pub async fn run(ctx: &Ctx, ns: &str, dry_run: bool, yes: bool) -> Result<(), Failure> {
    crate::broker::topology::validate_namespace(ns)
        .map_err(|e| Failure::usage(e, "use the namespace's name, e.g. `email`"))?;
    if !dry_run {
        ctx.require_writable("migrate a namespace")?;
    }
    let session = ctx.connect().await?;
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let plan = match migrate::plan(&cx, ns).await {
        Ok(p) => p,
        Err(e) => {
            session.close().await;
            return Err(e.into());
        }
    };
    if plan.is_empty() || dry_run {
        session.close().await;
        if ctx.json {
            return ctx.print_json(&serde_json::json!({
                "namespace": ns, "dry_run": dry_run, "plan": plan, "changed": false,
            }));
        }
        if plan.is_empty() {
            crate::outln!("namespace `{ns}`: already the cluster-safe convention; nothing to do");
            for q in &plan.left_alone {
                crate::outln!("  = `{q}` has a policy of its own (left alone)");
            }
        } else {
            crate::outln!("dry run — migrate `{ns}` would:");
            describe(&plan);
            crate::outln!("nothing was changed");
        }
        return Ok(());
    }
    if !ctx.json {
        crate::outln!("migrate `{ns}` to the cluster-safe convention:");
        describe(&plan);
    }
    if let Err(f) = confirm(
        "Migrate now? Dead letters keep flowing; none is lost (one arriving at the switch may appear twice)",
        yes,
        None,
    ) {
        session.close().await;
        return Err(f);
    }
    let done = migrate::run(&cx, ns).await;
    session.close().await;
    let report = done?;
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "namespace": ns, "dry_run": false, "plan": report.plan, "changed": true,
            "moved": report.moved, "possible_duplicates": report.possible_duplicates,
        }));
    }
    crate::outln!(
        "namespace `{ns}` migrated: {} dead letter(s) moved, {} possible duplicate(s), 0 lost",
        report.moved,
        report.possible_duplicates
    );
    Ok(())
}
