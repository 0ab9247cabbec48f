//! `hopback dlq …`: list (grouped), show/export one message, replay (or move) with the mover,
//! purge with an export first. Human output on stdout, progress on stderr, `--json` one document.
//! Every mutation refuses on a read-only profile before touching the broker, asks (or needs
//! `--yes`) with the exact counts, and is journaled in the ledger.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;

use crate::broker::browse::browse_page;
use crate::broker::mover::{self, StopReason};
use crate::broker::stats::browse_guard;
use crate::commands::{Ctx, confirm};
use crate::error::Failure;
use crate::model::deadletter::{
    BodyMode, DEFAULT_EXCEPTION_HEADER, Filter, GroupBy, Lookup, Resolution, ResolvedBy, Summary,
    export_document, group, inspector_lines, summarize,
};
use crate::model::xdeath::is_version_name;
use crate::ops::replay::{
    Destination, ReplayControl, ReplayPlan, ReplayReport, ReplayRequest, Source,
};
use crate::ops::{OpContext, Via};
use crate::text::sanitize;
use crate::topology::Namespace;

/// `hopback dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (a page), grouped by origin version, reason, exception or age
    List {
        /// Namespace
        namespace: String,
        /// Messages per page (1 or more)
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Page (0-based)
        #[arg(long, default_value_t = 0)]
        page: u64,
        /// Group by
        #[arg(long, default_value_t = GroupBy::Origin, value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(GroupBy::CHOICES.map(|(_, name, help)| {
                clap::builder::PossibleValue::new(name).help(help)
            })),
            |s| s.parse::<GroupBy>(),
        ))]
        group_by: GroupBy,
        /// Header holding the worker's exception
        #[arg(long, default_value = DEFAULT_EXCEPTION_HEADER)]
        exception_header: String,
        /// Browse a quorum DLQ although each browse counts against its delivery limit
        #[arg(long)]
        force: bool,
    },
    /// Inspect one dead letter, by its id as `dlq list` shows it (message id, or `sha:` digest)
    Show {
        /// Namespace
        namespace: String,
        /// The dead letter: its message id; its digest (`sha:` and 8–64 hex digits, as `dlq list`
        /// shows it for a message without id); or a position in this read (0-based — a quorum
        /// DLQ's positions can change between reads, an id cannot)
        id: String,
        /// Write the message to this JSON file
        #[arg(long)]
        export: Option<PathBuf>,
        /// How to show the body
        #[arg(long, default_value_t = BodyMode::Auto, value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(BodyMode::CHOICES.map(|(_, name, help)| {
                clap::builder::PossibleValue::new(name).help(help)
            })),
            |s| s.parse::<BodyMode>(),
        ))]
        body: BodyMode,
        /// Browse a quorum DLQ anyway
        #[arg(long)]
        force: bool,
    },
    /// Replay dead letters to their origin queue (default), a version, or the entry exchange
    Replay {
        /// Namespace
        namespace: String,
        /// origin | vN | entry | a queue name. Default: each message's origin — unless a version
        /// of the namespace is failing (error rate over its alert threshold): a failing version
        /// is never a default destination, so the healthy version is planned instead (the dry
        /// run shows where each origin's dead letters go, and why)
        #[arg(long)]
        to: Option<String>,
        /// dlq (default) | unrouted | parked | vN (drain a version queue)
        #[arg(long, default_value = "dlq")]
        from: String,
        /// K=V filters, all must hold: reason=rejected, origin=v2, body=text, id=…, HEADER=V
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Stop after N messages
        #[arg(long)]
        limit: Option<u64>,
        /// At most R messages per second
        #[arg(long)]
        rate: Option<f64>,
        /// Replays allowed before a message is parked in NS.parked
        #[arg(long, default_value_t = mover::DEFAULT_MAX_REPLAYS)]
        max_replays: u32,
        /// Replay even messages over --max-replays
        #[arg(long)]
        force: bool,
        /// Source prefetch
        #[arg(long, default_value_t = mover::DEFAULT_PREFETCH)]
        prefetch: u16,
        /// Publisher confirms outstanding
        #[arg(long, default_value_t = mover::DEFAULT_CONFIRM_WINDOW)]
        confirm_window: usize,
        /// auto: RabbitMQ's own shovel when every decision can be made inside the broker, else
        /// the client mover | broker | client
        #[arg(long, default_value = "auto", value_parser = ["auto", "broker", "client"])]
        engine: String,
        /// Broker engine: the longest the shovel may run (e.g. 10m); past it, it is removed and
        /// the rest stays in the source. Default: 5 minutes plus 5 ms a message
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        time_limit: Option<std::time::Duration>,
        /// Show the plan (with the engine and why) and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Do not ask
        #[arg(long)]
        yes: bool,
        /// Re-import an export file (`dlq purge`'s JSONL) instead: original body, properties and
        /// typed headers; --to origin (the namespace's version queues) or a version
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Export every dead letter to JSONL, then remove exactly those (count typed, or --yes)
    Purge {
        /// Namespace
        namespace: String,
        /// Export file (default: the data dir's exports/)
        #[arg(long)]
        export: Option<PathBuf>,
        /// Do not ask
        #[arg(long)]
        yes: bool,
        /// Purge a quorum DLQ anyway
        #[arg(long)]
        force: bool,
    },
}

