//! Shared pieces of the operation views: a centred modal box, a row of buttons with one focused,
//! and a text progress bar. Dialogs are drawn over the view (after `Clear`), so what they ask
//! about stays visible around them.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::theme::Theme;

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
