//! Helpers shared by the benchmark binaries (`#[path]`-included, not a bench of its own): the
//! machine-readable `BENCH {json}` line each figure ends with (collected by `scripts/bench` into
//! one table), `--smoke` detection, process CPU time and RSS, percentiles, and the local broker's
//! profile. Kept free of unwrap/expect so benches can share it whatever their lint level.
#![allow(dead_code)]

use std::time::Duration;

/// One figure of the performance table. `pass` is `None` when the figure has no target.
#[derive(Debug, Clone)]
pub struct Figure<'a> {
    /// Short name, e.g. "DLQ move 100,000 × 1 KiB".
    pub figure: &'a str,
    /// What was measured.
    pub measured: f64,
    /// Its unit ("msg/s", "ms", "%", "MB", "calls").
    pub unit: &'a str,
    /// The target as text ("< 100 ms", "≥ 1.0× shovel").
    pub target: &'a str,
    /// The baseline measured in the same run, with what it is.
    pub baseline: Option<(f64, &'a str)>,
    /// measured ÷ baseline (or the ratio the target is about).
    pub ratio: Option<f64>,
    /// Did the figure meet its target?
    pub pass: Option<bool>,
    /// Free text (settings, spread).
    pub note: String,
}

/// Print the figure as one `BENCH {json}` line on stdout (and nothing else on that line).
pub fn emit(f: &Figure<'_>) {
    let v = serde_json::json!({
        "figure": f.figure,
        "measured": f.measured,
        "unit": f.unit,
        "target": f.target,
        "baseline": f.baseline.map(|b| b.0),
        "baseline_label": f.baseline.map(|b| b.1),
        "ratio": f.ratio,
        "pass": f.pass,
        "note": f.note,
    });
    println!("BENCH {v}");
}

/// Append a `{"kind":"figure",…}` line (the format of tests/common/record.rs) to
/// `HOPBACK_RELIABILITY_OUT` when it is set, so the reliability report can include the figure.
pub fn record_figure(name: &str, value: f64, unit: &str, note: &str) {
    let Ok(path) = std::env::var("HOPBACK_RELIABILITY_OUT") else {
        return;
    };
    use std::io::Write;
    let v = serde_json::json!({
        "kind": "figure", "name": name, "value": value, "unit": unit, "note": note,
    });
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = f.write_all(format!("{v}\n").as_bytes());
    }
}

/// Was `--smoke` passed (short version of everything)?
pub fn is_smoke() -> bool {
    std::env::args().any(|a| a == "--smoke")
}

/// The value after `--name` on the command line.
pub fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system, all threads) of this process, in seconds, ns resolution.
pub fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_PROCESS_CPUTIME_ID is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// utime + stime of a process from /proc/PID/stat, in seconds (clock ticks of 100 Hz).
pub fn proc_cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let u: f64 = f.get(11)?.parse().ok()?;
    let s: f64 = f.get(12)?.parse().ok()?;
    Some((u + s) / 100.0)
}

/// A field of /proc/PID/status in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Current RSS of this process in MB.
pub fn rss_mb() -> f64 {
    status_kb("self", "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// The q-quantile (0..=1) of the samples (nearest rank); NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The local broker's profile (HOPBACK_URL or the default guest URL; HOPBACK_MGMT_URL,
/// HOPBACK_PROMETHEUS_URL and HOPBACK_METRICS when set), optionally on a vhost.
pub fn config(vhost: Option<&str>) -> Result<hopback::config::Config, String> {
    let base =
        std::env::var("HOPBACK_URL").unwrap_or_else(|_| hopback::config::DEFAULT_URL.to_string());
    let url = match vhost {
        Some(v) => {
            let mut u = url::Url::parse(&base).map_err(|e| e.to_string())?;
            u.set_path(&format!("/{}", urlencode(v)));
            u.to_string()
        }
        None => base,
    };
    hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        std::path::Path::new("/nonexistent/hopback-bench.toml"),
        false,
        &hopback::config::Overrides {
            url: Some(url),
            mgmt_url: std::env::var("HOPBACK_MGMT_URL").ok(),
            prometheus_url: std::env::var("HOPBACK_PROMETHEUS_URL").ok(),
            metrics: std::env::var("HOPBACK_METRICS").ok(),
            ..Default::default()
        },
    )
    .map_err(|f| f.message)
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A raw management API call as guest on the local broker (setup/teardown of throwaway vhosts).
pub async fn mgmt_raw(
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, Vec<u8>), String> {
    let base =
        std::env::var("HOPBACK_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let mut r = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(120));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.map_err(|e| format!("{path}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| format!("{path}: {e}"))?;
    Ok((status, body.to_vec()))
}

/// Create a throwaway vhost with full permissions for guest.
pub async fn create_vhost(vhost: &str) -> Result<(), String> {
    let v = urlencode(vhost);
    let (s, _) = mgmt_raw(reqwest::Method::PUT, &format!("/api/vhosts/{v}"), None).await?;
    if !(200..300).contains(&s) {
        return Err(format!("creating vhost {vhost}: HTTP {s}"));
    }
    let (s, _) = mgmt_raw(
        reqwest::Method::PUT,
        &format!("/api/permissions/{v}/guest"),
        Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await?;
    if !(200..300).contains(&s) {
        return Err(format!("permissions on vhost {vhost}: HTTP {s}"));
    }
    Ok(())
}

/// Delete a throwaway vhost (and everything in it).
pub async fn delete_vhost(vhost: &str) -> Result<(), String> {
    let v = urlencode(vhost);
    let (s, _) = mgmt_raw(reqwest::Method::DELETE, &format!("/api/vhosts/{v}"), None).await?;
    if !(200..300).contains(&s) && s != 404 {
        return Err(format!("deleting vhost {vhost}: HTTP {s}"));
    }
    Ok(())
}
