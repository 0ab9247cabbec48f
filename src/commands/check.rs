//! `hopback check`: one line per check (ok / warn / FAIL) with a hint for every failure; exits 1 if
//! anything failed. It is the first thing to run on a new machine or a new profile.

use serde::Serialize;

use crate::broker::mgmt::{Mgmt, MgmtError};
use crate::broker::session;
use crate::commands::Ctx;
use crate::error::Failure;

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// What was checked.
    pub name: String,
    /// `ok`, `warn` or `fail`.
    pub status: &'static str,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `s` quoted for a shell command in a hint (a vhost or user name is data).
fn sh(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| "NAME".into(), |q| q.into_owned())
}

fn line(
    name: &str,
    status: &'static str,
    detail: impl Into<String>,
    hint: Option<&str>,
) -> CheckLine {
    CheckLine {
        name: name.into(),
        status,
        detail: detail.into(),
        hint: hint.map(str::to_string),
    }
}

/// The broker-engine shovels (`hopback-move-*`) of the vhost: a replay in progress, or one left
/// behind by a hopback that is gone — which takes the next dead letters of its queue, so it is
/// removed here (journaled) unless the profile is read-only; one whose owner cannot be known is
/// named with the command that removes it.
async fn move_shovel_lines(
    ctx: &Ctx,
    session: Option<&std::sync::Arc<crate::broker::session::Session>>,
    mgmt: &Mgmt,
) -> Vec<CheckLine> {
    let vhost = &ctx.cfg.profile.vhost;
    let found = match session {
        Some(s) => super::sweep_stale_moves(ctx, s, mgmt, None).await,
        None => crate::ops::stale_moves::find(mgmt, None)
            .await
            .map(|f| crate::ops::stale_moves::unswept(&ctx.cfg, f)),
    };
    match found {
        Ok(all) => all
            .iter()
            .map(|s| {
                let (detail, hint, warn) = super::describe_swept(s, vhost);
                line(
                    "broker-engine move",
                    if warn { "warn" } else { "ok" },
                    detail,
                    hint.as_deref(),
                )
            })
            .collect(),
        Err(e) => vec![line("broker-engine move", "warn", e, None)],
    }
}

