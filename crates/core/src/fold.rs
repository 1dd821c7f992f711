//! The fold: a flow's state is the fold of its log.
//!
//! [`Folder`] applies events one at a time and refuses, naming the sequence number at fault, a
//! log with a gap, a duplicate, an event of another flow, an unknown body format, or a
//! transition that the spec tables refuse. A log is also refused when it records a transition
//! the tables call a no-op: writers must never append those, so one in the log means the log
//! was not written by flowstate. [`fold`] can stop early ([`StopAt`]): that is time travel.
//!
//! A log starts at sequence number 1, or, once compacted (see `Store::compact`), later: the
//! sequence numbers before it were dropped and are never used again. So a first event after 1
//! is accepted only if it is `flow_created` (anything else is a [`FoldError::Gap`]), and a
//! `journal_dropped` in such a log must count exactly the sequence numbers before it.
//!
//! **Where the rules live.** This module checks the envelope of every event (its flow, its
//! sequence number, its body's format, creation first and once, `child_of`) and hands the
//! event to the module of the flow's kind, which owns that kind's record and the rules its
//! events follow: `kind/taskgraph.rs` (atoms: [`AtomRecord`]), `kind/plan.rs` (plans:
//! [`PlanRecord`]) and `kind/function.rs` (durable functions: [`FunctionRecord`]). An event of
//! another kind of flow is a [`FoldError::WrongKind`].
//!
//! **Invariant:** `Folder::apply` either applies an event completely or leaves the state
//! untouched, so an engine can validate an event against the current state before appending it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, Event, EventBody, FlowKind, RawEvent};
use crate::id::FlowId;
use crate::journal::{FunctionRecord, JournalError};
use crate::kind;
pub use crate::kind::taskgraph::{AtomRecord, AtomState, RetryAttempt};
use crate::machine::{ActivationState, FlowState, InvalidState, Machine, PlanState};
use crate::plan::{PlanError, PlanRecord};
use crate::time::Timestamp;

/// The lifecycle state of a flow, in the machine of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "state", rename_all = "snake_case")]
pub enum FlowStatus {
    /// A task graph, in the flow machine.
    TaskGraph(FlowState),
    /// A goal-driven plan, in the plan lifecycle.
    Plan(PlanState),
    /// A durable function, in the activation machine.
    Function(ActivationState),
}

impl FlowStatus {
    /// The state a new flow of `kind` starts in.
    #[must_use]
    pub fn initial(kind: FlowKind) -> Self {
        match kind {
            FlowKind::TaskGraph => Self::TaskGraph(FlowState::INITIAL),
            FlowKind::Plan => Self::Plan(PlanState::INITIAL),
            FlowKind::Function => Self::Function(ActivationState::INITIAL),
        }
    }

    /// The kind of flow this status belongs to.
    #[must_use]
    pub fn kind(self) -> FlowKind {
        match self {
            Self::TaskGraph(_) => FlowKind::TaskGraph,
            Self::Plan(_) => FlowKind::Plan,
            Self::Function(_) => FlowKind::Function,
        }
    }

    /// The state's key ("running", "sleeping", "deactivated", ...), as stores index it.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::TaskGraph(state) => state.key(),
            Self::Plan(state) => state.key(),
            Self::Function(state) => state.key(),
        }
    }

    /// Parses a state key of the machine of `kind`.
    #[must_use]
    pub fn parse(kind: FlowKind, key: &str) -> Option<Self> {
        match kind {
            FlowKind::TaskGraph => FlowState::parse(key).map(Self::TaskGraph),
            FlowKind::Plan => PlanState::parse(key).map(Self::Plan),
            FlowKind::Function => ActivationState::parse(key).map(Self::Function),
        }
    }
}

impl std::fmt::Display for FlowStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// A flow's state as rebuilt from its log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The flow.
    pub id: FlowId,
    /// Its kind.
    pub kind: FlowKind,
    /// The definition it runs.
    pub definition: String,
    /// Its input.
    pub input: serde_json::Value,
    /// Its lifecycle state.
    pub status: FlowStatus,
    /// Time of its first event.
    pub created_at: Timestamp,
    /// Time of its last folded event.
    pub updated_at: Timestamp,
    /// Sequence number of its last folded event.
    pub last_seq: u64,
    /// Sequence number of its first event (its `flow_created`): 1, or later for a compacted
    /// log (the sequence numbers before it were dropped; they are never used again).
    #[serde(
        default = "first_seq_default",
        skip_serializing_if = "is_first_seq_default"
    )]
    pub first_seq: u64,
    /// Its atoms (task graphs), by name.
    pub atoms: BTreeMap<String, AtomRecord>,
    /// The last replay-failure diagnostic (durable functions).
    pub diagnostic: Option<String>,
    /// A durable function's journal, inbox and outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionRecord>,
    /// The durable function that started this flow as its child, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<FlowId>,
    /// A plan's steps, work items and attributes with provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRecord>,
    /// A task graph someone asked to cancel (`cancel_requested`, the first request's reason):
    /// its engine reverts it. Cleared when the flow runs again after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
}

