//! The canary's window: counters of the new and the old version's queues from the profile's
//! metrics source (`broker::metrics`), read against the first reading of the current step, plus
//! exact consumers and backlog (passive declares). What no source can tell stays unknown.
//!
//! Rejections are what was delivered and neither acknowledged nor delivered again. The broker
//! samples its unacked gauge and its counters at different moments, so the difference of two
//! gauge readings is noise of up to the deliveries in flight (prefetch × consumers): counted as
//! rejections, a healthy version under load would show a few percent of errors. The window counts
//! every delivery still unacknowledged now as *not* rejected — a lower bound of the rejections,
//! so the canary never aborts on the in-flight noise, while a failing version (a share of every
//! delivery) stays far above its limit.

use std::collections::HashMap;
use std::time::Instant;

use crate::broker::metrics::Metrics;
use crate::broker::mgmt::Mgmt;
use crate::broker::session::Session;
use crate::config::Profile;
use crate::model::canary::{Analysis, VersionWindow};
use crate::model::metrics::{CounterKind, QueueReading};

/// Reads one step's window, reading after reading.
#[derive(Debug)]
pub(super) struct WindowReader {
    metrics: Metrics,
    /// The first reading of each queue in this step, and when it was taken.
    base: HashMap<String, (QueueReading, Instant)>,
    new_queue: String,
    old_queue: String,
}

/// The counts of one queue since its base reading: `(acked, rejected at least)`; `None` when a
/// counter is missing or went down (a restart: unknown, never a negative count).
fn window_counts(base: &QueueReading, now: &QueueReading) -> Option<(u64, u64)> {
    let d = |k: CounterKind| -> Option<u64> { now.raw_total(k)?.checked_sub(base.raw_total(k)?) };
    let delivered = d(CounterKind::DeliveredAck)?;
    let acked = d(CounterKind::Acked)?;
    let redelivered = d(CounterKind::Redelivered).unwrap_or(0);
    let in_flight = now.unacked?;
    let rejected = delivered
        .saturating_sub(acked)
        .saturating_sub(redelivered)
        .saturating_sub(in_flight);
    Some((acked, rejected))
}

impl WindowReader {
    pub(super) fn new(profile: &Profile, new_queue: String, old_queue: String) -> Self {
        Self {
            metrics: Metrics::new(profile),
            base: HashMap::new(),
            new_queue,
            old_queue,
        }
    }

    /// A new step: the window starts at the next reading.
    pub(super) fn restart(&mut self) {
        self.base.clear();
    }

    /// Read the source once and return the analysis of the window so far.
    pub(super) async fn read(&mut self, session: &Session, mgmt: Option<&Mgmt>) -> Analysis {
        let queues = [self.new_queue.clone(), self.old_queue.clone()];
        let mut a = Analysis::default();
        let mut counts: [Option<(u64, u64)>; 2] = [None, None];
        match self.metrics.read_queues(mgmt, &queues).await {
            Ok((source, reading)) => {
                a.source = source.name().to_string();
                for (i, q) in queues.iter().enumerate() {
                    let Some(now) = reading.queues.get(q) else {
                        continue;
                    };
                    match self.base.get(q) {
                        Some((base, at)) => {
                            counts[i] = window_counts(base, now);
                            if i == 0 {
                                a.window_ms = at.elapsed().as_millis() as u64;
                            }
                            // A series that went away or restarted: count again from here.
                            if counts[i].is_none() {
                                self.base.insert(q.clone(), (now.clone(), Instant::now()));
                            }
                        }
                        None => {
                            self.base.insert(q.clone(), (now.clone(), Instant::now()));
                        }
                    }
                }
            }
            Err(why) => a.source = why,
        }
        for (i, q) in queues.iter().enumerate() {
            let mut w = VersionWindow::default();
            if let Some((acked, rejected)) = counts[i] {
                w.acked = Some(acked);
                w.rejected = Some(rejected);
            }
            if let Ok(Some(c)) = session.passive_queue(q).await {
                w.consumers = Some(u64::from(c.consumers));
                w.ready = Some(u64::from(c.ready));
            }
            if i == 0 {
                a.new = w;
            } else {
                a.old = w;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(delivered: u64, acked: u64, redelivered: u64, unacked: u64) -> QueueReading {
        QueueReading {
            unacked: Some(unacked),
            series: vec![
                (CounterKind::DeliveredAck, 1, delivered),
                (CounterKind::Acked, 1, acked),
                (CounterKind::Redelivered, 1, redelivered),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn in_flight_deliveries_are_never_counted_as_rejections() {
        // Healthy: 300 delivered, 285 acked, 15 still in flight — 0 rejected, not 5 %.
        assert_eq!(
            window_counts(&q(1000, 990, 0, 10), &q(1300, 1275, 0, 15)),
            Some((285, 0))
        );
        // Failing: 300 delivered, 200 acked, 15 in flight: at least 85 rejected.
        assert_eq!(
            window_counts(&q(1000, 990, 0, 10), &q(1300, 1190, 0, 15)),
            Some((200, 85))
        );
        // A counter that went down (a restart) is unknown.
        assert_eq!(window_counts(&q(1000, 990, 0, 10), &q(5, 5, 0, 0)), None);
        let no_gauge = QueueReading {
            unacked: None,
            ..q(1300, 1275, 0, 15)
        };
        assert_eq!(window_counts(&q(1000, 990, 0, 10), &no_gauge), None);
    }
}
