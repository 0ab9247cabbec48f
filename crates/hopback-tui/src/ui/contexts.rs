//! Contexts on screen: the picker (`:ctx`, `C` — every profile with its broker URL without
//! credentials, version, health, alerts and flags) and the overview across contexts
//! (`hopback --profile a --profile b`, `:ctx all`): one line of health per context above one
//! table whose every row names its context.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::theme::Theme;
use super::widgets::{count, fit, rate};
use crate::app::contexts::{ALL, Console};
use crate::app::state::{AppState, LayoutHints};
use crate::text::sanitize;

/// Draw the picker.
pub fn draw_picker(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) {
    let [body, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let open = state.contexts.iter().filter(|c| c.open).count();
    let inner = crate::ui::widgets::section(
        f,
        body,
        format!(
            " contexts · {} profile(s), {open} open in this console ",
            state.contexts.len()
        ),
        theme,
    );
    let wide = inner.width >= 100;
    let sel = state.context_sel;
    let mut rows = vec![
        Row::new(vec![
            Cell::from(if sel == 0 { "▶" } else { " " }),
            Cell::from(ALL),
            Cell::from(format!("every open context together ({open})")),
        ])
        .style(if sel == 0 {
            theme.selected
        } else {
            theme.muted
        }),
    ];
    for (i, c) in state.contexts.iter().enumerate() {
        let selected = sel == i + 1;
        let health_style = match c.healthy {
            Some(true) => theme.ok,
            Some(false) => theme.alert,
            None => theme.muted,
        };
        let mut flags = Vec::new();
        if c.production {
            flags.push("PROD");
        }
        if c.read_only {
            flags.push("RO");
        }
        let alerts = match c.alerts {
            Some(0) => "0".to_string(),
            Some(n) => format!("{n} ⚠"),
            None => "?".to_string(),
        };
        let mut cells = vec![
            Cell::from(if c.active { "●" } else { " " }),
            Cell::from(Span::styled(
                sanitize(&c.name).into_owned(),
                if c.production {
                    theme.badge_production
                } else {
                    theme.namespace
                },
            )),
            Cell::from(sanitize(&c.url).into_owned()),
            Cell::from(c.version.as_deref().map(sanitize).unwrap_or("?".into())),
            Cell::from(Span::styled(sanitize(&c.health).into_owned(), health_style)),
            Cell::from(Span::styled(
                alerts,
                if c.alerts.is_some_and(|n| n > 0) {
                    theme.alert
                } else {
                    theme.base
                },
            )),
        ];
        if wide {
            cells.push(Cell::from(flags.join(" ")));
        }
        let mut row = Row::new(cells);
        if selected {
            row = row.style(theme.selected);
        }
        rows.push(row);
    }
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(14),
        Constraint::Length(if wide { 34 } else { 22 }),
        Constraint::Length(7),
        Constraint::Min(12),
        Constraint::Length(6),
    ];
    let mut header = vec!["", "CONTEXT", "BROKER", "VERSION", "HEALTH", "ALERTS"];
    if wide {
        widths.push(Constraint::Length(8));
        header.push("FLAGS");
    }
    f.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(theme.table_header))
            .column_spacing(1),
        inner,
    );
    let hint = format!(
        "↑/↓ choose · {} switch (no restart) · :ctx NAME · Esc back — ● on screen; operations stay on the context they started in",
        state.keymap.first_key("open")
    );
    f.render_widget(
        Paragraph::new(Span::styled(
            fit(&hint, usize::from(foot.width)),
            theme.muted,
        )),
        foot,
    );
}

