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

use crate::app::protocol::Failed;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::protocol::{OpMsg, OpRequest, ReplayScope, ReplayTarget, move_summary};
use super::state::Msg;
use crate::broker::browse::browse_page;
use crate::broker::mgmt::Mgmt;
use crate::broker::mover::StopReason;
use crate::broker::session::{Session, backoff_delay, connect, lean_frames};
use crate::broker::stats::browse_guard;
use crate::config::Config;
use crate::drill::DrillHandle;
use crate::ledger::projection::{Timeline, TimelineFilter};
use crate::ledger::{Ledger, Live, StreamStart};
use crate::model::deadletter::export_document;
use crate::ops::purge::{self, PreparedPurge};
use crate::ops::replay::{self, Destination, ReplayControl, ReplayRequest, Selection, Source};
use crate::ops::rollback::{self, Decision, DecisionPoint, Env, Operator, Update};
use crate::ops::{OpContext, Via, note};
use crate::ops::{gate, plan};
use crate::text::sanitize;
use crate::topology::Namespace;

/// Timeline entries read when the view opens.
pub const TIMELINE_LOAD_MAX: usize = 2_000;
/// Verification window of a rollback started from the console.
pub const ROLLBACK_VERIFY_WINDOW: Duration = Duration::from_secs(10);

fn broker_text(e: &crate::broker::session::BrokerError) -> String {
    crate::text::with_hint(&e.to_string(), &e.hint())
}

fn ledger_text(e: &crate::ledger::LedgerError) -> String {
    crate::text::with_hint(&e.message, &e.hint)
}

#[derive(Default)]
struct Shared {
    conn: tokio::sync::Mutex<Option<(Arc<Session>, Arc<Ledger>)>>,
    mover: Mutex<Option<ReplayControl>>,
    purge: tokio::sync::Mutex<Option<PreparedPurge>>,
    decision: Mutex<Option<oneshot::Sender<Decision>>>,
    /// The running rollback's stop signal (`x`); a new one per rollback.
    rollback_stop: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// The drill running in this console, told when the operator investigates its namespace.
    drill: Mutex<Option<Arc<DrillHandle>>>,
    /// Moves (replays, drains) running, from start to journaled: quitting waits for 0.
    moves_running: std::sync::atomic::AtomicUsize,
    /// The console has closed: every decision a rollback reaches from now on is answered Abort.
    closing: std::sync::atomic::AtomicBool,
}

/// How often the console looks for broker-engine moves left behind.
const STALE_MOVE_EVERY: Duration = Duration::from_secs(30);

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

/// Bytes read from the end of the log file for the log view.
const LOG_TAIL_BYTES: u64 = 512 * 1024;

