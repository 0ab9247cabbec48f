//! What each use of hopback needs from the broker: the permission (configure, write, read) on
//! exactly the objects its operations touch, and whether it needs the management API (a user
//! tag). `hopback check` judges a user's vhost permissions against this table, and README
//! "Permissions" gives one `rabbitmqctl set_permissions` line per use that grants it (the
//! tests grant exactly those lines).
//!
//! RabbitMQ's checks, as the operations meet them: declaring or deleting a queue or exchange is
//! CONFIGURE on it (a server-named queue — the dead-letter tap — on its generated `amq.gen-…`
//! name); binding or unbinding a queue is WRITE on the queue and READ on the exchange;
//! publishing is WRITE on the exchange (a queue addressed through the default exchange:
//! `amq.default`, which reaches every queue of the vhost); consuming is READ on the queue. A
//! passive declare needs nothing. RabbitMQ searches a permission regex in the name (unanchored)
//! and an empty regex grants nothing; a regex the `regex` crate cannot compile is unknown, never
//! "no".

use serde::Serialize;

use crate::broker::mgmt::Permissions;
use crate::ledger::access::{DEFAULT_EXCHANGE_RESOURCE, permits};
use crate::topology::Namespace;

/// One of the three permissions of a vhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    /// Declare and delete.
    Configure,
    /// Publish to an exchange, bind a queue (the queue's side).
    Write,
    /// Consume from a queue, bind to an exchange (the exchange's side).
    Read,
}

impl std::fmt::Display for Perm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Perm::Configure => "CONFIGURE",
            Perm::Write => "WRITE",
            Perm::Read => "READ",
        })
    }
}

/// One permission on one object, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Need {
    /// The permission.
    pub perm: Perm,
    /// The object's name as RabbitMQ checks it.
    pub object: String,
    /// What the operation does with it.
    pub why: &'static str,
}

fn need(perm: Perm, object: impl Into<String>, why: &'static str) -> Need {
    Need {
        perm,
        object: object.into(),
        why,
    }
}

/// A use of hopback, as README "Permissions" lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// The console, `status`, `gate show`, `dlq list/show`, `timeline`.
    Watch,
    /// `note`, and the journal every operation below writes first.
    LedgerWriter,
    /// `gate set`, `revert`.
    Gate,
    /// `dlq replay` (client engine).
    Replay,
    /// `dlq purge`.
    Purge,
    /// `init` and `migrate`.
    InitMigrate,
    /// `rollback` (gate, drain, dead letters, verify).
    Rollback,
}

impl Capability {
    /// Every capability, in the order `check` lists them.
    pub const ALL: [Capability; 7] = [
        Capability::Watch,
        Capability::LedgerWriter,
        Capability::Gate,
        Capability::Replay,
        Capability::Purge,
        Capability::InitMigrate,
        Capability::Rollback,
    ];

    /// Its name in `check` and README.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Watch => "watch",
            Capability::LedgerWriter => "ledger writer",
            Capability::Gate => "gate",
            Capability::Replay => "replay",
            Capability::Purge => "purge",
            Capability::InitMigrate => "init/migrate",
            Capability::Rollback => "rollback",
        }
    }

    /// Does it concern one namespace (else only the ledger)?
    pub fn per_namespace(self) -> bool {
        self != Capability::LedgerWriter
    }
}

/// A name the dead-letter tap's server-named queue stands for (RabbitMQ checks the generated
/// `amq.gen-…` name).
pub const SERVER_NAMED_QUEUE: &str = "amq.gen-hopback";

/// The journal: append to the ledger through its own exchange (the stream's name); declaring
/// the stream and its exchange, for the first user, also needs CONFIGURE on it and READ to bind.
fn ledger_needs(ledger: &str, ledger_exists: bool) -> Vec<Need> {
    let mut out = vec![
        need(Perm::Write, ledger, "append events (its exchange)"),
        need(Perm::Read, ledger, "read the ledger"),
    ];
    if !ledger_exists {
        out.push(need(
            Perm::Configure,
            ledger,
            "create the ledger stream and its exchange",
        ));
    }
    out
}

