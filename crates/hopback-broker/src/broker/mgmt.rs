//! The management HTTP API client: one `GET /api/queues/{vhost}?columns=…` per refresh (never one
//! call per queue), bindings of an entry exchange, consumers and connections, and the few writes
//! hopback needs (closing a connection). Every call has a timeout; responses are gzip-compressed.
//! Errors never carry credentials (basic auth is sent as a header, never in a URL).
//! Every request bumps a call counter shared by a client's clones ([`Mgmt::calls`]): the refresh
//! benchmark uses it to prove one management call per console refresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::Profile;

/// Timeout of one management API call.
pub const MGMT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a whole-vhost listing (queues, bindings, exchanges): the broker takes seconds to
/// list 100,000 queues (docs/performance.md, "Scale"), and a listing cut off at
/// [`MGMT_TIMEOUT`] would leave such a vhost without any data at all.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Columns fetched for the queue list: exactly the fields [`QueueInfo`] reads (dotted paths pick
/// single rates out of `message_stats`), so a 10,000-queue answer stays small to receive, parse
/// and hold (docs/performance.md).
pub const QUEUE_COLUMNS: &str = "name,type,arguments,effective_policy_definition,\
state,node,leader,members,online,\
messages,messages_ready,messages_unacknowledged,consumers,\
message_stats.publish,message_stats.publish_details.rate,\
message_stats.deliver_get,message_stats.deliver_get_details.rate,\
message_stats.deliver_details.rate,message_stats.get_details.rate,\
message_stats.ack,message_stats.ack_details.rate,\
message_stats.redeliver,message_stats.redeliver_details.rate";

/// The queue list's columns on a vhost too large for the whole list: names only. Measured on
/// RabbitMQ 4.0.5 with 100,000 queues: names 25 s, names and counts 45 s, with placement or
/// statistics the broker drops the request at 60 s (docs/performance.md, "Scale"). The rows of
/// the namespaces on screen come with every column by name; the rest are known from the metrics
/// source or unknown.
pub const LEAN_QUEUE_COLUMNS: &str = "name";

/// Above this many queues on the broker (its overview's `object_totals`), the console asks for
/// the lean list from the start instead of finding out from a failed whole list.
pub const LARGE_BROKER_QUEUES: u64 = 20_000;

/// Management API errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MgmtError {
    /// Nothing listens (plugin not enabled, wrong URL).
    #[error("management API at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// 401: a wrong password, or a user without the `management`/`monitoring` tag.
    #[error(
        "permission denied: the management API refused user `{user}` (401: wrong password, or the user has no `management`/`monitoring` tag)"
    )]
    Unauthorized { user: String },
    /// 404.
    #[error("management API: not found: {0}")]
    NotFound(String),
    /// Other HTTP status.
    #[error("management API answered {status} for {path}")]
    Status { status: u16, path: String },
    /// The answer was not what we expected.
    #[error("management API answer for {path} could not be read: {detail}")]
    Decode { path: String, detail: String },
    /// Timed out.
    #[error("management API call {path} timed out")]
    Timeout { path: String },
    /// TLS failed (or plain HTTP met a TLS port): its cause, by kind.
    #[error("management API at {url}: {}", cause.describe())]
    Tls {
        url: String,
        cause: crate::broker::tls::TlsCause,
    },
}

impl MgmtError {
    /// What to try next: the cause's own hint (a TLS failure is not a missing plugin).
    pub fn hint(&self) -> String {
        match self {
            MgmtError::Tls { cause, .. } => cause.hint(),
            MgmtError::Unreachable { .. } => "is the management plugin enabled (rabbitmq-plugins enable rabbitmq_management) and is mgmt_url / --mgmt-url right? `hopback check` tells".into(),
            MgmtError::Unauthorized { .. } => "check the password; a user needs the `monitoring` (or `management`) tag for the API: rabbitmqctl set_user_tags USER monitoring".into(),
            MgmtError::Status { status: 403, .. } => "the user lacks a permission or tag this call needs (`hopback check` lists what this user can do)".into(),
            MgmtError::Timeout { .. } => "the management API is slow or overloaded; try again, or check the node (`rabbitmq-diagnostics status`)".into(),
            MgmtError::NotFound(_) | MgmtError::Status { .. } | MgmtError::Decode { .. } => {
                "`hopback check` diagnoses the management API".into()
            }
        }
    }
    /// A refusal (401, 403): the user lacks a tag or a permission — not a breakage.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            MgmtError::Unauthorized { .. } | MgmtError::Status { status: 403, .. }
        )
    }
}

