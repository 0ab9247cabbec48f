//! Rollback plans: the step vocabulary, the built-in default plan (DESIGN §3) and TOML plan files
//! (the team's versioned "rollback scripts").
//!
//! A plan file is parsed step by step so every validation error names the step (number and kind)
//! and the key at fault, e.g. `step 3 (drain): unknown key `frm`; expected one of from, to, limit`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::gate::GateSplit;
use crate::model::xdeath::is_version_name;

/// What to do with the dead letters of the version being rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlqChoice {
    /// Ask the operator (with `--yes`: replay).
    Ask,
    /// Replay them to the target version's queue.
    Replay,
    /// Leave them in the DLQ.
    Keep,
    /// Write them to a JSONL file in the data dir, then remove them from the DLQ.
    Export,
}

/// What a `verify` step measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Dead-lettered ÷ (acked + dead-lettered) of the version over the window, in percent.
    ErrorRate,
    /// The unrouted queue is empty.
    UnroutedEmpty,
    /// The version's queue has no ready messages.
    ReadyZero,
}

/// One step's kind and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// Print a note (journaled).
    Note {
        /// Text.
        text: String,
    },
    /// A decision point: show the evidence and the question; Roll back / Abort.
    Confirm {
        /// The question.
        question: String,
    },
    /// Set the gate (verified by reading the bindings back).
    Gate {
        /// Target weights, e.g. `{ v1 = 100 }`.
        weights: std::collections::BTreeMap<String, u32>,
    },
    /// Wait until a version's queue has at least `min` consumers.
    WaitConsumers {
        /// Version.
        version: String,
        /// Minimum consumers (default 1).
        #[serde(default = "one")]
        min: u32,
    },
    /// Move the ready messages of one version's queue to another's.
    Drain {
        /// Source version.
        from: String,
        /// Target version.
        to: String,
        /// At most this many (default: all).
        #[serde(default)]
        limit: Option<u64>,
    },
    /// Dead letters whose origin is `origin`: replay to `to`, keep, export, or ask.
    DlqReplay {
        /// Origin version of the dead letters.
        origin: String,
        /// Target version of a replay.
        to: String,
        /// What to do (default: ask).
        #[serde(default = "ask")]
        action: DlqChoice,
    },
    /// Close the connections of a version's workers (management API), after confirmation.
    EvictConsumers {
        /// Version.
        version: String,
    },
    /// Check a metric over a window.
    Verify {
        /// What to measure.
        metric: Metric,
        /// Version (not needed for `unrouted_empty`).
        #[serde(default)]
        version: Option<String>,
        /// Error-rate threshold in percent (default 1).
        #[serde(default = "default_threshold")]
        threshold_pct: f64,
        /// Measuring window (default 10s).
        #[serde(default = "default_window", with = "humantime_serde_compat")]
        window: Duration,
    },
    /// Wait.
    Sleep {
        /// How long.
        #[serde(with = "humantime_serde_compat")]
        duration: Duration,
    },
}

fn one() -> u32 {
    1
}
fn ask() -> DlqChoice {
    DlqChoice::Ask
}
fn default_threshold() -> f64 {
    1.0
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}

/// `"10s"` ⇄ [`Duration`] via humantime.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 30s or 2m ({e})"))
        })
    }
}

/// A step: a kind, an optional title and a timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Short title shown in the checklist.
    pub title: String,
    /// What it does.
    #[serde(flatten)]
    pub kind: StepKind,
    /// Longest the step may take (its action and verification).
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

impl Step {
    /// Kind name (`drain`).
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
    /// Does this step change the broker?
    pub fn mutates(&self) -> bool {
        matches!(
            self.kind,
            StepKind::Gate { .. }
                | StepKind::Drain { .. }
                | StepKind::DlqReplay { .. }
                | StepKind::EvictConsumers { .. }
        )
    }
}

