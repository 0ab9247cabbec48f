//! The drill panel (console drill mode, `hopback drill`): a strip under every view with the
//! drill's namespace, scenario (hidden while a random one runs), phase, elapsed time,
//! published / processed / dead-lettered counts, detect and mitigate times once known, and at the
//! end the score, lost count and the offer to write the post-mortem draft.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Paragraph};

use super::dialog::draw_confirm;
use super::theme::Theme;
use super::widgets::fit;
use crate::app::panels::DrillPanel;
use crate::app::state::AppState;
use crate::model::drill::{Phase, fmt_ms};
use crate::text::sanitize;

/// Rows the strip needs.
pub const HEIGHT: u16 = 4;

fn since(at: Option<u64>, fault: Option<u64>) -> String {
    match (at, fault) {
        (Some(a), Some(f)) => fmt_ms(Some(a.saturating_sub(f))),
        _ => "—".into(),
    }
}

/// Draw the strip.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme, d: &DrillPanel) {
    let w = usize::from(area.width);
    let (title, lines) = match &d.status {
        None => (
            " DRILL · starting ".to_string(),
            vec![Line::from(Span::styled(
                match &d.error {
                    Some(e) => format!("✘ the drill failed: {}", sanitize(e)),
                    None if d.start.is_some() => {
                        "waiting for you: press Enter to start the drill".to_string()
                    }
                    None => {
                        "creating the throwaway namespace, starting producers and v1/v2 workers…"
                            .to_string()
                    }
                },
                if d.error.is_some() {
                    theme.alert
                } else {
                    theme.warn
                },
            ))],
        ),
        Some(s) => {
            let fl = &s.fleet;
            let processed = fl.processed();
            let dead: u64 = fl.per_version.values().map(|v| v.rejected).sum();
            let t = &s.timings;
            // Finding the fault is the exercise: until the end the strip shows neither the
            // fault's time nor its traces (the phase reads the same before and after it).
            let over = s.phase == Phase::Done || s.score.is_some();
            let phase = match s.phase {
                // The drill waits for the operator's rollback before it settles or scores.
                Phase::Running | Phase::Incident | Phase::Settling if s.rollback_open => {
                    "rollback running — the drill ends after it"
                }
                Phase::Starting => "starting",
                Phase::Running | Phase::Incident => {
                    "running — something will go wrong with v2; find it, then roll back"
                }
                Phase::Settling => "v2 off the gate — the fleet is settling",
                Phase::Done => "done",
            };
            let title = format!(
                " DRILL {} · scenario {} · {} · {} ",
                sanitize(&s.namespace),
                sanitize(&s.scenario),
                fmt_ms(Some(fl.elapsed_ms)),
                phase
            );
            let mut lines = vec![Line::from(Span::styled(
                fit(
                    &if over {
                        format!(
                            "published {} · processed {processed} · dead-letterings {dead} · lost {} · redeliveries deduplicated {}",
                            fl.published,
                            s.score
                                .as_ref()
                                .map(|x| x.lost.to_string())
                                .unwrap_or_else(|| "counted at the end".into()),
                            fl.duplicates_skipped
                        )
                    } else {
                        format!(
                            "published {} · processed {processed} · lost: counted at the end",
                            fl.published
                        )
                    },
                    w,
                ),
                theme.base,
            ))];
            let timing = if over {
                format!(
                    "fault at {} · detected after {} · v2 off the gate after {}",
                    fmt_ms(t.fault_at_ms),
                    since(t.first_action_at_ms, t.fault_at_ms),
                    since(t.gate_off_v2_at_ms, t.fault_at_ms),
                )
            } else {
                // Even "your first action at …" would tell that the fault has happened (only
                // actions after it count), so every time waits for the end.
                "the fault's time and yours are shown at the end · your first action on the namespace after the fault counts as detection".to_string()
            };
            lines.push(Line::from(Span::styled(fit(&timing, w), theme.muted)));
            if let Some(sc) = &s.score {
                lines.push(Line::from(Span::styled(
                    fit(
                        &format!(
                            "SCORE {} / 100 · detect {} · mitigate {} · lost {} · duplicates {} · steps skipped {}",
                            sc.points,
                            fmt_ms(sc.time_to_detect_ms),
                            fmt_ms(sc.time_to_mitigate_ms),
                            sc.lost,
                            sc.duplicates_processed,
                            sc.steps_skipped
                        ),
                        w,
                    ),
                    if sc.lost > 0 { theme.alert } else { theme.ok },
                )));
            }
            (title, lines)
        }
    };
    // Never red before the end: the strip's colour must not announce the fault either.
    let style = theme.warn;
    let inner = crate::ui::widgets::section_with(
        f,
        area,
        Borders::TOP,
        style,
        Span::styled(fit(&title, w), style),
    );
    f.render_widget(Paragraph::new(lines), inner);
    let _ = state;
}

/// The end-of-drill dialog (score and the post-mortem offer).
pub fn draw_end(f: &mut Frame, area: Rect, theme: &Theme, d: &DrillPanel) {
    if let Some(dialog) = &d.start {
        let lines = [
            ("A throwaway namespace with a simulated fleet: producers → gate (v1, v2 canary) → workers.", theme.base),
            ("Some time after you start, something goes wrong with v2. Find it in this console, then mitigate (g: the gate) and roll back (r).", theme.base),
            ("Your first action on the namespace after the fault is your detection time; the fault's time is shown at the end, with the score.", theme.base),
            ("The drill ends once v2 is off the gate and quiet and no rollback is in progress.", theme.muted),
        ]
        .into_iter()
        .map(|(text, style)| Line::from(Span::styled(text, style)))
        .collect();
        draw_confirm(f, area, dialog, lines, theme);
        return;
    }
    let (Some(r), Some(dialog)) = (&d.result, &d.end) else {
        return;
    };
    let s = &r.score;
    let a = &s.accounting;
    let mut lines = vec![
        Line::from(Span::styled(
            format!(
                "drill {} over — scenario: {}",
                sanitize(&r.status.namespace),
                sanitize(&s.scenario)
            ),
            theme.title,
        )),
        Line::from(format!(
            "time to detect {} · time to mitigate {}",
            fmt_ms(s.time_to_detect_ms),
            fmt_ms(s.time_to_mitigate_ms)
        )),
        Line::from(format!(
            "{} published · {} processed · {} left in the DLQ · {} parked · {} still queued",
            a.published, a.processed, a.dead_lettered, a.parked, a.still_queued
        )),
        Line::from(Span::styled(
            format!(
                "{} LOST · {} processed twice",
                a.lost, a.duplicates_processed
            ),
            if a.lost > 0 { theme.alert } else { theme.ok },
        )),
        Line::from(Span::styled(
            format!(
                "score {} / 100 (stored in the ledger: `hopback drill --history`)",
                s.points
            ),
            theme.title,
        )),
    ];
    let why = s.explain(false);
    if why.is_empty() {
        lines.push(Line::from(Span::styled(
            "  nothing cost points: fast detection and mitigation, nothing lost, nothing left",
            theme.ok,
        )));
    }
    for line in why {
        lines.push(Line::from(Span::styled(format!("  {line}"), theme.warn)));
    }
    if let Some(p) = &r.postmortem_path {
        lines.push(Line::from(Span::styled(
            format!("post-mortem draft kept in {}", sanitize(p)),
            theme.muted,
        )));
    }
    draw_confirm(f, area, dialog, lines, theme);
}
