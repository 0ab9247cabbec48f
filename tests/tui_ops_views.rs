//! Snapshot tests of the console's operation views (gate panel, dead-letter browser, inspector,
//! timeline, rollback checklist, drill panel) on `TestBackend` at 80×24 and 120×40, from fixed
//! states reached through the real paths: keys through `handle_key`, answers of the ops runner
//! through `handle_msg(Msg::Op(..))`. Each test also asserts what the state *asked for* (the
//! requests the runner would execute), and every buffer is checked for characters a terminal
//! would interpret — the dead-letter fixtures are hostile payloads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hopback::app::keymap::Keymap;
use hopback::app::panels::{DlqDialog, GatePlan, GateStage};
use hopback::app::protocol::{OpMsg, OpRequest, ReplayScope, ReplayTarget};
use hopback::app::state::{AppState, Msg, View};
use hopback::broker::mover::{MoveCounts, MoveProgress, RunState};
use hopback::config::{self, Overrides};
use hopback::drill::fleet::{FleetStats, VersionStats};
use hopback::drill::score::{Accounting, Score, Timings};
use hopback::drill::{DrillResult, DrillStatus, Phase};
use hopback::ledger::event::{Event, EventKind, Outcome};
use hopback::model::ConnState;
use hopback::model::deadletter::{DeadLetterId, Digest, MessageView};
use hopback::model::gate::GateSplit;
use hopback::model::snapshot::{FleetSnapshot, NamespaceSnapshot, Rates, VersionSnapshot};
use hopback::model::xdeath::{Attribution, DeathEntry, Reason};
use hopback::ops::gate::ApplyReport;
use hopback::ops::plan::{DlqChoice, default_plan};
use hopback::ops::rollback::{
    Decision, DecisionKind, DecisionPoint, RollbackOutcome, StepState, Update,
};
use hopback::ui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const T0: i64 = 1_700_000_000_000;

fn cfg(extra: &str) -> config::Config {
    let text = if extra.is_empty() {
        String::new()
    } else {
        format!(
            "default_profile = \"p\"\n[profiles.p]\nurl = \"amqp://ops:s3cret@rabbit.prod:5672/%2f\"\n{extra}\n"
        )
    };
    let raw = config::parse(&text, &PathBuf::from("t.toml")).unwrap();
    config::resolve(raw, &PathBuf::from("t.toml"), true, &Overrides::default()).unwrap()
}

fn version(
    v: &str,
    weight: u32,
    ready: u64,
    consumers: u64,
    ack: f64,
    err: f64,
) -> VersionSnapshot {
    VersionSnapshot {
        version: v.into(),
        queue: format!("email.{v}"),
        exists: true,
        queue_type: Some("quorum".into()),
        weight,
        gate_percent: f64::from(weight),
        ready: Some(ready),
        unacked: Some(consumers),
        consumers: Some(consumers),
        rates: Some(Rates {
            publish: ack,
            deliver: ack,
            ack,
            redeliver: 0.0,
        }),
        dead_letter_rate: Some(err * 10.0),
        error_rate: Some(err),
        ..Default::default()
    }
}

fn snapshot(t: i64, v2_consumers: u64, unrouted: u64) -> FleetSnapshot {
    FleetSnapshot {
        taken_at_ms: t,
        server_version: Some("3.10.8".into()),
        mgmt_available: true,
        metrics_source: Some(hopback::model::metrics::MetricsSource::Management),
        metrics_note: None,
        mgmt_error: None,
        mgmt_refused: false,
        broker_alarms: Vec::new(),
        nodes: None,
        namespaces: vec![NamespaceSnapshot {
            name: "email".into(),
            convention: true,
            entry_exchange: "email".into(),
            entry_kind: Some("x-consistent-hash".into()),
            gate: Some(GateSplit::from_pairs([
                ("v1".into(), 90),
                ("v2".into(), 10),
            ])),
            versions: vec![
                version("v1", 90, 12, 3, 180.0, 0.0),
                version("v2", 10, 40, v2_consumers, 2.0, 0.9),
            ],
            dlq: "email.dlq".into(),
            dlq_depth: Some(240),
            unrouted: "email.unrouted".into(),
            unrouted_depth: Some(unrouted),
            ..Default::default()
        }],
    }
}

fn state_with(c: &config::Config, v2_consumers: u64, unrouted: u64) -> AppState {
    let mut s = AppState::new(c, Keymap::default(), T0);
    s.handle_msg(Msg::Conn(ConnState::Connected { since_ms: T0 }));
    s.handle_msg(Msg::Snapshot(Box::new(snapshot(
        T0,
        v2_consumers,
        unrouted,
    ))));
    s.handle_msg(Msg::Tick(T0 + 1_000));
    s.bell_pending = false;
    s.ops.host = "console-host".into();
    s
}

fn render(state: &AppState, w: u16, h: u16) -> Terminal<TestBackend> {
    let theme = Theme::builtin("dark", false).unwrap();
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| {
        hopback::ui::draw(f, state, &theme);
    })
    .unwrap();
    for cell in t.backend().buffer().content() {
        assert!(
            hopback::text::is_terminal_safe(cell.symbol()),
            "unsafe cell {:?}",
            cell.symbol()
        );
        for b in cell.symbol().bytes() {
            assert!(b >= 0x20 && b != 0x7f, "control byte {b:#x} in the buffer");
        }
        assert!(!cell.symbol().contains('\u{9b}') && !cell.symbol().contains('\u{202e}'));
    }
    t
}

fn both_sizes(name: &str, state: &AppState) -> String {
    let mut big = String::new();
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let t = render(state, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
        big = t.backend().to_string();
    }
    big
}

fn keys(s: &mut AppState, ks: &[&str]) {
    for k in ks {
        s.handle_key(k);
    }
}

// ───────────────────────────── gate ─────────────────────────────

/// A dry-run report as the runner sends it for a gate preview.
fn dry_run(steps: Vec<hopback::ops::gate::Step>, warnings: Vec<String>) -> ApplyReport {
    let before = GateSplit::from_pairs([("v1".into(), 90), ("v2".into(), 10)]);
    ApplyReport {
        namespace: "email".into(),
        before: before.clone(),
        target: before.clone(),
        after: before,
        steps,
        changed: false,
        dry_run: true,
        verified: false,
        warnings,
        event: None,
        elapsed_ms: 3.0,
        would_be_refused: None,
    }
}

fn binding(v: &str, key: &str) -> hopback::ops::gate::CurrentBinding {
    hopback::ops::gate::CurrentBinding {
        version: v.into(),
        key: key.into(),
    }
}

