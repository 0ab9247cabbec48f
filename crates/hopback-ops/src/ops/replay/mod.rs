//! The replay operation (docs/architecture.md, "The path of one replay"): every move of messages
//! that an operator asks for — dead letters replayed to their origin, a version or the entry
//! exchange; the unrouted queue replayed through the entry exchange; the parking queue replayed;
//! a version queue drained into another — is planned by [`prepare`] and run by [`run`]:
//! guard (read-only) → resolve every name through [`Namespace`] → read the source depth → journal
//! the intent → run the mover (`broker::mover`, confirm-then-ack) → read the source back →
//! journal the outcome. The CLI (`hopback dlq replay`) and the console (`R`) only collect the
//! request, confirm the [`ReplayPlan`] and show the [`ReplayReport`].

use std::sync::{Arc, Mutex};

use serde::Serialize;

mod engine;

use engine::{choose_engine, run_broker};

use super::{OpContext, OpError};
use crate::broker::mover::{
    self, MoveControl, MoveCounts, MoveProgress, MoveReport, MoveSpec, QuarantineOutcome,
    StopReason, Target, UnreadableMessage,
};
use crate::broker::shovel::{ShovelDest, ShovelMove};
use crate::ledger::{Event, EventKind, Outcome};
use crate::model::deadletter::{Condition, Filter};
use crate::text::sanitize;
use crate::topology::Namespace;

/// Where a replay takes messages from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "version", rename_all = "snake_case")]
pub enum Source {
    /// The dead-letter queue (a replay: counts `x-hopback-replays`, parks over the limit).
    Dlq,
    /// The unrouted safety net.
    Unrouted,
    /// The parking queue of over-replayed messages.
    Parked,
    /// A version queue (a drain, until it stays empty).
    Version(String),
}

/// Where a replay sends messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Destination {
    /// Each message's origin queue (from `x-death`).
    Origin,
    /// The entry exchange (the gate routes it again).
    Entry,
    /// A version's queue.
    Version(String),
    /// A queue named outright.
    Queue(String),
}

/// Which messages a replay takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// All of them (subject to the filter).
    All,
    /// These dead letters (message id and digest), one run each: a selection in the console
    /// moves exactly the messages selected, even when another shares a message id.
    Ids(Vec<crate::model::deadletter::DeadLetterId>),
}

/// What the operator asks for.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Namespace.
    pub namespace: String,
    /// From.
    pub from: Source,
    /// To.
    pub to: Destination,
    /// Only messages matching this (origin conditions name versions, resolved here).
    pub filter: Filter,
    /// All, or selected ids.
    pub selection: Selection,
    /// Stop after N messages.
    pub limit: Option<u64>,
    /// At most R messages per second.
    pub rate_per_s: Option<f64>,
    /// Replays allowed before parking.
    pub max_replays: u32,
    /// Replay even over `max_replays`.
    pub force: bool,
    /// Source prefetch.
    pub prefetch: u16,
    /// Publisher confirms outstanding.
    pub confirm_window: usize,
    /// Which engine moves the messages (`--engine`, default auto).
    pub engine: EngineChoice,
    /// The broker engine's time limit (`--time-limit`; default
    /// `broker::shovel::default_time_limit` of the count): past it the shovel is removed.
    pub time_limit: Option<std::time::Duration>,
}

/// `--engine`: which engine a move runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// The broker when every per-message decision can be made inside it, else the client.
    #[default]
    Auto,
    /// A dynamic shovel (refused, with the reason, when it cannot do this move).
    Broker,
    /// The confirm-then-ack mover.
    Client,
}

impl std::str::FromStr for EngineChoice {
    type Err = crate::model::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "broker" => Ok(Self::Broker),
            "client" => Ok(Self::Client),
            other => Err(crate::model::Invalid(format!(
                "unknown engine `{}` (auto, broker or client)",
                sanitize(other)
            ))),
        }
    }
}

