//! The footer, bottom up: the keys of the current screen (always; while typing, the input line
//! with its keys), above it the worst active alert on its own line ("rollback recommended — press
//! r" when the data supports one; `!` lists all), and above that a transient message.

use ratatui::text::{Line, Span};

use super::fit;
use crate::app::keymap::Context;
use crate::app::state::{AppState, Input, Level, View};
use crate::ui::theme::Theme;

/// The footer's lines, top to bottom (1 to 3): message, alert, keys.
pub fn footer(state: &AppState, theme: &Theme, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(m) = &state.message {
        let style = match m.level {
            Level::Info => theme.status,
            Level::Warn => theme.warn,
            Level::Error => theme.alert,
        };
        lines.push(Line::from(Span::styled(
            fit(&crate::text::sanitize(&m.text), width),
            style,
        )));
    }
    if let Some(a) = alert_line(state, width) {
        lines.push(Line::from(Span::styled(a, theme.alert)));
    }
    lines.push(keys_line(state, theme, width));
    lines
}

/// The worst alert in one line, with the count of the others.
fn alert_line(state: &AppState, width: usize) -> Option<String> {
    let alerts = &state.alerts.active;
    let first = state.rollback_recommendation().or(alerts.first())?;
    let more = if alerts.len() > 1 {
        format!(
            " (+{} more — {} lists all)",
            alerts.len() - 1,
            state.keymap.first_key("alerts")
        )
    } else {
        String::new()
    };
    let text = if let Some(adv) = first.rollback.as_ref().filter(|_| !state.read_only) {
        format!(
            "⚠ rollback recommended — press {}: {} {} → {} · {}{more}",
            state.keymap.first_key("rollback"),
            crate::text::sanitize(&first.ns),
            crate::text::sanitize(&adv.from),
            crate::text::sanitize(&adv.to),
            first.describe()
        )
    } else {
        format!("⚠ {}{more}", first.describe())
    };
    Some(fit(&text, width))
}

