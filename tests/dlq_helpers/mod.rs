//! Helpers shared by the dead-letter and mover tests: make dead letters fast (publish to a version
//! queue with `expiration = "0"`, which dead-letters with reason `expired`), wait for depths, and
//! read a queue's message ids.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use hopback::broker::session::Session;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Publish `ids` to `queue` (default exchange) with confirms, in batches. `props` lets a test set
/// headers; `expire_now` sets `expiration = "0"` so the messages dead-letter immediately.
pub async fn publish(
    session: &Session,
    queue: &str,
    ids: &[String],
    body: &dyn Fn(&str) -> Vec<u8>,
    headers: Option<FieldTable>,
    expire_now: bool,
) {
    let ch = session.confirm_channel().await.unwrap();
    for chunk in ids.chunks(2000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for id in chunk {
            let mut p = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if let Some(h) = &headers {
                p = p.with_headers(h.clone());
            }
            if expire_now {
                p = p.with_expiration("0".into());
            }
            let c = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &body(id),
                    p,
                )
                .await
                .unwrap();
            confirms.push(c);
        }
        for c in confirms {
            let conf = tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(conf, lapin::Confirmation::Ack(None)), "{conf:?}");
        }
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// Ids `prefix-000000` … for n messages.
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

/// Wait until `queue` has exactly `n` ready messages (panics after `secs`).
pub async fn wait_depth(session: &Session, queue: &str, n: u32, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let d = session.passive_queue(queue).await.unwrap().unwrap().ready;
        if d == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue}: depth {d}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ready depth of a queue.
pub async fn depth(session: &Session, queue: &str) -> u32 {
    session.passive_queue(queue).await.unwrap().unwrap().ready
}

/// Consume (and remove) everything in `queue`, returning message ids in order with their
/// `x-hopback-replays` header and the raw properties of the first one seen per id.
pub async fn drain_ids(session: &Session, queue: &str) -> Vec<(String, BasicProperties)> {
    let ch = session.channel().await.unwrap();
    ch.basic_qos(5000, BasicQosOptions::default())
        .await
        .unwrap();
    let total = depth(session, queue).await;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total as usize);
    while out.len() < total as usize {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("drain stalled")
            .unwrap()
            .unwrap();
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        out.push((id, d.properties));
    }
    let _ = ch.close(200, "ok".into()).await;
    out
}

/// Count occurrences of each id.
pub fn counts(ids: &[(String, BasicProperties)]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (id, _) in ids {
        *m.entry(id.clone()).or_insert(0) += 1;
    }
    m
}

/// A one-entry header table.
pub fn header(k: &str, v: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from(k),
        AMQPValue::LongString(LongString::from(v)),
    );
    t
}

/// Delete queues (best effort) — for queues `delete_namespace` does not know (`NS.parked`).
pub async fn delete_queues(session: &Session, queues: &[&str]) {
    let ch = session.channel().await.unwrap();
    for q in queues {
        let _ = ch.queue_delete((*q).into(), Default::default()).await;
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// A TCP proxy to the broker whose live connections the test can cut (see `common::proxy`).
pub use crate::common::proxy::Proxy;

/// A profile that connects through `proxy` (management API unchanged).
pub fn profile_via(proxy: &Proxy, base: &hopback::config::Config) -> hopback::config::Profile {
    hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        &std::path::PathBuf::from("/nonexistent/hopback-test.toml"),
        false,
        &hopback::config::Overrides {
            url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port)),
            mgmt_url: Some(base.profile.mgmt_url.to_string()),
            ..Default::default()
        },
    )
    .unwrap()
    .profile
}

/// Remove every broker-engine shovel of namespace `ns` (its moves' own exchanges too): test
/// cleanup.
pub async fn remove_move_shovels(
    session: &Session,
    mgmt: &hopback::broker::mgmt::Mgmt,
    ns: &hopback::topology::Namespace,
) {
    for p in mgmt.shovel_parameters().await.unwrap_or_default() {
        let Some(n) = hopback::topology::MoveShovelName::parse(&p.name) else {
            continue;
        };
        if n.entry != ns.entry {
            continue;
        }
        let _ = hopback::broker::shovel::remove(mgmt, &p.name).await;
        if let Some(x) = n.exchange() {
            let _ = hopback::broker::republish::delete_move_exchange(session, &x).await;
        }
    }
}
