//! TLS on every link (issue 36): one trust configuration for AMQP and the management API, client
//! certificates, and the cause of every TLS failure in the CLI, `--json`, the log and the
//! console.
//!
//! Two kinds of tests:
//! - against a small in-test TLS listener (tokio-rustls, certificates made here with rcgen) that
//!   only completes or fails the handshake: an expired certificate, a certificate for another
//!   name. They run in the default `cargo test`.
//! - against the TLS nodes `scripts/broker --version 4.0 --flavor tls` (AMQP 5675, AMQPS 5676,
//!   HTTPS 15676) and `--flavor mtls` (AMQPS 5678, HTTPS 15678, client certificate required),
//!   with the private CA in `/var/cache/hopback-brokers/tls/` (`HOPBACK_TLS_DIR` overrides).
//!   They are `#[ignore]`d in the default run; run them with
//!   `cargo test --test tls -- --include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use serde_json::Value;

fn tls_dir() -> PathBuf {
    std::env::var_os("HOPBACK_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hopback-brokers/tls"))
}

/// The binary with no TLS environment of the test runner's own.
fn hopback(log: &Path) -> std::process::Command {
    let mut c = common::bin();
    c.env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("HOPBACK_CA_FILE")
        .env_remove("HOPBACK_CERT_FILE")
        .env_remove("HOPBACK_KEY_FILE")
        .env("HOPBACK_LOG_FILE", log)
        .env("HOPBACK_DATA_DIR", log.parent().unwrap());
    c
}

/// `check --json`: the checks by name.
fn checks(out: &Output) -> Vec<(String, String, String, String)> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
                c["hint"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn line<'a>(
    all: &'a [(String, String, String, String)],
    name: &str,
) -> &'a (String, String, String, String) {
    all.iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {all:#?}"))
}

// ---------------------------------------------------------------------------------------------
// The in-test TLS listener.

struct Listener {
    port: u16,
    ca_pem: String,
}

/// Serve `names` with a certificate valid from `not_before` to `not_after` (rcgen dates), signed
/// by a CA made here; every connection only gets a handshake.
fn listener(names: &[&str], not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Listener {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hopback test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    leaf.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let chain = vec![leaf_cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let a = acceptor.clone();
                tokio::spawn(async move {
                    let _ = a.accept(s).await;
                });
            }
        });
    });
    Listener {
        port,
        ca_pem: ca_cert.pem(),
    }
}

/// `hopback check --json` against the listener on both links, trusting its CA with `--ca-file`.
fn check_against(l: &Listener, host: &str, dir: &Path) -> (Output, String) {
    let ca = dir.join("listener-ca.pem");
    std::fs::write(&ca, &l.ca_pem).unwrap();
    let log = dir.join("hopback.log");
    let out = hopback(&log)
        .args([
            "--url",
            &format!("amqps://guest:Sentinel7Pw@{host}:{}/%2f", l.port),
            "--mgmt-url",
            &format!("https://{host}:{}", l.port),
            "--ca-file",
            ca.to_str().unwrap(),
            "--json",
            "check",
        ])
        .output()
        .unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    (out, log_text)
}