/// `hopback dlq NS`: `hopback dlq list NS` with every default of `list` (parsed by clap, so the
/// defaults are the subcommand's own).
pub fn list_of(namespace: Option<String>, options: &[String]) -> Result<DlqCommand, Failure> {
    super::subcommand_of::<DlqCommand>("dlq", "list", namespace, options)
}

/// Run a `dlq` subcommand.
pub async fn run(ctx: &Ctx, cmd: DlqCommand) -> Result<(), Failure> {
    match cmd {
        DlqCommand::List {
            namespace,
            limit,
            page,
            group_by,
            exception_header,
            force,
        } => {
            list(
                ctx,
                &namespace,
                page,
                limit,
                group_by,
                &exception_header,
                force,
            )
            .await
        }
        DlqCommand::Show {
            namespace,
            id,
            export,
            body,
            force,
        } => show(ctx, &namespace, &id, export, body, force).await,
        DlqCommand::Replay {
            namespace,
            to,
            from,
            filters,
            limit,
            rate,
            max_replays,
            force,
            prefetch,
            confirm_window,
            engine,
            time_limit,
            dry_run,
            yes,
            from_file,
        } => {
            if let Some(file) = from_file {
                let to = to.as_deref().unwrap_or("origin");
                return replay_file(ctx, &namespace, file, to, max_replays, yes, dry_run).await;
            }
            let filter = Filter::parse(&filters).map_err(|e| {
                Failure::usage(
                    e,
                    "filters are K=V: reason=rejected, origin=v2, body=text, HEADER=V",
                )
            })?;
            let req = ReplayRequest {
                filter,
                limit,
                rate_per_s: rate,
                max_replays,
                force,
                prefetch,
                confirm_window,
                engine: engine
                    .parse()
                    .map_err(|e| Failure::usage(e, "use --engine auto, broker or client"))?,
                time_limit,
                ..ReplayRequest::new(
                    &namespace,
                    parse_from(&from)?,
                    parse_to(to.as_deref().unwrap_or("origin")),
                )
            };
            replay(ctx, req, to.is_none(), yes, dry_run).await
        }
        DlqCommand::Purge {
            namespace,
            export,
            yes,
            force,
        } => purge_cmd(ctx, &namespace, export, yes, force).await,
    }
}

fn dlq_name(ctx: &Ctx, ns: &str) -> String {
    Namespace::resolve(&ctx.cfg, ns).dlq
}

/// `--from`: dlq | unrouted | parked | vN.
fn parse_from(from: &str) -> Result<Source, Failure> {
    Ok(match from {
        "dlq" => Source::Dlq,
        "unrouted" => Source::Unrouted,
        "parked" => Source::Parked,
        v if is_version_name(v) => Source::Version(v.to_string()),
        other => {
            return Err(Failure::usage(
                format!("unknown --from `{}`", sanitize(other)),
                "use dlq, unrouted, parked or a version (v2)",
            ));
        }
    })
}

/// `--to`: origin | entry | vN | a queue name.
fn parse_to(to: &str) -> Destination {
    match to {
        "origin" => Destination::Origin,
        "entry" => Destination::Entry,
        v if is_version_name(v) => Destination::Version(v.to_string()),
        q => Destination::Queue(q.to_string()),
    }
}

#[derive(Serialize)]
struct ListDoc {
    namespace: String,
    queue: String,
    depth: u64,
    page: u64,
    page_size: u64,
    group_by: GroupBy,
    groups: Vec<crate::model::deadletter::Group>,
    messages: Vec<Summary>,
}

