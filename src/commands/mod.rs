//! The CLI's verbs. Each takes a [`Ctx`] (resolved config + output mode) and returns a
//! [`Failure`] on error, so the binary prints one line and exits with the contract's code.

pub mod canary;
pub mod check;
pub mod dlq;
pub mod drill;
pub mod gate;
pub mod gate_hash;
pub mod history;
pub mod init;
pub mod migrate;
pub mod postmortem;
pub mod rollback;
pub mod status;
pub mod timeline;

use std::io::IsTerminal;
use std::sync::Arc;

use crate::broker::mgmt::Mgmt;
use crate::broker::session::{self, Session};
use crate::config::Config;
use crate::error::Failure;

/// What every command gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Resolved configuration.
    pub cfg: Config,
    /// `--json`.
    pub json: bool,
}

impl Ctx {
    /// Connect for this command (`hopback cli (operator)`).
    pub async fn connect(&self) -> Result<Arc<Session>, Failure> {
        session::connect(&self.cfg.profile, "cli", &self.cfg.operator)
            .await
            .map_err(Failure::from)
    }
    /// The management API client (`None` if it cannot be built).
    pub fn mgmt(&self) -> Option<Mgmt> {
        Mgmt::new(&self.cfg.profile).ok()
    }
    /// Refuse a mutation on a read-only profile before connecting: the operations' own guard
    /// ([`crate::ops::require_writable`]), asked early.
    pub fn require_writable(&self, what: &str) -> Result<(), Failure> {
        crate::ops::require_writable(&self.cfg, what).map_err(Failure::from)
    }
    /// Print a JSON document on stdout.
    pub fn print_json<T: serde::Serialize>(&self, value: &T) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::error(format!("cannot encode JSON: {e}"), ""))?;
        // serde_json leaves C1 and bidi controls raw inside strings: escape them.
        crate::outln!("{}", crate::text::json_safe(&text));
        Ok(())
    }
}

/// `hopback VERB NS` as `hopback VERB SUB NS`: the subcommand parsed by clap (so it gets the
/// subcommand's own defaults); no namespace is a usage error naming both forms.
fn subcommand_of<S: clap::Subcommand>(
    verb: &str,
    sub: &str,
    namespace: Option<String>,
    options: &[String],
) -> Result<S, Failure> {
    #[derive(clap::Parser)]
    struct Just<S: clap::Subcommand> {
        #[command(subcommand)]
        sub: S,
    }
    let usage = || {
        Failure::usage(
            format!("`hopback {verb}` needs a namespace or a subcommand"),
            format!("hopback {verb} NAMESPACE, or hopback {verb} --help"),
        )
    };
    let ns = namespace.ok_or_else(usage)?;
    // `hopback dlq NS --group-by reason` is `hopback dlq list --group-by reason -- NS`: the
    // options are the subcommand's own, with its defaults and its errors.
    let args = [verb, sub]
        .into_iter()
        .map(str::to_string)
        .chain(options.iter().cloned())
        .chain(["--".to_string(), ns]);
    <Just<S> as clap::Parser>::try_parse_from(args)
        .map(|j| j.sub)
        .map_err(|e| {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            Failure::usage(
                format!(
                    "hopback {verb} NAMESPACE {}: {}",
                    crate::text::sanitize(&options.join(" ")),
                    crate::text::sanitize(&first)
                ),
                format!("the options are `hopback {verb} {sub}`'s: hopback {verb} {sub} --help"),
            )
        })
}

/// Broker-engine moves left behind in the vhost (of namespace `scope` only, when given): found,
/// and on a writable profile removed, each journaled (`ops::stale_moves`; the ledger is opened
/// only when there is one to remove). `Err`: the shovels could not be listed (why).
pub async fn sweep_stale_moves(
    ctx: &Ctx,
    session: &Arc<Session>,
    mgmt: &Mgmt,
    scope: Option<&str>,
) -> Result<Vec<crate::ops::stale_moves::SweptMove>, String> {
    use crate::ops::stale_moves;
    let ns = scope.map(|n| crate::topology::Namespace::resolve(&ctx.cfg, n));
    let found = stale_moves::find(mgmt, ns.as_ref()).await?;
    if !stale_moves::any_stale(&found) || ctx.cfg.profile.read_only {
        return Ok(stale_moves::unswept(&ctx.cfg, found));
    }
    let cx = crate::ops::OpContext::open(session.clone(), &ctx.cfg, crate::ops::Via::Cli).await;
    Ok(stale_moves::sweep(&cx, found).await)
}

