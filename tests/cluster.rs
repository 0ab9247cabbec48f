//! A 3-node RabbitMQ 4.x cluster that loses a node (issue 19). Needs `scripts/cluster up` (nodes
//! c1..c3@localhost on AMQP 5681-5683, management 15681-15683), so the tests are `#[ignore]`d in
//! the default run; CI runs them with `cargo test --test cluster -- --include-ignored
//! --test-threads=1` after starting the cluster. They stop and start nodes, which must not
//! overlap: each holds [`SERIAL`] for its whole run as well.
//!
//! - the console's refresh connection, on the node that is stopped, is back on another node
//!   within 5 s and says which;
//! - while the node holding the classic `NS.dlq` / `NS.unrouted` is down, they read
//!   "unavailable (cN down)", not "missing"; the quorum version queues stay available with 2/3
//!   members online; the node list names the node down;
//! - a gate flip during the outage goes through on a live node and is verified;
//! - dead letters produced while the cluster-safe DLQ's first node is down: 0 lost;
//! - the node a 20,000-message replay, a 10,000-message drain, and a guided rollback's drain step
//!   (50,000 messages, CLI) are connected to is stopped mid-move: every id is counted, 0 lost; the
//!   rollback goes on with its next step on a live node and finishes;
//! - the node running a broker-engine replay's shovel (60,000 dead letters) is stopped mid-move:
//!   the cluster starts the shovel (a runtime parameter) again on a live node with a fresh count;
//!   hopback's watcher removes it once its own count has left the DLQ, the outcome is journaled
//!   through a fresh connection, every id is counted, 0 lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::time::{Duration, Instant};

use hopback::app::state::Msg;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::stats::{CollectOptions, collect};
use hopback::broker::topology::QueueType;
use hopback::config::{self, Config, Overrides};
use hopback::model::ConnState;
use tokio::sync::mpsc;

const AMQP_PORTS: [u16; 3] = [5681, 5682, 5683];

/// Held by each test for its whole run: they stop and start nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster_config() -> Config {
    config_for_ports(&AMQP_PORTS)
}

/// A cluster profile naming the nodes on these AMQP ports, in this order (the management API of
/// each is on port + 10000); the password travels in the first URL only.
fn config_for_ports(ports: &[u16]) -> Config {
    let urls: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                format!("amqp://guest:guest@127.0.0.1:{p}/%2f")
            } else {
                format!("amqp://127.0.0.1:{p}/%2f")
            }
        })
        .collect();
    let mgmt: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{}/", p + 10000))
        .collect();
    let over = Overrides {
        url: Some(urls.join(",")),
        mgmt_url: Some(mgmt.join(",")),
        ..Default::default()
    };
    let mut cfg = config::resolve(
        config::raw::RawConfig::default(),
        std::path::Path::new("/nonexistent/hopback-test.toml"),
        false,
        &over,
    )
    .unwrap();
    cfg.refresh_interval_ms = 300;
    cfg
}

/// The CLI arguments naming every node (`--url` and `--mgmt-url` per node, in order).
fn cli_cluster_args() -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for (i, port) in AMQP_PORTS.iter().enumerate() {
        args.push("--url".into());
        args.push(if i == 0 {
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
        } else {
            format!("amqp://127.0.0.1:{port}/%2f")
        });
        args.push("--mgmt-url".into());
        args.push(format!("http://127.0.0.1:{}/", port + 10000));
    }
    args
}

/// Publish `ids` (each its own body) to `queue`, confirmed; `expire` makes each a dead letter at
/// once.
async fn publish_ids(
    session: &hopback::broker::session::Session,
    queue: &str,
    ids: &[String],
    expire: bool,
) {
    dlq_helpers::publish(
        session,
        queue,
        ids,
        &|id: &str| id.as_bytes().to_vec(),
        None,
        expire,
    )
    .await;
}

/// How many times each id is in `queues` (drained).
async fn count_ids(
    session: &hopback::broker::session::Session,
    queues: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let mut all = std::collections::BTreeMap::new();
    for q in queues {
        for (id, _) in dlq_helpers::drain_ids(session, q).await {
            *all.entry(id).or_default() += 1;
        }
    }
    all
}

