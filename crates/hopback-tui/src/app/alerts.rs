//! Alert evaluation: pure functions over the fleet snapshot, the tap's error rates and a little
//! history. Thresholds are per namespace (config `[alerts]`, overridable per adopted namespace):
//! error rate above N % for a window, DLQ growing faster than N per minute, anything unrouted, and
//! a version with ready messages but no consumer. A rollback is advised only when the data
//! supports it: the failing version is a newer one the gate routes to (errors above the
//! threshold, or work piling up with no consumer), and an older version is healthy (consumers,
//! no alert of its own) — the advice names both ([`RollbackAdvice`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::AlertThresholds;
use crate::model::snapshot::FleetSnapshot;

/// What is wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertKind {
    /// Error rate above the threshold for at least the window.
    ErrorRate {
        /// Current error rate in percent.
        pct: f64,
        /// Threshold in percent.
        threshold_pct: f64,
        /// How long it has been above.
        for_s: u64,
    },
    /// The DLQ grows faster than allowed.
    DlqGrowth {
        /// Measured growth per minute.
        per_min: f64,
        /// Threshold per minute.
        threshold_per_min: u64,
    },
    /// Messages the gate could not route.
    Unrouted {
        /// Depth of the unrouted queue.
        depth: u64,
    },
    /// Work waits but nobody consumes it.
    NoConsumers {
        /// Ready messages.
        ready: u64,
    },
    /// The gate splits, but the tasks do not: the versions' shares of new tasks differ from
    /// the weights by more than the noise allows.
    SplitOff {
        /// The weights as percentages (`v1 90% · v2 10%`).
        configured: String,
        /// What happened (`v1 100% · v2 0% of 312 tasks in 60 s`).
        measured: String,
        /// Why, when the shape of the split says it.
        cause: Option<String>,
    },
    /// Work piles up: the consumers ack much slower than tasks arrive.
    Backlog {
        /// Ready messages.
        ready: u64,
        /// Published into the queue per second.
        in_per_s: f64,
        /// Acknowledged per second.
        ack_per_s: f64,
    },
}

/// A backlog alert needs at least this many ready messages …
pub const BACKLOG_MIN_READY: u64 = 100;
/// … and tasks arriving this many times faster than they are acked.
pub const BACKLOG_LAG_FACTOR: f64 = 2.0;

impl AlertKind {
    /// How bad it is, for "worst first" (higher is worse): failing work, then work nobody
    /// takes, then messages the gate could not route, then a backlog, then DLQ growth.
    pub fn severity(&self) -> u8 {
        match self {
            AlertKind::ErrorRate { .. } => 5,
            AlertKind::SplitOff { .. } => 5,
            AlertKind::NoConsumers { .. } => 4,
            AlertKind::Unrouted { .. } => 3,
            AlertKind::Backlog { .. } => 2,
            AlertKind::DlqGrowth { .. } => 1,
        }
    }
    /// A few words for a warning beside a version ("error rate 30%", "no consumers").
    pub fn short(&self) -> String {
        match self {
            AlertKind::ErrorRate { pct, .. } => format!("error rate {pct:.0}%"),
            AlertKind::DlqGrowth { per_min, .. } => format!("DLQ +{per_min:.0}/min"),
            AlertKind::Unrouted { depth } => format!("{depth} unrouted"),
            AlertKind::NoConsumers { .. } => "no consumers".into(),
            AlertKind::Backlog { ready, .. } => format!("backlog {ready}"),
            AlertKind::SplitOff { .. } => "split not happening".into(),
        }
    }
    /// A short stable tag, used to tell "new" alerts from ongoing ones.
    pub fn tag(&self) -> &'static str {
        match self {
            AlertKind::ErrorRate { .. } => "error",
            AlertKind::DlqGrowth { .. } => "dlq",
            AlertKind::Unrouted { .. } => "unrouted",
            AlertKind::NoConsumers { .. } => "consumers",
            AlertKind::Backlog { .. } => "backlog",
            AlertKind::SplitOff { .. } => "split",
        }
    }
}

