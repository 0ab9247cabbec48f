//! `hopback gate show NS` and `hopback gate set NS v1=90 v2=10`: the CLI face of
//! [`crate::ops::gate`]. `set` prints the exact step plan and the consumers of each version, asks
//! (typed on production profiles), applies, verifies and names the ledger event.

use clap::Subcommand;

use crate::broker::mgmt::Mgmt;
use crate::commands::{Ctx, confirm};
use crate::error::Failure;
use crate::ledger::projection::{GateHistory, drift};
use crate::ledger::{Ledger, StreamStart};
use crate::model::gate::{GateSplit, parse_targets};
use crate::model::gate_lock::LockKind;
use crate::ops::gate::{self, ApplyReport, GateRequest, GateView, Step};
use crate::ops::{OpContext, Via};
use crate::text::sanitize;

/// `hopback gate NS`: `hopback gate show NS`.
pub fn show_of(namespace: Option<String>, options: &[String]) -> Result<GateCommand, Failure> {
    super::subcommand_of::<GateCommand>("gate", "show", namespace, options)
}

/// `gate` subcommands.
#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// Show the current split, bindings, consumers, unrouted depth and drift from the ledger
    Show {
        /// Namespace
        namespace: String,
    },
    /// Flip the gate: `v2=100` (full), `v1=90 v2=10` (canary), `v1=100` (back)
    Set {
        /// Namespace
        namespace: String,
        /// Targets VERSION=WEIGHT, space- or comma-separated (integer weights, shown as
        /// percentages)
        #[arg(required = true, num_args = 1..)]
        targets: Vec<String>,
        /// Why (recorded in the ledger)
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask
        #[arg(long)]
        yes: bool,
        /// Print the step plan and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Allow moving traffic onto a version whose queue has no consumers
        #[arg(long)]
        force_zero_consumers: bool,
        /// After the flip, when tasks are flowing, wait up to this long for enough new tasks to
        /// check that they split as set; exit 4 (and journal an alert) when they do not. `0s`
        /// skips the check; with no tasks in the last minute there is nothing to wait for
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "30s",
            env = "HOPBACK_VERIFY_SPLIT"
        )]
        verify_split: humantime::Duration,
    },
    /// Change what the gate hashes to split tasks, keeping the weights and losing no task
    HashOn {
        /// Namespace
        namespace: String,
        /// message_id | correlation_id | header:NAME | routing-key (Celery: correlation_id), or
        /// auto: what a sample of the namespace's tasks can be split by
        field: String,
        /// Why (recorded in the ledger)
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask
        #[arg(long)]
        yes: bool,
        /// Print the step plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove what holds the gate lock `NS.gate-lock` when it blocks every flip (a squatting
    /// durable queue, another program's exclusive queue); shows the holder and asks first
    Unlock {
        /// Namespace
        namespace: String,
        /// Why (recorded in the ledger)
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask (an exclusive lock also needs --owner)
        #[arg(long)]
        yes: bool,
        /// The owner connection of an exclusive lock, as shown: freeing it closes that connection
        #[arg(long)]
        owner: Option<String>,
    },
}

/// Run a `gate` subcommand.
pub async fn run(ctx: &Ctx, cmd: GateCommand) -> Result<(), Failure> {
    match cmd {
        GateCommand::Show { namespace } => show(ctx, &namespace).await,
        GateCommand::HashOn {
            namespace,
            field,
            reason,
            yes,
            dry_run,
        } => super::gate_hash::run(ctx, &namespace, &field, reason, yes, dry_run).await,
        GateCommand::Set {
            namespace,
            targets,
            reason,
            yes,
            dry_run,
            force_zero_consumers,
            verify_split,
        } => {
            let target = parse_targets(&targets).map_err(|e| {
                Failure::usage(
                    e,
                    format!(
                        "e.g. `hopback gate set {} v1=90 v2=10`",
                        sanitize(&namespace)
                    ),
                )
            })?;
            let req = GateRequest {
                namespace,
                target,
                reason,
                force_zero_consumers,
                dry_run,
                extra_params: Default::default(),
                expect_before: None,
            };
            let (ns, dry) = (req.namespace.clone(), req.dry_run);
            let since_ms = chrono::Utc::now().timestamp_millis();
            set(ctx, req, yes).await?;
            let wait: std::time::Duration = verify_split.into();
            if dry || wait.is_zero() {
                return Ok(());
            }
            super::gate_hash::verify_split(ctx, &ns, since_ms, wait).await
        }
        GateCommand::Unlock {
            namespace,
            reason,
            yes,
            owner,
        } => {
            let req = gate::UnlockRequest {
                namespace,
                reason,
                confirmed_owner: owner,
            };
            unlock(ctx, req, yes).await
        }
    }
}

