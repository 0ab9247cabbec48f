//! The simulated fleet of a drill: producers and v1/v2 workers on real AMQP connections, behaving
//! like a well-written production fleet (publisher confirms, prefetch, manual ack, deduplication by
//! `message_id`, ack only after the side effect is committed) — except that v2 gets a fault.
//!
//! Everything is in-process tokio tasks sharing one [`FleetShared`] of counters and id sets; the
//! id sets are what the drill's "0 lost" claim is checked against. Workers name their connections
//! exactly `NS worker vN`, so the console groups them like real workers (DESIGN §2).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::amqp::{
    BasicProperties, Confirm, Consumer, Delivery, FieldTable, Publisher, Received, string_table,
};
use crate::broker::headers::header_string;
use crate::broker::session::{self, BrokerError, CALL_TIMEOUT, Session, backoff_delay};
use crate::config::Profile;
use crate::drill::scenario::{self, FaultParams, Scenario, TaskView, Verdict};

/// What the fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Broker profile.
    pub profile: Profile,
    /// Namespace (`drill-…`).
    pub ns: String,
    /// Versions with workers (`v1`, `v2`).
    pub versions: Vec<String>,
    /// The versions that get the fault (a drill: `v2`; tests can break `v1` too).
    pub faulty_versions: Vec<String>,
    /// The (concrete) scenario.
    pub scenario: Scenario,
    /// Fault tunables.
    pub fault: FaultParams,
    /// Messages per second, all producers together.
    pub rate_per_s: u32,
    /// Producer tasks (0: none — a test publishes itself).
    pub producers: usize,
    /// Worker tasks per version.
    pub workers_per_version: usize,
    /// Prefetch per worker.
    pub prefetch: u16,
    /// Work time of a healthy task.
    pub base_latency: Duration,
}

impl FleetSpec {
    /// Sensible defaults for `ns` (1 producer, 2 workers per version, prefetch 10, 5 ms work).
    pub fn new(profile: Profile, ns: &str, scenario: Scenario, rate_per_s: u32) -> Self {
        Self {
            profile,
            ns: ns.to_string(),
            versions: vec!["v1".into(), "v2".into()],
            faulty_versions: vec!["v2".into()],
            scenario,
            fault: FaultParams::default(),
            rate_per_s,
            producers: 1,
            workers_per_version: 2,
            prefetch: 10,
            base_latency: Duration::from_millis(5),
        }
    }
}

/// Counters of one version's workers.
#[derive(Debug, Default)]
pub struct VersionCounters {
    /// Tasks whose side effect was committed.
    pub processed: AtomicU64,
    /// Tasks rejected without requeue (dead-lettered by the queue).
    pub rejected: AtomicU64,
    /// Worker crashes (connection dropped with unacked work).
    pub crashes: AtomicU64,
    /// Tasks slower than the SLA.
    pub sla_breaches: AtomicU64,
    /// Deliveries being worked on right now.
    pub in_flight: AtomicU64,
    /// Connected workers.
    pub connected: AtomicU64,
}

/// State shared by every task of the fleet.
#[derive(Debug)]
pub struct FleetShared {
    /// The spec.
    pub spec: FleetSpec,
    /// When the fleet started.
    pub started: Instant,
    fault_at_ms: AtomicU64,
    last_failure_ms: AtomicU64,
    /// Per version.
    pub versions: BTreeMap<String, VersionCounters>,
    /// Confirmed publishes.
    pub published: AtomicU64,
    /// Publishes whose confirm was a nack, a return, a timeout or an error (not counted as sent).
    pub publish_uncertain: AtomicU64,
    /// Redeliveries recognised and skipped by deduplication.
    pub duplicates_skipped: AtomicU64,
    /// Acks/nacks that did not reach the broker (the message will be redelivered).
    pub ack_failures: AtomicU64,
    /// Worker reconnects.
    pub reconnects: AtomicU64,
    /// Deliveries without a `message_id` (acked and counted; producers always set one).
    pub without_id: AtomicU64,
    seq: AtomicU64,
    ids: Mutex<IdSets>,
}