#[test]
fn gate_panel_presets_confirm_and_result() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("enter");
    s.handle_key("g");
    assert_eq!(s.view(), &View::Gate { ns: "email".into() });
    // The cursor starts on "all back to old" (issue 17), the current split is marked.
    assert_eq!(
        s.ops.gate.as_ref().unwrap().cursor,
        hopback::app::panels::gate::GATE_PRESETS.len()
    );
    let screen = both_sizes("gate_choose", &s);
    assert!(screen.contains("← current"));
    // "all back to old": the confirmation asks the runner for the dry-run plan…
    keys(&mut s, &["G", "enter"]);
    assert!(s.modal());
    let all_back = GateSplit::from_pairs([("v1".into(), 100)]);
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::GatePreview {
            ns: "email".into(),
            target: all_back.clone(),
            force_zero_consumers: false,
        }]
    );
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(screen.contains("plan: computing"), "{screen}");
    // …and shows exactly the plan the runner answers (here: the broker holds a doubled v1
    // binding, which the screen's split cannot know — so the plan is the runner's, not ours).
    s.handle_msg(Msg::Op(OpMsg::GatePreview {
        ns: "email".into(),
        target: all_back.clone(),
        result: Ok(Box::new(dry_run(
            hopback::ops::gate::plan_bindings(
                &[binding("v1", "90"), binding("v1", "45"), binding("v2", "10")],
                &all_back,
            ),
            vec!["repairing a doubly bound lone version leaves the entry exchange without bindings for a moment".into()],
        ))),
    }));
    // A late answer about another target is not shown.
    s.handle_msg(Msg::Op(OpMsg::GatePreview {
        ns: "email".into(),
        target: GateSplit::from_pairs([("v1".into(), 50), ("v2".into(), 50)]),
        result: Err("stale".into()),
    }));
    let GateStage::Confirm { plan, .. } = &s.ops.gate.as_ref().unwrap().stage else {
        panic!("not confirming")
    };
    let GatePlan::Ready { steps, .. } = plan else {
        panic!("{plan:?}")
    };
    // The doubled v1 binding is in the plan (the screen's split alone would not show it).
    assert!(steps.iter().any(|x| x == "unbind v1 (key 45)"), "{steps:?}");
    // The confirmation states before → after and both error rates.
    let screen = both_sizes("gate_confirm", &s);
    assert!(screen.contains("90 (90%) → 100 (100%)"), "{screen}");
    assert!(screen.contains("10 (10%) → 0 (off)"), "{screen}");
    assert!(screen.contains("unbind v1 (key 45)"), "{screen}");
    assert!(
        screen.contains("leaves the entry exchange without"),
        "{screen}"
    );
    assert!(
        screen.contains("error 90.0%") && screen.contains("error 0.0%"),
        "{screen}"
    );
    assert!(
        screen.contains("▶ Cancel ◀"),
        "focus must start on Cancel: {screen}"
    );
    // Compare-and-set (issue 18): Apply carries the split the dry run read from the broker.
    let GateStage::Confirm { dialog, .. } = &s.ops.gate.as_ref().unwrap().stage else {
        panic!("not confirming")
    };
    assert!(
        dialog.buttons.iter().any(|b| matches!(
            &b.action,
            Some(OpRequest::GateApply { expect_before: Some(seen), .. })
                if *seen == GateSplit::from_pairs([("v1".into(), 90), ("v2".into(), 10)])
        )),
        "{:?}",
        dialog.buttons
    );
    // Enter on the default focus cancels: nothing asked of the broker.
    s.handle_key("enter");
    assert!(s.take_requests().is_empty());
    assert!(!s.modal());
    // Again, Tab to Apply, Enter: one GateApply with the exact target, guard not overridden.
    keys(&mut s, &["enter", "tab", "enter"]);
    let req = s.take_requests();
    assert_eq!(
        req,
        vec![
            OpRequest::GatePreview {
                ns: "email".into(),
                target: all_back.clone(),
                force_zero_consumers: false,
            },
            OpRequest::GateApply {
                ns: "email".into(),
                target: all_back,
                force_zero_consumers: false,
                expect_before: None,
            }
        ]
    );
    // The runner answers: the result view shows the verification and the ledger event.
    let before = GateSplit::from_pairs([("v1".into(), 90), ("v2".into(), 10)]);
    let after = GateSplit::from_pairs([("v1".into(), 100)]);
    let mut ev = Event::new(EventKind::GateSet, Some("email"));
    ev.id = uuid::Uuid::parse_str("2f8e28bd-39bd-4c94-b213-c6cce38a05f2").unwrap();
    s.handle_msg(Msg::Op(OpMsg::GateApplied {
        ns: "email".into(),
        event_id: Some(ev.id.to_string()),
        result: Ok(Box::new(ApplyReport {
            namespace: "email".into(),
            steps: hopback::ops::gate::plan(&before, &after),
            before,
            target: after.clone(),
            after,
            changed: true,
            dry_run: false,
            verified: true,
            warnings: vec![],
            event: Some(ev),
            elapsed_ms: 41.0,
            would_be_refused: None,
        })),
    }));
    assert!(s.take_requests().contains(&OpRequest::Refresh));
    let screen = both_sizes("gate_result", &s);
    assert!(screen.contains("✔ verified"), "{screen}");
    assert!(screen.contains("ledger event 2f8e28bd"), "{screen}");
}

#[test]
fn gate_zero_consumer_guard_production_typed_and_unrouted() {
    let c = cfg("production = true");
    let mut s = state_with(&c, 0, 7);
    s.handle_key("enter");
    s.handle_key("g");
    // 100 % to v2, which has no consumers: the guard shows, Apply becomes an explicit override.
    keys(&mut s, &["G", "k", "enter"]);
    let to_v2 = GateSplit::from_pairs([("v1".into(), 0), ("v2".into(), 100)]);
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::GatePreview {
            ns: "email".into(),
            target: to_v2.clone(),
            force_zero_consumers: true,
        }]
    );
    s.handle_msg(Msg::Op(OpMsg::GatePreview {
        ns: "email".into(),
        target: to_v2.clone(),
        result: Ok(Box::new(dry_run(
            hopback::ops::gate::plan(
                &GateSplit::from_pairs([("v1".into(), 90), ("v2".into(), 10)]),
                &to_v2,
            ),
            vec!["zero-consumer guard overridden: v2 has no consumers; its tasks will wait in the queue".into()],
        ))),
    }));
    let screen = both_sizes("gate_guard_production", &s);
    assert!(screen.contains("ZERO-CONSUMER GUARD"), "{screen}");
    assert!(!screen.contains("guard overridden"), "{screen}");
    assert!(screen.contains("Override guard & apply"), "{screen}");
    assert!(
        screen.contains("PRODUCTION: type the namespace name"),
        "{screen}"
    );
    // Apply without typing the name: refused, still in the dialog, nothing asked.
    keys(&mut s, &["tab", "enter"]);
    assert!(s.take_requests().is_empty());
    assert!(
        s.message
            .as_ref()
            .unwrap()
            .text
            .contains("type the namespace name")
    );
    // Typing `q` and `g` does not quit or reopen anything: they are text here.
    keys(&mut s, &["e", "m", "a", "i", "l", "enter"]);
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::GateApply {
            ns: "email".into(),
            target: GateSplit::from_pairs([("v1".into(), 0), ("v2".into(), 100)]),
            force_zero_consumers: true,
            expect_before: Some(GateSplit::from_pairs([
                ("v1".into(), 90),
                ("v2".into(), 10)
            ])),
        }]
    );
    // Unrouted messages: R offers the replay through the entry exchange, with the count.
    s.handle_msg(Msg::Op(OpMsg::GateApplied {
        ns: "email".into(),
        result: Err("refusing to move traffic onto v2: 0 consumers — start workers first".into()),
        event_id: None,
    }));
    s.take_requests();
    s.handle_key("R");
    let screen = both_sizes("gate_unrouted", &s);
    assert!(
        screen.contains("Replay 7 message(s) from email.unrouted"),
        "{screen}"
    );
    keys(&mut s, &["tab", "enter"]);
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::ReplayUnrouted { ns: "email".into() }]
    );
}

