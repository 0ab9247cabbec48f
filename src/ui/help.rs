//! The `?` help view, generated from the keymap table (so it shows the operator's overrides and
//! can never disagree with what the keys do) — per context: the global keys, then the keys of
//! dialogs, of a rollback decision point and of the drill's score — and the list of `:` commands.
//! What does not fit scrolls (↑/↓, PgUp/PgDn).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Paragraph};

use super::theme::Theme;
use super::widgets::fit;
use crate::app::action::COMMANDS;
use crate::app::keymap::{Binding, Context};
use crate::app::state::AppState;

const KEY_W: usize = 14;

/// One help line: a context heading, a binding, or a gap.
enum Item<'a> {
    Heading(String),
    Key(&'a Binding),
    Gap,
}

fn items(state: &AppState) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    for c in Context::ALL {
        let rows: Vec<&Binding> = state
            .keymap
            .bindings
            .iter()
            .filter(|b| b.context == c && !b.keys.is_empty())
            .collect();
        if rows.is_empty() {
            continue;
        }
        if c != Context::Global {
            out.push(Item::Gap);
            out.push(Item::Heading(c.label().to_string()));
        }
        out.extend(rows.into_iter().map(Item::Key));
    }
    out
}

fn line(item: &Item, width: usize, theme: &Theme) -> Line<'static> {
    match item {
        Item::Gap => Line::from(""),
        Item::Heading(h) => Line::from(Span::styled(fit(h, width), theme.title)),
        Item::Key(b) => Line::from(vec![
            Span::styled(
                format!("{:<KEY_W$} ", fit(&b.keys.join(" "), KEY_W)),
                theme.help_key,
            ),
            Span::styled(
                fit(b.desc, width.saturating_sub(KEY_W + 1)),
                theme.help_desc,
            ),
        ]),
    }
}

/// Draw the help view; returns how far it can scroll.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) -> usize {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(area);
    let all = items(state);
    // Rows that do not fit on the left continue in the right column under the commands; what
    // fits in neither scrolls.
    let left_h = usize::from(left.height.saturating_sub(1));
    let right_h = usize::from(right.height.saturating_sub(1));
    let room = left_h + right_h.saturating_sub(COMMANDS.len() + 1);
    let max_scroll = all.len().saturating_sub(room);
    let scroll = state.help_scroll.min(max_scroll);
    let title = if max_scroll > 0 {
        " keys ([keymap] overrides) · ↑/↓ more "
    } else {
        " keys (config [keymap] overrides) "
    };
    let inner = crate::ui::widgets::section(f, left, title, theme);
    let shown: Vec<&Item> = all.iter().skip(scroll).collect();
    let w = usize::from(inner.width);
    let lines: Vec<Line> = shown
        .iter()
        .take(left_h)
        .map(|i| line(i, w, theme))
        .collect();
    f.render_widget(Paragraph::new(lines), inner);

    let inner = crate::ui::widgets::section_with(
        f,
        right,
        Borders::TOP,
        theme.border,
        Span::styled(" commands ", theme.title),
    );
    let cmd_w = 15usize;
    let w = usize::from(inner.width);
    let desc_w = w.saturating_sub(cmd_w + 1);
    let mut lines: Vec<Line> = COMMANDS
        .iter()
        .map(|(c, d)| {
            Line::from(vec![
                Span::styled(format!("{c:<cmd_w$} "), theme.help_key),
                Span::styled(fit(d, desc_w), theme.help_desc),
            ])
        })
        .collect();
    let overflow: Vec<&&Item> = shown.iter().skip(left_h).collect();
    // A context cut by the column break is named again at the top of the right column.
    if let Some(Item::Key(b)) = overflow.first().map(|i| **i)
        && b.context != Context::Global
    {
        lines.push(line(
            &Item::Heading(format!("{} (cont.)", b.context.label())),
            w,
            theme,
        ));
    }
    for (n, i) in overflow.iter().enumerate() {
        // No gap at the top of the column.
        if n == 0 && matches!(i, Item::Gap) {
            continue;
        }
        lines.push(line(i, w, theme));
    }
    let notes = [
        "mouse: wheel scrolls, click selects,",
        "click again opens.",
        "Esc goes back. Data greys out when",
        "stale; the header says why.",
        "Dialogs: focus starts on Cancel.",
    ];
    if lines.len() + 1 + notes.len() <= usize::from(inner.height) {
        lines.push(Line::from(""));
        for t in notes {
            lines.push(Line::from(Span::styled(t, theme.muted)));
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
    max_scroll
}
