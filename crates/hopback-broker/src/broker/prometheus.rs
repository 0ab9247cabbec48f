//! The `rabbitmq_prometheus` endpoint: per-queue gauges and exact counters of one vhost
//! (`GET /metrics/detailed?vhost=V&family=…`), on every node of the profile, read as a stream.
//!
//! A node serves only what it hosts (the queues it leads, the channels connected to it), so a
//! cluster is read on every node and the series are told apart by node ([`series_id`]); a node
//! that does not answer leaves its series missing for that reading, which the counter tracker
//! treats as a gap, not a reset. The endpoint filters by vhost and metric family but not by
//! queue: the body is scanned line by line as it arrives and only the queues asked for are
//! kept, so a vhost of 100,000 queues never sits in memory as text.
//!
//! The text format is scanned by hand ([`Scanner`]): the maintained parser crate
//! (`prometheus-parse`) builds a `String` and a value per line and was 5–9× slower on the same
//! text (docs/performance.md, "Prometheus text").

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Profile;
use crate::model::metrics::{CounterKind, QueueReading, Reading, series_id};

/// Timeout of one scrape (a vhost of 100,000 queues takes seconds to render on the broker).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// The metric families hopback asks for: ready/unacked, consumers, deliveries and acks, and
/// publishes per exchange — everything the console needs, nothing else.
pub const FAMILIES: [&str; 4] = [
    "queue_coarse_metrics",
    "queue_consumer_count",
    "queue_delivery_metrics",
    "queue_exchange_metrics",
];

/// The metric whose family declaration tells that the node has per-queue delivery counters
/// (RabbitMQ 3.10's endpoint has none).
pub const DELIVERY_COUNTER: &str = "rabbitmq_detailed_queue_messages_acked_total";

/// Prometheus endpoint errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrometheusError {
    /// Nothing answers (plugin not enabled, wrong URL, node down).
    #[error("Prometheus endpoint at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// An HTTP status other than 200.
    #[error("Prometheus endpoint at {url} answered {status}")]
    Status { url: String, status: u16 },
    /// Timed out.
    #[error("Prometheus endpoint at {url} timed out")]
    Timeout { url: String },
    /// Not the text format.
    #[error("Prometheus endpoint at {url}: {detail}")]
    Decode { url: String, detail: String },
}

/// What one node's answer said besides the queues.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    /// `rabbitmq_build_info{rabbitmq_version}`.
    pub version: Option<String>,
    /// `rabbitmq_identity_info{rabbitmq_cluster}`.
    pub cluster: Option<String>,
    /// `rabbitmq_identity_info{rabbitmq_node}`.
    pub node: Option<String>,
    /// Metric names declared by `# TYPE` lines (a family the node has declares its metrics even
    /// when no queue matches).
    pub declared: BTreeSet<String>,
}

impl NodeInfo {
    /// Does the node serve per-queue delivery counters?
    pub fn has_queue_counters(&self) -> bool {
        self.declared.contains(DELIVERY_COUNTER)
    }
}

/// A reading of every node, merged.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The queues asked for, as the nodes that answered report them.
    pub reading: Reading,
    /// Per node that answered (by index), what else it said.
    pub nodes: Vec<(u16, NodeInfo)>,
    /// Per node that did not, why.
    pub failed: Vec<(u16, PrometheusError)>,
    /// Bytes of text read (all nodes).
    pub bytes: u64,
}

/// A client for the Prometheus endpoints of a profile's nodes.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    bases: Arc<Vec<url::Url>>,
    vhost: String,
    /// Requests sent by this client and its clones.
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("bases", &self.bases)
            .finish()
    }
}

/// The HTTP client settings of the Prometheus link: the one trust and identity configuration
/// of every link (`broker::tls`), with this link's timeouts.
pub fn http_builder(profile: &Profile) -> Result<reqwest::ClientBuilder, PrometheusError> {
    let b =
        crate::broker::tls::http_client_builder(profile).map_err(|e| PrometheusError::Decode {
            url: "(TLS configuration)".to_string(),
            detail: e.to_string(),
        })?;
    Ok(b.connect_timeout(Duration::from_secs(3)).gzip(true))
}