/// One active alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Namespace.
    pub ns: String,
    /// Version, for per-version alerts.
    pub version: Option<String>,
    /// What.
    pub kind: AlertKind,
    /// Roll back from this (newer, routed, failing) version to a healthy older one.
    pub rollback: Option<RollbackAdvice>,
}

/// A rollback the data supports: `from` is failing, `to` is older and healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackAdvice {
    /// The failing version.
    pub from: String,
    /// The healthy version to go back to.
    pub to: String,
}

/// `v12` → 12; other names have no order (no advice for them).
fn version_number(v: &str) -> Option<u64> {
    v.strip_prefix('v')?.parse().ok()
}

/// The healthy version to roll `failing` back to: the newest version older than it that has
/// consumers and no alert of its own.
fn healthy_target(
    ns: &crate::model::snapshot::NamespaceSnapshot,
    failing: &str,
    alerting: &BTreeSet<String>,
) -> Option<String> {
    let n = version_number(failing)?;
    ns.versions
        .iter()
        .filter(|v| version_number(&v.version).is_some_and(|m| m < n))
        .filter(|v| v.exists && v.consumers.unwrap_or(0) > 0 && !alerting.contains(&v.version))
        .max_by_key(|v| version_number(&v.version))
        .map(|v| v.version.clone())
}

impl Alert {
    /// One line for the status bar (names sanitised).
    pub fn describe(&self) -> String {
        let ns = crate::text::sanitize(&self.ns);
        let v = self
            .version
            .as_deref()
            .map(|v| format!(" {}", crate::text::sanitize(v)))
            .unwrap_or_default();
        match &self.kind {
            AlertKind::ErrorRate {
                pct,
                threshold_pct,
                for_s,
            } => format!("{ns}{v}: error rate {pct:.1}% > {threshold_pct}% for {for_s} s"),
            AlertKind::DlqGrowth {
                per_min,
                threshold_per_min,
            } => format!(
                "{ns}: DLQ growing {per_min:.1}/min, over the threshold of {threshold_per_min}/min"
            ),
            AlertKind::Unrouted { depth } => {
                format!("{ns}: {depth} unrouted message(s) — the gate routed nothing for them")
            }
            AlertKind::NoConsumers { ready } => {
                format!("{ns}{v}: {ready} ready, no consumers")
            }
            AlertKind::Backlog {
                ready,
                in_per_s,
                ack_per_s,
            } => format!(
                "{ns}{v}: backlog {ready} ready, in {in_per_s:.1}/s vs ack {ack_per_s:.1}/s"
            ),
            AlertKind::SplitOff {
                configured,
                measured,
                cause,
            } => format!(
                "{ns}: the split is not happening: gate {configured}, measured {measured}{}",
                cause
                    .as_deref()
                    .map(|c| format!(" — {}", crate::text::sanitize(c)))
                    .unwrap_or_default()
            ),
        }
    }
    /// One line for an alert that has just cleared: what is back to normal, with the last
    /// reading while it fired in the past tense (the alert's own line would read as firing).
    pub fn describe_cleared(&self) -> String {
        let ns = crate::text::sanitize(&self.ns);
        let v = self
            .version
            .as_deref()
            .map(|v| format!(" {}", crate::text::sanitize(v)))
            .unwrap_or_default();
        match &self.kind {
            AlertKind::ErrorRate {
                pct, threshold_pct, ..
            } => format!(
                "{ns}{v}: error rate back under {threshold_pct}% (it was {pct:.1}% while the alert fired)"
            ),
            AlertKind::DlqGrowth {
                per_min,
                threshold_per_min,
            } => format!(
                "{ns}: DLQ no longer growing faster than {threshold_per_min}/min (it was {per_min:.1}/min)"
            ),
            AlertKind::Unrouted { depth } => {
                format!("{ns}: unrouted queue emptied (it held {depth})")
            }
            AlertKind::NoConsumers { ready } => {
                format!(
                    "{ns}{v}: consumers are back, or nothing waits (it had {ready} ready and none)"
                )
            }
            AlertKind::Backlog { ready, .. } => {
                format!("{ns}{v}: backlog no longer growing (it was {ready} ready)")
            }
            AlertKind::SplitOff { configured, .. } => {
                format!("{ns}: the measured split matches the gate {configured} again")
            }
        }
    }
    /// Key identifying this alert across evaluations.
    pub fn key(&self) -> (String, Option<String>, &'static str) {
        (self.ns.clone(), self.version.clone(), self.kind.tag())
    }
}

