//! The rollback view (`r`, or from the "rollback recommended" banner): the plan's steps as a
//! checklist (pending / running with progress / done / already done / skipped / failed), the
//! evidence that triggered it, live depth and error rate of both versions, the decision point's
//! buttons (Roll back / Abort, or Replay / Keep / Export for dead letters), the offer to
//! resume an unfinished rollback, and the outcome — for an abort, the state it left.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::dialog::{confirm_lines, progress_bar};
use super::theme::Theme;
use super::widgets::{count, fit, rate};
use crate::app::panels::rollback::outcome_line;
use crate::app::panels::{RbStage, RollbackPanel};
use crate::app::state::AppState;
use crate::model::rollback::{RollbackOutcome, StepState};
use crate::text::sanitize;

fn mark(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "[ ]",
        StepState::Running => "[…]",
        StepState::Done => "[✔]",
        StepState::AlreadyDone => "[✔]",
        StepState::Skipped => "[↷]",
        StepState::Failed => "[✘]",
    }
}

/// Draw the rollback view of `ns`.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, ns: &str) {
    let Some(rb) = state.ops.rollback.as_ref().filter(|r| r.ns == ns) else {
        return;
    };
    let decision_h = if rb.decision.is_some() || matches!(rb.stage, RbStage::Offer { .. }) {
        let n = rb
            .decision
            .as_ref()
            .map_or(0, |d| d.point.evidence.len().min(4)) as u16;
        let offers = match &rb.stage {
            RbStage::Offer { dialog } => dialog.buttons.len() as u16,
            _ => 0,
        };
        (4 + n + offers).min(area.height / 2)
    } else {
        2
    };
    let [head, main, bottom] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(4),
        Constraint::Length(decision_h),
    ])
    .areas(area);
    let title = format!(
        " rollback · {} · {} → {}{}{} ",
        sanitize(ns),
        sanitize(&rb.from),
        sanitize(&rb.to),
        rb.id
            .as_ref()
            .map(|i| format!(" · id {}", sanitize(i)))
            .unwrap_or_default(),
        if rb.plan.is_empty() {
            String::new()
        } else {
            format!(" · {}", sanitize(&rb.plan))
        }
    );
    let inner = crate::ui::widgets::section(f, head, title, theme);
    f.render_widget(
        Paragraph::new(live_line(state, theme, rb, usize::from(inner.width))),
        inner,
    );
    let wide = main.width >= 100;
    let (steps_area, side) = if wide {
        let [a, b] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
            .areas(main);
        (a, Some(b))
    } else {
        (main, None)
    };
    draw_steps(f, steps_area, state, theme, rb, !wide);
    if let Some(side) = side {
        draw_evidence(f, side, theme, rb);
    }
    draw_bottom(f, bottom, state, theme, rb);
}

fn live_line(state: &AppState, theme: &Theme, rb: &RollbackPanel, w: usize) -> Line<'static> {
    let Some(n) = state.namespace(&rb.ns) else {
        return Line::from(Span::styled(
            format!(
                "no live figures: `{}` was not in the last refresh (removed, or not read yet)",
                sanitize(&rb.ns)
            ),
            theme.muted,
        ));
    };
    let mut spans = Vec::new();
    let th = state.thresholds.of(&rb.ns).error_rate_pct;
    for v in [&rb.to, &rb.from] {
        let Some(vs) = n.version(v) else { continue };
        let err_style = if vs.error_rate.is_some_and(|e| e * 100.0 > th) {
            theme.alert
        } else {
            theme.ok
        };
        spans.push(Span::styled(
            format!(
                "{} ready {} · cons {} · err ",
                sanitize(v),
                count(vs.ready),
                count(vs.consumers)
            ),
            theme.base,
        ));
        spans.push(Span::styled(
            format!("{}%", super::widgets::err_pct(Some(vs))),
            err_style,
        ));
        spans.push(Span::styled(
            format!(" ({}/s)   ", rate(vs.dead_letter_rate)),
            theme.base,
        ));
    }
    spans.push(Span::styled(
        format!(
            "gate {} · DLQ {} · unrouted {}",
            n.gate
                .as_ref()
                .map(|g| g.describe())
                .unwrap_or_else(|| "?".into()),
            count(n.dlq_depth),
            count(n.unrouted_depth)
        ),
        if n.unrouted_depth.is_some_and(|u| u > 0) {
            theme.alert
        } else {
            theme.muted
        },
    ));
    let total: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    if total > w {
        // Narrow terminal: one compact line.
        let text: String = spans.iter().map(|s| s.content.to_string()).collect();
        return Line::from(Span::styled(fit(&text, w), theme.base));
    }
    Line::from(spans)
}