/// The engine a plan runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "engine", rename_all = "snake_case")]
pub enum Engine {
    /// The confirm-then-ack mover (`broker::mover`), per message.
    Client,
    /// A dynamic shovel inside the broker (`broker::shovel`), exactly `count` messages.
    Broker(ShovelMove),
}

impl Engine {
    /// `client` or `broker`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Client => "client",
            Engine::Broker(_) => "broker",
        }
    }
}

impl ReplayRequest {
    /// A request with the mover's defaults.
    pub fn new(ns: &str, from: Source, to: Destination) -> Self {
        Self {
            namespace: ns.to_string(),
            from,
            to,
            filter: Filter::default(),
            selection: Selection::All,
            limit: None,
            rate_per_s: None,
            max_replays: mover::DEFAULT_MAX_REPLAYS,
            force: false,
            prefetch: mover::DEFAULT_PREFETCH,
            confirm_window: mover::DEFAULT_CONFIRM_WINDOW,
            engine: EngineChoice::Auto,
            time_limit: None,
        }
    }
}

/// A broker-engine move of this namespace left behind by a hopback that is gone, which the run
/// removes (journaled, `ops::stale_moves`) before it moves anything.
#[derive(Debug, Clone, Serialize)]
pub struct LeftBehind {
    /// The shovel.
    pub shovel: String,
    /// Why it counts as left behind (terminal-safe).
    pub why: String,
}

/// The exact plan [`run`] executes: what a dry run shows and the confirmation asks about.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    /// Namespace.
    pub namespace: String,
    /// `replay` (from the DLQ or the parking queue: counted, parked over the limit) or `move`.
    pub kind: EventKind,
    /// The mover runs, in order (one per selected id, else one).
    pub specs: Vec<MoveSpec>,
    /// Source queue depth when planned.
    pub source_depth: u64,
    /// Messages the plan takes at most (the depth, or the limit / selection).
    pub at_most: u64,
    /// Which engine moves them.
    pub engine: Engine,
    /// Why that engine (one line, terminal-safe).
    pub engine_reason: String,
    /// One line: what will happen (terminal-safe).
    pub title: String,
    /// Broker-engine moves of the namespace left behind, removed first.
    pub left_behind: Vec<LeftBehind>,
}

impl ReplayPlan {
    /// The source queue.
    pub fn source(&self) -> &str {
        self.specs.first().map_or("", |s| s.source_queue.as_str())
    }
    /// `(queue, max replays)` of the parking rule, when the plan counts replays.
    fn parking(&self) -> Option<(String, u32)> {
        let s = self.specs.first().filter(|s| s.count_replay)?;
        Some((
            sanitize(s.park_queue.as_deref()?).into_owned(),
            s.max_replays,
        ))
    }
    fn filtered(&self) -> &'static str {
        if self.specs.first().is_some_and(|s| !s.filter.is_empty()) {
            " matching the filter"
        } else {
            ""
        }
    }
    /// The broker-engine moves left behind, one list (empty: none).
    fn left_behind_list(&self) -> String {
        self.left_behind
            .iter()
            .map(|l| format!("shovel `{}` ({})", sanitize(&l.shovel), l.why))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// `at_most of source_depth messages{filtered} from `source` to target`.
    fn counts_and_route(&self) -> String {
        format!(
            "up to {} of {} messages{} from `{}` to {}",
            self.at_most,
            self.source_depth,
            self.filtered(),
            sanitize(self.source()),
            self.specs
                .first()
                .map_or_else(String::new, |s| s.target.describe())
        )
    }
    /// What the plan does, as a statement (the dry run's first line; the engine is printed on
    /// its own line after it, once).
    pub fn statement(&self) -> String {
        let park = self
            .parking()
            .map(|(q, n)| format!("; messages replayed {n}+ times go to `{q}`"))
            .unwrap_or_default();
        let left_behind = if self.left_behind.is_empty() {
            String::new()
        } else {
            format!(
                "; first removes {} broker-engine move(s) left behind: {}",
                self.left_behind.len(),
                self.left_behind_list()
            )
        };
        format!("moves {}{park}{left_behind}", self.counts_and_route())
    }
    /// The confirmation question, with the counts (terminal-safe).
    pub fn question(&self) -> String {
        let park = self
            .parking()
            .map(|(q, n)| format!(" (messages replayed {n}+ times go to `{q}`)"))
            .unwrap_or_default();
        let engine = match &self.engine {
            Engine::Broker(m) => format!(
                " [broker engine: a shovel moves exactly {} inside RabbitMQ — {}]",
                m.count, self.engine_reason
            ),
            Engine::Client => format!(" [client engine — {}]", self.engine_reason),
        };
        let left_behind = if self.left_behind.is_empty() {
            String::new()
        } else {
            format!(
                " [first removing {} broker-engine move(s) left behind: {}]",
                self.left_behind.len(),
                self.left_behind_list()
            )
        };
        format!(
            "Move {}{park}?{engine}{left_behind}",
            self.counts_and_route()
        )
    }
}

