//! The plan kind: a goal-driven flow's record ([`PlanRecord`]: the plan, its attributes with
//! provenance, its steps and their work items) and the fold of a plan flow's events into it.
//!
//! **What this module owns:** the rules every recorded plan event must follow, and the plan
//! arms of the fold ([`apply`]). The plan's data as written (step specs, goals, the execution
//! plan) is `crate::plan_spec`; the step and work item tables are `crate::machine`. Its public
//! items are public as `crate::plan::*`.
//!
//! **What it must never do:** decide what happens next (that is `flowstate-plan`'s runtime), run
//! a step, read the clock (times arrive in the events), or touch the parts of a flow record that
//! belong to the other kinds. And it must never change anything when it refuses an event: each
//! method checks everything before it changes anything, which keeps `Folder::apply` atomic.
//!
//! **Invariants the fold enforces** (each a [`PlanError`]): step and work events name steps and
//! items of the plan; no step or attempt starts unless the flow is active; a result is
//! recorded only for the attempt that is running (each attempt has its own completion token);
//! an attribute is set once, only by a step that declares it; a flow deactivates only when
//! nothing is in flight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{advance, wrong_kind};
use crate::event::{Event, EventBody};
use crate::failure::Failure;
use crate::fold::{FlowRecord, FlowStatus, FoldError};
use crate::machine::{InvalidState, Machine, PlanState, StepState, WorkState};
use crate::plan_spec::{ExecutionPlan, MAX_PLAN_STEPS, MAX_WORK_ITEMS_PER_STEP};
use crate::time::Timestamp;

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
    /// either applies it completely or changes nothing (each method below checks everything
    /// before it changes anything).
    pub fn apply(
        &mut self,
        state: PlanState,
        seq: u64,
        time: Timestamp,
        event: PlanEvent<'_>,
    ) -> Result<(), PlanError> {
        match event {
            PlanEvent::Started { plan, inputs } => self.start(plan, inputs, seq, time),
            PlanEvent::Lifecycle { to, reason } => self.lifecycle(to, reason),
            PlanEvent::StepStarted {
                step,
                inputs,
                items,
            } => self.step_started(state, step, inputs, items),
            PlanEvent::StepSkipped { step, reason } => self.step_skipped(step, reason),
            PlanEvent::StepFailed { step, failure } => self.step_failed(step, failure),
            PlanEvent::StepCompleted { step } => self.step_completed(step),
            PlanEvent::WorkStarted {
                step,
                item,
                attempt,
            } => self.work_started(state, step, item, attempt),
            PlanEvent::WorkSucceeded {
                step,
                item,
                attempt,
                outputs,
            } => self.work_succeeded(seq, step, item, attempt, outputs),
            PlanEvent::WorkFailed {
                step,
                item,
                attempt,
                failure,
            } => self.work_failed(step, item, attempt, failure),
            PlanEvent::RetryScheduled {
                step,
                item,
                attempt,
                failure,
                due,
            } => self.retry_scheduled(step, item, attempt, failure, due),
            PlanEvent::WorkAbandoned { step, item, reason } => {
                self.work_abandoned(step, item, reason)
            }
            PlanEvent::AttributeSet {
                name,
                value,
                step,
                attempt,
            } => self.set_attribute(name, value, step, attempt, (seq, time)),
            PlanEvent::CompensationStarted {
                step,
                item,
                attempt,
            } => self.compensation_started(state, step, item, attempt),
            PlanEvent::CompensationSucceeded { step, item } => {
                self.compensation_succeeded(step, item)
            }
            PlanEvent::CompensationFailed {
                step,
                item,
                failure,
                retry_due,
            } => self.compensation_failed(step, item, failure, retry_due),
        }
    }
}

// ---- The lifecycle: `plan_started` and `plan_state_changed` ----------------------------------

