//! The live ledger feed: every event anyone appends, newest last, and which of them are this
//! console's own. An event is ours when its id is one the runner reported for an operation this
//! console asked for (gate flip, move, purge, note) or it belongs to a rollback this console runs
//! (`params.rollback_id`) — never by time or by operator name, so a colleague logged in as the
//! same operator on the same host is still "someone else". The echo can arrive before the
//! runner's answer: the answer then re-marks it and takes back its warning.

use std::collections::VecDeque;

use crate::ledger::event::{Event, EventKind};
use crate::ledger::projection::summarize;
use crate::ops::rollback::rollback_id_of;
use crate::text::sanitize;

/// Live ledger feed entries kept.
pub const FEED_LEN: usize = 50;
/// Own event ids (and rollback ids) remembered.
pub const OWN_IDS_KEPT: usize = 1_000;

/// One line of the live ledger feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// When it arrived (unix ms).
    pub at_ms: i64,
    /// Namespace.
    pub ns: Option<String>,
    /// Text (safe).
    pub text: String,
    /// From another operator or console?
    pub other: bool,
    /// The event's id.
    pub id: String,
    /// The rollback it belongs to.
    pub rollback: Option<String>,
}

/// Something this console caused, as the runner reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Own {
    /// A ledger event id.
    Event(String),
    /// A rollback id (all of its events).
    Rollback(String),
}

/// The feed and this console's own ids.
#[derive(Debug, Clone, Default)]
pub struct FeedState {
    /// Newest last.
    pub items: VecDeque<FeedItem>,
    /// The feed is down (why).
    pub down: Option<String>,
    /// Ids of events this console caused.
    pub own_events: VecDeque<String>,
    /// Ids of rollbacks this console runs.
    pub own_rollbacks: VecDeque<String>,
    /// The event whose "someone else" warning is in the status line.
    pub warned: Option<String>,
}

fn remember(set: &mut VecDeque<String>, id: String) {
    if !set.contains(&id) {
        if set.len() >= OWN_IDS_KEPT {
            set.pop_front();
        }
        set.push_back(id);
    }
}

impl FeedState {
    /// Is `e` this console's own? (`drill_ns`: the namespace of the drill running in this
    /// console, whose events the drill appends as this operator on this host.)
    pub fn is_own(&self, e: &Event, drill_ns: Option<&str>, who: (&str, &str)) -> bool {
        let id = e.id.to_string();
        self.own_events.contains(&id)
            || rollback_id_of(e).is_some_and(|r| self.own_rollbacks.contains(&r))
            || (drill_ns.is_some()
                && e.namespace.as_deref() == drill_ns
                && e.operator == who.0
                && e.host == who.1)
    }

    /// Remember `own`; feed items it covers become ours. True when the status line shows a
    /// "someone else" warning about one of them (the caller takes it back).
    pub fn mark_own(&mut self, own: Own) -> bool {
        let covers = |i: &FeedItem| match &own {
            Own::Event(id) => i.id == *id,
            Own::Rollback(r) => i.rollback.as_ref() == Some(r),
        };
        let mut retract = false;
        for i in self.items.iter_mut().filter(|i| covers(i)) {
            i.other = false;
            if self.warned.as_ref() == Some(&i.id) {
                retract = true;
            }
        }
        if retract {
            self.warned = None;
        }
        match own {
            Own::Event(id) => remember(&mut self.own_events, id),
            Own::Rollback(r) => remember(&mut self.own_rollbacks, r),
        }
        retract
    }

    /// Add a warning line (a ledger record the feed could not read): shown in the feed like an
    /// event, never taken for one.
    pub fn warn(&mut self, what: &str, now_ms: i64) {
        self.items.push_back(FeedItem {
            at_ms: now_ms,
            ns: None,
            text: format!("⚠ {}", sanitize(what)),
            other: true,
            id: String::new(),
            rollback: None,
        });
        while self.items.len() > FEED_LEN {
            self.items.pop_front();
        }
    }

