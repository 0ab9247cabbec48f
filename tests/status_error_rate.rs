//! `hopback status NS` computes ERR% over a short window (issue 17): with a v2 worker rejecting
//! every third task, v2's error rate reads about 33 % — not `-` — and v1's reads 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::FieldTable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_error_rate_over_a_short_window() {
    let t = common::TestNs::new("errwin", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    // Workers: v1 acks everything, v2 rejects every third task (nack, no requeue → DLX).
    let mut workers = Vec::new();
    for (v, reject_every) in [("v1", 0u64), ("v2", 3u64)] {
        let ch = t.session.channel().await.unwrap();
        ch.basic_qos(20, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                format!("{ns}.{v}").as_str().into(),
                format!("worker-{v}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(Ok(d)) = consumer.next().await {
                n += 1;
                if reject_every > 0 && n.is_multiple_of(reject_every) {
                    let _ = d
                        .acker
                        .nack(BasicNackOptions {
                            requeue: false,
                            ..Default::default()
                        })
                        .await;
                } else {
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                }
            }
            drop(ch);
        }));
    }
    // A steady producer for both versions (~60 tasks/s each) while status runs.
    let pch = t.session.channel().await.unwrap();
    let ns_p = ns.clone();
    let producer = tokio::spawn(async move {
        let started = Instant::now();
        let mut i = 0u64;
        while started.elapsed() < Duration::from_secs(60) {
            for v in ["v1", "v2"] {
                let _ = pch
                    .basic_publish(
                        "".into(),
                        format!("{ns_p}.{v}").as_str().into(),
                        BasicPublishOptions::default(),
                        format!("task {i}").as_bytes(),
                        BasicProperties::default(),
                    )
                    .await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(16)).await;
        }
    });
    // The management API's rates need a sample or two (5 s interval; longer on a loaded box):
    // ask until both versions' error rates are known (they read unknown, not 100 %, before).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let (mut v1, mut v2) = (None, None);
    while std::time::Instant::now() < deadline && (v1.is_none() || v2.is_none()) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut c = common::bin();
        c.args(["--json", "status", &ns]);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let versions = v["namespaces"][0]["versions"].as_array().unwrap().clone();
        let err = |name: &str| {
            versions
                .iter()
                .find(|x| x["version"] == name)
                .and_then(|x| x["error_rate"].as_f64())
        };
        (v1, v2) = (err("v1"), err("v2"));
    }
    let v2 = v2.expect("v2's error rate is known, not `-`");
    assert!((0.15..=0.55).contains(&v2), "v2 error rate {v2}");
    assert_eq!(v1, Some(0.0));
    producer.abort();
    for w in workers {
        w.abort();
    }
    t.cleanup().await;
}