#[test]
fn an_expired_certificate_says_its_date_on_both_links_in_json_and_in_the_log() {
    let l = listener(&["localhost", "127.0.0.1"], (2020, 1, 1), (2021, 1, 2));
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = check_against(&l, "localhost", dir.path());
    assert_eq!(out.status.code(), Some(1));
    let all = checks(&out);
    for name in ["amqp", "management api"] {
        let (_, status, detail, hint) = line(&all, name);
        assert_eq!(status, "fail", "{name}: {detail}");
        assert!(
            detail.contains("certificate expired on 2021-01-02"),
            "{name}: {detail}"
        );
        assert!(
            hint.contains("renew the broker's certificate"),
            "{name}: {hint}"
        );
        assert!(!hint.contains("rabbitmq-plugins"), "{name}: {hint}");
    }
    assert!(log.contains("expired on 2021-01-02"), "log: {log}");
    assert!(
        !log.contains("Sentinel7Pw")
            && !String::from_utf8_lossy(&out.stdout).contains("Sentinel7Pw")
    );
    // A command other than `check`: one line with the cause and its hint, exit 1.
    let out = hopback(&dir.path().join("status.log"))
        .args([
            "--url",
            &format!("amqps://guest:guest@localhost:{}/%2f", l.port),
            "--ca-file",
            dir.path().join("listener-ca.pem").to_str().unwrap(),
            "status",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("expired on 2021-01-02") && err.contains("renew"),
        "{err}"
    );
    assert!(!err.contains("is RabbitMQ running"), "{err}");
}

#[test]
fn a_certificate_for_another_name_lists_the_names_it_has() {
    let l = listener(&["broker.internal", "10.9.8.7"], (2020, 1, 1), (2099, 1, 1));
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = check_against(&l, "localhost", dir.path());
    let all = checks(&out);
    for name in ["amqp", "management api"] {
        let (_, status, detail, hint) = line(&all, name);
        assert_eq!(status, "fail");
        assert!(
            detail.contains("not valid for `localhost`: it names `broker.internal`, `10.9.8.7`"),
            "{name}: {detail}"
        );
        assert!(hint.contains("broker.internal, 10.9.8.7"), "{name}: {hint}");
    }
    assert!(log.contains("not valid for `localhost`"), "log: {log}");
}

#[test]
fn the_console_shows_the_whole_tls_cause_wrapped_and_stops_retrying_fast() {
    use hopback::app::keymap::Keymap;
    use hopback::app::state::{AppState, Msg};
    let l = listener(&["localhost"], (2020, 1, 1), (2021, 1, 2));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &l.ca_pem).unwrap();
    let cfg = hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        Path::new("/nonexistent/hopback-test.toml"),
        false,
        &hopback::config::Overrides {
            url: Some(format!("amqps://guest:guest@localhost:{}/%2f", l.port)),
            mgmt_url: Some(format!("https://localhost:{}", l.port)),
            ca_file: Some(ca.to_str().unwrap().into()),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(hopback::broker::session::connect(
            &cfg.profile,
            "console",
            "t",
        ))
        .unwrap_err();
    let (state, needs_operator) = hopback::app::tasks::conn_state_after_failure(&e, false, 1, 0);
    assert!(needs_operator, "{e}");
    let mut s = AppState::new(&cfg, Keymap::default(), 0);
    s.handle_msg(Msg::Conn(state));
    let theme = hopback::ui::theme::Theme::builtin("dark", false).unwrap();
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    t.draw(|f| {
        hopback::ui::draw(f, &s, &theme);
    })
    .unwrap();
    let screen: String = t
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        screen.contains("expired on 2021-01-02"),
        "the cause is cut: {screen}"
    );
    assert!(
        screen.contains("check this machine's clock"),
        "the hint's end is cut: {screen}"
    );
}