/// Stop, pause or resume a running replay; says why it was stopped (recorded in the ledger).
#[derive(Debug, Clone, Default)]
pub struct ReplayControl {
    mover: MoveControl,
    why: Arc<Mutex<Option<String>>>,
}

impl ReplayControl {
    /// A fresh control.
    pub fn new() -> Self {
        Self::default()
    }
    /// Stop: no new deliveries, outstanding confirms finish and are acked, the rest stays.
    pub fn stop(&self, why: Option<&str>) {
        if let Some(w) = why {
            let mut g = self.why.lock().unwrap_or_else(|p| p.into_inner());
            g.get_or_insert_with(|| w.to_string());
        }
        self.mover.stop();
    }
    /// Pause (outstanding confirms finish, then it waits).
    pub fn pause(&self) {
        self.mover.pause();
    }
    /// Resume after a pause.
    pub fn resume(&self) {
        self.mover.resume();
    }
    /// Watch the current run's progress.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<MoveProgress>> {
        self.mover.subscribe()
    }
    fn stopped_by(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The plan it ran.
    pub plan: ReplayPlan,
    /// Counters summed over every run.
    pub counts: MoveCounts,
    /// Why the last run ended.
    pub stop: StopReason,
    /// Who or what stopped it (`SIGTERM`, `operator`), when stopped.
    pub stopped_by: Option<String>,
    /// Source depth read back at the end (`None`: could not be read).
    pub source_left: Option<u64>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// The outcome event, once the ledger confirmed it.
    pub event: Option<Event>,
    /// Why the outcome could not be journaled.
    pub not_journaled: Option<String>,
    /// Messages it could not read (never republished), by position, and what became of each.
    pub unreadable: Vec<UnreadableMessage>,
}