/// Per-namespace thresholds: the defaults plus overrides of adopted namespaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// Defaults (config `[alerts]`).
    pub defaults: AlertThresholds,
    /// Per namespace.
    pub per_namespace: BTreeMap<String, AlertThresholds>,
}

impl Thresholds {
    /// The thresholds of `ns`.
    pub fn of(&self, ns: &str) -> &AlertThresholds {
        self.per_namespace.get(ns).unwrap_or(&self.defaults)
    }
}

/// The memory alert evaluation needs between refreshes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertTracker {
    /// (ns, version) → since when (unix ms) the error rate has been above its threshold.
    pub above_since_ms: BTreeMap<(String, String), i64>,
    /// ns → (unix ms, DLQ depth) samples of the last minutes.
    pub dlq_depths: BTreeMap<String, VecDeque<(i64, u64)>>,
    /// ns → (snapshot time, version → publish counter) of the last minute: the measured split.
    pub published: BTreeMap<String, VecDeque<(i64, Counters)>>,
    /// ns → the gate the counters in `published` were taken under (a flip starts them over),
    /// and the time from which counters count.
    pub published_gate: BTreeMap<String, (Option<crate::model::gate::GateSplit>, i64)>,
    /// Currently active alerts.
    pub active: Vec<Alert>,
    /// Alerts that were active before the last evaluation and are not any more.
    pub cleared: Vec<Alert>,
}

/// Version → its queue's publish counter (`None`: unknown) at one refresh.
pub type Counters = BTreeMap<String, Option<u64>>;

const DLQ_HISTORY_MS: i64 = 120_000;
/// The measured split's window.
const SPLIT_WINDOW_MS: i64 = 60_000;
/// After a flip, counters read within this long may still be the broker's sample from before
/// it (the management API samples every 5 s).
const STATS_LAG_MS: i64 = 5_000;
const DLQ_MIN_SPAN_MS: i64 = 10_000;

impl AlertTracker {
    /// Remember DLQ depths of a fresh snapshot.
    pub fn record_dlq(&mut self, snap: &FleetSnapshot, now_ms: i64) {
        for ns in &snap.namespaces {
            if let Some(d) = ns.dlq_depth {
                let h = self.dlq_depths.entry(ns.name.clone()).or_default();
                h.push_back((now_ms, d));
                while h.front().is_some_and(|(t, _)| now_ms - t > DLQ_HISTORY_MS) {
                    h.pop_front();
                }
            }
        }
    }

    /// Remember the version queues' publish counters of a fresh snapshot (once per snapshot).
    pub fn record_published(&mut self, snap: &FleetSnapshot) {
        let t = snap.taken_at_ms;
        for ns in &snap.namespaces {
            let counters: Counters = ns
                .versions
                .iter()
                .map(|v| (v.version.clone(), v.published_total))
                .collect();
            // Tasks routed before a flip say nothing about the new weights: start over, from
            // the first counters the broker can have sampled after it.
            let seen = self.published_gate.get(&ns.name).map(|g| &g.0);
            if seen != Some(&ns.gate) {
                // A gate seen for the first time (the console just started) has no flip to wait out.
                let from = if seen.is_some() { t + STATS_LAG_MS } else { t };
                self.published.remove(&ns.name);
                self.published_gate
                    .insert(ns.name.clone(), (ns.gate.clone(), from));
            }
            if self
                .published_gate
                .get(&ns.name)
                .is_some_and(|(_, from)| t < *from)
            {
                continue;
            }
            let h = self.published.entry(ns.name.clone()).or_default();
            if h.back().is_some_and(|(last, _)| *last >= t) {
                continue;
            }
            h.push_back((t, counters));
            while h.front().is_some_and(|(t0, _)| t - t0 > SPLIT_WINDOW_MS) {
                h.pop_front();
            }
        }
        self.published
            .retain(|n, _| snap.namespaces.iter().any(|x| &x.name == n));
        self.published_gate
            .retain(|n, _| snap.namespaces.iter().any(|x| &x.name == n));
    }

