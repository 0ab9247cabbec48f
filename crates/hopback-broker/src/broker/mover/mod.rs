//! The mover: the AMQP engine that moves messages from one queue to a target without ever losing
//! one. It is a broker primitive (docs/architecture.md): it neither guards nor journals — the
//! operations that use it (`ops::replay` for replays, moves and drains, the rollback engine's
//! drain and dead-letter steps) do. It serves every "move" in hopback: replaying dead letters to
//! their origin queue, to another version or through the entry exchange; draining `NS.v2 → NS.v1`
//! during a rollback; replaying `NS.unrouted` through the entry exchange.
//!
//! The algorithm, per message:
//! 1. consume the source with manual ack and a bounded prefetch;
//! 2. publish to the target with `mandatory` on a publisher-confirm channel, keeping up to
//!    `confirm_window` confirms outstanding (pipelined: the next publish never waits for the
//!    previous confirm, and every confirm is awaited individually, in order);
//! 3. ack the source message only once *its* confirm is `Ack` without a `basic.return`, and check
//!    that the ack went out (`Acker::ack` → `Ok(true)`). A failed ack means the broker will
//!    redeliver a message that is already in the target: it is counted as a possible duplicate,
//!    never as lost.
//!
//! Messages that do not match the filter, have no known origin, were returned or nacked are held
//! unacked and go back to the source, in place, when the run ends (the channel closes). A dead
//! connection ends the current *epoch*: everything unacked returns to the source, the mover
//! reconnects with [`backoff_delay`] and continues, so a run — and a re-run after a crash — only
//! ever continues with what is left (resumable by construction).
//!
//! Loops: a replay adds 1 to `x-hopback-replays`; a message already replayed `max_replays` times
//! is not replayed again but parked in `park_queue` (classic, durable, declared when first needed)
//! unless the spec is forced.
//!
//! Unreadable messages (properties the parser could only read in part,
//! `broker::headers::UNREADABLE_HEADER`) are never republished: the mover settles what it
//! published, puts the message back and has the broker move it to `quarantine_queue`
//! ([`quarantine`]), then continues. One it meets again is left where it is and reported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Confirmation};
use serde::Serialize;
use tokio::sync::watch;

use crate::broker::browse::message_view;
use crate::broker::headers::{REPLAYS_HEADER, attribute, header_string, header_u64};
use crate::broker::session::{
    BrokerError, CALL_TIMEOUT, Session, backoff_delay, connect, short, timed,
};
use crate::config::Profile;
use crate::model::deadletter::Filter;
use crate::topology::Namespace;

mod epoch;
mod quarantine;

pub use quarantine::{QUARANTINE_SHOVEL_PREFIX, QuarantineOutcome, UnreadableMessage, body_sha256};

/// Default prefetch of the source consumer (tuned with `scripts/bench`: docs/performance.md §6).
/// Lowered for large messages by [`sized_prefetch`].
pub const DEFAULT_PREFETCH: u16 = 4000;
/// Default number of publisher confirms outstanding.
pub const DEFAULT_CONFIRM_WINDOW: usize = 2000;
/// Bytes of messages the source may send ahead of the mover (prefetch × average size): a queue
/// of large messages gets a smaller prefetch, so the mover's memory stays bounded.
pub const PREFETCH_BYTES: u64 = 64 * 1024 * 1024;
/// Default replay limit before a message is parked.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;
/// Header marking messages published by one run (its id): when a message carrying the current
/// run's id shows up in the source again, it died again (or was unroutable again) during this run,
/// so everything that was in the source at the start has been seen.
pub const RUN_HEADER: &str = "x-hopback-run";
/// Extra prefetch kept for held (non-matching / unroutable) messages, so a filter does not stall
/// the consumer after `prefetch` non-matching messages (see [`hold_allowance`]).
pub const HOLD_ALLOWANCE: u32 = 20_000;

