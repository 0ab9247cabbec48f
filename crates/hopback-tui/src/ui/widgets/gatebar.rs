//! The gate as a bar: one segment per bound version, proportional to its weight, labelled
//! `v1 90%`. The first version gets the "old" style, the others the "new" style.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

use crate::model::gate::GateSplit;
use crate::ui::theme::Theme;

/// A one-line bar `width` cells wide.
pub fn gate_bar(gate: Option<&GateSplit>, width: usize, theme: &Theme) -> Line<'static> {
    let Some(gate) = gate else {
        return Line::from(Span::styled(
            "gate unknown (no management API)",
            theme.muted,
        ));
    };
    if gate.total() == 0 {
        return Line::from(Span::styled(
            "nothing bound — every message goes to unrouted",
            theme.alert,
        ));
    }
    let bound: Vec<(&String, &u32)> = gate.bound().collect();
    let mut spans = Vec::new();
    let mut used = 0usize;
    for (i, (v, _)) in bound.iter().enumerate() {
        let pct = gate.percent(v);
        let cells = if i + 1 == bound.len() {
            width.saturating_sub(used)
        } else {
            ((pct / 100.0) * width as f64).round() as usize
        };
        used += cells;
        let label = format!(" {} {:.0}% ", crate::text::sanitize(v), pct);
        let style: Style = if i == 0 {
            theme.gate_old
        } else {
            theme.gate_new
        };
        let fill: String = if label.chars().count() <= cells {
            let rest = cells - label.chars().count();
            format!("{label}{}", "█".repeat(rest))
        } else {
            "█".repeat(cells)
        };
        spans.push(Span::styled(fill, style));
    }
    Line::from(spans)
}
