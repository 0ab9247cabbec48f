//! DLQ browse on a deep queue: the first page (50 messages) of a classic durable queue
//! (`bench-browse-…`, small persistent messages with an `x-death` header like real dead letters)
//! through `broker::browse::browse_page` — the code path of `hopback dlq list` and the console's
//! dead-letters view — at 10,000 and at 1,000,000 messages (smoke: 10,000 and 100,000). Each
//! measurement runs in a fresh child process, so its peak RSS (`VmHWM`) is the browser's own:
//! bounded memory means RSS(large) / RSS(10k) ≈ 1. Target: first page < 300 ms at the large size.
//!
//! Baseline, same run: the management UI's "Get messages" for the same page
//! (`POST /api/queues/{vhost}/{q}/get`, `ackmode=ack_requeue_true`).
//! With `HOPBACK_RELIABILITY_OUT` set, the RSS figures are appended there as `{"kind":"figure"}`.
//!
//! `cargo bench --bench browse -- [--large N] [--smoke]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Figure, emit, quantile};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PAGE: u64 = 50;

fn x_death(queue: &str) -> FieldTable {
    let mut death = FieldTable::default();
    death.insert(
        "queue".into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
    death.insert(
        "reason".into(),
        AMQPValue::LongString(LongString::from("rejected")),
    );
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    let mut h = FieldTable::default();
    h.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    h
}

/// Publish until the queue holds `n` messages (confirms in windows of 5,000).
async fn fill_to(
    session: &hopback::broker::session::Session,
    q: &str,
    have: u64,
    n: u64,
) -> Res<()> {
    let ch = session.confirm_channel().await?;
    let headers = x_death("bench.v2");
    let body = br#"{"task":"bench","payload":"0123456789abcdef0123456789abcdef"}"#;
    let mut sent = have;
    while sent < n {
        let batch = (n - sent).min(5000);
        let mut confirms = Vec::with_capacity(batch as usize);
        for i in 0..batch {
            let p = lapin::BasicProperties::default()
                .with_message_id(format!("b-{}", sent + i).into())
                .with_delivery_mode(2)
                .with_headers(headers.clone());
            confirms.push(
                ch.basic_publish("".into(), q.into(), Default::default(), body, p)
                    .await?,
            );
        }
        for c in confirms {
            c.await?;
        }
        sent += batch;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// Child: browse the first page `reps` times; print `{"ms":[…],"hwm_kb":…,"n":…}`.
async fn child(q: &str, reps: usize) -> Res<()> {
    let cfg = common::config(None)?;
    let session = hopback::broker::session::connect(&cfg.profile, "bench browse", "bench").await?;
    let mut ms = Vec::new();
    let mut n = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let page = hopback::broker::browse::browse_page(&session, q, 0, PAGE, false, false).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        n = page.len();
    }
    session.close().await;
    println!(
        "{}",
        serde_json::json!({"ms": ms, "hwm_kb": common::status_kb("self", "VmHWM:"), "n": n})
    );
    Ok(())
}

struct Measured {
    first_page_ms: f64,
    rss_mb: f64,
}

async fn measure(q: &str) -> Res<Measured> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args(["--child", q, "5"])
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "browse child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .as_bytes(),
    )?;
    if v["n"].as_u64() != Some(PAGE) {
        return Err(format!("browse returned {} messages, expected {PAGE}", v["n"]).into());
    }
    let ms: Vec<f64> = v["ms"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    Ok(Measured {
        // The first browse of a fresh process (connect excluded) is what a user waits for; the
        // median of the repeats is printed too.
        first_page_ms: ms.first().copied().unwrap_or(f64::NAN),
        rss_mb: v["hwm_kb"].as_f64().unwrap_or(0.0) / 1024.0,
    })
    .inspect(|m| {
        println!(
            "    first page {:.1} ms (median of {} browses {:.1} ms) · peak RSS {:.1} MB",
            m.first_page_ms,
            ms.len(),
            quantile(&ms, 0.5),
            m.rss_mb
        )
    })
}

/// The management UI's "Get messages" for one page, median of 3.
async fn ui_get(vhost: &str, q: &str) -> Res<f64> {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let path = format!("/api/queues/{}/{}/get", enc(vhost), enc(q));
    let mut ms = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (s, body) = common::mgmt_raw(
            reqwest::Method::POST,
            &path,
            Some(serde_json::json!({"count": PAGE, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000})),
        )
        .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if s != 200 || v.as_array().map(|a| a.len() as u64) != Some(PAGE) {
            return Err(format!("UI get: HTTP {s}").into());
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(quantile(&ms, 0.5))
}

async fn run(large: u64) -> Res<()> {
    let cfg = common::config(None)?;
    let session =
        hopback::broker::session::connect(&cfg.profile, "bench browse setup", "bench").await?;
    let q = format!(
        "bench-browse-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ch = session.channel().await?;
    ch.queue_declare(
        q.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let r = async {
        let mut rows = Vec::new();
        let mut have = 0;
        for n in [10_000u64, large] {
            let t = Instant::now();
            fill_to(&session, &q, have, n).await?;
            have = n;
            // Wait until the broker reports them all ready.
            let limit = Instant::now() + Duration::from_secs(120);
            while session
                .passive_queue(&q)
                .await?
                .map(|c| u64::from(c.ready))
                .unwrap_or(0)
                < n
            {
                if Instant::now() > limit {
                    return Err("the queue never reached its depth".into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!(
                "  {n} messages in `{q}` (filled in {:.1} s)",
                t.elapsed().as_secs_f64()
            );
            let m = measure(&q).await?;
            let ui = ui_get(&cfg.profile.vhost, &q).await?;
            println!("    baseline UI \"Get messages\" ({PAGE}): {ui:.1} ms");
            rows.push((n, m, ui));
        }
        Ok::<_, Box<dyn std::error::Error>>(rows)
    }
    .await;
    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    session.close().await;
    let rows = r?;
    let (small, big) = (&rows[0], &rows[1]);
    let rss_ratio = big.1.rss_mb / small.1.rss_mb.max(1e-9);
    let label = |n: u64| {
        if n >= 1_000_000 {
            format!("{}M", n / 1_000_000)
        } else {
            format!("{}k", n / 1000)
        }
    };
    for (n, m, ui) in &rows {
        emit(&Figure {
            figure: &format!("DLQ browse first page, {} messages", label(*n)),
            measured: m.first_page_ms,
            unit: "ms",
            target: "< 300 ms",
            baseline: Some((*ui, "UI Get messages, same page")),
            ratio: Some(m.first_page_ms / ui.max(1e-9)),
            pass: Some(m.first_page_ms < 300.0),
            note: String::new(),
        });
    }
    emit(&Figure {
        figure: &format!("DLQ browse peak RSS, {} messages", label(big.0)),
        measured: big.1.rss_mb,
        unit: "MB",
        target: "bounded: ≈ RSS at 10k",
        baseline: Some((small.1.rss_mb, "same browse at 10k")),
        ratio: Some(rss_ratio),
        pass: Some(rss_ratio < 1.25),
        note: format!("page of {PAGE}, fresh process per size"),
    });
    for (n, m, _) in &rows {
        common::record_figure(
            &format!(
                "peak RSS browsing the first page of a {}-message DLQ",
                label(*n)
            ),
            (m.rss_mb * 10.0).round() / 10.0,
            "MB",
            &format!(
                "scripts/bench (benches/browse.rs); RSS ratio {}/10k = {rss_ratio:.2}",
                label(big.0)
            ),
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--child") {
        let q = args.get(2).cloned().unwrap_or_default();
        let reps = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
        return rt.block_on(child(&q, reps));
    }
    let large: u64 = common::arg("--large").unwrap_or(if common::is_smoke() {
        100_000
    } else {
        1_000_000
    });
    println!("== DLQ browse: first page of {PAGE} at 10k and {large} messages");
    rt.block_on(run(large))
}
