//! A broker-side lock: an exclusive queue that only one connection can hold. Two operators
//! flipping the same gate at once (two hopbacks, two machines) serialise on it instead of
//! interleaving their bind/unbind steps into a doubly bound queue. The broker frees it when the
//! holder's connection closes, so a crashed hopback never leaves it taken.

use std::time::{Duration, Instant};

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::session::{BrokerError, CALL_TIMEOUT, Session, timed};

/// A held lock; [`BrokerLock::release`] gives it back (dropping it frees it with the connection).
pub struct BrokerLock {
    ch: lapin::Channel,
    name: String,
    password: String,
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
                });
            }
            // 405 RESOURCE_LOCKED: another connection's exclusive queue (the channel is closed).
            Err(BrokerError::Other(text)) if text.contains("RESOURCE_LOCKED") => {
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
