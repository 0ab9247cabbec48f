//! The live fleet console (the TUI): state, actions, keymap, background tasks and the event loop.
//!
//! Shape (television/yazi style): crossterm events, background [`tasks`] and signals all arrive
//! in one `select!`; keys become [`Action`]s through the [`keymap::Keymap`]; [`state::AppState`]
//! (plain data) changes; the screen is redrawn only when something changed, at most every
//! [`FRAME_MIN`] (≤ 30 fps). The loop never awaits the network.

pub mod action;
pub mod alerts;
pub mod contexts;
pub mod keymap;
pub mod ops;
pub mod panels;
pub mod protocol;
pub mod state;
pub mod tap;
pub mod tasks;
pub mod terminal;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ratatui::crossterm::event::{
    Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

pub use action::Action;
use state::{AppState, Level, Msg};

use crate::config::Config;
use crate::ui::theme::Theme;

/// Minimum time between two frames (≤ 30 fps).
pub const FRAME_MIN: Duration = Duration::from_millis(33);

/// A crossterm key as a keymap key name (`q`, `G`, `ctrl-c`, `enter`, `pgdown`).
pub fn key_name(k: &KeyEvent) -> Option<String> {
    let base = match k.code {
        KeyCode::Char(' ') => "space".to_string(),
        KeyCode::Char(c) => c.to_string(),
        KeyCode::Enter => "enter".into(),
        KeyCode::Esc => "esc".into(),
        KeyCode::Up => "up".into(),
        KeyCode::Down => "down".into(),
        KeyCode::Left => "left".into(),
        KeyCode::Right => "right".into(),
        KeyCode::PageUp => "pgup".into(),
        KeyCode::PageDown => "pgdown".into(),
        KeyCode::Home => "home".into(),
        KeyCode::End => "end".into(),
        KeyCode::Tab => "tab".into(),
        KeyCode::BackTab => "backtab".into(),
        KeyCode::Backspace => "backspace".into(),
        KeyCode::Delete => "delete".into(),
        KeyCode::Insert => "insert".into(),
        KeyCode::F(n) => format!("f{n}"),
        _ => return None,
    };
    let mut out = String::new();
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        out.push_str("ctrl-");
    }
    if k.modifiers.contains(KeyModifiers::ALT) {
        out.push_str("alt-");
    }
    // Shift is already in the character (`G`); only named keys carry it explicitly.
    // (BackTab already is shift-tab: terminals report it with SHIFT set.)
    if k.modifiers.contains(KeyModifiers::SHIFT) && base.chars().count() > 1 && base != "backtab" {
        out.push_str("shift-");
    }
    if out.starts_with("ctrl-") && base.chars().count() == 1 {
        out.push_str(&base.to_lowercase());
    } else {
        out.push_str(&base);
    }
    Some(out)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Why the console could not start or had to stop.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// The console itself: wrong use (no terminal, a bad `[keymap]`; `usage`) or a failing
    /// terminal or signal handler.
    #[error("{message}")]
    Console {
        /// What is wrong or failed.
        message: String,
        /// What to do ("" when nothing helps).
        hint: String,
        /// Wrong use (exit 2) rather than a failure (exit 1).
        usage: bool,
    },
    /// The drill running in the console failed.
    #[error(transparent)]
    Drill(#[from] crate::drill::DrillError),
}

impl AppError {
    fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Console {
            message: message.into(),
            hint: hint.into(),
            usage: true,
        }
    }
    fn failed(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Console {
            message: message.into(),
            hint: hint.into(),
            usage: false,
        }
    }
}

/// Build the initial state (keymap overrides validated here).
pub fn initial_state(cfg: &Config) -> Result<AppState, AppError> {
    let keymap = keymap::Keymap::with_overrides(&cfg.keymap).map_err(|e| {
        AppError::usage(
            format!("config error in {}: {e}", cfg.path.display()),
            "fix the [keymap] table; `?` in the console lists action names",
        )
    })?;
    Ok(AppState::new(cfg, keymap, now_ms()))
}

