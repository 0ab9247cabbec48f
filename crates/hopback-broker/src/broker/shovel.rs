//! The broker engine of a move (docs/architecture.md, "The path of one replay"): a dynamic
//! shovel that hopback declares, watches and removes. RabbitMQ moves the messages inside the
//! broker — ~2.5× any AMQP client on 4.x — with the same guarantees as the client mover:
//! `ack-mode=on-confirm` (a source message is acked only after the destination confirmed it),
//! exactly `count` messages (`src-delete-after`, the count taken at the start, so dead letters
//! arriving meanwhile stay), and every hop countable by the replay-loop guard
//! (`broker::headers::replays_of`): where the broker counts a republished message's deaths in
//! `x-death` (RabbitMQ 3.x but 3.13.0–3.13.2, [`broker_counts_republished_deaths`]) the death
//! count is the hop count; elsewhere (4.x) the shovel adds one `x-shovelled` entry per hop
//! (`dest-add-forward-headers`, which costs ~10% on 4.0.5 and ~20% on 3.10.8 — docs/performance.md
//! §6 — hence only where needed).
//!
//! "To origin" is routed inside the broker by the namespace's origin router
//! ([`declare_origin_router`]): a headers exchange binding each version queue on
//! `x-first-death-queue`, whose alternate exchange sends every other origin to the parking queue.
//!
//! Every URI names the profile's vhost ([`vhost_uri`]): a bare `amqp://` is the default vhost,
//! whatever vhost the shovel is declared in. A move to a queue publishes through the move's own
//! fanout exchange (`broker::republish::declare_move_exchange`), so a dead letter's `CC`/`BCC`
//! headers route nowhere else.
//!
//! Like the mover, this is a primitive: it neither guards nor journals (`ops::replay` does).
//! Progress is read from the source's depth; cancel, the move's deadline and every failure remove
//! the shovel (whatever it had not confirmed goes back to the source) and the exchange it
//! declared. A shovel's name carries its move's id, start and deadline, and the watcher holds a
//! connection named after the move for as long as it watches ([`owner_connection_prefix`]): a
//! shovel that outlives its hopback (killed process) is found by the next hopback that looks
//! ([`stale_moves`]; `ops::stale_moves` removes and journals it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::broker::mgmt::{Mgmt, MgmtError};
use crate::broker::mover::{MoveControl, MoveCounts, MoveProgress, RunState, StopReason};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, timed};
use crate::config::Profile;
use crate::topology::{MoveShovelName, Namespace};
use std::sync::Arc;

/// How often the watcher reads the source depth (AMQP, cheap).
const POLL: Duration = Duration::from_millis(50);
/// How often it asks the management API whether the shovel still exists, away from the end.
const MGMT_EVERY: Duration = Duration::from_secs(1);
/// How long a shovel may outlive its whole count having left the source (a restarted shovel
/// counts afresh) before the watcher removes it.
const RESTARTED_GRACE: Duration = Duration::from_secs(5);
/// How often it reads the shovel's state (to notice one that keeps failing).
const STATUS_EVERY: Duration = Duration::from_secs(3);
/// How long the management API may stay unreachable before the watcher gives up (the shovel
/// keeps going and removes itself when done; nothing is lost).
const BLIND_MAX: Duration = Duration::from_secs(90);
/// How long a shovel may read as absent while the source still holds more than its count
/// allows before the watcher believes it: a cluster node going down has been seen to answer 404
/// for a shovel that the cluster then started again on another node (4.0.5, tests/cluster.rs).
const ABSENT_GRACE: Duration = Duration::from_secs(5);
/// How long a shovel may stay `terminated` (the broker restarts it every few seconds) before the
/// watcher removes it and reports why.
const TERMINATED_MAX: Duration = Duration::from_secs(30);

/// How old a move must be before [`stale_moves`] believes its owner gone when no connection
/// carries its id: the management API lists a new connection only after its next statistics
/// round (5 s by default).
const OWNER_GRACE: Duration = Duration::from_secs(15);
/// How long apart the owner is looked for twice before it is believed gone (a watcher whose
/// connection dropped reconnects within a second or two).
const OWNER_RECHECK: Duration = Duration::from_secs(3);

/// Where the shovel publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShovelDest {
    /// A queue, through `via` — the move's own fanout exchange (`Namespace::move_exchange`),
    /// bound to that queue alone, so sender-selected routing (`CC`/`BCC`) finds nothing else.
    Queue {
        /// The target queue.
        queue: String,
        /// The move's fanout exchange.
        via: String,
    },
    /// An exchange, each message keeping its own routing key (the origin router, or an entry
    /// exchange whose type ignores routing keys: `broker::republish`).
    Exchange {
        /// The exchange.
        name: String,
    },
}

