//! `hopback drill [--scenario …] [--rate N] [--headless] [--auto-respond-after 5s] [--keep]
//! [--history]`: a scored incident drill on a throwaway namespace (DESIGN §5).
//!
//! Interactive (the default, on a terminal): the drill runs inside the console (`app::run_drill`)
//! with the drill's namespace selected and a drill panel; the operator investigates and rolls
//! back there (or from another terminal). Without a terminal, a status line is printed on stderr
//! every second instead. The drill notices the gate change and the ledger events. Headless: a
//! scripted operator rolls back `--auto-respond-after` after the fault. Either way the score and
//! the post-mortem draft come at the end, and the exit code is 4 if any message was lost.

use std::time::Duration;

use crate::commands::Ctx;
use crate::drill::scenario::Scenario;
use crate::drill::score::fmt_ms;
use crate::drill::{self, DrillOptions, DrillResult};
use crate::error::Failure;
use crate::ledger::Ledger;
use crate::text::sanitize;

/// Arguments of `hopback drill`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// What goes wrong with v2 (random: you are not told)
    #[arg(long, value_parser = crate::cli::table_parser::<Scenario>(Scenario::TABLE), default_value = "random")]
    pub scenario: Scenario,
    /// Messages per second from the simulated producers
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// No human: a scripted operator rolls back (for CI and tests)
    #[arg(long)]
    pub headless: bool,
    /// Headless: how long after the fault the scripted operator acts
    #[arg(long, default_value = "5s")]
    pub auto_respond_after: humantime::Duration,
    /// When the fault hits (default: a random moment 10–40 s in)
    #[arg(long)]
    pub fault_after: Option<humantime::Duration>,
    /// v2's canary share of the gate, in percent
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub canary: u32,
    /// The rollback's verification window (headless, and a rollback of the drill's namespace in
    /// the drill's console)
    #[arg(long, default_value = "5s")]
    pub verify_window: humantime::Duration,
    /// Keep the drill namespace afterwards (default: deleted)
    #[arg(long)]
    pub keep: bool,
    /// Show your past drill scores instead of running one
    #[arg(long)]
    pub history: bool,
}

fn briefing(ns: &str, canary: u32, headless: bool, fault_after: Option<Duration>) -> String {
    if headless {
        return format!(
            "drill {ns}: simulated fleet running, v2 canary at {canary}%; the scripted operator will respond to the fault."
        );
    }
    format!(
        "\n  DRILL {ns} is running: producers → gate (v1 {}%, v2 canary {canary}%) → v1/v2 workers.\n  \
         {when} something goes wrong with v2. Find it and roll back, in another terminal:\n    \
         hopback status {ns}\n    hopback dlq list {ns}\n    hopback rollback {ns}        (or: hopback gate set {ns} v1=100)\n  \
         The clock starts at the fault; your first action on {ns} is your detection time.\n  \
         The drill ends by itself once v2 is off the gate and quiet; Ctrl-C ends it early.\n",
        100 - canary,
        when = match fault_after {
            Some(d) => format!("In about {}", humantime::format_duration(d)),
            None => "Some time in the next 10–40 s".to_string(),
        }
    )
}

fn print_result(r: &DrillResult) {
    let s = &r.score;
    let a = &s.accounting;
    crate::outln!(
        "drill {} — scenario: {}",
        sanitize(&r.status.namespace),
        s.scenario
    );
    crate::outln!("  {}", r.status.fleet.line());
    crate::outln!("  time to detect    {}", fmt_ms(s.time_to_detect_ms));
    crate::outln!("  time to mitigate  {}", fmt_ms(s.time_to_mitigate_ms));
    crate::outln!(
        "  messages          {} published · {} processed · {} left in the DLQ · {} parked · {} still queued · {} LOST",
        a.published,
        a.processed,
        a.dead_lettered,
        a.parked,
        a.still_queued,
        a.lost
    );
    crate::outln!(
        "  duplicates        {} processed twice · {} redeliveries deduplicated",
        a.duplicates_processed,
        a.duplicates_skipped
    );
    crate::outln!("  steps skipped     {}", s.steps_skipped);
    crate::outln!("  score             {} / 100", s.points);
    for line in s.explain(false) {
        crate::outln!("                    {line}");
    }
    if let Some(c) = &r.canary {
        crate::outln!(
            "  canary {}        steps {:?} → {}",
            c.id,
            c.steps_set,
            match &c.outcome {
                crate::ops::canary::CanaryOutcome::Aborted { why, .. } =>
                    format!("aborted by itself: {}", crate::text::sanitize(why)),
                other => format!("{other:?}"),
            }
        );
    }
    if let Some(rb) = &r.rollback {
        crate::outln!("  rollback {}      {:?}", rb.rollback_id, rb.outcome);
    }
    if let Some(p) = &r.postmortem_path {
        crate::outln!("  post-mortem draft {p}");
    }
    if r.kept {
        crate::outln!("  namespace kept: delete it with the drill's cleanup or rabbitmqctl");
    }
}