/// The extra prefetch for held messages with a consumer prefetch of `prefetch`: at most five
/// times the prefetch, so a prefetch lowered for large messages lowers it too.
pub fn hold_allowance(prefetch: u16) -> u32 {
    HOLD_ALLOWANCE.min(u32::from(prefetch).saturating_mul(5))
}

/// The prefetch and confirm window for a source whose ready messages average `avg_bytes`: at
/// most [`PREFETCH_BYTES`] ahead, never more than asked, at least 1; the window at most half the
/// lowered prefetch (a window as large as the prefetch starves the pipeline). Unknown size: as
/// asked.
pub fn sized_prefetch(asked: u16, window: usize, avg_bytes: Option<u64>) -> (u16, usize) {
    let Some(avg) = avg_bytes.filter(|b| *b > 0) else {
        return (asked, window);
    };
    let fit = u16::try_from((PREFETCH_BYTES / avg).max(1)).unwrap_or(u16::MAX);
    if fit >= asked {
        return (asked, window);
    }
    (fit, window.min((usize::from(fit) / 2).max(1)))
}
/// How long after the last delivery a quiet consumer may still be receiving one the source
/// cannot have given to anyone else ([`Runner::delivery_in_transit`]).
const IN_TRANSIT_MAX: Duration = Duration::from_secs(60);
/// How long a confirm may take before the channel is presumed dead.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the window's one confirm timer looks at its oldest message.
const CONFIRM_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where moved messages go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    /// A queue, through the default exchange.
    Queue(String),
    /// An exchange (e.g. the entry exchange `NS`), with the message's own routing key.
    Exchange(String),
    /// Each message's origin queue: the first `x-death` queue.
    Origin,
}

impl Target {
    /// Human description.
    pub fn describe(&self) -> String {
        match self {
            Target::Queue(q) => format!("queue `{}`", crate::text::sanitize(q)),
            Target::Exchange(x) => format!("exchange `{}`", crate::text::sanitize(x)),
            Target::Origin => "each message's origin queue".into(),
        }
    }
}

/// When a run stops consuming on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// Only the messages that were in the source when the run started: published messages carry
    /// [`RUN_HEADER`] = the run's id, and the first one that comes back to the source (it died
    /// again, or was unroutable again) ends the run — so a run never replays a message twice.
    /// Also ends when the source stays empty for `idle_timeout`.
    InitialDepth,
    /// Until the source stays empty for `idle_timeout` (draining a version queue).
    UntilEmpty,
}

/// Everything a move needs. Build one with [`MoveSpec::replay`], [`MoveSpec::drain`] or
/// [`MoveSpec::replay_unrouted`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoveSpec {
    /// Namespace (resolves `origin=v2` filters; recorded in reports).
    pub namespace: String,
    /// The namespace's names: [`Target::Origin`] replays only to its version queues (an origin
    /// naming any other queue is parked). `None` (not a namespace replay): nothing goes "to
    /// origin".
    #[serde(skip)]
    pub origins: Option<Namespace>,
    /// Queue to take messages from.
    pub source_queue: String,
    /// Where they go.
    pub target: Target,
    /// Only messages matching this (empty = all).
    pub filter: Filter,
    /// Stop after this many messages moved or parked.
    pub limit: Option<u64>,
    /// Publish at most this many messages per second.
    pub rate_per_s: Option<f64>,
    /// Source consumer prefetch.
    pub prefetch: u16,
    /// Publisher confirms outstanding at most.
    pub confirm_window: usize,
    /// Replays allowed before parking (with `count_replay`).
    pub max_replays: u32,
    /// Where over-replayed messages go (`None`: they stay in the source).
    pub park_queue: Option<String>,
    /// Where the broker moves messages the client cannot read (`None`: they stay in the source).
    pub quarantine_queue: Option<String>,
    /// Is this a replay (increment `x-hopback-replays`, enforce `max_replays`)?
    pub count_replay: bool,
    /// Replay even over `max_replays`.
    pub force: bool,
    /// When to stop on its own.
    pub budget: Budget,
    /// Quiet time after which the source counts as drained.
    pub idle_timeout: Duration,
    /// Consecutive failed reconnects before giving up.
    pub max_reconnect_attempts: u32,
    /// Connection purpose, shown as `hopback PURPOSE (operator)`.
    pub connection_purpose: String,
    /// Publish on a second connection (`hopback PURPOSE publish (operator)`): consuming and
    /// publishing then run on separate broker processes and client I/O threads (faster, see the
    /// benchmark). Either connection dying ends the epoch.
    pub separate_publish_connection: bool,
}