/// Show what holds the gate lock, confirm, remove it through [`gate::unlock`], report.
async fn unlock(ctx: &Ctx, mut req: gate::UnlockRequest, yes: bool) -> Result<(), Failure> {
    ctx.require_writable("unlock the gate")?;
    let mgmt = require_mgmt(ctx)?;
    let ns = req.namespace.clone();
    let holder = gate::lock_holder(&mgmt, &ctx.cfg, &ns).await?;
    let Some(h) = holder else {
        if ctx.json {
            return ctx.print_json(&serde_json::json!({"namespace": ns, "holder": null}));
        }
        crate::outln!(
            "the gate lock of `{}` is free: nothing to unlock",
            sanitize(&ns)
        );
        return Ok(());
    };
    if !ctx.json {
        crate::outln!("gate lock: {}", h.describe());
    }
    let owner = h.owner_connection.clone();
    match h.kind() {
        LockKind::Squatter => confirm(
            &format!(
                "Delete the queue `{}` (it blocks every flip of `{}`; the removal is journaled)?",
                sanitize(&h.queue),
                sanitize(&ns)
            ),
            yes,
            None,
        )?,
        // An exclusive lock goes only with its connection: the answer must name it.
        LockKind::HopbackFlip | LockKind::ForeignConnection if req.confirmed_owner.is_none() => {
            let owner = owner.unwrap_or_default();
            if yes {
                return Err(Failure::refused(
                    format!(
                        "not unlocking: freeing `{}` closes connection `{}`, and --yes alone does not name it; nothing changed",
                        sanitize(&h.queue),
                        sanitize(&owner)
                    ),
                    format!("add --owner '{}'", sanitize(&owner)),
                ));
            }
            confirm(
                &format!(
                    "Freeing `{}` closes connection `{}`{}.",
                    sanitize(&h.queue),
                    sanitize(&owner),
                    if h.kind() == LockKind::HopbackFlip {
                        " — a hopback flip under way"
                    } else {
                        ""
                    }
                ),
                false,
                Some(&owner),
            )?;
            req.confirmed_owner = Some(owner);
        }
        // The operation refuses it and says why (its owner is not known yet).
        LockKind::ExclusiveOwnerUnknown => {}
        _ => confirm(
            &format!(
                "Free `{}` by closing connection `{}`?",
                sanitize(&h.queue),
                sanitize(owner.as_deref().unwrap_or("?"))
            ),
            yes,
            None,
        )?,
    }
    let session = ctx.connect().await?;
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let r = gate::unlock(&cx, &req).await;
    session.close().await;
    let r = r?;
    if ctx.json {
        return ctx.print_json(&r);
    }
    match (&r.holder, r.action) {
        (None, _) => crate::outln!(
            "the gate lock of `{}` is free: nothing to unlock",
            sanitize(&ns)
        ),
        (Some(_), Some("close_owner_connection")) => crate::outln!(
            "closed the owner connection: the gate lock of `{}` is free (verified)",
            sanitize(&ns)
        ),
        (Some(h), _) => crate::outln!(
            "deleted `{}` ({} message(s)): the gate lock of `{}` is free (verified)",
            sanitize(&h.queue),
            r.messages_deleted.unwrap_or(0),
            sanitize(&ns)
        ),
    }
    if let Some(e) = &r.event {
        crate::outln!("ledger event {} ({})", e.short_id(), e.id);
    }
    Ok(())
}

pub(crate) fn require_mgmt(ctx: &Ctx) -> Result<Mgmt, Failure> {
    ctx.mgmt().ok_or_else(|| {
        Failure::error(
            "the management API client cannot be built",
            "the gate is read from the management API: check mgmt_url and ca_file (`hopback check`)",
        )
    })
}

/// A 20-column bar of `pct` percent.
pub fn bar(pct: f64) -> String {
    let filled = ((pct / 5.0).round() as usize).min(20);
    format!("{}{}", "█".repeat(filled), "░".repeat(20 - filled))
}

/// Versions to probe for `gate show` on a convention namespace (bound ones are always read).
fn probe_versions() -> Vec<String> {
    (1..=9).map(|i| format!("v{i}")).collect()
}

async fn ledger_history(ledger: &Ledger, ns: &str) -> Result<GateHistory, Failure> {
    let mut h = GateHistory::new(ns, 0);
    let read = ledger.fold(StreamStart::First, |e| h.push(&e)).await;
    super::warn_skipped(ledger);
    read?;
    Ok(h)
}

