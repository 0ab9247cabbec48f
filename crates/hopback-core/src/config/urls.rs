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
    derive_http_url(amqp_url, 15672, 15671, "management", "mgmt_url")
}

/// The `rabbitmq_prometheus` URL of an AMQP node: same host, port 15692 (15691 for amqps).
pub(super) fn derive_prometheus_url(amqp_url: &Url) -> Result<Url, ConfigError> {
    derive_http_url(amqp_url, 15692, 15691, "Prometheus", "prometheus_url")
}

fn derive_http_url(
    amqp_url: &Url,
    port: u16,
    tls_port: u16,
    what: &str,
    key: &str,
) -> Result<Url, ConfigError> {
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
        if tls { tls_port } else { port }
    );
    Url::parse(&text).map_err(|e| {
        ConfigError::usage(
            format!("cannot derive the {what} URL: {e}"),
            format!("set {key} in the profile"),
        )
    })
}

/// `http(s)://host[:port]` URLs from `texts` (credentials dropped); `what` names them in errors.
pub(super) fn parse_http_urls(
    texts: &[String],
    what: &str,
    example: &str,
) -> Result<Vec<Url>, ConfigError> {
    let mut out = Vec::new();
    for t in texts {
        let malformed = |why: String| {
            ConfigError::usage(
                format!("malformed {what} URL {}: {why}", crate::redact::redact(t)),
                format!("use the form {example}"),
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
        out.push(u);
    }
    Ok(out)
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
