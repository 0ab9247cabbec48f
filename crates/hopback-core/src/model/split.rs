//! The split that happens, next to the split that is configured.
//!
//! The gate's weights say what share of new tasks each version *should* get; the version queues'
//! publish counters say what share it *did* get over a window. [`check`] compares the two and
//! speaks only when the traffic is enough to tell: a measured share is called off when it is
//! more than [`MIN_POINTS`] percentage points from the configured one *and* a Chernoff bound
//! puts the chance of that under a working hash below 1 in 1,000 — so 0 of 60 tasks at a
//! configured 10 % is not yet an alert (the bound is conservative), 0 of 70 is. A split that
//! looks right is called right only after [`tasks_to_tell`] tasks.

use std::collections::BTreeMap;

use serde::Serialize;

use super::gate::GateSplit;
use super::hash::{HashInputs, HashOn};

/// Smallest difference (in percentage points) between configured and measured shares that is
/// reported.
pub const MIN_POINTS: f64 = 5.0;
/// Tasks in the window below which a split that looks right is "not enough traffic yet".
pub const MIN_TASKS: u64 = 20;
/// `ln(1000)`: a deviation is significant when its Chernoff bound is below 1/1000.
const SIGNIFICANCE_NATS: f64 = 6.907_755_278_982_137;

/// New tasks each version received over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeasuredSplit {
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Version → tasks published into its queue in the window.
    pub tasks: BTreeMap<String, u64>,
}

impl MeasuredSplit {
    /// The difference of two counter readings (`before`, `after`: version → the queue's total
    /// publish counter). `None` when a counter is unknown on either side (no management stats:
    /// unknown, never 0) or went backwards (a queue re-created).
    pub fn between(
        before: &BTreeMap<String, Option<u64>>,
        after: &BTreeMap<String, Option<u64>>,
        window_s: f64,
    ) -> Option<Self> {
        let mut tasks = BTreeMap::new();
        for (v, a) in after {
            let a = (*a)?;
            let b = before.get(v).copied().flatten()?;
            tasks.insert(v.clone(), a.checked_sub(b)?);
        }
        (!tasks.is_empty()).then_some(Self { window_s, tasks })
    }
    /// The split over the newest stretch that every version's counter history covers, at most
    /// `window_ms` long (histories: version → `(unix ms, total published)` samples in any order;
    /// an empty history is a queue nothing was ever published to; `None` is unknown, and makes
    /// the whole split unknown).
    pub fn from_history(
        histories: &BTreeMap<String, Option<Vec<(i64, u64)>>>,
        window_ms: i64,
    ) -> Option<Self> {
        let mut newest = i64::MAX;
        let mut oldest = i64::MIN;
        for h in histories.values() {
            let h = h.as_ref()?;
            if let (Some(hi), Some(lo)) = (h.iter().map(|s| s.0).max(), h.iter().map(|s| s.0).min())
            {
                newest = newest.min(hi);
                oldest = oldest.max(lo);
            }
        }
        if newest == i64::MAX || oldest >= newest {
            return None;
        }
        let start = oldest.max(newest - window_ms);
        // The counter at `t`: the latest sample at or before it (0 before the first).
        let at = |h: &[(i64, u64)], t: i64| {
            h.iter()
                .filter(|s| s.0 <= t)
                .max_by_key(|s| s.0)
                .map_or(0, |s| s.1)
        };
        let mut tasks = BTreeMap::new();
        for (v, h) in histories {
            let h = h.as_deref().unwrap_or_default();
            tasks.insert(v.clone(), at(h, newest).checked_sub(at(h, start))?);
        }
        Some(Self {
            window_s: (newest - start) as f64 / 1000.0,
            tasks,
        })
    }
    /// Tasks in the window, all versions.
    pub fn total(&self) -> u64 {
        self.tasks.values().sum()
    }
    /// Share of `v` in percent (`None` without traffic).
    pub fn percent(&self, v: &str) -> Option<f64> {
        let t = self.total();
        (t > 0).then(|| self.tasks.get(v).copied().unwrap_or(0) as f64 * 100.0 / t as f64)
    }
    /// `v1 100% · v2 0% of 312 tasks in 60 s` (or `no tasks in 60 s`).
    pub fn describe(&self) -> String {
        let t = self.total();
        if t == 0 {
            return format!("no tasks in {:.0} s", self.window_s);
        }
        let parts: Vec<String> = self
            .tasks
            .keys()
            .map(|v| format!("{v} {:.0}%", self.percent(v).unwrap_or(0.0)))
            .collect();
        format!(
            "{} of {t} tasks in {:.0} s",
            parts.join(" · "),
            self.window_s
        )
    }
}

/// The verdict on a measured split.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum SplitCheck {
    /// Nothing to compare (no counters, no gate).
    Unknown {
        /// Why.
        why: String,
    },
    /// Too few tasks to tell yet.
    TooLittleTraffic {
        /// Tasks seen.
        tasks: u64,
    },
    /// The tasks went where the weights say (within the noise).
    Agrees {
        /// Tasks seen.
        tasks: u64,
    },
    /// They did not.
    Differs {
        /// The version furthest off.
        version: String,
        /// Its configured share, percent.
        configured_pct: f64,
        /// Its measured share, percent.
        measured_pct: f64,
        /// Tasks seen.
        tasks: u64,
        /// Every task went to one version although the gate splits: the hashed field is the
        /// same (or missing) on all of them.
        degenerate: bool,
    },
}

