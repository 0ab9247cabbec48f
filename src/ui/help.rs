//! The `?` help view, generated from the keymap table (so it shows the operator's overrides and
//! can never disagree with what the keys do) and the list of `:` commands.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::theme::Theme;
use super::widgets::fit;
use crate::app::action::COMMANDS;
use crate::app::state::AppState;

/// Draw the help view.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(area);
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(theme.border)
        .title(Span::styled(
            " keys (config [keymap] overrides) ",
            theme.title,
        ));
    let inner = block.inner(left);
    f.render_widget(block, left);
    let key_w = 14usize;
    let desc_w = usize::from(inner.width).saturating_sub(key_w + 1);
    let key_line = |b: &crate::app::keymap::Binding, desc_w: usize| {
        Line::from(vec![
            Span::styled(
                format!("{:<key_w$} ", fit(&b.keys.join(" "), key_w)),
                theme.help_key,
            ),
            Span::styled(fit(b.desc, desc_w), theme.help_desc),
        ])
    };
    let bound: Vec<&crate::app::keymap::Binding> = state
        .keymap
        .bindings
        .iter()
        .filter(|b| !b.keys.is_empty())
        .collect();
    // Rows that do not fit on the left continue in the right column (80×24 shows every key).
    let fit_left = usize::from(inner.height);
    let lines: Vec<Line> = bound
        .iter()
        .take(fit_left)
        .map(|b| key_line(b, desc_w))
        .collect();
    let overflow: Vec<&crate::app::keymap::Binding> =
        bound.iter().skip(fit_left).copied().collect();
    f.render_widget(Paragraph::new(lines), inner);

    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(theme.border)
        .title(Span::styled(" commands ", theme.title));
    let inner = block.inner(right);
    f.render_widget(block, right);
    let cmd_w = 15usize;
    let desc_w = usize::from(inner.width).saturating_sub(cmd_w + 1);
    let mut lines: Vec<Line> = COMMANDS
        .iter()
        .map(|(c, d)| {
            Line::from(vec![
                Span::styled(format!("{c:<cmd_w$} "), theme.help_key),
                Span::styled(fit(d, desc_w), theme.help_desc),
            ])
        })
        .collect();
    if !overflow.is_empty() {
        let desc_w = usize::from(inner.width).saturating_sub(key_w + 1);
        for b in &overflow {
            lines.push(key_line(b, desc_w));
        }
    }
    let notes = [
        "mouse: wheel scrolls, click selects,",
        "click again opens.",
        "Esc goes back. Data greys out when",
        "stale; the header says why.",
        "Dialogs: Tab/←/→ move, Enter chooses,",
        "Esc cancels; focus starts on Cancel.",
    ];
    if lines.len() + 1 + notes.len() <= usize::from(inner.height) {
        lines.push(Line::from(""));
        for t in notes {
            lines.push(Line::from(Span::styled(t, theme.muted)));
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
}
