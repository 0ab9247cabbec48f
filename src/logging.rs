//! Logging goes to a file, never the terminal (the TUI owns the screen; stdout is for output).
//! The file is `hopback.log` in the data dir, or `HOPBACK_LOG_FILE`; the level comes from
//! `HOPBACK_LOG` (default `info`). It is private (`crate::files`): 0600, and so are its rotated
//! copies (`hopback.log.*`, by logrotate or an operator) found beside it.

use tracing_appender::non_blocking::WorkerGuard;

pub use crate::config::log_path;

/// Install the file logger; keep the guard alive for the process lifetime. Failing to open the
/// log file is not fatal: logging is then off.
pub fn init() -> Option<WorkerGuard> {
    let path = log_path();
    let dir = path.parent()?.to_path_buf();
    let file = crate::files::append(&path).ok()?;
    if let Some(name) = path.file_name() {
        let _ = crate::files::tighten_siblings(&dir, &name.to_string_lossy());
    }
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOPBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .ok()?;
    Some(guard)
}