#[test]
fn gate_read_only_shows_but_refuses() {
    let c = cfg("read_only = true");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("enter");
    s.handle_key("g");
    keys(&mut s, &["G", "enter", "tab", "enter"]);
    // The plan is still computed (a dry run changes nothing); the apply is never asked.
    let req = s.take_requests();
    assert!(
        matches!(&req[..], [OpRequest::GatePreview { .. }]),
        "read-only must not ask for a change: {req:?}"
    );
    let m = &s.message.as_ref().unwrap().text;
    assert!(m.contains("read-only"), "{m}");
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(screen.contains("applying will be refused"), "{screen}");
}

/// Issue 31: a flip refused because something squats the gate lock shows, in the gate panel,
/// what holds it and the way out — whole, not cut at the panel's edge.
#[test]
fn gate_refused_by_a_squatted_lock_names_the_holder_and_the_way_out() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("enter");
    s.handle_key("g");
    keys(&mut s, &["G", "enter", "tab", "enter"]);
    s.take_requests();
    let squatter = hopback::model::gate_lock::GateLock {
        queue: "email.gate-lock".into(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        owner_connection: None,
        owner_user: None,
        owner_client_name: None,
        messages: Some(0),
        consumers: Some(0),
    };
    let refusal = hopback::ops::gate::refusal_while_held("email", &squatter);
    s.handle_msg(Msg::Op(OpMsg::GateApplied {
        ns: "email".into(),
        result: Err(refusal.into()),
        event_id: None,
    }));
    for (w, h) in [(120, 40), (80, 24)] {
        let screen = render(&s, w, h).backend().to_string();
        // Rows of the panel joined: the message may wrap.
        let joined = screen
            .lines()
            .map(|l| l.trim_matches('"').trim())
            .collect::<Vec<_>>()
            .join(" ");
        for want in [
            "squatted",
            "durable, not exclusive",
            "hopback gate unlock email",
        ] {
            assert!(joined.contains(want), "{w}x{h}: `{want}` missing: {screen}");
        }
    }
}

// ───────────────────────────── dead letters ─────────────────────────────

fn hostile_bodies() -> Vec<Vec<u8>> {
    let mut big = b"{\"big\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'A', 10 * 1024 * 1024));
    big.extend(b"\"}");
    vec![
        b"{\"to\":\"a@example.com\",\"x\":\"\x1b]52;c;aGVsbG8=\x07\"}".to_vec(),
        b"click \x1b]8;;https://evil.example/\x1b\\here\x1b]8;;\x1b\\".to_vec(),
        b"wipe \x1b[2J\x1b[6n and reset \x1bc".to_vec(),
        b"c1 \xc2\x9b31m csi and \xe2\x80\xae txt.exe".to_vec(),
        b"raw 0x9b \x9b and invalid \xff\xfe utf-8".to_vec(),
        big,
    ]
}

fn dead(position: u64, body: Vec<u8>, origin: &str, reason: Reason) -> MessageView {
    let len = body.len();
    MessageView {
        position,
        properties: vec![
            ("message_id".into(), format!("id-{position}\x1b[6n")),
            ("content_type".into(), "application/json".into()),
        ],
        headers: vec![
            (
                "x-exception".into(),
                "ValueError: bad \x1b[31mred\x1b[0m".into(),
            ),
            ("x-hopback-replays".into(), "1".into()),
        ],
        attribution: Attribution {
            origin_queue: Some(origin.into()),
            reason: reason.clone(),
            deaths: vec![DeathEntry {
                queue: origin.into(),
                reason,
                count: 1,
                exchange: "email".into(),
                routing_keys: vec!["k\u{202e}".into()],
                time: Some(T0 / 1000 - 90),
            }],
            replays: 1,
        },
        body,
        body_len: len,
        redelivered: false,
        message_id: Some(format!("id-{position}\x1b[6n")),
        content_type: Some("application/json".into()),
        timestamp: None,
        lossless: None,
        unreadable: None,
        digest: Some(Digest([position as u8; 32])),
    }
}

/// The identity `dead(position, …)` has.
fn dead_id(position: u64) -> DeadLetterId {
    DeadLetterId {
        message_id: Some(format!("id-{position}\x1b[6n")),
        digest: Digest([position as u8; 32]),
    }
}

fn dlq_state() -> AppState {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("enter");
    s.handle_key("d");
    assert_eq!(s.view(), &View::DeadLetters { ns: "email".into() });
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::DlqLoad {
            ns: "email".into(),
            page: 0,
            page_size: 200
        }]
    );
    let mut msgs: Vec<MessageView> = hostile_bodies()
        .into_iter()
        .enumerate()
        .map(|(i, b)| dead(i as u64, b, "email.v2", Reason::Rejected))
        .collect();
    msgs.push(dead(6, b"late".to_vec(), "email.v1", Reason::Expired));
    // The browser keeps at most 4 KiB of body per message, as `browse_page` does.
    for m in &mut msgs {
        m.body.truncate(4096);
    }
    s.handle_msg(Msg::Op(OpMsg::DlqPage {
        ns: "email".into(),
        page: 0,
        depth: Some(7),
        result: Ok(msgs),
    }));
    s
}

