//! The one confirmation dialog of the console (gitui's `ConfirmPopup`): it holds the action to
//! run and answers with the confirmed action. Every "are you sure" of the operation views is one
//! of these — gate change (incl. "Override guard & apply" and the production typed namespace),
//! unrouted replay, dead-letter replay (scope and target pickers), purge (typed count), the offer
//! to resume a rollback, a rollback decision point, the drill's end dialog. Plain data: the keys
//! arrive as [`Action`]s from the keymap's `Dialog` context; only the typed confirmation reads raw
//! characters, so typing a name or a count can never trigger a binding. Drawn by
//! `ui::dialog::confirm_lines` (see `docs/architecture.md`, the console).

use super::super::action::Action;

/// What the border (modal dialogs) says about the stakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something changes: think.
    Warn,
    /// Something is removed, guarded or on production.
    Alert,
    /// Informational (a result to act on).
    Title,
}

/// Where the keyboard focus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// A list of options (index into [`ConfirmDialog::pickers`]); ↑/↓ change its choice.
    Picker(usize),
    /// A button (index into [`ConfirmDialog::buttons`]).
    Button(usize),
}

/// A button: `action` is what pressing it runs; `None` is the Cancel button.
#[derive(Debug, Clone, PartialEq)]
pub struct Button<A> {
    /// Label (already safe).
    pub label: String,
    /// The action; `None` = cancel.
    pub action: Option<A>,
    /// Drawn as a line of its own (a list of choices) instead of in the row of buttons.
    pub own_line: bool,
}

impl<A> Button<A> {
    /// The Cancel button.
    pub fn cancel(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            action: None,
            own_line: false,
        }
    }
    /// A button that runs `action`.
    pub fn run(label: impl Into<String>, action: A) -> Self {
        Self {
            label: label.into(),
            action: Some(action),
            own_line: false,
        }
    }
    /// A choice drawn on a line of its own.
    pub fn line(label: impl Into<String>, action: A) -> Self {
        Self {
            label: label.into(),
            action: Some(action),
            own_line: true,
        }
    }
}

/// One option of a picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickOption {
    /// The option's line (already safe).
    pub text: String,
    /// How the summary line names it.
    pub summary: String,
}

/// A list of options of which exactly one is chosen (radio buttons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    /// Heading (`which:`).
    pub heading: String,
    /// Options.
    pub options: Vec<PickOption>,
    /// The chosen option.
    pub chosen: usize,
}

/// Which characters the typed confirmation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// Any printable character and space (a namespace name).
    Text,
    /// ASCII digits only (a count).
    Digits,
}

/// The typed variant: confirming needs exactly `expected` typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    /// The prompt before the text (`type 7 to confirm: `).
    pub prompt: String,
    /// What must be typed.
    pub expected: String,
    /// What was typed so far.
    pub text: String,
    /// Which characters are taken.
    pub accepts: Accepts,
    /// Said when a confirm is pressed with the wrong text.
    pub refusal: String,
}

/// The dialog's answer to one action.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<A> {
    /// Nothing decided (focus moved, an option changed, the key means nothing here).
    Pending,
    /// A button with an action was pressed (and the typed text matched).
    Confirmed {
        /// The action.
        action: A,
        /// The chosen option of each picker.
        picks: Vec<usize>,
    },
    /// Confirm pressed, but the typed text does not match: the dialog stays; say this.
    Refused(String),
    /// The Cancel button.
    Cancelled,
    /// Esc.
    Escaped,
}

/// A confirmation dialog holding the actions its buttons run.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmDialog<A> {
    /// Title (modal dialogs).
    pub title: String,
    /// Border tone (modal dialogs).
    pub tone: Tone,
    /// Option lists, before the buttons.
    pub pickers: Vec<Picker>,
    /// Buttons, in focus order; `own_line` ones are drawn first, one per line.
    pub buttons: Vec<Button<A>>,
    /// The typed confirmation, if required.
    pub typed: Option<Typed>,
    /// The focus.
    pub focus: Focus,
    /// One muted line of key hints under the buttons.
    pub hint: Option<String>,
    /// Show `→ choice · choice` (the pickers' summaries) above the buttons.
    pub summary: bool,
    /// A blank line before the buttons.
    pub spacer: bool,
    /// ↑/↓ move the focus between buttons too (a vertical list of choices).
    pub vertical: bool,
}

