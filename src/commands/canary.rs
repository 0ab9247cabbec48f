//! `hopback canary NS --to v2 …` runs the self-driving canary ([`crate::ops::canary`]) in this
//! process until it promotes or aborts, printing each step, analysis and decision on stderr;
//! `canary --resume ID` continues a canary whose process died; `canary pause|resume|promote|abort
//! ID` reach a running one through the broker; `canary list [NS]` shows them.
//!
//! Exit codes: 0 promoted (or the control request applied) · 1 failed, or the canary is not
//! running · 2 usage · 3 refused, or not confirmed · 4 aborted by its analysis (the automatic
//! rollback ran; the ledger has the evidence).

use std::path::PathBuf;
use std::sync::Arc;

use crate::commands::{Ctx, confirm};
use crate::error::Failure;
use crate::ledger::Ledger;
use crate::model::canary::{CanaryPlan, DeadLetters, parse_steps};
use crate::ops::canary::{
    self, CanaryObserver, CanaryOutcome, CanaryReport, CanaryRequest, CanaryUpdate, ControlCommand,
};
use crate::ops::{OpContext, Via};
use crate::text::sanitize;

/// Arguments of `hopback canary`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CanaryArgs {
    /// pause | resume | promote | abort | list
    #[command(subcommand)]
    pub command: Option<CanaryCommand>,
    /// Start (or resume) a canary.
    #[command(flatten)]
    pub start: StartArgs,
}

/// Starting a canary.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// Namespace
    #[arg(required_unless_present = "resume")]
    pub namespace: Option<String>,
    /// The new version (required unless the plan file names it)
    #[arg(long)]
    pub to: Option<String>,
    /// The version that has the traffic now and gets it back on an abort [default: v1]
    #[arg(long)]
    pub from: Option<String>,
    /// The new version's share at each step, in percent, ending at 100 [default: 1,5,25,50,100]
    #[arg(long)]
    pub steps: Option<String>,
    /// How long each step is held and analysed [default: 2m]
    #[arg(long)]
    pub step_time: Option<humantime::Duration>,
    /// Abort when the new version's error rate is above this, in percent [default: 2]
    #[arg(long)]
    pub max_error_rate: Option<f64>,
    /// Hold a step while the new version's queue has more ready tasks than this
    #[arg(long)]
    pub max_backlog: Option<u64>,
    /// Tasks the new version must process in a step before it can pass [default: 10]
    #[arg(long)]
    pub min_processed: Option<u64>,
    /// A hold (unknown data, too few tasks, no consumers, backlog) longer than this aborts
    /// [default: 10m]
    #[arg(long)]
    pub max_hold: Option<humantime::Duration>,
    /// How often the metrics are read and analysed [default: 5s]
    #[arg(long)]
    pub refresh: Option<humantime::Duration>,
    /// How long the abort's rollback watches the old version's error rate [default: 10s]
    #[arg(long)]
    pub verify_window: Option<humantime::Duration>,
    /// After an abort: replay the new version's dead letters to the old one, or keep them
    /// [default: replay]
    #[arg(long, value_parser = ["replay", "keep"])]
    pub dead_letters: Option<String>,
    /// A TOML plan file (the same keys: from, to, steps, step_time, max_error_rate, …); flags
    /// override it
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Show the gate now and the steps; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Continue a canary whose process died, from the ledger
    #[arg(long, value_name = "ID", conflicts_with_all = ["namespace", "plan", "dry_run", "to", "from", "steps"])]
    pub resume: Option<String>,
}

/// The verbs that reach a running canary, and the list.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CanaryCommand {
    /// Stop advancing (a failing new version still aborts it)
    Pause(ControlArgs),
    /// Advance again after a pause
    Resume(ControlArgs),
    /// Give the new version 100 % now
    Promote(ControlArgs),
    /// Roll back now (the gate goes back at once, then the rollback runs)
    Abort(ControlArgs),
    /// Canaries in the ledger: running, paused, stopped (resumable) or finished
    List {
        /// Only this namespace
        namespace: Option<String>,
    },
}

