//! The gate panel (`g`): the current split as a bar, each version's weight, consumers, ready and
//! error rate, the presets (0/1/5/10/25/50/100 % to the new version, all back to old), the
//! unrouted safety net, and — as a dialog — the confirmation that states exactly what changes
//! (before → after, both versions' error rates, the plan of the runner's dry run with its
//! warnings, the zero-consumer guard, typed confirmation on production), then the verification
//! result and the ledger entry.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::dialog::{draw_confirm, progress_bar, with_context};
use super::theme::Theme;
use super::widgets::{count, fit, gatebar::gate_bar, rate};
use crate::app::panels::{GatePanel, GatePlan, GateStage, MoveJob};
use crate::app::state::AppState;
use crate::model::gate::GateSplit;
use crate::model::snapshot::NamespaceSnapshot;
use crate::text::sanitize;

fn weight_text(g: &GateSplit, v: &str) -> String {
    let w = g.weight(v);
    if w == 0 {
        "0 (off)".into()
    } else {
        format!("{w} ({:.0}%)", g.percent(v))
    }
}

/// Draw the gate panel of `ns`.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, ns: &str) {
    let Some(panel) = state.ops.gate.as_ref().filter(|g| g.ns == ns) else {
        return;
    };
    let n = state.namespace(ns);
    let versions_h = n.map_or(1, |n| n.versions.len() as u16 + 1).min(6);
    let mut split = n.map_or_else(Vec::new, |n| split_lines(n, usize::from(area.width), theme));
    // A lone version bound at an old weight: its weight is shown, and that it no longer matters.
    if let Some(note) = n
        .and_then(|n| n.gate.as_ref())
        .and_then(|g| g.idle_weight_note())
    {
        split.push(Line::from(Span::styled(
            fit(&sanitize(&note), usize::from(area.width).saturating_sub(2)),
            theme.muted,
        )));
    }
    // A running canary drives this gate: what it is doing, and its keys.
    for (i, l) in state
        .ops
        .canary
        .lines_for(ns, state.now_ms)
        .into_iter()
        .enumerate()
    {
        let w = usize::from(area.width.saturating_sub(2));
        let style = if i == 0 { theme.warn } else { theme.muted };
        split.push(Line::from(Span::styled(fit(&l, w), style)));
    }
    let [top, table, unrouted, presets] = Layout::vertical([
        Constraint::Length(2 + split.len() as u16),
        Constraint::Length(versions_h),
        Constraint::Length(2),
        Constraint::Min(4),
    ])
    .areas(area);
    let title = match n {
        Some(n) => format!(
            " gate · {} · entry {} ({}) ",
            sanitize(ns),
            sanitize(&n.entry_exchange),
            sanitize(n.entry_kind.as_deref().unwrap_or("?"))
        ),
        None => format!(" gate · {} ", sanitize(ns)),
    };
    let inner = crate::ui::widgets::section(f, top, title, theme);
    let gate = n.and_then(|n| n.gate.as_ref());
    let bar = match n {
        Some(_) => gate_bar(gate, usize::from(inner.width), theme),
        None => Line::from(Span::styled(
            "this namespace is not on the broker (any more)",
            theme.alert,
        )),
    };
    f.render_widget(
        Paragraph::new(vec![bar].into_iter().chain(split).collect::<Vec<_>>()),
        inner,
    );
    if let Some(n) = n {
        let versions = version_lines(usize::from(table.width), state, theme, n);
        f.render_widget(Paragraph::new(versions), table);
        let safety_net = unrouted_lines(usize::from(unrouted.width), state, theme, n);
        f.render_widget(Paragraph::new(safety_net), unrouted);
    }
    draw_presets(f, presets, state, theme, panel, gate);
    match &panel.stage {
        GateStage::Confirm {
            target,
            zero_consumers,
            plan,
            dialog,
        } => {
            let body = confirm_body(state, theme, panel, n, target, plan, zero_consumers);
            draw_confirm(f, area, dialog, with_context(state, body, theme), theme);
        }
        GateStage::ConfirmCanary { question, dialog } => {
            let body = vec![Line::from(question.clone())];
            draw_confirm(f, area, dialog, body, theme);
        }
        GateStage::ConfirmUnrouted { count, dialog } => {
            let unrouted = n.map(|n| n.unrouted.clone()).unwrap_or_default();
            let entry = n.map(|n| n.entry_exchange.clone()).unwrap_or_default();
            let body = vec![
                Line::from(format!(
                    "Replay {count} message(s) from {} through the entry exchange {} (the gate decides where each goes)?",
                    sanitize(&unrouted),
                    sanitize(&entry)
                )),
                Line::from(Span::styled(
                    "Each is acked only after its publish is confirmed and routed; anything still unroutable returns to the unrouted queue.",
                    theme.muted,
                )),
            ];
            draw_confirm(f, area, dialog, with_context(state, body, theme), theme);
        }
        _ => {}
    }
}

