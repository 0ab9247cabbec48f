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
