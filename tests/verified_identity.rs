//! Verified identity is the identity (issue 31, item 4), against the real broker: another broker
//! user (created for the test, allowed to write the test's ledger stream and nothing else)
//! publishes, as itself, a `rollback_step … done` whose body claims the real operator's name.
//! - `rollback --resume` does not count it (only the starter's events count) and runs the step:
//!   the gate ends where the plan says, not where the forger left it; a genuine "done" whose
//!   effect no longer holds on the broker (the drained queue has messages again) runs again,
//!   and an effect-less step the starter finished is not repeated;
//! - the timeline (text, md, json) shows the forger as the author with the claimed name beside
//!   it, and a record no broker user vouches for as UNVERIFIED;
//! - `drill --history` lists the verified drill result and leaves the unverified one out;
//! - `check` names a user with the `impersonator` tag, and the forger among the ledger's writers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::TestNs;
use common::record;
use common::users::BrokerUser;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use hopback::ledger::{self, Event, EventKind, Ledger, Outcome};
use hopback::model::gate::GateSplit;
use hopback::ops::gate;
use hopback::ops::plan::{Metric, Plan, Step, StepKind};
use hopback::ops::rollback::StepState;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::{Value, json};

/// Publish one event's JSON on `stream` over `session` (default exchange, confirmed), with the
/// AMQP `user_id` given — `None` publishes a record no broker user vouches for.
async fn publish_raw(
    session: &hopback::broker::session::Session,
    stream: &str,
    e: &Event,
    user_id: Option<&str>,
) {
    let ch = session.confirm_channel().await.unwrap();
    let mut props = BasicProperties::default().with_message_id(e.id.to_string().into());
    if let Some(u) = user_id {
        props = props.with_user_id(u.into());
    }
    let c = ch
        .basic_publish(
            "".into(),
            stream.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &serde_json::to_vec(e).unwrap(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(c, lapin::Confirmation::Ack(None)), "{c:?}");
    let _ = ch.close(200, "ok".into()).await;
}

/// The binary as guest on the test's ledger stream.
async fn run(stream: &str, data: &std::path::Path, args: &[&str]) -> Output {
    let mut c = common::bin();
    c.env("HOPBACK_LEDGER_STREAM", stream)
        .env("HOPBACK_DATA_DIR", data)
        .env("HOPBACK_LOG_FILE", data.join("hopback.log"))
        .args(args)
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn step(title: &str, kind: StepKind) -> Step {
    let timeout = kind.default_timeout();
    Step {
        title: title.into(),
        kind,
        timeout,
    }
}

#[tokio::test]
async fn a_forged_done_from_another_broker_user_drives_nothing_and_shows_who_wrote_it() {
    let t = TestNs::new("vi", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let stream = format!("t-vi-ledger-{}", uuid::Uuid::new_v4().simple());
    let ledger = Arc::new(Ledger::open_stream(&t.session, &t.cfg, &stream).await);
    assert!(ledger.is_stream(), "{}", ledger.backend_description());
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The forger may write the ledger the way hopback does (the default exchange) — nothing else.
    let forger = BrokerUser::create("forger", "", "", "^amq\\.default$", "");
    let impersonator = BrokerUser::create("imp", "impersonator", "", "", "");
    let forger_session = common::connect(&forger.config(), "forger").await;

    // The gate on a 50/50 canary, 5 messages waiting in v2 (as guest).
    let cx =
        hopback::ops::OpContext::of(&t.session, &mgmt, &ledger, &t.cfg, hopback::ops::Via::Cli);
    let half = GateSplit::from_pairs([("v1".into(), 50), ("v2".into(), 50)]);
    gate::apply(
        &cx,
        &gate::GateRequest {
            namespace: ns.clone(),
            target: half.clone(),
            force_zero_consumers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let v2 = format!("{ns}.v2");
    dlq_helpers::publish(
        &t.session,
        &v2,
        &dlq_helpers::ids("vi", 5),
        &|_| b"{}".to_vec(),
        None,
        false,
    )
    .await;

    // A rollback guest started and that stopped: step 1 (gate) started, never finished; step 2
    // (drain) finished — but v2 has messages again; step 3 (a verification) finished.
    let plan = Plan {
        name: "test rollback v2 → v1".into(),
        from: "v2".into(),
        to: "v1".into(),
        steps: vec![
            step(
                "Gate v1=100",
                StepKind::Gate {
                    weights: [("v1".to_string(), 100)].into(),
                },
            ),
            step(
                "Drain v2 → v1",
                StepKind::Drain {
                    from: "v2".into(),
                    to: "v1".into(),
                    limit: None,
                },
            ),
            step(
                "Verify unrouted",
                StepKind::Verify {
                    metric: Metric::UnroutedEmpty,
                    version: None,
                    threshold_pct: 0.0,
                    window: Duration::ZERO,
                },
            ),
        ],
    };
    let rb = "0a1b2c3d";
    let genuine = |kind: EventKind, params: Value| ledger.event(kind, Some(&ns)).params(params);
    let started = ledger
        .append(
            genuine(
                EventKind::RollbackStarted,
                json!({"rollback_id": rb, "plan": plan, "from": "v2", "to": "v1"}),
            )
            .outcome(Outcome::Started),
        )
        .await
        .unwrap();
    let operator = started.operator.clone();
    for (i, finish) in [(0u64, false), (1, true), (2, true)] {
        ledger
            .append(
                genuine(
                    EventKind::RollbackStep,
                    json!({"rollback_id": rb, "index": i, "phase": "start"}),
                )
                .outcome(Outcome::Started),
            )
            .await
            .unwrap();
        if finish {
            ledger
                .append(
                    genuine(
                        EventKind::RollbackStep,
                        json!({"rollback_id": rb, "index": i, "phase": "finish"}),
                    )
                    .after(json!({"state": StepState::Done})),
                )
                .await
                .unwrap();
        }
    }
    // The forger, as itself (the broker checks the user_id), claims guest's operator name: step 1
    // done, and the rollback finished.
    let forged_step = ledger
        .event(EventKind::RollbackStep, Some(&ns))
        .params(json!({"rollback_id": rb, "index": 0, "phase": "finish", "step": "Gate v1=100"}))
        .after(json!({"state": StepState::Done}));
    assert_eq!(forged_step.operator, operator);
    publish_raw(&forger_session, &stream, &forged_step, Some(&forger.name)).await;
    let forged_end = ledger
        .event(EventKind::RollbackFinished, Some(&ns))
        .params(json!({"rollback_id": rb}))
        .reason("rollback complete; recovery verified");
    publish_raw(&forger_session, &stream, &forged_end, Some(&forger.name)).await;
    // And a record no broker user vouches for (no user_id), claiming the same name.
    let unverified = ledger
        .event(EventKind::Note, Some(&ns))
        .reason("all good, nothing to see");
    publish_raw(&t.session, &stream, &unverified, None).await;

    // ── resume: the forged "done" is not counted, the stale one is re-checked.
    let out = run(
        &stream,
        dir.path(),
        &["--json", "rollback", "--resume", rb, "--yes"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let state = |i: usize| steps[i]["state"].as_str().unwrap().to_string();
    let detail = |i: usize| steps[i]["detail"].as_str().unwrap().to_string();
    assert_eq!(state(0), "done", "the forged done was counted: {report}");
    assert!(detail(0).contains("verified"), "{report}");
    assert_eq!(state(1), "done", "{report}");
    assert!(
        detail(1).contains("the journal says it completed, but")
            && detail(1).contains("5 ready message(s)")
            && detail(1).contains("running it again"),
        "{report}"
    );
    assert_eq!(state(2), "already_done", "{report}");
    assert!(detail(2).contains("nothing to re-check"), "{report}");
    assert_eq!(report["outcome"]["outcome"], "done", "{report}");
    // The broker: the gate is the plan's, v2 drained into v1.
    let g = gate::read_gate(&t.session, &mgmt, &t.cfg, &ns, &[])
        .await
        .unwrap();
    assert!(
        gate::matches_target(&g, &GateSplit::from_pairs([("v1".into(), 100)])),
        "{:?}",
        g.split
    );
    let (left_v2, in_v1) = (
        dlq_helpers::depth(&t.session, &v2).await,
        dlq_helpers::depth(&t.session, &format!("{ns}.v1")).await,
    );
    assert_eq!(left_v2, 0);
    assert_eq!(in_v1, 5);
    // The resume journaled whose events it ignored.
    let events = ledger.read(ledger::StreamStart::First).await.unwrap();
    let resume = events
        .iter()
        .find(|e| e.params["phase"] == "resume")
        .expect("resume event");
    assert_eq!(
        resume.params["ignored_other_authors"][&forger.name], 2,
        "{resume:?}"
    );
    assert_eq!(resume.params["ignored_unverified"], 0, "{resume:?}");
    // Steps the forged or stale "done" would have skipped, and the finished one run again.
    let skipped = (0..2).filter(|&i| state(i) != "done").count() as u64;
    let repeated = u64::from(state(2) != "already_done");
    record::outcome(&record::Outcome {
        operation: "rollback --resume".into(),
        fault: "hostile: forged rollback_step done from another broker user".into(),
        lost: skipped + u64::from(5u32.saturating_sub(in_v1)),
        duplicated: repeated + u64::from(in_v1.saturating_sub(5)),
        result: "refused: the forger's 2 events (step done, rollback finished) not counted; the gate step ran and was verified (v1=100); a genuine done whose effect no longer held (5 ready in v2) ran again; the finished verification not repeated".into(),
        note: format!(
            "lost = steps wrongly skipped ({skipped}) + tasks not drained; copied = finished steps repeated ({repeated}); {in_v1} of 5 tasks in v1, {left_v2} in v2"
        ),
        ..Default::default()
    });

    // ── the timeline: the verified author first, the claim beside it.
    let forger_who = format!("{} (claims {operator})", forger.name);
    let unverified_who = format!("UNVERIFIED (claims {operator})");
    let tl = run(
        &stream,
        dir.path(),
        &["timeline", "--namespace", &ns, "--format", "text"],
    )
    .await;
    assert!(tl.status.success(), "{}", text(&tl));
    let tl_text = String::from_utf8_lossy(&tl.stdout).into_owned();
    let line_of = |id: &uuid::Uuid| {
        let short = &id.simple().to_string()[..8];
        tl_text
            .lines()
            .find(|l| l.contains(short))
            .unwrap_or_else(|| panic!("{short} not in the timeline:\n{tl_text}"))
            .to_string()
    };
    assert!(line_of(&forged_step.id).contains(&forger_who), "{tl_text}");
    assert!(
        line_of(&unverified.id).contains(&unverified_who),
        "{tl_text}"
    );
    assert!(line_of(&started.id).contains("guest"), "{tl_text}");
    let md = run(
        &stream,
        dir.path(),
        &["timeline", "--namespace", &ns, "--format", "md"],
    )
    .await;
    let md = String::from_utf8_lossy(&md.stdout).into_owned();
    assert!(md.contains(&format!("| {forger_who} |")), "{md}");
    assert!(md.contains(&format!("| {unverified_who} |")), "{md}");
    let js = run(
        &stream,
        dir.path(),
        &["timeline", "--namespace", &ns, "--format", "json"],
    )
    .await;
    let entries: Vec<Value> = serde_json::from_slice(&js.stdout).unwrap();
    let by_id: BTreeMap<String, &Value> = entries
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e))
        .collect();
    let f = by_id[&forged_step.id.to_string()];
    assert_eq!(f["author"], forger.name.as_str(), "{f}");
    assert_eq!(f["claimed_operator"], operator.as_str(), "{f}");
    assert_eq!(f["who"], forger_who.as_str(), "{f}");
    let u = by_id[&unverified.id.to_string()];
    assert!(u["author"].is_null(), "{u}");
    assert_eq!(u["who"], unverified_who.as_str(), "{u}");
    assert_eq!(by_id[&started.id.to_string()]["author"], "guest");
    // Each record by id in the JSON timeline: missing (lost) or listed twice (copied).
    let listed = |id: &uuid::Uuid| {
        entries
            .iter()
            .filter(|e| e["id"] == id.to_string().as_str())
            .count() as u64
    };
    let tally = |ids: &[&uuid::Uuid]| {
        ids.iter().fold((0, 0), |(lost, copied), id| {
            let n = listed(id);
            (lost + u64::from(n == 0), copied + n.saturating_sub(1))
        })
    };
    let (lost, copied) = tally(&[&forged_step.id, &forged_end.id]);
    record::outcome(&record::Outcome {
        operation: "timeline".into(),
        fault: "hostile: forged rollback_step done from another broker user".into(),
        lost,
        duplicated: copied,
        result: "handled: shown with the verified author first and the claimed operator beside it (`FORGER (claims OPERATOR)`) in text, md and json".into(),
        note: "the forger's 2 records, counted by id in the JSON timeline".into(),
        ..Default::default()
    });
    let (lost, copied) = tally(&[&unverified.id]);
    record::outcome(&record::Outcome {
        operation: "timeline".into(),
        fault: "hostile: event with no user_id claiming the operator".into(),
        lost,
        duplicated: copied,
        result: "handled: shown as `UNVERIFIED (claims OPERATOR)` in text, md and json".into(),
        note: "the record counted by id in the JSON timeline".into(),
        ..Default::default()
    });

    // ── drill history: the verified result counts, the unverified one is left out.
    let score = |points: u32| {
        json!({"score": hopback::drill::score::Score {
            scenario: "poison".into(),
            points,
            ..Default::default()
        }})
    };
    let drill_ns = format!("drill-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ledger
        .append(
            ledger
                .event(EventKind::DrillFinished, Some(&drill_ns))
                .after(score(71)),
        )
        .await
        .unwrap();
    let forged_drill = ledger
        .event(EventKind::DrillFinished, Some(&drill_ns))
        .after(score(100));
    publish_raw(&t.session, &stream, &forged_drill, None).await;
    let h = run(&stream, dir.path(), &["--json", "drill", "--history"]).await;
    assert!(h.status.success(), "{}", text(&h));
    let h: Value = serde_json::from_slice(&h.stdout).unwrap();
    let drills = h["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1, "{h}");
    assert_eq!(drills[0]["score"]["points"], 71, "{h}");
    assert_eq!(drills[0]["author"], "guest", "{h}");
    assert_eq!(h["ignored_unverified"], 1, "{h}");
    let verified = drills.iter().filter(|d| d["score"]["points"] == 71).count() as u64;
    record::outcome(&record::Outcome {
        operation: "drill --history".into(),
        fault: "hostile: unverified drill result (no user_id)".into(),
        lost: u64::from(verified == 0),
        duplicated: (drills.len() as u64).saturating_sub(1),
        result: "refused: the unverified 100-point result left out (`ignored_unverified: 1`); the verified 71-point one listed, author guest".into(),
        note: "lost = the verified result missing; copied = results listed beyond it".into(),
        ..Default::default()
    });

    // ── check: the impersonator is named; the forger can write the ledger.
    let c = run(&stream, dir.path(), &["--json", "check"]).await;
    let c: Value = serde_json::from_slice(&c.stdout).unwrap();
    let line = |name: &str| {
        c["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` line: {c}"))
            .clone()
    };
    let imp = line("impersonators");
    assert_eq!(imp["status"], "warn", "{imp}");
    assert!(
        imp["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("`{}`", impersonator.name)),
        "{imp}"
    );
    assert!(
        imp["hint"].as_str().unwrap().contains("set_user_tags"),
        "{imp}"
    );
    let w = line("ledger writers");
    assert_eq!(w["status"], "warn", "{w}");
    let wd = w["detail"].as_str().unwrap();
    assert!(wd.contains(&stream), "{w}");
    let forger_named = wd.contains(&format!("`{}`", forger.name));
    assert!(forger_named, "{w}");
    let impersonator_as_writer = wd.contains(&format!("`{}`", impersonator.name));
    assert!(!impersonator_as_writer, "{w}");
    record::outcome(&record::Outcome {
        operation: "check".into(),
        fault: "hostile: another broker user who may write the ledger; a user with the impersonator tag".into(),
        lost: u64::from(!forger_named),
        duplicated: u64::from(impersonator_as_writer),
        result: "handled: warns `ledger writers`, naming the forger among the users who may write the stream; warns `impersonators`, naming the user with the impersonator tag, with the `set_user_tags` hint".into(),
        note: "lost = the forger not named; copied = a user named who cannot write the stream".into(),
        ..Default::default()
    });

    forger_session.close().await;
    drop((forger, impersonator));
    ledger::delete_stream(&t.session, &stream).await.unwrap();
    t.cleanup().await;
}
