//! Hostile broker object names — control characters, an OSC 52 clipboard write, an RTL override,
//! and names of the AMQP maximum of 255 bytes — reach `status` output only sanitised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

#[tokio::test]
async fn hostile_queue_names_are_rendered_safely() {
    let cfg = common::test_config();
    let s = common::connect(&cfg, "test").await;
    let ch = s.channel().await.unwrap();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let evil = format!("ev{tag}\x1b]52;c;aGk=\x07\u{202e}\x1b[2J");
    let long = format!("l{tag}{}", "x".repeat(255 - 1 - tag.len() - ".dlq".len()));
    assert_eq!(format!("{long}.dlq").len(), 255);
    let mut made = Vec::new();
    for ns in [&evil, &long] {
        for suffix in [".v1", ".dlq"] {
            let name = format!("{ns}{suffix}");
            if name.len() > 255 {
                continue;
            }
            ch.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: false,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
            made.push(name);
        }
    }
    // The management API lists new queues after its next stats emission.
    let mgmt = hopback::broker::mgmt::Mgmt::new(&cfg.profile).unwrap();
    let start = std::time::Instant::now();
    while !mgmt
        .queues()
        .await
        .unwrap()
        .iter()
        .any(|q| q.name == format!("{evil}.v1"))
    {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = common::bin().arg("status").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\u{202e}') && !stdout.contains('\x07'),
        "raw control bytes in output"
    );
    assert!(
        stdout.contains(&format!("ev{tag}␛]52;c;aGk=␇⟨U+202E⟩␛[2J")),
        "hostile name not shown visibly"
    );
    let json = common::bin().args(["--json", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(!text.contains('\x1b'), "JSON escapes control characters");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    for q in made {
        ch.queue_delete(q.as_str().into(), Default::default())
            .await
            .unwrap();
    }
}
