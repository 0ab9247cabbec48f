//! A vhost a test creates through the management API and removes when it ends (also when it
//! fails, on drop), guest given every permission in it. Users: `super::users`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use super::users::{amqp_url, enc, mgmt_call};

/// A vhost that exists for one test (guest may do everything in it); deleted on drop, with
/// everything in it.
pub struct TestVhost {
    /// Its name (`prefix-<uuid>`).
    pub name: String,
    /// The AMQP URL of the test broker in it (as guest).
    pub url: String,
}

impl TestVhost {
    /// Create `PREFIX-<uuid>` and give guest every permission in it.
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let (code, body) = mgmt_call("PUT", &format!("/api/vhosts/{}", enc(&name)), Some("{}"));
        assert!((200..300).contains(&code), "create vhost: {code} {body}");
        let v = Self {
            url: amqp_url(&name, None),
            name,
        };
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/permissions/{}/guest", enc(&v.name)),
            Some(r#"{"configure":".*","write":".*","read":".*"}"#),
        );
        assert!((200..300).contains(&code), "set permissions: {code} {body}");
        v
    }

    /// A configuration for this vhost (ignoring any user config file).
    pub fn config(&self) -> hopback::config::Config {
        hopback::config::resolve(
            hopback::config::raw::RawConfig::default(),
            &std::path::PathBuf::from("/nonexistent/hopback-test.toml"),
            false,
            &hopback::config::Overrides {
                url: Some(self.url.clone()),
                mgmt_url: super::test_mgmt_override(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// The binary, pointed at this vhost.
    pub fn bin(&self) -> Command {
        let mut c = super::bin();
        c.env("HOPBACK_URL", &self.url);
        c
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = mgmt_call("DELETE", &format!("/api/vhosts/{}", enc(&self.name)), None);
    }
}
