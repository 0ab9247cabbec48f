//! Snapshot tests of the console's views on ratatui's `TestBackend`, at 80×24 and 120×40, from
//! fixed states built by feeding the same messages the background tasks send (so the state path
//! is the real one). Every buffer is also checked for characters a terminal would interpret —
//! the fixtures include a hostile namespace name, message id and body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use hopback::app::keymap::Keymap;
use hopback::app::state::{AppState, Msg};
use hopback::broker::tap::{DeadLetterSeen, TapBatch, TapEvent};
use hopback::config::{self, Overrides};
use hopback::model::ConnState;
use hopback::model::gate::GateSplit;
use hopback::model::snapshot::{FleetSnapshot, NamespaceSnapshot, Rates, VersionSnapshot};
use hopback::ui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const T0: i64 = 1_700_000_000_000;

fn cfg(production: bool) -> config::Config {
    let text = if production {
        "default_profile = \"prod\"\n[profiles.prod]\nurl = \"amqp://ops:s3cret@rabbit.prod:5672/%2f\"\nproduction = true\nread_only = true\n"
    } else {
        ""
    };
    let raw = config::parse(text, &PathBuf::from("t.toml")).unwrap();
    config::resolve(raw, &PathBuf::from("t.toml"), true, &Overrides::default()).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn version(
    v: &str,
    ns: &str,
    weight: u32,
    pct: f64,
    ready: u64,
    consumers: u64,
    publish: f64,
    ack: f64,
) -> VersionSnapshot {
    VersionSnapshot {
        version: v.into(),
        queue: format!("{ns}.{v}"),
        exists: true,
        queue_type: Some("quorum".into()),
        weight,
        gate_percent: pct,
        ready: Some(ready),
        unacked: Some(consumers * 2),
        consumers: Some(consumers),
        rates: Some(Rates {
            publish,
            deliver: ack,
            ack,
            redeliver: 0.0,
        }),
        ..Default::default()
    }
}

fn snapshot(t: i64, i: u64, failing: bool) -> FleetSnapshot {
    let wave = (i % 10) * 3;
    let email = NamespaceSnapshot {
        name: "email".into(),
        convention: true,
        entry_exchange: "email".into(),
        entry_kind: Some("x-consistent-hash".into()),
        gate: Some(GateSplit::from_pairs([
            ("v1".into(), 90),
            ("v2".into(), 10),
        ])),
        versions: vec![
            version("v1", "email", 90, 90.0, 12 + wave, 3, 180.0, 179.0),
            version(
                "v2",
                "email",
                10,
                10.0,
                if failing { 40 + i } else { 2 },
                1,
                20.0,
                if failing { 2.0 } else { 20.0 },
            ),
        ],
        dlq: "email.dlq".into(),
        dlq_depth: Some(if failing { 5 + i * 18 } else { 5 }),
        unrouted: "email.unrouted".into(),
        unrouted_depth: Some(if failing { 3 } else { 0 }),
        ..Default::default()
    };
    let payments = NamespaceSnapshot {
        name: "payments".into(),
        convention: true,
        entry_exchange: "payments".into(),
        gate: Some(GateSplit::from_pairs([("v1".into(), 100)])),
        versions: vec![
            version(
                "v1",
                "payments",
                100,
                100.0,
                1_204 + wave * 10,
                4,
                950.0,
                948.0,
            ),
            version("v2", "payments", 0, 0.0, 0, 0, 0.0, 0.0),
        ],
        dlq: "payments.dlq".into(),
        dlq_depth: Some(0),
        unrouted: "payments.unrouted".into(),
        unrouted_depth: Some(0),
        ..Default::default()
    };
    // A hostile name: bidi override and an escape sequence must be shown, never emitted.
    let hostile = NamespaceSnapshot {
        name: "evil\u{202e}txt.\x1b[2J".into(),
        convention: true,
        gate: Some(GateSplit::from_pairs([("v1".into(), 100)])),
        versions: vec![version(
            "v1",
            "evil\u{202e}txt.\x1b[2J",
            100,
            100.0,
            0,
            1,
            0.0,
            0.0,
        )],
        dlq_depth: Some(0),
        unrouted_depth: Some(0),
        ..Default::default()
    };
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
        namespaces: vec![email, payments, hostile],
    }
}

