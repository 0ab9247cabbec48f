//! The mover's behaviours against the real broker: replay to origin keeps message_id, headers and
//! properties and counts replays; messages over max_replays are parked; filters and limits hold the
//! rest in place; drains and unrouted replays use the same engine; an unroutable or missing target
//! acks nothing and loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::headers::{REPLAYS_HEADER, attribute, header_string, header_u64};
use hopback::broker::mover::{self, MoveControl, MoveSpec, StopReason, Target};
use hopback::broker::topology::QueueType;
use hopback::model::deadletter::Filter;

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

#[tokio::test]
async fn replay_to_origin_keeps_properties_counts_replays_and_parks_loops() {
    let t = TestNs::new("mvr", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    // 30 dead letters from v2 with a custom header, 10 of them already replayed 3 times.
    let fresh = ids("fresh", 20);
    let looped = ids("loop", 10);
    publish(
        s,
        &format!("{ns}.v2"),
        &fresh,
        &body,
        Some(header("x-exception", "Boom")),
        true,
    )
    .await;
    let mut h = header("x-exception", "Boom");
    h.insert(REPLAYS_HEADER.into(), lapin::types::AMQPValue::LongInt(3));
    publish(s, &format!("{ns}.v2"), &looped, &body, Some(h), true).await;
    wait_depth(s, &format!("{ns}.dlq"), 30, 10).await;

    let spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Origin,
    );
    let report = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    // Every message that was there at the start handled: done without waiting for a quiet source.
    assert_eq!(report.stop, StopReason::BudgetReached, "{report:?}");
    assert_eq!(report.counts.moved, 20);
    assert_eq!(report.counts.parked, 10);
    assert_eq!(report.counts.possible_duplicates, 0);
    assert_eq!(depth(s, &format!("{ns}.dlq")).await, 0);

    let v2 = drain_ids(s, &format!("{ns}.v2")).await;
    let mut got: Vec<String> = v2.iter().map(|(id, _)| id.clone()).collect();
    got.sort();
    assert_eq!(got, fresh);
    for (_, p) in &v2 {
        let hd = p.headers().as_ref();
        assert_eq!(header_u64(hd, REPLAYS_HEADER), Some(1));
        assert_eq!(header_string(hd, "x-exception").as_deref(), Some("Boom"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        // The dead-letter history travels with the message.
        assert_eq!(
            attribute(hd).origin_queue.as_deref(),
            Some(format!("{ns}.v2").as_str())
        );
        // RabbitMQ removes the expiration on dead-lettering, so the replay does not re-expire.
        assert!(p.expiration().is_none());
    }
    let parked = drain_ids(s, &format!("{ns}.parked")).await;
    let mut got: Vec<String> = parked.iter().map(|(id, _)| id.clone()).collect();
    got.sort();
    assert_eq!(got, looped);
    // Parking does not count as a replay.
    assert!(
        parked
            .iter()
            .all(|(_, p)| header_u64(p.headers().as_ref(), REPLAYS_HEADER) == Some(3))
    );
    delete_queues(s, &[&format!("{ns}.parked")]).await;
    t.cleanup().await;
}

#[tokio::test]
async fn filters_and_limit_leave_the_rest_in_place_in_order() {
    let t = TestNs::new("mvf", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let a = ids("a", 30);
    let b = ids("b", 30);
    publish(
        s,
        &format!("{ns}.v1"),
        &a,
        &body,
        Some(header("x-exception", "Timeout")),
        true,
    )
    .await;
    publish(
        s,
        &format!("{ns}.v2"),
        &b,
        &body,
        Some(header("x-exception", "Boom")),
        true,
    )
    .await;
    wait_depth(s, &format!("{ns}.dlq"), 60, 10).await;

    // Only v2's dead letters with exception Boom, at most 25, to v1.
    let mut spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Queue(format!("{ns}.v1")),
    );
    spec.filter = Filter::parse(&["origin=v2".into(), "x-exception=Boom".into()]).unwrap();
    spec.limit = Some(25);
    let report = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    assert_eq!(report.stop, StopReason::LimitReached, "{report:?}");
    assert_eq!(report.counts.moved, 25);
    assert_eq!(report.counts.skipped_by_filter, 30);
    let v1 = drain_ids(s, &format!("{ns}.v1")).await;
    let got: Vec<String> = v1.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, b[..25].to_vec());
    // What is left: all of a (in order), then the last 5 of b.
    let left = drain_ids(s, &format!("{ns}.dlq")).await;
    let left: Vec<String> = left.into_iter().map(|(id, _)| id).collect();
    let mut want = a.clone();
    want.extend_from_slice(&b[25..]);
    assert_eq!(left, want);
    t.cleanup().await;
}

#[tokio::test]
async fn drain_and_unrouted_replay_use_the_same_engine() {
    let t = TestNs::new("mvd", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let work = ids("w", 500);
    publish(s, &format!("{ns}.v2"), &work, &body, None, false).await;
    let spec = MoveSpec::drain(
        &hopback::topology::Namespace::convention(&ns),
        &format!("{ns}.v2"),
        &format!("{ns}.v1"),
    );
    let report = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    assert_eq!(report.stop, StopReason::Drained, "{report:?}");
    assert_eq!(report.counts.moved, 500);
    assert_eq!(depth(s, &format!("{ns}.v2")).await, 0);
    let v1 = drain_ids(s, &format!("{ns}.v1")).await;
    assert_eq!(v1.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(), work);
    // No replay header on a drain.
    assert!(
        v1.iter()
            .all(|(_, p)| header_u64(p.headers().as_ref(), REPLAYS_HEADER).is_none())
    );

    // Unrouted: sits in NS.unrouted; the gate (v1=100) routes it through the entry exchange.
    let lost = ids("u", 200);
    publish(s, &format!("{ns}.unrouted"), &lost, &body, None, false).await;
    let spec = MoveSpec::replay_unrouted(&hopback::topology::Namespace::convention(&ns));
    let report = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    assert_eq!(report.counts.moved, 200, "{report:?}");
    assert_eq!(depth(s, &format!("{ns}.unrouted")).await, 0);
    let v1 = drain_ids(s, &format!("{ns}.v1")).await;
    let mut got: Vec<String> = v1.into_iter().map(|(i, _)| i).collect();
    got.sort();
    assert_eq!(got, lost);
    t.cleanup().await;
}

#[tokio::test]
async fn unroutable_or_missing_target_acks_nothing() {
    let t = TestNs::new("mvu", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let dl = ids("d", 300);
    publish(s, &format!("{ns}.v2"), &dl, &body, None, true).await;
    let dlq = format!("{ns}.dlq");
    wait_depth(s, &dlq, 300, 10).await;

    // 1. A queue that does not exist: refused before anything is consumed.
    let spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Queue(format!("{ns}.nope")),
    );
    let r = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    match &r.stop {
        StopReason::Failed(w) => assert!(w.contains("does not exist"), "{w}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(r.counts.moved, 0);

    // 2. An exchange that routes nowhere (no bindings, no alternate exchange): mandatory
    //    publishes come back as basic.return; the run stops and acks nothing.
    let void = format!("{ns}.void");
    let ch = s.channel().await.unwrap();
    ch.exchange_declare(
        void.as_str().into(),
        lapin::ExchangeKind::Direct,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Exchange(void.clone()),
    );
    let r = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    match &r.stop {
        StopReason::Failed(w) => assert!(w.contains("returned"), "{w}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(r.counts.moved, 0);
    assert!(r.counts.returned >= 1);

    // 3. Origin queue deleted: those messages are held, counted, and stay.
    ch.queue_delete(format!("{ns}.v2").as_str().into(), Default::default())
        .await
        .unwrap();
    let spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Origin,
    );
    let r = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    assert_eq!(r.counts.moved, 0, "{r:?}");
    assert_eq!(r.counts.no_target, 300);
    ch.exchange_delete(void.as_str().into(), Default::default())
        .await
        .unwrap();
    // Nothing lost, order kept.
    let left = drain_ids(s, &dlq).await;
    assert_eq!(left.into_iter().map(|(i, _)| i).collect::<Vec<_>>(), dl);
    t.cleanup().await;
}

#[tokio::test]
async fn pause_resume_and_stop_through_the_control() {
    let t = TestNs::new("mvp", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let work = ids("p", 3000);
    publish(s, &format!("{ns}.v2"), &work, &body, None, false).await;
    let mut spec = MoveSpec::drain(
        &hopback::topology::Namespace::convention(&ns),
        &format!("{ns}.v2"),
        &format!("{ns}.v1"),
    );
    spec.rate_per_s = Some(1000.0);
    let (control, handle) = mover::spawn(t.cfg.profile.clone(), "test".into(), spec);
    let mut rx = control.subscribe();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    control.pause();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let at_pause = rx.borrow_and_update().clone().unwrap().counts.moved;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let still = rx.borrow_and_update().clone().unwrap().counts.moved;
    assert_eq!(at_pause, still, "moved while paused");
    assert!(at_pause > 0 && at_pause < 3000, "{at_pause}");
    control.resume();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    control.stop();
    let r = handle.await.unwrap();
    assert_eq!(r.stop, StopReason::Stopped);
    assert!(r.counts.moved > at_pause && r.counts.moved < 3000, "{r:?}");
    // Nothing lost: every id is in exactly one of the two queues.
    let a = drain_ids(s, &format!("{ns}.v1")).await;
    let b = drain_ids(s, &format!("{ns}.v2")).await;
    assert_eq!(a.len() as u64, r.counts.moved);
    let mut all: Vec<String> = a.into_iter().chain(b).map(|(i, _)| i).collect();
    all.sort();
    assert_eq!(all, work);
    t.cleanup().await;
}

#[tokio::test]
async fn a_delivery_slower_than_the_idle_timeout_is_waited_for_not_reported_drained() {
    // A large message takes longer to arrive than the idle timeout (here 1 ms, in production a
    // slow link): the broker shows it unacked, not ready, while it is on its way to us. The run
    // must wait for it instead of ending "drained, moved 0" with the message still in the source.
    let t = TestNs::new("mvt", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    let big = vec![b'x'; 8 * 1024 * 1024];
    let work = ids("big", 3);
    publish(s, &format!("{ns}.v2"), &work, &|_| big.clone(), None, false).await;
    let mut spec = MoveSpec::drain(
        &hopback::topology::Namespace::convention(&ns),
        &format!("{ns}.v2"),
        &format!("{ns}.v1"),
    );
    spec.idle_timeout = std::time::Duration::from_millis(1);
    let report = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    assert_eq!(report.stop, StopReason::Drained, "{report:?}");
    assert_eq!(report.counts.moved, 3, "{report:?}");
    assert_eq!(depth(s, &format!("{ns}.v2")).await, 0);
    let v1 = drain_ids(s, &format!("{ns}.v1")).await;
    assert_eq!(v1.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(), work);
    t.cleanup().await;
}

/// Issue 18: "to origin" only ever means the namespace's own version queues — a dead letter whose
/// `x-first-death-queue` (or `x-death`) names any other queue is parked and counted, never sent
/// there; the namespace's own dead letters still go home.
#[tokio::test]
async fn replay_to_origin_parks_dead_letters_naming_a_foreign_queue() {
    let t = TestNs::new("mvf", &["v1"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let s = &t.session;
    // A queue outside the namespace that an attacker would like messages pushed into.
    let victim = format!("{ns}-victim");
    s.channel()
        .await
        .unwrap()
        .queue_declare(
            victim.as_str().into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    // 2 genuine dead letters of v1, 3 forged ones claiming to come from the victim.
    publish(s, &format!("{ns}.v1"), &ids("own", 2), &body, None, true).await;
    publish(
        s,
        &format!("{ns}.dlq"),
        &ids("forged", 3),
        &body,
        Some(header("x-first-death-queue", &victim)),
        false,
    )
    .await;
    wait_depth(s, &format!("{ns}.dlq"), 5, 10).await;
    let spec = MoveSpec::replay(
        &hopback::topology::Namespace::convention(&ns),
        Target::Origin,
    );
    let report = mover::run(&t.cfg.profile, "test", &spec, &MoveControl::new()).await;
    assert_eq!(report.counts.moved, 2, "{report:?}");
    assert_eq!(report.counts.foreign_origin, 3, "{report:?}");
    assert_eq!(report.counts.parked, 3, "{report:?}");
    assert_eq!(
        depth(s, &victim).await,
        0,
        "nothing reached the foreign queue"
    );
    assert_eq!(depth(s, &format!("{ns}.v1")).await, 2);
    assert_eq!(depth(s, &format!("{ns}.parked")).await, 3);
    assert_eq!(depth(s, &format!("{ns}.dlq")).await, 0);
    hopback::broker::amqp::delete_queue(s, &victim)
        .await
        .unwrap();
    t.cleanup().await;
}
