//! Quarantine: how a move gets a message it cannot read out of its way without ever
//! republishing it (docs/architecture.md, "Parts"). Its properties came through the parser only
//! in part (`broker::headers::UNREADABLE_HEADER`), so a client republish would lose them; the
//! broker moves it instead, whole.
//!
//! The mover stops consuming, settles everything it published, puts the message back
//! (`nack(requeue)`) while it keeps every other delivery unacked — so the message is the next one
//! the source hands out — and then:
//! 1. a dynamic shovel (`src-delete-after: 1`, `ack-mode: on-confirm`) moves one message from
//!    the source to a holding queue of its own (`topology::quarantine_holding`);
//! 2. the mover reads it there (`basic.get`, put back) and compares body and reason with the
//!    message it met: on a quorum source, or with another consumer on it, the one moved may be
//!    another;
//! 3. a second one-message shovel moves it on to the parking queue — or, when it is another
//!    message, back to the source — and the empty holding queue is deleted.
//!
//! A holding queue that cannot be emptied is left in place and named: nothing is ever lost.

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use serde::Serialize;

use crate::broker::headers::unreadable_reason;
use crate::broker::mgmt::Mgmt;
use crate::broker::session::{CALL_TIMEOUT, Session, short, timed};
use crate::text::sanitize;

/// Prefix of a quarantine's shovels (`hopback-quarantine-TOKEN-N`).
pub const QUARANTINE_SHOVEL_PREFIX: &str = "hopback-quarantine-";
/// Longest wait for a one-message shovel to move its message.
const SHOVEL_WAIT: Duration = Duration::from_secs(30);
/// How often a shovel and the holding queue are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// What became of one message a move could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuarantineOutcome {
    /// The broker moved it, whole, to `queue` (the parking queue).
    Quarantined {
        /// Where it is now.
        queue: String,
    },
    /// It stays in the source (or, when `why` says so, in a holding queue).
    Left {
        /// Why (raw; shown through `crate::text`).
        why: String,
    },
    /// It does not match the move's filter (judged on what could be read): left where it is.
    NotSelected,
}

/// A message a move could not read, named by queue and position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableMessage {
    /// The source queue it was met in.
    pub queue: String,
    /// 0-based: how many deliveries this move had read from the source before it — on its first
    /// pass, its position in the source when the move started (redeliveries after a reconnect
    /// count too).
    pub position: u64,
    /// What the parser left out (raw; shown through `crate::text`).
    pub reason: String,
    /// SHA-256 of its body, hex: what the quarantine checks the moved message against.
    pub body_sha256: String,
    /// Body length in bytes.
    pub body_len: usize,
    /// What became of it.
    pub outcome: QuarantineOutcome,
}

impl UnreadableMessage {
    /// One line, terminal-safe: queue, position, reason and outcome.
    pub fn describe(&self) -> String {
        let outcome = match &self.outcome {
            QuarantineOutcome::Quarantined { queue } => {
                format!("quarantined in `{}`", sanitize(queue))
            }
            QuarantineOutcome::Left { why } => format!("left in place: {}", sanitize(why)),
            QuarantineOutcome::NotSelected => {
                "left in place (not selected by the filter, judged on what could be read)".into()
            }
        };
        format!(
            "unreadable message at position {} of `{}` ({}; {} bytes, body sha256 {}…): {outcome}",
            self.position,
            sanitize(&self.queue),
            crate::text::preview(self.reason.as_bytes(), 1024, 160),
            self.body_len,
            &self.body_sha256[..self.body_sha256.len().min(12)],
        )
    }
}

/// SHA-256 of `body`, hex.
pub fn body_sha256(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The message the mover met and put back, as it must be found again.
pub(super) struct Suspect {
    pub(super) body: Vec<u8>,
    pub(super) reason: String,
}

/// The AMQP URI a shovel in the profile's vhost connects with (`amqp://` alone is the default
/// vhost, whatever vhost the shovel is declared in).
fn vhost_uri(vhost: &str) -> String {
    if vhost == "/" {
        "amqp://".into()
    } else {
        format!(
            "amqp:///{}",
            percent_encoding::utf8_percent_encode(vhost, percent_encoding::NON_ALPHANUMERIC)
        )
    }
}

/// One quarantine: the names it uses and the clients it uses them with.
pub(super) struct Quarantine<'a> {
    pub(super) session: &'a Session,
    pub(super) mgmt: &'a Mgmt,
    pub(super) source: &'a str,
    pub(super) park: &'a str,
    pub(super) holding: String,
    pub(super) shovel_prefix: String,
}

