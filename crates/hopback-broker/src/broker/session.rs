//! The AMQP session: one lapin connection named after its purpose, a timeout on every call, and
//! errors translated into [`BrokerError`]s an operator can act on.
//!
//! Reconnection is ours, not lapin's (its auto-recovery is opt-in and partial): callers that live
//! long (the console's refresh task, the mover) drop a dead [`Session`] and call [`connect`] again
//! after [`backoff_delay`], reporting a [`crate::model::ConnState`] to the UI meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};
use tokio::sync::Mutex;

use crate::broker::uri::scrub;
use crate::config::Profile;

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
    /// Another connection's exclusive queue, or a queue whose exclusivity differs (405).
    #[error("{0}")]
    Locked(String),
    /// The broker blocked our publishes (a memory or disk alarm): they are held, not lost, until
    /// the alarm clears. `reason` is `memory alarm`, `disk alarm` or the broker's own words.
    #[error("broker blocked: {reason}")]
    Blocked { reason: String },
    /// A TLS handshake failed (or a plain client met a TLS port): its cause, by kind.
    #[error("TLS connection to {addr} failed: {}", cause.describe())]
    Tls {
        addr: String,
        cause: crate::broker::tls::TlsCause,
    },
    /// Anything else the broker or the connection said.
    #[error("{0}")]
    Other(String),
}

impl BrokerError {
    /// What to try next.
    pub fn hint(&self) -> std::borrow::Cow<'static, str> {
        match self {
            BrokerError::Tls { cause, .. } => cause.hint().into(),
            other => other.static_hint().into(),
        }
    }
    fn static_hint(&self) -> &'static str {
        match self {
            BrokerError::Tls { .. } => "",
            BrokerError::Unreachable { .. } => {
                "is RabbitMQ running? start it with scripts/broker, or check --url / the profile's url"
            }
            BrokerError::AuthFailed { .. } => {
                "check the user and password (URL, password_env, password_file or HOPBACK_PASSWORD)"
            }
            BrokerError::VhostDenied { .. } => {
                "create it with `rabbitmqctl add_vhost VHOST` and grant access with `rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ`, or fix the vhost in the URL"
            }
            BrokerError::Timeout { what, .. } if what.starts_with("connecting to") => {
                "is that the AMQP port (5672, or 5671 for TLS)? The management port (15672) does not answer AMQP; otherwise the broker may be overloaded (`rabbitmqctl status`)"
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
                "grant it (`rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ`) or use a profile whose user has it; nothing was changed by the refused call, and `hopback check` shows the user's permissions"
            }
            BrokerError::Locked(_) => {
                "another connection owns that queue exclusively (or it was declared without exclusivity); `hopback check` names lock holders"
            }
            BrokerError::Blocked { .. } => {
                "the broker holds every publish until its alarm clears (`rabbitmqctl status` lists alarms); nothing was acked that was not confirmed — re-run once the alarm is gone"
            }
            BrokerError::Other(_) => "run `hopback check` for a diagnosis",
        }
    }
    /// A refusal (a missing permission), not a breakage.
    pub fn is_refusal(&self) -> bool {
        matches!(self, BrokerError::AccessRefused(_))
    }
    /// Did a broker call run out of time?
    pub fn is_timeout(&self) -> bool {
        matches!(self, BrokerError::Timeout { .. })
    }
}

/// How every permission refusal starts (CLI, ledger reasons, the console's status line), so
/// callers holding only a message string can still recognise one ([`is_permission_denial`]).
pub const PERMISSION_DENIED: &str = "permission denied:";

