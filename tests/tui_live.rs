//! The console's headless app state against the real broker: the same background tasks and the
//! same `AppState::handle_msg` the TUI runs, without a terminal.
//!
//! - workers rejecting on v2 → the state shows v2's error rate > 0 and the alert within 1 s of the
//!   first nack, and the dead letter itself within 250 ms;
//! - the console's refresh connection is killed (management API) → the state goes stale with
//!   "reconnecting" and recovers on its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use hopback::app::state::{AppState, Msg};
use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::mpsc;

/// Apply messages until `done(state)` or the timeout; returns when it became true.
async fn until(
    state: &mut AppState,
    rx: &mut mpsc::Receiver<Msg>,
    limit: Duration,
    done: impl Fn(&AppState) -> bool,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done(state) {
            return Some(Instant::now());
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => { state.handle_msg(m); }
                None => return None,
            },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_rejections_show_as_error_rate_and_alert_within_a_second() {
    let t = common::TestNs::new("tuilive", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let mut cfg = t.cfg.clone();
    cfg.refresh_interval_ms = 500;
    cfg.alerts.error_rate_window_s = 0;
    cfg.alerts.error_rate_pct = 5.0;
    cfg.operator = format!("test-{ns}");
    let mut state = hopback::app::initial_state(&cfg).unwrap();
    let (tx, mut rx) = mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(&cfg, tx);
    // Measure from a monitored fleet: the tap bound and the management API's first sample of
    // v2's queue taken (before it, v2's ack rate — hence its error rate — is honestly unknown;
    // a just-declared queue gets its first sample within the broker's 5 s stats interval).
    let ready = until(&mut state, &mut rx, Duration::from_secs(20), |s| {
        s.tap.bound.contains(&ns)
            && s.namespace(&ns)
                .and_then(|n| n.version("v2"))
                .is_some_and(|v| v.rates.is_some())
    })
    .await;
    assert!(
        ready.is_some(),
        "tap never bound {ns}.dlx or v2 never sampled: {:?}",
        state.tap
    );

    // A v2 worker that rejects everything (nack, requeue=false → NS.dlx).
    let worker = hopback::broker::session::connect_named(&cfg.profile, &format!("{ns} worker v2"))
        .await
        .unwrap();
    let ch = worker.channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            format!("{ns}.v2").as_str().into(),
            "rejecter".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (nack_tx, mut nack_rx) = mpsc::unbounded_channel::<Instant>();
    let rejecter = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let ok = d
                .acker
                .nack(BasicNackOptions {
                    requeue: false,
                    multiple: false,
                })
                .await
                .unwrap();
            assert!(ok);
            let _ = nack_tx.send(Instant::now());
        }
    });
    let producer = common::connect(&cfg, "test producer").await;
    let pch = producer.confirm_channel().await.unwrap();
    for i in 0..20 {
        pch.basic_publish(
            "".into(),
            format!("{ns}.v2").as_str().into(),
            BasicPublishOptions::default(),
            format!("job {i}").as_bytes(),
            BasicProperties::default().with_message_id(format!("id-{i}").as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let first_nack = tokio::time::timeout(Duration::from_secs(5), nack_rx.recv())
        .await
        .expect("the worker got no message")
        .unwrap();
    let ns2 = ns.clone();
    let seen = until(&mut state, &mut rx, Duration::from_secs(5), move |s| {
        s.tap
            .recent
            .iter()
            .any(|d| d.ns == ns2 && d.version.as_deref() == Some("v2") && d.reason == "rejected")
    })
    .await
    .expect("the dead letter never reached the app state");
    let ns3 = ns.clone();
    let alerted = until(&mut state, &mut rx, Duration::from_secs(5), move |s| {
        let err = s
            .namespace(&ns3)
            .and_then(|n| n.version("v2"))
            .and_then(|v| v.error_rate);
        err.is_some_and(|e| e > 0.0)
            && s.alerts.active.iter().any(|a| {
                a.ns == ns3 && a.version.as_deref() == Some("v2") && a.kind.tag() == "error"
            })
    })
    .await
    .expect("no v2 error rate / alert in the app state");
    let dl_ms = seen.saturating_duration_since(first_nack).as_millis();
    let alert_ms = alerted.saturating_duration_since(first_nack).as_millis();
    eprintln!("dead letter in state after {dl_ms} ms; error rate + alert after {alert_ms} ms");
    assert!(dl_ms < 250, "dead letter took {dl_ms} ms");
    assert!(alert_ms < 1000, "alert took {alert_ms} ms");
    let v2 = state.namespace(&ns).unwrap().version("v2").unwrap().clone();
    assert!(v2.dead_letter_rate.unwrap() > 0.0, "{v2:?}");
    assert!(state.bell_pending, "a new alert rings the bell once");

    rejecter.abort();
    tasks.abort();
    worker.close().await;
    producer.close().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_goes_stale_and_recovers() {
    let t = common::TestNs::new("tuistale", &["v1"], QueueType::Classic).await;
    let mut cfg = t.cfg.clone();
    cfg.refresh_interval_ms = 300;
    cfg.operator = format!("test-{}", t.ns);
    let mut state = hopback::app::initial_state(&cfg).unwrap();
    let (tx, mut rx) = mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(&cfg, tx);
    let ns = t.ns.clone();
    until(&mut state, &mut rx, Duration::from_secs(20), |s| {
        s.namespace(&ns).is_some()
    })
    .await
    .expect("no first snapshot");
    // Close the console's refresh connection from the broker side, as a network drop would.
    let mgmt = hopback::broker::mgmt::Mgmt::new(&cfg.profile).unwrap();
    let want = format!("hopback console ({})", cfg.operator);
    let mut closed = false;
    for _ in 0..40 {
        let conns = mgmt.connections().await.unwrap();
        if let Some(c) = conns
            .iter()
            .find(|c| c.user_provided_name.as_deref() == Some(want.as_str()))
        {
            mgmt.close_connection(&c.name, "test: simulated drop")
                .await
                .unwrap();
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(closed, "console connection `{want}` not found");
    let went_stale = until(&mut state, &mut rx, Duration::from_secs(10), |s| {
        s.is_stale() || !s.conn.is_live()
    })
    .await;
    assert!(
        went_stale.is_some(),
        "never noticed the drop: {:?}",
        state.conn
    );
    let label_seen = state.conn_label();
    let ns = t.ns.clone();
    let recovered = until(&mut state, &mut rx, Duration::from_secs(20), |s| {
        s.conn.is_live() && !s.is_stale() && s.namespace(&ns).is_some()
    })
    .await;
    assert!(
        recovered.is_some(),
        "did not recover: {}",
        state.conn_label()
    );
    eprintln!("while down the header said: {label_seen}");
    tasks.abort();
    t.cleanup().await;
}

/// Management API gone: a namespace the console knew stays on screen, its depths read over AMQP
/// and its gate unknown (`None`), never dropped and never a split of zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_namespaces_survive_the_management_api_going_away() {
    use hopback::broker::stats::{CollectOptions, collect};
    let t = common::TestNs::new("nomgmt", &["v1", "v2"], QueueType::Classic).await;
    let ch = t.session.channel().await.unwrap();
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..7 {
        ch.basic_publish(
            "".into(),
            format!("{}.v1", t.ns).as_str().into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let opts = CollectOptions {
        namespace: None,
        known: [t.ns.clone()].into(),
        ..Default::default()
    };
    // `None` = no management API (what the refresh task has when the API is unreachable).
    let snap = collect(&t.session, None, &t.cfg, &opts).await.unwrap();
    assert!(!snap.mgmt_available);
    let ns = snap
        .namespaces
        .iter()
        .find(|n| n.name == t.ns)
        .expect("the known namespace is still listed");
    assert!(ns.gate.is_none(), "gate must read unknown: {:?}", ns.gate);
    let v1 = ns.version("v1").expect("v1 probed over AMQP");
    assert_eq!(v1.ready, Some(7));
    assert_eq!(v1.consumers, Some(0));
    assert!(v1.rates.is_none());
    // Without `known`, the same call cannot list it: the console passes its last good list.
    let bare = collect(&t.session, None, &t.cfg, &CollectOptions::default())
        .await
        .unwrap();
    assert!(bare.namespaces.iter().all(|n| n.name != t.ns));
    t.cleanup().await;
}
