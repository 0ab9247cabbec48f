//! The gate panel's state: the presets, the confirmation of a change (the runner's dry-run plan,
//! the zero-consumer guard, the production typed namespace), the apply and its verified result,
//! and the confirmation of an unrouted replay.

use crate::app::protocol::Failed;
use std::collections::BTreeMap;

use super::confirm::{Accepts, Answer, Button, ConfirmDialog, Tone};
use super::{Ctx, Reply};
use crate::app::action::Action;
use crate::app::protocol::OpRequest;
use crate::app::state::Level;
use crate::model::gate::GateSplit;
use crate::model::snapshot::NamespaceSnapshot;
use crate::ops::gate::ApplyReport;
use crate::text::sanitize;

/// Gate presets: percent of traffic to the new version.
pub const GATE_PRESETS: [u32; 7] = [0, 1, 5, 10, 25, 50, 100];

/// The plan shown in the confirmation: what `ops::gate::apply` would do, from a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatePlan {
    /// The runner is planning (dry run).
    Computing,
    /// The dry run's steps (described) and warnings.
    Ready {
        /// Steps, in order (`bind v2 weight 10`).
        steps: Vec<String>,
        /// Warnings of the real run (zero-consumer override, zero-binding window, refusal).
        warnings: Vec<String>,
    },
    /// The dry run failed (the real run would too).
    Failed(String),
}

/// The gate panel's stage.
#[derive(Debug, Clone)]
pub enum GateStage {
    /// Choosing a preset.
    Choose,
    /// Confirming a target.
    Confirm {
        /// Target split.
        target: GateSplit,
        /// Versions that would gain traffic with 0 consumers (the guard).
        zero_consumers: Vec<String>,
        /// The dry-run plan.
        plan: GatePlan,
        /// Cancel / Apply (typed namespace on production); Apply runs the `GateApply`.
        dialog: ConfirmDialog<OpRequest>,
    },
    /// Applying.
    Applying {
        /// Target.
        target: GateSplit,
    },
    /// Done (verification result and ledger event) or failed.
    Result {
        /// Target.
        target: GateSplit,
        /// Outcome.
        result: Result<Box<ApplyReport>, Failed>,
    },
    /// Confirming a request to the namespace's running canary.
    ConfirmCanary {
        /// The question (terminal-safe).
        question: String,
        /// Cancel / the request; the request runs the `CanaryControl`.
        dialog: ConfirmDialog<OpRequest>,
    },
    /// Confirming a replay of the unrouted queue.
    ConfirmUnrouted {
        /// Messages in it.
        count: u64,
        /// Cancel / Replay; Replay runs the `ReplayUnrouted`.
        dialog: ConfirmDialog<OpRequest>,
    },
}

/// The gate panel.
#[derive(Debug, Clone)]
pub struct GatePanel {
    /// Namespace.
    pub ns: String,
    /// The old version (presets move traffic away from it).
    pub old: String,
    /// The new version.
    pub new: String,
    /// Selected preset row (0..=GATE_PRESETS.len(); the last is "all back to old").
    pub cursor: usize,
    /// Every version of the namespace, oldest first: `]` / `[` choose the pair the presets move
    /// traffic between (every older → newer pair).
    pub versions: Vec<String>,
    /// Stage.
    pub stage: GateStage,
}

/// The status line for a finished gate flip.
pub fn applied_message(ns: &str, result: &Result<Box<ApplyReport>, Failed>) -> (Level, String) {
    match result {
        Ok(r) if r.changed => (
            if r.verified {
                Level::Info
            } else {
                Level::Error
            },
            format!(
                "gate of {} is now {}{}",
                sanitize(ns),
                r.after.describe_shares(),
                if r.verified {
                    " (verified)"
                } else {
                    " — NOT VERIFIED"
                }
            ),
        ),
        Ok(_) => (Level::Info, "nothing to change".into()),
        Err(e) => (Level::Error, format!("gate flip failed: {e}")),
    }
}

