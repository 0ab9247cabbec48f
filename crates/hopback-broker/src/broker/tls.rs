//! One trust and identity configuration for every link to the broker — AMQP, the management API,
//! Prometheus — and the cause of every TLS failure, by kind.
//!
//! Trust is the system store as `rustls-native-certs` reads it (with `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` taking its place, as in OpenSSL) plus the profile's CA file; the identity is the
//! profile's client certificate. The AMQP link's TLS library (lapin → tcp-stream → rustls) loads
//! the same native store with the same crate and gets the CA file and the identity from
//! [`amqp_tls_config`]; the HTTP links get a rustls configuration built here
//! ([`http_client_builder`]). Verification is never switched off: there is no setting for it.
//!
//! Failures are classified by walking an error's `source()` chain down to the rustls error
//! ([`cause_of`]): unknown issuer, a name the certificate does not carry, an expired certificate,
//! a client certificate the broker requires or refuses, a peer that does not speak TLS. The other
//! direction — plain AMQP or HTTP sent to a TLS port — shows as a closed connection or an odd
//! answer, so [`speaks_tls`] asks the port itself (a handshake that sends no credentials).

use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError, RootCertStore};

use crate::config::Profile;

/// The system store as read once per process (the environment does not change under us).
struct NativeRoots {
    certs: Vec<CertificateDer<'static>>,
    /// Where they came from: `SSL_CERT_FILE=…`, `SSL_CERT_DIR=…` or `the system store`.
    source: String,
    /// Files that could not be read or parsed.
    errors: Vec<String>,
}

fn native_roots() -> &'static NativeRoots {
    static ROOTS: OnceLock<NativeRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let r = rustls_native_certs::load_native_certs();
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", v.to_string_lossy()))
        };
        let source = match (var("SSL_CERT_FILE"), var("SSL_CERT_DIR")) {
            (Some(f), Some(d)) => format!("{f} and {d}"),
            (Some(f), None) => f,
            (None, Some(d)) => d,
            (None, None) => "the system store".to_string(),
        };
        let errors: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        for e in &errors {
            tracing::warn!(error = %e, "a trusted-certificate file could not be read");
        }
        NativeRoots {
            certs: r.certs,
            source,
            errors,
        }
    })
}

/// What the links trust and who they are, in words (`check` prints it).
#[derive(Debug, Clone)]
pub struct TrustSummary {
    /// `the system store (140 certificates)`, `SSL_CERT_FILE=/x.pem (1 certificate)`, plus the
    /// CA file.
    pub trust: String,
    /// The client certificate's file, or `None`.
    pub identity: Option<String>,
    /// Problems reading the native store.
    pub problems: Vec<String>,
}

/// Describe the trust and identity every link of `profile` uses.
pub fn summary(profile: &Profile) -> TrustSummary {
    let n = native_roots();
    let count = |k: usize| format!("{k} certificate{}", if k == 1 { "" } else { "s" });
    let mut trust = format!("{} ({})", n.source, count(n.certs.len()));
    if let Some(ca) = &profile.tls.ca {
        trust.push_str(&format!(
            " + ca_file {} ({})",
            ca.path.display(),
            count(ca.certs.len())
        ));
    }
    TrustSummary {
        trust,
        identity: profile
            .tls
            .identity
            .as_ref()
            .map(|i| i.cert_file.display().to_string()),
        problems: n.errors.clone(),
    }
}

/// The roots every link trusts: the native store and the profile's CA file.
pub fn root_store(profile: &Profile) -> RootCertStore {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(native_roots().certs.iter().cloned());
    if let Some(ca) = &profile.tls.ca {
        store.add_parsable_certificates(ca.certs.iter().cloned());
    }
    store
}

/// A TLS configuration that cannot be built (a key rustls refuses).
#[derive(Debug, Clone, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(pub String);

