//! The incident timeline (`t` / `:timeline [NS]`): the ledger's timeline projection, newest at
//! the bottom, followed live (every console appends to the same stream), scrollable, filtered by
//! namespace and by the `/` text; `:note TEXT` (or `n`) adds an operator note.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::theme::Theme;
use super::widgets::fit;
use crate::app::state::AppState;
use crate::model::outcome::Outcome;
use crate::text::sanitize;

/// Draw the timeline.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, ns: Option<&str>) {
    let t = &state.ops.timeline;
    let [body, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let visible = t.visible();
    let title = format!(
        " timeline · {} · {} event(s){}{} ",
        ns.map(|n| sanitize(n).into_owned())
            .unwrap_or_else(|| "all namespaces".into()),
        visible.len(),
        if t.filter.is_empty() {
            String::new()
        } else {
            format!(" matching /{}", sanitize(&t.filter))
        },
        match &state.ops.feed.down {
            Some(_) => " · live feed down".to_string(),
            None => " · live".to_string(),
        }
    );
    let inner = crate::ui::widgets::section(f, body, title, theme);
    if t.loading && visible.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled("reading the ledger…", theme.warn)),
            inner,
        );
    } else if let Some(e) = &t.error {
        f.render_widget(
            Paragraph::new(Span::styled(
                fit(&format!("✘ {}", sanitize(e)), usize::from(inner.width)),
                theme.alert,
            )),
            inner,
        );
    } else if visible.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                "no events yet — every gate flip, replay, purge, rollback and note lands here",
                theme.muted,
            )),
            inner,
        );
    } else {
        let rows_fit = usize::from(inner.height.saturating_sub(1)).max(1);
        let end = visible
            .len()
            .saturating_sub(t.scroll.min(visible.len() - 1));
        let start = end.saturating_sub(rows_fit);
        let wide = inner.width >= 100;
        let selected = end - 1;
        let rows: Vec<Row> = visible[start..end]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let style = match e.outcome {
                    _ if start + i == selected => theme.selected,
                    Outcome::Failed | Outcome::VerificationFailed => theme.alert,
                    Outcome::Refused | Outcome::Cancelled => theme.warn,
                    _ => theme.base,
                };
                let mut text = e.summary.clone();
                if let Some(r) = &e.reason
                    && !text.contains(r.as_str())
                {
                    text = format!("{text} — {r}");
                }
                let mut cells = vec![
                    Cell::from(
                        e.ts.format(if wide { "%m-%d %H:%M:%S" } else { "%H:%M:%S" })
                            .to_string(),
                    ),
                    Cell::from(e.who.clone()),
                    Cell::from(e.namespace.clone()),
                    Cell::from(e.kind.as_str()),
                ];
                if wide {
                    cells.push(Cell::from(e.outcome.as_str()));
                }
                cells.push(Cell::from(text));
                Row::new(cells).style(style)
            })
            .collect();
        let (widths, header): (Vec<Constraint>, Vec<&str>) = if wide {
            (
                vec![
                    Constraint::Length(14),
                    // The verified author first, the claimed operator after it (cut when long).
                    Constraint::Length(22),
                    Constraint::Length(16),
                    Constraint::Length(17),
                    Constraint::Length(8),
                    Constraint::Min(20),
                ],
                vec![
                    "WHEN (UTC)",
                    "WHO",
                    "NAMESPACE",
                    "WHAT",
                    "OUTCOME",
                    "DETAIL",
                ],
            )
        } else {
            (
                vec![
                    Constraint::Length(8),
                    Constraint::Length(10),
                    Constraint::Length(10),
                    Constraint::Length(12),
                    Constraint::Min(10),
                ],
                vec!["UTC", "WHO", "NS", "WHAT", "DETAIL"],
            )
        };
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(theme.table_header))
            .column_spacing(1);
        f.render_widget(table, inner);
    }
    let hint = format!(
        "↑/↓ select · {} describe · {} copy id · / filter · {} note · Esc back{}",
        state.keymap.first_key("open"),
        state.keymap.first_key("yank"),
        state.keymap.first_key("note"),
        if t.scroll > 0 {
            format!(" · {} newer below", t.scroll)
        } else {
            String::new()
        }
    );
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            fit(&hint, usize::from(foot.width)),
            theme.muted,
        ))),
        foot,
    );
}