impl StepKind {
    /// Kind name as in plan files.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Note { .. } => "note",
            StepKind::Confirm { .. } => "confirm",
            StepKind::Gate { .. } => "gate",
            StepKind::WaitConsumers { .. } => "wait_consumers",
            StepKind::Drain { .. } => "drain",
            StepKind::DlqReplay { .. } => "dlq_replay",
            StepKind::EvictConsumers { .. } => "evict_consumers",
            StepKind::Verify { .. } => "verify",
            StepKind::Sleep { .. } => "sleep",
        }
    }
    /// Default timeout of a step of this kind.
    pub fn default_timeout(&self) -> Duration {
        match self {
            StepKind::Confirm { .. } => Duration::from_secs(3600),
            StepKind::WaitConsumers { .. } => Duration::from_secs(60),
            StepKind::Drain { .. } | StepKind::DlqReplay { .. } => Duration::from_secs(600),
            StepKind::Verify { window, .. } => *window + Duration::from_secs(30),
            StepKind::Sleep { duration } => *duration + Duration::from_secs(5),
            _ => Duration::from_secs(60),
        }
    }
    /// One line describing the step, naming the namespace's objects through the resolver.
    pub fn describe(&self, names: &crate::topology::Namespace) -> String {
        let ns = &names.name;
        let q = |v: &str| {
            names
                .version_queue(v)
                .unwrap_or_else(|| format!("{ns} {v} (no queue)"))
        };
        let dlq = &names.dlq;
        match self {
            StepKind::Note { text } => format!("note: {}", crate::text::sanitize(text)),
            StepKind::Confirm { question } => {
                format!("decision point: {}", crate::text::sanitize(question))
            }
            StepKind::Gate { weights } => {
                format!("gate {ns}: {}", GateSplit(weights.clone()).describe())
            }
            StepKind::WaitConsumers { version, min } => {
                format!("wait until {} has ≥ {min} consumer(s)", q(version))
            }
            StepKind::Drain { from, to, limit } => format!(
                "drain ready messages {} → {}{}",
                q(from),
                q(to),
                limit.map(|l| format!(" (at most {l})")).unwrap_or_default()
            ),
            StepKind::DlqReplay { origin, to, action } => match action {
                DlqChoice::Replay => {
                    format!("replay {origin}'s dead letters from {dlq} → {}", q(to))
                }
                DlqChoice::Keep => format!("keep {origin}'s dead letters in {dlq}"),
                DlqChoice::Export => {
                    format!("export {origin}'s dead letters from {dlq} to a JSONL file")
                }
                DlqChoice::Ask => format!(
                    "{origin}'s dead letters in {dlq}: replay to {}, keep or export (ask)",
                    q(to)
                ),
            },
            StepKind::EvictConsumers { version } => {
                format!("close the connections of {ns}'s {version} workers")
            }
            StepKind::Verify {
                metric,
                version,
                threshold_pct,
                window,
            } => match metric {
                Metric::ErrorRate => format!(
                    "verify: {} error rate < {threshold_pct}% over {}",
                    version.as_deref().unwrap_or("?"),
                    humantime::format_duration(*window)
                ),
                Metric::UnroutedEmpty => format!("verify: {} is empty", names.unrouted),
                Metric::ReadyZero => format!(
                    "verify: {} has no ready messages",
                    q(version.as_deref().unwrap_or("?"))
                ),
            },
            StepKind::Sleep { duration } => {
                format!("wait {}", humantime::format_duration(*duration))
            }
        }
    }
}

/// A rollback plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Plan name.
    pub name: String,
    /// Version rolled back from.
    pub from: String,
    /// Version rolled back to.
    pub to: String,
    /// Steps, in order.
    pub steps: Vec<Step>,
}

fn step(title: &str, kind: StepKind) -> Step {
    let timeout = kind.default_timeout();
    Step {
        title: title.to_string(),
        kind,
        timeout,
    }
}

