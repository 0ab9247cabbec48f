//! The log view: the tail of hopback's own log file (`crate::logging::log_path`), read by the
//! runner when the view opens and on ctrl-r, newest at the bottom, with its own `/` filter. Log
//! lines quote broker errors and names: each is made terminal-safe when it is read.

use super::Reply;
use crate::app::action::Action;
use crate::app::protocol::{Failed, OpRequest};

/// Lines of the log kept in the view (the file's tail).
pub const LOG_LINES_MAX: usize = 2_000;

/// The log view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPanel {
    /// The file shown (display form).
    pub path: String,
    /// Lines, oldest first (terminal-safe).
    pub lines: Vec<String>,
    /// Reading?
    pub loading: bool,
    /// Why it could not be read.
    pub error: Option<String>,
    /// Lines scrolled up from the newest.
    pub scroll: usize,
    /// The view's own `/` filter.
    pub filter: String,
}

impl LogPanel {
    /// Lines that pass the `/` filter.
    pub fn visible(&self) -> Vec<&String> {
        let f = self.filter.to_lowercase();
        self.lines
            .iter()
            .filter(|l| f.is_empty() || l.to_lowercase().contains(&f))
            .collect()
    }

    /// Scroll and reload keys; `None` = not the log's.
    pub fn on_action(&mut self, action: &Action) -> Option<Reply> {
        let n = self.visible().len();
        match action {
            Action::Up => self.scroll = (self.scroll + 1).min(n.saturating_sub(1)),
            Action::Down => self.scroll = self.scroll.saturating_sub(1),
            Action::PageUp => self.scroll = (self.scroll + 15).min(n.saturating_sub(1)),
            Action::PageDown => self.scroll = self.scroll.saturating_sub(15),
            Action::Top => self.scroll = n.saturating_sub(1),
            Action::Bottom => self.scroll = 0,
            Action::Refresh => {
                self.loading = true;
                return Some(Reply::ask(OpRequest::LogLoad));
            }
            _ => return None,
        }
        Some(Reply::default())
    }

    /// The runner read the file.
    pub fn on_loaded(&mut self, r: Result<(String, Vec<String>), Failed>) {
        self.loading = false;
        match r {
            Ok((path, lines)) => {
                self.path = path;
                self.lines = lines;
                self.error = None;
            }
            Err(e) => self.error = Some(e.text),
        }
    }
}
