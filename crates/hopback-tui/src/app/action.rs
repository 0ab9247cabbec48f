//! The console's vocabulary: every key, mouse gesture, `:` command and signal becomes one
//! [`Action`]. The keymap table ([`super::keymap`]) maps keys to actions and the `?` help view is
//! generated from that table, so the help can never lie about what a key does.
//!
//! Actions that concern a namespace carry `ns: Option<String>`: `None` means "the namespace under
//! the cursor" (what a key press means), `Some` is what a `:` command names explicitly.

/// One thing the operator (or a signal) asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the console (restores the terminal).
    Quit,
    /// Close the current view, input or message (Esc); on the overview, clear the filter.
    Back,
    /// Move the selection up one row.
    Up,
    /// Move the selection down one row.
    Down,
    /// Move the selection up one page.
    PageUp,
    /// Move the selection down one page.
    PageDown,
    /// Jump to the first row.
    Top,
    /// Jump to the last row.
    Bottom,
    /// Open the namespace view (Enter: the selected one; `:ns NAME`: that one).
    OpenNamespace {
        /// Namespace, or `None` for the selected one.
        ns: Option<String>,
    },
    /// Show the key and command reference (generated from the keymap).
    Help,
    /// List every active alert, worst first.
    OpenAlerts,
    /// Start typing a `/` filter over namespace and queue names.
    StartFilter,
    /// Start typing a `:` command (`:ns email`, `:gate`, `:dlq`, `:timeline`, `:q`).
    StartCommand,
    /// Sort the overview by the next column (name → error % → ready → dead letters/s).
    SortNext,
    /// Reverse the sort order.
    SortReverse,
    /// Refresh now instead of waiting for the next interval.
    Refresh,
    /// Open the gate panel of a namespace (weights, presets, flip with confirmation).
    OpenGate {
        /// Namespace, or `None` for the selected one.
        ns: Option<String>,
    },
    /// Open the dead-letter browser of a namespace.
    OpenDeadLetters {
        /// Namespace, or `None` for the selected one.
        ns: Option<String>,
    },
    /// Open the incident timeline (the ledger), optionally for one namespace.
    OpenTimeline {
        /// Namespace, or `None` for all.
        ns: Option<String>,
    },
    /// Start the guided rollback of a namespace (the decision point comes first).
    StartRollback {
        /// Namespace, or `None` for the selected one.
        ns: Option<String>,
    },
    /// Dead-letter browser: select / unselect the message (on a group: all of its messages).
    Select,
    /// Replay dead letters (selected / group / all) — or, in the gate panel, the unrouted queue.
    Replay,
    /// Purge the DLQ: export to JSONL first, then the count must be typed.
    Purge,
    /// Export the message under the cursor (or in the inspector) to a JSON file.
    Export,
    /// Inspector: show the body as auto / text / JSON / hex.
    BodyMode,
    /// Pause or resume the running replay.
    PauseResume,
    /// Stop the running replay (outstanding confirms finish; the rest stays in the source).
    StopJob,
    /// Dead-letter browser: next page.
    NextPage,
    /// Dead-letter browser: previous page.
    PrevPage,
    /// Start typing a `:note` (an operator note in the ledger).
    StartNote,
    /// Append an operator note to the ledger (`:note TEXT`).
    Note {
        /// The note.
        text: String,
    },
    /// Dialog: move the focus to the next list or button.
    FocusNext,
    /// Dialog: move the focus to the previous list or button.
    FocusPrev,
    /// Dialog: choose the previous option of the focused list (in a list of choices: move up).
    OptionPrev,
    /// Dialog: choose the next option of the focused list (in a list of choices: move down).
    OptionNext,
    /// Dialog: press the focused button (on a list: take its choice and move on).
    Confirm,
    /// Dialog: close it without doing anything (a rollback decision keeps waiting).
    Cancel,
    /// Rollback decision point: continue (or keep waiting).
    DecideContinue,
    /// Rollback decision point: skip this step.
    DecideSkip,
    /// Rollback decision point: abort here (the outcome says what state it leaves).
    DecideAbort,
    /// Rollback decision point on dead letters: replay them to the old version.
    DecideReplay,
    /// Rollback decision point on dead letters: keep them in the DLQ.
    DecideKeep,
    /// Rollback decision point on dead letters: export them.
    DecideExport,
    /// Drill score: write the post-mortem draft to `./postmortem-NS.md`.
    WritePostmortem,
    /// Sort the overview by one column (again: reverse it); the key is shown in the header.
    SortBy {
        /// The column.
        key: super::state::SortKey,
    },
    /// Pause the live view (refreshes are held, the header says paused) or resume it.
    PauseLive,
    /// Copy the id under the cursor (message id, event id) to the clipboard (OSC 52), and show
    /// it on the message line.
    Yank,
    /// The log view: hopback's own log file, newest at the bottom.
    OpenLog,
    /// The context picker: every profile with its broker, version and health.
    OpenContexts,
    /// Switch to a context (`:ctx NAME`, `:profile NAME`; `all`: the overview across contexts).
    SwitchContext {
        /// Profile name, or `all`.
        name: String,
    },
    /// The gate view's running canary: ask it to pause, resume, promote or abort (confirmed
    /// first).
    CanaryControl {
        /// What.
        command: crate::ops::canary::ControlCommand,
    },
    /// Select the row at this screen line (mouse click) — 0-based terminal row.
    ClickRow {
        /// Terminal row that was clicked.
        row: u16,
    },
}

