//! A flow's state as `GET /flows/{id}` answers it: the folded record ([`FlowView`]) with
//! its plan, function journal and atoms, every time in it a [`Time`].
//!
//! Each view mirrors a core record (`FlowRecord`, `PlanRecord`, `WorkRecord`, …) field for
//! field, in the core's serde form, except that its times are [`Time`]s; the core records'
//! parts that hold no time are embedded as they are. It must never add, drop or rename a
//! field of the core's JSON other than the times (and the view's own `total_seq`,
//! `archived`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flowstate_core::{
    AtomRecord, AttributeValue, DroppedJournal, ExecutionPlan, Failure, FlowId, FlowKind,
    FlowRecord, FlowStatus, FunctionRecord, JournalEntry, Outcome, PlanRecord, StepOutcome,
    StepRecord, StepState, WorkRecord, WorkState,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::time::Time;

/// A flow's state, folded from its log up to a point (`?at=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowView {
    /// The flow.
    #[schema(value_type = String, format = Uuid)]
    pub id: FlowId,
    /// Its kind.
    #[schema(value_type = crate::schema::FlowKind)]
    pub kind: FlowKind,
    /// The definition it runs.
    pub definition: String,
    /// Its input.
    pub input: Value,
    /// Its lifecycle state.
    #[schema(value_type = crate::schema::FlowStatus)]
    pub status: FlowStatus,
    /// Time of its first event.
    pub created_at: Time,
    /// Time of its last folded event.
    pub updated_at: Time,
    /// Sequence number of its last folded event.
    pub last_seq: u64,
    /// Sequence number of its first event (absent: 1; later for a compacted log).
    #[serde(default = "first_seq", skip_serializing_if = "is_first_seq")]
    #[schema(required = false)]
    pub first_seq: u64,
    /// Its atoms (task graphs), by name.
    #[schema(value_type = BTreeMap<String, crate::schema::AtomRecord>)]
    pub atoms: BTreeMap<String, AtomRecord>,
    /// The last replay-failure diagnostic (durable functions).
    pub diagnostic: Option<String>,
    /// A durable function's journal, inbox and outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionView>,
    /// The durable function that started this flow as its child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent: Option<FlowId>,
    /// A plan's steps, work items and attributes with provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanView>,
    /// A task graph someone asked to cancel: the first request's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// How it ended, once it has (derived from the state; absent while it may go on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeView>,
    /// The sequence number of the flow's last event (whatever `?at=` said).
    pub total_seq: u64,
    /// Read from the archive (the flow is no longer in the live store).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub archived: bool,
}

fn first_seq() -> u64 {
    1
}

fn is_first_seq(seq: &u64) -> bool {
    *seq == 1
}

impl FlowView {
    /// The view of `record`, whose log's last event is `total_seq`.
    #[must_use]
    pub fn new(record: &FlowRecord, total_seq: u64, archived: bool) -> Self {
        Self {
            id: record.id,
            kind: record.kind,
            definition: record.definition.clone(),
            input: record.input.clone(),
            status: record.status,
            created_at: record.created_at.into(),
            updated_at: record.updated_at.into(),
            last_seq: record.last_seq,
            first_seq: record.first_seq,
            atoms: record.atoms.clone(),
            diagnostic: record.diagnostic.clone(),
            function: record.function.as_ref().map(FunctionView::from),
            parent: record.parent,
            plan: record.plan.as_ref().map(PlanView::from),
            cancel_requested: record.cancel_requested.clone(),
            outcome: record.outcome().map(OutcomeView::from),
            total_seq,
            archived,
        }
    }
}

/// How a finished flow ended, the same words for every kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeView {
    /// `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = crate::schema::OutcomeKind)]
    pub outcome: String,
    /// What failed (a failed flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Failure>)]
    pub failure: Option<Failure>,
    /// The reason given (a cancelled flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<Outcome> for OutcomeView {
    fn from(outcome: Outcome) -> Self {
        let outcome_key = outcome.kind().key().to_owned();
        let (failure, reason) = match outcome {
            Outcome::Failed { failure } => (Some(failure), None),
            Outcome::Cancelled { reason } => (None, Some(reason)),
            _ => (None, None),
        };
        Self {
            outcome: outcome_key,
            failure,
            reason,
        }
    }
}

