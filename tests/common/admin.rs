//! Broker objects a test creates through the management API and removes when it ends (also when
//! it fails, on drop): a vhost of its own (guest given every permission), and a broker user with a
//! password.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A management API call as guest; a 5xx (another test restarting the broker) is retried.
pub fn mgmt_call(method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut last = (0, String::new());
    for _ in 0..30 {
        last = mgmt_call_once(method, path, body);
        if (200..500).contains(&last.0) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}

fn mgmt_call_once(method: &str, path: &str, body: Option<&str>) -> (u16, String) {
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
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `s` percent-encoded for a URL path segment.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// The test broker's AMQP URL with another vhost (and, when given, another user).
pub fn amqp_url(vhost: &str, user: Option<(&str, &str)>) -> String {
    let mut u = url::Url::parse(&super::test_url()).unwrap();
    if let Some((name, pw)) = user {
        u.set_username(name).unwrap();
        u.set_password(Some(pw)).unwrap();
    }
    let base = u.as_str().split('/').take(3).collect::<Vec<_>>().join("/");
    format!("{base}/{}", enc(vhost))
}

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

/// A broker user with a password that exists for one test; deleted on drop.
pub struct TestUser {
    /// Its name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl TestUser {
    /// A user (no tags) with these permissions (regexes) in `vhost`.
    pub fn create(prefix: &str, vhost: &str, configure: &str, write: &str, read: &str) -> Self {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/users/{}", enc(&name)),
            Some(&serde_json::json!({"password": password, "tags": ""}).to_string()),
        );
        assert!((200..300).contains(&code), "create user: {code} {body}");
        let user = Self { name, password };
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/permissions/{}/{}", enc(vhost), enc(&user.name)),
            Some(
                &serde_json::json!({"configure": configure, "write": write, "read": read})
                    .to_string(),
            ),
        );
        assert!((200..300).contains(&code), "set permissions: {code} {body}");
        user
    }

    /// A configuration that connects as this user to `vhost`.
    pub fn config(&self, vhost: &str) -> hopback::config::Config {
        hopback::config::resolve(
            hopback::config::raw::RawConfig::default(),
            &std::path::PathBuf::from("/nonexistent/hopback-test.toml"),
            false,
            &hopback::config::Overrides {
                url: Some(amqp_url(vhost, Some((&self.name, &self.password)))),
                mgmt_url: super::test_mgmt_override(),
                ..Default::default()
            },
        )
        .unwrap()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = mgmt_call("DELETE", &format!("/api/users/{}", enc(&self.name)), None);
    }
}
