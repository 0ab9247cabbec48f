//! Broker users made for one test through the management API (as guest), deleted on drop —
//! also when the test fails. Each gets a random password, its tags and the permissions the test
//! names (the default vhost unless another is given). The one set of user and permission helpers
//! every test uses; `set_permissions_line` reads a README `rabbitmqctl set_permissions` line, so
//! a test grants exactly what the documentation says.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A management API call as guest (`curl`, so `Drop` can use it); a 5xx (another test
/// restarting the broker) is retried.
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

/// `s` as a literal in a RabbitMQ (PCRE) permission regex.
pub fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// The three regexes of a `rabbitmqctl set_permissions -p VHOST USER 'C' 'W' 'R'` line.
pub fn set_permissions_line(line: &str) -> (String, String, String) {
    let words = shlex::split(line).unwrap_or_else(|| panic!("not a shell line: {line}"));
    let at = words
        .iter()
        .position(|w| w == "set_permissions")
        .unwrap_or_else(|| panic!("not a set_permissions line: {line}"));
    let mut rest = words[at + 1..].iter();
    let mut plain = Vec::new();
    while let Some(w) = rest.next() {
        if w == "-p" {
            rest.next();
        } else {
            plain.push(w.clone());
        }
    }
    assert_eq!(plain.len(), 4, "USER CONFIGURE WRITE READ expected: {line}");
    (plain[1].clone(), plain[2].clone(), plain[3].clone())
}

/// A broker user that exists for one test.
pub struct BrokerUser {
    pub name: String,
    pub password: String,
}

impl BrokerUser {
    /// `hb-PREFIX-<random>` with `tags` and (configure, write, read) permissions on `/`.
    pub fn create(prefix: &str, tags: &str, configure: &str, write: &str, read: &str) -> Self {
        Self::create_in(prefix, "/", tags, configure, write, read)
    }

    /// `hb-PREFIX-<random>` with `tags` and (configure, write, read) permissions on `vhost`.
    pub fn create_in(
        prefix: &str,
        vhost: &str,
        tags: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let name = format!("hb-{prefix}-{id}");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/users/{}", enc(&name)),
            Some(&serde_json::json!({"password": password, "tags": tags}).to_string()),
        );
        assert!((200..300).contains(&code), "create user: {code} {body}");
        let user = Self { name, password };
        user.set_permissions(vhost, configure, write, read);
        user
    }

    /// Replace this user's permissions on `vhost`.
    pub fn set_permissions(&self, vhost: &str, configure: &str, write: &str, read: &str) {
        let (code, body) = mgmt_call(
            "PUT",
            &format!("/api/permissions/{}/{}", enc(vhost), enc(&self.name)),
            Some(
                &serde_json::json!({"configure": configure, "write": write, "read": read})
                    .to_string(),
            ),
        );
        assert!((200..300).contains(&code), "set permissions: {code} {body}");
    }

    /// The test broker's AMQP URL with this user's credentials (default vhost).
    pub fn url(&self) -> String {
        self.url_in("/")
    }

    /// The test broker's AMQP URL with this user's credentials in `vhost`.
    pub fn url_in(&self, vhost: &str) -> String {
        amqp_url(vhost, Some((&self.name, &self.password)))
    }

    /// The test broker's AMQP URL as this user with no password in it (`HOPBACK_PASSWORD`
    /// gives it), for the binary.
    pub fn url_without_password(&self) -> String {
        format!("amqp://{}@{}/%2f", self.name, super::test_host_port())
    }

    /// The binary as this user (password from `HOPBACK_PASSWORD`, the test broker's API).
    pub fn bin(&self) -> Command {
        let mut c = super::bin();
        c.env("HOPBACK_PASSWORD", &self.password)
            .arg("--url")
            .arg(self.url_without_password())
            .arg("--mgmt-url")
            .arg(super::test_mgmt_url());
        c
    }

    /// A resolved config that connects as this user (default vhost).
    pub fn config(&self) -> hopback::config::Config {
        self.config_in("/")
    }

    /// A resolved config that connects as this user to `vhost`.
    pub fn config_in(&self, vhost: &str) -> hopback::config::Config {
        let over = hopback::config::Overrides {
            url: Some(self.url_in(vhost)),
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
        let _ = mgmt_call("DELETE", &format!("/api/users/{}", enc(&self.name)), None);
    }
}
