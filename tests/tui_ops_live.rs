//! The console's operation views against the real broker, headless: keys go through
//! `AppState::handle_key`, the requests they produce go to the real `OpsRunner` (the same code the
//! console's loop uses), and its answers come back through `handle_msg` — so these tests cover
//! the whole path from a key press to the broker and back, without a terminal.
//!
//! One test function runs the flows in order on one namespace and one private ledger stream
//! (`HOPBACK_LEDGER_STREAM`), and cleans both up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::time::Duration;

use common::TestNs;
use hopback::app::keymap::Keymap;
use hopback::app::ops::OpsRunner;
use hopback::app::panels::{GatePlan, GateStage, RbStage};
use hopback::app::protocol::{OpMsg, OpRequest};
use hopback::app::state::{AppState, Msg, View};
use hopback::broker::mgmt::Mgmt;
use hopback::broker::stats::{CollectOptions, collect};
use hopback::broker::topology::QueueType;
use hopback::ledger::{self, EventKind, Ledger, StreamStart};
use hopback::ops::rollback::{Decision, RollbackOutcome};
use hopback::ui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio::sync::mpsc;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Hand the state's requests to the runner and feed its answers back until `done` matches one
/// (which is applied too); panics after `secs`.
async fn pump(
    s: &mut AppState,
    runner: &OpsRunner,
    rx: &mut mpsc::Receiver<Msg>,
    secs: u64,
    done: impl Fn(&OpMsg) -> bool,
) -> OpMsg {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        for r in s.take_requests() {
            if r != OpRequest::Refresh {
                runner.handle(r);
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, rx.recv())
            .await
            .expect("timed out waiting for the ops runner")
            .expect("runner channel closed");
        if let Msg::Op(m) = msg {
            let hit = done(&m);
            s.handle_msg(Msg::Op(m.clone()));
            if hit {
                return m;
            }
        }
    }
}

async fn refresh(s: &mut AppState, t: &TestNs, mgmt: &Mgmt) {
    let opts = CollectOptions {
        exact_for: Some([t.ns.clone()].into()),
        ..Default::default()
    };
    let snap = collect(&t.session, Some(mgmt), &t.cfg, &opts)
        .await
        .unwrap();
    s.handle_msg(Msg::Snapshot(Box::new(snap)));
    s.handle_msg(Msg::Tick(now_ms()));
}

fn screen(s: &AppState) -> String {
    let theme = Theme::builtin("dark", false).unwrap();
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    term.draw(|f| {
        hopback::ui::draw(f, s, &theme);
    })
    .unwrap();
    for c in term.backend().buffer().content() {
        assert!(
            hopback::text::is_terminal_safe(c.symbol()),
            "{:?}",
            c.symbol()
        );
    }
    term.backend().to_string()
}

