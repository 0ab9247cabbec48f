//! Turning [`AppState`] into widgets — and nothing else: no I/O, no state changes. One file per
//! view ([`overview`], [`namespace`], [`help`], [`gate`], [`dead_letters`], [`inspector`],
//! [`timeline`], [`rollback`], [`drill`]); shared pieces in [`widgets`] and [`dialog`]; colours only through
//! the semantic [`theme::Theme`]. Every string that came from the broker passes through
//! [`crate::text`] before it reaches a cell.

pub mod alerts;
pub mod ascii;
pub mod contexts;
pub mod dead_letters;
pub mod describe;
pub mod dialog;
pub mod drill;
pub mod gate;
pub mod help;
pub mod inspector;
pub mod log;
pub mod namespace;
pub mod overview;
pub mod rollback;
pub mod theme;
pub mod timeline;
pub mod widgets;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::widgets::Paragraph;

use crate::app::contexts::Console;
use crate::app::state::{AppState, LayoutHints, View};
use theme::Theme;

/// The smallest terminal every view fits without cutting numbers.
pub const MIN_WIDTH: u16 = 70;
/// The smallest terminal height (header, a table of a few rows, footer, a dialog).
pub const MIN_HEIGHT: u16 = 16;

/// Draw the whole screen; returns where the overview table landed (for mouse clicks).
pub fn draw(f: &mut Frame, state: &AppState, theme: &Theme) -> LayoutHints {
    draw_with(f, state, theme, None)
}

/// Draw the console: the context on screen, or — on the overview of a console showing every
/// context together — the overview across contexts.
pub fn draw_console(f: &mut Frame, console: &Console, theme: &Theme) -> LayoutHints {
    let merged = console.in_merged_overview().then_some(console);
    draw_with(f, console.state(), theme, merged)
}

fn draw_with(
    f: &mut Frame,
    state: &AppState,
    theme: &Theme,
    merged: Option<&Console>,
) -> LayoutHints {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        // Say so instead of silently cutting numbers; every key still works (q quits).
        let text = format!(
            "terminal too small: {}×{} — hopback needs at least {MIN_WIDTH}×{MIN_HEIGHT}. Enlarge the window (q quits).",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(text)
                .style(theme.warn)
                .wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        if state.ascii {
            ascii::asciify(f.buffer_mut());
        }
        return state.layout;
    }
    let footer = widgets::status::footer(state, theme, usize::from(area.width));
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(footer.len() as u16),
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
    // The drill strip sits under every view while a drill runs in the console.
    let (body, strip) = match &state.ops.drill {
        Some(_) if body.height >= 12 && state.view() != &View::Help => {
            let [b, s] = Layout::vertical([Constraint::Min(3), Constraint::Length(drill::HEIGHT)])
                .areas(body);
            (b, Some(s))
        }
        _ => (body, None),
    };
    // The namespace view gets one line of the live ledger feed when something happened there.
    let feed = match state.view() {
        View::Namespace { ns } => state
            .ops
            .feed
            .items
            .iter()
            .rev()
            .find(|i| i.ns.as_deref() == Some(ns.as_str()) && state.now_ms - i.at_ms < 120_000)
            .filter(|_| body.height >= 20),
        _ => None,
    };
    let (body, feed_area) = match feed {
        Some(_) => {
            let [b, l] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(body);
            (b, Some(l))
        }
        None => (body, None),
    };
    match state.view() {
        View::Overview => {
            hints = match merged {
                Some(c) => contexts::draw_merged(f, body, c, theme),
                None => overview::draw(f, body, state, theme),
            }
        }
        View::Describe => describe::draw(f, body, state, theme),
        View::Log => log::draw(f, body, state, theme),
        View::Contexts => contexts::draw_picker(f, body, state, theme),
        View::Namespace { ns } => namespace::draw(f, body, state, theme, ns),
        View::Help => hints.help_max_scroll = help::draw(f, body, state, theme),
        View::Alerts => alerts::draw(f, body, state, theme),
        View::Gate { ns } => gate::draw(f, body, state, theme, ns),
        View::DeadLetters { ns } => dead_letters::draw(f, body, state, theme, ns),
        View::Inspector { ns } => inspector::draw(f, body, state, theme, ns),
        View::Timeline { ns } => timeline::draw(f, body, state, theme, ns.as_deref()),
        View::Rollback { ns } => rollback::draw(f, body, state, theme, ns),
    }
    if let (Some(item), Some(a)) = (feed, feed_area) {
        let style = if item.other { theme.warn } else { theme.muted };
        f.render_widget(
            Paragraph::new(ratatui::text::Span::styled(
                widgets::fit(&format!("ledger: {}", item.text), usize::from(a.width)),
                style,
            )),
            a,
        );
    }
    if let (Some(d), Some(s)) = (&state.ops.drill, strip) {
        drill::draw(f, s, state, theme, d);
    }
    if let Some(d) = state.ops.drill.as_ref().filter(|d| d.dialog_open()) {
        drill::draw_end(f, area, theme, d);
    }
    f.render_widget(Paragraph::new(footer), foot);
    if state.ascii {
        ascii::asciify(f.buffer_mut());
    }
    hints
}