/// A client for one profile's management API.
#[derive(Clone)]
pub struct Mgmt {
    http: reqwest::Client,
    /// The profile, for [`crate::broker::tls::speaks_tls`] when plain HTTP fails oddly.
    profile: Arc<Profile>,
    /// Every node's API, in the profile's order (one for a single broker).
    bases: Arc<Vec<url::Url>>,
    /// The one in use: moves on when a node does not answer (shared by clones).
    current: Arc<std::sync::atomic::AtomicUsize>,
    user: String,
    password: String,
    vhost: String,
    /// Requests sent by this client and its clones.
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for Mgmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mgmt")
            .field("base", &self.base().as_str())
            .field("user", &self.user)
            .finish()
    }
}

/// `/api/overview`, the parts we use.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Overview {
    /// RabbitMQ version.
    #[serde(default)]
    pub rabbitmq_version: String,
    /// Erlang version.
    #[serde(default)]
    pub erlang_version: String,
    /// Cluster name.
    #[serde(default)]
    pub cluster_name: String,
    /// Exchange types the broker knows (x-consistent-hash needs its plugin).
    #[serde(default)]
    pub exchange_types: Vec<NamedItem>,
    /// The metrics collector is off (`management_agent.disable_metrics_collector`): no
    /// statistics in any listing.
    #[serde(default)]
    pub disable_stats: bool,
    /// Object counts of the whole broker (absent without statistics: unknown).
    #[serde(default)]
    pub object_totals: Option<ObjectTotals>,
}

/// `/api/overview`'s `object_totals`, the part we use.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ObjectTotals {
    /// Queues on the whole broker.
    #[serde(default)]
    pub queues: Option<u64>,
}

/// `/api/nodes` (columns `name,mem_alarm,disk_free_alarm,applications`): the alarms that block
/// publishers, and the server version (from the `rabbit` application) in the same call.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct NodeInfo {
    /// Node name (`rabbit@host`).
    #[serde(default)]
    pub name: String,
    /// Memory alarm in effect (publishers blocked).
    #[serde(default)]
    pub mem_alarm: bool,
    /// Disk alarm in effect (publishers blocked).
    #[serde(default)]
    pub disk_free_alarm: bool,
    /// Running applications with versions.
    #[serde(default)]
    pub applications: Vec<AppVersion>,
    /// Running (the node list shows cluster members that are down as not running).
    #[serde(default = "yes")]
    pub running: bool,
    /// Nodes it is partitioned from.
    #[serde(default)]
    pub partitions: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One dynamic shovel's state (`/api/shovels/{vhost}`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ShovelStatus {
    /// Shovel name.
    #[serde(default)]
    pub name: String,
    /// `starting`, `running` or `terminated`.
    #[serde(default)]
    pub state: String,
    /// Why it terminated (when it did).
    #[serde(default)]
    pub reason: Option<serde_json::Value>,
    /// The node it runs on (`rabbit@host`); in a cluster, a shovel whose node goes is started
    /// again on another.
    #[serde(default)]
    pub node: Option<String>,
}

/// One dynamic shovel's definition (`/api/parameters/shovel/{vhost}`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ShovelParameter {
    /// Shovel name.
    #[serde(default)]
    pub name: String,
    /// Its definition (`src-queue`, `dest-exchange`, …).
    #[serde(default)]
    pub value: serde_json::Value,
}

/// One feature flag (`/api/feature-flags`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct FeatureFlag {
    /// `quorum_queue`, `stream_queue`, `khepri_db`, …
    #[serde(default)]
    pub name: String,
    /// `enabled`, `disabled`, `unavailable`, …
    #[serde(default)]
    pub state: String,
}

/// An application of a node and its version.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct AppVersion {
    /// Application name (`rabbit`).
    #[serde(default)]
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
}

/// The alarms in effect, as the console shows them: `memory alarm`, `disk alarm` (with the node
/// when the cluster has several).
pub fn alarms_of(nodes: &[NodeInfo]) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes {
        let at = if nodes.len() > 1 {
            format!(" on {}", crate::text::sanitize(&n.name))
        } else {
            String::new()
        };
        if n.mem_alarm {
            out.push(format!("memory alarm{at}"));
        }
        if n.disk_free_alarm {
            out.push(format!("disk alarm{at}"));
        }
    }
    out
}

/// An item with a `name`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct NamedItem {
    /// Its name.
    pub name: String,
}

/// A rate sample `{rate}`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq)]
pub struct RateDetails {
    /// Per second.
    #[serde(default)]
    pub rate: f64,
}

