//! Operations (docs/architecture.md, "Operations"): namespace creation ([`init`]), gate flips
//! ([`gate`]), what the gate hashes ([`hash_on`]), replays, moves and drains ([`replay`]), purges
//! ([`purge`]), notes ([`note`]), rollbacks ([`rollback`], with [`plan`]) and the removal of
//! broker-engine moves left behind ([`stale_moves`]). Each one is owned end to end by one
//! function here that does
//! guard (read-only, permission pre-checks, zero-consumer guard) → journal the intent → act (with
//! the broker primitives of `broker/`) → verify → journal the outcome, and returns a typed report
//! or an [`OpError`]. The CLI verbs and the console only collect input, confirm and show the
//! report: they never write ledger events and never re-check read-only.

pub mod access;
pub mod alert;
pub mod canary;
pub mod gate;
pub mod hash_on;
pub mod import;
pub mod init;
pub mod migrate;
pub mod note;
pub mod plan;
pub mod purge;
pub mod replay;
pub mod rollback;
pub mod stale_moves;

use std::sync::Arc;

use crate::broker::mgmt::Mgmt;
use crate::broker::session::{BrokerError, Session};
use crate::config::Config;
use crate::ledger::{Event, EventKind, Ledger, Outcome};
use crate::text::sanitize;

/// Why an operation did not (fully) happen. The CLI turns it into an exit code at its edge
/// (refused → 3, verification → 4, the rest → 1); the console says which kind it was.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpError {
    /// Refused before anything changed: read-only profile, a guard, a missing permission.
    #[error("{message}")]
    Refused {
        /// What was refused and why (terminal-safe).
        message: String,
        /// What to try.
        hint: String,
    },
    /// The request itself is wrong (unknown version, weights summing to 0): nothing changed.
    #[error("{message}")]
    Invalid {
        /// What is wrong (terminal-safe).
        message: String,
        /// How to ask instead.
        hint: String,
    },
    /// Tried and failed; the message says how far it got.
    #[error("{message}")]
    Failed {
        /// What failed (terminal-safe).
        message: String,
        /// What to try.
        hint: String,
    },
    /// Done, but the read-back differs from what was asked.
    #[error("{message}")]
    Verification {
        /// What differs (terminal-safe).
        message: String,
        /// What to try.
        hint: String,
    },
    /// Done (and verified), but the ledger did not confirm the outcome event.
    #[error("{done}, but the ledger did not confirm the event: {cause}")]
    NotJournaled {
        /// What was done.
        done: String,
        /// Why the ledger failed.
        cause: String,
    },
    /// A broker error before anything changed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl OpError {
    /// A refusal with a hint.
    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Refused {
            message: message.into(),
            hint: hint.into(),
        }
    }
    /// An invalid request with a hint.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            hint: hint.into(),
        }
    }
    /// A failure with a hint.
    pub fn failed(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            hint: hint.into(),
        }
    }
    /// A failed verification with a hint.
    pub fn verification(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Verification {
            message: message.into(),
            hint: hint.into(),
        }
    }
    /// The kind of failure, as the console names it: `refused`, `failed`, `verification
    /// failed` or `not journaled`.
    pub fn kind(&self) -> &'static str {
        match self {
            OpError::Refused { .. } | OpError::Invalid { .. } => "refused",
            OpError::Broker(BrokerError::AccessRefused(_)) => "refused",
            OpError::Failed { .. } | OpError::Broker(_) => "failed",
            OpError::Verification { .. } => "verification failed",
            OpError::NotJournaled { .. } => "not journaled",
        }
    }
    /// What to try next.
    pub fn hint(&self) -> String {
        match self {
            OpError::Refused { hint, .. }
            | OpError::Invalid { hint, .. }
            | OpError::Failed { hint, .. }
            | OpError::Verification { hint, .. } => hint.clone(),
            OpError::NotJournaled { .. } => {
                "the change is real; record it with `hopback note` once the ledger works again (`hopback check`)".into()
            }
            OpError::Broker(e) => e.hint().to_string(),
        }
    }
    /// One line for a status bar: `refused: … — hint`.
    pub fn one_line(&self) -> String {
        format!(
            "{}: {}",
            self.kind(),
            crate::text::with_hint(&self.to_string(), &self.hint())
        )
    }
}

/// The read-only guard of every mutating operation: refuses before anything on the broker is
/// touched. The operations call it first; the CLI may call it before it even connects (the same
/// guard, asked early — never a second implementation).
pub fn require_writable(cfg: &Config, what: &str) -> Result<(), OpError> {
    if cfg.profile.read_only {
        return Err(OpError::refused(
            format!(
                "refusing to {what}: profile `{}` is read-only (nothing was changed)",
                sanitize(&cfg.profile.name)
            ),
            "drop --read-only, or use a profile with read_only = false (a profile's setting overrides the global one)",
        ));
    }
    Ok(())
}

/// The ready count of a namespace's DLQ, or — before any browse guard speaks of its type — the
/// plain fact that it does not exist (a mistyped namespace). Browse, show and purge ask this
/// first.
pub async fn dlq_depth(
    session: &crate::broker::session::Session,
    queue: &str,
) -> Result<u64, OpError> {
    session
        .passive_queue(queue)
        .await?
        .map(|c| u64::from(c.ready))
        .ok_or_else(|| {
            OpError::failed(
                format!("DLQ `{}` does not exist", sanitize(queue)),
                "`hopback status` lists the namespaces; create one with `hopback init NS --versions v1,v2`, or adopt its DLQ in the profile",
            )
        })
}

