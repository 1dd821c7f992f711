//! The task-graph kind: what the log says about each atom ([`AtomRecord`]: a task or a retry
//! controller, its state, result, failures and attempts) and the task-graph arms of the fold
//! (the flow machine, cancellation requests, atom transitions and intentions).
//!
//! **What this module owns:** the rules every recorded task-graph event must follow: a flow or
//! atom transition must be one the tables allow (a recorded no-op is refused too), an atom
//! never changes from task to retry or back, a revert is recovered only after it failed, and a
//! finished task graph cannot be asked to cancel. Its public items are public as
//! `crate::fold::*`.
//!
//! **What it must never do:** decide what runs next (that is `flowstate-taskgraph`'s engine),
//! run an atom, read the clock, touch the parts of a flow record that belong to plans or
//! durable functions, or change anything when it refuses an event: each arm checks everything
//! before it changes the record, which keeps `Folder::apply` atomic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{advance, wrong_kind};
use crate::event::{Event, EventBody, Intention};
use crate::failure::Failure;
use crate::fold::{FlowRecord, FlowStatus, FoldError};
use crate::machine::{FlowState, Machine, RetryState, TaskState};

/// An atom's state, in the machine of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "machine", content = "state", rename_all = "snake_case")]
pub enum AtomState {
    /// A task.
    Task(TaskState),
    /// A retry controller.
    Retry(RetryState),
}

impl AtomState {
    /// The state's key.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::Task(state) => state.key(),
            Self::Retry(state) => state.key(),
        }
    }
}

/// What the log says about one atom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtomRecord {
    /// Its current state.
    pub state: AtomState,
    /// What the engine means to do with it next.
    pub intention: Intention,
    /// The event that last changed it.
    pub last_seq: u64,
    /// What its last successful `execute` returned; cleared when it is reverted or reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why its last `execute` failed; cleared when it is reset to PENDING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Why its `revert` failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_failure: Option<Failure>,
    /// Whether a failed revert was later run again successfully (the state stays
    /// REVERT_FAILURE, which the table makes terminal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revert_recovered: bool,
    /// How many times it entered RUNNING: the attempt number in idempotency keys.
    pub executions: u32,
    /// For a retry controller: one entry per finished attempt of its scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RetryAttempt>,
}

impl AtomRecord {
    fn new(state: AtomState, intention: Intention, seq: u64) -> Self {
        Self {
            state,
            intention,
            last_seq: seq,
            result: None,
            failure: None,
            revert_failure: None,
            revert_recovered: false,
            executions: 0,
            history: Vec::new(),
        }
    }
}

/// One attempt of a retry controller's scope, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryAttempt {
    /// The value the controller provided for the attempt.
    pub value: serde_json::Value,
    /// The failures that ended the attempt, by atom.
    pub failures: BTreeMap<String, Failure>,
}

// ---- The task-graph arms of the fold ---------------------------------------------------------

/// Applies `event` to a task graph whose flow is in `state`. The fold has already checked the
/// envelope and handled `flow_created` and `child_of`; any other body that is not a task-graph
/// event is of another kind of flow.
pub(crate) fn apply(
    record: &mut FlowRecord,
    state: FlowState,
    event: &Event,
) -> Result<(), FoldError> {
    let seq = event.seq;
    match &event.body {
        EventBody::FlowStateChanged { to } => flow_state_changed(record, state, seq, *to),
        EventBody::CancelRequested { reason } => cancel_requested(record, state, seq, reason),
        EventBody::TaskStateChanged {
            atom,
            to,
            intention,
            result,
            failure,
        } => {
            let change = Change {
                intention: *intention,
                result,
                failure,
            };
            task_state_changed(&mut record.atoms, seq, atom, *to, change)
        }
        EventBody::RetryStateChanged {
            atom,
            to,
            intention,
            result,
            failure,
            failures,
        } => {
            let change = Change {
                intention: *intention,
                result,
                failure,
            };
            retry_state_changed(&mut record.atoms, seq, atom, *to, change, failures)
        }
        EventBody::AtomRevertRecovered { atom } => revert_recovered(&mut record.atoms, seq, atom),
        EventBody::AtomIntentionChanged {
            atom,
            retry,
            intention,
        } => intention_changed(&mut record.atoms, seq, atom, *retry, *intention),
        _ => Err(wrong_kind(event, record.kind)),
    }
}

/// Whether a task graph in `state` has finished (nothing is left to stop).
fn is_finished(state: FlowState) -> bool {
    matches!(
        state,
        FlowState::Success | FlowState::Failure | FlowState::Reverted
    )
}

/// `flow_state_changed`: a transition of the flow machine.
fn flow_state_changed(
    record: &mut FlowRecord,
    state: FlowState,
    seq: u64,
    to: FlowState,
) -> Result<(), FoldError> {
    let mut next = state;
    advance(seq, &mut next, to)?;
    record.status = FlowStatus::TaskGraph(next);
    if is_finished(state) {
        // A finished flow that runs again starts without the old request.
        record.cancel_requested = None;
    }
    Ok(())
}

/// `cancel_requested`: refused once the flow finished; asked twice, the first reason stands.
fn cancel_requested(
    record: &mut FlowRecord,
    state: FlowState,
    seq: u64,
    reason: &str,
) -> Result<(), FoldError> {
    if is_finished(state) {
        return Err(FoldError::CancelWhenFinished {
            seq,
            state: state.label(),
        });
    }
    record
        .cancel_requested
        .get_or_insert_with(|| reason.to_owned());
    Ok(())
}

/// What a task or retry state change records besides the state.
#[derive(Debug, Clone, Copy)]
struct Change<'a> {
    intention: Intention,
    result: &'a Option<serde_json::Value>,
    failure: &'a Option<Failure>,
}

