//! Themes: `themes/*.toml` files with a `[palette]` of named colours and semantic `[styles]` that
//! refer to them. The four built-in themes are compiled in with `include_str!`; a file
//! `THEME.toml` in the config dir's `themes/` overrides or adds one. `NO_COLOR` (any non-empty
//! value) strips every colour but keeps bold/reverse/underline, so selection and alerts stay visible.
//! Built-in themes use only the 16 ANSI colour names.

use std::collections::BTreeMap;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The built-in themes: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("dark", include_str!("../../../../themes/dark.toml")),
    ("light", include_str!("../../../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../../../themes/high-contrast.toml"),
    ),
    (
        "production-red",
        include_str!("../../../../themes/production-red.toml"),
    ),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTheme {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    palette: BTreeMap<String, String>,
    #[serde(default)]
    styles: BTreeMap<String, RawStyle>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStyle {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underlined: bool,
    #[serde(default)]
    reversed: bool,
    #[serde(default)]
    dim: bool,
}

/// Semantic styles the views use; every view asks for a meaning, never for a colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// Theme name.
    pub name: String,
    /// Default text.
    pub base: Style,
    /// Header line.
    pub header: Style,
    /// Block borders.
    pub border: Style,
    /// Block titles.
    pub title: Style,
    /// Table column headers.
    pub table_header: Style,
    /// A namespace name in the table.
    pub namespace: Style,
    /// The selected row.
    pub selected: Style,
    /// Something is wrong now (alert thresholds, unrouted > 0).
    pub alert: Style,
    /// Worth a look.
    pub warn: Style,
    /// Healthy.
    pub ok: Style,
    /// Data that is no longer live.
    pub stale: Style,
    /// Secondary text.
    pub muted: Style,
    /// `READ-ONLY` badge.
    pub badge_read_only: Style,
    /// `PRODUCTION` badge.
    pub badge_production: Style,
    /// Gate share of the old (first) version.
    pub gate_old: Style,
    /// Gate share of newer versions.
    pub gate_new: Style,
    /// Sparklines.
    pub sparkline: Style,
    /// Depth chart line.
    pub chart_depth: Style,
    /// Error-rate chart line.
    pub chart_error: Style,
    /// Status line.
    pub status: Style,
    /// `:` command line and `/` filter input.
    pub command: Style,
    /// Keys in the help view.
    pub help_key: Style,
    /// Descriptions in the help view.
    pub help_desc: Style,
}

