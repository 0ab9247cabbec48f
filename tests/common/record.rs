//! The reliability record: tests of the fault matrix, hostile input and fuzzing append one JSON
//! line per outcome to the file named by `HOPBACK_RELIABILITY_OUT` (nothing is written when it is
//! unset, so a plain `cargo test` leaves no files). `scripts/reliability` sets it, runs the tests
//! and renders `docs/reliability.md` from the lines — the table is never hand-written.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use serde_json::{Value, json};

/// One cell of the fault matrix (or any scenario that moves messages).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The operation under test: "gate flip", "replay", "drain", "purge", "rollback",
    /// "ledger append", …
    pub operation: String,
    /// The fault: "connection killed", "broker restarted", "memory alarm", "management API down",
    /// "read-only user", "SIGTERM", …
    pub fault: String,
    /// Messages (or events) the test put in that it could not find afterwards. Must be 0.
    pub lost: u64,
    /// Messages found more than once afterwards.
    pub duplicated: u64,
    /// Seconds from the fault ending (broker back, connection allowed) to the console/operation
    /// being healthy again; `None` when the fault never took the broker away.
    pub recovered_s: Option<f64>,
    /// "completed" or "stopped: <consistent state it reported>".
    pub result: String,
    /// Anything worth a footnote (message counts, what the user saw).
    pub note: String,
}

fn write_line(v: Value) {
    let Ok(path) = std::env::var("HOPBACK_RELIABILITY_OUT") else {
        return;
    };
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write per line with O_APPEND: lines from parallel tests do not interleave.
    let mut line = serde_json::to_string(&v).unwrap();
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// Record a scenario outcome.
pub fn outcome(o: &Outcome) {
    write_line(json!({
        "kind": "scenario",
        "operation": o.operation,
        "fault": o.fault,
        "lost": o.lost,
        "duplicated": o.duplicated,
        "recovered_s": o.recovered_s,
        "result": o.result,
        "note": o.note,
    }));
}

/// Lost and copied from a test's own counts: `put_in` are the ids the test published, `found` every
/// id it found afterwards across all the places a message may end (target, DLQ, parked queue,
/// export, victim queue) with repeats. Lost: ids put in and found nowhere. Copied: finds of an id
/// put in beyond its first. Ids the test did not put in are not counted here.
pub fn tally<P: AsRef<str>, F: AsRef<str>>(put_in: &[P], found: &[F]) -> (u64, u64) {
    let mut seen = std::collections::HashMap::<&str, u64>::new();
    for f in found {
        *seen.entry(f.as_ref()).or_default() += 1;
    }
    let mut wanted = std::collections::HashSet::<&str>::new();
    let (mut lost, mut copied) = (0, 0);
    for p in put_in {
        if !wanted.insert(p.as_ref()) {
            continue;
        }
        match seen.get(p.as_ref()) {
            None => lost += 1,
            Some(n) => copied += n - 1,
        }
    }
    (lost, copied)
}

/// Record a fuzz target's run: how many cases and how long it ran without a crash.
pub fn fuzz(target: &str, cases: u64, seconds: f64) {
    write_line(json!({
        "kind": "fuzz",
        "target": target,
        "cases": cases,
        "seconds": seconds,
    }));
}

/// Record a measured figure (e.g. RSS while browsing a 1,000,000-message DLQ).
pub fn figure(name: &str, value: f64, unit: &str, note: &str) {
    write_line(json!({
        "kind": "figure",
        "name": name,
        "value": value,
        "unit": unit,
        "note": note,
    }));
}
