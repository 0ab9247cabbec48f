//! One run of the mover, epoch by epoch (docs/architecture.md, "Parts"): connect, consume the
//! source, publish with confirms, ack what the broker confirmed, and reconnect when a connection
//! dies. The types, the spec and the control live in the parent module.

use super::*;
use crate::broker::amqp::{consume_on, declare_queue};

impl Runner<'_> {
    pub(super) async fn run_all(&mut self, profile: &Profile, operator: &str) -> StopReason {
        let mut attempt = 0u32;
        let mut first = true;
        loop {
            let session = match connect(profile, &self.spec.connection_purpose, operator).await {
                Ok(s) => s,
                Err(e) if fatal(&e) || first => return StopReason::Failed(e.to_string()),
                Err(e) => {
                    attempt += 1;
                    if attempt > self.spec.max_reconnect_attempts {
                        return StopReason::Failed(format!(
                            "gave up after {attempt} reconnect attempts: {e}"
                        ));
                    }
                    tracing::warn!(attempt, error = %e, "mover: reconnect failed");
                    tokio::time::sleep(backoff_delay(attempt)).await;
                    continue;
                }
            };
            let publisher = if self.spec.separate_publish_connection {
                let purpose = format!("{} publish", self.spec.connection_purpose);
                match connect(profile, &purpose, operator).await {
                    Ok(p) => p,
                    Err(e) => {
                        session.close().await;
                        if fatal(&e) || first {
                            return StopReason::Failed(e.to_string());
                        }
                        attempt += 1;
                        if attempt > self.spec.max_reconnect_attempts {
                            return StopReason::Failed(format!(
                                "gave up after {attempt} reconnect attempts: {e}"
                            ));
                        }
                        tokio::time::sleep(backoff_delay(attempt)).await;
                        continue;
                    }
                }
            } else {
                session.clone()
            };
            if first {
                if let Err(e) = self.preflight(&session).await {
                    publisher.close().await;
                    session.close().await;
                    return StopReason::Failed(e.to_string());
                }
                first = false;
            }
            self.progressed = false;
            let end = self.epoch(&session, &publisher).await;
            session.close().await;
            publisher.close().await;
            match end {
                EpochEnd::Finished(_) if std::mem::take(&mut self.again) => {
                    // A quarantine ended the epoch: carry on with a fresh one.
                    if self.control.state() == RunState::Stopped {
                        return StopReason::Stopped;
                    }
                    attempt = 0;
                }
                EpochEnd::Finished(r) => return r,
                EpochEnd::Lost(e) if fatal(&e) => return StopReason::Failed(e.to_string()),
                EpochEnd::Lost(e) => {
                    if self.control.state() == RunState::Stopped {
                        return StopReason::Stopped;
                    }
                    if self.progressed {
                        attempt = 0;
                    }
                    attempt += 1;
                    if attempt > self.spec.max_reconnect_attempts {
                        return StopReason::Failed(format!(
                            "gave up after {attempt} reconnect attempts: {e}"
                        ));
                    }
                    self.counts.reconnects += 1;
                    tracing::warn!(error = %e, attempt, "mover: connection lost; reconnecting");
                    self.send_progress(false, true);
                    tokio::time::sleep(backoff_delay(attempt - 1)).await;
                }
            }
        }
    }

    /// Check the source and the target before touching anything.
    async fn preflight(&mut self, session: &Session) -> Result<(), BrokerError> {
        let q = &self.spec.source_queue;
        let depth = session.passive_queue(q).await?.ok_or_else(|| {
            BrokerError::NotFound(format!(
                "source queue `{}` does not exist",
                crate::text::sanitize(q)
            ))
        })?;
        self.initial_depth = u64::from(depth.ready);
        match &self.spec.target {
            Target::Queue(t) => {
                if session.passive_queue(t).await?.is_none() {
                    return Err(BrokerError::NotFound(format!(
                        "target queue `{}` does not exist; nothing was moved",
                        crate::text::sanitize(t)
                    )));
                }
                if t == q {
                    return Err(BrokerError::Other(
                        "the source and the target are the same queue".into(),
                    ));
                }
            }
            Target::Exchange(x) => {
                if !session.exchange_exists(x).await? {
                    return Err(BrokerError::NotFound(format!(
                        "target exchange `{}` does not exist; nothing was moved",
                        crate::text::sanitize(x)
                    )));
                }
            }
            Target::Origin => {}
        }
        Ok(())
    }

    fn total(&self) -> Option<u64> {
        let budget = match self.spec.budget {
            Budget::InitialDepth => Some(self.initial_depth),
            Budget::UntilEmpty => None,
        };
        match (budget, self.spec.limit) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        }
    }

    pub(super) fn send_progress(&mut self, connected: bool, force: bool) {
        if !force && self.last_progress.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_progress = Instant::now();
        let done = self.counts.moved + self.counts.parked;
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = done as f64 / secs;
        let total = self.total();
        let eta_s = total
            .filter(|_| rate > 0.0)
            .map(|t| t.saturating_sub(done) as f64 / rate);
        self.control.progress.send_replace(Some(MoveProgress {
            counts: self.counts.clone(),
            total,
            rate_per_s: rate,
            eta_s,
            state: self.control.state(),
            connected,
        }));
    }

    async fn ensure_park_queue(
        &mut self,
        session: &Session,
        name: &str,
    ) -> Result<(), BrokerError> {
        if self.park_declared {
            return Ok(());
        }
        declare_queue(
            session,
            "queue.declare (park queue)",
            name,
            true,
            FieldTable::default(),
        )
        .await?;
        self.park_declared = true;
        Ok(())
    }

    async fn origin_exists(&mut self, session: &Session, q: &str) -> Result<bool, BrokerError> {
        if let Some(ok) = self.origin_ok.get(q) {
            return Ok(*ok);
        }
        let ok = session.passive_queue(q).await?.is_some();
        self.origin_ok.insert(q.to_string(), ok);
        Ok(ok)
    }

    /// One connection's worth of moving.
    async fn epoch(&mut self, session: &Arc<Session>, publisher: &Arc<Session>) -> EpochEnd {
        match self.epoch_inner(session, publisher).await {
            Ok(r) => EpochEnd::Finished(r),
            Err(e) => EpochEnd::Lost(publisher.explain(session.explain(e))),
        }
    }

    async fn epoch_inner(
        &mut self,
        session: &Arc<Session>,
        publisher: &Arc<Session>,
    ) -> Result<StopReason, BrokerError> {
        let pw = session.password().to_string();
        let spec = self.spec;
        let consume_ch = session.channel().await?;
        let publish_ch = publisher.confirm_channel().await?;
        let needs_hold = !spec.filter.is_empty() || spec.target == Target::Origin;
        let prefetch = if needs_hold {
            u16::try_from(u32::from(spec.prefetch) + hold_allowance(spec.prefetch))
                .unwrap_or(u16::MAX)
        } else {
            spec.prefetch
        };
        let tag = format!("hopback-mover-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = consume_on(
            session,
            &consume_ch,
            &spec.source_queue,
            &tag,
            Some(prefetch),
            false,
        )
        .await?;
        self.send_progress(true, true);

        // Published messages awaiting their confirms, oldest first; `awaiting` holds each one's
        // delivery and publish time in the same order (FuturesOrdered yields in push order).
        let mut window: FuturesOrdered<ConfirmFuture> = FuturesOrdered::new();
        let mut awaiting: std::collections::VecDeque<(InFlight, Instant)> =
            std::collections::VecDeque::new();
        // One timer for the whole window (not one per message): on each tick, the oldest
        // message's confirm must not be older than CONFIRM_TIMEOUT.
        let mut confirm_clock = tokio::time::interval(CONFIRM_CHECK_EVERY);
        confirm_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut acks: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        // Confirmed messages waiting to be acked together (one `basic.ack multiple`).
        let mut batch: Vec<(Acker, bool, u64)> = Vec::new();
        let ack_batch = (spec.confirm_window / 4).max(1);
        // Messages covered by the ack futures in `acks`.
        let mut acks_msgs = 0u64;
        // Acks handed to the channel but not yet proven processed: (moved, parked).
        let mut unsynced = (0u64, 0u64);
        // A sync round trip in progress and the acks it covers.
        let mut sync: FuturesUnordered<futures::future::BoxFuture<'static, bool>> =
            FuturesUnordered::new();
        let mut syncing = (0u64, 0u64);
        let sync_every = (spec.confirm_window as u64 / 2).max(1);
        // Messages held unacked this epoch (they go back to the source when the channel closes).
        let mut held: Vec<Acker> = Vec::new();
        let mut fatal_error: Option<String> = None;
        let mut lost: Option<BrokerError> = None;
        let mut consuming = true;
        let mut finish: Option<StopReason> = None;
        // An unreadable message met this epoch: quarantined once the rest is settled.
        let mut suspect: Option<(Acker, u64, quarantine::Suspect)> = None;

        loop {
            let state = self.control.state();
            // Quarantined messages are done with too (the broker moved them to the parking queue).
            let done = self.counts.moved + self.counts.parked + self.counts.quarantined;
            let pending = unsynced.0 + unsynced.1 + syncing.0 + syncing.1;
            let acks_pending = acks_msgs;
            let in_flight = window.len() as u64 + batch.len() as u64 + acks_pending + pending;
            if consuming {
                if state == RunState::Stopped {
                    consuming = false;
                    finish.get_or_insert(StopReason::Stopped);
                } else if fatal_error.is_some() || lost.is_some() {
                    consuming = false;
                } else if spec.limit.is_some_and(|l| done + in_flight >= l) {
                    consuming = false;
                    finish.get_or_insert(StopReason::LimitReached);
                } else if self.budget_hit {
                    consuming = false;
                    finish.get_or_insert(StopReason::BudgetReached);
                } else if spec.budget == Budget::InitialDepth
                    && spec.filter.is_empty()
                    && held.is_empty()
                    && self.initial_depth > 0
                    && done + in_flight >= self.initial_depth
                {
                    // Every message that was in the source at the start is moved or on its way
                    // (nothing held, no filter: each delivery so far was one of them): done,
                    // without waiting `idle_timeout` for a quiet source.
                    consuming = false;
                    finish.get_or_insert(StopReason::BudgetReached);
                }
            }
            // Prove the acks so far reached the broker: a synchronous call on the same channel
            // is answered only after every earlier frame (our acks) was processed.
            if !batch.is_empty()
                && (batch.len() >= ack_batch || window.is_empty() || lost.is_some())
            {
                if lost.is_some() {
                    self.counts.possible_duplicates += batch.len() as u64;
                    batch.clear();
                } else {
                    acks_msgs += batch.len() as u64;
                    flush_acks(
                        &mut acks,
                        &consume_ch,
                        std::mem::take(&mut batch),
                        held.is_empty(),
                    );
                }
            }
            let quiet = window.is_empty() && acks.is_empty();
            if sync.is_empty()
                && lost.is_none()
                && unsynced.0 + unsynced.1 > 0
                && (unsynced.0 + unsynced.1 >= sync_every || quiet)
            {
                syncing = std::mem::take(&mut unsynced);
                let ch = consume_ch.clone();
                sync.push(
                    async move {
                        matches!(
                            tokio::time::timeout(
                                CALL_TIMEOUT,
                                ch.basic_qos(prefetch, BasicQosOptions::default())
                            )
                            .await,
                            Ok(Ok(()))
                        )
                    }
                    .boxed(),
                );
            }
            if !consuming && quiet && sync.is_empty() && (unsynced == (0, 0) || lost.is_some()) {
                break;
            }
            if consuming && state == RunState::Paused && quiet && sync.is_empty() {
                self.send_progress(true, true);
                let mut rx = self.control.state.subscribe();
                // Wake up regularly so a dead connection is noticed while paused.
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
                if !session.is_connected() {
                    return Err(BrokerError::Other("connection lost while paused".into()));
                }
                continue;
            }
            let can_take = consuming
                && state == RunState::Running
                && window.len() < spec.confirm_window.max(1);
            tokio::select! {
                biased;
                Some(ok) = sync.next(), if !sync.is_empty() => {
                    let (m, p) = std::mem::take(&mut syncing);
                    if ok {
                        self.progressed = true;
                        self.counts.moved += m;
                        self.counts.parked += p;
                    } else {
                        self.counts.possible_duplicates += m + p;
                        lost.get_or_insert(BrokerError::Other("the source channel stopped answering".into()));
                    }
                }
                Some((ok, m, p)) = acks.next(), if !acks.is_empty() => {
                    acks_msgs -= m + p;
                    if ok && lost.is_none() {
                        unsynced.0 += m;
                        unsynced.1 += p;
                    } else {
                        // The broker will redeliver them although they are in the target already.
                        self.counts.possible_duplicates += m + p;
                        lost.get_or_insert(BrokerError::Other("a source ack did not go out".into()));
                    }
                }
                _ = confirm_clock.tick(), if !window.is_empty() => {
                    if awaiting.front().is_some_and(|(_, at)| at.elapsed() > CONFIRM_TIMEOUT) {
                        // Unknown fate for the whole window: each may be in the target; the
                        // source will redeliver them (the channel closes unacked).
                        self.counts.possible_duplicates += window.len() as u64;
                        window = FuturesOrdered::new();
                        awaiting.clear();
                        lost.get_or_insert(BrokerError::Timeout {
                            what: "publisher confirm".into(),
                            secs: CONFIRM_TIMEOUT.as_secs_f64(),
                        });
                    }
                }
                Some(res) = window.next(), if !window.is_empty() => {
                    let Some((inflight, _)) = awaiting.pop_front() else {
                        // Cannot happen (one entry per future, same order); fail closed.
                        lost.get_or_insert(BrokerError::Other("mover: confirm bookkeeping out of step".into()));
                        continue;
                    };
                    match res {
                        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) if lost.is_none() => {
                            batch.push((inflight.acker, inflight.parked, inflight.tag));
                        }
                        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                            // Confirmed, but the consume side is gone: the ack cannot go out.
                            self.counts.possible_duplicates += 1;
                        }
                        Ok(Confirmation::Ack(Some(ret))) | Ok(Confirmation::Nack(Some(ret))) => {
                            self.counts.returned += 1;
                            let why = format!(
                                "the broker returned a message published to {}: {} {}",
                                match (&spec.target, &inflight.origin) {
                                    (Target::Origin, Some(o)) => format!("origin queue `{}`", crate::text::sanitize(o)),
                                    (t, _) => t.describe(),
                                },
                                ret.reply_code,
                                crate::text::sanitize(ret.reply_text.as_str())
                            );
                            if let Some(o) = &inflight.origin {
                                self.origin_ok.insert(o.clone(), false);
                            }
                            held.push(inflight.acker);
                            if spec.target != Target::Origin {
                                fatal_error.get_or_insert(why);
                            }
                        }
                        Ok(Confirmation::Nack(None)) => {
                            self.counts.returned += 1;
                            held.push(inflight.acker);
                        }
                        Err(e) if matches!(e, BrokerError::AccessRefused(_)) => {
                            // Refused by the broker: it was not published; it stays in the source.
                            held.push(inflight.acker);
                            fatal_error.get_or_insert(e.to_string());
                            lost.get_or_insert(e);
                        }
                        Err(e) => {
                            // Unknown fate: it may be in the target; the source will redeliver.
                            self.counts.possible_duplicates += 1;
                            lost.get_or_insert(e);
                        }
                    }
                }
                next = tokio::time::timeout(spec.idle_timeout, consumer.next()), if can_take => {
                    let delivery = match next {
                        Err(_) => {
                            if window.is_empty()
                                && acks.is_empty()
                                && !self
                                    .delivery_in_transit(session, held.len() < usize::from(spec.prefetch))
                                    .await
                            {
                                consuming = false;
                                finish.get_or_insert(StopReason::Drained);
                            }
                            continue;
                        }
                        Ok(None) => {
                            lost.get_or_insert(BrokerError::Other("the source consumer was cancelled".into()));
                            continue;
                        }
                        Ok(Some(Err(e))) => {
                            lost.get_or_insert(crate::broker::session::classify(&e, &pw));
                            continue;
                        }
                        Ok(Some(Ok(d))) => d,
                    };
                    self.received += 1;
                    self.last_delivery = Instant::now();
                    match self.dispatch(session, &publish_ch, delivery).await {
                        Ok(Dispatch::Held(acker)) => held.push(acker),
                        Ok(Dispatch::Quarantine(s)) => {
                            // Settle everything published before it, then quarantine it.
                            suspect = Some(s);
                            consuming = false;
                        }
                        Ok(Dispatch::Published(inflight, confirm)) => {
                            window.push_back(confirm);
                            awaiting.push_back((inflight, Instant::now()));
                        }
                        Err((e, _)) if fatal(&e) => {
                            fatal_error.get_or_insert(e.to_string());
                        }
                        Err((e, published)) => {
                            if published {
                                self.counts.possible_duplicates += 1;
                            }
                            lost.get_or_insert(e);
                        }
                    }
                }
            }
            self.send_progress(lost.is_none(), false);
        }
        // Acks whose processing was never proven: the broker may redeliver those messages.
        self.counts.possible_duplicates += unsynced.0 + unsynced.1 + syncing.0 + syncing.1;
        let _ = timed(
            "basic.cancel",
            CALL_TIMEOUT,
            &pw,
            consume_ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await;
        // A stopped or broken run leaves it in the source (the channel's close puts it back).
        if let Some((acker, position, s)) = suspect.take()
            && lost.is_none()
            && fatal_error.is_none()
            && self.control.state() != RunState::Stopped
        {
            // Back in the source, ahead of everything still held on this channel (kept unacked
            // until the quarantine is over, so the broker hands out this one next).
            let put_back = matches!(
                tokio::time::timeout(
                    CALL_TIMEOUT,
                    acker.nack(lapin::options::BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                )
                .await,
                Ok(Ok(true))
            );
            if put_back {
                self.quarantine(session, position, s).await;
                self.progressed = true;
                if finish.is_none() {
                    self.again = true;
                }
            } else {
                lost.get_or_insert(BrokerError::Other(
                    "could not put an unreadable message back to quarantine it".into(),
                ));
            }
        }
        drop(held);
        let _ = tokio::time::timeout(CALL_TIMEOUT, publish_ch.close(200, "done".into())).await;
        let _ = tokio::time::timeout(CALL_TIMEOUT, consume_ch.close(200, "done".into())).await;
        if let Some(why) = fatal_error {
            return Ok(StopReason::Failed(why));
        }
        if let Some(e) = lost {
            return Err(e);
        }
        Ok(finish.unwrap_or(StopReason::Drained))
    }

    /// Whether a quiet consumer may still be receiving a delivery: a large message over a slow
    /// link (or a busy box) can take longer than `idle_timeout` to arrive, and ending then would
    /// report "drained, moved 0" with the message still in the source. The broker counts a
    /// message it is sending us as unacked, not ready, so: nothing ready, we are the source's only
    /// consumer, and fewer deliveries arrived than the source held at the start — the rest can
    /// only be on their way to us (also with messages ready, while our prefetch has room).
    /// Waits at most [`IN_TRANSIT_MAX`] after the last delivery (a message that expired or was
    /// taken by a consumer that has since left is never coming).
    async fn delivery_in_transit(&mut self, session: &Session, prefetch_room: bool) -> bool {
        if self.received >= self.initial_depth || self.last_delivery.elapsed() > IN_TRANSIT_MAX {
            return false;
        }
        match session.passive_queue(&self.spec.source_queue).await {
            Ok(Some(q)) => q.consumers == 1 && (q.ready == 0 || prefetch_room),
            _ => false,
        }
    }

    /// What to do with a message whose properties could not be read: never publish it. The
    /// first time, quarantine it (when it matches the filter, judged on what could be read);
    /// one met again (the quarantine failed, or left a copy behind) is held and reported, so a
    /// run never loops on it.
    fn unreadable(&mut self, d: lapin::message::Delivery, reason: String) -> Dispatch {
        let position = self.received.saturating_sub(1);
        let digest = quarantine::body_sha256(&d.data);
        let body_len = d.data.len();
        let note = |runner: &mut Self, outcome: QuarantineOutcome| {
            runner.unreadable.push(UnreadableMessage {
                queue: runner.spec.source_queue.clone(),
                position,
                reason: reason.clone(),
                body_sha256: digest.clone(),
                body_len,
                outcome,
            });
        };
        if !self.spec.filter.is_empty() {
            // Judged on what could be read: a condition on something left out does not match,
            // so such a message stays where it is.
            let view = message_view(0, &d.properties, d.data.clone(), body_len, d.redelivered);
            if !self.spec.filter.matches(&self.spec.namespace, &view) {
                if !self.unreadable_seen.contains_key(&digest) {
                    self.unreadable_seen.insert(digest.clone(), false);
                    note(self, QuarantineOutcome::NotSelected);
                }
                self.counts.skipped_by_filter += 1;
                return Dispatch::Held(d.acker);
            }
        }
        let why = match (
            self.unreadable_seen.get(&digest),
            &self.spec.quarantine_queue,
        ) {
            (Some(true), _) => Some(
                "met again after one with the same body was quarantined (an identical message, or a copy the broker left behind): not moved twice"
                    .to_string(),
            ),
            // Already reported, and held again after a reconnect.
            (Some(false), _) => None,
            (None, None) => Some("this move has no quarantine queue".to_string()),
            (None, Some(q)) if *q == self.spec.source_queue => {
                Some("it is in the quarantine queue already".to_string())
            }
            (None, Some(_)) => {
                return Dispatch::Quarantine((
                    d.acker,
                    position,
                    quarantine::Suspect {
                        body: d.data,
                        reason,
                    },
                ));
            }
        };
        if let Some(why) = why {
            self.unreadable_seen.insert(digest.clone(), false);
            self.counts.unreadable_left += 1;
            note(self, QuarantineOutcome::Left { why });
        }
        Dispatch::Held(d.acker)
    }

    /// Have the broker move the suspect (already put back in the source) to the quarantine
    /// queue, and record what became of it.
    async fn quarantine(&mut self, session: &Session, position: u64, s: quarantine::Suspect) {
        let digest = quarantine::body_sha256(&s.body);
        let started = Instant::now();
        let result = self.try_quarantine(session, &s).await;
        tracing::info!(
            queue = %self.spec.source_queue,
            position,
            ok = result.is_ok(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "mover: quarantine of an unreadable message"
        );
        let outcome = match result {
            Ok(queue) => {
                self.counts.quarantined += 1;
                QuarantineOutcome::Quarantined { queue }
            }
            Err(why) => {
                self.counts.unreadable_left += 1;
                QuarantineOutcome::Left { why }
            }
        };
        self.unreadable_seen.insert(
            digest.clone(),
            matches!(outcome, QuarantineOutcome::Quarantined { .. }),
        );
        self.unreadable.push(UnreadableMessage {
            queue: self.spec.source_queue.clone(),
            position,
            reason: s.reason,
            body_sha256: digest,
            body_len: s.body.len(),
            outcome,
        });
        self.send_progress(true, true);
    }

    async fn try_quarantine(
        &mut self,
        session: &Session,
        s: &quarantine::Suspect,
    ) -> Result<String, String> {
        let Some(park) = self.spec.quarantine_queue.clone() else {
            return Err("this move has no quarantine queue".into());
        };
        if self.mgmt.is_none() {
            self.mgmt = Some(crate::broker::mgmt::Mgmt::new(self.profile).map_err(|e| {
                format!("the broker moves it through the management API, which is unusable: {e}")
            })?);
        }
        let Some(mgmt) = self.mgmt.as_ref() else {
            return Err("the management API is not configured".into());
        };
        if session.passive_queue(&park).await.ok().flatten().is_none() {
            declare_queue(
                session,
                "queue.declare (quarantine queue)",
                &park,
                true,
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot declare `{}`: {e}", crate::text::sanitize(&park)))?;
        }
        let (shovel_prefix, holding) = quarantine::names(&park);
        let q = quarantine::Quarantine {
            session,
            mgmt,
            source: &self.spec.source_queue,
            park: &park,
            holding,
            shovel_prefix,
        };
        q.run(s).await?;
        Ok(park)
    }

    /// Decide what to do with one delivery and publish it if it goes somewhere.
    /// The error's bool says whether the message may have been published.
    async fn dispatch(
        &mut self,
        session: &Arc<Session>,
        publish_ch: &Channel,
        d: lapin::message::Delivery,
    ) -> Result<Dispatch, (BrokerError, bool)> {
        let spec = self.spec;
        let headers = d.properties.headers().as_ref();
        if let Some(reason) = crate::broker::headers::unreadable_reason(headers) {
            return Ok(self.unreadable(d, reason));
        }
        if !spec.filter.is_empty() {
            let mut view = message_view(
                0,
                &d.properties,
                d.data.clone(),
                d.data.len(),
                d.redelivered,
            );
            if spec.filter.needs_digest() {
                view.digest = Some(crate::broker::identity::digest_of(&d.properties, &d.data));
            }
            if !spec.filter.matches(&spec.namespace, &view) {
                self.counts.skipped_by_filter += 1;
                return Ok(Dispatch::Held(d.acker));
            }
        }
        if spec.budget == Budget::InitialDepth
            && header_string(headers, RUN_HEADER).as_deref() == Some(self.run_id.as_str())
        {
            // It came back during this run (died again, or unroutable again): everything that was
            // in the source at the start has been seen.
            self.budget_hit = true;
            return Ok(Dispatch::Held(d.acker));
        }
        // Both engines' hops count toward the limit; the header carries only this engine's.
        let own_replays = header_u64(headers, REPLAYS_HEADER).unwrap_or(0);
        let replays = crate::broker::headers::replays_of(headers);
        let over_limit = spec.count_replay && !spec.force && replays >= u64::from(spec.max_replays);
        let mut origin = None;
        let (exchange, routing_key, parked) = if over_limit {
            match &spec.park_queue {
                Some(p) => {
                    let p = p.clone();
                    self.ensure_park_queue(session, &p)
                        .await
                        .map_err(|e| (e, false))?;
                    (String::new(), p, true)
                }
                None => {
                    self.counts.refused_replays += 1;
                    return Ok(Dispatch::Held(d.acker));
                }
            }
        } else {
            match &spec.target {
                Target::Queue(q) => (String::new(), q.clone(), false),
                Target::Exchange(x) => (x.clone(), d.routing_key.as_str().to_string(), false),
                Target::Origin => {
                    let Some(q) = attribute(headers).origin_queue else {
                        self.counts.no_target += 1;
                        return Ok(Dispatch::Held(d.acker));
                    };
                    // `x-first-death-queue` is data anyone who can publish to the DLQ can write:
                    // "to origin" only ever means one of this namespace's own version queues. A
                    // message naming any other queue is parked (or, with no park queue, left).
                    let own = spec
                        .origins
                        .as_ref()
                        .is_some_and(|n| n.version_of_queue(&q).is_some());
                    if !own {
                        self.counts.foreign_origin += 1;
                        let Some(p) = spec.park_queue.clone() else {
                            self.counts.no_target += 1;
                            return Ok(Dispatch::Held(d.acker));
                        };
                        self.ensure_park_queue(session, &p)
                            .await
                            .map_err(|e| (e, false))?;
                        (String::new(), p, true)
                    } else if q == spec.source_queue
                        || !self
                            .origin_exists(session, &q)
                            .await
                            .map_err(|e| (e, false))?
                    {
                        self.counts.no_target += 1;
                        return Ok(Dispatch::Held(d.acker));
                    } else {
                        origin = Some(q.clone());
                        (String::new(), q, false)
                    }
                }
            }
        };
        // What the republished message keeps is `broker::republish`'s decision (its CC/BCC and a
        // foreign user_id moved aside, never routing or failing this publish).
        let stamp = crate::broker::republish::Stamp {
            replays: (spec.count_replay && !parked).then(|| own_replays.saturating_add(1)),
            run: (spec.budget == Budget::InitialDepth && !parked)
                .then_some((RUN_HEADER, self.run_id.as_str())),
        };
        let props = crate::broker::republish::client_properties(
            d.properties,
            &session.profile().username,
            stamp,
        );
        if let Some(rate) = spec.rate_per_s.filter(|r| *r > 0.0) {
            let due = self.started + Duration::from_secs_f64(self.published as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let exchange = short(&exchange).map_err(|e| (e, false))?;
        let routing_key = short(&routing_key).map_err(|e| (e, false))?;
        let ch = publish_ch.clone();
        let data = d.data;
        let pw = session.password().to_string();
        let mut confirm: ConfirmFuture = async move {
            // The first poll (below) puts the frames in the channel's queue, in delivery order;
            // the rest — the frame write and the broker's confirm — is awaited in the window,
            // so the next publish never waits for this one.
            let pending = ch
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &data,
                    props,
                )
                .await
                .map_err(|e| crate::broker::session::classify(&e, &pw))?;
            // A channel the broker closed (ACCESS_REFUSED, NOT_FOUND) fails its confirms with
            // the broker's reason: classified, so a missing permission stops the run at once.
            pending.await.map_err(|e| {
                match crate::broker::session::classify_during(&e, &pw, Some("basic.publish")) {
                    BrokerError::Other(t) => {
                        BrokerError::Other(format!("publisher confirm failed: {t}"))
                    }
                    known => known,
                }
            })
        }
        .boxed();
        match futures::poll!(&mut confirm) {
            std::task::Poll::Ready(Err(e)) => return Err((e, false)),
            // Finished at once: keep the result (a completed future must not be polled again).
            std::task::Poll::Ready(Ok(c)) => confirm = futures::future::ready(Ok(c)).boxed(),
            std::task::Poll::Pending => {}
        }
        self.published += 1;
        Ok(Dispatch::Published(
            InFlight {
                tag: d.delivery_tag,
                acker: d.acker,
                parked,
                origin,
            },
            confirm,
        ))
    }
}

type ConfirmFuture = futures::future::BoxFuture<'static, Result<Confirmation, BrokerError>>;

enum Dispatch {
    Held(Acker),
    Published(InFlight, ConfirmFuture),
    /// Unreadable: settle what was published, then have the broker move it (position, message).
    Quarantine((Acker, u64, quarantine::Suspect)),
}

type AckFuture = futures::future::BoxFuture<'static, (bool, u64, u64)>;

/// Ack confirmed messages; each future yields (ack went out, moved, parked). With nothing held
/// unacked on the channel, one `basic.ack multiple` up to the last tag covers exactly the batch
/// (every lower tag is acked or in it); otherwise each message is acked on its own.
pub(super) fn flush_acks(
    acks: &mut FuturesUnordered<AckFuture>,
    ch: &Channel,
    batch: Vec<(Acker, bool, u64)>,
    nothing_held: bool,
) {
    let parked = batch.iter().filter(|(_, p, _)| *p).count() as u64;
    let moved = batch.len() as u64 - parked;
    if nothing_held && let Some(last) = batch.last().map(|(_, _, t)| *t) {
        let ch = ch.clone();
        acks.push(
            async move {
                let ok = matches!(
                    tokio::time::timeout(
                        CALL_TIMEOUT,
                        ch.basic_ack(last, BasicAckOptions { multiple: true })
                    )
                    .await,
                    Ok(Ok(()))
                );
                (ok, moved, parked)
            }
            .boxed(),
        );
        return;
    }
    for (acker, parked, _) in batch {
        acks.push(
            async move {
                let ok = matches!(
                    tokio::time::timeout(CALL_TIMEOUT, acker.ack(BasicAckOptions::default())).await,
                    Ok(Ok(true))
                );
                (ok, u64::from(!parked), u64::from(parked))
            }
            .boxed(),
        );
    }
}
