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
    assert_eq!(l.read(StreamStart::First).await.unwrap().len(), 2);
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
