//! Many addresses, one profile (issue 19): a profile naming several nodes connects to any live
//! one and says which; the management client moves past a node that does not answer. Run against
//! the one test broker with a dead address in front of it (the cluster tests in
//! `tests/cluster.rs` stop real nodes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use hopback::broker::mgmt::Mgmt;
use hopback::broker::session;
use hopback::config::{self, Overrides};

/// A port nothing listens on (connection refused at once).
const DEAD_AMQP: &str = "amqp://127.0.0.1:1";
const DEAD_MGMT: &str = "http://127.0.0.1:1/";

fn cluster_config() -> config::Config {
    let live = common::test_url();
    let mgmt =
        std::env::var("HOPBACK_TEST_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672/".into());
    let over = Overrides {
        // The live node's URL carries the credentials: it must come first.
        url: Some(format!("{live},{DEAD_AMQP}")),
        mgmt_url: Some(format!("{DEAD_MGMT},{mgmt}")),
        ..Default::default()
    };
    config::resolve(
        config::raw::RawConfig::default(),
        std::path::Path::new("/nonexistent/hopback-test.toml"),
        false,
        &over,
    )
    .unwrap()
}

#[tokio::test]
async fn any_live_node_will_do_and_the_session_says_which() {
    let cfg = cluster_config();
    assert_eq!(cfg.profile.nodes(), 2);
    // Start from the dead node: the connection moves on to the live one.
    let dead_first = cfg.profile.node(1);
    assert_eq!(dead_first.host_port(), "127.0.0.1:1");
    let s = session::connect(&dead_first, "failover test", "test")
        .await
        .unwrap();
    assert_ne!(s.node(), "127.0.0.1:1");
    assert!(s.is_connected());
    s.close().await;
    // The management client skips the API that refuses connections, and stays on the live one.
    let m = Mgmt::new(&cfg.profile).unwrap();
    assert!(m.base_url().contains(":1/"), "{}", m.base_url());
    let o = m.overview().await.unwrap();
    assert!(!o.rabbitmq_version.is_empty());
    assert!(!m.base_url().contains(":1/"), "{}", m.base_url());
    let calls = m.calls();
    m.overview().await.unwrap();
    assert_eq!(
        m.calls(),
        calls + 1,
        "the live API is used directly afterwards"
    );
}

#[tokio::test]
async fn no_live_node_is_one_clear_error_naming_every_node() {
    let over = Overrides {
        url: Some("amqp://127.0.0.1:1,amqp://127.0.0.1:2".into()),
        ..Default::default()
    };
    let cfg = config::resolve(
        config::raw::RawConfig::default(),
        std::path::Path::new("/nonexistent/hopback-test.toml"),
        false,
        &over,
    )
    .unwrap();
    let e = session::connect(&cfg.profile, "failover test", "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("127.0.0.1:1") && e.contains("127.0.0.1:2"),
        "{e}"
    );
    assert!(e.contains("any of the 2 nodes"), "{e}");
}

#[test]
fn the_cli_takes_several_urls_and_works_through_the_live_one() {
    let live = common::test_url();
    let mgmt =
        std::env::var("HOPBACK_TEST_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672/".into());
    let out = common::bin()
        .args([
            "--url",
            &live,
            "--url",
            DEAD_AMQP,
            "--mgmt-url",
            DEAD_MGMT,
            "--mgmt-url",
            &mgmt,
            "check",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    let api = text
        .lines()
        .find(|l| l.contains("management api"))
        .unwrap_or_default();
    assert!(api.starts_with("ok"), "{text}");
    assert!(
        !api.contains(":1/"),
        "the dead API is not the one reported: {api}"
    );
    assert!(!text.contains("guest:guest"), "credentials leaked: {text}");
}
