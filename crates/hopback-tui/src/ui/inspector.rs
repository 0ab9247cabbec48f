//! The inspector (Enter on a dead letter): origin, reason, replay count, properties, headers,
//! the x-death history and the body as text, pretty JSON or hex — every line built by
//! `model::deadletter::inspector_lines`, which sanitises everything, so a hostile payload is
//! shown (`␛]52;…`) and never interpreted.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::widgets::fit;
use crate::app::state::AppState;
use crate::model::deadletter::LineKind;
use crate::text::sanitize;

/// Draw the inspector.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, ns: &str) {
    let Some(i) = state.ops.inspector.as_ref().filter(|i| i.ns == ns) else {
        return;
    };
    let [body, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let queue = state
        .ops
        .dlq
        .as_ref()
        .map(|d| d.queue.clone())
        .unwrap_or_else(|| "?".to_string());
    let title = format!(
        " message {} · {} · body {} ",
        crate::text::preview(i.id.label().as_bytes(), 200, 32),
        sanitize(&queue),
        format!("{:?}", i.mode).to_lowercase()
    );
    let inner = crate::ui::widgets::section(f, body, title, theme);
    let w = usize::from(inner.width);
    if i.loading {
        f.render_widget(
            Paragraph::new(Span::styled(
                "loading the full message (browse: it stays in the queue)…",
                theme.warn,
            )),
            inner,
        );
    } else if let Some(e) = &i.error {
        f.render_widget(
            Paragraph::new(Span::styled(
                fit(&format!("✘ {}", sanitize(e)), w),
                theme.alert,
            )),
            inner,
        );
    } else {
        // The last page stays full: scrolling past it shows the end, not one line.
        let skip = i
            .scroll
            .min(i.lines.len().saturating_sub(usize::from(inner.height)));
        let lines: Vec<Line> = i
            .lines
            .iter()
            .skip(skip)
            .take(usize::from(inner.height))
            .map(|l| {
                let style = match l.kind {
                    LineKind::Title => theme.title,
                    LineKind::JsonKey => theme.help_key,
                    LineKind::Note => theme.muted,
                    LineKind::Field | LineKind::Body | LineKind::Blank => theme.base,
                };
                // Already sanitised by the model; cut to the width (no wrapping of huge lines).
                Line::from(Span::styled(fit(&l.text, w), style))
            })
            .collect();
        f.render_widget(Paragraph::new(lines), inner);
    }
    let k = |n: &str| state.keymap.first_key(n);
    let hint = format!(
        "↑/↓ scroll ({}/{}) · {} body auto/text/JSON/hex · {} export to a file · Esc back",
        (i.scroll + 1).min(i.lines.len().max(1)),
        i.lines.len(),
        k("body_mode"),
        k("export")
    );
    f.render_widget(
        Paragraph::new(Span::styled(
            fit(&hint, usize::from(foot.width)),
            theme.muted,
        )),
        foot,
    );
}