impl Prometheus {
    /// A client for the profile's Prometheus endpoints (`prometheus_urls`).
    pub fn new(profile: &Profile) -> Result<Self, PrometheusError> {
        Self::with_builder(profile, http_builder(profile)?)
    }

    /// A client built from `builder` (the one place TLS trust is configured hands it in).
    pub fn with_builder(
        profile: &Profile,
        builder: reqwest::ClientBuilder,
    ) -> Result<Self, PrometheusError> {
        let http =
            builder
                .timeout(SCRAPE_TIMEOUT)
                .build()
                .map_err(|e| PrometheusError::Unreachable {
                    url: profile
                        .prometheus_urls
                        .first()
                        .map(|u| u.to_string())
                        .unwrap_or_default(),
                    detail: e.to_string(),
                })?;
        Ok(Self {
            http,
            bases: Arc::new(profile.prometheus_urls.clone()),
            vhost: profile.vhost.clone(),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The endpoints, in the profile's order (no credentials: the endpoint has none).
    pub fn urls(&self) -> Vec<String> {
        self.bases.iter().map(|u| u.to_string()).collect()
    }

    /// How many HTTP requests this client (and its clones) has sent.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The detailed URL of node `i` for the profile's vhost and [`FAMILIES`].
    pub fn detailed_url(&self, i: usize) -> Option<url::Url> {
        let mut u = self.bases.get(i)?.clone();
        u.set_path(&format!(
            "{}/metrics/detailed",
            u.path().trim_end_matches('/')
        ));
        {
            let mut q = u.query_pairs_mut();
            q.clear();
            q.append_pair("vhost", &self.vhost);
            for f in FAMILIES {
                q.append_pair("family", f);
            }
        }
        Some(u)
    }

    /// Read every node at once and keep the queues `wanted` accepts (`at_ms`: hopback's clock).
    pub async fn scrape(&self, wanted: &(dyn Fn(&str) -> bool + Sync), at_ms: i64) -> Scrape {
        let results =
            futures::future::join_all((0..self.bases.len()).map(|i| self.scrape_node(i, wanted)))
                .await;
        let mut out = Scrape {
            reading: Reading {
                at_ms,
                ..Default::default()
            },
            ..Default::default()
        };
        for (i, r) in results.into_iter().enumerate() {
            let node = u16::try_from(i).unwrap_or(u16::MAX);
            match r {
                Ok((queues, info, bytes)) => {
                    out.bytes += bytes;
                    out.reading.nodes_answered.insert(node);
                    for (name, q) in queues {
                        merge(out.reading.queues.entry(name).or_default(), q);
                    }
                    out.nodes.push((node, info));
                }
                Err(e) => out.failed.push((node, e)),
            }
        }
        out
    }

    async fn scrape_node(
        &self,
        i: usize,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(HashMap<String, QueueReading>, NodeInfo, u64), PrometheusError> {
        let Some(url) = self.detailed_url(i) else {
            return Err(PrometheusError::Unreachable {
                url: String::new(),
                detail: "no such node".into(),
            });
        };
        let shown = self.bases[i].to_string();
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                PrometheusError::Timeout { url: shown.clone() }
            } else {
                PrometheusError::Unreachable {
                    url: shown.clone(),
                    detail: e.without_url().to_string(),
                }
            }
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut resp = self.http.get(url).send().await.map_err(fail)?;
        if resp.status().as_u16() != 200 {
            return Err(PrometheusError::Status {
                url: shown,
                status: resp.status().as_u16(),
            });
        }
        let node = u16::try_from(i).unwrap_or(u16::MAX);
        let mut scanner = Scanner::new(node, wanted);
        let mut bytes = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(fail)? {
            bytes += chunk.len() as u64;
            scanner.feed(&chunk);
        }
        let (queues, info) = scanner.finish();
        if info.version.is_none() && info.declared.is_empty() {
            return Err(PrometheusError::Decode {
                url: shown,
                detail: "the answer is not RabbitMQ's Prometheus text (no rabbitmq_build_info)"
                    .into(),
            });
        }
        Ok((queues, info, bytes))
    }
}

/// Merge the series and gauges of one node into the queue's reading (gauges: the node that
/// hosts the queue is the one that reports them).
fn merge(into: &mut QueueReading, from: QueueReading) {
    into.ready = into.ready.or(from.ready);
    into.unacked = into.unacked.or(from.unacked);
    into.consumers = into.consumers.or(from.consumers);
    into.series.extend(from.series);
}

/// What a metric name means to hopback.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Meaning {
    Ready,
    Unacked,
    Consumers,
    Counter(CounterKind),
}

fn meaning(name: &[u8]) -> Option<Meaning> {
    let rest = name.strip_prefix(b"rabbitmq_detailed_queue_")?;
    Some(match rest {
        b"messages_ready" => Meaning::Ready,
        b"messages_unacked" => Meaning::Unacked,
        b"consumers" => Meaning::Consumers,
        b"messages_delivered_ack_total" | b"get_ack_total" => {
            Meaning::Counter(CounterKind::DeliveredAck)
        }
        b"messages_delivered_total" | b"get_total" => Meaning::Counter(CounterKind::DeliveredAuto),
        b"messages_acked_total" => Meaning::Counter(CounterKind::Acked),
        b"messages_redelivered_total" => Meaning::Counter(CounterKind::Redelivered),
        b"exchange_messages_published_total" => Meaning::Counter(CounterKind::Published),
        _ => return None,
    })
}

/// A streaming scanner of the Prometheus text format (version 0.0.4) for RabbitMQ's detailed
/// queue metrics: feed it bytes as they arrive, then [`Scanner::finish`].
pub struct Scanner<'a> {
    node: u16,
    wanted: &'a (dyn Fn(&str) -> bool + Sync),
    partial: Vec<u8>,
    queues: HashMap<String, QueueReading>,
    info: NodeInfo,
    /// Lines that could not be read (kept count of, never fatal).
    pub bad_lines: u64,
}

impl<'a> Scanner<'a> {
    /// A scanner for node `node` keeping the queues `wanted` accepts.
    pub fn new(node: u16, wanted: &'a (dyn Fn(&str) -> bool + Sync)) -> Self {
        Self {
            node,
            wanted,
            partial: Vec::new(),
            queues: HashMap::new(),
            info: NodeInfo::default(),
            bad_lines: 0,
        }
    }

