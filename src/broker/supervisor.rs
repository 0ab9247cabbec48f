//! A long-lived connection keeper: holds the current [`Session`], publishes a [`ConnState`] the UI
//! can show, and reconnects with exponential backoff and jitter when the connection dies. Failures
//! that retrying cannot fix (wrong password, missing vhost) stop the loop in `Failed` so the console
//! says so instead of hammering the broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{RwLock, watch};

use crate::broker::session::{BrokerError, Session, backoff_delay, connect};
use crate::config::Profile;
use crate::model::ConnState;

/// Keeps one session alive.
#[derive(Clone)]
pub struct Supervisor {
    profile: Profile,
    purpose: String,
    operator: String,
    current: Arc<RwLock<Option<Arc<Session>>>>,
    state_tx: Arc<watch::Sender<ConnState>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Supervisor {
    /// A supervisor that has not connected yet (state `Connecting`).
    pub fn new(profile: Profile, purpose: &str, operator: &str) -> Self {
        let (tx, _) = watch::channel(ConnState::Connecting);
        Self {
            profile,
            purpose: purpose.into(),
            operator: operator.into(),
            current: Arc::default(),
            state_tx: Arc::new(tx),
        }
    }
    /// Watch the connection state.
    pub fn subscribe(&self) -> watch::Receiver<ConnState> {
        self.state_tx.subscribe()
    }
    /// The current state.
    pub fn state(&self) -> ConnState {
        self.state_tx.borrow().clone()
    }
    /// A live session, connecting (with backoff between attempts) until one is up or a permanent
    /// failure (auth, vhost) occurs, or `give_up_after` passes.
    pub async fn session(&self, give_up_after: Duration) -> Result<Arc<Session>, BrokerError> {
        if let Some(s) = self
            .current
            .read()
            .await
            .as_ref()
            .filter(|s| s.is_connected())
        {
            return Ok(s.clone());
        }
        let mut guard = self.current.write().await;
        if let Some(s) = guard.as_ref().filter(|s| s.is_connected()) {
            return Ok(s.clone());
        }
        let had_session = guard.is_some();
        let since = now_ms();
        let deadline = tokio::time::Instant::now() + give_up_after;
        let mut attempt = 0u32;
        loop {
            match connect(&self.profile, &self.purpose, &self.operator).await {
                Ok(s) => {
                    *guard = Some(s.clone());
                    self.state_tx
                        .send_replace(ConnState::Connected { since_ms: now_ms() });
                    return Ok(s);
                }
                Err(e @ (BrokerError::AuthFailed { .. } | BrokerError::VhostDenied { .. })) => {
                    self.state_tx.send_replace(ConnState::Failed {
                        reason: e.to_string(),
                    });
                    return Err(e);
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "broker connection failed; retrying");
                    if had_session
                        || attempt > 1
                        || matches!(self.state(), ConnState::Reconnecting { .. })
                    {
                        self.state_tx.send_replace(ConnState::Reconnecting {
                            since_ms: since,
                            attempt,
                            last_error: e.to_string(),
                        });
                    }
                    let delay = backoff_delay(attempt - 1);
                    if tokio::time::Instant::now() + delay > deadline {
                        self.state_tx.send_replace(ConnState::Reconnecting {
                            since_ms: since,
                            attempt,
                            last_error: e.to_string(),
                        });
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    /// Report that the current session failed (an operation saw a dead channel/connection).
    pub async fn mark_broken(&self, reason: &str) {
        let mut guard = self.current.write().await;
        if guard.take().is_some() {
            self.state_tx.send_replace(ConnState::Reconnecting {
                since_ms: now_ms(),
                attempt: 0,
                last_error: reason.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let d0 = backoff_delay(0).as_millis();
        let d3 = backoff_delay(3).as_millis();
        let d20 = backoff_delay(20).as_millis();
        assert!((187..=313).contains(&d0), "{d0}");
        assert!((1500..=2500).contains(&d3), "{d3}");
        assert!(d20 <= 12_500, "{d20}");
    }
}
