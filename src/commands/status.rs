//! `hopback status [NS]`: a table per namespace and version, or (`--json`) the [`FleetSnapshot`]
//! itself — that serialisation is the documented JSON shape (see README "status --json").

use crate::broker::metrics::Metrics;
use crate::broker::stats::{CollectOptions, collect, sample_error_rates};
use crate::commands::Ctx;
use crate::error::Failure;
use crate::model::metrics::MetricsSource;
use crate::model::snapshot::{ErrorState, FleetSnapshot};

/// The window over which the CLI measures error rates (`status`, the default destination of
/// `dlq replay`): the live dead-letter tap counts for this long, and with Prometheus the two
/// counter readings are this far apart. A few seconds read a steady rejecting worker anywhere
/// between half and twice its real rate (dead letters arrive in bursts, the broker's counters
/// move every 5 s); ten read it within a few points.
pub const DEFAULT_ERROR_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// `--window`, else `HOPBACK_ERROR_RATE_WINDOW` (a duration: `10s`, `1m`), else
/// [`DEFAULT_ERROR_RATE_WINDOW`].
pub fn error_rate_window(
    flag: Option<std::time::Duration>,
) -> Result<std::time::Duration, Failure> {
    if let Some(w) = flag {
        return Ok(w.max(std::time::Duration::from_secs(1)));
    }
    match std::env::var("HOPBACK_ERROR_RATE_WINDOW") {
        Ok(v) if !v.trim().is_empty() => humantime::parse_duration(v.trim())
            .map(|w| w.max(std::time::Duration::from_secs(1)))
            .map_err(|e| {
                Failure::usage(
                    format!(
                        "HOPBACK_ERROR_RATE_WINDOW `{}` is not a duration: {e}",
                        crate::text::sanitize(&v)
                    ),
                    "give a duration such as 10s or 1m",
                )
            }),
        _ => Ok(DEFAULT_ERROR_RATE_WINDOW),
    }
}

/// `10 s` / `1m 30s`: a window as the notes print it.
pub fn window_text(w: std::time::Duration) -> String {
    if w.subsec_millis() == 0 && w.as_secs() < 60 {
        format!("{} s", w.as_secs())
    } else {
        humantime::format_duration(w).to_string()
    }
}

/// Dead letters browsed per DLQ for attribution.
pub const ATTRIBUTION_CAP: u64 = 10_000;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
}

fn rate(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "?".into())
}