#[test]
fn files_that_are_not_certificates_are_refused_at_load_and_paths_resolve_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hopback.log");
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = hopback(&log)
        .args(["--ca-file", key.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds no certificate") && err.contains("PRIVATE KEY"),
        "{err}"
    );
    // The same through the environment.
    let out = hopback(&log)
        .env("HOPBACK_CA_FILE", key.to_str().unwrap())
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A profile's relative ca_file is relative to the config file, not the working directory;
    // `~` is the home directory.
    let l = listener(&["localhost"], (2020, 1, 1), (2099, 1, 1));
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(conf_dir.join("tls")).unwrap();
    std::fs::write(conf_dir.join("tls/ca.pem"), &l.ca_pem).unwrap();
    let conf = conf_dir.join("config.toml");
    std::fs::write(
        &conf,
        "default_profile = \"p\"\n[profiles.p]\nurl = \"amqps://guest:guest@rabbit.invalid:5671/%2f\"\nca_file = \"tls/ca.pem\"\n",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = hopback(&log)
        .current_dir(elsewhere.path())
        .args(["--config", conf.to_str().unwrap(), "--json", "check"])
        .output()
        .unwrap();
    let all = checks(&out);
    let (_, status, detail, _) = line(&all, "tls");
    assert_eq!(status, "ok", "{detail}");
    assert!(
        detail.contains(&format!(
            "ca_file {}",
            conf_dir.join("tls/ca.pem").display()
        )),
        "{detail}"
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("ca.pem"), &l.ca_pem).unwrap();
    std::fs::write(
        &conf,
        "default_profile = \"p\"\n[profiles.p]\nurl = \"amqps://guest:guest@rabbit.invalid:5671/%2f\"\nca_file = \"~/ca.pem\"\n",
    )
    .unwrap();
    let out = hopback(&log)
        .env("HOME", home.path())
        .args(["--config", conf.to_str().unwrap(), "--json", "check"])
        .output()
        .unwrap();
    let all = checks(&out);
    assert!(
        line(&all, "tls")
            .2
            .contains(&home.path().join("ca.pem").display().to_string()),
        "{all:?}"
    );
    // A key file as a certificate, a certificate as a key: refused at load, exit 2.
    std::fs::write(
        &conf,
        "default_profile = \"p\"\n[profiles.p]\nurl = \"amqps://h:5671\"\ncert_file = \"tls/ca.pem\"\nkey_file = \"tls/ca.pem\"\n",
    )
    .unwrap();
    let out = hopback(&log)
        .args(["--config", conf.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key_file") && err.contains("holds no private key"),
        "{err}"
    );
}

#[test]
fn check_warns_when_the_password_would_cross_a_plain_link_beside_a_tls_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hopback.log");
    for (url, mgmt, warn) in [
        (
            "amqps://u:p@rabbit.invalid:5671/%2f",
            "http://rabbit.invalid:15672",
            true,
        ),
        (
            "amqp://u:p@rabbit.invalid:5672/%2f",
            "https://rabbit.invalid:15671",
            true,
        ),
        (
            "amqps://u:p@rabbit.invalid:5671/%2f",
            "https://rabbit.invalid:15671",
            false,
        ),
        // A loopback management URL never leaves the machine.
        (
            "amqps://u:p@rabbit.invalid:5671/%2f",
            "http://127.0.0.1:15672",
            false,
        ),
    ] {
        let out = hopback(&log)
            .args(["--url", url, "--mgmt-url", mgmt, "--json", "check"])
            .output()
            .unwrap();
        let all = checks(&out);
        let found = all.iter().find(|c| c.0 == "credentials");
        assert_eq!(found.is_some(), warn, "{url} + {mgmt}: {all:#?}");
        if let Some((_, status, detail, _)) = found {
            assert_eq!(status, "warn");
            assert!(
                detail.contains("the password crosses it in clear"),
                "{detail}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against the TLS nodes (ignored by default).

const TLS_AMQPS: u16 = 5676;
const TLS_AMQP_PLAIN: u16 = 5675;
const TLS_HTTPS: u16 = 15676;
const MTLS_AMQPS: u16 = 5678;
const MTLS_HTTPS: u16 = 15678;

fn node_check(args: &[&str], envs: &[(&str, &Path)]) -> Vec<(String, String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut c = hopback(&dir.path().join("hopback.log"));
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.args(args).args(["--json", "check"]).output().unwrap();
    checks(&out)
}

fn both(all: &[(String, String, String, String)], status: &str, needle: &str) {
    for name in ["amqp", "management api"] {
        let (_, s, detail, hint) = line(all, name);
        assert_eq!(s, status, "{name}: {detail} / {hint}");
        assert!(
            detail.contains(needle) || hint.contains(needle),
            "{name}: `{needle}` not in {detail} / {hint}"
        );
    }
}

fn tls_url(port: u16, host: &str) -> String {
    format!("amqps://guest:guest@{host}:{port}/%2f")
}

#[test]
#[ignore = "needs scripts/broker --version 4.0 --flavor tls"]
fn ssl_cert_file_alone_serves_both_links() {
    let ca = tls_dir().join("ca.pem");
    let all = node_check(
        &[
            "--url",
            &tls_url(TLS_AMQPS, "localhost"),
            "--mgmt-url",
            &format!("https://localhost:{TLS_HTTPS}"),
        ],
        &[("SSL_CERT_FILE", &ca)],
    );
    both(&all, "ok", "");
    assert!(line(&all, "management api").2.contains("RabbitMQ 4.0"));
    assert!(line(&all, "tls").2.contains("SSL_CERT_FILE="), "{all:?}");
    // Without it: the same broker is an unknown issuer on both links — never a silent fallback.
    let all = node_check(
        &[
            "--url",
            &tls_url(TLS_AMQPS, "localhost"),
            "--mgmt-url",
            &format!("https://localhost:{TLS_HTTPS}"),
        ],
        &[],
    );
    both(&all, "fail", "unknown issuer");
    both(&all, "fail", "ca_file");
}

#[test]
#[ignore = "needs scripts/broker --version 4.0 --flavor tls"]
fn ca_file_alone_in_a_profile_and_as_flag_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(tls_dir().join("ca.pem"), dir.path().join("private-ca.pem")).unwrap();
    let conf = dir.path().join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "default_profile = \"tls\"\n[profiles.tls]\nurl = \"{}\"\nca_file = \"private-ca.pem\"\n",
            tls_url(TLS_AMQPS, "localhost")
        ),
    )
    .unwrap();
    // The profile alone (its management URL derived: https on 15671 — give the node's port).
    let all = node_check(
        &[
            "--config",
            conf.to_str().unwrap(),
            "--mgmt-url",
            &format!("https://localhost:{TLS_HTTPS}"),
        ],
        &[],
    );
    both(&all, "ok", "");
    let ca = tls_dir().join("ca.pem");
    let args = [
        "--url".to_string(),
        tls_url(TLS_AMQPS, "127.0.0.1"),
        "--mgmt-url".to_string(),
        format!("https://127.0.0.1:{TLS_HTTPS}"),
    ];
    let mut with_flag: Vec<&str> = args.iter().map(String::as_str).collect();
    with_flag.extend(["--ca-file", ca.to_str().unwrap()]);
    both(&node_check(&with_flag, &[]), "ok", "");
    let plain: Vec<&str> = args.iter().map(String::as_str).collect();
    both(&node_check(&plain, &[("HOPBACK_CA_FILE", &ca)]), "ok", "");
}

#[test]
#[ignore = "needs scripts/broker --version 4.0 --flavor tls"]
fn a_wrong_ca_and_a_wrong_name_say_so() {
    let other = tls_dir().join("other-ca.pem");
    let ca = tls_dir().join("ca.pem");
    let all = node_check(
        &[
            "--url",
            &tls_url(TLS_AMQPS, "localhost"),
            "--mgmt-url",
            &format!("https://localhost:{TLS_HTTPS}"),
            "--ca-file",
            other.to_str().unwrap(),
        ],
        &[("SSL_CERT_FILE", &other)],
    );
    both(&all, "fail", "unknown issuer");
    // 127.0.0.2 reaches the node (loopback) but is not in its certificate.
    let all = node_check(
        &[
            "--url",
            &tls_url(TLS_AMQPS, "127.0.0.2"),
            "--mgmt-url",
            &format!("https://127.0.0.2:{TLS_HTTPS}"),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    both(
        &all,
        "fail",
        "not valid for `127.0.0.2`: it names `localhost`, `127.0.0.1`, `::1`",
    );
}

#[test]
#[ignore = "needs scripts/broker --version 4.0 --flavor tls"]
fn plain_clients_on_tls_ports_and_tls_clients_on_plain_ports_are_named() {
    let ca = tls_dir().join("ca.pem");
    let all = node_check(
        &[
            "--url",
            &format!("amqp://guest:guest@localhost:{TLS_AMQPS}/%2f"),
            "--mgmt-url",
            &format!("http://localhost:{TLS_HTTPS}"),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    for (name, scheme) in [("amqp", "amqps://"), ("management api", "https://")] {
        let (_, s, detail, hint) = line(&all, name);
        assert_eq!(s, "fail");
        assert!(detail.contains("that port speaks TLS"), "{detail}");
        assert!(hint.contains(scheme), "{hint}");
    }
    let all = node_check(
        &[
            "--url",
            &tls_url(TLS_AMQP_PLAIN, "localhost"),
            "--mgmt-url",
            &format!("https://localhost:{}", 15673),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    both(&all, "fail", "does not speak TLS");
}

#[test]
#[ignore = "needs scripts/broker --version 4.0 --flavor mtls"]
fn a_required_client_certificate_without_and_with_cert_file_and_external_login() {
    let t = tls_dir();
    let ca = t.join("ca.pem");
    let base = [
        "--url".to_string(),
        tls_url(MTLS_AMQPS, "localhost"),
        "--mgmt-url".to_string(),
        format!("https://localhost:{MTLS_HTTPS}"),
        "--ca-file".to_string(),
        ca.to_str().unwrap().to_string(),
    ];
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let all = node_check(&args, &[]);
    both(&all, "fail", "requires a client certificate");
    both(&all, "fail", "cert_file");
    let mut with_cert = args.clone();
    let (cert, key) = (t.join("client.pem"), t.join("client.key"));
    with_cert.extend([
        "--cert-file",
        cert.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    let all = node_check(&with_cert, &[]);
    both(&all, "ok", "");
    assert!(line(&all, "tls").2.contains("client.pem"), "{all:?}");
    // SASL EXTERNAL: the certificate (CN=guest) logs in; a wrong password does not matter on
    // AMQP — and the same wrong password with PLAIN is refused.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config.toml");
    for (mechanism, amqp_ok) in [("external", true), ("plain", false)] {
        std::fs::write(
            &conf,
            format!(
                "default_profile = \"m\"\n[profiles.m]\nurl = \"amqps://guest:WrongPw1@localhost:{MTLS_AMQPS}/%2f\"\nmgmt_url = \"https://localhost:{MTLS_HTTPS}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nauth_mechanism = \"{mechanism}\"\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let all = node_check(&["--config", conf.to_str().unwrap()], &[]);
        let (_, s, detail, _) = line(&all, "amqp");
        assert_eq!(s == "ok", amqp_ok, "{mechanism}: {detail}");
        if amqp_ok {
            assert!(line(&all, "tls").2.contains("SASL EXTERNAL"), "{all:?}");
        }
    }
}

/// A password-protected key (encrypted PKCS#8, and OpenSSL's legacy encrypted PEM) is refused
/// when the configuration loads, naming the file and the `openssl pkey` command that decrypts it.
#[test]
fn a_password_protected_key_is_refused_with_the_command_that_decrypts_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hopback.log");
    let l = listener(&["localhost"], (2020, 1, 1), (2099, 1, 1));
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, &l.ca_pem).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let plain = dir.path().join("plain.pem");
    openssl(&["genrsa", "-out", plain.to_str().unwrap(), "2048"]);
    let pkcs8 = dir.path().join("key-pkcs8.pem");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        plain.to_str().unwrap(),
        "-out",
        pkcs8.to_str().unwrap(),
        "-passout",
        "pass:secret-pw",
    ]);
    let legacy = dir.path().join("key-legacy.pem");
    openssl(&[
        "rsa",
        "-in",
        plain.to_str().unwrap(),
        "-out",
        legacy.to_str().unwrap(),
        "-aes256",
        "-traditional",
        "-passout",
        "pass:secret-pw",
    ]);
    for (key, label) in [
        (&pkcs8, "ENCRYPTED PRIVATE KEY"),
        (&legacy, "Proc-Type ENCRYPTED"),
    ] {
        let out = hopback(&log)
            .args([
                "--url",
                "amqps://guest@rabbit.invalid:5671/%2f",
                "--cert-file",
                cert.to_str().unwrap(),
                "--key-file",
                key.to_str().unwrap(),
                "check",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("password-protected") && err.contains(label),
            "{label}: {err}"
        );
        assert!(
            err.contains(&format!("openssl pkey -in {}", key.display()))
                && err.contains("key-plain.pem"),
            "{label}: {err}"
        );
    }
}
