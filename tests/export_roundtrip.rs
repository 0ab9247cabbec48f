//! Nothing lost on export (issue 18): dead letters with every kind of typed header and every
//! property are exported by `dlq purge`, re-imported with `dlq replay --from-file`, and arrive
//! with the same body bytes, the same header values *and AMQP types*, and the same properties;
//! the export file is 0600; a malformed file publishes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};

fn typed_headers(i: u8) -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert(ShortString::from("deep"), AMQPValue::LongLongInt(-7));
    let mut arr = FieldArray::default();
    arr.push(AMQPValue::LongString(LongString::from("a")));
    arr.push(AMQPValue::ShortShortInt(-3));
    let mut h = FieldTable::default();
    for (k, v) in [
        (
            "longstr",
            AMQPValue::LongString(LongString::from(format!("text {i}"))),
        ),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255, 1, i])),
        ),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(65_000)),
        ("i32", AMQPValue::LongInt(-32)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-64)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        ("bool", AMQPValue::Boolean(true)),
        ("ts", AMQPValue::Timestamp(1_700_000_000)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12_345,
            }),
        ),
        ("void", AMQPValue::Void),
        ("table", AMQPValue::FieldTable(nested.clone())),
        ("array", AMQPValue::FieldArray(arr.clone())),
    ] {
        h.insert(ShortString::from(k), v);
    }
    h
}

fn props(i: u8) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(format!("rt-{i}").as_str().into())
        .with_correlation_id(format!("corr-{i}").as_str().into())
        .with_content_type("application/octet-stream".into())
        .with_content_encoding("identity".into())
        .with_priority(3)
        .with_app_id("roundtrip".into())
        .with_type("order.created".into())
        .with_timestamp(1_700_000_000 + u64::from(i))
        .with_reply_to("replies".into())
        .with_delivery_mode(2)
        .with_headers(typed_headers(i))
}

