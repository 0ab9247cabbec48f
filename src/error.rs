//! The error every command returns: a one-line message, a hint, and the exit code of DESIGN §6.
//!
//! Library code uses typed errors where callers branch on them; at the command boundary everything
//! becomes a [`Failure`] so the binary can print exactly one line and exit with the right code.

use std::fmt;

/// Exit codes of the CLI contract (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: everything went as asked.
    Ok = 0,
    /// 1: an error (broker, config, I/O).
    Error = 1,
    /// 2: the command line itself was wrong.
    Usage = 2,
    /// 3: refused (read-only, not confirmed, no terminal to ask on).
    Refused = 3,
    /// 4: the action ran but its verification failed.
    VerificationFailed = 4,
}

/// A failure to report to the operator: what failed, what to try, which exit code.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Failure {
    /// What failed, in one line (already free of credentials).
    pub message: String,
    /// What to try next.
    pub hint: Option<String>,
    /// How the process exits.
    pub code: ExitCode,
    /// A broker call ran out of time (`main` then asks whether the cluster lost its majority).
    pub timed_out: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::text::write_with_hint(f, &self.message, self.hint.as_deref())
    }
}

impl Failure {
    /// A general error (exit 1).
    pub fn error(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
            code: ExitCode::Error,
            timed_out: false,
        }
    }
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            code: ExitCode::Usage,
            ..Self::error(message, hint)
        }
    }
    /// A refusal (exit 3).
    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            code: ExitCode::Refused,
            ..Self::error(message, hint)
        }
    }
    /// A failed verification (exit 4).
    pub fn verification(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            code: ExitCode::VerificationFailed,
            ..Self::error(message, hint)
        }
    }
}

/// Result type of commands and operations.
pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// A broker error at the CLI's edge: a refusal (a missing permission) exits 3 like a
/// read-only refusal; everything else 1.
impl From<crate::broker::session::BrokerError> for Failure {
    fn from(e: crate::broker::session::BrokerError) -> Self {
        let hint = e.hint();
        if e.is_refusal() {
            Failure::refused(e.to_string(), hint)
        } else {
            Failure {
                timed_out: e.is_timeout(),
                ..Failure::error(e.to_string(), hint)
            }
        }
    }
}

/// A configuration error at the CLI's edge: usage (exit 2) or error (exit 1).
impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure {
            message: e.message,
            hint: e.hint,
            code: if e.usage {
                ExitCode::Usage
            } else {
                ExitCode::Error
            },
            timed_out: false,
        }
    }
}

/// A console error at the CLI's edge.
impl From<crate::app::AppError> for Failure {
    fn from(e: crate::app::AppError) -> Self {
        use crate::app::AppError;
        match e {
            AppError::Console {
                message,
                hint,
                usage: true,
            } => Failure::usage(message, hint),
            AppError::Console { message, hint, .. } => Failure::error(message, hint),
            AppError::Drill(d) => d.into(),
        }
    }
}

/// A drill error at the CLI's edge.
impl From<crate::drill::DrillError> for Failure {
    fn from(e: crate::drill::DrillError) -> Self {
        use crate::drill::DrillError;
        match e {
            DrillError::Broker(b) => b.into(),
            DrillError::Ledger(l) => l.into(),
            DrillError::Op(o) => o.into(),
            DrillError::Config(c) => c.into(),
            DrillError::Other { message, hint } => Failure::error(message, hint),
        }
    }
}

/// A ledger error at the CLI's edge (a permission refusal exits 3).
impl From<crate::ledger::LedgerError> for Failure {
    fn from(e: crate::ledger::LedgerError) -> Self {
        if e.refused {
            Failure::refused(e.message, e.hint)
        } else {
            Failure {
                timed_out: e.timed_out,
                ..Failure::error(e.message, e.hint)
            }
        }
    }
}

/// The one conversion of an operation's error at the CLI's edge: refused → exit 3,
/// verification → exit 4, everything else → exit 1.
impl From<crate::ops::OpError> for Failure {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError;
        match e {
            OpError::Broker(b) => b.into(),
            OpError::Refused { message, hint } => Failure::refused(message, hint),
            OpError::Invalid { message, hint } => Failure::usage(message, hint),
            OpError::Verification { message, hint } => Failure::verification(message, hint),
            OpError::Failed { message, hint } => Failure::error(message, hint),
            e @ OpError::NotJournaled { .. } => {
                let hint = e.hint();
                Failure::error(e.to_string(), hint)
            }
        }
    }
}