impl ReplayReport {
    /// Moved + parked per second.
    pub fn rate_per_s(&self) -> f64 {
        (self.counts.moved + self.counts.parked) as f64 / self.elapsed_s.max(1e-9)
    }
    /// The ledger outcome of this report: a run that met messages it could not read moved
    /// less than asked to the target, so it did not end as asked (`verification_failed`).
    pub fn outcome(&self) -> Outcome {
        match &self.stop {
            StopReason::Failed(_) => Outcome::Failed,
            StopReason::Stopped => Outcome::Cancelled,
            _ if self.unreadable_met() > 0 => Outcome::VerificationFailed,
            _ => Outcome::Ok,
        }
    }
    /// Unreadable messages quarantined or left in place (not those a filter skipped).
    pub fn unreadable_met(&self) -> u64 {
        self.counts.quarantined + self.counts.unreadable_left
    }
    /// One line on the unreadable messages (terminal-safe), when there were any.
    pub fn unreadable_summary(&self) -> Option<String> {
        if self.unreadable_met() == 0 {
            return None;
        }
        let parked = mover::MoveSpec::quarantine_queue_of(&self.plan.specs);
        Some(format!(
            "{} message(s) in `{}` could not be read and were not republished: {} quarantined{}, {} left in place",
            self.unreadable_met(),
            sanitize(self.plan.source()),
            self.counts.quarantined,
            parked
                .map(|p| format!(" in `{}`", sanitize(&p)))
                .unwrap_or_default(),
            self.counts.unreadable_left,
        ))
    }
    /// A mover report of the whole replay (for the views that show one).
    pub fn as_move_report(&self) -> MoveReport {
        MoveReport {
            spec: self
                .plan
                .specs
                .first()
                .cloned()
                .unwrap_or_else(|| MoveSpec::replay(&Namespace::convention("?"), Target::Origin)),
            counts: self.counts.clone(),
            initial_depth: self.plan.source_depth,
            stop: self.stop.clone(),
            elapsed_s: self.elapsed_s,
            unreadable: self.unreadable.clone(),
        }
    }
    /// The error to report, if it did not end well: failed (a permission refusal counts as
    /// refused), stopped by a signal, or not journaled.
    pub fn error(&self) -> Option<OpError> {
        if let StopReason::Failed(why) = &self.stop {
            let hint = "nothing unconfirmed was acked: every message not moved is still in the source; fix the cause and re-run to continue";
            return Some(if crate::broker::session::is_permission_denial(why) {
                OpError::refused(format!("the move was refused: {}", sanitize(why)), hint)
            } else {
                OpError::failed(format!("the move failed: {}", sanitize(why)), hint)
            });
        }
        if let Some(cause) = &self.not_journaled {
            return Some(OpError::NotJournaled {
                done: format!("moved {} message(s)", self.counts.moved),
                cause: cause.clone(),
            });
        }
        if let Some(line) = self.unreadable_summary() {
            return Some(OpError::Verification {
                message: format!("moved {}; {line}", self.counts.moved),
                hint: "hopback never republishes a message whose properties it cannot read; inspect it with `hopback dlq list` (the parking queue: `--from parked`), export it with `hopback dlq purge`, or fix the producer".into(),
            });
        }
        None
    }
}

/// Add one run's unreadable messages to the replay's list: a message several runs of a
/// selection met (same queue and body) is listed once, with what became of it in the end.
fn merge_unreadable(all: &mut Vec<UnreadableMessage>, run: Vec<UnreadableMessage>) {
    for m in run {
        match all
            .iter_mut()
            .find(|a| a.queue == m.queue && a.body_sha256 == m.body_sha256)
        {
            Some(a) if a.outcome == QuarantineOutcome::NotSelected => *a = m,
            Some(_) => {}
            None => all.push(m),
        }
    }
}

fn spec_target(ns: &Namespace, to: &Destination) -> Result<Target, OpError> {
    Ok(match to {
        Destination::Origin => Target::Origin,
        Destination::Entry => Target::Exchange(ns.entry.clone()),
        Destination::Version(v) => Target::Queue(
            ns.require_version_queue(v)
                .map_err(|e| OpError::refused(e.to_string(), "name a version the namespace has"))?,
        ),
        // The ledger's events are its authors' word: no replay writes into it.
        Destination::Queue(q) if *q == crate::ledger::stream_name_from_env() => {
            return Err(OpError::refused(
                format!(
                    "`{}` is the ledger stream: replayed messages never go into it",
                    sanitize(q)
                ),
                "name a queue of the namespace (--to v1) or another queue",
            ));
        }
        Destination::Queue(q) => Target::Queue(q.clone()),
    })
}

/// `origin=v2` means the version's queue, whatever the adoption calls it.
fn resolve_filter(ns: &Namespace, f: &Filter) -> Filter {
    Filter {
        conditions: f
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Origin(v) => match ns.version_queue(v) {
                    Some(q) => Condition::Origin(q),
                    None => c.clone(),
                },
                other => other.clone(),
            })
            .collect(),
    }
}

