//! A running (or finished) move — a replay of dead letters or of the unrouted queue — as the
//! gate panel and the dead-letter browser show it, and its pause / resume / stop keys.

use super::Reply;
use crate::app::action::Action;
use crate::app::protocol::OpRequest;
use crate::app::state::Level;
use crate::broker::mover::MoveProgress;

/// A running (or finished) move.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveJob {
    /// Namespace.
    pub ns: String,
    /// What it does.
    pub title: String,
    /// Latest progress.
    pub progress: Option<MoveProgress>,
    /// Current part, parts in total (a selection replays one message id per part).
    pub part: (usize, usize),
    /// Paused by the operator?
    pub paused: bool,
    /// Stop asked?
    pub stopping: bool,
    /// Final summary, once done.
    pub done: Option<String>,
    /// Did it fail?
    pub failed: bool,
}

impl MoveJob {
    /// A move that just started.
    pub fn started(ns: String, title: String, parts: usize) -> Self {
        MoveJob {
            ns,
            title,
            progress: None,
            part: (1, parts),
            paused: false,
            stopping: false,
            done: None,
            failed: false,
        }
    }

    /// Still running?
    pub fn running(&self) -> bool {
        self.done.is_none()
    }
}

/// `p` (pause / resume) and `x` (stop) on the running move, wherever they are pressed.
pub fn on_action(job: &mut Option<MoveJob>, action: &Action) -> Reply {
    let Some(j) = job.as_mut().filter(|j| j.running()) else {
        return Reply::say(Level::Info, "no replay is running");
    };
    match action {
        Action::PauseResume => {
            j.paused = !j.paused;
            Reply::ask(if j.paused {
                OpRequest::MovePause
            } else {
                OpRequest::MoveResume
            })
        }
        Action::StopJob => {
            j.stopping = true;
            Reply::ask(OpRequest::MoveStop).and_say(
                Level::Info,
                "stopping: outstanding confirms finish, the rest stays in the source",
            )
        }
        _ => Reply::default(),
    }
}
