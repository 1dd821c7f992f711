//! The journal of a durable function, and replay against it (sans-I/O).
//!
//! Every effect of a durable function goes through its context and becomes a journal entry
//! at the next *position* (0, 1, 2, …): a step and its outcome, a clock reading, a random
//! number, a uuid, a sleep and when it ends, a consumed signal, a patch marker. After a
//! restart the function runs again from the start; each effect it asks for is matched
//! against the entry at the next position ([`Replayer::call`]): the same kind and name
//! replays the recorded outcome without running anything, anything else is a divergence
//! with a [`Diagnostic`] that names the position, what was logged, what the code did and
//! where. Outcomes are never compared: a replayed step returns what was recorded, and errors
//! are known by their kind (name) only, so a message that changed does not matter.
//!
//! [`FunctionRecord`] is what the fold keeps of a function's log: the journal, which sleeps
//! ended, the signals delivered and not yet consumed, a cancellation asked for, the outcome,
//! and the run generation. It lives with the fold's other durable-function code in
//! `kind/function.rs` (with [`DroppedJournal`] and [`JournalError`]) and is public here.
//!
//! **Invariant:** a journal is dense and append-only; an entry is recorded only while the
//! activation is live (active current), at the position after the last one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::FlowKind;
use crate::failure::Failure;
use crate::id::FlowId;
use crate::time::Timestamp;

pub use crate::kind::function::{DroppedJournal, FunctionRecord, JournalError};

/// What a step produced: its value, or its error (kind and message).
pub type StepOutcome = Result<serde_json::Value, Failure>;

/// One effect of a durable function, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalEntry {
    /// `ctx.step(name, …)` ran and produced `outcome`.
    Step {
        /// The step's name.
        name: String,
        /// What it produced.
        outcome: StepOutcome,
    },
    /// `ctx.now()` read the clock.
    Now {
        /// The time read.
        time: Timestamp,
    },
    /// `ctx.random()` drew a number.
    Random {
        /// The number.
        value: u64,
    },
    /// `ctx.uuid()` made an id.
    Uuid {
        /// The id, hyphenated.
        value: String,
    },
    /// `ctx.sleep(…)` or `ctx.sleep_until(…)` started a durable timer.
    Sleep {
        /// When it ends.
        until: Timestamp,
    },
    /// `ctx.signal(name)` consumed the oldest delivered signal of that name.
    Signal {
        /// The signal's name.
        name: String,
        /// Its value.
        value: serde_json::Value,
    },
    /// `ctx.patched(change)` was reached by code that has the change.
    Patched {
        /// The change's id.
        change: String,
    },
    /// `ctx.start_function(…)` or `ctx.start_task_graph(…)` started a child flow.
    ChildStarted {
        /// The child's kind.
        kind: FlowKind,
        /// Its definition.
        definition: String,
        /// The child flow.
        child: FlowId,
    },
    /// `ctx.join(child)` took the child's outcome.
    ChildJoined {
        /// The child flow.
        child: FlowId,
        /// How it ended.
        outcome: StepOutcome,
    },
    /// A combinator over concurrent branches (`ctx.all`, `ctx.race`) settled: which branch
    /// decided it. Replay follows the decision instead of racing again.
    Settled {
        /// `all` or `race`.
        combinator: String,
        /// `race`: the winner. `all`: the branch whose error ended it, or `None` when every
        /// branch succeeded.
        branch: Option<u32>,
    },
}

/// An effect the function's code asks for, to match against the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call<'a> {
    /// `ctx.step(name, …)`.
    Step {
        /// The step's name.
        name: &'a str,
    },
    /// `ctx.now()`.
    Now,
    /// `ctx.random()`.
    Random,
    /// `ctx.uuid()`.
    Uuid,
    /// `ctx.sleep(…)`.
    Sleep,
    /// `ctx.signal(name)`.
    Signal {
        /// The signal's name.
        name: &'a str,
    },
    /// `ctx.patched(change)`.
    Patched {
        /// The change's id.
        change: &'a str,
    },
    /// `ctx.start_function(name, …)` or `ctx.start_task_graph(name, …)`.
    ChildStarted {
        /// The child's definition.
        definition: &'a str,
    },
    /// `ctx.join(child)`.
    ChildJoined,
    /// `ctx.all(…)` or `ctx.race(…)`, settling.
    Settled {
        /// `all` or `race`.
        combinator: &'a str,
    },
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Step { name } => write!(f, "step {name:?}"),
            Self::Now => f.write_str("now"),
            Self::Random => f.write_str("random"),
            Self::Uuid => f.write_str("uuid"),
            Self::Sleep => f.write_str("sleep"),
            Self::Signal { name } => write!(f, "signal {name:?}"),
            Self::Patched { change } => write!(f, "patched {change:?}"),
            Self::Settled { combinator } => write!(f, "{combinator} over branches"),
            Self::ChildStarted { definition } => write!(f, "start child {definition:?}"),
            Self::ChildJoined => f.write_str("join a child"),
        }
    }
}