#[tokio::test]
async fn purge_export_then_replay_from_file_keeps_every_byte_type_and_property() {
    let t = common::TestNs::new("rt", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let ch = t.session.confirm_channel().await.unwrap();
    let bodies: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i, 0, 0xff, b'\n', i]).collect();
    for (i, b) in bodies.iter().enumerate() {
        // Expired at once: dead-lettered from NS.v2 into NS.dlq by the broker (real x-death).
        ch.basic_publish(
            "".into(),
            format!("{ns}.v2").as_str().into(),
            BasicPublishOptions::default(),
            b,
            props(i as u8).with_expiration("0".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    for _ in 0..50 {
        if t.session
            .passive_queue(&format!("{ns}.dlq"))
            .await
            .unwrap()
            .unwrap()
            .ready
            == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exports").join("dlq.jsonl");
    let run = |args: Vec<String>| {
        let mut c = common::bin();
        c.env("HOPBACK_DATA_DIR", dir.path()).args(&args);
        c.output().unwrap()
    };
    let out = run(vec![
        "dlq".into(),
        "purge".into(),
        ns.clone(),
        "--export".into(),
        file.display().to_string(),
        "--yes".into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "export file mode {mode:o}");
    // A malformed copy (one good line, one broken) publishes nothing.
    let text = std::fs::read_to_string(&file).unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"format\": 2, broken\n",
            text.lines().next().unwrap()
        ),
    )
    .unwrap();
    let out = run(vec![
        "dlq".into(),
        "replay".into(),
        ns.clone(),
        "--from-file".into(),
        bad.display().to_string(),
        "--to".into(),
        "v1".into(),
        "--yes".into(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("nothing was published"),
        "{err}"
    );
    assert_eq!(
        t.session
            .passive_queue(&format!("{ns}.v1"))
            .await
            .unwrap()
            .unwrap()
            .ready,
        0
    );
    // The real import.
    let out = run(vec![
        "dlq".into(),
        "replay".into(),
        ns.clone(),
        "--from-file".into(),
        file.display().to_string(),
        "--to".into(),
        "v1".into(),
        "--yes".into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = t.session.channel().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = get
            .basic_get(
                format!("{ns}.v1").as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .expect("a re-imported message");
        got.push(m);
    }
    for m in &got {
        let id = m.properties.message_id().as_ref().unwrap().to_string();
        let i: u8 = id.trim_start_matches("rt-").parse().unwrap();
        let want = props(i);
        assert_eq!(m.data, bodies[usize::from(i)], "{id}: body bytes");
        let h = m.properties.headers().as_ref().unwrap();
        for (k, v) in typed_headers(i).inner() {
            assert_eq!(
                h.inner().get(k),
                Some(v),
                "{id}: header {k} (value and type)"
            );
        }
        assert_eq!(
            h.inner().get(&ShortString::from("x-hopback-replays")),
            Some(&AMQPValue::LongLongInt(1))
        );
        assert!(h.inner().contains_key(&ShortString::from("x-death")));
        assert_eq!(m.properties.correlation_id(), want.correlation_id());
        assert_eq!(m.properties.content_type(), want.content_type());
        assert_eq!(m.properties.content_encoding(), want.content_encoding());
        assert_eq!(m.properties.priority(), want.priority());
        assert_eq!(m.properties.app_id(), want.app_id());
        assert_eq!(m.properties.kind(), want.kind());
        assert_eq!(m.properties.timestamp(), want.timestamp());
        assert_eq!(m.properties.reply_to(), want.reply_to());
        assert_eq!(m.properties.delivery_mode(), want.delivery_mode());
    }
    t.cleanup().await;
}

/// Run `hopback ARGS` on a terminal (a pty from `script`) that answers `answer`.
fn on_terminal(
    data_dir: &std::path::Path,
    stream: &str,
    args: &[String],
    answer: &str,
) -> (i32, String) {
    use std::io::Write;
    let bin = common::bin();
    let mut line = shlex::try_quote(bin.get_program().to_str().unwrap())
        .unwrap()
        .into_owned();
    for a in args {
        line.push(' ');
        line.push_str(&shlex::try_quote(a).unwrap());
    }
    let mut c = std::process::Command::new("script");
    for (k, v) in bin.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let mut child = c
        .env("HOPBACK_DATA_DIR", data_dir)
        .env("HOPBACK_LEDGER_STREAM", stream)
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The question is asked before the answer is read; a pty buffers what comes early.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Issue 37: `--from-file --dry-run` on a terminal answered `y` publishes nothing and journals
/// no replay; the same command without `--dry-run` does publish (so the harness can tell). The
/// single-message export (`dlq show --export`, and the console's `e`, which writes the same
/// record from the inspector's load) is the lossless record and re-imports with typed headers.
#[tokio::test]
async fn from_file_dry_run_publishes_nothing_and_single_exports_reimport() {
    let t = common::TestNs::new("rtdry", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let (v1, dlq) = (format!("{ns}.v1"), format!("{ns}.dlq"));
    let stream = format!("hopback.ledger.{ns}");
    let ch = t.session.confirm_channel().await.unwrap();
    for i in 0..2u8 {
        ch.basic_publish(
            "".into(),
            format!("{ns}.v2").as_str().into(),
            BasicPublishOptions::default(),
            &[i, 0xff],
            props(i).with_expiration("0".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    for _ in 0..50 {
        if t.session.passive_queue(&dlq).await.unwrap().unwrap().ready == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[String]| {
        let mut c = common::bin();
        c.env("HOPBACK_DATA_DIR", dir.path())
            .env("HOPBACK_LEDGER_STREAM", &stream)
            .args(args);
        c.output().unwrap()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // The console's `e`: the inspector's load carries the message as received, and its export
    // record reads back with the same typed headers.
    let quorum = false;
    // The row's identity, then the inspector's load of it by identity (as the console does).
    let row = hopback::broker::browse::browse(
        &t.session,
        &dlq,
        hopback::broker::browse::BrowseOptions {
            skip: 0,
            take: 1,
            max_body_bytes: hopback::model::deadletter::INSPECT_BODY_BYTES,
            force: false,
        },
        quorum,
    )
    .await
    .unwrap();
    let id = row[0].view().identity().unwrap();
    let m = hopback::broker::identity::find(&t.session, &dlq, &id, quorum, false)
        .await
        .unwrap()
        .unwrap();
    assert!(m.lossless.is_some());
    let console_file = dir.path().join("console-e.json");
    let doc = hopback::model::deadletter::export_document(&dlq, &m);
    std::fs::write(&console_file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let back = hopback::broker::export::read_export(&console_file).unwrap();
    assert_eq!(back.len(), 1);
    let h = back[0].properties.headers().as_ref().unwrap();
    for (k, v) in typed_headers(0).inner() {
        assert_eq!(h.inner().get(k), Some(v), "console export: header {k}");
    }

    // `dlq show --export`: the same record, pretty-printed.
    let one = dir.path().join("one.json");
    let out = run(&s(&[
        "dlq",
        "show",
        &ns,
        "1",
        "--export",
        one.to_str().unwrap(),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = dir.path().join("all.jsonl");
    let out = run(&s(&[
        "dlq",
        "purge",
        &ns,
        "--export",
        all.to_str().unwrap(),
        "--yes",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Dry run on a terminal answered `y`: nothing published, nothing journaled.
    let replay = |file: &std::path::Path, extra: &[&str]| {
        let mut a = s(&[
            "dlq",
            "replay",
            &ns,
            "--from-file",
            file.to_str().unwrap(),
            "--to",
            "v1",
        ]);
        a.extend(s(extra));
        a
    };
    let (code, screen) = on_terminal(dir.path(), &stream, &replay(&all, &["--dry-run"]), "y\n");
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("dry run") && screen.contains("2 message(s)"),
        "{screen}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.session.passive_queue(&v1).await.unwrap().unwrap().ready,
        0
    );
    let timeline = |kind: &str| {
        let out = run(&s(&[
            "--json",
            "timeline",
            "--namespace",
            &ns,
            "--format",
            "json",
        ]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j.as_array()
            .unwrap()
            .iter()
            .filter(|e| e.to_string().contains(&format!("\"{kind}\"")))
            .count()
    };
    assert_eq!(timeline("replay"), 0, "a dry run journaled a replay");
    assert!(
        timeline("purge") > 0,
        "the timeline reader sees this ledger"
    );

    // The same command without --dry-run, same terminal, same answer: it publishes.
    let (code, screen) = on_terminal(dir.path(), &stream, &replay(&all, &[]), "y\n");
    assert_eq!(code, 0, "{screen}");
    assert_eq!(
        t.session.passive_queue(&v1).await.unwrap().unwrap().ready,
        2
    );
    assert!(timeline("replay") > 0);

    // The single-message export re-imports, typed headers intact.
    let out = run(&replay(&one, &["--yes"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = t.session.channel().await.unwrap();
    let mut seen = Vec::new();
    while let Some(m) = get
        .basic_get(v1.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        seen.push(m.properties.message_id().as_ref().unwrap().to_string());
        let i: u8 = seen
            .last()
            .unwrap()
            .trim_start_matches("rt-")
            .parse()
            .unwrap();
        let h = m.properties.headers().as_ref().unwrap();
        for (k, v) in typed_headers(i).inner() {
            assert_eq!(h.inner().get(k), Some(v), "header {k}");
        }
        assert_eq!(m.data, vec![i, 0xff]);
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["rt-0", "rt-1", "rt-1"],
        "show --export re-imported message 1"
    );
    delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}

async fn delete_stream(session: &hopback::broker::session::Session, stream: &str) {
    let ch = session.channel().await.unwrap();
    let _ = ch
        .queue_delete(stream.into(), lapin::options::QueueDeleteOptions::default())
        .await;
}
