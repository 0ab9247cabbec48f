//! `hopback postmortem [--incident ID] [--output FILE]`: a Markdown post-mortem draft projected
//! from the ledger — summary, impact figures, timeline, actions (who, when, why), what the alerts
//! said when, and empty Causes / Follow-ups sections for the humans.
//!
//! An incident is a rollback (its `rollback_id`) or a drill (its id, namespace `drill-<id>`);
//! without `--incident` the most recent finished one is used. The projection and the rendering
//! live in [`crate::ledger::postmortem`] (the drill renders the same text); this is only the verb.

use std::path::PathBuf;

use crate::commands::Ctx;
use crate::error::Failure;
use crate::ledger::postmortem::{find_incident, incident_events, render};
use crate::ledger::{Ledger, StreamStart};
use crate::text::sanitize;

/// Arguments of `hopback postmortem`.
#[derive(Debug, Clone, clap::Args)]
pub struct PostmortemArgs {
    /// A rollback id or a drill id (default: the most recent finished one)
    #[arg(long)]
    pub incident: Option<String>,
    /// Write the Markdown here instead of stdout
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// `hopback postmortem`.
pub async fn run(
    ctx: &Ctx,
    incident: Option<String>,
    output: Option<PathBuf>,
) -> Result<(), Failure> {
    let session = ctx.connect().await?;
    let ledger = Ledger::open_read(&session, &ctx.cfg).await;
    let all = ledger.read(StreamStart::First).await;
    super::warn_skipped(&ledger);
    let all = all?;
    session.close().await;
    let Some(inc) = find_incident(&all, incident.as_deref()) else {
        return Err(Failure::error(
            match &incident {
                Some(id) => format!("no rollback or drill `{}` in the ledger", sanitize(id)),
                None => "the ledger has no finished rollback or drill yet".into(),
            },
            "list them with `hopback timeline`; ids are the rollback id or the drill id",
        ));
    };
    let events = incident_events(&all, &inc);
    let md = render(&events, &inc);
    if ctx.json {
        return ctx.print_json(&serde_json::json!({
            "incident": inc.id,
            "namespace": inc.namespace,
            "events": events.len(),
            "markdown": md,
            "output": output.as_ref().map(|p| p.display().to_string()),
        }));
    }
    match output {
        Some(p) => {
            crate::files::write(&p, md.as_bytes()).map_err(|e| {
                Failure::error(
                    format!("cannot write {}: {e}", p.display()),
                    "check the path",
                )
            })?;
            crate::errln!("post-mortem draft written to {}", p.display());
        }
        None => crate::out!("{md}"),
    }
    Ok(())
}