fn dead_letter(at: i64, n: u64) -> DeadLetterSeen {
    let raw_body = format!("{{\"to\":\"user{n}@example.com\"}} \x1b]52;c;aGk=\x07 \u{202e}");
    DeadLetterSeen {
        ns: "email".into(),
        version: Some("v2".into()),
        origin_queue: Some("email.v2".into()),
        reason: "rejected".into(),
        at_ms: at,
        message_id: Some(hopback::text::sanitize(&format!("msg-{n:04}\x1b[6n")).into_owned()),
        preview: hopback::text::preview(raw_body.as_bytes(), 512, 120),
    }
}

/// A state after 60 s of refreshes; `failing` = v2 rejects most of its work (alerts).
fn fleet_state(failing: bool, production: bool) -> AppState {
    let c = cfg(production);
    let mut s = AppState::new(&c, Keymap::default(), T0);
    s.handle_msg(Msg::Conn(ConnState::Connected { since_ms: T0 }));
    s.handle_msg(Msg::Tap(TapEvent::Bound {
        namespaces: ["email".to_string(), "payments".to_string()].into(),
        since_ms: T0,
    }));
    let mut consumers = BTreeMap::new();
    consumers.insert(
        "email.v1".to_string(),
        vec![
            "email worker v1 (host-a)".to_string(),
            "email worker v1 (host-b)".to_string(),
            "email worker v1 (host-c)".to_string(),
        ],
    );
    consumers.insert(
        "email.v2".to_string(),
        vec!["email worker v2 (canary)".to_string()],
    );
    s.handle_msg(Msg::Consumers(consumers));
    let mut n = 0;
    for i in 0..60u64 {
        let t = T0 + (i as i64) * 1000;
        if failing {
            let mut b = TapBatch {
                at_ms: t + 500,
                ..Default::default()
            };
            for _ in 0..18 {
                n += 1;
                b.add(dead_letter(t + 500, n));
            }
            s.handle_msg(Msg::Tap(TapEvent::Batch(b)));
        }
        s.handle_msg(Msg::Snapshot(Box::new(snapshot(t, i, failing))));
    }
    s.handle_msg(Msg::Tick(T0 + 60_000));
    s.bell_pending = false;
    s
}

fn render(state: &AppState, w: u16, h: u16, theme: &Theme) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| {
        hopback::ui::draw(f, state, theme);
    })
    .unwrap();
    let buf = t.backend().buffer();
    for cell in buf.content() {
        assert!(
            hopback::text::is_terminal_safe(cell.symbol()),
            "unsafe cell {:?}",
            cell.symbol()
        );
    }
    t
}