/// Which canary.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Canary id (printed at its start; `hopback canary list`)
    pub id: String,
    /// Its namespace (default: read from the ledger)
    #[arg(long)]
    pub namespace: Option<String>,
    /// Do not ask for confirmation (promote, abort)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// A plan file: the flags' keys.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    from: Option<String>,
    to: Option<String>,
    steps: Option<Vec<u32>>,
    step_time: Option<String>,
    max_error_rate: Option<f64>,
    max_backlog: Option<u64>,
    min_processed: Option<u64>,
    max_hold: Option<String>,
    refresh: Option<String>,
    verify_window: Option<String>,
    dead_letters: Option<DeadLetters>,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn duration(key: &str, v: &str) -> Result<u64, Failure> {
    humantime::parse_duration(v).map(ms).map_err(|e| {
        Failure::usage(
            format!("plan file: `{key} = {}`: {e}", sanitize(v)),
            "write durations like \"2m\" or \"30s\"",
        )
    })
}

/// The plan from the file (if any), the flags over it, the defaults under both.
fn plan_of(a: &StartArgs) -> Result<CanaryPlan, Failure> {
    let file = match &a.plan {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Failure::usage(
                    format!(
                        "cannot read plan file {}: {e}",
                        sanitize(&p.display().to_string())
                    ),
                    "give a readable TOML file",
                )
            })?;
            toml::from_str::<PlanFile>(&text).map_err(|e| {
                Failure::usage(
                    format!(
                        "plan file {}: {}",
                        sanitize(&p.display().to_string()),
                        sanitize(e.message())
                    ),
                    "keys: from, to, steps, step_time, max_error_rate, max_backlog, min_processed, max_hold, refresh, verify_window, dead_letters",
                )
            })?
        }
        None => PlanFile::default(),
    };
    let to = a.to.clone().or(file.to).ok_or_else(|| {
        Failure::usage(
            "which version is the canary? --to is missing",
            "hopback canary NS --to v2",
        )
    })?;
    let from = a.from.clone().or(file.from).unwrap_or_else(|| "v1".into());
    let mut p = CanaryPlan::new(&from, &to);
    if let Some(s) = &a.steps {
        p.steps = parse_steps(s).map_err(|e| Failure::usage(e.0, "e.g. --steps 1,5,25,50,100"))?;
    } else if let Some(s) = file.steps {
        p.steps = s;
    }
    if let Some(d) = a.step_time {
        p.step_time_ms = ms(*d);
    } else if let Some(d) = &file.step_time {
        p.step_time_ms = duration("step_time", d)?;
    }
    if let Some(r) = a.max_error_rate.or(file.max_error_rate) {
        p.max_error_rate_pct = r;
    }
    p.max_backlog = a.max_backlog.or(file.max_backlog);
    if let Some(n) = a.min_processed.or(file.min_processed) {
        p.min_processed = n;
    }
    if let Some(d) = a.max_hold {
        p.max_hold_ms = ms(*d);
    } else if let Some(d) = &file.max_hold {
        p.max_hold_ms = duration("max_hold", d)?;
    }
    if let Some(d) = a.refresh {
        p.refresh_ms = ms(*d);
    } else if let Some(d) = &file.refresh {
        p.refresh_ms = duration("refresh", d)?;
    }
    if let Some(d) = a.verify_window {
        p.verify_window_ms = ms(*d);
    } else if let Some(d) = &file.verify_window {
        p.verify_window_ms = duration("verify_window", d)?;
    }
    match a.dead_letters.as_deref() {
        Some("keep") => p.dead_letters = DeadLetters::Keep,
        Some(_) => p.dead_letters = DeadLetters::Replay,
        None => {
            if let Some(d) = file.dead_letters {
                p.dead_letters = d;
            }
        }
    }
    p.validate()
        .map_err(|e| Failure::usage(e.0, "see `hopback canary --help`"))?;
    Ok(p)
}

/// Prints the canary's progress on stderr (one line per step, verdict change and decision).
struct Lines {
    quiet: bool,
    last: std::sync::Mutex<Option<String>>,
}

impl CanaryObserver for Lines {
    fn update(&self, u: &CanaryUpdate) {
        if self.quiet {
            return;
        }
        match u {
            CanaryUpdate::Started {
                id,
                namespace,
                plan,
                first_step,
                resumed,
            } => crate::errln!(
                "canary {id} {} on {}: {} → {}, steps {} %, {} each, max error rate {}% — control it with `hopback canary pause|resume|promote|abort {id}`",
                if *resumed { "resumed" } else { "started" },
                sanitize(namespace),
                plan.from,
                plan.to,
                plan.steps[*first_step..]
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
                humantime::format_duration(plan.step_time()),
                plan.max_error_rate_pct
            ),
            CanaryUpdate::Step { index, weight } => {
                crate::errln!("  step {}: {weight} % on the new version", index + 1)
            }
            CanaryUpdate::Analysis { verdict, .. } => {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                let key = verdict.name().to_string();
                if last.as_deref() != Some(key.as_str()) || key != "wait" {
                    crate::errln!("    {}: {}", key, sanitize(verdict.why()));
                }
                *last = Some(key);
            }
            CanaryUpdate::Control { command, by } => {
                crate::errln!("  {command} (asked by {})", sanitize(by))
            }
            CanaryUpdate::Aborting { why } => crate::errln!(
                "  ABORT: {} — the gate goes back now, then the rollback runs",
                sanitize(why)
            ),
            CanaryUpdate::Finished { outcome } => crate::errln!("  → {}", describe(outcome)),
        }
    }
}