    /// New tasks per version over the last minute of refreshes (needs ≥ 10 s of history; a
    /// counter unknown at either end makes it unknown).
    pub fn measured_split(&self, ns: &str) -> Option<crate::model::split::MeasuredSplit> {
        let h = self.published.get(ns)?;
        let (t0, first) = h.front()?;
        let (t1, last) = h.back()?;
        if t1 - t0 < DLQ_MIN_SPAN_MS {
            return None;
        }
        crate::model::split::MeasuredSplit::between(first, last, (t1 - t0) as f64 / 1000.0)
    }

    /// DLQ growth per minute over the last minute (needs ≥ 10 s of history).
    pub fn dlq_growth_per_min(&self, ns: &str, now_ms: i64) -> Option<f64> {
        let h = self.dlq_depths.get(ns)?;
        let (t_last, d_last) = *h.back()?;
        let (t0, d0) = *h
            .iter()
            .find(|(t, _)| now_ms - t <= 60_000)
            .or_else(|| h.front())?;
        let span = t_last - t0;
        if span < DLQ_MIN_SPAN_MS {
            return None;
        }
        Some((d_last as f64 - d0 as f64) * 60_000.0 / span as f64)
    }

    /// Evaluate every rule; returns the alerts that were not active before (ring the bell for them).
    pub fn evaluate(
        &mut self,
        snap: &FleetSnapshot,
        thresholds: &Thresholds,
        now_ms: i64,
    ) -> Vec<Alert> {
        self.record_published(snap);
        let mut active = Vec::new();
        let mut seen_versions = BTreeSet::new();
        for ns in &snap.namespaces {
            let th = thresholds.of(&ns.name);
            for v in &ns.versions {
                let key = (ns.name.clone(), v.version.clone());
                seen_versions.insert(key.clone());
                match v.error_rate.map(|r| r * 100.0) {
                    Some(pct) if pct > th.error_rate_pct => {
                        let since = *self.above_since_ms.entry(key.clone()).or_insert(now_ms);
                        let for_ms = now_ms - since;
                        if for_ms >= (th.error_rate_window_s as i64) * 1000 {
                            active.push(Alert {
                                ns: ns.name.clone(),
                                version: Some(v.version.clone()),
                                kind: AlertKind::ErrorRate {
                                    pct,
                                    threshold_pct: th.error_rate_pct,
                                    for_s: (for_ms / 1000) as u64,
                                },
                                rollback: None,
                            });
                        }
                    }
                    _ => {
                        self.above_since_ms.remove(&key);
                    }
                }
                let ready = v.ready.unwrap_or(0);
                if let Some(r) = &v.rates
                    && v.consumers.unwrap_or(0) > 0
                    && ready >= BACKLOG_MIN_READY
                    && r.publish > 0.0
                    && r.publish > r.ack * BACKLOG_LAG_FACTOR
                {
                    active.push(Alert {
                        ns: ns.name.clone(),
                        version: Some(v.version.clone()),
                        kind: AlertKind::Backlog {
                            ready,
                            in_per_s: r.publish,
                            ack_per_s: r.ack,
                        },
                        rollback: None,
                    });
                }
                if v.exists && v.consumers == Some(0) && v.ready.unwrap_or(0) > 0 {
                    active.push(Alert {
                        ns: ns.name.clone(),
                        version: Some(v.version.clone()),
                        kind: AlertKind::NoConsumers {
                            ready: v.ready.unwrap_or(0),
                        },
                        rollback: None,
                    });
                }
            }
            if let Some(depth) = ns.unrouted_depth.filter(|d| *d > 0) {
                active.push(Alert {
                    ns: ns.name.clone(),
                    version: None,
                    kind: AlertKind::Unrouted { depth },
                    rollback: None,
                });
            }
            if let (Some(gate), Some(m)) = (&ns.gate, self.measured_split(&ns.name)) {
                let verdict = crate::model::split::check(gate, &m);
                if matches!(verdict, crate::model::split::SplitCheck::Differs { .. }) {
                    let hash = ns
                        .hash_on
                        .as_deref()
                        .and_then(|h| h.parse::<crate::model::hash::HashOn>().ok());
                    active.push(Alert {
                        ns: ns.name.clone(),
                        version: None,
                        kind: AlertKind::SplitOff {
                            configured: gate.describe_percent(),
                            measured: m.describe(),
                            cause: crate::model::split::cause(
                                &verdict,
                                hash.as_ref(),
                                None,
                                &ns.name,
                            ),
                        },
                        rollback: None,
                    });
                }
            }
            if let Some(g) = self.dlq_growth_per_min(&ns.name, now_ms)
                && g > th.dlq_growth_per_min as f64
            {
                active.push(Alert {
                    ns: ns.name.clone(),
                    version: None,
                    kind: AlertKind::DlqGrowth {
                        per_min: g,
                        threshold_per_min: th.dlq_growth_per_min,
                    },
                    rollback: None,
                });
            }
        }
        // Advice: a routed version with its own alert, and a healthy older version to go back to.
        for ns in &snap.namespaces {
            let alerting: BTreeSet<String> = active
                .iter()
                .filter(|a| a.ns == ns.name)
                .filter_map(|a| a.version.clone())
                .collect();
            for a in active.iter_mut().filter(|a| a.ns == ns.name) {
                let Some(v) = a.version.as_deref() else {
                    continue;
                };
                let routed = ns.versions.iter().any(|x| x.version == v && x.weight > 0);
                if routed && let Some(to) = healthy_target(ns, v, &alerting) {
                    a.rollback = Some(RollbackAdvice {
                        from: v.to_string(),
                        to,
                    });
                }
            }
        }
        // Worst first: an alert with rollback advice, then by severity (stable otherwise).
        active.sort_by_key(|a| std::cmp::Reverse((a.rollback.is_some(), a.kind.severity())));
        self.above_since_ms.retain(|k, _| seen_versions.contains(k));
        let before: BTreeSet<_> = self.active.iter().map(Alert::key).collect();
        let now: BTreeSet<_> = active.iter().map(Alert::key).collect();
        let new: Vec<Alert> = active
            .iter()
            .filter(|a| !before.contains(&a.key()))
            .cloned()
            .collect();
        self.cleared = self
            .active
            .iter()
            .filter(|a| !now.contains(&a.key()))
            .cloned()
            .collect();
        self.active = active;
        new
    }

