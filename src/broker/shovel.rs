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
//! Like the mover, this is a primitive: it neither guards nor journals (`ops::replay` does).
//! Progress is read from the source's depth; cancel removes the shovel (whatever it had not
//! confirmed goes back to the source); a shovel that outlives its caller (killed process) still
//! moves exactly its count and removes itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;

use crate::broker::mgmt::{Mgmt, MgmtError};
use crate::broker::mover::{MoveControl, MoveCounts, MoveProgress, RunState, StopReason};
use crate::broker::session::{BrokerError, CALL_TIMEOUT, Session, timed};
use crate::config::Profile;
use crate::topology::Namespace;
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

/// Where the shovel publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum ShovelDest {
    /// A queue (through the default exchange).
    Queue(String),
    /// An exchange, each message keeping its own routing key (the origin router).
    Exchange(String),
}

/// One broker-engine move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShovelMove {
    /// Shovel name (`Namespace::move_shovel`): one broker move per namespace at a time.
    pub name: String,
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
    /// The shovel's definition (`PUT /api/parameters/shovel/{vhost}/{name}`).
    pub fn definition(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": "amqp://",
            "src-queue": self.source_queue,
            "src-prefetch-count": self.prefetch.max(1),
            "src-delete-after": self.count,
            "dest-protocol": "amqp091",
            "dest-uri": "amqp://",
            "ack-mode": "on-confirm",
        });
        if self.forward_headers {
            v["dest-add-forward-headers"] = serde_json::json!(true);
        }
        match &self.dest {
            ShovelDest::Queue(q) => v["dest-queue"] = serde_json::json!(q),
            ShovelDest::Exchange(x) => v["dest-exchange"] = serde_json::json!(x),
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
/// is parked, never lost and never sent to a foreign queue. With `keyed`, also
/// [`Namespace::origin_keyed_router`], a direct exchange in front of it: each version queue bound
/// on its own name, the headers router as its alternate exchange.
pub async fn declare_origin_router(
    session: &Session,
    ns: &Namespace,
    keyed: bool,
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
    if keyed {
        let keyed = ns.origin_keyed_router();
        let keyed = keyed.as_str();
        declare(keyed, lapin::ExchangeKind::Direct, Some(router)).await?;
        for q in version_queues.values() {
            timed(
                "queue.bind (keyed origin router)",
                CALL_TIMEOUT,
                &pw,
                ch.queue_bind(
                    q.as_str().into(),
                    keyed.into(),
                    q.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
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

/// The watcher's AMQP connection: the caller's session until it dies (a broker restart), then a
/// fresh one to any node of the profile, tried at most once a second.
struct Watch<'a> {
    profile: &'a Profile,
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
        let fresh = crate::broker::session::connect(self.profile, "shovel watch", "hopback")
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

/// Declare the shovel, watch it until it has moved its count (it then removes itself), was
/// stopped through `control` (removed; what it had not confirmed returns to the source) or
/// failed. Progress goes to `control` (`MoveControl::report`).
pub async fn run(
    session: &Arc<Session>,
    profile: &Profile,
    mgmt: &Mgmt,
    m: &ShovelMove,
    control: &MoveControl,
) -> ShovelOutcome {
    let started = Instant::now();
    let fail = |why: String, counts: MoveCounts| ShovelOutcome {
        counts,
        stop: StopReason::Failed(why),
        exact: false,
    };
    match mgmt.shovel_exists(&m.name).await {
        Ok(false) => {}
        Ok(true) => {
            return fail(
                format!(
                    "a broker-engine move is already running (shovel `{}`)",
                    crate::text::sanitize(&m.name)
                ),
                MoveCounts::default(),
            );
        }
        Err(e) => {
            return fail(
                format!("cannot read the shovels: {e}"),
                MoveCounts::default(),
            );
        }
    }
    let start_depth = depth(session, &m.source_queue).await.unwrap_or(m.count);
    let consumers_before = consumers(session, &m.source_queue).await.unwrap_or(0);
    let park_before = match &m.park_queue {
        Some(p) => depth(session, p).await,
        None => None,
    };
    if let Err(e) = mgmt.put_shovel(&m.name, m.definition()).await {
        return fail(
            format!("the broker refused the shovel: {e}"),
            MoveCounts::default(),
        );
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
        session: session.clone(),
        dead_since: None,
        last_try: None,
    };
    let mut blind_since: Option<Instant> = None;
    let mut counted_since: Option<Instant> = None;
    let mut terminated_since: Option<Instant> = None;
    let mut absent_since: Option<Instant> = None;
    let mut last_depth = Some(start_depth);
    let (stop, exact) = loop {
        if control.state() == RunState::Stopped {
            let _ = remove(mgmt, &m.name).await;
            // The parameter goes first; the shovel's consumer (and what it holds unacked) a
            // moment later: count only once everything it held is back in the source.
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline
                && consumers(&watch.session, &m.source_queue)
                    .await
                    .is_none_or(|c| c > consumers_before)
            {
                tokio::time::sleep(POLL).await;
            }
            break (StopReason::Stopped, false);
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
                // The source gave up its whole count and the shovel is still there: a broker
                // restart restarted it with a fresh count (it would wait for more dead letters
                // forever). Its part is done: remove it.
                if outlasted(&mut counted_since, RESTARTED_GRACE) {
                    let _ = remove(mgmt, &m.name).await;
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
                    break (
                        StopReason::Failed(format!(
                            "lost sight of shovel `{}` ({e}); it keeps moving its count inside the broker and normally removes itself when done — nothing is lost. Check with `hopback check`, which names a shovel left running (one a cluster restarted on another node keeps waiting for more) and how to remove it",
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
                    let _ = remove(mgmt, &m.name).await;
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
            let _ = remove(mgmt, &m.name).await;
        }
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

/// Remove the shovel and wait (≤ 10 s) until the broker confirms it is gone.
pub async fn remove(mgmt: &Mgmt, name: &str) -> Result<(), MgmtError> {
    match mgmt.delete_shovel(name).await {
        Ok(()) | Err(MgmtError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(false) = mgmt.shovel_exists(name).await {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_moves_exactly_the_count_on_confirm() {
        let m = ShovelMove {
            name: "hopback-move-email".into(),
            source_queue: "email.dlq".into(),
            dest: ShovelDest::Exchange("email.replay-origin".into()),
            count: 1234,
            prefetch: 1000,
            park_queue: Some("email.parked".into()),
            forward_headers: true,
        };
        let d = m.definition();
        assert_eq!(d["ack-mode"], "on-confirm");
        assert_eq!(d["src-delete-after"], 1234);
        assert_eq!(d["dest-add-forward-headers"], true);
        assert_eq!(d["dest-exchange"], "email.replay-origin");
        assert!(
            d.get("dest-exchange-key").is_none(),
            "keeps each routing key"
        );
        let q = ShovelMove {
            dest: ShovelDest::Queue("email.v1".into()),
            forward_headers: false,
            ..m
        };
        let d = q.definition();
        assert_eq!(d["dest-queue"], "email.v1");
        assert!(d.get("dest-add-forward-headers").is_none(), "{d}");
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