#[derive(Debug, Default)]
struct IdSets {
    published: BTreeSet<String>,
    /// The workers' "database": id → how many times its side effect was committed.
    processed: BTreeMap<String, u32>,
}

const NONE: u64 = u64::MAX;

impl FleetShared {
    pub(super) fn new(spec: FleetSpec) -> Self {
        let versions = spec
            .versions
            .iter()
            .map(|v| (v.clone(), VersionCounters::default()))
            .collect();
        Self {
            spec,
            started: Instant::now(),
            fault_at_ms: AtomicU64::new(NONE),
            last_failure_ms: AtomicU64::new(NONE),
            versions,
            published: AtomicU64::new(0),
            publish_uncertain: AtomicU64::new(0),
            duplicates_skipped: AtomicU64::new(0),
            ack_failures: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            without_id: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            ids: Mutex::new(IdSets::default()),
        }
    }
    fn ids(&self) -> MutexGuard<'_, IdSets> {
        // A poisoned lock only means a task panicked mid-insert; the sets are still usable.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Milliseconds since the fleet started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
    /// When the fault was injected (ms since start).
    pub fn fault_at_ms(&self) -> Option<u64> {
        Some(self.fault_at_ms.load(Ordering::Relaxed)).filter(|v| *v != NONE)
    }
    /// Pretend the fault was injected at `ms` (unit tests of detection).
    #[cfg(test)]
    pub(super) fn set_fault_at_ms(&self, ms: u64) {
        self.fault_at_ms.store(ms, Ordering::Relaxed);
    }
    /// When the faulty version last failed (ms since start).
    pub fn last_failure_ms(&self) -> Option<u64> {
        Some(self.last_failure_ms.load(Ordering::Relaxed)).filter(|v| *v != NONE)
    }
    fn fault_age(&self) -> Option<Duration> {
        let at = self.fault_at_ms()?;
        Some(Duration::from_millis(self.now_ms().saturating_sub(at)))
    }
    fn record_failure(&self) {
        self.last_failure_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    fn counters(&self, v: &str) -> Option<&VersionCounters> {
        self.versions.get(v)
    }
    /// Has this id's side effect been committed?
    fn already_processed(&self, id: &str) -> bool {
        self.ids().processed.contains_key(id)
    }
    /// Commit the side effect of `id`.
    fn commit(&self, id: &str) {
        *self.ids().processed.entry(id.to_string()).or_insert(0) += 1;
    }
    /// Copies of the id sets (published, processed with counts).
    pub fn id_sets(&self) -> (BTreeSet<String>, BTreeMap<String, u32>) {
        let g = self.ids();
        (g.published.clone(), g.processed.clone())
    }
    /// A plain-data copy of the counters (for status lines, the TUI's drill panel, JSON).
    pub fn stats(&self) -> FleetStats {
        let per_version = self
            .versions
            .iter()
            .map(|(v, c)| {
                (
                    v.clone(),
                    VersionStats {
                        processed: c.processed.load(Ordering::Relaxed),
                        rejected: c.rejected.load(Ordering::Relaxed),
                        crashes: c.crashes.load(Ordering::Relaxed),
                        sla_breaches: c.sla_breaches.load(Ordering::Relaxed),
                        in_flight: c.in_flight.load(Ordering::Relaxed),
                        workers_connected: c.connected.load(Ordering::Relaxed),
                    },
                )
            })
            .collect();
        FleetStats {
            elapsed_ms: self.now_ms(),
            fault_at_ms: self.fault_at_ms(),
            published: self.published.load(Ordering::Relaxed),
            publish_uncertain: self.publish_uncertain.load(Ordering::Relaxed),
            duplicates_skipped: self.duplicates_skipped.load(Ordering::Relaxed),
            ack_failures: self.ack_failures.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            per_version,
        }
    }
}

/// One version's counters as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionStats {
    /// Side effects committed.
    pub processed: u64,
    /// Rejected (dead-lettered).
    pub rejected: u64,
    /// Crashes.
    pub crashes: u64,
    /// Tasks over the SLA.
    pub sla_breaches: u64,
    /// Being worked on now.
    pub in_flight: u64,
    /// Workers connected now.
    pub workers_connected: u64,
}

