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
    let asked: Option<HashOn> = match field {
        "auto" => None,
        f => Some(
            f.parse()
                .map_err(|e| Failure::usage(e, format!("FIELD is {HASH_ON_CHOICES}, or auto")))?,
        ),
    };
    if !dry_run {
        ctx.require_writable("change what the gate hashes")?;
    }
    let mgmt = super::gate::require_mgmt(ctx)?;
    let session = ctx.connect().await?;
    let hash_on = match asked {
        Some(h) => h,
        None => match auto(ctx, &session, &mgmt, ns).await {
            Ok(h) => h,
            Err(f) => {
                session.close().await;
                return Err(f);
            }
        },
    };
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

/// `auto`: the field a sample of the namespace's tasks can be split by (`broker::sample`: its
/// DLQ, unrouted queue and version queues a browse cannot harm), or a refusal saying why none.
async fn auto(
    ctx: &Ctx,
    session: &crate::broker::session::Session,
    mgmt: &crate::broker::mgmt::Mgmt,
    ns: &str,
) -> Result<HashOn, Failure> {
    let view = crate::ops::gate::read_gate(session, mgmt, &ctx.cfg, ns, &[]).await?;
    let names = crate::topology::Namespace::resolve(&ctx.cfg, ns);
    let queues: Vec<String> = view.versions.values().cloned().collect();
    let sample = crate::broker::sample::hash_inputs(session, Some(mgmt), &names, &queues).await;
    match sample.as_ref().and_then(crate::model::hash::HashInputs::best) {
        Some(h) => {
            if let Some(s) = &sample {
                crate::errln!(
                    "auto: {} sampled task(s) in {} can be split by {}",
                    s.sampled,
                    sanitize(&s.sources.join(", ")),
                    h.field()
                );
            }
            Ok(h)
        }
        None => Err(Failure::refused(
            match &sample {
                Some(s) => format!(
                    "auto: none of the fields of {} sampled task(s) splits them (each must be on every task, with distinct values); nothing was changed",
                    s.sampled
                ),
                None => "auto: no task could be sampled (empty queues, or only queues a browse could harm); nothing was changed".into(),
            },
            format!("name the field: `hopback gate hash-on {} {HASH_ON_CHOICES}`", sanitize(ns)),
        )),
    }
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

/// A broker sample stamped up to this long after the flip may still hold counters from before
/// it (seen on 4.0.5: a 50/50 flip measured 72/28 with the old 90/10 mixed in): the baseline is
/// the first sample at least this long after the flip.
const SAMPLE_LAG_MS: i64 = 5_000;

/// How often a flip's measured verification reads the counters (the broker samples every 5 s).
const VERIFY_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// The split check's lines: on stdout for a human, on stderr under `--json` (stdout holds the
/// flip's one JSON report).
macro_rules! say {
    ($ctx:expr, $($arg:tt)*) => {
        if $ctx.json { crate::errln!($($arg)*) } else { crate::outln!($($arg)*) }
    };
}

/// After a flip of `ns` at `since_ms` (unix ms): wait up to `wait` for enough tasks to judge the
/// split that happens under the new weights (publish counters sampled after the flip only), and
/// say it. A split that is not happening is journaled as an alert and fails the verification
/// (exit 4); too little traffic in the time is said, and is no failure.
pub async fn verify_split(
    ctx: &Ctx,
    ns: &str,
    since_ms: i64,
    wait: std::time::Duration,
) -> Result<(), Failure> {
    use crate::model::split::{MeasuredSplit, SplitCheck, check, tasks_to_tell};
    let mgmt = super::gate::require_mgmt(ctx)?;
    let session = ctx.connect().await?;
    let view = crate::ops::gate::read_gate(&session, &mgmt, &ctx.cfg, ns, &[]).await;
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            session.close().await;
            return Err(e.into());
        }
    };
    // Nothing has flowed in the last minute: nothing will tell the split apart in `wait` either.
    // Say so at once; the console and `status` compare it once tasks flow.
    match crate::broker::split::measure(&mgmt, &view.versions, crate::broker::split::WINDOW_S).await
    {
        Some(before) if before.total() == 0 => {
            session.close().await;
            say!(
                ctx,
                "measured split: not checked — no new tasks in the last minute (the console and `status` compare it once tasks flow)"
            );
            return Ok(());
        }
        None => {
            session.close().await;
            say!(
                ctx,
                "measured split: unknown — no publish counters from the management API (statistics off, or a version queue missing)"
            );
            return Ok(());
        }
        Some(_) => say!(
            ctx,
            "checking the split that happens: up to {} for enough new tasks (--verify-split 0s skips)…",
            humantime::format_duration(wait)
        ),
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut measured = None;
    loop {
        let mut histories = std::collections::BTreeMap::new();
        for (v, q) in &view.versions {
            let h = mgmt
                .publish_history(q, crate::broker::split::WINDOW_S)
                .await
                .ok()
                .flatten()
                .map(|h| {
                    h.into_iter()
                        .filter(|s| s.0 >= since_ms + SAMPLE_LAG_MS)
                        .collect::<Vec<_>>()
                });
            histories.insert(v.clone(), h);
        }
        measured = MeasuredSplit::from_history(&histories, i64::MAX / 2).or(measured);
        let decided = measured
            .as_ref()
            .is_some_and(|m| !matches!(check(&view.split, m), SplitCheck::TooLittleTraffic { .. }));
        if decided || tokio::time::Instant::now() + VERIFY_POLL > deadline {
            break;
        }
        tokio::time::sleep(VERIFY_POLL).await;
    }
    let Some(m) = measured else {
        session.close().await;
        say!(
            ctx,
            "measured split: unknown — no publish counters since the flip (management API stats unavailable, or no sample yet)"
        );
        return Ok(());
    };
    let hash = view.layout.as_ref().and_then(|l| l.hash_on.clone().ok());
    let names = crate::topology::Namespace::resolve(&ctx.cfg, ns);
    let report = crate::broker::split::judge(
        &session,
        Some(&mgmt),
        &names,
        &view.versions,
        &view.split,
        hash.as_ref(),
        Some(&m),
    )
    .await;
    let line = report.describe(&view.split, &m);
    if !report.differs() {
        session.close().await;
        say!(ctx, "since the flip: {}", sanitize(&line));
        if matches!(report.check, SplitCheck::TooLittleTraffic { .. }) {
            say!(
                ctx,
                "  ({} tasks are needed to tell at these weights)",
                tasks_to_tell(&view.split)
            );
        }
        return Ok(());
    }
    say!(ctx, "(!) since the flip: {}", sanitize(&line));
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let journaled = crate::ops::alert::record(
        &cx,
        &crate::ops::alert::AlertRecord {
            namespace: ns.to_string(),
            version: None,
            metric: "split".into(),
            text: sanitize(&line).into_owned(),
            raised: true,
        },
    )
    .await;
    session.close().await;
    if let Err(e) = journaled {
        crate::errln!(
            "warning: the alert was not journaled: {}",
            sanitize(&e.to_string())
        );
    }
    Err(Failure::verification(
        format!(
            "the gate of `{}` is set, but the tasks do not follow it: {}",
            sanitize(ns),
            sanitize(&line)
        ),
        format!(
            "make the gate hash a field every task carries: `hopback gate hash-on {} FIELD`",
            sanitize(ns)
        ),
    ))
}
