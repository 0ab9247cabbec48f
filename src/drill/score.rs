//! Drill scoring — pure maths, no I/O: the message accounting (every published id must end up
//! processed, dead-lettered, parked or still queued) and the response times.
//!
//! Times are milliseconds since the drill started, so a score can be recomputed from stored
//! numbers and tested without clocks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Where every message of a drill ended up, by `message_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Ids confirmed by the broker (publisher confirm `Ack`, not returned).
    pub published: u64,
    /// Of those: processed (side effect committed) at least once.
    pub processed: u64,
    /// Of those: sitting in the DLQ (dead-lettered and not replayed).
    pub dead_lettered: u64,
    /// Of those: parked (replay loop guard) or exported.
    pub parked: u64,
    /// Of those: still in a version queue or the unrouted queue.
    pub still_queued: u64,
    /// Published and found nowhere.
    pub lost: u64,
    /// Up to 20 lost ids, for the report.
    pub lost_sample: Vec<String>,
    /// Side effects committed more than once for one id (deduplication failures).
    pub duplicates_processed: u64,
    /// Redeliveries the workers recognised and skipped (deduplication working).
    pub duplicates_skipped: u64,
}

/// Account for every published id. An id found in several places counts once, in the first of
/// processed → DLQ → parked → queued (a message replayed from the DLQ and processed is processed).
pub fn account(
    published: &BTreeSet<String>,
    processed: &BTreeMap<String, u32>,
    in_dlq: &BTreeSet<String>,
    parked: &BTreeSet<String>,
    queued: &BTreeSet<String>,
    duplicates_skipped: u64,
) -> Accounting {
    let mut a = Accounting {
        published: published.len() as u64,
        duplicates_skipped,
        ..Default::default()
    };
    for id in published {
        if processed.contains_key(id) {
            a.processed += 1;
        } else if in_dlq.contains(id) {
            a.dead_lettered += 1;
        } else if parked.contains(id) {
            a.parked += 1;
        } else if queued.contains(id) {
            a.still_queued += 1;
        } else {
            a.lost += 1;
            if a.lost_sample.len() < 20 {
                a.lost_sample.push(id.clone());
            }
        }
    }
    a.duplicates_processed = processed
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    a
}

/// The times a score is made of (ms since the drill started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// When the fault was injected.
    pub fault_at_ms: Option<u64>,
    /// First operator action on the namespace after the fault.
    pub first_action_at_ms: Option<u64>,
    /// First moment the gate no longer routed to v2 (after the fault).
    pub gate_off_v2_at_ms: Option<u64>,
    /// Last failure v2 produced (reject, crash, SLA breach).
    pub last_v2_failure_at_ms: Option<u64>,
}

/// A drill's score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Scenario played.
    pub scenario: String,
    /// Fault → first action on the namespace.
    pub time_to_detect_ms: Option<u64>,
    /// Fault → v2 receives no new tasks and has stopped failing.
    pub time_to_mitigate_ms: Option<u64>,
    /// Messages lost (must be 0).
    pub lost: u64,
    /// Side effects committed twice.
    pub duplicates_processed: u64,
    /// Rollback steps skipped.
    pub steps_skipped: u32,
    /// 0–100: 100 minus penalties (slow detection, slow mitigation, loss, duplicates, skips).
    pub points: u32,
    /// Full accounting.
    pub accounting: Accounting,
}

/// Fault → mitigation: v2 is off the gate and its last failure is behind us. `None` while v2 is
/// still on the gate.
pub fn time_to_mitigate(t: &Timings) -> Option<u64> {
    let fault = t.fault_at_ms?;
    let off = t.gate_off_v2_at_ms?;
    let end = off.max(t.last_v2_failure_at_ms.unwrap_or(0));
    Some(end.saturating_sub(fault))
}

/// Fault → first action (`None` if the operator never acted after the fault).
pub fn time_to_detect(t: &Timings) -> Option<u64> {
    let fault = t.fault_at_ms?;
    let act = t.first_action_at_ms?;
    (act >= fault).then(|| act - fault)
}

