//! A broker-side lock: an exclusive queue that only one connection can hold. Two operators
//! flipping the same gate at once (two hopbacks, two machines) serialise on it instead of
//! interleaving their bind/unbind steps into a doubly bound queue. The broker frees it when the
//! holder's connection closes, so a crashed hopback never leaves it taken.
//!
//! Anyone with configure permission on the name can also declare it as something else — a
//! durable queue that no connection owns — and then no flip can take it, ever. [`inspect`] reads
//! what holds it (management API), so callers can name the holder; [`remove_squatter`] deletes a
//! queue that is not exclusive (over AMQP, which can never delete another connection's
//! exclusive queue, so a live lock that replaced it in the meantime is safe).

use std::time::{Duration, Instant};

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::mgmt::{Mgmt, MgmtError};
use super::session::{BrokerError, CALL_TIMEOUT, Session, timed};
use crate::model::gate_lock::GateLock;

/// A held lock; [`BrokerLock::release`] gives it back (dropping it frees it with the connection).
pub struct BrokerLock {
    ch: lapin::Channel,
    name: String,
    password: String,
    /// Taken by a flip on a connection that [`hold`]s it for longer: releasing it leaves it held.
    borrowed: bool,
}

impl std::fmt::Debug for BrokerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerLock")
            .field("name", &self.name)
            .finish()
    }
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another connection holds it (still after waiting `waited`).
    Held {
        /// The lock's queue.
        name: String,
        /// How long we waited for it.
        waited: Duration,
    },
    /// The broker refused or failed the declare (e.g. no CONFIGURE permission on the name).
    Broker(BrokerError),
}

/// Take the lock `name`, waiting up to `wait` while another connection holds it.
pub async fn acquire(
    session: &Session,
    name: &str,
    wait: Duration,
) -> Result<BrokerLock, LockError> {
    let started = Instant::now();
    // A connection that holds the lock for its lifetime (a canary) passes its own flips through:
    // declaring an exclusive queue again succeeds only on the connection that owns it.
    let borrowed = session.holds_lock(name);
    loop {
        let ch = session.channel().await.map_err(LockError::Broker)?;
        let declared = timed(
            "declaring the lock queue",
            CALL_TIMEOUT,
            session.password(),
            ch.queue_declare(
                name.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        match declared {
            Ok(_) => {
                return Ok(BrokerLock {
                    ch,
                    name: name.to_string(),
                    password: session.password().to_string(),
                    borrowed,
                });
            }
            // 405 RESOURCE_LOCKED: another connection's exclusive queue (the channel is closed).
            Err(BrokerError::Locked(_)) => {
                if started.elapsed() >= wait {
                    return Err(LockError::Held {
                        name: name.to_string(),
                        waited: started.elapsed(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "".into())).await;
                return Err(LockError::Broker(session.explain(e)));
            }
        }
    }
}

impl BrokerLock {
    /// Give the lock back (delete the queue, close the channel). Errors are ignored: the broker
    /// frees an exclusive queue with its connection anyway.
    pub async fn release(self) {
        if self.borrowed {
            let _ = tokio::time::timeout(CALL_TIMEOUT, self.ch.close(200, "".into())).await;
            return;
        }
        let _ = timed(
            "deleting the lock queue",
            CALL_TIMEOUT,
            &self.password,
            self.ch
                .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default()),
        )
        .await;
        // Bounded: a connection the broker blocked (memory alarm) reads no more frames, and the
        // lock goes with the connection anyway.
        let _ = tokio::time::timeout(CALL_TIMEOUT, self.ch.close(200, "".into())).await;
    }
}

/// Take the lock `name` for as long as `session` lives (or until [`BrokerLock::release`]): a
/// long operation that owns a gate for its whole run (a canary). Flips made on the same session
/// take it through [`acquire`] and leave it held; anyone else's find it held.
pub async fn hold(session: &Session, name: &str) -> Result<BrokerLock, LockError> {
    let lock = acquire(session, name, Duration::ZERO).await?;
    session.set_lock_held(name, true);
    Ok(lock)
}

/// Give back a lock taken with [`hold`].
pub async fn unhold(session: &Session, lock: BrokerLock) {
    session.set_lock_held(&lock.name, false);
    BrokerLock {
        borrowed: false,
        ..lock
    }
    .release()
    .await;
}

/// What holds the lock `name` now (`None`: nobody — the queue does not exist).
pub async fn inspect(mgmt: &Mgmt, name: &str) -> Result<Option<GateLock>, MgmtError> {
    let Some(q) = mgmt.queue(name).await? else {
        return Ok(None);
    };
    let owner_connection = q.owner_connection().map(str::to_string);
    let owner = match &owner_connection {
        Some(c) => mgmt.connection(c).await.ok().flatten(),
        None => None,
    };
    Ok(Some(GateLock {
        queue: q.name.clone(),
        durable: q.durable.unwrap_or(false),
        exclusive: q.exclusive.unwrap_or(false),
        auto_delete: q.auto_delete.unwrap_or(false),
        owner_connection,
        owner_user: owner.as_ref().map(|c| c.user.clone()),
        owner_client_name: owner.and_then(|c| c.user_provided_name),
        messages: q.messages,
        consumers: q.consumers,
    }))
}

/// Delete the lock queue `name` if it is not exclusive to another connection: the broker
/// refuses (RESOURCE_LOCKED) to delete another connection's exclusive queue over AMQP. Returns
/// the number of messages it held.
pub async fn remove_squatter(session: &Session, name: &str) -> Result<u32, BrokerError> {
    let ch = session.channel().await?;
    let r = timed(
        "deleting the squatting lock queue",
        CALL_TIMEOUT,
        session.password(),
        ch.queue_delete(name.into(), QueueDeleteOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "".into())).await;
    r.map_err(|e| session.explain(e))
}
