//! The drill panel's state (console drill mode): the drill's latest status, its result and the
//! end dialog (write the post-mortem draft / close).

use crate::app::protocol::Failed;
use std::path::{Path, PathBuf};

use super::Reply;
use super::confirm::{Answer, Button, ConfirmDialog, Focus, Tone};
use crate::app::action::Action;
use crate::app::protocol::OpRequest;
use crate::drill::{DrillResult, DrillStatus};

use crate::model::drill::Phase;

/// What the end dialog runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillEnd {
    /// Write the post-mortem draft to `./postmortem-NS.md`.
    WritePostmortem,
}

/// What the start dialog runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillBegin {
    /// Create the namespace and the fleet; the clock starts.
    Start,
}

/// The drill panel (console drill mode).
#[derive(Debug, Clone, Default)]
pub struct DrillPanel {
    /// The first screen, until the operator presses Enter: what the drill is, Start / Quit.
    pub start: Option<ConfirmDialog<DrillBegin>>,
    /// Latest status.
    pub status: Option<DrillStatus>,
    /// The result, at the end.
    pub result: Option<DrillResult>,
    /// The drill failed.
    pub error: Option<String>,
    /// Where the post-mortem was written by the operator's request.
    pub written: Option<String>,
    /// The end dialog, until dismissed: Write the post-mortem (focused) / Close.
    pub end: Option<ConfirmDialog<DrillEnd>>,
}

impl DrillPanel {
    /// Is the drill over?
    pub fn over(&self) -> bool {
        self.result.is_some()
            || self.error.is_some()
            || self.status.as_ref().is_some_and(|s| s.phase == Phase::Done)
    }

    /// A console drill that waits for "press Enter to start" (nothing runs before it).
    pub fn waiting() -> Self {
        DrillPanel {
            start: Some(
                ConfirmDialog::new(
                    "incident drill",
                    Tone::Title,
                    vec![
                        Button::run("Start the drill", DrillBegin::Start),
                        Button::cancel("Quit"),
                    ],
                )
                .focus(Focus::Button(0))
                .hint("Enter starts · Tab moves · Esc quits (nothing was created)"),
            ),
            ..Default::default()
        }
    }

    /// Is a drill dialog (the start screen or the score) on screen?
    pub fn dialog_open(&self) -> bool {
        self.start.is_some() || (self.result.is_some() && self.end.is_some())
    }

    /// The drill ended: its result and the end dialog, or why it failed.
    pub fn on_done(&mut self, r: Result<Box<DrillResult>, Failed>) {
        match r {
            Ok(res) => {
                self.status = Some(res.status.clone());
                self.result = Some(*res);
                self.end = Some(
                    ConfirmDialog::new(
                        "drill score",
                        Tone::Title,
                        vec![
                            Button::run(
                                "Write the post-mortem to ./postmortem-….md (w)",
                                DrillEnd::WritePostmortem,
                            ),
                            Button::cancel("Close"),
                        ],
                    )
                    .focus(Focus::Button(0)),
                );
            }
            Err(e) => self.error = Some(crate::text::sanitize(&e).into_owned()),
        }
    }

    /// The post-mortem was written: the dialog closes.
    pub fn on_written(&mut self, p: &Path) {
        self.written = Some(p.display().to_string());
        self.end = None;
    }

    fn write(&self) -> Reply {
        let Some(r) = &self.result else {
            return Reply::default();
        };
        let name: String = r
            .status
            .namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Reply::ask(OpRequest::WritePostmortem {
            path: PathBuf::from(format!("postmortem-{name}.md")),
            text: r.postmortem.clone(),
        })
    }

    /// A dialog action (the keymap's `Drill` and `Dialog` contexts).
    pub fn on_dialog(&mut self, action: &Action) -> Reply {
        if let Some(d) = self.start.as_mut() {
            return match d.handle(action) {
                Answer::Confirmed { .. } => {
                    self.start = None;
                    Reply::ask(OpRequest::DrillStart)
                }
                Answer::Cancelled | Answer::Escaped => {
                    self.start = None;
                    Reply::ask(OpRequest::DrillQuit)
                }
                Answer::Pending | Answer::Refused(_) => Reply::default(),
            };
        }
        if *action == Action::WritePostmortem {
            return self.write();
        }
        let Some(d) = self.end.as_mut() else {
            return Reply::default();
        };
        match d.handle(action) {
            // The dialog stays until the file is written (the answer closes it).
            Answer::Confirmed { .. } => self.write(),
            Answer::Cancelled | Answer::Escaped => {
                self.end = None;
                Reply::default()
            }
            Answer::Pending | Answer::Refused(_) => Reply::default(),
        }
    }
}