/// Points: start at 100; −1 per 2 s to detect beyond 10 s, −1 per 2 s to mitigate beyond 30 s
/// (each capped at −30, and −30 when it never happened), −50 if anything was lost, −2 per
/// duplicate (cap −10), −5 per skipped step (cap −10).
pub fn points(
    detect_ms: Option<u64>,
    mitigate_ms: Option<u64>,
    a: &Accounting,
    skipped: u32,
) -> u32 {
    let late = |ms: Option<u64>, free_ms: u64| -> i64 {
        match ms {
            None => 30,
            Some(ms) => (ms.saturating_sub(free_ms) / 2000).min(30) as i64,
        }
    };
    let mut p: i64 = 100;
    p -= late(detect_ms, 10_000);
    p -= late(mitigate_ms, 30_000);
    if a.lost > 0 {
        p -= 50;
    }
    p -= (a.duplicates_processed as i64 * 2).min(10);
    p -= (i64::from(skipped) * 5).min(10);
    p.clamp(0, 100) as u32
}

/// Put a score together.
pub fn score(scenario: &str, t: &Timings, a: Accounting, steps_skipped: u32) -> Score {
    let detect = time_to_detect(t);
    let mitigate = time_to_mitigate(t);
    Score {
        scenario: scenario.to_string(),
        time_to_detect_ms: detect,
        time_to_mitigate_ms: mitigate,
        lost: a.lost,
        duplicates_processed: a.duplicates_processed,
        steps_skipped,
        points: points(detect, mitigate, &a, steps_skipped),
        accounting: a,
    }
}

/// `12.3 s` or `—`.
pub fn fmt_ms(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "—".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accounting_finds_every_id_once() {
        let published = set(&["a", "b", "c", "d", "e", "f"]);
        let processed: BTreeMap<String, u32> = [
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("x".to_string(), 1),
        ]
        .into();
        let a = account(
            &published,
            &processed,
            &set(&["b", "c"]),
            &set(&["d"]),
            &set(&["e"]),
            7,
        );
        assert_eq!(a.published, 6);
        assert_eq!(a.processed, 2);
        assert_eq!(
            a.dead_lettered, 1,
            "b was processed after a replay: counted once"
        );
        assert_eq!(a.parked, 1);
        assert_eq!(a.still_queued, 1);
        assert_eq!(a.lost, 1);
        assert_eq!(a.lost_sample, vec!["f".to_string()]);
        assert_eq!(a.duplicates_processed, 1);
        assert_eq!(a.duplicates_skipped, 7);
    }

    #[test]
    fn mitigation_waits_for_the_last_failure() {
        let t = Timings {
            fault_at_ms: Some(10_000),
            first_action_at_ms: Some(15_000),
            gate_off_v2_at_ms: Some(20_000),
            last_v2_failure_at_ms: Some(23_000),
        };
        assert_eq!(time_to_detect(&t), Some(5_000));
        assert_eq!(time_to_mitigate(&t), Some(13_000));
        let still_on = Timings {
            gate_off_v2_at_ms: None,
            ..t.clone()
        };
        assert_eq!(time_to_mitigate(&still_on), None);
        let acted_before_fault = Timings {
            first_action_at_ms: Some(9_000),
            ..t
        };
        assert_eq!(time_to_detect(&acted_before_fault), None);
    }

    #[test]
    fn points_penalise_loss_and_slowness() {
        let clean = Accounting::default();
        assert_eq!(points(Some(5_000), Some(20_000), &clean, 0), 100);
        assert_eq!(points(Some(30_000), Some(20_000), &clean, 0), 90);
        assert_eq!(points(None, None, &clean, 0), 40);
        let lossy = Accounting {
            lost: 1,
            ..Default::default()
        };
        assert_eq!(points(Some(5_000), Some(20_000), &lossy, 1), 45);
        let s = score(
            "poison",
            &Timings {
                fault_at_ms: Some(0),
                first_action_at_ms: Some(1_000),
                gate_off_v2_at_ms: Some(2_000),
                last_v2_failure_at_ms: None,
            },
            clean,
            0,
        );
        assert_eq!(s.time_to_mitigate_ms, Some(2_000));
        assert_eq!(s.points, 100);
        assert_eq!(fmt_ms(Some(1_260)), "1.3 s");
    }
}