/// The dead-letter tap (the console's live dead letters, `status`'s error rate, the
/// rollback's verify step): a server-named exclusive queue bound to the DLX.
fn tap_needs(ns: &Namespace) -> Vec<Need> {
    vec![
        need(
            Perm::Configure,
            SERVER_NAMED_QUEUE,
            "declare the dead-letter tap",
        ),
        need(Perm::Write, SERVER_NAMED_QUEUE, "bind the dead-letter tap"),
        need(Perm::Read, ns.dlx.clone(), "bind the tap to the DLX"),
    ]
}

/// What `cap` needs on namespace `ns` (its version queues `versions`) and the ledger stream
/// `ledger` (`ledger_exists`: the stream is there already, so nobody declares it).
pub fn needs(
    cap: Capability,
    ns: &Namespace,
    versions: &[String],
    ledger: &str,
    ledger_exists: bool,
) -> Vec<Need> {
    let watch = || {
        let mut v = vec![
            need(
                Perm::Read,
                ns.dlq.clone(),
                "browse and attribute dead letters",
            ),
            need(Perm::Read, ledger, "read the ledger (timeline)"),
        ];
        v.extend(tap_needs(ns));
        v
    };
    let gate = || {
        let mut v = vec![
            need(Perm::Configure, ns.gate_lock(), "take the gate lock"),
            need(Perm::Read, ns.entry.clone(), "bind from the entry exchange"),
        ];
        v.extend(
            versions
                .iter()
                .map(|q| need(Perm::Write, q.clone(), "bind to the entry exchange")),
        );
        v
    };
    let replay = || {
        vec![
            need(Perm::Read, ns.dlq.clone(), "consume dead letters"),
            need(
                Perm::Write,
                DEFAULT_EXCHANGE_RESOURCE,
                "publish to the target queue (the default exchange)",
            ),
            need(
                Perm::Configure,
                ns.parked.clone(),
                "declare the parking queue",
            ),
            need(
                Perm::Write,
                ns.parked.clone(),
                "park over-replayed messages",
            ),
        ]
    };
    let mut out = match cap {
        Capability::Watch => watch(),
        Capability::LedgerWriter => Vec::new(),
        Capability::Gate => gate(),
        Capability::Replay => replay(),
        Capability::Purge => vec![
            need(Perm::Read, ns.dlq.clone(), "export the dead letters"),
            need(Perm::Write, ns.dlq.clone(), "remove them (a write)"),
        ],
        Capability::InitMigrate => {
            let mut v = Vec::new();
            let exchanges = [&ns.entry, &ns.dlx, &ns.unrouted];
            let mut queues: Vec<&String> = versions.iter().collect();
            queues.extend([&ns.dlq, &ns.unrouted]);
            for x in exchanges {
                v.push(need(Perm::Configure, x.clone(), "declare the exchange"));
                v.push(need(Perm::Read, x.clone(), "bind from it"));
                v.push(need(Perm::Write, x.clone(), "dead-letter or route to it"));
            }
            for q in queues {
                v.push(need(Perm::Configure, q.clone(), "declare the queue"));
                v.push(need(Perm::Write, q.clone(), "bind it"));
                v.push(need(Perm::Read, q.clone(), "move its messages (migrate)"));
            }
            v.push(need(
                Perm::Write,
                DEFAULT_EXCHANGE_RESOURCE,
                "move messages (migrate, the default exchange)",
            ));
            v
        }
        Capability::Rollback => {
            let mut v = gate();
            v.extend(replay());
            v.extend(
                versions
                    .iter()
                    .map(|q| need(Perm::Read, q.clone(), "drain the version queue")),
            );
            v.extend(tap_needs(ns));
            v
        }
    };
    if cap != Capability::Watch {
        out.extend(ledger_needs(ledger, ledger_exists));
    }
    out
}

/// Does it need the management API (the `monitoring` or `management` tag)?
pub fn needs_management_api(cap: Capability) -> bool {
    cap != Capability::LedgerWriter
}

/// Tags that open the management API to a user.
pub fn has_management_tag(tags: &[String]) -> bool {
    tags.iter()
        .any(|t| matches!(t.as_str(), "monitoring" | "management" | "administrator"))
}

/// What a user may do with one capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every permission it needs is granted.
    Can,
    /// These are missing (each "PERM on `object` (why)").
    Cannot {
        /// The missing permissions.
        missing: Vec<String>,
    },
    /// A regex hopback cannot evaluate: unknown, not "no".
    Unknown {
        /// Which regex.
        why: String,
    },
}

