//! Node URLs of a profile: AMQP URL parsing (errors never repeat the password), the management
//! URL derived from an AMQP node, and comma-separated lists of nodes (`--url`, `HOPBACK_URL`).

use url::Url;

use super::ConfigError;

/// `a, b,c` → `["a", "b", "c"]` (empty items dropped): several node URLs in one flag or
/// environment variable.
pub(super) fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The management URL of an AMQP node: same host, port 15672 (15671 for amqps).
pub(super) fn derive_mgmt_url(amqp_url: &Url) -> Result<Url, ConfigError> {
    let tls = amqp_url.scheme() == "amqps";
    let host = amqp_url.host_str().unwrap_or("127.0.0.1");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let text = format!(
        "{}://{}:{}/",
        if tls { "https" } else { "http" },
        host,
        if tls { 15671 } else { 15672 }
    );
    Url::parse(&text).map_err(|e| {
        ConfigError::usage(
            format!("cannot derive the management URL: {e}"),
            "set mgmt_url in the profile",
        )
    })
}

/// Parse an AMQP URL; the error never repeats the password.
pub fn parse_amqp_url(text: &str) -> Result<Url, ConfigError> {
    let shown = crate::redact::redact(text);
    let u = Url::parse(text).map_err(|e| {
        ConfigError::usage(
            format!("malformed AMQP URL {shown}: {e}"),
            "use the form amqp://user:password@host:5672/%2f",
        )
    })?;
    if u.scheme() != "amqp" && u.scheme() != "amqps" {
        return Err(ConfigError::usage(
            format!(
                "malformed AMQP URL {shown}: scheme must be amqp or amqps, not `{}`",
                crate::text::sanitize(u.scheme())
            ),
            "use the form amqp://user:password@host:5672/%2f",
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::usage(
            format!("malformed AMQP URL {shown}: no host"),
            "use the form amqp://user:password@host:5672/%2f",
        ));
    }
    Ok(u)
}