/// Kullback–Leibler divergence of Bernoulli(q) from Bernoulli(p), in nats.
fn kl(q: f64, p: f64) -> f64 {
    let term = |a: f64, b: f64| {
        if a <= 0.0 {
            0.0
        } else if b <= 0.0 {
            f64::INFINITY
        } else {
            a * (a / b).ln()
        }
    };
    term(q, p) + term(1.0 - q, 1.0 - p)
}

/// Compare what the gate says with what happened.
pub fn check(configured: &GateSplit, measured: &MeasuredSplit) -> SplitCheck {
    if configured.total() == 0 {
        return SplitCheck::Unknown {
            why: "no gate".into(),
        };
    }
    let n = measured.total();
    let mut worst: Option<(String, f64, f64, f64)> = None;
    let versions = configured.0.keys().chain(measured.tasks.keys());
    for v in versions {
        let p = configured.percent(v) / 100.0;
        let q = measured.percent(v).unwrap_or(0.0) / 100.0;
        let off = (q - p).abs() * 100.0;
        let evidence = n as f64 * kl(q, p);
        if off > MIN_POINTS
            && evidence > SIGNIFICANCE_NATS
            && worst.as_ref().is_none_or(|w| off > w.3)
        {
            worst = Some((v.clone(), p * 100.0, q * 100.0, off));
        }
    }
    match worst {
        Some((version, configured_pct, measured_pct, _)) => SplitCheck::Differs {
            degenerate: configured.bound().count() > 1
                && measured.tasks.values().filter(|t| **t > 0).count() == 1,
            version,
            configured_pct,
            measured_pct,
            tasks: n,
        },
        None if n < tasks_to_tell(configured) => SplitCheck::TooLittleTraffic { tasks: n },
        None => SplitCheck::Agrees { tasks: n },
    }
}

/// Tasks needed before a split that looks right counts as right: enough that the smallest bound
/// version receiving none of them would have been significant (10 at 50/50, 66 at 90/10, 688
/// at 99/1), and at least [`MIN_TASKS`].
pub fn tasks_to_tell(configured: &GateSplit) -> u64 {
    let smallest = configured
        .bound()
        .map(|(v, _)| configured.percent(v) / 100.0)
        .filter(|p| *p < 1.0)
        .fold(1.0_f64, f64::min);
    if smallest >= 1.0 {
        return MIN_TASKS;
    }
    let per_task = kl(0.0, smallest);
    ((SIGNIFICANCE_NATS / per_task).ceil() as u64).max(MIN_TASKS)
}

