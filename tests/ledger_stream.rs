//! Ledger on a real stream: append with confirms, catch-up reads that stop at the end, reads from
//! a timestamp, live following, and the JSONL fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use hopback::ledger::{self, EventKind, Ledger, Outcome, StreamStart};

fn stream_name() -> String {
    format!("hopback.ledger.{}", common::unique_ns("ls"))
}

#[tokio::test]
async fn append_then_read_back_everything_in_order() {
    let cfg = common::test_config();
    let session = common::connect(&cfg, "ledger-test").await;
    let name = stream_name();
    let l = Ledger::open_stream(&session, &cfg, &name).await;
    assert!(l.is_stream(), "{}", l.backend_description());
    // Empty stream: the read ends, with nothing.
    assert!(l.read(StreamStart::First).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..1500 {
        let e = l
            .event(EventKind::Note, Some("ns-a"))
            .reason(format!("note {i}"));
        ids.push(l.append(e).await.unwrap().id);
    }
    let t0 = std::time::Instant::now();
    let got = l.read(StreamStart::First).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(got[0].operator, cfg.operator);
    assert_eq!(got[0].profile, cfg.profile.name);
    assert_eq!(got[0].outcome, Outcome::Ok);
    // The read ends on its own (size hint, else a short idle gap), without a caller timeout.
    assert!(took < Duration::from_millis(1500), "read took {took:?}");
    // The stream reports a size hint (it lags fresh appends: a lower bound, never a stop signal alone).
    let sub = l.subscribe(StreamStart::First).await.unwrap();
    assert!(sub.end_hint().is_some());
    sub.close().await;
    // A second open re-declares idempotently and sees the same events.
    let l2 = Ledger::open_stream(&session, &cfg, &name).await;
    assert!(l2.is_stream());
    assert_eq!(l2.read(StreamStart::First).await.unwrap().len(), 1500);
    ledger::delete_stream(&session, &name).await.unwrap();
    session.close().await;
}

#[tokio::test]
async fn read_from_timestamp_and_follow_live() {
    let cfg = common::test_config();
    let session = common::connect(&cfg, "ledger-test").await;
    let name = stream_name();
    let l = Ledger::open_stream(&session, &cfg, &name).await;
    let mut old = l.event(EventKind::Note, None).reason("old");
    old.ts -= chrono::Duration::hours(3);
    l.append(old).await.unwrap();
    let recent = l
        .append(l.event(EventKind::Note, None).reason("recent"))
        .await
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let got = l.read(StreamStart::Timestamp(since)).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![recent.id]
    );

    let mut sub = l.subscribe(StreamStart::Next).await.unwrap();
    // Nothing old comes through `next`.
    assert!(
        sub.next_within(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none()
    );
    let mut sent = BTreeSet::new();
    for i in 0..20 {
        sent.insert(
            l.append(l.event(EventKind::Note, None).reason(format!("live {i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 20 {
        let e = sub
            .next_within(Duration::from_secs(2))
            .await
            .unwrap()
            .expect("live event");
        seen.insert(e.id);
    }
    assert_eq!(seen, sent);
    sub.close().await;
    ledger::delete_stream(&session, &name).await.unwrap();
    session.close().await;
}

#[tokio::test]
async fn file_fallback_appends_reads_and_follows() {
    let cfg = common::test_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("ledger.jsonl");
    let l = Ledger::file(&path, "test", &cfg);
    assert!(!l.is_stream());
    assert!(l.backend_description().contains("LOCAL FILE"));
    let a = l
        .append(l.event(EventKind::Note, Some("x")).reason("one"))
        .await
        .unwrap();
    let mut sub = l.subscribe(StreamStart::Next).await.unwrap();
    let b = l
        .append(l.event(EventKind::Note, Some("x")).reason("two"))
        .await
        .unwrap();
    let got = sub
        .next_within(Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, b.id);
    let all = l.read(StreamStart::First).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a.id, b.id]
    );
    // A garbage line is skipped, not fatal.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map(|mut f| {
            use std::io::Write;
            f.write_all(b"{not json\n").unwrap();
        })
        .unwrap();
    let _ = l.take_skipped();
    assert_eq!(l.read(StreamStart::First).await.unwrap().len(), 2);
    // … and named, for the reader's warning.
    let skipped = l.take_skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].describe().contains("is not a hopback event"),
        "{}",
        skipped[0].describe()
    );
}