/// Run the console until the operator quits or a signal arrives.
pub async fn run(cfg: Config) -> Result<(), AppError> {
    run_console(cfg, None).await.map(|_| ())
}

/// Run a drill inside the console (`hopback drill` without `--headless`): the drill's namespace
/// is selected, the drill panel shows its counters and, at the end, the score and the offer to
/// write the post-mortem. Quitting early ends the drill the way Ctrl-C ends the CLI drill
/// (producers stop, the fleet settles, the score is taken, the namespace is deleted).
pub async fn run_drill(
    cfg: Config,
    opts: crate::drill::DrillOptions,
) -> Result<Option<crate::drill::DrillResult>, AppError> {
    run_console(cfg, Some(opts)).await
}

type DrillTask =
    tokio::task::JoinHandle<Result<crate::drill::DrillResult, crate::drill::DrillError>>;

fn start_drill(
    cfg: &Config,
    opts: crate::drill::DrillOptions,
    runner: &ops::OpsRunner,
    tx: mpsc::Sender<Msg>,
) -> DrillTask {
    let cfg = cfg.clone();
    let runner = runner.clone();
    tokio::spawn(async move {
        let watch: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let w = watch.clone();
        let r = crate::drill::run(&cfg, &opts, move |h| {
            let j = runner.spawn_drill_watch(h);
            if let Ok(mut g) = w.lock() {
                *g = Some(j);
            }
        })
        .await;
        if let Some(j) = watch.lock().ok().and_then(|mut g| g.take()) {
            j.abort();
        }
        let msg = match &r {
            Ok(res) => Ok(Box::new(res.clone())),
            Err(f) => Err(crate::text::with_hint(&f.to_string(), &f.hint())),
        };
        let msg = msg.map_err(protocol::Failed::from);
        let _ = tx.send(Msg::Op(protocol::OpMsg::DrillDone(msg))).await;
        r
    })
}

/// End a drill that is still running through its stop handle, then wait for its score. A
/// rollback of its namespace still running finishes first (the drill waits for it; its next
/// decision is answered Abort, see `OpsRunner::close`).
async fn finish_drill(
    task: DrillTask,
    stop: &crate::drill::DrillStop,
    runner: &ops::OpsRunner,
) -> Result<Option<crate::drill::DrillResult>, AppError> {
    if !task.is_finished() {
        crate::errln!(
            "ending the drill: stopping producers, letting the fleet settle, scoring, cleaning up…"
        );
        if runner.drill_rollback_open() {
            crate::errln!(
                "a rollback of the drill's namespace is still running: the drill ends after it (its next decision is answered Abort)"
            );
        }
    }
    stop.stop();
    match task.await {
        Ok(Ok(res)) => Ok(Some(res)),
        Ok(Err(f)) => Err(f.into()),
        Err(e) => Err(AppError::failed(
            format!("the drill task ended abnormally: {e}"),
            "",
        )),
    }
}

