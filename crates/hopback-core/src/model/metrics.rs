//! Queue counters and the rates hopback computes from them on its own clock.
//!
//! A broker's counters (`…_total` in Prometheus, `message_stats` totals in the management API) are
//! exact; a rate is the difference of two readings divided by the time between them as hopback
//! measured it. A counter is a sum of *series* (one per exchange a queue is published through,
//! per channel on older brokers, per node in a cluster); each series is followed on its own, so a
//! series that restarts (a node restart, a channel that closes and another that opens) adds what
//! it counted since it restarted — never a negative difference, never its whole history at once.
//! [`CounterTracker`] turns readings into monotone totals per queue and rates over a window.
//!
//! The error rate of a queue is `rejected ÷ (acked + rejected)`, with
//! `rejected = delivered (manual ack) − acked − redelivered − Δunacked`: what consumers settled
//! without acknowledging and the broker did not deliver again (nacked or rejected without
//! requeue — dead-lettered or dropped).

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::Serialize;

/// Where the rates and unacked counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsSource {
    /// The node's `rabbitmq_prometheus` endpoint: exact counters, rates on hopback's clock.
    Prometheus,
    /// The management API's statistics (5 s samples of the metrics collector).
    Management,
}

impl MetricsSource {
    /// `prometheus` / `management`.
    pub fn name(self) -> &'static str {
        match self {
            MetricsSource::Prometheus => "prometheus",
            MetricsSource::Management => "management",
        }
    }
}

impl std::fmt::Display for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A cumulative counter of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterKind {
    /// Messages published into the queue (through any exchange).
    Published,
    /// Deliveries (and `basic.get`s) in manual-acknowledgement mode, redeliveries included.
    DeliveredAck,
    /// Deliveries (and `basic.get`s) in automatic-acknowledgement mode.
    DeliveredAuto,
    /// Acknowledgements.
    Acked,
    /// Redeliveries.
    Redelivered,
}

impl CounterKind {
    /// Every kind, in the order of [`Totals`]' slots.
    pub const ALL: [CounterKind; 5] = [
        CounterKind::Published,
        CounterKind::DeliveredAck,
        CounterKind::DeliveredAuto,
        CounterKind::Acked,
        CounterKind::Redelivered,
    ];
    fn slot(self) -> usize {
        self as usize
    }
}

/// Monotone totals of one queue, one slot per [`CounterKind`].
pub type Totals = [u64; 5];

/// One queue in one reading: its gauges and every counter series the source gave for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueReading {
    /// Ready messages (a gauge the broker samples).
    pub ready: Option<u64>,
    /// Delivered, not yet acknowledged (sampled gauge).
    pub unacked: Option<u64>,
    /// Consumers.
    pub consumers: Option<u64>,
    /// `(kind, series id, value)`: the series id tells series of one kind apart (the node, the
    /// exchange or channel label); it only has to be stable between readings.
    pub series: Vec<(CounterKind, u64, u64)>,
}

impl QueueReading {
    /// The sum of the series of `kind` as the broker reports them now (`None`: no series).
    pub fn raw_total(&self, kind: CounterKind) -> Option<u64> {
        let mut any = false;
        let sum = self
            .series
            .iter()
            .filter(|s| s.0 == kind)
            .inspect(|_| any = true)
            .fold(0u64, |a, s| a.saturating_add(s.2));
        any.then_some(sum)
    }
}

/// Everything one read of the source returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// When it was taken, on hopback's clock (ms, monotone within a process).
    pub at_ms: i64,
    /// Per queue.
    pub queues: HashMap<String, QueueReading>,
    /// The nodes (by the index the series ids carry, see [`series_node`]) that answered: a
    /// series new in a queue counts from 0 only when its node answered the reading before, so a
    /// node that comes back never adds its whole history at once.
    pub nodes_answered: BTreeSet<u16>,
}

/// A series id that carries the node index in its top 16 bits (see [`Reading::nodes_answered`]).
pub fn series_id(node: u16, label_hash: u64) -> u64 {
    (u64::from(node) << 48) | (label_hash & 0x0000_FFFF_FFFF_FFFF)
}

/// The node index of a series id.
pub fn series_node(id: u64) -> u16 {
    (id >> 48) as u16
}

/// Rates of one queue over a window, per second, from counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CounterRates {
    /// Published into the queue.
    pub publish: f64,
    /// Delivered (both acknowledgement modes).
    pub deliver: f64,
    /// Acknowledged.
    pub ack: f64,
    /// Redelivered.
    pub redeliver: f64,
    /// Settled without acknowledgement and not delivered again (see the module doc).
    pub rejected: f64,
    /// The window the rates cover, in seconds.
    pub span_s: f64,
}

