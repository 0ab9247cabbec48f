//! The gate's flip plan (docs/architecture.md, "Operations"): the steps that take the entry
//! exchange's bindings from what the broker has to the target without ever leaving it with no
//! routing queue, and the check of that property. Pure: no I/O.
//!
//! The consistent-hash exchange counts only the first binding per queue, and unbinding any of a
//! queue's bindings takes it off the hash ring (measured on 3.10.8). So a queue never holds two
//! bindings: to re-weight it we unbind every binding it has, then bind once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::gate::GateSplit;
use crate::text::sanitize;

/// One binding of the entry exchange to a version queue, as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentBinding {
    /// Version.
    pub version: String,
    /// Binding key (the weight, as text).
    pub key: String,
}

/// One step of a flip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Bind the version's queue to the entry exchange with this weight.
    Bind {
        /// Version.
        version: String,
        /// Weight (binding key).
        weight: u32,
    },
    /// Remove one binding of the version's queue (identified by its key).
    Unbind {
        /// Version.
        version: String,
        /// The binding key to remove.
        key: String,
    },
}

impl Step {
    /// `bind v2 weight 10` / `unbind v1 (key 100)`.
    pub fn describe(&self) -> String {
        match self {
            Step::Bind { version, weight } => format!("bind {version} weight {weight}"),
            Step::Unbind { version, key } => {
                format!("unbind {version} (key {})", sanitize(key))
            }
        }
    }
}

pub(super) fn group(current: &[CurrentBinding]) -> BTreeMap<&str, Vec<&str>> {
    let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in current {
        m.entry(b.version.as_str())
            .or_default()
            .push(b.key.as_str());
    }
    m
}

/// The bindings a clean gate `split` consists of (one per bound version).
pub fn bindings_of(split: &GateSplit) -> Vec<CurrentBinding> {
    split
        .bound()
        .map(|(v, w)| CurrentBinding {
            version: v.clone(),
            key: w.to_string(),
        })
        .collect()
}

/// Plan a flip from a clean gate to `target` (see [`plan_bindings`]).
pub fn plan(current: &GateSplit, target: &GateSplit) -> Vec<Step> {
    plan_bindings(&bindings_of(current), target)
}

/// Plan a flip from the broker's actual bindings (possibly doubled) to `target`:
/// newcomers bound first, then each re-weighted version unbound completely and bound once (while
/// the others keep routing), then removed versions unbound. Empty = nothing to do. A lone bound
/// version with one binding already routes everything, whatever its weight, so it is left alone.
///
/// Flipping *to* a single version that is already bound once (the rollback "back to v1") only
/// unbinds the leaving versions: the survivor's old key does not matter once it is alone, and
/// re-weighting it first would leave the leaving (failing) version as the only route for the
/// moment between the unbind and the rebind.
pub fn plan_bindings(current: &[CurrentBinding], target: &GateSplit) -> Vec<Step> {
    let cur = group(current);
    let tgt: Vec<(&String, &u32)> = target.bound().collect();
    let mut steps = Vec::new();
    if tgt.len() == 1
        && let Some(keys) = cur.get(tgt[0].0.as_str())
        && keys.len() == 1
    {
        for (v, keys) in &cur {
            if *v != tgt[0].0.as_str() {
                for k in keys {
                    steps.push(Step::Unbind {
                        version: (*v).to_string(),
                        key: (*k).to_string(),
                    });
                }
            }
        }
        return steps;
    }
    for (v, w) in &tgt {
        if !cur.contains_key(v.as_str()) {
            steps.push(Step::Bind {
                version: (*v).clone(),
                weight: **w,
            });
        }
    }
    for (v, w) in &tgt {
        let Some(keys) = cur.get(v.as_str()) else {
            continue;
        };
        let want = w.to_string();
        if keys.len() == 1 && keys[0] == want {
            continue;
        }
        for k in keys {
            steps.push(Step::Unbind {
                version: (*v).clone(),
                key: (*k).to_string(),
            });
        }
        steps.push(Step::Bind {
            version: (*v).clone(),
            weight: **w,
        });
    }
    for (v, keys) in &cur {
        if target.weight(v) == 0 {
            for k in keys {
                steps.push(Step::Unbind {
                    version: (*v).to_string(),
                    key: (*k).to_string(),
                });
            }
        }
    }
    steps
}

