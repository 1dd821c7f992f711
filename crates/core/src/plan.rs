//! Goal-driven plans: what a plan is (stored whole in the flow's `plan_started` event), the
//! machines of its steps and work items, and the fold of a plan flow's events into its state
//! (attributes with provenance, steps, work items).
//!
//! **What this module owns:** the data of a plan and the rules every recorded plan event must
//! follow. It never decides what happens next (that is `flowstate-plan`'s runtime) and never
//! runs a step.
//!
//! **The step and work tables** ([`StepState`], [`WorkState`]) live in `crate::machine` with
//! the other machines; they are re-exported here, where they were first defined.
//!
//! **Invariants the fold enforces** (each a [`PlanError`]): step and work events name steps and
//! items of the plan; no step or attempt starts unless the flow is active; a result is
//! recorded only for the attempt that is running (each attempt has its own completion token);
//! an attribute is set once, only by a step that declares it; a flow deactivates only when
//! nothing is in flight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::machine::{InvalidState, Machine, PlanState};
pub use crate::machine::{StepState, WorkState};
use crate::time::Timestamp;

/// Most work items one step may have (a mapped step over a longer list fails).
pub const MAX_WORK_ITEMS_PER_STEP: usize = 10_000;

/// Most attempts a retry policy may allow per work item.
pub const MAX_STEP_ATTEMPTS: u32 = 1_000;

/// Most steps one plan may hold.
pub const MAX_PLAN_STEPS: usize = 10_000;

/// An input of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The attribute it reads.
    pub name: String,
    /// Whether the step may run without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// For an optional input: the value used when no provider produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// How a failed attempt is retried: exponential backoff from `initial_backoff_ms`, doubling,
/// capped at `max_backoff_ms`, with full jitter when `jitter` is set (the delay is drawn
/// uniformly between half and all of the backoff, so retries of many flows spread out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, 1 to [`MAX_STEP_ATTEMPTS`] (1: no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff_ms: u64,
    /// Longest delay between attempts.
    pub max_backoff_ms: u64,
    /// Whether delays are jittered.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff_ms: 100,
            max_backoff_ms: 60_000,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), given a uniform random number.
    #[must_use]
    pub fn backoff_ms(&self, attempt: u32, random: u64) -> u64 {
        let doublings = attempt.saturating_sub(1).min(40);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.max_backoff_ms);
        if !self.jitter || base < 2 {
            return base;
        }
        let half = base / 2;
        half + random % (base - half + 1)
    }
}

/// A condition over a step's inputs; the step runs only if it holds. Data, not code, so that
/// it is stored with the plan and a step registered over HTTP can have one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Predicate {
    /// The input has a value (not null).
    Exists {
        /// The input.
        input: String,
    },
    /// The input equals the value.
    Equals {
        /// The input.
        input: String,
        /// The value.
        value: serde_json::Value,
    },
    /// The input is a number greater than the value.
    GreaterThan {
        /// The input.
        input: String,
        /// The bound.
        value: f64,
    },
    /// The input is a number less than the value.
    LessThan {
        /// The input.
        input: String,
        /// The bound.
        value: f64,
    },
    /// The input is true, a non-zero number, a non-empty string, list or object.
    Truthy {
        /// The input.
        input: String,
    },
    /// Every condition holds.
    All {
        /// The conditions.
        of: Vec<Predicate>,
    },
    /// Some condition holds.
    Any {
        /// The conditions.
        of: Vec<Predicate>,
    },
    /// The condition does not hold.
    Not {
        /// The condition.
        not: Box<Predicate>,
    },
}