impl Action {
    /// The name used in the config's `[keymap]` table (`quit = ["q", "ctrl-c"]`).
    pub fn config_name(&self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Back => "back",
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page_up",
            Action::PageDown => "page_down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::OpenNamespace { .. } => "open",
            Action::Help => "help",
            Action::OpenAlerts => "alerts",
            Action::StartFilter => "filter",
            Action::StartCommand => "command",
            Action::SortNext => "sort",
            Action::SortReverse => "sort_reverse",
            Action::Refresh => "refresh",
            Action::OpenGate { .. } => "gate",
            Action::OpenDeadLetters { .. } => "dlq",
            Action::OpenTimeline { .. } => "timeline",
            Action::StartRollback { .. } => "rollback",
            Action::Select => "select",
            Action::Replay => "replay",
            Action::Purge => "purge",
            Action::Export => "export",
            Action::BodyMode => "body_mode",
            Action::PauseResume => "pause",
            Action::StopJob => "stop",
            Action::NextPage => "next_page",
            Action::PrevPage => "prev_page",
            Action::StartNote => "note",
            Action::Note { .. } => "note_text",
            Action::FocusNext => "focus_next",
            Action::FocusPrev => "focus_prev",
            Action::OptionPrev => "option_prev",
            Action::OptionNext => "option_next",
            Action::Confirm => "confirm",
            Action::Cancel => "cancel",
            Action::DecideContinue => "decide_continue",
            Action::DecideSkip => "decide_skip",
            Action::DecideAbort => "decide_abort",
            Action::DecideReplay => "decide_replay",
            Action::DecideKeep => "decide_keep",
            Action::DecideExport => "decide_export",
            Action::WritePostmortem => "write_postmortem",
            Action::SortBy { key } => key.config_name(),
            Action::PauseLive => "pause_live",
            Action::Yank => "yank",
            Action::OpenLog => "log",
            Action::OpenContexts => "contexts",
            Action::SwitchContext { .. } => "context",
            Action::CanaryControl { command } => match command {
                crate::ops::canary::ControlCommand::Pause => "canary_pause",
                crate::ops::canary::ControlCommand::Resume => "canary_resume",
                crate::ops::canary::ControlCommand::Promote => "canary_promote",
                crate::ops::canary::ControlCommand::Abort => "canary_abort",
            },
            Action::ClickRow { .. } => "click",
        }
    }

    /// Every action a key can be bound to, by config name (`click` is mouse-only).
    pub fn bindable() -> Vec<Action> {
        vec![
            Action::CanaryControl {
                command: crate::ops::canary::ControlCommand::Pause,
            },
            Action::CanaryControl {
                command: crate::ops::canary::ControlCommand::Resume,
            },
            Action::CanaryControl {
                command: crate::ops::canary::ControlCommand::Promote,
            },
            Action::CanaryControl {
                command: crate::ops::canary::ControlCommand::Abort,
            },
            Action::Quit,
            Action::Back,
            Action::Up,
            Action::Down,
            Action::PageUp,
            Action::PageDown,
            Action::Top,
            Action::Bottom,
            Action::OpenNamespace { ns: None },
            Action::Help,
            Action::OpenAlerts,
            Action::StartFilter,
            Action::StartCommand,
            Action::SortNext,
            Action::SortReverse,
            Action::SortBy {
                key: super::state::SortKey::Name,
            },
            Action::SortBy {
                key: super::state::SortKey::ErrorRate,
            },
            Action::SortBy {
                key: super::state::SortKey::Ready,
            },
            Action::SortBy {
                key: super::state::SortKey::DeadLetterRate,
            },
            Action::PauseLive,
            Action::Yank,
            Action::OpenLog,
            Action::OpenContexts,
            Action::Refresh,
            Action::OpenGate { ns: None },
            Action::OpenDeadLetters { ns: None },
            Action::OpenTimeline { ns: None },
            Action::StartRollback { ns: None },
            Action::Select,
            Action::Replay,
            Action::Purge,
            Action::Export,
            Action::BodyMode,
            Action::PauseResume,
            Action::StopJob,
            Action::NextPage,
            Action::PrevPage,
            Action::StartNote,
            Action::FocusNext,
            Action::FocusPrev,
            Action::OptionPrev,
            Action::OptionNext,
            Action::Confirm,
            Action::Cancel,
            Action::DecideContinue,
            Action::DecideSkip,
            Action::DecideAbort,
            Action::DecideReplay,
            Action::DecideKeep,
            Action::DecideExport,
            Action::WritePostmortem,
        ]
    }

    /// The action with this config name.
    pub fn from_config_name(name: &str) -> Option<Action> {
        Action::bindable()
            .into_iter()
            .find(|a| a.config_name() == name)
    }
}

