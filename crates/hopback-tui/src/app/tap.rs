//! The dead-letter tap and the per-version history as the console keeps them: rates over a
//! short window, totals, the recent dead letters, and history samples packed into 8 bytes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::broker::tap::{DeadLetterSeen, TapBatch};

/// Dead-letter rates are averaged over this window (or since the tap started, if shorter).
pub const TAP_RATE_WINDOW_MS: i64 = 5_000;
/// History kept per version (one sample per refresh).
pub const HISTORY_SAMPLES: usize = 900;
/// Dead letters kept per namespace for the "last dead letters" lists (10× that in total).
pub const RECENT_DEAD_LETTERS: usize = 200;
/// (namespace, origin version) — the key of the tap's counters.
pub type VersionKey = (String, Option<String>);
/// Dead-letter counts per batch: (unix ms, count), oldest first.
pub type Buckets = VecDeque<(i64, u64)>;

/// One history sample of a version, packed into 8 bytes: the console keeps
/// [`HISTORY_SAMPLES`] per version (15 minutes at 1 s), which with thousands of queues is its
/// largest allocation (48-byte samples made 1,000 namespaces cost ~86 MB after 15 minutes).
/// Depth saturates at `u32::MAX`; the error rate is kept in 1/10,000ths.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    depth: u32,
    error_permyriad: u16,
}

impl Sample {
    const UNKNOWN: u16 = u16::MAX;
    /// A sample of `depth` (ready + unacked) and `error_rate` (0..1, when known).
    pub fn new(depth: u64, error_rate: Option<f64>) -> Self {
        Self {
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            error_permyriad: error_rate
                .filter(|e| e.is_finite())
                .map(|e| (e.clamp(0.0, 1.0) * 10_000.0).round() as u16)
                .unwrap_or(Self::UNKNOWN),
        }
    }
    /// Ready + unacked.
    pub fn depth(&self) -> u64 {
        u64::from(self.depth)
    }
    /// Error rate 0..1, when known (to 0.01 %).
    pub fn error_rate(&self) -> Option<f64> {
        (self.error_permyriad != Self::UNKNOWN).then(|| f64::from(self.error_permyriad) / 10_000.0)
    }
}

/// The tap as the console sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapState {
    /// Namespaces whose DLX the tap is bound to.
    pub bound: BTreeSet<String>,
    /// Since when the tap has been consuming (unix ms).
    pub since_ms: Option<i64>,
    /// Last error, while it is down.
    pub down: Option<String>,
    /// (ns, version) → per-batch (unix ms, count) within the rate window.
    pub buckets: BTreeMap<VersionKey, Buckets>,
    /// Total dead letters seen per (ns, version) since start.
    pub totals: BTreeMap<VersionKey, u64>,
    /// Total per (ns, reason) since start.
    pub reasons: BTreeMap<(String, String), u64>,
    /// Most recent dead letters (up to [`RECENT_DEAD_LETTERS`] per namespace), newest last.
    pub recent: VecDeque<DeadLetterSeen>,
    /// When the last dead letter arrived (unix ms).
    pub last_seen_ms: Option<i64>,
}

impl TapState {
    /// Dead letters per second of `ns` by version, over the rate window.
    pub fn rates(&self, ns: &str, now_ms: i64) -> BTreeMap<String, f64> {
        let span_ms = self
            .since_ms
            .map(|s| (now_ms - s).clamp(1_000, TAP_RATE_WINDOW_MS))
            .unwrap_or(TAP_RATE_WINDOW_MS);
        let mut out = BTreeMap::new();
        for ((n, v), b) in &self.buckets {
            if n != ns {
                continue;
            }
            let Some(v) = v else { continue };
            let count: u64 = b
                .iter()
                .filter(|(t, _)| now_ms - t < TAP_RATE_WINDOW_MS)
                .map(|(_, c)| c)
                .sum();
            out.insert(v.clone(), count as f64 * 1000.0 / span_ms as f64);
        }
        out
    }
    pub(super) fn absorb(&mut self, b: TapBatch) {
        for (k, n) in &b.by_version {
            self.buckets
                .entry(k.clone())
                .or_default()
                .push_back((b.at_ms, *n));
            *self.totals.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &b.by_reason {
            *self.reasons.entry(k.clone()).or_default() += n;
        }
        if b.total() > 0 {
            self.last_seen_ms = Some(b.at_ms);
        }
        for s in b.samples {
            // Per-namespace cap, so a storm in one namespace cannot push out another's list.
            let same = self.recent.iter().filter(|d| d.ns == s.ns).count();
            if same >= RECENT_DEAD_LETTERS
                && let Some(i) = self.recent.iter().position(|d| d.ns == s.ns)
            {
                self.recent.remove(i);
            }
            if self.recent.len() >= RECENT_DEAD_LETTERS * 10 {
                self.recent.pop_front();
            }
            self.recent.push_back(s);
        }
    }
    pub(super) fn expire(&mut self, now_ms: i64) {
        for b in self.buckets.values_mut() {
            while b
                .front()
                .is_some_and(|(t, _)| now_ms - t >= TAP_RATE_WINDOW_MS)
            {
                b.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn samples_pack_into_8_bytes_and_round_trip() {
        assert_eq!(std::mem::size_of::<Sample>(), 8);
        let s = Sample::new(1234, Some(0.1234));
        assert_eq!(s.depth(), 1234);
        assert!((s.error_rate().unwrap() - 0.1234).abs() < 1e-9);
        assert_eq!(Sample::new(0, None).error_rate(), None);
        assert_eq!(
            Sample::new(u64::MAX, Some(7.0)).depth(),
            u64::from(u32::MAX)
        );
        assert_eq!(Sample::new(1, Some(7.0)).error_rate(), Some(1.0));
        assert_eq!(Sample::new(1, Some(f64::NAN)).error_rate(), None);
    }
}
