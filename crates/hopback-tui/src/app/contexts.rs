//! Contexts (k9s' word for them): the console holds one [`AppState`] per profile it has opened —
//! each with its own refresh, tap, ledger feed and operations runner, started by the loop in
//! [`super`] — and shows one of them, or all of them together in one overview
//! (`hopback --profile a --profile b`, `contexts = [...]`, `:ctx all`).
//!
//! Why one state per context rather than one state over several brokers: everything a state
//! holds — alerts, the gate panel, a replay, a rollback waiting at a decision, the ledger feed —
//! belongs to one broker, and an operation must finish on the broker it was started on whatever
//! the operator looks at meanwhile. A context's requests go to its own runner and its answers
//! come back to its own state, so a switch can never re-aim work already asked for.
//!
//! Plain data and pure functions, like [`AppState`]: the loop does the I/O (starting a context,
//! probing a profile for the picker) when a [`Step`] asks for it.

use super::action::Action;
use super::state::{AppState, Effect, Input, Level, RowRef, StatusMsg, View};
use crate::config::Config;
use crate::text::sanitize;

/// The name `:ctx` takes for "every open context, together".
pub const ALL: &str = "all";

/// One profile as the picker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextInfo {
    /// Profile name.
    pub name: String,
    /// Broker URL without credentials.
    pub url: String,
    /// RabbitMQ version, once known.
    pub version: Option<String>,
    /// Health in a few words (`connected`, `stale 12 s — reconnecting`, `reachable`, `not
    /// opened`, the error).
    pub health: String,
    /// Healthy (`None`: unknown yet).
    pub healthy: Option<bool>,
    /// Active alerts (`None`: the context is not open, so nobody evaluates them).
    pub alerts: Option<usize>,
    /// A production profile (red, typed confirmations).
    pub production: bool,
    /// A read-only profile.
    pub read_only: bool,
    /// Open in this console (its tasks run).
    pub open: bool,
    /// The context on screen.
    pub active: bool,
}

/// A profile of the config file, as far as the picker knows it without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileEntry {
    /// Profile name.
    pub name: String,
    /// Broker URL without credentials (or why the profile cannot be used).
    pub url: String,
    /// A production profile.
    pub production: bool,
    /// A read-only profile.
    pub read_only: bool,
    /// What a probe of its management API found: the version, or why not.
    pub probe: Option<Result<String, String>>,
    /// A probe is running.
    pub probing: bool,
}

impl ProfileEntry {
    /// The entry of a resolved profile.
    pub fn of(cfg: &Config) -> Self {
        Self {
            name: cfg.profile.name.clone(),
            url: cfg.profile.display_url(),
            production: cfg.profile.production,
            read_only: cfg.profile.read_only,
            probe: None,
            probing: false,
        }
    }
}

/// One open context: its config and its state.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The resolved config of its profile.
    pub cfg: Config,
    /// Its console state.
    pub state: AppState,
}

/// What the loop must do after a key or an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing beyond redrawing.
    None,
    /// Leave.
    Quit,
    /// Refresh this context now.
    Refresh(usize),
    /// Open the profile of this name as a new context and make it the active one.
    Open(String),
}

/// Every open context and which one is shown.
#[derive(Debug, Clone)]
pub struct Console {
    /// Open contexts, in the order they were opened.
    pub slots: Vec<Slot>,
    /// The one on screen (keys go to it).
    pub active: usize,
    /// The overview shows every open context together.
    pub merged: bool,
    /// The selected row of the merged overview.
    pub merged_sel: usize,
    /// Every profile of the config (the picker's rows).
    pub profiles: Vec<ProfileEntry>,
}

impl Console {
    /// A console with one open context; `profiles` lists every configured one.
    pub fn new(first: Slot, profiles: Vec<ProfileEntry>) -> Self {
        let mut c = Self {
            slots: vec![first],
            active: 0,
            merged: false,
            merged_sel: 0,
            profiles,
        };
        c.update_infos();
        c
    }

    /// Add an open context (the loop started its tasks); returns its index.
    pub fn add(&mut self, slot: Slot) -> usize {
        self.slots.push(slot);
        self.update_infos();
        self.slots.len() - 1
    }

    /// The state on screen.
    pub fn state(&self) -> &AppState {
        &self.slots[self.active.min(self.slots.len() - 1)].state
    }

    /// The state on screen, to change.
    pub fn state_mut(&mut self) -> &mut AppState {
        let i = self.active.min(self.slots.len() - 1);
        &mut self.slots[i].state
    }