/// The last lines of the log file, each made terminal-safe (log lines quote broker text).
fn read_log_tail(path: &std::path::Path) -> Result<(String, Vec<String>), Failed> {
    use std::io::{Read, Seek, SeekFrom};
    let shown = sanitize(&path.display().to_string()).into_owned();
    let open = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok((len > LOG_TAIL_BYTES, bytes))
    });
    let (cut, bytes) = open.map_err(|e| {
        Failed::from(format!(
            "cannot read the log file {shown}: {e} — logging may be off (HOPBACK_LOG_FILE, HOPBACK_LOG)"
        ))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if cut && !lines.is_empty() {
        lines.remove(0); // the first line is cut in the middle
    }
    let skip = lines
        .len()
        .saturating_sub(super::panels::log::LOG_LINES_MAX);
    let lines = lines[skip..]
        .iter()
        .map(|l| sanitize(l).into_owned())
        .collect();
    Ok((shown, lines))
}

/// Run `read`, and once more when it `failed` because a message was too large for the lean
/// frames the console starts with (they are off now, see `broker::session::use_lean_frames`):
/// the next connection reads it.
async fn again_if_frames_grew<T, F: std::future::Future<Output = T>>(
    read: impl Fn() -> F,
    failed: impl Fn(&T) -> bool,
) -> T {
    let lean = lean_frames();
    let r = read().await;
    if lean && !lean_frames() && failed(&r) {
        read().await
    } else {
        r
    }
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
    async fn conn(&self) -> Result<(Arc<Session>, Arc<Ledger>), Failed> {
        let mut g = self.shared.conn.lock().await;
        if let Some((s, l)) = g.as_ref()
            && s.is_connected()
        {
            return Ok((s.clone(), l.clone()));
        }
        let s = connect(&self.cfg.profile, "console ops", &self.cfg.operator)
            .await
            .map_err(|e| Failed::from(broker_text(&e)))?;
        // A read-only console only reads: it declares nothing, the ledger stream included.
        let l = Arc::new(if self.cfg.profile.read_only {
            Ledger::open_read(&s, &self.cfg).await
        } else {
            Ledger::open(&s, &self.cfg).await
        });
        *g = Some((s.clone(), l.clone()));
        Ok((s, l))
    }

    /// The operations context over the console's session and ledger.
    async fn cx(&self) -> Result<OpContext, Failed> {
        let (session, ledger) = self.conn().await?;
        Ok(OpContext {
            session,
            mgmt: Mgmt::new(&self.cfg.profile).ok(),
            ledger,
            cfg: self.cfg.clone(),
            via: Via::Console,
            journal_sink: Some(self.journal_sink()),
        })
    }

    /// Tell the loop of every event an operation appends, so the feed knows its echo as ours
    /// (the intent comes back before the operation's answer does).
    fn journal_sink(&self) -> crate::ops::JournalSink {
        let tx = self.tx.clone();
        Arc::new(move |e: &crate::ledger::Event| {
            let _ = tx.try_send(Msg::Op(OpMsg::Journaled {
                event_id: e.id.to_string(),
            }));
        })
    }

    fn mgmt(&self) -> Result<Mgmt, Failed> {
        Mgmt::new(&self.cfg.profile).map_err(|e| {
            Failed::from(format!(
                "the management API client cannot be built: {}",
                sanitize(&e.to_string())
            ))
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
            c.stop(Some("quit"));
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
                        .map_err(|f| Failed::from(ledger_text(&f))),
                    Err(e) => Err(e),
                };
                match sub {
                    Ok(sub) => {
                        attempt = 0;
                        me.send(OpMsg::LedgerUp).await;
                        let mut rx = sub.into_channel();
                        while let Some(r) = rx.recv().await {
                            match r {
                                Ok(Live::Event(e)) => me.send(OpMsg::Ledger(e)).await,
                                Ok(Live::Skipped(r)) => {
                                    me.send(OpMsg::LedgerSkipped(r.describe())).await
                                }
                                Err(f) => {
                                    me.send(OpMsg::LedgerDown(ledger_text(&f))).await;
                                    break;
                                }
                            }
                            if me.tx.is_closed() {
                                return;
                            }
                        }
                    }
                    Err(e) => me.send(OpMsg::LedgerDown(e.text)).await,
                }
                if me.tx.is_closed() {
                    return;
                }
                attempt += 1;
                tokio::time::sleep(backoff_delay(attempt)).await;
            }
        })
    }

    /// Every [`STALE_MOVE_EVERY`], look for broker-engine moves left behind by a hopback that is
    /// gone and remove them (`ops::stale_moves`, each journaled: the feed shows it). A read-only
    /// console does not look (`hopback check` names them).
    pub fn spawn_stale_move_sweep(&self) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            if me.cfg.profile.read_only {
                return;
            }
            let Ok(mgmt) = Mgmt::new(&me.cfg.profile) else {
                return;
            };
            loop {
                if let Ok(found) = crate::ops::stale_moves::find(&mgmt, None).await
                    && crate::ops::stale_moves::any_stale(&found)
                    && let Ok(cx) = me.cx().await
                {
                    for s in crate::ops::stale_moves::sweep(&cx, found).await {
                        if let crate::ops::stale_moves::SweepAction::Failed(why) = &s.action {
                            tracing::warn!(shovel = %s.shovel, %why, "a broker-engine move left behind could not be removed");
                        }
                    }
                }
                if me.tx.is_closed() {
                    return;
                }
                tokio::time::sleep(STALE_MOVE_EVERY).await;
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

    /// The console's rollback panel has a rollback of `ns` open (`None`: none): the drill running
    /// in this console does not end under a rollback of its namespace.
    pub fn note_console_rollback(&self, ns: Option<&str>) {
        if let Some(d) = lock(&self.shared.drill).as_ref() {
            d.set_console_rollback(ns == Some(d.namespace.as_str()));
        }
    }

    /// Is a rollback of the drill's namespace running or waiting at a decision?
    pub fn drill_rollback_open(&self) -> bool {
        lock(&self.shared.drill)
            .as_ref()
            .is_some_and(|d| d.rollback_open())
    }

    /// The console is closing: decisions from now on are answered Abort (the engine leaves a
    /// consistent, resumable state), and the drill no longer counts this console's panel.
    pub fn close(&self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(d) = lock(&self.shared.drill).as_ref() {
            d.set_console_rollback(false);
        }
    }

    /// A rollback of `ns` may start: `Err` when `ns` is the namespace of a drill that is ending
    /// (scored, about to be deleted).
    fn may_roll_back(&self, ns: &str) -> Result<(), String> {
        match lock(&self.shared.drill).as_ref() {
            Some(d) if !d.begin_rollback(ns) => Err(format!(
                "the drill on `{}` is over: its namespace is being scored and deleted, so there is nothing left to roll back (the score and the post-mortem follow)",
                crate::text::sanitize(ns)
            )),
            _ => Ok(()),
        }
    }

    /// The verification window of a console rollback of `ns` (the drill's own for its namespace).
    fn verify_window(&self, ns: &str) -> Duration {
        match lock(&self.shared.drill).as_ref() {
            Some(d) if d.namespace == ns => d.verify_window,
            _ => ROLLBACK_VERIFY_WINDOW,
        }
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
                    c.stop(Some("operator"));
                }
            }
            OpRequest::RollbackDecide(d) => {
                if let Some(tx) = lock(&self.shared.decision).take() {
                    let _ = tx.send(d);
                }
            }
            OpRequest::RollbackStop => {
                if let Some(tx) = lock(&self.shared.rollback_stop).as_ref() {
                    tx.send_replace(true);
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
                expect_before,
            } => {
                let result = self
                    .gate_apply(&ns, target, force_zero_consumers, expect_before)
                    .await;
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
                let req = gate::GateRequest {
                    namespace: ns.clone(),
                    target: target.clone(),
                    force_zero_consumers,
                    dry_run: true,
                    ..Default::default()
                };
                let result = match self.cx().await {
                    Ok(cx) => gate::apply(&cx, &req)
                        .await
                        .map(Box::new)
                        .map_err(Failed::from),
                    Err(e) => Err(e),
                };
                self.send(OpMsg::GatePreview { ns, target, result }).await;
            }
            OpRequest::ReplayUnrouted { ns } => {
                let req = ReplayRequest::new(&ns, Source::Unrouted, Destination::Entry);
                self.run_replay(&ns, req).await;
            }
            OpRequest::DlqLoad {
                ns,
                page,
                page_size,
            } => {
                let (depth, result) = again_if_frames_grew(
                    || self.dlq_page(&ns, page, page_size),
                    |(_, r)| r.is_err(),
                )
                .await;
                self.send(OpMsg::DlqPage {
                    ns,
                    page,
                    depth,
                    result,
                })
                .await;
            }
            OpRequest::DlqInspect { ns, id } => {
                let result = again_if_frames_grew(|| self.load(&ns, &id), Result::is_err)
                    .await
                    .map(|m| m.map(Box::new));
                self.send(OpMsg::Inspected { ns, id, result }).await;
            }
            OpRequest::DlqExport { ns, id, message } => {
                let m = match message {
                    Some(m) if m.lossless.is_some() => Ok(Some(*m)),
                    _ => self.load(&ns, &id).await,
                };
                let queue = Namespace::resolve(&self.cfg, &ns).dlq;
                let r = match m {
                    // Only the message asked for is written, never one found in its place.
                    Ok(Some(m)) if m.identity().as_ref() == Some(&id) => export_one(&queue, &m),
                    Ok(Some(_)) => Err(format!(
                        "the loaded message is not dead letter {}; nothing exported",
                        id.label()
                    )
                    .into()),
                    Ok(None) => Err(format!(
                        "dead letter {} is no longer in the DLQ; nothing exported",
                        id.label()
                    )
                    .into()),
                    Err(e) => Err(e),
                };
                self.send(OpMsg::Exported(r)).await;
            }
            OpRequest::DlqReplay { ns, scope, target } => {
                let to = match target {
                    ReplayTarget::Origin => Destination::Origin,
                    ReplayTarget::Entry => Destination::Entry,
                    ReplayTarget::Version(v) => Destination::Version(v),
                };
                let mut req = ReplayRequest::new(&ns, Source::Dlq, to);
                match scope {
                    ReplayScope::All => {}
                    ReplayScope::Filter(f) => req.filter = f,
                    ReplayScope::Ids(ids) => req.selection = Selection::Ids(ids),
                }
                self.run_replay(&ns, req).await;
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
                    p.abort(Some("not confirmed")).await;
                }
            }
            OpRequest::TimelineLoad { ns } => {
                let r = self.timeline(ns).await;
                self.send(OpMsg::Timeline(r)).await;
            }
            OpRequest::LogLoad => {
                let path = crate::config::log_path();
                let r = tokio::task::spawn_blocking(move || read_log_tail(&path))
                    .await
                    .unwrap_or_else(|e| Err(Failed::from(format!("reading the log failed: {e}"))));
                self.send(OpMsg::Log(r)).await;
            }
            OpRequest::JournalAlert(a) => {
                // Best effort: an alert the ledger cannot take is still on screen.
                if let Ok(cx) = self.cx().await
                    && let Err(e) = crate::ops::alert::record(&cx, &a).await
                {
                    tracing::warn!(error = %e, "alert not journaled");
                }
            }
            OpRequest::CanaryControl { ns, id, command } => {
                let result = match self.cx().await {
                    Ok(cx) => crate::ops::canary::control(&cx, &id, command, Some(&ns))
                        .await
                        .map(|r| r.message)
                        .map_err(Failed::from),
                    Err(e) => Err(e),
                };
                self.send(OpMsg::CanaryControlled { id, result }).await;
            }
            OpRequest::Note { ns, text } => {
                let r = match self.cx().await {
                    Ok(cx) => note::add(&cx, ns.as_deref(), &text)
                        .await
                        .map(|r| (r.event.short_id(), r.event.id.to_string()))
                        .map_err(Failed::from),
                    Err(e) => Err(e),
                };
                let event_id = r.as_ref().ok().map(|x| x.1.clone());
                let result = r.map(|x| x.0);
                self.send(OpMsg::NoteAdded { result, event_id }).await;
            }
            OpRequest::RollbackCheck { ns } => {
                if let Err(why) = self.may_roll_back(&ns) {
                    self.send(OpMsg::RollbackFailed(why)).await;
                    return;
                }
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
                        let entry = Namespace::resolve(&self.cfg, &f.0).entry;
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
                if let Err(why) = self.may_roll_back(&ns) {
                    self.send(OpMsg::RollbackFailed(why)).await;
                    return;
                }
                match self.conn().await {
                    Ok((s, l)) => {
                        let env = self.env(&s, &l, &ns);
                        let plan = plan::default_plan(&from, &to, self.verify_window(&ns));
                        let op = self.operator();
                        match rollback::run(&env, plan, &op).await {
                            Ok(report) => self.send(OpMsg::RollbackDone(Box::new(report))).await,
                            Err(e) => self.send(OpMsg::RollbackFailed(e.one_line())).await,
                        }
                    }
                    Err(e) => self.send(OpMsg::RollbackFailed(e.text)).await,
                }
            }
            OpRequest::RollbackResume { id } => match self.conn().await {
                Ok((s, l)) => {
                    let op = self.operator();
                    let r = rollback::resume(|ns| self.env(&s, &l, ns), &l, &id, &op).await;
                    match r {
                        Ok(report) => self.send(OpMsg::RollbackDone(Box::new(report))).await,
                        Err(e) => self.send(OpMsg::RollbackFailed(e.one_line())).await,
                    }
                }
                Err(e) => self.send(OpMsg::RollbackFailed(e.text)).await,
            },
            OpRequest::WritePostmortem { path, text } => {
                let r = crate::files::write(&path, text.as_bytes())
                    .map(|_| std::fs::canonicalize(&path).unwrap_or(path.clone()))
                    .map_err(|e| Failed::from(format!("{}: {e}", path.display())));
                self.send(OpMsg::PostmortemWritten(r)).await;
            }
            OpRequest::Refresh
            | OpRequest::MovePause
            | OpRequest::MoveResume
            | OpRequest::MoveStop
            | OpRequest::RollbackDecide(_)
            | OpRequest::RollbackStop
            | OpRequest::DrillStart
            | OpRequest::DrillQuit => {}
        }
    }

    async fn gate_apply(
        &self,
        ns: &str,
        target: crate::model::gate::GateSplit,
        force_zero_consumers: bool,
        expect_before: Option<crate::model::gate::GateSplit>,
    ) -> Result<Box<gate::ApplyReport>, Failed> {
        let cx = self.cx().await?;
        let req = gate::GateRequest {
            namespace: ns.to_string(),
            target,
            reason: Some("console gate panel".into()),
            force_zero_consumers,
            dry_run: false,
            extra_params: Default::default(),
            expect_before,
        };
        gate::apply(&cx, &req)
            .await
            .map(Box::new)
            .map_err(Failed::from)
    }

    async fn dlq_page(
        &self,
        ns: &str,
        page: u64,
        page_size: u64,
    ) -> (
        Option<u64>,
        Result<Vec<crate::model::deadletter::MessageView>, Failed>,
    ) {
        let queue = Namespace::resolve(&self.cfg, ns).dlq;
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
                    )
                    .into()),
                );
            }
            Err(e) => return (None, Err(broker_text(&e).into())),
        };
        let r = match browse_guard(self.mgmt().ok().as_ref(), &queue, false).await {
            Ok(quorum) => browse_page(&s, &queue, page, page_size.max(1), quorum, false)
                .await
                .map_err(|e| Failed::from(broker_text(&e))),
            Err(e) => Err(Failed::from(broker_text(&e))),
        };
        (Some(depth), r)
    }

    /// Find dead letter `id` in a fresh read of the namespace's DLQ (`None`: not there any more).
    async fn load(
        &self,
        ns: &str,
        id: &crate::model::deadletter::DeadLetterId,
    ) -> Result<Option<crate::model::deadletter::MessageView>, Failed> {
        let queue = Namespace::resolve(&self.cfg, ns).dlq;
        let (s, _) = self.conn().await?;
        let quorum = browse_guard(self.mgmt().ok().as_ref(), &queue, false)
            .await
            .map_err(|e| Failed::from(broker_text(&e)))?;
        crate::broker::identity::find(&s, &queue, id, quorum, false)
            .await
            .map_err(|e| Failed::from(broker_text(&e)))
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

    /// Plan and run a replay through `ops::replay` (guarded and journaled there), forwarding
    /// progress; pause/stop reach it through the shared control.
    async fn run_replay(&self, ns: &str, req: ReplayRequest) {
        let cx = match self.cx().await {
            Ok(cx) => cx,
            Err(e) => return self.move_refused(ns, e.text).await,
        };
        let plan = match replay::prepare(&cx, &req).await {
            Ok(p) => p,
            Err(e) => return self.move_refused(ns, e.one_line()).await,
        };
        let control = ReplayControl::new();
        self.shared
            .moves_running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *lock(&self.shared.mover) = Some(control.clone());
        self.send(OpMsg::MoveStarted {
            ns: ns.to_string(),
            title: plan.title.clone(),
            parts: plan.specs.len(),
        })
        .await;
        let tx = self.tx.clone();
        let mut last_sent: Option<std::time::Instant> = None;
        let r = replay::run(&cx, &plan, &control, |part, p| {
            // Progress at most 5 times a second; the view needs no more.
            if last_sent.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                last_sent = Some(std::time::Instant::now());
                let _ = tx.try_send(Msg::Op(OpMsg::MoveProgress {
                    progress: p.clone(),
                    part,
                }));
            }
        })
        .await;
        *lock(&self.shared.mover) = None;
        let (summary, failed, event_id) = match r {
            Ok(report) => {
                // The outcome first (a narrow view cuts the end of the line), then what ran
                // and on which engine.
                let mut summary = format!(
                    "{} — {}, {} engine",
                    move_summary(&report.as_move_report()),
                    sanitize(&plan.title),
                    plan.engine.name()
                );
                if let Some(e) = &report.not_journaled {
                    summary.push_str(&format!(" — NOT JOURNALED: {}", sanitize(e)));
                }
                (
                    summary,
                    matches!(report.stop, StopReason::Failed(_)) || report.unreadable_met() > 0,
                    report.event.as_ref().map(|e| e.id.to_string()),
                )
            }
            Err(e) => (e.one_line(), true, None),
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

    async fn purge_prepare(&self, ns: &str) -> Result<(u64, PathBuf), Failed> {
        let cx = self.cx().await?;
        let p = purge::prepare(&cx, ns, None, false)
            .await
            .map_err(Failed::from)?;
        let (count, path) = (p.count, p.export_path.clone());
        let mut slot = self.shared.purge.lock().await;
        if let Some(old) = slot.take() {
            old.abort(None).await;
        }
        *slot = Some(p);
        Ok((count, path))
    }

    async fn purge_commit(&self) -> Result<(u64, PathBuf, String), Failed> {
        let Some(p) = self.shared.purge.lock().await.take() else {
            return Err("nothing prepared to purge (it was cancelled)".into());
        };
        p.commit()
            .await
            .map(|(r, e)| (r.removed, r.export_path, e.id.to_string()))
            .map_err(Failed::from)
    }

    async fn timeline(
        &self,
        ns: Option<String>,
    ) -> Result<Vec<crate::ledger::projection::TimelineEntry>, Failed> {
        let (_, l) = self.conn().await?;
        let mut t = Timeline::new(TimelineFilter {
            namespace: ns,
            since: None,
            max_entries: TIMELINE_LOAD_MAX,
        });
        let read = l.fold(StreamStart::First, |e| t.push(&e)).await;
        for r in l.take_skipped() {
            self.send(OpMsg::LedgerSkipped(r.describe())).await;
        }
        read.map_err(|f| Failed::from(ledger_text(&f)))?;
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
                    "{} by broker user {} (claims {})",
                    e.ts.format("%Y-%m-%d %H:%M UTC"),
                    p.started_by.1,
                    p.started_by.0
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
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        *lock(&self.shared.rollback_stop) = Some(stop_tx);
        ChannelOperator {
            updates: utx,
            shared: self.shared.clone(),
            stop: stop_rx,
        }
    }
}

/// Write one message's export document to `DATA_DIR/exports/QUEUE-TIME-DIGEST.json` (named by
/// the message's digest: a position would not say which message it was).
fn export_one(queue: &str, m: &crate::model::deadletter::MessageView) -> Result<PathBuf, Failed> {
    let base = purge::default_export_path(queue);
    let path = base.with_file_name(format!(
        "{}-{}.json",
        base.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "message".into()),
        m.digest
            .map_or_else(|| format!("at-{}", m.position), |d| d.short())
    ));
    let text = serde_json::to_string_pretty(&export_document(queue, m))
        .map_err(|e| Failed::from(format!("cannot encode the export: {e}")))?;
    crate::broker::export::write_private(&path, text.as_bytes())
        .map_err(|e| Failed::from(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// The rollback engine's operator in the console: decision points go to the rollback view as a
/// dialog; the answer comes back through [`OpRequest::RollbackDecide`]. If the console closes,
/// the pending decision is answered Abort (the engine then leaves a consistent state).
struct ChannelOperator {
    updates: mpsc::UnboundedSender<OpMsg>,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Operator for ChannelOperator {
    fn decide<'a>(&'a self, point: &'a DecisionPoint) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if self
                .shared
                .closing
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Decision::Abort;
            }
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
    fn stop_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.stop.clone())
    }
}
