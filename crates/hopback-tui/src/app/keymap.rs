//! The keymap: a table of `{keys, action, desc}` rows (yazi-style). Keys are written as strings —
//! `q`, `G`, `ctrl-c`, `enter`, `esc`, `up`, `pgdown`, `?` — so the table, the config's `[keymap]`
//! overrides and the help view all speak the same language. A config entry replaces the keys of
//! one action: `[keymap] quit = ["q", "ctrl-q"]`.
//!
//! Each row applies in a [`Context`] (atuin-style conditions): the global keys, the keys of any
//! dialog, and the extra keys of a rollback decision point or the drill's score. While a dialog is
//! open only its contexts are looked up, so `q` in a dialog quits nothing; the help view lists
//! the rows per context.

use std::collections::BTreeMap;

use super::action::Action;

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Context {
    /// The views, when no dialog is open.
    Global,
    /// Any dialog (confirmations, the resume offer, decision points, the drill's score).
    Dialog,
    /// A rollback decision point (looked up before `Dialog`).
    Rollback,
    /// The drill's score dialog (looked up before `Dialog`).
    Drill,
}

impl Context {
    /// Every context, in help order.
    pub const ALL: [Context; 4] = [
        Context::Global,
        Context::Dialog,
        Context::Rollback,
        Context::Drill,
    ];
    /// Heading of the context in the help view (fits one of its ~38-column columns).
    pub fn label(self) -> &'static str {
        match self {
            Context::Global => "keys",
            Context::Dialog => "dialogs (typed: text goes in)",
            Context::Rollback => "rollback decision (+dialog)",
            Context::Drill => "drill score (+dialog)",
        }
    }
}

/// One row of the keymap table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Where it applies.
    pub context: Context,
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
    row_in(Context::Global, keys, action, desc)
}

fn row_in(context: Context, keys: &[&str], action: Action, desc: &'static str) -> Binding {
    Binding {
        context,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        action,
        desc,
    }
}

impl Default for Keymap {
    fn default() -> Self {
        Keymap {
            bindings: vec![
                row(&["q", "ctrl-c"], Action::Quit, "quit, restore terminal"),
                row(
                    &["esc", "h", "left", "backspace"],
                    Action::Back,
                    "back/cancel/unfilter",
                ),
                row(&["k", "up"], Action::Up, "move up"),
                row(&["j", "down"], Action::Down, "move down"),
                row(&["ctrl-u", "pgup"], Action::PageUp, "page up"),
                row(&["ctrl-d", "pgdown"], Action::PageDown, "page down"),
                row(&["home"], Action::Top, "first row"),
                row(&["G", "end"], Action::Bottom, "last row"),
                row(
                    &["enter", "l", "right"],
                    Action::OpenNamespace { ns: None },
                    "open selected namespace",
                ),
                row(&["?"], Action::Help, "help (this screen)"),
                row(&["!"], Action::OpenAlerts, "all alerts, worst first"),
                row(&["/"], Action::StartFilter, "filter ns and queues"),
                row(&[":"], Action::StartCommand, "command line (:ns …)"),
                row(&["s"], Action::SortNext, "next sort (DL: group by)"),
                row(&["S"], Action::SortReverse, "reverse sort order"),
                row(
                    &["N"],
                    Action::SortBy {
                        key: super::state::SortKey::Name,
                    },
                    "sort by name (again: reverse)",
                ),
                row(
                    &["E"],
                    Action::SortBy {
                        key: super::state::SortKey::ErrorRate,
                    },
                    "sort by error %",
                ),
                row(
                    &["W"],
                    Action::SortBy {
                        key: super::state::SortKey::Ready,
                    },
                    "sort by ready (waiting)",
                ),
                row(
                    &["D"],
                    Action::SortBy {
                        key: super::state::SortKey::DeadLetterRate,
                    },
                    "sort by dead letters/s",
                ),
                row(&["z"], Action::PauseLive, "pause / resume live view"),
                row(&["c"], Action::Yank, "copy id (message, event)"),
                row(&["L"], Action::OpenLog, "hopback's own log"),
                row(&["C"], Action::OpenContexts, "contexts (profiles)"),
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
                    "rollback of selected ns",
                ),
                row(&["space"], Action::Select, "select message / group"),
                row(&["R"], Action::Replay, "replay DL · unrouted"),
                row(&["P"], Action::Purge, "purge DLQ, export first"),
                row(&["e"], Action::Export, "export message to file"),
                row(&["b"], Action::BodyMode, "body auto/text/JSON/hex"),
                row(&["p"], Action::PauseResume, "pause / resume replay"),
                row(&["x"], Action::StopJob, "stop replay / rollback"),
                row(
                    &["]"],
                    Action::NextPage,
                    "dead letters: next page · gate: next version pair",
                ),
                row(
                    &["["],
                    Action::PrevPage,
                    "dead letters: previous page · gate: previous pair",
                ),
                row(&["n"], Action::StartNote, "note to the ledger"),
                row(
                    &["Z"],
                    Action::CanaryControl {
                        command: crate::ops::canary::ControlCommand::Pause,
                    },
                    "gate: pause canary",
                ),
                row(
                    &["U"],
                    Action::CanaryControl {
                        command: crate::ops::canary::ControlCommand::Resume,
                    },
                    "gate: resume canary",
                ),
                row(
                    &["M"],
                    Action::CanaryControl {
                        command: crate::ops::canary::ControlCommand::Promote,
                    },
                    "gate: promote canary now",
                ),
                row(
                    &["A"],
                    Action::CanaryControl {
                        command: crate::ops::canary::ControlCommand::Abort,
                    },
                    "gate: abort canary",
                ),
                row_in(
                    Context::Dialog,
                    &["tab", "right"],
                    Action::FocusNext,
                    "next list / button",
                ),
                row_in(
                    Context::Dialog,
                    &["backtab", "left"],
                    Action::FocusPrev,
                    "previous list / button",
                ),
                row_in(
                    Context::Dialog,
                    &["up", "k"],
                    Action::OptionPrev,
                    "previous option (resume offer: up)",
                ),
                row_in(
                    Context::Dialog,
                    &["down", "j"],
                    Action::OptionNext,
                    "next option (resume offer: down)",
                ),
                row_in(
                    Context::Dialog,
                    &["enter"],
                    Action::Confirm,
                    "press focused button",
                ),
                row_in(
                    Context::Dialog,
                    &["esc"],
                    Action::Cancel,
                    "cancel, nothing done",
                ),
                row_in(
                    Context::Dialog,
                    &["ctrl-c"],
                    Action::Quit,
                    "quit, restore terminal",
                ),
                row_in(
                    Context::Rollback,
                    &["y"],
                    Action::DecideContinue,
                    "yes: do this step",
                ),
                row_in(
                    Context::Rollback,
                    &["o"],
                    Action::DecideSkip,
                    "evict: leave workers be",
                ),
                row_in(
                    Context::Rollback,
                    &["a"],
                    Action::DecideAbort,
                    "abort, report state",
                ),
                row_in(
                    Context::Rollback,
                    &["1"],
                    Action::DecideReplay,
                    "DL: replay to old version",
                ),
                row_in(
                    Context::Rollback,
                    &["2"],
                    Action::DecideKeep,
                    "DL: keep where they are",
                ),
                row_in(
                    Context::Rollback,
                    &["3"],
                    Action::DecideExport,
                    "DL: export to a file",
                ),
                row_in(
                    Context::Drill,
                    &["w"],
                    Action::WritePostmortem,
                    "write post-mortem draft",
                ),
            ],
        }
    }
}

