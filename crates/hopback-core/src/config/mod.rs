//! Configuration: the TOML file, profiles and their precedence, resolved into validated types.
//!
//! Precedence for every setting: command-line flag > environment (`HOPBACK_URL`,
//! `HOPBACK_PROFILE`, `HOPBACK_PASSWORD`) > the selected profile > built-in default
//! (`amqp://guest:guest@127.0.0.1:5672/%2f`). Read-only: `--read-only` forces it on, otherwise
//! the profile's `read_only` wins over the global one ([`resolve_read_only`]).
//! The raw file structs live in [`raw`]; nothing outside this module reads them.

pub mod metrics;
pub mod raw;
pub mod tls;
mod urls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use url::Url;

pub use metrics::MetricsMode;
use raw::{RawAlerts, RawConfig, RawNamespace, RawProfile};
pub use urls::parse_amqp_url;
use urls::{derive_mgmt_url, derive_prometheus_url, parse_http_urls, split_list};

/// The AMQP URL used when nothing else is configured.
/// A configuration that cannot be used: what is wrong (naming the file, line and key where it
/// can), what to do, and whether it is a usage error (the config or a flag is wrong) or another
/// failure (a file that cannot be read).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// What is wrong, in one line (already free of credentials).
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
    /// The configuration or a flag is wrong (usage), rather than something failing.
    pub usage: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::text::write_with_hint(f, &self.message, self.hint.as_deref())
    }
}

impl ConfigError {
    /// A wrong configuration or flag.
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            usage: true,
            ..Self::error(message, hint)
        }
    }
    /// Something failed (reading a file).
    pub fn error(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
            usage: false,
        }
    }
}

pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default refresh interval of the console.
pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 1000;
/// Default size limit of the ledger stream (100 MB).
pub const DEFAULT_LEDGER_MAX_BYTES: u64 = 100_000_000;

/// A password: never printed, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the few places that must send it to the broker.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the command line says about configuration (flags win over everything).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_path: Option<PathBuf>,
    /// `--profile P`.
    pub profile: Option<String>,
    /// `--url amqp://…`.
    pub url: Option<String>,
    /// `--mgmt-url http://…`.
    pub mgmt_url: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--ca-file PEM`.
    pub ca_file: Option<String>,
    /// `--cert-file PEM`.
    pub cert_file: Option<String>,
    /// `--key-file PEM`.
    pub key_file: Option<String>,
    /// `--metrics auto|prometheus|management`.
    pub metrics: Option<String>,
    /// `--prometheus-url http://…` (comma-separated for several nodes).
    pub prometheus_url: Option<String>,
    /// Further `--profile`s: the console opens them as contexts beside the first.
    pub contexts: Vec<String>,
    /// Take the broker (URLs, password) from the profile only, never from `HOPBACK_URL`,
    /// `HOPBACK_MGMT_URL`, `HOPBACK_PROMETHEUS_URL` or `HOPBACK_PASSWORD`: how a console's
    /// further contexts are resolved.
    pub profile_urls_only: bool,
}

/// Alert thresholds, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertThresholds {
    /// Error rate (percent) that raises an alert.
    pub error_rate_pct: f64,
    /// For how long the error rate must be above the threshold.
    pub error_rate_window_s: u64,
    /// DLQ growth per minute that raises an alert.
    pub dlq_growth_per_min: u64,
    /// Ring the bell once when an alert starts.
    pub bell: bool,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            error_rate_pct: 5.0,
            error_rate_window_s: 30,
            dlq_growth_per_min: 10,
            bell: true,
        }
    }
}

impl AlertThresholds {
    fn merged(&self, raw: Option<&RawAlerts>) -> Self {
        let Some(r) = raw else { return self.clone() };
        Self {
            error_rate_pct: r.error_rate_pct.unwrap_or(self.error_rate_pct),
            error_rate_window_s: r.error_rate_window_s.unwrap_or(self.error_rate_window_s),
            dlq_growth_per_min: r.dlq_growth_per_min.unwrap_or(self.dlq_growth_per_min),
            bell: r.bell.unwrap_or(self.bell),
        }
    }
}

/// How a namespace's version queues are found on an adopted topology.
#[derive(Debug, Clone)]
pub enum VersionQueues {
    /// The convention: `NS.vN`.
    Convention,
    /// An explicit version → queue list.
    List(BTreeMap<String, String>),
    /// A regex with a named group `version`.
    Regex(Regex),
}