/// Build the mover specs of a request (no I/O).
pub fn specs(ns: &Namespace, req: &ReplayRequest) -> Result<(EventKind, Vec<MoveSpec>), OpError> {
    let target = spec_target(ns, &req.to)?;
    let (kind, base) = match &req.from {
        Source::Dlq => (EventKind::Replay, MoveSpec::replay(ns, target)),
        Source::Parked => {
            let mut s = MoveSpec::replay(ns, target);
            s.source_queue = ns.parked.clone();
            s.park_queue = None;
            (EventKind::Replay, s)
        }
        Source::Unrouted => {
            let mut s = MoveSpec::replay_unrouted(ns);
            if req.to != Destination::Origin {
                s.target = target;
            }
            (EventKind::Move, s)
        }
        Source::Version(v) => {
            let source = ns
                .require_version_queue(v)
                .map_err(|e| OpError::refused(e.to_string(), "name a version the namespace has"))?;
            match target {
                Target::Queue(q) => (EventKind::Move, MoveSpec::drain(ns, &source, &q)),
                _ => {
                    return Err(OpError::refused(
                        format!("draining `{}` needs a queue target", sanitize(v)),
                        "use --to v1 (or another version)",
                    ));
                }
            }
        }
    };
    let base = MoveSpec {
        filter: resolve_filter(ns, &req.filter),
        limit: req.limit,
        rate_per_s: req.rate_per_s,
        max_replays: req.max_replays,
        force: req.force,
        prefetch: req.prefetch.max(1),
        confirm_window: req.confirm_window.max(1),
        connection_purpose: "replay".into(),
        ..base
    };
    let specs = match &req.selection {
        Selection::All => vec![base],
        Selection::Ids(ids) => ids
            .iter()
            .map(|id| {
                let mut f = base.filter.clone();
                f.conditions.push(Condition::Identity(id.clone()));
                MoveSpec {
                    filter: f,
                    limit: Some(1),
                    ..base.clone()
                }
            })
            .collect(),
    };
    Ok((kind, specs))
}

/// Guard and plan a replay: the exact plan [`run`] will execute (also the dry run).
pub async fn prepare(cx: &OpContext, req: &ReplayRequest) -> Result<ReplayPlan, OpError> {
    cx.require_writable("replay or move messages")?;
    plan(cx, req).await
}