    /// Scan the next bytes of the answer.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if !self.partial.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&bytes[..nl]);
                    self.line(&line);
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    self.partial.extend_from_slice(bytes);
                    return;
                }
            }
        }
        let mut start = 0;
        for nl in memchr_iter(bytes) {
            self.line(&bytes[start..nl]);
            start = nl + 1;
        }
        self.partial.extend_from_slice(&bytes[start..]);
    }

    /// The queues kept and what the node said about itself.
    pub fn finish(mut self) -> (HashMap<String, QueueReading>, NodeInfo) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        (self.queues, self.info)
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        if let Some(decl) = line.strip_prefix(b"# TYPE ") {
            if let Some(name) = decl.split(|b| *b == b' ').next()
                && let Ok(name) = std::str::from_utf8(name)
            {
                self.info.declared.insert(name.to_string());
            }
            return;
        }
        if line[0] == b'#' {
            return;
        }
        let name_end = line
            .iter()
            .position(|b| *b == b'{' || *b == b' ')
            .unwrap_or(line.len());
        let name = &line[..name_end];
        let meaning = meaning(name);
        let identity = name == b"rabbitmq_build_info" || name == b"rabbitmq_identity_info";
        if meaning.is_none() && !identity {
            return;
        }
        let Some((labels, value)) = split_labels(&line[name_end..]) else {
            self.bad_lines += 1;
            return;
        };
        if identity {
            for (k, v) in LabelIter::new(labels) {
                let v = Some(v.into_owned());
                match k {
                    b"rabbitmq_version" => self.info.version = v,
                    b"rabbitmq_cluster" => self.info.cluster = v,
                    b"rabbitmq_node" => self.info.node = v,
                    _ => {}
                }
            }
            return;
        }
        let Some(meaning) = meaning else { return };
        let Some(value) = parse_value(value) else {
            self.bad_lines += 1;
            return;
        };
        // The queue label, and a hash of every other label (the series within the queue).
        let mut queue = None;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        for (k, v) in LabelIter::new(labels) {
            match k {
                b"queue" => queue = Some(v),
                b"vhost" => {}
                _ => {
                    k.hash(&mut h);
                    v.hash(&mut h);
                }
            }
        }
        let Some(queue) = queue else {
            self.bad_lines += 1;
            return;
        };
        if !(self.wanted)(&queue) {
            return;
        }
        let q = match self.queues.get_mut(queue.as_ref()) {
            Some(q) => q,
            None => self.queues.entry(queue.into_owned()).or_default(),
        };
        match meaning {
            Meaning::Ready => q.ready = Some(value),
            Meaning::Unacked => q.unacked = Some(value),
            Meaning::Consumers => q.consumers = Some(value),
            Meaning::Counter(kind) => {
                q.series
                    .push((kind, series_id(self.node, h.finish()), value))
            }
        }
    }
}