/// An adopted namespace as the profile describes it (`None`: the convention's name — the names
/// themselves come only from [`crate::topology::Namespace`]).
#[derive(Debug, Clone)]
pub struct Adoption {
    /// Entry exchange.
    pub entry_exchange: Option<String>,
    /// Version queues.
    pub version_queues: VersionQueues,
    /// Dead-letter queue.
    pub dlq: Option<String>,
    /// Dead-letter exchange.
    pub dlx: Option<String>,
    /// Unrouted queue.
    pub unrouted: Option<String>,
    /// Alert thresholds.
    pub alerts: AlertThresholds,
}

/// A resolved broker profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name (`default` when none is configured).
    pub name: String,
    /// AMQP URL including credentials — use [`Profile::display_url`] for anything shown. The
    /// first of `amqp_urls` (the node tried first).
    amqp_url: Url,
    /// Every node's AMQP URL, `amqp_url` first (credentials only in `amqp_url`'s userinfo).
    amqp_urls: Vec<Url>,
    /// Management API base URL (never holds credentials); the first of `mgmt_urls`.
    pub mgmt_url: Url,
    /// Every management API base URL to try, `mgmt_url` first.
    pub mgmt_urls: Vec<Url>,
    /// Where rates and unacked counts come from.
    pub metrics: MetricsMode,
    /// The `rabbitmq_prometheus` endpoint of every node (never holds credentials).
    pub prometheus_urls: Vec<Url>,
    /// User name for AMQP and the management API.
    pub username: String,
    /// Password for AMQP and the management API.
    pub password: Secret,
    /// Virtual host.
    pub vhost: String,
    /// Refuse every mutation.
    pub read_only: bool,
    /// Production broker.
    pub production: bool,
    /// Staging broker.
    pub staging: bool,
    /// Theme name.
    pub theme: String,
    /// TLS material beyond the system trust store (CA file, client certificate) and how AMQP
    /// logs in; read and checked at load. Every link is built from it by `broker::tls`.
    pub tls: tls::TlsFiles,
    /// Adopted namespaces by name.
    pub namespaces: BTreeMap<String, Adoption>,
}

impl Profile {
    /// The AMQP URL with the password, for lapin only.
    pub fn amqp_url_with_credentials(&self) -> String {
        let mut u = self.amqp_url.clone();
        let _ = u.set_username(&self.username);
        let _ = u.set_password(Some(self.password.expose()));
        // lapin wants the vhost percent-encoded in the path.
        u.set_path(&format!(
            "/{}",
            percent_encoding::utf8_percent_encode(&self.vhost, VHOST_SET)
        ));
        if self.tls.auth == tls::AuthMechanism::External
            && !u.query_pairs().any(|(k, _)| k == "auth_mechanism")
        {
            u.query_pairs_mut()
                .append_pair("auth_mechanism", tls::AuthMechanism::External.name());
        }
        u.to_string()
    }
    /// The AMQP URL safe to show: no password.
    pub fn display_url(&self) -> String {
        crate::redact::redact(self.amqp_url.as_str())
    }
    /// `host:port` of the AMQP endpoint.
    pub fn host_port(&self) -> String {
        format!(
            "{}:{}",
            self.amqp_url.host_str().unwrap_or("?"),
            self.amqp_url
                .port()
                .unwrap_or(if self.is_tls() { 5671 } else { 5672 })
        )
    }
    /// Host and port of the AMQP endpoint (the default port of the scheme when the URL has none).
    pub fn host_and_port(&self) -> (String, u16) {
        (
            self.amqp_url.host_str().unwrap_or("127.0.0.1").to_string(),
            self.amqp_url
                .port()
                .unwrap_or(if self.is_tls() { 5671 } else { 5672 }),
        )
    }
    /// Does the AMQP URL use TLS?
    pub fn is_tls(&self) -> bool {
        self.amqp_url.scheme() == "amqps"
    }
    /// How many nodes the profile names (1 for a single broker).
    pub fn nodes(&self) -> usize {
        self.amqp_urls.len().max(1)
    }
    /// `host:port` of every node, in order.
    pub fn node_addresses(&self) -> Vec<String> {
        (0..self.nodes())
            .map(|i| self.node(i).host_port())
            .collect()
    }
    /// The same profile aimed at node `i` first (the others follow in order; the management
    /// URLs rotate with it when there is one per node).
    pub fn node(&self, i: usize) -> Profile {
        let n = self.nodes();
        let mut p = self.clone();
        if n <= 1 {
            return p;
        }
        let i = i % n;
        p.amqp_urls.rotate_left(i);
        p.amqp_url = p.amqp_urls[0].clone();
        if p.mgmt_urls.len() == n {
            p.mgmt_urls.rotate_left(i);
            p.mgmt_url = p.mgmt_urls[0].clone();
        }
        p
    }
}

