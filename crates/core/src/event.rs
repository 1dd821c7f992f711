//! The event envelope and the typed event bodies.
//!
//! A flow's log is a dense sequence of events numbered from 1. The envelope (flow id, sequence
//! number, wall time, body format version) is stored as columns by every store; the body is
//! encoded JSON, so a log stays readable with nothing but a SQL shell, and old logs stay
//! readable because every body carries the format version it was written with.
//!
//! **Invariant:** variants are only ever added. A body already written keeps its meaning
//! forever; a change of meaning needs a new variant or a new [`EVENT_FORMAT_VERSION`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::id::FlowId;
use crate::journal::{JournalEntry, StepOutcome};
use crate::limits::MAX_EVENT_BODY_BYTES;
use crate::machine::{ActivationState, FlowState, PlanState, RetryState, TaskState};
use crate::plan::ExecutionPlan;
use crate::time::Timestamp;

/// The body format this code writes. Logs written with a format up to this one can be read;
/// a newer one is refused with [`DecodeError::UnknownFormat`] rather than misread.
pub const EVENT_FORMAT_VERSION: u16 = 1;

/// The three ways to write a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FlowKind {
    /// Tasks with execute and revert, arranged as linear, unordered and graph flows.
    TaskGraph,
    /// Steps planned backwards from goals.
    Plan,
    /// A durable async function.
    Function,
}

impl FlowKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::TaskGraph, Self::Plan, Self::Function];

    /// The stable key in indexes and the CLI.
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            Self::TaskGraph => "task_graph",
            Self::Plan => "plan",
            Self::Function => "function",
        }
    }

    /// Parses a key.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.key().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for FlowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// What the engine means to do with an atom next. Stored with every atom transition so that
/// resuming depends only on what is stored (TaskFlow persists it for the same reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intention {
    /// Run (or keep) its execute.
    Execute,
    /// Run its revert.
    Revert,
    /// Revert it as part of a retry of its scope.
    Retry,
    /// Skip it.
    Ignore,
}

