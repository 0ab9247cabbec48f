//! Shared pieces of the operation views: the one confirm dialog ([`confirm_lines`],
//! [`draw_confirm`]), a centred modal box, a row of buttons with one focused, and a text progress
//! bar. Dialogs are drawn over the view (after `Clear`), so what they ask about stays visible
//! around them.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::theme::Theme;
use super::widgets::fit;
use crate::app::panels::confirm::{ConfirmDialog, Focus, Tone};
use crate::text::sanitize;

/// The border style of a dialog's tone.
pub fn tone_style(tone: Tone, theme: &Theme) -> Style {
    match tone {
        Tone::Warn => theme.warn,
        Tone::Alert => theme.alert,
        Tone::Title => theme.title,
    }
}

/// The lines of a confirm dialog: `body` (what it is about, drawn by the view), then the
/// pickers, the typed confirmation, the summary, the buttons (one-line choices first) and the
/// hint. `width` cuts one-line choices and the hint to fit (dialogs drawn inline); `None` lets
/// the modal box wrap them.
pub fn confirm_lines<A>(
    dialog: &ConfirmDialog<A>,
    body: Vec<Line<'static>>,
    theme: &Theme,
    width: Option<usize>,
) -> Vec<Line<'static>> {
    let cut = |s: &str| match width {
        Some(w) => fit(s, w),
        None => s.to_string(),
    };
    let mut lines = body;
    for (p, picker) in dialog.pickers.iter().enumerate() {
        let focused = dialog.focus == Focus::Picker(p);
        // The focused group is marked in text too (▶ on its heading and on its choice), not
        // only by colour: a monochrome terminal or a tmux capture shows where the keys go.
        lines.push(Line::from(Span::styled(
            format!("{} {}", if focused { "▶" } else { " " }, picker.heading),
            if focused { theme.title } else { theme.muted },
        )));
        for (i, o) in picker.options.iter().enumerate() {
            let mark = match (i == picker.chosen, focused) {
                (true, true) => "▶(•)",
                (true, false) => " (•)",
                (false, _) => " ( )",
            };
            let style = if i == picker.chosen && focused {
                theme.selected
            } else {
                theme.base
            };
            lines.push(Line::from(Span::styled(
                format!("  {mark} {}", o.text),
                style,
            )));
        }
    }
    if let Some(t) = &dialog.typed {
        lines.push(Line::from(vec![
            Span::styled(t.prompt.clone(), theme.alert),
            Span::styled(format!("{}█", sanitize(&t.text)), theme.command),
        ]));
    }
    if dialog.spacer {
        lines.push(Line::from(""));
    }
    if dialog.summary {
        let chosen: Vec<&str> = dialog
            .pickers
            .iter()
            .map(|p| p.options.get(p.chosen).map_or("?", |o| o.summary.as_str()))
            .collect();
        lines.push(Line::from(Span::styled(
            format!("→ {}", chosen.join(" → ")),
            theme.warn,
        )));
    }
    let focused = match dialog.focus {
        Focus::Button(i) => Some(i),
        Focus::Picker(_) => None,
    };
    let mut inline = Vec::new();
    let mut inline_focus = usize::MAX;
    for (i, b) in dialog.buttons.iter().enumerate() {
        let is_focused = focused == Some(i);
        if b.own_line {
            lines.push(Line::from(Span::styled(
                cut(&format!(
                    "{} {}",
                    if is_focused { "▶" } else { " " },
                    b.label
                )),
                if is_focused {
                    theme.selected
                } else {
                    theme.base
                },
            )));
        } else {
            if is_focused {
                inline_focus = inline.len();
            }
            inline.push(b.label.clone());
        }
    }
    if !inline.is_empty() {
        lines.push(buttons(&inline, inline_focus, theme));
    }
    if let Some(h) = &dialog.hint {
        lines.push(Line::from(Span::styled(cut(h), theme.muted)));
    }
    lines
}

/// `body` with a first line naming the context the dialog acts on, when the console knows
/// several (an operation runs on the broker of the context it was confirmed in, whatever is on
/// screen when it finishes); a production context's name in its badge style.
pub fn with_context(
    state: &crate::app::state::AppState,
    mut body: Vec<Line<'static>>,
    theme: &Theme,
) -> Vec<Line<'static>> {
    if state.contexts.len() < 2 {
        return body;
    }
    let mut spans = vec![
        Span::styled("on context ", theme.muted),
        Span::styled(
            crate::text::sanitize(&state.profile).into_owned(),
            if state.production {
                theme.badge_production
            } else {
                theme.namespace
            },
        ),
        Span::styled(
            format!(" · {}", crate::text::sanitize(&state.broker_label())),
            theme.muted,
        ),
    ];
    if state.production {
        spans.push(Span::styled(" · PRODUCTION", theme.alert));
    }
    body.insert(0, Line::from(spans));
    body
}

/// Draw a confirm dialog as a modal box over `area` (title and border from the dialog).
pub fn draw_confirm<A>(
    f: &mut Frame,
    area: Rect,
    dialog: &ConfirmDialog<A>,
    body: Vec<Line<'static>>,
    theme: &Theme,
) {
    let lines = confirm_lines(dialog, body, theme, None);
    modal(
        f,
        area,
        &dialog.title,
        lines,
        tone_style(dialog.tone, theme),
        theme,
    );
}

/// A rectangle of at most `w`×`h` centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// `[ Cancel ]  [ Apply ]` with the focused one reversed (the selected style).
pub fn buttons(labels: &[String], focus: usize, theme: &Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        let style = if i == focus {
            theme.selected
        } else {
            theme.base
        };
        let text = if i == focus {
            format!("▶ {l} ◀")
        } else {
            format!("[ {l} ]")
        };
        spans.push(Span::styled(text, style));
    }
    Line::from(spans)
}

/// Draw a modal box with a title and lines (wrapped), height fitted to the content.
pub fn modal(
    f: &mut Frame,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    border: Style,
    theme: &Theme,
) {
    let width = area.width.saturating_sub(4).clamp(20, 96);
    let inner_w = usize::from(width.saturating_sub(2)).max(1);
    let needed: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w))
        .sum();
    let height = (needed as u16 + 2).min(area.height);
    let r = centered(area, width, height);
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .border_style(border)
        .title(Span::styled(format!(" {title} "), theme.title))
        .style(theme.base);
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        r,
    );
}

/// `████████░░░░ 62%` `width` cells wide (the percentage included).
pub fn progress_bar(done: u64, total: Option<u64>, width: usize) -> String {
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let frac = (done as f64 / t as f64).clamp(0.0, 1.0);
            let label = format!(" {:>3.0}%", frac * 100.0);
            let cells = width.saturating_sub(label.chars().count()).max(1);
            let filled = ((frac * cells as f64).round() as usize).min(cells);
            format!(
                "{}{}{label}",
                "█".repeat(filled),
                "░".repeat(cells - filled)
            )
        }
        None => format!("{done} so far"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_is_bounded() {
        assert_eq!(progress_bar(5, Some(10), 14), "█████░░░░  50%");
        assert_eq!(progress_bar(50, Some(10), 9).chars().count(), 9);
        assert_eq!(progress_bar(3, None, 10), "3 so far");
    }
}
