//! The broker engine through a broker restart (issue 20): a `dlq replay` on the broker engine is
//! under way when `rabbitmqctl stop_app` … `start_app` hits the (system) broker. The shovel is a
//! runtime parameter, so it comes back with the broker — with a fresh count — and hopback's
//! watcher reconnects, notices the whole count has left the source and removes it. Every id is in
//! exactly one of the DLQ and the target, 0 lost.
//!
//! Like `tests/faults_broker`, this binary has one test and holds `/tmp/hopback-broker.lock`
//! while it restarts the broker; `cargo test` runs test binaries one after another. It drives the
//! system broker's `rabbitmqctl`, so it runs in the suite on the system broker only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "dlq_helpers/mod.rs"]
mod dlq_helpers;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use dlq_helpers::*;
use hopback::broker::mgmt::Mgmt;

fn ctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_move_loses_nothing() {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/hopback-broker.lock")
        .unwrap();
    // SAFETY: flock on a descriptor we own; released when the file closes.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let ns = common::unique_ns("shvrst");
    let out = common::bin()
        .args([
            "init",
            &ns,
            "--versions",
            "v1,v2",
            "--queue-type",
            "classic",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cfg = common::test_config();
    let s = common::connect(&cfg, "test").await;
    let (dlq, v1, v2) = (format!("{ns}.dlq"), format!("{ns}.v1"), format!("{ns}.v2"));
    let n = 80_000;
    let all = ids(&format!("{ns}-r"), n);
    publish(&s, &v2, &all, &|id| id.as_bytes().to_vec(), None, true).await;
    wait_depth(&s, &dlq, n as u32, 120).await;
    s.close().await;

    let mut child = common::bin()
        .args(["dlq", "replay", &ns, "--to", "v1", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart once the move is visibly under way.
    let watch = common::connect(&cfg, "test watch").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(&watch, &dlq).await as usize > n - 5_000 {
        assert!(Instant::now() < deadline, "the move never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.close().await;
    let t0 = Instant::now();
    tokio::task::spawn_blocking(|| ctl(&["stop_app"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| {
        ctl(&["start_app"]);
        ctl(&["await_startup"]);
    })
    .await
    .unwrap();
    eprintln!("broker away {:.1} s", t0.elapsed().as_secs_f64());

    // The CLI ends on its own (done, or an error that says the shovel finishes by itself).
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Some(_status) = child.try_wait().unwrap() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the replay did not end within 4 minutes of the restart");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    eprintln!(
        "replay: {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mgmt::new(&cfg.profile).unwrap();
    let names = hopback::topology::Namespace::resolve(&cfg, &ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    while hopback::broker::shovel::move_shovels_of(&m, &names)
        .await
        .map_or(true, |s| !s.is_empty())
    {
        assert!(Instant::now() < deadline, "the shovel never went away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = common::connect(&cfg, "test count").await;
    let mut seen: HashMap<String, Vec<&str>> = HashMap::new();
    for q in [&dlq, &v1] {
        for (id, _) in drain_ids(&s, q).await {
            seen.entry(id)
                .or_default()
                .push(if q == &dlq { "dlq" } else { "v1" });
        }
    }
    let lost = all.iter().filter(|i| !seen.contains_key(*i)).count();
    let dups = seen.values().filter(|v| v.len() > 1).count();
    eprintln!("restart: lost {lost}, in two places {dups}");
    assert_eq!(lost, 0);
    hopback::broker::topology::delete_namespace(&s, &ns, &["v1".into(), "v2".into()])
        .await
        .unwrap();
    s.close().await;
}