/// Queue `message_stats`: totals and rates.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct MessageStats {
    /// Published into the queue.
    #[serde(default)]
    pub publish: u64,
    /// Publish rate.
    #[serde(default)]
    pub publish_details: RateDetails,
    /// Delivered (deliver + get).
    #[serde(default)]
    pub deliver_get: u64,
    /// Deliver rate.
    #[serde(default)]
    pub deliver_get_details: RateDetails,
    /// Deliveries to consumers in manual-ack mode.
    #[serde(default)]
    pub deliver: u64,
    /// Deliveries to consumers in manual-ack mode, per second.
    #[serde(default)]
    pub deliver_details: RateDetails,
    /// `basic.get`s in manual-ack mode.
    #[serde(default)]
    pub get: u64,
    /// `basic.get`s in manual-ack mode, per second.
    #[serde(default)]
    pub get_details: RateDetails,
    /// Acknowledged.
    #[serde(default)]
    pub ack: u64,
    /// Ack rate.
    #[serde(default)]
    pub ack_details: RateDetails,
    /// Redelivered.
    #[serde(default)]
    pub redeliver: u64,
    /// Redeliver rate.
    #[serde(default)]
    pub redeliver_details: RateDetails,
}

/// One row of `/api/queues/{vhost}`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Declared arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The definition of the policy (and operator policy) in effect, if any (`null` when none).
    #[serde(default)]
    pub effective_policy_definition: Option<serde_json::Value>,
    /// `running`, `down`, `minority`, … (absent on some versions).
    #[serde(default)]
    pub state: Option<String>,
    /// Classic: its node. Quorum: its leader's node.
    #[serde(default)]
    pub node: Option<String>,
    /// Quorum: its leader.
    #[serde(default)]
    pub leader: Option<String>,
    /// Quorum: every member.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// Quorum: members online.
    #[serde(default)]
    pub online: Option<Vec<String>>,
    /// Total messages.
    #[serde(default)]
    pub messages: Option<u64>,
    /// Ready messages.
    #[serde(default)]
    pub messages_ready: Option<u64>,
    /// Unacknowledged messages.
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    /// Bytes of the ready messages' bodies (only in [`Mgmt::queue`]'s answer; the lists leave
    /// this column out).
    #[serde(default)]
    pub message_bytes_ready: Option<u64>,
    /// Consumers.
    #[serde(default)]
    pub consumers: Option<u64>,
    /// Rates (absent until the queue saw traffic).
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
    /// Durable (only in [`Mgmt::queue`]'s answer).
    #[serde(default)]
    pub durable: Option<bool>,
    /// Exclusive to one connection (only in [`Mgmt::queue`]'s answer).
    #[serde(default)]
    pub exclusive: Option<bool>,
    /// Auto-delete (only in [`Mgmt::queue`]'s answer).
    #[serde(default)]
    pub auto_delete: Option<bool>,
    /// The owning connection of an exclusive queue: `{"name": …}` once the broker has reported
    /// it (4.0 sends `[]` until then).
    #[serde(default)]
    pub owner_pid_details: serde_json::Value,
}

impl QueueInfo {
    /// The owning connection's server-side name, when the API names it.
    pub fn owner_connection(&self) -> Option<&str> {
        self.owner_pid_details.get("name").and_then(|n| n.as_str())
    }
}

/// One row of `/api/exchanges/{vhost}`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ExchangeInfo {
    /// Exchange name.
    pub name: String,
    /// Exchange type.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Declared arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// One binding.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct BindingInfo {
    /// Source exchange.
    pub source: String,
    /// Destination (queue or exchange).
    pub destination: String,
    /// `queue` or `exchange`.
    #[serde(default)]
    pub destination_type: String,
    /// Routing key (the weight, for a consistent-hash exchange).
    #[serde(default)]
    pub routing_key: String,
}

/// One consumer.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ConsumerInfo {
    /// Consumer tag.
    #[serde(default)]
    pub consumer_tag: String,
    /// The queue consumed.
    pub queue: NamedItem,
    /// The channel it is on.
    pub channel_details: ChannelDetails,
}

/// The channel of a consumer.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ChannelDetails {
    /// Server-side connection name (`ip:port -> ip:port`).
    #[serde(default)]
    pub connection_name: String,
}

/// One connection.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ConnectionInfo {
    /// Server-side name, used to close it.
    pub name: String,
    /// The client-provided `connection_name`.
    #[serde(default)]
    pub user_provided_name: Option<String>,
    /// User.
    #[serde(default)]
    pub user: String,
}

/// Permissions of a user in a vhost.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Permissions {
    /// Configure regex.
    #[serde(default)]
    pub configure: String,
    /// Write regex.
    #[serde(default)]
    pub write: String,
    /// Read regex.
    #[serde(default)]
    pub read: String,
}

/// One user's permissions in the vhost (`/api/vhosts/{vhost}/permissions`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct UserPermissions {
    /// User name.
    pub user: String,
    /// Their configure/write/read regexes.
    #[serde(flatten)]
    pub perms: Permissions,
}

/// One broker user (`/api/users`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Tags (a list in 3.10+, a comma-separated string before).
    #[serde(default)]
    pub tags: serde_json::Value,
}

