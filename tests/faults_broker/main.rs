//! Fault matrix, part 2 (issue 10): faults that hit the whole broker, so this binary has exactly
//! one test and holds the exclusive lock `/tmp/hopback-broker.lock` (the benchmarks take it too)
//! while it breaks the broker. `cargo test` runs test binaries one after another, so nothing
//! else of this repo runs meanwhile.
//!
//! - **broker restarted**: all six operations start, then `rabbitmqctl stop_app` … `start_app`
//!   (`await_startup`) hits them mid-way; durable queues and the ledger stream survive.
//! - **memory alarm**: `set_vm_memory_high_watermark 0.0000001` blocks every publisher; all six
//!   operations run into it and must end within a bounded time with an error naming the alarm
//!   (not hang), leaving a consistent state; the console's header must say
//!   "broker blocked: memory alarm". The original watermark is read first and restored by a guard
//!   even when the test panics.
//!
//! Each cell then re-runs what stopped, accounts every id, and is recorded like the `faults` cells.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../faults/harness.rs"]
mod harness;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::*;
use hopback::broker::mgmt::Mgmt;

/// The exclusive broker lock, held for the whole test.
struct BrokerLock {
    _file: std::fs::File,
}

fn broker_lock() -> BrokerLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/hopback-broker.lock")
        .unwrap();
    // SAFETY: flock on a file descriptor we own; released when the file closes.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock /tmp/hopback-broker.lock failed");
    BrokerLock { _file: f }
}

fn ctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl not found");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Restores the memory watermark it was created with when dropped (also on panic).
struct Watermark {
    original: Vec<String>,
}