/// The first sequence number of a log that was never compacted.
fn first_seq_default() -> u64 {
    1
}

fn is_first_seq_default(seq: &u64) -> bool {
    *seq == 1
}

/// Where a fold stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopAt {
    /// Fold the whole log.
    #[default]
    End,
    /// Fold events up to and including this sequence number.
    Seq(u64),
    /// Fold events recorded at or before this time; stop at the first later one.
    Time(Timestamp),
}

impl StopAt {
    /// Whether `event` lies beyond the stop point.
    #[must_use]
    pub fn excludes(self, seq: u64, time: Timestamp) -> bool {
        match self {
            Self::End => false,
            Self::Seq(last) => seq > last,
            Self::Time(limit) => time > limit,
        }
    }
}

/// Why a log does not fold. Every variant that concerns one event names its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    /// No events up to the stop point.
    #[error("the log has no events up to the requested point")]
    EmptyLog,
    /// A sequence number was skipped (or a log starts after 1 with another event than
    /// `flow_created`: only a compacted log starts later, and it starts with its creation).
    #[error("gap in the log: expected event {expected}, found event {found}")]
    Gap {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found instead.
        found: u64,
    },
    /// A sequence number came again (or went backwards).
    #[error("duplicate or out-of-order event {found}: expected event {expected}")]
    Duplicate {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found instead.
        found: u64,
    },
    /// An event of another flow in this flow's log.
    #[error("event {seq} belongs to flow {found}, not to flow {expected}")]
    WrongFlow {
        /// The event's position.
        seq: u64,
        /// The flow being folded.
        expected: FlowId,
        /// The flow the event names.
        found: FlowId,
    },
    /// The body could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The first event is not `flow_created`.
    #[error("event {seq} is a {found} event, but a log must start with flow_created")]
    NotCreatedFirst {
        /// The event's position.
        seq: u64,
        /// Its type.
        found: &'static str,
    },
    /// A second `flow_created`.
    #[error("event {seq} creates a flow that already exists")]
    CreatedTwice {
        /// The event's position.
        seq: u64,
    },
    /// An event of another kind of flow (for example a plan event in a task graph's log).
    #[error("event {seq} is a {event} event, which a {kind} flow cannot have")]
    WrongKind {
        /// The event's position.
        seq: u64,
        /// Its type.
        event: &'static str,
        /// The flow's kind.
        kind: FlowKind,
    },
    /// An atom recorded first as a task and then as a retry, or the other way round.
    #[error("event {seq} changes atom {atom:?} into another kind of atom")]
    AtomKindChanged {
        /// The event's position.
        seq: u64,
        /// The atom.
        atom: String,
    },
    /// A recovery recorded for an atom whose revert had not failed.
    #[error("event {seq} recovers the revert of atom {atom:?}, which is not in an unrecovered REVERT_FAILURE")]
    NotRecoverable {
        /// The event's position.
        seq: u64,
        /// The atom.
        atom: String,
    },
    /// A plan event does not follow (see [`PlanError`]).
    #[error("event {seq}: {source}")]
    Plan {
        /// The event's position.
        seq: u64,
        /// What is wrong.
        source: PlanError,
    },
    /// A durable function's journal does not follow (see [`JournalError`]).
    #[error("event {seq}: {source}")]
    Journal {
        /// The event's position.
        seq: u64,
        /// What is wrong.
        source: JournalError,
    },
    /// A `journal_dropped` of a compacted log that does not count the sequence numbers
    /// before the log (the events dropped).
    #[error(
        "event {seq} says {recorded} events were dropped, but the log starts after event {dropped}"
    )]
    DroppedCountMismatch {
        /// The event's position.
        seq: u64,
        /// The count it records.
        recorded: u64,
        /// The sequence numbers before the log's first event.
        dropped: u64,
    },
    /// The tables refuse the transition.
    #[error("event {seq}: {source}")]
    Transition {
        /// The event's position.
        seq: u64,
        /// What the table said.
        source: InvalidState,
    },
    /// The tables call this transition a no-op, so flowstate never records it.
    #[error("event {seq} records {machine} transition {from} -> {to}, which the state table ignores and flowstate never records")]
    IgnoredRecorded {
        /// The event's position.
        seq: u64,
        /// The machine.
        machine: &'static str,
        /// The state before.
        from: &'static str,
        /// The requested state.
        to: &'static str,
    },
    /// A task graph asked to cancel after it finished (SUCCESS, FAILURE or REVERTED): there
    /// is nothing left to stop.
    #[error("event {seq} requests the cancellation of a task graph that is {state}")]
    CancelWhenFinished {
        /// The event's position.
        seq: u64,
        /// The flow's state, as the spec names it.
        state: &'static str,
    },
}

