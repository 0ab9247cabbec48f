//! Must-show of issue 7: replay 100,000 dead letters to their origin while the mover's AMQP
//! connection is killed 10 times at random points. Afterwards every
//! id is in exactly one place (the origin queue or the DLQ), nothing is lost, and the only
//! duplicates are messages that were in flight at a kill — counted and reported by the mover.
//!
//! Kills mix the two ways a connection dies in production: the management API's
//! `DELETE /api/connections/{name}` (found by the mover's connection name) and an abrupt socket
//! drop (the mover connects through a small TCP proxy the test can cut). The management API lists
//! a new connection only after its ~5 s stats interval, so the socket drops give the random points
//! in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::collections::HashSet;
use std::time::Duration;

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::mover::{self, MoveSpec, StopReason, Target};
use hopback::broker::topology::QueueType;
use rand::Rng;

const N: usize = 100_000;
const KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_100k_with_10_connection_kills_loses_nothing() {
    let t = TestNs::new("kill", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = t.session.clone();
    let all = ids("k", N);
    let payload = vec![b'x'; 256];
    publish(
        &s,
        &format!("{ns}.v2"),
        &all,
        &|_| payload.clone(),
        None,
        true,
    )
    .await;
    let dlq = format!("{ns}.dlq");
    wait_depth(&s, &dlq, N as u32, 60).await;

    let proxy = Proxy::amqp().await;
    let profile = profile_via(&proxy, &t.cfg);
    let mut spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Origin,
    );
    spec.connection_purpose = format!("mover {ns}");
    spec.max_reconnect_attempts = 20;
    // Paced so that ten kill epochs always fit in the run (unpaced, 100k can finish in ~6 s,
    // before the tenth kill): ≥ 40 s of moving. Each of the four kills through the management
    // API may wait ~5 s for its stats to list the new connection; at 5,000/s (20 s) a run on
    // RabbitMQ 4.0.5 once drained before the tenth kill.
    spec.rate_per_s = Some(2_500.0);
    let conn_name = format!("hopback mover {ns} (test)");
    let (control, handle) = mover::spawn(profile, "test".into(), spec);

    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let mut kills = 0;
    let mut mgmt_kills = 0;
    let mut rx = control.subscribe();
    let mut last_killed = String::new();
    while kills < KILLS && !handle.is_finished() {
        // A random point of a *running* epoch: connected and moving since the last kill.
        let before = rx
            .borrow_and_update()
            .as_ref()
            .map(|p| p.counts.moved)
            .unwrap_or(0);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let p = rx.borrow_and_update().clone();
            if handle.is_finished()
                || p.is_some_and(|p| {
                    p.connected && p.counts.reconnects >= kills as u64 && p.counts.moved > before
                })
            {
                break;
            }
        }
        let wait = rand::rng().random_range(50..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let mut done = false;
        if kills % 3 == 0 {
            // Through the management API: it lists a (re)connection only after its stats
            // interval, so poll for the current one for a while.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            while !done && !handle.is_finished() && tokio::time::Instant::now() < deadline {
                let conns = mgmt.connections().await.unwrap();
                let current = conns.iter().find(|c| {
                    c.user_provided_name.as_deref() == Some(conn_name.as_str())
                        && c.name != last_killed
                });
                if let Some(c) = current {
                    done = mgmt.close_connection(&c.name, "test kill").await.is_ok();
                    if done {
                        mgmt_kills += 1;
                        last_killed = c.name.clone();
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if !done {
            done = proxy.cut() > 0;
        }
        if done {
            kills += 1;
            let moved = rx
                .borrow_and_update()
                .as_ref()
                .map(|p| p.counts.moved)
                .unwrap_or(0);
            eprintln!("kill {kills} at moved={moved} (management API kills so far: {mgmt_kills})");
        }
    }
    let report = handle.await.unwrap();
    eprintln!("{report:#?}");
    assert!(
        !matches!(report.stop, StopReason::Failed(_)),
        "{:?}",
        report.stop
    );

    // Every id in exactly one place: the origin (v2) or the DLQ; duplicates only in v2, and no
    // more than the mover reported as possible duplicates.
    let in_v2 = drain_ids(&s, &format!("{ns}.v2")).await;
    let in_dlq = drain_ids(&s, &dlq).await;
    let c2 = counts(&in_v2);
    let cd = counts(&in_dlq);
    let expected: HashSet<&String> = all.iter().collect();
    let lost: Vec<&&String> = expected
        .iter()
        .filter(|id| !c2.contains_key(**id) && !cd.contains_key(**id))
        .collect();
    let both: Vec<&String> = c2.keys().filter(|id| cd.contains_key(*id)).collect();
    let unexpected: Vec<&String> = c2
        .keys()
        .chain(cd.keys())
        .filter(|id| !expected.contains(id))
        .collect();
    let duplicated: usize = c2.values().chain(cd.values()).map(|n| n - 1).sum();
    eprintln!(
        "v2 {} (distinct {}), dlq {}, lost {}, in both {}, duplicated {}, reported possible duplicates {}",
        in_v2.len(),
        c2.len(),
        in_dlq.len(),
        lost.len(),
        both.len(),
        duplicated,
        report.counts.possible_duplicates
    );
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    assert!(unexpected.is_empty());
    assert!(both.is_empty(), "in both places: {both:?}");
    assert!(
        duplicated as u64 <= report.counts.possible_duplicates,
        "{duplicated} duplicates but only {} reported",
        report.counts.possible_duplicates
    );
    assert_eq!(kills, KILLS, "the run ended before all kills: {report:?}");
    assert!(mgmt_kills >= 1, "no kill went through the management API");
    assert!(report.counts.reconnects >= KILLS as u64, "{report:?}");
    // The replay completed: everything is back at its origin.
    assert_eq!(c2.len(), N);
    assert_eq!(in_dlq.len(), 0);
    t.cleanup().await;
}
