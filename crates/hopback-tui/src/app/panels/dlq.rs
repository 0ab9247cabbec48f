//! The dead-letter browser's state: a page of the DLQ (browsed, nothing removed) grouped by
//! origin / reason / exception / age, the cursor and selection, the replay confirmation (scope
//! and target pickers) and the purge (export first, then the typed count).
//!
//! Positions only order one read's rows. What the panel hands on — the inspector, the export of
//! a message, a selection to replay — is each message's identity (`DeadLetterId`), which a
//! quorum queue's out-of-order requeue between two reads does not change.

use crate::app::protocol::Failed;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::confirm::{Accepts, Answer, Button, ConfirmDialog, PickOption, Picker, Tone};
use super::{Ctx, Open, Reply};
use crate::app::action::Action;
use crate::app::protocol::{OpRequest, ReplayScope, ReplayTarget};
use crate::app::state::Level;
use crate::model::deadletter::{
    Condition, DEFAULT_EXCEPTION_HEADER, DeadLetterId, Filter, Group, GroupBy, MessageView,
    Summary, group, summarize as summarize_dl,
};
use crate::model::snapshot::NamespaceSnapshot;
use crate::text::sanitize;

/// Dead letters read per page of the browser.
pub const DLQ_PAGE_SIZE: u64 = 200;

/// A row whose identity the read did not give (it cannot be opened, exported or selected).
const UNKNOWN_IDENTITY: &str =
    "this row's identity is unknown (no digest was read); refresh the page";

/// Groups first, then the messages of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqLevel {
    /// The list of groups.
    Groups,
    /// The messages of group `n`.
    Messages(usize),
}

/// A dialog of the dead-letter browser.
#[derive(Debug, Clone, PartialEq)]
pub enum DlqDialog {
    /// Confirm a replay: choose scope and target (the dialog's two pickers), then Replay.
    Replay {
        /// Scopes offered, in the order of the first picker's options.
        scopes: Vec<ReplayScope>,
        /// Targets offered, in the order of the second picker's options.
        targets: Vec<ReplayTarget>,
        /// which / to / Cancel / Replay.
        dialog: ConfirmDialog<()>,
    },
    /// Exporting and holding before a purge.
    PurgePreparing,
    /// Exported; type the count to purge.
    PurgeReady {
        /// Messages exported (and held).
        count: u64,
        /// The export file.
        path: PathBuf,
        /// Cancel / Purge N, the count typed; Purge runs the `PurgeCommit`.
        dialog: ConfirmDialog<OpRequest>,
    },
    /// Purging.
    Purging {
        /// Count.
        count: u64,
    },
    /// Purge finished or failed.
    PurgeResult(Result<(u64, PathBuf), Failed>),
}

/// The dead-letter browser.
#[derive(Debug, Clone, PartialEq)]
pub struct DlqPanel {
    /// Namespace.
    pub ns: String,
    /// The DLQ's name.
    pub queue: String,
    /// Page shown.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// DLQ depth at the last read.
    pub depth: Option<u64>,
    /// Reading?
    pub loading: bool,
    /// Last error.
    pub error: Option<String>,
    /// Summaries of the page (sanitised).
    pub items: Vec<Summary>,
    /// Group by.
    pub group_by: GroupBy,
    /// Groups of the page.
    pub groups: Vec<Group>,
    /// Identities by position in this read (what the inspector, the export and a selection
    /// replay are given).
    pub ids: BTreeMap<u64, DeadLetterId>,
    /// Groups or messages.
    pub level: DlqLevel,
    /// Cursor in the group list.
    pub group_cursor: usize,
    /// Cursor in the message list.
    pub msg_cursor: usize,
    /// Selected dead letters (kept across reads of the page: an identity stays itself).
    pub selected: BTreeSet<DeadLetterId>,
    /// A dialog, if open.
    pub dialog: Option<DlqDialog>,
    /// Versions of the namespace (replay targets).
    pub versions: Vec<String>,
}