    /// Alerts of one namespace (and optionally one version).
    pub fn of<'a>(
        &'a self,
        ns: &'a str,
        version: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Alert> {
        self.active
            .iter()
            .filter(move |a| a.ns == ns && (version.is_none() || a.version.as_deref() == version))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::snapshot::{NamespaceSnapshot, VersionSnapshot};

    fn snap(err_v2: Option<f64>, unrouted: u64, dlq: u64) -> FleetSnapshot {
        FleetSnapshot {
            namespaces: vec![NamespaceSnapshot {
                name: "email".into(),
                dlq_depth: Some(dlq),
                unrouted_depth: Some(unrouted),
                versions: vec![
                    VersionSnapshot {
                        version: "v1".into(),
                        exists: true,
                        weight: 90,
                        consumers: Some(1),
                        ready: Some(0),
                        ..Default::default()
                    },
                    VersionSnapshot {
                        version: "v2".into(),
                        exists: true,
                        weight: 10,
                        consumers: Some(1),
                        ready: Some(0),
                        error_rate: err_v2,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_canary_that_gets_no_tasks_is_an_alert_within_a_refresh_of_enough_traffic() {
        let th = Thresholds::default();
        let mut t = AlertTracker::default();
        let at = |ms: i64, v1: u64, v2: u64| {
            let mut s = snap(None, 0, 0);
            s.taken_at_ms = ms;
            let ns = &mut s.namespaces[0];
            ns.gate = Some(crate::model::gate::GateSplit::from_pairs([
                ("v1".into(), 90),
                ("v2".into(), 10),
            ]));
            ns.hash_on = Some("message_id".into());
            ns.versions[0].published_total = Some(v1);
            ns.versions[1].published_total = Some(v2);
            s
        };
        assert!(t.evaluate(&at(0, 1000, 50), &th, 0).is_empty());
        // 40 more tasks, all to v1: not enough to tell at 90/10.
        assert!(t.evaluate(&at(12_000, 1040, 50), &th, 12_000).is_empty());
        assert!(t.measured_split("email").is_some());
        // 100 more, all to v1: the split is not happening, and the shape says why.
        let new = t.evaluate(&at(20_000, 1140, 50), &th, 20_000);
        assert_eq!(new.len(), 1, "{new:?}");
        let line = new[0].describe();
        assert!(
            line.starts_with("email: the split is not happening: gate v1 90% · v2 10%, measured v1 100% · v2 0% of 140 tasks"),
            "{line}"
        );
        assert!(line.contains("they carry no message_id"), "{line}");
        // A flip starts the window over: the tasks before it were routed by the old weights.
        let mut flipped = at(25_000, 1150, 50);
        flipped.namespaces[0].gate = Some(crate::model::gate::GateSplit::from_pairs([
            ("v1".into(), 50),
            ("v2".into(), 50),
        ]));
        t.evaluate(&flipped, &th, 25_000);
        assert_eq!(
            t.measured_split("email"),
            None,
            "no history since the flip yet"
        );
        // Counters unknown (no management stats): no verdict, never "0 tasks".
        let mut unknown = at(30_000, 1200, 60);
        unknown.namespaces[0].versions[1].published_total = None;
        t.evaluate(&unknown, &th, 30_000);
        assert_eq!(t.measured_split("email"), None);
    }

    #[test]
    fn error_rate_needs_the_window_and_rings_once() {
        let th = Thresholds::default(); // 5 % for 30 s
        let mut t = AlertTracker::default();
        assert!(t.evaluate(&snap(Some(0.5), 0, 0), &th, 0).is_empty());
        assert!(t.evaluate(&snap(Some(0.5), 0, 0), &th, 29_000).is_empty());
        let new = t.evaluate(&snap(Some(0.5), 0, 0), &th, 30_000);
        assert_eq!(new.len(), 1);
        assert_eq!(
            new[0].rollback,
            Some(RollbackAdvice {
                from: "v2".into(),
                to: "v1".into()
            })
        );
        assert!(new[0].describe().contains("v2: error rate 50.0%"));
        assert!(t.evaluate(&snap(Some(0.5), 0, 0), &th, 31_000).is_empty());
        assert_eq!(t.active.len(), 1);
        assert!(t.evaluate(&snap(Some(0.01), 0, 0), &th, 32_000).is_empty());
        assert!(t.active.is_empty());
    }

    /// The advice points from the failing canary to a healthy older version — never to a version
    /// without consumers, never from the stable version to a failing newer one.
    #[test]
    fn advice_names_the_failing_canary_and_a_healthy_target() {
        let th = Thresholds::default();
        let version =
            |v: &str, weight: u32, consumers: u64, ready: u64, err: Option<f64>| VersionSnapshot {
                version: v.into(),
                exists: true,
                weight,
                consumers: Some(consumers),
                ready: Some(ready),
                error_rate: err,
                ..Default::default()
            };
        let three = |v1: VersionSnapshot, v2: VersionSnapshot, v3: VersionSnapshot| FleetSnapshot {
            namespaces: vec![NamespaceSnapshot {
                name: "pay".into(),
                versions: vec![v1, v2, v3],
                ..Default::default()
            }],
            ..Default::default()
        };
        // v3 canary failing, v2 healthy, v1 has no consumers: v3 → v2.
        let mut t = AlertTracker::default();
        let s = three(
            version("v1", 0, 0, 0, None),
            version("v2", 80, 2, 0, Some(0.0)),
            version("v3", 20, 2, 0, Some(0.4)),
        );
        t.evaluate(&s, &th, 0);
        t.evaluate(&s, &th, 31_000);
        let advised: Vec<_> = t.active.iter().filter_map(|a| a.rollback.clone()).collect();
        assert_eq!(
            advised,
            vec![RollbackAdvice {
                from: "v3".into(),
                to: "v2".into()
            }]
        );
        // The stable v1 backing up with no consumers: no advice (nothing older to go to), and
        // never advice towards a failing or consumer-less version.
        let mut t = AlertTracker::default();
        let s = three(
            version("v1", 100, 0, 500, None),
            version("v2", 0, 0, 0, None),
            version("v3", 0, 0, 0, None),
        );
        t.evaluate(&s, &th, 0);
        assert!(!t.active.is_empty());
        assert!(
            t.active.iter().all(|a| a.rollback.is_none()),
            "{:?}",
            t.active
        );
        // Both v2 and v3 failing: v3 → v1 only if v1 is healthy; here it has consumers.
        let mut t = AlertTracker::default();
        let s = three(
            version("v1", 0, 1, 0, Some(0.0)),
            version("v2", 50, 1, 0, Some(0.5)),
            version("v3", 50, 1, 0, Some(0.5)),
        );
        t.evaluate(&s, &th, 0);
        t.evaluate(&s, &th, 31_000);
        let v3 = t
            .active
            .iter()
            .find(|a| a.version.as_deref() == Some("v3"))
            .and_then(|a| a.rollback.clone());
        assert_eq!(
            v3,
            Some(RollbackAdvice {
                from: "v3".into(),
                to: "v1".into()
            })
        );
    }

    /// Issue 17: a version backing up (ready 1,106, in 9.6/s vs ack 1.4/s) raises an alert, and
    /// a failing canary's backlog advises the rollback to the healthy version.
    #[test]
    fn backlog_raises_an_alert() {
        let th = Thresholds::default();
        let mut t = AlertTracker::default();
        let mut s = snap(Some(0.0), 0, 0);
        s.namespaces[0].versions[1].ready = Some(1106);
        s.namespaces[0].versions[1].rates = Some(crate::model::snapshot::Rates {
            publish: 9.6,
            ack: 1.4,
            ..Default::default()
        });
        t.evaluate(&s, &th, 0);
        let a = t
            .active
            .iter()
            .find(|a| a.kind.tag() == "backlog")
            .expect("a backlog alert");
        assert!(
            a.describe().contains("in 9.6/s vs ack 1.4/s"),
            "{}",
            a.describe()
        );
        assert_eq!(
            a.rollback,
            Some(RollbackAdvice {
                from: "v2".into(),
                to: "v1".into()
            })
        );
        // Keeping up (ack ≥ half the arrivals): no alert.
        s.namespaces[0].versions[1].rates = Some(crate::model::snapshot::Rates {
            publish: 9.6,
            ack: 9.0,
            ..Default::default()
        });
        t.evaluate(&s, &th, 1_000);
        assert!(t.active.iter().all(|a| a.kind.tag() != "backlog"));
    }

    #[test]
    fn unrouted_and_dlq_growth() {
        let th = Thresholds::default();
        let mut t = AlertTracker::default();
        t.record_dlq(&snap(None, 0, 0), 0);
        t.record_dlq(&snap(None, 0, 100), 30_000);
        let new = t.evaluate(&snap(None, 3, 100), &th, 30_000);
        let tags: Vec<_> = new.iter().map(|a| a.kind.tag()).collect();
        assert_eq!(tags, vec!["unrouted", "dlq"]);
        assert!((t.dlq_growth_per_min("email", 30_000).unwrap() - 200.0).abs() < 1e-6);
    }
}
