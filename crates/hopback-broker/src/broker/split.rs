//! The split that happened, read from the broker: each version queue's publish counter over the
//! last minute (the management API's own 5 s samples, one call per version queue), judged
//! against the gate's weights (`model::split::check`), and — when it is off — a sample of the
//! tasks (`broker::sample`) to say why. Used by the one-shot readings (`status`, `gate show`,
//! a flip's measured verification); the console derives the same split from the counters of its
//! successive refreshes instead (one management call per refresh).

use std::collections::BTreeMap;

use crate::broker::mgmt::Mgmt;
use crate::broker::session::Session;
use crate::model::gate::GateSplit;
use crate::model::hash::HashOn;
use crate::model::snapshot::SplitReport;
use crate::model::split::{MeasuredSplit, SplitCheck, cause, check};
use crate::topology::Namespace;

/// The window of a one-shot reading: the last minute of the broker's samples.
pub const WINDOW_S: u64 = 60;

/// The split of `versions` (version → queue) over the last `window_s` seconds; `None`: unknown
/// (no management stats, a queue missing, or the API failed).
pub async fn measure(
    mgmt: &Mgmt,
    versions: &BTreeMap<String, String>,
    window_s: u64,
) -> Option<MeasuredSplit> {
    let mut histories = BTreeMap::new();
    for (v, q) in versions {
        histories.insert(v.clone(), mgmt.publish_history(q, window_s).await.ok()?);
    }
    if !histories.is_empty()
        && histories
            .values()
            .all(|h| h.as_ref().is_some_and(Vec::is_empty))
    {
        // Known, and nothing was ever published to any version.
        return Some(MeasuredSplit {
            window_s: window_s as f64,
            tasks: histories.into_keys().map(|v| (v, 0)).collect(),
        });
    }
    MeasuredSplit::from_history(&histories, window_s as i64 * 1000)
}

/// Judge `measured` against `gate`; when off, sample the namespace's tasks for the cause.
pub async fn judge(
    session: &Session,
    mgmt: Option<&Mgmt>,
    names: &Namespace,
    versions: &BTreeMap<String, String>,
    gate: &GateSplit,
    hash: Option<&HashOn>,
    measured: Option<&MeasuredSplit>,
) -> SplitReport {
    let Some(m) = measured else {
        return SplitReport {
            check: SplitCheck::Unknown {
                why: "no publish counters: the management API has no stats for these queues (yet)"
                    .into(),
            },
            cause: None,
            sample: None,
        };
    };
    let verdict = check(gate, m);
    let sample = if matches!(verdict, SplitCheck::Differs { .. }) {
        let queues: Vec<String> = versions.values().cloned().collect();
        crate::broker::sample::hash_inputs(session, mgmt, names, &queues).await
    } else {
        None
    };
    SplitReport {
        cause: cause(&verdict, hash, sample.as_ref(), &names.name),
        check: verdict,
        sample,
    }
}

/// Measure and judge every namespace of a snapshot that has a gate (the one-shot `status`).
pub async fn judge_snapshot(
    session: &Session,
    mgmt: &Mgmt,
    cfg: &crate::config::Config,
    snap: &mut crate::model::snapshot::FleetSnapshot,
) {
    // One management call per version queue: a whole large vhost is named one namespace at a
    // time instead (as the error rates are).
    let too_many = snap.namespaces.len() > crate::broker::stats::SAMPLE_MAX_NAMESPACES;
    for ns in &mut snap.namespaces {
        if too_many {
            ns.split_check = Some(SplitReport {
                check: SplitCheck::Unknown {
                    why: format!(
                        "measured for at most {} namespaces at once: `hopback status {}`",
                        crate::broker::stats::SAMPLE_MAX_NAMESPACES,
                        crate::text::sanitize(&ns.name)
                    ),
                },
                cause: None,
                sample: None,
            });
            continue;
        }
        let Some(gate) = ns.gate.clone() else {
            continue;
        };
        let versions: BTreeMap<String, String> = ns
            .versions
            .iter()
            .filter(|v| v.exists)
            .map(|v| (v.version.clone(), v.queue.clone()))
            .collect();
        let names = Namespace::resolve(cfg, &ns.name);
        let hash = ns.hash_on.as_deref().and_then(|h| h.parse::<HashOn>().ok());
        let measured = measure(mgmt, &versions, WINDOW_S).await;
        let report = judge(
            session,
            Some(mgmt),
            &names,
            &versions,
            &gate,
            hash.as_ref(),
            measured.as_ref(),
        )
        .await;
        ns.measured = measured;
        ns.split_check = Some(report);
    }
}