/// Applies events one by one; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    record: Option<FlowRecord>,
}

impl Folder {
    /// An empty folder, before the first event.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A folder that continues from a state already folded.
    #[must_use]
    pub fn resume(record: FlowRecord) -> Self {
        Self {
            record: Some(record),
        }
    }

    /// The state so far, if the flow has been created.
    #[must_use]
    pub fn record(&self) -> Option<&FlowRecord> {
        self.record.as_ref()
    }

    /// The state so far, or [`FoldError::EmptyLog`].
    pub fn finish(self) -> Result<FlowRecord, FoldError> {
        self.record.ok_or(FoldError::EmptyLog)
    }

    /// The sequence number the next event must carry.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.record.as_ref().map_or(1, |record| record.last_seq + 1)
    }

    /// Decodes and applies a stored event.
    pub fn apply_raw(&mut self, raw: &RawEvent) -> Result<(), FoldError> {
        self.check_position(raw.flow, raw.seq)?;
        let event = Event::decode(raw).map_err(|error| match self.record {
            // A first event after 1 must be a (decodable) `flow_created`: anything else is a
            // log with its beginning missing.
            None if raw.seq > 1 => FoldError::Gap {
                expected: 1,
                found: raw.seq,
            },
            _ => FoldError::Decode(error),
        })?;
        self.apply(&event)
    }

    /// Applies one event, or leaves the state untouched and says why not: the envelope checks
    /// here, then the event goes to the module of the flow's kind (`crate::kind`).
    pub fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        self.check_position(event.flow, event.seq)?;
        let Some(record) = self.record.as_mut() else {
            self.record = Some(create(event)?);
            return Ok(());
        };
        match (&event.body, record.status) {
            (EventBody::FlowCreated { .. }, _) => {
                return Err(FoldError::CreatedTwice { seq: event.seq })
            }
            (EventBody::ChildOf { parent }, _) => record.parent = Some(*parent),
            (_, FlowStatus::TaskGraph(state)) => kind::taskgraph::apply(record, state, event)?,
            (_, FlowStatus::Plan(state)) => kind::plan::apply(record, state, event)?,
            (_, FlowStatus::Function(state)) => kind::function::apply(record, state, event)?,
        }
        record.last_seq = event.seq;
        record.updated_at = event.time;
        Ok(())
    }

    fn check_position(&self, flow: FlowId, seq: u64) -> Result<(), FoldError> {
        if let Some(record) = &self.record {
            if record.id != flow {
                return Err(FoldError::WrongFlow {
                    seq,
                    expected: record.id,
                    found: flow,
                });
            }
        }
        let expected = self.next_seq();
        if self.record.is_none() && seq > expected {
            // The first event of a compacted log; `apply` accepts it only if it creates the
            // flow.
            return Ok(());
        }
        match seq.cmp(&expected) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(FoldError::Gap {
                expected,
                found: seq,
            }),
            std::cmp::Ordering::Less => Err(FoldError::Duplicate {
                expected,
                found: seq,
            }),
        }
    }
}

/// The record a log's first event creates: it must be `flow_created`.
fn create(event: &Event) -> Result<FlowRecord, FoldError> {
    let seq = event.seq;
    let EventBody::FlowCreated {
        kind,
        definition,
        input,
    } = &event.body
    else {
        if seq > 1 {
            // Only a compacted log starts after 1, and it starts with its creation.
            return Err(FoldError::Gap {
                expected: 1,
                found: seq,
            });
        }
        return Err(FoldError::NotCreatedFirst {
            seq,
            found: event.body.type_name(),
        });
    };
    Ok(FlowRecord {
        id: event.flow,
        kind: *kind,
        definition: definition.clone(),
        input: input.clone(),
        status: FlowStatus::initial(*kind),
        created_at: event.time,
        updated_at: event.time,
        last_seq: seq,
        first_seq: seq,
        atoms: BTreeMap::new(),
        diagnostic: None,
        function: (*kind == FlowKind::Function).then(FunctionRecord::default),
        parent: None,
        plan: (*kind == FlowKind::Plan).then(PlanRecord::default),
        cancel_requested: None,
    })
}

/// Folds a stored log up to `stop`.
pub fn fold<'a>(
    events: impl IntoIterator<Item = &'a RawEvent>,
    stop: StopAt,
) -> Result<FlowRecord, FoldError> {
    let mut folder = Folder::new();
    for raw in events {
        if stop.excludes(raw.seq, raw.time) {
            break;
        }
        folder.apply_raw(raw)?;
    }
    folder.finish()
}
