//! The self-driving canary's plan and its decision: given what the metrics source says about the
//! new and the old version over the current step's window, advance, wait, hold or abort — with
//! the numbers that decided it.
//!
//! Pure data so every rule is tested without a broker. The rules, in order:
//! 1. the new version's error rate above the limit over enough processed tasks aborts at once,
//!    even mid-step or paused (unless the old version fails as much: then the input is at fault,
//!    and the step holds);
//! 2. before the step time is up, or while paused, the canary waits;
//! 3. anything unknown (error rate, consumers, backlog), no consumers, fewer processed tasks than
//!    the minimum (an idle step proves nothing) or a backlog above the limit holds;
//! 4. a hold that lasted longer than `max_hold` aborts;
//! 5. otherwise the canary advances. It never advances on unknown data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::gate::GateSplit;
use crate::model::invalid::Invalid;
use crate::model::xdeath::is_version_name;

/// What a canary does, step by step. Durations are in milliseconds so the plan journals as
/// plain JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// The version that has the traffic now (and gets it back on an abort).
    pub from: String,
    /// The new version.
    pub to: String,
    /// The new version's share at each step, in percent, increasing, ending at 100.
    pub steps: Vec<u32>,
    /// How long each step is held and analysed.
    pub step_time_ms: u64,
    /// The new version's error rate above which the canary aborts, in percent.
    pub max_error_rate_pct: f64,
    /// Ready messages in the new version's queue above which a step holds (`None`: no limit).
    #[serde(default)]
    pub max_backlog: Option<u64>,
    /// Tasks the new version must have processed (acked or rejected) in a step's window before
    /// the step can pass.
    pub min_processed: u64,
    /// A hold longer than this aborts.
    pub max_hold_ms: u64,
    /// How often the metrics are read and the analysis is made.
    pub refresh_ms: u64,
    /// The automatic abort's recovery check: how long the old version's error rate is watched.
    pub verify_window_ms: u64,
    /// Dead letters of the new version after an abort: `replay` to the old version, or `keep`.
    pub dead_letters: DeadLetters,
}

/// What the automatic abort does with the new version's dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetters {
    /// Replay them to the old version's queue (the rollback's replay, loop-guarded).
    Replay,
    /// Leave them in the DLQ.
    Keep,
}

/// What an operator asks a running canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlCommand {
    /// Stop advancing (the analysis still aborts on a failing new version).
    Pause,
    /// Advance again.
    Resume,
    /// Give the new version 100 % now.
    Promote,
    /// Roll back now.
    Abort,
}

impl ControlCommand {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlCommand::Pause => "pause",
            ControlCommand::Resume => "resume",
            ControlCommand::Promote => "promote",
            ControlCommand::Abort => "abort",
        }
    }
}

/// Defaults of a plan's tunables (the CLI's defaults).
pub const DEFAULT_STEPS: [u32; 5] = [1, 5, 25, 50, 100];

impl CanaryPlan {
    /// A plan from `from` to `to` with the default tunables.
    pub fn new(from: &str, to: &str) -> Self {
        Self {
            from: from.to_string(),
            to: to.to_string(),
            steps: DEFAULT_STEPS.to_vec(),
            step_time_ms: 120_000,
            max_error_rate_pct: 2.0,
            max_backlog: None,
            min_processed: 10,
            max_hold_ms: 600_000,
            refresh_ms: 5_000,
            verify_window_ms: 10_000,
            dead_letters: DeadLetters::Replay,
        }
    }