/// One broker-engine move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShovelMove {
    /// Shovel name (`Namespace::move_shovel`, set by [`ShovelMove::started`]): one broker move
    /// per namespace at a time.
    pub name: String,
    /// The move's id (in the shovel's name, its exchange's name and its owner's connection).
    pub move_id: String,
    /// The vhost it moves in (the profile's): both URIs name it.
    pub vhost: String,
    /// Queue to take messages from.
    pub source_queue: String,
    /// Where they go.
    pub dest: ShovelDest,
    /// Exactly this many (`src-delete-after`).
    pub count: u64,
    /// Source prefetch.
    pub prefetch: u16,
    /// A queue whose growth counts as "parked" in the report (the origin router's fallback).
    pub park_queue: Option<String>,
    /// Add an `x-shovelled` entry per hop (`dest-add-forward-headers`): needed where the broker
    /// does not count a republished message's deaths ([`broker_counts_republished_deaths`]).
    pub forward_headers: bool,
    /// The longest the move may take ([`default_time_limit`] unless asked otherwise): past it the
    /// watcher removes the shovel, and any hopback that finds it later removes it too.
    pub time_limit_s: u64,
    /// When it must be over (Unix seconds; 0 until [`ShovelMove::started`]).
    pub deadline_unix: u64,
}

/// The time limit of a move of `count` messages when none is asked for: five minutes plus
/// 5 ms a message (200 msg/s, far below what a shovel does here: docs/performance.md).
pub fn default_time_limit(count: u64) -> Duration {
    Duration::from_secs(300 + count / 200)
}

/// A fresh move id: 12 hex digits.
pub fn new_move_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// `amqp:///VHOST`, the vhost percent-encoded: a dynamic shovel's `amqp://` alone connects to the
/// default vhost `/`, not to the vhost it is declared in.
pub fn vhost_uri(vhost: &str) -> String {
    format!("amqp:///{}", utf8_percent_encode(vhost, NON_ALPHANUMERIC))
}

/// What the connection names of the hopback watching move `move_id` start with.
pub fn owner_connection_prefix(move_id: &str) -> String {
    format!("hopback {} ", owner_purpose(move_id))
}

fn owner_purpose(move_id: &str) -> String {
    format!("move {move_id}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Does this RabbitMQ version count the deaths of a message that a client (or a shovel)
/// republished with its `x-death` — so a message replayed k times and dead-lettered again
/// carries k+1 deaths? Measured here: 3.10.8 yes, 4.0.5 no (client `x-death` is not
/// interpreted since message containers). 3.13.0–3.13.2 did not either; 3.13.3 restored it for
/// 3.13 only (rabbitmq-server#11339). Unknown versions answer `false`, so the caller keeps the
/// forward headers: slower, never blind.
pub fn broker_counts_republished_deaths(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return false;
    };
    let patch = parts.next().flatten().unwrap_or(0);
    match (major, minor) {
        (3, 13) => patch >= 3,
        (3, _) => true,
        _ => false,
    }
}

impl ShovelMove {
    /// The move stamped at its start (`now_unix`): its deadline, and the shovel's name that
    /// carries both ([`Namespace::move_shovel`]).
    pub fn started(mut self, ns: &Namespace, now_unix: u64) -> Self {
        self.deadline_unix = now_unix.saturating_add(self.time_limit_s);
        self.name = ns.move_shovel(&self.move_id, now_unix, self.deadline_unix);
        self
    }

    /// The shovel's definition (`PUT /api/parameters/shovel/{vhost}/{name}`).
    pub fn definition(&self) -> serde_json::Value {
        let uri = vhost_uri(&self.vhost);
        let mut v = serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": uri,
            "src-queue": self.source_queue,
            "src-prefetch-count": self.prefetch.max(1),
            "src-delete-after": self.count,
            "dest-protocol": "amqp091",
            "dest-uri": uri,
            "ack-mode": "on-confirm",
        });
        if self.forward_headers {
            v["dest-add-forward-headers"] = serde_json::json!(true);
        }
        match &self.dest {
            ShovelDest::Queue { via, .. } => v["dest-exchange"] = serde_json::json!(via),
            ShovelDest::Exchange { name } => v["dest-exchange"] = serde_json::json!(name),
        }
        v
    }
}

