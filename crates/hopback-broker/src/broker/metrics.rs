//! The metrics source of a profile (`metrics = "auto" | "prometheus" | "management"`): where a
//! snapshot's rates, unacked counts and error rates come from, and the counter tracker that
//! turns Prometheus readings into rates on hopback's own clock.
//!
//! `auto` uses Prometheus when its endpoint answers with per-queue counters and belongs to the
//! broker the profile names (its `rabbitmq_cluster` is the management API's cluster name), and
//! falls back to the management API's statistics otherwise; a Prometheus endpoint that failed is
//! asked again after [`RETRY_AFTER`], not on every refresh. What is used, and why not the other,
//! is in the snapshot (`metrics_source`, `metrics_note`). When no source has a number it stays
//! unknown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::broker::mgmt::Mgmt;
use crate::broker::prometheus::{Prometheus, Scrape};
use crate::config::{MetricsMode, Profile};
use crate::model::metrics::{CounterKind, CounterTracker, MetricsSource};
use crate::model::snapshot::{FleetSnapshot, Rates, error_rate};

/// Rates are averaged over this much of hopback's clock (or what has been followed, if less).
pub const RATE_WINDOW_MS: i64 = 5_000;
/// Below this much followed time a rate is not known yet.
pub const MIN_SPAN_MS: i64 = 900;
/// A Prometheus endpoint that failed (or was not usable) is asked again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// A scrape that took `t` is not repeated within `PACE_FACTOR × t`: a vhost so large that its
/// text takes seconds to render costs its broker at most a tenth of its time; the refreshes in
/// between reuse the last reading (rates span the readings, on hopback's clock).
pub const PACE_FACTOR: u32 = 10;

/// The last good scrape, reused by the refreshes its pace skips.
#[derive(Debug)]
struct LastScrape {
    at: Instant,
    took: Duration,
    queues: std::collections::HashMap<String, crate::model::metrics::QueueReading>,
    version: Option<String>,
}

/// Where the metrics come from, and the state between refreshes (console) or readings (status).
#[derive(Debug)]
pub struct Metrics {
    mode: MetricsMode,
    prometheus: Option<Prometheus>,
    /// Why Prometheus cannot be used now, and since when (`auto` asks again after
    /// [`RETRY_AFTER`]).
    prometheus_down: Option<(String, Instant)>,
    /// The management API's cluster name, once read (the identity check of the endpoint).
    cluster_name: Option<Option<String>>,
    tracker: CounterTracker,
    /// hopback's clock.
    epoch: Instant,
    /// The last scrape's size in bytes (all nodes).
    pub last_scrape_bytes: u64,
    last: Option<LastScrape>,
    /// The management API's `disable_stats`, once read.
    stats_disabled: Option<bool>,
    /// Read the overview once (not for a one-shot management-only reading: its caller counts
    /// its management calls; the queue list's own statistics tell there).
    ask_overview: bool,
}

impl Metrics {
    /// The profile's metrics source.
    pub fn new(profile: &Profile) -> Self {
        let prometheus = match profile.metrics {
            MetricsMode::Management => None,
            _ => Prometheus::new(profile).ok(),
        };
        Self {
            mode: profile.metrics,
            prometheus,
            prometheus_down: None,
            cluster_name: None,
            tracker: CounterTracker::new(),
            epoch: Instant::now(),
            last_scrape_bytes: 0,
            last: None,
            stats_disabled: None,
            ask_overview: true,
        }
    }

    /// The management API's statistics only (one-shot readings that keep no counter history).
    pub fn management_only(_profile: &Profile) -> Self {
        Self {
            mode: MetricsMode::Management,
            prometheus: None,
            prometheus_down: None,
            cluster_name: None,
            tracker: CounterTracker::new(),
            epoch: Instant::now(),
            last_scrape_bytes: 0,
            last: None,
            stats_disabled: None,
            ask_overview: false,
        }
    }

    /// Read the endpoint on the next [`Metrics::apply`] whatever the pace (a one-shot reading's
    /// second look).
    pub fn read_next(&mut self) {
        if let Some(l) = &mut self.last {
            l.took = Duration::ZERO;
        }
    }

    /// The mode asked for.
    pub fn mode(&self) -> MetricsMode {
        self.mode
    }

