//! The DLQ browser, inspector data, purge and CLI against the real broker: 10 pages browsed and
//! the console killed mid-page leave depth and order unchanged; quorum DLQs are refused; hostile
//! payloads come out of the list and the inspector without a single control byte; purge exports
//! first and removes exactly the exported messages; the CLI refuses mutations it may not make.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::time::Duration;

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::browse::{BrowseOptions, browse, browse_page};
use hopback::broker::identity::find;
use hopback::broker::session;
use hopback::broker::topology::QueueType;
use hopback::model::deadletter::{BodyMode, GroupBy, group, inspector_lines, summarize};
use hopback::text::is_terminal_safe;

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

#[tokio::test]
async fn ten_pages_then_abrupt_quit_keeps_depth_and_order() {
    let t = TestNs::new("brw", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let all = ids("b", 1000);
    publish(s, &format!("{ns}.v2"), &all, &body, None, true).await;
    let dlq = format!("{ns}.dlq");
    wait_depth(s, &dlq, 1000, 10).await;

    let proxy = Proxy::amqp().await;
    let profile = profile_via(&proxy, &t.cfg);
    let console = session::connect(&profile, "browse", "test").await.unwrap();
    for page in 0..10u64 {
        let views = browse_page(&console, &dlq, page, 50, false, false)
            .await
            .unwrap();
        let got: Vec<String> = views
            .iter()
            .map(|v| v.message_id.clone().unwrap())
            .collect();
        let from = (page * 50) as usize;
        assert_eq!(got, all[from..from + 50].to_vec(), "page {page}");
        assert!(views.iter().all(|v| v.position >= page * 50));
    }
    // The 11th page is in flight (messages delivered, unacked) when the console dies abruptly:
    // the socket drops, no AMQP close, no nack.
    let c2 = console.clone();
    let q2 = dlq.clone();
    let task = tokio::spawn(async move {
        browse(
            &c2,
            &q2,
            BrowseOptions {
                skip: 0,
                take: 900,
                max_body_bytes: 64,
                force: false,
            },
            false,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(proxy.cut() > 0);
    task.abort();
    drop(console);

    wait_depth(s, &dlq, 1000, 15).await;
    let left = drain_ids(s, &dlq).await;
    assert_eq!(left.into_iter().map(|(i, _)| i).collect::<Vec<_>>(), all);
    t.cleanup().await;
}

#[tokio::test]
async fn quorum_dlq_is_refused_unless_forced() {
    let t = TestNs::new("brq", &["v1"], QueueType::Classic).await;
    let err = browse_page(&t.session, &format!("{}.dlq", t.ns), 0, 10, true, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("delivery limit"), "{err}");
    // Forced: reads (the queue is empty here, so nothing).
    assert!(
        browse_page(&t.session, &format!("{}.dlq", t.ns), 0, 10, true, true)
            .await
            .unwrap()
            .is_empty()
    );
    t.cleanup().await;
}

const HOSTILE: &[&str] = &[
    "\x1b]52;c;aGVsbG8=\x07",
    "\x1b]0;pwned\x07",
    "\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\",
    "\x1b[2J",
    "\x1b[6n",
    "\x1bc",
    "\u{9b}31m",
    "invoice\u{202e}fdp.exe",
];

fn no_control_bytes(s: &str) -> bool {
    is_terminal_safe(s) && !s.contains('\x1b') && !s.contains('\u{9b}') && !s.contains('\u{202e}')
}

#[tokio::test]
async fn hostile_payloads_render_without_control_bytes() {
    let t = TestNs::new("brh", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let v2 = format!("{ns}.v2");
    for (i, h) in HOSTILE.iter().enumerate() {
        let id = format!("{h}-{i}");
        let body_bytes = h.as_bytes().to_vec();
        publish(
            s,
            &v2,
            &[id],
            &|_| body_bytes.clone(),
            Some(header("x-exception", h)),
            true,
        )
        .await;
    }
    publish(
        s,
        &v2,
        &["bad-utf8".into()],
        &|_| b"ok\xff\xfe\x1b[2J".to_vec(),
        None,
        true,
    )
    .await;
    let big: Vec<u8> = {
        let mut b = vec![b'A'; 10 * 1024 * 1024];
        b[10] = 0x1b;
        b
    };
    publish(s, &v2, &["big".into()], &|_| big.clone(), None, true).await;
    let dlq = format!("{ns}.dlq");
    let n = HOSTILE.len() as u32 + 2;
    wait_depth(s, &dlq, n, 20).await;

    let views = browse_page(s, &dlq, 0, 100, false, false).await.unwrap();
    assert_eq!(views.len() as u32, n);
    // Memory bound of a page: the 10 MB body is held as a 4 KiB prefix.
    let bigv = views
        .iter()
        .find(|v| v.message_id.as_deref() == Some("big"))
        .unwrap();
    assert_eq!(bigv.body_len, 10 * 1024 * 1024);
    assert!(bigv.body.len() <= hopback::model::deadletter::BROWSE_BODY_BYTES);
    let now = chrono::Utc::now().timestamp();
    let sums: Vec<_> = views
        .iter()
        .map(|v| summarize(&ns, v, "x-exception", now))
        .collect();
    for sm in &sums {
        let text = serde_json::to_string(sm).unwrap();
        for f in [
            sm.preview.as_str(),
            sm.message_id.as_deref().unwrap_or(""),
            sm.exception.as_deref().unwrap_or(""),
        ] {
            assert!(no_control_bytes(f), "{f:?} in {text}");
        }
    }
    for by in [
        GroupBy::Origin,
        GroupBy::Reason,
        GroupBy::Exception,
        GroupBy::Age,
    ] {
        for g in group(&sums, by) {
            assert!(no_control_bytes(&g.key), "{:?}", g.key);
        }
    }
    // The inspector loads each message in full and renders it in every mode.
    for listed in &views {
        let id = listed.identity().unwrap();
        let m = find(s, &dlq, &id, false, false).await.unwrap().unwrap();
        assert_eq!(m.identity().as_ref(), Some(&id));
        for mode in [
            BodyMode::Auto,
            BodyMode::Text,
            BodyMode::Json,
            BodyMode::Hex,
        ] {
            let lines = inspector_lines(&m, mode);
            let total: usize = lines.iter().map(|l| l.text.len()).sum();
            assert!(total < 200_000, "{total} bytes of inspector text");
            for l in lines {
                assert!(no_control_bytes(&l.text), "{mode:?} {:?}", l.text);
            }
        }
    }
    // The CLI's list and show: no control byte on stdout either.
    for args in [
        vec!["dlq".to_string(), "list".into(), ns.clone()],
        vec![
            "dlq".to_string(),
            "list".into(),
            ns.clone(),
            "--json".into(),
        ],
        vec!["dlq".to_string(), "show".into(), ns.clone(), "0".into()],
        vec![
            "dlq".to_string(),
            "show".into(),
            ns.clone(),
            "7".into(),
            "--body".into(),
            "hex".into(),
        ],
    ] {
        let out = common::bin().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let bad = text
            .chars()
            .find(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}');
        assert!(bad.is_none(), "{args:?} printed {bad:?}");
    }
    // Browsing changed nothing.
    wait_depth(s, &dlq, n, 5).await;
    t.cleanup().await;
}

#[tokio::test]
async fn purge_exports_first_and_removes_exactly_the_exported() {
    let t = TestNs::new("prg", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let first = ids("p", 200);
    publish(s, &format!("{ns}.v2"), &first, &body, None, true).await;
    let dlq = format!("{ns}.dlq");
    wait_depth(s, &dlq, 200, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    let prepared = hopback::broker::export::prepare(s.clone(), &dlq, &path, false, false)
        .await
        .unwrap();
    assert_eq!(prepared.count, 200);
    // A dead letter arriving between the export and the confirmation is not in the file …
    publish(s, &format!("{ns}.v2"), &["late".into()], &body, None, true).await;
    let report = prepared.commit().await.unwrap();
    assert_eq!(report.removed, 200);
    // … so it is not removed.
    wait_depth(s, &dlq, 1, 5).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    let exported: Vec<String> = lines
        .iter()
        .map(|l| l["properties"]["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(exported, first);
    assert!(lines[0]["body_base64"].is_string());

    // CLI: read-only refuses (exit 3); no terminal and no --yes refuses (exit 3); nothing changes.
    let out = common::bin()
        .args(["--read-only", "dlq", "purge", &ns, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let cli_path = dir.path().join("cli.jsonl");
    let out = common::bin()
        .args(["dlq", "purge", &ns, "--export", cli_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_depth(s, &dlq, 1, 5).await;
    let out = common::bin()
        .args(["--read-only", "dlq", "replay", &ns, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // With --yes: exported and purged, path printed.
    let cli_path2 = dir.path().join("cli2.jsonl");
    let out = common::bin()
        .args([
            "dlq",
            "purge",
            &ns,
            "--yes",
            "--export",
            cli_path2.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli2.jsonl"));
    assert_eq!(
        std::fs::read_to_string(&cli_path2).unwrap().lines().count(),
        1
    );
    wait_depth(s, &dlq, 0, 5).await;
    t.cleanup().await;
}

#[tokio::test]
async fn cli_replay_moves_dead_letters_home() {
    let t = TestNs::new("crp", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let dl = ids("c", 100);
    publish(s, &format!("{ns}.v2"), &dl, &body, None, true).await;
    wait_depth(s, &format!("{ns}.dlq"), 100, 10).await;
    let out = common::bin()
        .args([
            "--json", "dlq", "replay", &ns, "--to", "v1", "--limit", "60", "--yes",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["counts"]["moved"], 60);
    assert_eq!(doc["stop"], "limit_reached");
    wait_depth(s, &format!("{ns}.v1"), 60, 5).await;
    wait_depth(s, &format!("{ns}.dlq"), 40, 5).await;
    t.cleanup().await;
}

/// The rollback's "export" choice: only the dead letters of one origin are exported and removed;
/// the others stay in the DLQ, in place (`broker::export::prepare_matching`).
#[tokio::test]
async fn export_of_one_origin_removes_exactly_those() {
    let t = TestNs::new("prgm", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let from_v1 = ids("a", 30);
    let from_v2 = ids("b", 40);
    publish(s, &format!("{ns}.v1"), &from_v1, &body, None, true).await;
    publish(s, &format!("{ns}.v2"), &from_v2, &body, None, true).await;
    let dlq = format!("{ns}.dlq");
    wait_depth(s, &dlq, 70, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.jsonl");
    let v2_queue = format!("{ns}.v2");
    let keep = |m: &hopback::model::deadletter::MessageView| {
        m.attribution.origin_queue.as_deref() == Some(v2_queue.as_str())
    };
    let held =
        hopback::broker::export::prepare_matching(s.clone(), &dlq, &path, false, false, &keep)
            .await
            .unwrap();
    assert_eq!(held.count, 40);
    let report = held.commit().await.unwrap();
    assert_eq!(report.removed, 40);
    wait_depth(s, &dlq, 30, 5).await;
    let exported: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["properties"]["message_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(exported, from_v2);
    let left: Vec<String> = drain_ids(s, &dlq)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    let mut want = from_v1.clone();
    want.sort();
    assert_eq!(left_sorted, want, "the other origin's dead letters stay");
    t.cleanup().await;
}

/// Issue 18: the browse guard fails closed — a queue whose type cannot be known (no management
/// API) counts as quorum: refused with the reason unless forced; a classic DLQ the API lists is
/// browsed; a quorum one is refused.
#[tokio::test]
async fn the_browse_guard_fails_closed_on_an_unknown_queue_type() {
    use hopback::broker::stats::{QueueKind, browse_guard, queue_kind};
    let t = common::TestNs::new("guard", &["v1"], QueueType::Classic).await;
    let mgmt = hopback::broker::mgmt::Mgmt::new(&t.cfg.profile).unwrap();
    let dlq = format!("{}.dlq", t.ns);
    assert_eq!(queue_kind(Some(&mgmt), &dlq).await, QueueKind::Classic);
    assert!(!browse_guard(Some(&mgmt), &dlq, false).await.unwrap());
    assert!(matches!(
        queue_kind(None, &dlq).await,
        QueueKind::Unknown(_)
    ));
    let err = browse_guard(None, &dlq, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its type is unknown (no management API is configured)"),
        "{err}"
    );
    // Forced: passed on as quorum (the operator takes responsibility).
    assert!(browse_guard(None, &dlq, true).await.unwrap());
    // Not listed by the API (a name that does not exist): unknown, refused.
    let missing = format!("{}.nope", t.ns);
    assert!(matches!(
        queue_kind(Some(&mgmt), &missing).await,
        QueueKind::Unknown(_)
    ));
    t.cleanup().await;
}