fn both_sizes(name: &str, state: &AppState) {
    let theme = Theme::builtin("dark", false).unwrap();
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let t = render(state, w, h, &theme);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

#[test]
fn overview() {
    let s = fleet_state(false, false);
    assert!(s.alerts.active.is_empty(), "{:?}", s.alerts.active);
    both_sizes("overview", &s);
}

#[test]
fn namespace_view() {
    let mut s = fleet_state(true, false);
    s.handle_key("enter");
    assert_eq!(s.selected_namespace().as_deref(), Some("email"));
    both_sizes("namespace", &s);
}

#[test]
fn help_view() {
    let mut s = fleet_state(false, false);
    s.handle_key("?");
    both_sizes("help", &s);
    // At 80×24 every context fits without scrolling (issue 17): every binding's description, or
    // the row of the group it shares (up/down, 1/2/3, …), and every command is on the screen.
    let theme = Theme::builtin("dark", false).unwrap();
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mut hints = s.layout;
    t.draw(|f| hints = hopback::ui::draw(f, &s, &theme))
        .unwrap();
    assert_eq!(hints.help_max_scroll, 0);
    let screen = t.backend().to_string();
    let grouped = [
        "move up / down",
        "page up / down",
        "first / last row",
        "sort: next/rev/column",
        "next/prev page or pair",
        "next / previous button",
        "previous / next option",
        "DL: replay/keep/export",
        "pause/copy id/log/ctx",
        "canary keys (gate view)",
        "pause / stop replay",
    ];
    for g in grouped {
        assert!(screen.contains(g), "{g} missing:\n{screen}");
    }
    let km = hopback::app::keymap::Keymap::default();
    let mut missing: Vec<&str> = km
        .bindings
        .iter()
        .map(|b| b.desc)
        .filter(|d| !screen.contains(d))
        .collect();
    missing.sort_unstable();
    assert_eq!(
        missing,
        [
            "DL: export to a file",
            "DL: keep where they are",
            "DL: replay to old version",
            "first row",
            "move down",
            "next list / button",
            "next option (resume offer: down)",
            "page down",
            "previous list / button",
            "previous option (resume offer: up)",
            "reverse sort order",
            "next sort (DL: group by)",
            "dead letters: next page · gate: next version pair",
            "dead letters: previous page · gate: previous pair",
            "sort by name (again: reverse)",
            "sort by error %",
            "sort by ready (waiting)",
            "sort by dead letters/s",
            "pause / resume live view",
            "copy id (message, event)",
            "hopback's own log",
            "contexts (profiles)",
            "gate: pause canary",
            "gate: resume canary",
            "gate: promote canary now",
            "gate: abort canary",
            "pause / resume replay",
            "stop replay / rollback",
        ]
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "descriptions neither shown nor grouped:\n{screen}"
    );
    for (c, _) in hopback::app::action::COMMANDS {
        assert!(screen.contains(c), "{c} missing:\n{screen}");
    }
    assert!(
        screen.contains("w               write post-mortem"),
        "{screen}"
    );
}

#[test]
fn alert_state() {
    let s = fleet_state(true, false);
    let tags: Vec<_> = s
        .alerts
        .active
        .iter()
        .map(|a| (a.ns.as_str(), a.version.as_deref(), a.kind.tag()))
        .collect();
    assert!(tags.contains(&("email", Some("v2"), "error")), "{tags:?}");
    assert!(tags.contains(&("email", None, "unrouted")), "{tags:?}");
    assert!(tags.contains(&("email", None, "dlq")), "{tags:?}");
    let rb = s.rollback_recommendation().unwrap();
    assert_eq!(rb.version.as_deref(), Some("v2"));
    let v2 = s.namespace("email").unwrap().version("v2").unwrap();
    assert!(v2.error_rate.unwrap() > 0.5, "{v2:?}");
    both_sizes("alert", &s);
    // The status line is in the alert style and names the key.
    let theme = Theme::builtin("dark", false).unwrap();
    let t = render(&s, 120, 40, &theme);
    let buf = t.backend().buffer();
    let row = |y: u16| -> String { (0..120).map(|x| buf[(x, y)].symbol().to_string()).collect() };
    // Issue 17: the alert has its own line; the keys of the screen stay on the last one.
    let alert_line = row(38);
    assert!(
        alert_line.contains("rollback recommended — press r"),
        "{alert_line}"
    );
    assert!(alert_line.contains("more — ! lists all"), "{alert_line}");
    assert_eq!(buf[(0, 38)].fg, theme.alert.fg.unwrap());
    let keys = row(39);
    assert!(
        keys.contains("? help") && keys.contains("r rollback") && keys.contains("! alerts"),
        "{keys}"
    );
}

#[test]
fn stale_state() {
    let mut s = fleet_state(false, true);
    s.handle_msg(Msg::RefreshFailed {
        error: "passive queue.declare timed out after 5.0 s".into(),
    });
    s.handle_msg(Msg::Conn(ConnState::Reconnecting {
        since_ms: T0 + 60_000,
        attempt: 3,
        last_error: "cannot reach the broker".into(),
    }));
    s.handle_msg(Msg::Tick(T0 + 59_000 + 12_000));
    assert!(s.is_stale());
    assert_eq!(s.conn_label(), "stale 12 s — reconnecting (attempt 3)");
    both_sizes("stale", &s);
    // Production + read-only badges, and no credentials anywhere on screen.
    let theme = Theme::builtin("production-red", false).unwrap();
    let t = render(&s, 120, 40, &theme);
    let screen = t.backend().to_string();
    assert!(screen.contains("PRODUCTION") && screen.contains("READ-ONLY"));
    assert!(screen.contains("rabbit.prod:5672"));
    assert!(!screen.contains("s3cret") && !screen.contains("ops:"));
    // The table body (below the selected first row) is greyed in the stale style.
    let buf = t.backend().buffer();
    assert_eq!(buf[(25, 4)].symbol(), "v");
    assert_eq!(buf[(25, 4)].fg, theme.stale.fg.unwrap());
    assert!(screen.contains("stale 12 s — reconnecting (attempt 3)"));
}

#[test]
fn keys_filter_sort_and_commands() {
    let mut s = fleet_state(true, false);
    for k in ["/", "p", "a", "y"] {
        s.handle_key(k);
    }
    assert_eq!(s.rows().len(), 2);
    s.handle_key("enter");
    assert_eq!(s.filter, "pay");
    s.handle_key("esc");
    assert!(s.filter.is_empty());
    // Sort by error rate puts the failing namespace first.
    s.handle_key("s");
    assert_eq!(s.selected_namespace().as_deref(), Some("email"));
    s.handle_key("G");
    assert_eq!(s.selected, s.rows().len() - 1);
    for k in [
        ":", "n", "s", "space", "p", "a", "y", "m", "e", "n", "t", "s", "enter",
    ] {
        s.handle_key(k);
    }
    assert_eq!(
        s.view(),
        &hopback::app::state::View::Namespace {
            ns: "payments".into()
        }
    );
    s.handle_key("r");
    // The rollback view opens and first looks in the ledger for an unfinished rollback.
    assert_eq!(
        s.view(),
        &hopback::app::state::View::Rollback {
            ns: "payments".into()
        }
    );
    assert_eq!(
        s.take_requests(),
        vec![hopback::app::protocol::OpRequest::RollbackCheck {
            ns: "payments".into()
        }]
    );
    s.handle_key("esc");
    s.handle_key("esc");
    assert_eq!(s.view(), &hopback::app::state::View::Overview);
    for k in [":", "b", "o", "g", "u", "s", "enter"] {
        s.handle_key(k);
    }
    assert!(s.message.as_ref().unwrap().text.contains("unknown command"));
    assert_eq!(s.handle_key("q"), hopback::app::state::Effect::Quit);
}

/// Issue 17: a read-only console never recommends a rollback (it could not run one).
#[test]
fn read_only_never_recommends_a_rollback() {
    let mut s = fleet_state(true, false);
    assert!(s.rollback_recommendation().is_some());
    s.read_only = true;
    assert!(s.rollback_recommendation().is_none());
    let theme = Theme::builtin("dark", false).unwrap();
    let t = render(&s, 120, 40, &theme);
    let buf = t.backend().buffer();
    let last: String = (0..120)
        .map(|x| buf[(x, 39)].symbol().to_string())
        .collect();
    assert!(!last.contains("rollback recommended"), "{last}");
}

/// Issue 17: every alert raised (and cleared) goes to the ledger — queued for the runner, which
/// journals it through `ops::alert::record` — except on a read-only profile.
#[test]
fn alerts_are_queued_for_the_ledger() {
    let mut s = fleet_state(true, false);
    let records = s.take_alert_records();
    assert!(
        records
            .iter()
            .any(|r| r.raised && r.metric == "error" && r.version.as_deref() == Some("v2")),
        "{records:?}"
    );
    assert!(s.take_alert_records().is_empty(), "taken once");
    // A snapshot without unrouted messages clears that alert: the clearing is queued too.
    let healthy = fleet_state(false, false);
    s.handle_msg(Msg::Snapshot(Box::new(healthy.snapshot.clone().unwrap())));
    let cleared = s.take_alert_records();
    assert!(
        cleared.iter().any(|r| !r.raised && r.metric == "unrouted"),
        "{cleared:?}"
    );
    // Read-only: nothing is queued for the ledger.
    let mut ro = fleet_state(false, false);
    ro.read_only = true;
    ro.take_alert_records();
    let failing = fleet_state(true, false);
    ro.handle_msg(Msg::Snapshot(Box::new(failing.snapshot.clone().unwrap())));
    assert!(!ro.alerts.active.is_empty());
    assert!(ro.take_alert_records().is_empty());
}

/// The snapshot the refresh task sends while the management API is down: namespaces known from
/// before, depths and consumers read over AMQP, gate and rates unknown.
fn snapshot_without_api(t: i64) -> FleetSnapshot {
    let mut s = snapshot(t, 60, false);
    s.mgmt_available = false;
    s.metrics_source = None;
    s.mgmt_error = Some("management API at http://127.0.0.1:15672/: connection refused".into());
    for ns in &mut s.namespaces {
        ns.gate = None;
        ns.entry_kind = None;
        for v in &mut ns.versions {
            v.weight = 0;
            v.gate_percent = 0.0;
            v.rates = None;
            v.unacked = None;
            v.queue_type = None;
        }
    }
    s
}

#[test]
fn management_api_down_reads_unknown_not_absent() {
    let mut s = fleet_state(false, false);
    s.handle_msg(Msg::Snapshot(Box::new(snapshot_without_api(T0 + 61_000))));
    s.handle_msg(Msg::Tick(T0 + 61_500));
    let theme = Theme::builtin("dark", false).unwrap();
    let screen = render(&s, 120, 40, &theme).backend().to_string();
    assert!(
        screen.contains("no mgmt API: gate and rates unknown"),
        "{screen}"
    );
    assert!(!screen.contains("no namespaces found"), "{screen}");
    // Rows stay, and the gate column reads `?` (unknown), never a weight of 0.
    let email_v1 = screen
        .lines()
        .find(|l| l.contains("email") && l.contains("v1"))
        .expect("email row");
    assert!(email_v1.contains(" ? "), "{email_v1}");
    assert!(!email_v1.contains("90%"), "{email_v1}");
    both_sizes("mgmt_down", &s);
    // The gate panel says unknown for every version, never `0 (off)`.
    s.handle_key("g");
    let screen = render(&s, 120, 40, &theme).backend().to_string();
    assert!(
        screen.contains("gate unknown (no management API)"),
        "{screen}"
    );
    assert!(!screen.contains("0 (off)"), "{screen}");
    assert!(screen.matches("unknown").count() >= 3, "{screen}");

    // Nothing known before the API went away: "unknown", with the reason and a hint.
    let mut s = AppState::new(&cfg(false), Keymap::default(), T0);
    s.handle_msg(Msg::Conn(ConnState::Connected { since_ms: T0 }));
    let mut empty = snapshot_without_api(T0);
    empty.namespaces.clear();
    s.handle_msg(Msg::Snapshot(Box::new(empty)));
    let screen = render(&s, 120, 40, &theme).backend().to_string();
    assert!(screen.contains("namespaces unknown"), "{screen}");
    assert!(screen.contains("connection refused"), "{screen}");
    assert!(!screen.contains("no namespaces found"), "{screen}");
}

/// Issue 17: the worst alert first (an error rate with rollback advice before a DLQ growing),
/// and `!` lists every alert; Enter on one opens its namespace.
#[test]
fn alerts_view_lists_all_worst_first() {
    let mut s = fleet_state(true, false);
    let kinds: Vec<u8> = s.alerts.active.iter().map(|a| a.kind.severity()).collect();
    assert!(kinds.len() >= 3, "{kinds:?}");
    assert!(
        s.alerts.active[0].rollback.is_some(),
        "{:?}",
        s.alerts.active[0]
    );
    let rest: Vec<u8> = kinds[1..].to_vec();
    let mut sorted = rest.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(rest, sorted, "worst first: {kinds:?}");
    s.handle_key("!");
    assert_eq!(s.view(), &hopback::app::state::View::Alerts);
    let theme = Theme::builtin("dark", false).unwrap();
    let screen = render(&s, 120, 40, &theme).backend().to_string();
    assert!(screen.contains("worst first"), "{screen}");
    for a in &s.alerts.active {
        assert!(
            screen.contains(a.kind.tag()),
            "{} missing: {screen}",
            a.kind.tag()
        );
    }
    assert!(screen.contains("rollback advised: v2 → v1"), "{screen}");
    both_sizes("alerts_view", &s);
    s.handle_key("j");
    assert_eq!(s.alert_sel, 1);
    s.handle_key("enter");
    assert_eq!(
        s.view(),
        &hopback::app::state::View::Namespace { ns: "email".into() }
    );
}

/// Issue 17: a non-UTF-8 locale gets an ASCII-only screen (bars, borders, arrows, marks), and a
/// terminal below the minimum says so instead of cutting numbers.
#[test]
fn ascii_fallback_and_terminal_too_small() {
    let mut s = fleet_state(true, false);
    s.ascii = true;
    let theme = Theme::builtin("dark", false).unwrap();
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let t = render(&s, w, h, &theme);
        let screen = t.backend().to_string();
        for cell in t.backend().buffer().content() {
            assert!(cell.symbol().is_ascii(), "{:?} in\n{screen}", cell.symbol());
        }
        assert!(screen.contains("email"), "{screen}");
        assert!(
            screen.contains("rollback recommended - press r"),
            "{screen}"
        );
    }
    both_sizes("ascii_alert", &s);
    s.ascii = false;
    let t = render(&s, 60, 12, &theme);
    let screen = t.backend().to_string();
    assert!(screen.contains("terminal too small: 60×12"), "{screen}");
    assert!(screen.contains("70×16"), "{screen}");
}

