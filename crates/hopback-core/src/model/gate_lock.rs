//! What holds a namespace's gate lock (`NS.gate-lock`), as the management API describes the
//! queue. A hopback flip's lock is an exclusive, auto-delete queue on the flipping connection,
//! gone when the flip ends or the connection closes; anything else under that name — a durable
//! or non-exclusive queue anyone with configure on `NS.*` can declare, or another program's
//! exclusive queue — blocks every flip for as long as it exists. The kinds below say which, so a
//! refusal, `status`, `check` and `gate unlock` can name the holder instead of "another operator
//! is flipping the gate".

use serde::Serialize;

/// How a canary's connection names itself (`hopback canary ID (operator)`): the gate lock's
/// owner read back names the canary.
pub const CANARY_CONNECTION_PREFIX: &str = "hopback canary ";

/// The lock queue and its owner, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateLock {
    /// The queue's name.
    pub queue: String,
    /// Survives a broker restart (a hopback lock never does).
    pub durable: bool,
    /// Owned by one connection (a hopback lock always is).
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The owning connection's server-side name (exclusive queues; `None`: not named by the
    /// API yet — it reports owners with its stats, every few seconds).
    pub owner_connection: Option<String>,
    /// The owning connection's broker user.
    pub owner_user: Option<String>,
    /// The owning connection's client-provided name (hopback names its own `hopback …`).
    pub owner_client_name: Option<String>,
    /// Messages in it.
    pub messages: Option<u64>,
    /// Consumers on it.
    pub consumers: Option<u64>,
}

/// What kind of holder a [`GateLock`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// Exclusive, auto-delete, on a connection that names itself `hopback …`: a flip under way
    /// (it goes when the flip ends).
    HopbackFlip,
    /// Exclusive, auto-delete, on a connection named `hopback canary ID …`: a self-driving
    /// canary holds the gate for its whole run; only its own steps flip it.
    Canary,
    /// Exclusive, but the management API does not name its owner yet: unknown, not assumed.
    ExclusiveOwnerUnknown,
    /// Exclusive on a connection that is not a hopback flip: held as long as that connection.
    ForeignConnection,
    /// Not exclusive (a durable queue, typically): no hopback flip declares it so, and it stays
    /// until someone deletes it.
    Squatter,
}

impl GateLock {
    /// Which kind of holder this is.
    pub fn kind(&self) -> LockKind {
        if !self.exclusive {
            return LockKind::Squatter;
        }
        match (&self.owner_connection, &self.owner_client_name) {
            (None, _) => LockKind::ExclusiveOwnerUnknown,
            (Some(_), Some(n))
                if self.auto_delete && !self.durable && n.starts_with(CANARY_CONNECTION_PREFIX) =>
            {
                LockKind::Canary
            }
            (Some(_), Some(n))
                if self.auto_delete && !self.durable && n.starts_with("hopback ") =>
            {
                LockKind::HopbackFlip
            }
            _ => LockKind::ForeignConnection,
        }
    }

    /// Does it block flips for longer than a flip takes (anything but a hopback flip)?
    pub fn is_stuck(&self) -> bool {
        !matches!(
            self.kind(),
            LockKind::HopbackFlip | LockKind::ExclusiveOwnerUnknown
        )
    }

    /// The id of the canary that holds it (`LockKind::Canary`).
    pub fn canary_id(&self) -> Option<String> {
        if self.kind() != LockKind::Canary {
            return None;
        }
        let rest = self
            .owner_client_name
            .as_deref()?
            .strip_prefix(CANARY_CONNECTION_PREFIX)?;
        rest.split_whitespace().next().map(str::to_string)
    }

    /// One line naming the holder (terminal-safe).
    pub fn describe(&self) -> String {
        let s = |t: &str| crate::text::sanitize(t).into_owned();
        let q = s(&self.queue);
        let flags = format!(
            "{}, {}{}",
            if self.durable { "durable" } else { "transient" },
            if self.exclusive {
                "exclusive"
            } else {
                "not exclusive"
            },
            if self.auto_delete {
                ", auto-delete"
            } else {
                ""
            }
        );
        let owner = || {
            format!(
                "connection `{}` (user `{}`{})",
                s(self.owner_connection.as_deref().unwrap_or("?")),
                s(self.owner_user.as_deref().unwrap_or("?")),
                self.owner_client_name
                    .as_deref()
                    .map(|n| format!(", named `{}`", s(n)))
                    .unwrap_or_default()
            )
        };
        let contents = match (self.messages, self.consumers) {
            (Some(0), Some(0)) | (None, None) => String::new(),
            (m, c) => format!(
                "; {} message(s), {} consumer(s)",
                m.map_or("?".into(), |m| m.to_string()),
                c.map_or("?".into(), |c| c.to_string())
            ),
        };
        match self.kind() {
            LockKind::HopbackFlip => {
                format!("`{q}` ({flags}) is held by a hopback flip on {}", owner())
            }
            LockKind::Canary => format!(
                "`{q}` is held by canary {} for its whole run, on {}",
                s(&self.canary_id().unwrap_or_else(|| "?".into())),
                owner()
            ),
            LockKind::ExclusiveOwnerUnknown => format!(
                "`{q}` ({flags}) is held by a connection the management API does not name yet{contents}"
            ),
            LockKind::ForeignConnection => format!(
                "`{q}` ({flags}) is held by {}, which is not a hopback flip{contents}",
                owner()
            ),
            LockKind::Squatter => format!(
                "`{q}` is squatted: a {flags} queue that no hopback flip declares and no connection owns{contents}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> GateLock {
        GateLock {
            queue: "email.gate-lock".into(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            owner_connection: Some("127.0.0.1:50000 -> 127.0.0.1:5672".into()),
            owner_user: Some("guest".into()),
            owner_client_name: Some("hopback gate (ana)".into()),
            messages: Some(0),
            consumers: Some(0),
        }
    }

    #[test]
    fn kinds_and_descriptions() {
        let flip = lock();
        assert_eq!(flip.kind(), LockKind::HopbackFlip);
        assert!(!flip.is_stuck());
        assert!(
            flip.describe()
                .contains("hopback flip on connection `127.0.0.1:50000")
        );
        let squat = GateLock {
            durable: true,
            exclusive: false,
            auto_delete: false,
            owner_connection: None,
            owner_user: None,
            owner_client_name: None,
            ..lock()
        };
        assert_eq!(squat.kind(), LockKind::Squatter);
        assert!(squat.is_stuck());
        let d = squat.describe();
        assert!(
            d.contains("squatted") && d.contains("durable, not exclusive"),
            "{d}"
        );
        let foreign = GateLock {
            owner_client_name: Some("my \u{1b}[2Japp".into()),
            ..lock()
        };
        assert_eq!(foreign.kind(), LockKind::ForeignConnection);
        assert!(!foreign.describe().contains('\u{1b}'));
        let unknown = GateLock {
            owner_connection: None,
            ..lock()
        };
        assert_eq!(unknown.kind(), LockKind::ExclusiveOwnerUnknown);
        assert!(!unknown.is_stuck());
        let canary = GateLock {
            owner_client_name: Some("hopback canary 1a2b3c4d (ana)".into()),
            ..lock()
        };
        assert_eq!(canary.kind(), LockKind::Canary);
        assert!(
            canary.is_stuck(),
            "a canary holds it for minutes: refuse at once"
        );
        assert_eq!(canary.canary_id().as_deref(), Some("1a2b3c4d"));
        assert!(canary.describe().contains("canary 1a2b3c4d"));
        assert!(canary.describe().contains("user `guest`"));
    }
}
