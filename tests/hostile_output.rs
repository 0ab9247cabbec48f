//! Untrusted data never reaches the terminal raw through the CLI (issue 18): a dead letter
//! published straight into `NS.dlq` with an escape-laden `x-first-death-reason` and message id,
//! and a forged `gate_set` with hostile version names in the ledger. `status`, `dlq list`,
//! `history`, `timeline --format md` and every `--json` print no ESC, BEL, C1 or bidi control;
//! the Markdown table keeps its columns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

const NASTY: &str = "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}|x\ny";

fn assert_clean(what: &str, out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    for (i, c) in text.chars().enumerate() {
        let bad = (c.is_control() && c != '\n')
            || (0x80..=0x9f).contains(&(c as u32))
            || matches!(c as u32, 0x202a..=0x202e | 0x2066..=0x2069);
        assert!(
            !bad,
            "{what}: raw control U+{:04X} at {i}:\n{text}",
            c as u32
        );
    }
}

#[tokio::test]
async fn hostile_dead_letters_and_forged_ledger_events_print_safely() {
    let t = common::TestNs::new("hostout", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let ch = t.session.confirm_channel().await.unwrap();
    let mut h = FieldTable::default();
    h.insert(
        ShortString::from("x-first-death-reason"),
        AMQPValue::LongString(LongString::from(NASTY)),
    );
    h.insert(
        ShortString::from("x-first-death-queue"),
        AMQPValue::LongString(LongString::from(format!("{ns}.v2"))),
    );
    ch.basic_publish(
        "".into(),
        format!("{ns}.dlq").as_str().into(),
        BasicPublishOptions::default(),
        NASTY.as_bytes(),
        BasicProperties::default()
            .with_message_id(NASTY.into())
            .with_headers(h),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // A forged gate_set with hostile version names and reason, straight onto the ledger stream.
    let stream = format!("hopback.ledger.{ns}");
    let l = hopback::ledger::Ledger::open_stream(&t.session, &t.cfg, &stream).await;
    assert!(l.is_stream());
    let forged = serde_json::json!({
        "id": uuid::Uuid::new_v4(), "ts": chrono::Utc::now(), "operator": NASTY,
        "namespace": ns, "kind": "gate_set", "reason": NASTY,
        "before": {"gate": {"v1": 100}}, "after": {"gate": {NASTY: 100}}, "outcome": "ok"
    });
    ch.basic_publish(
        "".into(),
        stream.as_str().into(),
        BasicPublishOptions::default(),
        &serde_json::to_vec(&forged).unwrap(),
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let run = {
        let stream = stream.clone();
        move |args: Vec<String>| {
            let mut c = common::bin();
            c.env("HOPBACK_LEDGER_STREAM", &stream).args(&args);
            c.output().unwrap()
        }
    };
    for args in [
        vec!["status".to_string(), ns.clone()],
        vec!["--json".into(), "status".into(), ns.clone()],
        vec!["dlq".into(), "list".into(), ns.clone()],
        vec!["--json".into(), "dlq".into(), "list".into(), ns.clone()],
        vec!["history".into(), ns.clone()],
        vec!["--json".into(), "history".into(), ns.clone()],
        vec!["timeline".into(), "--namespace".into(), ns.clone()],
        vec![
            "timeline".into(),
            "--namespace".into(),
            ns.clone(),
            "--format".into(),
            "md".into(),
        ],
    ] {
        let out = tokio::task::spawn_blocking({
            let args = args.clone();
            let run = run.clone();
            move || run(args)
        })
        .await
        .unwrap();
        assert_clean(&format!("{args:?} stdout"), &out.stdout);
        assert_clean(&format!("{args:?} stderr"), &out.stderr);
        if args.contains(&"md".to_string()) {
            // Every table row keeps the header's column count.
            let text = String::from_utf8_lossy(&out.stdout);
            let cols = |l: &str| l.matches(" | ").count();
            let header = text.lines().find(|l| l.starts_with("| time")).unwrap();
            for row in text.lines().filter(|l| l.starts_with("| 2")) {
                assert_eq!(cols(row), cols(header), "{row}");
            }
        }
        if args[..2] == ["--json".to_string(), "status".to_string()] {
            // The raw reason is a key of `dead_letters_by_reason`: escaped, not dropped.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("\\u009b") && text.contains("\\u202e"),
                "{text}"
            );
        }
    }
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}