/// Issue 19: the cluster on screen — the header counts the nodes and names the one down; the
/// namespace view shows each version queue's leader and members online, and a queue whose node
/// is down as UNAVAILABLE (not missing).
#[test]
fn cluster_nodes_and_queue_placement() {
    use hopback::model::snapshot::{NodeHealth, Placement};
    let mut s = fleet_state(false, false);
    let mut snap = snapshot(T0 + 61_000, 61, false);
    snap.nodes = Some(
        ["c1", "c2", "c3"]
            .iter()
            .map(|n| NodeHealth {
                name: format!("{n}@localhost"),
                running: *n != "c3",
                ..Default::default()
            })
            .collect(),
    );
    let email = &mut snap.namespaces[0];
    email.versions[0].placement = Some(Placement {
        node: Some("c2@localhost".into()),
        members: vec![
            "c1@localhost".into(),
            "c2@localhost".into(),
            "c3@localhost".into(),
        ],
        online: vec!["c1@localhost".into(), "c2@localhost".into()],
        unavailable: false,
    });
    email.versions[1].placement = Some(Placement {
        node: Some("c3@localhost".into()),
        unavailable: true,
        ..Default::default()
    });
    email.versions[1].ready = None;
    s.handle_msg(Msg::Snapshot(Box::new(snap)));
    let theme = Theme::builtin("dark", false).unwrap();
    let screen = render(&s, 120, 40, &theme).backend().to_string();
    assert!(
        screen.contains("3 nodes, 1 DOWN (c3@localhost)"),
        "{screen}"
    );
    // A profile naming the three nodes: at 120 columns the header gives up its "(of 3 nodes)"
    // (the node count is in the badge) before the server version; the down node always shows.
    let mut cluster_profile = s.clone();
    cluster_profile.nodes = 3;
    let header = render(&cluster_profile, 120, 40, &theme)
        .backend()
        .to_string();
    let header = header.lines().next().unwrap_or_default();
    assert!(header.contains("RabbitMQ 3.10.8"), "{header}");
    assert!(header.contains("1 DOWN (c3@localhost)"), "{header}");
    assert!(!header.contains("(of 3 nodes)"), "{header}");
    let wide = render(&cluster_profile, 160, 40, &theme)
        .backend()
        .to_string();
    assert!(wide.contains("127.0.0.1:5672 (of 3 nodes)"), "{wide}");
    s.handle_key("enter");
    let screen = render(&s, 120, 40, &theme).backend().to_string();
    assert!(screen.contains("leader c2 · 2/3 online"), "{screen}");
    assert!(screen.contains("on c3 · UNAVAILABLE"), "{screen}");
    assert!(!screen.contains("missing"), "{screen}");
    both_sizes("cluster_namespace", &s);
}

