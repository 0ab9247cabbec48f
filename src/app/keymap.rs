//! The keymap: a table of `{keys, action, desc}` rows (yazi-style). Keys are written as strings —
//! `q`, `G`, `ctrl-c`, `enter`, `esc`, `up`, `pgdown`, `?` — so the table, the config's `[keymap]`
//! overrides and the help view all speak the same language. A config entry replaces the keys of
//! one action: `[keymap] quit = ["q", "ctrl-q"]`.

use std::collections::BTreeMap;

use super::action::Action;

/// One row of the keymap table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Keys that trigger it (any of them).
    pub keys: Vec<String>,
    /// What they do.
    pub action: Action,
    /// One line for the help view.
    pub desc: &'static str,
}

/// The keymap table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keymap {
    /// Rows, in help order.
    pub bindings: Vec<Binding>,
}

fn row(keys: &[&str], action: Action, desc: &'static str) -> Binding {
    Binding {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        action,
        desc,
    }
}

impl Default for Keymap {
    fn default() -> Self {
        Keymap {
            bindings: vec![
                row(
                    &["q", "ctrl-c"],
                    Action::Quit,
                    "quit (restores the terminal)",
                ),
                row(&["esc"], Action::Back, "back / cancel input / clear filter"),
                row(&["k", "up"], Action::Up, "move up"),
                row(&["j", "down"], Action::Down, "move down"),
                row(&["ctrl-u", "pgup"], Action::PageUp, "page up"),
                row(&["ctrl-d", "pgdown"], Action::PageDown, "page down"),
                row(&["home"], Action::Top, "first row"),
                row(&["G", "end"], Action::Bottom, "last row"),
                row(
                    &["enter", "l", "right"],
                    Action::OpenNamespace { ns: None },
                    "open the selected namespace",
                ),
                row(&["?"], Action::Help, "help (this screen)"),
                row(&["/"], Action::StartFilter, "filter namespaces and queues"),
                row(
                    &[":"],
                    Action::StartCommand,
                    "command line (:ns NAME, :q, …)",
                ),
                row(
                    &["s"],
                    Action::SortNext,
                    "sort (dead letters: group by) next",
                ),
                row(&["S"], Action::SortReverse, "reverse sort order"),
                row(&["ctrl-r"], Action::Refresh, "refresh now"),
                row(&["g"], Action::OpenGate { ns: None }, "gate panel"),
                row(
                    &["d"],
                    Action::OpenDeadLetters { ns: None },
                    "dead letters at rest",
                ),
                row(
                    &["t"],
                    Action::OpenTimeline { ns: None },
                    "incident timeline",
                ),
                row(
                    &["r"],
                    Action::StartRollback { ns: None },
                    "start rollback of the selected namespace",
                ),
                row(
                    &["space"],
                    Action::Select,
                    "dead letters: select message / group",
                ),
                row(
                    &["R"],
                    Action::Replay,
                    "replay dead letters / unrouted (gate panel)",
                ),
                row(
                    &["P"],
                    Action::Purge,
                    "purge DLQ (export first, count typed)",
                ),
                row(&["e"], Action::Export, "export message to a file"),
                row(
                    &["b"],
                    Action::BodyMode,
                    "inspector: body auto/text/JSON/hex",
                ),
                row(&["p"], Action::PauseResume, "pause / resume the replay"),
                row(&["x"], Action::StopJob, "stop the replay"),
                row(&["]"], Action::NextPage, "dead letters: next page"),
                row(&["["], Action::PrevPage, "dead letters: previous page"),
                row(
                    &["n"],
                    Action::StartNote,
                    "add a note to the ledger (:note)",
                ),
            ],
        }
    }
}