/// Positions of `\n` in `bytes`.
fn memchr_iter(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

/// `{labels} value [ts]` or ` value [ts]` → (the labels' inside, the value text).
fn split_labels(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (labels, after) = if rest.first() == Some(&b'{') {
        // Find the closing brace outside quotes.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = None;
        for (i, b) in rest.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if in_quotes => escaped = true,
                b'"' => in_quotes = !in_quotes,
                b'}' if !in_quotes => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        (&rest[1..end], &rest[end + 1..])
    } else {
        (&rest[..0], rest)
    };
    let value = after
        .split(|b| *b == b' ' || *b == b'\t')
        .find(|t| !t.is_empty())?;
    Some((labels, value))
}

/// A counter or gauge value: a non-negative integer (or a float the format allows, rounded
/// down); `None` for NaN, infinities, negatives and text.
fn parse_value(v: &[u8]) -> Option<u64> {
    if v.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(v).ok()?.parse().ok();
    }
    let f: f64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

/// `k="v",k2="v2"` → `(k, unescaped v)` pairs; stops at the first malformed pair.
struct LabelIter<'b> {
    rest: &'b [u8],
}

impl<'b> LabelIter<'b> {
    fn new(labels: &'b [u8]) -> Self {
        Self { rest: labels }
    }
}

