//! A 128 MiB dead letter, against the real broker. RabbitMQ 3.10's default `max_message_size` is
//! 134,217,728 bytes (128 MiB; 4.x's is 16 MiB, and `scripts/broker --version 4.0` sets 128 MiB); the test publishes the largest body the broker accepts (trying
//! exactly that first) into a namespace's DLQ the way real dead letters arrive (published to
//! `NS.v2` with `expiration = "0"`, so the broker adds `x-death`), then runs the real binary:
//! `dlq list` and `dlq show` stay bounded (the inspector never renders 128 MiB), and `dlq replay`
//! moves it back to `NS.v2` where it arrives intact (same hash) exactly once. The hopback
//! process's peak RSS during each is recorded for the reliability report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::hash::{Hash, Hasher};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestNs;
use common::record;
use dlq_helpers::*;
use futures::StreamExt;
use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;

/// RabbitMQ's default `max_message_size`.
const MAX_MESSAGE_SIZE: usize = 134_217_728;

fn body_of(len: usize) -> Vec<u8> {
    // Not all one byte: a corrupted or truncated copy must hash differently.
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Publish `body` to `queue` with `expiration = "0"` (dead-letters at once). `Ok(false)` when
/// the broker refuses the size.
async fn publish_dead(t: &TestNs, queue: &str, id: &str, body: &[u8]) -> bool {
    let ch = t.session.confirm_channel().await.unwrap();
    let r = async {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            BasicProperties::default()
                .with_message_id(id.into())
                .with_delivery_mode(2)
                .with_expiration("0".into()),
        )
        .await?
        .await
    };
    match tokio::time::timeout(Duration::from_secs(120), r).await {
        Ok(Ok(lapin::Confirmation::Ack(None))) => true,
        Ok(other) => {
            eprintln!("{} bytes refused: {other:?}", body.len());
            false
        }
        Err(_) => panic!("publishing {} bytes timed out", body.len()),
    }
}

/// Run the binary to completion, sampling its RSS; returns (exit code, stdout, stderr, peak RSS
/// in MiB).
fn run_measured(args: &[&str], env: &[(&str, String)]) -> (Option<i32>, String, String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    let mut c = common::bin();
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        // VmHWM is the kernel's own peak, so short spikes between samples count too.
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            for l in s.lines() {
                if let Some(v) = l.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak_kib = peak_kib.max(kib);
                }
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} still running after 180 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code(),
        std::fs::read_to_string(&o).unwrap(),
        std::fs::read_to_string(&e).unwrap(),
        peak_kib as f64 / 1024.0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_128_mib_dead_letter_is_browsed_bounded_and_replayed_intact_exactly_once() {
    let t = TestNs::new("big", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let (v2, dlq) = (format!("{ns}.v2"), format!("{ns}.dlq"));
    // The largest body the broker takes: exactly max_message_size, else a little less.
    let mut size = MAX_MESSAGE_SIZE;
    let mut body = body_of(size);
    while !publish_dead(&t, &v2, "big-1", &body).await {
        assert!(
            size > MAX_MESSAGE_SIZE - 1_048_576,
            "the broker refuses even ~127 MiB (RabbitMQ 4.x's default max_message_size is 16 MiB: \
             set max_message_size = 134217728, as scripts/broker --version 4.0 does)"
        );
        size -= 65_536;
        body.truncate(size);
    }
    let want = hash(&body);
    drop(body);
    wait_depth(&t.session, &dlq, 1, 60).await;
    assert_eq!(depth(&t.session, &v2).await, 0);

    let dir = tempfile::tempdir().unwrap();
    let stream = format!("hopback.ledger.{ns}");
    let env = vec![
        (
            "HOPBACK_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        (
            "HOPBACK_LOG_FILE",
            dir.path().join("hopback.log").display().to_string(),
        ),
        ("HOPBACK_LEDGER_STREAM", stream.clone()),
    ];
    // Browse: a bounded page, with the origin from x-death.
    let (code, out, err, list_rss) = run_measured(&["dlq", "list", &ns], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 dead letters"), "{out}");
    assert!(
        out.contains("big-1") && out.contains("v2") && out.contains("expired"),
        "{out}"
    );
    assert!(out.len() < 16_384, "the list printed {} bytes", out.len());
    // Inspect: the inspector is bounded too (it loads at most 16 MiB and shows a preview).
    let (code, out, err, show_rss) = run_measured(&["dlq", "show", &ns, "0"], &env);
    assert!(code == Some(0) || code == Some(1), "{err}");
    assert!(
        out.len() + err.len() < 4 * 1_048_576,
        "dlq show printed {} bytes for a {size}-byte body",
        out.len() + err.len()
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(depth(&t.session, &dlq).await, 1, "browsing removed it");

    // Replay it to its origin with the mover.
    let (code, out, err, replay_rss) = run_measured(&["dlq", "replay", &ns, "--yes"], &env);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("moved 1,"), "{out}");
    assert_eq!(depth(&t.session, &dlq).await, 0);
    assert_eq!(
        depth(&t.session, &v2).await,
        1,
        "exactly once in the origin"
    );
    // It arrived intact.
    let ch = t.session.channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            v2.as_str().into(),
            "big-check".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(120), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.data.len(), size);
    assert_eq!(hash(&d.data), want, "the replayed body differs");
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("big-1")
    );
    drop(d);
    let _ = ch.close(200, "ok".into()).await;
    assert_eq!(depth(&t.session, &v2).await, 0, "no second copy");
    assert!(
        t.session
            .passive_queue(&format!("{ns}.parked"))
            .await
            .unwrap()
            .is_none(),
        "nothing parked"
    );

    let note = format!("one {size}-byte dead letter (RabbitMQ 3.10 max_message_size)");
    record::figure(
        "peak RSS, `dlq list` of a 128 MiB dead letter",
        list_rss,
        "MiB",
        &note,
    );
    record::figure(
        "peak RSS, `dlq show` of a 128 MiB dead letter",
        show_rss,
        "MiB",
        &note,
    );
    record::figure(
        "peak RSS, `dlq replay` of a 128 MiB dead letter",
        replay_rss,
        "MiB",
        &note,
    );
    record::outcome(&record::Outcome {
        operation: "replay".into(),
        fault: "128 MiB message".into(),
        lost: 0,
        duplicated: 0,
        recovered_s: None,
        result: "completed".into(),
        note: format!(
            "{size} bytes, hash equal, exactly once in the origin; peak RSS list {list_rss:.0} / show {show_rss:.0} / replay {replay_rss:.0} MiB"
        ),
    });
    eprintln!(
        "size {size}; peak RSS MiB: list {list_rss:.0}, show {show_rss:.0}, replay {replay_rss:.0}"
    );
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}