#[test]
fn dead_letters_groups_messages_and_hostile_payloads() {
    let mut s = dlq_state();
    let screen = both_sizes("dlq_groups", &s);
    assert!(screen.contains("v2") && screen.contains("v1"), "{screen}");
    let d = s.ops.dlq.as_ref().unwrap();
    assert_eq!(d.groups[0].key, "v2");
    assert_eq!(d.groups[0].count, 6);
    s.handle_key("enter");
    let screen = both_sizes("dlq_messages_hostile", &s);
    assert!(
        screen.contains("␛]52;c;"),
        "escape shown, not emitted: {screen}"
    );
    // Select two messages, replay the selection to origin: the dialog states the counts.
    keys(&mut s, &["space", "space", "R"]);
    assert!(s.modal());
    let screen = both_sizes("dlq_replay_dialog", &s);
    assert!(screen.contains("selected — 2 message(s)"), "{screen}");
    assert!(screen.contains("origin queue"), "{screen}");
    keys(&mut s, &["enter"]);
    assert!(s.take_requests().is_empty(), "focus starts on Cancel");
    // The default target is the healthy version with the most traffic (issue 17), never a
    // failing one; ↑ to the origin queue.
    keys(&mut s, &["R", "tab", "enter"]);
    let req = s.take_requests();
    assert_eq!(
        req,
        vec![OpRequest::DlqReplay {
            ns: "email".into(),
            scope: ReplayScope::Ids(vec![dead_id(0), dead_id(1)]),
            target: ReplayTarget::Version("v1".into()),
        }]
    );
    // Focus: Cancel → Replay → which → to; ↑ picks the origin; → Cancel → Replay.
    keys(&mut s, &["R", "tab", "tab", "tab"]);
    // Where the keys go is written, not only coloured: ▶ on the focused group and its choice.
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(screen.contains("▶ to:"), "{screen}");
    assert!(screen.contains("▶(•) version v1"), "{screen}");
    assert!(!screen.contains("▶ which:"), "{screen}");
    keys(&mut s, &["up", "tab", "tab", "enter"]);
    let req = s.take_requests();
    assert!(
        matches!(
            &req[..],
            [OpRequest::DlqReplay {
                target: ReplayTarget::Origin,
                ..
            }]
        ),
        "{req:?}"
    );
    // Progress of the replay, pause and stop.
    s.handle_msg(Msg::Op(OpMsg::MoveStarted {
        ns: "email".into(),
        title: "replay 2 selected dead letter(s) to each message's origin queue".into(),
        parts: 2,
    }));
    s.handle_msg(Msg::Op(OpMsg::MoveProgress {
        progress: MoveProgress {
            counts: MoveCounts {
                moved: 1,
                ..Default::default()
            },
            total: Some(2),
            rate_per_s: 10.0,
            eta_s: Some(0.1),
            state: RunState::Running,
            connected: true,
        },
        part: 2,
    }));
    s.handle_key("p");
    assert_eq!(s.take_requests(), vec![OpRequest::MovePause]);
    let screen = both_sizes("dlq_replay_progress", &s);
    assert!(screen.contains("paused 2/2"), "{screen}");
    s.handle_key("x");
    assert_eq!(s.take_requests(), vec![OpRequest::MoveStop]);
}

#[test]
fn inspector_text_json_hex_and_export() {
    let mut s = dlq_state();
    keys(&mut s, &["enter", "j", "j", "enter"]);
    assert_eq!(s.view(), &View::Inspector { ns: "email".into() });
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::DlqInspect {
            ns: "email".into(),
            id: dead_id(2)
        }]
    );
    let full = hostile_bodies().remove(2);
    s.handle_msg(Msg::Op(OpMsg::Inspected {
        ns: "email".into(),
        id: dead_id(2),
        result: Ok(Some(Box::new(dead(2, full, "email.v2", Reason::Rejected)))),
    }));
    let screen = both_sizes("inspector_text", &s);
    assert!(screen.contains("␛[2J"), "{screen}");
    assert!(screen.contains("x-death history"), "{screen}");
    assert!(
        screen.contains("replays (x-hopback-replays): 1"),
        "{screen}"
    );
    keys(&mut s, &["b", "b", "b"]);
    let screen = both_sizes("inspector_hex", &s);
    assert!(screen.contains("1b 5b 32 4a"), "hex of ESC[2J: {screen}");
    s.handle_key("e");
    let req = s.take_requests();
    assert!(
        matches!(
            &req[..],
            [OpRequest::DlqExport {
                id,
                message: Some(_),
                ..
            }] if *id == dead_id(2)
        ),
        "{req:?}"
    );
    // The 10 MB body: only a bounded part is rendered, and it says so.
    s.handle_key("esc");
    keys(&mut s, &["j", "j", "j", "enter"]);
    s.take_requests();
    s.handle_msg(Msg::Op(OpMsg::Inspected {
        ns: "email".into(),
        id: dead_id(5),
        result: Ok(Some(Box::new(dead(
            5,
            hostile_bodies().remove(5),
            "email.v2",
            Reason::Rejected,
        )))),
    }));
    let i = s.ops.inspector.as_ref().unwrap();
    assert!(i.lines.len() < 200, "{} lines", i.lines.len());
    keys(&mut s, &["G"]);
    let screen = both_sizes("inspector_10mb", &s);
    assert!(screen.contains("more bytes not shown"), "{screen}");
}

#[test]
fn purge_needs_the_typed_count() {
    let mut s = dlq_state();
    s.handle_key("P");
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::PurgePrepare { ns: "email".into() }]
    );
    s.handle_msg(Msg::Op(OpMsg::PurgePrepared(Ok((
        7,
        PathBuf::from("/data/exports/email.dlq-20231114T221320.000Z.jsonl"),
    )))));
    let screen = both_sizes("dlq_purge", &s);
    assert!(screen.contains("type 7 to confirm"), "{screen}");
    // Letters are ignored (digits only), a wrong count is refused.
    keys(&mut s, &["q", "6", "tab", "enter"]);
    assert!(s.take_requests().is_empty());
    keys(&mut s, &["backspace", "7", "enter"]);
    assert_eq!(s.take_requests(), vec![OpRequest::PurgeCommit]);
    assert!(matches!(
        s.ops.dlq.as_ref().unwrap().dialog,
        Some(DlqDialog::Purging { count: 7 })
    ));
    // Esc on a prepared purge puts everything back.
    let mut s = dlq_state();
    s.handle_key("P");
    s.take_requests();
    s.handle_msg(Msg::Op(OpMsg::PurgePrepared(Ok((
        7,
        PathBuf::from("/x.jsonl"),
    )))));
    s.handle_key("esc");
    assert_eq!(s.take_requests(), vec![OpRequest::PurgeAbort]);
}

// ───────────────────────────── timeline ─────────────────────────────

fn event(kind: EventKind, ns: Option<&str>, min: i64, op: &str) -> Event {
    let mut e = Event::new(kind, ns);
    e.ts = chrono::DateTime::from_timestamp(T0 / 1000 + min * 60, 0).unwrap();
    e.operator = op.into();
    e.host = "elsewhere".into();
    e.id = uuid::Uuid::from_u128(min as u128 + 1);
    // As read back from the stream: the broker-verified author.
    e.author = Some("guest".into());
    e
}

