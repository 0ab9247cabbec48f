//! Broker users made for one test through the management API (as guest), deleted on drop —
//! also when the test fails. Each gets a random password and the permissions the test names on
//! the test broker's default vhost.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

/// A management API call as guest (`curl`, so `Drop` can use it); a 5xx (another test
/// restarting the broker) is retried.
pub fn mgmt_call(method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut last = (0, String::new());
    for _ in 0..30 {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-u", "guest:guest"])
            .args(["-X", method, "-H", "content-type: application/json"]);
        if let Some(b) = body {
            c.args(["-d", b]);
        }
        let out = c
            .arg(format!("{}{path}", super::test_mgmt_url()))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        last = (code.trim().parse().unwrap_or(0), body.to_string());
        if (200..500).contains(&last.0) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}

/// A broker user that exists for one test.
pub struct BrokerUser {
    pub name: String,
    pub password: String,
}

impl BrokerUser {
    /// `hb-PREFIX-<random>` with `tags` and (configure, write, read) permissions on `/`.
    pub fn create(prefix: &str, tags: &str, configure: &str, write: &str, read: &str) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let name = format!("hb-{prefix}-{id}");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/users/{name}"),
            Some(&serde_json::json!({"password": password, "tags": tags}).to_string()),
        );
        assert!((200..300).contains(&code), "create user: {code} {body}");
        let user = Self { name, password };
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/permissions/%2F/{}", user.name),
            Some(
                &serde_json::json!({"configure": configure, "write": write, "read": read})
                    .to_string(),
            ),
        );
        assert!((200..300).contains(&code), "set permissions: {code} {body}");
        user
    }

    /// The test broker's AMQP URL with this user's credentials.
    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@{}/%2f",
            self.name,
            self.password,
            super::test_host_port()
        )
    }

    /// A resolved config that connects as this user.
    pub fn config(&self) -> hopback::config::Config {
        let over = hopback::config::Overrides {
            url: Some(self.url()),
            mgmt_url: super::test_mgmt_override(),
            ..Default::default()
        };
        hopback::config::resolve(
            hopback::config::raw::RawConfig::default(),
            &std::path::PathBuf::from("/nonexistent/hopback-test.toml"),
            false,
            &over,
        )
        .unwrap()
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = mgmt_call("DELETE", &format!("/api/users/{}", self.name), None);
    }
}
