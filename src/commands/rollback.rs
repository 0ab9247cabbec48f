//! `hopback rollback NS [--to v1] [--plan FILE] [--dry-run] [--yes] | rollback --resume ID`: runs
//! the guided rollback engine ([`crate::ops::rollback`]) from the command line. Decision points
//! are asked on the terminal (the console's answers: Roll back / Abort, …), or answered by `--yes`; with neither a
//! terminal nor `--yes` it refuses before changing anything (exit 3).
//!
//! Exit codes: 0 done and verified · 1 a step failed · 3 refused or aborted · 4 the recovery
//! verification failed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::commands::Ctx;
use crate::error::Failure;
use crate::ledger::event::EventKind;
use crate::ledger::{Ledger, StreamStart};
use crate::ops::plan::{self, DlqChoice, Plan};
use crate::ops::rollback::{
    self, AutoOperator, Decision, DecisionKind, DecisionPoint, Env, Operator, RollbackOutcome,
    RollbackReport, StepState, Update,
};
use crate::text::sanitize;

/// Arguments of `hopback rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// Namespace to roll back
    #[arg(required_unless_present = "resume")]
    pub namespace: Option<String>,
    /// Version to roll back to
    #[arg(long, default_value = "v1")]
    pub to: String,
    /// Version to roll back from (default: the highest other version on the gate)
    #[arg(long)]
    pub from: Option<String>,
    /// A TOML plan file (see assets/plans/) instead of the built-in plan
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Print each step with the live counts it would act on; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Answer every decision point with its default (continue; replay dead letters)
    #[arg(long)]
    pub yes: bool,
    /// Resume a rollback that stopped (its id is printed at the start and is in the ledger)
    #[arg(long, value_name = "ID", conflicts_with_all = ["namespace", "plan", "dry_run"])]
    pub resume: Option<String>,
    /// How long the recovery verification watches the error rate (built-in plan)
    #[arg(long, default_value = "10s")]
    pub verify_window: humantime::Duration,
}

/// Asks on the terminal (or answers like `--yes`) and prints progress on stderr.
struct CliOperator {
    yes: bool,
    quiet: bool,
}

fn ask_line(prompt: String) -> BoxFuture<'static, String> {
    Box::pin(async move {
        tokio::task::spawn_blocking(move || {
            crate::err!("{prompt}");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            line.trim().to_lowercase()
        })
        .await
        .unwrap_or_default()
    })
}