impl Predicate {
    /// Evaluates the condition over a step's inputs.
    #[must_use]
    pub fn holds(&self, inputs: &BTreeMap<String, serde_json::Value>) -> bool {
        use serde_json::Value;
        let get = |name: &str| inputs.get(name).filter(|value| !value.is_null());
        match self {
            Self::Exists { input } => get(input).is_some(),
            Self::Equals { input, value } => inputs.get(input).unwrap_or(&Value::Null) == value,
            Self::GreaterThan { input, value } => get(input)
                .and_then(Value::as_f64)
                .is_some_and(|found| found > *value),
            Self::LessThan { input, value } => get(input)
                .and_then(Value::as_f64)
                .is_some_and(|found| found < *value),
            Self::Truthy { input } => match get(input) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(flag)) => *flag,
                Some(Value::Number(number)) => number.as_f64().is_some_and(|n| n != 0.0),
                Some(Value::String(text)) => !text.is_empty(),
                Some(Value::Array(items)) => !items.is_empty(),
                Some(Value::Object(fields)) => !fields.is_empty(),
            },
            Self::All { of } => of.iter().all(|p| p.holds(inputs)),
            Self::Any { of } => of.iter().any(|p| p.holds(inputs)),
            Self::Not { not } => !not.holds(inputs),
        }
    }

    /// Every input the condition reads.
    #[must_use]
    pub fn inputs(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_inputs(&mut names);
        names
    }

    fn collect_inputs<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Self::Exists { input }
            | Self::Equals { input, .. }
            | Self::GreaterThan { input, .. }
            | Self::LessThan { input, .. }
            | Self::Truthy { input } => names.push(input),
            Self::All { of } | Self::Any { of } => {
                of.iter().for_each(|p| p.collect_inputs(names));
            }
            Self::Not { not } => not.collect_inputs(names),
        }
    }
}

/// A step as a plan stores it: everything needed to run it except its code, which the engine
/// finds by name and version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Its name, unique in a registry.
    pub name: String,
    /// Its version: a running flow keeps the version it was planned with.
    pub version: u32,
    /// What it reads.
    pub inputs: Vec<InputSpec>,
    /// The attributes it produces.
    pub outputs: Vec<String>,
    /// A mapped step: the (required) input whose list value gives one work item per element.
    /// Each output becomes a list, in the order of the elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_over: Option<String>,
    /// For a mapped step: most work items running at once.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Runs only if this holds over its inputs; otherwise it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Predicate>,
    /// How failed attempts are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Longest an attempt may take; a slower one fails with kind `Timeout` (retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether it has a compensation, run (in reverse order of success) when the flow fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensable: bool,
}

const fn one() -> u32 {
    1
}

impl StepSpec {
    /// The input named `name`.
    #[must_use]
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|input| input.name == name)
    }
}

/// A goal: a step to run or an attribute to produce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "goal", content = "name", rename_all = "snake_case")]
pub enum Goal {
    /// This step must complete.
    Step(String),
    /// This attribute must be set.
    Attribute(String),
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step(name) => write!(f, "step {name:?}"),
            Self::Attribute(name) => write!(f, "attribute {name:?}"),
        }
    }
}

/// What a flow runs: its goals, the steps that reach them (whole definitions, so a flow never
/// changes under later registrations and replay needs no registry), and which step provides
/// each attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    /// The goals, as asked.
    pub goals: Vec<Goal>,
    /// The planned steps, by name.
    pub steps: BTreeMap<String, StepSpec>,
    /// The chosen provider of each attribute a planned step reads (absent: an initial input,
    /// or an optional input nobody provides).
    pub providers: BTreeMap<String, String>,
    /// Initial inputs the plan uses.
    pub inputs: Vec<String>,
}

/// Where an attribute's value came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeValue {
    /// The value.
    pub value: serde_json::Value,
    /// The step that produced it (`None`: an initial input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt that produced it (for a mapped step: the highest among its items).
    #[serde(default)]
    pub attempt: u32,
    /// The event that set it.
    pub seq: u64,
    /// When.
    pub time: Timestamp,
}

