//! The configuration file exactly as written: serde structs with `deny_unknown_fields`, so a typo
//! is an error naming the key rather than a silently ignored setting. [`super::resolve`] turns
//! these into validated types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Profile used when neither `--profile` nor `HOPBACK_PROFILE` names one.
    pub default_profile: Option<String>,
    /// Name recorded as the operator in the ledger (default: user@host).
    pub operator: Option<String>,
    /// Global read-only switch; a profile's own `read_only` overrides it, `--read-only` forces it.
    pub read_only: Option<bool>,
    /// Default theme for profiles that do not set one.
    pub theme: Option<String>,
    /// Console refresh interval.
    pub refresh_interval_ms: Option<u64>,
    /// Alert thresholds applied to every namespace (per-namespace entries override).
    pub alerts: Option<RawAlerts>,
    /// Ledger settings.
    pub ledger: Option<RawLedger>,
    /// Named broker profiles (a k9s "context").
    #[serde(default)]
    pub profiles: BTreeMap<String, RawProfile>,
    /// Console key overrides: action name → keys, e.g. `quit = ["q", "ctrl-q"]`.
    pub keymap: Option<BTreeMap<String, Vec<String>>>,
    /// Profiles the console opens together (one overview across brokers) when no `--profile`
    /// is given; the first is the selected one unless `default_profile` says otherwise.
    pub contexts: Option<Vec<String>>,
}

/// One broker profile.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// `amqp://user:pass@host:port/vhost` or `amqps://…`.
    pub url: Option<String>,
    /// Every node of a cluster (`url`, if set, comes first): hopback connects to any live one
    /// and moves to another when it is lost. Credentials and vhost come from the first.
    pub urls: Option<Vec<String>>,
    /// Management API base URL (default: http://AMQP-HOST:15672).
    pub mgmt_url: Option<String>,
    /// The management API of every node (`mgmt_url`, if set, comes first); tried in turn.
    pub mgmt_urls: Option<Vec<String>>,
    /// Where rates and unacked counts come from: `auto` (default), `prometheus`, `management`.
    pub metrics: Option<String>,
    /// The `rabbitmq_prometheus` endpoint (default: http://AMQP-HOST:15692).
    pub prometheus_url: Option<String>,
    /// The Prometheus endpoint of every node (`prometheus_url`, if set, comes first).
    pub prometheus_urls: Option<Vec<String>>,
    /// Virtual host (default: the one in `url`, else `/`).
    pub vhost: Option<String>,
    /// Refuse every mutation on this profile.
    pub read_only: Option<bool>,
    /// A production broker: red accent, typed confirmations.
    pub production: Option<bool>,
    /// A staging broker: where rollback plans are rehearsed.
    pub staging: Option<bool>,
    /// Theme name (built-in or a file in the config dir's `themes/`).
    pub theme: Option<String>,
    /// PEM file with the CA that signed the broker's certificate (amqps/https), trusted on top
    /// of the system store; relative to this file's directory, `~` is the home directory.
    pub ca_file: Option<String>,
    /// PEM client certificate, for brokers that ask for one (AMQP and HTTPS).
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file` (unencrypted).
    pub key_file: Option<String>,
    /// `plain` (user and password, the default) or `external` (the client certificate logs in).
    pub auth_mechanism: Option<String>,
    /// Read the password from this environment variable instead of the URL.
    pub password_env: Option<String>,
    /// Read the password from this file (first line) instead of the URL.
    pub password_file: Option<String>,
    /// Namespaces that do not follow the naming convention.
    #[serde(default)]
    pub namespaces: BTreeMap<String, RawNamespace>,
}

/// An adopted namespace: where its objects are when they do not follow the convention.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawNamespace {
    /// Entry exchange producers publish to (default: the namespace name).
    pub entry_exchange: Option<String>,
    /// Version → queue name, e.g. `{ v1 = "legacy.old", v2 = "legacy.new" }`.
    pub version_queues: Option<BTreeMap<String, String>>,
    /// Regex over queue names with a named group `version`, e.g. `^legacy-(?P<version>v\d+)$`.
    pub version_queue_regex: Option<String>,
    /// Dead-letter queue (default `NS.dlq`).
    pub dlq: Option<String>,
    /// Dead-letter exchange (default `NS.dlx`).
    pub dlx: Option<String>,
    /// Queue catching unroutable messages (default `NS.unrouted`).
    pub unrouted: Option<String>,
    /// Alert thresholds for this namespace.
    pub alerts: Option<RawAlerts>,
}

/// Alert thresholds.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Error rate above which a version is in alert, in percent.
    pub error_rate_pct: Option<f64>,
    /// How long the error rate must stay above the threshold.
    pub error_rate_window_s: Option<u64>,
    /// DLQ growth per minute that raises an alert.
    pub dlq_growth_per_min: Option<u64>,
    /// Ring the terminal bell once when an alert starts.
    pub bell: Option<bool>,
}

/// Ledger settings.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Size limit of the `hopback.ledger` stream.
    pub max_length_bytes: Option<u64>,
}
