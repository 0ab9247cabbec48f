//! The note operation: an operator's line in the ledger (the incident timeline). Refused on a
//! read-only profile like every other write (docs/architecture.md, "Operations").

use serde::Serialize;

use super::{OpContext, OpError};
use crate::ledger::{Event, EventKind};

/// Longest note accepted (bytes); the ledger is a shared stream, not a document store.
pub const MAX_NOTE_BYTES: usize = 4096;

/// What a note did.
#[derive(Debug, Clone, Serialize)]
pub struct NoteReport {
    /// The event appended.
    pub event: Event,
}

/// Append `text` as a note on `ns` (or on no namespace).
pub async fn add(cx: &OpContext, ns: Option<&str>, text: &str) -> Result<NoteReport, OpError> {
    cx.require_writable("add a note")?;
    let text = text.trim();
    if text.is_empty() {
        return Err(OpError::refused(
            "the note is empty; nothing was journaled",
            "type the note after `:note`",
        ));
    }
    if text.len() > MAX_NOTE_BYTES {
        return Err(OpError::refused(
            format!(
                "the note is {} bytes; at most {MAX_NOTE_BYTES} are journaled",
                text.len()
            ),
            "shorten it, or link to a document",
        ));
    }
    // The note is the event itself: a ledger that does not take it means nothing happened —
    // a refusal (a missing permission, exit 3) or a failure, never "the change is real".
    let event = cx
        .append(cx.with_via(cx.event(EventKind::Note, ns).reason(text)))
        .await
        .map_err(|e| {
            let message = format!(
                "the note was not journaled: {}",
                crate::text::sanitize(&e.message)
            );
            if e.refused {
                OpError::refused(message, e.hint)
            } else {
                OpError::failed(message, e.hint)
            }
        })?;
    Ok(NoteReport { event })
}