/// One work item, as the log says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkRecord {
    /// Its state.
    pub state: WorkState,
    /// The attempt started last (0: none yet).
    pub attempt: u32,
    /// When its next attempt is due (retry_waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_due: Option<Timestamp>,
    /// What the succeeded attempt returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
    /// The last failure (of an attempt or of its compensation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The event that recorded its success (compensation runs in reverse order of these).
    #[serde(default)]
    pub succeeded_seq: u64,
    /// The compensation attempt started last.
    #[serde(default)]
    pub compensation_attempt: u32,
    /// When the next compensation attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_due: Option<Timestamp>,
    /// The last abandonment's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl WorkRecord {
    fn new() -> Self {
        Self {
            state: WorkState::INITIAL,
            attempt: 0,
            retry_due: None,
            outputs: None,
            failure: None,
            succeeded_seq: 0,
            compensation_attempt: 0,
            compensation_due: None,
            reason: None,
        }
    }
}

/// One step, as the log says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its state.
    pub state: StepState,
    /// The inputs it started with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Its work items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<WorkRecord>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// A plan flow's state beyond its lifecycle: the plan, its attributes and its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlanRecord {
    /// The plan (absent until `plan_started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ExecutionPlan>,
    /// Attributes with their provenance.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Steps of the plan, by name.
    #[serde(default)]
    pub steps: BTreeMap<String, StepRecord>,
    /// Why the flow failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Why a plan event does not follow from the flow's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `plan_started` came twice.
    #[error("the plan was already started")]
    StartedTwice,
    /// A step or work event before `plan_started`.
    #[error("{event} before plan_started")]
    NotStarted {
        /// The event's type.
        event: &'static str,
    },
    /// The plan is not valid data (too many steps, or a step missing from its own map).
    #[error("invalid plan: {reason}")]
    InvalidPlan {
        /// What is wrong.
        reason: String,
    },
    /// A step the plan does not hold.
    #[error("step {step:?} is not in the plan")]
    UnknownStep {
        /// The step.
        step: String,
    },
    /// A work item the step does not have.
    #[error("step {step:?} has no work item {item}")]
    UnknownItem {
        /// The step.
        step: String,
        /// The item.
        item: u32,
    },
    /// A step or an attempt started after the flow became terminal.
    #[error("{event} for step {step:?} while the flow is {state}: after it is terminal no new work starts")]
    NotActive {
        /// The event's type.
        event: &'static str,
        /// The step.
        step: String,
        /// The flow's state.
        state: &'static str,
    },
    /// An attempt started or retried for a step that is not active.
    #[error("{event} for step {step:?}, which is {state}: only an active step's work runs")]
    StepNotActive {
        /// The event's type.
        event: &'static str,
        /// The step.
        step: String,
        /// The step's state.
        state: &'static str,
    },
    /// A compensation in a flow that did not fail.
    #[error(
        "compensation of step {step:?} while the flow is {state}: only a failed flow compensates"
    )]
    NotFailed {
        /// The step.
        step: String,
        /// The flow's state.
        state: &'static str,
    },
    /// A report for another attempt than the one running (a stale or duplicate completion).
    #[error("step {step:?} item {item}: report for attempt {reported}, but attempt {current} is the one running ({state})")]
    StaleAttempt {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// The attempt reported.
        reported: u32,
        /// The current attempt.
        current: u32,
        /// The item's state.
        state: &'static str,
    },
    /// Too many work items.
    #[error(
        "step {step:?} has {items} work items; the limit is {limit} (MAX_WORK_ITEMS_PER_STEP)"
    )]
    TooManyItems {
        /// The step.
        step: String,
        /// How many.
        items: usize,
        /// The limit.
        limit: usize,
    },
    /// A step completed while some item had not succeeded.
    #[error("step {step:?} completed, but work item {item} is {state}")]
    Incomplete {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// Its state.
        state: &'static str,
    },
    /// An attribute set twice.
    #[error("attribute {name:?} is set twice")]
    AttributeSetTwice {
        /// The attribute.
        name: String,
    },
    /// An attribute set by a step that does not declare it.
    #[error("attribute {name:?} set by step {step:?}, which does not declare it as an output")]
    UndeclaredOutput {
        /// The attribute.
        name: String,
        /// The step.
        step: String,
    },
    /// Deactivated while something is in flight.
    #[error("deactivated while step {step:?} item {item} is {state}: a flow deactivates only when nothing is in flight")]
    InFlight {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// Its state.
        state: &'static str,
    },
    /// A step or work transition the tables refuse.
    #[error("step {step:?}: {source}")]
    Transition {
        /// The step.
        step: String,
        /// What the table said.
        source: InvalidState,
    },
}