async fn list(
    ctx: &Ctx,
    ns: &str,
    page: u64,
    page_size: u64,
    by: GroupBy,
    exception_header: &str,
    force: bool,
) -> Result<(), Failure> {
    let queue = dlq_name(ctx, ns);
    let session = ctx.connect().await?;
    let depth = crate::ops::dlq_depth(&session, &queue).await?;
    let quorum = browse_guard(ctx.mgmt().as_ref(), &queue, force).await?;
    let views = browse_page(&session, &queue, page, page_size.max(1), quorum, force).await?;
    session.close().await;
    let now = chrono::Utc::now().timestamp();
    let messages: Vec<Summary> = views
        .iter()
        .map(|m| summarize(ns, m, exception_header, now))
        .collect();
    let groups = group(&messages, by);
    if ctx.json {
        return ctx.print_json(&ListDoc {
            namespace: ns.into(),
            queue,
            depth,
            page,
            page_size,
            group_by: by,
            groups,
            messages,
        });
    }
    let first = page * page_size;
    if messages.is_empty() {
        crate::outln!(
            "{}: {depth} dead letters; page {page} (from position {first}) is empty",
            sanitize(&queue),
        );
        return Ok(());
    }
    crate::outln!(
        "{}: {depth} dead letters; page {page} shows {} (positions {first}–{})",
        sanitize(&queue),
        messages.len(),
        first + messages.len() as u64 - 1
    );
    // Counts are the page's unless the page is the whole DLQ: say which.
    let whole = page == 0 && depth <= messages.len() as u64;
    if whole {
        crate::outln!("\nGROUP ({by:?})                           COUNT  OLDEST");
    } else {
        crate::outln!(
            "\nGROUP ({by:?}) — counts of this page only ({} of {depth}; --page/--limit for more)",
            messages.len()
        );
        crate::outln!("{:<40} {:>5}  OLDEST", "", "COUNT");
    }
    for g in &groups {
        crate::outln!(
            "{:<40} {:>5}  {}",
            crate::text::preview(g.key.as_bytes(), 200, 40),
            g.count,
            crate::model::deadletter::fmt_age(g.oldest_age_s)
        );
    }
    crate::outln!(
        "\n{:>6} {:<24} {:<6} {:<10} {:>3} {:>5}  BODY",
        "#",
        "ID",
        "FROM",
        "REASON",
        "RPL",
        "AGE"
    );
    for g in &groups {
        for s in messages
            .iter()
            .filter(|s| g.positions.contains(&s.position))
        {
            crate::outln!(
                "{:>6} {:<24} {:<6} {:<10} {:>3} {:>5}  {}",
                s.position,
                // The identity `dlq show` takes: the message id, else `sha:` and its digest.
                crate::text::preview(s.id.as_bytes(), 200, 24),
                s.origin_version.as_deref().unwrap_or("?"),
                crate::text::preview(s.reason.as_bytes(), 100, 10),
                s.replays,
                crate::model::deadletter::fmt_age(s.age_s),
                crate::text::preview(s.preview.as_bytes(), 400, 60)
            );
        }
    }
    Ok(())
}