impl UserInfo {
    /// The user's tags, whichever form the broker sent.
    pub fn tag_list(&self) -> Vec<String> {
        tags_of(&self.tags)
    }
}

/// Tags as the management API sends them: a list (3.10+) or a comma-separated string.
pub fn tags_of(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|t| t.as_str())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        serde_json::Value::String(s) => s
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// `/api/whoami`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct WhoAmI {
    /// User name.
    pub name: String,
    /// Tags (a list in 3.10+, a string before).
    #[serde(default)]
    pub tags: serde_json::Value,
}

/// `s` as a literal inside a (PCRE) regular expression: every ASCII character but letters and
/// digits escaped (a backslash before punctuation is always literal there).
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Is `path` a listing of every queue, exchange or binding of the vhost?
fn is_listing(path: &str, vhost: &str) -> bool {
    let p = path.split('?').next().unwrap_or(path);
    let v = enc(vhost);
    ["queues", "exchanges", "bindings"]
        .iter()
        .any(|k| p == format!("/api/{k}/{v}"))
}

/// The typed reading of an answer.
fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, MgmtError> {
    serde_json::from_slice(bytes)
        .or_else(|_| {
            // A node joining the cluster has been seen to answer a row with a key twice
            // (`online`, RabbitMQ 4.0.5): the typed parse refuses duplicates, a generic one
            // keeps the last — one odd row must not cost the whole list.
            serde_json::from_slice::<serde_json::Value>(bytes).and_then(serde_json::from_value)
        })
        .map_err(|e| MgmtError::Decode {
            path: path.to_string(),
            detail: e.to_string(),
        })
}

/// Reads a list of queue rows, keeping those whose name the predicate accepts.
struct KeepRows<'a>(&'a (dyn Fn(&str) -> bool + Sync));