/// A plan event, borrowed from the event body, for [`PlanRecord::apply`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum PlanEvent<'a> {
    /// `plan_started`.
    Started {
        /// The plan.
        plan: &'a ExecutionPlan,
        /// The flow's initial inputs (`flow_created`'s input).
        inputs: &'a serde_json::Value,
    },
    /// `step_started`.
    StepStarted {
        /// The step.
        step: &'a str,
        /// Its inputs.
        inputs: &'a BTreeMap<String, serde_json::Value>,
        /// Its work items.
        items: u32,
    },
    /// `step_skipped`.
    StepSkipped {
        /// The step.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// `step_failed`.
    StepFailed {
        /// The step.
        step: &'a str,
        /// Why.
        failure: &'a Failure,
    },
    /// `step_completed`.
    StepCompleted {
        /// The step.
        step: &'a str,
    },
    /// `work_started`.
    WorkStarted {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// The attempt (the item's last plus one).
        attempt: u32,
    },
    /// `work_succeeded`.
    WorkSucceeded {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// The attempt reporting.
        attempt: u32,
        /// What it returned.
        outputs: &'a serde_json::Value,
    },
    /// `work_failed`.
    WorkFailed {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// The attempt reporting.
        attempt: u32,
        /// Why.
        failure: &'a Failure,
    },
    /// `retry_scheduled`.
    RetryScheduled {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        failure: &'a Failure,
        /// When the next attempt is due.
        due: Timestamp,
    },
    /// `work_abandoned`.
    WorkAbandoned {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// Why.
        reason: &'a str,
    },
    /// `attribute_set`.
    AttributeSet {
        /// The attribute.
        name: &'a str,
        /// Its value.
        value: &'a serde_json::Value,
        /// The producing step.
        step: &'a str,
        /// The producing attempt.
        attempt: u32,
    },
    /// `compensation_started`.
    CompensationStarted {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// The compensation attempt (the last plus one).
        attempt: u32,
    },
    /// `compensation_succeeded`.
    CompensationSucceeded {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
    },
    /// `compensation_failed`.
    CompensationFailed {
        /// The step.
        step: &'a str,
        /// The item.
        item: u32,
        /// Why.
        failure: &'a Failure,
        /// When the next attempt is due (`None`: failed for good).
        retry_due: Option<Timestamp>,
    },
    /// `plan_state_changed` (the lifecycle itself is checked by the fold).
    Lifecycle {
        /// The new state.
        to: PlanState,
        /// Why, on failed.
        reason: Option<&'a Failure>,
    },
}

impl PlanRecord {
    /// The plan, once started.
    #[must_use]
    pub fn plan(&self) -> Option<&ExecutionPlan> {
        self.plan.as_ref()
    }

    /// The first work item that still blocks deactivation, if any.
    #[must_use]
    pub fn first_in_flight(&self) -> Option<(&str, u32, WorkState)> {
        self.steps.iter().find_map(|(name, step)| {
            step.items
                .iter()
                .zip(0_u32..)
                .find(|(item, _)| item.state.in_flight())
                .map(|(item, index)| (name.as_str(), index, item.state))
        })
    }

