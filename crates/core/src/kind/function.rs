//! The durable-function kind: what the fold keeps of a function's log ([`FunctionRecord`]: the
//! journal, which sleeps ended, the signals delivered and not yet consumed, what a sleeping
//! function waits for, its children's ends, a cancellation asked for, the outcome, and the run
//! generation) and the durable-function arms of the fold.
//!
//! **What this module owns:** the rules every recorded function event must follow: the
//! activation machine's table, and the journal's ([`JournalError`]): a journal is dense and
//! append-only, an entry is recorded only while the activation is live (active current), at the
//! position after the last one; only a done activation drops its journal, once. Its public
//! items are public as `crate::journal::*`. The journal's entries and replay against them are
//! `crate::journal`'s.
//!
//! **What it must never do:** run or replay the function (that is `flowstate-durable`), read
//! the clock (times arrive as arguments), touch the parts of a flow record that belong to task
//! graphs or plans, or change anything when it refuses an event: each [`FunctionRecord`] method
//! either fails before it changes anything or applies the event completely, which keeps
//! `Folder::apply` atomic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::{advance, wrong_kind};
use crate::event::{Event, EventBody};
use crate::fold::{FlowRecord, FlowStatus, FoldError};
use crate::id::FlowId;
use crate::journal::{JournalEntry, StepOutcome};
use crate::machine::{ActivationState, Machine};
use crate::time::Timestamp;

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

// ---- The durable-function arms of the fold ---------------------------------------------------

/// Applies `event` to a durable function whose activation is in `state`. The fold has already
/// checked the envelope and handled `flow_created` and `child_of`; any other body that is not a
/// function event is of another kind of flow.
pub(crate) fn apply(
    record: &mut FlowRecord,
    state: ActivationState,
    event: &Event,
) -> Result<(), FoldError> {
    let seq = event.seq;
    match &event.body {
        EventBody::ActivationStateChanged { to, diagnostic } => {
            let mut next = state;
            advance(seq, &mut next, *to)?;
            record.status = FlowStatus::Function(next);
            record.diagnostic.clone_from(diagnostic);
            Ok(())
        }
        body if is_journal_event(body) => {
            let first_seq = record.first_seq;
            let function = record.function.get_or_insert_with(FunctionRecord::default);
            apply_journal(function, state, seq, first_seq, body)
        }
        _ => Err(wrong_kind(event, record.kind)),
    }
}

/// The events [`apply_journal`] applies: the journal, the inbox, the waits, the children, the
/// outcome, cancellation and the run generation.
fn is_journal_event(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::JournalEntryRecorded { .. }
            | EventBody::BranchEntryRecorded { .. }
            | EventBody::TimerAwaited { .. }
            | EventBody::SleepEnded { .. }
            | EventBody::SignalDelivered { .. }
            | EventBody::SignalAwaited { .. }
            | EventBody::FunctionReturned { .. }
            | EventBody::JournalDropped { .. }
            | EventBody::CancelRequested { .. }
            | EventBody::ChildEnded { .. }
            | EventBody::ChildAwaited { .. }
            | EventBody::RunStarted { .. }
    )
}

/// Applies one of the events [`is_journal_event`] names to the function's record, in a log
/// that starts at `first_seq` (1, or later once compacted).
fn apply_journal(
    function: &mut FunctionRecord,
    state: ActivationState,
    seq: u64,
    first_seq: u64,
    body: &EventBody,
) -> Result<(), FoldError> {
    if let EventBody::JournalDropped { events, .. } = body {
        // A compacted log starts after the events it dropped.
        if first_seq > 1 && *events != first_seq - 1 {
            return Err(FoldError::DroppedCountMismatch {
                seq,
                recorded: *events,
                dropped: first_seq - 1,
            });
        }
    }
    // Each `FunctionRecord` method either fails before it changes anything or applies the
    // event completely, which keeps `apply` atomic.
    let live = || {
        if state == ActivationState::ActiveCurrent {
            Ok(())
        } else {
            Err(JournalError::NotLive {
                event: body.type_name(),
                state: state.label(),
            })
        }
    };
    let applied = match body {
        EventBody::JournalEntryRecorded { position, entry } => {
            live().and_then(|()| function.record(*position, entry, ""))
        }
        EventBody::BranchEntryRecorded {
            branch,
            position,
            entry,
        } => live().and_then(|()| function.record(*position, entry, branch)),
        EventBody::TimerAwaited { position } => {
            live().and_then(|()| function.await_timer(*position))
        }
        EventBody::SleepEnded { position } => live().and_then(|()| function.end_sleep(*position)),
        EventBody::SignalDelivered { name, value } => function.deliver(name, value),
        EventBody::SignalAwaited { name } => live().map(|()| {
            function.awaiting.insert(name.clone());
        }),
        EventBody::FunctionReturned { outcome } => live().and_then(|()| function.returned(outcome)),
        EventBody::CancelRequested { reason } => function.request_cancel(reason),
        EventBody::JournalDropped { entries, events } => {
            function.drop_journal(state, *entries, *events)
        }
        EventBody::ChildEnded { child, outcome } => function.child_ended(*child, outcome),
        EventBody::ChildAwaited { child } => live().map(|()| {
            function.awaiting_children.insert(*child);
        }),
        EventBody::RunStarted { run, incarnation } => function.start_run(*run, incarnation),
        // `apply` passes only the events `is_journal_event` names.
        _ => Ok(()),
    };
    applied.map_err(|source| FoldError::Journal { seq, source })
}

impl FunctionRecord {
    /// Records that the activation, done, dropped its journal (the log was compacted to its
    /// outcome): only a done activation drops it, once.
    fn drop_journal(
        &mut self,
        state: ActivationState,
        entries: u32,
        events: u64,
    ) -> Result<(), JournalError> {
        if state == ActivationState::Done && self.journal_dropped.is_none() {
            self.journal_dropped = Some(DroppedJournal { entries, events });
            Ok(())
        } else {
            Err(JournalError::DroppedEarly {
                state: state.label(),
            })
        }
    }
}