/// What this user can and cannot do, per capability (`ops::access`: watch, ledger writer, gate,
/// replay, purge, init/migrate, rollback), judged from its permissions and tags (only an
/// administrator may read them) against exactly the objects each operation touches: the ledger
/// once, then each namespace found (up to [`CAPABILITY_NAMESPACES`]). A capability it lacks names
/// every missing permission (README "Permissions").
async fn capability_lines(
    mgmt: &Mgmt,
    p: &crate::config::Profile,
    perm: &crate::broker::mgmt::Permissions,
) -> Vec<CheckLine> {
    use crate::ops::access::{self, Capability, Verdict};
    let tags = match mgmt.whoami().await {
        Ok(w) => crate::broker::mgmt::tags_of(&w.tags),
        Err(_) => Vec::new(),
    };
    let ledger = crate::ledger::stream_name_from_env();
    let ledger_exists = matches!(mgmt.queue(&ledger).await, Ok(Some(_)));
    let hint = "grant what is missing, or use a profile whose user has it (README \"Permissions\" has one set_permissions line per use)";
    let verdict = |name: String, v: Verdict| match v {
        Verdict::Can => line(&name, "ok", "can", None),
        Verdict::Cannot { missing } => line(
            &name,
            "warn",
            format!("cannot: missing {}", missing.join("; ")),
            Some(hint),
        ),
        Verdict::Unknown { why } => line(&name, "warn", format!("unknown: {why}"), None),
    };
    let writer = access::needs(
        Capability::LedgerWriter,
        &crate::topology::Namespace::convention(""),
        &[],
        &ledger,
        ledger_exists,
    );
    let mut out = vec![verdict(
        "can write the ledger".into(),
        access::judge(perm, &tags, &writer, false),
    )];
    let (Ok(queues), Ok(exchanges)) = (mgmt.queues().await, mgmt.exchanges().await) else {
        return out;
    };
    // Namespaces where this user can do something first; those where it can do nothing are
    // counted on one line (a shared vhost holds other teams' namespaces).
    let found = crate::broker::topology::discover(&queues, &exchanges, p);
    let (mut shown, mut nothing) = (0usize, Vec::new());
    for d in &found {
        let ns = crate::text::sanitize(&d.name).into_owned();
        let versions: Vec<String> = d.versions.values().cloned().collect();
        let verdicts: Vec<(Capability, Verdict)> = Capability::ALL
            .into_iter()
            .filter(|c| c.per_namespace())
            .map(|cap| {
                let needs = access::needs(cap, &d.names, &versions, &ledger, ledger_exists);
                let v = access::judge(perm, &tags, &needs, access::needs_management_api(cap));
                (cap, v)
            })
            .collect();
        if verdicts
            .iter()
            .all(|(_, v)| matches!(v, Verdict::Cannot { .. }))
        {
            nothing.push(ns);
            continue;
        }
        shown += 1;
        if shown > CAPABILITY_NAMESPACES {
            continue;
        }
        for (cap, v) in verdicts {
            out.push(verdict(format!("{ns}: {}", cap.name()), v));
        }
    }
    if shown > CAPABILITY_NAMESPACES {
        out.push(line(
            "capabilities",
            "ok",
            format!(
                "{} more namespace(s) not listed",
                shown - CAPABILITY_NAMESPACES
            ),
            None,
        ));
    }
    if !nothing.is_empty() {
        out.push(line(
            "capabilities",
            "ok",
            format!(
                "nothing in {} namespace(s) whose names this user has no permission on{}",
                nothing.len(),
                if nothing.len() <= 5 {
                    format!(": {}", nothing.join(", "))
                } else {
                    String::new()
                }
            ),
            None,
        ));
    }
    out
}

/// How many namespaces `check` lists capabilities for.
const CAPABILITY_NAMESPACES: usize = 5;

