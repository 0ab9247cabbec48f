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
    /// 0–100: 100 minus the penalties of `parts`.
    pub points: u32,
    /// How the points came about, part by part (empty in scores stored before it existed).
    #[serde(default)]
    pub parts: Vec<ScorePart>,
    /// Played by the scripted operator (`--headless`), not a person.
    #[serde(default)]
    pub headless: bool,
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

/// One line of a score's explanation: what cost (or kept) points and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScorePart {
    /// What is judged ("detection", "dead letters left", …).
    pub part: String,
    /// Points taken off (0 = nothing lost on this part).
    pub penalty: u32,
    /// The measure and the rule, in words.
    pub why: String,
}

/// Dead letters still in the DLQ at the end cost 1 point per this many …
pub const DEAD_LETTERS_PER_POINT: u64 = 10;
/// … up to this many points.
pub const DEAD_LETTERS_MAX_PENALTY: u64 = 20;

/// The score's parts: start at 100; −1 per 2 s to detect beyond 10 s, −1 per 2 s to mitigate
/// beyond 30 s (each capped at −30, and −30 when it never happened), −50 if anything was lost,
/// −2 per duplicate (cap −10), −5 per skipped step (cap −10), −1 per 10 dead letters left
/// un-replayed in the DLQ (cap −20: the incident is not over while its dead letters wait).
pub fn parts(
    detect_ms: Option<u64>,
    mitigate_ms: Option<u64>,
    a: &Accounting,
    skipped: u32,
) -> Vec<ScorePart> {
    let late = |what: &str, ms: Option<u64>, free_ms: u64| -> ScorePart {
        match ms {
            None => ScorePart {
                part: what.into(),
                penalty: 30,
                why: "never happened (−30)".into(),
            },
            Some(ms) => {
                let p = (ms.saturating_sub(free_ms) / 2000).min(30) as u32;
                ScorePart {
                    part: what.into(),
                    penalty: p,
                    why: format!(
                        "{} (free up to {} s, then −1 per 2 s, at most −30)",
                        fmt_ms(Some(ms)),
                        free_ms / 1000
                    ),
                }
            }
        }
    };
    vec![
        late("detection", detect_ms, 10_000),
        late("mitigation", mitigate_ms, 30_000),
        ScorePart {
            part: "messages lost".into(),
            penalty: if a.lost > 0 { 50 } else { 0 },
            why: format!("{} lost (any loss: −50)", a.lost),
        },
        ScorePart {
            part: "duplicates".into(),
            penalty: (a.duplicates_processed * 2).min(10) as u32,
            why: format!(
                "{} processed twice (−2 each, at most −10)",
                a.duplicates_processed
            ),
        },
        ScorePart {
            part: "steps skipped".into(),
            penalty: (skipped * 5).min(10),
            why: format!("{skipped} rollback step(s) skipped (−5 each, at most −10)"),
        },
        ScorePart {
            part: "dead letters left".into(),
            penalty: (a.dead_lettered / DEAD_LETTERS_PER_POINT).min(DEAD_LETTERS_MAX_PENALTY)
                as u32,
            why: format!(
                "{} left un-replayed in the DLQ (−1 per {DEAD_LETTERS_PER_POINT}, at most −{DEAD_LETTERS_MAX_PENALTY})",
                a.dead_lettered
            ),
        },
    ]
}

/// Points: 100 minus the penalties of [`parts`], at least 0.
pub fn points(
    detect_ms: Option<u64>,
    mitigate_ms: Option<u64>,
    a: &Accounting,
    skipped: u32,
) -> u32 {
    total(&parts(detect_ms, mitigate_ms, a, skipped))
}

fn total(parts: &[ScorePart]) -> u32 {
    100u32.saturating_sub(parts.iter().map(|p| p.penalty).sum())
}

/// Put a score together.
pub fn score(scenario: &str, t: &Timings, a: Accounting, steps_skipped: u32) -> Score {
    let detect = time_to_detect(t);
    let mitigate = time_to_mitigate(t);
    let parts = parts(detect, mitigate, &a, steps_skipped);
    Score {
        scenario: scenario.to_string(),
        time_to_detect_ms: detect,
        time_to_mitigate_ms: mitigate,
        lost: a.lost,
        duplicates_processed: a.duplicates_processed,
        steps_skipped,
        points: total(&parts),
        parts,
        headless: false,
        accounting: a,
    }
}

impl Score {
    /// The explanation, one line per part that cost points (all parts when `all`):
    /// `−7 detection: 24.3 s (free up to 10 s, then −1 per 2 s, at most −30)`.
    pub fn explain(&self, all: bool) -> Vec<String> {
        self.parts
            .iter()
            .filter(|p| all || p.penalty > 0)
            .map(|p| {
                let sign = if p.penalty > 0 { "−" } else { " " };
                format!("{sign}{:<2} {}: {}", p.penalty, p.part, p.why)
            })
            .collect()
    }
}

pub use crate::model::drill::fmt_ms;

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
        // Dead letters left un-replayed cost points, and the parts say why.
        let left = Accounting {
            dead_lettered: 106,
            ..Default::default()
        };
        assert_eq!(points(Some(5_000), Some(20_000), &left, 0), 90);
        let s = score(
            "poison",
            &Timings {
                fault_at_ms: Some(0),
                first_action_at_ms: Some(24_000),
                gate_off_v2_at_ms: Some(25_000),
                last_v2_failure_at_ms: None,
            },
            left,
            0,
        );
        assert_eq!(s.points, 100 - 7 - 10);
        let why = s.explain(false);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].starts_with("−7  detection: 24.0 s"), "{why:?}");
        assert!(
            why[1].contains("106 left un-replayed in the DLQ"),
            "{why:?}"
        );
        assert_eq!(s.explain(true).len(), 6);
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
