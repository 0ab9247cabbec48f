//! The AMQP session: one lapin connection named after its purpose, a timeout on every call, and
//! errors translated into [`BrokerError`]s an operator can act on.
//!
//! Reconnection is ours, not lapin's (its auto-recovery is opt-in and partial): callers that live
//! long (the console's refresh task, the mover) drop a dead [`Session`] and call [`connect`] again
//! after [`backoff_delay`], reporting a [`crate::model::ConnState`] to the UI meanwhile.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};
use tokio::sync::Mutex;

use crate::broker::uri::scrub;
use crate::config::Profile;
use crate::error::Failure;

/// Default timeout of a single AMQP call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of establishing the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Broker errors, typed where callers branch on them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// TCP connect failed or the host is unknown.
    #[error("cannot reach the broker at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    /// The broker refused the credentials.
    #[error("the broker refused the login of user `{user}` at {addr}")]
    AuthFailed { user: String, addr: String },
    /// The vhost does not exist or the user may not use it.
    #[error("vhost `{vhost}` does not exist or user `{user}` has no access to it")]
    VhostDenied { vhost: String, user: String },
    /// A call did not answer in time.
    #[error("{what} timed out after {secs:.1} s")]
    Timeout { what: String, secs: f64 },
    /// An object is missing (404).
    #[error("{0}")]
    NotFound(String),
    /// An object exists with other arguments (406).
    #[error("{0}")]
    Precondition(String),
    /// Not allowed (403).
    #[error("{0}")]
    AccessRefused(String),
    /// Anything else the broker or the connection said.
    #[error("{0}")]
    Other(String),
}

impl BrokerError {
    /// Turn into a reportable failure with a hint.
    pub fn into_failure(self) -> Failure {
        let hint = match &self {
            BrokerError::Unreachable { .. } => {
                "is RabbitMQ running? start it with scripts/broker, or check --url / the profile's url"
            }
            BrokerError::AuthFailed { .. } => {
                "check the user and password (URL, password_env, password_file or HOPBACK_PASSWORD)"
            }
            BrokerError::VhostDenied { .. } => {
                "create it with `rabbitmqctl add_vhost` and grant access with `rabbitmqctl set_permissions`, or fix the vhost in the URL"
            }
            BrokerError::Timeout { .. } => {
                "the broker may be overloaded or blocked (memory/disk alarm); check `rabbitmqctl status`"
            }
            BrokerError::NotFound(_) => {
                "create it with `hopback init NS --versions v1,v2`, or check the name"
            }
            BrokerError::Precondition(_) => {
                "an object with this name exists with other arguments; delete it or adopt it in the profile's [namespaces] config"
            }
            BrokerError::AccessRefused(_) => {
                "the user lacks a permission; `hopback check` lists what is missing"
            }
            BrokerError::Other(_) => "run `hopback check` for a diagnosis",
        };
        Failure::error(self.to_string(), hint)
    }
}

impl From<BrokerError> for Failure {
    fn from(e: BrokerError) -> Self {
        e.into_failure()
    }
}

/// Classify a lapin error (text scrubbed of credentials).
pub fn classify(e: &lapin::Error, password: &str) -> BrokerError {
    let text = scrub(&e.to_string(), password);
    let text = crate::text::sanitize(&text).into_owned();
    if text.contains("NOT_FOUND") || text.contains("404") {
        BrokerError::NotFound(text)
    } else if text.contains("PRECONDITION_FAILED") || text.contains("406") {
        BrokerError::Precondition(text)
    } else if text.contains("ACCESS_REFUSED") || text.contains("403") {
        BrokerError::AccessRefused(text)
    } else {
        BrokerError::Other(text)
    }
}

/// Await `fut` for at most `limit`; a lapin error is classified, a timeout named.
pub async fn timed<T>(
    what: &str,
    limit: Duration,
    password: &str,
    fut: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e, password)),
        Err(_) => Err(BrokerError::Timeout {
            what: what.to_string(),
            secs: limit.as_secs_f64(),
        }),
    }
}

/// Exponential backoff with ±25 % jitter: 250 ms, 500 ms, 1 s, … capped at 10 s.
pub fn backoff_delay(attempt: u32) -> Duration {
    let base_ms = 250u64.saturating_mul(1u64 << attempt.min(6)).min(10_000);
    let jitter = rand::random_range(0.75..1.25);
    Duration::from_millis((base_ms as f64 * jitter) as u64)
}

/// An AMQP short string (queue, exchange, routing key, consumer tag). lapin panics on a
/// `ShortString` over 255 bytes, so every name built from operator or broker input goes through
/// here and becomes an error instead.
pub fn short(name: &str) -> Result<lapin::types::ShortString, BrokerError> {
    if name.len() > 255 {
        return Err(BrokerError::Other(format!(
            "name `{}…` is {} bytes; AMQP names are at most 255 bytes",
            crate::text::sanitize(&name.chars().take(40).collect::<String>()),
            name.len()
        )));
    }
    Ok(name.into())
}

/// Counts from a passive `queue.declare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready messages.
    pub ready: u32,
    /// Consumers.
    pub consumers: u32,
}

/// An open AMQP connection with a control channel for cheap passive checks.
pub struct Session {
    conn: Connection,
    profile: Profile,
    control: Mutex<Option<Channel>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("broker", &self.profile.display_url())
            .finish()
    }
}

/// Connect to the profile's broker; the connection shows as `hopback PURPOSE (operator)`.
pub async fn connect(
    profile: &Profile,
    purpose: &str,
    operator: &str,
) -> Result<Arc<Session>, BrokerError> {
    let name = format!("hopback {purpose} ({operator})");
    connect_named(profile, &name).await
}

