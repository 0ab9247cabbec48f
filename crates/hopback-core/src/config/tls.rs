//! TLS material named by the configuration, read and checked when the configuration loads: a CA
//! file (`ca_file`, `--ca-file`, `HOPBACK_CA_FILE`) and a client certificate with its key
//! (`cert_file` + `key_file`, or `--cert-file`/`--key-file`, `HOPBACK_CERT_FILE`/
//! `HOPBACK_KEY_FILE`). A file that is not what its key says is refused here, with its path and
//! what was found, so a typo never turns into an "unknown issuer" at the first connection.
//!
//! Paths in the config file are relative to the file's directory; paths from a flag or the
//! environment to the working directory; `~` is the home directory in both. The connections
//! themselves are built from this by `broker::tls`, the one place every link (AMQP, management,
//! Prometheus) gets its trust and identity from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

/// How the AMQP connection logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMechanism {
    /// User name and password (SASL PLAIN), the default.
    #[default]
    Plain,
    /// The client certificate is the identity (SASL EXTERNAL, RabbitMQ's
    /// `rabbitmq_auth_mechanism_ssl`): no password crosses the AMQP link.
    External,
}

impl AuthMechanism {
    /// The name in a profile (`auth_mechanism = "external"`) and in lapin's URL query.
    pub fn name(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "plain",
            AuthMechanism::External => "external",
        }
    }
}

/// A CA file, read and checked: every certificate in it, in order.
#[derive(Clone)]
pub struct CaFile {
    /// Where it was read from (absolute, `~` expanded).
    pub path: PathBuf,
    /// Its certificates (at least one).
    pub certs: Vec<CertificateDer<'static>>,
    /// The file as read (PEM text), for the AMQP link's TLS library.
    pub pem: String,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// A client certificate and its private key, read and checked.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate file.
    pub cert_file: PathBuf,
    /// The key file.
    pub key_file: PathBuf,
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain as PEM text.
    pub chain_pem: String,
    /// The private key (never printed: `Debug` shows only the path).
    key: Arc<PrivateKeyDer<'static>>,
    /// The key as PEM text (for the AMQP link's TLS library).
    key_pem: Arc<String>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("key", &"***")
            .finish()
    }
}

impl ClientIdentity {
    /// The private key, for a TLS client configuration.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
    /// The private key as PEM text, for a TLS library that parses it itself.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// Everything TLS a profile names beyond the system's trust store.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Extra trusted CAs.
    pub ca: Option<CaFile>,
    /// The client certificate, for brokers that ask for one.
    pub identity: Option<ClientIdentity>,
    /// How AMQP logs in.
    pub auth: AuthMechanism,
}

/// Where a path came from: the config file (relative to its directory) or a flag / the
/// environment (relative to the working directory).
#[derive(Debug, Clone, Copy)]
pub enum PathOrigin<'a> {
    /// A key of the config file at this path.
    ConfigFile(&'a Path),
    /// A command-line flag or an environment variable.
    CommandLine,
}

/// `~` and `~/x` → the home directory; a relative path → relative to the config file's directory
/// or the working directory (see [`PathOrigin`]).
pub fn expand_path(text: &str, origin: PathOrigin<'_>) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let p = if text == "~" {
        home().unwrap_or_else(|| PathBuf::from(text))
    } else if let Some(rest) = text.strip_prefix("~/") {
        match home() {
            Some(h) => h.join(rest),
            None => PathBuf::from(text),
        }
    } else {
        PathBuf::from(text)
    };
    if p.is_absolute() {
        return p;
    }
    let base = match origin {
        PathOrigin::ConfigFile(file) => file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok()),
        PathOrigin::CommandLine => std::env::current_dir().ok(),
    };
    match base {
        Some(b) => b.join(p),
        None => p,
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::usage(
            format!("cannot read {key} {}: {e}", path.display()),
            format!(
                "check the path (a relative {key} in the config file is relative to the file's directory; `~` is your home)"
            ),
        )
    })
}

fn pem_labels(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("-----BEGIN ")
                .and_then(|r| r.strip_suffix("-----"))
                .map(str::to_string)
        })
        .collect()
}

fn what_it_holds(bytes: &[u8]) -> String {
    let labels = pem_labels(bytes);
    if !labels.is_empty() {
        format!("it holds {}", labels.join(", "))
    } else if bytes.first() == Some(&0x30) {
        "it looks like a DER (binary) file".to_string()
    } else if bytes.is_empty() {
        "it is empty".to_string()
    } else {
        "it holds no PEM block".to_string()
    }
}