async fn show(ctx: &Ctx, ns: &str) -> Result<(), Failure> {
    let session = ctx.connect().await?;
    let mgmt = require_mgmt(ctx)?;
    let view = gate::read_gate(&session, &mgmt, &ctx.cfg, ns, &probe_versions()).await;
    let view = match view {
        Ok(v) => v,
        Err(f) => {
            session.close().await;
            return Err(f.into());
        }
    };
    let (measured, split_check) =
        super::gate_hash::measured_split(ctx, &session, &mgmt, &view).await;
    let ledger = Ledger::open_read(&session, &ctx.cfg).await;
    let history = ledger_history(&ledger, ns).await;
    session.close().await;
    let (drift, ledger_note) = match &history {
        Ok(h) => (drift(h.last_known(), &view.split), None),
        Err(f) => (None, Some(f.message.clone())),
    };
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "gate": view, "percent": percents(&view.split), "drift": drift,
            "last_known": history.as_ref().ok().and_then(|h| h.last_known().cloned()),
            "ledger": ledger.backend_description(),
            "measured": measured, "split_check": split_check,
        }));
    }
    print_view(&view);
    crate::outln!(
        "  {}{}",
        if split_check.differs() { "(!) " } else { "" },
        sanitize(&split_check.describe(&view.split, &measured.unwrap_or_default()))
    );
    match (&drift, &history) {
        (Some(d), _) => crate::outln!("DRIFT  {}", sanitize(&d.describe())),
        (None, Ok(h)) => match h.last_known() {
            Some(s) => crate::outln!(
                "ledger: matches the last recorded state ({} by {} at {})",
                s.short_id,
                s.who,
                s.ts.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => crate::outln!("ledger: no gate change of `{}` recorded yet", sanitize(ns)),
        },
        _ => {}
    }
    if let Some(n) = ledger_note {
        crate::errln!("warning: cannot read the ledger: {}", sanitize(&n));
    }
    Ok(())
}

