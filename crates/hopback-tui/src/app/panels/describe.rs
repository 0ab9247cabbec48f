//! The describe view (k9s' `d`, here Enter on a timeline row): every field of one ledger event —
//! ids, who (verified author and claimed operator), where, outcome, reason, and the params,
//! before and after documents in full — where the timeline's row had to cut its detail. Values
//! come from the ledger, which anyone with write access can fill: every line is made terminal-safe
//! here, before it is kept.

use super::Reply;
use crate::app::action::Action;
use crate::ledger::projection::TimelineEntry;
use crate::text::sanitize;

/// One event, field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribePanel {
    /// What the title names (`gate_set 1a2b3c4d`).
    pub title: String,
    /// The event id (what `c` copies).
    pub id: String,
    /// (field, line) pairs; a multi-line value continues with an empty field name.
    pub lines: Vec<(String, String)>,
    /// Lines scrolled.
    pub scroll: usize,
}

impl DescribePanel {
    /// The describe view of a timeline entry.
    pub fn of_entry(e: &TimelineEntry) -> Self {
        let mut lines = Vec::new();
        for (field, value) in &e.fields {
            let mut first = true;
            for l in value.lines() {
                let name = if first { field.clone() } else { String::new() };
                lines.push((sanitize(&name).into_owned(), sanitize(l).into_owned()));
                first = false;
            }
            if first {
                lines.push((sanitize(field).into_owned(), String::new()));
            }
        }
        Self {
            title: format!("{} {}", e.kind.as_str(), e.short_id),
            id: e.id.to_string(),
            lines,
            scroll: 0,
        }
    }

    /// Scroll keys; `None` = not the describe view's.
    pub fn on_action(&mut self, action: &Action) -> Option<Reply> {
        let max = self.lines.len().saturating_sub(1);
        match action {
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::Down => self.scroll = (self.scroll + 1).min(max),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(15),
            Action::PageDown => self.scroll = (self.scroll + 15).min(max),
            Action::Top => self.scroll = 0,
            Action::Bottom => self.scroll = max,
            _ => return None,
        }
        Some(Reply::default())
    }
}
