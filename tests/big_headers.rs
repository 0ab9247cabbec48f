//! A dead letter whose headers are larger than a lean AMQP frame, against the real broker.
//! A message's properties travel in one frame that is never split: a Spring-style stack-trace
//! header of ~100 KiB fits the broker's 128 KiB frame but not the 32 KiB the console asks for.
//! Before the fix, every connection that received it was closed ("frame too large"), so
//! `hopback status`, `dlq list` and the console's refresh failed as long as it sat in a DLQ.
//! Here: the CLI lists, shows and replays it (headers intact), and a lean connection (the
//! console's) that meets it turns lean frames off, so the next connection reads it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::time::Duration;

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::session;
use hopback::broker::topology::QueueType;
use lapin::types::AMQPValue;

/// Bytes of the stack-trace header: over the 32 KiB lean frame, under the broker's 128 KiB.
const TRACE_BYTES: usize = 100 * 1024;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::bin().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_with_100_kib_of_headers_is_listed_replayed_and_survives_lean_frames() {
    let t = TestNs::new("bighdr", &["v1", "v2"], QueueType::Classic).await;
    let (v1, v2, dlq) = (
        format!("{}.v1", t.ns),
        format!("{}.v2", t.ns),
        format!("{}.dlq", t.ns),
    );
    // Dead-lettered by the broker (expiration 0 on v2), as a real dead letter arrives.
    let trace = "at com.example.Worker.handle(Worker.java:42)\n".repeat(TRACE_BYTES / 44);
    let headers = header("x-exception-stacktrace", &trace);
    publish(
        &t.session,
        &v2,
        &["big-headers-1".to_string()],
        &|_| b"{\"task\": 1}".to_vec(),
        Some(headers),
        true,
    )
    .await;
    wait_depth(&t.session, &dlq, 1, 10).await;

    // The CLI (the broker's frame size): status, list and show read it.
    let (code, out, err) = run(&["status", &t.ns]);
    assert_eq!(code, Some(0), "status: {out}{err}");
    let (code, out, err) = run(&["dlq", "list", &t.ns]);
    assert_eq!(code, Some(0), "dlq list: {out}{err}");
    assert!(out.contains("big-headers-1"), "dlq list: {out}");

    // A lean connection (the console's) is closed by the frame; lean frames then go off, and
    // the next connection reads the message.
    session::use_lean_frames();
    let lean = common::connect(&t.cfg, "lean").await;
    let first = hopback::broker::browse::browse_page(&lean, &dlq, 0, 50, false, false).await;
    assert!(
        first.is_err(),
        "a 32 KiB frame cannot carry {TRACE_BYTES} bytes of headers: {first:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while session::lean_frames() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lean frames still on 5 s after a frame closed the connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = common::connect(&t.cfg, "after lean").await;
    let page = hopback::broker::browse::browse_page(&again, &dlq, 0, 50, false, false)
        .await
        .expect("the connection after lean frames went off reads the message");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].message_id.as_deref(), Some("big-headers-1"));
    again.close().await;

    // Replayed home with its headers intact (the republish carries the same large frame).
    let (code, out, err) = run(&["dlq", "replay", &t.ns, "--to", "v1", "--yes"]);
    assert_eq!(code, Some(0), "dlq replay: {out}{err}");
    wait_depth(&t.session, &v1, 1, 10).await;
    let moved = drain_ids(&t.session, &v1).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0, "big-headers-1");
    let kept = moved[0]
        .1
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-exception-stacktrace").cloned());
    match kept {
        Some(AMQPValue::LongString(s)) => assert_eq!(s.as_bytes().len(), trace.len()),
        other => panic!("stack-trace header not carried: {other:?}"),
    }
    assert_eq!(depth(&t.session, &dlq).await, 0);
    t.cleanup().await;
}