impl<'de> serde::de::DeserializeSeed<'de> for KeepRows<'_> {
    type Value = Vec<QueueInfo>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeepRows<'_> {
    type Value = Vec<QueueInfo>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of queues")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(q) = seq.next_element::<QueueInfo>()? {
            if (self.0)(&q.name) {
                out.push(q);
            }
        }
        out.shrink_to_fit();
        Ok(out)
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Mgmt {
    /// A client for the profile's management API.
    pub fn new(profile: &Profile) -> Result<Self, MgmtError> {
        // The same trust and client certificate as the AMQP link (`broker::tls`).
        let b = crate::broker::tls::http_client_builder(profile)
            .map_err(|e| MgmtError::Tls {
                url: profile.mgmt_url.to_string(),
                cause: crate::broker::tls::TlsCause::Other(e.to_string()),
            })?
            .timeout(MGMT_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .gzip(true);
        let http = b.build().map_err(|e| MgmtError::Unreachable {
            url: profile.mgmt_url.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            http,
            profile: Arc::new(profile.clone()),
            bases: Arc::new(if profile.mgmt_urls.is_empty() {
                vec![profile.mgmt_url.clone()]
            } else {
                profile.mgmt_urls.clone()
            }),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            user: profile.username.clone(),
            password: profile.password.expose().to_string(),
            vhost: profile.vhost.clone(),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many HTTP requests this client (and its clones) has sent so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The base URL in use (no credentials).
    pub fn base_url(&self) -> String {
        self.base().to_string()
    }

    fn base(&self) -> url::Url {
        let i = self.current.load(Ordering::Relaxed) % self.bases.len();
        self.bases[i].clone()
    }

    /// The next node's API, after `failed` did not answer (a cluster profile; a no-op for one).
    fn fail_over(&self, failed: &url::Url) {
        let n = self.bases.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        if &self.bases[i] == failed {
            self.current.store((i + 1) % n, Ordering::Relaxed);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base().as_str().trim_end_matches('/'), path)
    }

    /// Send `build(url)` to the API in use; when its node does not answer (connection refused,
    /// or a timeout when `retry_timeouts`), move to the next node and try once more per node.
    async fn send_any(
        &self,
        path: &str,
        retry_timeouts: bool,
        build: impl Fn(String) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, MgmtError> {
        let mut last = None;
        for _ in 0..self.bases.len() {
            let base = self.base();
            self.count_call();
            match build(self.url(path))
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let retry = e.is_connect() || (retry_timeouts && e.is_timeout());
                    let err = self.explain_send_err(&base, path, e).await;
                    if !retry || self.bases.len() == 1 {
                        return Err(err);
                    }
                    self.fail_over(&base);
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or(MgmtError::Timeout {
            path: path.to_string(),
        }))
    }

    /// [`Self::map_send_err`], and when plain HTTP failed other than by a refused connection or
    /// a timeout, ask whether the port speaks TLS (an HTTPS listener closes on plain HTTP).
    async fn explain_send_err(&self, base: &url::Url, path: &str, e: reqwest::Error) -> MgmtError {
        let probe = base.scheme() == "http" && !e.is_connect() && !e.is_timeout();
        let err = self.map_send_err(path, e);
        if probe
            && let (Some(host), Some(port)) = (base.host_str(), base.port_or_known_default())
            && crate::broker::tls::speaks_tls(&self.profile, host, port, Duration::from_secs(2))
                .await
        {
            return MgmtError::Tls {
                url: base.to_string(),
                cause: crate::broker::tls::TlsCause::TlsPort { scheme: "https" },
            };
        }
        err
    }

    fn map_send_err(&self, path: &str, e: reqwest::Error) -> MgmtError {
        if let Some(cause) = crate::broker::tls::cause_of(&e) {
            tracing::warn!(url = %self.base(), cause = %cause.describe(), "management API TLS failed");
            return MgmtError::Tls {
                url: self.base().to_string(),
                cause,
            };
        }
        if e.is_timeout() {
            MgmtError::Timeout {
                path: path.to_string(),
            }
        } else {
            // reqwest's own words ("error sending request") hide the cause: say the whole chain.
            let e = e.without_url();
            let detail =
                crate::broker::uri::scrub(&crate::broker::tls::error_chain(&e), &self.password);
            tracing::debug!(url = %self.base(), error = %detail, "management API call failed");
            MgmtError::Unreachable {
                url: self.base().to_string(),
                detail,
            }
        }
    }

    /// [`Self::get`] of one object: `None` when the API answers 404.
    async fn get_if_exists<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, MgmtError> {
        match self.get(path).await {
            Ok(x) => Ok(Some(x)),
            Err(MgmtError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET path` (failing over between the nodes' APIs), its answer as typed JSON.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, MgmtError> {
        let bytes = self.get_bytes(path).await?;
        decode(path, &bytes)
    }

    /// `GET path` (failing over between the nodes' APIs), the body of a successful answer. A
    /// whole-vhost listing (`path` without an object name after the vhost) gets
    /// [`LIST_TIMEOUT`].
    async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, MgmtError> {
        let listing = is_listing(path, &self.vhost);
        let resp = self
            .send_any(path, true, |url| {
                let req = self.http.get(url);
                if listing {
                    req.timeout(LIST_TIMEOUT)
                } else {
                    req
                }
            })
            .await?;
        let resp = self.check_status(resp, path)?;
        resp.bytes().await.map_err(|e| self.map_send_err(path, e))
    }

    async fn send_no_body(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(), MgmtError> {
        // A mutation is retried on another node only when this one refused the connection
        // (it cannot have acted), never after a timeout.
        let resp = self
            .send_any(path, false, |url| {
                let req = self.http.request(method.clone(), url);
                match &body {
                    Some(b) => req.json(b),
                    None => req,
                }
            })
            .await?;
        self.check_status(resp, path).map(drop)
    }

    /// The answer when its status is a success; otherwise the error its status means (the one
    /// mapping of HTTP statuses to [`MgmtError`] kinds).
    fn check_status(
        &self,
        resp: reqwest::Response,
        path: &str,
    ) -> Result<reqwest::Response, MgmtError> {
        match resp.status().as_u16() {
            200..=299 => Ok(resp),
            401 => Err(MgmtError::Unauthorized {
                user: self.user.clone(),
            }),
            404 => Err(MgmtError::NotFound(path.to_string())),
            s => Err(MgmtError::Status {
                status: s,
                path: path.to_string(),
            }),
        }
    }

    /// `GET /api/overview`.
    pub async fn overview(&self) -> Result<Overview, MgmtError> {
        self.get("/api/overview").await
    }
    /// `GET /api/nodes` with the columns of [`NodeInfo`] (needs the `monitoring` tag).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, MgmtError> {
        self.get(
            "/api/nodes?columns=name,running,partitions,mem_alarm,disk_free_alarm,applications",
        )
        .await
    }
    /// `GET /api/feature-flags` (name and state of each).
    pub async fn feature_flags(&self) -> Result<Vec<FeatureFlag>, MgmtError> {
        self.get("/api/feature-flags").await
    }
    /// `GET /api/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, MgmtError> {
        self.get("/api/whoami").await
    }
    /// `GET /api/permissions/{vhost}/{user}`.
    pub async fn permissions(&self) -> Result<Permissions, MgmtError> {
        self.get(&format!(
            "/api/permissions/{}/{}",
            enc(&self.vhost),
            enc(&self.user)
        ))
        .await
    }
    /// `GET /api/users` (administrators only): every broker user with its tags.
    pub async fn users(&self) -> Result<Vec<UserInfo>, MgmtError> {
        self.get("/api/users?columns=name,tags").await
    }
    /// `GET /api/vhosts/{vhost}/permissions` (administrators only): every user's permissions
    /// in the profile's vhost.
    pub async fn vhost_permissions(&self) -> Result<Vec<UserPermissions>, MgmtError> {
        self.get(&format!("/api/vhosts/{}/permissions", enc(&self.vhost)))
            .await
    }
    /// The profile's vhost.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }
    /// `GET /api/vhosts/{vhost}` — does the vhost exist?
    pub async fn vhost_exists(&self) -> Result<bool, MgmtError> {
        Ok(self
            .get_if_exists::<serde_json::Value>(&format!("/api/vhosts/{}", enc(&self.vhost)))
            .await?
            .is_some())
    }
    /// The queues of the vhost whose names `keep` accepts, with the columns of [`Self::queues`],
    /// in one call: every row is read as the answer is parsed and only the kept ones are held,
    /// so the rows of a vhost's other 60,000 queues never sit in memory.
    pub async fn queues_where(
        &self,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<QueueInfo>, MgmtError> {
        self.queues_where_with(keep, QUEUE_COLUMNS).await
    }
    /// [`Self::queues_where`] with [`LEAN_QUEUE_COLUMNS`]: no statistics, so the broker need
    /// not join every row with its statistics database (a vhost too large for the whole list).
    pub async fn queues_where_lean(
        &self,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<QueueInfo>, MgmtError> {
        self.queues_where_with(keep, LEAN_QUEUE_COLUMNS).await
    }
    async fn queues_where_with(
        &self,
        keep: &(dyn Fn(&str) -> bool + Sync),
        columns: &str,
    ) -> Result<Vec<QueueInfo>, MgmtError> {
        let path = format!("/api/queues/{}?columns={columns}", enc(&self.vhost));
        let bytes = self.get_bytes(&path).await?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde::de::DeserializeSeed::deserialize(KeepRows(keep), &mut de) {
            Ok(rows) => Ok(rows),
            // A row with a key twice (see `get`): the generic parse, then the same filter.
            Err(_) => {
                let all: Vec<QueueInfo> = decode(&path, &bytes)?;
                Ok(all.into_iter().filter(|q| keep(&q.name)).collect())
            }
        }
    }
    /// All queues of the vhost in one call, with only the columns we use.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, MgmtError> {
        self.get(&format!(
            "/api/queues/{}?columns={QUEUE_COLUMNS}",
            enc(&self.vhost)
        ))
        .await
    }
    /// The queues whose names start with `prefix` (exactly, case and all), with the columns of
    /// [`Self::queues`]: filtered by the broker (`name=^PREFIX`, a page of 500 at a time), so on a
    /// vhost of 10,000 queues a namespace's handful costs ~0.1 s instead of ~1 s for the whole
    /// list (measured on 3.10.8, docs/performance.md).
    pub async fn queues_with_prefix(&self, prefix: &str) -> Result<Vec<QueueInfo>, MgmtError> {
        self.queues_with_prefixes(&[prefix.to_string()]).await
    }
    /// The queues whose names start with any of `prefixes` (exactly), in one filtered listing
    /// (`name=^(A|B|…)`, paged): the rows of the namespaces on screen without the whole list.
    pub async fn queues_with_prefixes(
        &self,
        prefixes: &[String],
    ) -> Result<Vec<QueueInfo>, MgmtError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let matches = |name: &str| prefixes.iter().any(|p| name.starts_with(p.as_str()));
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<QueueInfo>,
            #[serde(default)]
            page_count: u64,
        }
        let regex = format!(
            "^({})",
            prefixes
                .iter()
                .map(|p| regex_literal(p))
                .collect::<Vec<_>>()
                .join("|")
        );
        let mut out = Vec::new();
        let mut page = 1u64;
        loop {
            let p: Page = match self
                .get(&format!(
                    "/api/queues/{}?columns={QUEUE_COLUMNS}&page={page}&page_size=500&use_regex=true&name={}",
                    enc(&self.vhost),
                    enc(&regex)
                ))
                .await
            {
                Ok(p) => p,
                // An API without paging or filters: the whole list, filtered here.
                Err(MgmtError::Decode { .. } | MgmtError::Status { status: 400, .. })
                    if page == 1 =>
                {
                    return self.queues_where(&matches).await;
                }
                Err(e) => return Err(e),
            };
            // The broker's filter ignores case: keep the exact prefixes only.
            out.extend(p.items.into_iter().filter(|q| matches(&q.name)));
            if page >= p.page_count {
                return Ok(out);
            }
            page += 1;
        }
    }
    /// The queues that can be `ns`'s: by prefix for a convention namespace
    /// ([`Self::queues_with_prefix`]), the whole list for an adoption.
    pub async fn namespace_queues(
        &self,
        ns: &crate::topology::Namespace,
    ) -> Result<Vec<QueueInfo>, MgmtError> {
        match ns.queue_prefix() {
            Some(p) => self.queues_with_prefix(&p).await,
            None => self.queues().await,
        }
    }
    /// All exchanges of the vhost.
    pub async fn exchanges(&self) -> Result<Vec<ExchangeInfo>, MgmtError> {
        self.get(&format!(
            "/api/exchanges/{}?columns=name,type,arguments",
            enc(&self.vhost)
        ))
        .await
    }
    /// One exchange (`None` if missing).
    pub async fn exchange(&self, name: &str) -> Result<Option<ExchangeInfo>, MgmtError> {
        self.get_if_exists(&format!(
            "/api/exchanges/{}/{}",
            enc(&self.vhost),
            enc(name)
        ))
        .await
    }
    /// One queue with everything the API has on it, declared arguments included (`None` if
    /// missing) — for checks and tests; the console's list uses the narrow [`QUEUE_COLUMNS`].
    pub async fn queue(&self, name: &str) -> Result<Option<QueueInfo>, MgmtError> {
        self.get_if_exists(&format!("/api/queues/{}/{}", enc(&self.vhost), enc(name)))
            .await
    }
    /// The publish counter of `queue` over the last `window_s` seconds, from the broker's own
    /// samples (`msg_rates_age`, one every 5 s): `(unix ms, total published)`, newest first.
    /// `Ok(None)`: the queue is missing, or the broker collects no metrics (unknown, never 0);
    /// `Ok(Some([]))`: it exists and has never had a message published to it.
    pub async fn publish_history(
        &self,
        queue: &str,
        window_s: u64,
    ) -> Result<Option<Vec<(i64, u64)>>, MgmtError> {
        let Some(v) = self
            .get_if_exists::<serde_json::Value>(&format!(
                "/api/queues/{}/{}?columns=name,messages,message_stats.publish,message_stats.publish_details&msg_rates_age={window_s}&msg_rates_incr=5",
                enc(&self.vhost),
                enc(queue)
            ))
            .await?
        else {
            return Ok(None);
        };
        let Some(samples) = v
            .pointer("/message_stats/publish_details/samples")
            .and_then(|s| s.as_array())
        else {
            // Counts without stats: a queue nothing was ever published to. Neither: no metrics.
            return Ok(v
                .get("messages")
                .filter(|m| !m.is_null())
                .map(|_| Vec::new()));
        };
        Ok(Some(
            samples
                .iter()
                .filter_map(|s| Some((s["timestamp"].as_i64()?, s["sample"].as_u64()?)))
                .collect(),
        ))
    }
    /// Bindings whose source is `exchange` (the gate, for an entry exchange).
    pub async fn bindings_from(&self, exchange: &str) -> Result<Vec<BindingInfo>, MgmtError> {
        self.get(&format!(
            "/api/exchanges/{}/{}/bindings/source",
            enc(&self.vhost),
            enc(exchange)
        ))
        .await
    }
    /// Bindings whose destination is the queue `queue` (the default exchange's included).
    pub async fn queue_bindings(&self, queue: &str) -> Result<Vec<BindingInfo>, MgmtError> {
        self.get(&format!(
            "/api/queues/{}/{}/bindings",
            enc(&self.vhost),
            enc(queue)
        ))
        .await
    }
    /// All bindings of the vhost (one call, for discovery).
    pub async fn bindings(&self) -> Result<Vec<BindingInfo>, MgmtError> {
        // Only the fields `BindingInfo` reads: a third of the answer on a large vhost.
        self.get(&format!(
            "/api/bindings/{}?columns=source,destination,destination_type,routing_key",
            enc(&self.vhost)
        ))
        .await
    }
    /// All consumers of the vhost.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>, MgmtError> {
        self.get(&format!("/api/consumers/{}", enc(&self.vhost)))
            .await
    }
    /// The connections of the vhost (name and client-provided name): a worker named `NS worker
    /// v2` in another vhost is another namespace's.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, MgmtError> {
        self.get(&format!(
            "/api/vhosts/{}/connections?columns=name,user_provided_name,user",
            enc(&self.vhost)
        ))
        .await
    }
    /// One connection by its server-side name (`None`: gone).
    pub async fn connection(&self, name: &str) -> Result<Option<ConnectionInfo>, MgmtError> {
        self.get_if_exists(&format!("/api/connections/{}", enc(name)))
            .await
    }
    /// Close a connection by its server-side name.
    pub async fn close_connection(&self, name: &str, reason: &str) -> Result<(), MgmtError> {
        let path = format!("/api/connections/{}", enc(name));
        let resp = self
            .send_any(&path, false, |url| {
                self.http.delete(url).header("X-Reason", reason)
            })
            .await?;
        self.check_status(resp, &path).map(drop)
    }
    /// Create or replace a policy of the vhost (`migrate` sets at-least-once dead lettering on
    /// version queues that have no policy of their own).
    pub async fn put_policy(&self, name: &str, policy: serde_json::Value) -> Result<(), MgmtError> {
        let path = format!("/api/policies/{}/{}", enc(&self.vhost), enc(name));
        self.send_no_body(reqwest::Method::PUT, &path, Some(policy))
            .await
    }
    /// Delete a policy of the vhost (a missing one is `NotFound`).
    pub async fn delete_policy(&self, name: &str) -> Result<(), MgmtError> {
        let path = format!("/api/policies/{}/{}", enc(&self.vhost), enc(name));
        self.send_no_body(reqwest::Method::DELETE, &path, None)
            .await
    }
    /// Create a dynamic shovel (the broker engine of a move, `broker::shovel`; benchmarks' baseline).
    pub async fn put_shovel(&self, name: &str, value: serde_json::Value) -> Result<(), MgmtError> {
        let path = format!("/api/parameters/shovel/{}/{}", enc(&self.vhost), enc(name));
        self.send_no_body(
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({ "value": value })),
        )
        .await
    }
    /// Delete a dynamic shovel.
    pub async fn delete_shovel(&self, name: &str) -> Result<(), MgmtError> {
        let path = format!("/api/parameters/shovel/{}/{}", enc(&self.vhost), enc(name));
        self.send_no_body(reqwest::Method::DELETE, &path, None)
            .await
    }
    /// Does the dynamic shovel `name` still exist? A shovel with `src-delete-after` removes
    /// itself once it has moved its count, so `false` after a start means "done".
    pub async fn shovel_exists(&self, name: &str) -> Result<bool, MgmtError> {
        let path = format!("/api/parameters/shovel/{}/{}", enc(&self.vhost), enc(name));
        Ok(self
            .get_if_exists::<serde_json::Value>(&path)
            .await?
            .is_some())
    }
    /// Every dynamic shovel declared in the vhost, running or not (`GET
    /// /api/parameters/shovel/VHOST`: needs only the shovel plugin, not its management part).
    pub async fn shovel_parameters(&self) -> Result<Vec<ShovelParameter>, MgmtError> {
        match self
            .get(&format!("/api/parameters/shovel/{}", enc(&self.vhost)))
            .await
        {
            Err(MgmtError::NotFound(_)) => Ok(Vec::new()),
            other => other,
        }
    }
    /// The running state of the dynamic shovel `name` (`None`: not running anywhere, or the
    /// shovel management plugin is off).
    pub async fn shovel_status(&self, name: &str) -> Result<Option<ShovelStatus>, MgmtError> {
        match self.shovels().await {
            Ok(all) => Ok(all.into_iter().find(|s| s.name == name)),
            Err(MgmtError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Every shovel running in the vhost (`GET /api/shovels/VHOST`; not found when the shovel
    /// management plugin is off).
    pub async fn shovels(&self) -> Result<Vec<ShovelStatus>, MgmtError> {
        self.get(&format!("/api/shovels/{}", enc(&self.vhost)))
            .await
    }
    /// Is the shovel plugin (`rabbitmq_shovel`) running on every running node? A dynamic
    /// shovel can be declared only then.
    pub async fn shovel_plugin_enabled(&self) -> Result<bool, MgmtError> {
        let nodes = self.nodes().await?;
        let running: Vec<_> = nodes.iter().filter(|n| n.running).collect();
        Ok(!running.is_empty()
            && running
                .iter()
                .all(|n| n.applications.iter().any(|a| a.name == "rabbitmq_shovel")))
    }
    /// Management extensions (tells whether the shovel management plugin is on).
    pub async fn extensions(&self) -> Result<Vec<serde_json::Value>, MgmtError> {
        self.get("/api/extensions").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_vhost_listings_get_the_long_timeout() {
        assert!(is_listing("/api/queues/%2F?columns=name", "/"));
        assert!(is_listing("/api/bindings/prod?columns=source", "prod"));
        assert!(is_listing("/api/exchanges/%2F", "/"));
        assert!(!is_listing("/api/queues/%2F/email%2Ev1", "/"));
        assert!(!is_listing("/api/overview", "/"));
        assert!(!is_listing("/api/queues/other", "prod"));
    }

    #[test]
    fn regex_literal_escapes_every_ascii_punctuation() {
        assert_eq!(regex_literal("a.b-c_9"), r"a\.b\-c\_9");
        assert_eq!(regex_literal("x+(y)|z*$^"), r"x\+\(y\)\|z\*\$\^");
        // Non-ASCII stays as it is (literal in the broker's regex).
        assert_eq!(regex_literal("é.1"), r"é\.1");
    }
}