/// Is `host` this machine (a name or address that never leaves it)?
fn is_loopback(host: &str) -> bool {
    let h = host.trim_matches(['[', ']']);
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What every link trusts and presents (`broker::tls`), and a warning when the password would
/// cross a plain link to another machine while the other link is TLS — a profile that was meant
/// to be encrypted and is only half so.
fn tls_lines(p: &crate::config::Profile) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let https: Vec<&url::Url> = p
        .mgmt_urls
        .iter()
        .filter(|u| u.scheme() == "https")
        .collect();
    let http_remote: Vec<&url::Url> = p
        .mgmt_urls
        .iter()
        .filter(|u| u.scheme() == "http" && !u.host_str().is_some_and(is_loopback))
        .collect();
    if p.is_tls() || !https.is_empty() {
        let s = crate::broker::tls::summary(p);
        let detail = format!(
            "trusts {}; client certificate: {}{}",
            s.trust,
            s.identity.as_deref().unwrap_or("none"),
            if p.tls.auth == crate::config::tls::AuthMechanism::External {
                " (AMQP logs in with it: SASL EXTERNAL)"
            } else {
                ""
            }
        );
        if s.problems.is_empty() {
            out.push(line("tls", "ok", detail, None));
        } else {
            out.push(line(
                "tls",
                "warn",
                format!("{detail}; unreadable: {}", s.problems.join("; ")),
                Some("fix or unset SSL_CERT_FILE / SSL_CERT_DIR"),
            ));
        }
    }
    let amqp_remote_plain = !p.is_tls() && !is_loopback(&p.host_and_port().0);
    if p.is_tls() && !http_remote.is_empty() {
        out.push(line(
            "credentials",
            "warn",
            format!(
                "AMQP uses TLS, but the management API is plain HTTP to another machine ({}): the password crosses it in clear",
                http_remote.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some("use https:// for mgmt_url (the TLS management port, usually 15671)"),
        ));
    } else if amqp_remote_plain && !https.is_empty() {
        out.push(line(
            "credentials",
            "warn",
            format!(
                "the management API uses TLS, but AMQP is plain to another machine ({}): the password crosses it in clear",
                p.host_port()
            ),
            Some("use amqps:// (the TLS AMQP port, usually 5671)"),
        ));
    }
    out
}

/// Run all checks and return them (the command prints them).
pub async fn checks(ctx: &Ctx) -> Vec<CheckLine> {
    let cfg = &ctx.cfg;
    let p = &cfg.profile;
    let mut out = vec![
        line(
            "config",
            "ok",
            if cfg.file_found {
                format!("{}", cfg.path.display())
            } else {
                format!("{} (not found: using defaults)", cfg.path.display())
            },
            None,
        ),
        line(
            "profile",
            "ok",
            format!(
                "{} → {}{}{}{}",
                p.name,
                p.display_url(),
                if p.read_only { " [read-only]" } else { "" },
                if p.production { " [PRODUCTION]" } else { "" },
                if p.staging { " [staging]" } else { "" }
            ),
            None,
        ),
    ];
    out.extend(tls_lines(p));
    let mut amqp = None;
    match session::connect(p, "check", &cfg.operator).await {
        Ok(s) => {
            out.push(line(
                "amqp",
                "ok",
                // The node that answered, not the profile's first: on a cluster with that one
                // down, the session is on another.
                format!(
                    "connected to {} as `{}`, vhost `{}`{}",
                    s.node(),
                    p.username,
                    p.vhost,
                    if s.node() != p.host_port() {
                        format!(" ({} did not answer)", p.host_port())
                    } else {
                        String::new()
                    }
                ),
                None,
            ));
            let ledger = crate::ledger::Ledger::open_read(&s, cfg).await;
            if ledger.is_missing() {
                out.push(line("ledger", "warn", ledger.backend_description(), Some("`hopback init NS` (or any journaled operation) creates it; check reads only")));
            } else if ledger.is_stream() {
                out.push(line("ledger", "ok", ledger.backend_description(), None));
            } else {
                out.push(line("ledger", "warn", ledger.backend_description(), Some("grant configure/write/read on `hopback.ledger` (a stream queue, RabbitMQ 3.9+) so every console shares one ledger")));
            }
            amqp = Some(s);
        }
        Err(e) => {
            let f = Failure::from(e);
            out.push(line("amqp", "fail", f.message, f.hint.as_deref()));
        }
    }
    let mgmt = match Mgmt::new(p) {
        Ok(m) => m,
        Err(e) => {
            out.push(line(
                "management api",
                "fail",
                e.to_string(),
                Some(&e.hint()),
            ));
            if let Some(s) = &amqp {
                s.close().await;
            }
            return out;
        }
    };
    match mgmt.overview().await {
        Ok(o) => {
            out.push(line("management api", "ok", format!("{} — RabbitMQ {}, Erlang {}", mgmt.base_url(), o.rabbitmq_version, o.erlang_version), None));
            if o.rabbitmq_version.starts_with("3.") && !o.rabbitmq_version.starts_with("3.13") {
                out.push(line("broker version", "ok", format!("{} (x-death set by clients is honoured; hopback counts replays with x-hopback-replays anyway)", o.rabbitmq_version), None));
            } else {
                out.push(line("broker version", "ok", format!("{} (client-set x-death is ignored; replays are counted with x-hopback-replays)", o.rabbitmq_version), None));
            }
            if o.exchange_types.iter().any(|t| t.name == "x-consistent-hash") {
                out.push(line("plugin consistent-hash", "ok", "x-consistent-hash exchange type available", None));
            } else {
                out.push(line("plugin consistent-hash", "fail", "x-consistent-hash exchange type missing: gates cannot work", Some("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange (or run scripts/broker)")));
            }
            match mgmt.extensions().await {
                Ok(ext) if ext.iter().any(|e| e.to_string().contains("shovel")) => {
                    out.push(line("plugin shovel", "ok", "shovel management available (the broker engine of bulk replays, `dlq replay --engine`)", None));
                    out.extend(move_shovel_lines(ctx, amqp.as_ref(), &mgmt).await);
                }
                Ok(_) => out.push(line("plugin shovel", "warn", "shovel plugin not enabled: bulk replays run on the client engine (slower on 4.x)", Some("rabbitmq-plugins enable rabbitmq_shovel rabbitmq_shovel_management"))),
                Err(e) => out.push(line("plugin shovel", "warn", e.to_string(), None)),
            }
            out.extend(cluster_lines(&mgmt, p).await);
            out.extend(convention_lines(&mgmt, p).await);
            out.extend(gate_lock_lines(&mgmt, p).await);
            match mgmt.vhost_exists().await {
                Ok(true) => {}
                Err(MgmtError::Unauthorized { .. }) => {}
                Ok(false) => out.push(line("vhost", "fail", format!("vhost `{}` does not exist", p.vhost), Some(&format!("rabbitmqctl add_vhost {}, or fix the vhost in the URL", sh(&p.vhost))))),
                Err(e) => out.push(line("vhost", "warn", e.to_string(), None)),
            }
            out.extend(identity_lines(&mgmt).await);
            match mgmt.permissions().await {
                Ok(perm) => {
                    let detail = format!("configure `{}` write `{}` read `{}`", perm.configure, perm.write, perm.read);
                    out.push(line("permissions", "ok", detail, None));
                    out.extend(capability_lines(&mgmt, p, &perm).await);
                }
                Err(MgmtError::NotFound(_)) => out.push(line("permissions", "fail", format!("user `{}` has no permissions on vhost `{}`", p.username, p.vhost), Some(&format!("rabbitmqctl set_permissions -p {} {} '.*' '.*' '.*'", sh(&p.vhost), sh(&p.username))))),
                Err(MgmtError::Unauthorized { user }) => out.push(line(
                    "permissions",
                    "warn",
                    format!("unknown: only administrators may read permissions through the management API (user `{user}`), so what this user can do (watch, gate, replay, purge, write the ledger) is unknown until the broker answers"),
                    Some("every refused call names the permission it lacked (exit 3, nothing changed); README \"Permissions\" lists what each use needs"),
                )),
                Err(e) => out.push(line("permissions", "warn", e.to_string(), None)),
            }
        }
        Err(MgmtError::Unauthorized { user }) => out.push(line(
            "management api",
            "fail",
            format!("{} refused user `{user}` (401)", mgmt.base_url()),
            Some(&if p.tls.auth == crate::config::tls::AuthMechanism::External {
                "the management API does not log in with the client certificate: it needs the user's password (password_env, password_file or HOPBACK_PASSWORD) and the `monitoring` or `management` tag".to_string()
            } else {
                format!("check the password; the user needs the `management` or `monitoring` tag: rabbitmqctl set_user_tags {} monitoring", sh(&user))
            }),
        )),
        // AMQP answered but the API did not: the broker is up, so the URL is the first suspect
        // (namespaces, the gate and rates would otherwise read as missing, not unknown).
        Err(e @ MgmtError::Unreachable { .. }) if amqp.is_some() => out.push(line(
            "management api",
            "fail",
            e.to_string(),
            Some(&format!(
                "AMQP on this broker works, so check the URL first: the management API is {} (mgmt_url / --mgmt-url; unset, it is the AMQP host on port 15672); if it is right, enable the plugin: rabbitmq-plugins enable rabbitmq_management. Until then namespaces, the gate and rates are unknown (not missing); `hopback status NS` still reads a namespace over AMQP",
                mgmt.base_url()
            )),
        )),
        Err(e) => out.push(line(
            "management api",
            "fail",
            e.to_string(),
            Some(&format!(
                "{}; without the management API rates and the gate view are unknown",
                e.hint()
            )),
        )),
    }
    out.push(metrics_line(ctx).await);
    if let Some(s) = &amqp {
        s.close().await;
    }
    out.push(line(
        "log file",
        "ok",
        crate::logging::log_path().display().to_string(),
        None,
    ));
    out
}

/// Which source the rates and error rates come from (`metrics = auto | prometheus |
/// management`), and why not the other: the same decision the console and `status` make.
async fn metrics_line(ctx: &Ctx) -> CheckLine {
    use crate::broker::metrics::Metrics;
    use crate::broker::stats::{CollectOptions, collect};
    let p = &ctx.cfg.profile;
    let session = match session::connect(p, "check", &ctx.cfg.operator).await {
        Ok(s) => s,
        Err(e) => {
            return line(
                "metrics",
                "warn",
                format!("unknown: cannot connect ({e})"),
                None,
            );
        }
    };
    let mgmt = Mgmt::new(p).ok();
    let metrics = std::sync::Arc::new(tokio::sync::Mutex::new(Metrics::new(p)));
    let opts = CollectOptions {
        metrics: Some(metrics),
        ..Default::default()
    };
    let snap = collect(&session, mgmt.as_ref(), &ctx.cfg, &opts).await;
    session.close().await;
    let mode = p.metrics.name();
    let endpoints = p
        .prometheus_urls
        .iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match snap {
        Ok(s) => match (s.metrics_source, s.metrics_note) {
            (Some(src), None) => line(
                "metrics",
                "ok",
                format!(
                    "{src} (metrics = {mode}){}",
                    if src == crate::model::metrics::MetricsSource::Prometheus {
                        format!(": {endpoints}")
                    } else {
                        String::new()
                    }
                ),
                None,
            ),
            (Some(src), Some(note)) => line(
                "metrics",
                "ok",
                format!("{src} (metrics = {mode}): {note}"),
                Some(
                    "Prometheus needs the detailed family queue_delivery_metrics (RabbitMQ 4.0.5 serves it, 3.10.8 does not); set prometheus_url if the endpoint is not on port 15692 of the AMQP host",
                ),
            ),
            (None, note) => line(
                "metrics",
                "warn",
                format!(
                    "none (metrics = {mode}): {}",
                    note.unwrap_or_else(|| "unknown".into())
                ),
                Some(
                    "rates and error rates are unknown: enable rabbitmq_prometheus (port 15692; set prometheus_url otherwise) or the management metrics collector",
                ),
            ),
        },
        Err(e) => line("metrics", "warn", format!("unknown: {e}"), None),
    }
}

/// Run `check` and print the result.
pub async fn run(ctx: &Ctx) -> Result<(), Failure> {
    let lines = checks(ctx).await;
    let failed = lines.iter().filter(|l| l.status == "fail").count();
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "ok": failed == 0, "checks": lines }))?;
    } else {
        for l in &lines {
            let mark = match l.status {
                "ok" => "ok  ",
                "warn" => "warn",
                _ => "FAIL",
            };
            crate::outln!(
                "{mark}  {:<22} {}",
                l.name,
                crate::text::sanitize(&l.detail)
            );
            if let Some(h) = &l.hint {
                crate::outln!("      {:<22} hint: {}", "", crate::text::sanitize(h));
            }
        }
    }
    if failed > 0 {
        Err(Failure::error(
            format!("{failed} check(s) failed"),
            "see the hints above",
        ))
    } else {
        Ok(())
    }
}

