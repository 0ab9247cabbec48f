//! `hopback status [NS]`: a table per namespace and version, or (`--json`) the [`FleetSnapshot`]
//! itself — that serialisation is the documented JSON shape (see README "status --json").

use crate::broker::metrics::Metrics;
use crate::broker::stats::{CollectOptions, collect, sample_error_rates};
use crate::commands::Ctx;
use crate::error::Failure;
use crate::model::metrics::MetricsSource;
use crate::model::snapshot::{ErrorState, FleetSnapshot};

/// The window of `status`'s live dead-letter tap (long enough to see a rejecting worker, short
/// enough to wait).
const ERROR_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// The span between `status`'s two Prometheus readings: its rates and error rates are the
/// counters' differences over it, on hopback's clock.
const COUNTER_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

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

/// Run `status`.
pub async fn run(
    ctx: &Ctx,
    namespace: Option<String>,
    no_attribution: bool,
) -> Result<(), Failure> {
    let session = ctx.connect().await?;
    let mgmt = ctx.mgmt();
    let metrics = std::sync::Arc::new(tokio::sync::Mutex::new(Metrics::new(&ctx.cfg.profile)));
    let opts = CollectOptions {
        namespace: namespace.clone(),
        attribute_dead_letters: (!no_attribution).then_some(ATTRIBUTION_CAP),
        exact_for: None,
        topology: None,
        known: Default::default(),
        metrics: Some(metrics.clone()),
    };
    let first_reading = std::time::Instant::now();
    let snap = collect(&session, mgmt.as_ref(), &ctx.cfg, &opts).await;
    // Dead letters per second from a short live tap; with Prometheus, a second reading of the
    // counters COUNTER_WINDOW after the first gives the rates and error rates (issue 33).
    let (snap, sample_note) = match snap {
        Ok(mut s) => {
            let note = sample_error_rates(&session, &ctx.cfg, &mut s, ERROR_RATE_WINDOW).await;
            if s.metrics_source == Some(MetricsSource::Prometheus) {
                tokio::time::sleep_until((first_reading + COUNTER_WINDOW).into()).await;
                let mut m = metrics.lock().await;
                m.read_next();
                m.apply(mgmt.as_ref(), &mut s).await;
            }
            if let Some(m) = mgmt.as_ref().filter(|_| s.mgmt_available) {
                fill_connections(m, &mut s).await;
                crate::broker::split::judge_snapshot(&session, m, &ctx.cfg, &mut s).await;
            }
            (Ok(s), note)
        }
        Err(e) => (Err(e), None),
    };
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
        return Err(Failure::error(
            format!("cannot list namespaces: {}", crate::text::sanitize(why)),
            "the namespace list comes from the management API (`hopback check`); `hopback status NS` still works over AMQP",
        ));
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
                "ERR% = rejected ÷ (acked + rejected) from the broker's counters over {} s (metrics: prometheus; - = no traffic, ? = unknown)",
                COUNTER_WINDOW.as_secs()
            ),
            (Some(MetricsSource::Management), _) => crate::outln!(
                "ERR% = rejected ÷ (acked + rejected) from the management API's 5 s samples (metrics: management; - = no traffic, ? = unknown)"
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