    /// The Prometheus client, when the mode may use one.
    pub fn prometheus(&self) -> Option<&Prometheus> {
        self.prometheus.as_ref()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Fill `snap`'s rates, unacked counts, consumers and error rates from the source, for the
    /// versions (and DLQs) of its namespaces. `snap` already holds what the management API's
    /// queue list said (rates from its statistics, when it collects them); this decides which
    /// source stands and says so.
    pub async fn apply(&mut self, mgmt: Option<&Mgmt>, snap: &mut FleetSnapshot) {
        if self.stats_disabled.is_none()
            && self.ask_overview
            && snap.mgmt_available
            && let Some(m) = mgmt
            && let Ok(o) = m.overview().await
        {
            self.stats_disabled = Some(o.disable_stats);
            self.cluster_name = Some(Some(o.cluster_name).filter(|c| !c.is_empty()));
        }
        let management_has_stats = snap.mgmt_available
            && match self.stats_disabled {
                Some(disabled) => !disabled,
                None => management_collects(snap),
            };
        let use_prometheus = match self.mode {
            MetricsMode::Management => false,
            _ => match &self.prometheus_down {
                Some((_, since)) if since.elapsed() < RETRY_AFTER => false,
                _ => self.prometheus.is_some(),
            },
        };
        let mut why_not_prometheus = self.prometheus_down.as_ref().map(|d| d.0.clone());
        if use_prometheus {
            match self.read_prometheus(mgmt, snap).await {
                Ok(()) => {
                    self.prometheus_down = None;
                    snap.metrics_source = Some(MetricsSource::Prometheus);
                    return;
                }
                Err(why) => {
                    tracing::info!(why = %why, "Prometheus metrics not used");
                    self.prometheus_down = Some((why.clone(), Instant::now()));
                    self.last = None;
                    why_not_prometheus = Some(why);
                }
            }
        } else if self.prometheus.is_none() && self.mode != MetricsMode::Management {
            why_not_prometheus = Some("no Prometheus endpoint could be set up".into());
        }
        match self.mode {
            MetricsMode::Prometheus => {
                clear_rates(snap);
                snap.metrics_source = None;
                snap.metrics_note = Some(format!(
                    "metrics = prometheus, and Prometheus cannot be used: {}",
                    why_not_prometheus.unwrap_or_else(|| "unknown".into())
                ));
            }
            _ if management_has_stats => {
                snap.metrics_source = Some(MetricsSource::Management);
                fill_management_error_rates(snap);
                if self.mode == MetricsMode::Auto {
                    snap.metrics_note = why_not_prometheus
                        .map(|w| format!("management API statistics (Prometheus not used: {w})"));
                }
            }
            _ => {
                clear_rates(snap);
                snap.metrics_source = None;
                let mgmt_why = if snap.mgmt_available {
                    "the management API collects no statistics (disable_metrics_collector)"
                        .to_string()
                } else {
                    format!(
                        "the management API is unavailable ({})",
                        snap.mgmt_error.as_deref().unwrap_or("?")
                    )
                };
                snap.metrics_note = Some(match (self.mode, why_not_prometheus) {
                    (MetricsMode::Management, _) => {
                        format!("rates unknown: metrics = management, and {mgmt_why}")
                    }
                    (_, Some(w)) => format!("rates unknown: {mgmt_why}, and Prometheus: {w}"),
                    (_, None) => format!("rates unknown: {mgmt_why}"),
                });
            }
        }
    }

    /// Scrape, check the endpoint is the profile's broker, feed the tracker, fill `snap`.
    async fn read_prometheus(
        &mut self,
        mgmt: Option<&Mgmt>,
        snap: &mut FleetSnapshot,
    ) -> Result<(), String> {
        let Some(prom) = self.prometheus.clone() else {
            return Err("no endpoint".into());
        };
        let wanted: HashSet<String> = snap
            .namespaces
            .iter()
            .flat_map(|n| {
                n.versions
                    .iter()
                    .map(|v| v.queue.clone())
                    .chain([n.dlq.clone()])
            })
            .collect();
        let paced = self
            .last
            .as_ref()
            .is_some_and(|l| l.at.elapsed() < l.took * PACE_FACTOR);
        if !paced {
            let keep = |q: &str| wanted.contains(q);
            let at = self.now_ms();
            let started = Instant::now();
            let scrape = prom.scrape(&keep, at).await;
            self.last_scrape_bytes = scrape.bytes;
            let members: Option<Vec<String>> = snap
                .nodes
                .as_ref()
                .map(|n| n.iter().map(|n| n.name.clone()).collect());
            self.judge(mgmt, &scrape, &prom, members.as_deref()).await?;
            self.tracker.observe(&scrape.reading, RATE_WINDOW_MS);
            self.last = Some(LastScrape {
                at: started,
                took: started.elapsed(),
                version: scrape.nodes.iter().find_map(|(_, n)| n.version.clone()),
                queues: scrape.reading.queues,
            });
        }
        let Some(last) = &self.last else {
            return Err("no reading".into());
        };
        if snap.server_version.is_none() {
            snap.server_version = last.version.clone();
        }
        for ns in &mut snap.namespaces {
            for v in &mut ns.versions {
                let q = last.queues.get(&v.queue);
                // A queue the endpoint does not list on any node that answered has no metrics
                // there yet (declared a moment ago, or its node is the one that failed).
                v.unacked = q.and_then(|q| q.unacked).or(v.unacked);
                if v.consumers.is_none() {
                    v.consumers = q.and_then(|q| q.consumers);
                }
                if v.ready.is_none() {
                    v.ready = q.and_then(|q| q.ready);
                }
                v.published_total = q.and_then(|q| q.raw_total(CounterKind::Published));
                match self.tracker.rates(&v.queue, RATE_WINDOW_MS, MIN_SPAN_MS) {
                    Some(r) if q.is_some() => {
                        v.rates = Some(Rates {
                            publish: r.publish,
                            deliver: r.deliver,
                            ack: r.ack,
                            redeliver: r.redeliver,
                        });
                        v.rejected_rate = Some(r.rejected);
                        v.error_rate = error_rate(r.ack, r.rejected);
                    }
                    _ => {
                        v.rates = None;
                        v.rejected_rate = None;
                        v.error_rate = None;
                    }
                }
            }
            ns.dlq_rate = self
                .tracker
                .rates(&ns.dlq, RATE_WINDOW_MS, MIN_SPAN_MS)
                .filter(|_| last.queues.contains_key(&ns.dlq))
                .map(|r| r.publish);
        }
        Ok(())
    }

    /// Is this scrape usable: some node answered with per-queue counters, and it is the
    /// profile's broker? Each answering node must be one of the management API's nodes
    /// (`members`, by its `rabbitmq_node` label); where either is unknown, its cluster name must
    /// be the management API's. The node names come first because a node that joined a cluster
    /// keeps reporting the cluster name it had before (seen on RabbitMQ 4.0.5: `c2@vm` on a node
    /// of cluster `c1@vm`).
    async fn judge(
        &mut self,
        mgmt: Option<&Mgmt>,
        scrape: &Scrape,
        prom: &Prometheus,
        members: Option<&[String]>,
    ) -> Result<(), String> {
        let Some((_, first)) = scrape.nodes.first() else {
            return Err(scrape
                .failed
                .first()
                .map(|(_, e)| e.to_string())
                .unwrap_or_else(|| format!("no endpoint answered ({})", prom.urls().join(", "))));
        };
        if !scrape.nodes.iter().any(|(_, n)| n.has_queue_counters()) {
            return Err(format!(
                "{} serves no per-queue counters (RabbitMQ {}: no detailed family queue_delivery_metrics)",
                prom.urls().join(", "),
                crate::text::sanitize(first.version.as_deref().unwrap_or("?"))
            ));
        }
        if let Some(members) = members.filter(|m| !m.is_empty())
            && scrape.nodes.iter().all(|(_, n)| n.node.is_some())
        {
            return match scrape
                .nodes
                .iter()
                .filter_map(|(_, n)| n.node.as_ref())
                .find(|n| !members.contains(n))
            {
                Some(stranger) => Err(format!(
                    "the endpoint is node `{}`, not one of this broker's nodes ({}) (set prometheus_url for this broker)",
                    crate::text::sanitize(stranger),
                    crate::text::sanitize(&members.join(", "))
                )),
                None => Ok(()),
            };
        }
        if self.cluster_name.is_none()
            && let Some(m) = mgmt
        {
            // Read once: an unanswered overview is asked again on the next judgement.
            if let Ok(o) = m.overview().await {
                self.cluster_name = Some(Some(o.cluster_name).filter(|c| !c.is_empty()));
            }
        }
        if let Some(Some(cluster)) = &self.cluster_name
            && let Some(other) = scrape
                .nodes
                .iter()
                .filter_map(|(_, n)| n.cluster.as_ref())
                .find(|c| *c != cluster)
        {
            return Err(format!(
                "the endpoint belongs to cluster `{}`, not to `{}` (set prometheus_url for this broker)",
                crate::text::sanitize(other),
                crate::text::sanitize(cluster)
            ));
        }
        Ok(())
    }
}

/// Does the management API's queue list carry statistics (the metrics collector is on)? A
/// namespace's version queues always have message counts then.
fn management_collects(snap: &FleetSnapshot) -> bool {
    snap.namespaces
        .iter()
        .flat_map(|n| n.versions.iter())
        .any(|v| v.rates.is_some())
        || snap.namespaces.iter().all(|n| n.versions.is_empty())
}

/// With the management API's statistics: rejected/s from its sampled counters (deliveries in
/// manual-ack mode − acks − redeliveries), and the error rate from it.
fn fill_management_error_rates(snap: &mut FleetSnapshot) {
    for v in snap
        .namespaces
        .iter_mut()
        .flat_map(|n| n.versions.iter_mut())
    {
        if let (Some(r), Some(rejected)) = (v.rates, v.rejected_rate) {
            v.error_rate = error_rate(r.ack, rejected);
        }
    }
}

/// Nothing known: no rates, no error rates (unknown is not 0/s).
fn clear_rates(snap: &mut FleetSnapshot) {
    for v in snap
        .namespaces
        .iter_mut()
        .flat_map(|n| n.versions.iter_mut())
    {
        v.rates = None;
        v.rejected_rate = None;
        v.error_rate = None;
    }
    for n in &mut snap.namespaces {
        n.dlq_rate = None;
    }
}

/// Readings of a few named queues' counters, for a caller that follows them over a window of its
/// own (the canary's analysis keeps a [`CounterTracker`] per step).
impl Metrics {
    /// One reading of `queues` from the profile's source: Prometheus when it can be used (the
    /// same judgement as [`Metrics::apply`]), else the management API's counter totals when it
    /// collects statistics. `Err`: no source has the counters (why). A queue missing from the
    /// reading has no counters there yet (unknown, not 0).
    pub async fn read_queues(
        &mut self,
        mgmt: Option<&Mgmt>,
        queues: &[String],
    ) -> Result<(MetricsSource, crate::model::metrics::Reading), String> {
        use crate::model::metrics::{QueueReading, Reading};
        let use_prometheus = match self.mode {
            MetricsMode::Management => false,
            _ => match &self.prometheus_down {
                Some((_, since)) if since.elapsed() < RETRY_AFTER => false,
                _ => self.prometheus.is_some(),
            },
        };
        let mut why_not = self.prometheus_down.as_ref().map(|d| d.0.clone());
        if use_prometheus && let Some(prom) = self.prometheus.clone() {
            let wanted: HashSet<&str> = queues.iter().map(String::as_str).collect();
            let keep = |q: &str| wanted.contains(q);
            let scrape = prom.scrape(&keep, self.now_ms()).await;
            self.last_scrape_bytes = scrape.bytes;
            let members: Option<Vec<String>> = match mgmt {
                Some(m) => m
                    .nodes()
                    .await
                    .ok()
                    .map(|ns| ns.iter().map(|n| n.name.clone()).collect()),
                None => None,
            };
            match self.judge(mgmt, &scrape, &prom, members.as_deref()).await {
                Ok(()) => {
                    self.prometheus_down = None;
                    return Ok((MetricsSource::Prometheus, scrape.reading));
                }
                Err(why) => {
                    self.prometheus_down = Some((why.clone(), Instant::now()));
                    why_not = Some(why);
                }
            }
        }
        if self.mode == MetricsMode::Prometheus {
            return Err(format!(
                "metrics = prometheus, and Prometheus cannot be used: {}",
                why_not.unwrap_or_else(|| "no endpoint".into())
            ));
        }
        let Some(m) = mgmt else {
            return Err("no metrics source: the management API client could not be built".into());
        };
        let mut reading = Reading {
            at_ms: self.now_ms(),
            nodes_answered: [0].into(),
            ..Default::default()
        };
        let mut stats_seen = false;
        for q in queues {
            let info = m.queue(q).await.map_err(|e| {
                format!(
                    "the management API did not answer: {}",
                    crate::text::sanitize(&e.to_string())
                )
            })?;
            let Some(info) = info else { continue };
            let Some(s) = info.message_stats else {
                continue;
            };
            stats_seen = true;
            reading.queues.insert(
                q.clone(),
                QueueReading {
                    ready: info.messages_ready,
                    unacked: info.messages_unacknowledged,
                    consumers: info.consumers,
                    series: vec![
                        (CounterKind::Published, 0, s.publish),
                        (
                            CounterKind::DeliveredAck,
                            0,
                            s.deliver.saturating_add(s.get),
                        ),
                        (CounterKind::Acked, 0, s.ack),
                        (CounterKind::Redelivered, 0, s.redeliver),
                    ],
                },
            );
        }
        if !stats_seen
            && self.stats_disabled.is_none()
            && let Ok(o) = m.overview().await
        {
            self.stats_disabled = Some(o.disable_stats);
        }
        if self.stats_disabled == Some(true) {
            return Err(format!(
                "no metrics source: the management API collects no statistics{}",
                why_not
                    .map(|w| format!(", and Prometheus: {w}"))
                    .unwrap_or_default()
            ));
        }
        Ok((MetricsSource::Management, reading))
    }
}