/// Judge `needs` (and the management API, when `api` is set) against a user's permissions and
/// tags.
pub fn judge(perms: &Permissions, tags: &[String], needs: &[Need], api: bool) -> Verdict {
    let mut missing = Vec::new();
    if api && !has_management_tag(tags) {
        missing.push("the `monitoring` tag (the management API)".to_string());
    }
    for n in needs {
        let re = match n.perm {
            Perm::Configure => &perms.configure,
            Perm::Write => &perms.write,
            Perm::Read => &perms.read,
        };
        let text = format!(
            "{} on `{}` ({})",
            n.perm,
            crate::text::sanitize(&n.object),
            n.why
        );
        match permits(re, &n.object) {
            Some(true) => {}
            Some(false) => {
                if !missing.contains(&text) {
                    missing.push(text);
                }
            }
            None => {
                return Verdict::Unknown {
                    why: format!(
                        "{} regex `{}` cannot be evaluated",
                        n.perm,
                        crate::text::sanitize(re)
                    ),
                };
            }
        }
    }
    if missing.is_empty() {
        Verdict::Can
    } else {
        Verdict::Cannot { missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(c: &str, w: &str, r: &str) -> Permissions {
        Permissions {
            configure: c.into(),
            write: w.into(),
            read: r.into(),
        }
    }

    fn verdicts(p: &Permissions, tags: &[&str]) -> Vec<(&'static str, bool)> {
        let ns = Namespace::convention("email");
        let versions = vec!["email.v1".to_string(), "email.v2".to_string()];
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        Capability::ALL
            .iter()
            .map(|c| {
                let n = needs(*c, &ns, &versions, "hopback.ledger", true);
                (
                    c.name(),
                    judge(p, &tags, &n, needs_management_api(*c)) == Verdict::Can,
                )
            })
            .collect()
    }

    #[test]
    fn a_writer_and_a_non_reader_get_different_answers() {
        let all = perms(".*", ".*", ".*");
        assert!(verdicts(&all, &["monitoring"]).iter().all(|(_, ok)| *ok));
        let none = perms("", "", "");
        assert!(verdicts(&none, &["monitoring"]).iter().all(|(_, ok)| !*ok));
        // Writes the ledger, reads nothing of the namespace.
        let writer = perms("", "^hopback\\.ledger$", "^hopback\\.ledger$");
        let v = verdicts(&writer, &[]);
        assert!(v.contains(&("ledger writer", true)), "{v:?}");
        assert!(v.contains(&("watch", false)), "{v:?}");
    }

    #[test]
    fn the_gate_needs_the_version_queues_the_entry_and_the_lock_only() {
        let p = perms(
            "^(amq\\.gen-.*|email\\.gate-lock)$",
            "^(amq\\.gen-.*|hopback\\.ledger|email\\.v[0-9]+)$",
            "^(email(\\..*)?|hopback\\.ledger)$",
        );
        let v = verdicts(&p, &["monitoring"]);
        assert!(v.contains(&("gate", true)), "{v:?}");
        assert!(v.contains(&("purge", false)), "{v:?}");
        assert!(v.contains(&("replay", false)), "{v:?}");
        let ns = Namespace::convention("email");
        let n = needs(
            Capability::Gate,
            &ns,
            &["email.v1".into()],
            "hopback.ledger",
            true,
        );
        let Verdict::Cannot { missing } = judge(&perms("", "", ""), &[], &n, true) else {
            panic!("refused expected")
        };
        assert!(
            missing.iter().any(|m| m.contains("monitoring")),
            "{missing:?}"
        );
        assert!(
            missing
                .iter()
                .any(|m| m.starts_with("CONFIGURE on `email.gate-lock`")),
            "{missing:?}"
        );
    }

    #[test]
    fn a_regex_the_crate_cannot_read_is_unknown() {
        let p = perms("(?<=x)y", "(?<=x)y", "(?<=x)y");
        let ns = Namespace::convention("email");
        let n = needs(Capability::Purge, &ns, &[], "hopback.ledger", true);
        assert!(matches!(judge(&p, &[], &n, false), Verdict::Unknown { .. }));
    }
}