async fn show(
    ctx: &Ctx,
    ns: &str,
    id: &str,
    export: Option<PathBuf>,
    mode: BodyMode,
    force: bool,
) -> Result<(), Failure> {
    let lookup = Lookup::parse(id).map_err(|e| {
        Failure::usage(
            e,
            "give a message id or digest as `hopback dlq list NS` shows it, or a position",
        )
    })?;
    let queue = dlq_name(ctx, ns);
    let session = ctx.connect().await?;
    crate::ops::dlq_depth(&session, &queue).await?;
    let quorum = browse_guard(ctx.mgmt().as_ref(), &queue, force).await?;
    let looked = crate::broker::identity::lookup(&session, &queue, &lookup, quorum, force).await;
    session.close().await;
    let looked = looked?;
    let read = if looked.scanned < looked.depth {
        format!(
            "the first {} of its {} messages",
            looked.scanned, looked.depth
        )
    } else {
        format!("its {} messages", looked.scanned)
    };
    let shown = crate::text::preview(id.as_bytes(), 400, 80);
    let (m, by, copies) = match lookup.resolve(&looked.identities()) {
        Resolution::One { index, by, copies } => match looked.candidates.get(index) {
            Some(m) => (m.clone(), by, copies as u64 + looked.more),
            None => return Err(Failure::error("the read lost its own message", "")),
        },
        Resolution::Ambiguous { by, ids } => {
            let what = match by {
                ResolvedBy::MessageId => "message id",
                _ => "digest prefix",
            };
            let digests: Vec<String> = ids.iter().map(|i| i.digest.label()).collect();
            return Err(Failure::error(
                format!(
                    "{what} `{shown}` names {}{} different dead letters in `{}`: {}",
                    ids.len(),
                    if looked.more > 0 { " or more" } else { "" },
                    sanitize(&queue),
                    digests.join(", ")
                ),
                format!(
                    "show one by its digest: `hopback dlq show {} {}`",
                    sanitize(ns),
                    digests.first().map_or("sha:…", String::as_str)
                ),
            ));
        }
        Resolution::NotFound => {
            return Err(Failure::error(
                format!(
                    "no dead letter `{shown}` in `{}` (read {read}): not a message id, digest or position there — replayed, purged or expired since it was listed?",
                    sanitize(&queue)
                ),
                "list what is there now with `hopback dlq list NS`",
            ));
        }
    };
    if let Some(path) = &export {
        let doc = export_document(&queue, &m);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Failure::error(format!("cannot encode the export: {e}"), ""))?;
        crate::broker::export::write_private(path, text.as_bytes()).map_err(|e| {
            Failure::error(
                format!("cannot write {}: {e}", path.display()),
                "check the directory exists and is writable",
            )
        })?;
    }
    let lines = inspector_lines(&m, mode);
    let identity = m.identity();
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "queue": queue,
            "id": identity.as_ref().map(|i| i.label()),
            "message_id": m.message_id,
            "digest": m.digest.map(|d| d.hex()),
            "resolved_by": by,
            "copies": copies,
            "position": m.position,
            "summary": summarize(ns, &m, DEFAULT_EXCEPTION_HEADER, chrono::Utc::now().timestamp()),
            "lines": lines,
            "export": export,
        }));
    }
    for l in &lines {
        crate::outln!("{}", l.text);
    }
    let label = identity.map_or_else(|| "?".to_string(), |i| i.label());
    if by == ResolvedBy::Position {
        crate::errln!(
            "note: shown by its position in this read ({}); it is dead letter `{label}` — open it by that id (positions of a quorum DLQ change between reads)",
            m.position
        );
    }
    if copies > 1 {
        crate::errln!(
            "note: `{label}` is in the DLQ {copies} times, byte for byte the same (one shown)"
        );
    }
    if let Some(p) = export {
        crate::errln!("exported to {}", p.display());
        if m.body.len() < m.body_len {
            crate::errln!(
                "note: the body ({} bytes) is larger than a single export loads; `dlq replay --from-file` will refuse this file — export with `dlq purge` to keep all of it",
                m.body_len
            );
        }
    }
    Ok(())
}

fn progress_line(p: &mover::MoveProgress) -> String {
    let c = &p.counts;
    let total = p.total.map(|t| format!("/{t}")).unwrap_or_default();
    let eta = p
        .eta_s
        .map(|s| format!(" ETA {}s", s.round()))
        .unwrap_or_default();
    format!(
        "moved {}{total}  parked {}  held {}  dup? {}{}  {:.0}/s{eta}{}",
        c.moved,
        c.parked,
        c.skipped_by_filter + c.no_target + c.returned + c.refused_replays,
        c.possible_duplicates,
        if c.quarantined + c.unreadable_left > 0 {
            format!(
                "  unreadable {} (quarantined {})",
                c.quarantined + c.unreadable_left,
                c.quarantined
            )
        } else {
            String::new()
        },
        p.rate_per_s,
        if p.connected {
            ""
        } else {
            "  (reconnecting…)"
        }
    )
}

/// Write a line to stderr, ignoring failure: after SIGHUP (an SSH drop) the terminal may be
/// gone, and `eprintln!` would panic instead of letting the move finish its bookkeeping.
fn say(line: &str) {
    crate::errln!("{line}");
}

