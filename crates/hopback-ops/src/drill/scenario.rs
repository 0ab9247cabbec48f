//! Drill scenarios: which fault v2 gets and how a v2 worker behaves under it.
//!
//! The behaviour is decided here, as plain data ([`Verdict`]), so the worker loop in
//! [`super::fleet`] stays a dumb executor and the fault models can be unit-tested without a broker.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The task shape header producers set; the `partial` scenario fails one shape only.
pub const TASK_SHAPE_HEADER: &str = "task_shape";
/// Task shapes producers cycle through (by weight: single 60 %, batch 25 %, bulk 15 %).
pub const TASK_SHAPES: [(&str, u32); 3] = [("single", 60), ("batch", 25), ("bulk", 15)];
/// The shape v2 cannot handle in the `partial` scenario.
pub const PARTIAL_FAILING_SHAPE: &str = "bulk";
/// A task slower than this counts as a failure (an SLA breach) in the `slow` scenario.
pub const SLOW_SLA: Duration = Duration::from_millis(400);

/// A drill scenario (`--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// v2 rejects a fraction of its tasks without requeue (they are dead-lettered).
    Poison,
    /// v2's latency climbs until its queue backs up.
    Slow,
    /// v2 workers disconnect repeatedly; their unacked work is redelivered.
    Crash,
    /// v2 fails only one task shape (`task_shape = bulk`), visible in the dead-letter grouping.
    Partial,
    /// One of the above, not told.
    Random,
    /// No person: v2 rejects a share of its tasks from its first one, and a self-driving canary
    /// (`ops::canary`) rolls it out from v1 — it must catch the fault and roll back by itself.
    Canary,
}

impl Scenario {
    /// Every scenario's name with its one-line description (the CLI's `--scenario` values).
    pub const TABLE: &'static [(&'static str, &'static str)] = &[
        (
            "poison",
            "v2 rejects a fraction of its tasks without requeue (they are dead-lettered)",
        ),
        ("slow", "v2's latency climbs until its queue backs up"),
        (
            "crash",
            "v2 workers disconnect repeatedly; their unacked work is redelivered",
        ),
        (
            "partial",
            "v2 fails only one task shape (`task_shape = bulk`), visible in the dead-letter grouping",
        ),
        ("random", "One of the above, not told"),
    ];
    /// The concrete scenarios (everything but `random`).
    pub const CONCRETE: [Scenario; 4] = [
        Scenario::Poison,
        Scenario::Slow,
        Scenario::Crash,
        Scenario::Partial,
    ];
    /// Resolve `random` to a concrete scenario (others unchanged).
    pub fn resolve(self) -> Scenario {
        match self {
            Scenario::Random => {
                let i = rand::random_range(0..Self::CONCRETE.len());
                Self::CONCRETE.get(i).copied().unwrap_or(Scenario::Poison)
            }
            s => s,
        }
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Poison => "poison",
            Scenario::Slow => "slow",
            Scenario::Crash => "crash",
            Scenario::Partial => "partial",
            Scenario::Random => "random",
            Scenario::Canary => "canary",
        }
    }
    /// One line for the briefing after the drill (what was wrong with v2).
    pub fn explanation(self) -> &'static str {
        match self {
            Scenario::Poison => {
                "v2 rejected a fraction of its tasks without requeue (dead letters)"
            }
            Scenario::Slow => "v2's latency climbed until its queue backed up",
            Scenario::Crash => "v2 workers crashed repeatedly; their unacked work was redelivered",
            Scenario::Partial => "v2 failed every `task_shape = bulk` task and nothing else",
            Scenario::Random => "a hidden scenario",
            Scenario::Canary => {
                "v2 rejected a share of its tasks from the start; the self-driving canary rolled it out and had to catch it"
            }
        }
    }
}

crate::display_as!(Scenario, as_str);

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "poison" => Ok(Scenario::Poison),
            "slow" => Ok(Scenario::Slow),
            "crash" => Ok(Scenario::Crash),
            "partial" => Ok(Scenario::Partial),
            "random" => Ok(Scenario::Random),
            "canary" => Ok(Scenario::Canary),
            other => Err(format!(
                "unknown scenario `{other}`; use poison, slow, crash, partial, random or canary"
            )),
        }
    }
}

/// Tunables of the fault models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultParams {
    /// `poison`: share of v2 tasks rejected (0.0–1.0).
    pub poison_fraction: f64,
    /// `slow`: latency added per second since the fault.
    pub slow_ms_per_s: u64,
    /// `slow`: latency ceiling.
    pub slow_max_ms: u64,
    /// `crash`: a v2 worker crashes after this many tasks since it (re)connected.
    pub crash_every_tasks: u32,
}

impl Default for FaultParams {
    fn default() -> Self {
        Self {
            poison_fraction: 0.4,
            slow_ms_per_s: 150,
            slow_max_ms: 1500,
            crash_every_tasks: 4,
        }
    }
}

/// What a worker does with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Do the work (taking this long), commit the side effect, ack.
    Process {
        /// Simulated work time.
        latency: Duration,
    },
    /// Reject without requeue (the queue dead-letters it).
    Reject,
    /// Crash: drop the connection without acking. `after_commit` = the side effect was already
    /// written (the redelivery must then be deduplicated).
    Crash {
        /// Side effect committed before the crash?
        after_commit: bool,
    },
}

