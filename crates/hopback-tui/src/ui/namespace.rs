//! The namespace view (Enter on the overview): the gate as a bar, the versions side by side — each
//! with its numbers, depth and error-rate history, and the connection names of its consumers —
//! and the last dead letters from the live tap (age, origin version, reason, message id, a safe
//! one-line preview).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use super::theme::Theme;
use super::widgets::{
    age, count, fit, fit_tail,
    gatebar::gate_bar,
    rate,
    spark::{depth_scale, sparkline_to, tail_max},
};
use crate::app::state::AppState;
use crate::model::snapshot::{NamespaceSnapshot, VersionSnapshot};
use crate::text::sanitize;

/// Width of the MESSAGE ID column: ids keep their (distinguishing) end.
const ID_WIDTH: usize = 14;

/// Draw the view of namespace `ns`.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, ns: &str) {
    let Some(n) = state.namespace(ns) else {
        f.render_widget(
            Paragraph::new(Span::styled(
                format!("namespace {} is not on the broker (any more)", sanitize(ns)),
                theme.alert,
            )),
            area,
        );
        return;
    };
    let stale = state.is_stale();
    let problems = n.gate_problems.len().min(2) as u16;
    let split = crate::ui::gate::split_lines(n, usize::from(area.width), theme).len() as u16;
    let [gate_area, versions_area, dl_area] = Layout::vertical([
        Constraint::Length(2 + problems + split),
        Constraint::Length(11),
        Constraint::Min(3),
    ])
    .areas(area);
    draw_gate(f, gate_area, state, theme, n, stale);
    let shown: Vec<&VersionSnapshot> = n.versions.iter().take(4).collect();
    if shown.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled("no version queues", theme.muted)),
            versions_area,
        );
    } else {
        let cols = Layout::horizontal(vec![Constraint::Ratio(1, shown.len() as u32); shown.len()])
            .split(versions_area);
        for (v, col) in shown.iter().zip(cols.iter()) {
            draw_version(f, *col, state, theme, n, v, stale);
        }
    }
    draw_dead_letters(f, dl_area, state, theme, n);
}

fn draw_gate(
    f: &mut Frame,
    area: Rect,
    state: &AppState,
    theme: &Theme,
    n: &NamespaceSnapshot,
    stale: bool,
) {
    let title = format!(
        " {} · gate {} · DLQ {} · unrouted {} ",
        sanitize(&n.name),
        n.gate
            .as_ref()
            .map(|g| g.describe())
            .unwrap_or_else(|| "unknown".into()),
        n.dlq_text(),
        n.unrouted_text(),
    );
    let title_style = if n.unrouted_depth.is_some_and(|u| u > 0) {
        theme.alert
    } else {
        theme.title
    };
    let inner = crate::ui::widgets::section_with(
        f,
        area,
        Borders::TOP,
        theme.border,
        Span::styled(title, title_style),
    );
    let mut lines = vec![gate_bar(n.gate.as_ref(), usize::from(inner.width), theme)];
    lines.extend(crate::ui::gate::split_lines(
        n,
        usize::from(inner.width),
        theme,
    ));
    for p in n.gate_problems.iter().take(2) {
        lines.push(Line::from(Span::styled(
            fit(&format!("⚠ {}", sanitize(p)), usize::from(inner.width)),
            theme.alert,
        )));
    }
    let p = Paragraph::new(lines);
    f.render_widget(if stale { p.style(theme.stale) } else { p }, inner);
    let _ = state;
}

/// The largest depth and error % any version of `n` shows in its last `width` samples: the
/// namespace's shared sparkline scales.
fn shared_scales(state: &AppState, n: &NamespaceSnapshot, width: usize) -> (f64, f64) {
    let mut depth = 0.0_f64;
    let mut err = 0.0_f64;
    for v in &n.versions {
        if let Some(h) = state.history.get(&(n.name.clone(), v.version.clone())) {
            let d: Vec<f64> = h.iter().map(|s| s.depth() as f64).collect();
            let e: Vec<f64> = h
                .iter()
                .map(|s| s.error_rate().unwrap_or(0.0) * 100.0)
                .collect();
            depth = depth.max(tail_max(&d, width));
            err = err.max(tail_max(&e, width));
        }
    }
    (depth, err)
}