/// Wait for a signal registered in `slot`; pends forever when it could not be registered.
async fn recv_signal(slot: &mut Option<tokio::signal::unix::Signal>) {
    match slot {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Run a replay plan with progress on stderr. SIGINT (Ctrl-C), SIGTERM and SIGHUP (an SSH drop)
/// stop it the same way: no new deliveries, outstanding confirms finish and are acked, what is
/// left stays in the source, so a re-run continues where it stopped. The operation journals how
/// it ended, with the signal named.
pub async fn run_with_progress(
    cx: &OpContext,
    plan: &ReplayPlan,
) -> Result<ReplayReport, crate::ops::OpError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before the mover starts, so no signal can fall back to its default (terminate
    // at once, leaving confirmed messages unacked) once messages are in flight.
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sighup = signal(SignalKind::hangup()).ok();
    let control = ReplayControl::new();
    let tty = std::io::stderr().is_terminal();
    let last = std::sync::Arc::new(std::sync::Mutex::new(None::<mover::MoveProgress>));
    let seen = last.clone();
    let run = crate::ops::replay::run(cx, plan, &control, move |_, p| {
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
    });
    tokio::pin!(run);
    let mut stopping = false;
    loop {
        let got = tokio::select! {
            r = &mut run => {
                if tty {
                    say("");
                }
                return r;
            }
            _ = recv_signal(&mut sigint) => Some("SIGINT"),
            _ = recv_signal(&mut sigterm) => Some("SIGTERM"),
            _ = recv_signal(&mut sighup) => Some("SIGHUP"),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let p = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if tty && let Some(p) = p {
                    crate::text::progress_line(&progress_line(&p));
                }
                None
            }
        };
        if let Some(sig) = got
            && !stopping
        {
            stopping = true;
            tracing::warn!(signal = sig, "stopping the move");
            say(&format!(
                "\n{sig}: stopping — finishing outstanding confirms (what is left stays in the source)…"
            ));
            control.stop(Some(sig));
        }
    }
}

/// `dlq replay NS --from-file FILE`: validate the whole file and plan, confirm with the counts,
/// re-import through `ops::import`. `--dry-run` stops at the plan: nothing is asked, published
/// or journaled.
async fn replay_file(
    ctx: &Ctx,
    ns: &str,
    file: PathBuf,
    to: &str,
    max_replays: u32,
    yes: bool,
    dry_run: bool,
) -> Result<(), Failure> {
    if !dry_run {
        ctx.require_writable("replay messages from a file")?;
    }
    let to = match to {
        "origin" => None,
        v if crate::model::xdeath::is_version_name(v) => Some(v.to_string()),
        other => {
            return Err(Failure::usage(
                format!("--to `{}` with --from-file", sanitize(other)),
                "use --to origin or --to vN",
            ));
        }
    };
    let session = ctx.connect().await?;
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let mut req = crate::ops::import::ImportRequest {
        namespace: ns.to_string(),
        file,
        to,
        max_replays,
        dry_run: true,
    };
    let plan = crate::ops::import::import(&cx, &req).await;
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            session.close().await;
            return Err(e.into());
        }
    };
    if dry_run {
        session.close().await;
        if ctx.json {
            return ctx.print_json(&plan);
        }
        crate::outln!(
            "dry run — nothing published, nothing journaled. Re-importing {} message(s) from {} into `{}` would send {} to version queues and park {} ({} with an origin outside the namespace)",
            plan.messages,
            sanitize(&plan.file),
            sanitize(ns),
            plan.plan.to_versions,
            plan.plan.parked,
            plan.plan.foreign_origin
        );
        return Ok(());
    }
    confirm(
        &format!(
            "Re-import {} message(s) from {} into `{}`: {} to version queues, {} parked ({} with an origin outside the namespace)?",
            plan.messages,
            plan.file,
            sanitize(ns),
            plan.plan.to_versions,
            plan.plan.parked,
            plan.plan.foreign_origin
        ),
        yes,
        None,
    )?;
    req.dry_run = false;
    let report = crate::ops::import::import(&cx, &req).await;
    session.close().await;
    let report = report?;
    if ctx.json {
        return ctx.print_json(&report);
    }
    crate::outln!(
        "re-imported {} of {} message(s) from {}: {} to version queues, {} parked ({} foreign origin)",
        report.published,
        report.messages,
        report.file,
        report.plan.to_versions,
        report.plan.parked,
        report.plan.foreign_origin
    );
    Ok(())
}

