//! What the CLI shows during an incident is what the broker has, and its defaults never point
//! at the failing version:
//! - `dlq replay NS --dry-run` without `--to`, v2 rejecting a third of its tasks: the plan is the
//!   healthy v1, with a per-destination breakdown, stated (not asked), the engine's reason once,
//!   and nothing moved;
//! - after "all back to old" (`gate set NS v1=100` from a v1=80 v2=20 canary) the gate keeps
//!   v1's binding at 80: `gate show`, `history` and the console's gate panel show that weight
//!   with its 100 % share, equal to the broker's bindings, and say the weight no longer matters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::FieldTable;

fn run(args: &[&str], stream: &str) -> (Option<i32>, String, String) {
    let out = common::bin()
        .args(args)
        .env("HOPBACK_LEDGER_STREAM", stream)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Consumers on each version queue: v1 acks, v2 rejects every `reject_every`-th (0: never).
async fn workers(t: &common::TestNs, plan: &[(&str, u64)]) -> Vec<tokio::task::JoinHandle<()>> {
    let mut out = Vec::new();
    for (v, reject_every) in plan.iter().copied() {
        let ch = t.session.channel().await.unwrap();
        ch.basic_qos(20, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                format!("{}.{v}", t.ns).as_str().into(),
                format!("worker-{v}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        out.push(tokio::spawn(async move {
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
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_defaults_away_from_a_failing_origin() {
    let t = common::TestNs::new("rpdef", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let stream = format!("hopback.test-rpdef-{}", &t.ns[t.ns.len() - 8..]);
    let ws = workers(&t, &[("v1", 0), ("v2", 3)]).await;
    let pch = t.session.channel().await.unwrap();
    let ns_p = ns.clone();
    let producer = tokio::spawn(async move {
        let mut i = 0u64;
        loop {
            for v in ["v1", "v2"] {
                let _ = pch
                    .basic_publish(
                        "".into(),
                        format!("{ns_p}.{v}").as_str().into(),
                        BasicPublishOptions::default(),
                        format!("task {i}").as_bytes(),
                        BasicProperties::default().with_message_id(format!("m-{v}-{i}").into()),
                    )
                    .await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(16)).await;
        }
    });
    // The management API's rates need a sample or two before an error rate is known.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let (code, out, err) = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (ns2, s2) = (ns.clone(), stream.clone());
        let r =
            tokio::task::spawn_blocking(move || run(&["dlq", "replay", &ns2, "--dry-run"], &s2))
                .await
                .unwrap();
        if r.1.contains("destination: v1") || std::time::Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(code, Some(0), "{out}{err}");
    if !out.contains("destination: v1") {
        let (_, st, _) = run(&["status", &ns], &stream);
        panic!("v2 never read as failing:\n{out}\n{err}\nstatus:\n{st}");
    }
    // A statement, not a question; the healthy version; the breakdown; the engine once.
    assert!(out.contains("dry run — nothing published"), "{out}");
    assert!(
        !out.contains('?'),
        "the dry run is not phrased as a question:\n{out}"
    );
    assert!(
        out.contains(&format!("to queue `{ns}.v1`")),
        "the plan sends them to the healthy v1:\n{out}"
    );
    assert!(out.contains("destination: v1 (no --to given)"), "{out}");
    assert!(out.contains("v2 is failing (error rate"), "{out}");
    assert!(out.contains("per destination"), "{out}");
    let v2_row = out
        .lines()
        .find(|l| l.trim_start().starts_with("from v2"))
        .unwrap_or_else(|| panic!("no row for v2's dead letters:\n{out}"));
    assert!(v2_row.trim_end().ends_with("→ v1"), "{v2_row}");
    assert_eq!(out.matches("engine:").count(), 1, "{out}");
    assert_eq!(
        out.matches("engine").count(),
        1,
        "engine reason once:\n{out}"
    );
    producer.abort();
    for w in ws {
        w.abort();
    }
    // Nothing was journaled: no replay event in this test's ledger stream.
    let (_, timeline, _) = run(&["--json", "timeline"], &stream);
    assert!(!timeline.contains("\"replay\""), "{timeline}");
    // `--to v2` names the failing version on purpose: planned as asked, with the warning.
    let (code, out, err) = run(&["dlq", "replay", &ns, "--to", "v2", "--dry-run"], &stream);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("destination: as --to says"), "{out}");
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_after_all_back_to_old_equals_the_bindings() {
    let t = common::TestNs::new("gback", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let stream = format!("hopback.test-gback-{}", &t.ns[t.ns.len() - 8..]);
    let ws = workers(&t, &[("v1", 0), ("v2", 0)]).await;
    let (code, out, err) = run(&["gate", "set", &ns, "v1=80", "v2=20", "--yes"], &stream);
    assert_eq!(code, Some(0), "{out}{err}");
    // "All back to old": v1=100. Only v2 is unbound; v1 keeps its 80.
    let (code, out, err) = run(&["gate", "set", &ns, "v1=100", "--yes"], &stream);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("is now v1=80 (v1 100%)"), "{out}");
    assert!(out.contains("no longer matters"), "{out}");

    // The broker's bindings.
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let bindings: Vec<(String, String)> = mgmt
        .bindings_from(&ns)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.destination, b.routing_key))
        .collect();
    assert_eq!(bindings, vec![(format!("{ns}.v1"), "80".to_string())]);

    // gate show: the weight the broker has, the share it gives, and the note.
    let (code, out, err) = run(&["--json", "gate", "show", &ns], &stream);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gate"]["split"], serde_json::json!({"v1": 80}), "{out}");
    assert_eq!(v["percent"]["v1"], 100.0, "{out}");
    let (_, out, _) = run(&["gate", "show", &ns], &stream);
    let v1_row = out
        .lines()
        .find(|l| l.trim_start().starts_with("v1"))
        .unwrap();
    assert!(
        v1_row.contains("100.0%") && v1_row.contains("weight 80"),
        "{out}"
    );
    assert!(out.contains("no longer matters"), "{out}");

    // history: the recorded state and the current one, as the broker has them.
    let (code, out, err) = run(&["history", &ns], &stream);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("current (broker): v1=80 (100%)"), "{out}");
    let last = out
        .lines()
        .rfind(|l| l.contains("gate_set") || l.contains("gate set"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(last.contains("v1=80 (100%)"), "{last}");
    assert!(last.contains("no longer matters"), "{last}");

    // The console's gate panel, from a refresh of the same broker.
    let snap = hopback::broker::stats::collect(
        &t.session,
        Some(&mgmt),
        &t.cfg,
        &hopback::broker::stats::CollectOptions {
            namespace: Some(ns.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let gate = snap.namespace(&ns).unwrap().gate.clone().unwrap();
    assert_eq!(gate.0.get("v1"), Some(&80));
    assert_eq!(gate.bound().count(), 1);
    let mut s = hopback::app::state::AppState::new(
        &t.cfg,
        hopback::app::keymap::Keymap::default(),
        chrono::Utc::now().timestamp_millis(),
    );
    s.handle_msg(hopback::app::state::Msg::Snapshot(Box::new(snap)));
    s.handle_key(":");
    for c in format!("gate {ns}").chars() {
        s.handle_key(&if c == ' ' {
            "space".to_string()
        } else {
            c.to_string()
        });
    }
    s.handle_key("enter");
    let theme = hopback::ui::theme::Theme::builtin("dark", false).unwrap();
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40)).unwrap();
    term.draw(|f| {
        hopback::ui::draw(f, &s, &theme);
    })
    .unwrap();
    let screen = term.backend().to_string();
    assert!(screen.contains("80 (100%)"), "{screen}");
    assert!(screen.contains("no longer matters"), "{screen}");
    for w in ws {
        w.abort();
    }
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}