impl GatePanel {
    /// The panel of `ns`, the cursor on "all back to old" — the one preset that never moves
    /// traffic towards the new version (issue 17: opening on the preset nearest the current
    /// split offered "25 % to v2" during a 20 % canary).
    pub fn open(ns: String, n: Option<&NamespaceSnapshot>) -> Self {
        let versions = super::versions_of(n);
        let old = versions.first().cloned().unwrap_or_else(|| "v1".into());
        let new = versions.last().cloned().unwrap_or_else(|| "v2".into());
        let cursor = GATE_PRESETS.len();
        GatePanel {
            ns,
            old,
            new,
            cursor,
            versions,
            stage: GateStage::Choose,
        }
    }

    /// Every (older, newer) pair of the namespace's versions, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let v = &self.versions;
        (0..v.len())
            .flat_map(|i| (i + 1..v.len()).map(move |j| (v[i].clone(), v[j].clone())))
            .collect()
    }

    /// `]` / `[`: the presets move traffic between the next / previous pair of versions.
    pub fn cycle_pair(&mut self, forward: bool) {
        let pairs = self.pairs();
        if pairs.len() < 2 {
            return;
        }
        let here = pairs
            .iter()
            .position(|(o, n)| *o == self.old && *n == self.new)
            .unwrap_or(0);
        let next = if forward {
            (here + 1) % pairs.len()
        } else {
            (here + pairs.len() - 1) % pairs.len()
        };
        (self.old, self.new) = pairs[next].clone();
        // The rows now move traffic between other versions: the cursor must not stay on a row
        // that sends a share to the new pair's newer version.
        self.cursor = GATE_PRESETS.len();
    }

    /// The target of a preset row.
    pub fn preset_target(&self, row: usize) -> GateSplit {
        match GATE_PRESETS.get(row) {
            Some(p) => GateSplit::from_pairs([(self.old.clone(), 100 - p), (self.new.clone(), *p)]),
            None => GateSplit::from_pairs([(self.old.clone(), 100)]),
        }
    }

    /// Labels of the preset rows.
    pub fn preset_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = GATE_PRESETS
            .iter()
            .map(|p| {
                format!(
                    "{p:>3}% to {}  ({}={} {}={})",
                    sanitize(&self.new),
                    sanitize(&self.old),
                    100 - p,
                    sanitize(&self.new),
                    p
                )
            })
            .collect();
        v.push(format!("all back to old  ({}=100)", sanitize(&self.old)));
        v
    }

    /// The open dialog, if any.
    pub fn dialog(&self) -> Option<&ConfirmDialog<OpRequest>> {
        match &self.stage {
            GateStage::Confirm { dialog, .. }
            | GateStage::ConfirmUnrouted { dialog, .. }
            | GateStage::ConfirmCanary { dialog, .. } => Some(dialog),
            _ => None,
        }
    }

    /// The open dialog, if any (for text entry).
    pub fn dialog_mut(&mut self) -> Option<&mut ConfirmDialog<OpRequest>> {
        match &mut self.stage {
            GateStage::Confirm { dialog, .. }
            | GateStage::ConfirmUnrouted { dialog, .. }
            | GateStage::ConfirmCanary { dialog, .. } => Some(dialog),
            _ => None,
        }
    }

    /// An action on the panel (no dialog open); `None` = not the panel's.
    pub fn on_action(&mut self, action: &Action, ctx: &Ctx) -> Option<Reply> {
        let rows = GATE_PRESETS.len() + 1;
        match action {
            Action::Up => self.cursor = self.cursor.saturating_sub(1),
            Action::Down => self.cursor = (self.cursor + 1).min(rows - 1),
            Action::Top => self.cursor = 0,
            Action::Bottom => self.cursor = rows - 1,
            Action::NextPage | Action::PrevPage
                if matches!(self.stage, GateStage::Choose | GateStage::Result { .. }) =>
            {
                self.cycle_pair(*action == Action::NextPage);
            }
            Action::OpenNamespace { ns: None } => {
                if matches!(self.stage, GateStage::Choose | GateStage::Result { .. }) {
                    return Some(self.review(ctx));
                }
            }
            Action::Replay => {
                if let Some(refusal) =
                    ctx.refuse_mutation("replay", " (nothing moved)", super::REPLAY_RUNNING)
                {
                    return Some(refusal);
                }
                let unrouted = match ctx.ns.map(|n| n.unrouted_depth) {
                    Some(Some(0)) => {
                        return Some(Reply::say(
                            Level::Info,
                            "the unrouted queue is empty: nothing to replay",
                        ));
                    }
                    Some(Some(n)) => n,
                    // Unknown is not empty: say so rather than offer a count we do not have.
                    _ => {
                        return Some(Reply::say(
                            Level::Warn,
                            "the unrouted queue's depth is unknown right now (no figure from the broker yet); try again after the next refresh",
                        ));
                    }
                };
                self.stage = GateStage::ConfirmUnrouted {
                    count: unrouted,
                    dialog: ConfirmDialog::new(
                        "replay unrouted",
                        Tone::Warn,
                        vec![
                            Button::cancel("Cancel"),
                            Button::run(
                                format!("Replay {unrouted}"),
                                OpRequest::ReplayUnrouted {
                                    ns: self.ns.clone(),
                                },
                            ),
                        ],
                    ),
                };
            }
            _ => return None,
        }
        Some(Reply::default())
    }

    /// Enter on a preset: the confirmation, and the runner asked for the dry-run plan.
    fn review(&mut self, ctx: &Ctx) -> Reply {
        let target = self.preset_target(self.cursor);
        let current = ctx.ns.and_then(|n| n.gate.clone());
        if current.as_ref().is_some_and(|c| c.same_routing(&target)) {
            return Reply::say(
                Level::Info,
                format!(
                    "the gate is already {}: nothing to change",
                    target.describe_percent()
                ),
            );
        }
        let zero: BTreeMap<String, bool> = ctx
            .ns
            .map(|n| {
                n.versions
                    .iter()
                    .map(|v| (v.version.clone(), v.consumers == Some(0)))
                    .collect()
            })
            .unwrap_or_default();
        let before = current.unwrap_or_default();
        let zero_consumers: Vec<String> = target
            .bound()
            .filter(|(v, _)| {
                target.percent(v) > before.percent(v) + 1e-9
                    && zero.get(*v).copied().unwrap_or(false)
            })
            .map(|(v, _)| v.clone())
            .collect();
        let force_zero_consumers = !zero_consumers.is_empty();
        // `expect_before` is filled in from the dry run's read of the broker (on_preview).
        let apply = OpRequest::GateApply {
            ns: self.ns.clone(),
            target: target.clone(),
            force_zero_consumers,
            expect_before: None,
        };
        let label = if force_zero_consumers {
            "Override guard & apply"
        } else {
            "Apply"
        };
        let tone = if ctx.production || force_zero_consumers {
            Tone::Alert
        } else {
            Tone::Warn
        };
        let mut dialog = ConfirmDialog::new(
            "confirm gate change",
            tone,
            vec![Button::cancel("Cancel"), Button::run(label, apply)],
        )
        .hint("Tab/←/→ move · Enter choose · Esc cancel");
        if ctx.production {
            dialog = dialog.typed(
                "PRODUCTION: type the namespace name to confirm: ",
                self.ns.clone(),
                Accepts::Text,
                format!(
                    "production profile: type the namespace name `{}` to confirm",
                    sanitize(&self.ns)
                ),
            );
        }
        self.stage = GateStage::Confirm {
            target: target.clone(),
            zero_consumers,
            plan: GatePlan::Computing,
            dialog,
        };
        let mut reply = Reply::ask(OpRequest::GatePreview {
            ns: self.ns.clone(),
            target,
            force_zero_consumers,
        });
        if ctx.read_only {
            reply = reply.and_say(
                Level::Warn,
                "read-only profile: the plan is shown, applying will be refused",
            );
        }
        reply
    }

    /// A dialog action (from the keymap's dialog context).
    pub fn on_dialog(&mut self, action: &Action, ctx: &Ctx) -> Reply {
        match &mut self.stage {
            GateStage::Confirm { target, dialog, .. } => {
                // Read-only refuses before the typed name is even looked at.
                if *action == Action::Confirm && dialog.focused_action().is_some() && ctx.read_only
                {
                    return Reply::say(
                        Level::Error,
                        ctx.read_only_refusal("change the gate", " (nothing was changed)"),
                    );
                }
                match dialog.handle(action) {
                    Answer::Pending => Reply::default(),
                    Answer::Confirmed { action, .. } => {
                        let target = target.clone();
                        self.stage = GateStage::Applying { target };
                        Reply::ask(action)
                    }
                    Answer::Refused(why) => Reply::say(Level::Warn, why),
                    Answer::Cancelled => {
                        self.stage = GateStage::Choose;
                        Reply::say(Level::Info, "gate change cancelled; nothing changed")
                    }
                    Answer::Escaped => {
                        self.stage = GateStage::Choose;
                        Reply::default()
                    }
                }
            }
            GateStage::ConfirmCanary { dialog, .. } => match dialog.handle(action) {
                Answer::Pending | Answer::Refused(_) => Reply::default(),
                Answer::Confirmed { action, .. } => {
                    self.stage = GateStage::Choose;
                    if ctx.read_only {
                        Reply::say(Level::Error, ctx.read_only_refusal("control a canary", ""))
                    } else {
                        Reply::ask(action).and_say(Level::Info, "asking the canary…")
                    }
                }
                Answer::Cancelled | Answer::Escaped => {
                    self.stage = GateStage::Choose;
                    Reply::say(Level::Info, "canary request cancelled; nothing asked")
                }
            },
            GateStage::ConfirmUnrouted { dialog, .. } => match dialog.handle(action) {
                Answer::Pending | Answer::Refused(_) => Reply::default(),
                Answer::Confirmed { action, .. } => {
                    self.stage = GateStage::Choose;
                    if ctx.read_only {
                        Reply::say(Level::Error, ctx.read_only_refusal("replay", ""))
                    } else {
                        Reply::ask(action)
                    }
                }
                Answer::Cancelled | Answer::Escaped => {
                    self.stage = GateStage::Choose;
                    Reply::default()
                }
            },
            _ => Reply::default(),
        }
    }

    /// Open the confirmation of a request to canary `c` (explicit answers: Cancel, or the
    /// request named).
    pub fn confirm_canary(
        &mut self,
        c: &crate::ledger::canary::CanaryState,
        command: crate::ops::canary::ControlCommand,
    ) {
        use crate::ops::canary::ControlCommand;
        let (question, label) = super::canary::question(c, command);
        let tone = match command {
            ControlCommand::Abort | ControlCommand::Promote => Tone::Alert,
            _ => Tone::Warn,
        };
        self.stage = GateStage::ConfirmCanary {
            question,
            dialog: ConfirmDialog::new(
                format!("canary {}", command.as_str()),
                tone,
                vec![
                    Button::cancel("Cancel"),
                    Button::run(
                        label,
                        OpRequest::CanaryControl {
                            ns: c.namespace.clone(),
                            id: c.id.clone(),
                            command,
                        },
                    ),
                ],
            ),
        };
    }

    /// The runner's answer to the apply.
    pub fn on_applied(&mut self, ns: &str, result: Result<Box<ApplyReport>, Failed>) {
        if self.ns == ns
            && let GateStage::Applying { target } = &self.stage
        {
            self.stage = GateStage::Result {
                target: target.clone(),
                result,
            };
        }
    }

    /// The runner's dry-run plan, for the confirmation still showing that target.
    pub fn on_preview(
        &mut self,
        ns: &str,
        asked: &GateSplit,
        result: Result<Box<ApplyReport>, Failed>,
    ) {
        if self.ns != ns {
            return;
        }
        if let GateStage::Confirm {
            target,
            plan,
            dialog,
            ..
        } = &mut self.stage
            && target == asked
        {
            *plan = match result {
                Ok(r) => {
                    // Compare-and-set: Apply acts only on the split this plan was made from.
                    for b in &mut dialog.buttons {
                        if let Some(OpRequest::GateApply { expect_before, .. }) = &mut b.action {
                            *expect_before = Some(r.before.clone());
                        }
                    }
                    GatePlan::Ready {
                        steps: r.steps.iter().map(|s| s.describe()).collect(),
                        // The dialog's own ZERO-CONSUMER GUARD line says what applying would
                        // override; the plan's "overridden" would say it happened already.
                        warnings: r
                            .warnings
                            .iter()
                            .filter(|w| !w.starts_with(crate::ops::gate::GUARD_OVERRIDDEN))
                            .cloned()
                            .collect(),
                    }
                }
                Err(e) => GatePlan::Failed(e.text),
            };
        }
    }
}