#[test]
fn timeline_and_live_events_from_others() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("t");
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::TimelineLoad { ns: None }]
    );
    let mut gate = event(EventKind::GateSet, Some("email"), 1, "alice");
    gate.params = serde_json::json!({"target": {"v1": 90, "v2": 10}});
    gate.before = serde_json::json!({"gate": {"v1": 100}});
    gate.after = serde_json::json!({"gate": {"v1": 90, "v2": 10}});
    let mut note = event(EventKind::Note, Some("email"), 2, "bob");
    note.reason = Some("v2 canary looks \x1b[31mbad\x1b[0m".into());
    let mut failed = event(EventKind::Replay, Some("email"), 3, "alice");
    failed.outcome = Outcome::Failed;
    failed.reason = Some("target queue does not exist".into());
    let entries =
        hopback::ledger::projection::timeline([&gate, &note, &failed], &Default::default());
    s.handle_msg(Msg::Op(OpMsg::Timeline(Ok(entries))));
    // Someone else flips a gate: it shows in the status line and lands in the timeline.
    let mut flip = event(EventKind::GateSet, Some("email"), 4, "carol");
    flip.before = serde_json::json!({"gate": {"v1": 90, "v2": 10}});
    flip.after = serde_json::json!({"gate": {"v1": 100}});
    s.handle_msg(Msg::Op(OpMsg::Ledger(Box::new(flip))));
    let m = s.message.as_ref().unwrap().text.clone();
    assert!(
        m.contains("carol") && m.contains("flipped the gate of email"),
        "{m}"
    );
    assert_eq!(s.ops.timeline.entries.len(), 4);
    let screen = both_sizes("timeline", &s);
    assert!(screen.contains("carol"), "{screen}");
    assert!(!screen.contains("UNVERIFIED"), "{screen}");
    // `:note text` asks the runner to append a note about the timeline's namespace.
    for k in [
        ":", "n", "o", "t", "e", "space", "p", "a", "g", "e", "d", "enter",
    ] {
        s.handle_key(k);
    }
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::Note {
            ns: None,
            text: "paged".into()
        }]
    );
    // Our own events are recognised by the id the runner reported, not by name or time.
    let mut own = event(EventKind::Replay, Some("email"), 5, &s.ops.operator.clone());
    own.host = s.ops.host.clone();
    s.handle_msg(Msg::Op(OpMsg::MoveDone {
        ns: "email".into(),
        summary: "replay …: done".into(),
        failed: false,
        event_id: Some(own.id.to_string()),
    }));
    s.message = None;
    s.handle_msg(Msg::Op(OpMsg::Ledger(Box::new(own))));
    assert!(s.message.is_none(), "{:?}", s.message);
    assert!(!s.ops.feed.items.back().unwrap().other);
    // Same operator, same host, an id this console never got: another console's act.
    let mut twin = event(
        EventKind::GateSet,
        Some("email"),
        6,
        &s.ops.operator.clone(),
    );
    twin.host = s.ops.host.clone();
    s.handle_msg(Msg::Op(OpMsg::Ledger(Box::new(twin.clone()))));
    assert!(s.message.as_ref().unwrap().text.contains("(elsewhere)"));
    assert!(s.ops.feed.items.back().unwrap().other);
    // …unless its answer arrives after the echo: then it is re-marked and the warning withdrawn.
    s.handle_msg(Msg::Op(OpMsg::NoteAdded {
        result: Err("x".into()),
        event_id: Some(twin.id.to_string()),
    }));
    assert!(!s.ops.feed.items.back().unwrap().other);
}

// ───────────────────────────── rollback ─────────────────────────────

fn rollback_state() -> AppState {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("r");
    assert_eq!(s.view(), &View::Rollback { ns: "email".into() });
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::RollbackCheck { ns: "email".into() }]
    );
    s.handle_msg(Msg::Op(OpMsg::RollbackResumable {
        ns: "email".into(),
        candidates: vec![],
    }));
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::RollbackStart {
            ns: "email".into(),
            from: "v2".into(),
            to: "v1".into()
        }]
    );
    let plan = default_plan("v2", "v1", Duration::from_secs(10));
    let names = hopback::topology::Namespace::convention("email");
    s.handle_msg(Msg::Op(OpMsg::Rollback(Box::new(Update::Started {
        rollback_id: "1a2b3c4d".into(),
        descriptions: plan.steps.iter().map(|s| s.kind.describe(&names)).collect(),
        plan,
        evidence: vec![
            "email.v1: 12 ready, 3 consumer(s)".into(),
            "email.v2: 40 ready, 1 consumer(s)".into(),
            "email.dlq: 240 dead letter(s) at rest".into(),
            "gate: v1=90 v2=10".into(),
        ],
    }))));
    s
}

