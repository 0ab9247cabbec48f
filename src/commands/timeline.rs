//! `hopback timeline` (the incident timeline from the ledger, as text, Markdown or JSON, optionally
//! followed live) and `hopback note` (a human note in the ledger, so the timeline carries context).

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::commands::Ctx;
use crate::error::Failure;
use crate::ledger::projection::{
    MarkdownMeta, Timeline, TimelineEntry, TimelineFilter, render_markdown,
};
use crate::ledger::{Ledger, StreamStart};
use crate::text::sanitize;

/// Output format of `timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TimelineFormat {
    /// One line per event.
    #[default]
    Text,
    /// A Markdown table (the post-mortem draft starts from it).
    Md,
    /// One JSON document (an array of entries); with --follow, one JSON event per line.
    Json,
}

/// `timeline` arguments.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// Only this namespace (global events such as notes without a namespace are kept)
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only events younger than this, e.g. 30m, 2h, 1d
    #[arg(long)]
    pub since: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = TimelineFormat::Text)]
    pub format: TimelineFormat,
    /// Keep at most this many (the newest)
    #[arg(long, default_value_t = 10_000)]
    pub limit: usize,
    /// After the history, keep printing new events as they are appended (Ctrl-C to stop)
    #[arg(long)]
    pub follow: bool,
}

/// `note` arguments.
#[derive(Debug, Args)]
pub struct NoteArgs {
    /// The namespace the note is about
    #[arg(long)]
    pub namespace: Option<String>,
    /// The note text
    #[arg(required = true, num_args = 1..)]
    pub text: Vec<String>,
}

/// Parse `--since 2h` into a start time.
pub fn since_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        Failure::usage(
            format!("--since `{}`: {e}", sanitize(text)),
            "e.g. --since 30m, --since 2h, --since 1d",
        )
    })?;
    let d = chrono::Duration::from_std(d)
        .map_err(|_| Failure::usage("--since is too long", "e.g. --since 7d"))?;
    Ok(chrono::Utc::now() - d)
}

/// One text line of a timeline entry.
pub fn text_line(e: &TimelineEntry) -> String {
    let mut s = format!(
        "{}  {}  {:<30} {:<12} {:<8} {}",
        e.ts.format("%Y-%m-%d %H:%M:%S"),
        e.short_id,
        e.who,
        if e.namespace.is_empty() {
            "-"
        } else {
            &e.namespace
        },
        e.outcome,
        e.summary
    );
    if let Some(r) = &e.reason {
        s.push_str(&format!(" — {r}"));
    }
    s
}

/// Run `timeline`.
pub async fn run(ctx: &Ctx, mut args: TimelineArgs) -> Result<(), Failure> {
    if ctx.json {
        args.format = TimelineFormat::Json;
    }
    let since = args.since.as_deref().map(since_time).transpose()?;
    let filter = TimelineFilter {
        namespace: args.namespace.clone(),
        since,
        max_entries: args.limit,
    };
    let session = ctx.connect().await?;
    let ledger = Ledger::open_read(&session, &ctx.cfg).await;
    let start = since.map_or(StreamStart::First, StreamStart::Timestamp);
    let mut t = Timeline::new(filter.clone());
    let read = if args.follow {
        Ok(0)
    } else {
        ledger.fold(start, |e| t.push(&e)).await
    };
    super::warn_skipped(&ledger);
    if let Err(f) = read {
        session.close().await;
        return Err(f.into());
    }
    if !ledger.is_stream() {
        crate::errln!(
            "warning: ledger: {}",
            sanitize(&ledger.backend_description())
        );
    }
    if args.follow {
        let r = follow(&ledger, start, &filter, args.format).await;
        session.close().await;
        return r;
    }
    session.close().await;
    let entries = t.into_entries();
    match args.format {
        TimelineFormat::Json => ctx.print_json(&entries)?,
        TimelineFormat::Md => {
            let title = match &args.namespace {
                Some(ns) => format!("Incident timeline — {}", sanitize(ns)),
                None => "Incident timeline".into(),
            };
            crate::out!(
                "{}",
                render_markdown(
                    &entries,
                    &MarkdownMeta {
                        title,
                        source: ledger.backend_description(),
                        generated_at: Some(chrono::Utc::now()),
                    }
                )
            );
        }
        TimelineFormat::Text => {
            if entries.is_empty() {
                crate::outln!("no events");
            }
            for e in &entries {
                crate::outln!("{}", text_line(e));
            }
        }
    }
    Ok(())
}

async fn follow(
    ledger: &Ledger,
    start: StreamStart,
    filter: &TimelineFilter,
    format: TimelineFormat,
) -> Result<(), Failure> {
    let mut sub = ledger.subscribe(start).await?;
    // Tests and scripts wait for this line before appending.
    crate::errln!(
        "following the ledger ({})",
        sanitize(&ledger.backend_description())
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            next = sub.next_live_within(Duration::from_secs(3600)) => {
                let e = match next? {
                    Some(crate::ledger::Live::Event(e)) => e,
                    Some(crate::ledger::Live::Skipped(r)) => {
                        crate::errln!("warning: {}", r.describe());
                        continue;
                    }
                    None => continue,
                };
                let mut t = Timeline::new(filter.clone());
                t.push(&e);
                for entry in t.entries() {
                    match format {
                        TimelineFormat::Json => {
                            let line = serde_json::to_string(&entry).map_err(|e| Failure::error(format!("cannot encode JSON: {e}"), ""))?;
                            crate::outln!("{}", crate::text::json_safe(&line));
                        }
                        _ => crate::outln!("{}", text_line(&entry)),
                    }
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
        }
    }
    sub.close().await;
    Ok(())
}

/// Run `note`.
pub async fn note(ctx: &Ctx, args: NoteArgs) -> Result<(), Failure> {
    let text = args.text.join(" ");
    if text.trim().is_empty() {
        return Err(Failure::usage(
            "the note is empty",
            "hopback note \"what you saw\"",
        ));
    }
    ctx.require_writable("add a note")?;
    let session = ctx.connect().await?;
    let cx = crate::ops::OpContext::open(session.clone(), &ctx.cfg, crate::ops::Via::Cli).await;
    // A note about a namespace that is gone (a drill's, a removed one) is still worth keeping,
    // but a typo should not pass unnoticed.
    let missing = match args.namespace.as_deref() {
        Some(ns) => {
            let entry = crate::topology::Namespace::resolve(&ctx.cfg, ns).entry;
            matches!(session.exchange_exists(&entry).await, Ok(false)).then(|| sanitize(ns))
        }
        None => None,
    };
    let r = crate::ops::note::add(&cx, args.namespace.as_deref(), &text).await;
    session.close().await;
    if let (Ok(_), Some(ns)) = (&r, &missing) {
        crate::errln!(
            "warning: namespace `{ns}` does not exist on this broker (noted anyway; `hopback status` lists the namespaces)"
        );
    }
    let e = r?.event;
    let ledger = &cx.ledger;
    if ctx.json {
        return ctx.print_json(&e);
    }
    crate::outln!(
        "noted ({}) in {}",
        e.short_id(),
        sanitize(&ledger.backend_description())
    );
    Ok(())
}
