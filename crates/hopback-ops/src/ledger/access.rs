//! Who can write the ledger, from the vhost's permissions (for `hopback check`). An event's author
//! is the broker user that published it, so the list of those users is the list of authors a
//! timeline can show — and anyone in it can claim any operator name in an event's body.
//!
//! hopback appends through the stream's own exchange (same name, bound to it; WRITE on the
//! stream's name) where there is one, else through the default exchange (routing key = the
//! stream's name), which the broker's permission check calls `amq.default`: a user whose *write*
//! permission matches `amq.default` can append whatever hopback does. A user whose write permission matches the stream's name can bind
//! an exchange to it (binding also needs *read* on the exchange) and append through that
//! exchange; the writers of an exchange already bound to it can append through it as they are.
//! A user whose *configure* permission matches the stream's name can delete it (the whole
//! history) and declare it again. RabbitMQ matches a permission regex anywhere in the name (not
//! anchored), and an empty permission matches nothing; a regex this module cannot compile (PCRE
//! features the `regex` crate lacks) is reported as unknown, never as "no".

use std::collections::BTreeSet;

use serde::Serialize;

use crate::broker::mgmt::UserPermissions;

/// The name RabbitMQ's permission checks give the default exchange.
pub const DEFAULT_EXCHANGE_RESOURCE: &str = "amq.default";

/// Does permission regex `re` grant access to resource `name`? `None`: not understood.
pub fn permits(re: &str, name: &str) -> Option<bool> {
    if re.is_empty() {
        return Some(false);
    }
    regex::Regex::new(re).ok().map(|r| r.is_match(name))
}

/// Who may write (or destroy) one ledger stream, by user name (sorted, deduplicated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerWriters {
    /// Write matches `amq.default`: they append as hopback does.
    pub direct: BTreeSet<String>,
    /// Write matches an exchange bound to the stream (user, exchange): they append through it.
    pub through_bindings: BTreeSet<(String, String)>,
    /// Write matches the stream's name: they can bind an exchange they may read to it.
    pub can_bind: BTreeSet<String>,
    /// Configure matches the stream's name: they can delete it and declare it again.
    pub can_delete: BTreeSet<String>,
    /// Users with a permission regex that could not be evaluated (unknown, not "no").
    pub unknown: BTreeSet<String>,
}

impl LedgerWriters {
    /// Everyone who can put an event into the stream one way or another.
    pub fn any_writer(&self) -> BTreeSet<String> {
        self.direct
            .iter()
            .chain(self.through_bindings.iter().map(|(u, _)| u))
            .chain(&self.can_bind)
            .cloned()
            .collect()
    }
}

/// Who can write `stream`, given every user's permissions in its vhost and the exchanges bound
/// to it (`bound_exchanges`, without the default exchange).
pub fn writers(
    perms: &[UserPermissions],
    stream: &str,
    bound_exchanges: &[String],
) -> LedgerWriters {
    let mut w = LedgerWriters::default();
    for p in perms {
        let user = crate::text::sanitize(&p.user).into_owned();
        let mut unknown = false;
        let mut check = |re: &str, name: &str| match permits(re, name) {
            Some(b) => b,
            None => {
                unknown = true;
                false
            }
        };
        if check(&p.perms.write, DEFAULT_EXCHANGE_RESOURCE) {
            w.direct.insert(user.clone());
        }
        for x in bound_exchanges {
            if check(&p.perms.write, x) {
                w.through_bindings
                    .insert((user.clone(), crate::text::sanitize(x).into_owned()));
            }
        }
        if check(&p.perms.write, stream) {
            w.can_bind.insert(user.clone());
        }
        if check(&p.perms.configure, stream) {
            w.can_delete.insert(user.clone());
        }
        if unknown {
            w.unknown.insert(user);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn perm(user: &str, configure: &str, write: &str) -> UserPermissions {
        UserPermissions {
            user: user.into(),
            perms: crate::broker::mgmt::Permissions {
                configure: configure.into(),
                write: write.into(),
                read: ".*".into(),
            },
        }
    }

    #[test]
    fn who_writes_the_ledger() {
        let perms = vec![
            perm("guest", ".*", ".*"),
            perm("reader", "", ""),
            perm("app", "^app\\.", "^app\\.|^amq\\.default$"),
            perm("binder", "", "ledger"),
            perm("odd", "", "(?<=x)y"),
            perm("exwriter", "", "^audit$"),
        ];
        let w = writers(&perms, "hopback.ledger", &["audit".to_string()]);
        assert_eq!(
            w.direct,
            ["app", "guest"].map(String::from).into_iter().collect()
        );
        assert_eq!(
            w.can_bind,
            ["binder", "guest"].map(String::from).into_iter().collect()
        );
        assert!(
            w.through_bindings
                .contains(&("exwriter".to_string(), "audit".to_string()))
        );
        assert!(w.any_writer().contains("exwriter"));
        assert_eq!(
            w.can_delete,
            ["guest"].map(String::from).into_iter().collect()
        );
        assert!(w.unknown.contains("odd"));
        assert!(!w.any_writer().contains("reader"));
        // Not anchored, as RabbitMQ matches: `ledger` matches `hopback.ledger`.
        assert_eq!(permits("ledger", "hopback.ledger"), Some(true));
        assert_eq!(permits("", ""), Some(false));
    }
}
