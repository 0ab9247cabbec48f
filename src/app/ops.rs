//! The console's operations runner: executes the [`OpRequest`]s the operation views ask for, in
//! tokio tasks, and answers with [`OpMsg`]s on the app loop's channel — the UI never awaits the
//! network. It calls the same headless operations the CLI uses (`ops::gate::apply`, the mover,
//! `ops::purge`, `broker::browse`, the ledger and its projections, `ops::rollback`), so the
//! console and `hopback gate|dlq|rollback|timeline` journal and behave identically.
//!
//! It also keeps the live ledger feed (a `StreamStart::Next` subscription, re-opened with backoff)
//! so two operators see each other's actions, and implements the rollback engine's
//! [`Operator`] over channels: decision points become a dialog, the operator's button press
//! answers the engine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::protocol::{OpMsg, OpRequest, ReplayScope, ReplayTarget, move_summary};
use super::state::Msg;
use crate::broker::browse::{browse_page, load_message};
use crate::broker::mgmt::Mgmt;
use crate::broker::session::{Session, backoff_delay, connect};
use crate::broker::stats::is_quorum_with_limit;
use crate::config::{Config, VersionQueues};
use crate::drill::DrillHandle;
use crate::error::Failure;
use crate::ledger::event::{EventKind, Outcome};
use crate::ledger::projection::{Timeline, TimelineFilter};
use crate::ledger::{Ledger, StreamStart};
use crate::model::deadletter::{Condition, Filter, export_document};
use crate::ops::mover::{self, MoveControl, MoveCounts, MoveSpec, StopReason, Target};
use crate::ops::purge::{self, PreparedPurge};
use crate::ops::rollback::{self, Decision, DecisionPoint, Env, Operator, Update};
use crate::ops::{gate, plan};
use crate::text::sanitize;

/// Timeline entries read when the view opens.
pub const TIMELINE_LOAD_MAX: usize = 2_000;
/// Verification window of a rollback started from the console.
pub const ROLLBACK_VERIFY_WINDOW: Duration = Duration::from_secs(10);

fn failure_text(f: &Failure) -> String {
    match f.hint.as_deref().filter(|h| !h.is_empty()) {
        None => sanitize(&f.message).into_owned(),
        Some(h) => format!("{} — {}", sanitize(&f.message), sanitize(h)),
    }
}

#[derive(Default)]
struct Shared {
    conn: tokio::sync::Mutex<Option<(Arc<Session>, Arc<Ledger>)>>,
    mover: Mutex<Option<MoveControl>>,
    purge: tokio::sync::Mutex<Option<PreparedPurge>>,
    decision: Mutex<Option<oneshot::Sender<Decision>>>,
    /// The drill running in this console, told when the operator investigates its namespace.
    drill: Mutex<Option<Arc<DrillHandle>>>,
    /// Moves (replays, drains) running, from start to journaled: quitting waits for 0.
    moves_running: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Executes the operation views' requests (cheap to clone).
#[derive(Clone)]
pub struct OpsRunner {
    cfg: Config,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl OpsRunner {
    /// A runner answering on `tx`.
    pub fn new(cfg: &Config, tx: mpsc::Sender<Msg>) -> Self {
        Self {
            cfg: cfg.clone(),
            tx,
            shared: Arc::new(Shared::default()),
        }
    }

    async fn send(&self, m: OpMsg) {
        let _ = self.tx.send(Msg::Op(m)).await;
    }

    /// The console's operations session and ledger (re-established when the connection died).
    async fn conn(&self) -> Result<(Arc<Session>, Arc<Ledger>), String> {
        let mut g = self.shared.conn.lock().await;
        if let Some((s, l)) = g.as_ref()
            && s.is_connected()
        {
            return Ok((s.clone(), l.clone()));
        }
        let s = connect(&self.cfg.profile, "console ops", &self.cfg.operator)
            .await
            .map_err(|e| failure_text(&Failure::from(e)))?;
        let l = Arc::new(Ledger::open(&s, &self.cfg).await);
        *g = Some((s.clone(), l.clone()));
        Ok((s, l))
    }

    fn mgmt(&self) -> Result<Mgmt, String> {
        Mgmt::new(&self.cfg.profile).map_err(|e| {
            format!(
                "the management API client cannot be built: {}",
                sanitize(&e.to_string())
            )
        })
    }

    /// Is a replay or drain running (or still journaling)?
    pub fn moves_running(&self) -> bool {
        self.shared
            .moves_running
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    /// Stop a running replay or drain the way `x` does (outstanding confirms finish and are
    /// acked, the rest stays in the source) and wait, at most `limit`, until it is journaled —
    /// so quitting (or SIGTERM/SIGHUP) never leaves confirmed copies unacked. True when none
    /// is left running.
    pub async fn stop_moves_and_wait(&self, limit: Duration) -> bool {
        if let Some(c) = lock(&self.shared.mover).as_ref() {
            c.stop();
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.moves_running() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    fn refuse_read_only(&self, what: &str) -> Option<String> {
        self.cfg.profile.read_only.then(|| {
            format!(
                "refusing to {what}: profile `{}` is read-only (nothing was changed)",
                sanitize(&self.cfg.profile.name)
            )
        })
    }

    /// Start the live ledger feed (events appended by anyone, from now on).
    pub fn spawn_ledger_feed(&self) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                let sub = match me.conn().await {
                    Ok((_, l)) => l
                        .subscribe(StreamStart::Next)
                        .await
                        .map_err(|f| failure_text(&f)),
                    Err(e) => Err(e),
                };
                match sub {
                    Ok(sub) => {
                        attempt = 0;
                        let mut rx = sub.into_channel();
                        while let Some(r) = rx.recv().await {
                            match r {
                                Ok(e) => me.send(OpMsg::Ledger(Box::new(e))).await,
                                Err(f) => {
                                    me.send(OpMsg::LedgerDown(failure_text(&f))).await;
                                    break;
                                }
                            }
                            if me.tx.is_closed() {
                                return;
                            }
                        }
                    }
                    Err(e) => me.send(OpMsg::LedgerDown(e)).await,
                }
                if me.tx.is_closed() {
                    return;
                }
                attempt += 1;
                tokio::time::sleep(backoff_delay(attempt)).await;
            }
        })
    }

