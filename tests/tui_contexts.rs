//! Contexts against two real brokers — RabbitMQ 3.10 (`HOPBACK_TEST_URL`, default :5672) and
//! 4.0.5 (`HOPBACK_TEST_URL_4`, default :5673; management `HOPBACK_TEST_MGMT_URL_4`, default
//! :15673, started by `scripts/broker --version 4.0`) — headless: keys go through
//! `Console::handle_key`, each context's requests to its own real `OpsRunner`, answers back
//! through `Console::handle_msg`, exactly as the console's loop routes them.
//!
//! Shows: `:ctx NAME` switches between the brokers without a restart (the header's broker and
//! version follow); `:ctx all` lists both brokers' namespaces, each row with its context; a note
//! started in one context and answered after a switch is journaled on that context's broker
//! only (read back from both ledgers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use hopback::app::contexts::{Console, ProfileEntry, Slot, Step};
use hopback::app::keymap::Keymap;
use hopback::app::ops::OpsRunner;
use hopback::app::protocol::OpMsg;
use hopback::app::state::{AppState, Msg, View};
use hopback::broker::mgmt::Mgmt;
use hopback::broker::stats::{CollectOptions, collect};
use hopback::broker::topology::QueueType;
use hopback::config::{Config, Overrides};
use hopback::ledger::{EventKind, Ledger, StreamStart};
use tokio::sync::mpsc;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn url_4() -> String {
    std::env::var("HOPBACK_TEST_URL_4")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5673/%2f".into())
}

fn mgmt_4() -> String {
    std::env::var("HOPBACK_TEST_MGMT_URL_4").unwrap_or_else(|_| "http://127.0.0.1:15673".into())
}

/// A config file with the two brokers as profiles `old` (3.10) and `new` (4.0.5, production).
fn two_broker_config(dir: &std::path::Path) -> Config {
    let path = dir.join("config.toml");
    let mgmt_old = common::test_mgmt_url();
    std::fs::write(
        &path,
        format!(
            "contexts = [\"old\", \"new\"]\n\
             [profiles.old]\nurl = \"{}\"\nmgmt_url = \"{mgmt_old}\"\n\
             [profiles.new]\nurl = \"{}\"\nmgmt_url = \"{}\"\nproduction = true\n",
            common::test_url(),
            url_4(),
            mgmt_4()
        ),
    )
    .unwrap();
    hopback::config::load(&Overrides {
        config_path: Some(path),
        profile_urls_only: true,
        ..Default::default()
    })
    .unwrap()
}

/// One context's runner and its channel.
struct Io {
    runner: OpsRunner,
    rx: mpsc::Receiver<Msg>,
    _feed: tokio::task::JoinHandle<()>,
}

fn open(cfg: &Config) -> (Slot, Io) {
    let (tx, rx) = mpsc::channel(256);
    let runner = OpsRunner::new(cfg, tx);
    let feed = runner.spawn_ledger_feed();
    let state = AppState::new(cfg, Keymap::default(), now_ms());
    (
        Slot {
            cfg: cfg.clone(),
            state,
        },
        Io {
            runner,
            rx,
            _feed: feed,
        },
    )
}

/// One refresh of context `i`, as its refresh task would send it.
async fn refresh(console: &mut Console, i: usize, namespaces: &[String]) {
    let cfg = console.slots[i].cfg.clone();
    let s = common::connect(&cfg, "test").await;
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let opts = CollectOptions {
        exact_for: Some(namespaces.iter().cloned().collect()),
        ..Default::default()
    };
    let snap = collect(&s, Some(&mgmt), &cfg, &opts).await.unwrap();
    s.close().await;
    console.handle_msg(i, Msg::Snapshot(Box::new(snap)));
}

fn typed(console: &mut Console, line: &str) -> Step {
    let mut step = console.handle_key(":");
    for c in line.chars() {
        step = console.handle_key(&if c == ' ' {
            "space".to_string()
        } else {
            c.to_string()
        });
    }
    assert_eq!(step, Step::None);
    console.handle_key("enter")
}