/// Render the human table.
pub fn render(snap: &FleetSnapshot) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if !snap.mgmt_available {
        let _ = writeln!(
            s,
            "note: management API unavailable ({}); the gate is unknown",
            crate::text::sanitize(snap.mgmt_error.as_deref().unwrap_or("?"))
        );
    }
    // A cluster node down is the first thing an on-call engineer must see (classic queues on
    // it are unavailable, quorum queues lose a member).
    if let Some(nodes) = &snap.nodes {
        let down: Vec<String> = nodes
            .iter()
            .filter(|n| !n.running)
            .map(|n| crate::text::sanitize(&n.name).into_owned())
            .collect();
        if !down.is_empty() {
            let _ = writeln!(
                s,
                "(!) {} of {} node(s) DOWN: {} — queues on it are unavailable; `hopback check` lists what is at risk",
                down.len(),
                nodes.len(),
                down.join(", ")
            );
        }
        for n in nodes {
            if !n.alarms.is_empty() {
                let _ = writeln!(
                    s,
                    "(!) node {}: {} — publishers are blocked",
                    crate::text::sanitize(&n.name),
                    crate::text::sanitize(&n.alarms.join(", "))
                );
            }
            if !n.partitions.is_empty() {
                let _ = writeln!(
                    s,
                    "(!) node {} is partitioned from {}",
                    crate::text::sanitize(&n.name),
                    crate::text::sanitize(&n.partitions.join(", "))
                );
            }
        }
    }
    if let Some(n) = &snap.metrics_note {
        let _ = writeln!(s, "note: {}", crate::text::sanitize(n));
    }
    if snap.namespaces.is_empty() {
        let _ = writeln!(
            s,
            "no namespaces found (create one with `hopback init NS --versions v1,v2`)"
        );
        return s;
    }
    let _ = writeln!(
        s,
        "{:<16} {:<5} {:>5} {:>8} {:>8} {:>5} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "NAMESPACE",
        "VER",
        "GATE",
        "READY",
        "UNACKED",
        "CONS",
        "IN/s",
        "ACK/s",
        "REDLV/s",
        "DEAD",
        "ERR%"
    );
    for ns in &snap.namespaces {
        let name = crate::text::sanitize(&ns.name);
        for (i, v) in ns.versions.iter().enumerate() {
            let gate = if ns.gate.is_some() {
                format!("{:.0}%", v.gate_percent)
            } else {
                "?".into()
            };
            let _ = writeln!(
                s,
                "{:<16} {:<5} {:>5} {:>8} {:>8} {:>5} {:>8} {:>8} {:>8} {:>6} {:>6}",
                if i == 0 {
                    name.to_string()
                } else {
                    String::new()
                },
                crate::text::sanitize(&v.version),
                gate,
                opt(v.ready),
                opt(v.unacked),
                opt(v.consumers),
                rate(v.rates.map(|r| r.publish)),
                rate(v.rates.map(|r| r.ack)),
                rate(v.rates.map(|r| r.redeliver)),
                opt(v.dead_letters),
                match v.error_state() {
                    ErrorState::Ratio(e) => format!("{:.1}", e * 100.0),
                    ErrorState::NoTraffic => "-".into(),
                    ErrorState::Unknown => "?".into(),
                },
            );
        }
        let unrouted = match ns.unrouted_depth {
            Some(n) if n > 0 => format!("{n} (!) replay them through the entry exchange"),
            _ => ns.unrouted_text(),
        };
        let reasons: Vec<String> = ns
            .dead_letters_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "{:<16} dlq {} {}· unrouted {} · gate {}",
            "",
            ns.dlq_text(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!("({}) ", reasons.join(", "))
            },
            unrouted,
            ns.gate
                .as_ref()
                .map(|g| g.describe())
                .unwrap_or_else(|| "?".into()),
        );
        if ns.dead_letters_unreadable > 0 {
            let _ = writeln!(
                s,
                "{:<16} (!) {} dead letter(s) whose properties cannot be read: shown as unreadable by `hopback dlq list`; a replay moves them to the parking queue",
                "", ns.dead_letters_unreadable
            );
        }
        for v in ns.versions.iter().filter(|v| v.drops_over_limit()) {
            let _ = writeln!(
                s,
                "{:<16} (!) {}: delivery limit {} and no dead-letter target — messages over it are dropped",
                "",
                v.version,
                v.delivery_limit.unwrap_or_default()
            );
        }
        for p in &ns.gate_problems {
            let _ = writeln!(s, "{:<16} gate problem: {}", "", p);
        }
        if let Some(l) = &ns.gate_lock {
            let _ = writeln!(
                s,
                "{:<16} {}gate lock: {}{}",
                "",
                if l.is_stuck() { "(!) " } else { "" },
                l.describe(),
                if l.is_stuck() {
                    format!(" — every flip is refused; remove it with `hopback gate unlock {name}`")
                } else {
                    String::new()
                }
            );
        }
        if let Some(why) = &ns.no_permission {
            let _ = writeln!(
                s,
                "{:<16} no permission: part of this namespace is unknown ({})",
                "",
                crate::text::sanitize(why)
            );
        }
        if let Some(h) = &ns.hash_on {
            let _ = writeln!(s, "{:<16} gate hashes {}", "", crate::text::sanitize(h));
        }
        if let (Some(r), Some(g)) = (&ns.split_check, &ns.gate) {
            let measured = ns.measured.clone().unwrap_or_default();
            let _ = writeln!(
                s,
                "{:<16} {}{}",
                "",
                if r.differs() { "(!) " } else { "" },
                crate::text::sanitize(&r.describe(g, &measured))
            );
        }
        for v in &ns.versions {
            match &v.connections {
                Some(c) if !c.is_empty() => {
                    let _ = writeln!(
                        s,
                        "{:<16} {} workers: {}",
                        "",
                        crate::text::sanitize(&v.version),
                        crate::text::sanitize(&c.join(", "))
                    );
                }
                None if v.consumers.unwrap_or(0) > 0 => {
                    let _ = writeln!(
                        s,
                        "{:<16} {} workers: ? ({})",
                        "",
                        crate::text::sanitize(&v.version),
                        crate::text::sanitize(v.connections_note.as_deref().unwrap_or("unknown"))
                    );
                }
                _ => {}
            }
        }
    }
    s
}