    /// Poll a running drill's status for the drill panel.
    pub fn spawn_drill_watch(&self, handle: Arc<DrillHandle>) -> JoinHandle<()> {
        *lock(&self.shared.drill) = Some(handle.clone());
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.send(OpMsg::Drill(Box::new(handle.status()))).await;
                if me.tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// Execute one request (in the background; answers arrive as messages).
    pub fn handle(&self, req: OpRequest) {
        let looked_at = match &req {
            OpRequest::DlqLoad { ns, .. } | OpRequest::DlqInspect { ns, .. } => Some(ns.as_str()),
            OpRequest::TimelineLoad { ns } => ns.as_deref(),
            _ => None,
        };
        if let (Some(ns), Some(d)) = (looked_at, lock(&self.shared.drill).as_ref()) {
            d.note_investigation(ns);
        }
        match req {
            OpRequest::Refresh => {}
            OpRequest::MovePause => {
                if let Some(c) = lock(&self.shared.mover).as_ref() {
                    c.pause();
                }
            }
            OpRequest::MoveResume => {
                if let Some(c) = lock(&self.shared.mover).as_ref() {
                    c.resume();
                }
            }
            OpRequest::MoveStop => {
                if let Some(c) = lock(&self.shared.mover).as_ref() {
                    c.stop();
                }
            }
            OpRequest::RollbackDecide(d) => {
                if let Some(tx) = lock(&self.shared.decision).take() {
                    let _ = tx.send(d);
                }
            }
            other => {
                let me = self.clone();
                tokio::spawn(async move { me.run(other).await });
            }
        }
    }

    async fn run(&self, req: OpRequest) {
        match req {
            OpRequest::GateApply {
                ns,
                target,
                force_zero_consumers,
            } => {
                let result = self.gate_apply(&ns, target, force_zero_consumers).await;
                let event_id = result.as_ref().ok().and_then(|r| r.event.as_ref());
                let event_id = event_id.map(|e| e.id.to_string());
                self.send(OpMsg::GateApplied {
                    ns,
                    result,
                    event_id,
                })
                .await;
            }
            OpRequest::GatePreview {
                ns,
                target,
                force_zero_consumers,
            } => {
                let result = match (self.conn().await, self.mgmt()) {
                    (Ok((s, l)), Ok(mgmt)) => {
                        let req = gate::GateRequest {
                            namespace: ns.clone(),
                            target: target.clone(),
                            force_zero_consumers,
                            dry_run: true,
                            ..Default::default()
                        };
                        gate::apply(&s, &mgmt, &l, &self.cfg, &req)
                            .await
                            .map(Box::new)
                            .map_err(|f| failure_text(&f))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                self.send(OpMsg::GatePreview { ns, target, result }).await;
            }
            OpRequest::ReplayUnrouted { ns } => {
                if let Some(why) = self.refuse_read_only("replay the unrouted queue") {
                    return self.move_refused(&ns, why).await;
                }
                let adoption = self.cfg.profile.namespace(&ns, &self.cfg.alerts);
                let mut spec = MoveSpec::replay_unrouted(&ns);
                spec.source_queue = adoption.unrouted.clone();
                spec.target = Target::Exchange(adoption.entry_exchange.clone());
                spec.connection_purpose = "replay".into();
                let title = format!(
                    "replay {} through the entry exchange {}",
                    sanitize(&adoption.unrouted),
                    sanitize(&adoption.entry_exchange)
                );
                self.run_moves(&ns, title, vec![spec], EventKind::Move)
                    .await;
            }
            OpRequest::DlqLoad {
                ns,
                page,
                page_size,
            } => {
                let (depth, result) = self.dlq_page(&ns, page, page_size).await;
                self.send(OpMsg::DlqPage {
                    ns,
                    page,
                    depth,
                    result,
                })
                .await;
            }
            OpRequest::DlqInspect { ns, position } => {
                let result = self.load(&ns, position).await.map(|m| m.map(Box::new));
                self.send(OpMsg::Inspected {
                    ns,
                    position,
                    result,
                })
                .await;
            }
            OpRequest::DlqExport {
                ns,
                position,
                message,
            } => {
                let m = match message {
                    Some(m) => Ok(Some(*m)),
                    None => self.load(&ns, position).await,
                };
                let queue = self.cfg.profile.namespace(&ns, &self.cfg.alerts).dlq;
                let r = match m {
                    Ok(Some(m)) => export_one(&queue, &m),
                    Ok(None) => Err(format!("no message at position {position} any more")),
                    Err(e) => Err(e),
                };
                self.send(OpMsg::Exported(r)).await;
            }
            OpRequest::DlqReplay { ns, scope, target } => {
                if let Some(why) = self.refuse_read_only("replay dead letters") {
                    return self.move_refused(&ns, why).await;
                }
                let adoption = self.cfg.profile.namespace(&ns, &self.cfg.alerts);
                let t = match &target {
                    ReplayTarget::Origin => Target::Origin,
                    ReplayTarget::Entry => Target::Exchange(adoption.entry_exchange.clone()),
                    ReplayTarget::Version(v) => Target::Queue(match &adoption.version_queues {
                        VersionQueues::List(m) => {
                            m.get(v).cloned().unwrap_or_else(|| format!("{ns}.{v}"))
                        }
                        _ => format!("{ns}.{v}"),
                    }),
                };
                let mut base = MoveSpec::replay(&ns, t.clone());
                base.source_queue = adoption.dlq.clone();
                base.connection_purpose = "replay".into();
                let (what, specs) = match scope {
                    ReplayScope::All => ("all dead letters".to_string(), vec![base]),
                    ReplayScope::Filter(f) => (
                        format!("dead letters matching {}", describe_filter(&f)),
                        vec![MoveSpec { filter: f, ..base }],
                    ),
                    ReplayScope::Ids(ids) => (
                        format!("{} selected dead letter(s)", ids.len()),
                        ids.into_iter()
                            .map(|id| MoveSpec {
                                filter: Filter {
                                    conditions: vec![Condition::MessageId(id)],
                                },
                                limit: Some(1),
                                ..base.clone()
                            })
                            .collect(),
                    ),
                };
                let title = format!("replay {what} to {}", t.describe());
                self.run_moves(&ns, title, specs, EventKind::Replay).await;
            }
            OpRequest::PurgePrepare { ns } => {
                let r = self.purge_prepare(&ns).await;
                self.send(OpMsg::PurgePrepared(r)).await;
            }
            OpRequest::PurgeCommit => {
                let r = self.purge_commit().await;
                let event_id = r.as_ref().ok().map(|x| x.2.clone());
                let result = r.map(|(n, p, _)| (n, p));
                self.send(OpMsg::PurgeDone { result, event_id }).await;
            }
            OpRequest::PurgeAbort => {
                if let Some(p) = self.shared.purge.lock().await.take() {
                    p.abort().await;
                }
            }
            OpRequest::TimelineLoad { ns } => {
                let r = self.timeline(ns).await;
                self.send(OpMsg::Timeline(r)).await;
            }
            OpRequest::Note { ns, text } => {
                let r = match self.conn().await {
                    Ok((_, l)) => l
                        .append(l.event(EventKind::Note, ns.as_deref()).reason(text))
                        .await
                        .map(|e| (e.short_id(), e.id.to_string()))
                        .map_err(|f| failure_text(&f)),
                    Err(e) => Err(e),
                };
                let event_id = r.as_ref().ok().map(|x| x.1.clone());
                let result = r.map(|x| x.0);
                self.send(OpMsg::NoteAdded { result, event_id }).await;
            }
            OpRequest::RollbackCheck { ns } => {
                let candidates = self
                    .unfinished_rollbacks(Some(&ns))
                    .await
                    .into_iter()
                    .map(|(_, id, d)| (id, d))
                    .collect();
                self.send(OpMsg::RollbackResumable { ns, candidates }).await;
            }
            OpRequest::RollbackScan => {
                let mut found = self.unfinished_rollbacks(None).await;
                // Only namespaces that still exist (a deleted test or drill namespace is noise).
                if let Ok((s, _)) = self.conn().await {
                    let mut live = Vec::new();
                    for f in found {
                        let entry = self
                            .cfg
                            .profile
                            .namespace(&f.0, &self.cfg.alerts)
                            .entry_exchange;
                        if s.exchange_exists(&entry).await.unwrap_or(false) {
                            live.push(f);
                        }
                    }
                    found = live;
                }
                if !found.is_empty() {
                    self.send(OpMsg::UnfinishedRollbacks(found)).await;
                }
            }
            OpRequest::RollbackStart { ns, from, to } => {
                if let Some(why) = self.refuse_read_only("roll back") {
                    return self.send(OpMsg::RollbackFailed(why)).await;
                }
                match self.conn().await {
                    Ok((s, l)) => {
                        let env = self.env(&s, &l, &ns);
                        let plan = plan::default_plan(&from, &to, ROLLBACK_VERIFY_WINDOW);
                        let op = self.operator();
                        let report = rollback::run(&env, plan, &op).await;
                        self.send(OpMsg::RollbackDone(Box::new(report))).await;
                    }
                    Err(e) => self.send(OpMsg::RollbackFailed(e)).await,
                }
            }
            OpRequest::RollbackResume { id } => {
                if let Some(why) = self.refuse_read_only("resume a rollback") {
                    return self.send(OpMsg::RollbackFailed(why)).await;
                }
                match self.conn().await {
                    Ok((s, l)) => {
                        let op = self.operator();
                        let r = rollback::resume(|ns| self.env(&s, &l, ns), &l, &id, &op).await;
                        match r {
                            Ok(report) => self.send(OpMsg::RollbackDone(Box::new(report))).await,
                            Err(e) => self.send(OpMsg::RollbackFailed(e)).await,
                        }
                    }
                    Err(e) => self.send(OpMsg::RollbackFailed(e)).await,
                }
            }
            OpRequest::WritePostmortem { path, text } => {
                let r = std::fs::write(&path, text)
                    .map(|_| std::fs::canonicalize(&path).unwrap_or(path.clone()))
                    .map_err(|e| format!("{}: {e}", path.display()));
                self.send(OpMsg::PostmortemWritten(r)).await;
            }
            OpRequest::Refresh
            | OpRequest::MovePause
            | OpRequest::MoveResume
            | OpRequest::MoveStop
            | OpRequest::RollbackDecide(_) => {}
        }
    }

    async fn gate_apply(
        &self,
        ns: &str,
        target: crate::model::gate::GateSplit,
        force_zero_consumers: bool,
    ) -> Result<Box<gate::ApplyReport>, String> {
        if let Some(why) = self.refuse_read_only("change the gate") {
            return Err(why);
        }
        let (s, l) = self.conn().await?;
        let mgmt = self.mgmt()?;
        let req = gate::GateRequest {
            namespace: ns.to_string(),
            target,
            reason: Some("console gate panel".into()),
            force_zero_consumers,
            dry_run: false,
            extra_params: [("via".to_string(), serde_json::json!("console"))]
                .into_iter()
                .collect(),
        };
        gate::apply(&s, &mgmt, &l, &self.cfg, &req)
            .await
            .map(Box::new)
            .map_err(|f| failure_text(&f))
    }

    async fn quorum_flag(&self, queue: &str) -> bool {
        let Ok(m) = self.mgmt() else { return false };
        match m.queues().await {
            Ok(qs) => is_quorum_with_limit(qs.iter().find(|q| q.name == queue)),
            Err(_) => false,
        }
    }

    async fn dlq_page(
        &self,
        ns: &str,
        page: u64,
        page_size: u64,
    ) -> (
        Option<u64>,
        Result<Vec<crate::model::deadletter::MessageView>, String>,
    ) {
        let queue = self.cfg.profile.namespace(ns, &self.cfg.alerts).dlq;
        let s = match self.conn().await {
            Ok((s, _)) => s,
            Err(e) => return (None, Err(e)),
        };
        let depth = match s.passive_queue(&queue).await {
            Ok(Some(c)) => u64::from(c.ready),
            Ok(None) => {
                return (
                    None,
                    Err(format!(
                        "DLQ `{}` does not exist — create the namespace with `hopback init`",
                        sanitize(&queue)
                    )),
                );
            }
            Err(e) => return (None, Err(failure_text(&Failure::from(e)))),
        };
        let quorum = self.quorum_flag(&queue).await;
        let r = browse_page(&s, &queue, page, page_size.max(1), quorum, false)
            .await
            .map_err(|e| failure_text(&Failure::from(e)));
        (Some(depth), r)
    }

    async fn load(
        &self,
        ns: &str,
        position: u64,
    ) -> Result<Option<crate::model::deadletter::MessageView>, String> {
        let queue = self.cfg.profile.namespace(ns, &self.cfg.alerts).dlq;
        let (s, _) = self.conn().await?;
        let quorum = self.quorum_flag(&queue).await;
        load_message(&s, &queue, position, quorum, false)
            .await
            .map_err(|e| failure_text(&Failure::from(e)))
    }

    async fn move_refused(&self, ns: &str, why: String) {
        self.send(OpMsg::MoveDone {
            ns: ns.to_string(),
            summary: why,
            failed: true,
            event_id: None,
        })
        .await;
    }

    /// Run moves one after another on one control (pause/stop apply to all), report progress,
    /// journal the total.
    async fn run_moves(&self, ns: &str, title: String, specs: Vec<MoveSpec>, kind: EventKind) {
        let parts = specs.len();
        let control = MoveControl::new();
        self.shared
            .moves_running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *lock(&self.shared.mover) = Some(control.clone());
        self.send(OpMsg::MoveStarted {
            ns: ns.to_string(),
            title: title.clone(),
            parts,
        })
        .await;
        let mut total = MoveCounts::default();
        let mut last_stop = StopReason::Drained;
        let mut reports = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if control.state() == mover::RunState::Stopped {
                last_stop = StopReason::Stopped;
                break;
            }
            let mut rx = control.subscribe();
            let fwd_tx = self.tx.clone();
            let part = i + 1;
            let fwd = tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let p = rx.borrow_and_update().clone();
                    if let Some(p) = p
                        && fwd_tx
                            .send(Msg::Op(OpMsg::MoveProgress { progress: p, part }))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let r = mover::run(&self.cfg.profile, &self.cfg.operator, spec, &control).await;
            fwd.abort();
            let c = &r.counts;
            total.moved += c.moved;
            total.parked += c.parked;
            total.skipped_by_filter += c.skipped_by_filter;
            total.no_target += c.no_target;
            total.refused_replays += c.refused_replays;
            total.returned += c.returned;
            total.possible_duplicates += c.possible_duplicates;
            total.reconnects += c.reconnects;
            last_stop = r.stop.clone();
            let failed = r.failed();
            reports.push(r);
            if failed {
                break;
            }
        }
        *lock(&self.shared.mover) = None;
        // A selection replays one id per run: "held" counts of each run are the other messages.
        let mut summary_report = reports.pop().unwrap_or_else(|| mover::MoveReport {
            spec: specs
                .first()
                .cloned()
                .unwrap_or_else(|| MoveSpec::replay(ns, Target::Origin)),
            counts: MoveCounts::default(),
            initial_depth: 0,
            stop: last_stop.clone(),
            elapsed_s: 0.0,
        });
        if parts > 1 {
            total.skipped_by_filter = 0;
        }
        summary_report.counts = total.clone();
        summary_report.stop = last_stop.clone();
        let summary = format!("{}: {}", sanitize(&title), move_summary(&summary_report));
        let failed = matches!(last_stop, StopReason::Failed(_));
        let outcome = match &last_stop {
            StopReason::Failed(_) => Outcome::Failed,
            StopReason::Stopped => Outcome::Cancelled,
            _ => Outcome::Ok,
        };
        let journal = match self.conn().await {
            Ok((_, l)) => {
                let spec = specs.first();
                let mut e = l
                    .event(kind, Some(ns))
                    .params(serde_json::json!({
                        "source": spec.map(|s| s.source_queue.clone()),
                        "target": spec.map(|s| s.target.clone()),
                        "filter": spec.map(|s| s.filter.clone()),
                        "runs": parts,
                        "via": "console",
                    }))
                    .after(serde_json::to_value(&total).unwrap_or_default())
                    .outcome(outcome);
                if let StopReason::Failed(w) = &last_stop {
                    e = e.reason(w.clone());
                }
                l.append(e)
                    .await
                    .map(|e| e.id.to_string())
                    .map_err(|f| failure_text(&f))
            }
            Err(e) => Err(e),
        };
        let (summary, event_id) = match journal {
            Ok(id) => (summary, Some(id)),
            Err(e) => (format!("{summary} — NOT JOURNALED: {e}"), None),
        };
        self.shared
            .moves_running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.send(OpMsg::MoveDone {
            ns: ns.to_string(),
            summary,
            failed,
            event_id,
        })
        .await;
    }

    async fn purge_prepare(&self, ns: &str) -> Result<(u64, PathBuf), String> {
        if let Some(why) = self.refuse_read_only("purge dead letters") {
            return Err(why);
        }
        let queue = self.cfg.profile.namespace(ns, &self.cfg.alerts).dlq;
        let (s, _) = self.conn().await?;
        let quorum = self.quorum_flag(&queue).await;
        let path = purge::default_export_path(&queue);
        let p = purge::prepare(s, &queue, &path, quorum, false)
            .await
            .map_err(|e| failure_text(&Failure::from(e)))?;
        let count = p.count;
        let mut slot = self.shared.purge.lock().await;
        if let Some(old) = slot.take() {
            old.abort().await;
        }
        *slot = Some(p);
        // Journal what the purge is about (and its export) only when it happens: see commit.
        let _ = ns;
        Ok((count, path))
    }

    async fn purge_commit(&self) -> Result<(u64, PathBuf, String), String> {
        let Some(p) = self.shared.purge.lock().await.take() else {
            return Err("nothing prepared to purge (it was cancelled)".into());
        };
        let queue = p.queue.clone();
        let path = p.export_path.clone();
        let count = p.count;
        let ns = self
            .cfg
            .profile
            .namespaces
            .iter()
            .find(|(_, a)| a.dlq == queue)
            .map(|(n, _)| n.clone())
            .or_else(|| queue.strip_suffix(".dlq").map(str::to_string))
            .unwrap_or_else(|| queue.clone());
        let r = p.commit().await;
        let (outcome, after, reason) = crate::ops::purge::PurgeReport::journal_fields(&r, count);
        let journaled = match self.conn().await {
            Ok((_, l)) => {
                let mut e = l
                    .event(EventKind::Purge, Some(&ns))
                    .params(serde_json::json!({"queue": queue, "export": path, "via": "console"}))
                    .after(after)
                    .outcome(outcome);
                if let Some(r) = reason {
                    e = e.reason(r);
                }
                l.append(e)
                    .await
                    .map(|e| e.id.to_string())
                    .map_err(|f| failure_text(&f))
            }
            Err(e) => Err(e),
        };
        let report = r.map_err(|e| failure_text(&Failure::from(e)))?;
        let event_id = journaled.map_err(|e| {
            format!(
                "purged {} message(s) (export {}), but could not journal it: {e}",
                report.removed,
                report.export_path.display()
            )
        })?;
        Ok((report.removed, report.export_path, event_id))
    }

    async fn timeline(
        &self,
        ns: Option<String>,
    ) -> Result<Vec<crate::ledger::projection::TimelineEntry>, String> {
        let (_, l) = self.conn().await?;
        let mut t = Timeline::new(TimelineFilter {
            namespace: ns,
            since: None,
            max_entries: TIMELINE_LOAD_MAX,
        });
        l.fold(StreamStart::First, |e| t.push(&e))
            .await
            .map_err(|f| failure_text(&f))?;
        Ok(t.into_entries())
    }

    /// Rollbacks in the ledger that never finished: (namespace, id, description).
    async fn unfinished_rollbacks(&self, ns: Option<&str>) -> Vec<(String, String, String)> {
        let Ok((_, l)) = self.conn().await else {
            return Vec::new();
        };
        let mut by_id: std::collections::BTreeMap<String, Vec<crate::ledger::event::Event>> =
            Default::default();
        let _ = l
            .fold(StreamStart::First, |e| {
                if ns.is_none_or(|n| e.namespace.as_deref() == Some(n))
                    && let Some(id) = rollback::rollback_id_of(&e)
                {
                    by_id.entry(id).or_default().push(e);
                }
            })
            .await;
        let mut out = Vec::new();
        for (id, events) in by_id {
            let Ok(p) = rollback::progress_from_events(&events) else {
                continue;
            };
            if p.finished.is_some() {
                continue;
            }
            let started = events.first().map(|e| {
                format!(
                    "{} by {}",
                    e.ts.format("%Y-%m-%d %H:%M UTC"),
                    sanitize(&e.operator)
                )
            });
            let at = p
                .interrupted
                .or_else(|| (0..p.plan.steps.len()).find(|i| !p.completed.contains(i)));
            let step = at
                .and_then(|i| {
                    p.plan
                        .steps
                        .get(i)
                        .map(|s| format!("step {} ({})", i + 1, sanitize(&s.title)))
                })
                .unwrap_or_else(|| "the end".into());
            out.push((
                p.namespace.clone(),
                id.clone(),
                format!(
                    "rollback {id} {} → {}, started {}, stopped at {step}",
                    sanitize(&p.plan.from),
                    sanitize(&p.plan.to),
                    started.unwrap_or_default()
                ),
            ));
        }
        out
    }

    fn env(&self, s: &Arc<Session>, l: &Arc<Ledger>, ns: &str) -> Env {
        Env {
            session: s.clone(),
            mgmt: self.mgmt().ok(),
            cfg: self.cfg.clone(),
            ns: ns.to_string(),
            ledger: l.clone(),
        }
    }

    fn operator(&self) -> ChannelOperator {
        let (utx, mut urx) = mpsc::unbounded_channel::<OpMsg>();
        let tx = self.tx.clone();
        // Updates are forwarded in order and never dropped (observe() cannot await).
        tokio::spawn(async move {
            while let Some(m) = urx.recv().await {
                if tx.send(Msg::Op(m)).await.is_err() {
                    return;
                }
            }
        });
        ChannelOperator {
            updates: utx,
            shared: self.shared.clone(),
        }
    }
}

fn describe_filter(f: &Filter) -> String {
    f.conditions
        .iter()
        .map(|c| match c {
            Condition::Reason(r) => format!("reason={}", sanitize(r)),
            Condition::Origin(o) => format!("origin={}", sanitize(o)),
            Condition::Header(k, v) => format!("{}={}", sanitize(k), sanitize(v)),
            Condition::BodyContains(t) => format!("body~{}", sanitize(t)),
            Condition::MessageId(id) => format!("message_id={}", sanitize(id)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write one message's export document to `DATA_DIR/exports/QUEUE-POS-TIME.json`.
fn export_one(queue: &str, m: &crate::model::deadletter::MessageView) -> Result<PathBuf, String> {
    let base = purge::default_export_path(queue);
    let path = base.with_file_name(format!(
        "{}-{}.json",
        base.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "message".into()),
        m.position
    ));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&export_document(queue, m))
        .map_err(|e| format!("cannot encode the export: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The rollback engine's operator in the console: decision points go to the rollback view as a
/// dialog; the answer comes back through [`OpRequest::RollbackDecide`]. If the console closes,
/// the pending decision is answered Abort (the engine then leaves a consistent state).
struct ChannelOperator {
    updates: mpsc::UnboundedSender<OpMsg>,
    shared: Arc<Shared>,
}

impl Operator for ChannelOperator {
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            *lock(&self.shared.decision) = Some(tx);
            if self
                .updates
                .send(OpMsg::RollbackDecision(Box::new(point.clone())))
                .is_err()
            {
                return Decision::Abort;
            }
            rx.await.unwrap_or(Decision::Abort)
        })
    }
    fn observe(&self, update: &Update) {
        let _ = self.updates.send(OpMsg::Rollback(Box::new(update.clone())));
    }
}