/// The rustls client configuration of the HTTP links (and of [`speaks_tls`]).
pub fn client_config(profile: &Profile) -> Result<rustls::ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_root_certificates(root_store(profile));
    match &profile.tls.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key())
            .map_err(|e| TlsConfigError(format!("client certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The AMQP link's TLS settings: the CA file on top of the native store (loaded by the TLS
/// library with the same crate), and the client certificate.
pub fn amqp_tls_config(profile: &Profile) -> lapin::tcp::OwnedTLSConfig {
    lapin::tcp::OwnedTLSConfig {
        identity: profile
            .tls
            .identity
            .as_ref()
            .map(|id| lapin::tcp::OwnedIdentity::PKCS8 {
                pem: id.chain_pem.as_bytes().to_vec(),
                key: id.key_pem().as_bytes().to_vec(),
            }),
        cert_chain: profile.tls.ca.as_ref().map(|ca| ca.pem.clone()),
    }
}

/// A reqwest builder whose TLS is [`client_config`]: the management API and Prometheus trust
/// exactly what AMQP trusts and present the same client certificate.
pub fn http_client_builder(profile: &Profile) -> Result<reqwest::ClientBuilder, TlsConfigError> {
    Ok(reqwest::Client::builder().use_preconfigured_tls(client_config(profile)?))
}

/// Why a TLS link failed, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCause {
    /// The certificate chain ends in a CA nobody here trusts.
    UnknownIssuer,
    /// The certificate does not name the host we connected to.
    NameMismatch {
        /// The host asked for.
        expected: String,
        /// The names the certificate carries (empty when the TLS library did not say).
        presented: Vec<String>,
    },
    /// The certificate expired.
    Expired {
        /// Its `notAfter`, RFC 3339 (when known).
        not_after: Option<String>,
    },
    /// The certificate is not valid yet.
    NotYetValid {
        /// Its `notBefore`, RFC 3339 (when known).
        not_before: Option<String>,
    },
    /// The server requires a client certificate and we sent none.
    CertificateRequired,
    /// The server refused our client certificate (its alert named).
    ClientCertificateRefused {
        /// The alert, e.g. `UnknownCA`.
        alert: String,
    },
    /// The peer answered, but not in TLS: a plain AMQP or HTTP port behind a TLS URL.
    NotTls,
    /// A plain (non-TLS) client reached a port that speaks TLS.
    TlsPort {
        /// The scheme to use instead: `amqps` or `https`.
        scheme: &'static str,
    },
    /// Any other TLS failure, in the TLS library's words.
    Other(String),
}

fn rfc3339(t: rustls::pki_types::UnixTime) -> Option<String> {
    let secs = i64::try_from(t.as_secs()).ok()?;
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

impl TlsCause {
    /// The cause in one line (without the hint).
    pub fn describe(&self) -> String {
        match self {
            TlsCause::UnknownIssuer => {
                "the server's certificate is signed by a CA this machine does not trust (unknown issuer)".into()
            }
            TlsCause::NameMismatch { expected, presented } if presented.is_empty() => format!(
                "the server's certificate is not valid for `{}`",
                crate::text::sanitize(expected)
            ),
            TlsCause::NameMismatch { expected, presented } => format!(
                "the server's certificate is not valid for `{}`: it names {}",
                crate::text::sanitize(expected),
                presented
                    .iter()
                    .map(|n| format!("`{}`", crate::text::sanitize(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TlsCause::Expired { not_after } => match not_after {
                Some(t) => format!("the server's certificate expired on {t}"),
                None => "the server's certificate has expired".into(),
            },
            TlsCause::NotYetValid { not_before } => match not_before {
                Some(t) => format!("the server's certificate is not valid before {t}"),
                None => "the server's certificate is not valid yet".into(),
            },
            TlsCause::CertificateRequired => {
                "the server requires a client certificate and none was sent".into()
            }
            TlsCause::ClientCertificateRefused { alert } => format!(
                "the server refused the client certificate (TLS alert {alert})"
            ),
            TlsCause::NotTls => {
                "the server there does not speak TLS (a plain port behind an amqps/https URL)".into()
            }
            TlsCause::TlsPort { scheme } => format!(
                "that port speaks TLS, but the URL is not {scheme}://"
            ),
            TlsCause::Other(t) => format!("TLS failed: {}", crate::text::sanitize(t)),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            TlsCause::UnknownIssuer => "give the CA that signed it: ca_file in the profile, --ca-file or HOPBACK_CA_FILE (SSL_CERT_FILE also works, for both links)".into(),
            TlsCause::NameMismatch { presented, .. } if !presented.is_empty() => format!(
                "connect to a name the certificate carries ({}), or have the certificate reissued with this one",
                presented.iter().map(|n| crate::text::sanitize(n).into_owned()).collect::<Vec<_>>().join(", ")
            ),
            TlsCause::NameMismatch { .. } => "connect to a name the certificate carries (`openssl s_client -connect HOST:PORT` shows it), or have it reissued".into(),
            TlsCause::Expired { .. } | TlsCause::NotYetValid { .. } => "renew the broker's certificate (or check this machine's clock: `date -u`)".into(),
            TlsCause::CertificateRequired => "give a client certificate: cert_file and key_file in the profile (or --cert-file/--key-file)".into(),
            TlsCause::ClientCertificateRefused { .. } => "the broker must trust the CA that signed cert_file (its ssl_options.cacertfile), and the certificate must be valid".into(),
            TlsCause::NotTls => "use amqp:// (port 5672) or http:// for a plain port, or the broker's TLS port (5671 for AMQP, 15671 for the management API)".into(),
            TlsCause::TlsPort { scheme } => format!("use {scheme}:// for that port (or the plain port: 5672 for AMQP, 15672 for HTTP)"),
            TlsCause::Other(_) => "`openssl s_client -connect HOST:PORT` shows the server's side of the handshake".into(),
        }
    }

    /// A failure no retry can fix without someone changing a certificate or the configuration
    /// (the console stops retrying on these and says so).
    pub fn is_configuration(&self) -> bool {
        !matches!(self, TlsCause::Other(_))
    }
}

/// webpki spells a certificate's names as `DnsName("localhost")` / `IpAddress(127.0.0.1)`:
/// keep the name.
fn presented_name(n: &str) -> String {
    for prefix in ["DnsName(", "IpAddress(", "URI("] {
        if let Some(rest) = n.strip_prefix(prefix).and_then(|r| r.strip_suffix(')')) {
            let name = rest.trim_matches('"');
            return if prefix == "IpAddress(" {
                name.parse::<std::net::IpAddr>()
                    .map_or_else(|_| name.to_string(), |ip| ip.to_string())
            } else {
                name.to_string()
            };
        }
    }
    n.to_string()
}

fn from_rustls(e: &rustls::Error) -> TlsCause {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsCause::UnknownIssuer,
            CertificateError::NotValidForName => TlsCause::NameMismatch {
                expected: String::new(),
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => TlsCause::NameMismatch {
                expected: expected.to_str().into_owned(),
                presented: presented.iter().map(|n| presented_name(n)).collect(),
            },
            CertificateError::Expired => TlsCause::Expired { not_after: None },
            CertificateError::ExpiredContext { not_after, .. } => TlsCause::Expired {
                not_after: rfc3339(*not_after),
            },
            CertificateError::NotValidYet => TlsCause::NotYetValid { not_before: None },
            CertificateError::NotValidYetContext { not_before, .. } => TlsCause::NotYetValid {
                not_before: rfc3339(*not_before),
            },
            other => TlsCause::Other(format!("invalid server certificate: {other:?}")),
        },
        E::AlertReceived(AlertDescription::CertificateRequired) => TlsCause::CertificateRequired,
        E::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied),
        ) => TlsCause::ClientCertificateRefused {
            alert: format!("{a:?}"),
        },
        E::InvalidMessage(_) => TlsCause::NotTls,
        other => TlsCause::Other(other.to_string()),
    }
}

/// The TLS cause of `e`, if any: `e` or an error in its `source()` chain is (or wraps, in an
/// `io::Error`) a rustls error.
pub fn cause_of(e: &(dyn StdError + 'static)) -> Option<TlsCause> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(from_rustls(r));
        }
        // `io::Error::source()` skips the error it wraps: look inside explicitly.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(c) = cause_of(inner)
        {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

/// `e` and every error in its `source()` chain, `: `-joined, repeats dropped ("error sending
/// request: client error (Connect): tcp connect error: Connection refused").
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let t = err.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The TLS cause inside an I/O error (the shape lapin reports its transport errors in).
pub fn cause_of_io(e: &std::io::Error) -> Option<TlsCause> {
    cause_of(e)
}

/// Does `host:port` speak TLS? A handshake with `profile`'s trust (never without verification):
/// any certificate verdict or a completed handshake means yes; a connection refused, a timeout or
/// an answer that is not TLS means no. Sends no credentials.
pub async fn speaks_tls(profile: &Profile, host: &str, port: u16, limit: Duration) -> bool {
    let Ok(cfg) = client_config(profile) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host.trim_matches(['[', ']']).to_string()) else {
        return false;
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .ok()?;
        let handshake = TlsHandshake::new(Arc::new(cfg), name)?;
        Some(handshake.run(tcp).await)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Some(Ok(()))) => true,
        Ok(Some(Err(e))) => !matches!(from_rustls(&e), TlsCause::NotTls | TlsCause::Other(_)),
        _ => false,
    }
}

/// A bare client handshake over a tokio stream (only [`speaks_tls`] needs one; the links use
/// their libraries' own).
struct TlsHandshake {
    conn: rustls::ClientConnection,
}

impl TlsHandshake {
    fn new(cfg: Arc<rustls::ClientConfig>, name: ServerName<'static>) -> Option<Self> {
        rustls::ClientConnection::new(cfg, name)
            .ok()
            .map(|conn| Self { conn })
    }

    async fn run(mut self, mut tcp: tokio::net::TcpStream) -> Result<(), rustls::Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        let other = |e: std::io::Error| rustls::Error::General(e.to_string());
        loop {
            while self.conn.wants_write() {
                let mut out = Vec::new();
                self.conn.write_tls(&mut out).map_err(other)?;
                tcp.write_all(&out).await.map_err(other)?;
            }
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            let n = tcp.read(&mut buf).await.map_err(other)?;
            if n == 0 {
                return Err(rustls::Error::General("closed".into()));
            }
            let mut rd = &buf[..n];
            while !rd.is_empty() {
                self.conn.read_tls(&mut rd).map_err(other)?;
                self.conn.process_new_packets()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_read_by_kind_through_io_errors_and_source_chains() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(cause_of_io(&io), Some(TlsCause::UnknownIssuer));
        #[derive(Debug, thiserror::Error)]
        #[error("sending the request")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.2").unwrap().to_owned(),
                presented: vec!["DnsName(\"localhost\")".into()],
            }),
        ));
        match cause_of(&outer) {
            Some(TlsCause::NameMismatch {
                expected,
                presented,
            }) => {
                assert_eq!(expected, "127.0.0.2");
                assert_eq!(presented.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let plain = std::io::Error::other("connection refused");
        assert_eq!(cause_of_io(&plain), None);
        assert_eq!(
            from_rustls(&rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            TlsCause::CertificateRequired
        );
    }
}
