#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
mod dlq_helpers;
use common::TestNs;
use common::raw::*;
use hopback::broker::topology::QueueType;

#[tokio::test]
async fn explore() {
    let t = TestNs::new("hfx", &["v1", "v2"], QueueType::Quorum).await;
    let ns = t.ns.clone();
    let v1 = format!("{ns}.v1");
    let q = v1.clone();
    tokio::task::spawn_blocking(move || {
        let mut p = RawPublisher::connect();
        for depth in [2_000usize, 10_000] {
            let props = RawProps {
                headers: Some(deep_headers(depth, &[(b"x-exception", long_string(b"Boom"))])),
                message_id: Some(format!("deep-{depth}").into_bytes()),
                expiration: Some(b"0".to_vec()),
                delivery_mode: Some(2),
                ..Default::default()
            };
            p.publish("", &q, &props, format!("body {depth}").as_bytes());
        }
        let props = RawProps { message_id: Some(b"bad\xff".to_vec()), expiration: Some(b"0".to_vec()), ..Default::default() };
        p.publish("", &q, &props, b"bad body");
        p.close();
    }).await.unwrap();
    dlq_helpers::wait_depth(&t.session, &format!("{ns}.dlq"), 3, 10).await;
    for args in [vec!["status", &ns], vec!["dlq", "list", &ns], vec!["dlq", "show", &ns, "0"], vec!["dlq", "show", &ns, "2"]] {
        let out = common::bin().args(&args).env("HOPBACK_LEDGER_STREAM", format!("hopback.ledger.{ns}")).output().unwrap();
        println!("=== {args:?} -> {:?}\n{}\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    t.cleanup().await;
}