/// What a broker-engine move did.
#[derive(Debug, Clone, Serialize)]
pub struct ShovelOutcome {
    /// Moved (and, through the origin router's fallback, parked).
    pub counts: MoveCounts,
    /// Why it ended.
    pub stop: StopReason,
    /// `true` when the counts are the shovel's own (it finished its count); `false` when they
    /// are read from queue depths (cancelled or failed: dead letters arriving meanwhile blur
    /// them).
    pub exact: bool,
}

/// Can a dynamic shovel be declared here? `Err` says why not (plugin off, API unreachable).
pub async fn check_available(mgmt: &Mgmt) -> Result<(), String> {
    match mgmt.shovel_plugin_enabled().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(
            "the shovel plugin is not enabled on every node (rabbitmq-plugins enable rabbitmq_shovel rabbitmq_shovel_management)"
                .into(),
        ),
        Err(e) => Err(format!("cannot tell whether the shovel plugin is on: {e}")),
    }
}

/// Declare (idempotently) the namespace's origin router: headers exchange
/// [`Namespace::origin_router`] binding each of `version_queues` on `x-first-death-queue`
/// (`x-match=all-with-x`), alternate exchange [`Namespace::origin_fallback`] (fanout) bound to the
/// parking queue (declared durable when missing), so a dead letter whose origin is anything else
/// is parked, never lost and never sent to a foreign queue. A headers exchange ignores routing
/// keys, so a dead letter's `CC`/`BCC` headers add no destination here (a direct router keyed on
/// the version queues' names, which an earlier hopback used on 4.x, would copy a dead letter into
/// every version queue its `CC` names: [`Namespace::origin_keyed_router`] is no longer declared).
pub async fn declare_origin_router(
    session: &Session,
    ns: &Namespace,
    version_queues: &BTreeMap<String, String>,
) -> Result<(), BrokerError> {
    let (router, fallback, park_queue) =
        (ns.origin_router(), ns.origin_fallback(), ns.parked.as_str());
    let (router, fallback) = (router.as_str(), fallback.as_str());
    let ch = session.channel().await?;
    let pw = session.password().to_string();
    // A durable exchange, with an alternate exchange when one is named.
    let declare = |name: &str, kind, alternate: Option<&str>| {
        let mut args = FieldTable::default();
        if let Some(ae) = alternate {
            args.insert(
                ShortString::from("alternate-exchange"),
                AMQPValue::LongString(LongString::from(ae)),
            );
        }
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        timed(
            "exchange.declare (origin router)",
            CALL_TIMEOUT,
            &pw,
            ch.exchange_declare(name.into(), kind, opts, args),
        )
    };
    declare(fallback, lapin::ExchangeKind::Fanout, None).await?;
    declare(router, lapin::ExchangeKind::Headers, Some(fallback)).await?;
    if session.passive_queue(park_queue).await?.is_none() {
        crate::broker::amqp::declare_queue(
            session,
            "queue.declare (park queue)",
            park_queue,
            true,
            FieldTable::default(),
        )
        .await?;
    }
    timed(
        "queue.bind (origin fallback)",
        CALL_TIMEOUT,
        &pw,
        ch.queue_bind(
            park_queue.into(),
            fallback.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    for q in version_queues.values() {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-match"),
            // `all` ignores `x-` headers; `all-with-x` (RabbitMQ 3.10+) matches them too.
            AMQPValue::LongString(LongString::from("all-with-x")),
        );
        args.insert(
            ShortString::from("x-first-death-queue"),
            AMQPValue::LongString(LongString::from(q.as_str())),
        );
        timed(
            "queue.bind (origin router)",
            CALL_TIMEOUT,
            &pw,
            ch.queue_bind(
                q.as_str().into(),
                router.into(),
                "".into(),
                QueueBindOptions::default(),
                args,
            ),
        )
        .await?;
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    Ok(())
}

async fn depth(session: &Session, q: &str) -> Option<u64> {
    session
        .passive_queue(q)
        .await
        .ok()
        .flatten()
        .map(|c| u64::from(c.ready))
}

/// The watcher's AMQP connection, named after the move (its owner mark,
/// [`owner_connection_prefix`]), open for as long as it watches; when it dies (a broker restart)
/// a fresh one to any node of the profile, tried at most once a second.
struct Watch<'a> {
    profile: &'a Profile,
    operator: &'a str,
    move_id: &'a str,
    session: Arc<Session>,
    dead_since: Option<Instant>,
    last_try: Option<Instant>,
}

impl Watch<'_> {
    async fn depth(&mut self, q: &str) -> Option<u64> {
        if self.dead_since.is_none() {
            match self.session.passive_queue(q).await {
                Ok(c) => return c.map(|c| u64::from(c.ready)),
                Err(_) => self.dead_since = Some(Instant::now()),
            }
        }
        if self
            .last_try
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        self.last_try = Some(Instant::now());
        let fresh = crate::broker::session::connect(
            self.profile,
            &owner_purpose(self.move_id),
            self.operator,
        )
        .await
        .ok()?;
        self.session = fresh;
        self.dead_since = None;
        self.session
            .passive_queue(q)
            .await
            .ok()
            .flatten()
            .map(|c| u64::from(c.ready))
    }
}