/// Where each origin's dead letters go, and why the destination was chosen.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Destinations {
    /// Versions failing now (error rate over the alert threshold), with what was measured.
    failing: BTreeMap<String, String>,
    /// Why the destination is what it is ("each message's origin: no version is failing", …).
    why: String,
    /// (origin, dead letters from it, where they go, a warning).
    rows: Vec<DestinationRow>,
    /// The window the error rates were measured over, in seconds.
    window_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct DestinationRow {
    origin: String,
    count: Option<u64>,
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// Read the namespace (error rates over the CLI's window, dead letters attributed by origin)
/// and decide the destination of a replay from the DLQ: `--to` as given, or — when it was left
/// out — each message's origin unless a version is failing, then the healthy version (the most
/// gate weight, then consumers), as the console's `R` dialog preselects. `Err` when `--to` was
/// left out, a version fails and no healthy one is there to take its dead letters.
async fn destinations(
    ctx: &Ctx,
    session: &crate::broker::session::Session,
    req: &mut ReplayRequest,
    defaulted: bool,
) -> Result<Option<Destinations>, Failure> {
    if req.from != Source::Dlq {
        return Ok(None);
    }
    let window = super::status::error_rate_window(None)?;
    if defaulted && !ctx.json {
        crate::errln!(
            "no --to: measuring error rates for {} to choose the destination (a failing version is not one)…",
            super::status::window_text(window)
        );
    }
    let mgmt = ctx.mgmt();
    let dlq = crate::topology::Namespace::resolve(&ctx.cfg, &req.namespace).dlq;
    let ready_before = crate::ops::dlq_depth(session, &dlq).await.ok();
    let (snap, _) = super::status::measure(
        ctx,
        session,
        mgmt.as_ref(),
        Some(req.namespace.clone()),
        Some(super::status::ATTRIBUTION_CAP),
        window,
    )
    .await;
    // The attribution browsed the DLQ; the broker requeues what it held when its channel closed,
    // but not at once (a large message takes a while): the plan must count them as ready.
    if let Some(before) = ready_before {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while crate::ops::dlq_depth(session, &dlq)
            .await
            .is_ok_and(|now| now < before)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let Some(n) = snap.ok().and_then(|s| s.namespace(&req.namespace).cloned()) else {
        return Ok(None);
    };
    let threshold = ctx
        .cfg
        .profile
        .namespaces
        .get(&req.namespace)
        .map_or(ctx.cfg.alerts.error_rate_pct, |a| a.alerts.error_rate_pct);
    let failing: BTreeMap<String, String> = n
        .versions
        .iter()
        .filter_map(|v| {
            let pct = v.error_rate? * 100.0;
            (pct > threshold).then(|| {
                (
                    v.version.clone(),
                    format!(
                        "error rate {pct:.0}% over the last {} > {threshold}%",
                        super::status::window_text(window)
                    ),
                )
            })
        })
        .collect();
    let healthy = n
        .versions
        .iter()
        .filter(|v| v.exists && v.consumers.unwrap_or(0) > 0 && !failing.contains_key(&v.version))
        .max_by_key(|v| (v.weight, v.consumers.unwrap_or(0)))
        .map(|v| v.version.clone());
    let mut why = match &req.to {
        Destination::Origin if failing.is_empty() => {
            "each message's origin: no version is failing".to_string()
        }
        _ if !defaulted => "as --to says".to_string(),
        _ => String::new(),
    };
    if defaulted && !failing.is_empty() {
        match &healthy {
            Some(h) => {
                why = format!(
                    "{} (no --to given): a failing version is not a default destination — {}",
                    sanitize(h),
                    failing
                        .iter()
                        .map(|(v, w)| format!("{} is failing ({w})", sanitize(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                req.to = Destination::Version(h.clone());
            }
            None => {
                return Err(Failure::usage(
                    format!(
                        "no --to given, and no healthy version to default to: {} failing, and no other version has consumers; nothing was moved",
                        failing
                            .iter()
                            .map(|(v, w)| format!("{} ({w})", sanitize(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "name the destination with --to vN (or --to origin to send each back where it died)",
                ));
            }
        }
    }
    let target_of = |origin: &str| -> String {
        match &req.to {
            Destination::Origin => origin.to_string(),
            Destination::Version(v) => v.clone(),
            Destination::Entry => "the entry exchange (the gate decides)".into(),
            Destination::Queue(q) => format!("queue {}", sanitize(q)),
        }
    };
    let mut rows: Vec<DestinationRow> = n
        .versions
        .iter()
        .filter(|v| v.dead_letters.unwrap_or(0) > 0 || failing.contains_key(&v.version))
        .map(|v| {
            let to = target_of(&v.version);
            let warning = failing
                .get(&to)
                .map(|w| format!("⚠ {} is failing ({w})", sanitize(&to)));
            DestinationRow {
                origin: v.version.clone(),
                count: v.dead_letters,
                to,
                warning,
            }
        })
        .collect();
    let attributed: u64 = n.versions.iter().filter_map(|v| v.dead_letters).sum();
    if let Some(d) = n.dlq_depth
        && d > attributed
        && n.dead_letters_sampled.is_none_or(|s| s >= d)
    {
        rows.push(DestinationRow {
            origin: "no origin in the namespace".into(),
            count: Some(d - attributed),
            to: match &req.to {
                Destination::Origin => "the parking queue (no origin to return to)".into(),
                _ => target_of(""),
            },
            warning: None,
        });
    }
    Ok(Some(Destinations {
        failing,
        why,
        rows,
        window_s: window.as_secs_f64(),
    }))
}

fn print_destinations(d: &Destinations, sampled_note: bool) {
    crate::outln!("  destination: {}", sanitize(&d.why));
    crate::outln!(
        "  per destination{}:",
        if sampled_note {
            " (dead letters attributed by browsing the DLQ)"
        } else {
            ""
        }
    );
    for r in &d.rows {
        crate::outln!(
            "    from {:<12} {:>8} → {}{}",
            sanitize(&r.origin),
            r.count.map_or("?".into(), |c| c.to_string()),
            sanitize(&r.to),
            r.warning
                .as_deref()
                .map(|w| format!("  {}", sanitize(w)))
                .unwrap_or_default()
        );
    }
}

async fn replay(
    ctx: &Ctx,
    mut req: ReplayRequest,
    defaulted: bool,
    yes: bool,
    dry_run: bool,
) -> Result<(), Failure> {
    // A dry run changes nothing and journals nothing: read-only profiles may plan (like `gate
    // set --dry-run`). A real replay is refused before connecting.
    if !dry_run {
        ctx.require_writable("replay dead letters")?;
    }
    let session = ctx.connect().await?;
    // Measuring error rates takes a window: worth it to choose a default destination, or to show
    // a dry run's per-destination breakdown; an explicit `--to` on a real run is taken as said.
    let measure = defaulted || dry_run;
    let dest = match if measure {
        destinations(ctx, &session, &mut req, defaulted).await
    } else {
        Ok(None)
    } {
        Ok(d) => d,
        Err(f) => {
            session.close().await;
            return Err(f);
        }
    };
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let plan = if dry_run {
        crate::ops::replay::plan(&cx, &req).await?
    } else {
        crate::ops::replay::prepare(&cx, &req).await?
    };
    if dry_run {
        session.close().await;
        if ctx.json {
            let mut v = serde_json::to_value(&plan)
                .map_err(|e| Failure::error(format!("cannot encode the plan: {e}"), ""))?;
            if let (Some(o), Some(d)) = (v.as_object_mut(), &dest) {
                o.insert("destinations".into(), serde_json::json!(d));
            }
            return ctx.print_json(&v);
        }
        crate::outln!("dry run — nothing published, nothing journaled. The plan:");
        crate::outln!("  {}", plan.statement());
        if let Some(d) = &dest {
            print_destinations(d, true);
        }
        match &plan.engine {
            crate::ops::replay::Engine::Broker(m) => crate::outln!(
                "  engine: broker — a shovel moves exactly {} inside RabbitMQ; {}",
                m.count,
                sanitize(&plan.engine_reason)
            ),
            crate::ops::replay::Engine::Client => {
                crate::outln!("  engine: client — {}", sanitize(&plan.engine_reason))
            }
        }
        return Ok(());
    }
    if let Some(d) = dest.as_ref().filter(|d| !d.failing.is_empty() && !ctx.json) {
        print_destinations(d, true);
    }
    if plan.source_depth == 0 {
        session.close().await;
        if ctx.json {
            return ctx
                .print_json(&serde_json::json!({"source": plan.source(), "depth": 0, "moved": 0}));
        }
        crate::outln!("`{}` is empty; nothing to move", sanitize(plan.source()));
        return Ok(());
    }
    confirm(&plan.question(), yes, None)?;
    let report = run_with_progress(&cx, &plan).await;
    session.close().await;
    let report = report?;
    let c = &report.counts;
    if ctx.json {
        ctx.print_json(&report.as_move_report())?;
    } else {
        // `outln!` ignores a failed write (after SIGHUP stdout may be a dead terminal, and a
        // panic here would hide the consistent state the move stopped in) and sanitises.
        crate::outln!(
            "{}: moved {}, parked {}, left in place {} (filter {}, no origin/target {}, over replay limit {}, returned/nacked {}), possible duplicates {}, reconnects {} — {:.0} msg/s, {} engine{}",
            match (&report.stop, report.stopped_by.as_deref()) {
                (StopReason::Drained, _) => "done (source drained)".to_string(),
                (StopReason::BudgetReached, _) => "done".to_string(),
                (StopReason::LimitReached, _) => "done (limit reached)".to_string(),
                (StopReason::Stopped, Some(sig)) => format!("stopped by {sig}"),
                (StopReason::Stopped, None) => "stopped".to_string(),
                (StopReason::Failed(_), _) => "FAILED".to_string(),
            },
            c.moved,
            c.parked,
            c.skipped_by_filter + c.no_target + c.refused_replays + c.returned,
            c.skipped_by_filter,
            c.no_target,
            c.refused_replays,
            c.returned,
            c.possible_duplicates,
            c.reconnects,
            report.rate_per_s(),
            plan.engine.name(),
            match (&plan.engine, &report.stop) {
                (
                    crate::ops::replay::Engine::Broker(_),
                    StopReason::BudgetReached | StopReason::LimitReached,
                ) => "",
                (crate::ops::replay::Engine::Broker(_), _) => " (counts read from queue depths)",
                _ => "",
            }
        );
        for u in &report.unreadable {
            crate::outln!("{}", u.describe());
        }
        if c.foreign_origin > 0 {
            crate::outln!(
                "warning: {} dead letter(s) named an origin outside the namespace's version queues (x-first-death-queue / x-death written by whoever published them); they were parked in `{}`, not sent there — inspect them before replaying by hand",
                c.foreign_origin,
                sanitize(&crate::topology::Namespace::resolve(&ctx.cfg, &plan.namespace).parked)
            );
        }
        if c.possible_duplicates > 0 {
            let when = match plan.engine {
                crate::ops::replay::Engine::Broker(_) => {
                    "up to {} message(s) were in flight when the shovel was removed"
                }
                crate::ops::replay::Engine::Client => {
                    "{} message(s) were in flight when the connection dropped"
                }
            };
            crate::outln!(
                "note: {}; they may now be in both places (consumers deduplicate on message_id)",
                when.replace("{}", &c.possible_duplicates.to_string())
            );
        }
    }
    if let Some(e) = report.error() {
        return Err(e.into());
    }
    if let (StopReason::Stopped, Some(sig)) = (&report.stop, report.stopped_by.as_deref()) {
        return Err(Failure::error(
            format!(
                "replay stopped by {sig} after moving {} and parking {} of {} message(s); the rest is still in `{}`, nothing is in flight (journaled)",
                c.moved,
                c.parked,
                plan.source_depth,
                sanitize(plan.source())
            ),
            "re-run the same command to continue where it stopped",
        ));
    }
    Ok(())
}

async fn purge_cmd(
    ctx: &Ctx,
    ns: &str,
    export: Option<PathBuf>,
    yes: bool,
    force: bool,
) -> Result<(), Failure> {
    ctx.require_writable("purge dead letters")?;
    let session = ctx.connect().await?;
    let cx = OpContext::open(session.clone(), &ctx.cfg, Via::Cli).await;
    let prepared = crate::ops::purge::prepare(&cx, ns, export, force).await?;
    let (count, queue, path) = (
        prepared.count,
        prepared.queue.clone(),
        prepared.export_path.clone(),
    );
    crate::errln!(
        "exported {count} message(s) from `{}` to {}",
        sanitize(&queue),
        path.display()
    );
    if count == 0 {
        prepared.abort(None).await;
        session.close().await;
        if ctx.json {
            return ctx.print_json(&serde_json::json!({"queue": queue, "exported": 0, "removed": 0, "export_path": path}));
        }
        crate::outln!("`{}` is empty; nothing to purge", sanitize(&queue));
        return Ok(());
    }
    let question = format!(
        "Permanently remove these {count} message(s) from `{}`? (the export stays at {})",
        sanitize(&queue),
        path.display()
    );
    if let Err(f) = confirm(&question, yes, Some(&count.to_string())) {
        prepared.abort(Some("not confirmed")).await;
        session.close().await;
        return Err(f);
    }
    let report = prepared.commit().await;
    session.close().await;
    let (report, _outcome) = report?;
    if ctx.json {
        ctx.print_json(&report)?;
    } else {
        crate::outln!(
            "purged {} message(s) from `{}`; export: {}",
            report.removed,
            sanitize(&queue),
            report.export_path.display()
        );
    }
    Ok(())
}