impl Quarantine<'_> {
    /// Move the suspect from the source to the parking queue through the holding queue.
    /// `Err` says where it is instead (the source, or the holding queue) and why.
    pub(super) async fn run(&self, suspect: &Suspect) -> Result<(), String> {
        let stays = |why: String| format!("{why}; it stays in `{}`", sanitize(self.source));
        crate::broker::amqp::declare_queue(
            self.session,
            "queue.declare (quarantine holding queue)",
            &self.holding,
            true,
            Default::default(),
        )
        .await
        .map_err(|e| stays(format!("cannot declare the holding queue: {e}")))?;
        if let Err(why) = self.one_message(1, self.source, &self.holding, 1).await {
            return Err(match self.depth(&self.holding).await {
                Some(0) => {
                    self.delete_holding().await;
                    stays(why)
                }
                _ => self.held_there(&why),
            });
        }
        let same = self
            .is_suspect(suspect)
            .await
            .map_err(|why| self.held_there(&why))?;
        if same {
            self.one_message(2, &self.holding, self.park, 0)
                .await
                .map_err(|why| self.held_there(&why))?;
            self.delete_holding().await;
            return Ok(());
        }
        // Another message came: a quorum source requeues out of order, or someone else took
        // the suspect. Send it back, whole, the same way.
        self.one_message(3, &self.holding, self.source, 0)
            .await
            .map_err(|why| self.held_there(&format!("it moved another message, which {why}")))?;
        self.delete_holding().await;
        Err(stays(
            "the broker handed the quarantine another message (put back)".into(),
        ))
    }

    fn held_there(&self, why: &str) -> String {
        format!(
            "{why}; the message the broker moved is in the holding queue `{}` (move it with `hopback dlq replay` or the management UI)",
            sanitize(&self.holding)
        )
    }

    async fn depth(&self, q: &str) -> Option<u64> {
        self.session
            .passive_queue(q)
            .await
            .ok()
            .flatten()
            .map(|c| u64::from(c.ready))
    }

    async fn delete_holding(&self) {
        let Ok(ch) = self.session.channel().await else {
            return;
        };
        let Ok(name) = short(&self.holding) else {
            return;
        };
        let _ = timed(
            "queue.delete (quarantine holding queue)",
            CALL_TIMEOUT,
            self.session.password(),
            ch.queue_delete(
                name,
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "ok".into())).await;
    }

    /// Read the holding queue's message (and put it back): is it the suspect?
    async fn is_suspect(&self, suspect: &Suspect) -> Result<bool, String> {
        let ch = self
            .session
            .channel()
            .await
            .map_err(|e| format!("cannot read the holding queue: {e}"))?;
        let got = timed(
            "basic.get (quarantine holding queue)",
            CALL_TIMEOUT,
            self.session.password(),
            ch.basic_get(
                short(&self.holding).map_err(|e| e.to_string())?,
                BasicGetOptions { no_ack: false },
            ),
        )
        .await;
        let same = match &got {
            Ok(Some(m)) => {
                m.delivery.data == suspect.body
                    && unreadable_reason(m.delivery.properties.headers().as_ref()).as_deref()
                        == Some(suspect.reason.as_str())
            }
            Ok(None) => false,
            Err(_) => false,
        };
        // Closing the channel puts it back (it was never acked).
        let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "checked".into())).await;
        match got {
            Ok(Some(_)) => {}
            Ok(None) => return Err("the holding queue was empty when read".into()),
            Err(e) => return Err(format!("cannot read the holding queue: {e}")),
        }
        // Back in the holding queue before the next shovel looks.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.depth(&self.holding).await != Some(1) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        Ok(same)
    }

    /// One message from `from` to `to` by a one-message shovel, waited for: the shovel gone
    /// (it removes itself after its message) and the holding queue at `holding_after` (1 once
    /// it received the message, 0 once it gave it on).
    async fn one_message(
        &self,
        step: u32,
        from: &str,
        to: &str,
        holding_after: u64,
    ) -> Result<(), String> {
        let name = format!("{}-{step}", self.shovel_prefix);
        let uri = vhost_uri(&self.session.profile().vhost);
        let def = serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": uri,
            "src-queue": from,
            "src-prefetch-count": 1,
            "src-delete-after": 1,
            "dest-protocol": "amqp091",
            "dest-uri": uri,
            "dest-queue": to,
            "ack-mode": "on-confirm",
        });
        self.mgmt
            .put_shovel(&name, def)
            .await
            .map_err(|e| format!("the broker refused the shovel that would move it ({e})"))?;
        let deadline = Instant::now() + SHOVEL_WAIT;
        loop {
            let gone = matches!(self.mgmt.shovel_exists(&name).await, Ok(false));
            if gone && self.depth(&self.holding).await == Some(holding_after) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = crate::broker::shovel::remove(self.mgmt, &name).await;
                return Err(format!(
                    "the broker did not move it within {} s",
                    SHOVEL_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The shovels' name prefix and the holding queue of one quarantine.
pub(super) fn names(park: &str) -> (String, String) {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token = &token[..12];
    (
        format!("{QUARANTINE_SHOVEL_PREFIX}{token}"),
        crate::topology::quarantine_holding(park, token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shovels_use_the_profiles_vhost() {
        assert_eq!(vhost_uri("/"), "amqp://");
        assert_eq!(vhost_uri("prod"), "amqp:///prod");
        assert_eq!(vhost_uri("a/b c"), "amqp:///a%2Fb%20c");
    }

    #[test]
    fn a_description_names_queue_position_and_outcome_safely() {
        let m = UnreadableMessage {
            queue: "e.v2\u{1b}[2J".into(),
            position: 200,
            reason: "property `message_id` is not UTF-8; left out".into(),
            body_sha256: body_sha256(b"x"),
            body_len: 1,
            outcome: QuarantineOutcome::Quarantined {
                queue: "e.parked".into(),
            },
        };
        let d = m.describe();
        assert!(d.contains("position 200"), "{d}");
        assert!(d.contains("quarantined in `e.parked`"), "{d}");
        assert!(crate::text::is_terminal_safe(&d), "{d}");
        assert_eq!(
            body_sha256(b"x"),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }
}
