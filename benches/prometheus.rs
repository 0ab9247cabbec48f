//! The Prometheus text of `/metrics/detailed` (the families hopback asks for, shaped exactly as
//! RabbitMQ 4.0.5 writes them) at 1,000 / 10,000 / 100,000 queues, read in the same run by
//! hopback's streaming scanner (`broker::prometheus::Scanner`) and by the maintained parser crate
//! `prometheus-parse` (then filtered to the same queues). Prints ms per scrape and the ratio;
//! `--smoke`: 1,000 queues only. `--queues N` adds a size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::Instant;

use hopback::broker::prometheus::Scanner;

/// The text a node with `n` queues (5 per namespace) answers, with `published` in the counters.
fn scrape_text(n: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(n * 1200);
    let q = |i: usize| {
        format!(
            "ns-{:05}.{}",
            i / 5,
            ["v1", "v2", "dlq", "unrouted", "parked"][i % 5]
        )
    };
    let gauges = [
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_process_reductions_total",
        "rabbitmq_detailed_queue_consumers",
    ];
    for g in gauges {
        let _ = writeln!(s, "# TYPE {g} gauge\n# HELP {g} help text");
        for i in 0..n {
            let _ = writeln!(s, "{g}{{vhost=\"/\",queue=\"{}\"}} {}", q(i), i * 7 % 1000);
        }
    }
    let counters = [
        "rabbitmq_detailed_queue_get_ack_total",
        "rabbitmq_detailed_queue_get_total",
        "rabbitmq_detailed_queue_messages_delivered_ack_total",
        "rabbitmq_detailed_queue_messages_delivered_total",
        "rabbitmq_detailed_queue_messages_redelivered_total",
        "rabbitmq_detailed_queue_messages_acked_total",
        "rabbitmq_detailed_queue_get_empty_total",
    ];
    for c in counters {
        let _ = writeln!(s, "# TYPE {c} counter\n# HELP {c} help text");
        for i in 0..n {
            let _ = writeln!(
                s,
                "{c}{{vhost=\"/\",queue=\"{}\"}} {}",
                q(i),
                i * 1_000_003 % 9_999_999
            );
        }
    }
    let p = "rabbitmq_detailed_queue_exchange_messages_published_total";
    let _ = writeln!(s, "# TYPE {p} counter\n# HELP {p} help text");
    for i in 0..n {
        let _ = writeln!(
            s,
            "{p}{{vhost=\"/\",exchange=\"ns-{:05}\",queue=\"{}\"}} {}",
            i / 5,
            q(i),
            i * 31
        );
    }
    s.push_str("# TYPE rabbitmq_build_info untyped\nrabbitmq_build_info{rabbitmq_version=\"4.0.5\",prometheus_plugin_version=\"4.0.5\",prometheus_client_version=\"4.11.0\",erlang_version=\"27.3.4.1\"} 1\n");
    s
}

/// The best of `runs` timings of `f`, in ms, and its last result.
fn best_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        out = Some(r);
    }
    (best, out.unwrap())
}

fn main() {
    let mut sizes = if common::is_smoke() {
        vec![1_000]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    if let Some(n) = common::arg::<usize>("--queues") {
        sizes.push(n);
    }
    for n in sizes {
        let text = scrape_text(n);
        let mb = text.len() as f64 / 1e6;
        // On screen: 20 namespaces (their 5 queues); and everything.
        let on_screen: HashSet<String> = (0..100)
            .map(|i| {
                format!(
                    "ns-{:05}.{}",
                    i / 5,
                    ["v1", "v2", "dlq", "unrouted", "parked"][i % 5]
                )
            })
            .collect();
        let runs = if n >= 100_000 { 3 } else { 10 };
        let scan = |wanted: &(dyn Fn(&str) -> bool + Sync)| {
            let mut s = Scanner::new(0, wanted);
            // As the HTTP body arrives: 64 KiB chunks.
            for c in text.as_bytes().chunks(64 * 1024) {
                s.feed(c);
            }
            s.finish().0.len()
        };
        let keep_screen = |q: &str| on_screen.contains(q);
        let (scan_screen_ms, kept) = best_ms(runs, || scan(&keep_screen));
        assert_eq!(kept, 100);
        let (scan_all_ms, kept_all) = best_ms(runs, || scan(&|_: &str| true));
        assert_eq!(kept_all, n);
        let (crate_ms, crate_kept) = best_ms(runs, || {
            let lines = text.lines().map(|l| Ok(l.to_string()));
            let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
            scrape
                .samples
                .iter()
                .filter(|s| s.labels.get("queue").is_some_and(|q| on_screen.contains(q)))
                .count()
        });
        assert_eq!(crate_kept, 100 * 13);
        let label = format!("{n} queues");
        for (what, ms) in [
            ("scanner, 20 namespaces kept", scan_screen_ms),
            ("scanner, every queue kept", scan_all_ms),
        ] {
            let fig = format!("Prometheus text {label}: {what}");
            common::emit(&common::Figure {
                figure: &fig,
                measured: ms,
                unit: "ms",
                target: "≤ 1.0× prometheus-parse",
                baseline: Some((crate_ms, "prometheus-parse (same text, same run)")),
                ratio: Some(ms / crate_ms),
                pass: Some(ms <= crate_ms),
                note: format!("{mb:.1} MB of text, best of {runs}"),
            });
        }
        eprintln!(
            "{label} ({mb:.1} MB): scanner {scan_screen_ms:.1} ms (20 ns kept) / {scan_all_ms:.1} ms (all kept), prometheus-parse {crate_ms:.1} ms"
        );
    }
}