    /// Step time.
    pub fn step_time(&self) -> Duration {
        Duration::from_millis(self.step_time_ms)
    }
    /// Longest hold.
    pub fn max_hold(&self) -> Duration {
        Duration::from_millis(self.max_hold_ms)
    }
    /// Refresh interval.
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.max(100))
    }

    /// Is the plan usable? (One line naming what is wrong.)
    pub fn validate(&self) -> Result<(), Invalid> {
        for v in [&self.from, &self.to] {
            if !is_version_name(v) {
                return Err(format!(
                    "`{}` is not a version name (v1, v2, …)",
                    crate::text::sanitize(v)
                )
                .into());
            }
        }
        if self.from == self.to {
            return Err(format!("--from and --to are both {}", self.from).into());
        }
        if self.steps.is_empty() {
            return Err("no steps: give e.g. --steps 1,5,25,50,100".into());
        }
        let mut last = 0;
        for &s in &self.steps {
            if s == 0 || s > 100 {
                return Err(format!("step {s} % is outside 1–100").into());
            }
            if s <= last {
                return Err(format!("steps must increase: {s} % comes after {last} %").into());
            }
            last = s;
        }
        if last != 100 {
            return Err(format!(
                "the last step is {last} %: a canary ends with the new version at 100 (add 100)"
            )
            .into());
        }
        if self.step_time_ms == 0 {
            return Err("the step time is 0: give e.g. --step-time 2m".into());
        }
        if !(self.max_error_rate_pct.is_finite() && (0.0..100.0).contains(&self.max_error_rate_pct))
        {
            return Err(format!(
                "--max-error-rate {} is outside 0–100 (percent)",
                self.max_error_rate_pct
            )
            .into());
        }
        if self.refresh_ms == 0 {
            return Err("the refresh interval is 0".into());
        }
        Ok(())
    }

    /// The gate at step `index` (`to` at the step's weight, `from` at the rest; `from` left out
    /// at 100).
    pub fn split_at(&self, index: usize) -> GateSplit {
        let w = self.steps.get(index).copied().unwrap_or(100).min(100);
        let mut s = GateSplit::default();
        if w < 100 {
            s.0.insert(self.from.clone(), 100 - w);
        }
        s.0.insert(self.to.clone(), w);
        s
    }

    /// The gate an abort goes back to: everything on `from`.
    pub fn rollback_split(&self) -> GateSplit {
        GateSplit([(self.from.clone(), 100)].into())
    }

    /// The first step whose weight is above `current_pct` (the new version's share now);
    /// `None`: it has 100 % already.
    pub fn first_step_above(&self, current_pct: f64) -> Option<usize> {
        self.steps
            .iter()
            .position(|&w| f64::from(w) > current_pct + 1e-9)
    }
}

/// Parse `1,5,25,50,100` (spaces and a trailing `%` allowed).
pub fn parse_steps(s: &str) -> Result<Vec<u32>, Invalid> {
    s.split(',')
        .map(|p| {
            let t = p.trim().trim_end_matches('%').trim();
            t.parse::<u32>().map_err(|_| {
                Invalid::from(format!(
                    "step `{}` is not a whole percentage (e.g. --steps 1,5,25,50,100)",
                    crate::text::sanitize(p.trim())
                ))
            })
        })
        .collect()
}

/// One version over the step's window: counts from the metrics source's counters, consumers and
/// backlog from exact reads. `None` = unknown (never 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionWindow {
    /// Acknowledged in the window.
    pub acked: Option<u64>,
    /// Settled without acknowledgement and not delivered again (dead-lettered) in the window.
    pub rejected: Option<u64>,
    /// Consumers now.
    pub consumers: Option<u64>,
    /// Ready messages now.
    pub ready: Option<u64>,
}

impl VersionWindow {
    /// Acked + rejected (`None` if either is unknown).
    pub fn processed(&self) -> Option<u64> {
        Some(self.acked?.saturating_add(self.rejected?))
    }
    /// rejected ÷ (acked + rejected), percent; `None` when unknown or nothing was processed.
    pub fn error_rate_pct(&self) -> Option<f64> {
        let p = self.processed()?;
        (p > 0).then(|| self.rejected.unwrap_or(0) as f64 * 100.0 / p as f64)
    }
    /// `12.5% (14/112)`, or `unknown`, or `no tasks`.
    pub fn describe_rate(&self) -> String {
        match (self.processed(), self.error_rate_pct()) {
            (Some(p), Some(r)) => format!("{r:.1}% ({}/{p})", self.rejected.unwrap_or(0)),
            (Some(_), None) => "no tasks".into(),
            _ => "unknown".into(),
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), |n| n.to_string())
}