fn describe(o: &CanaryOutcome) -> String {
    match o {
        CanaryOutcome::Promoted { by: None } => "promoted".into(),
        CanaryOutcome::Promoted { by: Some(b) } => format!("promoted by {}", sanitize(b)),
        CanaryOutcome::Interrupted { why, .. } => format!("interrupted: {}", sanitize(why)),
        CanaryOutcome::Aborted { why, by, .. } => format!(
            "aborted{}: {}",
            by.as_ref()
                .map(|b| format!(" by {}", sanitize(b)))
                .unwrap_or_default(),
            sanitize(why)
        ),
    }
}

/// Run `hopback canary`.
pub async fn run(ctx: &Ctx, args: CanaryArgs) -> Result<(), Failure> {
    match args.command {
        Some(CanaryCommand::List { namespace }) => list(ctx, namespace).await,
        Some(CanaryCommand::Pause(c)) => control(ctx, c, ControlCommand::Pause).await,
        Some(CanaryCommand::Resume(c)) => control(ctx, c, ControlCommand::Resume).await,
        Some(CanaryCommand::Promote(c)) => control(ctx, c, ControlCommand::Promote).await,
        Some(CanaryCommand::Abort(c)) => control(ctx, c, ControlCommand::Abort).await,
        None => start(ctx, args.start).await,
    }
}

async fn context(ctx: &Ctx, read_only: bool) -> Result<OpContext, Failure> {
    let session = ctx.connect().await?;
    let ledger = Arc::new(if read_only {
        Ledger::open_read(&session, &ctx.cfg).await
    } else {
        Ledger::open(&session, &ctx.cfg).await
    });
    Ok(OpContext {
        session,
        mgmt: ctx.mgmt(),
        ledger,
        cfg: ctx.cfg.clone(),
        via: Via::Cli,
        journal_sink: None,
    })
}

async fn start(ctx: &Ctx, a: StartArgs) -> Result<(), Failure> {
    let obs = Lines {
        quiet: ctx.json,
        last: Default::default(),
    };
    if let Some(id) = &a.resume {
        ctx.require_writable("resume a canary")?;
        let cx = context(ctx, false).await?;
        confirm(
            &format!(
                "Resume canary {} from the ledger (it drives the gate again)?",
                sanitize(id)
            ),
            a.yes,
            None,
        )?;
        let report = canary::resume(&cx, id, &obs).await?;
        cx.session.close().await;
        return finish(ctx, &report);
    }
    let ns = a.namespace.clone().unwrap_or_default();
    crate::broker::topology::validate_namespace(&ns).map_err(|e| Failure::usage(e, ""))?;
    let plan = plan_of(&a)?;
    if !a.dry_run {
        ctx.require_writable("run a canary")?;
    }
    let cx = context(ctx, a.dry_run).await?;
    let req = CanaryRequest {
        namespace: ns.clone(),
        plan,
        reason: None,
    };
    let dry = canary::dry_run(&cx, &req).await?;
    if a.dry_run {
        cx.session.close().await;
        if ctx.json {
            return ctx.print_json(&dry);
        }
        crate::outln!(
            "dry run of a canary on {} ({} → {}) — nothing will be changed",
            sanitize(&ns),
            dry.plan.from,
            dry.plan.to
        );
        crate::outln!("gate now: {}", dry.gate.describe());
        for (k, s) in dry.splits.iter().enumerate() {
            crate::outln!(
                "  step {}: {}, held {} and analysed",
                dry.first_step + k + 1,
                s.describe(),
                humantime::format_duration(dry.plan.step_time())
            );
        }
        if let Some(r) = &dry.would_be_refused {
            crate::outln!("a real run would be refused now: {}", sanitize(r));
        }
        return Ok(());
    }
    confirm(
        &format!(
            "Run a canary on {}: gate {} → {} in {} steps of {} (aborts and rolls back on its own above {}% errors)?",
            sanitize(&ns),
            dry.gate.describe(),
            dry.plan.to,
            dry.splits.len(),
            humantime::format_duration(dry.plan.step_time()),
            dry.plan.max_error_rate_pct
        ),
        a.yes,
        None,
    )?;
    let report = canary::start(&cx, &req, &obs).await?;
    cx.session.close().await;
    finish(ctx, &report)
}