/// The fleet's counters as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetStats {
    /// Since start.
    pub elapsed_ms: u64,
    /// Fault injected at.
    pub fault_at_ms: Option<u64>,
    /// Confirmed publishes.
    pub published: u64,
    /// Publishes with no clean confirm.
    pub publish_uncertain: u64,
    /// Redeliveries deduplicated.
    pub duplicates_skipped: u64,
    /// Acks that did not reach the broker.
    pub ack_failures: u64,
    /// Worker reconnects.
    pub reconnects: u64,
    /// Per version.
    pub per_version: BTreeMap<String, VersionStats>,
}

impl FleetStats {
    /// Processed by every version together.
    pub fn processed(&self) -> u64 {
        self.per_version.values().map(|v| v.processed).sum()
    }
    /// One-line summary for the status line.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("published {}", self.published)];
        for (v, s) in &self.per_version {
            parts.push(format!(
                "{v}: {} done, {} rejected, {} crashes, {} slow",
                s.processed, s.rejected, s.crashes, s.sla_breaches
            ));
        }
        parts.push(format!("dedup {}", self.duplicates_skipped));
        parts.join(" · ")
    }
}

/// A running fleet. Dropping it aborts every task; [`Fleet::shutdown`] stops them gracefully.
pub struct Fleet {
    shared: Arc<FleetShared>,
    stop_producers: watch::Sender<bool>,
    stop_workers: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("ns", &self.shared.spec.ns)
            .finish()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in self.producers.iter().chain(self.workers.iter()) {
            h.abort();
        }
    }
}

impl Fleet {
    /// Start producers and workers (they connect in the background).
    pub fn start(spec: FleetSpec) -> Self {
        let shared = Arc::new(FleetShared::new(spec));
        let (stop_producers, prx) = watch::channel(false);
        let (stop_workers, wrx) = watch::channel(false);
        let spec = &shared.spec;
        let mut workers = Vec::new();
        for v in &spec.versions {
            for i in 0..spec.workers_per_version {
                workers.push(tokio::spawn(worker_task(
                    shared.clone(),
                    v.clone(),
                    i,
                    wrx.clone(),
                )));
            }
        }
        let producers = (0..spec.producers)
            .map(|i| tokio::spawn(producer_task(shared.clone(), i, prx.clone())))
            .collect();
        Self {
            shared,
            stop_producers,
            stop_workers,
            producers,
            workers,
        }
    }
    /// The shared counters.
    pub fn shared(&self) -> Arc<FleetShared> {
        self.shared.clone()
    }
    /// Inject the fault into the faulty version now (idempotent).
    pub fn inject_fault(&self) {
        let _ = self.shared.fault_at_ms.compare_exchange(
            NONE,
            self.shared.now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    /// Stop publishing and wait for the producers to finish their last confirm.
    pub async fn stop_producers(&mut self) {
        let _ = self.stop_producers.send(true);
        join_or_abort(self.producers.drain(..)).await;
    }
    /// Wait until no worker holds a delivery and `idle` says the queues are quiet, for at most
    /// `limit`. Returns whether it settled.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut quiet_since: Option<Instant> = None;
        let mut last = self.shared.stats();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.shared.stats();
            let busy = now.per_version.values().any(|v| v.in_flight > 0);
            if busy || now.processed() != last.processed() {
                quiet_since = None;
            } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                >= Duration::from_millis(1000)
            {
                return true;
            }
            last = now;
        }
        false
    }
    /// Stop every worker after its current task (prefetched, unacked messages go back to their
    /// queue when the connection closes) and wait for them.
    pub async fn stop_workers(&mut self) {
        let _ = self.stop_workers.send(true);
        join_or_abort(self.workers.drain(..)).await;
    }
    /// Stop everything gracefully.
    pub async fn shutdown(&mut self) {
        self.stop_producers().await;
        self.stop_workers().await;
    }
}

