//! The inspector's state: one dead letter loaded in full, its body as auto / text / JSON / hex,
//! the scroll, and the export of the message. It holds the message's identity, not its position:
//! the runner finds it in a fresh read of the DLQ, and says so when it is no longer there.

use super::Reply;
use crate::app::action::Action;
use crate::app::protocol::Failed;
use crate::app::protocol::OpRequest;
use crate::model::deadletter::{
    BodyMode, DeadLetterId, InspectorLine, MessageView, inspector_lines,
};

/// The inspector.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectorPanel {
    /// Namespace.
    pub ns: String,
    /// The message shown (what is loaded and exported).
    pub id: DeadLetterId,
    /// Where the list showed it when it was opened (display only).
    pub position: u64,
    /// The message, once loaded.
    pub message: Option<MessageView>,
    /// Loading?
    pub loading: bool,
    /// Error.
    pub error: Option<String>,
    /// Body mode.
    pub mode: BodyMode,
    /// Rendered lines (sanitised), rebuilt on load and mode change.
    pub lines: Vec<InspectorLine>,
    /// Scroll.
    pub scroll: usize,
}

impl InspectorPanel {
    /// The inspector on dead letter `id` (listed at `position`), loading.
    pub fn new(ns: String, id: DeadLetterId, position: u64) -> Self {
        InspectorPanel {
            ns,
            id,
            position,
            message: None,
            loading: true,
            error: None,
            mode: BodyMode::Auto,
            lines: Vec::new(),
            scroll: 0,
        }
    }

    /// Rebuild the lines.
    pub fn rebuild(&mut self) {
        self.lines = self
            .message
            .as_ref()
            .map(|m| inspector_lines(m, self.mode))
            .unwrap_or_default();
    }

    /// An action on the inspector; `None` = not the inspector's.
    pub fn on_action(&mut self, action: &Action) -> Option<Reply> {
        let last = self.lines.len().saturating_sub(1);
        match action {
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::Down => self.scroll = (self.scroll + 1).min(last),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(15),
            Action::PageDown => self.scroll = (self.scroll + 15).min(last),
            Action::Top => self.scroll = 0,
            Action::Bottom => self.scroll = last,
            Action::BodyMode => {
                self.mode = match self.mode {
                    BodyMode::Auto => BodyMode::Text,
                    BodyMode::Text => BodyMode::Json,
                    BodyMode::Json => BodyMode::Hex,
                    BodyMode::Hex => BodyMode::Auto,
                };
                self.rebuild();
            }
            Action::Export => {
                if let Some(m) = &self.message {
                    return Some(Reply::ask(OpRequest::DlqExport {
                        ns: self.ns.clone(),
                        id: self.id.clone(),
                        message: Some(Box::new(m.clone())),
                    }));
                }
            }
            Action::OpenNamespace { ns: None } => {}
            _ => return None,
        }
        Some(Reply::default())
    }

    /// The message arrived (for this inspector, if it still shows that message). One with
    /// another identity is refused, never shown in its place.
    pub fn on_inspected(
        &mut self,
        ns: &str,
        id: &DeadLetterId,
        result: Result<Option<Box<MessageView>>, Failed>,
    ) {
        if self.ns != ns || &self.id != id {
            return;
        }
        self.loading = false;
        match result {
            Ok(Some(m)) if m.identity().as_ref() == Some(id) => {
                self.message = Some(*m);
                self.rebuild();
            }
            Ok(Some(_)) => {
                self.error = Some(format!(
                    "the read returned another message than {}; nothing shown — go back and refresh",
                    id.label()
                ))
            }
            Ok(None) => {
                self.error = Some(format!(
                    "dead letter {} is no longer in the DLQ (replayed, purged or expired since the list was read); go back and refresh",
                    id.label()
                ))
            }
            Err(e) => self.error = Some(e.text),
        }
    }
}