/// Connect with an exact connection name (the drill's workers are named `NS worker vN`).
pub async fn connect_named(
    profile: &Profile,
    connection_name: &str,
) -> Result<Arc<Session>, BrokerError> {
    let password = profile.password.expose().to_string();
    let addr = profile.host_port();
    let props = ConnectionProperties::default()
        .with_connection_name(connection_name.chars().take(200).collect::<String>().into());
    let mut builder = DefaultConnectionBuilder::new()
        .map_err(|e| classify(&e, &password))?
        .with_uri_str(profile.amqp_url_with_credentials())
        .with_properties(props);
    if let Some(ca) = &profile.ca_file {
        let pem = std::fs::read_to_string(ca).map_err(|e| {
            BrokerError::Other(format!("cannot read ca_file {}: {e}", ca.display()))
        })?;
        builder = builder.with_tls_config(lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: Some(pem),
        });
    }
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, builder.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(classify_connect(&e, profile, &addr)),
        Err(_) => {
            return Err(BrokerError::Timeout {
                what: format!("connecting to {addr}"),
                secs: CONNECT_TIMEOUT.as_secs_f64(),
            });
        }
    };
    Ok(Arc::new(Session {
        conn,
        profile: profile.clone(),
        control: Mutex::new(None),
    }))
}

fn classify_connect(e: &lapin::Error, profile: &Profile, addr: &str) -> BrokerError {
    let text =
        crate::text::sanitize(&scrub(&e.to_string(), profile.password.expose())).into_owned();
    let lower = text.to_lowercase();
    if lower.contains("access_refused")
        || lower.contains("login was refused")
        || lower.contains("authentication")
    {
        BrokerError::AuthFailed {
            user: profile.username.clone(),
            addr: addr.to_string(),
        }
    } else if lower.contains("not_allowed") || lower.contains("vhost") {
        BrokerError::VhostDenied {
            vhost: profile.vhost.clone(),
            user: profile.username.clone(),
        }
    } else if lower.contains("refused")
        || lower.contains("resolve")
        || lower.contains("unreachable")
        || lower.contains("dns")
        || lower.contains("lookup")
        || lower.contains("no route")
    {
        BrokerError::Unreachable {
            addr: addr.to_string(),
            detail: text,
        }
    } else if matches!(e.kind(), lapin::ErrorKind::IOError(_)) {
        // RabbitMQ closes the socket on a failed PLAIN login before the close frame is read.
        if lower.contains("reset")
            || lower.contains("eof")
            || lower.contains("broken pipe")
            || lower.contains("unexpected end")
        {
            BrokerError::AuthFailed {
                user: profile.username.clone(),
                addr: addr.to_string(),
            }
        } else {
            BrokerError::Unreachable {
                addr: addr.to_string(),
                detail: text,
            }
        }
    } else {
        BrokerError::Other(format!("connecting to {addr}: {text}"))
    }
}

impl Session {
    /// The profile this session was opened with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// The password, for classifying errors of calls made on channels of this session.
    pub fn password(&self) -> &str {
        self.profile.password.expose()
    }
    /// The underlying lapin connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
    /// Is the connection still usable?
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }
    /// Is the broker blocking our publishes (memory or disk alarm)?
    pub fn is_blocked(&self) -> bool {
        self.conn.status().blocked()
    }
    /// Open a new channel (with timeout).
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        timed(
            "opening a channel",
            CALL_TIMEOUT,
            self.password(),
            self.conn.create_channel(),
        )
        .await
    }
    /// Open a new channel in publisher-confirm mode.
    pub async fn confirm_channel(&self) -> Result<Channel, BrokerError> {
        let ch = self.channel().await?;
        timed(
            "confirm.select",
            CALL_TIMEOUT,
            self.password(),
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(ch)
    }
    /// Passive `queue.declare`: exact ready and consumer counts, `None` if the queue is missing.
    /// A missing queue closes the channel (404), so the control channel is replaced lazily.
    pub async fn passive_queue(&self, name: &str) -> Result<Option<QueueCounts>, BrokerError> {
        if name.len() > 255 {
            return Ok(None); // cannot exist
        }
        let mut guard = self.control.lock().await;
        let ch = match guard.as_ref().filter(|c| c.status().connected()) {
            Some(c) => c.clone(),
            None => {
                let c = self.channel().await?;
                *guard = Some(c.clone());
                c
            }
        };
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match timed(
            "passive queue.declare",
            CALL_TIMEOUT,
            self.password(),
            ch.queue_declare(short(name)?, opts, FieldTable::default()),
        )
        .await
        {
            Ok(q) => Ok(Some(QueueCounts {
                ready: q.message_count(),
                consumers: q.consumer_count(),
            })),
            Err(BrokerError::NotFound(_)) => {
                *guard = None;
                Ok(None)
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }
    /// Does an exchange exist? (passive declare on a throwaway channel)
    pub async fn exchange_exists(&self, name: &str) -> Result<bool, BrokerError> {
        if name.len() > 255 {
            return Ok(false);
        }
        let ch = self.channel().await?;
        let opts = lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let r = timed(
            "passive exchange.declare",
            CALL_TIMEOUT,
            self.password(),
            ch.exchange_declare(
                short(name)?,
                lapin::ExchangeKind::Direct,
                opts,
                FieldTable::default(),
            ),
        )
        .await;
        match r {
            Ok(()) => {
                let _ = ch.close(200, "ok".into()).await;
                Ok(true)
            }
            Err(BrokerError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Close the connection politely (best effort, bounded).
    pub async fn close(&self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into())).await;
    }
}