/// The built-in plan of DESIGN §3: `from` → `to`.
pub fn default_plan(from: &str, to: &str, verify_window: Duration) -> Plan {
    Plan {
        name: format!("default rollback {from} → {to}"),
        from: from.to_string(),
        to: to.to_string(),
        steps: vec![
            step(
                "Decide",
                StepKind::Confirm {
                    question: format!("Roll back from {from} to {to}?"),
                },
            ),
            step(
                &format!("Gate {to}=100"),
                StepKind::Gate {
                    weights: [(to.to_string(), 100)].into(),
                },
            ),
            step(
                &format!("Wait for {to} consumers"),
                StepKind::WaitConsumers {
                    version: to.to_string(),
                    min: 1,
                },
            ),
            step(
                &format!("Drain {from} → {to}"),
                StepKind::Drain {
                    from: from.to_string(),
                    to: to.to_string(),
                    limit: None,
                },
            ),
            step(
                &format!("Dead letters of {from}"),
                StepKind::DlqReplay {
                    origin: from.to_string(),
                    to: to.to_string(),
                    action: DlqChoice::Ask,
                },
            ),
            step(
                &format!("Verify {to}"),
                StepKind::Verify {
                    metric: Metric::ErrorRate,
                    version: Some(to.to_string()),
                    threshold_pct: 1.0,
                    window: verify_window,
                },
            ),
            step(
                "Verify unrouted",
                StepKind::Verify {
                    metric: Metric::UnroutedEmpty,
                    version: None,
                    threshold_pct: 0.0,
                    window: Duration::ZERO,
                },
            ),
        ],
    }
}

/// The raw file: steps are kept as tables so each is parsed (and blamed) separately.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<String>,
    from: String,
    to: String,
    #[serde(rename = "step", default)]
    steps: Vec<toml::Table>,
}

/// Parse a plan file's text. Errors name the step and key.
pub fn parse_plan(text: &str, origin: &str) -> Result<Plan, crate::model::Invalid> {
    let raw: RawPlan = toml::from_str(text).map_err(|e| format!("{origin}: {}", e.message()))?;
    if raw.steps.is_empty() {
        return Err(format!("{origin}: the plan has no [[step]] entries").into());
    }
    for (key, v) in [("from", &raw.from), ("to", &raw.to)] {
        if !is_version_name(v) {
            return Err(
                format!("{origin}: `{key}` = `{v}` is not a version name (v1, v2, …)").into(),
            );
        }
    }
    let mut steps = Vec::new();
    for (i, mut t) in raw.steps.into_iter().enumerate() {
        let n = i + 1;
        let kind_name = t
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{origin}: step {n}: missing key `kind`"))?;
        let at = format!("{origin}: step {n} ({kind_name})");
        let title = match t.remove("title") {
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => return Err(format!("{at}: `title` must be a string").into()),
            None => None,
        };
        let timeout = match t.remove("timeout") {
            Some(toml::Value::String(s)) => Some(
                humantime::parse_duration(&s)
                    .map_err(|e| format!("{at}: `timeout` = `{s}` is not a duration ({e})"))?,
            ),
            Some(_) => return Err(format!("{at}: `timeout` must be a string like \"5m\"").into()),
            None => None,
        };
        let kind: StepKind = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| format!("{at}: {}", e.message()))?;
        validate_kind(&kind).map_err(|e| format!("{at}: {e}"))?;
        let timeout = timeout.unwrap_or_else(|| kind.default_timeout());
        steps.push(Step {
            title: title.unwrap_or_else(|| kind.name().replace('_', " ")),
            kind,
            timeout,
        });
    }
    Ok(Plan {
        name: raw.name.unwrap_or_else(|| origin.to_string()),
        from: raw.from,
        to: raw.to,
        steps,
    })
}

/// The most steps a plan may have (a plan file, or one read back from the ledger).
pub const MAX_PLAN_STEPS: usize = 64;

/// Validate a plan exactly as a plan file is validated (version names, every step's kind and
/// parameters, a bounded size): what a rollback read back from the ledger must pass before it
/// runs again.
pub fn validate_plan(plan: &Plan) -> Result<(), crate::model::Invalid> {
    check_version("from", &plan.from)?;
    check_version("to", &plan.to)?;
    if plan.steps.is_empty() {
        return Err("the plan has no steps".into());
    }
    if plan.steps.len() > MAX_PLAN_STEPS {
        return Err(format!(
            "the plan has {} steps (at most {MAX_PLAN_STEPS})",
            plan.steps.len()
        )
        .into());
    }
    for (i, st) in plan.steps.iter().enumerate() {
        if st.title.chars().count() > 200 {
            return Err(format!("step {}: the title is over 200 characters", i + 1).into());
        }
        validate_kind(&st.kind).map_err(|e| format!("step {} ({}): {e}", i + 1, st.kind.name()))?;
    }
    Ok(())
}