/// One line on a broker-engine shovel found by [`sweep_stale_moves`], and what to do about it
/// (`None`: nothing); `warn` says whether it deserves a warning.
pub fn describe_swept(
    s: &crate::ops::stale_moves::SweptMove,
    vhost: &str,
) -> (String, Option<String>, bool) {
    use crate::ops::stale_moves::SweepAction;
    let name = crate::text::sanitize(&s.shovel);
    let ns = crate::text::sanitize(&s.namespace);
    match &s.action {
        SweepAction::Running => (
            format!(
                "shovel `{name}`: a broker-engine move of `{ns}` in progress ({})",
                s.why
            ),
            None,
            false,
        ),
        SweepAction::Removed => (
            format!(
                "removed shovel `{name}`, a broker-engine move of `{ns}` left behind ({}); journaled",
                s.why
            ),
            None,
            true,
        ),
        SweepAction::ReadOnly => (
            format!(
                "shovel `{name}` is a broker-engine move of `{ns}` left behind ({}): it takes the next dead letters of its queue; not removed (read-only profile)",
                s.why
            ),
            Some(format!(
                "run any hopback command with a writable profile (it removes and journals it), or remove it by hand: {}",
                s.manual_removal(vhost)
            )),
            true,
        ),
        SweepAction::Unknown => (
            format!(
                "shovel `{name}`: a broker-engine move of `{ns}` — in progress, or left behind, which takes the next dead letters of its queue ({})",
                s.why
            ),
            Some(format!(
                "if no hopback replay of `{ns}` is running, remove it: {} (or the management UI, Admin → Shovel Management)",
                s.manual_removal(vhost)
            )),
            true,
        ),
        SweepAction::Failed(why) => (
            format!(
                "shovel `{name}`, a broker-engine move of `{ns}` left behind ({}), could not be removed: {why}",
                s.why
            ),
            Some(format!("remove it by hand: {}", s.manual_removal(vhost))),
            true,
        ),
    }
}

/// Ask the operator on the terminal; with `--yes` proceed; with no terminal refuse (exit 3).
/// `expected` = `Some(text)` demands that exact text typed (counts, production names).
pub fn confirm(question: &str, yes: bool, expected: Option<&str>) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::refused(
            "not confirmed: no terminal to ask on",
            "re-run with --yes to confirm non-interactively",
        ));
    }
    match expected {
        Some(want) => crate::err!("{question}\nType `{want}` to confirm: "),
        None => crate::err!("{question} [y/N] "),
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::error(format!("cannot read the answer: {e}"), ""))?;
    let answer = line.trim();
    let ok = match expected {
        Some(want) => answer == want,
        None => matches!(answer, "y" | "Y" | "yes"),
    };
    if ok {
        return Ok(());
    }
    Err(Failure::refused(
        "not confirmed; nothing was changed",
        match expected {
            Some(want) => format!("type exactly `{want}` to proceed (or --yes)"),
            None => "answer `y` to proceed (or --yes)".to_string(),
        },
    ))
}

/// A command that timed out on a cluster without a majority of its nodes running: RabbitMQ
/// cannot declare quorum queues or append to the ledger stream then (issue 19, item 5). Say so
/// instead of the generic "overloaded" hint; what was done before is idempotent, so running the
/// command again once the nodes are back finishes it. Any other timeout passes unchanged.
pub async fn explain_timeout(profile: &crate::config::Profile, f: Failure) -> Failure {
    let Ok(mgmt) = Mgmt::new(profile) else {
        return f;
    };
    let nodes = tokio::time::timeout(std::time::Duration::from_secs(3), mgmt.nodes()).await;
    let Ok(Ok(nodes)) = nodes else {
        return f;
    };
    let total = nodes.len();
    let running = nodes.iter().filter(|n| n.running).count();
    if total < 2 || running * 2 > total {
        return f;
    }
    let down: Vec<String> = nodes
        .iter()
        .filter(|n| !n.running)
        .map(|n| crate::text::sanitize(&n.name).into_owned())
        .collect();
    Failure {
        hint: Some(format!(
            "only {running} of {total} nodes are running ({} down): quorum queues and the ledger stream need a majority ({}); bring the nodes back (`hopback check`), then run it again — every step already done is idempotent",
            down.join(", "),
            total / 2 + 1
        )),
        ..f
    }
}

/// Print on stderr, one warning line each, the ledger records the reads of `ledger` skipped
/// (records it cannot read: the rest of the output is complete without them).
pub fn warn_skipped(ledger: &crate::ledger::Ledger) {
    for r in ledger.take_skipped() {
        crate::errln!("warning: {}", r.describe());
    }
}