    /// Applies one plan event at `seq` and `time`, in a flow in lifecycle state `state`;
    /// either applies it completely or changes nothing.
    pub fn apply(
        &mut self,
        state: PlanState,
        seq: u64,
        time: Timestamp,
        event: PlanEvent<'_>,
    ) -> Result<(), PlanError> {
        match event {
            PlanEvent::Started { plan, inputs } => self.start(plan, inputs, seq, time),
            PlanEvent::Lifecycle { to, reason } => {
                if to == PlanState::Deactivated && self.plan.is_some() {
                    if let Some((step, item, work)) = self.first_in_flight() {
                        return Err(PlanError::InFlight {
                            step: step.to_owned(),
                            item,
                            state: work.label(),
                        });
                    }
                }
                if to == PlanState::Failed {
                    self.failure = reason.cloned();
                }
                Ok(())
            }
            PlanEvent::StepStarted {
                step,
                inputs,
                items,
            } => {
                active(state, "step_started", step)?;
                let record = self.step_mut(step, "step_started")?;
                if items as usize > MAX_WORK_ITEMS_PER_STEP {
                    return Err(PlanError::TooManyItems {
                        step: step.to_owned(),
                        items: items as usize,
                        limit: MAX_WORK_ITEMS_PER_STEP,
                    });
                }
                step_to(step, record, StepState::Active)?;
                record.inputs.clone_from(inputs);
                record.items = (0..items).map(|_| WorkRecord::new()).collect();
                Ok(())
            }
            PlanEvent::StepSkipped { step, reason } => {
                let record = self.step_mut(step, "step_skipped")?;
                step_to(step, record, StepState::Skipped)?;
                record.reason = Some(reason.to_owned());
                Ok(())
            }
            PlanEvent::StepFailed { step, failure } => {
                let record = self.step_mut(step, "step_failed")?;
                step_to(step, record, StepState::Failed)?;
                record.failure = Some(failure.clone());
                Ok(())
            }
            PlanEvent::StepCompleted { step } => {
                let record = self.step_mut(step, "step_completed")?;
                if let Some((index, item)) = (0_u32..)
                    .zip(&record.items)
                    .find(|(_, item)| item.state != WorkState::Succeeded)
                {
                    return Err(PlanError::Incomplete {
                        step: step.to_owned(),
                        item: index,
                        state: item.state.label(),
                    });
                }
                step_to(step, record, StepState::Completed)
            }
            PlanEvent::WorkStarted {
                step,
                item,
                attempt,
            } => {
                active(state, "work_started", step)?;
                self.step_active(step, "work_started")?;
                let work = self.item_mut(step, item, "work_started")?;
                if attempt != work.attempt + 1 {
                    return Err(stale(step, item, attempt, work));
                }
                work_to(step, work, WorkState::Active)?;
                work.attempt = attempt;
                work.retry_due = None;
                Ok(())
            }
            PlanEvent::WorkSucceeded {
                step,
                item,
                attempt,
                outputs,
            } => {
                let work = self.running(step, item, attempt, "work_succeeded")?;
                work_to(step, work, WorkState::Succeeded)?;
                work.outputs = Some(outputs.clone());
                work.failure = None;
                work.succeeded_seq = seq;
                Ok(())
            }
            PlanEvent::WorkFailed {
                step,
                item,
                attempt,
                failure,
            } => {
                let work = self.running(step, item, attempt, "work_failed")?;
                work_to(step, work, WorkState::Failed)?;
                work.failure = Some(failure.clone());
                Ok(())
            }
            PlanEvent::RetryScheduled {
                step,
                item,
                attempt,
                failure,
                due,
            } => {
                self.step_active(step, "retry_scheduled")?;
                let work = self.running(step, item, attempt, "retry_scheduled")?;
                work_to(step, work, WorkState::RetryWaiting)?;
                work.failure = Some(failure.clone());
                work.retry_due = Some(due);
                Ok(())
            }
            PlanEvent::WorkAbandoned { step, item, reason } => {
                let work = self.item_mut(step, item, "work_abandoned")?;
                work_to(step, work, WorkState::Abandoned)?;
                work.retry_due = None;
                work.reason = Some(reason.to_owned());
                Ok(())
            }
            PlanEvent::AttributeSet {
                name,
                value,
                step,
                attempt,
            } => {
                let spec = self
                    .plan
                    .as_ref()
                    .ok_or(PlanError::NotStarted {
                        event: "attribute_set",
                    })?
                    .steps
                    .get(step)
                    .ok_or_else(|| PlanError::UnknownStep {
                        step: step.to_owned(),
                    })?;
                if !spec.outputs.iter().any(|output| output == name) {
                    return Err(PlanError::UndeclaredOutput {
                        name: name.to_owned(),
                        step: step.to_owned(),
                    });
                }
                if self.attributes.contains_key(name) {
                    return Err(PlanError::AttributeSetTwice {
                        name: name.to_owned(),
                    });
                }
                self.attributes.insert(
                    name.to_owned(),
                    AttributeValue {
                        value: value.clone(),
                        step: Some(step.to_owned()),
                        attempt,
                        seq,
                        time,
                    },
                );
                Ok(())
            }
            PlanEvent::CompensationStarted {
                step,
                item,
                attempt,
            } => {
                if state != PlanState::Failed {
                    return Err(PlanError::NotFailed {
                        step: step.to_owned(),
                        state: state.label(),
                    });
                }
                let work = self.item_mut(step, item, "compensation_started")?;
                if attempt != work.compensation_attempt + 1 {
                    return Err(stale(step, item, attempt, work));
                }
                if work.state != WorkState::Compensating {
                    work_to(step, work, WorkState::Compensating)?;
                }
                work.compensation_attempt = attempt;
                work.compensation_due = None;
                Ok(())
            }
            PlanEvent::CompensationSucceeded { step, item } => {
                let work = self.item_mut(step, item, "compensation_succeeded")?;
                work_to(step, work, WorkState::Compensated)?;
                Ok(())
            }
            PlanEvent::CompensationFailed {
                step,
                item,
                failure,
                retry_due,
            } => {
                let work = self.item_mut(step, item, "compensation_failed")?;
                match retry_due {
                    Some(due) => {
                        if work.state != WorkState::Compensating {
                            return Err(PlanError::Transition {
                                step: step.to_owned(),
                                source: InvalidState {
                                    machine: WorkState::MACHINE,
                                    from: work.state.label(),
                                    to: WorkState::Compensating.label(),
                                },
                            });
                        }
                        work.compensation_due = Some(due);
                    }
                    None => work_to(step, work, WorkState::CompensationFailed)?,
                }
                work.failure = Some(failure.clone());
                Ok(())
            }
        }
    }