impl Operator for CliOperator {
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if !self.quiet {
                crate::errln!(
                    "\n── decision: step {} ({}) ──",
                    point.step_index + 1,
                    sanitize(&point.step_title)
                );
                for line in &point.evidence {
                    crate::errln!("   {}", sanitize(line));
                }
            }
            if self.yes {
                let d = AutoOperator::default().decide(point).await;
                if !self.quiet {
                    crate::errln!(
                        "   {} → {} (answered by --yes)",
                        sanitize(&point.question),
                        d.describe()
                    );
                }
                return d;
            }
            if !std::io::stdin().is_terminal() {
                return Decision::Abort;
            }
            loop {
                // The console's answers (app/panels/rollback.rs `decision_buttons`): no "skip"
                // where skipping would mean going on (the first question, a timed-out wait, the
                // dead-letter choice — keeping them is the "no").
                let q = sanitize(&point.question);
                // The letters are the console's default keys (its `Rollback` context: y, o, a,
                // 1, 2, 3), so a runbook reads the same in both; the words work too.
                let (choices, kind) = match point.kind {
                    DecisionKind::DlqChoice => {
                        ("[1] replay to old / [2] keep / [3] export / [a]bort", "dlq")
                    }
                    DecisionKind::Timeout => ("[y] keep waiting / [a]bort", "timeout"),
                    DecisionKind::Confirm => ("[y] roll back / [a]bort", "confirm"),
                    DecisionKind::Destructive => {
                        ("[y] close them / [o] leave them / [a]bort", "destructive")
                    }
                };
                let answer = ask_line(format!("{q} {choices}: ")).await;
                let d = match (kind, answer.as_str()) {
                    (_, "a" | "abort") => Decision::Abort,
                    ("dlq", "1" | "r" | "replay") => Decision::Choose(DlqChoice::Replay),
                    ("dlq", "2" | "k" | "keep") => Decision::Choose(DlqChoice::Keep),
                    ("dlq", "3" | "e" | "export") => Decision::Choose(DlqChoice::Export),
                    ("timeout", "y" | "yes" | "w" | "wait") => Decision::Continue,
                    ("confirm", "y" | "yes" | "r") => Decision::Continue,
                    ("destructive", "y" | "yes" | "c" | "close") => Decision::Continue,
                    ("destructive", "o" | "l" | "leave") => Decision::Skip,
                    _ => {
                        crate::errln!("   answer with one of: {choices}");
                        continue;
                    }
                };
                return d;
            }
        })
    }
    fn observe(&self, u: &Update) {
        if self.quiet {
            return;
        }
        match u {
            Update::Started {
                rollback_id, plan, ..
            } => {
                // The evidence is shown at the first decision point.
                crate::errln!(
                    "rollback {rollback_id}: {} ({} steps) — resume with `hopback rollback --resume {rollback_id}`",
                    sanitize(&plan.name),
                    plan.steps.len()
                );
            }
            Update::Step {
                index,
                state,
                detail,
            } => crate::errln!(
                "  [{:>12}] {}. {}",
                state.as_str(),
                index + 1,
                sanitize(detail)
            ),
            Update::Progress { .. } => {}
            Update::Finished { outcome } => crate::errln!("  → {outcome:?}"),
        }
    }
}

fn versions_of(v: &str) -> u32 {
    v.trim_start_matches('v').parse().unwrap_or(0)
}

/// Pick the version to roll back from: the highest bound version other than `to`.
async fn default_from(ctx: &Ctx, env: &Env, to: &str) -> Result<String, Failure> {
    let Some(m) = &env.mgmt else {
        return Err(Failure::usage(
            "cannot tell which version to roll back from without the management API",
            "pass --from v2",
        ));
    };
    let view = crate::ops::gate::read_gate(&env.session, m, &ctx.cfg, &env.ns, &[]).await?;
    let mut candidates: Vec<&String> = view
        .split
        .bound()
        .map(|(v, _)| v)
        .filter(|v| v.as_str() != to)
        .collect();
    if candidates.is_empty() {
        candidates = view.versions.keys().filter(|v| v.as_str() != to).collect();
    }
    candidates
        .into_iter()
        .max_by_key(|v| versions_of(v))
        .cloned()
        .ok_or_else(|| {
            Failure::usage(
                format!("`{}` has no version other than {to}", sanitize(&env.ns)),
                "pass --from",
            )
        })
}

fn exit_of(report: &RollbackReport, vhost: &str) -> Result<(), Failure> {
    match &report.outcome {
        RollbackOutcome::Done => Ok(()),
        RollbackOutcome::VerificationFailed { step, reason } => Err(Failure::verification(
            format!(
                "rollback {}: recovery verification failed at step {}: {}",
                report.rollback_id,
                step + 1,
                sanitize(reason)
            ),
            "the gate and queues are left as they are now (see above); investigate, then re-run the verification or `hopback rollback --resume` after fixing",
        )),
        RollbackOutcome::Failed { step, reason }
            if crate::broker::session::is_permission_denial(reason) =>
        {
            Err(Failure::refused(
                format!(
                    "rollback {}: step {} refused: {}",
                    report.rollback_id,
                    step + 1,
                    sanitize(reason)
                ),
                format!(
                    "grant the permission (`rabbitmqctl set_permissions -p {} USER CONFIGURE WRITE READ`) or use a profile whose user has it, then continue with `hopback rollback --resume {}`",
                    shlex::try_quote(vhost).unwrap_or_else(|_| "VHOST".into()),
                    report.rollback_id
                ),
            ))
        }
        RollbackOutcome::Failed { step, reason } => Err(Failure::error(
            format!(
                "rollback {}: step {} failed: {}",
                report.rollback_id,
                step + 1,
                sanitize(reason)
            ),
            format!(
                "fix the cause and continue with `hopback rollback --resume {}`",
                report.rollback_id
            ),
        )),
        RollbackOutcome::Aborted { step, state } => Err(Failure::refused(
            format!(
                "rollback {} aborted at step {}; state: {}",
                report.rollback_id,
                step + 1,
                sanitize(state)
            ),
            format!(
                "continue later with `hopback rollback --resume {}`",
                report.rollback_id
            ),
        )),
    }
}