// ── k9s habits: pause, yank, describe, sort keys in the header, filters per view ──

fn screen_text(state: &AppState, w: u16, h: u16) -> String {
    let theme = Theme::builtin("dark", false).unwrap();
    render(state, w, h, &theme).backend().to_string()
}

fn type_keys(s: &mut AppState, text: &str) {
    for c in text.chars() {
        s.handle_key(&if c == ' ' {
            "space".to_string()
        } else {
            c.to_string()
        });
    }
}

/// Timeline entries of a gate flip and a note whose text carries an escape sequence.
fn timeline_events() -> Vec<hopback::ledger::projection::TimelineEntry> {
    use hopback::ledger::{Event, EventKind};
    let mut gate = Event::new(EventKind::GateSet, Some("email"));
    gate.operator = "alice@ops".into();
    gate.author = Some("alice".into());
    gate.params =
        serde_json::json!({"target": {"v1": 90, "v2": 10}, "steps": ["bind v2 weight 10"]});
    gate.before = serde_json::json!({"gate": {"v1": 100}});
    gate.after = serde_json::json!({"gate": {"v1": 90, "v2": 10}});
    let mut note = Event::new(EventKind::Note, Some("payments"));
    note.operator = "bob@ops".into();
    note.reason = Some("paged \u{1b}[31mthe v2 team\u{7}".into());
    [gate, note]
        .iter()
        .map(hopback::ledger::projection::TimelineEntry::of)
        .collect()
}

