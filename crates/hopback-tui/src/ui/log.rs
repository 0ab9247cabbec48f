//! The log view (`L`, `:log`): the tail of hopback's own log file, newest at the bottom, with its
//! own `/` filter; ctrl-r reads the file again. Lines were made terminal-safe when read.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::widgets::fit;
use crate::app::state::AppState;
use crate::text::sanitize;

/// Draw the log view.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) {
    let log = &state.ops.log;
    let [body, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let visible = log.visible();
    let title = format!(
        " log · {} · {} line(s){} ",
        if log.path.is_empty() {
            "hopback.log".to_string()
        } else {
            log.path.clone()
        },
        visible.len(),
        if log.filter.is_empty() {
            String::new()
        } else {
            format!(" matching /{}", sanitize(&log.filter))
        }
    );
    let inner = crate::ui::widgets::section(f, body, title, theme);
    let width = usize::from(inner.width);
    if let Some(e) = &log.error {
        f.render_widget(
            Paragraph::new(Span::styled(format!("✘ {}", sanitize(e)), theme.alert))
                .wrap(ratatui::widgets::Wrap { trim: false }),
            inner,
        );
    } else if log.loading && visible.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled("reading the log…", theme.warn)),
            inner,
        );
    } else if visible.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                if log.filter.is_empty() {
                    "the log is empty"
                } else {
                    "no line matches the filter — Esc in the filter clears it"
                },
                theme.muted,
            )),
            inner,
        );
    } else {
        let rows = usize::from(inner.height).max(1);
        let end = visible
            .len()
            .saturating_sub(log.scroll.min(visible.len() - 1));
        let start = end.saturating_sub(rows);
        let lines: Vec<Line> = visible[start..end]
            .iter()
            .map(|l| {
                let style = if l.contains(" ERROR ") {
                    theme.alert
                } else if l.contains(" WARN ") {
                    theme.warn
                } else {
                    theme.base
                };
                Line::from(Span::styled(fit(l, width), style))
            })
            .collect();
        f.render_widget(Paragraph::new(lines), inner);
    }
    let hint = format!(
        "↑/↓ scroll · / filter · {} read again · Esc back{}",
        state.keymap.first_key("refresh"),
        if log.scroll > 0 {
            format!(" · {} newer below", log.scroll)
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