const VHOST_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// Everything resolved: the file's global settings plus the selected profile.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file path (whether or not it exists).
    pub path: PathBuf,
    /// Whether the file exists.
    pub file_found: bool,
    /// Operator name for the ledger.
    pub operator: String,
    /// Console refresh interval.
    pub refresh_interval_ms: u64,
    /// Default alert thresholds.
    pub alerts: AlertThresholds,
    /// Ledger stream size limit.
    pub ledger_max_length_bytes: u64,
    /// The selected profile.
    pub profile: Profile,
    /// Names of all configured profiles.
    pub profile_names: Vec<String>,
    /// Console key overrides from `[keymap]` (action name → keys), validated by the console.
    pub keymap: BTreeMap<String, Vec<String>>,
    /// Profiles the console opens together at start, the selected one first (`--profile a
    /// --profile b`, else the file's `contexts = [...]`); empty: just the selected one.
    pub contexts: Vec<String>,
    /// What resolves another profile of the same file ([`Config::for_profile`]).
    pub source: ContextSource,
}

/// The parsed file and the flags, kept to resolve another profile as a context of the console.
#[derive(Clone, Default)]
pub struct ContextSource {
    raw: std::sync::Arc<RawConfig>,
    file_found: bool,
    read_only: bool,
}

/// Names only: the raw file holds URLs with passwords.
impl fmt::Debug for ContextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextSource")
            .field("profiles", &self.raw.profiles.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    /// The same file resolved for profile `name`, as a context of the console: its broker comes
    /// from the profile alone (no `--url` or `HOPBACK_URL`); `--read-only` still applies.
    pub fn for_profile(&self, name: &str) -> Result<Config, ConfigError> {
        let over = Overrides {
            config_path: Some(self.path.clone()),
            profile: Some(name.to_string()),
            read_only: self.source.read_only,
            profile_urls_only: true,
            ..Default::default()
        };
        resolve_shared(
            self.source.raw.clone(),
            &self.path,
            self.source.file_found,
            &over,
        )
    }
}

/// Project directories (config, data, logs) from `directories`.
pub fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "hopback", "hopback")
}

/// Default config file path (`$XDG_CONFIG_HOME/hopback/config.toml` on Linux).
pub fn default_config_path() -> PathBuf {
    if let Ok(p) = std::env::var("HOPBACK_CONFIG") {
        return PathBuf::from(p);
    }
    project_dirs()
        .map(|d| d.config_dir().join("config.toml"))
        .unwrap_or_else(|| PathBuf::from("hopback.toml"))
}

/// Where hopback's log file is (`HOPBACK_LOG_FILE`, else in the data dir): the logger writes it,
/// the console's log view reads it.
pub fn log_path() -> PathBuf {
    std::env::var("HOPBACK_LOG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| data_dir().join("hopback.log"))
}

/// Data directory (ledger fallback, exports, logs); `HOPBACK_DATA_DIR` overrides.
pub fn data_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HOPBACK_DATA_DIR") {
        return PathBuf::from(p);
    }
    project_dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("hopback"))
}

/// Load and resolve the configuration according to the precedence rules.
pub fn load(over: &Overrides) -> Result<Config, ConfigError> {
    let path = over.config_path.clone().unwrap_or_else(default_config_path);
    let (raw, file_found) = match std::fs::read_to_string(&path) {
        Ok(text) => (parse(&text, &path)?, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && over.config_path.is_none() => {
            (RawConfig::default(), false)
        }
        Err(e) => {
            return Err(ConfigError::error(
                format!("cannot read config file {}: {e}", path.display()),
                "check the path given to --config (or HOPBACK_CONFIG)",
            ));
        }
    };
    resolve(raw, &path, file_found, over)
}

/// Parse the TOML text; errors name the file, line and key.
pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => {
                let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let line_text = text.lines().nth(line_no - 1).unwrap_or("");
                let key = line_text
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['[', ']'])
                    .to_string();
                (Some(line_no), Some(key).filter(|k| !k.is_empty()))
            }
            None => (None, None),
        };
        let what = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        let mut msg = format!("config error in {}", path.display());
        if let Some(l) = line {
            msg.push_str(&format!(" line {l}"));
        }
        if let Some(k) = key {
            msg.push_str(&format!(" (key `{}`)", crate::text::sanitize(&k)));
        }
        msg.push_str(&format!(": {}", crate::text::sanitize(&what)));
        let hint = if what.contains("unknown field") {
            "remove or rename the key; the README's Configuration section lists every key"
        } else {
            "fix the value; the README's Configuration section shows a valid example"
        };
        ConfigError::usage(msg, hint)
    })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An environment variable naming where the broker is — ignored for the further contexts of a