impl From<FlowView> for FlowRecord {
    fn from(view: FlowView) -> Self {
        Self {
            id: view.id,
            kind: view.kind,
            definition: view.definition,
            input: view.input,
            status: view.status,
            created_at: view.created_at.into(),
            updated_at: view.updated_at.into(),
            last_seq: view.last_seq,
            first_seq: view.first_seq,
            atoms: view.atoms,
            diagnostic: view.diagnostic,
            function: view.function.map(FunctionRecord::from),
            parent: view.parent,
            plan: view.plan.map(PlanRecord::from),
            cancel_requested: view.cancel_requested,
        }
    }
}

/// A plan flow's plan, attributes (with provenance) and steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanView {
    /// The plan (absent until it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::ExecutionPlan>)]
    pub plan: Option<ExecutionPlan>,
    /// Attributes with their provenance.
    pub attributes: BTreeMap<String, AttributeView>,
    /// Steps of the plan, by name.
    pub steps: BTreeMap<String, StepView>,
    /// Why the flow failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Failure>)]
    pub failure: Option<Failure>,
}

impl From<&PlanRecord> for PlanView {
    fn from(plan: &PlanRecord) -> Self {
        Self {
            plan: plan.plan.clone(),
            attributes: map(&plan.attributes, |value| AttributeView::from(value)),
            steps: map(&plan.steps, |step| StepView::from(step)),
            failure: plan.failure.clone(),
        }
    }
}

impl From<PlanView> for PlanRecord {
    fn from(view: PlanView) -> Self {
        Self {
            plan: view.plan,
            attributes: into_map(view.attributes),
            steps: into_map(view.steps),
            failure: view.failure,
        }
    }
}

fn map<T, V>(from: &BTreeMap<String, T>, each: impl Fn(&T) -> V) -> BTreeMap<String, V> {
    from.iter().map(|(k, v)| (k.clone(), each(v))).collect()
}

fn into_map<V, T: From<V>>(from: BTreeMap<String, V>) -> BTreeMap<String, T> {
    from.into_iter().map(|(k, v)| (k, T::from(v))).collect()
}

/// An attribute's value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttributeView {
    /// The value.
    pub value: Value,
    /// The step that produced it (absent: an initial input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt that produced it.
    #[serde(default)]
    pub attempt: u32,
    /// The event that set it.
    pub seq: u64,
    /// When.
    pub time: Time,
}

impl From<&AttributeValue> for AttributeView {
    fn from(value: &AttributeValue) -> Self {
        Self {
            value: value.value.clone(),
            step: value.step.clone(),
            attempt: value.attempt,
            seq: value.seq,
            time: value.time.into(),
        }
    }
}