#[test]
fn rollback_decision_point_and_each_step_state() {
    let mut s = rollback_state();
    s.handle_msg(Msg::Op(OpMsg::RollbackDecision(Box::new(DecisionPoint {
        rollback_id: "1a2b3c4d".into(),
        step_index: 0,
        step_title: "decide".into(),
        kind: DecisionKind::Confirm,
        question: "Roll email back from v2 to v1?".into(),
        evidence: vec!["v2 error rate 90.0% over 30 s".into()],
    }))));
    assert!(s.modal());
    let screen = both_sizes("rollback_decision", &s);
    assert!(
        screen.contains("Roll back (y)") && screen.contains("Abort (a)"),
        "{screen}"
    );
    assert!(
        !screen.contains("Skip"),
        "no Skip at the first question: {screen}"
    );
    // Issue 17: `s` (sort, elsewhere) answers nothing here — the gate cannot change by it.
    s.handle_key("s");
    assert_eq!(s.take_requests(), vec![]);
    assert!(s.modal());
    s.handle_key("y");
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::RollbackDecide(Decision::Continue)]
    );
    // done / already done / skipped / running with progress / failed / pending, all at once.
    let steps = s.ops.rollback.as_ref().unwrap().steps.len();
    assert!(steps >= 6, "{steps}");
    let states = [
        (0, StepState::Done, "confirmed"),
        (1, StepState::AlreadyDone, "gate already v1=100"),
        (2, StepState::Skipped, "skipped by the operator"),
    ];
    for (i, st, d) in states {
        s.handle_msg(Msg::Op(OpMsg::Rollback(Box::new(Update::Step {
            index: i,
            state: st,
            detail: d.into(),
        }))));
    }
    s.handle_msg(Msg::Op(OpMsg::Rollback(Box::new(Update::Step {
        index: 3,
        state: StepState::Running,
        detail: String::new(),
    }))));
    s.handle_msg(Msg::Op(OpMsg::Rollback(Box::new(Update::Progress {
        index: 3,
        done: 30,
        total: Some(40),
    }))));
    s.handle_msg(Msg::Op(OpMsg::Rollback(Box::new(Update::Step {
        index: 4,
        state: StepState::Failed,
        detail: "replay failed: target queue missing".into(),
    }))));
    let screen = both_sizes("rollback_states", &s);
    for m in ["[✔]", "[↷]", "[…]", "[✘]", "[ ]", "30/40"] {
        assert!(screen.contains(m), "{m} missing: {screen}");
    }
    // Dead-letter choice at a decision point.
    s.handle_msg(Msg::Op(OpMsg::RollbackDecision(Box::new(DecisionPoint {
        rollback_id: "1a2b3c4d".into(),
        step_index: 4,
        step_title: "dead letters of v2".into(),
        kind: DecisionKind::DlqChoice,
        question: "240 dead letters from v2: replay them to v1, keep them, or export them?".into(),
        evidence: vec![],
    }))));
    keys(&mut s, &["tab", "tab", "enter"]);
    let asked: Vec<OpRequest> = s
        .take_requests()
        .into_iter()
        .filter(|r| *r != OpRequest::Refresh)
        .collect();
    assert_eq!(
        asked,
        vec![OpRequest::RollbackDecide(Decision::Choose(
            DlqChoice::Export
        ))]
    );
    // Abort: the outcome says which state it left.
    s.handle_msg(Msg::Op(OpMsg::RollbackDone(Box::new(
        hopback::ops::rollback::RollbackReport {
            rollback_id: "1a2b3c4d".into(),
            namespace: "email".into(),
            plan: "default".into(),
            resumed: false,
            steps: vec![],
            outcome: RollbackOutcome::Aborted {
                step: 4,
                state: "gate v1=100; v2 drained; 240 dead letters still in email.dlq".into(),
            },
        },
    ))));
    let screen = both_sizes("rollback_aborted", &s);
    assert!(screen.contains("ABORTED at step 5"), "{screen}");
    assert!(screen.contains("rollback --resume 1a2b3c4d"), "{screen}");
}

#[test]
fn rollback_offers_to_resume() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("r");
    s.take_requests();
    s.handle_msg(Msg::Op(OpMsg::RollbackResumable {
        ns: "email".into(),
        candidates: vec![(
            "9f8e7d6c".into(),
            "rollback 9f8e7d6c v2 → v1, started 2023-11-14 22:10 UTC by alice, stopped at step 4 (drain)".into(),
        )],
    }));
    assert!(s.modal());
    let screen = both_sizes("rollback_resume_offer", &s);
    assert!(screen.contains("Resume rollback 9f8e7d6c"), "{screen}");
    // Issue 18: the default is Cancel — resuming a rollback read from the ledger is a choice.
    assert!(screen.contains("▶ Cancel ◀"), "{screen}");
    keys(&mut s, &["up", "up", "enter"]);
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::RollbackResume {
            id: "9f8e7d6c".into()
        }]
    );
    // At console start, an unfinished rollback found in the ledger is offered right away.
    let mut s = state_with(&cfg(""), 1, 0);
    s.handle_msg(Msg::Op(OpMsg::UnfinishedRollbacks(vec![(
        "email".into(),
        "9f8e7d6c".into(),
        "rollback 9f8e7d6c v2 → v1, stopped at step 4 (drain)".into(),
    )])));
    assert_eq!(s.view(), &View::Rollback { ns: "email".into() });
    assert!(s.modal());
    keys(&mut s, &["up", "enter"]);
    assert_eq!(
        s.take_requests(),
        vec![OpRequest::RollbackStart {
            ns: "email".into(),
            from: "v2".into(),
            to: "v1".into()
        }]
    );
    // Read-only profiles refuse before anything is asked.
    let c = cfg("read_only = true");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("r");
    assert!(s.take_requests().is_empty());
    assert!(s.message.as_ref().unwrap().text.contains("read-only"));
}

// ───────────────────────────── drill ─────────────────────────────

fn drill_status(phase: Phase, score: Option<Score>) -> DrillStatus {
    let mut per_version = BTreeMap::new();
    per_version.insert(
        "v1".to_string(),
        VersionStats {
            processed: 1520,
            workers_connected: 2,
            ..Default::default()
        },
    );
    per_version.insert(
        "v2".to_string(),
        VersionStats {
            processed: 310,
            rejected: 95,
            workers_connected: 1,
            ..Default::default()
        },
    );
    DrillStatus {
        id: "abcd1234".into(),
        namespace: "drill-abcd1234".into(),
        scenario: if score.is_some() {
            "poison".into()
        } else {
            "hidden".into()
        },
        phase,
        fleet: FleetStats {
            elapsed_ms: 52_000,
            fault_at_ms: Some(25_000),
            published: 1930,
            duplicates_skipped: 3,
            per_version,
            ..Default::default()
        },
        timings: Timings {
            fault_at_ms: Some(25_000),
            first_action_at_ms: Some(37_500),
            gate_off_v2_at_ms: None,
            last_v2_failure_at_ms: Some(51_000),
        },
        score,
        rollback_open: false,
    }
}

#[test]
fn drill_panel_running_and_score() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.ops.drill = Some(Default::default());
    let mut snap = snapshot(T0 + 2000, 1, 0);
    snap.namespaces[0].name = "drill-abcd1234".into();
    s.handle_msg(Msg::Snapshot(Box::new(snap)));
    s.handle_msg(Msg::Op(OpMsg::Drill(Box::new(drill_status(
        Phase::Incident,
        None,
    )))));
    assert_eq!(
        s.view(),
        &View::Namespace {
            ns: "drill-abcd1234".into()
        }
    );
    let screen = both_sizes("drill_incident", &s);
    assert!(screen.contains("scenario hidden"), "{screen}");
    // Issue 17: the fault's time (and anything that gives it away) waits for the end.
    assert!(screen.contains("shown at the end"), "{screen}");
    assert!(
        !screen.contains("fault at") && !screen.contains("INCIDENT"),
        "{screen}"
    );
    // The rollback view during a drill (the capture in assets/drill.txt shows the live one).
    let score: Score = hopback::drill::score::score(
        "poison",
        &hopback::drill::score::Timings {
            fault_at_ms: Some(0),
            first_action_at_ms: Some(12_500),
            gate_off_v2_at_ms: Some(19_000),
            last_v2_failure_at_ms: None,
        },
        Accounting {
            published: 1930,
            processed: 1830,
            dead_lettered: 95,
            parked: 0,
            still_queued: 5,
            lost: 0,
            ..Default::default()
        },
        0,
    );
    let status = drill_status(Phase::Done, Some(score.clone()));
    s.handle_msg(Msg::Op(OpMsg::DrillDone(Ok(Box::new(DrillResult {
        status,
        score,
        rollback: None,
        canary: None,
        postmortem_path: Some("/data/postmortem-drill-abcd1234.md".into()),
        postmortem: "# Post-mortem\n".into(),
        ledger: "stream".into(),
        kept: false,
    })))));
    assert!(s.modal());
    let screen = both_sizes("drill_score", &s);
    // 100 − 1 (detected after 12.5 s) − 9 (95 dead letters left un-replayed), explained.
    assert!(screen.contains("score 90 / 100"), "{screen}");
    assert!(screen.contains("−1  detection: 12.5 s"), "{screen}");
    assert!(
        screen.contains("−9  dead letters left: 95 left un-replayed"),
        "{screen}"
    );
    assert!(screen.contains("fault at 25.0 s"), "{screen}");
    assert!(screen.contains("0 LOST"), "{screen}");
    s.handle_key("w");
    let req = s.take_requests();
    assert!(
        matches!(&req[..], [OpRequest::WritePostmortem { path, text }]
            if path == &PathBuf::from("postmortem-drill-abcd1234.md") && text.starts_with("# Post-mortem")),
        "{req:?}"
    );
}