    fn start(
        &mut self,
        plan: &ExecutionPlan,
        inputs: &serde_json::Value,
        seq: u64,
        time: Timestamp,
    ) -> Result<(), PlanError> {
        if self.plan.is_some() {
            return Err(PlanError::StartedTwice);
        }
        if plan.steps.len() > MAX_PLAN_STEPS {
            return Err(PlanError::InvalidPlan {
                reason: format!(
                    "{} steps; the limit is {MAX_PLAN_STEPS} (MAX_PLAN_STEPS)",
                    plan.steps.len()
                ),
            });
        }
        if let Some((name, spec)) = plan.steps.iter().find(|(name, spec)| **name != spec.name) {
            return Err(PlanError::InvalidPlan {
                reason: format!("step {name:?} is stored as {:?}", spec.name),
            });
        }
        let mut attributes = BTreeMap::new();
        if let Some(fields) = inputs.as_object() {
            for (name, value) in fields {
                attributes.insert(
                    name.clone(),
                    AttributeValue {
                        value: value.clone(),
                        step: None,
                        attempt: 0,
                        seq,
                        time,
                    },
                );
            }
        }
        self.attributes = attributes;
        self.steps = plan
            .steps
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    StepRecord {
                        state: StepState::INITIAL,
                        inputs: BTreeMap::new(),
                        items: Vec::new(),
                        reason: None,
                        failure: None,
                    },
                )
            })
            .collect();
        self.plan = Some(plan.clone());
        Ok(())
    }

    fn step_mut(&mut self, step: &str, event: &'static str) -> Result<&mut StepRecord, PlanError> {
        if self.plan.is_none() {
            return Err(PlanError::NotStarted { event });
        }
        self.steps
            .get_mut(step)
            .ok_or_else(|| PlanError::UnknownStep {
                step: step.to_owned(),
            })
    }

    /// Refuses work events for a step that is not active (a failed step's items never start
    /// again, and are not retried).
    fn step_active(&mut self, step: &str, event: &'static str) -> Result<(), PlanError> {
        let record = self.step_mut(step, event)?;
        if record.state == StepState::Active {
            Ok(())
        } else {
            Err(PlanError::StepNotActive {
                event,
                step: step.to_owned(),
                state: record.state.label(),
            })
        }
    }

    fn item_mut(
        &mut self,
        step: &str,
        item: u32,
        event: &'static str,
    ) -> Result<&mut WorkRecord, PlanError> {
        self.step_mut(step, event)?
            .items
            .get_mut(item as usize)
            .ok_or_else(|| PlanError::UnknownItem {
                step: step.to_owned(),
                item,
            })
    }

    /// The item, if `attempt` is the one running.
    fn running(
        &mut self,
        step: &str,
        item: u32,
        attempt: u32,
        event: &'static str,
    ) -> Result<&mut WorkRecord, PlanError> {
        let work = self.item_mut(step, item, event)?;
        if work.state != WorkState::Active || work.attempt != attempt {
            return Err(stale(step, item, attempt, work));
        }
        Ok(work)
    }
}

