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
//! and the run generation.
//!
//! **Invariant:** a journal is dense and append-only; an entry is recorded only while the
//! activation is live (active current), at the position after the last one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::FlowKind;
use crate::failure::Failure;
use crate::id::FlowId;
use crate::time::Timestamp;

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

/// Why a function's log does not fold (see [`crate::FoldError::Journal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An entry at another position than the next one.
    #[error("journal entry at position {found}, expected position {expected}")]
    OutOfOrder {
        /// The next position.
        expected: u32,
        /// The one recorded.
        found: u32,
    },
    /// The journal dropped before the activation was done, or twice.
    #[error("journal_dropped while the activation is {state}: only a done activation drops its journal, once")]
    DroppedEarly {
        /// The activation's state.
        state: &'static str,
    },
    /// A journal change while the activation was not live.
    #[error("a {event} event while the activation is {state}, not active current")]
    NotLive {
        /// The event.
        event: &'static str,
        /// The activation's state.
        state: &'static str,
    },
    /// The end of a sleep that is not a sleep of the journal, or ended already.
    #[error("position {position} is not an unfinished sleep")]
    NoSuchSleep {
        /// The position.
        position: u32,
    },
    /// A consumed signal that was not delivered (or not first in line).
    #[error("signal {name:?} consumed, but it is not the oldest delivered signal of that name")]
    SignalNotDelivered {
        /// The signal.
        name: String,
    },
    /// A signal delivered to a function that is done.
    #[error("signal {name:?} delivered to a function that is done")]
    DeliveredWhenDone {
        /// The signal.
        name: String,
    },
    /// A cancellation requested of a function that is done.
    #[error("cancellation requested of a function that is done")]
    CancelledWhenDone,
    /// A child's end delivered twice.
    #[error("the end of child {child} delivered twice")]
    ChildEndedTwice {
        /// The child.
        child: FlowId,
    },
    /// A second outcome.
    #[error("the function returned twice")]
    ReturnedTwice,
    /// A run generation that is not newer than the last one (a stale run).
    #[error("run {run} starts after run {last}: runs only go forward")]
    StaleRun {
        /// The run recorded.
        run: u64,
        /// The last run before it.
        last: u64,
    },
}

/// What the fold keeps of a durable function's log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The journal, by position.
    pub journal: Vec<JournalEntry>,
    /// Positions of sleeps that ended.
    pub sleeps_ended: BTreeSet<u32>,
    /// Signals delivered and not yet consumed, oldest first, by name.
    pub inbox: BTreeMap<String, VecDeque<serde_json::Value>>,
    /// The outcome, once the function returned.
    pub outcome: Option<StepOutcome>,
    /// The current run generation, raised by each run that starts (each wake, each new
    /// process). Runs are fenced by the log's sequence check: a run that another run
    /// overtook has its next append refused and re-reads; the generation says which run
    /// (and which incarnation) wrote what.
    pub run: u64,
    /// The incarnation (engine process) of each run, as `(run, incarnation)`.
    pub incarnations: Vec<(u64, String)>,
    /// The branch of each entry recorded by a concurrent branch, by position (entries of
    /// the function itself are not listed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branches: BTreeMap<u32, String>,
    /// The signals the sleeping function waits for (until it consumes one of the name, or
    /// runs again).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub awaiting: BTreeSet<String>,
    /// The sleeps (journal positions) the sleeping function waits for (until it runs again).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub awaiting_timers: BTreeSet<u32>,
    /// The children the sleeping function waits for (until it runs again).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub awaiting_children: BTreeSet<FlowId>,
    /// Children that ended, with their outcomes (delivered by them; joined or not).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children_ended: BTreeMap<FlowId, StepOutcome>,
    /// Why it was asked to stop, once someone cancelled it (the first request's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// Set when the activation, done, dropped its journal (the log was compacted to its
    /// outcome): what was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_dropped: Option<DroppedJournal>,
}

/// What a done activation dropped when its log was compacted to its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedJournal {
    /// Journal entries dropped.
    pub entries: u32,
    /// Events the log had before.
    pub events: u64,
}

impl FunctionRecord {
    /// Records `entry` at `position`, made by `branch` (`""`: the function itself; the
    /// activation is live).
    pub fn record(
        &mut self,
        position: u32,
        entry: &JournalEntry,
        branch: &str,
    ) -> Result<(), JournalError> {
        let expected = u32::try_from(self.journal.len()).unwrap_or(u32::MAX);
        if position != expected {
            return Err(JournalError::OutOfOrder {
                expected,
                found: position,
            });
        }
        if let JournalEntry::Signal { name, value } = entry {
            let next = self.inbox.get(name).and_then(VecDeque::front);
            if next != Some(value) {
                return Err(JournalError::SignalNotDelivered { name: name.clone() });
            }
            self.awaiting.remove(name);
            if let Some(queue) = self.inbox.get_mut(name) {
                queue.pop_front();
                if queue.is_empty() {
                    self.inbox.remove(name);
                }
            }
        }
        if !branch.is_empty() {
            self.branches.insert(position, branch.to_owned());
        }
        self.journal.push(entry.clone());
        Ok(())
    }