async fn consumers(session: &Session, q: &str) -> Option<u32> {
    session
        .passive_queue(q)
        .await
        .ok()
        .flatten()
        .map(|c| c.consumers)
}

/// The broker-engine shovels of the vhost that move out of `entry`'s namespace (any move).
async fn moves_of(mgmt: &Mgmt, entry: &str) -> Result<Vec<String>, MgmtError> {
    Ok(mgmt
        .shovel_parameters()
        .await?
        .into_iter()
        .filter(|p| MoveShovelName::parse(&p.name).is_some_and(|n| n.entry == entry))
        .map(|p| p.name)
        .collect())
}

/// The names of the broker-engine shovels declared for moves out of `ns` (its running move, or
/// ones left behind).
pub async fn move_shovels_of(mgmt: &Mgmt, ns: &Namespace) -> Result<Vec<String>, MgmtError> {
    moves_of(mgmt, &ns.entry).await
}

/// Declare the shovel, watch it until it has moved its count (it then removes itself), was
/// stopped through `control`, ran past its deadline or failed — the last three remove it (what
/// it had not confirmed returns to the source). Whatever the end, the move's own exchange goes
/// once the shovel is gone. Progress goes to `control` (`MoveControl::report`). `m` must be
/// [`ShovelMove::started`].
pub async fn run(
    session: &Arc<Session>,
    profile: &Profile,
    operator: &str,
    mgmt: &Mgmt,
    m: &ShovelMove,
    control: &MoveControl,
) -> ShovelOutcome {
    let started = Instant::now();
    let fail = |why: String| ShovelOutcome {
        counts: MoveCounts::default(),
        stop: StopReason::Failed(why),
        exact: false,
    };
    let Some(entry) = MoveShovelName::parse(&m.name)
        .filter(|n| n.stamp.is_some())
        .map(|n| n.entry)
    else {
        return fail(format!(
            "`{}` is not a started move's shovel name",
            crate::text::sanitize(&m.name)
        ));
    };
    match moves_of(mgmt, &entry).await {
        Ok(running) if running.is_empty() => {}
        Ok(running) => {
            return fail(format!(
                "a broker-engine move of this namespace is already running (shovel `{}`)",
                crate::text::sanitize(&running.join("`, `"))
            ));
        }
        Err(e) => return fail(format!("cannot read the shovels: {e}")),
    }
    let time_left = |now: u64| Duration::from_secs(m.deadline_unix.saturating_sub(now));
    if time_left(unix_now()).is_zero() {
        return fail(format!(
            "the move's deadline passed before it started (time limit {} s)",
            m.time_limit_s
        ));
    }
    let deadline = Instant::now() + time_left(unix_now());
    // The owner mark: a connection named after the move, open until the shovel and its exchange
    // are gone. Opened first, so no hopback ever sees this move's shovel without it.
    let owner = match crate::broker::session::connect(profile, &owner_purpose(&m.move_id), operator)
        .await
    {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot open the move's own connection: {e}")),
    };
    let outcome = watch(
        session, &owner, profile, operator, mgmt, m, control, deadline, started,
    )
    .await;
    owner.close().await;
    outcome
}

