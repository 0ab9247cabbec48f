//! The fault matrix's machinery, shared by the `faults` binary (faults that touch only the test's
//! own connections: a proxy it cuts, a management API it takes away) and `faults_broker` (faults
//! that touch the whole broker: restart, memory alarm).
//!
//! A [`Cell`] is one operation on its own namespace with unique message ids: `setup` puts the
//! messages in, `run_once` performs the operation once through the library API the CLI and
//! console use (on a config that may go through a proxy), `account` finds every id afterwards
//! (origin, DLQ, parked, export file, ledger stream) and counts lost and duplicated ones.
//! A [`Console`] runs the console's real background tasks (`app::tasks::spawn`: refresh with
//! its reconnects, tap, consumers) and timestamps what they report, so a test can measure the
//! seconds from "fault over" to "connected with fresh data".
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hopback::app::state::Msg;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::mover;
use hopback::broker::session::{self, Session};
use hopback::broker::topology::QueueType;
use hopback::config::Config;
use hopback::ledger::{EventKind, Ledger, StreamStart};
use hopback::model::ConnState;
use hopback::model::gate::GateSplit;
use hopback::ops::plan::{DlqChoice, Plan, Step, StepKind};
use hopback::ops::{gate, rollback};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;

use crate::common::TestNs;
use crate::common::record::{self, Outcome};

/// The operations of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gate,
    Replay,
    Drain,
    Purge,
    Rollback,
    Ledger,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Gate,
        Op::Replay,
        Op::Drain,
        Op::Purge,
        Op::Rollback,
        Op::Ledger,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Op::Gate => "gate flip",
            Op::Replay => "replay",
            Op::Drain => "drain",
            Op::Purge => "purge",
            Op::Rollback => "rollback",
            Op::Ledger => "ledger append",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Op::Gate => "fg",
            Op::Replay => "fr",
            Op::Drain => "fd",
            Op::Purge => "fp",
            Op::Rollback => "fb",
            Op::Ledger => "fl",
        }
    }
    /// Long enough to be hit several times mid-operation.
    pub fn is_long(self) -> bool {
        matches!(self, Op::Replay | Op::Drain | Op::Rollback)
    }
}

/// Messages per cell (small: the whole binary must stay fast).
pub const N: usize = 1500;
/// Ledger events per cell.
pub const EVENTS: usize = 30;

/// One attempt of an operation.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Completed?
    pub ok: bool,
    /// What it reported (the error, or a summary).
    pub message: String,
    /// Messages the operation itself reported as possibly duplicated.
    pub possible_duplicates: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// One operation's namespace and the ids it put in.
pub struct Cell {
    pub op: Op,
    pub t: TestNs,
    pub mgmt: Mgmt,
    pub ids: Vec<String>,
    pub stream: String,
    pub export: PathBuf,
    /// Gate: ids a producer published (confirmed) to the entry exchange during the flip.
    pub produced: Arc<Mutex<Vec<String>>>,
    /// Ledger: ids whose append returned Ok / an error.
    pub appended_ok: Arc<Mutex<Vec<String>>>,
    pub appended_err: Arc<Mutex<Vec<String>>>,
    /// Purge: did a commit report success?
    pub purged: Arc<Mutex<bool>>,
    /// Pace the movers and the ledger slowly (a broker-wide fault takes seconds to land).
    pub slow: bool,
    next_event: Arc<Mutex<usize>>,
}