/// Rewrite the broker's `ACCESS_REFUSED - write access to queue 'q' in vhost '/' refused for
/// user 'u'` into one line that names the missing permission:
/// `permission denied: user `u` lacks the WRITE permission on queue `q` (vhost `/`)`.
/// RabbitMQ 3.10 often leaves the permission out (`access to queue 'q' … refused`); then it is
/// inferred from the call that was refused (`during`, e.g. `queue.bind`). Text in another shape
/// keeps the broker's words behind the same prefix.
pub fn describe_access_refused(text: &str, during: Option<&str>) -> String {
    static RE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?:(configure|write|read) )?access to (queue|exchange|topic) '([^']*)' in vhost '([^']*)' refused for user '([^']*)'",
        )
        .ok()
    });
    if let Some(c) = RE.as_ref().and_then(|re| re.captures(text)) {
        let kind = &c[2];
        let what = match &c[3] {
            "amq.default" | "" => "the default exchange".to_string(),
            n => format!("{kind} `{n}`"),
        };
        let permission = c.get(1).map(|m| m.as_str().to_uppercase()).or_else(|| {
            during
                .and_then(|d| permission_for(d, kind))
                .map(str::to_string)
        });
        let call = during
            .map(|d| format!(" (needed for {d})"))
            .unwrap_or_default();
        return match permission {
            Some(p) => format!(
                "{PERMISSION_DENIED} user `{}` lacks the {p} permission on {what} in vhost `{}`{call}",
                &c[5], &c[4]
            ),
            None => format!(
                "{PERMISSION_DENIED} user `{}` lacks a permission on {what} in vhost `{}`{call}",
                &c[5], &c[4]
            ),
        };
    }
    let detail = text
        .find("ACCESS_REFUSED")
        .map_or(text, |i| &text[i..])
        .trim_end_matches(['"', ' ', ')', '}']);
    format!("{PERMISSION_DENIED} the broker refused the call: {detail}")
}

/// The permission an AMQP call needs on a resource of `kind` (RabbitMQ's access control table).
fn permission_for(call: &str, kind: &str) -> Option<&'static str> {
    let c = call.to_lowercase();
    if c.contains("passive") {
        None
    } else if c.contains("unbind") || c.contains("bind") {
        // Bindings need write on the destination (a queue here) and read on the source.
        Some(if kind == "queue" { "WRITE" } else { "READ" })
    } else if c.contains("declar") || c.contains("delete") {
        Some("CONFIGURE")
    } else if c.contains("publish") || c.contains("confirm") {
        Some("WRITE")
    } else if c.contains("consum") || c.contains("get") || c.contains("purge") {
        Some("READ")
    } else {
        None
    }
}

/// Does this message report a missing permission (from [`describe_access_refused`] or a
/// management API 401/403)?
pub fn is_permission_denial(message: &str) -> bool {
    message.contains(PERMISSION_DENIED)
}

/// Classify a lapin error (text scrubbed of credentials).
pub fn classify(e: &lapin::Error, password: &str) -> BrokerError {
    classify_during(e, password, None)
}

/// [`classify`], naming the call that failed (`queue.bind`, …) so a permission refusal can say
/// which permission the call needed.
pub fn classify_during(e: &lapin::Error, password: &str, during: Option<&str>) -> BrokerError {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let text = scrub(&e.to_string(), password);
    let text = crate::text::sanitize(&text).into_owned();
    // The broker's reply code first; the text only as a fallback, and never bare numbers: a
    // name such as `t-perm-new-6fcb9a9404` contains "404" (a refusal was once read as "not found").
    let soft = match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(s) => Some(s.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    };
    let is = |code: AMQPSoftError, name: &str| {
        soft.as_ref()
            .map_or_else(|| text.contains(name), |s| *s == code)
    };
    if is(AMQPSoftError::NOTFOUND, "NOT_FOUND") {
        BrokerError::NotFound(text)
    } else if is(AMQPSoftError::PRECONDITIONFAILED, "PRECONDITION_FAILED") {
        BrokerError::Precondition(text)
    } else if is(AMQPSoftError::ACCESSREFUSED, "ACCESS_REFUSED") {
        BrokerError::AccessRefused(describe_access_refused(&text, during))
    } else if is(AMQPSoftError::RESOURCELOCKED, "RESOURCE_LOCKED") {
        BrokerError::Locked(text)
    } else if text.contains(FRAME_TOO_LARGE) {
        // Off at once, not only when the connection's error event is seen (asynchronously): the
        // caller's retry, and any reconnect, must take the broker's frame size.
        lean_frames_off();
        BrokerError::Other(format!(
            "a message's properties were larger than this connection's frame ({text}); new connections take the broker's frame size: try again"
        ))
    } else if matches!(
        e.kind(),
        lapin::ErrorKind::InvalidConnectionState(_) | lapin::ErrorKind::IOError(_)
    ) {
        // lapin's own words ("invalid connection state: Error") do not say what happened.
        BrokerError::Other(format!("the connection to the broker was lost ({text})"))
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
        Ok(Err(e)) => Err(classify_during(&e, password, Some(what))),
        Err(_) => Err(BrokerError::Timeout {
            what: what.to_string(),
            secs: limit.as_secs_f64(),
        }),
    }
}

