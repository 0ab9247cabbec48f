//! The gate: integer weights of the entry exchange's bindings to version queues, and the checks
//! that keep a weight list honest (one binding per queue, at least one positive weight).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One version's weight in the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateWeight {
    /// Version name (`v1`).
    pub version: String,
    /// Binding weight (consistent-hash binding key); 0 = not bound.
    pub weight: u32,
}

/// A whole gate: version → weight (versions absent or 0 are not bound).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GateSplit(pub BTreeMap<String, u32>);

impl GateSplit {
    /// Build from pairs.
    pub fn from_pairs<I: IntoIterator<Item = (String, u32)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
    /// Sum of weights.
    pub fn total(&self) -> u64 {
        self.0.values().map(|w| u64::from(*w)).sum()
    }
    /// Share of `version` in percent (0 when nothing is bound).
    pub fn percent(&self, version: &str) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        f64::from(self.0.get(version).copied().unwrap_or(0)) * 100.0 / total as f64
    }
    /// Weight of `version` (0 if unbound).
    pub fn weight(&self, version: &str) -> u32 {
        self.0.get(version).copied().unwrap_or(0)
    }
    /// Versions with a positive weight.
    pub fn bound(&self) -> impl Iterator<Item = (&String, &u32)> {
        self.0.iter().filter(|(_, w)| **w > 0)
    }
    /// Same routing? (zero weights ignored; one lone bound version routes everything whatever
    /// its weight, so `v1=80` and `v1=100` are the same routing.)
    pub fn same_routing(&self, other: &GateSplit) -> bool {
        if self.bound().eq(other.bound()) {
            return true;
        }
        let mine: Vec<&String> = self.bound().map(|(v, _)| v).collect();
        let theirs: Vec<&String> = other.bound().map(|(v, _)| v).collect();
        mine.len() == 1 && mine == theirs
    }
    /// The weight that no longer matters: a lone bound version takes every message whatever
    /// its binding key, so a flip back to one version (which only unbinds the others, never
    /// leaving the failing version as the only route) leaves the survivor's old key in place.
    /// `Some((version, weight))` when that key is not 100 — the display then shows the bound
    /// weight beside its 100 % share and says so, instead of pretending the key is 100.
    pub fn idle_weight(&self) -> Option<(&String, u32)> {
        let mut bound = self.bound();
        match (bound.next(), bound.next()) {
            (Some((v, w)), None) if *w != 100 => Some((v, *w)),
            _ => None,
        }
    }
    /// One line about [`GateSplit::idle_weight`], or `None`.
    pub fn idle_weight_note(&self) -> Option<String> {
        self.idle_weight().map(|(v, w)| {
            format!(
                "{v} is bound alone at weight {w}, so it takes 100 %: the weight no longer matters (a flip back to one version only unbinds the others); it counts again once another version is bound beside it"
            )
        })
    }
    /// `v1=90 v2=10` (zero weights omitted; `(none)` when empty).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.bound().map(|(v, w)| format!("{v}={w}")).collect();
        if parts.is_empty() {
            "(none)".into()
        } else {
            parts.join(" ")
        }
    }
    /// `v1=90 (90%) · v2=10 (10%)`: each bound weight and the share it gives.
    pub fn describe_shares(&self) -> String {
        let parts: Vec<String> = self
            .bound()
            .map(|(v, w)| format!("{v}={w} ({:.0}%)", self.percent(v)))
            .collect();
        if parts.is_empty() {
            "nothing bound".into()
        } else {
            parts.join(" · ")
        }
    }
    /// `v1 90% · v2 10%`.
    pub fn describe_percent(&self) -> String {
        let parts: Vec<String> = self
            .bound()
            .map(|(v, _)| format!("{v} {:.0}%", self.percent(v)))
            .collect();
        if parts.is_empty() {
            "nothing bound".into()
        } else {
            parts.join(" · ")
        }
    }
}

/// Parse `v1=90` tokens into a split (`v1=90,v2=10` in one token too, like `--versions v1,v2`);
/// errors say which token is wrong.
pub fn parse_targets(tokens: &[String]) -> Result<GateSplit, crate::model::Invalid> {
    let mut out = BTreeMap::new();
    let pieces = tokens
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    for t in pieces {
        let (v, w) = t
            .split_once('=')
            .ok_or_else(|| format!("`{t}` is not VERSION=WEIGHT (e.g. v2=10)"))?;
        let v = v.trim();
        if v.is_empty() {
            return Err(format!("`{t}` has no version name").into());
        }
        let w: u32 = w
            .trim()
            .parse()
            .map_err(|_| format!("`{t}`: weight must be a whole number 0–10000"))?;
        if w > 10_000 {
            return Err(format!("`{t}`: weight must be at most 10000").into());
        }
        if out.insert(v.to_string(), w).is_some() {
            return Err(format!("version `{v}` is given twice").into());
        }
    }
    if out.is_empty() {
        return Err("no VERSION=WEIGHT given (e.g. `v1=90 v2=10` or `v1=90,v2=10`)".into());
    }
    if out.values().all(|w| *w == 0) {
        return Err(
            "the weights sum to 0: that would route nothing (give at least one version a weight)"
                .into(),
        );
    }
    Ok(GateSplit(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_percent() {
        let s = parse_targets(&["v1=90".into(), "v2=10".into()]).unwrap();
        assert_eq!(s.percent("v2"), 10.0);
        assert_eq!(s.describe(), "v1=90 v2=10");
        assert!(parse_targets(&["v1=0".into()]).is_err());
        assert!(parse_targets(&["v1".into()]).is_err());
        for empty in [
            vec![],
            vec![",".to_string()],
            vec![" , ".to_string(), "".to_string()],
        ] {
            let e = parse_targets(&empty).unwrap_err().to_string();
            assert!(e.contains("no VERSION=WEIGHT given"), "{empty:?}: {e}");
        }
        assert!(parse_targets(&["v1=x".into()]).is_err());
        assert!(parse_targets(&["v1=1".into(), "v1=2".into()]).is_err());
        let commas = parse_targets(&["v1=80,v2=20".into()]).unwrap();
        assert_eq!(commas.describe(), "v1=80 v2=20");
        assert!(parse_targets(&["v1=80,v1=20".into()]).is_err());
        assert!(parse_targets(&["v1=80,v2".into()]).is_err());
        assert!(parse_targets(&[",".into()]).is_err());
    }

    #[test]
    fn a_lone_version_shows_its_bound_weight_and_its_share() {
        let back = GateSplit::from_pairs([("v1".to_string(), 80), ("v2".to_string(), 0)]);
        assert_eq!(back.describe(), "v1=80");
        assert_eq!(back.describe_shares(), "v1=80 (100%)");
        assert_eq!(back.idle_weight(), Some((&"v1".to_string(), 80)));
        assert!(
            back.idle_weight_note()
                .unwrap()
                .contains("no longer matters")
        );
        let full = GateSplit::from_pairs([("v1".to_string(), 100)]);
        assert_eq!(full.idle_weight(), None);
        let canary = GateSplit::from_pairs([("v1".to_string(), 80), ("v2".to_string(), 20)]);
        assert_eq!(canary.idle_weight(), None);
        assert_eq!(canary.describe_shares(), "v1=80 (80%) · v2=20 (20%)");
        assert!(back.same_routing(&full));
    }
}