#[tokio::test]
async fn a_queue_that_is_not_a_stream_falls_back_to_the_file_and_says_why() {
    let cfg = common::test_config();
    let session = common::connect(&cfg, "ledger-test").await;
    let name = stream_name();
    // Squat the name with a classic queue: the stream cannot be declared.
    let ch = session.channel().await.unwrap();
    ch.queue_declare(
        name.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // SAFETY of the env change: this test binary sets HOPBACK_DATA_DIR nowhere else.
    unsafe { std::env::set_var("HOPBACK_DATA_DIR", dir.path()) };
    let l = Ledger::open_stream(&session, &cfg, &name).await;
    assert!(!l.is_stream(), "{}", l.backend_description());
    let d = l.backend_description();
    assert!(d.contains("LOCAL FILE") && d.contains("unusable"), "{d}");
    l.append(l.event(EventKind::Note, None).reason("kept locally"))
        .await
        .unwrap();
    assert!(dir.path().join(ledger::FALLBACK_FILE).exists());
    ledger::delete_stream(&session, &name).await.unwrap();
    session.close().await;
}

#[tokio::test]
async fn the_local_cache_is_used_extended_and_dropped_when_the_stream_changes() {
    let cfg = common::test_config();
    let session = common::connect(&cfg, "ledger-test").await;
    let name = stream_name();
    let l = Ledger::open_stream(&session, &cfg, &name).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            l.append(l.event(EventKind::Note, None).reason(format!("c{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let cold = l.read(StreamStart::First).await.unwrap();
    assert_eq!(cold.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    for i in 0..5 {
        ids.push(
            l.append(l.event(EventKind::Note, None).reason(format!("d{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    // Warm: cache + the stream's tail, each event exactly once and in order.
    let warm = l.read(StreamStart::First).await.unwrap();
    assert_eq!(warm.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let again = l.read(StreamStart::First).await.unwrap();
    assert_eq!(again.len(), 305);
    // The stream is deleted behind our back (the cache file stays) and re-created under the same
    // name: validation at the cache's last offset must reject the cache.
    let ch = session.channel().await.unwrap();
    ch.queue_delete(name.as_str().into(), Default::default())
        .await
        .unwrap();
    let l = Ledger::open_stream(&session, &cfg, &name).await;
    let fresh = l
        .append(l.event(EventKind::Note, None).reason("new stream"))
        .await
        .unwrap();
    for _ in 0..2 {
        let got = l.read(StreamStart::First).await.unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![fresh.id]);
    }
    ledger::delete_stream(&session, &name).await.unwrap();
    session.close().await;
}

/// Issue 18: ledger events carry the AMQP `user_id` (the broker checks it against the connection)
/// and read back with their authenticated author; a record published by anyone else without it
/// — or with a body claiming an author — reads as UNVERIFIED and drives nothing (no revert to
/// its gate state, no resume of its rollback); a `user_id` that is not the connection's user is
/// refused by the broker.
#[tokio::test]
async fn events_carry_a_verified_author_and_forgeries_drive_nothing() {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    let cfg = common::test_config();
    let session = common::connect(&cfg, "ledger-test").await;
    let name = stream_name();
    let l = Ledger::open_stream(&session, &cfg, &name).await;
    assert!(l.is_stream());
    let ns = common::unique_ns("forge");
    let genuine = l
        .append(
            l.event(EventKind::GateSet, Some(&ns))
                .before(serde_json::json!({"gate": {"v1": 100}}))
                .after(serde_json::json!({"gate": {"v1": 90, "v2": 10}})),
        )
        .await
        .unwrap();
    assert_eq!(genuine.author.as_deref(), Some("guest"));
    // A forger with write access to the stream: a gate_set to "v2 only" and a rollback start,
    // published raw (no user_id), the body even claiming an author.
    let ch = session.confirm_channel().await.unwrap();
    let forged_gate = serde_json::json!({
        "id": uuid::Uuid::new_v4(), "ts": chrono::Utc::now(), "operator": "admin@prod",
        "namespace": ns, "kind": "gate_set", "author": "admin",
        "after": {"gate": {"v2": 100}}, "outcome": "ok"
    });
    let rb_id = "f0f0f0f0";
    let forged_rollback = serde_json::json!({
        "id": uuid::Uuid::new_v4(), "ts": chrono::Utc::now(), "operator": "admin@prod",
        "namespace": ns, "kind": "rollback_started", "outcome": "started",
        "params": {"rollback_id": rb_id, "plan": hopback::ops::plan::default_plan("v1", "v2", Duration::from_secs(1))}
    });
    for doc in [&forged_gate, &forged_rollback] {
        ch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(doc).unwrap(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Claiming another broker user in user_id: the broker refuses the publish.
    let ch2 = session.confirm_channel().await.unwrap();
    let spoof = ch2
        .basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default().with_user_id("admin".into()),
        )
        .await;
    let refused = match spoof {
        Err(_) => true,
        Ok(c) => !matches!(c.await, Ok(lapin::Confirmation::Ack(_))),
    };
    assert!(
        refused,
        "the broker accepted a user_id that is not the connection's user"
    );

    let events = l.read(StreamStart::First).await.unwrap();
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e.id.to_string() == id)
            .unwrap_or_else(|| panic!("{id} not read back"))
            .clone()
    };
    assert_eq!(
        by_id(&genuine.id.to_string()).author.as_deref(),
        Some("guest")
    );
    let fg = by_id(forged_gate["id"].as_str().unwrap());
    assert!(!fg.is_verified(), "{fg:?}");
    assert_eq!(fg.author_label(), "UNVERIFIED");
    // The gate history lists the forged state but will not revert to it.
    let mut h = hopback::ledger::projection::GateHistory::new(&ns, 0);
    for e in &events {
        h.push(e);
    }
    assert_eq!(h.states().len(), 2);
    assert!(h.find_verified(&genuine.id.to_string()).is_ok());
    let err = h
        .find_verified(forged_gate["id"].as_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unverified"), "{err}");
    // The forged rollback cannot be resumed.
    let rb: Vec<_> = events
        .iter()
        .filter(|e| hopback::ops::rollback::rollback_id_of(e).as_deref() == Some(rb_id))
        .cloned()
        .collect();
    assert_eq!(rb.len(), 1);
    let err = hopback::ops::rollback::progress_from_events(&rb)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no verified rollback_started"), "{err}");
    // A second read (from the local cache) keeps the authors.
    let again = l.read(StreamStart::First).await.unwrap();
    assert_eq!(
        again.iter().map(|e| e.is_verified()).collect::<Vec<_>>(),
        events.iter().map(|e| e.is_verified()).collect::<Vec<_>>()
    );
    ledger::delete_stream(&session, &name).await.unwrap();
    session.close().await;
}
