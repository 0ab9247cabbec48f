//! The `?` help view, generated from the keymap table (so it shows the operator's overrides and
//! can never disagree with what the keys do) — per context: the global keys, then the keys of
//! dialogs, of a rollback decision point and of the drill's score — and the `:` commands.
//!
//! Built to fit 80×24 whole (issue 17): opposite moves share a row (`k/j ↑/↓  move up / down`),
//! key names are short (`^c`, `pgdn`, `←`), the rows flow into as many ~40-column columns as the
//! width allows, and the commands sit in a compact block underneath. What still does not fit (a
//! keymap override with many keys, a smaller terminal) scrolls (↑/↓, PgUp/PgDn).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::widgets::fit;
use crate::app::action::{Action, COMMANDS};
use crate::app::keymap::{Binding, Context};
use crate::app::state::{AppState, SortKey};
use crate::model::canary::ControlCommand;

/// Widest key column; longer key lists are cut with `…`.
const KEY_W_MAX: usize = 15;
/// Narrowest column worth a second column.
const COLUMN_W: usize = 38;

/// Related actions shown on one row: (the actions, what the group does).
const GROUPS: &[(&[Action], &str)] = &[
    (&[Action::Up, Action::Down], "move up / down"),
    (&[Action::PageUp, Action::PageDown], "page up / down"),
    (&[Action::Top, Action::Bottom], "first / last row"),
    (
        &[
            Action::SortNext,
            Action::SortReverse,
            Action::SortBy { key: SortKey::Name },
            Action::SortBy {
                key: SortKey::ErrorRate,
            },
            Action::SortBy {
                key: SortKey::Ready,
            },
            Action::SortBy {
                key: SortKey::DeadLetterRate,
            },
        ],
        "sort: next/rev/column",
    ),
    (
        &[
            Action::PauseLive,
            Action::Yank,
            Action::OpenLog,
            Action::OpenContexts,
        ],
        "pause/copy id/log/ctx",
    ),
    (
        &[Action::NextPage, Action::PrevPage],
        "next/prev page or pair",
    ),
    (
        &[Action::PauseResume, Action::StopJob],
        "pause / stop replay",
    ),
    (
        &[Action::FocusNext, Action::FocusPrev],
        "next / previous button",
    ),
    (
        &[Action::OptionPrev, Action::OptionNext],
        "previous / next option",
    ),
    (
        &[
            Action::DecideReplay,
            Action::DecideKeep,
            Action::DecideExport,
        ],
        "DL: replay/keep/export",
    ),
    (
        &[
            Action::CanaryControl {
                command: ControlCommand::Pause,
            },
            Action::CanaryControl {
                command: ControlCommand::Resume,
            },
            Action::CanaryControl {
                command: ControlCommand::Promote,
            },
            Action::CanaryControl {
                command: ControlCommand::Abort,
            },
        ],
        "canary keys (gate view)",
    ),
];