fn draw_version(
    f: &mut Frame,
    area: Rect,
    state: &AppState,
    theme: &Theme,
    n: &NamespaceSnapshot,
    v: &VersionSnapshot,
    stale: bool,
) {
    let alerts: Vec<_> = state.alerts.of(&n.name, Some(&v.version)).collect();
    let border = if !alerts.is_empty() {
        theme.alert
    } else {
        theme.border
    };
    let title = format!(
        " {} · {}{}{} ",
        sanitize(&v.version),
        sanitize(&v.queue),
        v.queue_type
            .as_deref()
            .map(|t| format!(" · {}", sanitize(t)))
            .unwrap_or_default(),
        v.delivery_limit
            .map(|l| format!(" · limit {l}"))
            .unwrap_or_default()
    );
    let block = Block::bordered()
        .border_style(border)
        .title(Span::styled(title, theme.title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = usize::from(inner.width);
    let rates = v.rates;
    let base = if stale { theme.stale } else { theme.base };
    let gate = if n.gate.is_some() {
        if v.weight > 0 {
            format!("{:.0}%", v.gate_percent)
        } else {
            "off".into()
        }
    } else {
        "unknown".into()
    };
    let mut lines = vec![
        Line::from(Span::styled(
            fit(
                &format!(
                    "gate {gate} · ready {} · unacked {}",
                    count(v.ready),
                    count(v.unacked)
                ),
                w,
            ),
            base,
        )),
        Line::from(Span::styled(
            fit(
                &format!(
                    "in {}/s · ack {}/s · DL {}/s",
                    rate(rates.map(|r| r.publish)),
                    rate(rates.map(|r| r.ack)),
                    rate(v.dead_letter_rate)
                ),
                w,
            ),
            base,
        )),
    ];
    if v.drops_over_limit() {
        lines.push(Line::from(Span::styled(
            fit(
                &format!(
                    "⚠ limit {}, no dead-letter target: over it = DROPPED",
                    v.delivery_limit.unwrap_or_default()
                ),
                w,
            ),
            theme.alert,
        )));
    }
    let th = state.thresholds.of(&n.name).error_rate_pct;
    let err_style = if v.error_rate.is_some_and(|e| e * 100.0 > th) {
        theme.alert
    } else {
        base
    };
    lines.push(Line::from(vec![
        Span::styled("error ", base),
        Span::styled(format!("{}%", super::widgets::err_pct(Some(v))), err_style),
        Span::styled(format!(" (threshold {th}%)"), theme.muted),
    ]));
    let hist = state.history.get(&(n.name.clone(), v.version.clone()));
    let depth: Vec<f64> = hist
        .map(|h| h.iter().map(|s| s.depth() as f64).collect())
        .unwrap_or_default();
    let errs: Vec<f64> = hist
        .map(|h| {
            h.iter()
                .map(|s| s.error_rate().unwrap_or(0.0) * 100.0)
                .collect()
        })
        .unwrap_or_default();
    // One scale for every version of the namespace (the label shows it), so a small queue
    // looks small beside a backlog.
    let (scale_depth, scale_err) = shared_scales(state, n, w.saturating_sub(16));
    let depth_label = format!(" 0–{}", count(Some(scale_depth as u64)));
    let err_label = format!(" 0–{scale_err:.0}%");
    let chart = |label: &'static str, data: &[f64], scale: f64, scale_label: String, style| {
        Line::from(vec![
            Span::styled(label, theme.muted),
            Span::styled(
                sparkline_to(
                    data,
                    w.saturating_sub(label.chars().count() + scale_label.chars().count()),
                    scale,
                ),
                style,
            ),
            Span::styled(scale_label, theme.muted),
        ])
    };
    lines.push(chart(
        "depth ",
        &depth,
        depth_scale(scale_depth),
        depth_label,
        theme.chart_depth,
    ));
    lines.push(chart(
        "err % ",
        &errs,
        scale_err,
        err_label,
        theme.chart_error,
    ));
    let cons = v.consumers.unwrap_or(0);
    let cons_style = if cons == 0 && v.ready.unwrap_or(0) > 0 {
        theme.alert
    } else {
        theme.muted
    };
    lines.push(Line::from(Span::styled(
        format!("consumers {}", count(v.consumers)),
        cons_style,
    )));
    let rows_left = usize::from(inner.height).saturating_sub(lines.len());
    let connections = v.connections.as_deref().unwrap_or(&[]);
    if connections.is_empty() {
        if cons > 0 {
            lines.push(Line::from(Span::styled(" (names every 5 s)", theme.muted)));
        }
    } else {
        let extra = connections.len().saturating_sub(rows_left);
        for (i, c) in connections.iter().take(rows_left).enumerate() {
            let text = if extra > 0 && i + 1 == rows_left {
                format!(" +{} more", extra + 1)
            } else {
                format!(" {}", fit(&sanitize(c), w.saturating_sub(1)))
            };
            lines.push(Line::from(Span::styled(text, base)));
        }
    }
    // In a cluster (or when the queue cannot serve), where it lives: leader and members online
    // (quorum) or its node (classic); an unavailable queue says so, it is not "missing".
    let cluster = state
        .snapshot
        .as_ref()
        .and_then(|s| s.nodes.as_ref())
        .is_some_and(|n| n.len() > 1);
    if let Some(p) = v.placement.as_ref().filter(|p| cluster || p.unavailable) {
        lines.insert(
            0,
            Line::from(Span::styled(
                fit(&sanitize(&p.describe()), w),
                if p.unavailable {
                    theme.alert
                } else {
                    theme.muted
                },
            )),
        );
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_dead_letters(
    f: &mut Frame,
    area: Rect,
    state: &AppState,
    theme: &Theme,
    n: &NamespaceSnapshot,
) {
    let total: u64 = state
        .tap
        .totals
        .iter()
        .filter(|((ns, _), _)| *ns == n.name)
        .map(|(_, c)| *c)
        .sum();
    let reasons: Vec<String> = state
        .tap
        .reasons
        .iter()
        .filter(|((ns, _), _)| *ns == n.name)
        .map(|((_, r), c)| format!("{} {c}", sanitize(r)))
        .collect();
    let tap = if state.tap.bound.contains(&n.name) {
        format!(
            " last dead letters · live tap: {total} since start{} ",
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            }
        )
    } else if let Some(d) = &state.tap.down {
        format!(" last dead letters · tap down: {} ", sanitize(d))
    } else {
        " last dead letters · tap not bound yet ".to_string()
    };
    let inner = crate::ui::widgets::section(f, area, tap, theme);
    let recent: Vec<_> = state
        .tap
        .recent
        .iter()
        .rev()
        .filter(|d| d.ns == n.name)
        .skip(state.ns_scroll)
        .take(usize::from(inner.height.saturating_sub(1)))
        .collect();
    if recent.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                "none seen since the console started",
                theme.muted,
            )),
            inner,
        );
        return;
    }
    let rows: Vec<Row> = recent
        .iter()
        .map(|d| {
            Row::new(vec![
                Cell::from(age(state.now_ms - d.at_ms)),
                Cell::from(d.version.clone().unwrap_or_else(|| "?".into())),
                Cell::from(d.reason.clone()),
                Cell::from(
                    d.message_id
                        .as_deref()
                        .map(|id| fit_tail(id, ID_WIDTH))
                        .unwrap_or_else(|| "–".into()),
                ),
                Cell::from(d.preview.clone()),
            ])
            .style(theme.base)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Length(10),
            Constraint::Length(ID_WIDTH as u16),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["AGE", "VER", "REASON", "MESSAGE ID", "PREVIEW"]).style(theme.table_header))
    .column_spacing(1);
    f.render_widget(table, inner);
}
