//! `hopback postmortem [--incident ID] [--output FILE]`: a Markdown post-mortem draft projected
//! from the ledger — summary, impact figures, timeline, actions (who, when, why), what the alerts
//! said when, and empty Causes / Follow-ups sections for the humans.
//!
//! An incident is a rollback (its `rollback_id`) or a drill (its id, namespace `drill-<id>`);
//! without `--incident` the operator's own latest is used (its event verified by the broker as
//! this profile's user, with this operator's name), and stderr says which — never another
//! operator's newer incident on the same broker. The projection and the rendering
//! live in [`crate::ledger::postmortem`] (the drill renders the same text); this is only the verb.

use std::path::PathBuf;

use crate::commands::Ctx;
use crate::error::Failure;
use crate::ledger::postmortem::{Own, find_incident, find_own_incident, incident_events, render};
use crate::ledger::{Ledger, StreamStart};
use crate::text::sanitize;

/// Arguments of `hopback postmortem`.
#[derive(Debug, Clone, clap::Args)]
pub struct PostmortemArgs {
    /// A rollback id or a drill id (default: your own latest — verified as this profile's
    /// broker user, with your operator name)
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
    let inc = match incident.as_deref() {
        Some(id) => find_incident(&all, Some(id)).ok_or_else(|| {
            Failure::error(
                format!("no rollback or drill `{}` in the ledger", sanitize(id)),
                "list them with `hopback timeline`; ids are the rollback id or the drill id",
            )
        })?,
        None => {
            let own = Own {
                author: &ctx.cfg.profile.username,
                operator: &ctx.cfg.operator,
            };
            let Some((inc, chosen)) = find_own_incident(&all, &own) else {
                let newest = find_incident(&all, None)
                    .map(|i| {
                        format!(
                            "; the newest on this broker is {} `{}` on `{}` (pass --incident {} to draft it)",
                            kind_word(&i.kind),
                            sanitize(&i.id),
                            sanitize(&i.namespace),
                            sanitize(&i.id)
                        )
                    })
                    .unwrap_or_default();
                return Err(Failure::error(
                    format!(
                        "no rollback or drill of yours in the ledger (broker user `{}`, operator `{}`){newest}",
                        sanitize(own.author),
                        sanitize(own.operator)
                    ),
                    "name the incident with --incident ID (`hopback timeline` lists them)",
                ));
            };
            crate::errln!(
                "post-mortem of your latest incident: {} `{}` on `{}` ({} {}, by {})",
                kind_word(&inc.kind),
                sanitize(&inc.id),
                sanitize(&inc.namespace),
                match chosen.kind {
                    crate::ledger::event::EventKind::RollbackStarted => "started",
                    _ => "finished",
                },
                chosen.ts.format("%Y-%m-%d %H:%M:%S UTC"),
                chosen.who()
            );
            inc
        }
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

fn kind_word(k: &crate::ledger::postmortem::IncidentKind) -> &'static str {
    match k {
        crate::ledger::postmortem::IncidentKind::Drill => "drill",
        crate::ledger::postmortem::IncidentKind::Rollback => "rollback",
    }
}