/// `scripts/cluster ARGS…` (stop-node N / start-node N).
fn cluster(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");
    let out = std::process::Command::new(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node number (1..=3) of `host:port`.
fn node_of(addr: &str) -> usize {
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    AMQP_PORTS.iter().position(|p| *p == port).unwrap() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster up, then cargo test --test cluster -- --ignored"]
async fn losing_a_node_costs_one_reconnect_and_reads_unavailable_not_missing() {
    let _serial = SERIAL.lock().await;
    // All three nodes up (idempotent; an earlier failed run may have left one stopped).
    cluster(&["up"]);
    let cfg = cluster_config();
    let session = common::connect(&cfg, "cluster test").await;
    let ns = common::unique_ns("clu");
    // The cluster-safe convention: quorum version queues, DLQ and unrouted queue.
    hopback::broker::topology::init(
        &session,
        &ns,
        &["v1".into(), "v2".into()],
        QueueType::Quorum,
    )
    .await
    .unwrap();
    // A classic namespace: its DLQ and unrouted queue live on the declaring node.
    let old = common::unique_ns("cluc");
    hopback::broker::topology::init(
        &session,
        &old,
        &["v1".into(), "v2".into()],
        QueueType::Classic,
    )
    .await
    .unwrap();
    let home = node_of(&session.node());

    // The console's refresh task, connected before the loss.
    let (tx, mut rx) = mpsc::channel(256);
    let tasks = hopback::app::tasks::spawn(&cfg, tx);
    let mut node = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(Msg::Node(n))) => node = Some(n),
            Ok(Some(Msg::Conn(ConnState::Connected { .. }))) if node.is_some() => break,
            _ => {}
        }
    }
    let console_node = node.expect("the console connected");

    // Stop the node that holds the DLQ (and, if the console is on it, the console's node too).
    cluster(&["stop-node", &home.to_string()]);
    let stopped_at = Instant::now();

    // The console was on the stopped node (both connected to the preferred node): it is back on
    // another within 5 s.
    assert_eq!(node_of(&console_node), home, "{console_node}");
    {
        let mut back = None;
        while stopped_at.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(Msg::Node(n))) =
                tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            {
                back = Some((n, stopped_at.elapsed()));
                break;
            }
        }
        let (n, took) = back.expect("the console did not reconnect");
        assert_ne!(node_of(&n), home, "reconnected to the stopped node?");
        assert!(took < Duration::from_secs(5), "reconnect took {took:?}");
    }

    // A new session (the CLI) on any live node; the snapshot names the node down and reads the
    // classic queues as unavailable, not missing.
    let live = common::connect(&cfg, "cluster test").await;
    assert_ne!(node_of(&live.node()), home);
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    // Every namespace: both of this test's, the quorum one and the classic one.
    let opts = CollectOptions::default();
    let mut seen = None;
    for _ in 0..40 {
        let snap = collect(&live, Some(&mgmt), &cfg, &opts).await.unwrap();
        let down = snap
            .nodes
            .as_ref()
            .is_some_and(|n| n.iter().any(|x| !x.running));
        let ns_snap = snap.namespaces.iter().find(|n| n.name == ns).cloned();
        let old_snap = snap.namespaces.iter().find(|n| n.name == old).cloned();
        // The quorum queues (versions, DLQ and unrouted queue, each on its own) elect a new
        // leader within seconds of the loss; until then the management API names the stopped
        // node as leader and the placement reads unavailable.
        let settled = ns_snap.as_ref().is_some_and(|n| {
            n.versions
                .iter()
                .all(|v| v.placement.as_ref().is_some_and(|p| !p.unavailable))
                && [&n.dlq_placement, &n.unrouted_placement]
                    .iter()
                    .all(|p| p.as_ref().is_some_and(|p| !p.unavailable))
        }) && old_snap
            .as_ref()
            .is_some_and(|n| n.dlq_text().starts_with("unavailable"));
        if down && settled {
            seen = Some((snap, ns_snap.unwrap(), old_snap.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (snap, n, o) = seen.expect("the node loss never showed");
    let down: Vec<&str> = snap
        .nodes
        .as_ref()
        .unwrap()
        .iter()
        .filter(|x| !x.running)
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(down, [format!("c{home}@localhost")]);
    // The classic namespace's dead-letter stores are unavailable, not missing and not 0 …
    assert_eq!(o.dlq_text(), format!("unavailable (c{home} down)"));
    assert_eq!(o.unrouted_text(), format!("unavailable (c{home} down)"));
    // … the cluster-safe one's keep working on the two nodes left.
    for p in [&n.dlq_placement, &n.unrouted_placement] {
        let p = p.as_ref().expect("placement of a quorum store");
        assert!(!p.unavailable, "{p:?}");
        assert_eq!((p.online.len(), p.members.len()), (2, 3), "{p:?}");
    }
    assert!(!n.dlq_text().starts_with("unavailable"), "{}", n.dlq_text());
    for v in &n.versions {
        let p = v.placement.as_ref().expect("placement of a quorum queue");
        assert!(!p.unavailable, "{v:?}");
        assert_eq!((p.online.len(), p.members.len()), (2, 3), "{v:?}");
        assert!(v.exists);
    }

    // Dead letters produced while the DLQ's first node is down: every one arrives (at least once).
    let dead = dlq_helpers::ids("down", 500);
    let dlq = format!("{ns}.dlq");
    let before = live.passive_queue(&dlq).await.unwrap().unwrap().ready;
    publish_ids(&live, &format!("{ns}.v2"), &dead, true).await;
    // At least once: wait for 500 more (a duplicate would make it more, never fewer).
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.passive_queue(&dlq).await.unwrap().unwrap().ready < before + 500 {
        assert!(Instant::now() < deadline, "dead letters did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got: std::collections::BTreeSet<String> = dlq_helpers::drain_ids(&live, &dlq)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let lost = dead.iter().filter(|id| !got.contains(*id)).count();
    assert_eq!(lost, 0, "dead letters lost while c{home} was down");

    // `check` names the node down and the profile's node list.
    let mut args = cli_cluster_args();
    args.push("check".into());
    let mut c = common::bin();
    c.args(&args);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("DOWN: c{home}@localhost")), "{text}");
    assert!(text.contains("3 node URL(s)"), "{text}");
    assert!(!text.contains("guest:guest"), "{text}");

    // A gate flip during the outage goes through on a live node, verified.
    let stream = format!("hopback.ledger.{ns}");
    let ledger =
        std::sync::Arc::new(hopback::ledger::Ledger::open_stream(&live, &cfg, &stream).await);
    let r = hopback::ops::gate::apply(
        &hopback::ops::OpContext::of(&live, &mgmt, &ledger, &cfg, hopback::ops::Via::Cli),
        &hopback::ops::gate::GateRequest {
            namespace: ns.clone(),
            target: hopback::model::gate::GateSplit::from_pairs([
                ("v1".into(), 90),
                ("v2".into(), 10),
            ]),
            force_zero_consumers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.verified, "{r:?}");

    // Back to three nodes; clean up.
    cluster(&["start-node", &home.to_string()]);
    tasks.abort();
    let _ = hopback::ledger::delete_stream(&live, &stream).await;
    for n in [&ns, &old] {
        hopback::broker::topology::delete_namespace(&live, n, &["v1".into(), "v2".into()])
            .await
            .unwrap();
    }
    live.close().await;
}

/// The cluster's URLs without node `skip` (1..=3): a session on one of the other two, whatever
/// node this process prefers.
fn config_without(skip: usize) -> Config {
    let ports: Vec<u16> = (0..3)
        .filter(|i| i + 1 != skip)
        .map(|i| AMQP_PORTS[i])
        .collect();
    config_for_ports(&ports)
}

/// Run `spec` with the mover (rate-limited so it is still running when the node goes), stop the
/// node its connection is on once `queue_to_watch` holds `at_least` messages, and return the
/// report with a session on another node (for counting); the node is started again first.
async fn move_through_a_node_loss(
    cfg: &Config,
    spec: hopback::broker::mover::MoveSpec,
    queue_to_watch: &str,
    at_least: u32,
) -> (
    hopback::broker::mover::MoveReport,
    std::sync::Arc<hopback::broker::session::Session>,
) {
    // The mover connects as this probe does (the first live node of the profile).
    let probe = common::connect(cfg, "cluster test probe").await;
    let home = node_of(&probe.node());
    probe.close().await;
    let observer = common::connect(&config_without(home), "cluster observer").await;
    assert_ne!(node_of(&observer.node()), home);
    let (_control, handle) =
        hopback::broker::mover::spawn(cfg.profile.clone(), "cluster-test".into(), spec);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq_helpers::depth(&observer, queue_to_watch).await < at_least {
        assert!(Instant::now() < deadline, "the move never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster(&["stop-node", &home.to_string()]);
    let report = tokio::time::timeout(Duration::from_secs(180), handle)
        .await
        .expect("the move did not finish within 3 minutes of the node loss")
        .unwrap();
    cluster(&["start-node", &home.to_string()]);
    (report, observer)
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster up, then cargo test --test cluster -- --ignored"]
async fn a_node_lost_mid_replay_and_mid_drain_loses_no_message() {
    let _serial = SERIAL.lock().await;
    use hopback::broker::mover::{MoveSpec, StopReason, Target};
    cluster(&["up"]);
    let cfg = cluster_config();
    let session = common::connect(&cfg, "cluster test").await;
    let ns = common::unique_ns("clr");
    let versions: Vec<String> = vec!["v1".into(), "v2".into()];
    hopback::broker::topology::init(&session, &ns, &versions, QueueType::Quorum)
        .await
        .unwrap();
    let home = node_of(&session.node());
    session.close().await;
    // Test data goes in through another node.
    let observer = common::connect(&config_without(home), "cluster observer").await;
    let names = hopback::topology::Namespace::convention(&ns);
    let (v1, v2) = (format!("{ns}.v1"), format!("{ns}.v2"));
    // (b) A 20,000-message replay (what `dlq replay NS --to v1` runs) loses its node mid-way.
    let n = 20_000;
    let dead = dlq_helpers::ids("rp", n);
    publish_ids(&observer, &v2, &dead, true).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq_helpers::depth(&observer, &names.dlq).await < n as u32 {
        assert!(Instant::now() < deadline, "dead letters did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut spec = MoveSpec::replay(&names, Target::Queue(v1.clone()));
    spec.rate_per_s = Some(2_000.0);
    spec.max_reconnect_attempts = 30;
    let (r, observer) = move_through_a_node_loss(&cfg, spec, &v1, 3_000).await;
    assert!(!matches!(r.stop, StopReason::Failed(_)), "{r:?}");
    assert!(
        r.counts.reconnects >= 1,
        "the node loss never reached the mover: {r:?}"
    );
    let seen = count_ids(&observer, &[&v1, &names.dlq]).await;
    let lost = dead.iter().filter(|id| !seen.contains_key(*id)).count();
    let dups: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "replay of {n} through a node loss: moved {}, {} reconnect(s), lost {lost}, {dups} duplicate(s) ({} counted as possible by the mover)",
        r.counts.moved, r.counts.reconnects, r.counts.possible_duplicates
    );
    assert_eq!(lost, 0);

    // (c) The rollback's drain (NS.v2 → NS.v1, the mover's drain the rollback step runs) loses
    // its node mid-way.
    let work = dlq_helpers::ids("dr", 10_000);
    publish_ids(&observer, &v2, &work, false).await;
    let mut spec = MoveSpec::drain(&names, &v2, &v1);
    spec.rate_per_s = Some(1_500.0);
    spec.max_reconnect_attempts = 30;
    let (r, observer) = move_through_a_node_loss(&cfg, spec, &v1, 2_000).await;
    assert!(!matches!(r.stop, StopReason::Failed(_)), "{r:?}");
    let seen = count_ids(&observer, &[&v1, &v2]).await;
    let lost = work.iter().filter(|id| !seen.contains_key(*id)).count();
    let dups: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "drain of 10000 through a node loss: moved {}, {} reconnect(s), lost {lost}, {dups} duplicate(s) ({} counted as possible by the mover)",
        r.counts.moved, r.counts.reconnects, r.counts.possible_duplicates
    );
    assert_eq!(lost, 0);

    remove_namespace(&observer, &ns, &versions).await;
    observer.close().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster up, then cargo test --test cluster -- --ignored"]
async fn a_node_lost_mid_rollback_drain_loses_no_message() {
    let _serial = SERIAL.lock().await;
    cluster(&["up"]);
    // The CLI is a fresh process: it connects to the profile's first node, c1.
    let home = 1;
    let observer = common::connect(&config_without(home), "cluster observer").await;
    let ns = common::unique_ns("clrb");
    let versions: Vec<String> = vec!["v1".into(), "v2".into()];
    hopback::broker::topology::init(&observer, &ns, &versions, QueueType::Quorum)
        .await
        .unwrap();
    let (v1, v2) = (format!("{ns}.v1"), format!("{ns}.v2"));
    hopback::broker::topology::change_bindings(
        &observer,
        &ns,
        &[
            hopback::broker::topology::BindingChange::Unbind {
                queue: v1.clone(),
                key: "100".into(),
            },
            hopback::broker::topology::BindingChange::Bind {
                queue: v1.clone(),
                key: "50".into(),
            },
            hopback::broker::topology::BindingChange::Bind {
                queue: v2.clone(),
                key: "50".into(),
            },
        ],
    )
    .await
    .unwrap();
    // v2's backlog: what the rollback's drain step moves to v1.
    let n = 50_000;
    let work = dlq_helpers::ids("rb", n);
    publish_ids(&observer, &v2, &work, false).await;

    // A v1 worker (the rollback waits for one): it takes one message and holds it unacked.
    let worker = observer.channel().await.unwrap();
    worker
        .basic_qos(1, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = worker
        .basic_consume(
            v1.as_str().into(),
            "v1 worker".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();

    // The guided rollback, from the CLI, on the cluster profile (the first node is `home`).
    let mut args = cli_cluster_args();
    for a in [
        "--json",
        "rollback",
        &ns,
        "--to",
        "v1",
        "--yes",
        "--verify-window",
        "2s",
    ] {
        args.push(a.to_string());
    }
    let mut c = common::bin();
    c.args(&args);
    let rollback = tokio::task::spawn_blocking(move || c.output().unwrap());
    // Stop the node once the drain is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while dlq_helpers::depth(&observer, &v1).await < 5_000 {
        assert!(Instant::now() < deadline, "the drain never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_before = dlq_helpers::depth(&observer, &v1).await;
    cluster(&["stop-node", &home.to_string()]);
    let out = tokio::time::timeout(Duration::from_secs(300), rollback)
        .await
        .expect("the rollback did not end within 5 minutes of the node loss")
        .unwrap();
    let journaling = ledger_takes_events(&config_without(home)).await;
    cluster(&["start-node", &home.to_string()]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc: serde_json::Value = serde_json::from_str(&report)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {report}\n{err}"));
    let drain = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "drain")
        .cloned()
        .unwrap();
    // The drain lives through the node loss (the mover reconnects to a live node) …
    assert_eq!(drain["state"], "done", "{report}\n{err}");
    let code = out.status.code();
    if journaling {
        // … and so does the rollback: its own connection died with the node, and the next step
        // runs on a fresh one to a live node (done, or verification failed (4) on a v1 whose one
        // worker acks nothing) — no resume needed.
        assert!(
            matches!(code, Some(0) | Some(4)),
            "exit {code:?}\n{report}\n{err}"
        );
    } else {
        // The broker kept the ledger unavailable for a while (its probe after the rollback
        // failed): the rollback finished while it was up, or stopped resumable when a step could
        // not be journaled — and lost nothing either way (below).
        assert!(
            matches!(code, Some(0) | Some(4)) || (code == Some(1) && err.contains("--resume")),
            "exit {code:?}\n{report}\n{err}"
        );
    }
    // The worker holds one message (delivered, unacked): it counts as where it is.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    {
        use futures::StreamExt;
        if let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
            && let Some(id) = d.properties.message_id()
        {
            *seen.entry(id.to_string()).or_default() += 1;
        }
    }
    let _ = worker.close(200, "done".into()).await;
    // Every place a message may rightly be: the version queues, and the namespace's dead-letter
    // and parking queues (a message the node loss made a quorum queue dead-letter is not lost).
    let names = hopback::topology::Namespace::convention(&ns);
    let mut elsewhere = Vec::new();
    for q in [&names.dlq, &names.unrouted, &names.parked] {
        if let Ok(Some(_)) = observer.passive_queue(q).await {
            for (id, c) in count_ids(&observer, &[q]).await {
                elsewhere.push(format!("{id} in {q}"));
                *seen.entry(id).or_default() += c;
            }
        }
    }
    for (id, c) in count_ids(&observer, &[&v1, &v2]).await {
        *seen.entry(id).or_default() += c;
    }
    if !elsewhere.is_empty() {
        eprintln!("outside the version queues: {elsewhere:?}");
    }
    let lost = work.iter().filter(|id| !seen.contains_key(*id)).count();
    let dups: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "rollback drain of {n} through a node loss (stopped at {moved_before} moved): exit {code:?}, moved {}, lost {lost}, {dups} duplicate(s)",
        drain["data"]["moved"]
    );
    assert_eq!(
        lost,
        0,
        "lost: {:?}",
        work.iter()
            .filter(|id| !seen.contains_key(*id))
            .take(5)
            .collect::<Vec<_>>()
    );
    remove_namespace(&observer, &ns, &versions).await;
    observer.close().await;
}

/// Remove the test's namespace; a node that has just come back can keep a quorum queue's delete
/// waiting past the 5 s call timeout, so it is asked up to three times.
async fn remove_namespace(
    session: &hopback::broker::session::Session,
    ns: &str,
    versions: &[String],
) {
    for attempt in 1..=3 {
        match hopback::broker::topology::delete_namespace(session, ns, versions).await {
            Ok(_) => return,
            Err(e) if attempt < 3 => {
                eprintln!("cleanup of {ns}: {e}; again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => panic!("cleanup of {ns} failed three times: {e}"),
        }
    }
}

/// Does the team's ledger take an event now, on the nodes of `cfg` (tried for up to 30 s)? With
/// a node lost, RabbitMQ may keep a stream unavailable: its leader was on that node and the
/// stream coordinator cannot elect another (on this local 4.0.5 cluster the coordinator was seen
/// with two members, so losing either stops it). An operation that cannot journal must then
/// stop and say so (fail closed) — it is not expected to finish.
async fn ledger_takes_events(cfg: &Config) -> bool {
    use hopback::ledger::{EventKind, Ledger};
    let session = common::connect(cfg, "cluster ledger probe").await;
    let ledger = Ledger::open(&session, cfg).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ok = loop {
        let e = ledger
            .event(EventKind::Note, None)
            .reason("cluster test: ledger probe");
        match ledger.append(e).await {
            Ok(_) => break ledger.is_stream(),
            Err(e) if Instant::now() > deadline => {
                eprintln!("the ledger takes no event after the node loss: {e}");
                break false;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    session.close().await;
    ok
}

/// Node number (1..=3) of a node name `cN@host`.
fn node_number(name: &str) -> usize {
    name.strip_prefix('c')
        .and_then(|r| r.split('@').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a cluster node name: {name}"))
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster up, then cargo test --test cluster -- --ignored"]
async fn the_node_running_a_broker_engine_replay_is_lost_and_no_message_is() {
    let _serial = SERIAL.lock().await;
    cluster(&["up"]);
    let cfg = cluster_config();
    let observer = common::connect(&config_without(1), "cluster observer").await;
    let ns = common::unique_ns("clshv");
    let versions: Vec<String> = vec!["v1".into(), "v2".into()];
    // `init` from the CLI: the broker engine counts earlier replays from the ledger, which must
    // hold the namespace's creation.
    let mut args = cli_cluster_args();
    for a in ["init", &ns, "--versions", "v1,v2", "--queue-type", "quorum"] {
        args.push(a.to_string());
    }
    let out = common::bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let names = hopback::topology::Namespace::convention(&ns);
    let (v1, v2) = (format!("{ns}.v1"), format!("{ns}.v2"));
    let n = 60_000;
    let dead = dlq_helpers::ids("bs", n);
    publish_ids(&observer, &v2, &dead, true).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while dlq_helpers::depth(&observer, &names.dlq).await < n as u32 {
        assert!(Instant::now() < deadline, "dead letters did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `dlq replay NS --to v1 --engine broker` from the CLI on the cluster profile.
    let mut args = cli_cluster_args();
    for a in [
        "dlq", "replay", &ns, "--to", "v1", "--engine", "broker", "--yes",
    ] {
        args.push(a.to_string());
    }
    let mut c = common::bin();
    c.args(&args);
    let replay = tokio::task::spawn_blocking(move || c.output().unwrap());

    // Once the shovel runs and has moved some, stop the node it runs on.
    let mgmt = Mgmt::new(&config_without(0).profile).unwrap();
    let ns_names = hopback::topology::Namespace::resolve(&cfg, &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shovel = String::new();
    let node = loop {
        assert!(Instant::now() < deadline, "the shovel never got going");
        if replay.is_finished() {
            let out = replay.await.unwrap();
            panic!(
                "the replay ended before the node could be stopped: {:?}\n{}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if shovel.is_empty()
            && let Ok(Some(name)) = hopback::broker::shovel::move_shovels_of(&mgmt, &ns_names)
                .await
                .map(|v| v.into_iter().next())
        {
            shovel = name;
        }
        if !shovel.is_empty()
            && dlq_helpers::depth(&observer, &v1).await >= 5_000
            && let Ok(Some(s)) = mgmt.shovel_status(&shovel).await
            && let Some(node) = s.node
        {
            break node_number(&node);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The observer must outlive the node loss.
    let observer = if node_of(&observer.node()) == node {
        observer.close().await;
        common::connect(&config_without(node), "cluster observer").await
    } else {
        observer
    };
    cluster(&["stop-node", &node.to_string()]);
    let out = tokio::time::timeout(Duration::from_secs(300), replay)
        .await
        .expect("the replay did not end within 5 minutes of the node loss")
        .unwrap();
    let text = format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("the replay: {text}");
    let journaling = ledger_takes_events(&config_without(node)).await;
    // The shovel is a runtime parameter: it may go on on a live node; wait until it is gone.
    let mgmt = Mgmt::new(&config_without(node).profile).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while mgmt.shovel_exists(&shovel).await.unwrap_or(true) {
        assert!(Instant::now() < deadline, "the shovel never went away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster(&["start-node", &node.to_string()]);
    // Every place a message may rightly be.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for q in [&v1, &v2, &names.dlq, &names.parked, &names.unrouted] {
        if let Ok(Some(_)) = observer.passive_queue(q).await {
            for (id, c) in count_ids(&observer, &[q]).await {
                *seen.entry(id).or_default() += c;
            }
        }
    }
    let lost = dead.iter().filter(|id| !seen.contains_key(*id)).count();
    let dups: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "broker-engine replay of {n} with its shovel's node c{node} lost: lost {lost}, {dups} duplicate(s)\n{text}"
    );
    assert_eq!(lost, 0, "{text}");
    assert!(text.contains("broker engine"), "{text}");
    if journaling {
        // The CLI reports the move done and journaled: its ledger writer, on the lost node too,
        // reconnected to a live one.
        assert_eq!(out.status.code(), Some(0), "{text}");
    } else if out.status.code() != Some(0) {
        // The broker kept the ledger unavailable: the move is done and reported so, and the CLI
        // says the event is not journaled (exit 1), with the hint to record it later.
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("done: moved") && text.contains("the ledger did not confirm the event"),
            "{text}"
        );
    }
    remove_namespace(&observer, &ns, &versions).await;
    observer.close().await;
}

/// The team's ledger is a stream replicated to three nodes: declared without a replica count,
/// `hopback.ledger` was seen with one member on this 3-node 4.0.5 cluster (quorum queues get
/// three), so losing that node lost the incident ledger.
#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster up, then cargo test --test cluster -- --ignored"]
async fn the_ledger_stream_is_replicated_to_three_nodes() {
    use hopback::ledger::{EventKind, Ledger};
    let cfg = cluster_config();
    let stream = format!("hopback.ledger.{}", common::unique_ns("clled"));
    let session = common::connect(&cfg, "ledger replicas").await;
    let ledger = Ledger::open_stream(&session, &cfg, &stream).await;
    assert!(ledger.is_stream(), "{}", ledger.backend_description());
    let e = ledger
        .append(ledger.event(EventKind::Note, None).reason("replicated"))
        .await;
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let info = mgmt.queue(&stream).await.unwrap().expect("the stream");
    hopback::ledger::delete_stream(&session, &stream)
        .await
        .unwrap();
    session.close().await;
    assert!(e.is_ok(), "{e:?}");
    let mut members = info.members.clone().unwrap_or_default();
    members.sort();
    assert_eq!(
        members,
        ["c1@localhost", "c2@localhost", "c3@localhost"],
        "{info:?}"
    );
}

/// The Prometheus endpoint of each node (`scripts/cluster`: 15791-15793).
const PROMETHEUS_PORTS: [u16; 3] = [15791, 15792, 15793];

/// Until `reading(snap)` holds for a fresh snapshot read with `metrics` (up to `limit`), on a
/// session that reconnects to a live node when its own is lost.
async fn until_metrics(
    cfg: &Config,
    metrics: &std::sync::Arc<tokio::sync::Mutex<hopback::broker::metrics::Metrics>>,
    ns: &str,
    limit: Duration,
    reading: impl Fn(&hopback::model::snapshot::FleetSnapshot) -> bool,
) -> hopback::model::snapshot::FleetSnapshot {
    let mgmt = Mgmt::new(&cfg.profile).unwrap();
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(session) =
            hopback::broker::session::connect(&cfg.profile, "cluster test", "test").await
        {
            let opts = CollectOptions {
                namespace: Some(ns.to_string()),
                metrics: Some(metrics.clone()),
                ..Default::default()
            };
            if let Ok(snap) = collect(&session, Some(&mgmt), cfg, &opts).await {
                let ok = reading(&snap);
                last = Some(snap);
                if ok {
                    session.close().await;
                    return last.unwrap();
                }
            }
            session.close().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the metrics never read as expected: {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster up, then cargo test --test cluster -- --ignored"]
async fn the_prometheus_source_reads_every_node_and_goes_on_without_a_lost_one() {
    use hopback::model::metrics::MetricsSource;
    let _serial = SERIAL.lock().await;
    cluster(&["up"]);
    let mut cfg = cluster_config();
    let prom: Vec<String> = PROMETHEUS_PORTS
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/"))
        .collect();
    cfg.profile.prometheus_urls = prom.iter().map(|u| url::Url::parse(u).unwrap()).collect();
    cfg.profile.metrics = hopback::config::MetricsMode::Prometheus;
    let session = common::connect(&cfg, "cluster test").await;
    let ns = common::unique_ns("clup");
    let versions = vec!["v1".to_string(), "v2".to_string()];
    hopback::broker::topology::init(&session, &ns, &versions, QueueType::Quorum)
        .await
        .unwrap();
    // Traffic into both versions on a connection of its own, reconnecting when its node goes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (cfg, ns, stop) = (cfg.clone(), ns.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(s) =
                    hopback::broker::session::connect(&cfg.profile, "cluster producer", "test")
                        .await
                else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                };
                let Ok(ch) = s.channel().await else { continue };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut ok = true;
                    for v in ["v1", "v2"] {
                        let q = hopback::topology::Namespace::convention(&ns)
                            .version_queue(v)
                            .unwrap();
                        ok &= ch
                            .basic_publish(
                                "".into(),
                                q.as_str().into(),
                                Default::default(),
                                b"t",
                                Default::default(),
                            )
                            .await
                            .is_ok();
                    }
                    if !ok || !s.is_connected() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    let metrics = std::sync::Arc::new(tokio::sync::Mutex::new(
        hopback::broker::metrics::Metrics::new(&cfg.profile),
    ));
    let known = |s: &hopback::model::snapshot::FleetSnapshot| {
        s.metrics_source == Some(MetricsSource::Prometheus)
            && s.namespace(&ns).is_some_and(|n| {
                n.versions.len() == 2
                    && n.versions
                        .iter()
                        .all(|v| v.unacked.is_some() && v.rates.is_some_and(|r| r.publish > 0.0))
            })
    };
    until_metrics(&cfg, &metrics, &ns, Duration::from_secs(30), known).await;
    let client = metrics.lock().await.prometheus().cloned().unwrap();
    let all = client.scrape(&|_| false, 0).await;
    assert_eq!(all.nodes.len(), 3, "every node answered: {:?}", all.failed);

    // Lose the first node: the profile's first AMQP, management and Prometheus URL.
    cluster(&["stop-node", "1"]);
    let lost = client.scrape(&|_| false, 0).await;
    let rates_seen = std::cell::Cell::new((f64::MAX, 0.0f64));
    let after = until_metrics(&cfg, &metrics, &ns, Duration::from_secs(60), |s| {
        if let Some(n) = s.namespace(&ns) {
            for r in n.versions.iter().filter_map(|v| v.rates) {
                let (lo, hi) = rates_seen.get();
                rates_seen.set((lo.min(r.publish), hi.max(r.publish)));
            }
        }
        known(s)
    })
    .await;
    cluster(&["start-node", "1"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = producer.await;
    assert_eq!(lost.nodes.len(), 2, "the two live nodes answered");
    assert_eq!(
        lost.failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0],
        "the lost node is the one that failed"
    );
    assert_eq!(
        after.metrics_source,
        Some(MetricsSource::Prometheus),
        "{:?}",
        after.metrics_note
    );
    let (lo, hi) = rates_seen.get();
    assert!(lo >= 0.0, "a rate went negative: {lo}");
    // The producer does at most 20/s per version.
    assert!(hi <= 40.0, "a rate jumped to {hi}/s");
    let session = common::connect(&cfg, "cluster test").await;
    remove_namespace(&session, &ns, &versions).await;
}