fn check_version(key: &str, v: &str) -> Result<(), crate::model::Invalid> {
    if is_version_name(v) {
        Ok(())
    } else {
        Err(format!("`{key}` = `{v}` is not a version name (v1, v2, …)").into())
    }
}

fn validate_kind(kind: &StepKind) -> Result<(), crate::model::Invalid> {
    match kind {
        StepKind::Gate { weights } => {
            for v in weights.keys() {
                check_version("weights", v)?;
            }
            if !weights.values().any(|w| *w > 0) {
                return Err("`weights` must give at least one version a positive weight".into());
            }
        }
        StepKind::WaitConsumers { version, .. } | StepKind::EvictConsumers { version } => {
            check_version("version", version)?
        }
        StepKind::Drain { from, to, .. } => {
            check_version("from", from)?;
            check_version("to", to)?;
            if from == to {
                return Err("`from` and `to` are the same version".into());
            }
        }
        StepKind::DlqReplay { origin, to, .. } => {
            check_version("origin", origin)?;
            check_version("to", to)?;
        }
        StepKind::Verify {
            metric,
            version,
            threshold_pct,
            ..
        } => {
            if *metric != Metric::UnroutedEmpty && version.is_none() {
                return Err("`version` is required for this metric".into());
            }
            if let Some(v) = version {
                check_version("version", v)?;
            }
            if !(0.0..=100.0).contains(threshold_pct) {
                return Err(
                    format!("`threshold_pct` = {threshold_pct} is not within 0–100").into(),
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// Read and parse a plan file.
pub fn load_plan(path: &Path) -> Result<Plan, crate::model::Invalid> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read plan {}: {e}", path.display()))?;
    parse_plan(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
name = "payments v2 → v1"
from = "v2"
to = "v1"

[[step]]
kind = "confirm"
question = "Roll back?"

[[step]]
kind = "gate"
weights = { v1 = 100 }
timeout = "30s"

[[step]]
kind = "drain"
from = "v2"
to = "v1"

[[step]]
kind = "verify"
metric = "error_rate"
version = "v1"
window = "5s"
"#;

    #[test]
    fn parses_a_good_plan() {
        let p = parse_plan(GOOD, "good.toml").unwrap();
        assert_eq!(p.steps.len(), 4);
        assert_eq!(p.steps[1].timeout, Duration::from_secs(30));
        assert_eq!(
            p.steps[3].kind,
            StepKind::Verify {
                metric: Metric::ErrorRate,
                version: Some("v1".into()),
                threshold_pct: 1.0,
                window: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn errors_name_the_step_and_key() {
        let bad = GOOD.replace(
            "from = \"v2\"\nto = \"v1\"\n\n[[step]]\nkind = \"verify\"",
            "frm = \"v2\"\nto = \"v1\"\n\n[[step]]\nkind = \"verify\"",
        );
        let e = parse_plan(&bad, "p.toml").unwrap_err();
        assert!(e.contains("step 3 (drain)") && e.contains("frm"), "{e}");
        let bad = GOOD.replace("window = \"5s\"", "window = \"soon\"");
        let e = parse_plan(&bad, "p.toml").unwrap_err();
        assert!(e.contains("step 4 (verify)") && e.contains("soon"), "{e}");
        let bad = GOOD.replace("kind = \"gate\"", "kind = \"gait\"");
        let e = parse_plan(&bad, "p.toml").unwrap_err();
        assert!(
            e.contains("step 2 (gait)") && e.contains("unknown variant"),
            "{e}"
        );
        let bad = GOOD.replace("weights = { v1 = 100 }", "weights = { one = 100 }");
        let e = parse_plan(&bad, "p.toml").unwrap_err();
        assert!(e.contains("step 2 (gate)") && e.contains("weights"), "{e}");
    }

    #[test]
    fn default_plan_follows_the_design() {
        let p = default_plan("v2", "v1", Duration::from_secs(10));
        let kinds: Vec<&str> = p.steps.iter().map(Step::kind_name).collect();
        assert_eq!(
            kinds,
            [
                "confirm",
                "gate",
                "wait_consumers",
                "drain",
                "dlq_replay",
                "verify",
                "verify"
            ]
        );
        // A plan survives the round trip through the journal (JSON).
        let json = serde_json::to_string(&p).unwrap();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
