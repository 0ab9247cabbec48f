//! The describe view (Enter on a timeline row): every field of one ledger event, one line per
//! field and per line of its JSON documents, scrollable. The lines were made terminal-safe by the
//! panel; they are cut to the width here, never wrapped into a neighbour.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::widgets::fit;
use crate::app::state::AppState;

/// Width of the field-name column.
const FIELD_W: usize = 19;

/// Draw the describe view.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) {
    let [body, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let Some(d) = &state.ops.describe else {
        return;
    };
    let inner = crate::ui::widgets::section(f, body, format!(" describe · {} ", d.title), theme);
    let width = usize::from(inner.width);
    let rows = usize::from(inner.height);
    let lines: Vec<Line> = d
        .lines
        .iter()
        .skip(d.scroll)
        .take(rows)
        .map(|(field, value)| {
            Line::from(vec![
                Span::styled(
                    format!("{:<FIELD_W$} ", fit(field, FIELD_W)),
                    theme.help_key,
                ),
                Span::styled(fit(value, width.saturating_sub(FIELD_W + 1)), theme.base),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
    let more = d.lines.len().saturating_sub(d.scroll + rows);
    let hint = format!(
        "↑/↓ PgUp/PgDn scroll · {} copy event id · Esc back{}",
        state.keymap.first_key("yank"),
        if more > 0 {
            format!(" · {more} more line(s) below")
        } else {
            String::new()
        }
    );
    f.render_widget(
        Paragraph::new(Span::styled(
            fit(&hint, usize::from(foot.width)),
            theme.muted,
        )),
        foot,
    );
}