    /// Add a live event; returns the line to show when someone else did something: a warning
    /// (`true`, with ⚠) for what changes where traffic goes or starts an incident — a gate flip,
    /// a gate unlock, a rollback — and a plain notice (`false`) for routine work — a purge,
    /// replay or move, a note — which the feed records without alarming anyone.
    pub fn absorb(
        &mut self,
        e: &Event,
        now_ms: i64,
        drill_ns: Option<&str>,
        who: (&str, &str),
    ) -> Option<(bool, String)> {
        let other = !self.is_own(e, drill_ns, who);
        let text = summarize(e);
        let by = e.who();
        let warning = if other {
            let ns_txt = e
                .namespace
                .as_deref()
                .map(|n| sanitize(n).into_owned())
                .unwrap_or_default();
            match e.kind {
                EventKind::GateSet => Some((
                    true,
                    format!("⚠ {by} (elsewhere) just flipped the gate of {ns_txt}: {text}"),
                )),
                EventKind::GateUnlock => Some((
                    true,
                    format!("⚠ {by} (elsewhere) removed the gate lock of {ns_txt}: {text}"),
                )),
                EventKind::RollbackStarted => Some((
                    true,
                    format!("⚠ {by} (elsewhere) started a rollback of {ns_txt}"),
                )),
                EventKind::Purge | EventKind::Replay | EventKind::Move => {
                    Some((false, format!("{by} (elsewhere) on {ns_txt}: {text}")))
                }
                EventKind::Note => Some((false, format!("note by {by}: {text}"))),
                _ => None,
            }
        } else {
            None
        };
        self.items.push_back(FeedItem {
            at_ms: now_ms,
            ns: e.namespace.clone(),
            text: format!("{} {by}: {text}", e.ts.format("%H:%M:%S")),
            other,
            id: e.id.to_string(),
            rollback: rollback_id_of(e),
        });
        while self.items.len() > FEED_LEN {
            self.items.pop_front();
        }
        warning
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(kind: EventKind, n: u128, op: &str) -> Event {
        let mut e = Event::new(kind, Some("email"));
        e.id = uuid::Uuid::from_u128(n);
        e.operator = op.into();
        e.host = "here".into();
        e
    }

    #[test]
    fn own_echo_is_matched_by_id_not_by_name_or_time() {
        let mut f = FeedState::default();
        let me = ("alice", "here");
        // Our gate flip, reported before its echo arrives: ours, no warning.
        f.mark_own(Own::Event(uuid::Uuid::from_u128(1).to_string()));
        assert_eq!(
            f.absorb(&ev(EventKind::GateSet, 1, "alice"), 0, None, me),
            None
        );
        assert!(!f.items[0].other);
        // Same operator, same host, same namespace, same instant — but an id we never got:
        // someone else (another console of the same login).
        let w = f.absorb(&ev(EventKind::GateSet, 2, "alice"), 0, None, me);
        let (important, w) = w.unwrap();
        assert!(important && w.contains("(elsewhere) just flipped the gate"));
        assert!(f.items[1].other);
    }

    #[test]
    fn an_echo_before_the_answer_is_re_marked_and_its_warning_taken_back() {
        let mut f = FeedState::default();
        let me = ("alice", "here");
        let e = ev(EventKind::Purge, 7, "alice");
        assert!(f.absorb(&e, 0, None, me).is_some());
        f.warned = Some(e.id.to_string());
        assert!(
            f.mark_own(Own::Event(e.id.to_string())),
            "warning retracted"
        );
        assert!(!f.items[0].other);
        assert_eq!(f.warned, None);
        // Marking an id that is not on screen retracts nothing.
        assert!(!f.mark_own(Own::Event("nope".into())));
    }

    #[test]
    fn rollback_events_are_ours_by_rollback_id() {
        let mut f = FeedState::default();
        let me = ("alice", "here");
        let mut e = ev(EventKind::RollbackStarted, 9, "alice");
        e.params = serde_json::json!({"rollback_id": "1a2b3c4d"});
        assert!(f.absorb(&e, 0, None, me).is_some());
        f.warned = Some(e.id.to_string());
        assert!(f.mark_own(Own::Rollback("1a2b3c4d".into())));
        let mut step = ev(EventKind::RollbackStep, 10, "alice");
        step.params = serde_json::json!({"rollback_id": "1a2b3c4d"});
        assert_eq!(f.absorb(&step, 0, None, me), None);
        assert!(f.items.iter().all(|i| !i.other));
        // Someone else's replay is routine: a notice, no ⚠.
        let replay = ev(EventKind::Replay, 11, "bob");
        let (important, w) = f.absorb(&replay, 0, None, me).unwrap();
        assert!(!important && !w.contains('⚠'), "{w}");
    }
}