/// [`prepare`] without the read-only guard: the plan a dry run shows. It reads (depths, the
/// engine's checks) and changes nothing, so a read-only profile may look at it, as it may at a
/// gate flip's dry run; [`run`] takes only a plan from [`prepare`].
pub async fn plan(cx: &OpContext, req: &ReplayRequest) -> Result<ReplayPlan, OpError> {
    crate::broker::topology::validate_namespace(&req.namespace)
        .map_err(|e| OpError::refused(e, "namespaces are names like `email`"))?;
    let ns = Namespace::resolve(&cx.cfg, &req.namespace);
    let (kind, mut specs) = specs(&ns, req)?;
    let source = specs
        .first()
        .map(|s| s.source_queue.clone())
        .unwrap_or_default();
    let depth = cx
        .session
        .passive_queue(&source)
        .await?
        .map(|c| u64::from(c.ready))
        .ok_or_else(|| match req.from {
            // The parking queue is made by the first message parked.
            Source::Parked => OpError::failed(
                format!(
                    "nothing has been parked in `{}` yet (no `{}` queue)",
                    sanitize(&req.namespace),
                    sanitize(&source)
                ),
                "messages are parked when a replay finds them over --max-replays; `hopback dlq NS` shows the dead letters",
            ),
            _ => OpError::failed(
                format!("`{}` does not exist", sanitize(&source)),
                "check the namespace, or create it with `hopback init NS`",
            ),
        })?;
    // A target queue that does not exist fails the plan (the dry run too), not only the run.
    if let Some(Target::Queue(q)) = specs.first().map(|s| &s.target)
        && cx.session.passive_queue(q).await?.is_none()
    {
        let hint = match &req.to {
            Destination::Version(v) => format!(
                "create it with `hopback init {} --versions …,{}`, or replay to a version the namespace has",
                sanitize(&req.namespace),
                sanitize(v)
            ),
            _ => "check the queue's name (`--to QUEUE` names an existing queue)".to_string(),
        };
        return Err(OpError::failed(
            format!(
                "target queue `{}` does not exist; nothing was changed",
                sanitize(q)
            ),
            hint,
        ));
    }
    let at_most = match &req.selection {
        Selection::Ids(ids) => (ids.len() as u64).min(depth),
        Selection::All => req.limit.map_or(depth, |l| l.min(depth)),
    };
    let what = match &req.selection {
        Selection::Ids(ids) => format!("{} selected message(s)", ids.len()),
        Selection::All if req.filter.is_empty() => "all messages".to_string(),
        Selection::All => "messages matching the filter".to_string(),
    };
    let title = format!(
        "{} {what} from {} to {}",
        if kind == EventKind::Replay {
            "replay"
        } else {
            "move"
        },
        sanitize(&source),
        specs
            .first()
            .map_or_else(String::new, |s| s.target.describe())
    );
    // A broker-engine move left behind would take this namespace's dead letters too: the run
    // removes it first (journaled); the plan says so.
    let moves = match cx.mgmt.as_ref() {
        Some(m) => crate::ops::stale_moves::find(m, Some(&ns)).await,
        None => Err("the management API is not configured".into()),
    };
    let left_behind = moves
        .iter()
        .flatten()
        .filter_map(|f| match &f.verdict {
            crate::broker::shovel::Verdict::Stale(why) => Some(LeftBehind {
                shovel: f.name.clone(),
                why: sanitize(why).into_owned(),
            }),
            _ => None,
        })
        .collect();
    let (engine, mut engine_reason) = choose_engine(cx, &ns, req, &specs, at_most, &moves).await?;
    if engine == Engine::Client
        && let Some(note) = size_prefetch(cx.mgmt.as_ref(), &source, depth, &mut specs).await
    {
        engine_reason = format!("{engine_reason}; {note}");
    }
    Ok(ReplayPlan {
        namespace: ns.name.clone(),
        kind,
        specs,
        source_depth: depth,
        at_most,
        engine,
        engine_reason,
        title,
        left_behind,
    })
}

