//! Shared helpers for integration tests against the real broker on 127.0.0.1:5672
//! (`HOPBACK_TEST_URL` overrides; `HOPBACK_TEST_MGMT_URL` sets its management API, which is
//! otherwise derived from the AMQP host on port 15672). Every test makes its own namespace with [`unique_ns`] and
//! drops it with [`TestNs`]'s cleanup, so tests run in parallel safely.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod proxy;
pub mod raw;
pub mod record;
pub mod tmux;
pub mod users;

use std::path::PathBuf;
use std::sync::Arc;

use hopback::broker::session::{self, Session};
use hopback::config::{self, Config, Overrides};

/// AMQP URL of the test broker.
pub fn test_url() -> String {
    std::env::var("HOPBACK_TEST_URL").unwrap_or_else(|_| config::DEFAULT_URL.to_string())
}

/// `host:port` of the test broker's AMQP listener.
pub fn test_host_port() -> String {
    let u = url::Url::parse(&test_url()).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5672)
    )
}

/// Management API URL of the test broker, if `HOPBACK_TEST_MGMT_URL` sets one.
pub fn test_mgmt_override() -> Option<String> {
    std::env::var("HOPBACK_TEST_MGMT_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Management API base URL of the test broker, without a trailing slash.
pub fn test_mgmt_url() -> String {
    test_mgmt_override()
        .unwrap_or_else(|| "http://127.0.0.1:15672".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// A namespace name no other test uses.
pub fn unique_ns(prefix: &str) -> String {
    format!(
        "t-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A resolved config pointing at the test broker, ignoring any user config file.
pub fn test_config() -> Config {
    let raw = config::raw::RawConfig::default();
    let over = Overrides {
        url: Some(test_url()),
        mgmt_url: test_mgmt_override(),
        ..Default::default()
    };
    config::resolve(
        raw,
        &PathBuf::from("/nonexistent/hopback-test.toml"),
        false,
        &over,
    )
    .unwrap()
}

/// Connect a session for a test.
pub async fn connect(cfg: &Config, purpose: &str) -> Arc<Session> {
    session::connect(&cfg.profile, purpose, "test")
        .await
        .unwrap()
}

/// A convention namespace created for one test and deleted when the test calls `cleanup`.
pub struct TestNs {
    pub ns: String,
    pub versions: Vec<String>,
    pub cfg: Config,
    pub session: Arc<Session>,
}

impl TestNs {
    /// Create `NS` with the given versions and queue type.
    pub async fn new(
        prefix: &str,
        versions: &[&str],
        queue_type: hopback::broker::topology::QueueType,
    ) -> Self {
        let cfg = test_config();
        let session = connect(&cfg, "test").await;
        let ns = unique_ns(prefix);
        let versions: Vec<String> = versions.iter().map(|s| s.to_string()).collect();
        hopback::broker::topology::init(&session, &ns, &versions, queue_type)
            .await
            .unwrap();
        Self {
            ns,
            versions,
            cfg,
            session,
        }
    }
    /// Delete everything of the namespace.
    pub async fn cleanup(self) {
        hopback::broker::topology::delete_namespace(&self.session, &self.ns, &self.versions)
            .await
            .unwrap();
        self.session.close().await;
    }
}

/// Path of the built `hopback` binary (for assert_cmd-style tests).
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_hopback"));
    c.env("HOPBACK_CONFIG", "/nonexistent/hopback-test.toml")
        .env_remove("HOPBACK_URL")
        .env_remove("HOPBACK_PROFILE")
        .env_remove("HOPBACK_MGMT_URL")
        .env_remove("HOPBACK_PASSWORD")
        // The CLI's error-rate window (`status`, `dlq replay`'s default destination): short in
        // tests, which read error rates from steady synthetic workers.
        .env("HOPBACK_ERROR_RATE_WINDOW", "3s")
        // A gate flip's measured-split check waits for traffic (30 s by default): the tests that
        // check it ask for it (`worker_frameworks`), the rest flip and move on.
        .env("HOPBACK_VERIFY_SPLIT", "0s");
    // Another test broker (HOPBACK_TEST_URL/HOPBACK_TEST_MGMT_URL) is the binary's default too.
    if let Ok(url) = std::env::var("HOPBACK_TEST_URL") {
        c.env("HOPBACK_URL", url);
    }
    if let Some(mgmt) = test_mgmt_override() {
        c.env("HOPBACK_MGMT_URL", mgmt);
    }
    c
}
