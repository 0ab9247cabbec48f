//! The event-sourced ledger (DESIGN §4): every action appends one JSON [`Event`] to the stream
//! queue `hopback.ledger`; every console reads it back (history, timeline, post-mortem) and
//! follows it live (other operators' actions).
//!
//! Writing: a dedicated confirm channel, `mandatory` publishes, and [`Ledger::append`] returns only
//! after the broker's publisher confirm is an `Ack` with no `basic.return` — so an action is never
//! reported done on an event the broker did not take. If the stream cannot be used (permissions,
//! a broker without streams) the ledger falls back to a JSONL file in the data dir and
//! [`Ledger::backend_description`] says so (for `check` and the console's status line).
//!
//! Reading: a stream consumer with `x-stream-offset` (`first`, a timestamp, or `next`), manual
//! ack and a prefetch window. [`Ledger::fold`] streams events through a callback without holding
//! them (projections stay bounded); [`Ledger::subscribe`] follows live.
//!
//! Full reads go through a local cache of the stream (see `cache.rs`), validated against the
//! stream at its last offset, so a console re-reading 100,000 events pays a file read plus the
//! new tail, not an AMQP drain of everything.
//!
//! Read paths (`check`, `timeline`, `history`, `postmortem`, `gate show`, a read-only console)
//! open it with [`Ledger::open_read`], which declares nothing: a stream that does not exist is
//! reported as such (the history is unknown), never created by looking at it.
//!
//! `HOPBACK_LEDGER_STREAM` overrides the stream name (tests and benchmarks use throwaway streams so
//! they never pollute the team's ledger).

pub mod access;
mod cache;
pub mod canary;
pub mod event;
pub mod postmortem;
pub mod projection;
mod subscription;

use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

pub use event::{Event, EventKind, Outcome};
use subscription::*;
pub use subscription::{Live, Subscription};

use crate::broker::amqp::{self, BasicProperties, Confirm, Consumer, Publisher, Received};
use crate::broker::session::{BrokerError, Session};
use crate::broker::stream::{self, StreamOffset};
use crate::config::Config;

/// Default name of the ledger stream.
pub const DEFAULT_STREAM: &str = "hopback.ledger";
/// Name of the fallback file in the data dir.
pub const FALLBACK_FILE: &str = "ledger.jsonl";
/// How long `append` waits for the publisher confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a catch-up read waits for the next message before deciding it has reached the end.
pub const READ_IDLE: Duration = Duration::from_millis(400);
/// Once a catch-up read has seen as many events as the stream reported, how long it still waits
/// for stragglers (the reported count may lag the newest confirmed events).
pub const END_GRACE: Duration = Duration::from_millis(250);
/// Longest wait for the first event of a read when the stream reports it holds some.
const FIRST_EXPECTED_EVENT: Duration = Duration::from_secs(10);
/// Consumer prefetch when reading the stream.
const READ_PREFETCH: u16 = 10_000;
/// Ack every this many deliveries (multiple=true) when reading.
const ACK_EVERY: u64 = 2_000;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The oldest event still retained.
    First,
    /// Events from this time on (the stream seeks by chunk; older events are filtered out).
    Timestamp(DateTime<Utc>),
    /// Only events appended after the subscription starts.
    Next,
}

impl StreamStart {
    fn offset(&self) -> StreamOffset {
        match self {
            StreamStart::First => StreamOffset::First,
            StreamStart::Next => StreamOffset::Next,
            StreamStart::Timestamp(t) => StreamOffset::Timestamp(t.timestamp()),
        }
    }
    fn admits(&self, e: &Event) -> bool {
        match self {
            StreamStart::Timestamp(t) => e.ts >= *t,
            _ => true,
        }
    }
}

// One per ledger handle (a handful per process): the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Stream {
        session: Arc<Session>,
        name: String,
        /// The exchange events are published to: the stream's own (`name`), or `""` (the
        /// default exchange) for a ledger without one.
        exchange: String,
        max_length_bytes: u64,
        note: Option<String>,
        /// Boxed: the publisher is large, and most ledgers never write.
        writer: Mutex<Option<Box<Writer>>>,
        /// Opened for reading and not found then: nothing was declared.
        missing: bool,
    },
    File {
        path: PathBuf,
        why: String,
        lock: Mutex<()>,
    },
}

