//! A branch and its replay: how each effect of a branch is matched against the branch's
//! lane of the journal.
//!
//! **What it owns:** the [`Branch`] (its path, its lane, its cursor, its task), the busy
//! guard of a branch's live effect ([`Busy`]), and replay matching
//! ([`Activation::replay`]): a recorded entry is returned as recorded, a branch past its
//! lane goes live (unless it is closed, busy, or the activation was cancelled), anything
//! else is a divergence with a diagnostic.
//!
//! **What it must never do:** be reachable by user code, run an effect or record anything
//! (the context runs, the activation records), or let a branch go live while its journal
//! still holds entries for it or records it as finished: that is how replays stay exact.

use std::cell::Cell;
use std::panic::Location;
use std::rc::Rc;

use flowstate_core::{
    expect_end, match_call, Call, Diagnostic, EventBody, FlowId, JournalEntry, Replay,
};

use crate::activation::{Activation, Stop, Stopped};

/// A branch of the function: the function itself, or one started by `all` or `race`.
pub(crate) struct Branch {
    /// `""` for the function itself.
    pub(crate) path: String,
    /// Journal positions of the entries this branch recorded in earlier runs, in order.
    pub(crate) lane: Vec<u32>,
    /// This branch's entries matched or recorded so far in this run (its next index).
    pub(crate) cursor: Cell<u32>,
    /// The branch's own task: its effects come from it alone.
    pub(crate) task: Cell<Option<flowstate_rt::TaskId>>,
    /// Combinators it started so far (they name their branches).
    pub(crate) combinators: Cell<u32>,
    /// Whether it waits for a combinator's branches (then it is not stalled, whatever its
    /// lane still holds).
    pub(crate) in_combinator: Cell<bool>,
    /// Whether the journal records it as finished (a branch of a combinator whose decision
    /// is recorded): past its lane it may not go live.
    pub(crate) closed: Cell<bool>,
    /// Whether a live effect of it is under way: a second one at the same time (`join!` over
    /// effects, an effect inside a step's body) could not be journaled in a replayable order.
    busy: Cell<bool>,
}

/// Marks a branch's live effect as under way for as long as it lives.
pub(crate) struct Busy(Rc<Branch>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}

impl Branch {
    pub(crate) fn new(path: String, lane: Vec<u32>) -> Self {
        Self {
            path,
            lane,
            cursor: Cell::new(0),
            task: Cell::new(None),
            combinators: Cell::new(0),
            in_combinator: Cell::new(false),
            closed: Cell::new(false),
            busy: Cell::new(false),
        }
    }

    /// Whether recorded entries of this branch remain to be matched.
    pub(crate) fn replaying(&self) -> bool {
        (self.cursor.get() as usize) < self.lane.len()
    }

    /// The next recorded entry of this branch, with its journal position.
    fn next<'j>(&self, journal: &'j [JournalEntry]) -> Option<(u32, &'j JournalEntry)> {
        let position = *self.lane.get(self.cursor.get() as usize)?;
        journal
            .get(position as usize)
            .map(|entry| (position, entry))
    }

    /// Checks that the branch may stop here (return, or wait for something unrecorded):
    /// nothing of it remains recorded.
    pub(crate) fn check_end(
        &self,
        journal: &[JournalEntry],
        attempted: &str,
        location: &str,
    ) -> Result<(), Diagnostic> {
        let next = self.next(journal);
        let position = next.map_or(u32::MAX, |(position, _)| position);
        expect_end(position, next.map(|(_, entry)| entry), attempted, location)
    }

    /// The idempotency key of its next effect: the same on every run.
    pub(crate) fn key(&self, flow: FlowId) -> String {
        if self.path.is_empty() {
            format!("{flow}/{}", self.cursor.get())
        } else {
            format!("{flow}/{}/{}", self.path, self.cursor.get())
        }
    }

    /// The event that records `entry` at `position` for this branch.
    pub(crate) fn recorded(&self, position: u32, entry: JournalEntry) -> EventBody {
        if self.path.is_empty() {
            EventBody::JournalEntryRecorded { position, entry }
        } else {
            EventBody::BranchEntryRecorded {
                branch: self.path.clone(),
                position,
                entry,
            }
        }
    }
}