/// console, which take their broker from their own profile.
fn env_url(over: &Overrides, name: &str) -> Option<String> {
    if over.profile_urls_only {
        None
    } else {
        env_nonempty(name)
    }
}

/// Resolve raw config + overrides + environment into a [`Config`].
pub fn resolve(
    raw: RawConfig,
    path: &Path,
    file_found: bool,
    over: &Overrides,
) -> Result<Config, ConfigError> {
    resolve_shared(std::sync::Arc::new(raw), path, file_found, over)
}

fn resolve_shared(
    shared: std::sync::Arc<RawConfig>,
    path: &Path,
    file_found: bool,
    over: &Overrides,
) -> Result<Config, ConfigError> {
    let raw: &RawConfig = &shared;
    let profile_name = over
        .profile
        .clone()
        .or_else(|| env_nonempty("HOPBACK_PROFILE"))
        .or_else(|| raw.default_profile.clone())
        .or_else(|| raw.contexts.as_ref().and_then(|c| c.first().cloned()));
    let raw_profile = match &profile_name {
        Some(name) => match raw.profiles.get(name) {
            Some(p) => p.clone(),
            None => {
                let known: Vec<&str> = raw.profiles.keys().map(String::as_str).collect();
                return Err(ConfigError::usage(
                    format!(
                        "unknown profile `{}` (config: {})",
                        crate::text::sanitize(name),
                        path.display()
                    ),
                    if known.is_empty() {
                        "no profiles are configured; add a [profiles.NAME] table or use --url"
                            .to_string()
                    } else {
                        format!("known profiles: {}", known.join(", "))
                    },
                ));
            }
        },
        None => RawProfile::default(),
    };
    let alerts = AlertThresholds::default().merged(raw.alerts.as_ref());
    let profile = resolve_profile(
        profile_name.clone().unwrap_or_else(|| "default".into()),
        &raw_profile,
        raw,
        &alerts,
        over,
        path,
    )?;
    let contexts = resolve_contexts(raw, over, &profile.name, path)?;
    let operator = raw.operator.clone().unwrap_or_else(default_operator);
    Ok(Config {
        path: path.to_path_buf(),
        file_found,
        operator,
        refresh_interval_ms: raw
            .refresh_interval_ms
            .unwrap_or(DEFAULT_REFRESH_INTERVAL_MS)
            .max(100),
        alerts,
        ledger_max_length_bytes: raw
            .ledger
            .as_ref()
            .and_then(|l| l.max_length_bytes)
            .unwrap_or(DEFAULT_LEDGER_MAX_BYTES),
        profile,
        profile_names: raw.profiles.keys().cloned().collect(),
        keymap: raw.keymap.clone().unwrap_or_default(),
        contexts,
        source: ContextSource {
            raw: shared.clone(),
            file_found,
            read_only: over.read_only,
        },
    })
}