impl DlqPanel {
    /// Take a page of messages.
    pub fn absorb(&mut self, page: u64, depth: Option<u64>, msgs: &[MessageView], now_s: i64) {
        self.page = page;
        self.depth = depth;
        self.loading = false;
        self.error = None;
        self.items = msgs
            .iter()
            .map(|m| summarize_dl(&self.ns, m, DEFAULT_EXCEPTION_HEADER, now_s))
            .collect();
        self.ids = msgs
            .iter()
            .filter_map(|m| m.identity().map(|id| (m.position, id)))
            .collect();
        // A selected message that this read no longer holds is not selected any more.
        let present: BTreeSet<&DeadLetterId> = self.ids.values().collect();
        self.selected.retain(|id| present.contains(id));
        self.regroup();
    }
    /// The identity of the row at `position` of this read.
    pub fn id_at(&self, position: u64) -> Option<&DeadLetterId> {
        self.ids.get(&position)
    }
    /// Is this row's message selected?
    pub fn is_selected(&self, position: u64) -> bool {
        self.id_at(position)
            .is_some_and(|id| self.selected.contains(id))
    }
    /// The identities of the rows at `positions` (one per row: identical copies each count).
    fn ids_of(&self, positions: impl Iterator<Item = u64>) -> Vec<DeadLetterId> {
        positions.filter_map(|p| self.id_at(p).cloned()).collect()
    }
    /// Recompute the groups (after a page or a group-by change).
    pub fn regroup(&mut self) {
        self.groups = group(&self.items, self.group_by);
        self.group_cursor = self.group_cursor.min(self.groups.len().saturating_sub(1));
        if let DlqLevel::Messages(g) = self.level
            && g >= self.groups.len()
        {
            self.level = DlqLevel::Groups;
        }
        self.msg_cursor = 0;
    }
    /// The messages of group `g`, in queue order.
    pub fn group_items(&self, g: usize) -> Vec<&Summary> {
        let Some(grp) = self.groups.get(g) else {
            return Vec::new();
        };
        self.items
            .iter()
            .filter(|s| grp.positions.binary_search(&s.position).is_ok())
            .collect()
    }
    /// The message under the cursor (messages level).
    pub fn cursor_item(&self) -> Option<&Summary> {
        match self.level {
            DlqLevel::Messages(g) => self.group_items(g).get(self.msg_cursor).copied(),
            DlqLevel::Groups => None,
        }
    }
    /// The focused group (cursor in the group list, or the open group).
    pub fn focused_group(&self) -> Option<&Group> {
        match self.level {
            DlqLevel::Groups => self.groups.get(self.group_cursor),
            DlqLevel::Messages(g) => self.groups.get(g),
        }
    }
    /// Does this page hold the whole DLQ? (Then a group's count is the DLQ's; otherwise it is
    /// the page's, and says so.)
    pub fn page_is_whole(&self) -> bool {
        self.page == 0 && self.depth.is_some_and(|d| d <= self.items.len() as u64)
    }
    /// The replay scopes on offer: (label, count text, scope).
    fn replay_scopes(&self) -> Vec<(String, String, ReplayScope)> {
        let mut out = Vec::new();
        if !self.selected.is_empty() {
            let ids = self.ids_of(
                self.items
                    .iter()
                    .map(|s| s.position)
                    .filter(|p| self.is_selected(*p)),
            );
            let note = format!("{} message(s)", ids.len());
            out.push(("selected".to_string(), note, ReplayScope::Ids(ids)));
        }
        if let Some(g) = self.focused_group() {
            let label = format!("group `{}`", g.key);
            let filter = match self.group_by {
                GroupBy::Origin if g.key != "no origin" => Some(Condition::Origin(g.key.clone())),
                GroupBy::Reason => Some(Condition::Reason(g.key.clone())),
                _ => None,
            };
            match filter {
                Some(c) => out.push((
                    label,
                    if self.page_is_whole() {
                        format!("{} in the DLQ", g.count)
                    } else {
                        format!(
                            "{} on this page of {}; the DLQ holds {} — every one of them that matches is replayed (the run counts them)",
                            g.count,
                            self.items.len(),
                            self.depth.map_or("?".into(), |d| d.to_string())
                        )
                    },
                    ReplayScope::Filter(Filter {
                        conditions: vec![c],
                    }),
                )),
                None => {
                    let ids = self.ids_of(g.positions.iter().copied());
                    out.push((
                        label,
                        format!("{} message(s) of this page", ids.len()),
                        ReplayScope::Ids(ids),
                    ));
                }
            }
        }
        out.push((
            "all".to_string(),
            format!(
                "{} message(s) in the DLQ",
                self.depth.map_or("?".into(), |d| d.to_string())
            ),
            ReplayScope::All,
        ));
        out
    }
}