/// `task_state_changed`: a transition of a task (an atom the log has not named yet is a
/// pending task).
fn task_state_changed(
    atoms: &mut BTreeMap<String, AtomRecord>,
    seq: u64,
    atom: &str,
    to: TaskState,
    change: Change<'_>,
) -> Result<(), FoldError> {
    let current = match atoms.get(atom).map(|a| a.state) {
        None => AtomState::Task(TaskState::INITIAL),
        Some(state @ AtomState::Task(_)) => state,
        Some(AtomState::Retry(_)) => return Err(atom_kind_changed(seq, atom)),
    };
    let AtomState::Task(mut state) = current else {
        return Err(atom_kind_changed(seq, atom));
    };
    advance(seq, &mut state, to)?;
    // Checked; now change the record in place (no copy of its result or history).
    let atom_record = atom_entry(atoms, atom, current, change.intention, seq)
        .ok_or_else(|| atom_kind_changed(seq, atom))?;
    atom_record.state = AtomState::Task(state);
    settle(atom_record, to.key(), change.result, change.failure);
    atom_record.intention = change.intention;
    atom_record.last_seq = seq;
    Ok(())
}

/// `retry_state_changed`: a transition of a retry controller (an atom the log has not named
/// yet is a pending retry); entering RETRYING ends an attempt of its scope.
fn retry_state_changed(
    atoms: &mut BTreeMap<String, AtomRecord>,
    seq: u64,
    atom: &str,
    to: RetryState,
    change: Change<'_>,
    failures: &BTreeMap<String, Failure>,
) -> Result<(), FoldError> {
    let current = match atoms.get(atom).map(|a| a.state) {
        None => AtomState::Retry(RetryState::INITIAL),
        Some(state @ AtomState::Retry(_)) => state,
        Some(AtomState::Task(_)) => return Err(atom_kind_changed(seq, atom)),
    };
    let AtomState::Retry(mut state) = current else {
        return Err(atom_kind_changed(seq, atom));
    };
    advance(seq, &mut state, to)?;
    let atom_record = atom_entry(atoms, atom, current, change.intention, seq)
        .ok_or_else(|| atom_kind_changed(seq, atom))?;
    atom_record.state = AtomState::Retry(state);
    if to == RetryState::Retrying {
        // The attempt that just ended goes into the history, with its failures.
        atom_record.history.push(RetryAttempt {
            value: atom_record.result.take().unwrap_or_default(),
            failures: failures.clone(),
        });
    }
    settle(atom_record, to.key(), change.result, change.failure);
    atom_record.intention = change.intention;
    atom_record.last_seq = seq;
    Ok(())
}

/// `atom_revert_recovered`: only for an atom in an unrecovered REVERT_FAILURE.
fn revert_recovered(
    atoms: &mut BTreeMap<String, AtomRecord>,
    seq: u64,
    atom: &str,
) -> Result<(), FoldError> {
    let failed = atoms
        .get_mut(atom)
        .filter(|a| a.state.key() == "revert_failure" && !a.revert_recovered);
    let Some(failed) = failed else {
        return Err(FoldError::NotRecoverable {
            seq,
            atom: atom.to_owned(),
        });
    };
    failed.revert_recovered = true;
    failed.last_seq = seq;
    Ok(())
}

/// `atom_intention_changed`: what the engine means to do with an atom next (an atom the log
/// has not named yet is created pending, of the kind the event says).
fn intention_changed(
    atoms: &mut BTreeMap<String, AtomRecord>,
    seq: u64,
    atom: &str,
    retry: bool,
    intention: Intention,
) -> Result<(), FoldError> {
    let initial = if retry {
        AtomState::Retry(RetryState::INITIAL)
    } else {
        AtomState::Task(TaskState::INITIAL)
    };
    let atom_record = atoms
        .entry(atom.to_owned())
        .or_insert_with(|| AtomRecord::new(initial, intention, seq));
    if matches!(atom_record.state, AtomState::Retry(_)) != retry {
        return Err(atom_kind_changed(seq, atom));
    }
    atom_record.intention = intention;
    atom_record.last_seq = seq;
    Ok(())
}

/// The record of `atom`, created in `initial` state if the log has not named it yet.
fn atom_entry<'a>(
    atoms: &'a mut BTreeMap<String, AtomRecord>,
    atom: &str,
    initial: AtomState,
    intention: Intention,
    seq: u64,
) -> Option<&'a mut AtomRecord> {
    // Look up by &str first: the key is allocated only for an atom seen the first time.
    if !atoms.contains_key(atom) {
        atoms.insert(atom.to_owned(), AtomRecord::new(initial, intention, seq));
    }
    atoms.get_mut(atom)
}

fn atom_kind_changed(seq: u64, atom: &str) -> FoldError {
    FoldError::AtomKindChanged {
        seq,
        atom: atom.to_owned(),
    }
}

/// Updates an atom's result and failures for the state it entered (by the state's key, which
/// tasks and retries share).
fn settle(
    atom: &mut AtomRecord,
    entered: &str,
    result: &Option<serde_json::Value>,
    failure: &Option<Failure>,
) {
    match entered {
        "running" => atom.executions += 1,
        "success" => {
            atom.result = Some(result.clone().unwrap_or_default());
            atom.failure = None;
        }
        "failure" => {
            atom.result = None;
            atom.failure.clone_from(failure);
        }
        "reverted" => atom.result = None,
        "revert_failure" => atom.revert_failure.clone_from(failure),
        "pending" => {
            // A reset: the atom starts over (a retry's history goes with it, as in TaskFlow).
            atom.result = None;
            atom.failure = None;
            atom.revert_failure = None;
            atom.history.clear();
        }
        _ => {}
    }
}
