//! The gate operation against the real broker: plans applied and verified, idempotency, every
//! refusal leaving the bindings untouched, the zero-consumer guard, double-binding repair, the
//! journal entry, and the CLI (dry run, read-only, no terminal, revert through the history).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use hopback::ledger::{self, EventKind, Ledger, Outcome, StreamStart};
use hopback::model::gate::{GateSplit, parse_targets};
use hopback::ops::gate::{self, GateRequest};

fn split(s: &str) -> GateSplit {
    parse_targets(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
}

fn req(ns: &str, target: &str) -> GateRequest {
    GateRequest {
        namespace: ns.into(),
        target: split(target),
        reason: Some("test".into()),
        force_zero_consumers: true,
        ..Default::default()
    }
}

async fn bindings(mgmt: &Mgmt, ns: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = mgmt
        .bindings_from(ns)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.destination, b.routing_key))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn flips_verify_journal_and_are_idempotent() {
    let t = common::TestNs::new("gate", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let stream = format!("hopback.ledger.{}", t.ns);
    let ledger = std::sync::Arc::new(Ledger::open_stream(&t.session, &t.cfg, &stream).await);
    assert!(ledger.is_stream());

    let r = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &req(&t.ns, "v1=90 v2=10"),
    )
    .await
    .unwrap();
    assert!(r.changed && r.verified, "{r:?}");
    assert_eq!(r.before, split("v1=100"));
    assert_eq!(r.after, split("v1=90 v2=10"));
    assert_eq!(
        bindings(&mgmt, &t.ns).await,
        vec![
            (format!("{}.v1", t.ns), "90".into()),
            (format!("{}.v2", t.ns), "10".into())
        ]
    );
    let ev = r.event.clone().unwrap();
    assert_eq!(ev.kind, EventKind::GateSet);
    assert_eq!(ev.gate_before().unwrap(), split("v1=100"));
    assert_eq!(ev.gate_after().unwrap(), split("v1=90 v2=10"));
    assert_eq!(ev.reason.as_deref(), Some("test"));

    // Same routing again: a no-op that says so and journals nothing.
    let again = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &req(&t.ns, "v1=90 v2=10"),
    )
    .await
    .unwrap();
    assert!(!again.changed && again.verified && again.steps.is_empty() && again.event.is_none());

    let full = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &req(&t.ns, "v2=100"),
    )
    .await
    .unwrap();
    assert!(full.verified);
    // Going to one version only unbinds the others: v2 keeps its key (10) and, alone, routes
    // everything — v1 never stays as the only route between an unbind and a rebind.
    assert_eq!(
        bindings(&mgmt, &t.ns).await,
        vec![(format!("{}.v2", t.ns), "10".into())]
    );
    assert_eq!(full.steps.len(), 1, "{:?}", full.steps);
    // Shown as the broker has it: weight 10, alone, so 100 % of the traffic.
    assert_eq!(full.after.describe(), "v2=10");
    assert_eq!(full.after.percent("v2"), 100.0);

    let all = ledger.read(StreamStart::First).await.unwrap();
    // Each flip journals its intent (`started`) before acting, then its outcome.
    let intents = all.iter().filter(|e| e.outcome == Outcome::Started).count();
    assert_eq!(intents, 2, "every flip journals its intent first: {all:?}");
    let events: Vec<_> = all
        .into_iter()
        .filter(|e| e.outcome != Outcome::Started)
        .collect();
    assert_eq!(events.len(), 2, "the no-op must not be journaled");
    assert!(
        events
            .iter()
            .all(|e| e.outcome == Outcome::Ok && e.namespace.as_deref() == Some(t.ns.as_str()))
    );
    ledger::delete_stream(&t.session, &stream).await.unwrap();
    t.cleanup().await;
}