/// One help line: a context heading, a (possibly paired) binding, or a gap.
enum Item {
    Heading(&'static str),
    Key { keys: String, desc: &'static str },
    Gap,
}

/// A key name as the help shows it: `ctrl-c` → `^c`, arrows as arrows, long names shortened.
fn short_key(k: &str) -> String {
    if let Some(rest) = k.strip_prefix("ctrl-") {
        return format!("^{rest}");
    }
    match k {
        "up" => "↑",
        "down" => "↓",
        "left" => "←",
        "right" => "→",
        "backspace" => "bksp",
        "pgdown" => "pgdn",
        "backtab" => "S-tab",
        "space" => "spc",
        other => other,
    }
    .to_string()
}

fn keys_of(b: &Binding) -> String {
    b.keys
        .iter()
        .map(|k| short_key(k))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keys of a group: position by position (`k/j ↑/↓`) when all have as many keys.
fn group_keys(bs: &[&Binding]) -> String {
    let n = bs[0].keys.len();
    if bs.iter().any(|b| b.keys.len() != n) {
        return bs.iter().map(|b| keys_of(b)).collect::<Vec<_>>().join(" ");
    }
    (0..n)
        .map(|i| {
            bs.iter()
                .map(|b| short_key(&b.keys[i]))
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rows of one context: groups on one row (where every member is bound in it), the rest one
/// row each. A dialog row that only repeats a global binding (`^c` quits everywhere) is left out.
fn context_rows(state: &AppState, c: Context) -> Vec<Item> {
    let bindings = &state.keymap.bindings;
    let rows: Vec<&Binding> = bindings
        .iter()
        .filter(|b| b.context == c && !b.keys.is_empty())
        .filter(|b| {
            c == Context::Global
                || !bindings.iter().any(|g| {
                    g.context == Context::Global
                        && g.action == b.action
                        && b.keys.iter().all(|k| g.keys.contains(k))
                })
        })
        .collect();
    let find = |a: &Action| rows.iter().find(|b| &b.action == a).copied();
    let mut out = Vec::new();
    for b in &rows {
        let group = GROUPS
            .iter()
            .find(|(acts, _)| acts.contains(&b.action) && acts.iter().all(|a| find(a).is_some()));
        match group {
            Some((acts, desc)) if acts[0] == b.action => {
                let members: Vec<&Binding> = acts.iter().filter_map(find).collect();
                out.push(Item::Key {
                    keys: group_keys(&members),
                    desc,
                });
            }
            Some(_) => {} // shown with the group's first action
            None => out.push(Item::Key {
                keys: keys_of(b),
                desc: b.desc,
            }),
        }
    }
    out
}

/// Every row, per context under its heading; with a gap before each heading when `gaps`.
fn items(state: &AppState, gaps: bool) -> Vec<Item> {
    let mut out = Vec::new();
    for c in Context::ALL {
        let rows = context_rows(state, c);
        if rows.is_empty() {
            continue;
        }
        if c != Context::Global {
            if gaps {
                out.push(Item::Gap);
            }
            out.push(Item::Heading(c.label()));
        }
        out.extend(rows);
    }
    out
}

fn line(item: &Item, key_w: usize, width: usize, theme: &Theme) -> Line<'static> {
    match item {
        Item::Gap => Line::from(""),
        Item::Heading(h) => Line::from(Span::styled(fit(h, width), theme.title)),
        Item::Key { keys, desc } => Line::from(vec![
            Span::styled(format!("{:<key_w$} ", fit(keys, key_w)), theme.help_key),
            Span::styled(fit(desc, width.saturating_sub(key_w + 1)), theme.help_desc),
        ]),
    }
}

/// The `:` commands as a wrapped run of `:cmd` tokens (their descriptions are on `:help`'s
/// README page; the names say enough here).
fn command_lines(width: usize, theme: &Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut cur: Vec<Span> = vec![Span::styled("commands: ", theme.title)];
    let mut used = "commands: ".len();
    for (c, _) in COMMANDS {
        let w = c.chars().count() + 2;
        if used + w > width && used > 0 {
            lines.push(Line::from(std::mem::take(&mut cur)));
            cur.push(Span::raw("          "));
            used = 10;
        }
        cur.push(Span::styled(format!("{c}  "), theme.help_key));
        used += w;
    }
    lines.push(Line::from(cur));
    lines
}

/// Draw the help view; returns how far it can scroll.
pub fn draw(f: &mut Frame, area: Rect, state: &AppState, theme: &Theme) -> usize {
    let width = usize::from(area.width);
    let commands = command_lines(width, theme);
    let [keys_area, cmd_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::try_from(commands.len()).unwrap_or(u16::MAX)),
    ])
    .areas(area);
    let cols = (width / COLUMN_W).clamp(1, 3);
    let col_h = usize::from(keys_area.height.saturating_sub(1));
    // Gaps between contexts only when everything fits with them (headings stand out anyway).
    let all = match items(state, true) {
        all if all.len() <= col_h * cols => all,
        _ => items(state, false),
    };
    let max_scroll = all.len().saturating_sub(col_h * cols);
    let scroll = state.help_scroll.min(max_scroll);
    let title = if max_scroll > 0 {
        " keys ([keymap] overrides) · ↑/↓ more · esc back "
    } else {
        " keys ([keymap] overrides) · esc back · dialogs start on Cancel "
    };
    let key_w = all
        .iter()
        .map(|i| match i {
            Item::Key { keys, .. } => keys.chars().count(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
        .min(KEY_W_MAX);
    let inner = crate::ui::widgets::section(f, keys_area, title, theme);
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, cols as u32); cols]).split(inner);
    // Balanced columns when everything fits; full ones when it scrolls.
    let col_h = if max_scroll == 0 {
        all.len().div_ceil(cols).max(1)
    } else {
        col_h
    };
    let mut shown = all.iter().skip(scroll).peekable();
    for col in areas.iter() {
        let w = usize::from(col.width.saturating_sub(1));
        let mut lines = Vec::new();
        while lines.len() < col_h {
            let Some(item) = shown.next() else { break };
            // No gap at the top of a column.
            if lines.is_empty() && matches!(item, Item::Gap) {
                continue;
            }
            lines.push(line(item, key_w, w, theme));
        }
        f.render_widget(Paragraph::new(lines), *col);
    }
    f.render_widget(Paragraph::new(commands), cmd_area);
    max_scroll
}