fn active(state: PlanState, event: &'static str, step: &str) -> Result<(), PlanError> {
    if state == PlanState::Active {
        Ok(())
    } else {
        Err(PlanError::NotActive {
            event,
            step: step.to_owned(),
            state: state.label(),
        })
    }
}

fn stale(step: &str, item: u32, reported: u32, work: &WorkRecord) -> PlanError {
    PlanError::StaleAttempt {
        step: step.to_owned(),
        item,
        reported,
        current: work.attempt,
        state: work.state.label(),
    }
}

fn step_to(step: &str, record: &mut StepRecord, to: StepState) -> Result<(), PlanError> {
    transition(step, &mut record.state, to)
}

fn work_to(step: &str, work: &mut WorkRecord, to: WorkState) -> Result<(), PlanError> {
    transition(step, &mut work.state, to)
}

/// Moves a step or work machine; a recorded no-op is refused like a forbidden pair (writers
/// never record one).
fn transition<M: Machine>(step: &str, state: &mut M, to: M) -> Result<(), PlanError> {
    let from = *state;
    match state.advance(to) {
        Ok(crate::machine::Transition::Allowed) => Ok(()),
        Ok(crate::machine::Transition::Ignored) | Err(_) => Err(PlanError::Transition {
            step: step.to_owned(),
            source: InvalidState {
                machine: M::MACHINE,
                from: from.label(),
                to: to.label(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            jitter: false,
        };
        let delays: Vec<u64> = (1..=6).map(|n| policy.backoff_ms(n, 0)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        let jittered = RetryPolicy {
            jitter: true,
            ..policy
        };
        for random in [0, 1, 77, u64::MAX] {
            let delay = jittered.backoff_ms(3, random);
            assert!((200..=400).contains(&delay), "{delay}");
        }
        assert_eq!(jittered.backoff_ms(u32::MAX, 0), 500);
    }

    #[test]
    fn predicates_read_inputs() {
        let inputs: BTreeMap<String, serde_json::Value> = [
            ("amount".to_owned(), serde_json::json!(150)),
            ("country".to_owned(), serde_json::json!("NL")),
            ("note".to_owned(), serde_json::Value::Null),
        ]
        .into_iter()
        .collect();
        let large = Predicate::GreaterThan {
            input: "amount".into(),
            value: 100.0,
        };
        assert!(large.holds(&inputs));
        assert!(!Predicate::Exists {
            input: "note".into()
        }
        .holds(&inputs));
        let both = Predicate::All {
            of: vec![
                large.clone(),
                Predicate::Equals {
                    input: "country".into(),
                    value: serde_json::json!("NL"),
                },
            ],
        };
        assert!(both.holds(&inputs));
        assert!(!Predicate::Not {
            not: Box::new(both.clone())
        }
        .holds(&inputs));
        assert_eq!(both.inputs(), ["amount", "country"]);
    }
}