impl From<AttributeView> for AttributeValue {
    fn from(view: AttributeView) -> Self {
        Self {
            value: view.value,
            step: view.step,
            attempt: view.attempt,
            seq: view.seq,
            time: view.time.into(),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// Its state.
    #[schema(value_type = String)]
    pub state: StepState,
    /// The inputs it started with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Value>,
    /// Its work items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<WorkView>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Failure>)]
    pub failure: Option<Failure>,
}

impl From<&StepRecord> for StepView {
    fn from(step: &StepRecord) -> Self {
        Self {
            state: step.state,
            inputs: step.inputs.clone(),
            items: step.items.iter().map(WorkView::from).collect(),
            reason: step.reason.clone(),
            failure: step.failure.clone(),
        }
    }
}

impl From<StepView> for StepRecord {
    fn from(view: StepView) -> Self {
        Self {
            state: view.state,
            inputs: view.inputs,
            items: view.items.into_iter().map(WorkRecord::from).collect(),
            reason: view.reason,
            failure: view.failure,
        }
    }
}

/// One work item of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkView {
    /// Its state.
    #[schema(value_type = String)]
    pub state: WorkState,
    /// The attempt started last (0: none yet).
    pub attempt: u32,
    /// When its next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_due: Option<Time>,
    /// What the succeeded attempt returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Failure>)]
    pub failure: Option<Failure>,
    /// The event that recorded its success.
    #[serde(default)]
    pub succeeded_seq: u64,
    /// The compensation attempt started last.
    #[serde(default)]
    pub compensation_attempt: u32,
    /// When the next compensation attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_due: Option<Time>,
    /// The last abandonment's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&WorkRecord> for WorkView {
    fn from(work: &WorkRecord) -> Self {
        Self {
            state: work.state,
            attempt: work.attempt,
            retry_due: work.retry_due.map(Time::from),
            outputs: work.outputs.clone(),
            failure: work.failure.clone(),
            succeeded_seq: work.succeeded_seq,
            compensation_attempt: work.compensation_attempt,
            compensation_due: work.compensation_due.map(Time::from),
            reason: work.reason.clone(),
        }
    }
}

impl From<WorkView> for WorkRecord {
    fn from(view: WorkView) -> Self {
        Self {
            state: view.state,
            attempt: view.attempt,
            retry_due: view.retry_due.map(Into::into),
            outputs: view.outputs,
            failure: view.failure,
            succeeded_seq: view.succeeded_seq,
            compensation_attempt: view.compensation_attempt,
            compensation_due: view.compensation_due.map(Into::into),
            reason: view.reason,
        }
    }
}

/// A durable function's journal, inbox, outcome and what it waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionView {
    /// The journal, by position.
    pub journal: Vec<JournalEntryView>,
    /// Positions of sleeps that ended.
    pub sleeps_ended: BTreeSet<u32>,
    /// Signals delivered and not yet consumed, oldest first, by name.
    #[schema(value_type = BTreeMap<String, Vec<Value>>)]
    pub inbox: BTreeMap<String, VecDeque<Value>>,
    /// The outcome, once the function returned.
    #[schema(value_type = Option<crate::schema::StepOutcome>)]
    pub outcome: Option<StepOutcome>,
    /// The current run generation.
    pub run: u64,
    /// The incarnation (engine process) of each run, as `[run, incarnation]`.
    #[schema(value_type = Vec<Vec<Value>>)]
    pub incarnations: Vec<(u64, String)>,
    /// The branch of each entry recorded by a concurrent branch, by position.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub branches: BTreeMap<u32, String>,
    /// The signals the sleeping function waits for.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub awaiting: BTreeSet<String>,
    /// The sleeps (journal positions) the sleeping function waits for.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub awaiting_timers: BTreeSet<u32>,
    /// The children the sleeping function waits for.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub awaiting_children: BTreeSet<FlowId>,
    /// Children that ended, with their outcomes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, crate::schema::StepOutcome>)]
    pub children_ended: BTreeMap<FlowId, StepOutcome>,
    /// Why it was asked to stop (the first request's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// What was dropped when the done activation's log was compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::DroppedJournal>)]
    pub journal_dropped: Option<DroppedJournal>,
}

impl From<&FunctionRecord> for FunctionView {
    fn from(function: &FunctionRecord) -> Self {
        Self {
            journal: function
                .journal
                .iter()
                .map(JournalEntryView::from)
                .collect(),
            sleeps_ended: function.sleeps_ended.clone(),
            inbox: function.inbox.clone(),
            outcome: function.outcome.clone(),
            run: function.run,
            incarnations: function.incarnations.clone(),
            branches: function.branches.clone(),
            awaiting: function.awaiting.clone(),
            awaiting_timers: function.awaiting_timers.clone(),
            awaiting_children: function.awaiting_children.clone(),
            children_ended: function.children_ended.clone(),
            cancel_requested: function.cancel_requested.clone(),
            journal_dropped: function.journal_dropped,
        }
    }
}

impl From<FunctionView> for FunctionRecord {
    fn from(view: FunctionView) -> Self {
        Self {
            journal: view.journal.into_iter().map(JournalEntry::from).collect(),
            sleeps_ended: view.sleeps_ended,
            inbox: view.inbox,
            outcome: view.outcome,
            run: view.run,
            incarnations: view.incarnations,
            branches: view.branches,
            awaiting: view.awaiting,
            awaiting_timers: view.awaiting_timers,
            awaiting_children: view.awaiting_children,
            children_ended: view.children_ended,
            cancel_requested: view.cancel_requested,
            journal_dropped: view.journal_dropped,
        }
    }
}