/// The stream's publisher, on a connection of its own ([`writer_connection_name`]), opened at the
/// first append and again (any live node of the profile) once it is lost. Not the operation's
/// connection: a stream the broker cannot write to (its leader's node down) fails the append
/// with a connection error (RESOURCE_ERROR), which would otherwise close the connection the
/// operation moves messages on, and its error would read "connection lost" instead of naming
/// the ledger.
struct Writer {
    publisher: Publisher,
    session: Arc<Session>,
}

/// A ledger record a read skipped because it is not a readable event: its properties cannot be
/// read by the client (a short string that is not UTF-8, headers nested too deep), or its body
/// is not an event. Reading goes on after it; the reader shows it as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    /// Its stream offset, when known.
    pub offset: Option<u64>,
    /// Why it was skipped (raw).
    pub why: String,
}

impl SkippedRecord {
    /// One line, terminal-safe.
    pub fn describe(&self) -> String {
        format!(
            "ledger: skipped an unreadable record{}: {}",
            self.offset
                .map(|o| format!(" at offset {o}"))
                .unwrap_or_default(),
            crate::text::preview(self.why.as_bytes(), 2048, 300)
        )
    }
}

/// Records skipped by the reads of one ledger, until someone takes them.
type SkippedSink = Arc<std::sync::Mutex<Vec<SkippedRecord>>>;

/// At most this many skipped records are kept for the reader to show (a stream full of them
/// shows the first ones).
const SKIPPED_KEPT: usize = 100;

fn note_skipped(sink: &SkippedSink, r: SkippedRecord) {
    tracing::warn!("{}", r.describe());
    let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
    if g.len() < SKIPPED_KEPT {
        g.push(r);
    }
}

/// The ledger handle: cheap to share behind an `Arc`; `append` may be called concurrently.
pub struct Ledger {
    backend: Backend,
    operator: String,
    host: String,
    profile: String,
    skipped: SkippedSink,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.backend_description())
            .finish()
    }
}

/// The name of the ledger writer's connection for a ledger opened on connection `session_name`.
pub fn writer_connection_name(session_name: &str) -> String {
    format!("{session_name} · ledger")
}

/// The ledger stream's name: `HOPBACK_LEDGER_STREAM`, or `hopback.ledger`.
pub fn stream_name_from_env() -> String {
    std::env::var("HOPBACK_LEDGER_STREAM")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_STREAM.to_string())
}

/// What went wrong with the ledger: one line and a hint (credential-free).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LedgerError {
    /// What failed.
    pub message: String,
    /// What to try ("" when there is nothing to add).
    pub hint: String,
    /// The broker refused it (a missing permission), as opposed to a breakage.
    pub refused: bool,
    /// A broker call ran out of time (the caller may explain why: a cluster without a majority).
    pub timed_out: bool,
}

impl LedgerError {
    /// A failure with a hint.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
            refused: false,
            timed_out: false,
        }
    }
}

/// A read of a stream that does not exist: the history is unknown (not empty).
fn missing_stream(name: &str) -> LedgerError {
    LedgerError::new(
        format!(
            "ledger: stream `{}` does not exist on this broker: the history is unknown (nothing was created by reading it)",
            crate::text::sanitize(name)
        ),
        "the first journaled operation creates it (`hopback init NS`, a gate flip, a replay); if the team's ledger has another name, set HOPBACK_LEDGER_STREAM",
    )
}

fn ledger_failure(what: &str, e: BrokerError) -> LedgerError {
    LedgerError {
        message: format!("ledger: {what}: {e}"),
        hint: e.hint().to_string(),
        refused: e.is_refusal(),
        timed_out: e.is_timeout(),
    }
}

impl Ledger {
    /// Open the team's ledger: declare the stream idempotently (name from `HOPBACK_LEDGER_STREAM`
    /// or `hopback.ledger`); fall back to the JSONL file when the stream cannot be used.
    pub async fn open(session: &Arc<Session>, cfg: &Config) -> Ledger {
        Self::open_stream(session, cfg, &stream_name_from_env()).await
    }