/// [`run`] once the owner connection is open.
#[allow(clippy::too_many_arguments)]
async fn watch(
    session: &Arc<Session>,
    owner: &Arc<Session>,
    profile: &Profile,
    operator: &str,
    mgmt: &Mgmt,
    m: &ShovelMove,
    control: &MoveControl,
    deadline: Instant,
    started: Instant,
) -> ShovelOutcome {
    let fail = |why: String| ShovelOutcome {
        counts: MoveCounts::default(),
        stop: StopReason::Failed(why),
        exact: false,
    };
    let start_depth = depth(session, &m.source_queue).await.unwrap_or(m.count);
    let consumers_before = consumers(session, &m.source_queue).await.unwrap_or(0);
    let park_before = match &m.park_queue {
        Some(p) => depth(session, p).await,
        None => None,
    };
    let via = match &m.dest {
        ShovelDest::Queue { queue, via } => {
            if let Err(e) = crate::broker::republish::declare_move_exchange(owner, via, queue).await
            {
                let _ = crate::broker::republish::delete_move_exchange(owner, via).await;
                return fail(format!("cannot declare the move's exchange: {e}"));
            }
            Some(via.as_str())
        }
        ShovelDest::Exchange { .. } => None,
    };
    // Removes the move's exchange; only once the shovel is gone (it publishes through it).
    let drop_exchange = || async {
        if let Some(x) = via {
            let _ = crate::broker::republish::delete_move_exchange(owner, x).await;
        }
    };
    if let Err(e) = mgmt.put_shovel(&m.name, m.definition()).await {
        // A timeout may have declared it all the same.
        let _ = remove(mgmt, &m.name).await;
        drop_exchange().await;
        return fail(format!("the broker refused the shovel: {e}"));
    }
    let estimate = |now_depth: Option<u64>| -> u64 {
        now_depth.map_or(0, |d| start_depth.saturating_sub(d).min(m.count))
    };
    let report = |done: u64, connected: bool| {
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        control.report(MoveProgress {
            counts: MoveCounts {
                moved: done,
                ..MoveCounts::default()
            },
            total: Some(m.count),
            rate_per_s: rate,
            eta_s: (rate > 0.0).then(|| m.count.saturating_sub(done) as f64 / rate),
            state: RunState::Running,
            connected,
        });
    };
    let mut last_mgmt = Instant::now();
    let mut last_status = Instant::now();
    let mut watch = Watch {
        profile,
        operator,
        move_id: &m.move_id,
        session: owner.clone(),
        dead_since: None,
        last_try: None,
    };
    let mut blind_since: Option<Instant> = None;
    let mut counted_since: Option<Instant> = None;
    let mut terminated_since: Option<Instant> = None;
    let mut absent_since: Option<Instant> = None;
    let mut last_depth = Some(start_depth);
    // Whether the shovel may still exist when the loop ends (then its exchange stays too).
    let mut may_live = false;
    let (stop, exact) = loop {
        let stopped = control.state() == RunState::Stopped;
        if stopped || Instant::now() >= deadline {
            let gone = remove(mgmt, &m.name).await.is_ok();
            may_live = !gone;
            // The parameter goes first; the shovel's consumer (and what it holds unacked) a
            // moment later: count only once everything it held is back in the source.
            let settle = Instant::now() + Duration::from_secs(15);
            while Instant::now() < settle
                && consumers(&watch.session, &m.source_queue)
                    .await
                    .is_none_or(|c| c > consumers_before)
            {
                tokio::time::sleep(POLL).await;
            }
            if stopped {
                break (StopReason::Stopped, false);
            }
            break (
                StopReason::Failed(format!(
                    "the move did not finish within its time limit ({} s): shovel `{}` {}; what it had not confirmed went back to the source — re-run to move the rest",
                    m.time_limit_s,
                    crate::text::sanitize(&m.name),
                    if gone {
                        "was removed"
                    } else {
                        "could not be removed (`hopback check` removes it once the management API answers)"
                    }
                )),
                false,
            );
        }
        if let Some(d) = watch.depth(&m.source_queue).await {
            last_depth = Some(d);
        }
        let done = estimate(last_depth);
        // The management API is the expensive part (and competes with the shovel for the
        // broker's CPU): ask it often only near the end, where the shovel removing itself is
        // what ends the move; otherwise once a second, and the status every few seconds.
        let near_end = done + u64::from(m.prefetch) >= m.count;
        let ask_mgmt = near_end || last_mgmt.elapsed() >= MGMT_EVERY;
        if !ask_mgmt {
            report(done, blind_since.is_none());
            tokio::time::sleep(POLL).await;
            continue;
        }
        last_mgmt = Instant::now();
        match mgmt.shovel_exists(&m.name).await {
            // Gone with its count out of the source (up to its prefetch may be requeued after
            // it forwarded them, rabbitmq-server#14636): it removed itself — done.
            Ok(false) if near_end => break (StopReason::BudgetReached, true),
            Ok(false) => {
                // Gone while the source still holds more than the count allows: a node that
                // is going down may say so of a shovel that lives on elsewhere — believe it only
                // after a while (then someone removed it: the move stopped part-way).
                if outlasted(&mut absent_since, ABSENT_GRACE) {
                    break (
                        StopReason::Failed(format!(
                            "shovel `{}` was removed by someone else before it moved its count; what it had not confirmed went back to the source",
                            crate::text::sanitize(&m.name)
                        )),
                        false,
                    );
                }
            }
            Ok(true) if done >= m.count => {
                // The source gave up its whole count and the shovel is still there: something
                // else consumed from the source too, or a broker restart restarted the shovel
                // with a fresh count — either way it would wait for (and move) the next dead
                // letters. Its part is done: remove it.
                if outlasted(&mut counted_since, RESTARTED_GRACE) {
                    may_live = remove(mgmt, &m.name).await.is_err();
                    break (StopReason::BudgetReached, false);
                }
                blind_since = None;
            }
            Ok(true) => {
                blind_since = None;
                absent_since = None;
            }
            Err(e) => {
                if outlasted(&mut blind_since, BLIND_MAX) {
                    may_live = true;
                    break (
                        StopReason::Failed(format!(
                            "lost sight of shovel `{}` ({e}); it keeps moving its count inside the broker and normally removes itself when done — nothing is lost. The next hopback command that can reach the management API (`hopback check`) removes it if it is still there",
                            crate::text::sanitize(&m.name)
                        )),
                        false,
                    );
                }
            }
        }
        let status = if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            mgmt.shovel_status(&m.name).await
        } else {
            Ok(None)
        };
        if let Ok(Some(st)) = status {
            if st.state == "terminated" {
                if outlasted(&mut terminated_since, TERMINATED_MAX) {
                    may_live = remove(mgmt, &m.name).await.is_err();
                    let why = st
                        .reason
                        .map(|r| crate::text::sanitize(&r.to_string()).into_owned())
                        .unwrap_or_else(|| "no reason given".into());
                    break (
                        StopReason::Failed(format!("the shovel kept failing: {why}")),
                        false,
                    );
                }
            } else {
                terminated_since = None;
            }
        }
        report(done, blind_since.is_none());
        tokio::time::sleep(POLL).await;
    };
    if stop == StopReason::BudgetReached && exact {
        // One more look, in case the "gone" came from a node on its way down and the cluster
        // restarted the shovel elsewhere with a fresh count: its part is done, so it must not
        // outlive this move (it would take the next dead letters).
        if let Ok(true) = mgmt.shovel_exists(&m.name).await {
            may_live = remove(mgmt, &m.name).await.is_err();
        }
    }
    if !may_live {
        drop_exchange().await;
    }
    let after = watch.depth(&m.source_queue).await;
    let session = watch.session.clone();
    let session = &session;
    // RabbitMQ's shovel may remove itself before its last acks reach the source
    // (rabbitmq-server#14636): those messages are requeued although they were forwarded. More
    // in the source than the start minus the count means up to that many may be in both places
    // (or arrived meanwhile — it is a bound, never a loss).
    let leftover = if exact {
        after.map_or(0, |a| a.saturating_sub(start_depth.saturating_sub(m.count)))
    } else {
        0
    };
    let total = if exact {
        m.count
    } else {
        estimate(after.or(last_depth))
    };
    let parked = match (&m.park_queue, park_before) {
        (Some(p), Some(before)) => depth(session, p)
            .await
            .map_or(0, |after| after.saturating_sub(before).min(total)),
        _ => 0,
    };
    let counts = MoveCounts {
        moved: total - parked,
        parked,
        foreign_origin: parked,
        // Removing a running shovel requeues what it had taken and not yet acked, some of
        // which it had already published: at most its prefetch may now be in both places.
        possible_duplicates: if exact {
            leftover.min(u64::from(m.prefetch)).min(m.count)
        } else {
            u64::from(m.prefetch).min(m.count)
        },
        ..MoveCounts::default()
    };
    control.report(MoveProgress {
        counts: counts.clone(),
        total: Some(m.count),
        rate_per_s: total as f64 / started.elapsed().as_secs_f64().max(1e-3),
        eta_s: None,
        state: control.state(),
        connected: true,
    });
    ShovelOutcome {
        counts,
        stop,
        exact,
    }
}