impl JournalEntry {
    /// The call this entry answers.
    #[must_use]
    pub fn call(&self) -> Call<'_> {
        match self {
            Self::Step { name, .. } => Call::Step { name },
            Self::Now { .. } => Call::Now,
            Self::Random { .. } => Call::Random,
            Self::Uuid { .. } => Call::Uuid,
            Self::Sleep { .. } => Call::Sleep,
            Self::Signal { name, .. } => Call::Signal { name },
            Self::Patched { change } => Call::Patched { change },
            Self::Settled { combinator, .. } => Call::Settled { combinator },
            Self::ChildStarted { definition, .. } => Call::ChildStarted { definition },
            Self::ChildJoined { .. } => Call::ChildJoined,
        }
    }
}

impl fmt::Display for JournalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Step {
                name,
                outcome: Err(failure),
            } => write!(f, "step {name:?} failing with {}", failure.kind),
            other => other.call().fmt(f),
        }
    }
}

/// Why a replay failed: where, what the journal says, what the code did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("journal position {position}: the journal recorded {logged}, but the code {attempted} (at {location})")]
pub struct Diagnostic {
    /// The journal position.
    pub position: u32,
    /// The entry recorded there (or "the end of the journal").
    pub logged: String,
    /// What the code did instead.
    pub attempted: String,
    /// The source location of the code's call (`file:line:column`), when known.
    pub location: String,
}

/// What the journal says about a call.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Replay<'j> {
    /// The journal recorded it: use this outcome, run nothing.
    Recorded {
        /// Its position.
        position: u32,
        /// The entry.
        entry: &'j JournalEntry,
    },
    /// The journal ends here: run it and record the entry at `position`.
    Live {
        /// The position of the entry to record.
        position: u32,
    },
    /// `patched` in a journal written before the change: the old code path (`false`), and
    /// no position is consumed.
    Unpatched,
    /// The code does not reproduce the journal.
    Diverged(Diagnostic),
}

/// Walks a journal as the function runs again from the start.
#[derive(Debug, Clone)]
pub struct Replayer<'j> {
    journal: &'j [JournalEntry],
    cursor: usize,
}

impl<'j> Replayer<'j> {
    /// A replay of `journal` from its first entry.
    #[must_use]
    pub fn new(journal: &'j [JournalEntry]) -> Self {
        Self { journal, cursor: 0 }
    }

    /// A replay that has already matched the first `position` entries.
    #[must_use]
    pub fn starting_at(journal: &'j [JournalEntry], position: u32) -> Self {
        Self {
            journal,
            cursor: (position as usize).min(journal.len()),
        }
    }

    /// Whether recorded entries remain (the function is still replaying).
    #[must_use]
    pub fn is_replaying(&self) -> bool {
        self.cursor < self.journal.len()
    }

    /// The next position.
    #[must_use]
    pub fn position(&self) -> u32 {
        u32::try_from(self.cursor).unwrap_or(u32::MAX)
    }

    /// Matches the code's next call against the journal.
    pub fn call(&mut self, call: Call<'_>, location: &str) -> Replay<'j> {
        let position = self.position();
        let replay = match_call(position, self.journal.get(self.cursor), call, location);
        if let Replay::Recorded { .. } = replay {
            self.cursor += 1;
        }
        replay
    }

    /// Checks that the function may return now: a return while recorded entries remain means
    /// the code took another path than the one recorded.
    pub fn check_return(&self, location: &str) -> Result<(), Diagnostic> {
        expect_end(
            self.position(),
            self.journal.get(self.cursor),
            "returned",
            location,
        )
    }

    /// Checks that the function may wait now: waiting (for something the journal does not
    /// record as settled) while recorded entries remain is a stall, the silent divergence
    /// async-flow cannot see.
    pub fn check_wait(&self, waiting_for: &str, location: &str) -> Result<(), Diagnostic> {
        expect_end(
            self.position(),
            self.journal.get(self.cursor),
            &format!("stopped to wait for {waiting_for}"),
            location,
        )
    }
}

/// Matches `call` against `next`, the entry recorded at `position` (`None` past the end of
/// the journal, or of a branch's part of it). The same rules as [`Replayer::call`], for a
/// caller that keeps its own cursor (one per concurrent branch).
pub fn match_call<'j>(
    position: u32,
    next: Option<&'j JournalEntry>,
    call: Call<'_>,
    location: &str,
) -> Replay<'j> {
    let Some(entry) = next else {
        return Replay::Live { position };
    };
    if let Call::Patched { .. } = call {
        if entry.call() != call {
            // Recorded before the change: the old path, and the entry is not this call's.
            return Replay::Unpatched;
        }
    }
    if entry.call() == call {
        return Replay::Recorded { position, entry };
    }
    Replay::Diverged(Diagnostic {
        position,
        logged: entry.to_string(),
        attempted: format!("asked for {call}"),
        location: location.to_owned(),
    })
}

/// Checks that nothing is recorded at `position` (`next` is `None`): the code `attempted`
/// something (returned, waited) where the journal goes on.
pub fn expect_end(
    position: u32,
    next: Option<&JournalEntry>,
    attempted: &str,
    location: &str,
) -> Result<(), Diagnostic> {
    match next {
        None => Ok(()),
        Some(entry) => Err(Diagnostic {
            position,
            logged: entry.to_string(),
            attempted: attempted.to_owned(),
            location: location.to_owned(),
        }),
    }
}