impl Watermark {
    fn read() -> Self {
        let raw = ctl(&[
            "-q",
            "eval",
            "vm_memory_monitor:get_vm_memory_high_watermark().",
        ]);
        // `0.4`, or `{absolute,1073741824}` when configured in bytes.
        let original = if let Some(rest) = raw.strip_prefix("{absolute,") {
            vec![
                "absolute".to_string(),
                rest.trim_end_matches('}').trim().to_string(),
            ]
        } else {
            raw.parse::<f64>()
                .unwrap_or_else(|_| panic!("cannot read the watermark from `{raw}`"));
            vec![raw]
        };
        Watermark { original }
    }
    fn restore(&self) -> bool {
        Command::new("rabbitmqctl")
            .arg("set_vm_memory_high_watermark")
            .args(&self.original)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Watermark {
    fn drop(&mut self) {
        // Never panic here (this also runs while a failed test unwinds).
        if !self.restore() {
            eprintln!(
                "could not restore the memory watermark {:?}: run `rabbitmqctl set_vm_memory_high_watermark 0.4`",
                self.original
            );
        }
    }
}

async fn mem_alarm(mgmt: &Mgmt) -> bool {
    mgmt.nodes()
        .await
        .map(|n| n.iter().any(|n| n.mem_alarm))
        .unwrap_or(false)
}

async fn reconnect(cell: &mut Cell) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match hopback::broker::session::connect(&cell.t.cfg.profile, "test", "test").await {
            Ok(s) => {
                cell.t.session = s;
                return;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

async fn finish(
    mut cells: Vec<Cell>,
    firsts: Vec<Attempt>,
    fault: &str,
    recovered: Option<f64>,
    note: &str,
    reconnect_first: bool,
) {
    for (cell, first) in cells.iter_mut().zip(firsts) {
        if reconnect_first {
            reconnect(cell).await;
        }
        let cfg = cell.t.cfg.clone();
        let last = if first.ok {
            first.clone()
        } else {
            cell.run_once(&cfg).await
        };
        if matches!(cell.op, Op::Gate | Op::Rollback) {
            let b = cell.gate_bindings().await;
            assert!(!b.is_empty(), "zero bindings after {fault}");
            assert!(b.values().all(|n| *n == 1), "a queue bound twice: {b:?}");
        }
        let acc = cell.account().await;
        check_and_record(
            cell.op,
            fault,
            &first,
            &last,
            &acc,
            recovered,
            &format!("{note}; first attempt took {:.1} s", first.secs),
        );
    }
    for c in cells {
        c.cleanup().await;
    }
}

async fn broker_restarted() {
    let mut cells = Vec::new();
    for op in Op::ALL {
        let mut c = Cell::setup(op).await;
        // Still running when stop_app lands (it takes a second or two).
        c.slow = true;
        cells.push(c);
    }
    let cfg = common::test_config();
    let console = Console::start(&cfg).await;
    let cells: Vec<Arc<Cell>> = cells.into_iter().map(Arc::new).collect();
    let runs: Vec<_> = cells
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move {
                let cfg = c.t.cfg.clone();
                c.run_once(&cfg).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stop_at = Instant::now();
    tokio::task::spawn_blocking(|| ctl(&["stop_app"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(|| {
        ctl(&["start_app"]);
        ctl(&["await_startup"]);
    })
    .await
    .unwrap();
    let back_at = Instant::now();
    let down_s = back_at.duration_since(stop_at).as_secs_f64();
    let recovered = console.recovered_after_outage(stop_at, back_at).await;
    eprintln!("broker down {down_s:.1} s; console recovered after {recovered:?} s");
    let firsts: Vec<Attempt> = join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    drop(console);
    let cells: Vec<Cell> = cells
        .into_iter()
        .map(|c| Arc::try_unwrap(c).ok().unwrap())
        .collect();
    finish(
        cells,
        firsts,
        "broker restarted",
        recovered,
        &format!("stop_app → start_app: broker away {down_s:.1} s"),
        true,
    )
    .await;
    let r = recovered.expect("the console never recovered");
    assert!(r < 5.0, "console recovered after {r:.1} s");
}

async fn memory_alarm() {
    let mut cells = Vec::new();
    for op in Op::ALL {
        cells.push(Cell::setup(op).await);
    }
    let cfg = common::test_config();
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let console = Console::start(&cfg).await;
    let watermark = Watermark::read();
    eprintln!("original watermark: {:?}", watermark.original);
    ctl(&["set_vm_memory_high_watermark", "0.0000001"]);
    let alarm_at = Instant::now();
    while !mem_alarm(&mgmt).await {
        assert!(
            alarm_at.elapsed() < Duration::from_secs(20),
            "no memory alarm"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cells: Vec<Arc<Cell>> = cells.into_iter().map(Arc::new).collect();
    let runs: Vec<_> = cells
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move {
                let cfg = c.t.cfg.clone();
                c.run_once(&cfg).await
            })
        })
        .collect();
    // The console names the alarm instead of looking hung.
    let shown = console
        .wait_for(alarm_at, Duration::from_secs(30), |s| {
            matches!(s, Seen::Snapshot { alarms, .. } if alarms.iter().any(|a| a == "memory alarm"))
        })
        .await;
    assert!(shown.is_some(), "the console never reported the alarm");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let header = console.header_text();
    eprintln!("header under the alarm: {header}");
    assert!(
        header.contains("broker blocked: memory alarm"),
        "header: {header}"
    );
    let badge_s = shown.unwrap().duration_since(alarm_at).as_secs_f64();
    // Every publishing operation ends on its own, naming the alarm.
    let firsts: Vec<Attempt> = tokio::time::timeout(Duration::from_secs(60), join_all(runs))
        .await
        .expect("an operation hung under the memory alarm")
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (c, a) in cells.iter().zip(&firsts) {
        eprintln!(
            "under the alarm: {} → ok={} {} ({:.1} s)",
            c.op.name(),
            a.ok,
            a.message,
            a.secs
        );
        assert!(a.secs < 45.0, "{} took {:.1} s", c.op.name(), a.secs);
        if matches!(c.op, Op::Ledger | Op::Replay | Op::Drain | Op::Gate) {
            assert!(!a.ok, "{} completed under a memory alarm?", c.op.name());
            assert!(
                a.message.contains("broker blocked: memory alarm"),
                "{}: the error does not name the alarm: {}",
                c.op.name(),
                a.message
            );
        }
    }
    let restored_at = Instant::now();
    assert!(watermark.restore(), "cannot restore the memory watermark");
    // The fault is over when the broker itself reports the alarm gone.
    while mem_alarm(&mgmt).await {
        assert!(
            restored_at.elapsed() < Duration::from_secs(20),
            "alarm stuck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let over_at = Instant::now();
    eprintln!(
        "alarm cleared {:.1} s after restoring the watermark",
        over_at.duration_since(restored_at).as_secs_f64()
    );
    let recovered = console
        .recovered_after(over_at, false, |_, alarms| alarms.is_empty())
        .await;
    let header_after = console.header_text();
    assert!(!header_after.contains("broker blocked"), "{header_after}");
    drop(console);
    let cells: Vec<Cell> = cells
        .into_iter()
        .map(|c| Arc::try_unwrap(c).ok().unwrap())
        .collect();
    finish(
        cells,
        firsts,
        "memory alarm",
        recovered,
        &format!(
            "console showed \"broker blocked: memory alarm\" {badge_s:.1} s after the alarm; badge cleared {:.1} s after it ended (alarms come from the node list, due every 2 s)",
            recovered.unwrap_or(f64::NAN)
        ),
        false,
    )
    .await;
    common::record::figure(
        "memory alarm shown in the console header",
        badge_s,
        "s",
        "from the broker raising the alarm to the header badge (management API node list, due every 2 s in the one-call-per-refresh rotation)",
    );
    // Alarms are read with the topology (every 5 s at most), so clearing may take one refresh
    // more than the 5 s of the other recoveries.
    let r = recovered.expect("the badge never cleared");
    assert!(r < 7.0, "badge cleared after {r:.1} s");
    drop(watermark);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_wide_faults() {
    let _lock = tokio::task::spawn_blocking(broker_lock).await.unwrap();
    memory_alarm().await;
    broker_restarted().await;
}