fn keys(s: &mut AppState, ks: &[&str]) {
    for k in ks {
        s.handle_key(k);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_operations_against_the_broker() {
    let stream = format!(
        "hopback.test-tuiops-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // SAFETY: this file has one test; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("HOPBACK_LEDGER_STREAM", &stream) };
    let t = TestNs::new("tuiops", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();

    // This console, and a second one run by someone else watching the ledger feed.
    let (tx, mut rx) = mpsc::channel(256);
    let runner = OpsRunner::new(&t.cfg, tx);
    let feed1 = runner.spawn_ledger_feed();
    let mut s = AppState::new(&t.cfg, Keymap::default(), now_ms());
    let mut other_cfg = t.cfg.clone();
    other_cfg.operator = "someone-else".into();
    let (tx2, mut rx2) = mpsc::channel(256);
    let runner2 = OpsRunner::new(&other_cfg, tx2);
    let feed2 = runner2.spawn_ledger_feed();
    let mut s2 = AppState::new(&other_cfg, Keymap::default(), now_ms());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // ── gate: the zero-consumer guard refuses first (nothing changes) ──
    refresh(&mut s, &t, &mgmt).await;
    keys(&mut s, &[":", "n", "s"]);
    s.handle_key("space");
    for c in ns.chars() {
        s.handle_key(&c.to_string());
    }
    s.handle_key("enter");
    assert_eq!(s.view(), &View::Namespace { ns: ns.clone() });
    s.handle_key("g");
    assert_eq!(
        s.ops.gate.as_ref().unwrap().cursor,
        hopback::app::panels::GATE_PRESETS.len(),
        "starts on \"all back to old\" (issue 17)"
    );
    runner.handle(OpRequest::GateApply {
        ns: ns.clone(),
        target: hopback::model::gate::GateSplit::from_pairs([("v1".into(), 50), ("v2".into(), 50)]),
        force_zero_consumers: false,
        expect_before: None,
    });
    let m = pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::GateApplied { .. })
    })
    .await;
    let OpMsg::GateApplied { result: Err(e), .. } = m else {
        panic!("the guard must refuse: {m:?}")
    };
    assert!(e.contains("0 consumers"), "{e}");
    let b = mgmt.bindings_from(&ns).await.unwrap();
    assert_eq!(b.len(), 1, "nothing changed: {b:?}");

    // ── gate through the panel: 50 %, guard overridden explicitly, verified, journaled ──
    // From "all back to old" (row 7) up to "50 % to v2" (row 5).
    keys(&mut s, &["k", "k", "enter"]);
    assert!(s.modal());
    // The confirmation shows the runner's dry-run plan (from the broker's real bindings).
    pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::GatePreview { .. })
    })
    .await;
    let GateStage::Confirm { plan, .. } = &s.ops.gate.as_ref().unwrap().stage else {
        panic!("still confirming")
    };
    let GatePlan::Ready { steps, warnings } = plan else {
        panic!("{plan:?}")
    };
    assert!(
        steps.iter().any(|x| x.contains("bind v2 weight 50")),
        "{steps:?}"
    );
    // The dialog says what applying would override in its own words; the plan's "overridden"
    // (the preview ran with the override, as the apply will) is not shown before the choice.
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("zero-consumer guard overridden")),
        "{warnings:?}"
    );
    let sc = screen(&s);
    assert!(sc.contains("ZERO-CONSUMER GUARD"), "{sc}");
    assert!(sc.contains("bind v2 weight 50"), "{sc}");
    assert_eq!(
        mgmt.bindings_from(&ns).await.unwrap().len(),
        1,
        "a preview changes nothing"
    );
    keys(&mut s, &["tab", "enter"]);
    let m = pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::GateApplied { .. })
    })
    .await;
    let OpMsg::GateApplied {
        result: Ok(report), ..
    } = m
    else {
        panic!("{m:?}")
    };
    assert!(report.changed && report.verified, "{report:?}");
    let event_id = report.event.as_ref().unwrap().short_id();
    let mut b: Vec<(String, String)> = mgmt
        .bindings_from(&ns)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.destination, b.routing_key))
        .collect();
    b.sort();
    assert_eq!(
        b,
        vec![
            (format!("{ns}.v1"), "50".to_string()),
            (format!("{ns}.v2"), "50".to_string())
        ]
    );
    assert!(matches!(
        s.ops.gate.as_ref().unwrap().stage,
        GateStage::Result { .. }
    ));
    let sc = screen(&s);
    assert!(sc.contains("✔ verified") && sc.contains(&event_id), "{sc}");
    // Its echo on this console's own feed is recognised by the event id.
    let full_id = report.event.as_ref().unwrap().id.to_string();
    if !s.ops.feed.items.iter().any(|i| i.id == full_id) {
        let id = full_id.clone();
        pump(
            &mut s,
            &runner,
            &mut rx,
            10,
            move |m| matches!(m, OpMsg::Ledger(e) if e.id.to_string() == id),
        )
        .await;
    }
    let echo = s.ops.feed.items.iter().find(|i| i.id == full_id).unwrap();
    assert!(!echo.other, "own flip shown as someone else's: {echo:?}");

    // ── the other console sees it live, as someone else's flip ──
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(Msg::Op(m))) = tokio::time::timeout(left, rx2.recv()).await else {
            panic!("the other console never saw the gate flip");
        };
        let hit = matches!(&m, OpMsg::Ledger(e) if e.kind == EventKind::GateSet && e.namespace.as_deref() == Some(ns.as_str()));
        s2.handle_msg(Msg::Op(m));
        if hit {
            break;
        }
    }
    let text = &s2.message.as_ref().unwrap().text;
    assert!(
        text.contains("flipped the gate of") && text.contains(&ns),
        "{text}"
    );

    // ── dead letters: hostile payloads, grouped, inspected, two replayed, the rest purged ──
    let bodies: Vec<Vec<u8>> = vec![
        b"osc52 \x1b]52;c;aGk=\x07".to_vec(),
        b"osc8 \x1b]8;;http://x/\x1b\\l\x1b]8;;\x1b\\".to_vec(),
        b"csi \x1b[2J\x1b[6n reset \x1bc".to_vec(),
        b"c1 \x9b bidi \xe2\x80\xae invalid \xff".to_vec(),
        b"plain".to_vec(),
    ];
    let ids = dlq_helpers::ids("dl", bodies.len());
    for (id, body) in ids.iter().zip(&bodies) {
        let b = body.clone();
        dlq_helpers::publish(
            &t.session,
            &format!("{ns}.v2"),
            std::slice::from_ref(id),
            &move |_| b.clone(),
            None,
            true,
        )
        .await;
    }
    dlq_helpers::wait_depth(&t.session, &format!("{ns}.dlq"), 5, 10).await;
    s.handle_key("esc");
    s.handle_key("d");
    pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::DlqPage { .. })
    })
    .await;
    let d = s.ops.dlq.as_ref().unwrap();
    assert_eq!(d.depth, Some(5));
    assert_eq!(d.groups.len(), 1);
    assert_eq!((d.groups[0].key.as_str(), d.groups[0].count), ("v2", 5));
    keys(&mut s, &["enter", "enter"]);
    pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::Inspected { .. })
    })
    .await;
    let sc = screen(&s);
    assert!(sc.contains("␛]52;c;aGk=␇"), "{sc}");
    assert_eq!(
        dlq_helpers::depth(&t.session, &format!("{ns}.dlq")).await,
        5,
        "browse removes nothing"
    );
    s.handle_key("esc");
    keys(&mut s, &["space", "space", "R", "tab", "enter"]);
    pump(&mut s, &runner, &mut rx, 60, |m| {
        matches!(m, OpMsg::MoveDone { .. })
    })
    .await;
    let job = s.ops.job.as_ref().unwrap();
    assert!(!job.failed, "{job:?}");
    assert!(job.done.as_ref().unwrap().contains("moved 2"), "{job:?}");
    assert_eq!(dlq_helpers::depth(&t.session, &format!("{ns}.v2")).await, 2);
    let back = dlq_helpers::drain_ids(&t.session, &format!("{ns}.v2")).await;
    let mut got: Vec<String> = back.iter().map(|(id, _)| id.clone()).collect();
    got.sort();
    assert_eq!(got, vec![ids[0].clone(), ids[1].clone()]);
    // The page was re-read after the move.
    pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::DlqPage { .. })
    })
    .await;
    assert_eq!(s.ops.dlq.as_ref().unwrap().depth, Some(3));
    // Purge: export first, count typed.
    s.handle_key("P");
    let m = pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::PurgePrepared(_))
    })
    .await;
    let OpMsg::PurgePrepared(Ok((3, path))) = m else {
        panic!("{m:?}")
    };
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    keys(&mut s, &["3", "tab", "enter"]);
    let m = pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::PurgeDone { .. })
    })
    .await;
    assert!(
        matches!(
            m,
            OpMsg::PurgeDone {
                result: Ok((3, _)),
                event_id: Some(_)
            }
        ),
        "{m:?}"
    );
    assert_eq!(
        dlq_helpers::depth(&t.session, &format!("{ns}.dlq")).await,
        0
    );
    let _ = std::fs::remove_file(&path);

    // ── rollback: the decision point reaches the view; Abort ends it and says so ──
    s.handle_key("esc");
    s.handle_key("r");
    assert_eq!(s.view(), &View::Rollback { ns: ns.clone() });
    pump(&mut s, &runner, &mut rx, 30, |m| {
        matches!(m, OpMsg::RollbackDecision(_))
    })
    .await;
    let rb = s.ops.rollback.as_ref().unwrap();
    assert_eq!((rb.from.as_str(), rb.to.as_str()), ("v2", "v1"));
    assert_eq!(rb.stage, RbStage::Running);
    assert!(rb.decision.is_some() && s.modal());
    assert!(screen(&s).contains("Roll back (y)"));
    s.handle_key("a");
    assert_eq!(
        s.ops.requests.last(),
        Some(&OpRequest::RollbackDecide(Decision::Abort))
    );
    let m = pump(&mut s, &runner, &mut rx, 30, |m| {
        matches!(m, OpMsg::RollbackDone(_))
    })
    .await;
    let OpMsg::RollbackDone(r) = m else {
        unreachable!()
    };
    assert!(
        matches!(r.outcome, RollbackOutcome::Aborted { step: 0, .. }),
        "{:?}",
        r.outcome
    );
    assert!(screen(&s).contains("ABORTED at step 1"));

    // ── timeline and a note, from the ledger ──
    s.handle_key("t");
    pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::Timeline(_))
    })
    .await;
    let kinds: Vec<EventKind> = s.ops.timeline.entries.iter().map(|e| e.kind).collect();
    for k in [
        EventKind::GateSet,
        EventKind::Replay,
        EventKind::Purge,
        EventKind::RollbackStarted,
        EventKind::RollbackFinished,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    for k in [":", "n", "o", "t", "e", "space", "h", "i", "enter"] {
        s.handle_key(k);
    }
    pump(&mut s, &runner, &mut rx, 20, |m| {
        matches!(m, OpMsg::NoteAdded { .. })
    })
    .await;
    let session = common::connect(&t.cfg, "test").await;
    let l = Ledger::open(&session, &t.cfg).await;
    let notes: Vec<_> = l
        .read(StreamStart::First)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Note)
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].reason.as_deref(), Some("hi"));
    assert_eq!(notes[0].namespace.as_deref(), Some(ns.as_str()));

    // Every event on this console's feed was caused by it (gate, replay, purge, rollback,
    // note): each is recognised by its event or rollback id, none shown as someone else's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Msg::Op(m)) = rx.try_recv() {
        s.handle_msg(Msg::Op(m));
    }
    assert!(s.ops.feed.items.len() >= 5, "{:?}", s.ops.feed.items);
    let others: Vec<_> = s.ops.feed.items.iter().filter(|i| i.other).collect();
    assert!(
        others.is_empty(),
        "own events shown as someone else's: {others:?}"
    );
    feed1.abort();
    feed2.abort();
    drop(runner2);
    ledger::delete_stream(&session, &stream).await.unwrap();
    session.close().await;
    dlq_helpers::delete_queues(&t.session, &[&format!("{ns}.parked")]).await;
    t.cleanup().await;
}
