//! Credential stripping: every URI that may reach a string, a log line or an error goes through
//! [`redact`] (or [`scrub`] for free text that might embed one). The password never survives.
//!
//! A leaf module (it only needs [`crate::text`]) so that `config` and `broker` both use it without
//! `config` depending on `broker`; `broker::uri` re-exports it.

use std::sync::OnceLock;

use regex::Regex;

fn userinfo_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // scheme://user:password@  — the password may contain anything but '@' and whitespace/'/'.
    RE.get_or_init(|| {
        Regex::new(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@\s]*)@")
            .ok()
    })
    .as_ref()
}

/// Replace every `scheme://user:password@` with `scheme://user:***@`. Should the pattern ever fail
/// to build, everything between `://` and `@` is masked instead — never the other way round.
fn mask_userinfo(text: &str) -> String {
    match userinfo_re() {
        Some(re) => re.replace_all(text, "${scheme}${user}:***@").into_owned(),
        None => match (text.find("://"), text.rfind('@')) {
            (Some(a), Some(b)) if b > a => format!("{}***{}", &text[..a + 3], &text[b..]),
            _ => text.to_string(),
        },
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
        assert_eq!(
            scrub(
                "failed to connect to amqp://a:hunter2@x/ (hunter2)",
                "hunter2"
            ),
            "failed to connect to amqp://a:***@x/ (***)"
        );
    }
}