/// Each version's consumers' connection names (`NS worker vN`), as the console shows them. When
/// the management API cannot list them (a node without the metrics collector refuses
/// `/api/consumers`), they stay unknown with the reason — never an empty list.
async fn fill_connections(mgmt: &crate::broker::mgmt::Mgmt, snap: &mut FleetSnapshot) {
    let (c, k) = tokio::join!(mgmt.consumers(), mgmt.connections());
    let versions = snap
        .namespaces
        .iter_mut()
        .flat_map(|n| n.versions.iter_mut());
    match (c, k) {
        (Ok(c), Ok(k)) => {
            let by_queue = crate::app::tasks::consumer_names(&c, &k);
            for v in versions {
                v.connections = Some(by_queue.get(&v.queue).cloned().unwrap_or_default());
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            let why = format!("the management API cannot list consumers: {e}");
            for v in versions {
                v.connections = None;
                v.connections_note = Some(why.clone());
            }
        }
    }
}

/// A snapshot with error rates measured over `window` (the dead-letter tap, and with
/// Prometheus a second counter reading `window` after the first), connections named and the
/// measured split judged. Also returns why error rates could not be sampled, if so.
pub async fn measure(
    ctx: &Ctx,
    session: &crate::broker::session::Session,
    mgmt: Option<&crate::broker::mgmt::Mgmt>,
    namespace: Option<String>,
    attribution: Option<u64>,
    window: std::time::Duration,
) -> (
    Result<FleetSnapshot, crate::broker::session::BrokerError>,
    Option<String>,
) {
    let metrics = std::sync::Arc::new(tokio::sync::Mutex::new(Metrics::new(&ctx.cfg.profile)));
    let opts = CollectOptions {
        namespace,
        attribute_dead_letters: attribution,
        exact_for: None,
        topology: None,
        known: Default::default(),
        metrics: Some(metrics.clone()),
    };
    let first_reading = std::time::Instant::now();
    let snap = collect(session, mgmt, &ctx.cfg, &opts).await;
    match snap {
        Ok(mut s) => {
            let note = sample_error_rates(session, &ctx.cfg, &mut s, window).await;
            if s.metrics_source == Some(MetricsSource::Prometheus) {
                tokio::time::sleep_until((first_reading + window).into()).await;
                let mut m = metrics.lock().await;
                m.read_next();
                m.apply(mgmt, &mut s).await;
            }
            if let Some(m) = mgmt.filter(|_| s.mgmt_available) {
                fill_connections(m, &mut s).await;
                crate::broker::split::judge_snapshot(session, m, &ctx.cfg, &mut s).await;
            }
            (Ok(s), note)
        }
        Err(e) => (Err(e), None),
    }
}

/// Run `status`.
pub async fn run(
    ctx: &Ctx,
    namespace: Option<String>,
    no_attribution: bool,
    window: Option<std::time::Duration>,
) -> Result<(), Failure> {
    let window = error_rate_window(window)?;
    let session = ctx.connect().await?;
    let mgmt = ctx.mgmt();
    let (snap, sample_note) = measure(
        ctx,
        &session,
        mgmt.as_ref(),
        namespace.clone(),
        (!no_attribution).then_some(ATTRIBUTION_CAP),
        window,
    )
    .await;
    // Broker-engine moves left behind take the next dead letters: removed here (journaled)
    // unless the profile is read-only, and named either way.
    let swept = match &mgmt {
        Some(m) => super::sweep_stale_moves(ctx, &session, m, namespace.as_deref()).await,
        None => Ok(Vec::new()),
    };
    session.close().await;
    let swept: Vec<String> = match swept {
        Ok(all) => all
            .iter()
            .map(|s| {
                let (detail, hint, _) = super::describe_swept(s, &ctx.cfg.profile.vhost);
                match hint {
                    Some(h) => format!("broker-engine move: {detail}\n  hint: {h}"),
                    None => format!("broker-engine move: {detail}"),
                }
            })
            .collect(),
        Err(e) => vec![format!("broker-engine moves: {e}")],
    };
    for l in &swept {
        if ctx.json {
            crate::errln!("{l}");
        }
    }
    let mut snap = snap?;
    // What holds each gate lock (a squatter blocks every flip): one management call per
    // namespace shown, concurrently; unknown stays unknown (the field is left out).
    if let Some(m) = &mgmt {
        let holders = futures::future::join_all(
            snap.namespaces
                .iter()
                .map(|n| crate::ops::gate::lock_holder(m, &ctx.cfg, &n.name)),
        )
        .await;
        for (n, h) in snap.namespaces.iter_mut().zip(holders) {
            n.gate_lock = h.ok().flatten();
        }
    }
    if let Some(ns) = &namespace
        && snap.namespace(ns).is_none()
    {
        return Err(Failure::error(
            format!(
                "namespace `{}` not found on this broker",
                crate::text::sanitize(ns)
            ),
            format!(
                "create it with `hopback init {} --versions v1,v2`, or adopt it in the profile's [namespaces] config",
                crate::text::sanitize(ns)
            ),
        ));
    }
    // Without the management API the namespace list is unknown — not empty. Say so (and fail)
    // instead of "no namespaces found" with exit 0.
    if namespace.is_none()
        && snap.namespaces.is_empty()
        && let Some(why) = &snap.mgmt_error
    {
        let message = format!("cannot list namespaces: {}", crate::text::sanitize(why));
        let hint = "the namespace list comes from the management API (`hopback check`); `hopback status NS` still works over AMQP";
        // A user the API refuses is a refusal (exit 3), like every other command's.
        return Err(if snap.mgmt_refused {
            Failure::refused(message, hint)
        } else {
            Failure::error(message, hint)
        });
    }
    // Namespaces this user may not read: shown as such, the others in full; a warning, exit 0.
    let unreadable: Vec<String> = snap
        .namespaces
        .iter()
        .filter(|n| n.no_permission.is_some())
        .map(|n| crate::text::sanitize(&n.name).into_owned())
        .collect();
    if !unreadable.is_empty() {
        tracing::warn!(namespaces = ?unreadable, "status: no permission to read some namespaces");
        crate::errln!(
            "warning: user `{}` may not read all of {} namespace(s) ({}); they are marked \"no permission\" (README \"Permissions\")",
            crate::text::sanitize(&ctx.cfg.profile.username),
            unreadable.len(),
            unreadable.join(", ")
        );
    }
    if ctx.json {
        ctx.print_json(&snap)
    } else {
        crate::out!("{}", render(&snap));
        for l in &swept {
            crate::outln!("{l}");
        }
        match (snap.metrics_source, sample_note) {
            _ if snap.namespaces.is_empty() => {}
            (Some(MetricsSource::Prometheus), _) => crate::outln!(
                "ERR% = rejected ÷ (acked + rejected) from the broker's counters over the last {} (metrics: prometheus; - = no traffic, ? = unknown; --window changes it)",
                window_text(window)
            ),
            (Some(MetricsSource::Management), _) => crate::outln!(
                "ERR% = dead letters tapped over the last {} ÷ (them + acks from the management API's 5 s samples) (metrics: management; - = no traffic, ? = unknown; --window changes it)",
                window_text(window)
            ),
            (None, Some(why)) => crate::outln!("ERR%: {}", crate::text::sanitize(&why)),
            (None, None) => {
                crate::outln!("ERR%: unknown — no metrics source has counters (? = unknown)")
            }
        }
        // Namespaces built before the cluster-safe convention: on a cluster their dead letters
        // are at risk while a node is down (issue 19, item 4). `check` lists them everywhere.
        if snap.nodes.as_ref().is_some_and(|n| n.len() > 1) {
            for ns in snap.namespaces.iter().filter(|n| !n.legacy.is_empty()) {
                crate::outln!(
                    "hint: `{}` was built the old way ({}): `hopback migrate {}`",
                    crate::text::sanitize(&ns.name),
                    crate::text::sanitize(&ns.legacy.join("; ")),
                    crate::text::sanitize(&ns.name)
                );
            }
        }
        Ok(())
    }
}
