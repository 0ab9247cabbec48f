//! Signals and terminals, against the real broker.
//!
//! - CLI: SIGINT, SIGTERM and SIGHUP (an SSH drop) during `hopback dlq replay` of 2,000 dead
//!   letters (rate-limited so the signal lands mid-run): the process exits promptly saying where it
//!   stopped, every id is exactly once in the origin queue or the DLQ, the ledger's event says it
//!   was stopped by the signal, and running the replay again moves the rest (resumable).
//! - Console in tmux: a replay started from the dead-letter view, then SIGTERM / SIGHUP to the
//!   hopback process: the pane leaves the alternate screen, the shell prompt answers, every id is
//!   exactly once. Resizing to 40×10 and back on each view: no panic, the app keeps running and
//!   redraws.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestNs;
use common::record::{self, Outcome};
use common::tmux::Tmux;
use dlq_helpers::*;
use hopback::broker::topology::QueueType;

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

fn send(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process id we spawned.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Every id of `want` exactly once across the given queues (drains them); returns (lost, dups).
async fn account(t: &TestNs, queues: &[String], want: &[String]) -> (u64, u64) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for q in queues {
        if t.session.passive_queue(q).await.unwrap().is_some() {
            for (id, _) in drain_ids(&t.session, q).await {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    let lost = want.iter().filter(|id| !seen.contains_key(*id)).count() as u64;
    let dups = seen
        .values()
        .filter(|n| **n > 1)
        .map(|n| (*n - 1) as u64)
        .sum();
    let unexpected = seen.keys().filter(|id| !want.contains(id)).count();
    assert_eq!(unexpected, 0, "ids nobody published");
    (lost, dups)
}

async fn cli_replay_stopped_by(sig: i32, name: &str) {
    let t = TestNs::new(
        &format!("sig{}", name.to_lowercase()),
        &["v1", "v2"],
        QueueType::Classic,
    )
    .await;
    let ns = t.ns.clone();
    let (dlq, v2) = (format!("{ns}.dlq"), format!("{ns}.v2"));
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("hopback.ledger.{ns}");
    let all = ids("sig", 2000);
    publish(&t.session, &v2, &all, &body, None, true).await;
    wait_depth(&t.session, &dlq, 2000, 20).await;

    let replay = |rate: Option<&str>| {
        let mut c = common::bin();
        c.env("HOPBACK_DATA_DIR", dir.path().join("data"))
            .env("HOPBACK_LOG_FILE", dir.path().join("hopback.log"))
            .env("HOPBACK_LEDGER_STREAM", &stream)
            .args(["dlq", "replay", &ns, "--yes"]);
        if let Some(r) = rate {
            c.args(["--rate", r]);
        }
        c
    };
    let mut c = replay(Some("400"));
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is really moving (some moved, most not), then signal.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let moved = depth(&t.session, &v2).await;
        if moved >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the replay never started moving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signalled = Instant::now();
    send(child.id(), sig);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let exit_s = signalled.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        exit_s < 10.0,
        "{name}: exited {exit_s:.1} s after the signal"
    );
    assert_eq!(out.status.code(), Some(1), "{name}: {stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains(&format!("stopped by {name}")),
        "{name}: the summary does not say it stopped: {stdout}"
    );
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("hopback: "))
        .unwrap_or("");
    assert!(
        line.contains(&format!("replay stopped by {name} after moving"))
            && line.contains("the rest is still in")
            && line.contains("re-run"),
        "{name}: {line}"
    );
    // A consistent point: nothing in flight, every id in v2 or the DLQ (depth says so; the drain
    // at the end proves exactly once).
    let (in_v2, in_dlq) = (depth(&t.session, &v2).await, depth(&t.session, &dlq).await);
    assert_eq!(in_v2 + in_dlq, 2000, "{name}: v2 {in_v2} + dlq {in_dlq}");
    assert!(
        in_v2 > 0 && in_dlq > 0,
        "{name}: the signal did not land mid-run"
    );
    // The ledger says it stopped, and why.
    let tl = common::bin()
        .env("HOPBACK_DATA_DIR", dir.path().join("data"))
        .env("HOPBACK_LOG_FILE", dir.path().join("hopback.log"))
        .env("HOPBACK_LEDGER_STREAM", &stream)
        .args(["timeline", "--namespace", &ns, "--format", "json"])
        .output()
        .unwrap();
    let tl = String::from_utf8_lossy(&tl.stdout).into_owned();
    assert!(
        tl.contains("cancelled") && tl.contains(&format!("stopped by {name}")),
        "{name}: the ledger does not record the stop: {tl}"
    );
    // Resumable: the same command moves the rest.
    let resumed_at = Instant::now();
    let out = replay(None).stdin(Stdio::null()).output().unwrap();
    let resume_s = resumed_at.elapsed().as_secs_f64();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("moved {in_dlq},")), "{text}");
    assert_eq!(depth(&t.session, &dlq).await, 0);
    let (lost, dups) = account(&t, &[v2.clone(), dlq.clone(), format!("{ns}.parked")], &all).await;
    assert_eq!(
        (lost, dups),
        (0, 0),
        "{name}: lost {lost}, duplicated {dups}"
    );
    record::outcome(&Outcome {
        operation: "replay".into(),
        fault: name.into(),
        lost,
        duplicated: dups,
        recovered_s: Some(resume_s),
        result: format!(
            "stopped: {in_v2} of 2000 moved, {in_dlq} left in the DLQ, nothing in flight; exit 1 {exit_s:.1} s after the signal; re-run moved the rest"
        ),
        note: "CLI `dlq replay --rate 400`; ledger event cancelled with the signal named; recovered_s = the re-run".into(),
    });
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    delete_queues(&t.session, &[&format!("{ns}.parked")]).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_replay_stops_consistently_on_sigint_and_resumes() {
    cli_replay_stopped_by(libc::SIGINT, "SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_replay_stops_consistently_on_sigterm_and_resumes() {
    cli_replay_stopped_by(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_replay_stops_consistently_on_sighup_and_resumes() {
    cli_replay_stopped_by(libc::SIGHUP, "SIGHUP").await;
}

// ── the console in tmux (`common::tmux`) ──

/// The pid of the `hopback` process the pane's shell runs.
fn hopback_pid(shell_pid: u32) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &shell_pid.to_string(), "-x", "hopback"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

/// Has the shell printed `EXITED <status>`? (The typed command line reads `echo EXITED $?`.)
fn exited(screen: &str) -> bool {
    // The shell prints `EXITED <code>` after the console ends — possibly right after the prompt
    // on the same line; the typed command line itself says `echo EXITED`.
    screen
        .lines()
        .any(|l| l.contains("EXITED ") && !l.contains("echo EXITED"))
}

fn hopback_env(dir: &std::path::Path, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HOPBACK_CONFIG", "/nonexistent/hopback-test.toml".into()),
        ("HOPBACK_DATA_DIR", dir.join("data").display().to_string()),
        (
            "HOPBACK_LOG_FILE",
            dir.join("hopback.log").display().to_string(),
        ),
        ("HOPBACK_LEDGER_STREAM", stream.to_string()),
        ("TERM", "xterm-256color".into()),
    ]
}

async fn console_replay_then(sig: i32, name: &str) {
    let t = TestNs::new(
        &format!("tui{}", name.to_lowercase()),
        &["v1", "v2"],
        QueueType::Classic,
    )
    .await;
    let ns = t.ns.clone();
    let (dlq, v2) = (format!("{ns}.dlq"), format!("{ns}.v2"));
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("hopback.ledger.{ns}");
    // Enough that the console's replay (no rate limit) is still running when the signal lands.
    let all = ids("tui", 30_000);
    publish(&t.session, &v2, &all, &body, None, true).await;
    wait_depth(&t.session, &dlq, 30_000, 60).await;

    let tm = Tmux::start(&name.to_lowercase(), &hopback_env(dir.path(), &stream));
    tm.literal(&format!(
        "{} ; echo EXITED $?",
        env!("CARGO_BIN_EXE_hopback")
    ));
    tm.keys(&["Enter"]);
    // The overview is up; filter it to this test's namespace (other tests' namespaces may
    // push it below the first screen) and wait for its row: its data is loaded.
    tm.wait(20, "the console", |s| s.contains(" namespaces "));
    tm.literal("/");
    tm.literal(&ns);
    tm.keys(&["Enter"]);
    tm.wait(20, "the console", |s| s.contains(&ns));
    assert!(tm.alternate_on());
    // Select the namespace, open its dead letters, replay all of them.
    tm.literal(":ns ");
    tm.literal(&ns);
    tm.keys(&["Enter"]);
    tm.keys(&["d"]);
    tm.wait(20, "the dead-letter page", |s| s.contains("30000"));
    tm.keys(&["R"]);
    tm.wait(10, "the replay dialog", |s| s.contains("eplay"));
    tm.keys(&["Tab", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while depth(&t.session, &v2).await < 1000 {
        assert!(
            Instant::now() < deadline,
            "the console's replay never started:\n{}",
            tm.screen()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = hopback_pid(tm.pane_pid()).expect("the hopback process");
    send(pid, sig);
    let screen = tm.wait(30, "the shell after hopback exits", exited);
    assert!(
        !tm.alternate_on(),
        "still in the alternate screen:\n{screen}"
    );
    assert!(!screen.contains("panicked"), "{screen}");
    // The prompt is usable: a command typed now runs.
    tm.literal("echo PROMPT-OK");
    tm.keys(&["Enter"]);
    tm.wait(10, "the prompt to answer", |s| {
        s.contains("PROMPT-OK\n") || s.lines().any(|l| l.trim() == "PROMPT-OK")
    });
    let (in_v2, in_dlq) = (depth(&t.session, &v2).await, depth(&t.session, &dlq).await);
    assert_eq!(
        in_v2 + in_dlq,
        30_000,
        "{name}: v2 {in_v2} + dlq {in_dlq} after the console quit"
    );
    eprintln!("{name}: the console stopped with {in_v2} moved and {in_dlq} still in the DLQ");
    let (lost, dups) = account(&t, &[v2.clone(), dlq.clone(), format!("{ns}.parked")], &all).await;
    assert_eq!(
        (lost, dups),
        (0, 0),
        "{name}: lost {lost}, duplicated {dups}"
    );
    record::outcome(&Outcome {
        operation: "replay (console)".into(),
        fault: name.into(),
        lost,
        duplicated: dups,
        recovered_s: None,
        result: format!(
            "stopped: {in_v2} of 30000 moved, {in_dlq} left in the DLQ; terminal restored (alternate screen off, prompt answers)"
        ),
        note: "console in tmux 120×40, replay from the dead-letter view, signal to the hopback pid"
            .into(),
    });
    drop(tm);
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    delete_queues(&t.session, &[&format!("{ns}.parked")]).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_replay_then_sigterm_restores_the_terminal_and_loses_nothing() {
    console_replay_then(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_replay_then_sighup_restores_the_terminal_and_loses_nothing() {
    console_replay_then(libc::SIGHUP, "SIGHUP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_survives_resizing_to_40x10_and_back_on_every_view() {
    let t = TestNs::new("tuisize", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("hopback.ledger.{ns}");
    publish(
        &t.session,
        &format!("{ns}.v2"),
        &ids("rs", 5),
        &body,
        None,
        true,
    )
    .await;
    let tm = Tmux::start("resize", &hopback_env(dir.path(), &stream));
    tm.literal(&format!(
        "{} ; echo EXITED $?",
        env!("CARGO_BIN_EXE_hopback")
    ));
    tm.keys(&["Enter"]);
    // The overview is up; filter it to this test's namespace (other tests' namespaces may
    // push it below the first screen) and wait for its row: its data is loaded.
    tm.wait(20, "the console", |s| s.contains(" namespaces "));
    tm.literal("/");
    tm.literal(&ns);
    tm.keys(&["Enter"]);
    tm.wait(20, "the console", |s| s.contains(&ns));
    tm.literal(":ns ");
    tm.literal(&ns);
    tm.keys(&["Enter"]);
    let pid = hopback_pid(tm.pane_pid()).expect("the hopback process");
    // Each view: its key from the namespace view, then Esc back.
    let views: [(&str, &[&str]); 6] = [
        ("overview", &["Escape"]),
        ("namespace", &[":", "n", "s", " "]),
        ("dead letters", &["d"]),
        ("gate", &["g"]),
        ("timeline", &["t"]),
        ("help", &["?"]),
    ];
    for (view, keys) in views {
        if view == "namespace" {
            tm.literal(&format!(":ns {ns}"));
            tm.keys(&["Enter"]);
        } else {
            tm.keys(keys);
        }
        std::thread::sleep(Duration::from_millis(400));
        tm.resize(40, 10);
        // It redraws at 40×10: the screen is no wider than 40 and not empty.
        let small = tm.wait(10, &format!("{view} at 40×10"), |s| {
            s.lines().all(|l| l.chars().count() <= 40) && !s.trim().is_empty()
        });
        assert!(!small.contains("panicked"), "{view}: {small}");
        tm.resize(120, 40);
        let big = tm.wait(10, &format!("{view} back at 120×40"), |s| {
            s.lines().any(|l| l.trim_end().chars().count() > 60)
        });
        assert!(!big.contains("panicked") && !exited(&big), "{view}: {big}");
        assert!(tm.alternate_on(), "{view}: the console left the screen");
        // Still the same process, still running.
        assert_eq!(
            hopback_pid(tm.pane_pid()),
            Some(pid),
            "{view}: the console died"
        );
        tm.keys(&["Escape"]);
        // Esc and the next key too close together read as Alt+key (an escape sequence).
        std::thread::sleep(Duration::from_millis(300));
    }
    // Quit normally: the terminal comes back.
    tm.keys(&["q"]);
    let s = tm.wait(10, "the console to quit", exited);
    assert!(s.contains("EXITED 0"), "{s}");
    assert!(!tm.alternate_on());
    drop(tm);
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    t.cleanup().await;
}