/// The contexts the console opens at start: `--profile a --profile b` (the first is the
/// selected profile), else the file's `contexts` when no single `--profile` was given; every
/// name must be a profile of the file.
fn resolve_contexts(
    raw: &RawConfig,
    over: &Overrides,
    selected_name: &str,
    path: &Path,
) -> Result<Vec<String>, ConfigError> {
    let listed: Vec<String> = if !over.contexts.is_empty() {
        over.contexts.clone()
    } else if over.profile.is_none() {
        raw.contexts.clone().unwrap_or_default()
    } else {
        Vec::new()
    };
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![selected_name.to_string()];
    for name in &listed {
        if !raw.profiles.contains_key(name) {
            let known: Vec<&str> = raw.profiles.keys().map(String::as_str).collect();
            return Err(ConfigError::usage(
                format!(
                    "unknown context `{}` (config: {})",
                    crate::text::sanitize(name),
                    path.display()
                ),
                if known.is_empty() {
                    "contexts are profiles: add a [profiles.NAME] table for each".to_string()
                } else {
                    format!("known profiles: {}", known.join(", "))
                },
            ));
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// `user@host` of whoever runs this process.
pub fn default_operator() -> String {
    // USER/LOGNAME can be missing (cron, some containers, tmux started by a service): fall back to
    // the home directory's name before giving up.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            std::env::var("HOME").ok().and_then(|h| {
                std::path::Path::new(&h)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{host}")
}

fn resolve_profile(
    name: String,
    p: &RawProfile,
    raw: &RawConfig,
    alerts: &AlertThresholds,
    over: &Overrides,
    config_path: &Path,
) -> Result<Profile, ConfigError> {
    // Several nodes: `--url a --url b` / `--url a,b`, `HOPBACK_URL=a,b`, or the profile's
    // `url` + `urls`. The first names the credentials and the vhost.
    let url_texts: Vec<String> = match over.url.clone().or_else(|| env_url(over, "HOPBACK_URL")) {
        Some(t) => split_list(&t),
        None => p
            .url
            .iter()
            .cloned()
            .chain(p.urls.iter().flatten().cloned())
            .collect(),
    };
    let url_texts = if url_texts.is_empty() {
        vec![DEFAULT_URL.to_string()]
    } else {
        url_texts
    };
    let amqp_url = parse_amqp_url(&url_texts[0])?;
    let mut more_urls = Vec::new();
    for t in &url_texts[1..] {
        let mut u = parse_amqp_url(t)?;
        if u.scheme() != amqp_url.scheme() {
            return Err(ConfigError::usage(
                format!(
                    "the node URLs mix amqp and amqps ({})",
                    crate::redact::redact(t)
                ),
                "give every node of a cluster the same scheme",
            ));
        }
        // One set of credentials for the cluster: the first URL's.
        let _ = u.set_username("");
        let _ = u.set_password(None);
        more_urls.push(u);
    }
    let username = if amqp_url.username().is_empty() {
        "guest".to_string()
    } else {
        percent_encoding::percent_decode_str(amqp_url.username())
            .decode_utf8_lossy()
            .into_owned()
    };
    let password = resolve_password(&amqp_url, p, over)?;
    // The password lives only in the `Secret` from here on: `Url`'s `Debug` shows its password
    // field, so a `{:?}` of the profile (a log line, a panic message) would otherwise print it.
    let mut amqp_url = amqp_url;
    let _ = amqp_url.set_password(None);
    let url_vhost = match amqp_url.path() {
        "" => "/".to_string(),
        path => percent_encoding::percent_decode_str(path.trim_start_matches('/'))
            .decode_utf8_lossy()
            .into_owned(),
    };
    let url_vhost = if url_vhost.is_empty() && amqp_url.path().is_empty() {
        "/".to_string()
    } else {
        url_vhost
    };
    let vhost = p.vhost.clone().unwrap_or(url_vhost);
    let mgmt_texts: Vec<String> = match over
        .mgmt_url
        .clone()
        .or_else(|| env_url(over, "HOPBACK_MGMT_URL"))
    {
        Some(t) => split_list(&t),
        None => p
            .mgmt_url
            .iter()
            .cloned()
            .chain(p.mgmt_urls.iter().flatten().cloned())
            .collect(),
    };
    let mut mgmt_urls = Vec::new();
    for t in &mgmt_texts {
        let malformed = |why: String| {
            ConfigError::usage(
                format!(
                    "malformed management URL {}: {why}",
                    crate::redact::redact(t)
                ),
                "use the form http://host:15672",
            )
        };
        let mut u = Url::parse(t).map_err(|e| malformed(e.to_string()))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(malformed(format!(
                "scheme must be http or https, not `{}`",
                crate::text::sanitize(u.scheme())
            )));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(malformed("no host".into()));
        }
        let _ = u.set_password(None);
        let _ = u.set_username("");
        mgmt_urls.push(u);
    }
    if mgmt_urls.is_empty() {
        // Derived from each node's host (port 15672 / 15671), without duplicates.
        for u in std::iter::once(&amqp_url).chain(more_urls.iter()) {
            let d = derive_mgmt_url(u)?;
            if !mgmt_urls.contains(&d) {
                mgmt_urls.push(d);
            }
        }
    }
    let mgmt_url = mgmt_urls[0].clone();
    let (metrics, prometheus_urls) = resolve_metrics(p, over, &amqp_url, &more_urls)?;
    let mut namespaces = BTreeMap::new();
    for (ns, a) in &p.namespaces {
        namespaces.insert(ns.clone(), resolve_adoption(ns, a, alerts)?);
    }
    let tls_files = resolve_tls(p, over, config_path, &amqp_url)?;
    let mut amqp_urls = vec![amqp_url.clone()];
    amqp_urls.extend(more_urls);
    Ok(Profile {
        name,
        amqp_url,
        amqp_urls,
        mgmt_url,
        mgmt_urls,
        metrics,
        prometheus_urls,
        username,
        password,
        vhost,
        read_only: resolve_read_only(over.read_only, p.read_only, raw.read_only),
        production: p.production.unwrap_or(false),
        staging: p.staging.unwrap_or(false),
        theme: p
            .theme
            .clone()
            .or_else(|| raw.theme.clone())
            .unwrap_or_else(|| {
                if p.production.unwrap_or(false) {
                    "production-red".into()
                } else {
                    "dark".into()
                }
            }),
        tls: tls_files,
        namespaces,
    })
}

/// The profile's TLS files: `--ca-file` > `HOPBACK_CA_FILE` > the profile's `ca_file` (the
/// same for `cert_file`/`key_file`); the authentication mechanism from the profile, else the
/// URL's `auth_mechanism` query.
fn resolve_tls(
    p: &RawProfile,
    over: &Overrides,
    config_path: &Path,
    amqp_url: &Url,
) -> Result<tls::TlsFiles, ConfigError> {
    use tls::PathOrigin;
    let flag_env = |flag: &Option<String>, var: &str| {
        flag.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| env_nonempty(var))
    };
    let ca_cli = flag_env(&over.ca_file, "HOPBACK_CA_FILE");
    let cert_cli = flag_env(&over.cert_file, "HOPBACK_CERT_FILE");
    let key_cli = flag_env(&over.key_file, "HOPBACK_KEY_FILE");
    let pick = |cli: &Option<String>, file: &Option<String>| -> Option<(String, bool)> {
        cli.clone()
            .map(|v| (v, true))
            .or_else(|| file.clone().map(|v| (v, false)))
    };
    let ca = pick(&ca_cli, &p.ca_file);
    let cert = pick(&cert_cli, &p.cert_file);
    let key = pick(&key_cli, &p.key_file);
    let origin = |from_cli: bool| {
        if from_cli {
            PathOrigin::CommandLine
        } else {
            PathOrigin::ConfigFile(config_path)
        }
    };
    let url_mechanism: Option<String> = amqp_url
        .query_pairs()
        .find(|(k, _)| k == "auth_mechanism")
        .map(|(_, v)| v.into_owned());
    let inputs = tls::TlsInputs {
        ca_file: ca.as_ref().map(|(t, c)| (t.as_str(), origin(*c))),
        cert_file: cert.as_ref().map(|(t, c)| (t.as_str(), origin(*c))),
        key_file: key.as_ref().map(|(t, c)| (t.as_str(), origin(*c))),
        auth_mechanism: p.auth_mechanism.as_deref().or(url_mechanism.as_deref()),
    };
    tls::resolve(&inputs, amqp_url.scheme() == "amqps")
}

/// The metrics source and the Prometheus endpoints (flag > environment > profile > derived from
/// each node's AMQP host, port 15692).
fn resolve_metrics(
    p: &RawProfile,
    over: &Overrides,
    amqp_url: &Url,
    more_urls: &[Url],
) -> Result<(MetricsMode, Vec<Url>), ConfigError> {
    let metrics = match (over.metrics.as_deref(), env_nonempty("HOPBACK_METRICS")) {
        (Some(m), _) => MetricsMode::parse(m, "--metrics")?,
        (None, Some(m)) => MetricsMode::parse(&m, "HOPBACK_METRICS")?,
        (None, None) => match &p.metrics {
            Some(m) => MetricsMode::parse(m, "profile key `metrics`")?,
            None => MetricsMode::Auto,
        },
    };
    let texts: Vec<String> = match over
        .prometheus_url
        .clone()
        .or_else(|| env_url(over, "HOPBACK_PROMETHEUS_URL"))
    {
        Some(t) => split_list(&t),
        None => p
            .prometheus_url
            .iter()
            .cloned()
            .chain(p.prometheus_urls.iter().flatten().cloned())
            .collect(),
    };
    let mut urls = parse_http_urls(&texts, "Prometheus", "http://host:15692")?;
    if urls.is_empty() {
        for u in std::iter::once(amqp_url).chain(more_urls.iter()) {
            let d = derive_prometheus_url(u)?;
            if !urls.contains(&d) {
                urls.push(d);
            }
        }
    }
    Ok((metrics, urls))
}

/// Read-only precedence: `--read-only` forces it on; otherwise the most specific setting that is
/// set wins — the profile's `read_only`, then the file's global `read_only`, then off. So a
/// profile can say `read_only = false` under a global `read_only = true` (a writable staging
/// profile in an otherwise read-only config), and a global `false` never unlocks a read-only
/// profile.
pub fn resolve_read_only(flag: bool, profile: Option<bool>, global: Option<bool>) -> bool {
    flag || profile.or(global).unwrap_or(false)
}

fn resolve_password(url: &Url, p: &RawProfile, over: &Overrides) -> Result<Secret, ConfigError> {
    if let Some(pw) = env_nonempty("HOPBACK_PASSWORD").filter(|_| !over.profile_urls_only) {
        return Ok(Secret::new(pw));
    }
    if let Some(var) = &p.password_env {
        return env_nonempty(var).map(Secret::new).ok_or_else(|| {
            ConfigError::usage(
                format!("password_env names `{var}`, which is not set"),
                format!("export {var}=… or remove password_env"),
            )
        });
    }
    if let Some(file) = &p.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::usage(
                format!("cannot read password_file {file}: {e}"),
                "check the path and its permissions",
            )
        })?;
        return Ok(Secret::new(text.lines().next().unwrap_or("").to_string()));
    }
    match url.password() {
        Some(pw) => Ok(Secret::new(
            percent_encoding::percent_decode_str(pw)
                .decode_utf8_lossy()
                .into_owned(),
        )),
        None if url.username().is_empty() => Ok(Secret::new("guest")),
        None => Ok(Secret::default()),
    }
}