impl DlqPanel {
    /// The browser of `ns` (the first page still to be read).
    pub fn open(ns: String, n: Option<&NamespaceSnapshot>) -> Self {
        let queue = n
            .map(|n| n.dlq.clone())
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| crate::topology::Namespace::convention(&ns).dlq);
        DlqPanel {
            ns,
            queue,
            page: 0,
            page_size: DLQ_PAGE_SIZE,
            depth: None,
            loading: true,
            error: None,
            items: Vec::new(),
            group_by: GroupBy::Origin,
            groups: Vec::new(),
            ids: BTreeMap::new(),
            level: DlqLevel::Groups,
            group_cursor: 0,
            msg_cursor: 0,
            selected: BTreeSet::new(),
            dialog: None,
            versions: super::versions_of(n),
        }
    }

    /// Read the current page again.
    pub fn reload(&mut self) -> OpRequest {
        self.loading = true;
        OpRequest::DlqLoad {
            ns: self.ns.clone(),
            page: self.page,
            page_size: self.page_size,
        }
    }

    /// Does a dialog have the keys?
    pub fn modal(&self) -> bool {
        matches!(
            self.dialog,
            Some(DlqDialog::Replay { .. } | DlqDialog::PurgeReady { .. })
        )
    }

    /// Text entry of the purge's typed count (see [`ConfirmDialog::type_key`]).
    pub fn type_key(&mut self, key: &str) -> bool {
        match &mut self.dialog {
            Some(DlqDialog::PurgeReady { dialog, .. }) => dialog.type_key(key),
            _ => false,
        }
    }

    fn replay_dialog(&self, ctx: &Ctx) -> DlqDialog {
        let offered = self.replay_scopes();
        let mut targets = vec![ReplayTarget::Origin];
        targets.extend(self.versions.iter().cloned().map(ReplayTarget::Version));
        targets.push(ReplayTarget::Entry);
        // Never default towards a failing version: the healthy version with the most gate
        // weight (then consumers), else the origin (with its warning).
        let healthy = |v: &str| {
            !ctx.failing.contains_key(v)
                && ctx
                    .ns
                    .and_then(|n| n.version(v))
                    .is_some_and(|x| x.exists && x.consumers.unwrap_or(0) > 0)
        };
        let default_to = targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t {
                ReplayTarget::Version(v) if healthy(v) => {
                    let x = ctx.ns.and_then(|n| n.version(v));
                    Some((
                        x.map_or(0, |x| x.weight),
                        x.and_then(|x| x.consumers).unwrap_or(0),
                        i,
                    ))
                }
                _ => None,
            })
            .max()
            .map_or(0, |(_, _, i)| i);
        let warning = |t: &ReplayTarget| -> Option<String> {
            match t {
                ReplayTarget::Version(v) => ctx
                    .failing
                    .get(v)
                    .map(|why| format!("⚠ {} is failing ({why})", sanitize(v))),
                ReplayTarget::Origin if !ctx.failing.is_empty() => Some(format!(
                    "⚠ a failing version gets its own dead letters back ({})",
                    ctx.failing
                        .iter()
                        .map(|(v, why)| format!("{}: {why}", sanitize(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => None,
            }
        };
        let which = Picker {
            heading: "which:".into(),
            options: offered
                .iter()
                .map(|(label, n, _)| PickOption {
                    text: format!("{} — {n}", sanitize(label)),
                    summary: format!("{label} · {n}"),
                })
                .collect(),
            chosen: 0,
        };
        let to = Picker {
            heading: "to:".into(),
            options: targets
                .iter()
                .map(|t| {
                    let text = match warning(t) {
                        Some(w) => format!("{} {w}", t.label()),
                        None => t.label(),
                    };
                    PickOption {
                        summary: text.clone(),
                        text,
                    }
                })
                .collect(),
            chosen: default_to,
        };
        let mut dialog = ConfirmDialog::new(
            "replay dead letters",
            Tone::Warn,
            vec![Button::cancel("Cancel"), Button::run("Replay", ())],
        )
        .pickers(vec![which, to])
        .hint("Tab moves focus (which → to → Cancel → Replay) · ↑/↓ change · Enter · Esc");
        dialog.summary = true;
        DlqDialog::Replay {
            scopes: offered.into_iter().map(|(_, _, s)| s).collect(),
            targets,
            dialog,
        }
    }

    /// An action on the browser (no dialog open); `None` = not the browser's.
    pub fn on_action(&mut self, action: &Action, ctx: &Ctx) -> Option<Reply> {
        let len = match self.level {
            DlqLevel::Groups => self.groups.len(),
            DlqLevel::Messages(g) => self.group_items(g).len(),
        };
        let last = len.saturating_sub(1);
        let cur = match self.level {
            DlqLevel::Groups => &mut self.group_cursor,
            DlqLevel::Messages(_) => &mut self.msg_cursor,
        };
        let reply = match action {
            Action::Up => {
                *cur = cur.saturating_sub(1);
                Reply::default()
            }
            Action::Down => {
                *cur = (*cur + 1).min(last);
                Reply::default()
            }
            Action::PageUp => {
                *cur = cur.saturating_sub(10);
                Reply::default()
            }
            Action::PageDown => {
                *cur = (*cur + 10).min(last);
                Reply::default()
            }
            Action::Top => {
                *cur = 0;
                Reply::default()
            }
            Action::Bottom => {
                *cur = last;
                Reply::default()
            }
            Action::Back => {
                if matches!(self.dialog, Some(DlqDialog::PurgeResult(_))) {
                    self.dialog = None;
                    return Some(Reply::default());
                }
                if let DlqLevel::Messages(g) = self.level {
                    self.level = DlqLevel::Groups;
                    self.group_cursor = g;
                    return Some(Reply::default());
                }
                return None;
            }
            Action::OpenNamespace { ns: None } => match self.level {
                DlqLevel::Groups => {
                    if !self.groups.is_empty() {
                        self.level = DlqLevel::Messages(self.group_cursor);
                        self.msg_cursor = 0;
                    }
                    Reply::default()
                }
                DlqLevel::Messages(_) => match self.cursor_item().map(|s| s.position) {
                    Some(position) => match self.id_at(position) {
                        Some(id) => Reply {
                            open: Some(Open::Inspector {
                                ns: self.ns.clone(),
                                id: id.clone(),
                                position,
                            }),
                            ..Default::default()
                        },
                        None => Reply::say(Level::Warn, UNKNOWN_IDENTITY),
                    },
                    None => Reply::default(),
                },
            },
            Action::SortNext => {
                self.group_by = match self.group_by {
                    GroupBy::Origin => GroupBy::Reason,
                    GroupBy::Reason => GroupBy::Exception,
                    GroupBy::Exception => GroupBy::Age,
                    GroupBy::Age => GroupBy::Origin,
                };
                self.level = DlqLevel::Groups;
                self.group_cursor = 0;
                self.regroup();
                Reply::say(
                    Level::Info,
                    format!("grouped by {:?}", self.group_by).to_lowercase(),
                )
            }
            Action::Select => {
                self.select(last);
                Reply::default()
            }
            Action::NextPage | Action::PrevPage => {
                let next = if *action == Action::NextPage {
                    self.page + 1
                } else {
                    self.page.saturating_sub(1)
                };
                let max_page = self
                    .depth
                    .map(|x| x.saturating_sub(1) / self.page_size.max(1))
                    .unwrap_or(0);
                if next != self.page && next <= max_page {
                    self.loading = true;
                    self.selected.clear();
                    self.level = DlqLevel::Groups;
                    Reply::ask(OpRequest::DlqLoad {
                        ns: self.ns.clone(),
                        page: next,
                        page_size: self.page_size,
                    })
                } else {
                    Reply::say(Level::Info, "no more pages")
                }
            }
            Action::Refresh => Reply::ask(self.reload()),
            Action::Export => match self.cursor_item().map(|s| s.position) {
                Some(position) => match self.id_at(position) {
                    Some(id) => Reply::ask(OpRequest::DlqExport {
                        ns: self.ns.clone(),
                        id: id.clone(),
                        message: None,
                    }),
                    None => Reply::say(Level::Warn, UNKNOWN_IDENTITY),
                },
                None => Reply::say(Level::Info, "open a group and pick a message to export"),
            },
            Action::Replay => {
                if let Some(refusal) =
                    ctx.refuse_mutation("replay", " (nothing moved)", super::REPLAY_RUNNING)
                {
                    refusal
                } else if self.depth == Some(0) {
                    Reply::say(Level::Info, "the DLQ is empty: nothing to replay")
                } else {
                    self.dialog = Some(self.replay_dialog(ctx));
                    Reply::default()
                }
            }
            Action::Purge => {
                if let Some(refusal) = ctx.refuse_mutation(
                    "purge",
                    " (nothing removed)",
                    "wait for the running replay to end",
                ) {
                    refusal
                } else {
                    self.dialog = Some(DlqDialog::PurgePreparing);
                    Reply::ask(OpRequest::PurgePrepare {
                        ns: self.ns.clone(),
                    })
                }
            }
            _ => return None,
        };
        Some(reply)
    }

    /// Space: toggle the message under the cursor, or (on a group) all of its messages.
    fn select(&mut self, last: usize) {
        match self.cursor_item().map(|s| s.position) {
            Some(p) => {
                if let Some(id) = self.id_at(p).cloned()
                    && !self.selected.remove(&id)
                {
                    self.selected.insert(id);
                }
                self.msg_cursor = (self.msg_cursor + 1).min(last);
            }
            None => {
                if let Some(g) = self.groups.get(self.group_cursor) {
                    let ids = self.ids_of(g.positions.iter().copied());
                    let all = ids.iter().all(|id| self.selected.contains(id));
                    for id in ids {
                        if all {
                            self.selected.remove(&id);
                        } else {
                            self.selected.insert(id);
                        }
                    }
                }
            }
        }
    }

    /// A dialog action (from the keymap's dialog context).
    pub fn on_dialog(&mut self, action: &Action, ctx: &Ctx) -> Reply {
        let cancelled = "purge cancelled; every message is back in the DLQ";
        match &mut self.dialog {
            Some(DlqDialog::Replay {
                scopes,
                targets,
                dialog,
            }) => match dialog.handle(action) {
                Answer::Pending | Answer::Refused(_) => Reply::default(),
                Answer::Confirmed { picks, .. } => {
                    let chosen = (
                        picks.first().and_then(|i| scopes.get(*i)).cloned(),
                        picks.get(1).and_then(|i| targets.get(*i)).cloned(),
                    );
                    self.dialog = None;
                    self.selected.clear();
                    if ctx.read_only {
                        return Reply::say(
                            Level::Error,
                            "refusing to replay: the profile is read-only (nothing moved)",
                        );
                    }
                    match chosen {
                        (Some(scope), Some(target)) => Reply::ask(OpRequest::DlqReplay {
                            ns: self.ns.clone(),
                            scope,
                            target,
                        }),
                        _ => Reply::default(),
                    }
                }
                Answer::Cancelled => {
                    self.dialog = None;
                    Reply::say(Level::Info, "replay cancelled; nothing moved")
                }
                Answer::Escaped => {
                    self.dialog = None;
                    Reply::default()
                }
            },
            Some(DlqDialog::PurgeReady { count, dialog, .. }) => match dialog.handle(action) {
                Answer::Pending => Reply::default(),
                Answer::Confirmed { action, .. } => {
                    self.dialog = Some(DlqDialog::Purging { count: *count });
                    Reply::ask(action)
                }
                Answer::Refused(why) => Reply::say(Level::Warn, why),
                Answer::Cancelled | Answer::Escaped => {
                    self.dialog = None;
                    Reply::ask(OpRequest::PurgeAbort).and_say(Level::Info, cancelled)
                }
            },
            _ => Reply::default(),
        }
    }

    /// A page arrived (or could not be read).
    pub fn on_page(
        &mut self,
        page: u64,
        depth: Option<u64>,
        result: Result<Vec<MessageView>, Failed>,
        now_s: i64,
    ) {
        match result {
            Ok(msgs) => self.absorb(page, depth, &msgs, now_s),
            Err(e) => {
                self.loading = false;
                self.depth = depth.or(self.depth);
                self.error = Some(e.text);
            }
        }
    }

    /// The DLQ was exported and is held: the typed-count confirmation (an empty DLQ is put back
    /// right away).
    pub fn on_purge_prepared(&mut self, r: Result<(u64, PathBuf), Failed>) -> Reply {
        match r {
            Ok((0, path)) => {
                self.dialog = None;
                Reply::ask(OpRequest::PurgeAbort).and_say(
                    Level::Info,
                    format!(
                        "the DLQ is empty; nothing to purge (empty export {})",
                        path.display()
                    ),
                )
            }
            Ok((count, path)) => {
                let dialog = ConfirmDialog::new(
                    "purge dead letters",
                    Tone::Alert,
                    vec![
                        Button::cancel("Cancel"),
                        Button::run(format!("Purge {count}"), OpRequest::PurgeCommit),
                    ],
                )
                .typed(
                    format!("type {count} to confirm: "),
                    count.to_string(),
                    Accepts::Digits,
                    format!("type the count {count} to purge (nothing removed yet)"),
                );
                self.dialog = Some(DlqDialog::PurgeReady {
                    count,
                    path,
                    dialog,
                });
                Reply::default()
            }
            Err(e) => {
                self.dialog = Some(DlqDialog::PurgeResult(Err(e)));
                Reply::default()
            }
        }
    }

    /// The purge ended: show the result and read the first page again.
    pub fn on_purge_done(&mut self, r: Result<(u64, PathBuf), Failed>) -> OpRequest {
        self.dialog = Some(DlqDialog::PurgeResult(r));
        self.selected.clear();
        self.loading = true;
        OpRequest::DlqLoad {
            ns: self.ns.clone(),
            page: 0,
            page_size: self.page_size,
        }
    }
}
