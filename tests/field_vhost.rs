//! Vhost-correct everywhere (issue 31, item 1), against the real broker: a namespace in a vhost of
//! the test's own (`prod-<uuid>`, guest given every permission, deleted at the end) beside a
//! same-named namespace in `/`. The broker engine's shovel names the vhost in both URIs (a bare
//! `amqp://` is `/`): a replay in the vhost moves exactly the vhost's dead letters, `/`'s DLQ is
//! untouched and nothing is created in `/`. The shovel watcher's time limit and its cancel both
//! remove the shovel and the exchange the move declared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "dlq_helpers/mod.rs"]
mod dlq_helpers;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::admin::TestVhost;
use common::record::{self, Outcome};
use common::users::{enc, mgmt_call};
use dlq_helpers::*;
use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::mover::StopReason;
use hopback::ops::replay::{
    self, Destination, Engine, EngineChoice, ReplayControl, ReplayRequest, Source,
};
use hopback::ops::{OpContext, Via};
use hopback::topology::Namespace;

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

/// `hopback init NS --versions v1,v2 --queue-type classic` through `cmd` (journals `init`).
fn init(mut cmd: std::process::Command, ns: &str) {
    let out = cmd
        .args(["init", ns, "--versions", "v1,v2", "--queue-type", "classic"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of `vhost`'s queues and exchanges that start with `prefix` (management API).
fn objects(vhost: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kind in ["queues", "exchanges"] {
        let (code, text) = mgmt_call(
            "GET",
            &format!("/api/{kind}/{}?columns=name", enc(vhost)),
            None,
        );
        assert_eq!(code, 200, "{text}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        for r in rows {
            let name = r["name"].as_str().unwrap_or_default();
            if name.starts_with(prefix) {
                out.insert(format!("{kind}:{name}"));
            }
        }
    }
    out
}

fn sorted(v: &[(String, lapin::BasicProperties)]) -> Vec<String> {
    let mut ids: Vec<String> = v.iter().map(|(i, _)| i.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_engine_replay_in_a_vhost_moves_that_vhosts_dead_letters_only() {
    let vhost = TestVhost::create("prod");
    let ns = common::unique_ns("vhost");
    // The same namespace in the vhost and in `/`.
    init(vhost.bin(), &ns);
    init(common::bin(), &ns);
    let root_cfg = common::test_config();
    let root = common::connect(&root_cfg, "test /").await;
    let prod_cfg = vhost.config();
    let prod = common::connect(&prod_cfg, "test prod").await;
    let names = Namespace::convention(&ns);
    let v1 = names.version_queue("v1").unwrap();

    let prod_ids = ids(&format!("{ns}-prod"), 300);
    publish(&prod, &v1, &prod_ids, &body, None, true).await;
    let root_ids = ids(&format!("{ns}-root"), 50);
    publish(&root, &v1, &root_ids, &body, None, true).await;
    wait_depth(&prod, &names.dlq, 300, 30).await;
    wait_depth(&root, &names.dlq, 50, 30).await;
    let root_before = objects("/", &ns);

    let out = vhost
        .bin()
        .args([
            "dlq", "replay", &ns, "--to", "v1", "--engine", "broker", "--yes",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("broker engine"), "{text}");

    // Exactly the vhost's 300, once each; `/` untouched, nothing new in `/`.
    let moved = drain_ids(&prod, &v1).await;
    assert_eq!(sorted(&moved), prod_ids, "{text}");
    assert_eq!(depth(&prod, &names.dlq).await, 0);
    let into_root = depth(&root, &v1).await;
    assert_eq!(into_root, 0, "nothing moved into `/`'s v1");
    let left = drain_ids(&root, &names.dlq).await;
    assert_eq!(sorted(&left), root_ids, "`/`'s DLQ untouched");
    let root_after = objects("/", &ns);
    assert_eq!(root_after, root_before, "nothing created in `/`");
    // The move's own exchange went with it; no shovel is left in either vhost.
    let m = Mgmt::new(&prod_cfg.profile).unwrap();
    assert_eq!(
        hopback::broker::shovel::move_shovels_of(&m, &names)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let replay_move = objects(&vhost.name, &format!("{ns}.replay-move-"));
    assert!(replay_move.is_empty(), "{replay_move:?}");
    let root_m = Mgmt::new(&root_cfg.profile).unwrap();
    assert_eq!(
        hopback::broker::shovel::move_shovels_of(&root_m, &names)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let (prod_lost, prod_copied) = record::tally(&prod_ids, &sorted(&moved));
    let (root_lost, root_copied) = record::tally(&root_ids, &sorted(&left));
    record::outcome(&Outcome {
        operation: "dlq replay (broker engine, to v1)".into(),
        fault: "hostile: non-default vhost with same-named queues in /".into(),
        lost: prod_lost + root_lost,
        duplicated: prod_copied + root_copied + u64::from(into_root),
        result: "handled: the shovel's URIs name the vhost; moved the vhost's dead letters only; shovel and move exchange removed".into(),
        note: format!(
            "vhost: {} of 300 in v1; `/`: {} of 50 still in its DLQ, {into_root} moved into its v1, {} objects created",
            moved.len(),
            left.len(),
            root_after.difference(&root_before).count()
        ),
        ..Default::default()
    });

    prod.close().await;
    hopback::broker::topology::delete_namespace(&root, &ns, &["v1".into(), "v2".into()])
        .await
        .unwrap();
    root.close().await;
    drop(vhost);
}

/// A consumer that takes `n` messages of `queue` and holds them unacked (not ready, so a shovel
/// cannot have them) until the returned channel closes.
async fn hold(session: &hopback::broker::session::Session, queue: &str, n: u16) -> lapin::Channel {
    let ch = session.channel().await.unwrap();
    ch.basic_qos(n, Default::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            queue.into(),
            "holder".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .expect("held")
            .unwrap()
            .unwrap();
    }
    ch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchers_time_limit_and_cancel_remove_the_shovel_and_its_exchange() {
    let vhost = TestVhost::create("prod");
    let ns = common::unique_ns("vhwatch");
    init(vhost.bin(), &ns);
    let cfg = vhost.config();
    let session = common::connect(&cfg, "test").await;
    let names = Namespace::convention(&ns);
    let v1 = names.version_queue("v1").unwrap();
    let all = ids(&format!("{ns}-w"), 20);
    publish(&session, &v1, &all, &body, None, true).await;
    wait_depth(&session, &names.dlq, 20, 30).await;
    let cx = OpContext::open(session.clone(), &cfg, Via::Cli).await;
    let m = Mgmt::new(&cfg.profile).unwrap();
    let shovels = || async {
        hopback::broker::shovel::move_shovels_of(&m, &names)
            .await
            .unwrap()
    };

    // The time limit: a shovel whose count its source no longer holds (a consumer took half of
    // it after the plan) would wait for the next dead letters; past its limit it is removed.
    let req = ReplayRequest {
        engine: EngineChoice::Broker,
        time_limit: Some(Duration::from_secs(3)),
        ..ReplayRequest::new(&ns, Source::Dlq, Destination::Version("v1".into()))
    };
    let plan = replay::prepare(&cx, &req).await.unwrap();
    assert!(
        matches!(plan.engine, Engine::Broker(_)),
        "{}",
        plan.engine_reason
    );
    let holder = hold(&session, &names.dlq, 10).await;
    let started = Instant::now();
    let report = replay::run(&cx, &plan, &ReplayControl::new(), |_, _| {})
        .await
        .unwrap();
    let took = started.elapsed();
    let Engine::Broker(shovel) = &report.plan.engine else {
        panic!("broker engine")
    };
    eprintln!("time limit: {:?} after {took:?}", report.stop);
    match &report.stop {
        StopReason::Failed(why) => assert!(why.contains("time limit"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(shovels().await.is_empty(), "the shovel was removed");
    assert!(
        !session
            .exchange_exists(&names.move_exchange(&shovel.move_id))
            .await
            .unwrap(),
        "the move's exchange was removed"
    );
    let _ = holder.close(200, "ok".into()).await;
    wait_depth(&session, &names.dlq, 10, 30).await;
    let first_moved = depth(&session, &v1).await;
    assert_eq!(first_moved, 10);
    let first_dlq = depth(&session, &names.dlq).await;
    // Its first clause ("… within its time limit (3 s)"): the rest names the shovel.
    let first_stop = match &report.stop {
        StopReason::Failed(why) => why.split(':').next().unwrap_or_default().to_string(),
        other => format!("{other:?}"),
    };

    // Cancel: same, stopped by the operator while the shovel waits.
    let req = ReplayRequest {
        engine: EngineChoice::Broker,
        ..ReplayRequest::new(&ns, Source::Dlq, Destination::Version("v1".into()))
    };
    let plan = replay::prepare(&cx, &req).await.unwrap();
    let holder = hold(&session, &names.dlq, 5).await;
    let control = ReplayControl::new();
    let run = {
        let (cx, plan, control) = (cx.clone(), plan.clone(), control.clone());
        tokio::spawn(async move { replay::run(&cx, &plan, &control, |_, _| {}).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while shovels().await.is_empty() || depth(&session, &v1).await < 15 {
        assert!(Instant::now() < deadline, "the shovel never moved its part");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    control.stop(Some("operator"));
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the cancel ends the run")
        .unwrap()
        .unwrap();
    assert_eq!(report.stop, StopReason::Stopped);
    let Engine::Broker(shovel) = &report.plan.engine else {
        panic!("broker engine")
    };
    assert!(shovels().await.is_empty(), "the shovel was removed");
    assert!(
        !session
            .exchange_exists(&names.move_exchange(&shovel.move_id))
            .await
            .unwrap(),
        "the move's exchange was removed"
    );
    let _ = holder.close(200, "ok".into()).await;
    wait_depth(&session, &names.dlq, 5, 30).await;
    // Every id in exactly one place.
    let mut seen = sorted(&drain_ids(&session, &v1).await);
    seen.extend(sorted(&drain_ids(&session, &names.dlq).await));
    seen.sort();
    assert_eq!(seen, all);
    let in_place = u64::from(first_moved + first_dlq);
    record::outcome(&Outcome {
        operation: "dlq replay (broker engine, to v1)".into(),
        fault: "hostile: non-default vhost, DLQ partly held by another consumer past the move's time limit".into(),
        lost: 20u64.saturating_sub(in_place),
        duplicated: in_place.saturating_sub(20),
        result: format!(
            "handled: stopped, {first_stop}, after {:.1} s; shovel and move exchange removed, the rest back in the DLQ",
            took.as_secs_f64()
        ),
        note: format!("20 dead letters: {first_moved} in v1, {first_dlq} back in the DLQ (depths)"),
        ..Default::default()
    });
    let (lost, copied) = record::tally(&all, &seen);
    record::outcome(&Outcome {
        operation: "dlq replay (broker engine, to v1)".into(),
        fault: "hostile: non-default vhost, DLQ partly held by another consumer, move cancelled".into(),
        lost,
        duplicated: copied,
        result: "handled: cancelled by the operator while the shovel waited; shovel and move exchange removed, the rest back in the DLQ".into(),
        note: format!("the same 20 ids after both moves: {} found across v1 and the DLQ", seen.len()),
        ..Default::default()
    });
    session.close().await;
    drop(vhost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_hopback_acts_on_are_the_vhosts_own() {
    // The rollback evicts a version's workers by their connection name (`NS worker v2`): the
    // same-named namespace's workers in another vhost are not its own.
    let vhost = TestVhost::create("prod");
    let ns = common::unique_ns("vhconn");
    let name = format!("{ns} worker v2");
    let root_cfg = common::test_config();
    let prod_cfg = vhost.config();
    let root = hopback::broker::session::connect_named(&root_cfg.profile, &name)
        .await
        .unwrap();
    let prod = hopback::broker::session::connect_named(&prod_cfg.profile, &name)
        .await
        .unwrap();
    let count = |m: Mgmt| {
        let name = name.clone();
        async move {
            m.connections()
                .await
                .unwrap()
                .iter()
                .filter(|c| c.user_provided_name.as_deref() == Some(name.as_str()))
                .count()
        }
    };
    let (root_m, prod_m) = (
        Mgmt::new(&root_cfg.profile).unwrap(),
        Mgmt::new(&prod_cfg.profile).unwrap(),
    );
    // The management API lists a new connection after its next statistics round.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(root_m.clone()).await == 0 || count(prod_m.clone()).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the connections were never listed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (in_root, in_prod) = (count(root_m).await, count(prod_m).await);
    assert_eq!(in_root, 1, "`/` lists its own only");
    assert_eq!(in_prod, 1, "the vhost lists its own only");
    let (in_root, in_prod) = (in_root as u64, in_prod as u64);
    record::outcome(&Outcome {
        operation: "rollback eviction (connection lookup)".into(),
        fault: "hostile: non-default vhost with same-named worker connections in /".into(),
        lost: u64::from(in_root == 0) + u64::from(in_prod == 0),
        duplicated: in_root.saturating_sub(1) + in_prod.saturating_sub(1),
        result: "handled: each vhost's list names its own `NS worker v2` connection only".into(),
        note: format!(
            "the list the evict step filters (no rollback run): `/` {in_root}, the vhost {in_prod}; lost = own connection missing, copied = the other vhost's listed too"
        ),
        ..Default::default()
    });
    root.close().await;
    prod.close().await;
    drop(vhost);
}