/// The keys of the current screen: the open dialog's, else the view's (plus a running move's).
pub fn screen_keys(state: &AppState) -> Vec<(String, &'static str)> {
    let k = |name: &str| state.keymap.first_key(name);
    if let Some(input) = &state.input {
        return match input {
            Input::Filter(_) => vec![("enter".into(), "apply"), ("esc".into(), "clear")],
            Input::Command(_) => vec![("enter".into(), "run"), ("esc".into(), "cancel")],
        };
    }
    if state.ops.drill.as_ref().is_some_and(|d| d.start.is_some()) {
        return vec![
            (k("confirm"), "start"),
            (k("focus_next"), "next"),
            (k("cancel"), "quit (nothing created)"),
        ];
    }
    if let Some(contexts) = state.dialog_contexts() {
        let mut keys: Vec<(String, &'static str)> = Vec::new();
        if contexts.contains(&Context::Rollback) {
            keys.push(("letter".into(), "in ( ) answers"));
        }
        if contexts.contains(&Context::Drill) {
            keys.push((k("write_postmortem"), "post-mortem"));
        }
        keys.push((k("focus_next"), "next"));
        keys.push((k("confirm"), "press focused"));
        keys.push((
            k("cancel"),
            if contexts.contains(&Context::Rollback) {
                "hide (it waits)"
            } else {
                "cancel"
            },
        ));
        return keys;
    }
    let mut keys: Vec<(String, &'static str)> = match state.view() {
        // Most useful first: what does not fit the width is cut from the end.
        View::Overview => {
            let mut v = vec![
                (k("help"), "help"),
                (k("open"), "open"),
                (k("gate"), "gate"),
                (k("dlq"), "dlq"),
                (k("rollback"), "rollback"),
            ];
            if !state.alerts.active.is_empty() {
                v.push((k("alerts"), "alerts"));
            }
            v.extend([
                (k("quit"), "quit"),
                (k("filter"), "filter"),
                (k("sort"), "sort"),
                (k("command"), "cmd"),
            ]);
            v
        }
        View::Namespace { .. } => vec![
            (k("back"), "back"),
            (k("gate"), "gate"),
            (k("dlq"), "dlq"),
            (k("timeline"), "timeline"),
            (k("rollback"), "rollback"),
            (k("note"), "note"),
            (k("help"), "help"),
            (k("quit"), "quit"),
        ],
        View::Gate { .. } => {
            let mut v = vec![("↑↓".into(), "preset"), (k("open"), "apply (asks first)")];
            if state.ops.gate.as_ref().is_some_and(|g| g.pairs().len() > 1) {
                v.push((
                    format!("{}{}", k("next_page"), k("prev_page")),
                    "version pair",
                ));
            }
            v.extend([
                (k("replay"), "replay unrouted"),
                (k("back"), "back"),
                (k("help"), "help"),
            ]);
            v
        }
        View::DeadLetters { .. } => vec![
            ("↑↓".into(), "move"),
            (k("select"), "select"),
            (k("open"), "inspect"),
            (k("replay"), "replay"),
            (k("purge"), "purge"),
            (k("export"), "export"),
            (k("back"), "back"),
            (k("sort"), "group"),
            (format!("{}{}", k("next_page"), k("prev_page")), "page"),
        ],
        View::Inspector { .. } => vec![
            ("↑↓".into(), "scroll"),
            (k("body_mode"), "body text/JSON/hex"),
            (k("export"), "export"),
            (k("back"), "back"),
        ],
        View::Timeline { .. } => vec![
            ("↑↓".into(), "select"),
            (k("open"), "describe"),
            (k("yank"), "copy id"),
            (k("filter"), "filter"),
            (k("refresh"), "refresh"),
            (k("back"), "back"),
            (k("help"), "help"),
        ],
        View::Describe => vec![
            ("↑↓".into(), "scroll"),
            (k("yank"), "copy event id"),
            (k("back"), "back"),
            (k("help"), "help"),
        ],
        View::Log => vec![
            ("↑↓".into(), "scroll"),
            (k("filter"), "filter"),
            (k("refresh"), "read again"),
            (k("back"), "back"),
        ],
        View::Contexts => vec![
            ("↑↓".into(), "choose"),
            (k("open"), "switch"),
            (k("back"), "back"),
            (k("help"), "help"),
        ],
        View::Rollback { .. } => {
            let running =
                state.ops.rollback.as_ref().is_some_and(|r| {
                    matches!(r.stage, crate::app::panels::rollback::RbStage::Running)
                });
            let mut v = Vec::new();
            if running {
                v.push((k("stop"), "stop the running step"));
                v.push((k("back"), "hide (keeps running)"));
            } else {
                v.push((k("back"), "back"));
            }
            v.push((k("help"), "help"));
            v
        }
        View::Help if state.layout.help_max_scroll > 0 => {
            vec![("↑↓".into(), "scroll"), (k("back"), "back")]
        }
        View::Help => vec![(k("back"), "back")],
        View::Alerts => vec![
            ("↑↓".into(), "select"),
            (k("open"), "open its namespace"),
            (k("rollback"), "rollback"),
            (k("back"), "back"),
        ],
    };
    let move_running = state.ops.job.as_ref().is_some_and(|j| j.running());
    if move_running && !matches!(state.view(), View::Rollback { .. }) {
        // A running replay's keys come first: they are the ones needed now.
        keys.splice(
            0..0,
            [
                (k("pause"), "pause/resume replay"),
                (k("stop"), "stop replay"),
            ],
        );
    }
    keys
}

/// The bottom line: the input being typed, or the screen's keys.
fn keys_line(state: &AppState, theme: &Theme, width: usize) -> Line<'static> {
    let mut spans = Vec::new();
    let mut used = 0usize;
    if let Some(input) = &state.input {
        let (prefix, text) = match input {
            Input::Filter(t) => ("/", t),
            Input::Command(t) => (":", t),
        };
        let shown = format!("{prefix}{}█  ", crate::text::sanitize(text));
        used += shown.chars().count();
        spans.push(Span::styled(shown, theme.command));
    }
    for (i, (key, label)) in screen_keys(state).into_iter().enumerate() {
        let sep = if i == 0 { "" } else { " · " };
        let piece = format!("{sep}{key} {label}");
        let n = piece.chars().count();
        if used + n > width {
            break;
        }
        used += n;
        spans.push(Span::styled(sep.to_string(), theme.muted));
        spans.push(Span::styled(key, theme.help_key));
        spans.push(Span::styled(format!(" {label}"), theme.muted));
    }
    Line::from(spans)
}
