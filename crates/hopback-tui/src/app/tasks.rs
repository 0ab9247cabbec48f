//! Background work of the console. Each task owns its broker connection and talks to the app loop
//! only through [`Msg`]s on an mpsc channel, so the UI never awaits the network:
//!
//! - **refresh**: `broker::stats::collect` every `refresh_interval_ms` on its own session
//!   (`hopback console (operator)`); on failure the last snapshot stays (the UI marks it stale),
//!   and the session is re-established with `backoff_delay`. It also tells the tap which DLXs exist.
//! - **tap**: [`crate::broker::tap::run`], the live dead-letter counter.
//! - **consumers**: consumer → connection names from the management API every
//!   [`CONSUMERS_INTERVAL`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::state::Msg;
use crate::broker::mgmt::Mgmt;
use crate::broker::session::{BrokerError, Session, backoff_delay_max, connect};
use crate::broker::stats::{CollectOptions, TopologyCache, collect};
use crate::broker::tap::{self, TapEvent, TapTarget};
use crate::config::Config;
use crate::model::ConnState;
use crate::model::snapshot::FleetSnapshot;

/// How often consumer/connection names are fetched.
pub const CONSUMERS_INTERVAL: Duration = Duration::from_secs(5);

/// Handles of the running tasks.
pub struct Tasks {
    /// Wake the refresh task now (the `refresh` action).
    pub refresh_now: Arc<Notify>,
    /// Namespaces on screen: their depths are read exactly (passive declares), the rest come from
    /// the management API's listing.
    pub on_screen: watch::Sender<Option<BTreeSet<String>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Stop every task.
    pub fn abort(&self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort();
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The DLXs the tap should bind, from a snapshot.
pub fn tap_targets(cfg: &Config, snap: &FleetSnapshot) -> Vec<TapTarget> {
    crate::broker::tap::tap_targets(cfg, snap)
}

/// Start refresh, tap and consumer tasks; they stop when `tx`'s receiver is dropped.
pub fn spawn(cfg: &Config, tx: mpsc::Sender<Msg>) -> Tasks {
    let refresh_now = Arc::new(Notify::new());
    // Until the first frame says what is visible, read nothing exactly: the first refresh stays
    // one management API call plus the DLQ/unrouted probes, so data appears fast.
    let (on_screen, on_screen_rx) = watch::channel(Some(BTreeSet::new()));
    let (targets_tx, targets_rx) = watch::channel(Vec::<TapTarget>::new());
    let mut handles = Vec::new();
    handles.push(tokio::spawn(refresh_loop(
        cfg.clone(),
        tx.clone(),
        refresh_now.clone(),
        targets_tx,
        on_screen_rx,
    )));
    let (tap_tx, mut tap_rx) = mpsc::channel::<TapEvent>(64);
    handles.push(tokio::spawn(tap::run(
        cfg.profile.clone(),
        cfg.operator.clone(),
        targets_rx,
        tap_tx,
    )));
    let fwd = tx.clone();
    handles.push(tokio::spawn(async move {
        while let Some(ev) = tap_rx.recv().await {
            if fwd.send(Msg::Tap(ev)).await.is_err() {
                return;
            }
        }
    }));
    if let Ok(mgmt) = Mgmt::new(&cfg.profile) {
        handles.push(tokio::spawn(consumers_loop(mgmt, tx)));
    }
    Tasks {
        refresh_now,
        on_screen,
        handles,
    }
}

/// The header's state after a failed connection attempt, and whether it needs the operator (a
/// TLS failure no retry fixes: retried only every [`TLS_RETRY_INTERVAL`], or on ctrl-r). The
/// reason carries the whole cause and its hint; the overview wraps it.
pub fn conn_state_after_failure(
    e: &BrokerError,
    ever_connected: bool,
    attempt: u32,
    since_ms: i64,
) -> (ConnState, bool) {
    let reason = crate::text::with_hint(&e.to_string(), &e.hint());
    let needs_operator = matches!(e, BrokerError::Tls { cause, .. } if cause.is_configuration());
    let state = match e {
        BrokerError::AuthFailed { .. } | BrokerError::VhostDenied { .. } if !ever_connected => {
            ConnState::Failed { reason }
        }
        _ if needs_operator => ConnState::Failed { reason },
        _ => ConnState::Reconnecting {
            since_ms,
            attempt,
            last_error: reason,
        },
    };
    (state, needs_operator)
}

/// How often the console tries again after a TLS failure that needs the operator (a certificate
/// or a setting to change): often enough to notice the fix, rarely enough not to flood the
/// broker's log with failed handshakes.
const TLS_RETRY_INTERVAL: Duration = Duration::from_secs(30);

async fn refresh_loop(
    cfg: Config,
    tx: mpsc::Sender<Msg>,
    refresh_now: Arc<Notify>,
    targets: watch::Sender<Vec<TapTarget>>,
    on_screen: watch::Receiver<Option<BTreeSet<String>>>,
) {
    let mgmt = Mgmt::new(&cfg.profile).ok();
    let interval = Duration::from_millis(cfg.refresh_interval_ms);
    let mut session: Option<Arc<Session>> = None;
    let mut attempt = 0u32;
    let mut failing_since: Option<i64> = None;
    // After one good login, a refused login is shown as reconnecting: a socket reset while the
    // broker boots reads like one (see `classify_connect`), and the loop retries anyway.
    let mut ever_connected = false;
    // One management call per refresh: the queue list, bindings, node list or exchanges,
    // whichever is most overdue (`TopologyCache`); an operation's refresh makes bindings due.
    let topology = Arc::new(tokio::sync::Mutex::new(TopologyCache::default()));
    // The metrics source and its counter history: rates on hopback's clock across refreshes.
    let metrics = Arc::new(tokio::sync::Mutex::new(
        crate::broker::metrics::Metrics::new(&cfg.profile),
    ));
    // Namespaces of the last snapshot that had the management API (see `CollectOptions::known`).
    let mut known: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let s = match session.as_ref().filter(|s| s.is_connected()) {
            Some(s) => s.clone(),
            None => {
                if session.take().is_some() {
                    // The connection died between refreshes: say so before reconnecting.
                    failing_since = Some(now_ms());
                    if tx
                        .send(Msg::Conn(ConnState::Reconnecting {
                            since_ms: now_ms(),
                            attempt: 1,
                            last_error: "the connection to the broker was lost".into(),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                match connect(&cfg.profile, "console", &cfg.operator).await {
                    Ok(s) => {
                        attempt = 0;
                        failing_since = None;
                        ever_connected = true;
                        if tx.send(Msg::Node(s.node())).await.is_err()
                            || tx
                                .send(Msg::Conn(ConnState::Connected { since_ms: now_ms() }))
                                .await
                                .is_err()
                        {
                            return;
                        }
                        session = Some(s.clone());
                        s
                    }
                    Err(e) => {
                        attempt += 1;
                        let since = *failing_since.get_or_insert_with(now_ms);
                        let (state, needs_operator) =
                            conn_state_after_failure(&e, ever_connected, attempt, since);
                        tracing::warn!(error = %e, attempt, "console cannot connect");
                        if tx.send(Msg::Conn(state)).await.is_err() {
                            return;
                        }
                        // Capped low: the console is back within seconds of the broker.
                        let delay = if needs_operator {
                            TLS_RETRY_INTERVAL
                        } else {
                            backoff_delay_max(
                                attempt.saturating_sub(1),
                                crate::broker::session::CONSOLE_BACKOFF_MAX,
                            )
                        };
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = refresh_now.notified() => {}
                        }
                        continue;
                    }
                }
            }
        };
        let opts = CollectOptions {
            exact_for: on_screen.borrow().clone(),
            topology: Some(topology.clone()),
            known: known.clone(),
            metrics: Some(metrics.clone()),
            ..Default::default()
        };
        match collect(&s, mgmt.as_ref(), &cfg, &opts).await {
            Ok(snap) => {
                if snap.mgmt_available {
                    known = snap.namespaces.iter().map(|n| n.name.clone()).collect();
                }
                let t = tap_targets(&cfg, &snap);
                targets.send_if_modified(|cur| {
                    if *cur != t {
                        *cur = t;
                        true
                    } else {
                        false
                    }
                });
                if tx.send(Msg::Snapshot(Box::new(snap))).await.is_err() {
                    s.close().await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "console refresh failed");
                if tx
                    .send(Msg::RefreshFailed {
                        error: e.to_string(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                if !s.is_connected() || matches!(e, BrokerError::Timeout { .. }) {
                    session = None;
                    failing_since = Some(now_ms());
                    attempt = 1;
                    let _ = tx
                        .send(Msg::Conn(ConnState::Reconnecting {
                            since_ms: now_ms(),
                            attempt,
                            last_error: e.to_string(),
                        }))
                        .await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = refresh_now.notified() => {
                // An operation (or ctrl-r) changed something: show it without waiting 5 s.
                topology.lock().await.invalidate();
            }
        }
    }
}

/// Join consumers with connections: queue → sorted, de-duplicated, sanitised connection names.
pub fn consumer_names(
    consumers: &[crate::broker::mgmt::ConsumerInfo],
    connections: &[crate::broker::mgmt::ConnectionInfo],
) -> BTreeMap<String, Vec<String>> {
    let names: BTreeMap<&str, &str> = connections
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.user_provided_name.as_deref().unwrap_or(c.name.as_str()),
            )
        })
        .collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in consumers {
        let server = c.channel_details.connection_name.as_str();
        let shown = names.get(server).copied().unwrap_or(server);
        out.entry(c.queue.name.clone())
            .or_default()
            .push(crate::text::sanitize(shown).into_owned());
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

async fn consumers_loop(mgmt: Mgmt, tx: mpsc::Sender<Msg>) {
    loop {
        let (c, k) = tokio::join!(mgmt.consumers(), mgmt.connections());
        if let (Ok(c), Ok(k)) = (c, k)
            && tx
                .send(Msg::Consumers(consumer_names(&c, &k)))
                .await
                .is_err()
        {
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(CONSUMERS_INTERVAL).await;
    }
}