impl MoveSpec {
    /// The quarantine queue of a move's specs (the first that names one).
    pub fn quarantine_queue_of(specs: &[MoveSpec]) -> Option<String> {
        specs.iter().find_map(|s| s.quarantine_queue.clone())
    }
    fn base(ns: &str, source: String, target: Target) -> Self {
        Self {
            namespace: ns.to_string(),
            origins: None,
            source_queue: source,
            target,
            filter: Filter::default(),
            limit: None,
            rate_per_s: None,
            prefetch: DEFAULT_PREFETCH,
            confirm_window: DEFAULT_CONFIRM_WINDOW,
            max_replays: DEFAULT_MAX_REPLAYS,
            park_queue: None,
            quarantine_queue: None,
            count_replay: false,
            force: false,
            budget: Budget::InitialDepth,
            idle_timeout: Duration::from_millis(1500),
            max_reconnect_attempts: 8,
            connection_purpose: "mover".into(),
            separate_publish_connection: true,
        }
    }
    /// Replay the namespace's DLQ to `target` (usually [`Target::Origin`]), counting replays and
    /// parking messages over `max_replays` in its parking queue.
    pub fn replay(ns: &Namespace, target: Target) -> Self {
        let mut s = Self::base(&ns.name, ns.dlq.clone(), target);
        s.origins = Some(ns.clone());
        s.count_replay = true;
        s.park_queue = Some(ns.parked.clone());
        s.quarantine_queue = Some(ns.quarantine_queue());
        s
    }
    /// Drain one queue into another (rollback: `NS.v2 → NS.v1`) until it stays empty.
    pub fn drain(ns: &Namespace, from_queue: &str, to_queue: &str) -> Self {
        let mut s = Self::base(
            &ns.name,
            from_queue.to_string(),
            Target::Queue(to_queue.to_string()),
        );
        s.budget = Budget::UntilEmpty;
        s.quarantine_queue = Some(ns.quarantine_queue());
        s
    }
    /// Replay the unrouted queue through the entry exchange. Anything still unroutable goes back
    /// to the unrouted queue through the alternate exchange; the initial-depth budget stops the
    /// loop.
    pub fn replay_unrouted(ns: &Namespace) -> Self {
        let mut s = Self::base(
            &ns.name,
            ns.unrouted.clone(),
            Target::Exchange(ns.entry.clone()),
        );
        s.quarantine_queue = Some(ns.quarantine_queue());
        s
    }
}

/// Running, paused or stopped (set through [`MoveControl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Moving.
    Running,
    /// Finishing outstanding confirms, then waiting.
    Paused,
    /// Finishing outstanding confirms, then ending.
    Stopped,
}