/// One line per quorum namespace built before the cluster-safe convention (issue 19, item 4):
/// what differs and the one command that moves it over. A warning on a multi-node cluster (dead
/// letters are at risk there), a note on a single node.
async fn convention_lines(mgmt: &Mgmt, p: &crate::config::Profile) -> Vec<CheckLine> {
    let (Ok(queues), Ok(exchanges)) = (mgmt.queues().await, mgmt.exchanges().await) else {
        return Vec::new();
    };
    let clustered = mgmt.nodes().await.map(|n| n.len() > 1).unwrap_or(false);
    crate::broker::topology::discover(&queues, &exchanges, p)
        .iter()
        .filter_map(|d| {
            let parts = crate::broker::topology::legacy_parts(d, &queues);
            (!parts.is_empty()).then(|| {
                let ns = crate::text::sanitize(&d.name);
                CheckLine {
                    name: format!("convention {ns}"),
                    status: if clustered { "warn" } else { "ok" },
                    detail: format!(
                        "built the old way: {}{}",
                        parts.join("; "),
                        if clustered {
                            " (dead letters at risk while a node is down)"
                        } else {
                            " (matters once this broker is a cluster)"
                        }
                    ),
                    hint: Some(format!("hopback migrate {ns}")),
                }
            })
        })
        .collect()
}

