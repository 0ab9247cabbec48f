//! The dead-letter browser (`d` / `:dlq`): a page of the DLQ read without removing anything,
//! grouped (origin version, reason, exception header, age) with counts first, then the messages
//! of a group as one-line safe previews; selection; the replay dialog (scope, target, counts),
//! the purge dialog (export first, count typed) and the progress of a running replay.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::dialog::{draw_confirm, modal, with_context};
use super::gate::job_line;
use super::theme::Theme;
use super::widgets::fit;
use crate::app::panels::{DlqDialog, DlqLevel, DlqPanel};
use crate::app::state::AppState;
use crate::text::sanitize;

/// Draw the browser of `ns`.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, ns: &str) {
    let Some(d) = state.ops.dlq.as_ref().filter(|d| d.ns == ns) else {
        return;
    };
    let job = state.ops.job.as_ref().filter(|j| j.ns == ns);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(if job.is_some() { 2 } else { 1 }),
    ])
    .areas(area);
    let pages = d
        .depth
        .map(|x| x.div_ceil(d.page_size.max(1)).max(1))
        .unwrap_or(1);
    let title = format!(
        " dead letters · {} · {} at rest · page {}/{} · by {} ",
        sanitize(&d.queue),
        d.depth.map_or("?".into(), |x| x.to_string()),
        d.page + 1,
        pages,
        format!("{:?}", d.group_by).to_lowercase(),
    );
    let inner = crate::ui::widgets::section(f, head, title, theme);
    let w = usize::from(inner.width);
    let status = if d.loading {
        Line::from(Span::styled(
            "reading (browse: nothing is removed)…",
            theme.warn,
        ))
    } else if let Some(e) = &d.error {
        Line::from(Span::styled(
            fit(&format!("✘ {}", sanitize(e)), w),
            theme.alert,
        ))
    } else {
        let where_ = match d.level {
            DlqLevel::Groups if d.page_is_whole() => {
                format!("{} group(s) · counts are the whole DLQ", d.groups.len())
            }
            DlqLevel::Groups => format!(
                "{} group(s) · counts are of this page's {} message(s), not the whole DLQ",
                d.groups.len(),
                d.items.len()
            ),
            DlqLevel::Messages(g) => format!(
                "group `{}` · {} message(s)",
                d.groups.get(g).map(|g| g.key.as_str()).unwrap_or("?"),
                d.group_items(g).len()
            ),
        };
        Line::from(Span::styled(
            fit(&format!("{where_} · {} selected", d.selected.len()), w),
            theme.muted,
        ))
    };
    f.render_widget(Paragraph::new(status), inner);
    match d.level {
        DlqLevel::Groups => draw_groups(f, body, theme, d),
        DlqLevel::Messages(g) => draw_messages(f, body, theme, d, g),
    }
    let mut lines = Vec::new();
    if let Some(j) = job {
        lines.push(job_line(j, usize::from(foot.width), theme, state));
    }
    let k = |n: &str| state.keymap.first_key(n);
    let hint = match d.level {
        DlqLevel::Groups => format!(
            "Enter open group · {} select group · {} group by · {} replay · {} purge · {}/{} page · Esc back",
            k("select"),
            k("sort"),
            k("replay"),
            k("purge"),
            k("prev_page"),
            k("next_page")
        ),
        DlqLevel::Messages(_) => format!(
            "Enter inspect · {} select · {} export · {} replay · {} purge · Esc groups",
            k("select"),
            k("export"),
            k("replay"),
            k("purge")
        ),
    };
    lines.push(Line::from(Span::styled(
        fit(&hint, usize::from(foot.width)),
        theme.muted,
    )));
    f.render_widget(Paragraph::new(lines), foot);
    if let Some(dialog) = &d.dialog {
        draw_dialog(f, area, state, theme, d, dialog);
    }
}

