//! The one topology resolver at work (issue 16): a rollback of an *adopted* namespace whose
//! objects do not follow the convention (`NS-in`, `NS-old`, `NS-new`, `NS-deadx`, `NS-dead`,
//! `NS-lost`). The gate, the drain and the dead-letter replay must all find the adopted names:
//! the gate ends on v1 only, `NS-new` is empty, v2's dead letters are back in `NS-old`, and every
//! published id is accounted for (0 lost).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::config::{Adoption, VersionQueues};
use hopback::ledger::{self, Ledger};
use hopback::model::gate::GateSplit;
use hopback::ops::rollback::{self, AutoOperator, Env};
use hopback::ops::{OpContext, Via, gate, plan};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, ExchangeKind};

fn args(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(*v)),
        );
    }
    t
}

#[tokio::test]
async fn rollback_of_an_adopted_namespace_uses_its_own_names() {
    let mut cfg = common::test_config();
    let ns = common::unique_ns("adopt");
    let n = |s: &str| format!("{ns}-{s}");
    let session = common::connect(&cfg, "test").await;
    let ch = session.channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (x, kind) in [
        ("deadx", ExchangeKind::Fanout),
        ("lost", ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(n(x).as_str().into(), kind, durable, FieldTable::default())
            .await
            .unwrap();
    }
    ch.exchange_declare(
        n("in").as_str().into(),
        ExchangeKind::Custom("x-consistent-hash".into()),
        durable,
        args(&[
            ("hash-property", "message_id"),
            ("alternate-exchange", &n("lost")),
        ]),
    )
    .await
    .unwrap();
    let qd = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (q, x) in [("dead", "deadx"), ("lost", "lost")] {
        ch.queue_declare(n(q).as_str().into(), qd, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            n(q).as_str().into(),
            n(x).as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for q in ["old", "new"] {
        ch.queue_declare(
            n(q).as_str().into(),
            qd,
            args(&[("x-dead-letter-exchange", &n("deadx"))]),
        )
        .await
        .unwrap();
    }
    cfg.profile.namespaces.insert(
        ns.clone(),
        Adoption {
            entry_exchange: Some(n("in")),
            version_queues: VersionQueues::List(BTreeMap::from([
                ("v1".to_string(), n("old")),
                ("v2".to_string(), n("new")),
            ])),
            dlq: Some(n("dead")),
            dlx: Some(n("deadx")),
            unrouted: Some(n("lost")),
            alerts: cfg.alerts.clone(),
        },
    );
    let stream = format!("t-adopt-ledger-{}", uuid::Uuid::new_v4().simple());
    let ledger = Arc::new(Ledger::open_stream(&session, &cfg, &stream).await);
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let cx = OpContext::of(&session, &mgmt, &ledger, &cfg, Via::Cli);

    // The gate on v2 only (through the adoption's names).
    gate::apply(
        &cx,
        &gate::GateRequest {
            namespace: ns.clone(),
            target: GateSplit([("v2".to_string(), 100)].into()),
            force_zero_consumers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // 200 tasks through the entry exchange: all in NS-new; 30 of them rejected by "v2".
    let pch = session.confirm_channel().await.unwrap();
    let mut published = BTreeSet::new();
    for i in 0..200 {
        let id = format!("{ns}-{i:04}");
        pch.basic_publish(
            n("in").as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"task",
            BasicProperties::default().with_message_id(id.as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        published.insert(id);
    }
    for _ in 0..30 {
        let m = ch
            .basic_get(n("new").as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        m.delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: false,
            })
            .await
            .unwrap();
    }
    common_wait(&session, &n("dead"), 30).await;

    // A v1 worker that records every id it processes.
    let wch = session.channel().await.unwrap();
    let mut consumer = wch
        .basic_consume(
            n("old").as_str().into(),
            "adopt-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen_w = seen.clone();
    let worker = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if let Some(id) = d.properties.message_id() {
                seen_w.lock().unwrap().insert(id.to_string());
            }
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    });

    let env = Env {
        session: session.clone(),
        mgmt: Some(mgmt.clone()),
        cfg: cfg.clone(),
        ns: ns.clone(),
        ledger: ledger.clone(),
    };
    let report = rollback::run(
        &env,
        plan::default_plan("v2", "v1", Duration::from_secs(2)),
        &AutoOperator::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(report.outcome, rollback::RollbackOutcome::Done),
        "rollback of the adopted namespace: {:?}",
        report
    );

    let g = gate::read_gate(&session, &mgmt, &cfg, &ns, &[])
        .await
        .unwrap();
    assert_eq!(g.split.bound().count(), 1, "{:?}", g.split);
    assert_eq!(u64::from(g.split.weight("v1")), g.split.total());
    assert_eq!(g.versions.get("v1"), Some(&n("old")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < published.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_left = session.passive_queue(&n("new")).await.unwrap().unwrap();
    let dead_left = session.passive_queue(&n("dead")).await.unwrap().unwrap();
    let seen = seen.lock().unwrap().clone();
    let lost: Vec<&String> = published.difference(&seen).collect();
    assert_eq!(new_left.ready, 0, "NS-new was not drained");
    assert_eq!(dead_left.ready, 0, "v2's dead letters were not replayed");
    assert!(
        lost.is_empty(),
        "{} lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    worker.abort();
    for q in ["old", "new", "dead", "lost"] {
        let _ = ch
            .queue_delete(n(q).as_str().into(), Default::default())
            .await;
    }
    let _ = ch
        .queue_delete(format!("{ns}.parked").as_str().into(), Default::default())
        .await;
    for x in ["in", "deadx", "lost"] {
        let _ = ch
            .exchange_delete(n(x).as_str().into(), Default::default())
            .await;
    }
    ledger::delete_stream(&session, &stream).await.unwrap();
    session.close().await;
}

async fn common_wait(session: &hopback::broker::Session, queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = session.passive_queue(queue).await.unwrap().unwrap();
        if c.ready >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} has {} of {n}",
            c.ready
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