impl<A: Clone> ConfirmDialog<A> {
    /// A dialog with these buttons; the focus starts on the first Cancel button (else the first).
    pub fn new(title: impl Into<String>, tone: Tone, buttons: Vec<Button<A>>) -> Self {
        let focus = buttons.iter().position(|b| b.action.is_none()).unwrap_or(0);
        Self {
            title: title.into(),
            tone,
            pickers: Vec::new(),
            buttons,
            typed: None,
            focus: Focus::Button(focus),
            hint: None,
            summary: false,
            spacer: true,
            vertical: false,
        }
    }
    /// Require `expected` to be typed before a confirm counts.
    pub fn typed(
        mut self,
        prompt: impl Into<String>,
        expected: impl Into<String>,
        accepts: Accepts,
        refusal: impl Into<String>,
    ) -> Self {
        self.typed = Some(Typed {
            prompt: prompt.into(),
            expected: expected.into(),
            text: String::new(),
            accepts,
            refusal: refusal.into(),
        });
        self
    }
    /// Add option lists (focus stays where it is).
    pub fn pickers(mut self, pickers: Vec<Picker>) -> Self {
        self.pickers = pickers;
        self
    }
    /// Set the hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Start with the focus on `focus`.
    pub fn focus(mut self, focus: Focus) -> Self {
        self.focus = focus;
        self
    }

    fn ring(&self) -> Vec<Focus> {
        (0..self.pickers.len())
            .map(Focus::Picker)
            .chain((0..self.buttons.len()).map(Focus::Button))
            .collect()
    }