/// `hopback drill`.
pub async fn run(ctx: &Ctx, args: DrillArgs) -> Result<(), Failure> {
    if args.history {
        return history(ctx).await;
    }
    ctx.require_writable("run a drill (it creates and deletes a namespace)")?;
    let opts = DrillOptions {
        scenario: args.scenario,
        rate_per_s: args.rate.max(1),
        canary_weight: args.canary,
        fault_delay: args.fault_after.map(Into::into),
        headless: args.headless,
        auto_respond_after: args.auto_respond_after.into(),
        keep: args.keep,
        verify_window: args.verify_window.into(),
        status_lines: !ctx.json,
        settle_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let headless = args.headless;
    let canary = args.canary;
    let fault_after: Option<Duration> = args.fault_after.map(Into::into);
    let json = ctx.json;
    // Interactive on a terminal: the drill runs inside the console (drill panel, rollback view).
    let console = !headless
        && !json
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if console {
        let opts = DrillOptions {
            status_lines: false,
            ..opts
        };
        let Some(result) = crate::app::run_drill(ctx.cfg.clone(), opts).await? else {
            return Ok(());
        };
        print_result(&result);
        return lost_check(&result);
    }
    // Ctrl-C ends the drill early (it still waits for a rollback of its namespace, settles,
    // scores and cleans up).
    let stop = opts.stop.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.stop();
        }
    });
    let result = drill::run(&ctx.cfg, &opts, move |h| {
        if !json {
            if h.scenario == drill::scenario::Scenario::Canary {
                crate::errln!(
                    "drill {}: simulated fleet running on v1; a self-driving canary rolls out v2 (which rejects a share of its tasks) and must catch it by itself.",
                    h.namespace
                );
            } else {
                crate::errln!("{}", briefing(&h.namespace, canary, headless, fault_after));
            }
        }
    })
    .await;
    ctrl_c.abort();
    let result = result?;
    if ctx.json {
        ctx.print_json(&result)?;
    } else {
        print_result(&result);
    }
    lost_check(&result)
}

fn lost_check(result: &DrillResult) -> Result<(), Failure> {
    if result.score.lost > 0 {
        return Err(Failure::verification(
            format!(
                "{} message(s) were lost in the drill (e.g. {})",
                result.score.lost,
                result.score.accounting.lost_sample.join(", ")
            ),
            "this is a bug in hopback or the broker setup: keep the namespace with --keep and report it",
        ));
    }
    Ok(())
}

async fn history(ctx: &Ctx) -> Result<(), Failure> {
    let session = ctx.connect().await?;
    let ledger = Ledger::open_read(&session, &ctx.cfg).await;
    let h = drill::history(&ledger).await;
    super::warn_skipped(&ledger);
    session.close().await;
    let h = h?;
    if ctx.json {
        return ctx.print_json(&h);
    }
    if h.drills.is_empty() {
        crate::outln!("no drills in the ledger yet: run `hopback drill`");
    } else {
        crate::outln!(
            "{:<17} {:<30} {:<19} {:>8} {:>9} {:>5} {:>5} {:>6}",
            "when (UTC)",
            "who",
            "scenario",
            "detect",
            "mitigate",
            "lost",
            "dup",
            "score"
        );
    }
    for d in &h.drills {
        let s = &d.score;
        crate::outln!(
            "{:<17} {:<30} {:<19} {:>8} {:>9} {:>5} {:>5} {:>6}",
            d.ts.format("%Y-%m-%d %H:%M"),
            d.who,
            if s.headless {
                format!("{} (headless)", s.scenario)
            } else {
                s.scenario.clone()
            },
            fmt_ms(s.time_to_detect_ms),
            fmt_ms(s.time_to_mitigate_ms),
            s.lost,
            s.duplicates_processed,
            s.points
        );
    }
    if h.ignored_unverified > 0 {
        crate::outln!(
            "{} unverified drill result(s) left out (no broker user vouches for them)",
            h.ignored_unverified
        );
    }
    Ok(())
}
