//! Turning [`AppState`] into widgets — and nothing else: no I/O, no state changes. One file per
//! view ([`overview`], [`namespace`], [`help`]); shared pieces in [`widgets`]; colours only through
//! the semantic [`theme::Theme`]. Every string that came from the broker passes through
//! [`crate::text`] before it reaches a cell.

pub mod help;
pub mod namespace;
pub mod overview;
pub mod theme;
pub mod widgets;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::widgets::Paragraph;

use crate::app::state::{AppState, LayoutHints, View};
use theme::Theme;

/// Draw the whole screen; returns where the overview table landed (for mouse clicks).
pub fn draw(f: &mut Frame, state: &AppState, theme: &Theme) -> LayoutHints {
    let area = f.area();
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(widgets::header::header(
            state,
            theme,
            usize::from(head.width),
        )),
        head,
    );
    let mut hints = state.layout;
    match state.view() {
        View::Overview => hints = overview::draw(f, body, state, theme),
        View::Namespace { ns } => namespace::draw(f, body, state, theme, ns),
        View::Help => help::draw(f, body, state, theme),
    }
    f.render_widget(
        Paragraph::new(widgets::status::status(
            state,
            theme,
            usize::from(foot.width),
        )),
        foot,
    );
    hints
}
