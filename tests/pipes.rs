//! A CLI that behaves in pipes (issue 17): `hopback dlq list NS | head -1` and
//! `hopback status --json | head -c 10` end quietly — exit 0, no panic, no backtrace — when the
//! reader closes the pipe early. The output is made larger than a pipe's buffer (64 KiB here), so
//! the writer always meets the closed pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::topology::QueueType;

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()
}

/// Run `hopback ARGS | READER` under `pipefail`; (exit status, stderr of hopback).
fn piped(args: &str, reader: &str) -> (i32, String) {
    let bin = env!("CARGO_BIN_EXE_hopback");
    let err = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "set -o pipefail; {bin} --url '{}' --mgmt-url '{}' {args} 2>{} | {reader} >/dev/null",
        common::test_url(),
        common::test_mgmt_url(),
        err.path().display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("HOPBACK_CONFIG", "/nonexistent/hopback-test.toml")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        std::fs::read_to_string(err.path()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_closed_pipe_ends_quietly() {
    let t = TestNs::new("pipe", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let n = 800;
    publish(
        &t.session,
        &format!("{ns}.v2"),
        &ids("pp", n),
        &body,
        None,
        true,
    )
    .await;
    wait_depth(&t.session, &format!("{ns}.dlq"), n as u32, 15).await;

    for (args, reader) in [
        (format!("dlq list {ns} --limit {n}"), "head -1"),
        (format!("--json dlq list {ns} --limit {n}"), "head -c 10"),
        ("--json status".to_string(), "head -c 10"),
    ] {
        let (code, err) = piped(&args, reader);
        assert!(
            !err.contains("panicked") && !err.contains("Backtrace") && !err.contains("\u{1b}["),
            "`hopback {args} | {reader}` wrote to stderr: {err}"
        );
        assert_eq!(code, 0, "`hopback {args} | {reader}`: {err}");
    }
    t.cleanup().await;
}
