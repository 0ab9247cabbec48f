//! Credential stripping: every URI that may reach a string, a log line or an error goes through
//! [`redact`] (or [`scrub`] for free text that might embed one). The password never survives.
//!
//! A leaf module (it only needs [`crate::text`]) so that `config` and `broker` both use it without
//! `config` depending on `broker`; `broker::uri` re-exports it.

use std::sync::OnceLock;

use regex::Regex;

fn userinfo_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // `scheme:[//]user:password@`, its slashes loose because a mistyped URL (`htp:/u:p@h`)
    // still holds a real password; or `user:password@` without a scheme (`amqp//u:p@h`,
    // `u:p@h`), where the password may not start with `/` (that `user:` is a scheme:
    // `amqp://guest@h` has no password). The password runs to the last `@` of the word (a raw
    // `@` in it must not leave a tail).
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*:/{0,2})(?P<user>[^:@/\s]*):[^\s]*@)",
            r"|(?:(?P<bare>[^:@/\s]*):[^/\s][^\s]*@)",
        ))
        .ok()
    })
    .as_ref()
}

/// Replace every `scheme://user:password@` (well-formed or not) with `scheme://user:***@`.
/// Should the pattern ever fail to build, everything before the last `@` of a word holding one
/// is masked instead — never the other way round.
fn mask_userinfo(text: &str) -> String {
    match userinfo_re() {
        Some(re) => re
            .replace_all(text, |c: &regex::Captures| match c.name("scheme") {
                Some(scheme) => format!(
                    "{}{}:***@",
                    scheme.as_str(),
                    c.name("user").map_or("", |u| u.as_str())
                ),
                None => format!("{}:***@", c.name("bare").map_or("", |u| u.as_str())),
            })
            .into_owned(),
        None => text
            .split(' ')
            .map(|w| match w.rfind('@') {
                Some(b) => format!("***{}", &w[b..]),
                None => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The URI with its password replaced by `***` (`amqp://guest:***@host:5672/%2f`).
pub fn redact(uri: &str) -> String {
    let out = mask_userinfo(uri);
    crate::text::sanitize(&out).into_owned()
}

/// Free text (an error message from a library) with every embedded URI password and every
/// occurrence of the known `secret` replaced by `***`.
pub fn scrub(text: &str, secret: &str) -> String {
    let mut out = mask_userinfo(text);
    if secret.len() >= 3 {
        out = out.replace(secret, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_removed() {
        assert_eq!(
            redact("amqp://guest:s3cr%40t@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert_eq!(redact("amqps://u:p@h"), "amqps://u:***@h");
        assert_eq!(redact("amqp://h:5672"), "amqp://h:5672");
        // A user without a password is shown as it is (the `amqp:` is a scheme, not a user).
        assert_eq!(redact("amqp://guest@h:5672/%2f"), "amqp://guest@h:5672/%2f");
        assert_eq!(redact("amqp://u:/pw@h"), "amqp://u:***@h");
        // Mistyped URLs hold real passwords too.
        for (typed, shown) in [
            (
                "amqp//guest:S3cretPW@127.0.0.1",
                "amqp//guest:***@127.0.0.1",
            ),
            (
                "htp:/admin:MgmtS3cret@127.0.0.1:15672",
                "htp:/admin:***@127.0.0.1:15672",
            ),
            ("http//admin:MgmtS3cret@x", "http//admin:***@x"),
            ("guest:pw@host", "guest:***@host"),
            ("amqp://:p@h", "amqp://:***@h"),
            ("amqp//guest:S3cret@pw@host", "amqp//guest:***@host"),
            ("amqp://guest:S3cret@pw@host", "amqp://guest:***@host"),
        ] {
            let out = redact(typed);
            assert!(
                !out.contains("S3cret") && !out.contains(":pw@"),
                "{typed} → {out}"
            );
            assert!(out.ends_with(shown), "{typed} → {out}");
        }
        // Text without credentials is left alone.
        assert_eq!(
            scrub("connecting to 127.0.0.1:5672 failed", "xyz"),
            "connecting to 127.0.0.1:5672 failed"
        );
        assert_eq!(
            scrub(
                "failed to connect to amqp://a:hunter2@x/ (hunter2)",
                "hunter2"
            ),
            "failed to connect to amqp://a:***@x/ (***)"
        );
    }
}