fn with_timeline(s: &mut AppState) {
    s.handle_key("t");
    s.handle_msg(Msg::Op(hopback::app::protocol::OpMsg::Timeline(Ok(
        timeline_events(),
    ))));
    s.take_requests();
}

#[test]
fn pause_holds_refreshes_and_the_header_says_so() {
    let mut s = fleet_state(false, false);
    let shown = s.snapshot.as_ref().unwrap().taken_at_ms;
    s.handle_key("z");
    assert!(s.paused());
    s.handle_msg(Msg::Snapshot(Box::new(snapshot(T0 + 61_000, 61, true))));
    s.handle_msg(Msg::Snapshot(Box::new(snapshot(T0 + 62_000, 62, true))));
    s.handle_msg(Msg::Tick(T0 + 75_000));
    assert_eq!(
        s.snapshot.as_ref().unwrap().taken_at_ms,
        shown,
        "held, not shown"
    );
    let text = screen_text(&s, 120, 40);
    assert!(
        text.contains("PAUSED 15 s · 2 refresh(es) held · z resumes"),
        "{text}"
    );
    assert!(!text.contains("stale"), "paused is not stale: {text}");
    s.handle_key("z");
    assert!(!s.paused());
    assert_eq!(s.snapshot.as_ref().unwrap().taken_at_ms, T0 + 62_000);
    assert!(s.message.as_ref().unwrap().text.contains("2 refresh(es)"));
}