/// One effect of a durable function, as its journal records it (`effect` names it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum JournalEntryView {
    /// A step ran and produced `outcome`.
    Step {
        /// The step's name.
        name: String,
        /// What it produced.
        #[schema(value_type = crate::schema::StepOutcome)]
        outcome: StepOutcome,
    },
    /// The function read the clock.
    Now {
        /// The time read.
        time: Time,
    },
    /// The function drew a random number.
    Random {
        /// The number.
        value: u64,
    },
    /// The function made a uuid.
    Uuid {
        /// The id, hyphenated.
        value: String,
    },
    /// The function started a durable timer.
    Sleep {
        /// When it ends.
        until: Time,
    },
    /// The function consumed the oldest delivered signal of a name.
    Signal {
        /// The signal's name.
        name: String,
        /// Its value.
        value: Value,
    },
    /// Code that has a change reached it.
    Patched {
        /// The change's id.
        change: String,
    },
    /// The function started a child flow.
    ChildStarted {
        /// The child's kind.
        #[schema(value_type = crate::schema::FlowKind)]
        kind: FlowKind,
        /// Its definition.
        definition: String,
        /// The child flow.
        #[schema(value_type = String, format = Uuid)]
        child: FlowId,
    },
    /// The function took a child's outcome.
    ChildJoined {
        /// The child flow.
        #[schema(value_type = String, format = Uuid)]
        child: FlowId,
        /// How it ended.
        #[schema(value_type = crate::schema::StepOutcome)]
        outcome: StepOutcome,
    },
    /// A combinator over concurrent branches settled.
    Settled {
        /// `all` or `race`.
        combinator: String,
        /// The branch that decided it.
        branch: Option<u32>,
    },
}

impl From<&JournalEntry> for JournalEntryView {
    fn from(entry: &JournalEntry) -> Self {
        match entry.clone() {
            JournalEntry::Step { name, outcome } => Self::Step { name, outcome },
            JournalEntry::Now { time } => Self::Now { time: time.into() },
            JournalEntry::Random { value } => Self::Random { value },
            JournalEntry::Uuid { value } => Self::Uuid { value },
            JournalEntry::Sleep { until } => Self::Sleep {
                until: until.into(),
            },
            JournalEntry::Signal { name, value } => Self::Signal { name, value },
            JournalEntry::Patched { change } => Self::Patched { change },
            JournalEntry::ChildStarted {
                kind,
                definition,
                child,
            } => Self::ChildStarted {
                kind,
                definition,
                child,
            },
            JournalEntry::ChildJoined { child, outcome } => Self::ChildJoined { child, outcome },
            JournalEntry::Settled { combinator, branch } => Self::Settled { combinator, branch },
            // The core's enum is non-exhaustive: an effect added there shows here as a step
            // that names it until the view learns it (the snapshot test lists every effect).
            other => Self::Step {
                name: format!("unknown effect: {other:?}"),
                outcome: Ok(Value::Null),
            },
        }
    }
}

impl From<JournalEntryView> for JournalEntry {
    fn from(view: JournalEntryView) -> Self {
        match view {
            JournalEntryView::Step { name, outcome } => Self::Step { name, outcome },
            JournalEntryView::Now { time } => Self::Now { time: time.into() },
            JournalEntryView::Random { value } => Self::Random { value },
            JournalEntryView::Uuid { value } => Self::Uuid { value },
            JournalEntryView::Sleep { until } => Self::Sleep {
                until: until.into(),
            },
            JournalEntryView::Signal { name, value } => Self::Signal { name, value },
            JournalEntryView::Patched { change } => Self::Patched { change },
            JournalEntryView::ChildStarted {
                kind,
                definition,
                child,
            } => Self::ChildStarted {
                kind,
                definition,
                child,
            },
            JournalEntryView::ChildJoined { child, outcome } => {
                Self::ChildJoined { child, outcome }
            }
            JournalEntryView::Settled { combinator, branch } => {
                Self::Settled { combinator, branch }
            }
        }
    }
}