/// Draw the overview across every open context; returns the table's place for mouse clicks.
pub fn draw_merged(f: &mut Frame, area: Rect, console: &Console, theme: &Theme) -> LayoutHints {
    let state = console.state();
    let n = console.slots.len() as u16;
    let [strip, table_area] =
        Layout::vertical([Constraint::Length(n + 1), Constraint::Min(3)]).areas(area);
    // One health line per context.
    let strip_inner = crate::ui::widgets::section(
        f,
        strip,
        format!(" {} contexts · health and alerts per context ", n),
        theme,
    );
    let width = usize::from(strip_inner.width);
    let lines: Vec<Line> = console
        .slots
        .iter()
        .map(|slot| {
            let st = &slot.state;
            let live = st.conn.is_live() && !st.is_stale();
            let alerts = st.alerts.active.len();
            let mut spans = vec![Span::styled(
                format!("{:<12} ", fit(&sanitize(&st.profile), 12)),
                if st.production {
                    theme.badge_production
                } else {
                    theme.namespace
                },
            )];
            spans.push(Span::styled(
                format!(
                    "{} · RabbitMQ {} · ",
                    sanitize(&st.broker_label()),
                    st.snapshot
                        .as_ref()
                        .and_then(|s| s.server_version.as_deref())
                        .map(sanitize)
                        .unwrap_or("?".into())
                ),
                theme.base,
            ));
            spans.push(Span::styled(
                st.conn_label(),
                if live { theme.ok } else { theme.alert },
            ));
            spans.push(Span::styled(
                match alerts {
                    0 => " · no alerts".to_string(),
                    1 => format!(" · 1 alert: {}", st.alerts.active[0].describe()),
                    n => format!(" · {n} alerts, worst: {}", st.alerts.active[0].describe()),
                },
                if alerts > 0 { theme.alert } else { theme.muted },
            ));
            if st.read_only {
                spans.push(Span::styled(" · read-only", theme.muted));
            }
            let line = Line::from(spans);
            if line.width() > width {
                let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
                Line::from(Span::styled(fit(&text, width), theme.base))
            } else {
                line
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), strip_inner);

    let rows_ref = console.merged_rows();
    let arrow = |desc: bool, key: crate::app::state::SortKey| {
        if desc ^ (key != crate::app::state::SortKey::Name) {
            "↓"
        } else {
            "↑"
        }
    };
    let mut title = vec![Span::styled(
        format!(
            " {} rows · sort {} {} ",
            rows_ref.len(),
            state.sort.label(),
            arrow(state.sort_desc, state.sort)
        ),
        theme.title,
    )];
    if !state.filter.is_empty() {
        title.push(Span::styled(
            format!("· filter “{}” ", sanitize(&state.filter)),
            theme.command,
        ));
    }
    let inner = crate::ui::widgets::section_with(
        f,
        table_area,
        ratatui::widgets::Borders::TOP,
        theme.border,
        Line::from(title),
    );
    if rows_ref.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                if state.filter.is_empty() {
                    "no namespaces in any open context yet (connecting, or none created)"
                        .to_string()
                } else {
                    format!(
                        "no namespace matches “{}” — Esc clears the filter",
                        sanitize(&state.filter)
                    )
                },
                theme.muted,
            )),
            inner,
        );
        return LayoutHints {
            table_top: inner.y + 1,
            table_rows: 0,
            table_offset: 0,
            help_max_scroll: state.layout.help_max_scroll,
        };
    }
    let wide = inner.width >= 100;
    let body_rows = inner.height.saturating_sub(1);
    let sel = console.merged_sel.min(rows_ref.len() - 1);
    let offset = if (sel as u16) < body_rows {
        0
    } else {
        sel + 1 - usize::from(body_rows)
    };
    let mut rows = Vec::new();
    for (i, (slot, r)) in rows_ref
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(body_rows))
    {
        let st = &console.slots[*slot].state;
        let Some(snap) = &st.snapshot else { continue };
        let ns = &snap.namespaces[r.ns];
        let v = r.version.map(|i| &ns.versions[i]);
        let first = r.version.is_none_or(|v| v == 0);
        let stale = st.is_stale();
        let alert = v.is_some_and(|v| {
            st.alerts
                .of(&ns.name, Some(&v.version))
                .any(|a| a.version.is_some())
        });
        let style = if i == sel {
            theme.selected
        } else if stale {
            theme.stale
        } else if alert {
            theme.alert
        } else {
            theme.base
        };
        let err = v.and_then(|v| v.error_rate);
        let th = st.thresholds.of(&ns.name).error_rate_pct;
        let mut cells = vec![
            Cell::from(Span::styled(
                sanitize(&st.profile).into_owned(),
                if i == sel {
                    style
                } else if st.production {
                    theme.badge_production
                } else {
                    theme.muted
                },
            )),
            Cell::from(if first {
                sanitize(&ns.name).into_owned()
            } else {
                String::new()
            }),
            Cell::from(
                v.map(|v| sanitize(&v.version).into_owned())
                    .unwrap_or_else(|| "–".into()),
            ),
            Cell::from(match (v, ns.gate.as_ref()) {
                (Some(v), Some(_)) if v.weight > 0 => format!("{:.0}%", v.gate_percent),
                (Some(_), Some(_)) => "·".into(),
                (Some(_), None) => "?".into(),
                _ => "–".into(),
            }),
            Cell::from(count(v.and_then(|v| v.ready))),
        ];
        if wide {
            cells.push(Cell::from(count(v.and_then(|v| v.unacked))));
        }
        cells.push(Cell::from(count(v.and_then(|v| v.consumers))));
        cells.push(Cell::from(rate(v.and_then(|v| v.rates).map(|r| r.publish))));
        cells.push(Cell::from(rate(v.and_then(|v| v.dead_letter_rate))));
        cells.push(Cell::from(Span::styled(
            super::widgets::err_pct(v),
            if i != sel && err.is_some_and(|e| e * 100.0 > th) {
                theme.alert
            } else {
                style
            },
        )));
        cells.push(Cell::from(if first {
            count(ns.dlq_depth)
        } else {
            String::new()
        }));
        cells.push(Cell::from(if first {
            count(ns.unrouted_depth)
        } else {
            String::new()
        }));
        if !wide {
            rows.push(Row::new(cells).style(style));
            continue;
        }
        cells.push(Cell::from(Span::styled(
            if first {
                match st.alerts.of(&ns.name, None).count() {
                    0 => String::new(),
                    n => format!("{n} ⚠"),
                }
            } else {
                String::new()
            },
            if i == sel { style } else { theme.alert },
        )));
        rows.push(Row::new(cells).style(style));
    }
    let mut header = vec!["CONTEXT", "NAMESPACE", "V", "GATE", "READY"];
    let mut widths = vec![
        Constraint::Length(if wide { 12 } else { 8 }),
        Constraint::Min(10),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(7),
    ];
    if wide {
        header.push("UNACK");
        widths.push(Constraint::Length(6));
    }
    header.extend(["CONS", "IN/s", "DL/s", "ERR%", "DLQ", "UNRT"]);
    widths.extend([
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(5),
    ]);
    if wide {
        // Narrow, a row in alert is still drawn in the alert style.
        header.push("ALERT");
        widths.push(Constraint::Length(5));
    }
    f.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(theme.table_header))
            .column_spacing(1),
        inner,
    );
    LayoutHints {
        table_top: inner.y + 1,
        table_rows: body_rows,
        table_offset: offset,
        help_max_scroll: state.layout.help_max_scroll,
    }
}
