//! The cluster-safe convention (issue 19, item 4), against a real broker: `init` builds quorum
//! namespaces with a quorum DLQ and unrouted queue (an explicit, unreachable delivery limit, so
//! browsing is safe on 3.x and 4.x alike) and at-least-once dead lettering; a namespace built the
//! old way is flagged by `check` and `init`, and `migrate` moves it over with every dead letter
//! kept — while new dead letters keep arriving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::collections::BTreeSet;

use common::{bin, test_config};
use dlq_helpers::*;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::{self, QueueType};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn queue_info(mgmt: &Mgmt, q: &str) -> hopback::broker::mgmt::QueueInfo {
    for _ in 0..40 {
        if let Ok(Some(i)) = mgmt.queue(q).await {
            return i;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{q} not listed by the management API");
}

async fn cleanup(session: &hopback::broker::session::Session, mgmt: &Mgmt, ns: &str) {
    let versions = vec!["v1".to_string(), "v2".to_string()];
    topology::delete_namespace(session, ns, &versions)
        .await
        .unwrap();
    let ch = session.channel().await.unwrap();
    for q in [
        format!("{ns}.dlq.migrating"),
        format!("{ns}.unrouted.migrating"),
    ] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = mgmt
        .delete_policy(&hopback::ops::migrate::policy_name(ns))
        .await;
}

#[tokio::test]
async fn init_builds_the_cluster_safe_convention_and_its_quorum_dlq_browses() {
    let cfg = test_config();
    let session = common::connect(&cfg, "test").await;
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let ns = common::unique_ns("conv");
    let (code, _, err) = run(&["init", &ns, "--versions", "v1,v2"]);
    assert_eq!(code, 0, "{err}");

    for store in [format!("{ns}.dlq"), format!("{ns}.unrouted")] {
        let q = queue_info(&mgmt, &store).await;
        assert_eq!(q.kind, "quorum", "{store}");
        assert_eq!(
            q.arguments.get("x-delivery-limit").and_then(|v| v.as_i64()),
            Some(topology::STORE_DELIVERY_LIMIT),
            "{store}"
        );
    }
    for v in ["v1", "v2"] {
        let q = queue_info(&mgmt, &format!("{ns}.{v}")).await;
        assert_eq!(q.kind, "quorum");
        assert!(topology::dead_letters_at_least_once(&q), "{v}: {q:?}");
    }

    // Dead letters in the quorum DLQ: listed without --force, many times over (25 browses would
    // drop a message under 4.x's default limit of 20), and still all there.
    let n = 40;
    let id_list = ids("cv", n);
    publish(&session, &format!("{ns}.v2"), &id_list, &body, None, true).await;
    wait_depth(&session, &format!("{ns}.dlq"), n as u32, 20).await;
    for _ in 0..25 {
        let (code, out, err) = run(&["--json", "dlq", "list", &ns, "--limit", "100"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("cv-000039"), "{out}");
    }
    let left: BTreeSet<String> = drain_ids(&session, &format!("{ns}.dlq"))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, id_list.iter().cloned().collect::<BTreeSet<_>>());

    // A second init changes nothing and flags nothing.
    let (code, out, err) = run(&["init", &ns, "--versions", "v1,v2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing to change"), "{out}");
    assert!(!out.contains("migrate"), "{out}");
    let (_, out, _) = run(&["check"]);
    assert!(!out.contains(&format!("convention {ns}")), "{out}");
    cleanup(&session, &mgmt, &ns).await;
    session.close().await;
}

/// Delete `queue` and declare it again as a durable quorum queue with `args`.
async fn redeclare_quorum(
    session: &hopback::broker::session::Session,
    queue: &str,
    args: &[(&str, AMQPValue)],
) {
    let ch = session.channel().await.unwrap();
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let mut table = FieldTable::default();
    table.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    for (k, v) in args {
        table.insert((*k).into(), v.clone());
    }
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table,
    )
    .await
    .unwrap();
}

/// The topology an earlier hopback built for a quorum namespace: quorum version queues that
/// dead-letter at most once, a classic DLQ and unrouted queue.
async fn legacy_namespace(session: &hopback::broker::session::Session, ns: &str) {
    let versions = vec!["v1".to_string(), "v2".to_string()];
    topology::init(session, ns, &versions, QueueType::Classic)
        .await
        .unwrap();
    for v in &versions {
        let q = format!("{ns}.{v}");
        redeclare_quorum(
            session,
            &q,
            &[(
                "x-dead-letter-exchange",
                AMQPValue::LongString(LongString::from(format!("{ns}.dlx"))),
            )],
        )
        .await;
    }
    // The gate as init left it: v1 takes everything.
    topology::change_bindings(
        session,
        ns,
        &[topology::BindingChange::Bind {
            queue: format!("{ns}.v1"),
            key: "100".into(),
        }],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn migrate_moves_a_namespace_built_the_old_way_without_losing_a_dead_letter() {
    let cfg = test_config();
    let session = common::connect(&cfg, "test").await;
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let ns = common::unique_ns("migr");
    legacy_namespace(&session, &ns).await;
    let dlq = format!("{ns}.dlq");
    let unrouted = format!("{ns}.unrouted");

    let before = ids("old", 3000);
    publish(&session, &format!("{ns}.v2"), &before, &body, None, true).await;
    let stray = ids("stray", 10);
    publish(&session, &unrouted, &stray, &body, None, false).await;
    wait_depth(&session, &dlq, 3000, 30).await;
    assert_eq!(queue_info(&mgmt, &dlq).await.kind, "classic");

    // Flagged: `check` names it with the command, `init` keeps it and says so.
    let (_, out, _) = run(&["check"]);
    assert!(
        out.contains(&format!("convention {ns}")) && out.contains(&format!("hopback migrate {ns}")),
        "{out}"
    );
    let (code, out, err) = run(&["init", &ns, "--versions", "v1,v2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("kept as an earlier hopback built them")
            && out.contains(&format!("hopback migrate {ns}")),
        "{out}"
    );

    // The dry run says what it would do and does nothing.
    let (code, out, err) = run(&["migrate", &ns, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run") && out.contains(&dlq), "{out}");
    assert_eq!(queue_info(&mgmt, &dlq).await.kind, "classic");

    // Migrate while new dead letters keep arriving.
    let during = ids("new", 400);
    let v2 = format!("{ns}.v2");
    let producer = async {
        for chunk in during.chunks(20) {
            publish(&session, &v2, chunk, &body, None, true).await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let ns2 = ns.clone();
    let migrate = tokio::task::spawn_blocking(move || run(&["migrate", &ns2, "--yes"]));
    let ((), joined) = tokio::join!(producer, migrate);
    let (code, out, err) = joined.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("migrated"), "{out}");

    for store in [&dlq, &unrouted] {
        let q = queue_info(&mgmt, store).await;
        assert_eq!(q.kind, "quorum", "{store}");
    }
    for v in ["v1", "v2"] {
        let q = queue_info(&mgmt, &format!("{ns}.{v}")).await;
        assert!(
            topology::dead_letters_at_least_once(&q),
            "{v}: {:?}",
            q.effective_policy_definition
        );
    }
    // Every dead letter is in the new DLQ (a few may be there twice), every stray in unrouted.
    let expected: BTreeSet<String> = before.iter().chain(&during).cloned().collect();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let got: Vec<String> = loop {
        let depth = session.passive_queue(&dlq).await.unwrap().unwrap().ready as usize;
        if depth >= expected.len() || tokio::time::Instant::now() > deadline {
            break drain_ids(&session, &dlq)
                .await
                .into_iter()
                .map(|(id, _)| id)
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    let lost: Vec<&String> = expected.difference(&got_set).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // A dead letter arriving while both queues are bound (two binding calls, a few ms each) is
    // in both: a duplicate, never a loss. Bounded by what the producer sent in those windows.
    let dups = got.len() - got_set.len();
    eprintln!(
        "migrate under load: {} dead letters, 0 lost, {dups} duplicate(s)",
        expected.len()
    );
    assert!(dups <= during.len() / 4, "{dups} duplicates");
    let strays: BTreeSet<String> = drain_ids(&session, &unrouted)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(strays, stray.iter().cloned().collect::<BTreeSet<_>>());
    assert!(
        session
            .passive_queue(&format!("{dlq}.migrating"))
            .await
            .unwrap()
            .is_none(),
        "the holding queue is removed"
    );

    // Nothing left to flag or to do.
    let (_, out, _) = run(&["check"]);
    assert!(!out.contains(&format!("convention {ns}")), "{out}");
    let (code, out, err) = run(&["migrate", &ns, "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing to do"), "{out}");
    // The timeline shows the migrate.
    let (_, out, _) = run(&["timeline", "--namespace", &ns]);
    assert!(
        out.contains("migrate to the cluster-safe convention"),
        "{out}"
    );
    cleanup(&session, &mgmt, &ns).await;
    session.close().await;
}

#[tokio::test]
async fn a_delivery_limit_without_a_dead_letter_target_is_flagged() {
    let cfg = test_config();
    let session = common::connect(&cfg, "test").await;
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let ns = common::unique_ns("lim");
    let (code, _, err) = run(&["init", &ns, "--versions", "v1,v2"]);
    assert_eq!(code, 0, "{err}");
    // v2 rebuilt by hand: quorum, a delivery limit of 5, no dead-letter exchange.
    let v2 = format!("{ns}.v2");
    redeclare_quorum(
        &session,
        &v2,
        &[("x-delivery-limit", AMQPValue::LongLongInt(5))],
    )
    .await;
    queue_info(&mgmt, &v2).await;
    let (code, out, err) = run(&["status", &ns]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("v2: delivery limit 5 and no dead-letter target"),
        "{out}"
    );
    assert!(!out.contains("v1: delivery limit"), "{out}");
    let (_, out, _) = run(&["--json", "status", &ns]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = &doc["namespaces"][0]["versions"];
    assert_eq!(v[1]["delivery_limit"], 5, "{v}");
    assert_eq!(v[1]["dead_letter_target"], false, "{v}");
    assert_eq!(v[0]["dead_letter_target"], true, "{v}");
    cleanup(&session, &mgmt, &ns).await;
    session.close().await;
}

/// A namespace's queues read by prefix (`Mgmt::namespace_queues`: the broker filters, a page at
/// a time) are exactly its own: not a queue whose name differs in case, nor one that matches the
/// prefix only if `.` or `-` were regex characters, nor a longer namespace's.
#[tokio::test]
async fn a_namespace_s_queues_listed_by_prefix_are_exactly_its_own() {
    let t = common::TestNs::new("pfx-a.b", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let ch = t.session.channel().await.unwrap();
    let decoys = [
        t.ns.to_uppercase() + ".v1",
        t.ns.replace('.', "x") + ".v1",
        format!("{}x.v1", t.ns),
        format!("{}-v1", t.ns),
    ];
    for d in &decoys {
        ch.queue_declare(
            d.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let ns = hopback::topology::Namespace::convention(&t.ns);
    // The management API learns of new queues asynchronously: wait until it lists them all.
    let mut names = BTreeSet::new();
    for _ in 0..50 {
        let all = mgmt.queues().await.unwrap();
        if decoys.iter().all(|d| all.iter().any(|q| &q.name == d)) {
            names = mgmt
                .namespace_queues(&ns)
                .await
                .unwrap()
                .into_iter()
                .map(|q| q.name)
                .collect::<BTreeSet<_>>();
            if names.len() == 4 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let want: BTreeSet<String> = ["v1", "v2", "dlq", "unrouted"]
        .iter()
        .map(|s| format!("{}.{s}", t.ns))
        .collect();
    assert_eq!(names, want);
    for d in &decoys {
        ch.queue_delete(d.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    t.cleanup().await;
}
