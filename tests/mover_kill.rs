//! Must-show of issue 7: replay 100,000 dead letters to their origin while the mover's AMQP
//! connection is killed 10 times at random points (through the management API). Afterwards every
//! id is in exactly one place (the origin queue or the DLQ), nothing is lost, and the only
//! duplicates are messages that were in flight at a kill — counted and reported by the mover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::collections::HashSet;
use std::time::Duration;

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use hopback::ops::mover::{self, MoveSpec, StopReason, Target};
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
    publish(&s, &format!("{ns}.v2"), &all, &|_| payload.clone(), None, true).await;
    let dlq = format!("{ns}.dlq");
    wait_depth(&s, &dlq, N as u32, 60).await;

    let mut spec = MoveSpec::replay(&ns, Target::Origin);
    spec.connection_purpose = format!("mover {ns}");
    spec.max_reconnect_attempts = 20;
    let conn_name = format!("hopback mover {ns} (test)");
    let (control, handle) = mover::spawn(t.cfg.profile.clone(), "test".into(), spec);

    // The killer: 10 times, wait a random 150–700 ms, then close the mover's connection.
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let mut kills = 0;
    let mut rx = control.subscribe();
    let mut last_killed = String::new();
    while kills < KILLS && !handle.is_finished() {
        let wait = rand::rng().random_range(150..700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // The management API lists a (re)connection with a delay: poll until the mover's current
        // connection shows, then close it.
        while !handle.is_finished() {
            let conns = mgmt.connections().await.unwrap();
            let current = conns.iter().find(|c| {
                c.user_provided_name.as_deref() == Some(conn_name.as_str()) && c.name != last_killed
            });
            if let Some(c) = current {
                if mgmt.close_connection(&c.name, "test kill").await.is_ok() {
                    kills += 1;
                    last_killed = c.name.clone();
                    let moved = rx
                        .borrow_and_update()
                        .as_ref()
                        .map(|p| p.counts.moved)
                        .unwrap_or(0);
                    eprintln!("kill {kills} at moved={moved}");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let report = handle.await.unwrap();
    eprintln!("{report:#?}");
    assert_eq!(kills, KILLS, "the run ended before all kills: {report:?}");
    assert!(
        !matches!(report.stop, StopReason::Failed(_)),
        "{:?}",
        report.stop
    );
    assert!(report.counts.reconnects >= KILLS as u64, "{report:?}");

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
    // The replay completed: everything is back at its origin.
    assert_eq!(c2.len(), N);
    assert_eq!(in_dlq.len(), 0);
    t.cleanup().await;
}
