//! The bottom line: the input being typed (`:` / `/`), else a message, else the most important
//! alert (with "rollback recommended — press r" when it applies), else key hints.

use ratatui::text::{Line, Span};

use super::fit;
use crate::app::state::{AppState, Input, Level};
use crate::ui::theme::Theme;

/// The status line.
pub fn status(state: &AppState, theme: &Theme, width: usize) -> Line<'static> {
    if let Some(input) = &state.input {
        let (prefix, text) = match input {
            Input::Filter(t) => ("/", t),
            Input::Command(t) => (":", t),
        };
        return Line::from(vec![
            Span::styled(prefix.to_string(), theme.command),
            Span::styled(crate::text::sanitize(text).into_owned(), theme.command),
            Span::styled("█", theme.command),
        ]);
    }
    if let Some(m) = &state.message {
        let style = match m.level {
            Level::Info => theme.status,
            Level::Warn => theme.warn,
            Level::Error => theme.alert,
        };
        return Line::from(Span::styled(
            fit(&crate::text::sanitize(&m.text), width),
            style,
        ));
    }
    let alerts = &state.alerts.active;
    if let Some(first) = state.rollback_recommendation().or(alerts.first()) {
        let more = if alerts.len() > 1 {
            format!(" (+{} more)", alerts.len() - 1)
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
        let spans = vec![Span::styled(fit(&text, width), theme.alert)];
        return Line::from(spans);
    }
    let k = |name: &str| state.keymap.first_key(name);
    Line::from(Span::styled(
        fit(
            &format!(
                "{} help · {} filter · {} cmd · {} open · {} sort · {} gate · {} rollback · {} quit",
                k("help"),
                k("filter"),
                k("command"),
                k("open"),
                k("sort"),
                k("gate"),
                k("rollback"),
                k("quit")
            ),
            width,
        ),
        theme.muted,
    ))
}