/// What a task looks like to the fault model.
#[derive(Debug, Clone, Copy)]
pub struct TaskView<'a> {
    /// The `task_shape` header.
    pub shape: &'a str,
    /// Tasks this worker handled since it last (re)connected, this one included.
    pub tasks_since_connect: u32,
    /// Uniform random number in [0, 1) for this task.
    pub roll: f64,
}

/// Decide a worker's verdict. `fault_age` is `None` before the fault (or for versions without
/// it); then every task is processed with `base_latency`.
pub fn verdict(
    scenario: Scenario,
    params: &FaultParams,
    fault_age: Option<Duration>,
    base_latency: Duration,
    task: TaskView<'_>,
) -> Verdict {
    let Some(age) = fault_age else {
        return Verdict::Process {
            latency: base_latency,
        };
    };
    match scenario {
        Scenario::Poison | Scenario::Random | Scenario::Canary => {
            if task.roll < params.poison_fraction {
                Verdict::Reject
            } else {
                Verdict::Process {
                    latency: base_latency,
                }
            }
        }
        Scenario::Slow => {
            let extra = (age.as_millis() as u64)
                .saturating_mul(params.slow_ms_per_s)
                .saturating_div(1000)
                .min(params.slow_max_ms);
            Verdict::Process {
                latency: base_latency + Duration::from_millis(extra),
            }
        }
        Scenario::Crash => {
            if params.crash_every_tasks > 0 && task.tasks_since_connect >= params.crash_every_tasks
            {
                Verdict::Crash {
                    after_commit: task.roll < 0.5,
                }
            } else {
                Verdict::Process {
                    latency: base_latency,
                }
            }
        }
        Scenario::Partial => {
            if task.shape == PARTIAL_FAILING_SHAPE {
                Verdict::Reject
            } else {
                Verdict::Process {
                    latency: base_latency,
                }
            }
        }
    }
}

/// Pick a task shape for a roll in [0, 1) by [`TASK_SHAPES`] weights.
pub fn shape_for(roll: f64) -> &'static str {
    let total: u32 = TASK_SHAPES.iter().map(|(_, w)| w).sum();
    let mut acc = 0.0;
    for (shape, w) in TASK_SHAPES {
        acc += f64::from(w) / f64::from(total);
        if roll < acc {
            return shape;
        }
    }
    "single"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn task(shape: &str, n: u32, roll: f64) -> TaskView<'_> {
        TaskView {
            shape,
            tasks_since_connect: n,
            roll,
        }
    }

    const BASE: Duration = Duration::from_millis(5);

    #[test]
    fn no_fault_means_processing() {
        for s in Scenario::CONCRETE {
            let v = verdict(
                s,
                &FaultParams::default(),
                None,
                BASE,
                task("bulk", 99, 0.0),
            );
            assert_eq!(v, Verdict::Process { latency: BASE });
        }
    }

    #[test]
    fn poison_rejects_by_fraction() {
        let p = FaultParams {
            poison_fraction: 0.3,
            ..Default::default()
        };
        let age = Some(Duration::from_secs(1));
        assert_eq!(
            verdict(Scenario::Poison, &p, age, BASE, task("single", 1, 0.29)),
            Verdict::Reject
        );
        assert_eq!(
            verdict(Scenario::Poison, &p, age, BASE, task("single", 1, 0.31)),
            Verdict::Process { latency: BASE }
        );
    }

    #[test]
    fn slow_latency_climbs_and_caps() {
        let p = FaultParams::default();
        let at = |s| match verdict(
            Scenario::Slow,
            &p,
            Some(Duration::from_secs(s)),
            BASE,
            task("single", 1, 0.0),
        ) {
            Verdict::Process { latency } => latency,
            other => unreachable!("{other:?}"),
        };
        assert!(at(2) > at(1));
        assert_eq!(at(1000), BASE + Duration::from_millis(p.slow_max_ms));
    }

    #[test]
    fn crash_after_n_tasks() {
        let p = FaultParams::default();
        let age = Some(Duration::from_secs(1));
        assert!(matches!(
            verdict(Scenario::Crash, &p, age, BASE, task("single", 1, 0.0)),
            Verdict::Process { .. }
        ));
        assert_eq!(
            verdict(
                Scenario::Crash,
                &p,
                age,
                BASE,
                task("single", p.crash_every_tasks, 0.7)
            ),
            Verdict::Crash {
                after_commit: false
            }
        );
    }

    #[test]
    fn partial_fails_one_shape_only() {
        let p = FaultParams::default();
        let age = Some(Duration::from_secs(1));
        assert_eq!(
            verdict(Scenario::Partial, &p, age, BASE, task("bulk", 1, 0.9)),
            Verdict::Reject
        );
        assert!(matches!(
            verdict(Scenario::Partial, &p, age, BASE, task("single", 1, 0.0)),
            Verdict::Process { .. }
        ));
    }

    #[test]
    fn shapes_cover_the_weights() {
        assert_eq!(shape_for(0.0), "single");
        assert_eq!(shape_for(0.7), "batch");
        assert_eq!(shape_for(0.99), "bulk");
        assert!("nope".parse::<Scenario>().is_err());
        assert_eq!("crash".parse::<Scenario>().unwrap(), Scenario::Crash);
        assert_eq!("canary".parse::<Scenario>().unwrap(), Scenario::Canary);
        assert!(
            !Scenario::CONCRETE.contains(&Scenario::Canary),
            "never played at random"
        );
        for _ in 0..20 {
            assert_ne!(Scenario::Random.resolve(), Scenario::Random);
        }
    }
}