fn resolve_adoption(
    ns: &str,
    a: &RawNamespace,
    defaults: &AlertThresholds,
) -> Result<Adoption, ConfigError> {
    let version_queues = match (&a.version_queues, &a.version_queue_regex) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::usage(
                format!(
                    "namespace `{ns}`: set either version_queues or version_queue_regex, not both"
                ),
                "keep the one that describes your queues",
            ));
        }
        (Some(list), None) => VersionQueues::List(list.clone()),
        (None, Some(re)) => {
            let r = Regex::new(re).map_err(|e| {
                ConfigError::usage(
                    format!(
                        "namespace `{ns}`: version_queue_regex is invalid: {}",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                    "check the regex syntax",
                )
            })?;
            if !r.capture_names().flatten().any(|n| n == "version") {
                return Err(ConfigError::usage(
                    format!("namespace `{ns}`: version_queue_regex has no named group `version`"),
                    r"write it like ^orders-(?P<version>v\d+)$",
                ));
            }
            VersionQueues::Regex(r)
        }
        (None, None) => VersionQueues::Convention,
    };
    Ok(Adoption {
        entry_exchange: a.entry_exchange.clone(),
        version_queues,
        dlq: a.dlq.clone(),
        dlx: a.dlx.clone(),
        unrouted: a.unrouted.clone(),
        alerts: defaults.merged(a.alerts.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(text: &str, over: Overrides) -> Result<Config, ConfigError> {
        let raw = parse(text, Path::new("t.toml"))?;
        resolve(raw, Path::new("t.toml"), true, &over)
    }

    #[test]
    fn a_cluster_profile_names_every_node_once_with_one_set_of_credentials() {
        let text = "default_profile = \"c\"\n[profiles.c]\nurl = \"amqp://ops:s3cret@n1:5681/prod\"\nurls = [\"amqp://n2:5682/prod\", \"amqp://other:pw@n3:5683/prod\"]\nmgmt_urls = [\"http://n1:15681\", \"http://n2:15682\", \"http://n3:15683\"]\n";
        let c = res(text, Overrides::default()).unwrap();
        let p = &c.profile;
        assert_eq!(p.nodes(), 3);
        assert_eq!(p.node_addresses(), ["n1:5681", "n2:5682", "n3:5683"]);
        // The first URL's user, password and vhost serve every node.
        let second = p.node(1);
        assert_eq!(second.host_port(), "n2:5682");
        assert!(
            second
                .amqp_url_with_credentials()
                .starts_with("amqp://ops:s3cret@n2:5682/prod"),
            "{}",
            crate::redact::redact(&second.amqp_url_with_credentials())
        );
        assert_eq!(second.mgmt_url.as_str(), "http://n2:15682/");
        assert_eq!(p.node(3).host_port(), "n1:5681");
        assert!(!format!("{p:?}").contains("s3cret"));
        // `--url a,b` (or the flag repeated) and HOPBACK_URL take a list too; the management
        // URLs are then derived per host, without duplicates.
        let c = res(
            "",
            Overrides {
                url: Some("amqp://u:p@h1:5672/%2f, amqp://h2:5672/%2f".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.profile.node_addresses(), ["h1:5672", "h2:5672"]);
        assert_eq!(
            c.profile
                .mgmt_urls
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>(),
            ["http://h1:15672/", "http://h2:15672/"]
        );
        // Mixed schemes are refused.
        let e = res(
            "",
            Overrides {
                url: Some("amqp://h1,amqps://h2".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.message.contains("mix amqp and amqps"), "{e}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = res(
            "default_profile = \"a\"\n[profiles.a]\nurl = \"amqp://h\"\nbogus = 1\n",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("line 4"), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        assert!(e.usage, "{e}");
    }

    #[test]
    fn flag_beats_profile_and_default() {
        let text = "default_profile = \"a\"\n[profiles.a]\nurl = \"amqp://u:p@prof-host:5672/prod\"\nread_only = true\n";
        let c = res(text, Overrides::default()).unwrap();
        assert_eq!(c.profile.vhost, "prod");
        assert!(c.profile.read_only);
        assert_eq!(c.profile.mgmt_url.as_str(), "http://prof-host:15672/");
        let c = res(
            text,
            Overrides {
                url: Some("amqp://x:y@flag-host/%2f".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.profile.host_port(), "flag-host:5672");
        assert_eq!(c.profile.vhost, "/");
        assert!(
            !c.profile.display_url().contains('y'.to_string().as_str())
                || !c.profile.display_url().contains(":y@")
        );
    }

    #[test]
    fn default_is_local_guest() {
        let c = res("", Overrides::default()).unwrap();
        assert_eq!(c.profile.host_port(), "127.0.0.1:5672");
        assert_eq!(c.profile.username, "guest");
        assert_eq!(c.profile.password.expose(), "guest");
        assert_eq!(c.profile.vhost, "/");
        assert!(!format!("{:?}", c.profile).contains("guest:guest"));
    }

    #[test]
    fn read_only_flag_beats_profile_beats_global_in_every_combination() {
        let settings = [None, Some(false), Some(true)];
        for flag in [false, true] {
            for profile in settings {
                for global in settings {
                    let mut text = String::new();
                    if let Some(g) = global {
                        text.push_str(&format!("read_only = {g}\n"));
                    }
                    text.push_str("default_profile = \"a\"\n[profiles.a]\nurl = \"amqp://h\"\n");
                    if let Some(p) = profile {
                        text.push_str(&format!("read_only = {p}\n"));
                    }
                    let c = res(
                        &text,
                        Overrides {
                            read_only: flag,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    // The rule spelled out case by case, not by calling the function under test.
                    let want = if flag {
                        true
                    } else {
                        match (profile, global) {
                            (Some(p), _) => p,
                            (None, Some(g)) => g,
                            (None, None) => false,
                        }
                    };
                    assert_eq!(
                        c.profile.read_only, want,
                        "flag {flag}, profile {profile:?}, global {global:?}"
                    );
                }
            }
        }
        // The case the old OR got wrong, and the flag over it, spelled out.
        let text = "read_only = true\ndefault_profile = \"s\"\n[profiles.s]\nread_only = false\n";
        let c = res(text, Overrides::default()).unwrap();
        assert!(
            !c.profile.read_only,
            "a profile's false overrides a global true"
        );
        let flag = Overrides {
            read_only: true,
            ..Default::default()
        };
        assert!(
            res(text, flag).unwrap().profile.read_only,
            "--read-only wins"
        );
        // No profile selected at all: the global setting applies.
        let c = res("read_only = true\n", Overrides::default()).unwrap();
        assert!(c.profile.read_only);
    }

    #[test]
    fn debug_of_the_config_never_shows_the_password() {
        let c = res(
            "default_profile = \"a\"\n[profiles.a]\nurl = \"amqp://ops:Sentinel9Pw@h:5672/%2f\"\n",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.profile.password.expose(), "Sentinel9Pw");
        assert!(!format!("{c:?}").contains("Sentinel9Pw"), "{c:?}");
        assert!(!format!("{c:#?}").contains("Sentinel9Pw"));
        assert!(
            c.profile
                .amqp_url_with_credentials()
                .contains("ops:Sentinel9Pw@h")
        );
    }

    #[test]
    fn regex_needs_version_group() {
        let e = res(
            "[profiles.a.namespaces.x]\nversion_queue_regex = \"^x-v\\\\d$\"\n",
            Overrides {
                profile: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.message.contains("version"), "{e}");
    }
}