/// Has the condition timed by `since` (started now if it was not) lasted longer than `limit`?
fn outlasted(since: &mut Option<Instant>, limit: Duration) -> bool {
    since.get_or_insert_with(Instant::now).elapsed() > limit
}

/// Remove the shovel and wait (≤ 10 s) until the broker confirms it is gone (`Err` when it
/// does not). A 5xx answer is not the end of it: RabbitMQ 3.10.8 deletes the parameter, then
/// fails to stop a worker it no longer has (`rabbit_shovel_dyn_worker_sup_sup:stop_child`,
/// `{badmatch,{error,not_found}}`) and answers 500 — what counts is whether the shovel is gone.
pub async fn remove(mgmt: &Mgmt, name: &str) -> Result<(), MgmtError> {
    match mgmt.delete_shovel(name).await {
        Ok(()) | Err(MgmtError::NotFound(_)) => {}
        Err(MgmtError::Status { status, .. }) if status >= 500 => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match mgmt.shovel_exists(name).await {
            Ok(false) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ if Instant::now() >= deadline => {
                return Err(MgmtError::Timeout {
                    path: format!("removing shovel `{}`", crate::text::sanitize(name)),
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// A broker-engine shovel found in the vhost, and whether its move is still watched.
#[derive(Debug, Clone)]
pub struct FoundMove {
    /// The shovel's name.
    pub name: String,
    /// Its name read back (namespace entry, move id, start, deadline).
    pub parsed: MoveShovelName,
    /// Its definition (`src-queue`, `src-delete-after`, `dest-exchange`, …).
    pub definition: serde_json::Value,
    /// Is its move still watched by a hopback?
    pub verdict: Verdict,
}

/// Whether a broker-engine shovel's move is still watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A hopback watches it (the reason says how that is known).
    Live(String),
    /// Its hopback is gone, or its deadline passed: it would take the next dead letters with no
    /// ledger record of them. Remove it (`ops::stale_moves`).
    Stale(String),
    /// Cannot tell (named by an earlier hopback, or the management API does not list
    /// connections): shown, never removed on a guess.
    Unknown(String),
}

/// The broker-engine shovels of the vhost (only those moving out of the namespace whose entry
/// exchange is `entry`, when given), each with its [`Verdict`]: past its deadline → stale;
/// younger than a statistics round → live; otherwise live while a connection of the vhost
/// carries its move id ([`owner_connection_prefix`]), stale when none does on two looks a few
/// seconds apart. A hopback that lost its connection reconnects within that time; one that was
/// killed does not.
pub async fn stale_moves(mgmt: &Mgmt, entry: Option<&str>) -> Result<Vec<FoundMove>, MgmtError> {
    let mut found: Vec<FoundMove> = mgmt
        .shovel_parameters()
        .await?
        .into_iter()
        .filter_map(|p| {
            let parsed = MoveShovelName::parse(&p.name)?;
            entry.is_none_or(|e| e == parsed.entry).then(|| FoundMove {
                name: p.name,
                parsed,
                definition: p.value,
                verdict: Verdict::Unknown(String::new()),
            })
        })
        .collect();
    if found.is_empty() {
        return Ok(found);
    }
    let now = unix_now();
    let mut owners_needed = false;
    for f in &mut found {
        f.verdict = match &f.parsed.stamp {
            None => Verdict::Unknown(
                "named by an earlier hopback: its owner and deadline are unknown".into(),
            ),
            Some(st) if st.deadline_unix <= now => Verdict::Stale(format!(
                "its time limit ran out {} ago",
                humantime::format_duration(Duration::from_secs(now - st.deadline_unix))
            )),
            Some(st) if now.saturating_sub(st.start_unix) < OWNER_GRACE.as_secs() => {
                Verdict::Live("it started moments ago".into())
            }
            Some(_) => {
                owners_needed = true;
                Verdict::Unknown(String::new())
            }
        };
    }
    if !owners_needed {
        return Ok(found);
    }
    let mut absent_twice: Vec<bool> = vec![true; found.len()];
    for look in 0..2 {
        if look > 0 {
            if !absent_twice.iter().any(|a| *a) {
                break;
            }
            tokio::time::sleep(OWNER_RECHECK).await;
        }
        let conns = match mgmt.connections().await {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                return Ok(undecided(
                    found,
                    "the management API lists no connection in this vhost (statistics off?), so whether its hopback runs is unknown",
                ));
            }
            Err(e) => {
                return Ok(undecided(
                    found,
                    &format!("cannot list the connections to find its hopback: {e}"),
                ));
            }
        };
        for (f, absent) in found.iter().zip(absent_twice.iter_mut()) {
            if let Some(st) = &f.parsed.stamp {
                let prefix = owner_connection_prefix(&st.move_id);
                if conns.iter().any(|c| {
                    c.user_provided_name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(&prefix))
                }) {
                    *absent = false;
                }
            }
        }
    }
    for (f, absent) in found.iter_mut().zip(absent_twice) {
        if f.verdict != Verdict::Unknown(String::new()) {
            continue;
        }
        let Some(st) = &f.parsed.stamp else { continue };
        f.verdict = if absent {
            Verdict::Stale(format!(
                "the hopback that started it is gone (no connection `{}…` in the vhost)",
                owner_connection_prefix(&st.move_id).trim_end()
            ))
        } else {
            Verdict::Live("its hopback is running".into())
        };
    }
    Ok(found)
}

/// Every undecided shovel of `found` marked unknown, for `why`.
fn undecided(mut found: Vec<FoundMove>, why: &str) -> Vec<FoundMove> {
    for f in &mut found {
        if f.verdict == Verdict::Unknown(String::new()) {
            f.verdict = Verdict::Unknown(why.to_string());
        }
    }
    found
}

/// Remove a shovel left behind and the move's own exchange (only that one: the definition's
/// `dest-exchange` must be the name its id gives, `Namespace::move_exchange`), then check the
/// shovel is gone.
pub async fn remove_left_behind(
    session: &Session,
    mgmt: &Mgmt,
    f: &FoundMove,
) -> Result<(), String> {
    remove(mgmt, &f.name).await.map_err(|e| {
        format!(
            "cannot remove shovel `{}`: {e}",
            crate::text::sanitize(&f.name)
        )
    })?;
    if let Some(x) = f.parsed.exchange()
        && f.definition["dest-exchange"].as_str() == Some(x.as_str())
    {
        crate::broker::republish::delete_move_exchange(session, &x)
            .await
            .map_err(|e| {
                format!(
                    "removed shovel `{}` but not its exchange `{}`: {e}",
                    crate::text::sanitize(&f.name),
                    crate::text::sanitize(&x)
                )
            })?;
    }
    match mgmt.shovel_exists(&f.name).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(format!(
            "shovel `{}` is still there after its removal",
            crate::text::sanitize(&f.name)
        )),
        Err(e) => Err(format!(
            "cannot tell whether shovel `{}` is gone: {e}",
            crate::text::sanitize(&f.name)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_moves_exactly_the_count_on_confirm_in_its_vhost() {
        let ns = Namespace::convention("email");
        let m = ShovelMove {
            name: String::new(),
            move_id: "0123456789ab".into(),
            vhost: "prod/eu".into(),
            source_queue: "email.dlq".into(),
            dest: ShovelDest::Exchange {
                name: "email.replay-origin".into(),
            },
            count: 1234,
            prefetch: 1000,
            park_queue: Some("email.parked".into()),
            forward_headers: true,
            time_limit_s: 600,
            deadline_unix: 0,
        }
        .started(&ns, 1_700_000_000);
        assert_eq!(m.deadline_unix, 1_700_000_600);
        assert_eq!(
            m.name,
            "hopback-move-email.0123456789ab.1700000000-1700000600"
        );
        let d = m.definition();
        assert_eq!(d["ack-mode"], "on-confirm");
        assert_eq!(d["src-delete-after"], 1234);
        // Both ends in the profile's vhost, percent-encoded (`amqp://` alone is `/`).
        assert_eq!(d["src-uri"], "amqp:///prod%2Feu");
        assert_eq!(d["dest-uri"], "amqp:///prod%2Feu");
        assert_eq!(d["dest-add-forward-headers"], true);
        assert_eq!(d["dest-exchange"], "email.replay-origin");
        assert!(
            d.get("dest-exchange-key").is_none(),
            "keeps each routing key"
        );
        // A queue is reached only through the move's fanout exchange, never the default one.
        let q = ShovelMove {
            dest: ShovelDest::Queue {
                queue: "email.v1".into(),
                via: ns.move_exchange("0123456789ab"),
            },
            forward_headers: false,
            vhost: "/".into(),
            ..m
        };
        let d = q.definition();
        assert_eq!(d["src-uri"], "amqp:///%2F");
        assert_eq!(d["dest-exchange"], "email.replay-move-0123456789ab");
        assert!(d.get("dest-queue").is_none(), "{d}");
        assert!(d.get("dest-add-forward-headers").is_none(), "{d}");
    }

    #[test]
    fn a_move_without_a_count_given_gets_minutes_not_hours() {
        assert_eq!(default_time_limit(0), Duration::from_secs(300));
        assert_eq!(default_time_limit(100_000), Duration::from_secs(800));
        assert_eq!(new_move_id().len(), 12);
        assert_eq!(
            owner_connection_prefix("0123456789ab"),
            "hopback move 0123456789ab "
        );
    }

    #[test]
    fn which_brokers_count_republished_deaths() {
        for (v, yes) in [
            ("3.10.8", true),
            ("3.12.14", true),
            ("3.13.0", false),
            ("3.13.2", false),
            ("3.13.7", true),
            ("4.0.5", false),
            ("4.1.0-rc.1", false),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(broker_counts_republished_deaths(v), yes, "{v}");
        }
    }
}