impl Activation {
    /// Matches `call` by `branch` against the branch's part of the journal. `Err(Stopped)`
    /// when the run must stop (recorded in `stop`).
    pub(crate) fn replay(
        &self,
        branch: &Rc<Branch>,
        call: Call<'_>,
        location: &At,
    ) -> Result<Replayed, Stopped> {
        if self.stop.borrow().is_some() {
            return Err(Stopped);
        }
        if flowstate_rt::current_task() != branch.task.get() {
            self.stop_with(Stop::Misuse(format!(
                "{call} at {location} was called from a task other than its branch's own; run concurrent effects with ctx.all or ctx.race, each branch through the context it is given (flowstate_rt::spawn, all and race cannot be journaled)"
            )));
            return Err(Stopped);
        }
        let next = branch.next(&self.journal);
        let position = next.map_or(u32::MAX, |(position, _)| position);
        // The location is written out only for a divergence.
        match match_call(position, next.map(|(_, entry)| entry), call, "") {
            Replay::Recorded { position, entry } => {
                branch.cursor.set(branch.cursor.get() + 1);
                Ok(Replayed::Recorded {
                    position,
                    entry: entry.clone(),
                })
            }
            Replay::Live { .. } if branch.closed.get() => {
                if let Call::Patched { .. } = call {
                    // The branch finished before the change: the old path.
                    return Ok(Replayed::Unpatched);
                }
                self.stop_with(Stop::Diverged(Diagnostic {
                    position,
                    logged: format!("the end of branch {:?}, which had finished", branch.path),
                    attempted: format!("asked for {call}"),
                    location: location.to_string(),
                }));
                Err(Stopped)
            }
            Replay::Live { .. } => self.go_live(branch, call, location),
            Replay::Unpatched => Ok(Replayed::Unpatched),
            Replay::Diverged(mut diagnostic) => {
                diagnostic.location = location.to_string();
                self.stop_with(Stop::Diverged(diagnostic));
                Err(Stopped)
            }
        }
    }

    /// `call` by `branch` is past the branch's lane: it runs live, with the branch busy,
    /// unless another effect of the branch is under way or the activation was cancelled.
    fn go_live(
        &self,
        branch: &Rc<Branch>,
        call: Call<'_>,
        location: &At,
    ) -> Result<Replayed, Stopped> {
        if branch.busy.get() {
            self.stop_with(Stop::Misuse(format!(
                "{call} at {location} was called while another effect of the same branch was under way (join! or select! over effects, or an effect inside a step's body); run concurrent effects with ctx.all or ctx.race"
            )));
            return Err(Stopped);
        }
        // A cancelled activation stops at its first effect past its journal.
        let cancelled = self.cancelled.borrow().clone();
        if let Some(reason) = cancelled {
            self.stop_with(Stop::Cancelled(reason));
            return Err(Stopped);
        }
        branch.busy.set(true);
        Ok(Replayed::Live(Busy(branch.clone())))
    }
}

pub(crate) enum Replayed {
    Recorded {
        position: u32,
        entry: JournalEntry,
    },
    /// Past the end of the branch's lane: run it and record it (the branch is busy until
    /// the guard goes).
    Live(Busy),
    Unpatched,
}

impl Replayed {
    /// The busy guard of a live effect (to keep until its entry is recorded).
    pub(crate) fn into_busy(self) -> Option<Busy> {
        match self {
            Self::Live(busy) => Some(busy),
            _ => None,
        }
    }
}

/// Where the function's code asked for an effect. Kept as the caller's location and written
/// out (`file:line:column`) only when a diagnostic needs it, not on every effect: a replay
/// asks for one per journal entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At(&'static Location<'static>);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.0.file(), self.0.line(), self.0.column())
    }
}

pub(crate) fn location(at: &'static Location<'static>) -> At {
    At(at)
}