/// A queue as the tracker follows it.
#[derive(Debug, Clone, Default)]
struct Followed {
    /// The last value of every series (kept while a series is missing, so it can come back).
    last: HashMap<(CounterKind, u64), u64>,
    /// Monotone totals since the tracker first saw the queue.
    totals: Totals,
    /// `(at_ms, totals, unacked)`, oldest first, covering at least the rate window.
    points: VecDeque<(i64, Totals, Option<u64>)>,
    /// The last reading that listed the queue.
    seen_ms: i64,
}

/// Follows the counters of the queues hopback shows: readings in, rates out.
#[derive(Debug, Clone, Default)]
pub struct CounterTracker {
    queues: HashMap<String, Followed>,
    /// The nodes that answered the previous reading.
    answered_before: BTreeSet<u16>,
    /// Readings taken (the first one only sets baselines).
    readings: u64,
}

/// A queue not listed for this long is forgotten (it was deleted, or left the screen).
pub const FORGET_AFTER_MS: i64 = 300_000;

impl CounterTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many queues it follows.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Does it follow no queue?
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Take a reading in, keeping points back to `keep_ms` before it.
    pub fn observe(&mut self, r: &Reading, keep_ms: i64) {
        for (name, q) in &r.queues {
            let known = self.queues.contains_key(name);
            let f = self.queues.entry(name.clone()).or_default();
            for &(kind, id, value) in &q.series {
                let delta = match f.last.get(&(kind, id)) {
                    // A counter that went down restarted from 0: what it shows is new.
                    Some(&prev) if value < prev => value,
                    Some(&prev) => value - prev,
                    // A new series of a queue already followed, on a node that answered the
                    // reading before: it started counting since then.
                    None if known && self.answered_before.contains(&series_node(id)) => value,
                    // Anything else is a baseline.
                    None => 0,
                };
                f.last.insert((kind, id), value);
                let slot = &mut f.totals[kind.slot()];
                *slot = slot.saturating_add(delta);
            }
            f.seen_ms = r.at_ms;
            f.points.push_back((r.at_ms, f.totals, q.unacked));
            // Keep one point at or before the window's start (the rate's base).
            while f.points.len() > 2 && f.points[1].0 <= r.at_ms - keep_ms {
                f.points.pop_front();
            }
        }
        self.queues
            .retain(|_, f| r.at_ms - f.seen_ms < FORGET_AFTER_MS);
        self.answered_before = r.nodes_answered.clone();
        self.readings += 1;
    }

    /// Rates of `queue` over the newest `window_ms` (or what is followed of it, at least
    /// `min_span_ms`); `None`: not followed, or not long enough to tell.
    pub fn rates(&self, queue: &str, window_ms: i64, min_span_ms: i64) -> Option<CounterRates> {
        let f = self.queues.get(queue)?;
        let (t1, c1, u1) = *f.points.back()?;
        let (t0, c0, u0) = *f
            .points
            .iter()
            .rev()
            .find(|p| p.0 <= t1 - window_ms)
            .or_else(|| f.points.front())?;
        let span_ms = t1 - t0;
        if span_ms < min_span_ms.max(1) {
            return None;
        }
        let span_s = span_ms as f64 / 1000.0;
        let d = |k: CounterKind| c1[k.slot()].saturating_sub(c0[k.slot()]) as f64;
        let delivered_ack = d(CounterKind::DeliveredAck);
        let (ack, redeliver) = (d(CounterKind::Acked), d(CounterKind::Redelivered));
        let unacked_change = match (u0, u1) {
            (Some(a), Some(b)) => b as f64 - a as f64,
            _ => 0.0,
        };
        let rejected = (delivered_ack - ack - redeliver - unacked_change).clamp(0.0, delivered_ack);
        Some(CounterRates {
            publish: d(CounterKind::Published) / span_s,
            deliver: (delivered_ack + d(CounterKind::DeliveredAuto)) / span_s,
            ack: ack / span_s,
            redeliver: redeliver / span_s,
            rejected: rejected / span_s,
            span_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Series = Vec<(CounterKind, u64, u64)>;

    fn reading(at_ms: i64, nodes: &[u16], queues: &[(&str, Series)]) -> Reading {
        Reading {
            at_ms,
            queues: queues
                .iter()
                .map(|(n, s)| {
                    (
                        n.to_string(),
                        QueueReading {
                            series: s.clone(),
                            unacked: Some(0),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            nodes_answered: nodes.iter().copied().collect(),
        }
    }

    use CounterKind::*;

    #[test]
    fn rates_are_differences_over_hopback_s_clock() {
        let mut t = CounterTracker::new();
        t.observe(
            &reading(
                0,
                &[0],
                &[("q", vec![(Published, 1, 1_000), (Acked, 1, 500)])],
            ),
            5_000,
        );
        assert_eq!(t.rates("q", 5_000, 1_000), None, "one reading: unknown");
        t.observe(
            &reading(
                2_000,
                &[0],
                &[("q", vec![(Published, 1, 1_200), (Acked, 1, 580)])],
            ),
            5_000,
        );
        let r = t.rates("q", 5_000, 1_000).unwrap();
        assert_eq!(r.publish, 100.0);
        assert_eq!(r.ack, 40.0);
        assert_eq!(t.rates("nope", 5_000, 1_000), None);
    }

    #[test]
    fn a_reset_never_gives_a_negative_or_huge_rate() {
        let mut t = CounterTracker::new();
        let big = 9_000_000_000;
        t.observe(
            &reading(0, &[0], &[("q", vec![(Published, 1, big)])]),
            5_000,
        );
        t.observe(
            &reading(1_000, &[0], &[("q", vec![(Published, 1, big + 100)])]),
            5_000,
        );
        // The node restarted: the counter starts again from 0 and shows 30.
        t.observe(
            &reading(2_000, &[0], &[("q", vec![(Published, 1, 30)])]),
            5_000,
        );
        let r = t.rates("q", 1_000, 500).unwrap();
        assert_eq!(r.publish, 30.0);
        let r = t.rates("q", 5_000, 500).unwrap();
        assert_eq!(r.publish, 65.0, "130 in 2 s");
    }

    #[test]
    fn series_that_come_and_go_add_only_what_they_counted() {
        let mut t = CounterTracker::new();
        t.observe(
            &reading(0, &[0, 1], &[("q", vec![(Published, 1, 100)])]),
            10_000,
        );
        // A new exchange starts publishing into it (new series on a node that answered): 20.
        t.observe(
            &reading(
                1_000,
                &[0, 1],
                &[("q", vec![(Published, 1, 110), (Published, 2, 20)])],
            ),
            10_000,
        );
        // Series 1 missing for a reading (its node did not answer), then back with 150.
        t.observe(
            &reading(2_000, &[1], &[("q", vec![(Published, 2, 30)])]),
            10_000,
        );
        t.observe(
            &reading(
                3_000,
                &[0, 1],
                &[("q", vec![(Published, 1, 150), (Published, 2, 40)])],
            ),
            10_000,
        );
        let r = t.rates("q", 10_000, 500).unwrap();
        assert_eq!(r.publish * r.span_s, 90.0);
        // A node seen for the first time with a long history is a baseline, not a spike.
        let id_node3 = series_id(3, 7);
        t.observe(
            &reading(
                4_000,
                &[0, 1, 3],
                &[(
                    "q",
                    vec![
                        (Published, 1, 150),
                        (Published, 2, 40),
                        (Published, id_node3, 1_000_000),
                    ],
                )],
            ),
            10_000,
        );
        let r = t.rates("q", 10_000, 500).unwrap();
        assert_eq!(r.publish * r.span_s, 90.0);
    }

    #[test]
    fn rejected_is_what_was_delivered_and_neither_acked_nor_delivered_again() {
        let mut t = CounterTracker::new();
        let s = |d, a, rd| vec![(DeliveredAck, 1, d), (Acked, 1, a), (Redelivered, 1, rd)];
        t.observe(&reading(0, &[0], &[("q", s(0, 0, 0))]), 60_000);
        t.observe(&reading(10_000, &[0], &[("q", s(1_477, 1_023, 0))]), 60_000);
        let r = t.rates("q", 60_000, 1_000).unwrap();
        assert!((r.rejected * r.span_s - 454.0).abs() < 1e-9);
        // Requeued and delivered again: not rejected.
        t.observe(
            &reading(20_000, &[0], &[("q", s(1_677, 1_123, 100))]),
            60_000,
        );
        let r = t.rates("q", 10_000, 1_000).unwrap();
        assert_eq!(r.rejected, 0.0);
        assert_eq!(
            crate::model::snapshot::error_rate(r.ack, r.rejected),
            Some(0.0)
        );
    }

    #[test]
    fn forgotten_after_a_while_unlisted() {
        let mut t = CounterTracker::new();
        t.observe(&reading(0, &[0], &[("q", vec![(Published, 1, 1)])]), 5_000);
        t.observe(
            &reading(FORGET_AFTER_MS + 1, &[0], &[("r", vec![(Published, 1, 1)])]),
            5_000,
        );
        assert_eq!(t.len(), 1);
    }
}