/// Counters of a run (cumulative over reconnects).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MoveCounts {
    /// Published, confirmed, and removed from the source.
    pub moved: u64,
    /// Published to the park queue, confirmed, and removed from the source.
    pub parked: u64,
    /// Left in the source: did not match the filter (counted once per sighting).
    pub skipped_by_filter: u64,
    /// Left in the source: no origin in `x-death`, or the origin queue does not exist.
    pub no_target: u64,
    /// Replays "to origin" whose origin names a queue that is not one of the namespace's version
    /// queues: parked (counted in `parked` too), never sent there.
    pub foreign_origin: u64,
    /// Left in the source: over `max_replays` with no park queue.
    pub refused_replays: u64,
    /// Left in the source: the broker returned them (unroutable) or nacked them.
    pub returned: u64,
    /// Possibly in the target *and* still in the source (in flight at a connection loss, or their
    /// source ack did not go out): the broker redelivers them, a re-run moves them again.
    pub possible_duplicates: u64,
    /// Reconnects after a lost connection.
    pub reconnects: u64,
    /// Unreadable messages the broker moved, whole, to the quarantine queue.
    pub quarantined: u64,
    /// Unreadable messages left in the source (the broker could not move them, or they came
    /// back): never republished.
    pub unreadable_left: u64,
}

impl MoveCounts {
    /// Add another run's counters (a replay of selected messages is several runs).
    pub fn add(&mut self, other: &MoveCounts) {
        self.moved += other.moved;
        self.parked += other.parked;
        self.skipped_by_filter += other.skipped_by_filter;
        self.no_target += other.no_target;
        self.foreign_origin += other.foreign_origin;
        self.refused_replays += other.refused_replays;
        self.returned += other.returned;
        self.possible_duplicates += other.possible_duplicates;
        self.reconnects += other.reconnects;
        self.quarantined += other.quarantined;
        self.unreadable_left += other.unreadable_left;
    }
}

/// A progress report (sent while running, at most ~10 times a second).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoveProgress {
    /// Counters so far.
    pub counts: MoveCounts,
    /// Messages to process, when known (initial depth, or the limit).
    pub total: Option<u64>,
    /// Moved + parked per second since the start.
    pub rate_per_s: f64,
    /// Estimated seconds left.
    pub eta_s: Option<f64>,
    /// Run state.
    pub state: RunState,
    /// Connected right now?
    pub connected: bool,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The source had nothing more to give (what remains, if anything, was held).
    Drained,
    /// The initial depth was processed.
    BudgetReached,
    /// `limit` messages were moved.
    LimitReached,
    /// Stopped through [`MoveControl::stop`].
    Stopped,
    /// A failure that retrying cannot fix (missing target, unroutable, no permission, reconnects
    /// exhausted). Nothing unconfirmed was acked.
    Failed(String),
}

/// The end result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoveReport {
    /// What was asked.
    pub spec: MoveSpec,
    /// Counters.
    pub counts: MoveCounts,
    /// Source depth when the run started.
    pub initial_depth: u64,
    /// Why it ended.
    pub stop: StopReason,
    /// Wall time.
    pub elapsed_s: f64,
    /// The messages it could not read, by position, and what became of each.
    pub unreadable: Vec<UnreadableMessage>,
}

impl MoveReport {
    /// Did the run fail?
    pub fn failed(&self) -> bool {
        matches!(self.stop, StopReason::Failed(_))
    }
    /// Moved + parked per second.
    pub fn rate_per_s(&self) -> f64 {
        (self.counts.moved + self.counts.parked) as f64 / self.elapsed_s.max(1e-9)
    }
}

/// Pause / resume / stop a running move, and watch its progress. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MoveControl {
    state: Arc<watch::Sender<RunState>>,
    progress: Arc<watch::Sender<Option<MoveProgress>>>,
}

impl Default for MoveControl {
    fn default() -> Self {
        Self::new()
    }
}