#[test]
fn sort_keys_are_in_the_header_and_reverse_on_repeat() {
    let mut s = fleet_state(false, false);
    let text = screen_text(&s, 120, 40);
    assert!(text.contains("N name W ready D DL/s E err"), "{text}");
    assert!(text.contains("NAMESPACE↑"), "{text}");
    s.handle_key("E");
    assert_eq!(s.sort, hopback::app::state::SortKey::ErrorRate);
    assert!(screen_text(&s, 120, 40).contains("ERR%↓"));
    s.handle_key("E");
    assert!(s.sort_desc);
    assert!(screen_text(&s, 80, 24).contains("ERR%↑"));
    s.handle_key("W");
    assert_eq!(s.sort, hopback::app::state::SortKey::Ready);
    assert!(screen_text(&s, 80, 24).contains("READY↓"));
}

#[test]
fn filters_belong_to_the_view_they_were_typed_in() {
    let mut s = fleet_state(false, false);
    s.handle_key("/");
    type_keys(&mut s, "ema");
    s.handle_key("enter");
    assert_eq!(s.filter, "ema");
    with_timeline(&mut s);
    assert_eq!(s.view_filter(), Some(""), "the timeline starts unfiltered");
    assert_eq!(s.ops.timeline.visible().len(), 2);
    s.handle_key("/");
    type_keys(&mut s, "payments");
    s.handle_key("enter");
    assert_eq!(s.ops.timeline.visible().len(), 1);
    assert_eq!(s.filter, "ema", "the overview keeps its own");
    let text = screen_text(&s, 120, 40);
    assert!(text.contains("matching /payments"), "{text}");
    assert!(!text.contains("filter “payments”"), "{text}");
    s.handle_key("esc");
    assert_eq!(s.view(), &hopback::app::state::View::Overview);
    assert_eq!(s.filter, "ema");
    assert!(screen_text(&s, 120, 40).contains("filter “ema”"));
    // A view without a filter says so instead of filtering another view.
    s.handle_key("enter");
    s.handle_key("/");
    assert!(s.input.is_none());
    assert!(
        s.message
            .as_ref()
            .unwrap()
            .text
            .contains("this view has no filter")
    );
}

