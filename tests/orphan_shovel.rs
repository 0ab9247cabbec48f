//! No orphan shovel (issue 31, item 6), against the real broker, each test in a vhost of its own
//! (so no other test's `check` or `status` sees its shovels). A broker-engine replay killed
//! mid-move leaves its shovel running; a competing consumer then empties the DLQ, so the shovel
//! never finishes its count and would replay the next dead letters with no ledger record. The
//! next hopback command that sees it removes it (and its exchange) and journals that; new dead
//! letters then stay. A replay removes a move left behind (journaled) before it moves anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "dlq_helpers/mod.rs"]
mod dlq_helpers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::admin::TestVhost;
use common::record::{self, Outcome};
use dlq_helpers::*;
use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::topology::{MoveShovelName, Namespace};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

fn init(vhost: &TestVhost, ns: &str) {
    let out = vhost
        .bin()
        .args(["init", ns, "--versions", "v1,v2", "--queue-type", "classic"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace's `stale_move_removed` events in the vhost's ledger (timeline JSON).
fn removals(vhost: &TestVhost, ns: &str) -> Vec<serde_json::Value> {
    let out = vhost
        .bin()
        .args([
            "timeline",
            "--namespace",
            ns,
            "--since",
            "1h",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "stale_move_removed")
        .cloned()
        .collect()
}

/// Does a timeline entry name `shovel` (its reason does)?
fn names_shovel(e: &serde_json::Value, shovel: &str) -> bool {
    e["reason"]
        .as_str()
        .is_some_and(|r| r.contains(&format!("shovel `{shovel}`")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shovel_left_by_a_killed_hopback_is_removed_by_the_next_command_and_journaled() {
    let vhost = TestVhost::create("orphan");
    let ns = common::unique_ns("orphan");
    init(&vhost, &ns);
    let cfg = vhost.config();
    let session = common::connect(&cfg, "test").await;
    let names = Namespace::convention(&ns);
    let v1 = names.version_queue("v1").unwrap();
    let all = ids(&format!("{ns}-d"), 10_000);
    publish(&session, &v1, &all, &body, None, true).await;
    wait_depth(&session, &names.dlq, 10_000, 60).await;
    let m = Mgmt::new(&cfg.profile).unwrap();

    // A broker-engine replay, killed (SIGKILL) as soon as its shovel consumes (killed while it
    // declares the shovel, the broker may keep the parameter without starting its worker).
    let mut child = vhost
        .bin()
        .args([
            "dlq",
            "replay",
            &ns,
            "--to",
            "v1",
            "--engine",
            "broker",
            "--prefetch",
            "50",
            "--yes",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let shovel = loop {
        assert!(Instant::now() < deadline, "the move never started");
        if let Some(name) = hopback::broker::shovel::move_shovels_of(&m, &names)
            .await
            .unwrap()
            .into_iter()
            .next()
            && session
                .passive_queue(&names.dlq)
                .await
                .unwrap()
                .is_some_and(|q| q.consumers == 1)
        {
            break name;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    let _ = child.wait();

    // Another consumer takes what it can of the DLQ, alongside the shovel.
    let ch = session.channel().await.unwrap();
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            names.dlq.as_str().into(),
            "competitor".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let mut taken = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), c.next()).await {
        taken.push(
            d.properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
    }
    let _ = ch.close(200, "ok".into()).await;
    assert_eq!(depth(&session, &names.dlq).await, 0);
    eprintln!(
        "the competitor took {}, the shovel {}",
        taken.len(),
        depth(&session, &v1).await
    );
    assert!(
        !taken.is_empty(),
        "the shovel finished before the competitor started"
    );
    // The shovel cannot finish its count: it is still there, consuming — waiting for the next
    // dead letters.
    assert!(m.shovel_exists(&shovel).await.unwrap(), "{shovel}");
    let dlq = session.passive_queue(&names.dlq).await.unwrap().unwrap();
    assert_eq!(dlq.consumers, 1, "the shovel consumes the DLQ");

    // Once it is older than a statistics round of the management API (a new owner connection
    // may not be listed before), the next hopback command that looks removes it.
    let start = MoveShovelName::parse(&shovel)
        .and_then(|n| n.stamp)
        .unwrap()
        .start_unix;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now >= start + 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = vhost.bin().args(["status", &ns]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("removed shovel `{shovel}`")),
        "{text}"
    );
    assert!(
        text.contains("the hopback that started it is gone"),
        "{text}"
    );
    assert!(!m.shovel_exists(&shovel).await.unwrap(), "removed");
    let dlq = session.passive_queue(&names.dlq).await.unwrap().unwrap();
    assert_eq!(dlq.consumers, 0, "nothing consumes the DLQ any more");
    let exchange = MoveShovelName::parse(&shovel).unwrap().exchange().unwrap();
    assert!(
        !session.exchange_exists(&exchange).await.unwrap(),
        "{exchange}"
    );
    let events = removals(&vhost, &ns);
    for outcome in ["started", "ok"] {
        assert!(
            events
                .iter()
                .any(|e| e["outcome"] == outcome && names_shovel(e, &shovel)),
            "{outcome}: {events:#?}"
        );
    }

    // New dead letters stay in the DLQ: nothing replays them without a ledger record.
    let late = ids(&format!("{ns}-late"), 20);
    // (Through v2: a message expires only at the head of its queue, and v1 holds the moved ones.)
    let v1_before = depth(&session, &v1).await;
    let v2 = names.version_queue("v2").unwrap();
    publish(&session, &v2, &late, &body, None, true).await;
    wait_depth(&session, &names.dlq, 20, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v1_after = depth(&session, &v1).await;
    assert_eq!(v1_after, v1_before);
    let left = drain_ids(&session, &names.dlq).await;
    let mut left: Vec<String> = left.into_iter().map(|(i, _)| i).collect();
    left.sort();
    assert_eq!(left, late);
    // Every original dead letter in exactly one place: moved by the shovel, or taken.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let by_shovel = drain_ids(&session, &v1).await;
    for (id, _) in &by_shovel {
        *seen.entry(id.clone()).or_default() += 1;
    }
    for id in &taken {
        *seen.entry(id.clone()).or_default() += 1;
    }
    let lost = all.iter().filter(|i| !seen.contains_key(*i)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    assert_eq!((lost, twice, seen.len()), (0, 0, all.len()));
    let (late_lost, late_copied) = record::tally(&late, &left);
    record::outcome(&Outcome {
        operation: "status".into(),
        fault: "hostile: competing consumer under a killed broker-engine move".into(),
        lost: lost as u64 + late_lost,
        duplicated: twice as u64 + late_copied + u64::from(v1_after.saturating_sub(v1_before)),
        result: "handled: removed the shovel left running (`the hopback that started it is gone`) and its exchange, journaled started + ok; later dead letters stay".into(),
        note: format!(
            "10,000 dead letters: {} moved by the shovel, {} taken by the competitor, each once; {} of 20 later dead letters still in the DLQ, none replayed",
            by_shovel.len(),
            taken.len(),
            left.len()
        ),
        ..Default::default()
    });
    session.close().await;
    drop(vhost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_removes_a_move_left_behind_before_it_moves() {
    let vhost = TestVhost::create("orphan");
    let ns = common::unique_ns("orphanrun");
    init(&vhost, &ns);
    let cfg = vhost.config();
    let session = common::connect(&cfg, "test").await;
    let names = Namespace::convention(&ns);
    let v1 = names.version_queue("v1").unwrap();
    let m = Mgmt::new(&cfg.profile).unwrap();

    // What a killed `dlq replay --from parked` leaves once its time limit has run out: a shovel
    // waiting on an empty source for the rest of its count.
    hopback::broker::amqp::declare_queue(
        &session,
        "parked",
        &names.parked,
        true,
        Default::default(),
    )
    .await
    .unwrap();
    let id = hopback::broker::shovel::new_move_id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = names.move_shovel(&id, now - 900, now - 300);
    hopback::broker::republish::declare_move_exchange(&session, &names.move_exchange(&id), &v1)
        .await
        .unwrap();
    m.put_shovel(
        &left,
        serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": hopback::broker::shovel::vhost_uri(&vhost.name),
            "src-queue": names.parked,
            "src-delete-after": 100,
            "dest-protocol": "amqp091",
            "dest-uri": hopback::broker::shovel::vhost_uri(&vhost.name),
            "dest-exchange": names.move_exchange(&id),
            "ack-mode": "on-confirm",
        }),
    )
    .await
    .unwrap();
    let dead = ids(&format!("{ns}-d"), 30);
    publish(&session, &v1, &dead, &body, None, true).await;
    wait_depth(&session, &names.dlq, 30, 30).await;

    // A read-only `check` names it, with the command (in this vhost) that removes it.
    let out = vhost.bin().args(["--read-only", "check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("shovel `{left}`")), "{text}");
    assert!(text.contains("not removed (read-only profile)"), "{text}");
    assert!(
        text.contains(&format!(
            "rabbitmqctl clear_parameter -p {} shovel {}",
            shlex::try_quote(&vhost.name).unwrap(),
            shlex::try_quote(&left).unwrap()
        )),
        "{text}"
    );
    let kept_by_check = m.shovel_exists(&left).await.unwrap();
    assert!(kept_by_check);
    record::outcome(&Outcome {
        operation: "check".into(),
        fault: "hostile: broker-engine move left behind (shovel on an empty NS.parked)".into(),
        lost: u64::from(!kept_by_check),
        duplicated: 0,
        result: "refused: not removed (read-only profile); named, with the `rabbitmqctl clear_parameter -p VHOST shovel NAME` that removes it".into(),
        note: "lost = the shovel removed by the read-only check; nothing moved, so nothing to copy".into(),
        ..Default::default()
    });

    // The plan says it goes first; the run removes it (journaled), then moves on the broker.
    let out = vhost
        .bin()
        .args(["dlq", "replay", &ns, "--to", "v1", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("first removes 1 broker-engine move(s) left behind"),
        "{text}"
    );
    assert!(text.contains("engine: broker"), "{text}");
    assert!(
        m.shovel_exists(&left).await.unwrap(),
        "a dry run changes nothing"
    );
    let out = vhost
        .bin()
        .args(["dlq", "replay", &ns, "--to", "v1", "--yes"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("broker engine"), "{text}");
    assert!(!m.shovel_exists(&left).await.unwrap(), "removed");
    assert!(
        !session
            .exchange_exists(&names.move_exchange(&id))
            .await
            .unwrap()
    );
    let got = drain_ids(&session, &v1).await;
    let mut got: Vec<String> = got.into_iter().map(|(i, _)| i).collect();
    got.sort();
    assert_eq!(got, dead);
    let events = removals(&vhost, &ns);
    assert!(
        events
            .iter()
            .any(|e| e["outcome"] == "ok" && names_shovel(e, &left)),
        "{events:#?}"
    );
    let (lost, copied) = record::tally(&dead, &got);
    record::outcome(&Outcome {
        operation: "dlq replay (broker engine, to v1)".into(),
        fault: "hostile: broker-engine move left behind (shovel on an empty NS.parked)".into(),
        lost,
        duplicated: copied,
        result: "handled: the dry run said it goes first; the run removed it and its exchange (journaled), then moved on the broker".into(),
        note: format!("30 dead letters: {} in v1", got.len()),
        ..Default::default()
    });
    session.close().await;
    drop(vhost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_hopback_runs_is_left_alone() {
    use hopback::ops::replay::{
        self, Destination, EngineChoice, ReplayControl, ReplayRequest, Source,
    };
    let vhost = TestVhost::create("orphan");
    let ns = common::unique_ns("orphanlive");
    init(&vhost, &ns);
    let cfg = vhost.config();
    let session = common::connect(&cfg, "test").await;
    let names = Namespace::convention(&ns);
    let v1 = names.version_queue("v1").unwrap();
    let dead = ids(&format!("{ns}-d"), 10);
    publish(&session, &v1, &dead, &body, None, true).await;
    wait_depth(&session, &names.dlq, 10, 30).await;
    let m = Mgmt::new(&cfg.profile).unwrap();
    let cx = hopback::ops::OpContext::open(session.clone(), &cfg, hopback::ops::Via::Cli).await;

    // A move that cannot finish (half its count is held by another consumer) and is watched.
    let req = ReplayRequest {
        engine: EngineChoice::Broker,
        ..ReplayRequest::new(&ns, Source::Dlq, Destination::Version("v1".into()))
    };
    let plan = replay::prepare(&cx, &req).await.unwrap();
    let held = session.channel().await.unwrap();
    held.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut c = held
        .basic_consume(
            names.dlq.as_str().into(),
            "holder".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let control = ReplayControl::new();
    let run = {
        let (cx, plan, control) = (cx.clone(), plan.clone(), control.clone());
        tokio::spawn(async move { replay::run(&cx, &plan, &control, |_, _| {}).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let shovel = loop {
        assert!(Instant::now() < deadline, "the move never started");
        if let Some(s) = hopback::broker::shovel::move_shovels_of(&m, &names)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Older than the grace: only its owner's connection tells it is watched.
    tokio::time::sleep(Duration::from_secs(17)).await;
    let out = vhost.bin().args(["status", &ns]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "shovel `{shovel}`: a broker-engine move of `{ns}` in progress (its hopback is running)"
        )),
        "{text}"
    );
    let kept = m.shovel_exists(&shovel).await.unwrap();
    assert!(kept, "left alone");
    let journaled = removals(&vhost, &ns).len() as u64;
    assert_eq!(journaled, 0);
    control.stop(Some("test"));
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.stop, hopback::broker::mover::StopReason::Stopped);
    assert!(!m.shovel_exists(&shovel).await.unwrap());
    record::outcome(&Outcome {
        operation: "status".into(),
        fault: "hostile: broker-engine move of a running hopback, past the grace".into(),
        lost: u64::from(!kept),
        duplicated: journaled,
        result: "handled: named as in progress (its hopback is running) and left alone; its own run removed it when stopped".into(),
        note: "lost = the live move's shovel removed; copied = removals journaled".into(),
        ..Default::default()
    });
    let _ = held.close(200, "ok".into()).await;
    session.close().await;
    drop(vhost);
}
