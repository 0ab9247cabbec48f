//! Entering and leaving the terminal's raw/alternate-screen mode — and making sure we always leave
//! it: a [`TerminalGuard`] restores on drop (normal quit, `?` errors), and [`install_panic_hook`]
//! restores before the panic message is printed. SIGTERM/SIGHUP become a quit in the app loop, so
//! an SSH drop also goes through the guard.

use std::io::{Stdout, Write, stdout};
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::crossterm::{cursor, execute};

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Restore the terminal (idempotent; safe to call from a panic hook or twice).
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = stdout();
        let _ = execute!(out, DisableMouseCapture, LeaveAlternateScreen, cursor::Show);
        let _ = disable_raw_mode();
        let _ = out.flush();
    }
}

/// Restores the terminal when dropped.
pub struct TerminalGuard {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Enter raw mode, the alternate screen and mouse capture.
pub fn enter() -> std::io::Result<TerminalGuard> {
    install_panic_hook();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut out = stdout();
    if let Err(e) = execute!(out, EnterAlternateScreen, EnableMouseCapture, cursor::Hide) {
        restore();
        return Err(e);
    }
    match Terminal::new(CrosstermBackend::new(stdout())) {
        Ok(terminal) => Ok(TerminalGuard { terminal }),
        Err(e) => {
            restore();
            Err(e)
        }
    }
}

static HOOK: std::sync::Once = std::sync::Once::new();

/// Chain a panic hook that restores the terminal first, so the message is readable.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Ring the terminal bell (BEL is written by us, never taken from untrusted text).
pub fn bell() {
    let mut out = stdout();
    let _ = out.write_all(b"\x07");
    let _ = out.flush();
}

/// The OSC 52 sequence that asks the terminal to put `text` on the clipboard. `text` is
/// base64-encoded, so whatever it holds cannot act as a terminal control sequence; callers still
/// pass it sanitised (`text::sanitize`), since the message line shows the same text.
pub fn osc52(text: &str) -> String {
    use base64::Engine;
    format!(
        "\x1b]52;c;{}\x07",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    )
}

/// Copy `text` to the clipboard through the terminal (OSC 52; tmux needs `set-clipboard on`).
pub fn copy_to_clipboard(text: &str) {
    let mut out = stdout();
    let _ = out.write_all(osc52(text).as_bytes());
    let _ = out.flush();
}