/// Parse a `:` command line into an action; the error says what is accepted.
pub fn parse_command(line: &str) -> Result<Action, crate::model::Invalid> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    if cmd == "note" {
        // The rest of the line, as typed.
        let text = line.trim_start().strip_prefix("note").unwrap_or("").trim();
        return Ok(Action::Note {
            text: text.to_string(),
        });
    }
    let arg = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(format!("too many words in `:{line}`").into());
    }
    Ok(match cmd {
        "q" | "q!" | "quit" | "exit" => Action::Quit,
        "ns" | "namespace" => match arg {
            Some(ns) => Action::OpenNamespace { ns: Some(ns) },
            None => return Err("`:ns` needs a namespace, e.g. `:ns email`".into()),
        },
        "gate" | "g" => Action::OpenGate { ns: arg },
        "dlq" | "dl" | "deadletters" => Action::OpenDeadLetters { ns: arg },
        "timeline" | "tl" | "ledger" => Action::OpenTimeline { ns: arg },
        "rollback" | "rb" => Action::StartRollback { ns: arg },
        "help" | "h" | "?" => Action::Help,
        "alerts" | "alert" | "!" => Action::OpenAlerts,
        "refresh" | "r" => Action::Refresh,
        "sort" => Action::SortNext,
        "log" | "logs" => Action::OpenLog,
        "pause" => Action::PauseLive,
        "ctx" | "context" | "contexts" | "profile" => match arg {
            Some(name) => Action::SwitchContext { name },
            None => Action::OpenContexts,
        },
        "" => Action::Back,
        other => {
            return Err(format!(
                "unknown command `:{}` (try :ns NAME, :ctx NAME, :gate, :dlq, :timeline, :log, :rollback, :note TEXT, :help, :q)",
                crate::text::sanitize(other)
            ).into());
        }
    })
}

/// The `:` commands, for the help view: (command, description).
pub const COMMANDS: &[(&str, &str)] = &[
    (":ns NAME", "open the namespace view of NAME"),
    (":gate [NS]", "gate panel of NS (default: selected)"),
    (":dlq [NS]", "dead-letter browser of NS"),
    (":timeline [NS]", "incident timeline (ledger)"),
    (":rollback [NS]", "guided rollback of NS"),
    (":ctx [NAME|all]", "switch context (:profile NAME too)"),
    (":log", "hopback's own log file"),
    (":note TEXT", "add an operator note to the ledger"),
    (":refresh", "refresh now"),
    (":alerts", "every active alert, worst first"),
    (":help", "this help"),
    (":q", "quit"),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("q").unwrap(), Action::Quit);
        assert_eq!(
            parse_command("ns email").unwrap(),
            Action::OpenNamespace {
                ns: Some("email".into())
            }
        );
        assert_eq!(
            parse_command("gate").unwrap(),
            Action::OpenGate { ns: None }
        );
        assert!(parse_command("ns").is_err());
        assert!(parse_command("bogus").is_err());
        assert!(parse_command("ns a b").is_err());
        assert_eq!(
            parse_command("ctx prod-eu").unwrap(),
            Action::SwitchContext {
                name: "prod-eu".into()
            }
        );
        assert_eq!(
            parse_command("profile b").unwrap(),
            Action::SwitchContext { name: "b".into() }
        );
        assert_eq!(parse_command("ctx").unwrap(), Action::OpenContexts);
        assert_eq!(parse_command("log").unwrap(), Action::OpenLog);
    }

    #[test]
    fn config_names_round_trip() {
        for a in Action::bindable() {
            assert_eq!(Action::from_config_name(a.config_name()), Some(a.clone()));
        }
    }
}