/// What happened. Each variant that names a state is a transition of one machine and is
/// checked against that machine's table when the log is folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventBody {
    /// The first event of every flow.
    FlowCreated {
        /// Which front door made the flow.
        kind: FlowKind,
        /// The name of the task graph, plan registry or function it runs.
        definition: String,
        /// The flow's input.
        #[serde(default)]
        input: serde_json::Value,
    },
    /// A task-graph flow changed state.
    FlowStateChanged {
        /// The new state.
        to: FlowState,
    },
    /// A task atom changed state.
    TaskStateChanged {
        /// The atom's name, unique in its flow.
        atom: String,
        /// The new state.
        to: TaskState,
        /// What the engine means to do with it next.
        intention: Intention,
        /// On SUCCESS: what `execute` returned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
        /// On FAILURE or REVERT_FAILURE: what went wrong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<Failure>,
    },
    /// A retry controller atom changed state.
    RetryStateChanged {
        /// The atom's name, unique in its flow.
        atom: String,
        /// The new state.
        to: RetryState,
        /// What the engine means to do with it next.
        intention: Intention,
        /// On SUCCESS: the value the controller provides to its scope for this attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
        /// On FAILURE or REVERT_FAILURE: what went wrong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<Failure>,
        /// On RETRYING: the failures of this attempt, by atom, kept in the retry's history.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        failures: std::collections::BTreeMap<String, Failure>,
    },
    /// An atom's failed revert was run again and succeeded. REVERT_FAILURE is terminal in the
    /// task table, so the atom keeps that state; this marks the failure as repaired, which lets
    /// the rest of the flow revert.
    AtomRevertRecovered {
        /// The atom.
        atom: String,
    },
    /// The engine changed what it means to do with an atom, without changing its state (for
    /// example: a failure elsewhere means this finished atom must now be reverted). Recorded so
    /// that resuming depends only on the log.
    AtomIntentionChanged {
        /// The atom's name.
        atom: String,
        /// Whether it is a retry controller rather than a task.
        #[serde(default)]
        retry: bool,
        /// The new intention.
        intention: Intention,
    },
    /// A durable function activation changed state.
    ActivationStateChanged {
        /// The new state.
        to: ActivationState,
        /// Why, for a replay failure: what the journal said and what the code did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diagnostic: Option<String>,
    },
    /// A goal-driven flow changed lifecycle state.
    PlanStateChanged {
        /// The new state.
        to: PlanState,
        /// On failed: why (the goal that failed or became unreachable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Failure>,
    },
    /// A goal-driven flow started: the plan computed from its goals and inputs (the flow's
    /// initial inputs are `flow_created`'s input). The plan holds the whole definitions of
    /// its steps, so the flow never changes under later registrations.
    PlanStarted {
        /// The plan.
        plan: ExecutionPlan,
    },
    /// A step of a plan started: its inputs were available (and its predicate held); its
    /// work items were created.
    StepStarted {
        /// The step.
        step: String,
        /// Its inputs.
        #[serde(default)]
        inputs: BTreeMap<String, serde_json::Value>,
        /// How many work items it has (1, or one per element of a mapped step's list).
        items: u32,
    },
    /// A step will not run (its predicate was false, or nothing needs its outputs).
    StepSkipped {
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
    /// A step failed: a work item failed for good, or a required input can no longer be
    /// produced.
    StepFailed {
        /// The step.
        step: String,
        /// Why.
        failure: Failure,
    },
    /// Every work item of a step succeeded (its outputs follow as `attribute_set`).
    StepCompleted {
        /// The step.
        step: String,
    },
    /// An attempt of a work item started. Its completion token is
    /// `FLOW/STEP/ITEM/ATTEMPT`; its idempotency key `FLOW/STEP/ITEM` is the same for every
    /// attempt.
    WorkStarted {
        /// The step.
        step: String,
        /// The item (0 for a step that is not mapped).
        item: u32,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// An attempt succeeded (also after the flow became terminal: late work is recorded).
    WorkSucceeded {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// The attempt.
        attempt: u32,
        /// What it returned (an object of outputs).
        #[serde(default)]
        outputs: serde_json::Value,
    },
    /// An attempt failed and the item will not be tried again.
    WorkFailed {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// The attempt.
        attempt: u32,
        /// Why.
        failure: Failure,
    },
    /// An attempt failed and another is scheduled.
    RetryScheduled {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        failure: Failure,
        /// When the next attempt is due.
        due: Timestamp,
    },
    /// Work that will never run: a pending item of a failed step, or a retry still waiting
    /// when the flow ended.
    WorkAbandoned {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// Why.
        reason: String,
    },
    /// A step's output became an attribute (provenance: this event's sequence number and
    /// time, the step and the attempt).
    AttributeSet {
        /// The attribute.
        name: String,
        /// Its value.
        #[serde(default)]
        value: serde_json::Value,
        /// The producing step.
        step: String,
        /// The producing attempt (for a mapped step: the highest of its items).
        attempt: u32,
    },
    /// A succeeded work item's compensation started (the flow failed; compensations run in
    /// reverse order of success).
    CompensationStarted {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// The compensation attempt, from 1.
        attempt: u32,
    },
    /// A compensation succeeded.
    CompensationSucceeded {
        /// The step.
        step: String,
        /// The item.
        item: u32,
    },
    /// A compensation attempt failed; retried at `retry_due`, or failed for good.
    CompensationFailed {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// Why.
        failure: Failure,
        /// When the next attempt is due; `None`: no more attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_due: Option<Timestamp>,
    },
    /// A durable function recorded an effect at the next position of its journal.
    JournalEntryRecorded {
        /// The position (0, 1, 2, …).
        position: u32,
        /// The effect and its outcome.
        entry: JournalEntry,
    },
    /// A concurrent branch of a durable function (`ctx.all`, `ctx.race`) recorded an effect
    /// at the next position of the journal. Replay matches a branch's entries in their own
    /// order, whatever the interleaving with other branches was.
    BranchEntryRecorded {
        /// The branch's path (`"0.1"`: branch 1 of the function's first combinator;
        /// `"0.1/2.0"`: branch 0 of that branch's third).
        branch: String,
        /// The position (0, 1, 2, …), shared with the rest of the journal.
        position: u32,
        /// The effect and its outcome.
        entry: JournalEntry,
    },
    /// A sleeping durable function waits for the sleep at this journal position to end
    /// (recorded with its sleeping transition, like [`EventBody::SignalAwaited`]).
    TimerAwaited {
        /// The sleep's journal position.
        position: u32,
    },
    /// The sleep at a journal position ended (its timer fired and the function went on).
    SleepEnded {
        /// The sleep's journal position.
        position: u32,
    },
    /// A signal was sent to a durable function (it waits in the inbox until consumed).
    SignalDelivered {
        /// The signal's name.
        name: String,
        /// Its value.
        #[serde(default)]
        value: serde_json::Value,
    },
    /// A durable function goes to sleep until a signal of this name arrives (recorded with
    /// its sleeping transition, so that other signals and stale timers do not wake it).
    SignalAwaited {
        /// The signal's name.
        name: String,
    },
    /// A done durable function dropped its journal: its log was compacted to its creation,
    /// its outcome and this event (kept for audit: how much was dropped).
    JournalDropped {
        /// Journal entries dropped.
        entries: u32,
        /// Events the log had before.
        events: u64,
    },
    /// A durable function returned.
    FunctionReturned {
        /// Its outcome.
        outcome: StepOutcome,
    },
    /// The flow was started by a durable function (its parent), which it tells when it ends.
    ChildOf {
        /// The parent flow.
        parent: FlowId,
    },
    /// A child flow of this durable function ended (delivered by the child, like a signal;
    /// it waits here until the function joins the child).
    ChildEnded {
        /// The child flow.
        child: FlowId,
        /// How it ended: a function's outcome, or a task graph's results or failure.
        outcome: StepOutcome,
    },
    /// A sleeping durable function waits for this child to end (recorded with its sleeping
    /// transition, like [`EventBody::SignalAwaited`]).
    ChildAwaited {
        /// The child flow.
        child: FlowId,
    },
    /// Someone asked a durable function to stop: it stops at its next effect (a step in
    /// flight finishes first) and is done with a `Cancelled` failure. In a task graph (not
    /// finished): no new atom starts, running atoms finish, and everything done is reverted
    /// (the flow ends REVERTED, or FAILURE if a revert fails).
    CancelRequested {
        /// Why, as the one who cancelled said.
        #[serde(default)]
        reason: String,
    },
    /// A run of a durable function started (its first, a wake, or a new engine process):
    /// the run generation that fences earlier runs, and the incarnation that runs it.
    RunStarted {
        /// The generation, higher than every earlier one.
        run: u64,
        /// The engine process (incarnation) running it.
        incarnation: String,
    },
}

impl EventBody {
    /// The body's type tag, as written in the log.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::FlowCreated { .. } => "flow_created",
            Self::FlowStateChanged { .. } => "flow_state_changed",
            Self::TaskStateChanged { .. } => "task_state_changed",
            Self::RetryStateChanged { .. } => "retry_state_changed",
            Self::AtomIntentionChanged { .. } => "atom_intention_changed",
            Self::AtomRevertRecovered { .. } => "atom_revert_recovered",
            Self::ActivationStateChanged { .. } => "activation_state_changed",
            Self::PlanStateChanged { .. } => "plan_state_changed",
            Self::PlanStarted { .. } => "plan_started",
            Self::StepStarted { .. } => "step_started",
            Self::StepSkipped { .. } => "step_skipped",
            Self::StepFailed { .. } => "step_failed",
            Self::StepCompleted { .. } => "step_completed",
            Self::WorkStarted { .. } => "work_started",
            Self::WorkSucceeded { .. } => "work_succeeded",
            Self::WorkFailed { .. } => "work_failed",
            Self::RetryScheduled { .. } => "retry_scheduled",
            Self::WorkAbandoned { .. } => "work_abandoned",
            Self::AttributeSet { .. } => "attribute_set",
            Self::CompensationStarted { .. } => "compensation_started",
            Self::CompensationSucceeded { .. } => "compensation_succeeded",
            Self::CompensationFailed { .. } => "compensation_failed",
            Self::JournalEntryRecorded { .. } => "journal_entry_recorded",
            Self::BranchEntryRecorded { .. } => "branch_entry_recorded",
            Self::TimerAwaited { .. } => "timer_awaited",
            Self::SleepEnded { .. } => "sleep_ended",
            Self::SignalDelivered { .. } => "signal_delivered",
            Self::SignalAwaited { .. } => "signal_awaited",
            Self::FunctionReturned { .. } => "function_returned",
            Self::JournalDropped { .. } => "journal_dropped",
            Self::RunStarted { .. } => "run_started",
            Self::CancelRequested { .. } => "cancel_requested",
            Self::ChildOf { .. } => "child_of",
            Self::ChildEnded { .. } => "child_ended",
            Self::ChildAwaited { .. } => "child_awaited",
        }
    }

    /// Encodes the body in the current format, refusing one larger than
    /// [`MAX_EVENT_BODY_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let bytes = serde_json::to_vec(self).map_err(|error| EncodeError::Serialize {
            message: error.to_string(),
        })?;
        if bytes.len() > MAX_EVENT_BODY_BYTES {
            return Err(EncodeError::TooLarge {
                event: self.type_name(),
                bytes: bytes.len(),
                limit: MAX_EVENT_BODY_BYTES,
            });
        }
        Ok(bytes)
    }
}

