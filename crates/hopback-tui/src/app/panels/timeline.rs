//! The incident timeline's state: the ledger read once when the view opens, live events from the
//! feed appended as they arrive, the scroll (counted up from the newest) and the `/` filter.

use crate::app::protocol::Failed;
use std::collections::BTreeSet;

use super::Reply;
use crate::app::action::Action;
use crate::app::protocol::OpRequest;
use crate::ledger::event::Event;
use crate::ledger::projection::{TimelineEntry, TimelineFilter};

/// Timeline entries kept in the view.
pub const TIMELINE_MAX: usize = 5_000;

/// The timeline view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimelinePanel {
    /// Namespace filter.
    pub ns: Option<String>,
    /// Entries, oldest first.
    pub entries: Vec<TimelineEntry>,
    /// Loading?
    pub loading: bool,
    /// Error.
    pub error: Option<String>,
    /// Lines scrolled up from the newest; the row there is the selected one (Enter describes
    /// it, `c` copies its id).
    pub scroll: usize,
    /// The view's own `/` filter (the overview keeps its own).
    pub filter: String,
}

impl TimelinePanel {
    /// Entries that pass the namespace filter and the view's `/` filter.
    pub fn visible(&self) -> Vec<&TimelineEntry> {
        let f = self.filter.to_lowercase();
        self.entries
            .iter()
            .filter(|e| {
                f.is_empty()
                    || e.namespace.to_lowercase().contains(&f)
                    || e.summary.to_lowercase().contains(&f)
                    || e.who.to_lowercase().contains(&f)
            })
            .collect()
    }

    /// The selected entry: `scroll` rows up from the newest visible one.
    pub fn selected(&self) -> Option<&TimelineEntry> {
        let v = self.visible();
        let i = v.len().checked_sub(1)?.saturating_sub(self.scroll);
        v.get(i).copied()
    }

    /// An action on the timeline; `None` = not the timeline's.
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
                return Some(Reply::ask(OpRequest::TimelineLoad {
                    ns: self.ns.clone(),
                }));
            }
            Action::OpenNamespace { ns: None } => {
                return Some(match self.selected() {
                    Some(e) => Reply {
                        open: Some(super::Open::Describe(Box::new(
                            super::describe::DescribePanel::of_entry(e),
                        ))),
                        ..Default::default()
                    },
                    None => Reply::default(),
                });
            }
            _ => return None,
        }
        Some(Reply::default())
    }

    /// The ledger was read (live events that arrived meanwhile are kept).
    pub fn on_loaded(&mut self, r: Result<Vec<TimelineEntry>, Failed>) {
        self.loading = false;
        match r {
            Ok(mut entries) => {
                let seen: BTreeSet<_> = entries.iter().map(|e| e.id).collect();
                let late: Vec<TimelineEntry> = self
                    .entries
                    .drain(..)
                    .filter(|e| !seen.contains(&e.id))
                    .collect();
                entries.extend(late);
                let extra = entries.len().saturating_sub(TIMELINE_MAX);
                entries.drain(..extra);
                self.entries = entries;
                self.error = None;
            }
            Err(e) => self.error = Some(e.text),
        }
    }

    /// A live event from the feed (kept once the timeline was opened or is on screen).
    pub fn add_live(&mut self, e: &Event, in_view: bool) {
        if self.loading && self.entries.is_empty() && !in_view {
            return;
        }
        let filter = TimelineFilter {
            namespace: self.ns.clone(),
            ..Default::default()
        };
        let add = crate::ledger::projection::timeline([e], &filter);
        if !self.entries.iter().any(|x| x.id == e.id) {
            self.entries.extend(add);
            if self.scroll > 0 {
                self.scroll += 1;
            }
        }
        let extra = self.entries.len().saturating_sub(TIMELINE_MAX);
        self.entries.drain(..extra);
    }
}
