//! Configuration history from the ledger (seed: "maintain a history of configurations"):
//! `hopback history NS` lists the gate states recorded for a namespace and flags drift,
//! `hopback diff NS A B` compares two of them (or one with `current`), and
//! `hopback revert NS --to ID` re-applies an earlier state through the gate operation, so the
//! revert is itself verified and journaled.

use clap::Args;

use crate::commands::Ctx;
use crate::commands::gate::{require_mgmt, set};
use crate::error::Failure;
use crate::ledger::projection::{GateHistory, GateState, diff_gates, drift};
use crate::ledger::{Ledger, StreamStart};
use crate::model::gate::GateSplit;
use crate::ops::gate::{self, GateRequest};
use crate::text::sanitize;

/// `history` arguments.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Namespace
    pub namespace: String,
}

/// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Namespace
    pub namespace: String,
    /// Event id (≥ 4 hex digits) of the first state, or `current` (the broker now)
    pub a: String,
    /// Event id of the second state, or `current`
    pub b: String,
}

/// `revert` arguments.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Namespace
    pub namespace: String,
    /// Event id (≥ 4 hex digits, from `hopback history NS`) whose gate state to restore
    #[arg(long)]
    pub to: String,
    /// Why (recorded in the ledger; default "revert to ID")
    #[arg(long)]
    pub reason: Option<String>,
    /// Do not ask
    #[arg(long)]
    pub yes: bool,
    /// Print the step plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Allow moving traffic onto a version whose queue has no consumers
    #[arg(long)]
    pub force_zero_consumers: bool,
}

async fn load_history(
    ctx: &Ctx,
    ns: &str,
) -> Result<(GateHistory, Result<GateSplit, String>, String), Failure> {
    let session = ctx.connect().await?;
    let ledger = Ledger::open_read(&session, &ctx.cfg).await;
    let mut h = GateHistory::new(ns, 0);
    let read = ledger.fold(StreamStart::First, |e| h.push(&e)).await;
    super::warn_skipped(&ledger);
    // Unknown says why (no management API, no such namespace, …), never only "unknown".
    let current = match ctx.mgmt() {
        Some(m) => gate::read_gate(&session, &m, &ctx.cfg, ns, &[])
            .await
            .map(|v| v.split)
            .map_err(|e| e.to_string()),
        None => Err("no management API is configured".to_string()),
    };
    session.close().await;
    read?;
    Ok((h, current, ledger.backend_description()))
}

/// Run `history`.
pub async fn history(ctx: &Ctx, args: HistoryArgs) -> Result<(), Failure> {
    let ns = &args.namespace;
    let (h, current, source) = load_history(ctx, ns).await?;
    // Nothing recorded and nothing on the broker: a typo or a namespace that is gone — an
    // error, not an empty history (exit 1).
    if h.states().is_empty()
        && let Err(why) = &current
    {
        return Err(Failure::error(
            format!(
                "no gate history of `{}`: the ledger has no gate state of it ({}) and the broker's gate is unknown: {}",
                sanitize(ns),
                sanitize(&source),
                sanitize(why)
            ),
            "check the name (`hopback status` lists the namespaces)",
        ));
    }
    let d = current.as_ref().ok().and_then(|c| drift(h.last_known(), c));
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "namespace": ns, "states": h.states(), "current": current.as_ref().ok(),
            "current_unknown": current.as_ref().err(), "drift": d, "ledger": source,
        }));
    }
    if h.states().is_empty() {
        crate::outln!(
            "no gate state of `{}` recorded in the ledger ({})",
            sanitize(ns),
            sanitize(&source)
        );
    }
    for s in h.states() {
        crate::outln!("{}", state_line(s));
    }
    match (&current, &d) {
        (Ok(_), Some(d)) => crate::outln!("DRIFT  {}", sanitize(&d.describe())),
        (Ok(c), None) => {
            crate::outln!("current (broker): {}", c.describe_shares());
            if let Some(note) = c.idle_weight_note() {
                crate::outln!("note: {}", sanitize(&note));
            }
        }
        (Err(why), _) => crate::outln!("current (broker): unknown ({})", sanitize(why)),
    }
    Ok(())
}

fn state_line(s: &GateState) -> String {
    let mut line = format!(
        "{}  {}  {:<30} {:<14} {:<34} {}",
        s.ts.format("%Y-%m-%d %H:%M:%S"),
        s.short_id,
        s.who,
        s.kind,
        s.split.describe_shares(),
        s.outcome
    );
    if let Some((v, w)) = s.split.idle_weight() {
        line.push_str(&format!(" (weight {w} of the lone {v} no longer matters)"));
    }
    if let Some(r) = &s.reason {
        line.push_str(&format!(" — {r}"));
    }
    line
}

fn pick(
    h: &GateHistory,
    current: &Result<GateSplit, String>,
    id: &str,
) -> Result<(String, GateSplit), Failure> {
    if id.eq_ignore_ascii_case("current") {
        return current
            .clone()
            .map(|c| ("current".to_string(), c))
            .map_err(|why| {
                Failure::error(
                    format!("the broker's current gate is unknown: {}", sanitize(&why)),
                    "`hopback check` diagnoses the connection and the management API",
                )
            });
    }
    h.find(id)
        .map(|s| (s.short_id.clone(), s.split.clone()))
        .map_err(|e| Failure::usage(e, "list the ids with `hopback history NS`"))
}

/// Run `diff`.
pub async fn diff(ctx: &Ctx, args: DiffArgs) -> Result<(), Failure> {
    let (h, current, _) = load_history(ctx, &args.namespace).await?;
    let (an, a) = pick(&h, &current, &args.a)?;
    let (bn, b) = pick(&h, &current, &args.b)?;
    let changes = diff_gates(&a, &b);
    if ctx.json {
        return ctx.print_json(&serde_json::json!({"a": {"id": an, "gate": a}, "b": {"id": bn, "gate": b}, "changes": changes}));
    }
    crate::outln!("{an}: {} ({})", a.describe(), a.describe_percent());
    crate::outln!("{bn}: {} ({})", b.describe(), b.describe_percent());
    if changes.is_empty() {
        crate::outln!("same gate");
    }
    for c in &changes {
        crate::outln!(
            "  {:<4} weight {} → {}  ({:.1}% → {:.1}%)",
            sanitize(&c.version),
            c.from,
            c.to,
            a.percent(&c.version),
            b.percent(&c.version)
        );
    }
    Ok(())
}

/// Run `revert`.
pub async fn revert(ctx: &Ctx, args: RevertArgs) -> Result<(), Failure> {
    if !args.dry_run {
        ctx.require_writable("revert the gate")?;
    }
    let _ = require_mgmt(ctx)?;
    let (h, _, _) = load_history(ctx, &args.namespace).await?;
    let state = h
        .find_verified(&args.to)
        .map_err(|e| Failure::usage(e, "list the ids with `hopback history NS`"))?;
    let mut extra = serde_json::Map::new();
    extra.insert(
        "revert_of".into(),
        serde_json::json!(state.event_id.to_string()),
    );
    let req = GateRequest {
        namespace: args.namespace.clone(),
        target: state.split.clone(),
        reason: Some(
            args.reason
                .unwrap_or_else(|| format!("revert to {}", state.short_id)),
        ),
        force_zero_consumers: args.force_zero_consumers,
        dry_run: args.dry_run,
        extra_params: extra,
        expect_before: None,
    };
    set(ctx, req, args.yes).await
}