impl MoveControl {
    /// A control in `Running` state.
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::channel(RunState::Running).0),
            progress: Arc::new(watch::channel(None).0),
        }
    }
    /// Finish outstanding confirms, then wait.
    pub fn pause(&self) {
        self.state.send_if_modified(|s| {
            let change = *s == RunState::Running;
            if change {
                *s = RunState::Paused;
            }
            change
        });
    }
    /// Continue after a pause.
    pub fn resume(&self) {
        self.state.send_if_modified(|s| {
            let change = *s == RunState::Paused;
            if change {
                *s = RunState::Running;
            }
            change
        });
    }
    /// Finish outstanding confirms, then end the run (what is left stays in the source).
    pub fn stop(&self) {
        self.state.send_replace(RunState::Stopped);
    }
    /// The current state.
    pub fn state(&self) -> RunState {
        *self.state.borrow()
    }
    /// Progress updates (`None` until the run started).
    pub fn subscribe(&self) -> watch::Receiver<Option<MoveProgress>> {
        self.progress.subscribe()
    }
    /// Publish a progress update (the broker engine, `broker::shovel`, reports through the same
    /// control as the mover, so callers watch one thing).
    pub fn report(&self, p: MoveProgress) {
        self.progress.send_replace(Some(p));
    }
}

/// What is in the confirm window: a published message waiting for its confirm.
struct InFlight {
    acker: Acker,
    tag: u64,
    parked: bool,
    origin: Option<String>,
}

/// Outcome of one connection's worth of moving.
enum EpochEnd {
    Finished(StopReason),
    /// The connection or a channel died: reconnect and continue.
    Lost(BrokerError),
}

struct Runner<'a> {
    spec: &'a MoveSpec,
    profile: &'a Profile,
    /// The management API (for the quarantine's shovels), made when first needed.
    mgmt: Option<crate::broker::mgmt::Mgmt>,
    /// Unreadable messages met, by body digest: was the last one quarantined?
    unreadable_seen: HashMap<String, bool>,
    /// What the report says of them.
    unreadable: Vec<UnreadableMessage>,
    /// The epoch ended for a quarantine: start the next one.
    again: bool,
    control: &'a MoveControl,
    counts: MoveCounts,
    initial_depth: u64,
    started: Instant,
    published: u64,
    last_progress: Instant,
    /// Origin queue → exists (and routes).
    origin_ok: HashMap<String, bool>,
    park_declared: bool,
    /// This run's id (the [`RUN_HEADER`] value).
    run_id: String,
    /// A message of this run came back: stop consuming.
    budget_hit: bool,
    /// Made progress in the current epoch (resets the reconnect attempt counter).
    progressed: bool,
    /// Deliveries received over the whole run (all epochs, redeliveries included).
    received: u64,
    /// When the last delivery arrived (the idle check's reference).
    last_delivery: Instant,
}

/// Run a move to the end on its own connection (reconnecting as needed).
pub async fn run(
    profile: &Profile,
    operator: &str,
    spec: &MoveSpec,
    control: &MoveControl,
) -> MoveReport {
    let started = Instant::now();
    let mut runner = Runner {
        spec,
        profile,
        mgmt: None,
        unreadable_seen: HashMap::new(),
        unreadable: Vec::new(),
        again: false,
        control,
        counts: MoveCounts::default(),
        initial_depth: 0,
        started,
        published: 0,
        last_progress: started,
        origin_ok: HashMap::new(),
        park_declared: false,
        run_id: uuid::Uuid::new_v4().to_string(),
        received: 0,
        last_delivery: started,
        budget_hit: false,
        progressed: false,
    };
    let stop = runner.run_all(profile, operator).await;
    runner.send_progress(false, true);
    MoveReport {
        spec: spec.clone(),
        counts: runner.counts,
        initial_depth: runner.initial_depth,
        stop,
        elapsed_s: started.elapsed().as_secs_f64(),
        unreadable: runner.unreadable,
    }
}

/// Start a move in a background task; control and watch it through the returned [`MoveControl`].
pub fn spawn(
    profile: Profile,
    operator: String,
    spec: MoveSpec,
) -> (MoveControl, tokio::task::JoinHandle<MoveReport>) {
    let control = MoveControl::new();
    let c = control.clone();
    let handle = tokio::spawn(async move { run(&profile, &operator, &spec, &c).await });
    (control, handle)
}