fn finish(ctx: &Ctx, r: &CanaryReport) -> Result<(), Failure> {
    if ctx.json {
        ctx.print_json(r)?;
    } else {
        crate::outln!(
            "canary {} on {}: {} — gate {}",
            r.id,
            sanitize(&r.namespace),
            describe(&r.outcome),
            r.gate.describe()
        );
        if let Some(rb) = &r.rollback {
            crate::outln!(
                "rollback {}: {:?} (`hopback postmortem {}` drafts the post-mortem)",
                rb.rollback_id,
                rb.outcome,
                rb.rollback_id
            );
        }
    }
    match &r.outcome {
        CanaryOutcome::Promoted { .. } => Ok(()),
        CanaryOutcome::Aborted { by: Some(_), .. } => Err(Failure::refused(
            format!("canary {} aborted by an operator", r.id),
            "the gate is back on the old version; see `hopback timeline`",
        )),
        CanaryOutcome::Aborted { why, .. } => Err(Failure::verification(
            format!("canary {} aborted: {}", r.id, sanitize(why)),
            "the gate is back on the old version and the rollback ran; the evidence is in the ledger (`hopback timeline`, `hopback postmortem`)",
        )),
        CanaryOutcome::Interrupted { why, .. } => Err(Failure::error(
            format!("canary {} interrupted: {}", r.id, sanitize(why)),
            format!("resume it with `hopback canary --resume {}`", r.id),
        )),
    }
}

async fn control(ctx: &Ctx, c: ControlArgs, command: ControlCommand) -> Result<(), Failure> {
    ctx.require_writable(&format!("{} a canary", command.as_str()))?;
    if matches!(command, ControlCommand::Promote | ControlCommand::Abort) {
        confirm(
            &format!(
                "{} canary {}?",
                if command == ControlCommand::Promote {
                    "Promote (the new version gets 100 % now)"
                } else {
                    "Abort (the gate goes back to the old version now)"
                },
                sanitize(&c.id)
            ),
            c.yes,
            None,
        )?;
    }
    let cx = context(ctx, false).await?;
    let r = canary::control(&cx, &c.id, command, c.namespace.as_deref()).await;
    cx.session.close().await;
    let r = r?;
    if ctx.json {
        return ctx.print_json(&r);
    }
    crate::outln!("canary {}: {}", r.id, r.message);
    Ok(())
}

async fn list(ctx: &Ctx, ns: Option<String>) -> Result<(), Failure> {
    let cx = context(ctx, true).await?;
    let all = canary::list(&cx, ns.as_deref()).await?;
    cx.session.close().await;
    if ctx.json {
        let rows: Vec<_> = all
            .iter()
            .map(|(s, running)| serde_json::json!({"canary": s, "running": running}))
            .collect();
        return ctx.print_json(&rows);
    }
    if all.is_empty() {
        crate::outln!("no canaries in the ledger");
        return Ok(());
    }
    for (s, running) in &all {
        let state = match (&s.finished, running) {
            (Some((o, why)), _) => format!("finished ({o}): {}", sanitize(why)),
            (None, Some(true)) if s.paused => "running, PAUSED".into(),
            (None, Some(true)) => "running".into(),
            (None, Some(false)) => format!(
                "NOT RUNNING (its process died; the gate was left at {}) — resume with `hopback canary --resume {}`",
                s.gate.as_ref().map_or_else(|| "?".into(), |g| g.describe()),
                s.id
            ),
            (None, None) => "unknown (cannot tell whether it runs)".into(),
        };
        crate::outln!(
            "{}  {}  {} → {}  {}  by {}  {}",
            s.id,
            sanitize(&s.namespace),
            s.plan.from,
            s.plan.to,
            s.step_label(),
            sanitize(&s.started_by.1),
            state
        );
        if let Some((d, why)) = &s.last_decision
            && s.finished.is_none()
        {
            crate::outln!("    last decision: {d} — {}", sanitize(why));
        }
    }
    Ok(())
}