    /// Records that the sleeping function waits for the sleep at `position`.
    pub fn await_timer(&mut self, position: u32) -> Result<(), JournalError> {
        if !self.is_unfinished_sleep(position) {
            return Err(JournalError::NoSuchSleep { position });
        }
        self.awaiting_timers.insert(position);
        Ok(())
    }

    fn is_unfinished_sleep(&self, position: u32) -> bool {
        matches!(
            self.journal.get(position as usize),
            Some(JournalEntry::Sleep { .. })
        ) && !self.sleeps_ended.contains(&position)
    }

    /// The branch that recorded the entry at `position` (`""`: the function itself).
    #[must_use]
    pub fn branch_of(&self, position: u32) -> &str {
        self.branches.get(&position).map_or("", String::as_str)
    }

    /// Records that the sleep at `position` ended.
    pub fn end_sleep(&mut self, position: u32) -> Result<(), JournalError> {
        if !self.is_unfinished_sleep(position) {
            return Err(JournalError::NoSuchSleep { position });
        }
        self.sleeps_ended.insert(position);
        self.awaiting_timers.remove(&position);
        Ok(())
    }

    /// Queues a delivered signal.
    pub fn deliver(&mut self, name: &str, value: &serde_json::Value) -> Result<(), JournalError> {
        if self.outcome.is_some() {
            return Err(JournalError::DeliveredWhenDone {
                name: name.to_owned(),
            });
        }
        self.inbox
            .entry(name.to_owned())
            .or_default()
            .push_back(value.clone());
        Ok(())
    }

    /// Records a request to cancel (the first reason stays).
    pub fn request_cancel(&mut self, reason: &str) -> Result<(), JournalError> {
        if self.outcome.is_some() {
            return Err(JournalError::CancelledWhenDone);
        }
        self.cancel_requested
            .get_or_insert_with(|| reason.to_owned());
        Ok(())
    }

    /// Records that `child` ended with `outcome` (once per child).
    pub fn child_ended(
        &mut self,
        child: FlowId,
        outcome: &StepOutcome,
    ) -> Result<(), JournalError> {
        if self.children_ended.contains_key(&child) {
            return Err(JournalError::ChildEndedTwice { child });
        }
        self.children_ended.insert(child, outcome.clone());
        Ok(())
    }

    /// Records the outcome.
    pub fn returned(&mut self, outcome: &StepOutcome) -> Result<(), JournalError> {
        if self.outcome.is_some() {
            return Err(JournalError::ReturnedTwice);
        }
        self.outcome = Some(outcome.clone());
        Ok(())
    }

    /// Starts run `run` in `incarnation`.
    pub fn start_run(&mut self, run: u64, incarnation: &str) -> Result<(), JournalError> {
        if run <= self.run {
            return Err(JournalError::StaleRun {
                run,
                last: self.run,
            });
        }
        self.run = run;
        self.incarnations.push((run, incarnation.to_owned()));
        // What a sleep waited for is what the run that went to sleep waited for; this run
        // records its own when it sleeps.
        self.awaiting.clear();
        self.awaiting_timers.clear();
        self.awaiting_children.clear();
        Ok(())
    }

    /// Whether what a sleeping function waits for has happened at `now`: its last sleep is
    /// due, or a signal it waits for arrived. A wake for anything else (another signal, a
    /// stale timer) need not replay it.
    #[must_use]
    pub fn wake_is_due(&self, now: Timestamp) -> bool {
        if self.cancel_requested.is_some() {
            return true;
        }
        if self
            .awaiting_children
            .iter()
            .any(|child| self.children_ended.contains_key(child))
        {
            return true;
        }
        if self.awaiting.is_empty()
            && self.awaiting_timers.is_empty()
            && self.awaiting_children.is_empty()
        {
            // Logs written before waits were recorded: the last entry may be the sleep.
            return match self.journal.iter().enumerate().next_back() {
                Some((position, JournalEntry::Sleep { until }))
                    if !self
                        .sleeps_ended
                        .contains(&u32::try_from(position).unwrap_or(u32::MAX)) =>
                {
                    now >= *until
                }
                _ => true,
            };
        }
        let timer_due = self.awaiting_timers.iter().any(|position| {
            matches!(
                self.journal.get(*position as usize),
                Some(JournalEntry::Sleep { until }) if now >= *until
            ) && !self.sleeps_ended.contains(position)
        });
        timer_due
            || self
                .awaiting
                .iter()
                .any(|name| self.pending_signal(name).is_some())
    }

    /// The oldest delivered, unconsumed signal of `name`.
    #[must_use]
    pub fn pending_signal(&self, name: &str) -> Option<&serde_json::Value> {
        self.inbox.get(name).and_then(VecDeque::front)
    }
}