/// Exponential backoff with ±25 % jitter: 250 ms, 500 ms, 1 s, … capped at 10 s.
pub fn backoff_delay(attempt: u32) -> Duration {
    backoff_delay_max(attempt, Duration::from_secs(10))
}

/// Longest pause between the console's reconnect attempts: one connection retried every ~2 s
/// costs the broker nothing, and the console is back within a few seconds of the broker (the
/// fault matrix asserts < 5 s), however long the outage was.
pub const CONSOLE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// [`backoff_delay`] with its own cap (the jitter may exceed the cap by up to 25 %).
pub fn backoff_delay_max(attempt: u32, max: Duration) -> Duration {
    let cap_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    let base_ms = 250u64.saturating_mul(1u64 << attempt.min(6)).min(cap_ms);
    let jitter = rand::random_range(0.75..1.25);
    Duration::from_millis((base_ms as f64 * jitter) as u64)
}

/// The alarm named by the broker's `connection.blocked` reason, in the words the console shows:
/// RabbitMQ says `low on memory` / `low on disk` (3.x) or names the resource.
pub fn alarm_label(reason: &str) -> String {
    let lower = reason.to_lowercase();
    if lower.contains("memory") {
        "memory alarm".into()
    } else if lower.contains("disk") {
        "disk alarm".into()
    } else if reason.trim().is_empty() {
        "resource alarm".into()
    } else {
        crate::text::sanitize(reason.trim()).into_owned()
    }
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
    /// The connection's name as the broker lists it (`hopback gate (alice@bastion)`).
    name: String,
    control: Mutex<Option<Channel>>,
    /// The reason of the last `connection.blocked` (cleared by `connection.unblocked`).
    blocked_reason: Arc<std::sync::Mutex<Option<String>>>,
    /// Broker-side locks this connection holds for as long as it lives (`broker::lock::hold`).
    held_locks: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The broker's version from its AMQP server properties, once asked.
    server_version: tokio::sync::OnceCell<Option<String>>,
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

/// The frame size the console asks for unless the URL sets `frame_max`. lapin keeps 32 frames of
/// buffer per direction per connection, so the broker's default 128 KiB costs 8 MiB of RSS per
/// connection (the console holds four: 32 MiB); 32 KiB costs 2 MiB and moves messages as fast
/// (docs/performance.md: console RSS and the mover benchmark).
pub const CLIENT_FRAME_MAX: u32 = 32 * 1024;

/// Do new connections ask for [`CLIENT_FRAME_MAX`]? Off (the broker's own frame size) unless
/// [`use_lean_frames`]: a message's properties travel in one frame that is never split, so a
/// dead letter whose headers are larger than the frame (a Spring stack-trace header runs to
/// ~100 KiB) would close the connection that receives it (lapin: "frame too large") — every
/// browse, refresh or move of that DLQ would fail.
static LEAN_FRAMES: AtomicBool = AtomicBool::new(false);

/// Ask for [`CLIENT_FRAME_MAX`] on the connections opened from now on (the console, for its
/// memory). The first connection closed by a frame larger than that turns it off again for the
/// rest of the process: the connections that reconnect then take the broker's frame size.
pub fn use_lean_frames() {
    LEAN_FRAMES.store(true, Ordering::Relaxed);
}

/// Are new connections asking for lean frames (see [`use_lean_frames`])?
pub fn lean_frames() -> bool {
    LEAN_FRAMES.load(Ordering::Relaxed)
}

/// How lapin words a frame larger than the connection negotiated (it then closes the connection).
const FRAME_TOO_LARGE: &str = "frame too large";

/// A connection was closed by a frame larger than it asked for: stop asking for lean frames.
fn frame_too_large(e: &lapin::Error) {
    if e.to_string().contains(FRAME_TOO_LARGE) {
        lean_frames_off();
    }
}

fn lean_frames_off() {
    if LEAN_FRAMES.swap(false, Ordering::Relaxed) {
        tracing::warn!(
            "a message's properties did not fit a {CLIENT_FRAME_MAX}-byte frame; new connections take the broker's frame size"
        );
    }
}

fn with_frame_max(url: String) -> String {
    if !lean_frames() {
        return url;
    }
    match url::Url::parse(&url) {
        Ok(mut u) if !u.query_pairs().any(|(k, _)| k == "frame_max") => {
            u.query_pairs_mut()
                .append_pair("frame_max", &CLIENT_FRAME_MAX.to_string());
            u.to_string()
        }
        _ => url,
    }
}

/// The node connections try first (a cluster profile): the last one that answered. A failed
/// node moves it on, so the next connection — a reconnect after a node loss — starts elsewhere.
static PREFERRED_NODE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Per-node connect timeout when the profile names several nodes: a healthy node answers in
/// milliseconds, so a dead one must not hold the failover up for long.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connect with an exact connection name (the drill's workers are named `NS worker vN`). With
/// several node URLs (a cluster profile), any live node will do: the last good one first, then
/// the others in order; the session's profile then names the node it is on
/// ([`Session::node`]).
pub async fn connect_named(
    profile: &Profile,
    connection_name: &str,
) -> Result<Arc<Session>, BrokerError> {
    let n = profile.nodes();
    if n <= 1 {
        return connect_node(profile, connection_name, CONNECT_TIMEOUT).await;
    }
    let start = PREFERRED_NODE.load(Ordering::Relaxed) % n;
    let mut errors: Vec<(String, BrokerError)> = Vec::new();
    for k in 0..n {
        let i = (start + k) % n;
        let node = profile.node(i);
        match connect_node(&node, connection_name, NODE_CONNECT_TIMEOUT).await {
            Ok(s) => {
                PREFERRED_NODE.store(i, Ordering::Relaxed);
                return Ok(s);
            }
            Err(e) => {
                PREFERRED_NODE.store((i + 1) % n, Ordering::Relaxed);
                errors.push((node.host_port(), e));
            }
        }
    }
    // Every node failed. Wrong credentials or vhost are the same everywhere: say that.
    if let Some(pos) = errors.iter().position(|(_, e)| {
        matches!(
            e,
            BrokerError::AuthFailed { .. } | BrokerError::VhostDenied { .. }
        )
    }) {
        return Err(errors.swap_remove(pos).1);
    }
    Err(BrokerError::Unreachable {
        addr: format!(
            "any of the {n} nodes ({})",
            errors
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        detail: errors
            .iter()
            .map(|(a, e)| format!("{a}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Connect to the first node of `profile` (see [`connect_named`]).
async fn connect_node(
    profile: &Profile,
    connection_name: &str,
    connect_timeout: Duration,
) -> Result<Arc<Session>, BrokerError> {
    let password = profile.password.expose().to_string();
    let addr = profile.host_port();
    let props = ConnectionProperties::default()
        .with_connection_name(connection_name.chars().take(200).collect::<String>().into());
    let builder = DefaultConnectionBuilder::new()
        .map_err(|e| classify(&e, &password))?
        .with_uri_str(with_frame_max(profile.amqp_url_with_credentials()))
        .with_properties(props)
        .with_tls_config(crate::broker::tls::amqp_tls_config(profile));
    let conn = match tokio::time::timeout(connect_timeout, builder.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let err = classify_connect(&e, profile, &addr);
            let err = plain_to_tls_port(profile, err).await;
            if let BrokerError::Tls { cause, .. } = &err {
                tracing::warn!(node = %addr, cause = %cause.describe(), "AMQP TLS failed");
            } else {
                tracing::debug!(node = %addr, error = %err, "AMQP connect failed");
            }
            return Err(err);
        }
        Err(_) => {
            return Err(BrokerError::Timeout {
                what: format!("connecting to {addr}"),
                secs: connect_timeout.as_secs_f64(),
            });
        }
    };
    let blocked_reason = Arc::new(std::sync::Mutex::new(None));
    // lapin tracks *that* the connection is blocked; the reason (memory or disk) comes only as an
    // event. The task ends with the connection (its event stream closes).
    let events = conn.events_listener();
    let reason = Arc::downgrade(&blocked_reason);
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            let Some(slot) = reason.upgrade() else {
                return;
            };
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                lapin::Event::ConnectionBlocked(r) => {
                    tracing::warn!(reason = %r, "the broker blocked the connection");
                    *slot = Some(r);
                }
                lapin::Event::ConnectionUnblocked => *slot = None,
                lapin::Event::Error(e) => frame_too_large(&e),
                _ => {}
            }
        }
    });
    Ok(Arc::new(Session {
        conn,
        profile: profile.clone(),
        name: connection_name.chars().take(200).collect(),
        control: Mutex::new(None),
        blocked_reason,
        held_locks: Default::default(),
        server_version: tokio::sync::OnceCell::new(),
    }))
}

/// A plain `amqp://` connection that failed other than by a refused connection or a refused
/// login the broker spelled out: is that port a TLS port? (RabbitMQ's TLS listener closes the
/// socket on the AMQP header, which otherwise reads as a refused login or a dead broker.)
async fn plain_to_tls_port(profile: &Profile, err: BrokerError) -> BrokerError {
    if profile.is_tls() {
        return err;
    }
    let suspicious = match &err {
        BrokerError::AuthFailed { .. } | BrokerError::Other(_) => true,
        BrokerError::Unreachable { detail, .. } => !detail.to_lowercase().contains("refused"),
        _ => false,
    };
    if !suspicious {
        return err;
    }
    let (host, port) = profile.host_and_port();
    if crate::broker::tls::speaks_tls(profile, &host, port, Duration::from_secs(2)).await {
        BrokerError::Tls {
            addr: profile.host_port(),
            cause: crate::broker::tls::TlsCause::TlsPort { scheme: "amqps" },
        }
    } else {
        err
    }
}

fn classify_connect(e: &lapin::Error, profile: &Profile, addr: &str) -> BrokerError {
    if let lapin::ErrorKind::IOError(io) = e.kind()
        && let Some(cause) = crate::broker::tls::cause_of_io(io)
    {
        return BrokerError::Tls {
            addr: addr.to_string(),
            cause,
        };
    }
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
    } else if lower.contains("parsing error") || lower.contains("failed to parse") {
        // Something answered, but not in AMQP 0-9-1 (an HTTP server, another protocol).
        BrokerError::Unreachable {
            addr: addr.to_string(),
            detail: "the server there does not speak AMQP 0-9-1 (is it the AMQP port, 5672?)"
                .into(),
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
    /// The broker's version from its AMQP server properties (`connection.start`), read once per
    /// session on a short connection of its own (`broker::server_props`); `None`: unknown.
    pub async fn server_version(&self) -> Option<String> {
        self.server_version
            .get_or_init(|| crate::broker::server_props::server_version(&self.profile))
            .await
            .clone()
    }
    /// The profile this session was opened with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    /// Record that this connection holds (or no longer holds) the lock `name` for its lifetime.
    pub(crate) fn set_lock_held(&self, name: &str, held: bool) {
        let mut h = self.held_locks.lock().unwrap_or_else(|p| p.into_inner());
        if held {
            h.insert(name.to_string());
        } else {
            h.remove(name);
        }
    }

    /// Does this connection hold the lock `name` for its lifetime (`broker::lock::hold`)?
    pub fn holds_lock(&self, name: &str) -> bool {
        self.held_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// The connection's name as the broker lists it.
    pub fn connection_name(&self) -> &str {
        &self.name
    }
    /// `host:port` of the node this session is connected to.
    pub fn node(&self) -> String {
        self.profile.host_port()
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
    /// Is the broker blocking our publishes (memory or disk alarm)? lapin then sends nothing on
    /// this connection (not even acks) until the broker unblocks it.
    pub fn is_blocked(&self) -> bool {
        self.conn.status().blocked()
    }
    /// The alarm blocking this connection (`memory alarm`, `disk alarm`), if it is blocked.
    pub fn alarm(&self) -> Option<String> {
        if !self.is_blocked() {
            return None;
        }
        let reason = self
            .blocked_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Some(alarm_label(&reason))
    }
    /// `Err(Blocked)` when the broker is blocking this connection: a publish now would only wait.
    pub fn check_not_blocked(&self) -> Result<(), BrokerError> {
        match self.alarm() {
            Some(reason) => Err(BrokerError::Blocked { reason }),
            None => Ok(()),
        }
    }
    /// Name the real cause of a failed call: a timeout (or a connection error) on a blocked
    /// connection is the broker's alarm, not a slow broker.
    pub fn explain(&self, e: BrokerError) -> BrokerError {
        match (e, self.alarm()) {
            (e @ (BrokerError::Timeout { .. } | BrokerError::Other(_)), Some(reason)) => {
                tracing::debug!(error = %e, "call failed on a blocked connection");
                BrokerError::Blocked { reason }
            }
            (e, _) => e,
        }
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
        .map_err(|e| self.explain(e))
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
        .await
        .map_err(|e| self.explain(e))?;
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
                Err(self.explain(e))
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
    /// Does this user hold the `write` permission on `queue`? RabbitMQ lets anyone with `read`
    /// consume and ack (so remove) messages; hopback treats removing dead letters as a write and
    /// asks first, without changing anything. A `queue.bind` checks `write` on the queue first,
    /// then `read` on the source exchange, then looks the exchange up: the source here is a
    /// name-sake of the queue, so its `read` is the permission the caller needs on the queue
    /// anyway (permissions match names, whatever the kind) and no other object is involved. With
    /// no such exchange the bind ends in NOT_FOUND (permitted; nothing was bound) or
    /// ACCESS_REFUSED (not permitted). Should an exchange of that name exist, nothing is bound:
    /// the probe refuses to answer (fail closed).
    pub async fn probe_write(&self, queue: &str) -> Result<(), BrokerError> {
        if self.exchange_exists(queue).await? {
            return Err(BrokerError::AccessRefused(format!(
                "{PERMISSION_DENIED} cannot test the WRITE permission on queue `{}`: an exchange of the same name exists, and the test would bind the queue to it",
                crate::text::sanitize(queue)
            )));
        }
        let ch = self.channel().await?;
        let r = timed(
            "queue.bind (probing the write permission)",
            CALL_TIMEOUT,
            self.password(),
            ch.queue_bind(
                short(queue)?,
                short(queue)?,
                "hopback-write-probe".into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        match r {
            Err(BrokerError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
            // The exchange appeared between the two calls: undo the binding.
            Ok(()) => {
                let _ = ch
                    .queue_unbind(
                        short(queue)?,
                        short(queue)?,
                        "hopback-write-probe".into(),
                        FieldTable::default(),
                    )
                    .await;
                let _ = ch.close(200, "ok".into()).await;
                Ok(())
            }
        }
    }
    /// Close the connection politely (best effort, bounded).
    pub async fn close(&self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_refused_names_the_permission_with_or_without_the_brokers_word() {
        let with =
            "ACCESS_REFUSED - write access to queue 'ns.v1' in vhost '/' refused for user 'ro'";
        assert_eq!(
            describe_access_refused(with, None),
            "permission denied: user `ro` lacks the WRITE permission on queue `ns.v1` in vhost `/`"
        );
        // RabbitMQ 3.10's wording leaves the permission out: inferred from the call.
        let without = "ACCESS_REFUSED - access to queue 'ns.v1' in vhost '/' refused for user 'ro'";
        let d = describe_access_refused(without, Some("queue.bind"));
        assert!(
            d.contains("lacks the WRITE permission on queue `ns.v1`"),
            "{d}"
        );
        assert!(d.ends_with("(needed for queue.bind)"), "{d}");
        let d = describe_access_refused(
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'ro'",
            Some("basic.publish"),
        );
        assert!(
            d.contains("WRITE permission on the default exchange"),
            "{d}"
        );
        let d = describe_access_refused(
            "ACCESS_REFUSED - access to queue 'x' in vhost '/' refused for user 'ro'",
            Some("queue.declare"),
        );
        assert!(d.contains("CONFIGURE"), "{d}");
        let d = describe_access_refused(
            "ACCESS_REFUSED - access to queue 'x' in vhost '/' refused for user 'ro'",
            None,
        );
        assert!(d.contains("lacks a permission on queue `x`"), "{d}");
        let odd = describe_access_refused("protocol error: ACCESS_REFUSED - something else", None);
        assert_eq!(
            odd,
            "permission denied: the broker refused the call: ACCESS_REFUSED - something else"
        );
        assert!(is_permission_denial(&odd));
    }
}