/// Lines the split note may take (it wraps at word boundaries, the last line cut with `…`).
const SPLIT_LINES_MAX: usize = 3;

/// What the gate hashes and the split that happened beside it (red when it is not the
/// configured one), wrapped to `w` columns in at most [`SPLIT_LINES_MAX`] lines; empty when
/// neither is known (no management API).
pub fn split_lines(n: &NamespaceSnapshot, w: usize, theme: &Theme) -> Vec<Line<'static>> {
    let hash = n
        .hash_on
        .as_deref()
        .map(|h| format!("hashes {}", sanitize(h)));
    let (text, alert) = match (&n.split_check, &n.gate) {
        (Some(r), Some(g)) => (
            r.describe(g, &n.measured.clone().unwrap_or_default()),
            r.differs(),
        ),
        _ if hash.is_some() => (
            "measured split: gathering a minute of counters…".into(),
            false,
        ),
        _ => return Vec::new(),
    };
    let text = sanitize(&match hash {
        Some(h) => format!("{h} · {text}"),
        None => text,
    })
    .into_owned();
    let style = if alert { theme.alert } else { theme.muted };
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let len = cur.chars().count();
        if len > 0 && len + 1 + word.chars().count() > w.max(1) {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    lines.push(cur);
    if lines.len() > SPLIT_LINES_MAX {
        let rest = lines.split_off(SPLIT_LINES_MAX - 1).join(" ");
        lines.push(rest);
    }
    lines
        .into_iter()
        .map(|l| Line::from(Span::styled(fit(&l, w), style)))
        .collect()
}

/// The version table: one row per version, `w` columns wide.
fn version_lines(
    w: usize,
    state: &AppState,
    theme: &Theme,
    n: &NamespaceSnapshot,
) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(Span::styled(
        fit(
            &format!(
                "{:<6} {:>12} {:>9} {:>8} {:>8} {:>8}  QUEUE",
                "VER", "GATE", "CONSUMERS", "READY", "ERROR %", "DL/s"
            ),
            w,
        ),
        theme.table_header,
    ))];
    let th = state.thresholds.of(&n.name).error_rate_pct;
    for v in &n.versions {
        let gate = n
            .gate
            .as_ref()
            .map(|g| weight_text(g, &v.version))
            .unwrap_or_else(|| "unknown".into());
        let err_style = if v.error_rate.is_some_and(|e| e * 100.0 > th) {
            theme.alert
        } else {
            theme.base
        };
        let cons_style = if v.consumers == Some(0) {
            theme.alert
        } else {
            theme.base
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<6} {:>12} ", fit(&sanitize(&v.version), 6), gate),
                theme.base,
            ),
            Span::styled(format!("{:>9} ", count(v.consumers)), cons_style),
            Span::styled(format!("{:>8} ", count(v.ready)), theme.base),
            Span::styled(
                format!("{:>8} ", super::widgets::err_pct(Some(v))),
                err_style,
            ),
            Span::styled(
                format!(
                    "{:>8}  {}",
                    rate(v.dead_letter_rate),
                    fit(&sanitize(&v.queue), w.saturating_sub(60))
                ),
                theme.base,
            ),
        ]));
    }
    lines
}

/// The unrouted safety net's line, and the running move's when it is this namespace's.
fn unrouted_lines(
    w: usize,
    state: &AppState,
    theme: &Theme,
    n: &NamespaceSnapshot,
) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match n.unrouted_depth {
        Some(0) => lines.push(Line::from(Span::styled(
            fit(
                &format!("unrouted safety net {}: empty", sanitize(&n.unrouted)),
                w,
            ),
            theme.ok,
        ))),
        Some(u) => lines.push(Line::from(Span::styled(
            fit(
                &format!(
                    "⚠ {} holds {u} unrouted message(s) — press {} to replay them through the entry exchange",
                    sanitize(&n.unrouted),
                    state.keymap.first_key("replay")
                ),
                w,
            ),
            theme.alert,
        ))),
        None => lines.push(Line::from(Span::styled(
            fit(&format!("unrouted queue {}: unknown", sanitize(&n.unrouted)), w),
            theme.muted,
        ))),
    }
    if let Some(j) = state.ops.job.as_ref().filter(|j| j.ns == n.name) {
        lines.push(job_line(j, w, theme, state));
    }
    lines
}