/// Theme loading problems.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ThemeError {
    /// No such theme.
    #[error("unknown theme `{0}` (built in: dark, light, high-contrast, production-red)")]
    Unknown(String),
    /// The file is not valid.
    #[error("theme `{name}`: {detail}")]
    Invalid {
        /// Theme name.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

fn color(name: &str, palette: &BTreeMap<String, String>, theme: &str) -> Result<Color, ThemeError> {
    let resolved = palette.get(name).map(String::as_str).unwrap_or(name);
    Color::from_str(resolved).map_err(|_| ThemeError::Invalid {
        name: theme.into(),
        detail: format!(
            "`{}` is neither a palette entry nor a colour",
            crate::text::sanitize(name)
        ),
    })
}

impl Theme {
    /// Parse a theme file; missing styles fall back to the dark theme's.
    pub fn parse(name: &str, text: &str, no_color: bool) -> Result<Theme, ThemeError> {
        let raw: RawTheme = toml::from_str(text).map_err(|e| ThemeError::Invalid {
            name: name.into(),
            detail: crate::text::sanitize(e.message()).into_owned(),
        })?;
        let mut styles: BTreeMap<String, Style> = BTreeMap::new();
        for (key, s) in &raw.styles {
            let mut st = Style::default();
            if !no_color {
                if let Some(fg) = &s.fg {
                    st = st.fg(color(fg, &raw.palette, name)?);
                }
                if let Some(bg) = &s.bg {
                    st = st.bg(color(bg, &raw.palette, name)?);
                }
            }
            let mut m = Modifier::empty();
            for (on, bit) in [
                (s.bold, Modifier::BOLD),
                (s.italic, Modifier::ITALIC),
                (s.underlined, Modifier::UNDERLINED),
                (s.reversed, Modifier::REVERSED),
                (s.dim, Modifier::DIM),
            ] {
                if on {
                    m |= bit;
                }
            }
            // Without colour, a background-only highlight would vanish: make it reverse video.
            if no_color && s.bg.is_some() {
                m |= Modifier::REVERSED;
            }
            styles.insert(key.clone(), st.add_modifier(m));
        }
        let get = |k: &str, fallback: Style| styles.get(k).copied().unwrap_or(fallback);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let rev = Style::default().add_modifier(Modifier::REVERSED);
        Ok(Theme {
            name: raw.name.unwrap_or_else(|| name.to_string()),
            base: get("base", Style::default()),
            header: get("header", bold),
            border: get("border", Style::default()),
            title: get("title", bold),
            table_header: get("table_header", bold),
            namespace: get("namespace", bold),
            selected: get("selected", rev),
            alert: get("alert", bold),
            warn: get("warn", Style::default()),
            ok: get("ok", Style::default()),
            stale: get("stale", Style::default().add_modifier(Modifier::DIM)),
            muted: get("muted", Style::default()),
            badge_read_only: get("badge_read_only", rev),
            badge_production: get("badge_production", rev),
            gate_old: get("gate_old", Style::default()),
            gate_new: get("gate_new", Style::default()),
            sparkline: get("sparkline", Style::default()),
            chart_depth: get("chart_depth", Style::default()),
            chart_error: get("chart_error", Style::default()),
            status: get("status", Style::default()),
            command: get("command", bold),
            help_key: get("help_key", bold),
            help_desc: get("help_desc", Style::default()),
        })
    }

    /// A built-in theme by name.
    pub fn builtin(name: &str, no_color: bool) -> Result<Theme, ThemeError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ThemeError::Unknown(name.into()))?;
        Theme::parse(name, text, no_color)
    }

    /// The default dark theme (cannot fail: it is compiled in and tested).
    pub fn fallback(no_color: bool) -> Theme {
        Theme::builtin("dark", no_color).unwrap_or_else(|_| Theme::plain())
    }

    /// No colours at all (last resort).
    pub fn plain() -> Theme {
        Theme::parse("plain", "", true).unwrap_or_else(|_| unreachable_plain())
    }

    /// Load `name`: the config dir's `themes/NAME.toml` first, then the built-ins. Honours
    /// `NO_COLOR`.
    pub fn load(name: &str) -> Result<Theme, ThemeError> {
        let no_color = no_color_requested();
        if let Some(dir) = crate::config::project_dirs() {
            let path = dir.config_dir().join("themes").join(format!("{name}.toml"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Theme::parse(name, &text, no_color);
            }
        }
        Theme::builtin(name, no_color)
    }
}

// Parsing "" cannot fail; this keeps the code free of unwrap/panic.
fn unreachable_plain() -> Theme {
    let s = Style::default();
    Theme {
        name: "plain".into(),
        base: s,
        header: s,
        border: s,
        title: s,
        table_header: s,
        namespace: s,
        selected: s.add_modifier(Modifier::REVERSED),
        alert: s.add_modifier(Modifier::BOLD),
        warn: s,
        ok: s,
        stale: s,
        muted: s,
        badge_read_only: s,
        badge_production: s,
        gate_old: s,
        gate_new: s,
        sparkline: s,
        chart_depth: s,
        chart_error: s,
        status: s,
        command: s,
        help_key: s,
        help_desc: s,
    }
}

/// `NO_COLOR` set to anything non-empty (<https://no-color.org>).
pub fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn is_16(c: Option<Color>) -> bool {
        !matches!(c, Some(Color::Rgb(..) | Color::Indexed(_)))
    }

    #[test]
    fn builtins_parse_and_use_16_colours() {
        for (name, _) in BUILTIN {
            let t = Theme::builtin(name, false).unwrap();
            assert_eq!(&t.name, name);
            for s in [t.header, t.alert, t.selected, t.stale, t.badge_production] {
                assert!(is_16(s.fg) && is_16(s.bg), "{name}: {s:?}");
            }
        }
        assert_eq!(
            Theme::builtin("production-red", false).unwrap().header.bg,
            Some(Color::Red)
        );
    }

    #[test]
    fn no_color_strips_colours_keeps_emphasis() {
        let t = Theme::builtin("dark", true).unwrap();
        assert_eq!(t.alert.fg, None);
        assert!(t.alert.add_modifier.contains(Modifier::BOLD));
        assert!(t.selected.add_modifier.contains(Modifier::REVERSED));
    }

    #[test]
    fn bad_theme_is_an_error() {
        assert!(Theme::parse("x", "[styles]\nalert = { fg = \"nope\" }", false).is_err());
        assert!(Theme::parse("x", "bogus = 1", false).is_err());
        assert!(matches!(
            Theme::builtin("nope", false),
            Err(ThemeError::Unknown(_))
        ));
    }
}