/// Wait for each task to finish (they were told to stop), at most 10 s each; a task that does
/// not finish in time is aborted.
async fn join_or_abort(tasks: impl Iterator<Item = JoinHandle<()>>) {
    for h in tasks {
        let abort = h.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Connect as `name`, retrying with backoff until it works; `None` once the fleet is stopping.
async fn connect_while_running(
    profile: &Profile,
    name: &str,
    stop: &watch::Receiver<bool>,
) -> Option<Arc<Session>> {
    let mut attempt = 0u32;
    while !*stop.borrow() {
        match session::connect_named(profile, name).await {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!(error = %e, connection = name, "drill cannot connect");
                tokio::time::sleep(backoff_delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
    None
}

/// Publish at the configured rate, one confirm awaited per message (the drill's rates are far
/// below the ~1,400 msg/s that costs), reconnecting with backoff.
async fn producer_task(shared: Arc<FleetShared>, index: usize, stop: watch::Receiver<bool>) {
    let spec = &shared.spec;
    let per_producer = (f64::from(spec.rate_per_s) / spec.producers.max(1) as f64).max(0.1);
    let name = format!("{} producer {index}", spec.ns);
    while let Some(session) = connect_while_running(&spec.profile, &name, &stop).await {
        let Ok(publisher) = Publisher::open(&session).await else {
            session.close().await;
            tokio::time::sleep(backoff_delay(0)).await;
            continue;
        };
        let started = Instant::now();
        let mut sent = 0f64;
        while !*stop.borrow() && session.is_connected() {
            let due = started.elapsed().as_secs_f64() * per_producer;
            if sent + 1.0 > due {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            sent += 1.0;
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            let id = format!("{}-{seq:07}", spec.ns);
            let shape = scenario::shape_for(rand::random_range(0.0..1.0));
            let body = serde_json::json!({"id": id, "shape": shape, "amount_cents": rand::random_range(100..100_000)})
                .to_string();
            let props = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_headers(string_table(&[(scenario::TASK_SHAPE_HEADER, shape)]));
            // Not mandatory (as before): the namespace exchange has an alternate exchange.
            let sent = publisher
                .publish(&spec.ns, "", false, body.as_bytes(), props)
                .await;
            let sent_ok = match sent {
                Ok(pending) => matches!(pending.wait(CALL_TIMEOUT).await, Ok(Confirm::Acked)),
                Err(_) => false,
            };
            if sent_ok {
                shared.ids().published.insert(id);
                shared.published.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.publish_uncertain.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        session.close().await;
    }
}

enum WorkerExit {
    Stop,
    Reconnect,
}

async fn worker_task(
    shared: Arc<FleetShared>,
    version: String,
    index: usize,
    stop: watch::Receiver<bool>,
) {
    let name = format!("{} worker {version}", shared.spec.ns);
    while let Some(session) = connect_while_running(&shared.spec.profile, &name, &stop).await {
        if let Some(c) = shared.counters(&version) {
            c.connected.fetch_add(1, Ordering::Relaxed);
        }
        let exit = consume(&shared, &session, &version, index, &stop).await;
        if let Some(c) = shared.counters(&version) {
            c.connected.fetch_sub(1, Ordering::Relaxed);
        }
        session.close().await;
        match exit {
            WorkerExit::Stop => return,
            WorkerExit::Reconnect => {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

async fn consume(
    shared: &FleetShared,
    session: &Arc<Session>,
    version: &str,
    index: usize,
    stop: &watch::Receiver<bool>,
) -> WorkerExit {
    let spec = &shared.spec;
    // The drill's namespace follows the convention (it is made with `init`).
    let queue = crate::topology::Namespace::convention(&spec.ns)
        .version_queue(version)
        .unwrap_or_default();
    let tag = format!(
        "{} worker {version}#{index}-{}",
        spec.ns,
        uuid::Uuid::new_v4()
    );
    let mut consumer =
        match Consumer::open(session, &queue, &tag, spec.prefetch, FieldTable::default()).await {
            Ok(c) => c,
            Err(_) => return WorkerExit::Reconnect,
        };
    let Some(counters) = shared.counters(version) else {
        return WorkerExit::Stop;
    };
    let faulty = spec.faulty_versions.iter().any(|v| v == version);
    let mut tasks_since_connect = 0u32;
    loop {
        if *stop.borrow() {
            return WorkerExit::Stop;
        }
        let delivery = match consumer.recv(Duration::from_millis(250)).await {
            Ok(Received::Idle) => {
                if !session.is_connected() || !consumer.is_open() {
                    return WorkerExit::Reconnect;
                }
                continue;
            }
            Ok(Received::Ended) | Err(_) => return WorkerExit::Reconnect,
            Ok(Received::Delivery(d)) => d,
        };
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        tasks_since_connect += 1;
        let outcome = handle(shared, counters, faulty, tasks_since_connect, delivery).await;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        if outcome {
            // Crash: drop the connection with this (and every prefetched) delivery unacked.
            return WorkerExit::Reconnect;
        }
    }
}

/// Work one delivery; returns `true` when the worker crashes.
async fn handle(
    shared: &FleetShared,
    counters: &VersionCounters,
    faulty: bool,
    tasks_since_connect: u32,
    d: Delivery,
) -> bool {
    let spec = &shared.spec;
    let Some(id) = d.message_id().map(str::to_string) else {
        shared.without_id.fetch_add(1, Ordering::Relaxed);
        settle(shared, d.ack().await);
        return false;
    };
    // Idempotency first: a redelivery of committed work is acknowledged, not redone.
    if shared.already_processed(&id) {
        shared.duplicates_skipped.fetch_add(1, Ordering::Relaxed);
        settle(shared, d.ack().await);
        return false;
    }
    let shape =
        header_string(d.headers(), scenario::TASK_SHAPE_HEADER).unwrap_or_else(|| "single".into());
    let fault_age = if faulty { shared.fault_age() } else { None };
    let v = scenario::verdict(
        spec.scenario,
        &spec.fault,
        fault_age,
        spec.base_latency,
        TaskView {
            shape: &shape,
            tasks_since_connect,
            roll: rand::random_range(0.0..1.0),
        },
    );
    match v {
        Verdict::Process { latency } => {
            tokio::time::sleep(latency).await;
            if faulty && fault_age.is_some() && latency > scenario::SLOW_SLA {
                counters.sla_breaches.fetch_add(1, Ordering::Relaxed);
                shared.record_failure();
            }
            // The "transaction": commit the side effect, then ack. A lost ack means a redelivery,
            // which the check above turns into a skipped duplicate.
            shared.commit(&id);
            counters.processed.fetch_add(1, Ordering::Relaxed);
            settle(shared, d.ack().await);
            false
        }
        Verdict::Reject => {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            shared.record_failure();
            settle(shared, d.nack(false).await);
            false
        }
        Verdict::Crash { after_commit } => {
            if after_commit {
                shared.commit(&id);
                counters.processed.fetch_add(1, Ordering::Relaxed);
            }
            counters.crashes.fetch_add(1, Ordering::Relaxed);
            shared.record_failure();
            true
        }
    }
}

/// Count an ack/nack (already bounded by the call timeout) that did not reach the broker.
fn settle(shared: &FleetShared, sent: Result<bool, BrokerError>) {
    if !matches!(sent, Ok(true)) {
        shared.ack_failures.fetch_add(1, Ordering::Relaxed);
    }
}