fn draw_steps(
    f: &mut Frame,
    area: Rect,
    state: &AppState,
    theme: &Theme,
    rb: &RollbackPanel,
    with_evidence: bool,
) {
    let inner = crate::ui::widgets::section_with(
        f,
        area,
        Borders::TOP,
        theme.border,
        Span::styled(" steps ", theme.title),
    );
    let w = usize::from(inner.width);
    let mut lines = Vec::new();
    match &rb.stage {
        RbStage::Checking => lines.push(Line::from(Span::styled(
            "looking in the ledger for an unfinished rollback of this namespace…",
            theme.warn,
        ))),
        RbStage::Running if rb.steps.is_empty() => lines.push(Line::from(Span::styled(
            "starting: reading the evidence…",
            theme.warn,
        ))),
        _ => {}
    }
    for (i, s) in rb.steps.iter().enumerate() {
        let style = match s.state {
            StepState::Running => theme.warn,
            StepState::Done | StepState::AlreadyDone => theme.ok,
            StepState::Failed => theme.alert,
            StepState::Skipped => theme.muted,
            StepState::Pending => theme.base,
        };
        let label = match s.state {
            StepState::AlreadyDone => "already done",
            other => other.as_str(),
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{} {}. ", mark(s.state), i + 1), style),
            Span::styled(
                fit(
                    &format!("{:<24} {label}", sanitize(&s.title)),
                    w.saturating_sub(8),
                ),
                style,
            ),
        ]));
        let detail = if let Some((done, total)) = s.progress {
            progress_bar(done, total, w.saturating_sub(8).min(40))
                + &format!(
                    " {done}{}",
                    total.map(|t| format!("/{t}")).unwrap_or_default()
                )
        } else if !s.detail.is_empty() {
            s.detail.clone()
        } else if s.state == StepState::Pending || s.state == StepState::Running {
            s.description.clone()
        } else {
            String::new()
        };
        if !detail.is_empty() {
            lines.push(Line::from(Span::styled(
                fit(&format!("      {}", sanitize(&detail)), w),
                theme.muted,
            )));
        }
    }
    if with_evidence && !rb.evidence.is_empty() && rb.decision.is_none() {
        lines.push(Line::from(Span::styled("evidence:", theme.title)));
        for e in &rb.evidence {
            lines.push(Line::from(Span::styled(
                fit(&format!("  {e}"), w),
                theme.base,
            )));
        }
    }
    // Keep the running step in view.
    let running = rb
        .steps
        .iter()
        .position(|s| s.state == StepState::Running)
        .unwrap_or(0);
    let height = usize::from(inner.height);
    let skip = if lines.len() > height {
        (running * 2)
            .saturating_sub(height / 2)
            .min(lines.len() - height)
    } else {
        0
    };
    let shown: Vec<Line> = lines.into_iter().skip(skip).collect();
    f.render_widget(Paragraph::new(shown), inner);
    let _ = state;
}

fn draw_evidence(f: &mut Frame, area: Rect, theme: &Theme, rb: &RollbackPanel) {
    let inner = crate::ui::widgets::section_with(
        f,
        area,
        Borders::TOP | Borders::LEFT,
        theme.border,
        Span::styled(" evidence (why) ", theme.title),
    );
    let lines: Vec<Line> = if rb.evidence.is_empty() {
        vec![Line::from(Span::styled(
            "gathered when the rollback starts",
            theme.muted,
        ))]
    } else {
        rb.evidence
            .iter()
            .map(|e| Line::from(Span::styled(sanitize(e).into_owned(), theme.base)))
            .collect()
    };
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

fn draw_bottom(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, rb: &RollbackPanel) {
    let w = usize::from(area.width);
    let mut lines = Vec::new();
    if let RbStage::Offer { dialog } = &rb.stage {
        let body = vec![Line::from(Span::styled(
            "An unfinished rollback of this namespace is in the ledger. Resume it (completed steps are not repeated)?",
            theme.warn,
        ))];
        lines = confirm_lines(dialog, body, theme, Some(w));
    } else if let Some(pending) = &rb.decision {
        let d = &pending.point;
        let border = Block::default()
            .borders(Borders::TOP)
            .border_style(theme.alert)
            .title(Span::styled(
                format!(
                    " decision · step {} · {} ",
                    d.step_index + 1,
                    sanitize(&d.step_title)
                ),
                theme.alert,
            ));
        let inner = border.inner(area);
        f.render_widget(border, area);
        let w = usize::from(inner.width);
        let mut body = vec![Line::from(Span::styled(
            fit(&sanitize(&d.question), w),
            theme.title,
        ))];
        for e in d.evidence.iter().take(4) {
            body.push(Line::from(Span::styled(
                fit(&format!("  {}", sanitize(e)), w),
                theme.base,
            )));
        }
        let body = super::dialog::with_context(state, body, theme);
        let lines = confirm_lines(&pending.dialog, body, theme, Some(w));
        f.render_widget(Paragraph::new(lines), inner);
        return;
    } else if let Some(o) = &rb.outcome {
        let style = if *o == RollbackOutcome::Done {
            theme.ok
        } else {
            theme.alert
        };
        lines.push(Line::from(Span::styled(fit(&outcome_line(o), w), style)));
        let follow = match o {
            RollbackOutcome::Done => format!(
                "write the post-mortem: `hopback postmortem --incident {}` · timeline: {}",
                sanitize(rb.id.as_deref().unwrap_or("ID")),
                state.keymap.first_key("timeline")
            ),
            _ => format!(
                "continue later: `hopback rollback --resume {}` (or {} here) · Esc back",
                rb.id.as_deref().unwrap_or("ID"),
                state.keymap.first_key("rollback")
            ),
        };
        lines.push(Line::from(Span::styled(fit(&follow, w), theme.muted)));
    } else if let Some(e) = &rb.error {
        lines.push(Line::from(Span::styled(
            fit(&format!("✘ {}", sanitize(e)), w),
            theme.alert,
        )));
    } else {
        lines.push(Line::from(Span::styled(
            fit(
                "running — decisions appear here; Esc goes back (the rollback keeps running; r returns)",
                w,
            ),
            theme.muted,
        )));
    }
    f.render_widget(Paragraph::new(lines), area);
}