fn certificates(
    key: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::usage(
                format!("{key} {} is not a readable PEM file: {e}", path.display()),
                "give a PEM file of certificates (-----BEGIN CERTIFICATE-----)",
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::usage(
            format!(
                "{key} {} holds no certificate ({})",
                path.display(),
                what_it_holds(bytes)
            ),
            if bytes.first() == Some(&0x30) {
                "convert it to PEM: openssl x509 -inform der -in FILE -out FILE.pem".to_string()
            } else {
                "give a PEM file with at least one -----BEGIN CERTIFICATE----- block".to_string()
            },
        ));
    }
    Ok(certs)
}

/// Read and check a CA file: PEM, at least one certificate, each usable as a trust anchor.
pub fn load_ca(key: &str, path: PathBuf) -> Result<CaFile, ConfigError> {
    let bytes = read(key, &path)?;
    let certs = certificates(key, &path, &bytes)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store.add(c.clone()).map_err(|e| {
            ConfigError::usage(
                format!(
                    "{key} {}: certificate {} cannot be used as a CA ({e})",
                    path.display(),
                    i + 1
                ),
                "give the PEM certificate of the CA that signed the broker's certificate",
            )
        })?;
    }
    Ok(CaFile {
        path,
        certs,
        pem: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Read and check a client certificate and its key.
pub fn load_identity(cert_file: PathBuf, key_file: PathBuf) -> Result<ClientIdentity, ConfigError> {
    let cert_bytes = read("cert_file", &cert_file)?;
    let chain = certificates("cert_file", &cert_file, &cert_bytes)?;
    let key_bytes = read("key_file", &key_file)?;
    let labels = pem_labels(&key_bytes);
    // Encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`) and OpenSSL's legacy encrypted PEM (a
    // `Proc-Type: 4,ENCRYPTED` header in an RSA/EC key): the PEM and TLS crates read neither.
    let legacy_encrypted = String::from_utf8_lossy(&key_bytes)
        .lines()
        .any(|l| l.trim().starts_with("Proc-Type:") && l.contains("ENCRYPTED"));
    if legacy_encrypted || labels.iter().any(|l| l.contains("ENCRYPTED")) {
        return Err(ConfigError::usage(
            format!(
                "key_file {} is password-protected ({}); hopback reads unencrypted PEM keys only",
                key_file.display(),
                if legacy_encrypted {
                    format!("{}, Proc-Type ENCRYPTED", labels.join(", "))
                } else {
                    labels.join(", ")
                }
            ),
            format!(
                "decrypt it into a file only you can read: openssl pkey -in {} -out key-plain.pem (umask 077 first), then key_file = key-plain.pem",
                key_file.display()
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| {
        ConfigError::usage(
            format!(
                "key_file {} holds no private key ({})",
                key_file.display(),
                what_it_holds(&key_bytes)
            ),
            "give the PEM private key of cert_file (-----BEGIN PRIVATE KEY-----, RSA or EC)",
        )
    })?;
    // The key must belong to the certificate: a mismatch would only show as a handshake the
    // broker refuses, far from its cause.
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(ConfigError::usage(
                format!(
                    "key_file {} is not the key of cert_file {}",
                    key_file.display(),
                    cert_file.display()
                ),
                "give the key the certificate was made for (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)",
            ));
        }
        Err(e) => {
            return Err(ConfigError::usage(
                format!(
                    "cert_file {} with key_file {} cannot be used: {e}",
                    cert_file.display(),
                    key_file.display()
                ),
                "give a PEM certificate and its RSA, ECDSA or Ed25519 key",
            ));
        }
    }
    Ok(ClientIdentity {
        cert_file,
        key_file,
        chain,
        chain_pem: String::from_utf8_lossy(&cert_bytes).into_owned(),
        key: Arc::new(key),
        key_pem: Arc::new(String::from_utf8_lossy(&key_bytes).into_owned()),
    })
}

/// The TLS settings as written: each path with where it came from.
#[derive(Debug, Default)]
pub struct TlsInputs<'a> {
    /// The CA file and its origin.
    pub ca_file: Option<(&'a str, PathOrigin<'a>)>,
    /// The client certificate and its origin.
    pub cert_file: Option<(&'a str, PathOrigin<'a>)>,
    /// The client key and its origin.
    pub key_file: Option<(&'a str, PathOrigin<'a>)>,
    /// `auth_mechanism` as written.
    pub auth_mechanism: Option<&'a str>,
}

/// Resolve and check the TLS settings of a profile whose AMQP URL is `amqps` (`tls`) or not.
pub fn resolve(inputs: &TlsInputs<'_>, tls: bool) -> Result<TlsFiles, ConfigError> {
    let ca = inputs
        .ca_file
        .map(|(t, o)| load_ca("ca_file", expand_path(t, o)))
        .transpose()?;
    let identity = match (inputs.cert_file, inputs.key_file) {
        (Some((c, co)), Some((k, ko))) => {
            Some(load_identity(expand_path(c, co), expand_path(k, ko))?)
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::usage(
                "cert_file is set without key_file",
                "set key_file to the certificate's private key (or --key-file / HOPBACK_KEY_FILE)",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::usage(
                "key_file is set without cert_file",
                "set cert_file to the client certificate (or --cert-file / HOPBACK_CERT_FILE)",
            ));
        }
    };
    let auth = match inputs
        .auth_mechanism
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("plain") => AuthMechanism::Plain,
        Some("external") => AuthMechanism::External,
        Some(other) => {
            return Err(ConfigError::usage(
                format!(
                    "auth_mechanism `{}` is not known",
                    crate::text::sanitize(other)
                ),
                "use \"plain\" (user and password) or \"external\" (the client certificate)",
            ));
        }
    };
    if auth == AuthMechanism::External {
        if identity.is_none() {
            return Err(ConfigError::usage(
                "auth_mechanism = \"external\" needs a client certificate",
                "set cert_file and key_file in the profile (the broker maps the certificate's CN to the user)",
            ));
        }
        if !tls {
            return Err(ConfigError::usage(
                "auth_mechanism = \"external\" needs an amqps:// URL",
                "the client certificate is presented only over TLS: use amqps://host:5671",
            ));
        }
    }
    Ok(TlsFiles { ca, identity, auth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_expand_home_and_resolve_against_their_origin() {
        let cfg = Path::new("/etc/hopback/config.toml");
        assert_eq!(
            expand_path("ca.pem", PathOrigin::ConfigFile(cfg)),
            PathBuf::from("/etc/hopback/ca.pem")
        );
        assert_eq!(
            expand_path("/x/ca.pem", PathOrigin::ConfigFile(cfg)),
            PathBuf::from("/x/ca.pem")
        );
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(
                expand_path("~/tls/ca.pem", PathOrigin::ConfigFile(cfg)),
                PathBuf::from(home).join("tls/ca.pem")
            );
        }
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            expand_path("ca.pem", PathOrigin::CommandLine),
            cwd.join("ca.pem")
        );
    }

    #[test]
    fn a_file_that_is_not_a_certificate_is_refused_with_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = load_ca("ca_file", key.clone()).unwrap_err();
        assert!(e.message.contains("holds no certificate"), "{e}");
        assert!(e.message.contains("PRIVATE KEY"), "{e}");
        assert!(e.usage);
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let e = load_ca("ca_file", text).unwrap_err();
        assert!(e.message.contains("holds no PEM block"), "{e}");
        let missing = load_ca("ca_file", dir.path().join("nope.pem")).unwrap_err();
        assert!(missing.message.contains("cannot read ca_file"), "{missing}");
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01]).unwrap();
        let e = load_ca("ca_file", der).unwrap_err();
        assert!(
            e.hint.as_deref().unwrap_or("").contains("-inform der"),
            "{e}"
        );
    }

    #[test]
    fn external_needs_a_certificate_and_tls() {
        let e = resolve(
            &TlsInputs {
                auth_mechanism: Some("external"),
                ..Default::default()
            },
            true,
        )
        .unwrap_err();
        assert!(e.message.contains("needs a client certificate"), "{e}");
        let e = resolve(
            &TlsInputs {
                auth_mechanism: Some("kerberos"),
                ..Default::default()
            },
            true,
        )
        .unwrap_err();
        assert!(e.message.contains("not known"), "{e}");
        let e = resolve(
            &TlsInputs {
                cert_file: Some(("c.pem", PathOrigin::CommandLine)),
                ..Default::default()
            },
            true,
        )
        .unwrap_err();
        assert!(e.message.contains("without key_file"), "{e}");
    }
}