#[test]
fn describe_shows_every_field_sanitised_and_yank_copies_the_id() {
    let mut s = fleet_state(false, false);
    with_timeline(&mut s);
    let ids: Vec<String> = s
        .ops
        .timeline
        .entries
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    // The newest row is selected; `c` copies its full id and shows it.
    s.handle_key("c");
    assert_eq!(s.clipboard_pending.as_deref(), Some(ids[1].as_str()));
    assert!(s.message.as_ref().unwrap().text.ends_with(&ids[1]));
    // Up selects the gate flip; Enter describes it.
    s.handle_key("k");
    s.handle_key("enter");
    assert_eq!(s.view(), &hopback::app::state::View::Describe);
    let d = s.ops.describe.as_ref().unwrap();
    let fields: Vec<&str> = d
        .lines
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| !f.is_empty())
        .collect();
    for f in [
        "id",
        "time (UTC)",
        "kind",
        "outcome",
        "namespace",
        "author (verified)",
        "operator (claimed)",
        "host",
        "profile",
        "summary",
        "reason",
        "params",
        "before",
        "after",
    ] {
        assert!(fields.contains(&f), "{f} missing: {fields:?}");
    }
    assert!(d.lines.iter().any(|(_, v)| v.contains("bind v2 weight 10")));
    let text = screen_text(&s, 120, 40);
    assert!(text.contains(&ids[0]), "{text}");
    s.handle_key("c");
    assert_eq!(s.clipboard_pending.as_deref(), Some(ids[0].as_str()));
    // Scrolls to the end of the JSON documents at 80×24.
    assert!(screen_text(&s, 80, 24).contains("more line(s) below"));
    s.handle_key("G");
    assert!(!screen_text(&s, 80, 24).contains("more line(s) below"));
    // The note's escape sequence reaches the screen visible, never as control characters.
    s.handle_key("esc");
    s.handle_key("j");
    s.handle_key("enter");
    let d = s.ops.describe.as_ref().unwrap();
    let reason = &d.lines.iter().find(|(f, _)| f == "reason").unwrap().1;
    assert!(
        reason.contains('␛') && !reason.contains('\u{1b}'),
        "{reason}"
    );
    screen_text(&s, 80, 24);
    // OSC 52 carries the id base64-encoded: nothing in it a terminal would act on.
    let seq = hopback::app::terminal::osc52("a\u{1b}b");
    assert!(seq.starts_with("\u{1b}]52;c;") && seq.ends_with('\u{7}'));
    assert!(!seq[7..seq.len() - 1].contains('\u{1b}'));
    // Elsewhere, `c` says what it copies and where.
    s.handle_key("esc");
    s.handle_key("esc");
    s.clipboard_pending = None;
    s.handle_key("c");
    assert!(s.clipboard_pending.is_none());
    assert!(
        s.message
            .as_ref()
            .unwrap()
            .text
            .contains("nothing to copy here")
    );
}

#[test]
fn log_view_and_context_picker_keys() {
    let mut s = fleet_state(false, false);
    s.handle_key("L");
    assert_eq!(s.view(), &hopback::app::state::View::Log);
    assert!(
        s.take_requests()
            .contains(&hopback::app::protocol::OpRequest::LogLoad)
    );
    s.handle_msg(Msg::Op(hopback::app::protocol::OpMsg::Log(Ok((
        "/var/log/hopback.log".into(),
        vec![
            "2024-01-01T00:00:00Z  INFO hopback: starting".into(),
            "2024-01-01T00:00:01Z  WARN hopback::app::tasks: console refresh failed".into(),
        ],
    )))));
    s.handle_key("/");
    type_keys(&mut s, "warn");
    s.handle_key("enter");
    let text = screen_text(&s, 80, 24);
    assert!(text.contains("1 line(s) matching /warn"), "{text}");
    assert!(text.contains("console refresh failed"), "{text}");
    s.handle_key("esc");
    // `:ctx NAME` of an unknown profile says which exist; `C` opens the picker.
    s.handle_key(":");
    type_keys(&mut s, "ctx nosuch");
    assert_eq!(s.handle_key("enter"), hopback::app::state::Effect::None);
    assert!(
        s.message
            .as_ref()
            .unwrap()
            .text
            .contains("no context `nosuch`")
    );
    s.handle_key("C");
    assert_eq!(s.view(), &hopback::app::state::View::Contexts);
    screen_text(&s, 80, 24);
}