/// Issue 17: a running step can be stopped — `x` in the rollback view asks the engine to stop,
/// and says what happens; with no rollback running it asks nothing.
#[test]
fn x_stops_the_running_rollback_step() {
    let mut s = rollback_state();
    s.handle_msg(Msg::Op(OpMsg::Rollback(Box::new(Update::Step {
        index: 3,
        state: StepState::Running,
        detail: String::new(),
    }))));
    s.handle_key("x");
    let asked: Vec<OpRequest> = s
        .take_requests()
        .into_iter()
        .filter(|r| *r != OpRequest::Refresh)
        .collect();
    assert_eq!(asked, vec![OpRequest::RollbackStop]);
    let msg = s
        .message
        .as_ref()
        .map(|m| m.text.clone())
        .unwrap_or_default();
    assert!(msg.contains("stopping the running step"), "{msg}");
    // Finished: `x` no longer reaches the engine.
    s.handle_msg(Msg::Op(OpMsg::RollbackDone(Box::new(
        hopback::ops::rollback::RollbackReport {
            rollback_id: "1a2b3c4d".into(),
            namespace: "email".into(),
            plan: "default".into(),
            resumed: false,
            steps: vec![],
            outcome: RollbackOutcome::Done,
        },
    ))));
    s.handle_key("x");
    assert!(!s.take_requests().contains(&OpRequest::RollbackStop));
}

/// Issue 17: with v2 failing, the replay dialog defaults to the healthy v1 and marks v2 (and the
/// origin, which would hand v2 its own dead letters back) as failing; the gate confirmation
/// says in words when a change moves traffic onto the failing version.
#[test]
fn failing_versions_are_never_defaults_and_always_warned() {
    let raw = config::parse(
        "[alerts]\nerror_rate_window_s = 0\n",
        &PathBuf::from("t.toml"),
    )
    .unwrap();
    let c = config::resolve(raw, &PathBuf::from("t.toml"), true, &Overrides::default()).unwrap();
    let mut s = state_with(&c, 1, 0);
    assert!(
        s.alerts
            .active
            .iter()
            .any(|a| a.version.as_deref() == Some("v2") && a.kind.tag() == "error"),
        "{:?}",
        s.alerts.active
    );
    s.handle_key("enter");
    s.handle_key("d");
    s.take_requests();
    s.handle_msg(Msg::Op(OpMsg::DlqPage {
        ns: "email".into(),
        page: 0,
        depth: Some(1),
        result: Ok(vec![dead(0, b"x".to_vec(), "email.v2", Reason::Rejected)]),
    }));
    s.handle_key("R");
    assert!(s.modal());
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        screen.contains("version v2 ⚠ v2 is failing (error rate 90%)"),
        "{screen}"
    );
    assert!(
        screen.contains("a failing version gets its own dead letters back"),
        "{screen}"
    );
    assert!(screen.contains("in the DLQ → version v1"), "{screen}");
    keys(&mut s, &["esc", "esc", "esc", "g"]);
    assert_eq!(s.view(), &View::Gate { ns: "email".into() });
    // From "all back to old" one up: 100 % to the new version (v2, failing).
    keys(&mut s, &["k", "enter"]);
    assert!(s.modal());
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        screen.contains("this moves traffic ONTO v2, which is failing (error rate 90%)"),
        "{screen}"
    );
    // "All back to old" moves traffic off v2: no such warning.
    keys(&mut s, &["esc", "G", "enter"]);
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(!screen.contains("moves traffic ONTO"), "{screen}");
}

/// Issue 37: a version failing *now* — before its error-rate alert's window has passed — is
/// never the replay dialog's default either, and is marked.
#[test]
fn a_version_failing_before_its_alert_window_is_not_the_replay_default() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    assert!(
        !s.alerts.active.iter().any(|a| a.kind.tag() == "error"),
        "the 30 s window has not passed: {:?}",
        s.alerts.active
    );
    s.handle_key("enter");
    s.handle_key("d");
    s.take_requests();
    s.handle_msg(Msg::Op(OpMsg::DlqPage {
        ns: "email".into(),
        page: 0,
        depth: Some(1),
        result: Ok(vec![dead(0, b"x".to_vec(), "email.v2", Reason::Rejected)]),
    }));
    s.handle_key("R");
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        screen.contains("version v2 ⚠ v2 is failing (error rate 90% now)"),
        "{screen}"
    );
    assert!(screen.contains("in the DLQ → version v1"), "{screen}");
}

/// Issue 17: a console drill waits for "press Enter to start" — nothing is created before;
/// Esc on the start screen quits without creating anything.
#[test]
fn drill_waits_for_enter_to_start() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.ops.drill = Some(hopback::app::panels::DrillPanel::waiting());
    assert!(s.modal());
    let screen = both_sizes("drill_start", &s);
    assert!(screen.contains("Start the drill"), "{screen}");
    assert!(screen.contains("press Enter to start"), "{screen}");
    // Global keys do nothing on the start screen (it is modal): no rollback, no gate.
    s.handle_key("r");
    s.handle_key("g");
    assert!(s.take_requests().is_empty());
    s.handle_key("enter");
    assert_eq!(s.take_requests(), vec![OpRequest::DrillStart]);
    assert!(!s.modal());
    s.ops.drill = Some(hopback::app::panels::DrillPanel::waiting());
    s.handle_key("esc");
    assert_eq!(s.take_requests(), vec![OpRequest::DrillQuit]);
}