/// Normalise a key name from config (`Ctrl+C` → `ctrl-c`, `Enter` → `enter`; single characters
/// keep their case so `G` ≠ `g`).
pub fn normalize(key: &str) -> Result<String, String> {
    let k = key.trim();
    if k.chars().count() == 1 {
        return Ok(k.to_string());
    }
    let lower = k.to_lowercase().replace('+', "-");
    let (mods, base) = match lower.rsplit_once('-') {
        Some((m, b)) if !b.is_empty() => (m.to_string(), b.to_string()),
        _ => (String::new(), lower.clone()),
    };
    let base = match base.as_str() {
        "return" => "enter".to_string(),
        "escape" => "esc".to_string(),
        "pageup" => "pgup".to_string(),
        "pagedown" => "pgdown".to_string(),
        " " => "space".to_string(),
        b => b.to_string(),
    };
    const NAMED: &[&str] = &[
        "enter",
        "esc",
        "up",
        "down",
        "left",
        "right",
        "pgup",
        "pgdown",
        "home",
        "end",
        "tab",
        "backtab",
        "backspace",
        "delete",
        "insert",
        "space",
        "f1",
        "f2",
        "f3",
        "f4",
        "f5",
        "f6",
        "f7",
        "f8",
        "f9",
        "f10",
        "f11",
        "f12",
    ];
    if base.chars().count() != 1 && !NAMED.contains(&base.as_str()) {
        return Err(format!(
            "`{}` is not a key (examples: q, G, ctrl-c, enter, esc, up, pgdown, f1)",
            crate::text::sanitize(key)
        ));
    }
    if mods.is_empty() {
        return Ok(base);
    }
    let mut out = String::new();
    for m in mods.split('-') {
        match m {
            "ctrl" | "control" | "c" => out.push_str("ctrl-"),
            "alt" | "meta" | "m" => out.push_str("alt-"),
            "shift" | "s" => out.push_str("shift-"),
            _ => {
                return Err(format!(
                    "`{}`: unknown modifier `{}` (use ctrl, alt, shift)",
                    crate::text::sanitize(key),
                    crate::text::sanitize(m)
                ));
            }
        }
    }
    out.push_str(&base);
    Ok(out)
}

impl Keymap {
    /// The default table with `[keymap]` overrides applied (action name → keys).
    pub fn with_overrides(overrides: &BTreeMap<String, Vec<String>>) -> Result<Keymap, String> {
        let mut km = Keymap::default();
        for (name, keys) in overrides {
            let action = Action::from_config_name(name).ok_or_else(|| {
                let known: Vec<&str> = Action::bindable().iter().map(|a| a.config_name()).collect();
                format!(
                    "[keymap]: unknown action `{}` (known: {})",
                    crate::text::sanitize(name),
                    known.join(", ")
                )
            })?;
            let keys = keys
                .iter()
                .map(|k| normalize(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("[keymap] {name}: {e}"))?;
            // A key moves to its new action: take it away from every other row.
            for b in &mut km.bindings {
                b.keys.retain(|k| !keys.contains(k));
            }
            if let Some(b) = km.bindings.iter_mut().find(|b| b.action == action) {
                b.keys = keys;
            }
        }
        Ok(km)
    }

    /// The action bound to a key, if any.
    pub fn lookup(&self, key: &str) -> Option<&Action> {
        self.bindings
            .iter()
            .find(|b| b.keys.iter().any(|k| k == key))
            .map(|b| &b.action)
    }

    /// The keys of an action, joined for display (`q, ctrl-c`).
    pub fn keys_of(&self, config_name: &str) -> String {
        self.bindings
            .iter()
            .find(|b| b.action.config_name() == config_name)
            .map(|b| b.keys.join(", "))
            .unwrap_or_default()
    }

    /// The first key of an action (for hints like "press r"), or the command.
    pub fn first_key(&self, config_name: &str) -> String {
        self.bindings
            .iter()
            .find(|b| b.action.config_name() == config_name)
            .and_then(|b| b.keys.first().cloned())
            .unwrap_or_else(|| format!(":{config_name}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_unambiguous() {
        let km = Keymap::default();
        let mut seen = std::collections::BTreeSet::new();
        for b in &km.bindings {
            for k in &b.keys {
                assert!(seen.insert(k.clone()), "key {k} bound twice");
            }
        }
        assert_eq!(km.lookup("q"), Some(&Action::Quit));
        assert_eq!(km.lookup("G"), Some(&Action::Bottom));
        assert_eq!(km.lookup("g"), Some(&Action::OpenGate { ns: None }));
    }

    #[test]
    fn overrides_replace_and_steal_keys() {
        let o: BTreeMap<String, Vec<String>> = [
            ("quit".to_string(), vec!["Ctrl+Q".to_string()]),
            ("help".to_string(), vec!["q".to_string()]),
        ]
        .into();
        let km = Keymap::with_overrides(&o).unwrap();
        assert_eq!(km.lookup("ctrl-q"), Some(&Action::Quit));
        assert_eq!(km.lookup("q"), Some(&Action::Help));
        assert_eq!(km.lookup("ctrl-c"), None);
        let bad: BTreeMap<String, Vec<String>> = [("nope".to_string(), vec![])].into();
        assert!(Keymap::with_overrides(&bad).is_err());
        let bad: BTreeMap<String, Vec<String>> =
            [("quit".to_string(), vec!["hyper-x".to_string()])].into();
        assert!(Keymap::with_overrides(&bad).is_err());
    }
}