    fn step_focus(&mut self, forward: bool) {
        let ring = self.ring();
        let n = ring.len();
        if n == 0 {
            return;
        }
        let i = ring.iter().position(|f| *f == self.focus).unwrap_or(0);
        let j = if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        };
        self.focus = ring[j];
    }

    /// The action of the focused button (`None` on Cancel or a picker).
    pub fn focused_action(&self) -> Option<&A> {
        match self.focus {
            Focus::Button(i) => self.buttons.get(i).and_then(|b| b.action.as_ref()),
            Focus::Picker(_) => None,
        }
    }

    /// The chosen option of each picker.
    pub fn picks(&self) -> Vec<usize> {
        self.pickers.iter().map(|p| p.chosen).collect()
    }

    fn confirm(&self, action: A) -> Answer<A> {
        if let Some(t) = &self.typed
            && t.text != t.expected
        {
            return Answer::Refused(t.refusal.clone());
        }
        Answer::Confirmed {
            action,
            picks: self.picks(),
        }
    }

    /// Handle one dialog action (from the keymap's `Dialog` context).
    pub fn handle(&mut self, action: &Action) -> Answer<A> {
        match action {
            Action::FocusNext => self.step_focus(true),
            Action::FocusPrev => self.step_focus(false),
            Action::OptionPrev | Action::OptionNext => {
                let down = *action == Action::OptionNext;
                match self.focus {
                    Focus::Picker(p) => {
                        if let Some(p) = self.pickers.get_mut(p) {
                            p.chosen = if down {
                                (p.chosen + 1).min(p.options.len().saturating_sub(1))
                            } else {
                                p.chosen.saturating_sub(1)
                            };
                        }
                    }
                    Focus::Button(_) if self.vertical => self.step_focus(down),
                    Focus::Button(_) => {}
                }
            }
            Action::Confirm => match self.focus {
                // Enter on a list takes its choice and moves on.
                Focus::Picker(_) => self.step_focus(true),
                Focus::Button(i) => {
                    return match self.buttons.get(i).map(|b| b.action.clone()) {
                        Some(Some(a)) => self.confirm(a),
                        _ => Answer::Cancelled,
                    };
                }
            },
            Action::Cancel => return Answer::Escaped,
            _ => {}
        }
        Answer::Pending
    }

    /// Press the button whose action satisfies `pred` (a letter shortcut), if there is one.
    pub fn press_where(&mut self, pred: impl Fn(&A) -> bool) -> Answer<A> {
        match self
            .buttons
            .iter()
            .find_map(|b| b.action.as_ref().filter(|a| pred(a)).cloned())
        {
            Some(a) => self.confirm(a),
            None => Answer::Pending,
        }
    }

    /// Text entry of the typed variant: a raw key (`7`, `space`, `backspace`). True when the
    /// dialog took it as text — it is then not looked up in the keymap.
    pub fn type_key(&mut self, key: &str) -> bool {
        let Some(t) = self.typed.as_mut() else {
            return false;
        };
        if key == "backspace" {
            t.text.pop();
            return true;
        }
        let c = match key {
            "space" => ' ',
            k if k.chars().count() == 1 => k.chars().next().unwrap_or(' '),
            _ => return false,
        };
        let takes = match t.accepts {
            Accepts::Text => !c.is_control(),
            Accepts::Digits => c.is_ascii_digit(),
        };
        if takes {
            t.text.push(c);
        }
        // A character the field does not take is swallowed, never a binding.
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn two(typed: bool) -> ConfirmDialog<&'static str> {
        let d = ConfirmDialog::new(
            "t",
            Tone::Warn,
            vec![Button::cancel("Cancel"), Button::run("Purge 7", "purge")],
        );
        if typed {
            d.typed("type 7: ", "7", Accepts::Digits, "type the count 7")
        } else {
            d
        }
    }

    #[test]
    fn focus_starts_on_cancel_and_cycles() {
        let mut d = two(false);
        assert_eq!(d.focus, Focus::Button(0));
        assert_eq!(d.handle(&Action::Confirm), Answer::Cancelled);
        d.handle(&Action::FocusNext);
        assert_eq!(d.focus, Focus::Button(1));
        d.handle(&Action::FocusNext);
        assert_eq!(d.focus, Focus::Button(0));
        d.handle(&Action::FocusPrev);
        assert_eq!(d.focus, Focus::Button(1));
        assert_eq!(
            d.handle(&Action::Confirm),
            Answer::Confirmed {
                action: "purge",
                picks: vec![]
            }
        );
        assert_eq!(d.handle(&Action::Cancel), Answer::Escaped);
    }

    #[test]
    fn pickers_are_in_the_focus_ring_and_take_up_down() {
        let opt = |t: &str| PickOption {
            text: t.into(),
            summary: t.into(),
        };
        let mut d = two(false).pickers(vec![
            Picker {
                heading: "which:".into(),
                options: vec![opt("a"), opt("b")],
                chosen: 0,
            },
            Picker {
                heading: "to:".into(),
                options: vec![opt("x"), opt("y"), opt("z")],
                chosen: 0,
            },
        ]);
        let order: Vec<Focus> = (0..4)
            .map(|_| {
                d.handle(&Action::FocusNext);
                d.focus
            })
            .collect();
        assert_eq!(
            order,
            vec![
                Focus::Button(1),
                Focus::Picker(0),
                Focus::Picker(1),
                Focus::Button(0)
            ]
        );
        d.focus = Focus::Picker(1);
        d.handle(&Action::OptionNext);
        d.handle(&Action::OptionNext);
        d.handle(&Action::OptionNext);
        assert_eq!(d.pickers[1].chosen, 2, "clamped at the last option");
        // Enter on a picker moves on; ↑/↓ on a button do nothing (not vertical).
        d.handle(&Action::Confirm);
        assert_eq!(d.focus, Focus::Button(0));
        d.handle(&Action::OptionNext);
        assert_eq!(d.focus, Focus::Button(0));
        d.focus = Focus::Button(1);
        assert_eq!(
            d.handle(&Action::Confirm),
            Answer::Confirmed {
                action: "purge",
                picks: vec![0, 2]
            }
        );
    }

    #[test]
    fn typed_variant_refuses_a_wrong_text_and_swallows_letters() {
        let mut d = two(true);
        d.handle(&Action::FocusNext);
        assert_eq!(
            d.handle(&Action::Confirm),
            Answer::Refused("type the count 7".into())
        );
        // Letters are taken as text (never bindings) but a count field ignores them.
        assert!(d.type_key("q"));
        assert!(d.type_key("6"));
        assert_eq!(d.typed.as_ref().unwrap().text, "6");
        assert!(matches!(d.handle(&Action::Confirm), Answer::Refused(_)));
        assert!(d.type_key("backspace"));
        assert!(d.type_key("7"));
        assert!(matches!(
            d.handle(&Action::Confirm),
            Answer::Confirmed {
                action: "purge",
                ..
            }
        ));
        // Named keys are not text: they go to the keymap.
        assert!(!d.type_key("tab"));
        assert!(!two(false).type_key("7"));
        // A name field takes letters and spaces.
        let mut n = two(false).typed("name: ", "a b", Accepts::Text, "type it");
        for k in ["a", "space", "b"] {
            n.type_key(k);
        }
        n.focus = Focus::Button(1);
        assert!(matches!(
            n.handle(&Action::Confirm),
            Answer::Confirmed { .. }
        ));
    }

    #[test]
    fn vertical_lists_and_letter_shortcuts() {
        let mut d = ConfirmDialog::new(
            "offer",
            Tone::Warn,
            vec![
                Button::line("Resume a", "a"),
                Button::run("Start new", "new"),
                Button::cancel("Cancel"),
            ],
        )
        .focus(Focus::Button(0));
        d.vertical = true;
        d.handle(&Action::OptionNext);
        assert_eq!(d.focus, Focus::Button(1));
        d.handle(&Action::OptionPrev);
        d.handle(&Action::OptionPrev);
        assert_eq!(d.focus, Focus::Button(2));
        assert_eq!(
            d.press_where(|a| *a == "new"),
            Answer::Confirmed {
                action: "new",
                picks: vec![]
            }
        );
        assert_eq!(d.press_where(|a| *a == "nope"), Answer::Pending);
    }
}