/// Where an operation was asked from (recorded in its ledger events as `via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A CLI verb.
    Cli,
    /// The console.
    Console,
    /// A rollback step.
    Rollback,
    /// A drill's scripted operator.
    Drill,
    /// A self-driving canary's step or abort.
    Canary,
}

impl Via {
    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Cli => "cli",
            Via::Console => "console",
            Via::Rollback => "rollback",
            Via::Drill => "drill",
            Via::Canary => "canary",
        }
    }
}

/// What every operation works with: the session, the management API (when reachable), the
/// ledger and the configuration.
#[derive(Clone)]
pub struct OpContext {
    /// AMQP session (operations that move messages open their own connections from its profile).
    pub session: Arc<Session>,
    /// Management API client (`None` when it cannot be built).
    pub mgmt: Option<Mgmt>,
    /// The ledger every operation journals to.
    pub ledger: Arc<Ledger>,
    /// Resolved configuration (profile, read-only, operator, thresholds).
    pub cfg: Config,
    /// Who asks.
    pub via: Via,
    /// Told of every event an operation appends (intent and outcome), as soon as the ledger
    /// confirms it — the console marks their echoes as its own by id.
    pub journal_sink: Option<JournalSink>,
}

/// See [`OpContext::journal_sink`].
pub type JournalSink = Arc<dyn Fn(&Event) + Send + Sync>;

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext")
            .field("profile", &self.cfg.profile.name)
            .field("via", &self.via)
            .finish()
    }
}

impl OpContext {
    /// A context over an open session; opens the ledger and builds the management client.
    pub async fn open(session: Arc<Session>, cfg: &Config, via: Via) -> Self {
        let ledger = Arc::new(Ledger::open(&session, cfg).await);
        Self {
            mgmt: Mgmt::new(&cfg.profile).ok(),
            session,
            ledger,
            cfg: cfg.clone(),
            via,
            journal_sink: None,
        }
    }

    /// A context from parts already open (tests, benchmarks, the drill).
    pub fn of(
        session: &Arc<Session>,
        mgmt: &Mgmt,
        ledger: &Arc<Ledger>,
        cfg: &Config,
        via: Via,
    ) -> Self {
        Self {
            session: session.clone(),
            mgmt: Some(mgmt.clone()),
            ledger: ledger.clone(),
            cfg: cfg.clone(),
            via,
            journal_sink: None,
        }
    }

    /// The read-only guard every mutating operation starts with (see [`require_writable`]).
    pub fn require_writable(&self, what: &str) -> Result<(), OpError> {
        require_writable(&self.cfg, what)
    }

    /// A new event of this operator (journaling marks it with where it was asked from).
    pub fn event(&self, kind: EventKind, ns: Option<&str>) -> Event {
        self.ledger.event(kind, ns)
    }

    fn with_via(&self, mut e: Event) -> Event {
        match &mut e.params {
            serde_json::Value::Object(m) => {
                m.entry("via")
                    .or_insert_with(|| serde_json::json!(self.via.as_str()));
            }
            serde_json::Value::Null => e.params = serde_json::json!({"via": self.via.as_str()}),
            _ => {}
        }
        e
    }

    async fn append(&self, event: Event) -> Result<Event, crate::ledger::LedgerError> {
        let e = self.ledger.append(event).await?;
        if let Some(sink) = &self.journal_sink {
            sink(&e);
        }
        Ok(e)
    }

    /// Journal an operation's intent (`outcome: started`). A ledger that cannot take it stops
    /// the operation before it acts: nothing may change that the timeline will not show.
    pub async fn journal_intent(&self, event: Event) -> Result<Event, OpError> {
        let event = self.with_via(event.outcome(Outcome::Started));
        self.append(event).await.map_err(|f| {
            OpError::refused(
                format!(
                    "the ledger did not take the operation's intent, so nothing was done: {}",
                    sanitize(&f.message)
                ),
                "check the ledger with `hopback check` (permissions on the hopback.ledger stream)",
            )
        })
    }

    /// Journal an operation's outcome; `done` says what happened, for the error when the
    /// ledger fails.
    pub async fn journal_outcome(&self, event: Event, done: &str) -> Result<Event, OpError> {
        self.append(self.with_via(event))
            .await
            .map_err(|f| OpError::NotJournaled {
                done: done.to_string(),
                cause: sanitize(&f.message).into_owned(),
            })
    }
}

/// The last step of an operation that journals its outcome whether or not it worked: the
/// operation's own `failure` wins, then a journaling error; otherwise `report`, given its event
/// by `with_event`.
pub(crate) fn settle<R>(
    failure: Option<OpError>,
    journaled: Result<Event, OpError>,
    report: R,
    with_event: impl FnOnce(&mut R, Event),
) -> Result<R, OpError> {
    match (failure, journaled) {
        (Some(f), _) => Err(f),
        (None, Err(j)) => Err(j),
        (None, Ok(e)) => {
            let mut report = report;
            with_event(&mut report, e);
            Ok(report)
        }
    }
}