/// Lower the client engine's prefetch and window for a source of large messages (the source's
/// average size from the management API), so the mover's memory stays near
/// [`mover::PREFETCH_BYTES`]. Returns what it changed — or, for a source with messages, that the
/// size is unknown and the prefetch stays as asked — for the plan's engine line. The rollback's
/// drains and replays size theirs here too.
pub(crate) async fn size_prefetch(
    mgmt: Option<&crate::broker::mgmt::Mgmt>,
    source: &str,
    depth: u64,
    specs: &mut [MoveSpec],
) -> Option<String> {
    if depth == 0 {
        return None;
    }
    let unknown = |why: &str| Some(format!("message size unknown ({why}): prefetch as asked"));
    let Some(mgmt) = mgmt else {
        return unknown("no management API");
    };
    let q = match mgmt.queue(source).await {
        Ok(Some(q)) => q,
        Ok(None) => return None,
        Err(e) => return unknown(&format!("management API: {}", sanitize(&e.to_string()))),
    };
    let Some(avg) = q
        .message_bytes_ready
        .zip(q.messages_ready)
        .filter(|(_, n)| *n > 0)
        .map(|(b, n)| b / n)
    else {
        return unknown("not yet in the management API's figures");
    };
    let mut note = None;
    for s in specs.iter_mut() {
        let (prefetch, window) = mover::sized_prefetch(s.prefetch, s.confirm_window, Some(avg));
        if prefetch < s.prefetch {
            note = Some(format!(
                "prefetch {prefetch} for messages of {:.1} MiB on average",
                avg as f64 / f64::from(1 << 20)
            ));
        }
        (s.prefetch, s.confirm_window) = (prefetch, window);
    }
    note
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Before a move of `ns`: remove the broker-engine moves of the namespace left behind (each
/// journaled, `ops::stale_moves`). One that cannot be removed refuses the run: it would take the
/// same dead letters.
async fn remove_left_behind(cx: &OpContext, ns: &Namespace) -> Result<(), OpError> {
    let Some(mgmt) = cx.mgmt.as_ref() else {
        return Ok(());
    };
    let found = match crate::ops::stale_moves::find(mgmt, Some(ns)).await {
        Ok(f) => f,
        // The broker engine reads the shovels again (and fails on this); the client engine does
        // not need the management API.
        Err(_) => return Ok(()),
    };
    if !crate::ops::stale_moves::any_stale(&found) {
        return Ok(());
    }
    for s in crate::ops::stale_moves::sweep(cx, found).await {
        if let crate::ops::stale_moves::SweepAction::Failed(why) = &s.action {
            return Err(OpError::failed(
                format!(
                    "a broker-engine move of `{}` left behind (shovel `{}`) would take the same messages, and removing it failed: {why}; nothing was moved",
                    sanitize(&ns.name),
                    sanitize(&s.shovel)
                ),
                s.manual_removal(&cx.cfg.profile.vhost),
            ));
        }
    }
    Ok(())
}

/// Drive one engine's run to its end, handing every progress report published on `control` to
/// `on_progress(part, …)` (both engines report through the same control).
async fn with_progress<T>(
    fut: impl std::future::Future<Output = T>,
    control: &ReplayControl,
    part: usize,
    on_progress: &mut (impl FnMut(usize, &MoveProgress) + Send),
) -> T {
    let mut rx = control.subscribe();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            changed = rx.changed() => {
                if changed.is_err() {
                    return fut.await;
                }
                let p = rx.borrow_and_update().clone();
                if let Some(p) = p {
                    on_progress(part, &p);
                }
            }
        }
    }
}