#[tokio::test]
async fn refusals_change_nothing() {
    let t = common::TestNs::new("gate", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
    let before = bindings(&mgmt, &t.ns).await;

    let cases: Vec<(GateRequest, hopback::error::ExitCode, &str)> = vec![
        (
            req(&t.ns, "v3=100"),
            hopback::error::ExitCode::Error,
            "no queue",
        ),
        (
            req(&t.ns, "foo=100"),
            hopback::error::ExitCode::Usage,
            "unknown version",
        ),
        // Issue 17: a version left out with weights that do not sum to 100 would route 100 % to
        // the others; an unknown version is refused even at weight 0.
        (
            req(&t.ns, "v2=10"),
            hopback::error::ExitCode::Usage,
            "not in the target",
        ),
        (
            req(&t.ns, "v1=100 v9=0"),
            hopback::error::ExitCode::Usage,
            "unknown version",
        ),
        (
            GateRequest {
                target: GateSplit::from_pairs([("v1".to_string(), 0), ("v2".to_string(), 0)]),
                ..req(&t.ns, "v1=1")
            },
            hopback::error::ExitCode::Usage,
            "sum to 0",
        ),
        (
            GateRequest {
                force_zero_consumers: false,
                ..req(&t.ns, "v1=50 v2=50")
            },
            hopback::error::ExitCode::Refused,
            "0 consumers",
        ),
    ];
    for (r, code, text) in cases {
        let e = gate::apply(
            &hopback::ops::OpContext::of(
                &t.session,
                &mgmt,
                &ledger,
                &t.cfg,
                hopback::ops::Via::Cli,
            ),
            &r,
        )
        .await
        .unwrap_err();
        let f = hopback::error::Failure::from(e.clone());
        assert_eq!(f.code, code, "{e}");
        assert!(f.message.contains(text), "{e}");
        if text == "unknown version" || text == "no queue" {
            // The hint names every version the namespace has, bound to the gate or not.
            let hint = f.hint.clone().unwrap_or_default();
            assert!(hint.contains("v1, v2"), "{e}: hint {hint}");
        }
        assert_eq!(
            bindings(&mgmt, &t.ns).await,
            before,
            "refusal changed the bindings: {e}"
        );
    }
    // A missing namespace.
    let e = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &req(&format!("{}-nope", t.ns), "v1=100"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no entry exchange"), "{e}");

    // An adopted topology whose entry exchange is a direct exchange cannot be flipped.
    let direct = format!("{}.direct", t.ns);
    let ch = t.session.channel().await.unwrap();
    ch.exchange_declare(
        direct.as_str().into(),
        lapin::ExchangeKind::Direct,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let mut cfg = t.cfg.clone();
    let adoption = hopback::config::Adoption {
        entry_exchange: Some(direct.clone()),
        version_queues: hopback::config::VersionQueues::Convention,
        dlq: None,
        dlx: None,
        unrouted: None,
        alerts: cfg.alerts.clone(),
    };
    cfg.profile.namespaces.insert(t.ns.clone(), adoption);
    let e = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &cfg, hopback::ops::Via::Cli),
        &req(&t.ns, "v2=100"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("of type `direct`"), "{e}");
    ch.exchange_delete(direct.as_str().into(), Default::default())
        .await
        .unwrap();

    // The guard passes once the version has a consumer.
    let c = t.session.channel().await.unwrap();
    let _consumer = c
        .basic_consume(
            format!("{}.v2", t.ns).as_str().into(),
            "g".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let ok = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &GateRequest {
            force_zero_consumers: false,
            ..req(&t.ns, "v1=50 v2=50")
        },
    )
    .await
    .unwrap();
    assert!(ok.verified && ok.warnings.is_empty());
    let outcomes: Vec<_> = ledger
        .read(StreamStart::First)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome != Outcome::Started)
        .collect();
    assert_eq!(outcomes.len(), 1, "refusals journal nothing: {outcomes:?}");
    t.cleanup().await;
}

#[tokio::test]
async fn double_bindings_are_flagged_and_repaired() {
    let t = common::TestNs::new("gate", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(Ledger::file(&dir.path().join("l.jsonl"), "test", &t.cfg));
    let ch = t.session.channel().await.unwrap();
    let v1 = format!("{}.v1", t.ns);
    let v2 = format!("{}.v2", t.ns);
    ch.queue_bind(
        v1.as_str().into(),
        t.ns.as_str().into(),
        "90".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        v2.as_str().into(),
        t.ns.as_str().into(),
        "50".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let view = gate::read_gate(&t.session, &mgmt, &t.cfg, &t.ns, &[])
        .await
        .unwrap();
    assert!(
        view.problems
            .iter()
            .any(|p| p.contains("v1 has 2 bindings")),
        "{:?}",
        view.problems
    );
    assert!(!gate::matches_target(&view, &split("v1=100 v2=50")));
    let r = gate::apply(
        &hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        &req(&t.ns, "v1=50 v2=50"),
    )
    .await
    .unwrap();
    assert!(r.verified);
    assert_eq!(
        bindings(&mgmt, &t.ns).await,
        vec![(v1.clone(), "50".into()), (v2.clone(), "50".into())]
    );
    t.cleanup().await;
}

#[tokio::test]
async fn cli_dry_run_read_only_no_terminal_history_and_revert() {
    let t = common::TestNs::new("gatecli", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let stream = format!("hopback.ledger.{}", t.ns);
    let run = |args: &[&str]| {
        let out = common::bin()
            .env("HOPBACK_LEDGER_STREAM", &stream)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ns = t.ns.as_str();
    // v2 has no consumers: the dry run shows the whole plan and exits as the real run would (3).
    let canary = ["gate", "set", ns, "v1=90", "v2=10"];
    let (code, out, err) = run(&[&canary[..], &["--dry-run"]].concat());
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("1. bind v2 weight 10") && out.contains("nothing was changed"),
        "{out}"
    );
    assert!(err.contains("a real run would be refused"), "{err}");
    let (code, out, err) = run(&[&canary[..], &["--dry-run", "--force-zero-consumers"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1. bind v2 weight 10"), "{out}");
    let (code, _, err) = run(&["--read-only", "gate", "set", ns, "v2=100", "--yes"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = run(&["gate", "set", ns, "v2=100", "--force-zero-consumers"]);
    assert_eq!(code, 3, "no terminal and no --yes must refuse: {err}");
    let (code, _, err) = run(&["gate", "set", ns, "v2=100"]);
    assert_eq!(code, 3, "zero-consumer guard: {err}");
    assert!(err.contains("0 consumers"), "{err}");
    assert_eq!(
        bindings(&mgmt, ns).await,
        vec![(format!("{ns}.v1"), "100".into())]
    );

    let (code, out, err) = run(&[
        &canary[..],
        &["--yes", "--force-zero-consumers", "--reason", "canary 10%"],
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verified"), "{out}");
    let (code, out, err) = run(&[
        "--json",
        "gate",
        "set",
        ns,
        "v2=100",
        "--yes",
        "--force-zero-consumers",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["verified"], true);
    let (code, out, _) = run(&["gate", "set", ns, "v2=100", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to change"), "{out}");

    let (code, out, err) = run(&["--json", "history", ns]);
    assert_eq!(code, 0, "{err}");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let states = h["states"].as_array().unwrap();
    assert_eq!(states.len(), 2, "{out}");
    assert!(h["drift"].is_null());
    let canary_id = states[0]["event_id"].as_str().unwrap().to_string();
    let short = &canary_id[..8];
    let (code, out, _) = run(&["diff", ns, short, "current"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("weight 90 → 0")
            && out.contains("weight 10 → 10")
            && out.contains("(10.0% → 100.0%)"),
        "{out}"
    );

    // Someone flips by hand: history shows drift.
    let ch = t.session.channel().await.unwrap();
    ch.queue_bind(
        format!("{ns}.v1").as_str().into(),
        ns.into(),
        "5".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let (_, out, _) = run(&["history", ns]);
    assert!(out.contains("DRIFT"), "{out}");
    ch.queue_unbind(
        format!("{ns}.v1").as_str().into(),
        ns.into(),
        "5".into(),
        Default::default(),
    )
    .await
    .unwrap();

    let (code, out, err) = run(&[
        "revert",
        ns,
        "--to",
        short,
        "--yes",
        "--force-zero-consumers",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("v1=90 v2=10"), "{out}");
    assert_eq!(
        bindings(&mgmt, ns).await,
        vec![
            (format!("{ns}.v1"), "90".into()),
            (format!("{ns}.v2"), "10".into())
        ]
    );
    let (_, out, _) = run(&["--json", "timeline", "--namespace", ns]);
    let tl: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last = tl.as_array().unwrap().last().unwrap().clone();
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("revert to {canary_id}")),
        "{last}"
    );

    ledger::delete_stream(&t.session, &stream).await.unwrap();
    t.cleanup().await;
}

/// Issue 18: compare-and-set — a flip confirmed against one split does nothing when the gate has
/// changed since (another operator), and says so; nothing is journaled.
#[tokio::test]
async fn a_flip_confirmed_against_a_stale_split_changes_nothing() {
    let t = common::TestNs::new("gate-cas", &["v1", "v2"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let stream = format!("hopback.ledger.{}", t.ns);
    let ledger = std::sync::Arc::new(Ledger::open_stream(&t.session, &t.cfg, &stream).await);
    let cx =
        hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli);
    // Meanwhile someone else moved the gate to a 50/50 canary.
    gate::apply(&cx, &req(&t.ns, "v1=50 v2=50")).await.unwrap();
    let events_before = ledger.read(StreamStart::First).await.unwrap().len();
    // Our operator confirmed "v1=100 → v1=90 v2=10" while the gate was v1=100.
    let stale = GateRequest {
        expect_before: Some(split("v1=100")),
        ..req(&t.ns, "v1=90 v2=10")
    };
    let err = gate::apply(&cx, &stale).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, hopback::ops::OpError::Refused { .. }),
        "{err:?}"
    );
    assert!(text.contains("changed since you confirmed"), "{text}");
    assert!(text.contains("v1=50 v2=50"), "{text}");
    assert_eq!(
        bindings(&mgmt, &t.ns).await,
        vec![
            (format!("{}.v1", t.ns), "50".into()),
            (format!("{}.v2", t.ns), "50".into())
        ]
    );
    assert_eq!(
        ledger.read(StreamStart::First).await.unwrap().len(),
        events_before,
        "a refused flip journals nothing"
    );
    // Confirmed against the split that is there: it goes through.
    let fresh = GateRequest {
        expect_before: Some(split("v1=50 v2=50")),
        ..req(&t.ns, "v1=90 v2=10")
    };
    assert!(gate::apply(&cx, &fresh).await.unwrap().verified);
    let _ = ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}

/// Issue 18: two operators flipping the same gate at once serialise on the broker-side lock —
/// every version queue ends bound exactly once, with one of the two targets; a lock held by
/// another connection makes a flip wait, then go through once it is released.
#[tokio::test]
async fn concurrent_flips_never_leave_a_doubly_bound_queue() {
    let t = common::TestNs::new("gate-lock", &["v1", "v2", "v3"], QueueType::Classic).await;
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let stream = format!("hopback.ledger.{}", t.ns);
    let ledger = std::sync::Arc::new(Ledger::open_stream(&t.session, &t.cfg, &stream).await);
    let other = common::connect(&t.cfg, "second operator").await;
    let targets = ["v1=20 v2=30 v3=50", "v1=70 v2=10 v3=20"];
    for round in 0..5 {
        let (cx_a, cx_b) = (
            hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
            hopback::ops::OpContext::of(&other, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli),
        );
        let (req_a, req_b) = (
            req(&t.ns, targets[round % 2]),
            req(&t.ns, targets[(round + 1) % 2]),
        );
        let a = gate::apply(&cx_a, &req_a);
        let b = gate::apply(&cx_b, &req_b);
        let (ra, rb) = tokio::join!(a, b);
        assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
        let b = bindings(&mgmt, &t.ns).await;
        let queues: Vec<&String> = b.iter().map(|(q, _)| q).collect();
        let mut unique = queues.clone();
        unique.dedup();
        assert_eq!(queues, unique, "round {round}: a doubly bound queue: {b:?}");
        let now = gate::read_gate(&t.session, &mgmt, &t.cfg, &t.ns, &[])
            .await
            .unwrap()
            .split;
        assert!(
            targets.iter().any(|x| split(x) == now),
            "round {round}: {now:?} is neither target"
        );
    }
    // A lock held elsewhere: the flip waits for it, then goes through.
    let names = hopback::topology::Namespace::convention(&t.ns);
    let held =
        hopback::broker::lock::acquire(&other, &names.gate_lock(), std::time::Duration::ZERO)
            .await
            .unwrap();
    let started = std::time::Instant::now();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        held.release().await;
    };
    let cx =
        hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli);
    let all_back = req(&t.ns, "v1=100");
    let flip = gate::apply(&cx, &all_back);
    let ((), r) = tokio::join!(release, flip);
    assert!(r.unwrap().verified);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
    other.close().await;
    let _ = ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}