/// Errors that stop a move instead of reconnecting. A refused login is not among them once the
/// run has connected: credentials that worked a moment ago are not suddenly wrong, and a socket
/// reset while the broker boots reads like a refused login (`classify_connect`); reconnects stay
/// bounded by `max_reconnect_attempts`. (The first connection fails fast on a wrong password.)
fn fatal(e: &BrokerError) -> bool {
    matches!(
        e,
        BrokerError::NotFound(_)
            | BrokerError::AccessRefused(_)
            | BrokerError::VhostDenied { .. }
            | BrokerError::Precondition(_)
            // A memory/disk alarm: reconnecting cannot help (a new connection is blocked on its
            // first publish); stop with the alarm named, unconfirmed messages stay in the source.
            | BrokerError::Blocked { .. }
    )
}

/// The properties with `x-hopback-replays` set to `n` (everything else kept as it was).
pub fn with_replays(props: BasicProperties, n: u64) -> BasicProperties {
    with_header(
        props,
        REPLAYS_HEADER,
        AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
    )
}

/// The properties with one header set (everything else kept as it was).
pub fn with_header(props: BasicProperties, key: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(ShortString::from(key), value);
    props.with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_shrinks_for_large_messages_only() {
        let asked = (DEFAULT_PREFETCH, DEFAULT_CONFIRM_WINDOW);
        // 1 KiB messages, or a size nobody knows: as asked.
        assert_eq!(sized_prefetch(asked.0, asked.1, Some(1024)), asked);
        assert_eq!(sized_prefetch(asked.0, asked.1, None), asked);
        assert_eq!(sized_prefetch(asked.0, asked.1, Some(0)), asked);
        // 1 MiB on average: 64 ahead, window 32.
        assert_eq!(sized_prefetch(asked.0, asked.1, Some(1 << 20)), (64, 32));
        // One 128 MiB message: one at a time.
        assert_eq!(sized_prefetch(asked.0, asked.1, Some(128 << 20)), (1, 1));
        // Never more than asked.
        assert_eq!(sized_prefetch(10, 5, Some(1 << 20)), (10, 5));
        assert_eq!(hold_allowance(DEFAULT_PREFETCH), HOLD_ALLOWANCE);
        assert_eq!(hold_allowance(64), 320);
        assert_eq!(hold_allowance(1), 5);
    }

    #[test]
    fn replays_header_is_set_and_the_rest_kept() {
        let p = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_delivery_mode(2);
        let q = with_replays(p, 2);
        assert_eq!(q.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(*q.delivery_mode(), Some(2));
        assert_eq!(header_u64(q.headers().as_ref(), REPLAYS_HEADER), Some(2));
        let r = with_replays(q, 3);
        assert_eq!(header_u64(r.headers().as_ref(), REPLAYS_HEADER), Some(3));
    }

    #[test]
    fn control_transitions() {
        let c = MoveControl::new();
        c.pause();
        assert_eq!(c.state(), RunState::Paused);
        c.resume();
        assert_eq!(c.state(), RunState::Running);
        c.stop();
        c.resume();
        assert_eq!(c.state(), RunState::Stopped);
    }

    #[test]
    fn spec_constructors() {
        let r = MoveSpec::replay(&Namespace::convention("e"), Target::Origin);
        assert_eq!(r.source_queue, "e.dlq");
        assert_eq!(r.park_queue.as_deref(), Some("e.parked"));
        assert!(r.count_replay);
        let d = MoveSpec::drain(&Namespace::convention("e"), "e.v2", "e.v1");
        assert_eq!(d.budget, Budget::UntilEmpty);
        assert!(!d.count_replay);
        let u = MoveSpec::replay_unrouted(&Namespace::convention("e"));
        assert_eq!(u.target, Target::Exchange("e".into()));
        assert_eq!(u.source_queue, "e.unrouted");
    }
}