fn percents(s: &GateSplit) -> serde_json::Value {
    s.bound()
        .map(|(v, _)| (v.clone(), serde_json::json!(s.percent(v))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Print a gate view for humans.
pub fn print_view(view: &GateView) {
    crate::outln!(
        "gate of `{}` ({} exchange `{}`, {})",
        sanitize(&view.namespace),
        if view.layout.as_ref().is_some_and(|l| l.behind()) {
            "gate"
        } else {
            "entry"
        },
        sanitize(&view.entry),
        sanitize(&view.entry_kind)
    );
    if let Some(l) = &view.layout {
        crate::outln!(
            "  hashes: {}{}",
            sanitize(&l.hash_text()),
            if l.behind() {
                format!(" (the gate sits behind `{}`)", sanitize(&l.entry))
            } else {
                String::new()
            }
        );
    }
    if view.split.bound().count() == 0 {
        crate::outln!(
            "  NOTHING BOUND: every message goes to `{}`",
            sanitize(&view.unrouted)
        );
    }
    for (v, q) in &view.versions {
        let pct = view.split.percent(v);
        let consumers = match view.consumers.get(v).copied().flatten() {
            Some(0) => "0 consumers (!)".to_string(),
            Some(n) => format!("{n} consumer(s)"),
            None => "consumers ?".into(),
        };
        let ready = view
            .ready
            .get(v)
            .copied()
            .flatten()
            .map_or("?".into(), |r| r.to_string());
        crate::outln!(
            "  {:<4} {} {:>5.1}%  weight {:<5} {:<16} ready {:<8} queue {}",
            sanitize(v),
            bar(pct),
            pct,
            view.split.weight(v),
            consumers,
            ready,
            sanitize(q)
        );
    }
    if view.problems.is_empty()
        && let Some(note) = view.split.idle_weight_note()
    {
        crate::outln!("  note: {}", sanitize(&note));
    }
    match view.unrouted_ready {
        Some(0) => crate::outln!("  unrouted: 0"),
        Some(n) => crate::outln!(
            "  UNROUTED: {n} message(s) in `{}` — replay them through the entry exchange (dlq replay / mover)",
            sanitize(&view.unrouted)
        ),
        None => crate::outln!("  unrouted: queue `{}` missing", sanitize(&view.unrouted)),
    }
    for p in &view.problems {
        crate::outln!("  PROBLEM: {}", sanitize(p));
    }
}

fn print_plan(view: &GateView, target: &GateSplit, steps: &[Step], warnings: &[String]) {
    crate::outln!(
        "gate of `{}`: {} ({}) → {} ({})",
        sanitize(&view.namespace),
        view.split.describe(),
        view.split.describe_percent(),
        target.describe(),
        target.describe_percent()
    );
    for v in target.bound().map(|(v, _)| v) {
        if let (Some(c), Some(q)) = (
            view.consumers.get(v).copied().flatten(),
            view.versions.get(v),
        ) {
            crate::outln!("  {}: {c} consumer(s) on `{}`", sanitize(v), sanitize(q));
        }
    }
    crate::outln!("plan ({} step(s)):", steps.len());
    for (i, s) in steps.iter().enumerate() {
        crate::outln!("  {}. {}", i + 1, s.describe());
    }
    for w in warnings {
        crate::outln!("warning: {}", sanitize(w));
    }
}

/// Validate, show, confirm, apply and report a gate change (shared by `gate set` and `revert`).
pub async fn set(ctx: &Ctx, req: GateRequest, yes: bool) -> Result<(), Failure> {
    if !req.dry_run {
        ctx.require_writable("change the gate")?;
    }
    let session = ctx.connect().await?;
    let result = set_on(ctx, &session, req, yes).await;
    session.close().await;
    let report = result?;
    if ctx.json {
        ctx.print_json(&report)?;
    } else {
        print_report(&report);
    }
    // A dry run exits as the real run would: a script checking a flip first sees the refusal.
    match &report.would_be_refused {
        Some(why) => Err(Failure::refused(
            format!("dry run: a real run would be refused: {}", sanitize(why)),
            "bring up the target version's consumers first, or add --force-zero-consumers",
        )),
        None => Ok(()),
    }
}

async fn set_on(
    ctx: &Ctx,
    session: &std::sync::Arc<crate::broker::session::Session>,
    req: GateRequest,
    yes: bool,
) -> Result<ApplyReport, Failure> {
    let mgmt = require_mgmt(ctx)?;
    // A dry run and a no-op change nothing and journal nothing: no ledger is opened for them.
    let quiet = OpContext {
        session: session.clone(),
        mgmt: Some(mgmt.clone()),
        ledger: std::sync::Arc::new(Ledger::file(std::path::Path::new(""), "not used", &ctx.cfg)),
        cfg: ctx.cfg.clone(),
        via: Via::Cli,
        journal_sink: None,
    };
    if req.dry_run {
        return Ok(gate::apply(&quiet, &req).await?);
    }
    let also: Vec<String> = req.target.0.keys().cloned().collect();
    let view = gate::read_gate(session, &mgmt, &ctx.cfg, &req.namespace, &also).await?;
    let (steps, warnings) = gate::validate(&view, &req.target, req.force_zero_consumers)?;
    if steps.is_empty() {
        return Ok(gate::apply(&quiet, &req).await?);
    }
    if !ctx.json {
        print_plan(&view, &req.target, &steps, &warnings);
    }
    let question = format!(
        "Apply this plan to the gate of `{}` on profile `{}`?",
        sanitize(&req.namespace),
        sanitize(&ctx.cfg.profile.name)
    );
    let typed = ctx.cfg.profile.production.then_some(req.namespace.as_str());
    confirm(&question, yes, typed)?;
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    if !cx.ledger.is_stream() {
        crate::errln!(
            "warning: ledger: {}",
            sanitize(&cx.ledger.backend_description())
        );
    }
    // Compare-and-set: the flip acts only if the gate is still the one the plan was shown for.
    let req = GateRequest {
        expect_before: Some(view.split.clone()),
        ..req
    };
    Ok(gate::apply(&cx, &req).await?)
}

fn print_report(r: &ApplyReport) {
    if r.dry_run && !r.steps.is_empty() {
        crate::outln!(
            "dry run: gate of `{}` would go {} → {} ({}); nothing was changed",
            sanitize(&r.namespace),
            r.before.describe(),
            r.target.describe(),
            r.target.describe_percent()
        );
        for (i, s) in r.steps.iter().enumerate() {
            crate::outln!("  {}. {}", i + 1, s.describe());
        }
        for w in &r.warnings {
            crate::outln!("warning: {}", sanitize(w));
        }
        return;
    }
    if !r.changed {
        crate::outln!(
            "gate of `{}` is already {} ({}): nothing to change",
            sanitize(&r.namespace),
            r.before.describe(),
            r.before.describe_percent()
        );
        return;
    }
    crate::outln!(
        "gate of `{}` is now {} ({}), verified against the broker's bindings in {:.0} ms",
        sanitize(&r.namespace),
        r.after.describe(),
        r.after.describe_percent(),
        r.elapsed_ms
    );
    if let Some(note) = r.after.idle_weight_note() {
        crate::outln!("note: {}", sanitize(&note));
    }
    if let Some(e) = &r.event {
        crate::outln!("ledger event {} ({})", e.short_id(), e.id);
    }
}
