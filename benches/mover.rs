//! `cargo bench --bench mover` (`scripts/bench`): hopback's mover against RabbitMQ's own dynamic shovel (`ack-mode=on-confirm`),
//! on the same broker, in the same run, over the same messages (N × 1 KiB persistent, durable
//! classic queues). Prints both rates and the ratio; the shovel is the baseline (ratio ≥ 1.0 means
//! hopback moves at least as fast). Run it through `scripts/bench` (release build).
//!
//! Usage: `cargo bench --bench mover -- [--messages N] [--runs R] [--prefetch P] [--confirm-window W]
//! [--one-connection] [--settle-ms MS] [--smoke]`
//! Broker: `HOPBACK_URL` or amqp://guest:guest@127.0.0.1:5672/%2f, management API on :15672.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hopback::broker::mgmt::Mgmt;
use hopback::broker::mover::{self, MoveControl, MoveSpec, StopReason};
use hopback::broker::session::{Session, connect};
use hopback::config::{self, Overrides, Profile};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;

struct Args {
    messages: u64,
    runs: usize,
    prefetch: u16,
    confirm_window: usize,
    one_connection: bool,
    /// Pause between filling the source and starting the move.
    settle: Duration,
    /// Run only one side (profiling): "hopback" or "shovel".
    side: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        messages: 100_000,
        runs: 6,
        prefetch: mover::DEFAULT_PREFETCH,
        confirm_window: mover::DEFAULT_CONFIRM_WINDOW,
        one_connection: false,
        settle: Duration::from_secs(3),
        side: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--messages" => a.messages = val()?.parse().map_err(|e| format!("{e}"))?,
            "--runs" => a.runs = val()?.parse().map_err(|e| format!("{e}"))?,
            "--prefetch" => a.prefetch = val()?.parse().map_err(|e| format!("{e}"))?,
            "--confirm-window" => a.confirm_window = val()?.parse().map_err(|e| format!("{e}"))?,
            "--one-connection" => a.one_connection = true,
            "--settle-ms" => {
                a.settle = Duration::from_millis(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--side" => a.side = Some(val()?),
            "--bench" => {} // added by `cargo bench`
            "--smoke" => {
                a.messages = 5_000;
                a.runs = 1;
                a.settle = Duration::from_millis(200);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn profile() -> Result<Profile, String> {
    let over = Overrides {
        url: Some(std::env::var("HOPBACK_URL").unwrap_or_else(|_| config::DEFAULT_URL.into())),
        ..Default::default()
    };
    config::resolve(
        config::raw::RawConfig::default(),
        &std::path::PathBuf::from("/nonexistent/hopback-bench.toml"),
        false,
        &over,
    )
    .map(|c| c.profile)
    .map_err(|f| f.message)
}

async fn declare(s: &Session, q: &str) -> Result<(), String> {
    let ch = s.channel().await.map_err(|e| e.to_string())?;
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    ch.queue_purge(q.into(), QueuePurgeOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

async fn fill(s: &Session, q: &str, n: u64) -> Result<(), String> {
    let ch = s.confirm_channel().await.map_err(|e| e.to_string())?;
    let body = vec![b'x'; 1024];
    let mut sent = 0u64;
    while sent < n {
        let batch = (n - sent).min(2000);
        let mut confirms = Vec::with_capacity(batch as usize);
        for i in 0..batch {
            let p = BasicProperties::default()
                .with_message_id(format!("bench-{}", sent + i).into())
                .with_delivery_mode(2);
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    q.into(),
                    BasicPublishOptions::default(),
                    &body,
                    p,
                )
                .await
                .map_err(|e| e.to_string())?,
            );
        }
        for c in confirms {
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .map_err(|_| "confirm timeout".to_string())?
                .map_err(|e| e.to_string())?;
        }
        sent += batch;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

async fn wait_depth(s: &Session, q: &str, n: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let d = s
            .passive_queue(q)
            .await
            .map_err(|e| e.to_string())?
            .map(|c| u64::from(c.ready))
            .unwrap_or(0);
        if d >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{q}: depth {d} after {limit:?}, expected {n}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn hopback_run(p: &Profile, a: &Args, src: &str, dst: &str) -> Result<f64, String> {
    let mut spec = MoveSpec::drain(&hopback::topology::Namespace::convention("bench"), src, dst);
    spec.limit = Some(a.messages);
    spec.prefetch = a.prefetch;
    spec.confirm_window = a.confirm_window;
    spec.separate_publish_connection = !a.one_connection;
    let start = Instant::now();
    // The same 10 ms depth poll the shovel side runs, so both sides carry the same extra load;
    // it also tells when the last message reached the target (the shovel side's end point).
    let watcher = {
        let (p2, dst2, n) = (p.clone(), dst.to_string(), a.messages);
        tokio::spawn(async move {
            let s = connect(&p2, "bench watch", "bench")
                .await
                .map_err(|e| e.to_string())?;
            let waited = wait_depth(&s, &dst2, n, Duration::from_secs(600)).await;
            let t = start.elapsed().as_secs_f64();
            s.close().await;
            waited.map(|()| t)
        })
    };
    let cpu0 = common::process_cpu_s();
    let r = mover::run(p, "bench", &spec, &MoveControl::new()).await;
    // Until the run returned: every source ack proven, channels closed (stricter than the
    // shovel's end point, which is the last message's arrival).
    let secs = start.elapsed().as_secs_f64();
    let arrived = watcher.await.map_err(|e| e.to_string())??;
    println!("  hopback: all in the target after {arrived:.2} s, run returned after {secs:.2} s");
    println!(
        "  hopback client CPU {:.2} s for {} messages ({:.1} µs/msg)",
        common::process_cpu_s() - cpu0,
        a.messages,
        (common::process_cpu_s() - cpu0) * 1e6 / a.messages as f64
    );
    if r.stop != StopReason::LimitReached || r.counts.moved != a.messages {
        return Err(format!(
            "hopback move incomplete: {:?} {:?}",
            r.stop, r.counts
        ));
    }
    Ok(a.messages as f64 / secs)
}

async fn shovel_run(s: &Session, m: &Mgmt, a: &Args, src: &str, dst: &str) -> Result<f64, String> {
    let name = format!("hopback-bench-{}", uuid::Uuid::new_v4().simple());
    let value = serde_json::json!({
        "src-protocol": "amqp091",
        "src-uri": "amqp://",
        "src-queue": src,
        "src-delete-after": "queue-length",
        "dest-protocol": "amqp091",
        "dest-uri": "amqp://",
        "dest-queue": dst,
        "ack-mode": "on-confirm",
    });
    let start = Instant::now();
    m.put_shovel(&name, value)
        .await
        .map_err(|e| e.to_string())?;
    let waited = wait_depth(s, dst, a.messages, Duration::from_secs(600)).await;
    let secs = start.elapsed().as_secs_f64();
    // With src-delete-after the shovel removes itself; delete in case it did not.
    let _ = m.delete_shovel(&name).await;
    waited?;
    Ok(a.messages as f64 / secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

async fn bench() -> Result<(), String> {
    let a = parse_args()?;
    let p = profile()?;
    let s = connect(&p, "bench", "bench")
        .await
        .map_err(|e| e.to_string())?;
    let m = Mgmt::new(&p).map_err(|e| e.to_string())?;
    println!(
        "moving {} × 1 KiB persistent messages between durable classic queues, {} run(s) each; hopback prefetch {} confirm window {} {}",
        a.messages,
        a.runs,
        a.prefetch,
        a.confirm_window,
        if a.one_connection {
            "one connection"
        } else {
            "separate publish connection"
        }
    );
    let (mut hop, mut sho) = (Vec::new(), Vec::new());
    for run in 0..a.runs {
        // Alternate the order so neither side always runs on a warmer broker.
        for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            match (a.side.as_deref(), side) {
                (Some("hopback"), 1) | (Some("shovel"), 0) => continue,
                _ => {}
            }
            // Fresh queues for every move, and a pause after filling: a queue that was just
            // purged or filled keeps the broker busy for a while (index and store clean-up), and
            // whichever side ran second used to pay for the first one's leftovers.
            let tag = uuid::Uuid::new_v4().simple().to_string();
            let (src, dst) = (format!("bench-src-{tag}"), format!("bench-dst-{tag}"));
            declare(&s, &src).await?;
            declare(&s, &dst).await?;
            fill(&s, &src, a.messages).await?;
            wait_depth(&s, &src, a.messages, Duration::from_secs(60)).await?;
            tokio::time::sleep(a.settle).await;
            let rate = if side == 0 {
                hopback_run(&p, &a, &src, &dst).await
            } else {
                shovel_run(&s, &m, &a, &src, &dst).await
            };
            let ch = s.channel().await.map_err(|e| e.to_string())?;
            for q in [&src, &dst] {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
            let _ = ch.close(200, "ok".into()).await;
            let rate = rate?;
            println!(
                "run {}: {:<8} {:>9.0} msg/s",
                run + 1,
                if side == 0 { "hopback" } else { "shovel" },
                rate
            );
            if side == 0 { &mut hop } else { &mut sho }.push(rate);
        }
    }
    let ratios: Vec<String> = hop
        .iter()
        .zip(&sho)
        .map(|(h, s)| format!("{:.2}", h / s.max(1e-9)))
        .collect();
    if a.side.is_some() {
        s.close().await;
        return Ok(());
    }
    let (h, sh) = (median(hop), median(sho));
    println!("hopback mover (median): {h:.0} msg/s");
    println!("dynamic shovel on-confirm (median): {sh:.0} msg/s");
    println!("ratio hopback/shovel: {:.2}×", h / sh.max(1e-9));
    common::emit(&common::Figure {
        figure: &format!(
            "DLQ move {} × 1 KiB, confirm-then-ack (median of {})",
            a.messages, a.runs
        ),
        measured: h,
        unit: "msg/s",
        target: "≥ 1.0× shovel",
        baseline: Some((sh, "dynamic shovel on-confirm")),
        ratio: Some(h / sh.max(1e-9)),
        pass: Some(h >= sh),
        note: format!(
            "per-run ratios {}; prefetch {}, confirm window {}, {}",
            ratios.join(" "),
            a.prefetch,
            a.confirm_window,
            if a.one_connection {
                "one connection"
            } else {
                "separate publish connection"
            }
        ),
    });
    s.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match bench().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hopback-bench: {}", hopback::text::sanitize(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