fn print_report(report: &RollbackReport) {
    crate::outln!(
        "rollback {} of {} — {}{}",
        report.rollback_id,
        sanitize(&report.namespace),
        sanitize(&report.plan),
        if report.resumed { " (resumed)" } else { "" }
    );
    for s in &report.steps {
        let mark = match s.state {
            StepState::Done => "✔",
            StepState::AlreadyDone => "✔",
            StepState::Skipped => "↷",
            StepState::Failed => "✘",
            StepState::Running => "…",
            StepState::Pending => " ",
        };
        crate::outln!(
            " {mark} {}. {:<28} {:<13} {}",
            s.index + 1,
            sanitize(&s.title),
            s.state.as_str(),
            sanitize(&s.detail)
        );
    }
    crate::outln!("outcome: {:?}", report.outcome);
    if report.outcome == RollbackOutcome::Done {
        crate::outln!(
            "post-mortem draft of this incident: hopback postmortem --incident {}",
            report.rollback_id
        );
    }
}

/// Differences between two plans, one line each (for the staging comparison).
pub fn diff_plans(staging: &Plan, now: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if staging.from != now.from || staging.to != now.to {
        out.push(format!(
            "direction: staging ran {} → {}, this is {} → {}",
            staging.from, staging.to, now.from, now.to
        ));
    }
    let n = staging.steps.len().max(now.steps.len());
    for i in 0..n {
        match (staging.steps.get(i), now.steps.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(format!(
                "step {}: staging `{}` ≠ now `{}`",
                i + 1,
                a.kind
                    .describe(&crate::topology::Namespace::convention("NS")),
                b.kind
                    .describe(&crate::topology::Namespace::convention("NS"))
            )),
            (Some(a), None) => out.push(format!(
                "step {}: only in staging: {}",
                i + 1,
                a.kind
                    .describe(&crate::topology::Namespace::convention("NS"))
            )),
            (None, Some(b)) => out.push(format!(
                "step {}: not in the staging run: {}",
                i + 1,
                b.kind
                    .describe(&crate::topology::Namespace::convention("NS"))
            )),
            (None, None) => {}
        }
    }
    out
}

async fn staging_comparison(ledger: &Ledger, plan: &Plan) -> Vec<String> {
    let mut last = None;
    let _ = ledger
        .fold(StreamStart::First, |e| {
            if e.kind == EventKind::RollbackStarted
                && e.params.get("staging").and_then(|v| v.as_bool()) == Some(true)
                && let Some(p) = e
                    .params
                    .get("plan")
                    .and_then(|p| serde_json::from_value::<Plan>(p.clone()).ok())
                    .filter(|p| p.name == plan.name)
            {
                last = Some((e.ts, e.profile.clone(), p));
            }
        })
        .await;
    match last {
        None => vec![format!(
            "this plan (`{}`) was never run on a staging profile: run it there first",
            sanitize(&plan.name)
        )],
        Some((ts, profile, p)) => {
            let mut v = vec![format!(
                "last staging run: {} on profile `{}`",
                ts.format("%Y-%m-%d %H:%M UTC"),
                sanitize(&profile)
            )];
            let d = diff_plans(&p, plan);
            if d.is_empty() {
                v.push("the plan is identical to the staging run".into());
            }
            v.extend(d);
            v
        }
    }
}