    /// Open a ledger on a named stream (tests, benchmarks); falls back like [`Ledger::open`].
    pub async fn open_stream(session: &Arc<Session>, cfg: &Config, name: &str) -> Ledger {
        match declare_stream(session, name, cfg.ledger_max_length_bytes).await {
            Ok(note) => Ledger {
                backend: Backend::Stream {
                    session: session.clone(),
                    // Published through the stream's own exchange where there is one (WRITE on
                    // the ledger's name is then all a writer needs); a read-only user never
                    // publishes, so its refusals here cost nothing.
                    exchange: match stream::ensure_own_exchange(session, name).await {
                        Ok(true) => name.to_string(),
                        Ok(false) => String::new(),
                        Err(e) => {
                            tracing::debug!("ledger: no exchange of its own for `{name}`: {e}");
                            String::new()
                        }
                    },
                    name: name.to_string(),
                    max_length_bytes: cfg.ledger_max_length_bytes,
                    note,
                    writer: Mutex::new(None),
                    missing: false,
                },
                ..Self::identity(cfg)
            },
            Err(e) => {
                let why = format!("stream `{name}` unusable: {e}");
                tracing::warn!("ledger falls back to a local file: {why}");
                Self::file(&crate::config::data_dir().join(FALLBACK_FILE), &why, cfg)
            }
        }
    }

    /// Open the team's ledger to read it, declaring nothing (the read paths: `check`,
    /// `timeline`, `history`, `postmortem`, `gate show`, the console in read-only). A stream
    /// that does not exist stays absent: [`Ledger::is_missing`] says so and every read fails
    /// with "unknown" instead of showing an empty history. Falls back to the local file like
    /// [`Ledger::open`] when the broker cannot be asked.
    pub async fn open_read(session: &Arc<Session>, cfg: &Config) -> Ledger {
        Self::open_stream_read(session, cfg, &stream_name_from_env()).await
    }

    /// [`Ledger::open_read`] on a named stream.
    pub async fn open_stream_read(session: &Arc<Session>, cfg: &Config, name: &str) -> Ledger {
        match session.passive_queue(name).await {
            Ok(found) => Ledger {
                backend: Backend::Stream {
                    session: session.clone(),
                    name: name.to_string(),
                    max_length_bytes: cfg.ledger_max_length_bytes,
                    note: None,
                    // Read paths never write; nothing is declared to find out.
                    exchange: String::new(),
                    writer: Mutex::new(None),
                    missing: found.is_none(),
                },
                ..Self::identity(cfg)
            },
            Err(e) => {
                let why = format!("stream `{name}` cannot be looked up: {e}");
                tracing::warn!("ledger falls back to a local file: {why}");
                Self::file(&crate::config::data_dir().join(FALLBACK_FILE), &why, cfg)
            }
        }
    }

    /// Was the stream absent when this ledger was opened for reading (nothing declared)?
    pub fn is_missing(&self) -> bool {
        matches!(self.backend, Backend::Stream { missing: true, .. })
    }

    /// A ledger kept in a local JSONL file (the fallback; also usable offline and in tests).
    pub fn file(path: &Path, why: &str, cfg: &Config) -> Ledger {
        Ledger {
            backend: Backend::File {
                path: path.to_path_buf(),
                why: why.to_string(),
                lock: Mutex::new(()),
            },
            ..Self::identity(cfg)
        }
    }

    fn identity(cfg: &Config) -> Ledger {
        Ledger {
            backend: Backend::File {
                path: PathBuf::new(),
                why: String::new(),
                lock: Mutex::new(()),
            },
            operator: cfg.operator.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            profile: cfg.profile.name.clone(),
            skipped: SkippedSink::default(),
        }
    }

