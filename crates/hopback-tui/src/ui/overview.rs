//! The overview: one row per namespace × version — gate share, ready, unacked, consumers, in/out
//! rates, dead letters per second (live tap), error %, a depth sparkline of the recent minutes —
//! plus DLQ and unrouted depth per namespace (unrouted > 0 in the alert style). Rows with an alert
//! are highlighted; stale data is greyed. Below 100 columns, unacked and out/s are dropped so the
//! table stays readable at 80×24.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Cell, Paragraph, Row, Table};

use super::theme::Theme;
use super::widgets::{
    count, fit, rate,
    spark::{depth_scale, sparkline_to, tail_max},
};
use crate::app::alerts::AlertKind;
use crate::app::state::{AppState, LayoutHints, SortKey};
use crate::model::snapshot::NamespaceSnapshot;
use crate::text::sanitize;

/// Draw the overview into `area`; returns the table's position for mouse clicks.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) -> LayoutHints {
    let wide = area.width >= 100;
    let stale = state.is_stale();
    let rows_ref = state.rows();
    let nss = state
        .snapshot
        .as_ref()
        .map(|s| s.namespaces.len())
        .unwrap_or(0);
    let arrow = if state.sort_desc ^ (state.sort != SortKey::Name) {
        "↓"
    } else {
        "↑"
    };
    // The sort keys of the columns, k9s-style (shift + a letter of the column).
    let sort_keys: Vec<String> = SortKey::ALL
        .iter()
        .map(|k| format!("{} {}", state.keymap.first_key(k.config_name()), short(*k)))
        .collect();
    let mut title = vec![Span::styled(
        format!(
            " namespaces {nss} · sort {} {arrow} · {} ",
            state.sort.label(),
            sort_keys.join(" ")
        ),
        theme.title,
    )];
    if !state.filter.is_empty() {
        title.push(Span::styled(
            format!(
                "· filter “{}” ({} rows) ",
                sanitize(&state.filter),
                rows_ref.len()
            ),
            theme.command,
        ));
    }
    if stale {
        title.push(Span::styled("· STALE ", theme.alert));
    }
    let inner =
        crate::ui::widgets::section_with(f, area, Borders::TOP, theme.border, Line::from(title));

    let Some(snap) = &state.snapshot else {
        let text = match &state.conn {
            crate::model::ConnState::Failed { reason } => {
                format!("cannot connect: {} (ctrl-r retries now)", sanitize(reason))
            }
            crate::model::ConnState::Reconnecting {
                attempt,
                last_error,
                ..
            } => format!(
                "connecting to {} … attempt {attempt} failed: {}",
                sanitize(&state.broker_label()),
                sanitize(last_error)
            ),
            _ => format!("connecting to {} …", sanitize(&state.broker_label())),
        };
        return no_table(f, inner, theme, state, text);
    };
    if rows_ref.is_empty() {
        let text = if snap.namespaces.is_empty() && !snap.mgmt_available {
            // Unknown is not absent: without the API hopback cannot list namespaces.
            format!(
                "namespaces unknown — the management API is unavailable ({}); hopback lists namespaces through it. Hint: check mgmt_url, or name namespaces in the profile to read them over AMQP",
                sanitize(snap.mgmt_error.as_deref().unwrap_or("no reason given"))
            )
        } else if snap.namespaces.is_empty() {
            "no namespaces found — create one with `hopback init NS --versions v1,v2`".to_string()
        } else {
            format!(
                "no namespace matches “{}” — Esc clears the filter",
                sanitize(&state.filter)
            )
        };
        return no_table(f, inner, theme, state, text);
    }

    // Column widths: fixed numeric columns, the namespace name and the sparkline share the rest.
    let mut fixed: Vec<(&str, u16)> = vec![("V", 4), ("GATE", 5), ("READY", 7)];
    if wide {
        fixed.push(("UNACK", 6));
    }
    fixed.extend([("CONS", 4), ("IN/s", 6)]);
    if wide {
        fixed.push(("OUT/s", 6));
    }
    fixed.extend([("DL/s", 6), ("ERR%", 5)]);
    let tail: [(&str, u16); 2] = [("DLQ", 6), ("UNRT", 5)];
    let ncols = fixed.len() + tail.len() + 2;
    let used: u16 = fixed.iter().chain(tail.iter()).map(|c| c.1).sum::<u16>() + ncols as u16 - 1;
    let spare = inner.width.saturating_sub(used);
    let ns_w = (spare / 2).clamp(8, 28).min(spare.saturating_sub(4).max(6));
    let trend_w = spare.saturating_sub(ns_w).max(1);

    // The trend column keeps room for its namespace's scale (`max 1.2k`) when it is wide
    // enough — on its left, so it never sits against the DLQ column and reads as its count.
    let label_w = if trend_w >= 16 { 9 } else { 0 };
    let spark_w = usize::from(trend_w).saturating_sub(label_w);
    let body_rows = inner.height.saturating_sub(1);
    let sel = state.selected.min(rows_ref.len().saturating_sub(1));
    let offset = if (sel as u16) < body_rows {
        0
    } else {
        sel + 1 - usize::from(body_rows)
    };

    // The sorted column carries the arrow.
    let head = |h: &str| -> String {
        let sorted = match state.sort {
            SortKey::Name => "NAMESPACE",
            SortKey::Ready => "READY",
            SortKey::DeadLetterRate => "DL/s",
            SortKey::ErrorRate => "ERR%",
        };
        if h == sorted {
            format!("{h}{arrow}")
        } else {
            h.to_string()
        }
    };
    let mut header: Vec<Cell> = vec![Cell::from(head("NAMESPACE"))];
    header.extend(fixed.iter().map(|(h, _)| Cell::from(head(h))));
    header.push(Cell::from("DEPTH TREND"));
    header.extend(tail.iter().map(|(h, _)| Cell::from(*h)));

    let body_style = if stale { theme.stale } else { theme.base };
    let mut rows = Vec::new();
    for (i, r) in rows_ref
        .iter()
        .enumerate()
        .skip(offset)
        .take(usize::from(body_rows))
    {
        let ns = &snap.namespaces[r.ns];
        let first = r.version.is_none_or(|v| v == 0);
        let v = r.version.map(|i| &ns.versions[i]);
        let version_alert = v.is_some_and(|v| {
            state
                .alerts
                .of(&ns.name, Some(&v.version))
                .any(|a| a.version.is_some())
        });
        let row_style = if i == sel {
            theme.selected
        } else if stale {
            theme.stale
        } else if version_alert {
            theme.alert
        } else {
            body_style
        };
        let hl = |s: Style| if stale || i == sel { row_style } else { s };
        let mut cells: Vec<Cell> = Vec::new();
        cells.push(if first {
            Cell::from(Span::styled(
                fit(&sanitize(&ns.name), usize::from(ns_w)),
                hl(theme.namespace),
            ))
        } else {
            Cell::from("")
        });
        let ver = v
            .map(|v| sanitize(&v.version).into_owned())
            .unwrap_or_else(|| "–".into());
        cells.push(Cell::from(ver));
        cells.push(Cell::from(match (v, ns.gate.as_ref()) {
            (Some(v), Some(_)) if v.weight > 0 => format!("{:.0}%", v.gate_percent),
            (Some(_), Some(_)) => "·".into(),
            // No bindings read (management API down): the split is unknown, not off.
            (Some(_), None) => "?".into(),
            _ => "–".into(),
        }));
        cells.push(Cell::from(count(v.and_then(|v| v.ready))));
        if wide {
            cells.push(Cell::from(count(v.and_then(|v| v.unacked))));
        }
        let cons = v.and_then(|v| v.consumers);
        let no_consumer_alert = v.is_some_and(|v| {
            state
                .alerts
                .of(&ns.name, Some(&v.version))
                .any(|a| matches!(a.kind, AlertKind::NoConsumers { .. }))
        });
        cells.push(Cell::from(Span::styled(
            count(cons),
            if no_consumer_alert {
                hl(theme.alert)
            } else {
                row_style
            },
        )));
        let rates = v.and_then(|v| v.rates);
        cells.push(Cell::from(rate(rates.map(|r| r.publish))));
        if wide {
            cells.push(Cell::from(rate(rates.map(|r| r.ack))));
        }
        let dl = v.and_then(|v| v.dead_letter_rate);
        cells.push(Cell::from(Span::styled(
            rate(dl),
            if dl.is_some_and(|d| d > 0.0) {
                hl(theme.warn)
            } else {
                row_style
            },
        )));
        let err = v.and_then(|v| v.error_rate);
        let th = state.thresholds.of(&ns.name).error_rate_pct;
        cells.push(Cell::from(Span::styled(
            super::widgets::err_pct(v),
            if err.is_some_and(|e| e * 100.0 > th) {
                hl(theme.alert)
            } else if err.is_some_and(|e| e > 0.0) {
                hl(theme.warn)
            } else {
                row_style
            },
        )));
        // One scale per namespace (its versions' largest depth), shown on its first row.
        let series = depth_series(state, &ns.name, v.map(|v| v.version.as_str()));
        let scale = ns_scale(state, ns, spark_w);
        let label = if first && label_w > 0 {
            format!(
                "{:<w$}",
                format!("max {}", count(Some(scale as u64))),
                w = label_w
            )
        } else {
            " ".repeat(label_w)
        };
        cells.push(Cell::from(Line::from(vec![
            Span::styled(label, hl(theme.muted)),
            Span::styled(
                sparkline_to(&series, spark_w, depth_scale(scale)),
                hl(theme.sparkline),
            ),
        ])));
        if first {
            let dlq_alert = state
                .alerts
                .of(&ns.name, None)
                .any(|a| matches!(a.kind, AlertKind::DlqGrowth { .. }));
            cells.push(Cell::from(Span::styled(
                // A queue whose node is down reads "down", not a dash (unknown is not absent).
                if ns.dlq_placement.as_ref().is_some_and(|p| p.unavailable) {
                    "down".to_string()
                } else {
                    count(ns.dlq_depth)
                },
                if dlq_alert {
                    hl(theme.alert)
                } else if ns.dlq_depth.is_some_and(|d| d > 0) {
                    hl(theme.warn)
                } else {
                    row_style
                },
            )));
            let unrouted = ns.unrouted_depth;
            cells.push(Cell::from(Span::styled(
                if ns
                    .unrouted_placement
                    .as_ref()
                    .is_some_and(|p| p.unavailable)
                {
                    "down".to_string()
                } else {
                    count(unrouted)
                },
                if unrouted.is_some_and(|u| u > 0) {
                    hl(theme.alert)
                } else {
                    row_style
                },
            )));
        } else {
            cells.push(Cell::from(""));
            cells.push(Cell::from(""));
        }
        rows.push(Row::new(cells).style(row_style));
    }
    let mut widths: Vec<Constraint> = vec![Constraint::Length(ns_w)];
    widths.extend(fixed.iter().map(|(_, w)| Constraint::Length(*w)));
    widths.push(Constraint::Length(trend_w));
    widths.extend(tail.iter().map(|(_, w)| Constraint::Length(*w)));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.table_header))
        .column_spacing(1);
    f.render_widget(table, inner);
    LayoutHints {
        table_top: inner.y + 1,
        table_rows: body_rows,
        table_offset: offset,
        help_max_scroll: state.layout.help_max_scroll,
    }
}