impl PlanRecord {
    /// `plan_state_changed` (the fold has checked the lifecycle pair): a flow deactivates only
    /// when nothing is in flight; a failed flow keeps its reason.
    fn lifecycle(&mut self, to: PlanState, reason: Option<&Failure>) -> Result<(), PlanError> {
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

    /// `plan_started`: the plan (checked: within MAX_PLAN_STEPS, each step stored under its own
    /// name), the flow's inputs as attributes without a step, and every step pending.
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
}

// ---- Steps -----------------------------------------------------------------------------------

impl PlanRecord {
    fn step_started(
        &mut self,
        state: PlanState,
        step: &str,
        inputs: &BTreeMap<String, serde_json::Value>,
        items: u32,
    ) -> Result<(), PlanError> {
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

    fn step_skipped(&mut self, step: &str, reason: &str) -> Result<(), PlanError> {
        let record = self.step_mut(step, "step_skipped")?;
        step_to(step, record, StepState::Skipped)?;
        record.reason = Some(reason.to_owned());
        Ok(())
    }

    fn step_failed(&mut self, step: &str, failure: &Failure) -> Result<(), PlanError> {
        let record = self.step_mut(step, "step_failed")?;
        step_to(step, record, StepState::Failed)?;
        record.failure = Some(failure.clone());
        Ok(())
    }

    /// A step completes only when every one of its items succeeded.
    fn step_completed(&mut self, step: &str) -> Result<(), PlanError> {
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
}

// ---- Work items ------------------------------------------------------------------------------

impl PlanRecord {
    /// An attempt starts: the flow and the step are active, and it is the item's next attempt.
    fn work_started(
        &mut self,
        state: PlanState,
        step: &str,
        item: u32,
        attempt: u32,
    ) -> Result<(), PlanError> {
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

    fn work_succeeded(
        &mut self,
        seq: u64,
        step: &str,
        item: u32,
        attempt: u32,
        outputs: &serde_json::Value,
    ) -> Result<(), PlanError> {
        let work = self.running(step, item, attempt, "work_succeeded")?;
        work_to(step, work, WorkState::Succeeded)?;
        work.outputs = Some(outputs.clone());
        work.failure = None;
        work.succeeded_seq = seq;
        Ok(())
    }

    fn work_failed(
        &mut self,
        step: &str,
        item: u32,
        attempt: u32,
        failure: &Failure,
    ) -> Result<(), PlanError> {
        let work = self.running(step, item, attempt, "work_failed")?;
        work_to(step, work, WorkState::Failed)?;
        work.failure = Some(failure.clone());
        Ok(())
    }

    fn retry_scheduled(
        &mut self,
        step: &str,
        item: u32,
        attempt: u32,
        failure: &Failure,
        due: Timestamp,
    ) -> Result<(), PlanError> {
        self.step_active(step, "retry_scheduled")?;
        let work = self.running(step, item, attempt, "retry_scheduled")?;
        work_to(step, work, WorkState::RetryWaiting)?;
        work.failure = Some(failure.clone());
        work.retry_due = Some(due);
        Ok(())
    }

    fn work_abandoned(&mut self, step: &str, item: u32, reason: &str) -> Result<(), PlanError> {
        let work = self.item_mut(step, item, "work_abandoned")?;
        work_to(step, work, WorkState::Abandoned)?;
        work.retry_due = None;
        work.reason = Some(reason.to_owned());
        Ok(())
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

// ---- Attributes ------------------------------------------------------------------------------

impl PlanRecord {
    /// An attribute is set once, only by a step of the plan that declares it as an output;
    /// `(seq, time)` is the event's position and time (its provenance).
    fn set_attribute(
        &mut self,
        name: &str,
        value: &serde_json::Value,
        step: &str,
        attempt: u32,
        (seq, time): (u64, Timestamp),
    ) -> Result<(), PlanError> {
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
}

// ---- Compensation ----------------------------------------------------------------------------

impl PlanRecord {
    /// A compensation attempt starts: only in a failed flow, and only the item's next one.
    fn compensation_started(
        &mut self,
        state: PlanState,
        step: &str,
        item: u32,
        attempt: u32,
    ) -> Result<(), PlanError> {
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

    fn compensation_succeeded(&mut self, step: &str, item: u32) -> Result<(), PlanError> {
        let work = self.item_mut(step, item, "compensation_succeeded")?;
        work_to(step, work, WorkState::Compensated)?;
        Ok(())
    }

    /// A failed compensation attempt: retried at `retry_due` (the item stays compensating),
    /// or failed for good.
    fn compensation_failed(
        &mut self,
        step: &str,
        item: u32,
        failure: &Failure,
        retry_due: Option<Timestamp>,
    ) -> Result<(), PlanError> {
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

// ---- The plan arms of the fold ---------------------------------------------------------------

/// Applies `event` to a plan flow in lifecycle state `state`: the lifecycle pair is checked
/// against the plan table here, everything else by [`PlanRecord::apply`]. The fold has already
/// checked the envelope and handled `flow_created` and `child_of`; any other body that is not a
/// plan event is of another kind of flow.
pub(crate) fn apply(
    record: &mut FlowRecord,
    state: PlanState,
    event: &Event,
) -> Result<(), FoldError> {
    let seq = event.seq;
    let (change, next) = match &event.body {
        EventBody::PlanStateChanged { to, reason } => {
            let mut next = state;
            advance(seq, &mut next, *to)?;
            let change = PlanEvent::Lifecycle {
                to: *to,
                reason: reason.as_ref(),
            };
            (change, next)
        }
        body => match plan_event(body, &record.input) {
            Some(change) => (change, state),
            None => return Err(wrong_kind(event, record.kind)),
        },
    };
    record
        .plan
        .get_or_insert_with(PlanRecord::default)
        .apply(state, seq, event.time, change)
        .map_err(|source| FoldError::Plan { seq, source })?;
    record.status = FlowStatus::Plan(next);
    Ok(())
}

/// The plan event a body records, if it is one (the lifecycle is handled by [`apply`] itself).
fn plan_event<'a>(body: &'a EventBody, inputs: &'a serde_json::Value) -> Option<PlanEvent<'a>> {
    match body {
        EventBody::PlanStarted { plan } => Some(PlanEvent::Started { plan, inputs }),
        EventBody::AttributeSet {
            name,
            value,
            step,
            attempt,
        } => Some(PlanEvent::AttributeSet {
            name,
            value,
            step,
            attempt: *attempt,
        }),
        _ => step_event(body)
            .or_else(|| work_event(body))
            .or_else(|| compensation_event(body)),
    }
}

/// `step_started`, `step_skipped`, `step_failed`, `step_completed`.
fn step_event(body: &EventBody) -> Option<PlanEvent<'_>> {
    Some(match body {
        EventBody::StepStarted {
            step,
            inputs,
            items,
        } => PlanEvent::StepStarted {
            step,
            inputs,
            items: *items,
        },
        EventBody::StepSkipped { step, reason } => PlanEvent::StepSkipped { step, reason },
        EventBody::StepFailed { step, failure } => PlanEvent::StepFailed { step, failure },
        EventBody::StepCompleted { step } => PlanEvent::StepCompleted { step },
        _ => return None,
    })
}

/// The events of a work item's attempts: started, succeeded, failed, retry scheduled, abandoned.
fn work_event(body: &EventBody) -> Option<PlanEvent<'_>> {
    Some(match body {
        EventBody::WorkStarted {
            step,
            item,
            attempt,
        } => PlanEvent::WorkStarted {
            step,
            item: *item,
            attempt: *attempt,
        },
        EventBody::WorkSucceeded {
            step,
            item,
            attempt,
            outputs,
        } => PlanEvent::WorkSucceeded {
            step,
            item: *item,
            attempt: *attempt,
            outputs,
        },
        EventBody::WorkFailed {
            step,
            item,
            attempt,
            failure,
        } => PlanEvent::WorkFailed {
            step,
            item: *item,
            attempt: *attempt,
            failure,
        },
        EventBody::RetryScheduled {
            step,
            item,
            attempt,
            failure,
            due,
        } => PlanEvent::RetryScheduled {
            step,
            item: *item,
            attempt: *attempt,
            failure,
            due: *due,
        },
        EventBody::WorkAbandoned { step, item, reason } => PlanEvent::WorkAbandoned {
            step,
            item: *item,
            reason,
        },
        _ => return None,
    })
}

/// `compensation_started`, `compensation_succeeded`, `compensation_failed`.
fn compensation_event(body: &EventBody) -> Option<PlanEvent<'_>> {
    Some(match body {
        EventBody::CompensationStarted {
            step,
            item,
            attempt,
        } => PlanEvent::CompensationStarted {
            step,
            item: *item,
            attempt: *attempt,
        },
        EventBody::CompensationSucceeded { step, item } => {
            PlanEvent::CompensationSucceeded { step, item: *item }
        }
        EventBody::CompensationFailed {
            step,
            item,
            failure,
            retry_due,
        } => PlanEvent::CompensationFailed {
            step,
            item: *item,
            failure,
            retry_due: *retry_due,
        },
        _ => return None,
    })
}