/// Run a plan: journal the intent, move (each run in turn, one control for all), read the
/// source back, journal the outcome. `on_progress(part, progress)` sees every progress report.
pub async fn run(
    cx: &OpContext,
    plan: &ReplayPlan,
    control: &ReplayControl,
    mut on_progress: impl FnMut(usize, &MoveProgress) + Send,
) -> Result<ReplayReport, OpError> {
    cx.require_writable("replay or move messages")?;
    let ns = Namespace::resolve(&cx.cfg, &plan.namespace);
    remove_left_behind(cx, &ns).await?;
    // The broker engine's move is stamped now: its deadline, and the shovel's name carrying it.
    let engine = match &plan.engine {
        Engine::Broker(m) => Engine::Broker(m.clone().started(&ns, unix_now())),
        Engine::Client => Engine::Client,
    };
    let first = plan.specs.first();
    let params = serde_json::json!({
        "source": first.map(|s| s.source_queue.clone()),
        "target": first.map(|s| s.target.clone()),
        "filter": first.map(|s| s.filter.clone()),
        "limit": first.and_then(|s| s.limit),
        "rate_per_s": first.and_then(|s| s.rate_per_s),
        "max_replays": first.map(|s| s.max_replays),
        "force": first.map(|s| s.force),
        "runs": plan.specs.len(),
        "engine": plan.engine.name(),
        "engine_reason": plan.engine_reason,
        "shovel": match &engine {
            Engine::Broker(m) => serde_json::json!({
                "name": m.name,
                "move_id": m.move_id,
                "count": m.count,
                "dest": m.dest,
                "deadline_unix": m.deadline_unix,
            }),
            Engine::Client => serde_json::Value::Null,
        },
    });
    cx.journal_intent(
        cx.event(plan.kind, Some(&plan.namespace))
            .params(params.clone())
            .reason(format!(
                "{} — {} engine ({})",
                plan.title,
                plan.engine.name(),
                plan.engine_reason
            )),
    )
    .await?;
    let started = std::time::Instant::now();
    let mut total = MoveCounts::default();
    let mut unreadable: Vec<UnreadableMessage> = Vec::new();
    let mut stop = StopReason::Drained;
    let specs: &[MoveSpec] = match &engine {
        Engine::Broker(m) => {
            let r = run_broker(cx, plan, m, control, &mut on_progress).await;
            total = r.counts;
            stop = r.stop;
            &[]
        }
        Engine::Client => &plan.specs,
    };
    for (i, spec) in specs.iter().enumerate() {
        if control.mover.state() == mover::RunState::Stopped {
            stop = StopReason::Stopped;
            break;
        }
        let fut = mover::run(&cx.cfg.profile, &cx.cfg.operator, spec, &control.mover);
        let r = with_progress(fut, control, i + 1, &mut on_progress).await;
        total.add(&r.counts);
        merge_unreadable(&mut unreadable, r.unreadable.clone());
        stop = r.stop.clone();
        if r.failed() {
            break;
        }
    }
    if plan.specs.len() > 1 {
        // Each run of a selection takes one id: the others it skipped are not "held".
        total.skipped_by_filter = 0;
    }
    let source_left = cx
        .session
        .passive_queue(plan.source())
        .await
        .ok()
        .flatten()
        .map(|c| u64::from(c.ready));
    let stopped_by = control.stopped_by();
    let mut report = ReplayReport {
        plan: ReplayPlan {
            engine,
            ..plan.clone()
        },
        counts: total,
        stop,
        stopped_by,
        source_left,
        elapsed_s: started.elapsed().as_secs_f64(),
        event: None,
        not_journaled: None,
        unreadable,
    };
    let reason = match (&report.stop, &report.stopped_by) {
        (StopReason::Failed(w), _) => Some(w.clone()),
        (StopReason::Drained | StopReason::BudgetReached | StopReason::LimitReached, _)
            if report.unreadable_met() > 0 =>
        {
            report.unreadable_summary()
        }
        (StopReason::Stopped, by) => Some(format!(
            "stopped{} after moving {} and parking {}; the rest stays in `{}` (re-run to continue)",
            by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            report.counts.moved,
            report.counts.parked,
            plan.source()
        )),
        _ => None,
    };
    let mut after = serde_json::to_value(&report.counts).unwrap_or_default();
    after["source_left"] = serde_json::json!(report.source_left);
    if !report.unreadable.is_empty() {
        after["unreadable"] = serde_json::to_value(&report.unreadable).unwrap_or_default();
    }
    let mut event = cx
        .event(plan.kind, Some(&plan.namespace))
        .params(params)
        .after(after)
        .outcome(report.outcome());
    if let Some(r) = reason {
        event = event.reason(r);
    }
    match cx
        .journal_outcome(event, &format!("moved {}", report.counts.moved))
        .await
    {
        Ok(e) => report.event = Some(e),
        Err(e) => {
            report.not_journaled = Some(match e {
                OpError::NotJournaled { cause, .. } => cause,
                other => other.to_string(),
            })
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_replay_writes_into_the_ledger_stream() {
        let ns = Namespace::convention("e");
        let ledger = crate::ledger::stream_name_from_env();
        let req = ReplayRequest::new("e", Source::Dlq, Destination::Queue(ledger));
        assert!(matches!(specs(&ns, &req), Err(OpError::Refused { .. })));
        let req = ReplayRequest::new("e", Source::Dlq, Destination::Queue("other".into()));
        assert!(specs(&ns, &req).is_ok());
    }
}