/// One open context's background work: its refresh and tap, its operations runner and ledger
/// feed, its theme, and the task that forwards its messages to the loop tagged with its index.
struct SlotIo {
    tasks: tasks::Tasks,
    runner: ops::OpsRunner,
    theme: Theme,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl SlotIo {
    fn abort(&self) {
        self.tasks.abort();
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Open a context: its state, its tasks and runner (answering on a channel of its own, forwarded
/// to `merged` as `(index, msg)`); returns the slot, its I/O and its own sender.
fn open_context(
    cfg: &Config,
    index: usize,
    merged: &mpsc::Sender<(usize, Msg)>,
    scan_rollbacks: bool,
) -> Result<(contexts::Slot, SlotIo, mpsc::Sender<Msg>), AppError> {
    let mut state = initial_state(cfg)?;
    state.ascii = !crate::ui::ascii::locale_is_utf8();
    let theme = match Theme::load(&cfg.profile.theme) {
        Ok(t) => t,
        Err(e) => {
            state.say(Level::Warn, format!("{e}; using the dark theme"));
            Theme::fallback(crate::ui::theme::no_color_requested())
        }
    };
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let tasks = tasks::spawn(cfg, tx.clone());
    let runner = ops::OpsRunner::new(cfg, tx.clone());
    let mut handles = vec![runner.spawn_ledger_feed(), runner.spawn_stale_move_sweep()];
    if scan_rollbacks {
        // A rollback that crashed is offered for resumption (issue 8).
        runner.handle(protocol::OpRequest::RollbackScan);
    }
    let out = merged.clone();
    handles.push(tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if out.send((index, m)).await.is_err() {
                return;
            }
        }
    }));
    let slot = contexts::Slot {
        cfg: cfg.clone(),
        state,
    };
    Ok((
        slot,
        SlotIo {
            tasks,
            runner,
            theme,
            handles,
        },
        tx,
    ))
}

/// How long the picker waits for a profile's management API.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The version of a profile's broker from its management API, or why not (credential-free).
async fn probe(cfg: &Config, name: &str) -> Result<String, String> {
    let c = cfg.for_profile(name).map_err(|e| e.to_string())?;
    let mgmt = crate::broker::mgmt::Mgmt::new(&c.profile).map_err(|e| e.to_string())?;
    match tokio::time::timeout(PROBE_TIMEOUT, mgmt.overview()).await {
        Ok(Ok(o)) => Ok(o.rabbitmq_version),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!(
            "unreachable: no answer in {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

async fn run_console(
    cfg: Config,
    drill: Option<crate::drill::DrillOptions>,
) -> Result<Option<crate::drill::DrillResult>, AppError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(AppError::usage(
            "the console needs a terminal",
            "run it in a terminal, or use `hopback status` (and --json) in scripts",
        ));
    }
    // Long-lived connections: lean frame buffers until a message needs larger frames.
    crate::broker::session::use_lean_frames();
    // Every profile of the file, resolved once for the picker (a broken one says why there).
    let mut names = cfg.profile_names.clone();
    if !names.contains(&cfg.profile.name) {
        names.insert(0, cfg.profile.name.clone());
    }
    let profiles: Vec<contexts::ProfileEntry> = names
        .iter()
        .map(|n| {
            if *n == cfg.profile.name {
                return contexts::ProfileEntry::of(&cfg);
            }
            match cfg.for_profile(n) {
                Ok(c) => contexts::ProfileEntry::of(&c),
                Err(e) => contexts::ProfileEntry {
                    name: n.clone(),
                    url: String::new(),
                    production: false,
                    read_only: false,
                    probe: Some(Err(e.to_string())),
                    probing: false,
                },
            }
        })
        .collect();
    let (merged_tx, mut rx) = mpsc::channel::<(usize, Msg)>(512);
    let (first, first_io, first_tx) = open_context(&cfg, 0, &merged_tx, drill.is_none())?;
    let mut console = contexts::Console::new(first, profiles);
    let mut ios = vec![first_io];
    // Contexts opened together (`--profile a --profile b`, `contexts = [...]`).
    for name in cfg.contexts.iter().skip(1) {
        let c = cfg.for_profile(name).map_err(|e| {
            AppError::usage(
                format!("context `{}`: {e}", crate::text::sanitize(name)),
                "fix the profile in the config, or leave it out of --profile / contexts",
            )
        })?;
        let (slot, io, _) = open_context(&c, ios.len(), &merged_tx, drill.is_none())?;
        console.add(slot);
        ios.push(io);
    }
    if ios.len() > 1 {
        console.switch(contexts::ALL);
    }
    let (probe_tx, mut probe_rx) = mpsc::channel::<(String, Result<String, String>)>(16);
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| AppError::failed(format!("cannot watch SIGTERM: {e}"), ""))?;
    let mut sighup = signal(SignalKind::hangup())
        .map_err(|e| AppError::failed(format!("cannot watch SIGHUP: {e}"), ""))?;
    // In drill mode SIGINT ends the console and so the drill (see `finish_drill`), after its
    // cleanup: a listener keeps SIGINT from its default (terminating before the cleanup).
    let mut sigint = if drill.is_some() {
        Some(
            signal(SignalKind::interrupt())
                .map_err(|e| AppError::failed(format!("cannot watch SIGINT: {e}"), ""))?,
        )
    } else {
        None
    };
    let drill_stop = drill.as_ref().map(|d| d.stop.clone()).unwrap_or_default();
    // The context the drill was started in (its runner holds the drill's rollback hold).
    let mut drill_slot = 0;
    let mut guard = terminal::enter().map_err(|e| {
        AppError::failed(
            format!("cannot set up the terminal: {e}"),
            "is TERM set? try another terminal",
        )
    })?;
    // A console drill waits for "press Enter to start": nothing is created before it. The
    // drill belongs to the first context.
    let mut pending_drill = drill;
    let mut drill_task: Option<DrillTask> = None;
    if pending_drill.is_some() {
        console.slots[0].state.ops.drill = Some(panels::DrillPanel::waiting());
    }
    let drill_tx = first_tx;
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME_MIN;
    let result: Result<(), AppError> = loop {
        if dirty && last_draw.elapsed() >= FRAME_MIN {
            let active = console.active.min(ios.len() - 1);
            let theme = &ios[active].theme;
            let mut hints = console.state().layout;
            if let Err(e) = guard
                .terminal
                .draw(|f| hints = crate::ui::draw_console(f, &console, theme))
            {
                // The terminal is gone (e.g. an SSH drop): stop quietly.
                break Err(AppError::failed(format!("cannot draw: {e}"), ""));
            }
            console.state_mut().layout = hints;
            let merged = console.in_merged_overview();
            for (i, slot) in console.slots.iter_mut().enumerate() {
                // Shown together, every context's namespaces are on screen.
                let visible = if merged {
                    slot.state
                        .rows()
                        .iter()
                        .filter_map(|r| {
                            Some(slot.state.snapshot.as_ref()?.namespaces[r.ns].name.clone())
                        })
                        .collect()
                } else if i == active {
                    slot.state.visible_namespaces()
                } else {
                    std::collections::BTreeSet::new()
                };
                ios[i].tasks.on_screen.send_if_modified(|cur| {
                    if cur.as_ref() != Some(&visible) {
                        *cur = Some(visible);
                        true
                    } else {
                        false
                    }
                });
                if std::mem::take(&mut slot.state.bell_pending) {
                    terminal::bell();
                }
                if let Some(text) = slot.state.clipboard_pending.take() {
                    terminal::copy_to_clipboard(&text);
                }
            }
            dirty = false;
            last_draw = Instant::now();
        }
        let next_frame = dirty.then(|| tokio::time::Instant::from_std(last_draw + FRAME_MIN));
        let mut step = contexts::Step::None;
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    if let Some(name) = key_name(&k) {
                        step = console.handle_key(&name);
                        dirty = true;
                    }
                }
                Some(Ok(Event::Mouse(m))) => {
                    let action = match m.kind {
                        MouseEventKind::ScrollUp => Some(Action::Up),
                        MouseEventKind::ScrollDown => Some(Action::Down),
                        MouseEventKind::Down(MouseButton::Left) => Some(Action::ClickRow { row: m.row }),
                        _ => None,
                    };
                    if let Some(a) = action {
                        step = console.apply(a);
                        dirty = true;
                    }
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(AppError::failed(format!("terminal input failed: {e}"), "")),
                None => break Ok(()),
            },
            Some((i, msg)) = rx.recv() => {
                dirty |= console.handle_msg(i, msg);
            }
            Some((name, r)) = probe_rx.recv() => {
                console.on_probe(&name, r);
                dirty = true;
            }
            _ = tick.tick() => {
                let now = now_ms();
                for i in 0..console.slots.len() {
                    dirty |= console.handle_msg(i, Msg::Tick(now));
                }
                console.update_infos();
            }
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => break Ok(()),
            _ = async {
                match sigint.as_mut() {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending().await,
                }
            } => break Ok(()),
            _ = async {
                match next_frame {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        match step {
            contexts::Step::None => {}
            contexts::Step::Quit => break Ok(()),
            contexts::Step::Refresh(i) => {
                if let Some(io) = ios.get(i) {
                    io.tasks.refresh_now.notify_one();
                }
            }
            contexts::Step::Open(name) => match cfg.for_profile(&name) {
                Ok(c) => match open_context(&c, ios.len(), &merged_tx, true) {
                    Ok((slot, io, _)) => {
                        console.add(slot);
                        ios.push(io);
                        console.switch(&name);
                    }
                    Err(e) => console.state_mut().say(Level::Error, e.to_string()),
                },
                Err(e) => console.state_mut().say(
                    Level::Error,
                    crate::text::sanitize(&e.to_string()).into_owned(),
                ),
            },
        }
        for name in console.take_probes() {
            let (cfg, tx) = (cfg.clone(), probe_tx.clone());
            tokio::spawn(async move {
                let r = probe(&cfg, &name).await;
                let _ = tx.send((name, r)).await;
            });
        }
        let mut quit = false;
        for (i, slot) in console.slots.iter_mut().enumerate() {
            let io = &ios[i];
            // The drill must not end under a rollback of its namespace this console has open.
            io.runner.note_console_rollback(
                slot.state
                    .ops
                    .rollback
                    .as_ref()
                    .and_then(|r| r.open_namespace()),
            );
            for a in slot.state.take_alert_records() {
                io.runner.handle(protocol::OpRequest::JournalAlert(a));
            }
            for r in slot.state.take_requests() {
                match r {
                    protocol::OpRequest::Refresh => io.tasks.refresh_now.notify_one(),
                    protocol::OpRequest::DrillStart => {
                        if let Some(opts) = pending_drill.take() {
                            slot.state.say(
                                Level::Info,
                                "drill starting: creating the namespace and the fleet…",
                            );
                            drill_task =
                                Some(start_drill(&slot.cfg, opts, &io.runner, drill_tx.clone()));
                            drill_slot = i;
                        }
                    }
                    protocol::OpRequest::DrillQuit => quit = true,
                    other => io.runner.handle(other),
                }
                dirty = true;
            }
        }
        if quit {
            break Ok(());
        }
    };
    drop(drill_tx);
    for io in &ios {
        io.abort();
        // A decision the engine still waits for, and any it reaches later, is answered Abort
        // (consistent state, resumable).
        io.runner.close();
        io.runner.handle(protocol::OpRequest::RollbackDecide(
            crate::ops::rollback::Decision::Abort,
        ));
    }
    drop(guard);
    for io in &ios {
        if io.runner.moves_running() {
            // `errln!` ignores a failed write: after SIGHUP the terminal may be gone.
            crate::errln!(
                "stopping the replay: finishing outstanding confirms (what is left stays in the source)…"
            );
            if !io.runner.stop_moves_and_wait(Duration::from_secs(20)).await {
                crate::errln!(
                    "the replay did not stop within 20 s; unconfirmed messages stay in the source and may be redelivered (possible duplicates, never lost)"
                );
            }
        }
    }
    let drill_result = match drill_task {
        Some(t) => match ios.get(drill_slot) {
            Some(io) => finish_drill(t, &drill_stop, &io.runner).await,
            None => Err(AppError::failed("the drill's console context is gone", "")),
        },
        None => Ok(None),
    };
    result?;
    drill_result
}