/// `hopback rollback`.
pub async fn run(ctx: &Ctx, args: RollbackArgs) -> Result<(), Failure> {
    if !args.dry_run {
        ctx.require_writable("roll back")?;
        if !args.yes && !std::io::stdin().is_terminal() {
            return Err(Failure::refused(
                "not confirmed: a rollback asks at its decision points and there is no terminal",
                "re-run with --yes to answer every decision point with its default",
            ));
        }
    }
    let session = ctx.connect().await?;
    // A dry run reads: it declares nothing, the ledger stream included.
    let ledger = Arc::new(if args.dry_run {
        Ledger::open_read(&session, &ctx.cfg).await
    } else {
        Ledger::open(&session, &ctx.cfg).await
    });
    let mgmt = ctx.mgmt();
    let operator = CliOperator {
        yes: args.yes,
        quiet: ctx.json,
    };
    let env_for = |ns: &str| Env {
        session: session.clone(),
        mgmt: mgmt.clone(),
        cfg: ctx.cfg.clone(),
        ns: ns.to_string(),
        ledger: ledger.clone(),
    };
    if let Some(id) = &args.resume {
        let report = rollback::resume(env_for, &ledger, id, &operator).await?;
        return finish(ctx, &report);
    }
    let ns = args.namespace.clone().unwrap_or_default();
    crate::broker::topology::validate_namespace(&ns).map_err(|e| Failure::usage(e, ""))?;
    let env = env_for(&ns);
    let plan = match &args.plan {
        Some(p) => plan::load_plan(p)
            .map_err(|e| Failure::usage(e, "fix the plan file; see assets/plans/ for samples"))?,
        None => {
            let from = match &args.from {
                Some(f) => f.clone(),
                None => default_from(ctx, &env, &args.to).await?,
            };
            plan::default_plan(&from, &args.to, *args.verify_window)
        }
    };
    if args.dry_run {
        let lines = rollback::dry_run(&env, &plan).await;
        let staging = if ctx.cfg.profile.production {
            staging_comparison(&ledger, &plan).await
        } else {
            Vec::new()
        };
        session.close().await;
        if ctx.json {
            return ctx.print_json(
                &serde_json::json!({"plan": plan, "steps": lines, "staging": staging}),
            );
        }
        crate::outln!(
            "dry run of `{}` on {} ({} → {}) — nothing will be changed",
            sanitize(&plan.name),
            sanitize(&ns),
            plan.from,
            plan.to
        );
        for l in &lines {
            crate::outln!(
                "{:>2}. {:<26} {}\n      now: {}",
                l.number,
                sanitize(&l.title),
                sanitize(&l.description),
                sanitize(&l.live)
            );
        }
        if !staging.is_empty() {
            crate::outln!("compared with staging:");
            for s in staging {
                crate::outln!("  {s}");
            }
        }
        return Ok(());
    }
    let report = rollback::run(&env, plan, &operator).await;
    session.close().await;
    finish(ctx, &report?)
}

fn finish(ctx: &Ctx, report: &RollbackReport) -> Result<(), Failure> {
    if ctx.json {
        ctx.print_json(report)?;
    } else {
        print_report(report);
    }
    exit_of(report, &ctx.cfg.profile.vhost)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plan_diff_names_the_changed_steps() {
        let a = plan::default_plan("v2", "v1", std::time::Duration::from_secs(10));
        let mut b = a.clone();
        assert!(diff_plans(&a, &b).is_empty());
        b.steps.remove(2);
        let d = diff_plans(&a, &b);
        assert!(d.iter().any(|l| l.starts_with("step 3:")), "{d:?}");
        assert!(d.iter().any(|l| l.contains("only in staging")), "{d:?}");
    }
}
