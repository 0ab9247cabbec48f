//! The console drill does not end under a rollback of its namespace: the gate is flipped back
//! (the drill says "v2 off the gate — the fleet is settling"), `r` is pressed, and the drill
//! waits at the rollback's first question — no score, no cleanup — until the rollback has run;
//! then it scores, its post-mortem records the rollback, and its namespace is deleted.
//!
//! End to end in tmux (120×40) against the real broker, the binary as a user runs it, with its
//! own ledger stream and data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::tmux::Tmux;

fn env(dir: &std::path::Path, stream: &str) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("HOPBACK_CONFIG", "/nonexistent/hopback-test.toml".into()),
        ("HOPBACK_DATA_DIR", dir.join("data").display().to_string()),
        (
            "HOPBACK_LOG_FILE",
            dir.join("hopback.log").display().to_string(),
        ),
        ("HOPBACK_LEDGER_STREAM", stream.to_string()),
        ("HOPBACK_URL", common::test_url()),
        ("TERM", "xterm-256color".into()),
    ];
    if let Some(m) = common::test_mgmt_override() {
        v.push(("HOPBACK_MGMT_URL", m));
    }
    v
}

/// `drill-xxxxxxxx` from the drill strip's title.
fn drill_ns(screen: &str) -> Option<String> {
    let at = screen.find("DRILL drill-")? + "DRILL ".len();
    let ns: String = screen[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (ns.len() == "drill-".len() + 8).then_some(ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_waits_for_a_rollback_started_after_settling() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!(
        "hopback.test-drillcon-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let tm = Tmux::start("drillcon", &env(dir.path(), &stream));
    tm.literal(&format!(
        "{} drill --scenario poison --fault-after 1500ms --rate 40 --verify-window 2s ; echo EXITED $?",
        env!("CARGO_BIN_EXE_hopback")
    ));
    tm.keys(&["Enter"]);
    tm.wait(20, "the drill's start screen", |s| {
        s.contains("Start the drill")
    });
    tm.keys(&["Enter"]);
    let screen = tm.wait(30, "the drill running", |s| drill_ns(s).is_some());
    let ns = drill_ns(&screen).unwrap();
    // The fault comes 1.5 s in; the operator flips the gate back from another terminal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ns2, stream2) = (ns.clone(), stream.clone());
    let data = dir.path().join("data");
    let flip = tokio::task::spawn_blocking(move || {
        common::bin()
            .args(["gate", "set", &ns2, "v1=100", "--yes"])
            .env("HOPBACK_LEDGER_STREAM", &stream2)
            .env("HOPBACK_DATA_DIR", &data)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        flip.status.success(),
        "gate set: {}{}",
        String::from_utf8_lossy(&flip.stdout),
        String::from_utf8_lossy(&flip.stderr)
    );
    // The gate keeps v1's canary weight (80) alone: shown with its 100 % share, and said.
    let out = String::from_utf8_lossy(&flip.stdout);
    assert!(out.contains("v1=80 (v1 100%)"), "{out}");
    assert!(out.contains("no longer matters"), "{out}");

    tm.wait(60, "the settling message", |s| {
        s.contains("the fleet is settling")
    });
    tm.keys(&["r"]);
    let asked = tm.wait(20, "the rollback's first question", |s| {
        s.contains("Roll back (y)")
    });
    assert!(asked.contains("Roll back from v2 to v1?"), "{asked}");
    // The decision waits; so does the drill: no score, the namespace is still there.
    let waited_from = Instant::now();
    while waited_from.elapsed() < Duration::from_secs(5) {
        let s = tm.screen();
        assert!(
            !s.contains("SCORE") && !s.contains("drill score"),
            "the drill ended under the rollback's question:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = tm.screen();
    assert!(
        s.contains("rollback running — the drill ends after it"),
        "the drill strip says why it waits:\n{s}"
    );
    let exists = common::bin()
        .args(["gate", "show", &ns])
        .env("HOPBACK_LEDGER_STREAM", &stream)
        .output()
        .unwrap();
    assert!(
        exists.status.success(),
        "the drill's namespace must still exist while the rollback waits: {}",
        String::from_utf8_lossy(&exists.stderr)
    );
    // Answer: roll back; keep the dead letters where they are.
    tm.keys(&["y"]);
    tm.wait(30, "the dead-letter decision", |s| s.contains("Keep (2)"));
    tm.keys(&["2"]);
    // The score dialog comes with the result (the post-mortem written).
    let done = tm.wait(90, "the score after the rollback", |s| {
        s.contains("Write the post-mortem")
    });
    assert!(done.contains("lost 0"), "{done}");

    // The post-mortem the drill wrote records the rollback, ended before the drill.
    let pm_path = dir.path().join("data").join(format!("postmortem-{ns}.md"));
    let pm = std::fs::read_to_string(&pm_path).unwrap_or_else(|e| {
        let listing: Vec<String> = walk(dir.path());
        panic!(
            "{}: {e}\nfiles: {listing:?}\nscreen:\n{done}",
            pm_path.display()
        )
    });
    assert!(!pm.contains("**Rollback:** none recorded"), "{pm}");
    assert!(pm.contains("**Rollback:** ok"), "{pm}");
    let rb_end = pm
        .find("rollback finished")
        .unwrap_or_else(|| panic!("no rollback end in the timeline:\n{pm}"));
    let drill_end = pm
        .find("drill finished")
        .unwrap_or_else(|| panic!("no drill end in the timeline:\n{pm}"));
    assert!(rb_end < drill_end, "{pm}");

    // Close the score dialog and quit; the namespace is gone.
    tm.keys(&["Escape"]);
    tm.keys(&["q"]);
    tm.wait(60, "the shell after the drill", |s| s.contains("EXITED"));
    let gone = common::bin()
        .args(["gate", "show", &ns])
        .env("HOPBACK_LEDGER_STREAM", &stream)
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the drill namespace was deleted");
    let cfg = common::test_config();
    let session = hopback::broker::session::connect(&cfg.profile, "test", "test")
        .await
        .unwrap();
    let _ = hopback::ledger::delete_stream(&session, &stream).await;
    session.close().await;
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}