/// One line for a running or finished move (shared with the dead-letter browser).
pub fn job_line(j: &MoveJob, width: usize, theme: &Theme, state: &AppState) -> Line<'static> {
    if let Some(done) = &j.done {
        return Line::from(Span::styled(
            fit(done, width),
            if j.failed { theme.alert } else { theme.ok },
        ));
    }
    let (moved, total, r) = j
        .progress
        .as_ref()
        .map(|p| (p.counts.moved + p.counts.parked, p.total, p.rate_per_s))
        .unwrap_or((0, None, 0.0));
    let state_txt = if j.stopping {
        "stopping"
    } else if j.paused {
        "paused"
    } else {
        "running"
    };
    let part = if j.part.1 > 1 {
        format!(" {}/{}", j.part.0, j.part.1)
    } else {
        String::new()
    };
    let head = format!(
        "{state_txt}{part} · {moved} moved · {r:.0}/s · {} pause · {} stop ",
        state.keymap.first_key("pause"),
        state.keymap.first_key("stop")
    );
    let bar_w = width.saturating_sub(head.chars().count()).clamp(8, 40);
    Line::from(vec![
        Span::styled(head, theme.warn),
        Span::styled(progress_bar(moved, total, bar_w), theme.chart_depth),
    ])
}

fn draw_presets(
    f: &mut Frame,
    area: Rect,
    state: &AppState,
    theme: &Theme,
    panel: &GatePanel,
    gate: Option<&GateSplit>,
) {
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(theme.border)
        .title(Span::styled(
            format!(
                " presets: move traffic from {} to {}{} ",
                sanitize(&panel.old),
                sanitize(&panel.new),
                if panel.pairs().len() > 1 {
                    format!(
                        " · {}/{} other pairs",
                        state.keymap.first_key("next_page"),
                        state.keymap.first_key("prev_page")
                    )
                } else {
                    String::new()
                }
            ),
            theme.title,
        ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = usize::from(inner.width);
    let mut lines: Vec<Line> = Vec::new();
    let result_lines = result_lines(state, theme, panel, w);
    let rows_for_presets = usize::from(inner.height).saturating_sub(result_lines.len() + 1);
    let labels = panel.preset_labels();
    let skip = (panel.cursor + 1).saturating_sub(rows_for_presets.max(1));
    for (i, label) in labels
        .iter()
        .enumerate()
        .skip(skip)
        .take(rows_for_presets.max(1))
    {
        let target = panel.preset_target(i);
        let current = gate.is_some_and(|g| g.same_routing(&target));
        let text = format!(
            "{} {label}{}",
            if i == panel.cursor { "▶" } else { " " },
            if current { "   ← current" } else { "" }
        );
        let style = if i == panel.cursor {
            theme.selected
        } else {
            theme.base
        };
        lines.push(Line::from(Span::styled(fit(&text, w), style)));
    }
    lines.extend(result_lines);
    let hint = if state.read_only {
        "read-only profile: you can look, applying is refused · Esc back".to_string()
    } else {
        format!(
            "↑/↓ choose · Enter review & confirm · {} replay unrouted · Esc back",
            state.keymap.first_key("replay")
        )
    };
    lines.push(Line::from(Span::styled(fit(&hint, w), theme.muted)));
    f.render_widget(Paragraph::new(lines), inner);
}

fn result_lines(
    state: &AppState,
    theme: &Theme,
    panel: &GatePanel,
    w: usize,
) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    match &panel.stage {
        GateStage::Applying { target } => out.push(Line::from(Span::styled(
            fit(
                &format!(
                    "applying {} … (plan, apply, read back, journal)",
                    target.describe_percent()
                ),
                w,
            ),
            theme.warn,
        ))),
        GateStage::Result { result, .. } => match result {
            Ok(r) if !r.changed => out.push(Line::from(Span::styled(
                fit(
                    &format!(
                        "gate already {}: nothing changed, nothing journaled",
                        r.before.describe_percent()
                    ),
                    w,
                ),
                theme.ok,
            ))),
            Ok(r) => {
                let (mark, style) = if r.verified {
                    ("✔ verified against the broker's bindings", theme.ok)
                } else {
                    ("✘ NOT VERIFIED: the bindings read back differ", theme.alert)
                };
                out.push(Line::from(Span::styled(
                    fit(
                        &format!(
                            "{mark}: {} → {} in {:.0} ms",
                            r.before.describe(),
                            r.after.describe_percent(),
                            r.elapsed_ms
                        ),
                        w,
                    ),
                    style,
                )));
                let ev = r
                    .event
                    .as_ref()
                    .map(|e| format!("ledger event {} ({})", e.short_id(), e.id))
                    .unwrap_or_else(|| "no ledger event".into());
                out.push(Line::from(Span::styled(fit(&ev, w), theme.base)));
                for warn in r.warnings.iter().take(2) {
                    out.push(Line::from(Span::styled(
                        fit(&format!("⚠ {}", sanitize(warn)), w),
                        theme.warn,
                    )));
                }
            }
            // Whole, not cut: a refusal names what holds the gate lock and the way out.
            Err(e) => out.extend(
                crate::ui::widgets::wrap(&format!("✘ {}", sanitize(e)), w, 4)
                    .into_iter()
                    .map(|l| Line::from(Span::styled(l, theme.alert))),
            ),
        },
        _ => {}
    }
    let _ = state;
    out
}

/// What the gate confirmation is about: before → after per version with its health, the plan
/// of the runner's dry run (exactly what the apply will do) and its warnings, the guard.
fn confirm_body(
    state: &AppState,
    theme: &Theme,
    panel: &GatePanel,
    n: Option<&NamespaceSnapshot>,
    target: &GateSplit,
    plan: &GatePlan,
    zero_consumers: &[String],
) -> Vec<Line<'static>> {
    let before = n.and_then(|n| n.gate.clone()).unwrap_or_default();
    let mut lines = vec![Line::from(vec![
        Span::raw("Change the gate of "),
        Span::styled(sanitize(&panel.ns).into_owned(), theme.title),
        Span::raw(format!(" on profile `{}`:", sanitize(&state.profile))),
    ])];
    let mut versions: Vec<String> = before.0.keys().cloned().collect();
    for v in target.0.keys() {
        if !versions.contains(v) {
            versions.push(v.clone());
        }
    }
    for v in &versions {
        let vs = n.and_then(|n| n.version(v));
        let err = vs.and_then(|x| x.error_rate);
        let th = state.thresholds.of(&panel.ns).error_rate_pct;
        let err_style = if err.is_some_and(|e| e * 100.0 > th) {
            theme.alert
        } else {
            theme.base
        };
        let changed = before.weight(v) != target.weight(v);
        lines.push(Line::from(vec![
            Span::styled(
                format!(
                    "  {:<4} {:>9} → {:<9}",
                    sanitize(v),
                    weight_text(&before, v),
                    weight_text(target, v)
                ),
                if changed { theme.warn } else { theme.base },
            ),
            Span::styled(
                format!("  error {}%", super::widgets::err_pct(vs)),
                err_style,
            ),
            Span::styled(
                format!(
                    " ({} DL/s) · consumers {}",
                    rate(vs.and_then(|x| x.dead_letter_rate)),
                    count(vs.and_then(|x| x.consumers))
                ),
                theme.base,
            ),
        ]));
    }
    // Moving traffic onto a version with an alert of its own (errors above the threshold, no
    // consumers, a backlog) is said in words, not only in red.
    for v in &versions {
        if target.percent(v) <= before.percent(v) {
            continue;
        }
        let why: Vec<String> = state
            .alerts
            .of(&panel.ns, Some(v))
            .filter(|a| a.version.as_deref() == Some(v.as_str()))
            .map(|a| a.kind.short())
            .collect();
        if !why.is_empty() {
            lines.push(Line::from(Span::styled(
                format!(
                    "⚠ this moves traffic ONTO {}, which is failing ({}): are you rolling forward on purpose?",
                    sanitize(v),
                    why.join(", ")
                ),
                theme.alert,
            )));
        }
    }
    match plan {
        GatePlan::Computing => lines.push(Line::from(Span::styled(
            "plan: computing (dry run against the broker's bindings)…",
            theme.warn,
        ))),
        GatePlan::Failed(e) => lines.push(Line::from(Span::styled(
            format!("✘ cannot plan this change: {}", sanitize(e)),
            theme.alert,
        ))),
        GatePlan::Ready { steps, warnings } => {
            lines.push(Line::from(Span::styled(
                format!("plan ({} step(s), never zero bindings):", steps.len()),
                theme.muted,
            )));
            for (i, s) in steps.iter().enumerate().take(4) {
                lines.push(Line::from(Span::styled(
                    format!("  {}. {}", i + 1, sanitize(s)),
                    theme.muted,
                )));
            }
            if steps.len() > 4 {
                lines.push(Line::from(Span::styled(
                    format!("  … {} more", steps.len() - 4),
                    theme.muted,
                )));
            }
            for w in warnings {
                lines.push(Line::from(Span::styled(
                    format!("⚠ {}", sanitize(w)),
                    theme.warn,
                )));
            }
        }
    }
    if !zero_consumers.is_empty() {
        lines.push(Line::from(Span::styled(
            format!(
                "⚠ ZERO-CONSUMER GUARD: {} has 0 consumers — its tasks would pile up unprocessed. Applying overrides the guard.",
                zero_consumers.join(", ")
            ),
            theme.alert,
        )));
    }
    if state.read_only {
        lines.push(Line::from(Span::styled(
            format!(
                "read-only profile `{}`: applying will be refused",
                sanitize(&state.profile)
            ),
            theme.alert,
        )));
    }
    lines
}