/// A column's short name beside its sort key in the title.
fn short(k: SortKey) -> &'static str {
    match k {
        SortKey::Name => "name",
        SortKey::Ready => "ready",
        SortKey::DeadLetterRate => "DL/s",
        SortKey::ErrorRate => "err",
    }
}

/// The depth history of one version (empty without one).
fn depth_series(state: &AppState, ns: &str, version: Option<&str>) -> Vec<f64> {
    version
        .and_then(|v| state.history.get(&(ns.to_string(), v.to_string())))
        .map(|h| h.iter().map(|s| s.depth() as f64).collect())
        .unwrap_or_default()
}

/// The namespace's shared sparkline scale: the largest depth any of its versions shows.
fn ns_scale(state: &AppState, ns: &NamespaceSnapshot, width: usize) -> f64 {
    ns.versions
        .iter()
        .map(|v| tail_max(&depth_series(state, &ns.name, Some(&v.version)), width))
        .fold(0.0, f64::max)
}

/// The table's place when there is no table: one muted line saying why.
fn no_table(
    f: &mut Frame,
    inner: Rect,
    theme: &Theme,
    state: &AppState,
    text: String,
) -> LayoutHints {
    // Wrapped: a connection failure's cause and hint are read in full, never cut at the edge.
    f.render_widget(
        Paragraph::new(Span::styled(text, theme.muted))
            .wrap(ratatui::widgets::Wrap { trim: false }),
        inner,
    );
    LayoutHints {
        table_top: inner.y + 1,
        table_rows: 0,
        table_offset: 0,
        help_max_scroll: state.layout.help_max_scroll,
    }
}