fn draw_groups(f: &mut Frame, area: Rect, theme: &Theme, d: &DlqPanel) {
    if d.groups.is_empty() {
        let text = if d.loading {
            ""
        } else {
            "no dead letters on this page"
        };
        f.render_widget(Paragraph::new(Span::styled(text, theme.muted)), area);
        return;
    }
    let visible = usize::from(area.height.saturating_sub(1)).max(1);
    let skip = (d.group_cursor + 1).saturating_sub(visible);
    let rows: Vec<Row> = d
        .groups
        .iter()
        .enumerate()
        .skip(skip)
        .take(visible)
        .map(|(i, g)| {
            let sel = g.positions.iter().filter(|p| d.is_selected(**p)).count();
            let style = if i == d.group_cursor {
                theme.selected
            } else {
                theme.base
            };
            Row::new(vec![
                Cell::from(crate::text::preview(g.key.as_bytes(), 400, 80)),
                Cell::from(g.count.to_string()),
                Cell::from(crate::model::deadletter::fmt_age(g.oldest_age_s)),
                Cell::from(if sel > 0 {
                    format!("{sel}")
                } else {
                    String::new()
                }),
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(20),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(5),
        ],
    )
    .header(
        Row::new([
            "GROUP",
            if d.page_is_whole() {
                "COUNT"
            } else {
                "ON PAGE"
            },
            "OLDEST",
            "SEL",
        ])
        .style(theme.table_header),
    )
    .column_spacing(1);
    f.render_widget(table, area);
}

fn draw_messages(f: &mut Frame, area: Rect, theme: &Theme, d: &DlqPanel, g: usize) {
    let items = d.group_items(g);
    let visible = usize::from(area.height.saturating_sub(1)).max(1);
    let skip = (d.msg_cursor + 1).saturating_sub(visible);
    let rows: Vec<Row> = items
        .iter()
        .enumerate()
        .skip(skip)
        .take(visible)
        .map(|(i, s)| {
            let style = if i == d.msg_cursor {
                theme.selected
            } else {
                theme.base
            };
            Row::new(vec![
                Cell::from(if d.is_selected(s.position) {
                    "[x]"
                } else {
                    "[ ]"
                }),
                Cell::from(s.position.to_string()),
                // The identity (message id, else `sha:` digest): what `dlq show` takes.
                Cell::from(crate::text::preview(s.id.as_bytes(), 200, 24)),
                Cell::from(s.origin_version.clone().unwrap_or_else(|| "?".into())),
                Cell::from(s.reason.clone()),
                Cell::from(s.replays.to_string()),
                Cell::from(crate::model::deadletter::fmt_age(s.age_s)),
                Cell::from(s.preview.clone()),
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Length(5),
            Constraint::Length(16),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(3),
            Constraint::Length(4),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(["SEL", "#", "ID", "FROM", "REASON", "RPL", "AGE", "BODY"])
            .style(theme.table_header),
    )
    .column_spacing(1);
    f.render_widget(table, area);
}

fn draw_dialog(
    f: &mut Frame,
    area: Rect,
    state: &AppState,
    theme: &Theme,
    d: &DlqPanel,
    dialog: &DlqDialog,
) {
    match dialog {
        DlqDialog::Replay { dialog, .. } => {
            let body = vec![Line::from(format!(
                "Replay dead letters from {} (each acked only after its publish is confirmed; replayed more than 3 times → parked):",
                sanitize(&d.queue)
            ))];
            draw_confirm(f, area, dialog, with_context(state, body, theme), theme);
        }
        DlqDialog::PurgePreparing => modal(
            f,
            area,
            "purge",
            vec![Line::from(format!(
                "Exporting every message of {} to a JSONL file first (held, nothing removed yet)…",
                sanitize(&d.queue)
            ))],
            theme.warn,
            theme,
        ),
        DlqDialog::PurgeReady {
            count,
            path,
            dialog,
        } => {
            let body = vec![
                Line::from(format!(
                    "Exported {count} message(s) from {} to",
                    sanitize(&d.queue)
                )),
                Line::from(Span::styled(
                    sanitize(&path.display().to_string()).into_owned(),
                    theme.title,
                )),
                Line::from(Span::styled(
                    format!(
                        "Permanently remove exactly these {count} message(s)? They are held until you decide; Cancel puts them back."
                    ),
                    theme.alert,
                )),
            ];
            draw_confirm(f, area, dialog, with_context(state, body, theme), theme);
        }
        DlqDialog::Purging { count } => modal(
            f,
            area,
            "purge",
            vec![Line::from(format!("purging {count} message(s)…"))],
            theme.alert,
            theme,
        ),
        DlqDialog::PurgeResult(r) => {
            let line = match r {
                Ok((n, p)) => Line::from(Span::styled(
                    format!(
                        "✔ purged {n} message(s); export kept at {} (journaled in the ledger) — Esc",
                        sanitize(&p.display().to_string())
                    ),
                    theme.ok,
                )),
                Err(e) => Line::from(Span::styled(
                    format!(
                        "✘ purge failed: {} — nothing was removed · Esc",
                        sanitize(e)
                    ),
                    theme.alert,
                )),
            };
            let area = Rect {
                y: area.y + area.height.saturating_sub(4),
                height: area.height.min(4),
                ..area
            };
            modal(f, area, "purge", vec![line], theme.border, theme);
        }
    }
    let _ = state;
}