/// One line per namespace whose gate lock is held now: a warning naming a holder that blocks
/// every flip (a squatter, another program's exclusive queue), a note for a flip under way.
async fn gate_lock_lines(mgmt: &Mgmt, p: &crate::config::Profile) -> Vec<CheckLine> {
    let (Ok(queues), Ok(exchanges)) = (mgmt.queues().await, mgmt.exchanges().await) else {
        return Vec::new();
    };
    let names: std::collections::BTreeSet<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    let mut out = Vec::new();
    for d in crate::broker::topology::discover(&queues, &exchanges, p) {
        let lock = d.names.gate_lock();
        if !names.contains(lock.as_str()) {
            continue;
        }
        let ns = crate::text::sanitize(&d.name).into_owned();
        out.push(match crate::broker::lock::inspect(mgmt, &lock).await {
            Ok(Some(h)) if h.is_stuck() => line(
                &format!("gate lock {ns}"),
                "warn",
                format!("{}: every flip of `{ns}` is refused", h.describe()),
                Some(&format!("hopback gate unlock {ns}")),
            ),
            Ok(Some(h)) => line(&format!("gate lock {ns}"), "ok", h.describe(), None),
            Ok(None) => continue,
            Err(e) => line(
                &format!("gate lock {ns}"),
                "warn",
                format!(
                    "a queue `{}` exists; what holds it is unknown: {e}",
                    crate::text::sanitize(&lock)
                ),
                None,
            ),
        });
    }
    out
}