    /// The records the reads of this ledger skipped since the last call (oldest first): show
    /// them as warnings after a read.
    pub fn take_skipped(&self) -> Vec<SkippedRecord> {
        std::mem::take(&mut *self.skipped.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The same ledger over another session (the rollback engine after the node its connection
    /// was on is lost); `None` for the local file, which needs no connection.
    pub async fn reopen_on(&self, session: &Arc<Session>, cfg: &Config) -> Option<Ledger> {
        match &self.backend {
            Backend::Stream { name, .. } => Some(Self::open_stream(session, cfg, name).await),
            _ => None,
        }
    }

    /// Is this the shared stream (not the local fallback file)?
    pub fn is_stream(&self) -> bool {
        matches!(self.backend, Backend::Stream { .. })
    }

    /// One line for `check` and the console: where events go, and why if it is the fallback.
    pub fn backend_description(&self) -> String {
        match &self.backend {
            Backend::Stream {
                session,
                name,
                missing: true,
                ..
            } => format!(
                "unknown: stream `{name}` does not exist on {} (a read declares nothing; the first journaled operation creates it)",
                session.profile().host_port()
            ),
            Backend::Stream {
                session,
                name,
                max_length_bytes,
                note,
                ..
            } => {
                let mut s = format!(
                    "stream `{name}` on {} (size limit {} MB), shared with every console",
                    session.profile().host_port(),
                    max_length_bytes / 1_000_000
                );
                if let Some(n) = note {
                    s.push_str(&format!("; {n}"));
                }
                s
            }
            Backend::File { path, why, .. } => format!(
                "LOCAL FILE {} — other consoles do not see these events ({why})",
                path.display()
            ),
        }
    }

    /// A new event with id, time, operator, host and profile filled in.
    pub fn event(&self, kind: EventKind, namespace: Option<&str>) -> Event {
        let mut e = Event::new(kind, namespace);
        e.operator = self.operator.clone();
        e.host = self.host.clone();
        e.profile = self.profile.clone();
        e
    }

    /// Append an event; returns it only once the broker confirmed it (Ack, not returned) or the
    /// file write was synced. Any doubt is an error: the caller must not report the action done.
    pub async fn append(&self, event: Event) -> Result<Event, LedgerError> {
        let body = serde_json::to_vec(&event)
            .map_err(|e| LedgerError::new(format!("ledger: cannot encode event: {e}"), ""))?;
        match &self.backend {
            Backend::Stream {
                session,
                name,
                exchange,
                writer,
                ..
            } => {
                // A blocked connection sends nothing: say so now instead of after the timeouts.
                session
                    .check_not_blocked()
                    .map_err(|e| ledger_failure("appending the event", e))?;
                let (publisher, session) = {
                    let mut guard = writer.lock().await;
                    match guard.as_ref().filter(|w| w.publisher.is_open()) {
                        Some(w) => (w.publisher.clone(), w.session.clone()),
                        None => {
                            // Nothing was sent yet: the writer's connection (first use, or a
                            // lost one: any live node of the profile) before the event goes out.
                            let on = match guard.as_ref() {
                                Some(w) if w.session.is_connected() => w.session.clone(),
                                _ => crate::broker::session::connect_named(
                                    session.profile(),
                                    &writer_connection_name(session.connection_name()),
                                )
                                .await
                                .map_err(|e| ledger_failure("connecting the writer", e))?,
                            };
                            let p = Publisher::open(&on)
                                .await
                                .map_err(|e| ledger_failure("opening the writer channel", e))?
                                .labelled("ledger publish", "ledger publisher confirm");
                            *guard = Some(Box::new(Writer {
                                publisher: p.clone(),
                                session: on.clone(),
                            }));
                            (p, on)
                        }
                    }
                };
                let session = &session;
                let props = BasicProperties::default()
                    .with_message_id(event.id.to_string().into())
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_timestamp(event.ts.timestamp().max(0) as u64)
                    .with_type(event.kind.as_str().into())
                    .with_app_id("hopback".into())
                    // The broker refuses a user_id that is not this connection's user: readers
                    // take it as the authenticated author (a forged body cannot set it).
                    .with_user_id(session.profile().username.as_str().into());
                let pending = publisher
                    .publish(exchange, name, true, &body, props)
                    .await
                    .map_err(|e| ledger_failure("publishing the event", session.explain(e)))?;
                let confirmation = pending.wait(CONFIRM_TIMEOUT).await.map_err(|e| {
                    ledger_failure("waiting for the broker's confirm", session.explain(e))
                })?;
                match confirmation {
                    Confirm::Acked => Ok(Event {
                        author: Some(session.profile().username.clone()),
                        ..event
                    }),
                    Confirm::Returned => Err(LedgerError::new(
                        format!("ledger: the broker returned the event: stream `{name}` is gone"),
                        "re-open the console (it re-declares the stream) or run `hopback check`",
                    )),
                    Confirm::Nacked => Err(LedgerError::new(
                        "ledger: the broker refused (nack) the event",
                        "the broker may be short of disk; run `hopback check`",
                    )),
                    Confirm::NotRequested => Err(LedgerError::new(
                        "ledger: the writer channel is not in confirm mode",
                        "",
                    )),
                }
            }
            Backend::File { path, lock, .. } => {
                let _g = lock.lock().await;
                append_file(path, &body).map_err(|e| {
                    LedgerError::new(
                        format!("ledger: cannot write {}: {e}", path.display()),
                        "check the data dir's permissions and free space (HOPBACK_DATA_DIR)",
                    )
                })?;
                Ok(Event {
                    author: Some(event::LOCAL_FILE_AUTHOR.into()),
                    ..event
                })
            }
        }
    }

    /// Stream every event from `from` up to the current end through `f`, holding none of them.
    /// Returns how many were delivered. Records that are not readable events are skipped, and
    /// [`Ledger::take_skipped`] names them.
    pub async fn fold<F: FnMut(Event)>(
        &self,
        from: StreamStart,
        mut f: F,
    ) -> Result<u64, LedgerError> {
        if self.is_stream() {
            return self.fold_stream(from, f).await;
        }
        let mut sub = self.subscribe(from).await?;
        sub.catch_up = true;
        let mut n = 0u64;
        loop {
            let idle = if sub.at_end() {
                END_GRACE
            } else if n == 0 {
                READ_IDLE * 2
            } else {
                READ_IDLE
            };
            match sub.next_within(idle).await? {
                Some(e) => {
                    n += 1;
                    f(e)
                }
                None => break,
            }
            if sub.at_end() {
                break;
            }
        }
        sub.close().await;
        Ok(n)
    }

    /// The local cache of this stream's events (full reads from `First` only), if enabled.
    fn cache_path(&self) -> Option<PathBuf> {
        let Backend::Stream { session, name, .. } = &self.backend else {
            return None;
        };
        if std::env::var("HOPBACK_LEDGER_CACHE").is_ok_and(|v| v == "0") {
            return None;
        }
        Some(cache_file(session, name))
    }
}

/// Where the local cache of stream `name` on this session's broker lives.
fn cache_file(session: &Session, name: &str) -> PathBuf {
    {
        let p = session.profile();
        let key: String = format!("{}-{}-{name}", p.host_port(), p.vhost)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        crate::config::data_dir()
            .join("ledger-cache")
            .join(format!("{key}.jsonl"))
    }
}

impl Ledger {
    /// Stream fold: from the local cache (validated against the stream at its last offset) plus
    /// what the stream has beyond it; pipelined (a task drains the consumer while this one decodes).
    async fn fold_stream<F: FnMut(Event)>(
        &self,
        from: StreamStart,
        mut f: F,
    ) -> Result<u64, LedgerError> {
        let cache = if from == StreamStart::First {
            self.cache_path()
        } else {
            None
        };
        let mut n = 0u64;
        let mut sub = None;
        let mut cache_writer = None;
        if let Some(path) = &cache
            && let Some((last_offset, last_id)) = cache::last_entry(path)
        {
            {
                let mut s = self.subscribe_at(from, Some(last_offset)).await?;
                s.catch_up = true;
                let valid = match s.next_bytes_within(READ_IDLE * 2).await {
                    Ok(Some((Some(o), bytes, _, None))) => {
                        o == last_offset
                            && serde_json::from_slice::<Event>(&bytes)
                                .is_ok_and(|e| e.id == last_id)
                    }
                    _ => false,
                };
                if valid {
                    n += cache::replay(path, &mut f);
                    cache_writer = cache::Writer::open(path, false);
                    sub = Some(s);
                } else {
                    tracing::info!("ledger cache {} is stale; re-reading", path.display());
                    s.close().await;
                    cache::discard(path);
                }
            }
        }
        let mut sub = match sub {
            Some(s) => s,
            None => {
                // Subscribed first: a stream that is not there leaves no cache file behind.
                let mut s = self.subscribe(from).await?;
                if let Some(path) = &cache {
                    cache_writer = cache::Writer::open(path, true);
                }
                s.catch_up = true;
                s
            }
        };
        // Only a read from the first event expects the reported count.
        let from_first = from == StreamStart::First;
        type Batch = Vec<subscription::RawRecord>;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Batch, LedgerError>>(32);
        let reader = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(512);
            let mut got = 0u64;
            loop {
                // The reported count can lag the newest confirmed events by a moment: once it is
                // reached, wait briefly for more instead of stopping outright.
                let idle = if sub.at_end() {
                    END_GRACE
                } else if got == 0 && from_first && sub.end_hint().is_some_and(|n| n > 0) {
                    // The broker said the stream holds events: the first one can take longer
                    // than an idle gap to arrive on a busy broker (or one that just restarted).
                    FIRST_EXPECTED_EVENT
                } else if got == 0 {
                    READ_IDLE * 2
                } else {
                    READ_IDLE
                };
                match sub.next_bytes_within(idle).await {
                    Ok(Some(b)) => {
                        got += 1;
                        batch.push(b);
                        if batch.len() >= 512
                            && tx.send(Ok(std::mem::take(&mut batch))).await.is_err()
                        {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(f) => {
                        let _ = tx.send(Err(f)).await;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch)).await;
            }
            sub.close().await;
        });
        while let Some(batch) = rx.recv().await {
            for record in batch? {
                let (offset, has_newline) = (record.0, record.1.contains(&b'\n'));
                let bytes = record.1.clone();
                match subscription::read_record(record) {
                    Ok(e) => {
                        if let (Some(w), Some(o)) = (cache_writer.as_mut(), offset) {
                            // One line per event: re-encode anything a foreign writer pretty-printed.
                            if has_newline {
                                w.push(
                                    o,
                                    &serde_json::to_vec(&e).unwrap_or_default(),
                                    e.author.as_deref(),
                                );
                            } else {
                                w.push(o, &bytes, e.author.as_deref());
                            }
                        }
                        if from.admits(&e) {
                            n += 1;
                            f(e);
                        }
                    }
                    Err(r) => {
                        // The cache stops before it, so every later read meets it (and says so)
                        // again instead of passing it silently.
                        if let Some(w) = cache_writer.take() {
                            w.finish();
                        }
                        note_skipped(&self.skipped, r);
                    }
                }
            }
        }
        let _ = reader.await;
        if let Some(w) = cache_writer {
            w.finish();
        }
        Ok(n)
    }

    /// Read every event from `from` into memory (use [`Ledger::fold`] for big ledgers).
    pub async fn read(&self, from: StreamStart) -> Result<Vec<Event>, LedgerError> {
        let mut out = Vec::new();
        self.fold(from, |e| out.push(e)).await?;
        Ok(out)
    }

    /// Follow the ledger: events from `from` on, and then live as they are appended.
    pub async fn subscribe(&self, from: StreamStart) -> Result<Subscription, LedgerError> {
        self.subscribe_at(from, None).await
    }

    /// Subscribe at an absolute stream offset (`at`), or at `from`.
    async fn subscribe_at(
        &self,
        from: StreamStart,
        at: Option<u64>,
    ) -> Result<Subscription, LedgerError> {
        match &self.backend {
            Backend::Stream { session, name, .. } => {
                let offset = match at {
                    Some(o) => StreamOffset::Absolute(o),
                    None => from.offset(),
                };
                let tag = format!("hopback-ledger-{}", uuid::Uuid::new_v4().simple());
                let reader = stream::subscribe(session, name, &tag, READ_PREFETCH, offset)
                    .await
                    .map_err(|e| match e.source {
                        BrokerError::NotFound(_) => missing_stream(name),
                        source => ledger_failure(e.step, source),
                    })?;
                Ok(Subscription {
                    from,
                    catch_up: false,
                    skipped: self.skipped.clone(),
                    inner: SubInner::Stream {
                        consumer: reader.consumer,
                        unacked: 0,
                        last_tag: 0,
                        end_offset: reader.message_count,
                        last_offset: None,
                        first_offset: None,
                        absolute_end: at.is_some(),
                    },
                })
            }
            Backend::File { path, .. } => {
                let start = match from {
                    StreamStart::Next => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                };
                Ok(Subscription {
                    from,
                    catch_up: false,
                    skipped: self.skipped.clone(),
                    inner: SubInner::File {
                        path: path.clone(),
                        offset: start,
                        pending: std::collections::VecDeque::new(),
                        caught_up: false,
                    },
                })
            }
        }
    }
}

async fn declare_stream(
    session: &Session,
    name: &str,
    max_length_bytes: u64,
) -> Result<Option<String>, BrokerError> {
    // Whether it exists, asked first (a passive declare needs no permission): a user without
    // CONFIGURE then needs no further call after the refused declare below, whose channel the
    // broker closes — a call right after that could still meet the closing channel (seen in CI).
    let exists = matches!(session.passive_queue(name).await, Ok(Some(_)));
    let what = "declaring the ledger stream";
    // Replicated where the broker has the nodes (a ledger on one node stops with that node); a
    // ledger an earlier hopback declared without a replica count is used as it was declared
    // (`hopback check` says how many replicas it has).
    let r = match stream::declare(
        session,
        what,
        name,
        Some(max_length_bytes),
        Some(stream::STREAM_REPLICAS),
    )
    .await
    {
        Err(BrokerError::Precondition(d)) if d.contains("x-initial-cluster-size") => {
            stream::declare(session, what, name, Some(max_length_bytes), None).await
        }
        r => r,
    };
    match r {
        Ok(()) => Ok(None),
        // Exists with other arguments. Ask again with only the queue type: a stream with another
        // size limit (configured elsewhere) is used as is; anything else is not a ledger.
        Err(BrokerError::Precondition(detail)) => {
            let again = stream::declare(session, what, name, None, None).await;
            let short = |d: &str| d.split(" - ").nth(1).unwrap_or(d).to_string();
            match again {
                Err(BrokerError::Precondition(d2)) if d2.contains("x-queue-type") => {
                    Err(BrokerError::Precondition(format!(
                        "`{name}` exists but is not a stream ({})",
                        short(&d2)
                    )))
                }
                Ok(()) | Err(BrokerError::Precondition(_)) => Ok(Some(format!(
                    "declared elsewhere with other arguments, used as is ({})",
                    short(&detail)
                ))),
                Err(e) => Err(e),
            }
        }
        // A user without CONFIGURE permission (read-only, monitoring) may not declare, but a
        // passive declare needs no permission: if the stream exists, it is read as the team's
        // ledger; appends are then refused by the broker (WRITE), as they should be.
        Err(BrokerError::AccessRefused(_)) if exists => Ok(Some(
            "this user may not declare it (CONFIGURE): read as the team's ledger; appending needs WRITE on its name".to_string(),
        )),
        Err(BrokerError::AccessRefused(detail)) => {
            // Not seen before the declare (or that check failed): look again. The refused
            // declare closed its channel; a passive check right after can meet a channel still
            // closing, so it is tried a few times before giving up.
            for _ in 0..3 {
                match session.passive_queue(name).await {
                    Ok(Some(_)) => {
                        return Ok(Some(
                            "this user may not declare it (CONFIGURE): read as the team's ledger; appending needs WRITE on its name".to_string(),
                        ));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("ledger: passive check of `{name}` failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            Err(BrokerError::AccessRefused(detail))
        }
        Err(e) => Err(e),
    }
}

fn append_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut f = crate::files::append(path)?;
    let mut line = Vec::with_capacity(body.len() + 1);
    line.extend_from_slice(body);
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// Delete a ledger stream (tests and benchmarks clean up their throwaway streams with this).
pub async fn delete_stream(session: &Session, name: &str) -> Result<(), BrokerError> {
    amqp::delete_queue(session, name).await?;
    cache::discard(&cache_file(session, name));
    Ok(())
}
