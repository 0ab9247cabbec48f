//! The alerts view (`!`): every active alert, worst first (the order of
//! [`crate::app::alerts::Alerts::active`]), each with its rollback advice when the data supports
//! one. The status bar shows only the worst; this is the list behind its "+N more".

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::widgets::fit;
use crate::app::state::AppState;
use crate::text::sanitize;

/// Draw the alerts view.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) {
    let active = &state.alerts.active;
    let inner = crate::ui::widgets::section(
        f,
        area,
        format!(" alerts · {} active · worst first ", active.len()),
        theme,
    );
    let w = usize::from(inner.width);
    let mut lines = Vec::new();
    if active.is_empty() {
        lines.push(Line::from(Span::styled("no active alerts", theme.ok)));
    }
    let sel = state.alert_sel.min(active.len().saturating_sub(1));
    for (i, a) in active.iter().enumerate() {
        let mut text = format!("⚠ {:<9} {}", a.kind.tag(), a.describe());
        if let Some(adv) = a.rollback.as_ref().filter(|_| !state.read_only) {
            text.push_str(&format!(
                " — rollback advised: {} → {} (press {})",
                sanitize(&adv.from),
                sanitize(&adv.to),
                state.keymap.first_key("rollback")
            ));
        }
        let style = if i == sel {
            theme.selected.patch(theme.alert)
        } else {
            theme.alert
        };
        lines.push(Line::from(Span::styled(fit(&text, w), style)));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