/// A warning when the ledger stream has fewer replicas than the cluster can give it (at most
/// 3): a ledger an earlier hopback declared lives on one node (RabbitMQ's default for a stream),
/// and losing that node stops the team's ledger mid-incident. A warning saying "unknown" when
/// the management API does not tell. `None`: replicated, or no ledger stream (the `ledger` line
/// says why).
async fn ledger_replicas_line(mgmt: &Mgmt, nodes: usize) -> Option<CheckLine> {
    let name = crate::ledger::stream_name_from_env();
    let unknown = |why: String| {
        Some(line(
            "ledger replicas",
            "warn",
            format!(
                "unknown for stream `{}`: {why}",
                crate::text::sanitize(&name)
            ),
            Some("rabbitmq-streams stream_status --vhost VHOST STREAM lists its replicas"),
        ))
    };
    let members = match mgmt.queue(&name).await {
        Ok(None) => return None,
        Ok(Some(info)) => match info.members {
            Some(m) => m,
            None => return unknown("the management API lists no members".into()),
        },
        Err(e) => return unknown(format!("the management API did not answer ({e})")),
    };
    let want = nodes.min(usize::from(crate::broker::stream::STREAM_REPLICAS));
    (members.len() < want).then(|| {
        let on: Vec<String> = members
            .iter()
            .map(|m| crate::text::sanitize(m).into_owned())
            .collect();
        line(
            "ledger replicas",
            "warn",
            format!(
                "stream `{}` has {} replica(s) ({}) on a {nodes}-node cluster: losing {} stops the team's ledger",
                crate::text::sanitize(&name),
                members.len(),
                on.join(", "),
                if on.len() == 1 { "that node" } else { "them" }
            ),
            Some("add replicas: rabbitmq-streams add_replica --vhost VHOST STREAM NODE, for each other node"),
        )
    })
}