/// What the analysis saw in the current step's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The new version.
    pub new: VersionWindow,
    /// The old version.
    pub old: VersionWindow,
    /// How much of the step the window covers, in milliseconds.
    pub window_ms: u64,
    /// The metrics source the counts came from (`prometheus`, `management`), or why none could
    /// be used.
    pub source: String,
}

impl Analysis {
    /// One line with every number (`v2 30.1% (34/113), v1 0.0% (0/420) over 4.0 s; v2: 2
    /// consumers, 3 ready`).
    pub fn describe(&self, plan: &CanaryPlan) -> String {
        format!(
            "{} {}, {} {} over {:.1} s; {}: {} consumer(s), {} ready [{}]",
            plan.to,
            self.new.describe_rate(),
            plan.from,
            self.old.describe_rate(),
            self.window_ms as f64 / 1000.0,
            plan.to,
            opt(self.new.consumers),
            opt(self.new.ready),
            self.source
        )
    }
}

/// Where the running step is in time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepClock {
    /// Time spent in the step (paused time excluded).
    pub elapsed: Duration,
    /// How long the step has been holding before this analysis (0: not holding).
    pub held_for: Duration,
    /// Paused by an operator.
    pub paused: bool,
}

/// The canary's decision after one analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    /// The step passed: go to the next one (or finish at 100 %).
    Advance {
        /// Why, with the numbers.
        why: String,
    },
    /// The step time is not up yet (or the canary is paused): keep watching.
    Wait {
        /// Why.
        why: String,
    },
    /// The step time is up but the analysis cannot pass it: keep the step and look again.
    Hold {
        /// Why, with the numbers.
        why: String,
    },
    /// Roll back.
    Abort {
        /// Why, with the numbers.
        why: String,
    },
}