    /// The index of an open context by profile name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.state.profile == name)
    }

    /// Is the merged overview on screen (several contexts, the overview, nothing typed or open)?
    pub fn in_merged_overview(&self) -> bool {
        let s = self.state();
        self.merged
            && self.slots.len() > 1
            && s.view() == &View::Overview
            && s.input.is_none()
            && !s.modal()
    }

    /// The merged overview's rows: each context's own rows (its filter and sort), in order.
    pub fn merged_rows(&self) -> Vec<(usize, RowRef)> {
        self.slots
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.state.rows().into_iter().map(move |r| (i, r)))
            .collect()
    }

    /// Make the selected merged row's context the active one, its row the selected one: every
    /// key that means "the selected namespace" (Enter, g, d, r) then acts in that context.
    fn follow_selection(&mut self) {
        let rows = self.merged_rows();
        if rows.is_empty() {
            self.merged_sel = 0;
            return;
        }
        self.merged_sel = self.merged_sel.min(rows.len() - 1);
        let (slot, r) = rows[self.merged_sel];
        self.active = slot;
        let state = &mut self.slots[slot].state;
        if let Some(i) = state.rows().iter().position(|x| *x == r) {
            state.selected = i;
        }
    }

    /// The overview's filter and sort are one in the merged overview: copy the active
    /// context's to the others.
    fn share_overview_settings(&mut self) {
        let (filter, sort, desc) = {
            let s = self.state();
            (s.filter.clone(), s.sort, s.sort_desc)
        };
        let mut changed = false;
        for slot in &mut self.slots {
            changed |= slot.state.filter != filter;
            slot.state.filter.clone_from(&filter);
            slot.state.sort = sort;
            slot.state.sort_desc = desc;
        }
        if changed {
            self.merged_sel = 0;
        }
        // While the filter is typed, the keys stay with the context that has the input line.
        if self.state().input.is_none() {
            self.follow_selection();
        }
    }

    /// A key (normalised name).
    pub fn handle_key(&mut self, key: &str) -> Step {
        if self.in_merged_overview()
            && let Some(a) = self.state().keymap.lookup(key).cloned()
            && let Some(step) = self.merged_move(&a)
        {
            return step;
        }
        // Typing the overview's filter counts too (the input line is open then).
        let merged = self.merged && self.slots.len() > 1 && self.state().view() == &View::Overview;
        let effect = self.state_mut().handle_key(key);
        if merged {
            self.share_overview_settings();
        }
        self.after(effect)
    }

    /// An action (mouse).
    pub fn apply(&mut self, a: Action) -> Step {
        if self.in_merged_overview()
            && let Some(step) = self.merged_move(&a)
        {
            return step;
        }
        let effect = self.state_mut().apply(a);
        self.after(effect)
    }

    /// Moves in the merged overview; `None`: not a move (the active context handles it).
    fn merged_move(&mut self, a: &Action) -> Option<Step> {
        let page = i64::from(self.state().layout.table_rows.max(5));
        let n = self.merged_rows().len() as i64;
        let delta = match a {
            Action::Up => -1,
            Action::Down => 1,
            Action::PageUp => -page,
            Action::PageDown => page,
            Action::Top => -n,
            Action::Bottom => n,
            Action::ClickRow { row } => {
                let l = self.state().layout;
                if *row < l.table_top || *row >= l.table_top + l.table_rows {
                    return Some(Step::None);
                }
                let idx = l.table_offset + usize::from(row - l.table_top);
                if idx >= n as usize {
                    return Some(Step::None);
                }
                if idx == self.merged_sel {
                    self.follow_selection();
                    let e = self.state_mut().apply(Action::OpenNamespace { ns: None });
                    return Some(self.after(e));
                }
                self.merged_sel = idx;
                self.follow_selection();
                return Some(Step::None);
            }
            _ => return None,
        };
        if n > 0 {
            self.merged_sel = (self.merged_sel as i64 + delta).clamp(0, n - 1) as usize;
        }
        self.follow_selection();
        Some(Step::None)
    }

    fn after(&mut self, effect: Effect) -> Step {
        match effect {
            Effect::None => Step::None,
            Effect::Quit => Step::Quit,
            Effect::Refresh => Step::Refresh(self.active),
            Effect::SwitchContext(name) => self.switch(&name),
        }
    }

    /// Show context `name` (`all`: every open context together); a profile not open yet is
    /// opened by the loop ([`Step::Open`]).
    pub fn switch(&mut self, name: &str) -> Step {
        if name == ALL {
            if self.slots.len() < 2 {
                self.state_mut().say(
                    Level::Info,
                    "one context is open: `:ctx NAME` opens another, then `:ctx all` shows them together",
                );
                return Step::None;
            }
            self.merged = true;
            for s in &mut self.slots {
                s.state.views.truncate(1);
            }
            self.share_overview_settings();
            self.update_infos();
            return Step::None;
        }
        match self.index_of(name) {
            Some(i) => {
                self.active = i;
                self.merged = false;
                self.update_infos();
                let s = self.state_mut();
                if s.view() == &View::Contexts {
                    s.views.pop();
                }
                let (profile, broker) = (s.profile.clone(), s.broker_label());
                s.say(
                    Level::Info,
                    format!(
                        "context {} · {} — operations started elsewhere finish on their own broker",
                        sanitize(&profile),
                        sanitize(&broker)
                    ),
                );
                Step::None
            }
            None => Step::Open(name.to_string()),
        }
    }

    /// A context's background message; true when anything visible changed. A status message
    /// of a context not on screen (an operation it started finished) is shown on screen too,
    /// prefixed with its context.
    pub fn handle_msg(&mut self, slot: usize, msg: super::state::Msg) -> bool {
        let Some(s) = self.slots.get_mut(slot) else {
            return false;
        };
        let before = s.state.message.clone();
        let changed = s.state.handle_msg(msg);
        let after = s.state.message.clone();
        if slot != self.active
            && after != before
            && let Some(m) = after
        {
            let name = sanitize(&self.slots[slot].state.profile).into_owned();
            self.state_mut().message = Some(StatusMsg {
                text: format!("[{name}] {}", m.text),
                ..m
            });
            return true;
        }
        changed && (slot == self.active || self.merged || self.state().view() == &View::Contexts)
    }

    /// Refresh the picker's rows in the state on screen (profiles, live health of the open
    /// ones, probes of the others).
    pub fn update_infos(&mut self) {
        let mut infos: Vec<ContextInfo> = Vec::new();
        let mut names: Vec<String> = self.profiles.iter().map(|p| p.name.clone()).collect();
        for s in &self.slots {
            if !names.contains(&s.state.profile) {
                names.push(s.state.profile.clone());
            }
        }
        for name in names {
            let entry = self.profiles.iter().find(|p| p.name == name);
            let info = match self.index_of(&name) {
                Some(i) => {
                    let slot = &self.slots[i];
                    let st = &slot.state;
                    let live = st.conn.is_live() && !st.is_stale();
                    ContextInfo {
                        name: name.clone(),
                        url: slot.cfg.profile.display_url(),
                        version: st.snapshot.as_ref().and_then(|s| s.server_version.clone()),
                        health: if st.paused() {
                            "paused".to_string()
                        } else {
                            st.conn_label()
                        },
                        healthy: Some(live),
                        alerts: Some(st.alerts.active.len()),
                        production: st.production,
                        read_only: st.read_only,
                        open: true,
                        active: i == self.active && !self.merged,
                    }
                }
                None => {
                    let (version, health, healthy) = match entry.and_then(|e| e.probe.clone()) {
                        Some(Ok(v)) => (Some(v), "reachable · not opened".to_string(), Some(true)),
                        Some(Err(e)) => (None, e, Some(false)),
                        None if entry.is_some_and(|e| e.probing) => {
                            (None, "probing…".to_string(), None)
                        }
                        None => (None, "not opened".to_string(), None),
                    };
                    ContextInfo {
                        name: name.clone(),
                        url: entry.map(|e| e.url.clone()).unwrap_or_default(),
                        version,
                        health,
                        healthy,
                        alerts: None,
                        production: entry.is_some_and(|e| e.production),
                        read_only: entry.is_some_and(|e| e.read_only),
                        open: false,
                        active: false,
                    }
                }
            };
            infos.push(info);
        }
        for s in &mut self.slots {
            s.state.contexts = infos.clone();
        }
    }

    /// Profiles the picker shows that nobody probed yet (marked as probing): the loop asks
    /// their management API for the version.
    pub fn take_probes(&mut self) -> Vec<String> {
        if self.state().view() != &View::Contexts {
            return Vec::new();
        }
        let open: Vec<String> = self.slots.iter().map(|s| s.state.profile.clone()).collect();
        let mut out = Vec::new();
        for p in &mut self.profiles {
            if p.probe.is_none() && !p.probing && !open.contains(&p.name) {
                p.probing = true;
                out.push(p.name.clone());
            }
        }
        if !out.is_empty() {
            self.update_infos();
        }
        out
    }

    /// A probe's answer: the version, or why the profile cannot be reached.
    pub fn on_probe(&mut self, name: &str, result: Result<String, String>) {
        if let Some(p) = self.profiles.iter_mut().find(|p| p.name == name) {
            p.probing = false;
            p.probe = Some(result.map_err(|e| sanitize(&e).into_owned()));
        }
        self.update_infos();
    }

    /// Something typed is on screen (the footer's input line belongs to the active context).
    pub fn typing(&self) -> bool {
        matches!(
            self.state().input,
            Some(Input::Filter(_) | Input::Command(_))
        )
    }
}