impl<'b> Iterator for LabelIter<'b> {
    type Item = (&'b [u8], std::borrow::Cow<'b, str>);
    fn next(&mut self) -> Option<Self::Item> {
        let r = self.rest.strip_prefix(b",").unwrap_or(self.rest);
        let r = r.strip_prefix(b" ").unwrap_or(r);
        let eq = r.iter().position(|b| *b == b'=')?;
        let key = &r[..eq];
        let after = r[eq + 1..].strip_prefix(b"\"")?;
        // The value ends at the first unescaped quote.
        let mut end = None;
        let mut escaped = false;
        let mut has_escape = false;
        for (i, b) in after.iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' => {
                    escaped = true;
                    has_escape = true;
                }
                b'"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        let raw = &after[..end];
        self.rest = &after[end + 1..];
        let value = if has_escape {
            let mut out = Vec::with_capacity(raw.len());
            let mut it = raw.iter();
            while let Some(&b) = it.next() {
                if b == b'\\' {
                    match it.next() {
                        Some(b'n') => out.push(b'\n'),
                        Some(&o) => out.push(o),
                        None => out.push(b'\\'),
                    }
                } else {
                    out.push(b);
                }
            }
            std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
        } else {
            String::from_utf8_lossy(raw)
        };
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# TYPE rabbitmq_detailed_queue_messages_ready gauge
# HELP rabbitmq_detailed_queue_messages_ready Messages ready to be delivered to consumers
rabbitmq_detailed_queue_messages_ready{vhost="/",queue="ns.v2"} 7
rabbitmq_detailed_queue_messages_unacked{vhost="/",queue="ns.v2"} 3
rabbitmq_detailed_queue_consumers{vhost="/",queue="ns.v2"} 2
# TYPE rabbitmq_detailed_queue_messages_acked_total counter
rabbitmq_detailed_queue_messages_delivered_ack_total{vhost="/",queue="ns.v2"} 1477
rabbitmq_detailed_queue_get_ack_total{vhost="/",queue="ns.v2"} 3
rabbitmq_detailed_queue_messages_acked_total{vhost="/",queue="ns.v2"} 1023
rabbitmq_detailed_queue_messages_redelivered_total{vhost="/",queue="ns.v2"} 0
rabbitmq_detailed_queue_exchange_messages_published_total{vhost="/",exchange="ns",queue="ns.v2"} 1500
rabbitmq_detailed_queue_exchange_messages_published_total{vhost="/",exchange="",queue="ns.v2"} 2
rabbitmq_detailed_queue_messages_ready{vhost="/",queue="other"} 1
rabbitmq_detailed_queue_messages_ready{vhost="/",queue="we\"ird\\q\nx"} 5
rabbitmq_build_info{rabbitmq_version="4.0.5",prometheus_plugin_version="4.0.5"} 1
rabbitmq_identity_info{rabbitmq_node="rabbit@h",rabbitmq_cluster="c1"} 1
"#;

    fn scan(
        text: &str,
        chunk: usize,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> (HashMap<String, QueueReading>, NodeInfo) {
        let mut s = Scanner::new(0, wanted);
        for c in text.as_bytes().chunks(chunk) {
            s.feed(c);
        }
        assert_eq!(s.bad_lines, 0);
        s.finish()
    }

    #[test]
    fn reads_the_detailed_families_in_any_chunking() {
        let all = |_: &str| true;
        let whole = scan(SAMPLE, SAMPLE.len(), &all);
        for chunk in [1, 2, 7, 64] {
            assert_eq!(scan(SAMPLE, chunk, &all), whole, "chunk {chunk}");
        }
        let (q, info) = whole;
        let v2 = &q["ns.v2"];
        assert_eq!(
            (v2.ready, v2.unacked, v2.consumers),
            (Some(7), Some(3), Some(2))
        );
        assert_eq!(v2.raw_total(CounterKind::DeliveredAck), Some(1480));
        assert_eq!(v2.raw_total(CounterKind::Acked), Some(1023));
        assert_eq!(v2.raw_total(CounterKind::Published), Some(1502));
        assert_eq!(v2.raw_total(CounterKind::DeliveredAuto), None);
        // Two published series (one per exchange), told apart.
        let ids: BTreeSet<u64> = v2
            .series
            .iter()
            .filter(|s| s.0 == CounterKind::Published)
            .map(|s| s.1)
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(
            q["we\"ird\\q\nx"].ready,
            Some(5),
            "escapes in a label value"
        );
        assert_eq!(info.version.as_deref(), Some("4.0.5"));
        assert_eq!(info.cluster.as_deref(), Some("c1"));
        assert!(info.has_queue_counters());
    }

    #[test]
    fn keeps_only_the_queues_asked_for_and_survives_garbage() {
        let only = |q: &str| q == "ns.v2";
        let (q, _) = scan(SAMPLE, 5, &only);
        assert_eq!(q.len(), 1);
        let mut s = Scanner::new(0, &only);
        s.feed(b"rabbitmq_detailed_queue_messages_ready{queue=\"ns.v2\" 1\nrabbitmq_detailed_queue_messages_ready{queue=\"ns.v2\"} NaN\nrabbitmq_detailed_queue_messages_ready{queue=\"ns.v2\"} -1\n\x1b[2J\n");
        assert_eq!(s.bad_lines, 3);
        let (q, info) = s.finish();
        assert!(q.is_empty());
        assert!(!info.has_queue_counters());
    }
}