impl Verdict {
    /// `advance`, `wait`, `hold`, `abort`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Advance { .. } => "advance",
            Verdict::Wait { .. } => "wait",
            Verdict::Hold { .. } => "hold",
            Verdict::Abort { .. } => "abort",
        }
    }
    /// The reason.
    pub fn why(&self) -> &str {
        match self {
            Verdict::Advance { why }
            | Verdict::Wait { why }
            | Verdict::Hold { why }
            | Verdict::Abort { why } => why,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Decide (see the module doc for the rules).
pub fn decide(plan: &CanaryPlan, a: &Analysis, clock: StepClock) -> Verdict {
    let (new, old) = (&a.new, &a.old);
    let enough = |w: &VersionWindow| {
        w.processed()
            .is_some_and(|p| p >= plan.min_processed.max(1))
    };
    if let Some(rate) = new.error_rate_pct()
        && enough(new)
        && rate > plan.max_error_rate_pct
    {
        let old_rate = old.error_rate_pct().filter(|_| enough(old));
        let evidence = format!(
            "{} error rate {} > max {}% ({} {})",
            plan.to,
            new.describe_rate(),
            plan.max_error_rate_pct,
            plan.from,
            old.describe_rate()
        );
        match old_rate {
            Some(o) if o >= rate => {
                return held(
                    plan,
                    clock,
                    format!(
                        "{evidence}: both versions fail alike, so the input is at fault, not {}",
                        plan.to
                    ),
                );
            }
            _ => return Verdict::Abort { why: evidence },
        }
    }
    if clock.paused {
        return Verdict::Wait {
            why: "paused by an operator".into(),
        };
    }
    let step_time = plan.step_time();
    if clock.elapsed < step_time {
        return Verdict::Wait {
            why: format!(
                "{} of the step left",
                secs(step_time.saturating_sub(clock.elapsed))
            ),
        };
    }
    let hold_reason = if new.processed().is_none() {
        Some(format!(
            "the error rate of {} is unknown ({}): no decision on unknown data",
            plan.to, a.source
        ))
    } else if new.consumers.is_none() {
        Some(format!("the consumers of {} are unknown", plan.to))
    } else if new.consumers == Some(0) {
        Some(format!("{} has no consumers", plan.to))
    } else if !enough(new) {
        Some(format!(
            "{} processed {} task(s) in {}, fewer than the minimum {}: an idle step proves nothing",
            plan.to,
            new.processed().unwrap_or(0),
            secs(Duration::from_millis(a.window_ms)),
            plan.min_processed.max(1)
        ))
    } else if let Some(max) = plan.max_backlog {
        match new.ready {
            None => Some(format!("the backlog of {} is unknown", plan.to)),
            Some(r) if r > max => Some(format!(
                "{} has {r} ready task(s), more than the max backlog {max}",
                plan.to
            )),
            _ => None,
        }
    } else {
        None
    };
    match hold_reason {
        Some(why) => held(plan, clock, why),
        None => Verdict::Advance {
            why: format!(
                "{} error rate {} ≤ max {}% over {} ({} {}); {} consumer(s), {} ready",
                plan.to,
                new.describe_rate(),
                plan.max_error_rate_pct,
                secs(Duration::from_millis(a.window_ms)),
                plan.from,
                old.describe_rate(),
                opt(new.consumers),
                opt(new.ready)
            ),
        },
    }
}

/// A hold, or an abort once the hold outlasted `max_hold`.
fn held(plan: &CanaryPlan, clock: StepClock, why: String) -> Verdict {
    if !clock.paused && clock.held_for >= plan.max_hold() {
        Verdict::Abort {
            why: format!(
                "held for {} (max hold {}): {why}",
                secs(clock.held_for),
                secs(plan.max_hold())
            ),
        }
    } else {
        Verdict::Hold { why }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plan() -> CanaryPlan {
        CanaryPlan {
            step_time_ms: 10_000,
            max_hold_ms: 30_000,
            min_processed: 20,
            ..CanaryPlan::new("v1", "v2")
        }
    }

    fn w(acked: u64, rejected: u64, consumers: u64) -> VersionWindow {
        VersionWindow {
            acked: Some(acked),
            rejected: Some(rejected),
            consumers: Some(consumers),
            ready: Some(0),
        }
    }

    fn analysis(new: VersionWindow, old: VersionWindow) -> Analysis {
        Analysis {
            new,
            old,
            window_ms: 10_000,
            source: "prometheus".into(),
        }
    }

    fn at(elapsed_s: u64, held_s: u64) -> StepClock {
        StepClock {
            elapsed: Duration::from_secs(elapsed_s),
            held_for: Duration::from_secs(held_s),
            paused: false,
        }
    }

    #[test]
    fn a_healthy_step_waits_then_advances() {
        let a = analysis(w(200, 1, 2), w(800, 0, 2));
        assert_eq!(decide(&plan(), &a, at(3, 0)).name(), "wait");
        let v = decide(&plan(), &a, at(10, 0));
        assert_eq!(v.name(), "advance", "{v:?}");
        assert!(v.why().contains("0.5% (1/201)"), "{}", v.why());
    }

    #[test]
    fn a_failing_new_version_aborts_at_once_even_mid_step_or_paused() {
        let a = analysis(w(70, 30, 2), w(800, 0, 2));
        let v = decide(&plan(), &a, at(1, 0));
        assert_eq!(v.name(), "abort");
        assert!(v.why().contains("30.0% (30/100) > max 2%"), "{}", v.why());
        assert!(v.why().contains("v1 0.0% (0/800)"), "{}", v.why());
        let paused = StepClock {
            paused: true,
            ..at(1, 0)
        };
        assert_eq!(decide(&plan(), &a, paused).name(), "abort");
    }

    #[test]
    fn too_few_tasks_cannot_abort_or_advance() {
        // 3 of 5 rejected is 60 %, but 5 tasks prove nothing either way.
        let a = analysis(w(2, 3, 2), w(800, 0, 2));
        assert_eq!(decide(&plan(), &a, at(2, 0)).name(), "wait");
        let v = decide(&plan(), &a, at(10, 0));
        assert_eq!(v.name(), "hold");
        assert!(v.why().contains("idle step proves nothing"), "{}", v.why());
    }

    #[test]
    fn unknown_holds_and_a_long_hold_aborts_never_advances() {
        let unknown = Analysis {
            source: "no metrics source: the management API collects no statistics".into(),
            ..Default::default()
        };
        for held in [0, 5, 29] {
            let v = decide(&plan(), &unknown, at(10 + held, held));
            assert_eq!(v.name(), "hold", "{v:?}");
            assert!(v.why().contains("unknown"));
        }
        let v = decide(&plan(), &unknown, at(40, 30));
        assert_eq!(v.name(), "abort");
        assert!(v.why().starts_with("held for 30.0 s"), "{}", v.why());
        // Idle (known zero) is a hold too.
        let idle = analysis(w(0, 0, 2), w(0, 0, 2));
        assert_eq!(decide(&plan(), &idle, at(10, 0)).name(), "hold");
        assert_eq!(decide(&plan(), &idle, at(50, 31)).name(), "abort");
    }

    #[test]
    fn no_consumers_or_a_backlog_holds() {
        let a = analysis(w(200, 0, 0), w(800, 0, 2));
        assert!(
            decide(&plan(), &a, at(10, 0))
                .why()
                .contains("no consumers")
        );
        let mut p = plan();
        p.max_backlog = Some(50);
        let mut n = w(200, 0, 2);
        n.ready = Some(51);
        let v = decide(&p, &analysis(n, w(800, 0, 2)), at(10, 0));
        assert_eq!(v.name(), "hold");
        assert!(v.why().contains("51 ready"), "{}", v.why());
        n.ready = None;
        assert_eq!(
            decide(&p, &analysis(n, w(800, 0, 2)), at(10, 0)).name(),
            "hold"
        );
    }

    #[test]
    fn both_versions_failing_alike_is_the_input_not_the_new_version() {
        let a = analysis(w(90, 10, 2), w(850, 150, 2));
        let v = decide(&plan(), &a, at(10, 0));
        assert_eq!(v.name(), "hold", "{v:?}");
        assert!(v.why().contains("both versions fail alike"));
    }

    #[test]
    fn paused_waits_and_does_not_age_into_an_abort() {
        let idle = analysis(w(0, 0, 2), w(0, 0, 2));
        let c = StepClock {
            paused: true,
            ..at(100, 100)
        };
        assert_eq!(decide(&plan(), &idle, c).name(), "wait");
    }

    #[test]
    fn plans_validate_and_split() {
        let p = plan();
        p.validate().unwrap();
        assert_eq!(
            p.split_at(0),
            GateSplit::from_pairs([("v1".into(), 99), ("v2".into(), 1)])
        );
        assert_eq!(p.split_at(4), GateSplit::from_pairs([("v2".into(), 100)]));
        assert_eq!(p.first_step_above(0.0), Some(0));
        assert_eq!(p.first_step_above(25.0), Some(3));
        assert_eq!(p.first_step_above(100.0), None);
        assert_eq!(parse_steps("1, 5,25%,100").unwrap(), vec![1, 5, 25, 100]);
        assert!(parse_steps("1,x").is_err());
        for (steps, want) in [
            (vec![5, 1, 100], "must increase"),
            (vec![1, 50], "add 100"),
            (vec![0, 100], "outside"),
        ] {
            let bad = CanaryPlan { steps, ..plan() };
            assert!(bad.validate().unwrap_err().contains(want));
        }
        let same = CanaryPlan {
            to: "v1".into(),
            ..plan()
        };
        assert!(same.validate().is_err());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(serde_json::from_value::<CanaryPlan>(json).unwrap(), p);
    }
}