/// The cluster's nodes (running / down / alarms / partitions) and versions, the feature flags
/// that matter to hopback, and whether the profile names every node (issue 19).
async fn cluster_lines(mgmt: &Mgmt, p: &crate::config::Profile) -> Vec<CheckLine> {
    let mut out = Vec::new();
    match mgmt.nodes().await {
        Ok(nodes) => {
            let health = crate::broker::stats::node_health(&nodes);
            let down: Vec<String> = health
                .iter()
                .filter(|n| !n.running)
                .map(|n| crate::text::sanitize(&n.name).into_owned())
                .collect();
            let versions: std::collections::BTreeSet<String> = nodes
                .iter()
                .flat_map(|n| n.applications.iter())
                .filter(|a| a.name == "rabbit")
                .map(|a| a.version.clone())
                .collect();
            let partitioned = health.iter().any(|n| !n.partitions.is_empty());
            let names: Vec<String> = health
                .iter()
                .map(|n| crate::text::sanitize(&n.name).into_owned())
                .collect();
            let detail = format!(
                "{} node(s): {}{}{}",
                health.len(),
                names.join(", "),
                if down.is_empty() {
                    String::new()
                } else {
                    format!("; DOWN: {}", down.join(", "))
                },
                if versions.len() > 1 {
                    format!(
                        "; mixed versions {}",
                        versions.into_iter().collect::<Vec<_>>().join(", ")
                    )
                } else {
                    String::new()
                }
            );
            let status = if partitioned {
                "fail"
            } else if down.is_empty() {
                "ok"
            } else {
                "warn"
            };
            out.push(line(
                "cluster",
                status,
                if partitioned {
                    format!("{detail}; PARTITIONED")
                } else {
                    detail
                },
                (!down.is_empty() || partitioned)
                    .then_some("rabbitmq-diagnostics cluster_status on a running node"),
            ));
            if health.len() > 1
                && let Some(l) = ledger_replicas_line(mgmt, health.len()).await
            {
                out.push(l);
            }
            if health.len() > 1 && p.nodes() < 2 {
                out.push(line(
                    "profile nodes",
                    "warn",
                    format!(
                        "the profile names one node ({}) of a {}-node cluster: losing it loses hopback",
                        p.host_port(),
                        health.len()
                    ),
                    Some("list every node: urls = [...] and mgmt_urls = [...] in the profile, or --url repeated"),
                ));
            } else if p.nodes() > 1 {
                out.push(line(
                    "profile nodes",
                    "ok",
                    format!(
                        "{} node URL(s): {}",
                        p.nodes(),
                        p.node_addresses().join(", ")
                    ),
                    None,
                ));
            }
        }
        Err(e) => out.push(line(
            "cluster",
            "warn",
            format!("node list unknown: {e}"),
            Some("the node list needs the `monitoring` tag"),
        )),
    }
    match mgmt.feature_flags().await {
        Ok(flags) => {
            let wanted = ["quorum_queue", "stream_queue", "khepri_db"];
            let shown: Vec<String> = wanted
                .iter()
                .filter_map(|w| {
                    flags
                        .iter()
                        .find(|f| f.name == *w)
                        .map(|f| format!("{} {}", f.name, crate::text::sanitize(&f.state)))
                })
                .collect();
            let missing = ["quorum_queue", "stream_queue"]
                .iter()
                .any(|w| !flags.iter().any(|f| f.name == *w && f.state == "enabled"));
            out.push(line(
                "feature flags",
                if missing { "warn" } else { "ok" },
                if shown.is_empty() {
                    "none of quorum_queue, stream_queue, khepri_db listed".to_string()
                } else {
                    shown.join(", ")
                },
                missing.then_some("rabbitmqctl enable_feature_flag all (the ledger needs streams)"),
            ));
        }
        Err(e) => out.push(line("feature flags", "warn", format!("unknown: {e}"), None)),
    }
    out
}