/// Why a body could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The body is larger than the limit.
    #[error("{event} event body is {bytes} bytes, over the limit of {limit} (MAX_EVENT_BODY_BYTES); store large payloads elsewhere and reference them")]
    TooLarge {
        /// The body's type.
        event: &'static str,
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// serde refused the value (for example a map with non-string keys).
    #[error("event body cannot be encoded: {message}")]
    Serialize {
        /// serde's message.
        message: String,
    },
}

/// An event as stores keep it: the envelope plus the encoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The flow whose log this is.
    pub flow: FlowId,
    /// Position in the flow's log, dense from 1.
    pub seq: u64,
    /// Wall time when it was recorded (from the injected clock).
    pub time: Timestamp,
    /// Body format version it was written with.
    pub format: u16,
    /// The encoded body.
    pub body: Vec<u8>,
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The flow whose log this is.
    pub flow: FlowId,
    /// Position in the flow's log, dense from 1.
    pub seq: u64,
    /// Wall time when it was recorded.
    pub time: Timestamp,
    /// What happened.
    pub body: EventBody,
}

/// Why a stored event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Written by a newer flowstate.
    #[error("event {seq} has body format {format}, newer than the {supported} this build reads; upgrade flowstate")]
    UnknownFormat {
        /// The event's position.
        seq: u64,
        /// Its format version.
        format: u16,
        /// The newest format this build reads.
        supported: u16,
    },
    /// The body does not parse as any known event.
    #[error("event {seq} has a body that is not a valid event: {message}")]
    Body {
        /// The event's position.
        seq: u64,
        /// The parser's message.
        message: String,
    },
}

impl Event {
    /// Decodes a stored event, refusing a format newer than this build's.
    pub fn decode(raw: &RawEvent) -> Result<Self, DecodeError> {
        if raw.format == 0 || raw.format > EVENT_FORMAT_VERSION {
            return Err(DecodeError::UnknownFormat {
                seq: raw.seq,
                format: raw.format,
                supported: EVENT_FORMAT_VERSION,
            });
        }
        // Journal entries (most of a long log) take a fast path; the derived decoding has
        // the last word on everything else.
        let body = match crate::decode::body(&raw.body) {
            Some(body) => body,
            None => serde_json::from_slice(&raw.body).map_err(|error| DecodeError::Body {
                seq: raw.seq,
                message: error.to_string(),
            })?,
        };
        Ok(Self {
            flow: raw.flow,
            seq: raw.seq,
            time: raw.time,
            body,
        })
    }

    /// Encodes the event for a store.
    pub fn encode(&self) -> Result<RawEvent, EncodeError> {
        Ok(RawEvent {
            flow: self.flow,
            seq: self.seq,
            time: self.time,
            format: EVENT_FORMAT_VERSION,
            body: self.body.encode()?,
        })
    }
}