/// Publish ids to a queue (default exchange) with confirms; `expire_now` dead-letters them.
pub async fn publish(s: &Session, queue: &str, ids: &[String], expire_now: bool) {
    let ch = s.confirm_channel().await.unwrap();
    for chunk in ids.chunks(500) {
        let mut confirms = Vec::new();
        for id in chunk {
            let mut p = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_delivery_mode(2);
            if expire_now {
                p = p.with_expiration("0".into());
            }
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    id.as_bytes(),
                    p,
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            let c = tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(c, lapin::Confirmation::Ack(None)), "{c:?}");
        }
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// Ready depth (None if the queue is missing).
pub async fn depth(s: &Session, q: &str) -> Option<u32> {
    s.passive_queue(q).await.unwrap().map(|c| c.ready)
}

/// Wait until `q` holds `n` ready messages.
pub async fn wait_depth(s: &Session, q: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(s, q).await != Some(n) {
        assert!(Instant::now() < deadline, "{q} never reached {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Read (and remove) every message of `q`; their ids.
pub async fn drain_ids(s: &Session, q: &str) -> Vec<String> {
    let Some(total) = depth(s, q).await else {
        return Vec::new();
    };
    let ch = s.channel().await.unwrap();
    ch.basic_qos(2000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut c = ch
        .basic_consume(
            q.into(),
            "faults-drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < total as usize {
        let d = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .expect("drain stalled")
            .unwrap()
            .unwrap();
        out.push(
            d.properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        );
    }
    let _ = ch.close(200, "ok".into()).await;
    out
}

/// Lost / duplicated / unexpected by unique id.
#[derive(Debug, Default, Clone)]
pub struct Accounting {
    pub expected: usize,
    pub lost: Vec<String>,
    pub duplicated: u64,
    pub unexpected: Vec<String>,
    pub where_: BTreeMap<String, usize>,
    pub note: String,
}

impl Accounting {
    fn from(expected: &[String], places: &[(&str, Vec<String>)]) -> Self {
        let want: HashSet<&String> = expected.iter().collect();
        let mut seen: HashMap<&String, usize> = HashMap::new();
        let mut a = Accounting {
            expected: expected.len(),
            ..Default::default()
        };
        for (name, ids) in places {
            a.where_.insert(name.to_string(), ids.len());
            for id in ids {
                *seen.entry(id).or_default() += 1;
                if !want.contains(id) {
                    a.unexpected.push(id.clone());
                }
            }
        }
        a.lost = expected
            .iter()
            .filter(|id| !seen.contains_key(id))
            .cloned()
            .collect();
        a.duplicated = seen
            .iter()
            .filter(|(id, _)| want.contains(*id))
            .map(|(_, n)| (*n as u64).saturating_sub(1))
            .sum();
        a
    }
}

fn simple_step(title: &str, kind: StepKind) -> Step {
    let timeout = kind.default_timeout();
    Step {
        title: title.into(),
        kind,
        timeout,
    }
}

/// The rollback of the matrix: gate v1=100, drain v2 → v1, replay v2's dead letters to v1.
pub fn rollback_plan() -> Plan {
    Plan {
        name: "fault matrix rollback v2 → v1".into(),
        from: "v2".into(),
        to: "v1".into(),
        steps: vec![
            simple_step(
                "Gate v1=100",
                StepKind::Gate {
                    weights: [("v1".to_string(), 100)].into(),
                },
            ),
            simple_step(
                "Drain v2 → v1",
                StepKind::Drain {
                    from: "v2".into(),
                    to: "v1".into(),
                    limit: None,
                },
            ),
            simple_step(
                "Dead letters of v2",
                StepKind::DlqReplay {
                    origin: "v2".into(),
                    to: "v1".into(),
                    action: DlqChoice::Replay,
                },
            ),
        ],
    }
}

fn gate_split(pairs: &[(&str, u32)]) -> GateSplit {
    GateSplit(pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect())
}

impl Cell {
    /// A namespace with the messages the operation works on.
    pub async fn setup(op: Op) -> Cell {
        let t = TestNs::new(op.prefix(), &["v1", "v2"], QueueType::Classic).await;
        let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
        let ns = t.ns.clone();
        let s = t.session.clone();
        let stream = format!("t-faults-ledger-{}", uuid::Uuid::new_v4().simple());
        let export = std::env::temp_dir()
            .join("hopback-faults")
            .join(format!("{ns}.jsonl"));
        let ids: Vec<String> = (0..N).map(|i| format!("{ns}-{i:05}")).collect();
        let (v2, dlq) = (format!("{ns}.v2"), format!("{ns}.dlq"));
        match op {
            Op::Gate | Op::Ledger => {}
            Op::Replay | Op::Purge => {
                publish(&s, &v2, &ids, true).await;
                wait_depth(&s, &dlq, N as u32).await;
            }
            Op::Drain => publish(&s, &v2, &ids, false).await,
            Op::Rollback => {
                let (ready, dead) = ids.split_at(N * 2 / 3);
                publish(&s, &v2, dead, true).await;
                wait_depth(&s, &dlq, dead.len() as u32).await;
                publish(&s, &v2, ready, false).await;
            }
        }
        let cell = Cell {
            op,
            t,
            mgmt,
            ids: if op == Op::Gate || op == Op::Ledger {
                Vec::new()
            } else {
                ids
            },
            stream,
            export,
            produced: Arc::default(),
            appended_ok: Arc::default(),
            appended_err: Arc::default(),
            purged: Arc::default(),
            slow: false,
            next_event: Arc::default(),
        };
        if op == Op::Rollback {
            // Start from a canary, as a real rollback would.
            let ledger = std::sync::Arc::new(
                Ledger::open_stream(&cell.t.session, &cell.t.cfg, &cell.stream).await,
            );
            gate::apply(
                &hopback::ops::OpContext::of(
                    &cell.t.session,
                    &cell.mgmt,
                    &ledger,
                    &cell.t.cfg,
                    hopback::ops::Via::Cli,
                ),
                &gate::GateRequest {
                    namespace: cell.t.ns.clone(),
                    target: gate_split(&[("v1", 50), ("v2", 50)]),
                    force_zero_consumers: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
        cell
    }

    /// Perform the operation once on `cfg` (its own connections, named after `cfg.operator`).
    pub async fn run_once(&self, cfg: &Config) -> Attempt {
        let started = Instant::now();
        let r = self.run_inner(cfg).await;
        let secs = started.elapsed().as_secs_f64();
        match r {
            Ok((message, possible_duplicates)) => Attempt {
                ok: true,
                message,
                possible_duplicates,
                secs,
            },
            Err((message, possible_duplicates)) => Attempt {
                ok: false,
                message,
                possible_duplicates,
                secs,
            },
        }
    }

    async fn run_inner(&self, cfg: &Config) -> Result<(String, u64), (String, u64)> {
        let ns = self.t.ns.clone();
        match self.op {
            Op::Replay | Op::Drain => {
                let mut spec = if self.op == Op::Replay {
                    mover::MoveSpec::replay(
                        &hopback::topology::Namespace::convention(&ns),
                        mover::Target::Origin,
                    )
                } else {
                    mover::MoveSpec::drain(
                        &hopback::topology::Namespace::convention(&ns),
                        &format!("{ns}.v2"),
                        &format!("{ns}.v1"),
                    )
                };
                spec.connection_purpose = format!("{} {ns}", self.op.name());
                spec.max_reconnect_attempts = 20;
                spec.prefetch = 200;
                spec.confirm_window = 100;
                // Slow enough that the faults land mid-move.
                spec.rate_per_s = Some(if self.slow { 300.0 } else { 1500.0 });
                let control = mover::MoveControl::new();
                let r = mover::run(&cfg.profile, &cfg.operator, &spec, &control).await;
                let msg = format!(
                    "{:?}: moved {}, reconnects {}",
                    r.stop, r.counts.moved, r.counts.reconnects
                );
                if r.failed() {
                    Err((msg, r.counts.possible_duplicates))
                } else {
                    Ok((msg, r.counts.possible_duplicates))
                }
            }
            Op::Purge => {
                let s = session::connect(&cfg.profile, "purge", &cfg.operator)
                    .await
                    .map_err(|e| (e.to_string(), 0))?;
                let _ = std::fs::remove_file(&self.export);
                let r = async {
                    let p = hopback::broker::export::prepare(
                        s.clone(),
                        &format!("{ns}.dlq"),
                        &self.export,
                        false,
                        false,
                    )
                    .await?;
                    // The operator reads the count before typing it.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    p.commit().await
                }
                .await;
                s.close().await;
                match r {
                    Ok(rep) => {
                        *self.purged.lock().unwrap() = true;
                        Ok((format!("purged {} (exported)", rep.removed), 0))
                    }
                    Err(e) => Err((e.to_string(), 0)),
                }
            }
            Op::Gate => {
                let s = session::connect(&cfg.profile, "gate", &cfg.operator)
                    .await
                    .map_err(|e| (e.to_string(), 0))?;
                let mgmt = Mgmt::new(&cfg.profile).unwrap();
                let ledger = std::sync::Arc::new(Ledger::open_stream(&s, cfg, &self.stream).await);
                // A producer on the test's own connection publishes through the entry exchange
                // the whole time: every confirmed id must end in a version queue.
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let producer = tokio::spawn(produce(
                    self.t.session.clone(),
                    ns.clone(),
                    self.produced.clone(),
                    stop.clone(),
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
                let target = if self.produced.lock().unwrap().len().is_multiple_of(2) {
                    gate_split(&[("v1", 50), ("v2", 50)])
                } else {
                    gate_split(&[("v1", 90), ("v2", 10)])
                };
                let r = gate::apply(
                    &hopback::ops::OpContext::of(&s, &mgmt, &ledger, cfg, hopback::ops::Via::Cli),
                    &gate::GateRequest {
                        namespace: ns.clone(),
                        target,
                        force_zero_consumers: true,
                        ..Default::default()
                    },
                )
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                let mut producer = producer;
                // A blocked connection never finishes a publish: don't wait for it forever.
                if tokio::time::timeout(Duration::from_secs(5), &mut producer)
                    .await
                    .is_err()
                {
                    producer.abort();
                }
                s.close().await;
                match r {
                    Ok(rep) => Ok((
                        format!(
                            "{} → {} verified={}",
                            rep.before.describe(),
                            rep.after.describe(),
                            rep.verified
                        ),
                        0,
                    )),
                    Err(f) => Err((f.to_string(), 0)),
                }
            }
            Op::Rollback => {
                let s = session::connect(&cfg.profile, "rollback", &cfg.operator)
                    .await
                    .map_err(|e| (e.to_string(), 0))?;
                let ledger = Arc::new(Ledger::open_stream(&s, cfg, &self.stream).await);
                let env = rollback::Env {
                    session: s.clone(),
                    mgmt: Mgmt::new(&cfg.profile).ok(),
                    cfg: cfg.clone(),
                    ns: ns.clone(),
                    ledger,
                };
                let rep =
                    rollback::run(&env, rollback_plan(), &rollback::AutoOperator::default()).await;
                s.close().await;
                // Refused before it acted (its intent could not be journaled): nothing changed.
                let rep = rep.map_err(|e| (e.to_string(), 0))?;
                let dups: u64 = rep
                    .steps
                    .iter()
                    .filter_map(|st| st.data.get("possible_duplicates").and_then(|v| v.as_u64()))
                    .sum();
                match &rep.outcome {
                    rollback::RollbackOutcome::Done => Ok(("done".into(), dups)),
                    o => Err((format!("{o:?}"), dups)),
                }
            }
            Op::Ledger => {
                let s = session::connect(&cfg.profile, "ledger", &cfg.operator)
                    .await
                    .map_err(|e| (e.to_string(), 0))?;
                let ledger = std::sync::Arc::new(Ledger::open_stream(&s, cfg, &self.stream).await);
                if !ledger.is_stream() {
                    s.close().await;
                    return Err((ledger.backend_description(), 0));
                }
                let mut first_err = None;
                loop {
                    let i = *self.next_event.lock().unwrap();
                    if i >= EVENTS {
                        break;
                    }
                    let mut e = ledger.event(EventKind::Note, Some(&ns));
                    e.reason = Some(format!("fault matrix event {i}"));
                    let id = e.id.to_string();
                    *self.next_event.lock().unwrap() += 1;
                    match ledger.append(e).await {
                        Ok(_) => self.appended_ok.lock().unwrap().push(id),
                        Err(f) => {
                            self.appended_err.lock().unwrap().push(id);
                            first_err = Some(f.message);
                            break;
                        }
                    }
                    let pause = if self.slow { 200 } else { 30 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                s.close().await;
                match first_err {
                    None => Ok((
                        format!("{} appended", self.appended_ok.lock().unwrap().len()),
                        0,
                    )),
                    Some(m) => Err((m, 0)),
                }
            }
        }
    }

    /// Find every id; afterwards the namespace's queues are empty.
    pub async fn account(&self) -> Accounting {
        let s = &self.t.session;
        let ns = &self.t.ns;
        let q = |x: &str| format!("{ns}.{x}");
        match self.op {
            Op::Replay | Op::Drain | Op::Rollback => {
                let mut places = Vec::new();
                for name in ["v1", "v2", "dlq", "parked", "unrouted"] {
                    places.push((name, drain_ids(s, &q(name)).await));
                }
                Accounting::from(&self.ids, &places)
            }
            Op::Purge => {
                let in_queue = drain_ids(s, &q("dlq")).await;
                let exported: Vec<String> = std::fs::read_to_string(&self.export)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| {
                        // The body of every test message is its id.
                        v.get("body_text")
                            .and_then(|x| x.as_str())
                            .map(str::to_string)
                    })
                    .collect();
                let purged = *self.purged.lock().unwrap();
                // The export is a copy taken before removing: an id in both places is not a
                // duplicate. A completed purge must leave none in the queue; a failed one must
                // leave all of them there.
                let mut a = Accounting::from(&self.ids, &[("dlq", in_queue.clone())]);
                let file: HashSet<&String> = exported.iter().collect();
                a.lost.retain(|id| !file.contains(id));
                a.where_.insert("export file".into(), exported.len());
                if purged {
                    assert!(
                        in_queue.is_empty(),
                        "purge reported done but {} remain",
                        in_queue.len()
                    );
                    assert_eq!(file.len(), self.ids.len(), "export incomplete");
                } else {
                    assert_eq!(in_queue.len(), self.ids.len(), "failed purge removed some");
                }
                a
            }
            Op::Gate => {
                let produced = self.produced.lock().unwrap().clone();
                let mut places = Vec::new();
                for name in ["v1", "v2", "unrouted"] {
                    places.push((name, drain_ids(s, &q(name)).await));
                }
                let mut a = Accounting::from(&produced, &places);
                // Publishes the producer saw no confirm for (a killed or blocked connection) may
                // still have arrived: they are not ours to count.
                let late = a.unexpected.len();
                a.unexpected.retain(|id| !id.contains("-p"));
                a.note = format!(
                    "{} confirmed publishes through the gate during the flip ({} unconfirmed arrived too)",
                    produced.len(),
                    late - a.unexpected.len()
                );
                a
            }
            Op::Ledger => {
                let reader = Ledger::open_stream(s, &self.t.cfg, &self.stream).await;
                let events = reader.read(StreamStart::First).await.unwrap();
                let mut counts: HashMap<String, usize> = HashMap::new();
                for e in &events {
                    *counts.entry(e.id.to_string()).or_default() += 1;
                }
                let ok = self.appended_ok.lock().unwrap().clone();
                let err = self.appended_err.lock().unwrap().clone();
                let mut a = Accounting {
                    expected: ok.len(),
                    ..Default::default()
                };
                a.lost = ok
                    .iter()
                    .filter(|id| !counts.contains_key(*id))
                    .cloned()
                    .collect();
                a.duplicated = counts.values().map(|n| (*n as u64).saturating_sub(1)).sum();
                let landed_late = err.iter().filter(|id| counts.contains_key(*id)).count();
                a.note = format!(
                    "{} confirmed, {} refused with an error ({} of those landed once the broker took them)",
                    ok.len(),
                    err.len(),
                    landed_late
                );
                a.where_.insert("stream".into(), events.len());
                a
            }
        }
    }

    /// The gate's bindings afterwards: (queue → count).
    pub async fn gate_bindings(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for b in self.mgmt.bindings_from(&self.t.ns).await.unwrap() {
            if b.destination_type == "queue" {
                *m.entry(b.destination).or_default() += 1;
            }
        }
        m
    }

    pub async fn cleanup(self) {
        let s = self.t.session.clone();
        let _ = hopback::ledger::delete_stream(&s, &self.stream).await;
        if let Ok(ch) = s.channel().await {
            let _ = ch
                .queue_delete(
                    hopback::topology::Namespace::convention(&self.t.ns)
                        .parked
                        .as_str()
                        .into(),
                    Default::default(),
                )
                .await;
        }
        let _ = std::fs::remove_file(&self.export);
        self.t.cleanup().await;
    }
}

/// Publish to the entry exchange until `stop`, recording the confirmed ids. Errors (a restart,
/// a blocked connection) just end the producer: only confirmed ids count.
async fn produce(
    s: Arc<Session>,
    ns: String,
    out: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let Ok(ch) = s.confirm_channel().await else {
        return;
    };
    let mut i = 0usize;
    // Unique across attempts (a stopped flip is re-run with a new producer).
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mut batch = Vec::new();
        for _ in 0..20 {
            let id = format!("{ns}-p{run}-{i:06}");
            i += 1;
            let Ok(c) = ch
                .basic_publish(
                    ns.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    id.as_bytes(),
                    BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2),
                )
                .await
            else {
                return;
            };
            batch.push((id, c));
        }
        for (id, c) in batch {
            match tokio::time::timeout(Duration::from_secs(3), c).await {
                Ok(Ok(lapin::Confirmation::Ack(None))) => out.lock().unwrap().push(id),
                _ => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// What the console's background tasks reported, timestamped.
#[derive(Debug, Clone)]
pub enum Seen {
    Snapshot { mgmt: bool, alarms: Vec<String> },
    Conn(ConnState),
    Failed(String),
}

/// The console's real background tasks (refresh with reconnects, tap, consumers) on `cfg`,
/// feeding a real [`hopback::app::state::AppState`] like the TUI's loop does.
pub struct Console {
    pub log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    pub state: Arc<Mutex<hopback::app::state::AppState>>,
    _tasks: hopback::app::tasks::Tasks,
    pump: tokio::task::JoinHandle<()>,
}

impl Console {
    pub async fn start(cfg: &Config) -> Console {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(256);
        let tasks = hopback::app::tasks::spawn(cfg, tx);
        let log: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
        let state = Arc::new(Mutex::new(hopback::app::state::AppState::new(
            cfg,
            hopback::app::keymap::Keymap::default(),
            chrono::Utc::now().timestamp_millis(),
        )));
        let (l2, s2) = (log.clone(), state.clone());
        let pump = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let seen = match &m {
                    Msg::Snapshot(s) => Some(Seen::Snapshot {
                        mgmt: s.mgmt_available,
                        alarms: s.broker_alarms.clone(),
                    }),
                    Msg::Conn(c) => Some(Seen::Conn(c.clone())),
                    Msg::RefreshFailed { error } => Some(Seen::Failed(error.clone())),
                    _ => None,
                };
                if let Some(seen) = seen {
                    l2.lock().unwrap().push((Instant::now(), seen));
                }
                let mut st = s2.lock().unwrap();
                st.now_ms = chrono::Utc::now().timestamp_millis();
                st.handle_msg(m);
            }
        });
        let c = Console {
            log,
            state,
            _tasks: tasks,
            pump,
        };
        c.wait_for(
            Instant::now() - Duration::from_secs(3600),
            Duration::from_secs(15),
            |s| matches!(s, Seen::Snapshot { .. }),
        )
        .await
        .expect("the console never got a first snapshot");
        c
    }

    /// The first entry after `since` matching `pred`, waiting up to `limit`.
    pub async fn wait_for(
        &self,
        since: Instant,
        limit: Duration,
        pred: impl Fn(&Seen) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((t, _)) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|(t, s)| *t >= since && pred(s))
            {
                return Some(*t);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Seconds from `fault_over` until the console is connected with fresh data again: a
    /// `Connected` after the fault (when `reconnect`), then a snapshot satisfying `fresh`.
    pub async fn recovered_after(
        &self,
        fault_over: Instant,
        reconnect: bool,
        fresh: impl Fn(bool, &[String]) -> bool,
    ) -> Option<f64> {
        let from = if reconnect {
            self.wait_for(fault_over, Duration::from_secs(30), |s| {
                matches!(s, Seen::Conn(ConnState::Connected { .. }))
            })
            .await?
        } else {
            fault_over
        };
        let t = self
            .wait_for(from, Duration::from_secs(30), |s| match s {
                Seen::Snapshot { mgmt, alarms } => fresh(*mgmt, alarms),
                _ => false,
            })
            .await?;
        Some(t.duration_since(fault_over).as_secs_f64())
    }

    /// Like [`Console::recovered_after`] for a fault that took the broker away from
    /// `fault_start` to `fault_over`: the console retries every ≤ 2 s, so it can be back before
    /// the test declares the fault over (`rabbitmqctl start_app` returns a moment after the
    /// listener opens). A reconnect inside the window (a `Connected` after a lost connection,
    /// both after `fault_start`) counts as recovered at `fault_over`, i.e. in 0 s.
    pub async fn recovered_after_outage(
        &self,
        fault_start: Instant,
        fault_over: Instant,
    ) -> Option<f64> {
        let back_in_window = {
            let log = self.log.lock().unwrap();
            let mut lost = false;
            let mut back = false;
            for (_, s) in log
                .iter()
                .filter(|(t, _)| *t >= fault_start && *t < fault_over)
            {
                match s {
                    Seen::Conn(ConnState::Connected { .. }) => back = lost,
                    Seen::Conn(_) => {
                        lost = true;
                        back = false;
                    }
                    _ => {}
                }
            }
            back
        };
        self.recovered_after(fault_over, !back_in_window, |_, _| true)
            .await
    }

    /// The header line as the TUI would draw it (200 columns).
    pub fn header_text(&self) -> String {
        let st = self.state.lock().unwrap();
        let theme = hopback::ui::theme::Theme::plain();
        let line = hopback::ui::widgets::header::header(&st, &theme, 200);
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// Close, through the management API, every connection named `… (OPERATOR)` — and the ledger
/// writers opened on them (`… (OPERATOR) · ledger`); returns how many.
pub async fn kill_by_mgmt(mgmt: &Mgmt, operator: &str) -> usize {
    let suffix = format!("({operator})");
    let Ok(conns) = mgmt.connections().await else {
        return 0;
    };
    let mut n = 0;
    for c in conns {
        if c.user_provided_name
            .as_deref()
            .is_some_and(|u| u.ends_with(&suffix) || u.contains(&format!("{suffix} · ")))
            && mgmt.close_connection(&c.name, "fault test").await.is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Check the accounting, print it, and record the cell.
#[allow(clippy::too_many_arguments)]
pub fn check_and_record(
    op: Op,
    fault: &str,
    first: &Attempt,
    last: &Attempt,
    acc: &Accounting,
    recovered_s: Option<f64>,
    extra: &str,
) {
    let result = if first.ok {
        "completed".to_string()
    } else {
        format!(
            "stopped: {}; re-run {}",
            first.message.chars().take(160).collect::<String>(),
            if last.ok { "completed" } else { "FAILED" }
        )
    };
    let reported_dups = first.possible_duplicates
        + if first.ok {
            0
        } else {
            last.possible_duplicates
        };
    eprintln!(
        "[{fault}] {}: {result}\n  accounting {:?} lost {} dup {} (reported possible {reported_dups}) unexpected {} recovered {:?} {}",
        op.name(),
        acc.where_,
        acc.lost.len(),
        acc.duplicated,
        acc.unexpected.len(),
        recovered_s,
        acc.note
    );
    record::outcome(&Outcome {
        operation: op.name().into(),
        fault: fault.into(),
        lost: acc.lost.len() as u64,
        duplicated: acc.duplicated,
        recovered_s,
        result: result.clone(),
        note: [acc.note.as_str(), extra]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    });
    assert!(
        acc.lost.is_empty(),
        "{} under {fault}: lost {:?}",
        op.name(),
        &acc.lost[..acc.lost.len().min(10)]
    );
    assert!(
        acc.unexpected.is_empty(),
        "unexpected ids {:?}",
        acc.unexpected
    );
    if op == Op::Ledger {
        assert_eq!(acc.duplicated, 0, "ledger: an event id twice in the stream");
    } else {
        assert!(
            acc.duplicated <= reported_dups,
            "{} duplicates but only {reported_dups} reported as possible",
            acc.duplicated
        );
    }
    assert!(last.ok, "{} never completed: {}", op.name(), last.message);
    if !first.ok {
        assert!(
            !first.message.trim().is_empty(),
            "an error that says nothing"
        );
    }
}