/// Why the split is off, in one sentence ending in the remedy: from a sample of the tasks when
/// there is one that shows it, else from the shape of the split (every task on one version means
/// the hashed field is missing or constant); `None` when neither tells.
pub fn cause(
    check: &SplitCheck,
    hash: Option<&HashOn>,
    sample: Option<&HashInputs>,
    ns: &str,
) -> Option<String> {
    let SplitCheck::Differs { degenerate, .. } = check else {
        return None;
    };
    let ns = crate::text::sanitize(ns);
    let remedy = |best: Option<HashOn>| match best {
        Some(b) if Some(&b) != hash => {
            format!(
                " — see `--hash-on`: they do carry {} (`hopback gate hash-on {ns} {b}`)",
                b.field()
            )
        }
        _ => " — see `--hash-on`".to_string(),
    };
    if let (Some(h), Some(s)) = (hash, sample)
        && let Some(c) = s.cause(h)
    {
        return Some(format!("{c}{}", remedy(s.best())));
    }
    if *degenerate {
        let field = hash
            .map(HashOn::field)
            .unwrap_or_else(|| "hashed field".into());
        return Some(format!(
            "every task hashed alike: they carry no {field}, or all the same one (Celery sets no message_id){}",
            remedy(sample.and_then(HashInputs::best))
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn split(pairs: &[(&str, u32)]) -> GateSplit {
        GateSplit::from_pairs(pairs.iter().map(|(v, w)| (v.to_string(), *w)))
    }
    fn measured(pairs: &[(&str, u64)]) -> MeasuredSplit {
        MeasuredSplit {
            window_s: 60.0,
            tasks: pairs.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn counters_unknown_or_reset_are_unknown() {
        let b: BTreeMap<String, Option<u64>> =
            [("v1".into(), Some(10)), ("v2".into(), None)].into();
        let a: BTreeMap<String, Option<u64>> =
            [("v1".into(), Some(20)), ("v2".into(), Some(5))].into();
        assert_eq!(MeasuredSplit::between(&b, &a, 5.0), None);
        let b: BTreeMap<String, Option<u64>> = [("v1".into(), Some(30))].into();
        let a: BTreeMap<String, Option<u64>> = [("v1".into(), Some(20))].into();
        assert_eq!(MeasuredSplit::between(&b, &a, 5.0), None);
        let b: BTreeMap<String, Option<u64>> =
            [("v1".into(), Some(10)), ("v2".into(), Some(0))].into();
        let a: BTreeMap<String, Option<u64>> =
            [("v1".into(), Some(100)), ("v2".into(), Some(10))].into();
        let m = MeasuredSplit::between(&b, &a, 5.0).unwrap();
        assert_eq!(m.total(), 100);
        assert_eq!(m.describe(), "v1 90% · v2 10% of 100 tasks in 5 s");
    }

    #[test]
    fn histories_are_read_over_the_stretch_all_of_them_cover() {
        let h: BTreeMap<String, Option<Vec<(i64, u64)>>> = [
            (
                "v1".to_string(),
                Some(vec![(60_000, 900), (5_000, 0), (30_000, 400)]),
            ),
            ("v2".to_string(), Some(vec![])),
        ]
        .into();
        let m = MeasuredSplit::from_history(&h, 60_000).unwrap();
        assert_eq!(m.tasks["v1"], 900);
        assert_eq!(m.tasks["v2"], 0);
        assert_eq!(m.window_s, 55.0);
        let m = MeasuredSplit::from_history(&h, 30_000).unwrap();
        assert_eq!(m.tasks["v1"], 500);
        let unknown: BTreeMap<String, Option<Vec<(i64, u64)>>> =
            [("v1".to_string(), None), ("v2".to_string(), Some(vec![]))].into();
        assert_eq!(MeasuredSplit::from_history(&unknown, 60_000), None);
        let no_samples: BTreeMap<String, Option<Vec<(i64, u64)>>> =
            [("v1".to_string(), Some(vec![]))].into();
        assert_eq!(MeasuredSplit::from_history(&no_samples, 60_000), None);
    }

    #[test]
    fn the_issue_s_three_cases_are_caught_and_honest_splits_are_not() {
        let c = split(&[("v1", 50), ("v2", 50)]);
        assert!(matches!(
            check(&c, &measured(&[("v1", 0), ("v2", 60)])),
            SplitCheck::Differs {
                degenerate: true,
                ..
            }
        ));
        let c = split(&[("v1", 90), ("v2", 10)]);
        // 20 of 20 to v1 at 90/10 is not evidence yet; 100 of 100 is.
        assert_eq!(
            check(&c, &measured(&[("v1", 20), ("v2", 0)])),
            SplitCheck::TooLittleTraffic { tasks: 20 }
        );
        assert!(matches!(
            check(&c, &measured(&[("v1", 100), ("v2", 0)])),
            SplitCheck::Differs {
                degenerate: true,
                ..
            }
        ));
        assert_eq!(
            check(&c, &measured(&[("v1", 905), ("v2", 95)])),
            SplitCheck::Agrees { tasks: 1000 }
        );
        assert_eq!(
            check(&c, &measured(&[("v1", 88), ("v2", 12)])),
            SplitCheck::Agrees { tasks: 100 }
        );
        assert_eq!(
            check(&c, &measured(&[("v1", 54), ("v2", 6)])),
            SplitCheck::TooLittleTraffic { tasks: 60 }
        );
        assert_eq!(tasks_to_tell(&c), 66);
        assert_eq!(tasks_to_tell(&split(&[("v1", 50), ("v2", 50)])), 20);
        assert_eq!(tasks_to_tell(&split(&[("v1", 99), ("v2", 1)])), 688);
        let c = split(&[("v1", 99), ("v2", 1)]);
        assert!(matches!(
            check(&c, &measured(&[("v1", 0), ("v2", 500)])),
            SplitCheck::Differs { .. }
        ));
        let c = split(&[("v1", 100)]);
        assert_eq!(
            check(&c, &measured(&[("v1", 500), ("v2", 0)])),
            SplitCheck::Agrees { tasks: 500 }
        );
    }

    #[test]
    fn the_cause_names_the_share_when_a_sample_shows_it() {
        use crate::model::hash::TaskKeys;
        let c = split(&[("v1", 90), ("v2", 10)]);
        let off = check(&c, &measured(&[("v1", 300), ("v2", 0)]));
        let keys: Vec<TaskKeys> = (0..50)
            .map(|i| TaskKeys {
                message_id: (i >= 46).then(|| format!("m{i}")),
                correlation_id: Some(format!("c{i}")),
                ..Default::default()
            })
            .collect();
        let s = HashInputs::from_keys(&keys, vec![]);
        let why = cause(&off, Some(&HashOn::MessageId), Some(&s), "email").unwrap();
        assert_eq!(
            why,
            "92 % of 50 sampled tasks have no message_id: the gate cannot split them — see `--hash-on`: they do carry correlation_id (`hopback gate hash-on email correlation_id`)"
        );
        let blind = cause(&off, Some(&HashOn::MessageId), None, "email").unwrap();
        assert!(
            blind.starts_with("every task hashed alike: they carry no message_id"),
            "{blind}"
        );
        assert_eq!(
            cause(&SplitCheck::Agrees { tasks: 9 }, None, None, "e"),
            None
        );
    }
}