/// Does executing `steps` from `current` ever leave the exchange with no routing queue?
/// (Only possible when a lone, doubly bound version must be repaired.) Modelled on 3.10.8's
/// consistent-hash exchange: a queue joins the ring with its first binding and leaves it at the
/// first unbind, whatever bindings remain.
pub fn has_zero_binding_window(current: &[CurrentBinding], steps: &[Step]) -> bool {
    // version → (keys, on the ring)
    let mut state: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for b in current {
        let e = state
            .entry(b.version.clone())
            .or_insert_with(|| (Vec::new(), true));
        e.0.push(b.key.clone());
    }
    let routing = |s: &BTreeMap<String, (Vec<String>, bool)>| s.values().filter(|e| e.1).count();
    let had = routing(&state) > 0;
    for st in steps {
        match st {
            Step::Bind { version, weight } => {
                let e = state
                    .entry(version.clone())
                    .or_insert_with(|| (Vec::new(), true));
                e.0.push(weight.to_string());
            }
            Step::Unbind { version, key } => {
                if let Some(e) = state.get_mut(version) {
                    if let Some(i) = e.0.iter().position(|k| k == key) {
                        e.0.remove(i);
                    }
                    e.1 = false;
                    if e.0.is_empty() {
                        state.remove(version);
                    }
                }
            }
        }
        if had && routing(&state) == 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u32)]) -> GateSplit {
        GateSplit::from_pairs(pairs.iter().map(|(v, w)| (v.to_string(), *w)))
    }
    fn cb(v: &str, k: &str) -> CurrentBinding {
        CurrentBinding {
            version: v.into(),
            key: k.into(),
        }
    }

    /// Apply steps to a binding list like the broker would.
    fn run(current: &[CurrentBinding], steps: &[Step]) -> Vec<CurrentBinding> {
        let mut s: Vec<CurrentBinding> = current.to_vec();
        for st in steps {
            match st {
                Step::Bind { version, weight } => s.push(cb(version, &weight.to_string())),
                Step::Unbind { version, key } => {
                    if let Some(i) = s
                        .iter()
                        .position(|b| &b.version == version && &b.key == key)
                    {
                        s.remove(i);
                    }
                }
            }
        }
        s
    }

    #[test]
    fn canary_and_back() {
        let p = plan(&split(&[("v1", 100)]), &split(&[("v1", 90), ("v2", 10)]));
        assert_eq!(
            p,
            vec![
                Step::Bind {
                    version: "v2".into(),
                    weight: 10
                },
                Step::Unbind {
                    version: "v1".into(),
                    key: "100".into()
                },
                Step::Bind {
                    version: "v1".into(),
                    weight: 90
                },
            ]
        );
        // Back to v1: only v2 is unbound; v1 (alone, any key) never leaves the ring.
        let back = plan(&split(&[("v1", 90), ("v2", 10)]), &split(&[("v1", 100)]));
        assert_eq!(
            back,
            vec![Step::Unbind {
                version: "v2".into(),
                key: "10".into()
            }]
        );
        let back3 = plan(
            &split(&[("v1", 50), ("v2", 25), ("v3", 25)]),
            &split(&[("v1", 100)]),
        );
        assert_eq!(back3.len(), 2);
        assert!(
            back3
                .iter()
                .all(|s| matches!(s, Step::Unbind { version, .. } if version != "v1"))
        );
        assert!(plan(&split(&[("v1", 100)]), &split(&[("v1", 100)])).is_empty());
        assert!(plan(&split(&[("v1", 100)]), &split(&[("v1", 5), ("v2", 0)])).is_empty());
    }

    #[test]
    fn repairs_double_bindings() {
        let cur = vec![cb("v1", "10"), cb("v1", "90"), cb("v2", "50")];
        let steps = plan_bindings(&cur, &split(&[("v1", 50), ("v2", 50)]));
        let end = run(&cur, &steps);
        assert_eq!(end.iter().filter(|b| b.version == "v1").count(), 1);
        assert!(!has_zero_binding_window(&cur, &steps));
        // A lone doubly bound version: the repair must pass through zero, and says so.
        let lone = vec![cb("v1", "10"), cb("v1", "90")];
        let steps = plan_bindings(&lone, &split(&[("v1", 100)]));
        assert!(has_zero_binding_window(&lone, &steps));
        assert_eq!(run(&lone, &steps), vec![cb("v1", "100")]);
    }

    #[test]
    fn random_plans_never_zero_and_reach_target() {
        use rand::Rng;
        let mut rng = rand::rng();
        let versions = ["v1", "v2", "v3"];
        for _ in 0..5000 {
            let mut cur = Vec::new();
            for v in versions {
                if rng.random_bool(0.5) {
                    cur.push(cb(v, &rng.random_range(1..=100u32).to_string()));
                }
            }
            let mut target = GateSplit::default();
            for v in versions {
                if rng.random_bool(0.5) {
                    target.0.insert(v.to_string(), rng.random_range(0..=100u32));
                }
            }
            if target.total() == 0 {
                continue;
            }
            let steps = plan_bindings(&cur, &target);
            assert!(
                !has_zero_binding_window(&cur, &steps),
                "{cur:?} → {target:?}: {steps:?}"
            );
            let end = run(&cur, &steps);
            let got = group(&end);
            assert!(got.values().all(|k| k.len() == 1), "{end:?}");
            let bound: Vec<_> = target.bound().collect();
            assert_eq!(got.len(), bound.len(), "{cur:?} → {target:?}: {end:?}");
            if bound.len() > 1 {
                for (v, w) in bound {
                    assert_eq!(got[v.as_str()], vec![w.to_string().as_str()]);
                }
            }
        }
    }
}