/// Normalise a key name from config (`Ctrl+C` → `ctrl-c`, `Enter` → `enter`; single characters
/// keep their case so `G` ≠ `g`).
pub fn normalize(key: &str) -> Result<String, crate::model::Invalid> {
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
        )
        .into());
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
                )
                .into());
            }
        }
    }
    out.push_str(&base);
    Ok(out)
}

impl Keymap {
    /// The default table with `[keymap]` overrides applied (action name → keys).
    pub fn with_overrides(
        overrides: &BTreeMap<String, Vec<String>>,
    ) -> Result<Keymap, crate::model::Invalid> {
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
            let Some(context) = km
                .bindings
                .iter()
                .find(|b| b.action == action)
                .map(|b| b.context)
            else {
                continue;
            };
            // A key moves to its new action: take it away from every other row of its context.
            for b in km.bindings.iter_mut().filter(|b| b.context == context) {
                b.keys.retain(|k| !keys.contains(k));
            }
            if let Some(b) = km.bindings.iter_mut().find(|b| b.action == action) {
                b.keys = keys;
            }
        }
        Ok(km)
    }

    /// The action bound to a key in the global context, if any.
    pub fn lookup(&self, key: &str) -> Option<&Action> {
        self.lookup_in(&[Context::Global], key)
    }

    /// The action bound to a key in the first of `contexts` that binds it.
    pub fn lookup_in(&self, contexts: &[Context], key: &str) -> Option<&Action> {
        contexts.iter().find_map(|c| {
            self.bindings
                .iter()
                .find(|b| b.context == *c && b.keys.iter().any(|k| k == key))
                .map(|b| &b.action)
        })
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
                assert!(
                    seen.insert((b.context, k.clone())),
                    "key {k} bound twice in {:?}",
                    b.context
                );
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

    #[test]
    fn contexts_keep_the_dialog_keys_apart() {
        let km = Keymap::default();
        // A dialog's own keys apply only there; a decision's letters never shadow a global key
        // (issue 17: `s` was both sort and Skip, `k` both up and Keep).
        assert_eq!(km.lookup("k"), Some(&Action::Up));
        let decision = [Context::Rollback, Context::Dialog];
        assert_eq!(km.lookup_in(&decision, "k"), Some(&Action::OptionPrev));
        assert_eq!(km.lookup_in(&decision, "2"), Some(&Action::DecideKeep));
        for b in km
            .bindings
            .iter()
            .filter(|b| b.context == Context::Rollback)
        {
            for k in &b.keys {
                assert_eq!(
                    km.lookup(k),
                    None,
                    "decision key `{k}` ({:?}) shadows a global key",
                    b.action
                );
            }
        }
        assert_eq!(
            km.lookup_in(&[Context::Dialog], "k"),
            Some(&Action::OptionPrev)
        );
        assert_eq!(km.lookup_in(&decision, "enter"), Some(&Action::Confirm));
        // In a dialog, `q` is nothing and ctrl-c still quits.
        assert_eq!(km.lookup_in(&[Context::Dialog], "q"), None);
        assert_eq!(
            km.lookup_in(&[Context::Dialog], "ctrl-c"),
            Some(&Action::Quit)
        );
        // An override steals a key only within its context.
        let o: BTreeMap<String, Vec<String>> = [(
            "confirm".to_string(),
            vec!["y".to_string(), "enter".to_string()],
        )]
        .into();
        let km = Keymap::with_overrides(&o).unwrap();
        assert_eq!(
            km.lookup_in(&[Context::Dialog], "y"),
            Some(&Action::Confirm)
        );
        assert_eq!(
            km.lookup("enter"),
            Some(&Action::OpenNamespace { ns: None })
        );
    }
}
