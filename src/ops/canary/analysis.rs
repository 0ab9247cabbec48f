//! The canary's window: counters of the new and the old version's queues from the profile's
//! metrics source (`broker::metrics`), followed from the start of the current step by a
//! [`CounterTracker`] of its own, plus exact consumers and backlog (passive declares). What no
//! source can tell stays unknown.

use crate::broker::metrics::{MIN_SPAN_MS, Metrics};
use crate::broker::mgmt::Mgmt;
use crate::broker::session::Session;
use crate::config::Profile;
use crate::model::canary::{Analysis, VersionWindow};
use crate::model::metrics::CounterTracker;

/// Reads one step's window, reading after reading.
#[derive(Debug)]
pub(super) struct WindowReader {
    metrics: Metrics,
    tracker: CounterTracker,
    new_queue: String,
    old_queue: String,
}

/// Points older than this are dropped (a step's window is never longer in practice).
const KEEP_MS: i64 = 24 * 3600 * 1000;

impl WindowReader {
    pub(super) fn new(profile: &Profile, new_queue: String, old_queue: String) -> Self {
        Self {
            metrics: Metrics::new(profile),
            tracker: CounterTracker::new(),
            new_queue,
            old_queue,
        }
    }

    /// A new step: the window starts at the next reading.
    pub(super) fn restart(&mut self) {
        self.tracker = CounterTracker::new();
    }

    /// Read the source once and return the analysis of the window so far.
    pub(super) async fn read(&mut self, session: &Session, mgmt: Option<&Mgmt>) -> Analysis {
        let queues = [self.new_queue.clone(), self.old_queue.clone()];
        let mut a = Analysis::default();
        let mut listed = [false, false];
        match self.metrics.read_queues(mgmt, &queues).await {
            Ok((source, reading)) => {
                a.source = source.name().to_string();
                for (i, q) in queues.iter().enumerate() {
                    listed[i] = reading.queues.contains_key(q);
                }
                self.tracker.observe(&reading, KEEP_MS);
            }
            Err(why) => a.source = why,
        }
        for (i, q) in queues.iter().enumerate() {
            let mut w = VersionWindow::default();
            if listed[i]
                && let Some(r) = self.tracker.rates(q, i64::MAX / 4, MIN_SPAN_MS)
            {
                w.acked = Some((r.ack * r.span_s).round() as u64);
                w.rejected = Some((r.rejected * r.span_s).round() as u64);
                if i == 0 {
                    a.window_ms = (r.span_s * 1000.0) as u64;
                }
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