/// Issue 17: gate presets for every version pair — `]` / `[` cycle (v1→v3, v2→v3, v1→v2).
#[test]
fn gate_presets_cover_every_version_pair() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    let mut snap = snapshot(T0 + 2_000, 1, 0);
    snap.namespaces[0]
        .versions
        .push(version("v3", 0, 5, 1, 0.0, 0.0));
    s.handle_msg(Msg::Snapshot(Box::new(snap)));
    s.handle_key("enter");
    s.handle_key("g");
    let pair = |s: &AppState| {
        let g = s.ops.gate.as_ref().unwrap();
        (g.old.clone(), g.new.clone())
    };
    assert_eq!(pair(&s), ("v1".into(), "v3".into()));
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        screen.contains("move traffic from v1 to v3 · ]/[ other pairs"),
        "{screen}"
    );
    // A row that moves traffic is not kept across a pair switch: the cursor goes back to
    // "all back to old".
    keys(&mut s, &["home"]);
    s.handle_key("]");
    assert_eq!(pair(&s), ("v2".into(), "v3".into()));
    let g = s.ops.gate.as_ref().unwrap();
    assert_eq!(g.cursor, g.preset_labels().len() - 1, "cursor after ]");
    s.handle_key("]");
    assert_eq!(pair(&s), ("v1".into(), "v2".into()));
    s.handle_key("[");
    assert_eq!(pair(&s), ("v2".into(), "v3".into()));
    // The presets follow the pair: "100 % to v3" from v2.
    keys(&mut s, &["home"]);
    let target = s.ops.gate.as_ref().unwrap().preset_target(6);
    assert_eq!(
        target,
        GateSplit::from_pairs([("v2".into(), 0), ("v3".into(), 100)])
    );
}

/// The live feed's "down" mark goes once the feed has subscribed again (it stayed for the rest
/// of the run: a lost connection marked it and nothing cleared it).
#[test]
fn the_live_feed_mark_follows_the_feed() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("t");
    s.take_requests();
    s.handle_msg(Msg::Op(OpMsg::LedgerDown("connection lost".into())));
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(screen.contains("live feed down"), "{screen}");
    s.handle_msg(Msg::Op(OpMsg::LedgerUp));
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        !screen.contains("live feed down") && screen.contains(" · live "),
        "{screen}"
    );
}

/// Issue 18: an event no broker user vouches for (no AMQP user_id: written by anything but
/// hopback) is shown as UNVERIFIED wherever its author appears — first, so a cut column keeps it.
#[test]
fn unverified_events_are_marked() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    s.handle_key("t");
    s.take_requests();
    let mut forged = event(EventKind::GateSet, Some("email"), 6, "admin");
    forged.author = None;
    forged.after = serde_json::json!({"gate": {"v2": 100}});
    s.handle_msg(Msg::Op(OpMsg::Ledger(Box::new(forged))));
    // A name longer than the timeline's WHO column keeps the mark (it comes first).
    let mut long = event(EventKind::Note, Some("email"), 7, "alice@bastion-1");
    long.author = None;
    s.handle_msg(Msg::Op(OpMsg::Ledger(Box::new(long))));
    for (w, h) in [(120, 40), (80, 24)] {
        let screen = render(&s, w, h).backend().to_string();
        let rows: Vec<&str> = screen
            .lines()
            .filter(|l| l.contains(" email ") && !l.contains("WHO"))
            .collect();
        assert!(rows.len() >= 2, "{w}x{h}: {screen}");
        for row in rows {
            assert!(row.contains("UNVERIF"), "{w}x{h}: {row}");
        }
    }
}

/// `:gate NS`, `:dlq NS` and `:rollback NS` of a namespace the last refresh does not have (a
/// typo): nothing opens — no gate presets offered for a namespace that is not there — and the
/// status line names it.
#[test]
fn typed_panels_of_a_missing_namespace_do_not_open() {
    let c = cfg("");
    let mut s = state_with(&c, 1, 0);
    let typed = |s: &mut AppState, line: &str| {
        s.handle_key(":");
        for ch in line.chars() {
            let key = if ch == ' ' {
                "space".to_string()
            } else {
                ch.to_string()
            };
            s.handle_key(&key);
        }
        s.handle_key("enter");
    };
    for cmd in ["gate emial", "dlq emial", "rollback emial"] {
        typed(&mut s, cmd);
        assert_eq!(s.view(), &View::Overview, "`:{cmd}` opened something");
        let screen = render(&s, 120, 40).backend().to_string();
        assert!(
            screen.contains("no namespace `emial` on this broker"),
            "`:{cmd}`: {screen}"
        );
    }
    assert!(s.ops.gate.is_none() && s.ops.rollback.is_none());
    typed(&mut s, "gate email");
    assert_eq!(s.view(), &View::Gate { ns: "email".into() });
}

/// Issue 37 (must show): a Celery fleet without `message_id` behind a 90/10 gate hashing
/// `message_id`. Once the refreshes' publish counters hold enough tasks, the namespace view shows
/// the split that happens beside the weights, in words with its cause, and the footer's alert
/// line says it; before that, "not enough traffic to tell".
#[test]
fn the_console_says_when_the_split_is_not_happening_and_why() {
    let c = cfg("");
    let mut s = AppState::new(&c, Keymap::default(), T0);
    s.handle_msg(Msg::Conn(ConnState::Connected { since_ms: T0 }));
    let at = |t: i64, v1: u64| {
        let mut snap = snapshot(t, 1, 0);
        let ns = &mut snap.namespaces[0];
        ns.hash_on = Some("message_id".into());
        // No error rates: this is about where the tasks go.
        for v in &mut ns.versions {
            v.error_rate = None;
            v.dead_letter_rate = None;
        }
        ns.versions[0].published_total = Some(v1);
        ns.versions[1].published_total = Some(7);
        Box::new(snap)
    };
    s.handle_msg(Msg::Snapshot(at(T0, 1_000)));
    s.handle_msg(Msg::Snapshot(at(T0 + 12_000, 1_030)));
    s.handle_key("enter");
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        screen.contains("hashes message_id · measured v1 100% · v2 0% of 30 tasks in 12 s — not enough traffic to tell yet"),
        "{screen}"
    );
    s.handle_msg(Msg::Snapshot(at(T0 + 20_000, 1_140)));
    let screen = render(&s, 120, 40).backend().to_string();
    assert!(
        screen.contains("the split is not happening: gate v1 90% · v2 10%, measured v1 100% · v2 0% of 140 tasks"),
        "{screen}"
    );
    assert!(
        screen.contains("email: the split is not happening"),
        "the footer's alert line: {screen}"
    );
    let alert = s
        .alerts
        .active
        .iter()
        .find(|a| a.kind.tag() == "split")
        .expect("a split alert");
    assert!(
        alert
            .describe()
            .contains("they carry no message_id, or all the same one"),
        "{}",
        alert.describe()
    );
}