/// Who the ledger's authors can be (issue 31): users with the `impersonator` tag (they may
/// publish with any `user_id`, so their events pass as anyone's), and the users who can write
/// the ledger stream (each can claim any operator name; the timeline shows the broker user).
/// Both lists need the administrator tag; without it they are unknown, and say so.
async fn identity_lines(mgmt: &Mgmt) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let unknown = |name: &str, e: &MgmtError| {
        line(
            name,
            "warn",
            format!("unknown: {e}"),
            Some(
                "only users with the `administrator` tag may list users and permissions: run `hopback check` with such a profile once",
            ),
        )
    };
    match mgmt.users().await {
        Ok(users) => {
            let mut imp: Vec<String> = users
                .iter()
                .filter(|u| u.tag_list().iter().any(|t| t == "impersonator"))
                .map(|u| format!("`{}`", crate::text::sanitize(&u.name)))
                .collect();
            imp.sort();
            if imp.is_empty() {
                out.push(line(
                    "impersonators",
                    "ok",
                    "no user has the `impersonator` tag",
                    None,
                ));
            } else {
                out.push(line(
                    "impersonators",
                    "warn",
                    format!(
                        "{} user(s) with the `impersonator` tag: {} — they may publish with any user_id, so their ledger events pass as another user's",
                        imp.len(),
                        imp.join(", ")
                    ),
                    Some("remove the tag unless a service really needs it: rabbitmqctl set_user_tags USER (the tags to keep)"),
                ));
            }
        }
        Err(e) => out.push(unknown("impersonators", &e)),
    }
    let stream = crate::ledger::stream_name_from_env();
    let perms = mgmt.vhost_permissions().await;
    let bound = mgmt.queue_bindings(&stream).await;
    match (perms, bound) {
        (Ok(perms), bound) => {
            let exchanges: Vec<String> = bound
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|b| !b.source.is_empty())
                .map(|b| b.source.clone())
                .collect();
            let w = crate::ledger::access::writers(&perms, &stream, &exchanges);
            out.push(ledger_writers_line(mgmt, &stream, &w));
        }
        (Err(e), _) => out.push(unknown("ledger writers", &e)),
    }
    out
}

fn ledger_writers_line(
    mgmt: &Mgmt,
    stream: &str,
    w: &crate::ledger::access::LedgerWriters,
) -> CheckLine {
    let list = |s: &std::collections::BTreeSet<String>| {
        s.iter()
            .map(|u| format!("`{u}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = vec![format!(
        "write on `{}` (the default exchange, routing key = the stream): {}",
        crate::ledger::access::DEFAULT_EXCHANGE_RESOURCE,
        if w.direct.is_empty() {
            "nobody".to_string()
        } else {
            list(&w.direct)
        }
    )];
    if !w.through_bindings.is_empty() {
        parts.push(format!(
            "through an exchange bound to it: {}",
            w.through_bindings
                .iter()
                .map(|(u, x)| format!("`{u}` via `{x}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !w.can_bind.is_empty() {
        parts.push(format!(
            "write on the stream's name (may bind an exchange it reads to it): {}",
            list(&w.can_bind)
        ));
    }
    if !w.can_delete.is_empty() {
        parts.push(format!(
            "configure on it (may delete the whole history): {}",
            list(&w.can_delete)
        ));
    }
    if !w.unknown.is_empty() {
        parts.push(format!(
            "unknown for {} (a permission regex hopback cannot evaluate)",
            list(&w.unknown)
        ));
    }
    let writers = w.any_writer();
    CheckLine {
        name: "ledger writers".into(),
        status: if writers.len() > 1 || !w.unknown.is_empty() {
            "warn"
        } else {
            "ok"
        },
        detail: format!(
            "stream `{}` in vhost `{}`: {}; every event shows the broker user that wrote it, and any of them may claim any operator name",
            crate::text::sanitize(stream),
            crate::text::sanitize(mgmt.vhost()),
            parts.join("; ")
        ),
        hint: (writers.len() > 1).then(|| {
            format!(
                "keep the ledger to hopback's users: give the others write permissions that match neither `{}` nor `{}` (administrators can still grant themselves any permission)",
                crate::ledger::access::DEFAULT_EXCHANGE_RESOURCE,
                crate::text::sanitize(stream)
            )
        }),
    }
}
