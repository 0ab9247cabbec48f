//! The foundation's CLI against the real broker: `init` idempotence and the topology it declares,
//! `status --json` counts, dead-letter attribution, and clear one-line errors that never leak a
//! password (stdout, stderr and the log file are all checked for a sentinel).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions, QueueBindOptions,
};
use lapin::types::FieldTable;

const SENTINEL: &str = "Sentinel-Pw-7f3a9";

fn run(args: &[&str]) -> (i32, String, String) {
    let out = common::bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn init_twice_is_idempotent_and_declares_the_convention() {
    let ns = common::unique_ns("init");
    let (code, out, err) = run(&[
        "init",
        &ns,
        "--versions",
        "v1,v2",
        "--queue-type",
        "classic",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created 7 object(s)"), "{out}");
    assert!(out.contains("gate: v1=100"), "{out}");
    let (code, out2, err) = run(&[
        "init",
        &ns,
        "--versions",
        "v1,v2",
        "--queue-type",
        "classic",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out2.contains("nothing to change"), "{out2}");

    let cfg = common::test_config();
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let entry = mgmt.exchange(&ns).await.unwrap().expect("entry exchange");
    assert_eq!(entry.kind, "x-consistent-hash");
    assert_eq!(
        entry
            .arguments
            .get("hash-property")
            .and_then(|v| v.as_str()),
        Some("message_id")
    );
    assert_eq!(
        entry
            .arguments
            .get("alternate-exchange")
            .and_then(|v| v.as_str()),
        Some(format!("{ns}.unrouted").as_str())
    );
    for v in ["v1", "v2"] {
        let q = mgmt
            .queue(&format!("{ns}.{v}"))
            .await
            .unwrap()
            .expect("version queue");
        assert_eq!(
            q.arguments
                .get("x-dead-letter-exchange")
                .and_then(|v| v.as_str()),
            Some(format!("{ns}.dlx").as_str())
        );
    }
    let bindings = mgmt.bindings_from(&ns).await.unwrap();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(
        (
            bindings[0].destination.as_str(),
            bindings[0].routing_key.as_str()
        ),
        (format!("{ns}.v1").as_str(), "100")
    );
    let dlx = mgmt.bindings_from(&format!("{ns}.dlx")).await.unwrap();
    assert!(dlx.iter().any(|b| b.destination == format!("{ns}.dlq")));

    // A conflicting object is a clear error, not a crash: v3 exists as quorum, re-init as classic.
    let (code, _, err) = run(&["init", &ns, "--versions", "v3", "--queue-type", "quorum"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["init", &ns, "--versions", "v3", "--queue-type", "classic"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists with different arguments"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let s = common::connect(&cfg, "test").await;
    hopback::broker::topology::delete_namespace(&s, &ns, &["v1".into(), "v2".into(), "v3".into()])
        .await
        .unwrap();
}

async fn publish(ch: &lapin::Channel, exchange: &str, rk: &str, n: usize, prefix: &str) {
    let mut confirms = Vec::new();
    for i in 0..n {
        let props = BasicProperties::default()
            .with_message_id(format!("{prefix}-{i}").into())
            .with_delivery_mode(2);
        confirms.push(
            ch.basic_publish(
                exchange.into(),
                rk.into(),
                BasicPublishOptions::default(),
                b"task",
                props,
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
}

async fn status_json(ns: &str) -> serde_json::Value {
    let (code, out, err) = run(&["--json", "status", ns]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn status_reports_exact_ready_counts_per_version() {
    let t = common::TestNs::new("status", &["v1", "v2"], QueueType::Classic).await;
    let ch = t.session.confirm_channel().await.unwrap();
    // Gate v1=100 (from init) plus v2=100 → a 50/50 split; producers hash message ids.
    ch.queue_bind(
        format!("{}.v2", t.ns).as_str().into(),
        t.ns.as_str().into(),
        "100".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let n = 1000;
    publish(&ch, &t.ns, "", n, "m").await;
    let snap = status_json(&t.ns).await;
    let ns = &snap["namespaces"][0];
    assert_eq!(ns["name"], t.ns.as_str());
    let ready: Vec<u64> = ns["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["ready"].as_u64().unwrap())
        .collect();
    assert_eq!(ready.iter().sum::<u64>(), n as u64, "{ready:?}");
    assert!(
        ready.iter().all(|r| *r > 200),
        "split should be roughly even: {ready:?}"
    );
    assert_eq!(ns["gate"], serde_json::json!({"v1": 100, "v2": 100}));
    assert_eq!(ns["unrouted_depth"], 0);
    t.cleanup().await;
}

#[tokio::test]
async fn rejected_messages_are_attributed_to_their_version() {
    let t = common::TestNs::new("dl", &["v1", "v2"], QueueType::Classic).await;
    let ch = t.session.confirm_channel().await.unwrap();
    let v2 = format!("{}.v2", t.ns);
    let m = 37;
    publish(&ch, "", &v2, m, "r").await;
    publish(&ch, "", &format!("{}.v1", t.ns), 5, "ok").await; // ready on v1, not dead
    let cons_ch = t.session.channel().await.unwrap();
    cons_ch
        .basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cons_ch
        .basic_consume(
            v2.as_str().into(),
            "rejecter".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..m {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            d.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap()
        );
    }
    cons_ch.close(200, "done".into()).await.unwrap();
    let dlq = format!("{}.dlq", t.ns);
    let start = Instant::now();
    while t
        .session
        .passive_queue(&dlq)
        .await
        .unwrap()
        .map(|c| c.ready)
        .unwrap_or(0)
        < m as u32
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "dead letters did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = status_json(&t.ns).await;
    let ns = &snap["namespaces"][0];
    assert_eq!(ns["dlq_depth"], m as u64);
    let v = |name: &str| {
        ns["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(v("v2")["dead_letters"], m as u64);
    assert_eq!(v("v1")["dead_letters"], 0);
    assert_eq!(v("v1")["ready"], 5);
    assert_eq!(ns["dead_letters_by_reason"]["rejected"], m as u64);
    // Attribution browsed the DLQ without consuming it.
    assert_eq!(
        t.session.passive_queue(&dlq).await.unwrap().unwrap().ready,
        m as u32
    );
    t.cleanup().await;
}

/// Run a failing command; assert one clear line on stderr, a non-zero exit, and no sentinel anywhere.
fn assert_clean_failure(
    args: &[&str],
    env: &[(&str, &str)],
    expect_in_err: &str,
    expect_code: i32,
) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hopback.log");
    let mut cmd = common::bin();
    cmd.args(args)
        .env("HOPBACK_LOG_FILE", &log)
        .env("HOPBACK_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(expect_code),
        "args {args:?}: stdout {stdout} stderr {stderr}"
    );
    assert!(
        stderr.contains(expect_in_err),
        "args {args:?}: expected `{expect_in_err}` in {stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.contains("hint:"), "a hint expected: {stderr}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    for (what, text) in [
        ("stdout", stdout.as_ref()),
        ("stderr", stderr.as_ref()),
        ("log", logged.as_str()),
    ] {
        assert!(
            !text.contains(SENTINEL),
            "password leaked in {what}: {text}"
        );
    }
}

#[test]
fn bad_inputs_fail_with_one_clear_line_and_no_password() {
    let pw_url = |host: &str, vhost: &str| format!("amqp://guest:{SENTINEL}@{host}/{vhost}");
    assert_clean_failure(
        &["--url", &pw_url("127.0.0.1:5672", "%2f"), "status"],
        &[],
        "refused the login",
        1,
    );
    assert_clean_failure(
        &["--url", &pw_url("127.0.0.1:1", "%2f"), "status"],
        &[],
        "cannot reach the broker",
        1,
    );
    assert_clean_failure(
        &[
            "--url",
            "amqp://guest:guest@127.0.0.1:5672/no-such-vhost-hb",
            "status",
        ],
        &[],
        "vhost `no-such-vhost-hb`",
        1,
    );
    assert_clean_failure(
        &[
            "--url",
            &format!("amqp://guest:{SENTINEL}@[::1/x"),
            "status",
        ],
        &[],
        "malformed AMQP URL",
        2,
    );
    assert_clean_failure(
        &[
            "--url",
            &format!("http://guest:{SENTINEL}@127.0.0.1/"),
            "status",
        ],
        &[],
        "scheme must be amqp",
        2,
    );
    assert_clean_failure(
        &["status"],
        &[("HOPBACK_URL", &pw_url("127.0.0.1:5672", "%2f"))],
        "refused the login",
        1,
    );
    // Mistyped URLs hold real passwords too (a `//` or a `:` missing, a wrong scheme).
    assert_clean_failure(
        &["status"],
        &[("HOPBACK_URL", &format!("amqp//guest:{SENTINEL}@127.0.0.1"))],
        "malformed AMQP URL",
        2,
    );
    assert_clean_failure(
        &[
            "--mgmt-url",
            &format!("htp:/admin:{SENTINEL}@127.0.0.1:15672"),
            "status",
        ],
        &[],
        "scheme must be http or https",
        2,
    );
    assert_clean_failure(
        &["status"],
        &[("HOPBACK_MGMT_URL", &format!("http//admin:{SENTINEL}@x"))],
        "malformed management URL",
        2,
    );
}

#[test]
fn config_fixtures_valid_and_invalid() {
    let fixture = |name: &str| {
        format!(
            "{}/tests/fixtures/config/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    // Valid: the default profile reaches the local broker.
    let (code, out, err) = run(&["--config", &fixture("valid.toml"), "--json", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    // The production profile is read-only: init is refused before any connection (exit 3).
    assert_clean_failure(
        &[
            "--config",
            &fixture("valid.toml"),
            "--profile",
            "prod",
            "init",
            "x",
        ],
        &[("HOPBACK_FIXTURE_PW", SENTINEL)],
        "read-only",
        3,
    );
    assert_clean_failure(
        &["--config", &fixture("unknown_key.toml"), "status"],
        &[],
        "line 5 (key `colour`): unknown field `colour`",
        2,
    );
    assert_clean_failure(
        &["--config", &fixture("bad_toml.toml"), "status"],
        &[],
        "bad_toml.toml line 2",
        2,
    );
    assert_clean_failure(
        &[
            "--config",
            &fixture("wrong_type.toml"),
            "--profile",
            "local",
            "status",
        ],
        &[],
        "key `read_only`",
        2,
    );
    assert_clean_failure(
        &["--config", &fixture("bad_regex.toml"), "status"],
        &[],
        "version_queue_regex is invalid",
        2,
    );
    assert_clean_failure(
        &["--config", &fixture("unknown_profile.toml"), "status"],
        &[],
        "unknown profile `staging`",
        2,
    );
    assert_clean_failure(
        &["--config", &fixture("missing.toml"), "status"],
        &[],
        "cannot read config file",
        1,
    );
}

#[test]
fn check_passes_on_the_local_broker_and_fails_clearly_without_it() {
    let (code, out, err) = run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok    amqp") && out.contains("x-consistent-hash"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "--url",
        &format!("amqp://guest:{SENTINEL}@127.0.0.1:1/%2f"),
        "--mgmt-url",
        "http://127.0.0.1:1/",
        "check",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  amqp") && out.contains("hint:"), "{out}");
    assert!(!out.contains(SENTINEL));
}

#[tokio::test]
async fn adopted_namespace_is_discovered_from_the_config() {
    let p = common::unique_ns("adopt");
    let cfg = common::test_config();
    let s = common::connect(&cfg, "test").await;
    let ch = s.channel().await.unwrap();
    for q in [format!("{p}-v1"), format!("{p}-v2"), format!("{p}-dead")] {
        ch.queue_declare(
            q.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let pc = s.confirm_channel().await.unwrap();
    publish(&pc, "", &format!("{p}-v2"), 7, "a").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "default_profile = \"l\"\n[profiles.l]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n[profiles.l.namespaces.{p}]\nentry_exchange = \"{p}-in\"\nversion_queue_regex = '^{p}-(?P<version>v\\d+)$'\ndlq = \"{p}-dead\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["--config", file.to_str().unwrap(), "--json", "status", &p]);
    assert_eq!(code, 0, "{err}");
    let snap: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ns = &snap["namespaces"][0];
    assert_eq!(ns["convention"], false);
    assert_eq!(ns["dlq"], format!("{p}-dead").as_str());
    let versions: Vec<(String, u64)> = ns["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                v["ready"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, vec![("v1".to_string(), 0), ("v2".to_string(), 7)]);
    for q in [format!("{p}-v1"), format!("{p}-v2"), format!("{p}-dead")] {
        ch.queue_delete(q.as_str().into(), Default::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn status_degrades_cleanly_without_the_management_api() {
    let t = common::TestNs::new("nomgmt", &["v1", "v2"], QueueType::Classic).await;
    let ch = t.session.confirm_channel().await.unwrap();
    publish(&ch, &t.ns, "", 25, "n").await;
    let (code, out, err) = run(&[
        "--mgmt-url",
        "http://127.0.0.1:1/",
        "--json",
        "status",
        &t.ns,
    ]);
    assert_eq!(code, 0, "{err}");
    let snap: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(snap["mgmt_available"], false);
    assert!(snap["mgmt_error"].as_str().unwrap().contains("unreachable"));
    let ns = &snap["namespaces"][0];
    assert_eq!(
        ns["gate"],
        serde_json::Value::Null,
        "gate unknown, not empty"
    );
    let v1 = &ns["versions"][0];
    assert_eq!(v1["ready"], 25, "exact depth from passive declare");
    assert_eq!(
        v1["rates"],
        serde_json::Value::Null,
        "rates unknown, not zero"
    );
    let (code, human, _) = run(&["--mgmt-url", "http://127.0.0.1:1/", "status", &t.ns]);
    assert_eq!(code, 0);
    assert!(human.contains("management API unavailable"), "{human}");
    t.cleanup().await;
}

#[test]
fn completions_are_generated() {
    let (code, out, _) = run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("_hopback()") && out.contains("status"),
        "{}",
        &out[..out.len().min(300)]
    );
    let (code, _, err) = run(&["completions", "nosuchshell"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn console_refresh_reuses_bindings_until_invalidated() {
    use hopback::broker::stats::{TopologyCache, fetch_mgmt_cached};
    let t = common::TestNs::new("topo", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let cache = tokio::sync::Mutex::new(TopologyCache::default());
    let gate_bindings = |d: &hopback::broker::stats::MgmtData| {
        d.bindings.iter().filter(|b| b.source == t.ns).count()
    };
    let first = fetch_mgmt_cached(&mgmt, &cache, &t.cfg.profile, None)
        .await
        .unwrap();
    assert_eq!(gate_bindings(&first), 1);
    let ch = t.session.channel().await.unwrap();
    ch.queue_bind(
        format!("{}.v2", t.ns).as_str().into(),
        t.ns.as_str().into(),
        "50".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let calls = mgmt.calls();
    let cached = fetch_mgmt_cached(&mgmt, &cache, &t.cfg.profile, None)
        .await
        .unwrap();
    assert_eq!(mgmt.calls() - calls, 1, "one management call per refresh");
    assert_eq!(
        gate_bindings(&cached),
        1,
        "within 5 s the binding list is reused (one management call)"
    );
    assert!(
        cached
            .queues
            .iter()
            .any(|q| q.name == format!("{}.v2", t.ns)),
        "the queue list is fetched first"
    );
    cache.lock().await.invalidate();
    let calls = mgmt.calls();
    let fresh = fetch_mgmt_cached(&mgmt, &cache, &t.cfg.profile, None)
        .await
        .unwrap();
    assert_eq!(
        mgmt.calls() - calls,
        1,
        "an invalidated cache fetches the bindings, only"
    );
    assert_eq!(
        gate_bindings(&fresh),
        2,
        "after invalidation the new binding shows"
    );
    t.cleanup().await;
}

/// Issue 17: without the management API the namespace list is unknown, not empty — `status`
/// says so and exits non-zero; `status NS` still answers over AMQP.
#[tokio::test]
async fn status_without_the_management_api_says_unknown() {
    let t = common::TestNs::new("nomgmt", &["v1", "v2"], QueueType::Classic).await;
    let url = common::test_url();
    let (code, out, err) = run(&["--url", &url, "--mgmt-url", "http://127.0.0.1:1", "status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("cannot list namespaces"), "{err}");
    assert!(!out.contains("no namespaces found"), "{out}");
    let (code, out, err) = run(&[
        "--url",
        &url,
        "--mgmt-url",
        "http://127.0.0.1:1",
        "status",
        &t.ns,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&t.ns), "{out}");
    t.cleanup().await;
}

#[tokio::test]
async fn gate_ns_and_dlq_ns_are_show_and_list() {
    let t = common::TestNs::new("short", &["v1", "v2"], QueueType::Classic).await;
    for (short, long) in [
        (
            vec!["--json", "gate", &t.ns],
            vec!["--json", "gate", "show", &t.ns],
        ),
        (
            vec!["--json", "dlq", &t.ns],
            vec!["--json", "dlq", "list", &t.ns],
        ),
    ] {
        let (code, out, err) = run(&short);
        assert_eq!(code, 0, "{short:?}: {out}{err}");
        let (code_long, out_long, _) = run(&long);
        assert_eq!(code_long, 0);
        // The same document, but for the parts that move with time (ages, the ledger tail).
        let a: serde_json::Value = serde_json::from_str(&out).unwrap();
        let b: serde_json::Value = serde_json::from_str(&out_long).unwrap();
        let keys = |v: &serde_json::Value| {
            v.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert!(!keys(&a).is_empty(), "{out}");
        assert_eq!(keys(&a), keys(&b), "{short:?} ~ {long:?}");
        let ns_of = |v: &serde_json::Value| {
            v.get("namespace")
                .or_else(|| v.get("gate").and_then(|g| g.get("namespace")))
                .cloned()
        };
        assert_eq!(ns_of(&a), Some(serde_json::json!(t.ns)), "{out}");
        assert_eq!(ns_of(&a), ns_of(&b));
    }
    // No namespace: the verb alone shows its help (both forms); with an option, a one-line
    // usage error naming both forms. Exit 2 either way, before any connection.
    for verb in ["gate", "dlq"] {
        let (code, _, err) = run(&[verb]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("hopback {verb} [OPTIONS] [NAMESPACE]")),
            "{err}"
        );
        let (code, out, err) = run(&[verb, "--json"]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains(&format!("hint: hopback {verb} NAMESPACE")),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    t.cleanup().await;
}

#[test]
fn a_mistyped_namespace_is_said_to_not_exist_not_of_unknown_type() {
    let ns = common::unique_ns("nosuch");
    for args in [
        vec!["dlq", ns.as_str()],
        vec!["dlq", "show", ns.as_str(), "0"],
        vec!["dlq", "purge", ns.as_str(), "--yes"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("DLQ `{ns}.dlq` does not exist")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("hint: `hopback status` lists the namespaces"),
            "{err}"
        );
        assert!(!err.contains("type is unknown"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // `history` of it: nothing recorded and no gate on the broker — an error (exit 1) that
    // says why, not blamed on the API (issue 34: it exited 0).
    let (code, out, err) = run(&["history", &ns]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("namespace `{ns}` has no entry exchange")),
        "{err}"
    );
    assert!(
        err.contains("`hopback status` lists the namespaces"),
        "{err}"
    );
}

#[tokio::test]
async fn a_replay_to_a_missing_queue_fails_its_dry_run() {
    let t = common::TestNs::new("noq", &["v1", "v2"], QueueType::Classic).await;
    for (to, missing) in [
        ("v9", format!("{}.v9", t.ns)),
        ("nosuch-q-7c1", "nosuch-q-7c1".into()),
    ] {
        let (code, out, err) = run(&["dlq", "replay", &t.ns, "--to", to, "--dry-run"]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(&format!(
                "target queue `{missing}` does not exist; nothing was changed"
            )),
            "{err}"
        );
        assert!(!out.contains("The plan"), "{out}");
    }
    // Nothing parked yet: said as such, not as a missing namespace.
    let (code, out, err) = run(&["dlq", "replay", &t.ns, "--from", "parked", "--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("nothing has been parked in `{}` yet", t.ns)),
        "{err}"
    );
    let (code, out, err) = run(&["dlq", "replay", &t.ns, "--to", "v2", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run"), "{out}");
    t.cleanup().await;
}