/// Hand every context's requests to its runner.
fn dispatch(console: &mut Console, ios: &[Io]) {
    for (i, slot) in console.slots.iter_mut().enumerate() {
        for r in slot.state.take_requests() {
            ios[i].runner.handle(r);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ 4.0.5 beside the 3.10 broker: scripts/broker --version 4.0, then --include-ignored (.ci/run does)"]
async fn contexts_switch_between_brokers_and_operations_stay_on_theirs() {
    let stream = format!(
        "hopback.test-ctx-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // SAFETY: this file has one test; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("HOPBACK_LEDGER_STREAM", &stream) };
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_broker_config(dir.path());
    assert_eq!(cfg.contexts, vec!["old".to_string(), "new".to_string()]);
    assert_eq!(cfg.profile.name, "old");
    let cfg_new = cfg.for_profile("new").unwrap();
    assert!(cfg_new.profile.production);

    // A namespace on each broker.
    let run = common::unique_ns("ctx");
    let ns_old = format!("{run}-old");
    let ns_new = format!("{run}-new");
    let versions = vec!["v1".to_string(), "v2".to_string()];
    let s_old = common::connect(&cfg, "test").await;
    let s_new = common::connect(&cfg_new, "test").await;
    hopback::broker::topology::init(&s_old, &ns_old, &versions, QueueType::Classic)
        .await
        .unwrap();
    hopback::broker::topology::init(&s_new, &ns_new, &versions, QueueType::Classic)
        .await
        .unwrap();

    // The console starts on `old`; `new` is a profile of the file, not open yet.
    let (slot, io) = open(&cfg);
    let mut ios = vec![io];
    let mut console = Console::new(
        slot,
        vec![ProfileEntry::of(&cfg), ProfileEntry::of(&cfg_new)],
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    refresh(&mut console, 0, std::slice::from_ref(&ns_old)).await;
    assert!(
        console
            .state()
            .snapshot
            .as_ref()
            .and_then(|s| s.server_version.clone())
            .unwrap()
            .starts_with("3."),
        "the first context is the 3.10 broker"
    );

    // The picker lists both profiles, credentials stripped.
    console.handle_key("C");
    assert_eq!(console.state().view(), &View::Contexts);
    let names: Vec<&str> = console
        .state()
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["old", "new"]);
    assert!(
        console
            .state()
            .contexts
            .iter()
            .all(|c| !c.url.contains("guest:guest")),
        "{:?}",
        console.state().contexts
    );
    console.handle_key("esc");

    // A note in `old`, then a switch to `new` before its answer arrives.
    typed(&mut console, "note ctx-test note from old");
    dispatch(&mut console, &ios);
    let step = typed(&mut console, "ctx new");
    assert_eq!(
        step,
        Step::Open("new".into()),
        "a profile not open yet is opened"
    );
    let (slot, io) = open(&cfg_new);
    let i = console.add(slot);
    ios.push(io);
    assert_eq!(console.switch("new"), Step::None);
    assert_eq!(console.active, i);
    assert_eq!(console.state().profile, "new");
    assert!(
        console.state().production,
        "the production context keeps its red badge"
    );
    refresh(&mut console, 1, std::slice::from_ref(&ns_new)).await;
    let v = console
        .state()
        .snapshot
        .as_ref()
        .and_then(|s| s.server_version.clone())
        .unwrap();
    assert!(v.starts_with("4."), "now on the 4.0.5 broker: {v}");
    // The note's answer comes back to `old`'s state (through its own runner), and is shown on
    // screen with its context.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut noted = None;
    while noted.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, ios[0].rx.recv())
            .await
            .expect("the note's answer")
            .unwrap();
        if let Msg::Op(OpMsg::NoteAdded { result, event_id }) = &msg {
            assert!(result.is_ok(), "{result:?}");
            noted = event_id.clone();
        }
        console.handle_msg(0, msg);
    }
    let event_id = noted.unwrap();
    assert_eq!(console.state().profile, "new", "still on `new`");
    let m = console.state().message.as_ref().unwrap().text.clone();
    assert!(m.starts_with("[old] note added"), "{m}");

    // On the brokers: the note is in `old`'s ledger, not in `new`'s.
    let notes = |events: Vec<hopback::ledger::Event>| -> Vec<String> {
        events
            .into_iter()
            .filter(|e| e.kind == EventKind::Note)
            .map(|e| e.id.to_string())
            .collect()
    };
    let l_old = Ledger::open_read(&s_old, &cfg).await;
    let l_new = Ledger::open_read(&s_new, &cfg_new).await;
    assert_eq!(
        notes(l_old.read(StreamStart::First).await.unwrap()),
        vec![event_id.clone()]
    );
    let in_new = l_new
        .read(StreamStart::First)
        .await
        .map(notes)
        .unwrap_or_default();
    assert!(!in_new.contains(&event_id), "{in_new:?}");

    // `:ctx old` goes back to the open context; `:ctx all` shows both brokers together.
    assert_eq!(typed(&mut console, "ctx old"), Step::None);
    assert_eq!(console.state().profile, "old");
    assert_eq!(typed(&mut console, "ctx all"), Step::None);
    assert!(console.in_merged_overview());
    let rows = console.merged_rows();
    let ctx_of = |ns: &str| -> Vec<String> {
        rows.iter()
            .filter(|(i, r)| {
                console.slots[*i]
                    .state
                    .snapshot
                    .as_ref()
                    .unwrap()
                    .namespaces[r.ns]
                    .name
                    == ns
            })
            .map(|(i, _)| console.slots[*i].state.profile.clone())
            .collect()
    };
    assert_eq!(ctx_of(&ns_old), ["old", "old"]);
    assert_eq!(ctx_of(&ns_new), ["new", "new"]);
    // Selecting a row of `new` makes `new` the context keys act in.
    let row = rows
        .iter()
        .position(|(i, r)| {
            console.slots[*i]
                .state
                .snapshot
                .as_ref()
                .unwrap()
                .namespaces[r.ns]
                .name
                == ns_new
        })
        .unwrap();
    console.handle_key("home");
    for _ in 0..row {
        console.handle_key("j");
    }
    assert_eq!(console.state().profile, "new");
    console.handle_key("enter");
    assert_eq!(
        console.state().view(),
        &View::Namespace { ns: ns_new.clone() }
    );
    // The screen names both contexts (drawn as the console draws it); the `/` filter of the
    // overview across contexts filters every context's rows.
    console.handle_key("esc");
    console.handle_key("/");
    for c in run.chars() {
        console.handle_key(&c.to_string());
    }
    console.handle_key("enter");
    assert_eq!(
        console.merged_rows().len(),
        4,
        "two versions on each broker"
    );
    let theme = hopback::ui::theme::Theme::builtin("dark", false).unwrap();
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40)).unwrap();
    term.draw(|f| {
        hopback::ui::draw_console(f, &console, &theme);
    })
    .unwrap();
    let screen = term.backend().to_string();
    assert!(screen.contains("2 contexts"), "{screen}");
    assert!(
        screen.contains(&ns_old) && screen.contains(&ns_new),
        "{screen}"
    );
    assert!(screen.contains("RabbitMQ 4.0"), "{screen}");

    for (s, ns) in [(&s_old, &ns_old), (&s_new, &ns_new)] {
        hopback::broker::topology::delete_namespace(s, ns, &versions)
            .await
            .unwrap();
        let _ = hopback::ledger::delete_stream(s, &stream).await;
        s.close().await;
    }
}
