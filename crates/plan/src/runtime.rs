//! The sans-I/O runtime of plans: every decision is a function of the folded flow and the
//! time, and comes back as events to record (the engine stages them, which folds them, and
//! asks again until nothing follows). Nothing here runs a step, reads a clock or draws
//! randomness: time and random numbers are arguments.
//!
//! One call of [`next_events`] makes one kind of decision at a time, in this order, so that
//! each decision sees the effect of the ones before it:
//!
//! 1. **Active steps settle:** a step with a failed item fails (fail-fast: its pending and
//!    waiting items are abandoned); a step whose items all succeeded completes and its
//!    outputs become attributes (a mapped step's outputs are lists, in item order); in a
//!    terminal flow, pending and waiting items are abandoned. Items start (and retries whose
//!    time came) up to the step's parallelism, only while the flow is active.
//! 2. **Pending steps start** when their inputs are there: the predicate decides between
//!    started and skipped (a started step's first items start with it, up to its
//!    parallelism); a required input that can no longer be produced fails the step
//!    ("unreachable"), which cascades round by round.
//! 3. **Goals:** all met completes the flow; a goal step failed or skipped, or a goal
//!    attribute whose provider failed, fails it.
//! 4. **Terminal flows:** a failed flow compensates its succeeded compensable items one at a
//!    time, in reverse order of success, once no compensable work is still running (a late
//!    success is compensated first); a terminal flow with nothing in flight deactivates.
//!
//! [`decide`] is [`next_events`] plus whether the batch settles the flow for now (nothing
//! would follow it), so that the engine need not ask once more to hear "nothing".

use std::collections::BTreeMap;

use flowstate_core::machine::PlanState;
use flowstate_core::{
    EventBody, Failure, FlowRecord, FlowStatus, Goal, PlanRecord, StepRecord, StepSpec, StepState,
    Timestamp, WorkState,
};
use serde_json::Value;

/// Failure kind of a step whose required input can no longer be produced.
pub const UNREACHABLE: &str = "Unreachable";
/// Failure kind of an attempt that took longer than its step's timeout.
pub const TIMEOUT: &str = "Timeout";
/// Failure kind of an attempt whose result lacks a declared output.
pub const MISSING_OUTPUT: &str = "MissingOutput";
/// Failure kind of a flow whose goal failed or became unreachable.
pub const GOAL_FAILED: &str = "GoalFailed";
/// Failure kind of a flow cancelled by a client (`Plans::cancel`).
pub const CANCELLED: &str = flowstate_core::outcome::CANCELLED;
/// Failure kind of a step whose work was abandoned because the flow ended.
pub const ABANDONED: &str = "Abandoned";

/// Most attempts of one flow running at once (over all its steps; a mapped step's own
/// parallelism bounds it further).
pub const MAX_ACTIVE_WORK_PER_FLOW: usize = 256;

/// Largest encoded inputs of one step: they are recorded in its `step_started` event, whose
/// body must stay under the event limit.
pub const MAX_STEP_INPUT_BYTES: usize = 512 * 1024;

/// What to run, or compensate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LaunchKind {
    /// The step's body.
    Execute,
    /// The step's compensation.
    Compensate,
}

/// An attempt the log says is running, which this process must run (again, after a crash:
/// with the same attempt number, so with the same token and idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Launch {
    /// The step.
    pub step: String,
    /// The work item.
    pub item: u32,
    /// The attempt (of the body or of the compensation).
    pub attempt: u32,
    /// Body or compensation.
    pub kind: LaunchKind,
}

/// The plan parts of a record, if it is a started plan.
fn parts(record: &FlowRecord) -> Option<(PlanState, &PlanRecord, &flowstate_core::ExecutionPlan)> {
    let FlowStatus::Plan(state) = record.status else {
        return None;
    };
    let plan_record = record.plan.as_ref()?;
    Some((state, plan_record, plan_record.plan.as_ref()?))
}

/// The next batch of events that follows from the flow's state at `now`; empty when nothing
/// follows until an attempt reports or time passes.
#[must_use]
pub fn next_events(record: &FlowRecord, now: Timestamp) -> Vec<EventBody> {
    decide(record, now).events
}

/// A batch of decisions, and whether it is the last until an attempt reports or time passes.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Decision {
    /// What to record (empty: nothing follows now).
    pub events: Vec<EventBody>,
    /// Once `events` are folded in, [`next_events`] would return nothing: the caller may
    /// stop asking. (`false` only means "ask again".)
    pub settled: bool,
}

impl Decision {
    fn more(events: Vec<EventBody>) -> Self {
        let settled = events.is_empty();
        Self { events, settled }
    }
}

/// [`next_events`], telling also whether the batch settles the flow for now. A batch that
/// only starts steps (each with at least one item) and items, while the goals are still
/// pending, does: starting changes no attribute and no step's outcome, so no other step
/// becomes ready or unreachable and the goals stay pending; and the started steps' items
/// were started up to their parallelism and the flow's budget already. One call less per
/// step of a linear plan (the seeded simulation checks the claim on every batch).
pub fn decide(record: &FlowRecord, now: Timestamp) -> Decision {
    let Some((state, plan_record, plan)) = parts(record) else {
        return Decision::more(Vec::new());
    };
    if matches!(state, PlanState::Deactivated | PlanState::Archived) {
        return Decision::more(Vec::new());
    }
    let active = state == PlanState::Active;
    let mut events = Vec::new();
    let running = plan_record
        .steps
        .values()
        .flat_map(|step| &step.items)
        .filter(|item| item.state == WorkState::Active)
        .count();
    let mut budget = MAX_ACTIVE_WORK_PER_FLOW.saturating_sub(running);
    let mut set_now = std::collections::BTreeSet::new();
    for (name, step, spec) in steps_with_specs(plan_record, plan) {
        if step.state == StepState::Failed {
            // A failed step's waiting work never runs (an item may have failed for good or
            // been scheduled for a retry after its step failed).
            abandon_waiting(name, step, "its step failed", &mut events);
        }
        if step.state == StepState::Active {
            let settle = Settle {
                name,
                spec,
                step,
                plan_record,
                active,
                now,
            };
            settle.decide(&mut budget, &mut set_now, &mut events);
        }
    }
    if !events.is_empty() {
        return Decision::more(events);
    }
    if active {
        for (name, step, spec) in steps_with_specs(plan_record, plan) {
            if step.state != StepState::Pending {
                continue;
            }
            match readiness(spec, plan_record, plan) {
                Readiness::Wait => {}
                Readiness::Unreachable(failure) => events.push(EventBody::StepFailed {
                    step: name.clone(),
                    failure,
                }),
                Readiness::Ready(inputs) => {
                    let started = start_step(spec, inputs);
                    let items = match &started {
                        EventBody::StepStarted { items, .. } => *items,
                        _ => 0,
                    };
                    events.push(started);
                    // Its first items start in the same batch: exactly what the next call
                    // would decide for a step whose items are all pending (see `Settle`),
                    // one rescan of every step less per step started.
                    let first = (spec.parallelism.max(1) as usize)
                        .min(items as usize)
                        .min(budget);
                    budget -= first;
                    for item in (0_u32..).take(first) {
                        events.push(EventBody::WorkStarted {
                            step: name.clone(),
                            item,
                            attempt: 1,
                        });
                    }
                }
            }
        }
        let goals = goals(plan_record, plan);
        if !events.is_empty() {
            let only_starts = events.iter().all(|event| {
                matches!(event, EventBody::StepStarted { items, .. } if *items > 0)
                    || matches!(event, EventBody::WorkStarted { .. })
            });
            let settled = only_starts && matches!(goals, Goals::Pending);
            return Decision { events, settled };
        }
        match goals {
            Goals::Met => events.push(EventBody::PlanStateChanged {
                to: PlanState::Completed,
                reason: None,
            }),
            Goals::Failed(reason) => events.push(EventBody::PlanStateChanged {
                to: PlanState::Failed,
                reason: Some(reason),
            }),
            Goals::Pending => {}
        }
        return Decision::more(events);
    }
    if state == PlanState::Failed {
        if let Some(event) = compensate(plan_record, plan, now) {
            return Decision::more(vec![event]);
        }
    }
    if plan_record.first_in_flight().is_none() && !owes_compensation(state, plan_record, plan) {
        events.push(EventBody::PlanStateChanged {
            to: PlanState::Deactivated,
            reason: None,
        });
    }
    Decision::more(events)
}

/// The plan's steps with their records and specs, in name order. The fold makes one record
/// per step of the plan at `plan_started` (and refuses a spec stored under another name), so
/// the two maps have the same keys: walking them side by side spares a lookup per step in
/// every decision batch. Were the keys ever to differ (a record not made by the fold), pairs
/// whose names differ are left out: never a step decided with another step's spec.
fn steps_with_specs<'a>(
    plan_record: &'a PlanRecord,
    plan: &'a flowstate_core::ExecutionPlan,
) -> impl Iterator<Item = (&'a String, &'a StepRecord, &'a StepSpec)> {
    debug_assert!(
        plan_record.steps.keys().eq(plan.steps.keys()),
        "the step records are not the plan's steps"
    );
    plan_record
        .steps
        .iter()
        .zip(plan.steps.values())
        .filter(|((name, _), spec)| **name == spec.name)
        .map(|((name, step), spec)| (name, step, spec))
}

/// One active step and what its decisions depend on.
struct Settle<'a> {
    name: &'a str,
    spec: &'a StepSpec,
    step: &'a StepRecord,
    plan_record: &'a PlanRecord,
    active: bool,
    now: Timestamp,
}

impl Settle<'_> {
    /// Decisions about one active step (see the module docs, 1); starts at most `budget`
    /// attempts; `set_now` holds the attributes set earlier in this batch.
    fn decide(
        &self,
        budget: &mut usize,
        set_now: &mut std::collections::BTreeSet<String>,
        events: &mut Vec<EventBody>,
    ) {
        let Self {
            name,
            spec,
            step,
            plan_record,
            active,
            now,
        } = *self;
        let abandon = |events: &mut Vec<EventBody>, reason: &str| {
            abandon_waiting(name, step, reason, events);
        };
        if let Some((index, failed)) = (0_u32..)
            .zip(&step.items)
            .find(|(_, item)| item.state == WorkState::Failed)
        {
            abandon(events, &format!("work item {index} of the step failed"));
            let failure = failed
                .failure
                .clone()
                .unwrap_or_else(|| Failure::new("WorkFailed", format!("work item {index} failed")));
            events.push(EventBody::StepFailed {
                step: name.to_owned(),
                failure,
            });
            return;
        }
        if step
            .items
            .iter()
            .all(|item| item.state == WorkState::Succeeded)
        {
            let attempt = step
                .items
                .iter()
                .map(|item| item.attempt)
                .max()
                .unwrap_or(0);
            let mut attributes = Vec::new();
            for output in &spec.outputs {
                // First wins (also within this batch); the value stays in work_succeeded for
                // the audit.
                if plan_record.attributes.contains_key(output) || set_now.contains(output) {
                    continue;
                }
                let value_of = |item: &flowstate_core::WorkRecord| {
                    item.outputs
                        .as_ref()
                        .and_then(|outputs| outputs.get(output))
                        .cloned()
                        .unwrap_or(Value::Null)
                };
                let value = if spec.map_over.is_some() {
                    Value::Array(step.items.iter().map(value_of).collect())
                } else {
                    step.items.first().map(value_of).unwrap_or(Value::Null)
                };
                // A mapped step's list can outgrow what one event holds.
                let value = match Failure::within_result_limit(value) {
                    Ok(value) => value,
                    Err(failure) => {
                        events.push(EventBody::StepFailed {
                            step: name.to_owned(),
                            failure,
                        });
                        return;
                    }
                };
                attributes.push(EventBody::AttributeSet {
                    name: output.clone(),
                    value,
                    step: name.to_owned(),
                    attempt,
                });
            }
            // Attributes before the completion: if a long round is committed in parts and
            // the process dies between them, the step is still active and settles again.
            for attribute in attributes {
                if let EventBody::AttributeSet { name, .. } = &attribute {
                    set_now.insert(name.clone());
                }
                events.push(attribute);
            }
            events.push(EventBody::StepCompleted {
                step: name.to_owned(),
            });
            return;
        }
        if !active {
            abandon(events, "the flow ended before it ran");
            let unsettled = step.items.iter().any(|item| {
                matches!(
                    item.state,
                    WorkState::Pending | WorkState::Active | WorkState::RetryWaiting
                )
            });
            if !unsettled {
                events.push(EventBody::StepFailed {
                    step: name.to_owned(),
                    failure: Failure::new(ABANDONED, "the flow ended before all its work ran"),
                });
            }
            return;
        }
        // An item waiting for its retry keeps its slot, so parallelism 1 runs items
        // strictly one after the other.
        let occupied = step
            .items
            .iter()
            .filter(|item| matches!(item.state, WorkState::Active | WorkState::RetryWaiting))
            .count();
        let mut slots = (spec.parallelism.max(1) as usize).saturating_sub(occupied);
        for (index, item) in (0_u32..).zip(&step.items) {
            if *budget == 0 {
                break;
            }
            let start = match item.state {
                WorkState::RetryWaiting => item.retry_due.is_none_or(|due| due <= now),
                WorkState::Pending if slots > 0 => {
                    slots -= 1;
                    true
                }
                _ => false,
            };
            if start {
                events.push(EventBody::WorkStarted {
                    step: name.to_owned(),
                    item: index,
                    attempt: item.attempt + 1,
                });
                *budget -= 1;
            }
        }
    }
}

/// Abandons a step's items that wait to start (pending, or waiting for a retry).
fn abandon_waiting(name: &str, step: &StepRecord, reason: &str, events: &mut Vec<EventBody>) {
    for (index, item) in (0_u32..).zip(&step.items) {
        if matches!(item.state, WorkState::Pending | WorkState::RetryWaiting) {
            events.push(EventBody::WorkAbandoned {
                step: name.to_owned(),
                item: index,
                reason: reason.to_owned(),
            });
        }
    }
}

enum Readiness {
    Wait,
    Unreachable(Failure),
    Ready(BTreeMap<String, Value>),
}

fn readiness(
    spec: &StepSpec,
    plan_record: &PlanRecord,
    plan: &flowstate_core::ExecutionPlan,
) -> Readiness {
    let mut inputs = BTreeMap::new();
    for input in &spec.inputs {
        if let Some(attribute) = plan_record.attributes.get(&input.name) {
            inputs.insert(input.name.clone(), attribute.value.clone());
            continue;
        }
        let provider = plan.providers.get(&input.name);
        let provider_state = provider
            .and_then(|p| plan_record.steps.get(p))
            .map(|s| s.state);
        match provider_state {
            Some(StepState::Pending | StepState::Active) => return Readiness::Wait,
            _ if input.optional => {
                if let Some(default) = &input.default {
                    inputs.insert(input.name.clone(), default.clone());
                }
            }
            state => {
                let why = match (provider, state) {
                    (Some(p), Some(StepState::Skipped)) => format!("step {p:?} was skipped"),
                    (Some(p), Some(StepState::Failed)) => {
                        let cause = plan_record
                            .steps
                            .get(p)
                            .and_then(|s| s.failure.as_ref())
                            .map_or_else(String::new, |f| format!(" ({}: {})", f.kind, f.message));
                        format!("step {p:?} failed{cause}")
                    }
                    (Some(p), _) => format!("step {p:?} did not produce it"),
                    (None, _) => "no step in the plan provides it".to_owned(),
                };
                return Readiness::Unreachable(Failure::new(
                    UNREACHABLE,
                    format!(
                        "required input {:?} is no longer available: {why}",
                        input.name
                    ),
                ));
            }
        }
    }
    Readiness::Ready(inputs)
}

fn start_step(spec: &StepSpec, inputs: BTreeMap<String, Value>) -> EventBody {
    let size = serde_json::to_vec(&inputs).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_STEP_INPUT_BYTES {
        return EventBody::StepFailed {
            step: spec.name.clone(),
            failure: Failure::new(
                "InputsTooLarge",
                format!("the step's inputs are {size} bytes; the limit is {MAX_STEP_INPUT_BYTES} (MAX_STEP_INPUT_BYTES): keep large data elsewhere and pass a reference"),
            ),
        };
    }
    if let Some(predicate) = &spec.predicate {
        if !predicate.holds(&inputs) {
            return EventBody::StepSkipped {
                step: spec.name.clone(),
                reason: "its predicate is false".to_owned(),
            };
        }
    }
    let items = match &spec.map_over {
        None => 1,
        Some(list) => match inputs.get(list) {
            Some(Value::Array(elements)) => {
                if elements.len() > flowstate_core::plan::MAX_WORK_ITEMS_PER_STEP {
                    return EventBody::StepFailed {
                        step: spec.name.clone(),
                        failure: Failure::new(
                            "TooManyWorkItems",
                            format!(
                                "input {list:?} has {} elements; the limit is {} (MAX_WORK_ITEMS_PER_STEP)",
                                elements.len(),
                                flowstate_core::plan::MAX_WORK_ITEMS_PER_STEP
                            ),
                        ),
                    };
                }
                u32::try_from(elements.len()).unwrap_or(u32::MAX)
            }
            other => {
                return EventBody::StepFailed {
                    step: spec.name.clone(),
                    failure: Failure::new(
                        "NotAList",
                        format!(
                            "the step maps over input {list:?}, which is {} rather than a list",
                            kind_of(other.unwrap_or(&Value::Null))
                        ),
                    ),
                }
            }
        },
    };
    EventBody::StepStarted {
        step: spec.name.clone(),
        inputs,
        items,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

enum Goals {
    Met,
    Pending,
    Failed(Failure),
}

fn goals(plan_record: &PlanRecord, plan: &flowstate_core::ExecutionPlan) -> Goals {
    let mut all_met = true;
    for goal in &plan.goals {
        let step_name = match goal {
            Goal::Step(step) => Some(step),
            Goal::Attribute(attribute) => {
                if plan_record.attributes.contains_key(attribute) {
                    continue;
                }
                plan.providers.get(attribute)
            }
        };
        let Some(step) = step_name.and_then(|name| plan_record.steps.get(name).map(|s| (name, s)))
        else {
            return Goals::Failed(Failure::new(
                GOAL_FAILED,
                format!("goal {goal} cannot be produced: nothing in the plan provides it"),
            ));
        };
        match step.1.state {
            StepState::Completed if matches!(goal, Goal::Step(_)) => {}
            StepState::Completed => {
                return Goals::Failed(Failure::new(
                    GOAL_FAILED,
                    format!(
                        "goal {goal}: step {:?} completed without producing it",
                        step.0
                    ),
                ))
            }
            StepState::Failed => {
                let why = step
                    .1
                    .failure
                    .as_ref()
                    .map_or_else(String::new, |f| format!(": {}", f.message));
                return Goals::Failed(Failure::new(
                    GOAL_FAILED,
                    format!("goal {goal}: step {:?} failed{why}", step.0),
                ));
            }
            StepState::Skipped => {
                return Goals::Failed(Failure::new(
                    GOAL_FAILED,
                    format!(
                        "goal {goal}: step {:?} was skipped ({})",
                        step.0,
                        step.1.reason.as_deref().unwrap_or("no reason recorded")
                    ),
                ))
            }
            StepState::Pending | StepState::Active => all_met = false,
        }
    }
    if all_met {
        Goals::Met
    } else {
        Goals::Pending
    }
}

/// Succeeded items of compensable steps, not yet compensated, latest success first.
fn owed(plan_record: &PlanRecord, plan: &flowstate_core::ExecutionPlan) -> Vec<(u64, String, u32)> {
    let mut owed: Vec<(u64, String, u32)> = plan_record
        .steps
        .iter()
        .filter(|(name, _)| plan.steps.get(*name).is_some_and(|spec| spec.compensable))
        .flat_map(|(name, step)| {
            (0_u32..)
                .zip(&step.items)
                .filter(|(_, item)| item.state == WorkState::Succeeded)
                .map(move |(index, item)| (item.succeeded_seq, name.clone(), index))
        })
        .collect();
    owed.sort_by(|a, b| b.cmp(a));
    owed
}

fn owes_compensation(
    state: PlanState,
    plan_record: &PlanRecord,
    plan: &flowstate_core::ExecutionPlan,
) -> bool {
    state == PlanState::Failed && !owed(plan_record, plan).is_empty()
}

/// The next compensation event of a failed flow, if one is due (see the module docs, 4).
fn compensate(
    plan_record: &PlanRecord,
    plan: &flowstate_core::ExecutionPlan,
    now: Timestamp,
) -> Option<EventBody> {
    let mut compensable_running = false;
    for (name, step) in &plan_record.steps {
        let compensable = plan.steps.get(name).is_some_and(|spec| spec.compensable);
        for (index, item) in (0_u32..).zip(&step.items) {
            match item.state {
                WorkState::Compensating => {
                    // One compensation at a time; a failed attempt is retried when due.
                    return item.compensation_due.filter(|due| *due <= now).map(|_| {
                        EventBody::CompensationStarted {
                            step: name.clone(),
                            item: index,
                            attempt: item.compensation_attempt + 1,
                        }
                    });
                }
                WorkState::Active | WorkState::RetryWaiting | WorkState::Pending if compensable => {
                    compensable_running = true;
                }
                _ => {}
            }
        }
    }
    if compensable_running {
        // A late success must be compensated before everything that succeeded earlier.
        return None;
    }
    owed(plan_record, plan)
        .into_iter()
        .next()
        .map(|(_, step, item)| EventBody::CompensationStarted {
            step,
            item,
            attempt: 1,
        })
}

/// Every attempt the log says is running (bodies, and compensations not waiting for a
/// retry). The engine runs those it is not running already.
#[must_use]
pub fn launches(record: &FlowRecord) -> Vec<Launch> {
    let Some((_, plan_record, _)) = parts(record) else {
        return Vec::new();
    };
    let mut launches = Vec::new();
    for (name, step) in &plan_record.steps {
        for (index, item) in (0_u32..).zip(&step.items) {
            match item.state {
                WorkState::Active => launches.push(Launch {
                    step: name.clone(),
                    item: index,
                    attempt: item.attempt,
                    kind: LaunchKind::Execute,
                }),
                WorkState::Compensating if item.compensation_due.is_none() => {
                    launches.push(Launch {
                        step: name.clone(),
                        item: index,
                        attempt: item.compensation_attempt,
                        kind: LaunchKind::Compensate,
                    });
                }
                _ => {}
            }
        }
    }
    launches
}

/// When the next retry (of a body or of a compensation) is due, if one waits.
#[must_use]
pub fn next_due(record: &FlowRecord) -> Option<Timestamp> {
    let (_, plan_record, _) = parts(record)?;
    plan_record
        .steps
        .values()
        .flat_map(|step| &step.items)
        .filter_map(|item| match item.state {
            WorkState::RetryWaiting => item.retry_due,
            WorkState::Compensating => item.compensation_due,
            _ => None,
        })
        .min()
}

/// The inputs of one work item: the step's inputs, with a mapped step's list replaced by
/// the item's element.
#[must_use]
pub fn item_inputs(record: &FlowRecord, step: &str, item: u32) -> BTreeMap<String, Value> {
    let Some((_, plan_record, plan)) = parts(record) else {
        return BTreeMap::new();
    };
    let Some(step_record) = plan_record.steps.get(step) else {
        return BTreeMap::new();
    };
    let mut inputs = step_record.inputs.clone();
    if let Some(list) = plan.steps.get(step).and_then(|spec| spec.map_over.as_ref()) {
        let element = inputs
            .get(list)
            .and_then(|value| value.get(item as usize))
            .cloned()
            .unwrap_or(Value::Null);
        inputs.insert(list.clone(), element);
    }
    inputs
}

/// How an attempt ended, as the body said.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// It returned these outputs (an object).
    Succeeded(Value),
    /// It failed; `retryable` says whether another attempt may help.
    Failed {
        /// Why.
        failure: Failure,
        /// Whether to retry (within the step's policy).
        retryable: bool,
    },
}

/// The event that records how `launch` ended, at `now`, with a uniform `random` number for
/// the jitter of a retry.
#[must_use]
pub fn attempt_finished(
    record: &FlowRecord,
    launch: &Launch,
    result: AttemptResult,
    now: Timestamp,
    random: u64,
) -> EventBody {
    let spec = parts(record).and_then(|(_, _, plan)| plan.steps.get(&launch.step));
    // A retry is scheduled only while the flow and the step are active: no new attempt
    // starts after either ended.
    let step_active = parts(record)
        .and_then(|(_, plan_record, _)| plan_record.steps.get(&launch.step))
        .is_some_and(|step| step.state == StepState::Active);
    let active = matches!(record.status, FlowStatus::Plan(PlanState::Active)) && step_active;
    let (step, item, attempt) = (launch.step.clone(), launch.item, launch.attempt);
    let result = match (result, spec) {
        (AttemptResult::Succeeded(outputs), Some(spec)) if launch.kind == LaunchKind::Execute => {
            checked_outputs(spec, outputs)
        }
        (result, _) => result,
    };
    let retry_at = |retryable: bool| {
        let policy = spec.map(|spec| &spec.retry)?;
        (retryable && attempt < policy.max_attempts).then(|| {
            now.saturating_add(std::time::Duration::from_millis(
                policy.backoff_ms(attempt, random),
            ))
        })
    };
    match (launch.kind, result) {
        (LaunchKind::Execute, AttemptResult::Succeeded(outputs)) => EventBody::WorkSucceeded {
            step,
            item,
            attempt,
            outputs,
        },
        (LaunchKind::Execute, AttemptResult::Failed { failure, retryable }) => {
            match retry_at(retryable && active) {
                Some(due) => EventBody::RetryScheduled {
                    step,
                    item,
                    attempt,
                    failure,
                    due,
                },
                None => EventBody::WorkFailed {
                    step,
                    item,
                    attempt,
                    failure,
                },
            }
        }
        (LaunchKind::Compensate, AttemptResult::Succeeded(_)) => {
            EventBody::CompensationSucceeded { step, item }
        }
        (LaunchKind::Compensate, AttemptResult::Failed { failure, retryable }) => {
            EventBody::CompensationFailed {
                step,
                item,
                retry_due: retry_at(retryable),
                failure,
            }
        }
    }
}

/// Outputs as recorded: an object with every declared output, within the result limit;
/// anything else is a failure that no retry would fix.
fn checked_outputs(spec: &StepSpec, outputs: Value) -> AttemptResult {
    let permanent = |failure| AttemptResult::Failed {
        failure,
        retryable: false,
    };
    let Some(fields) = outputs.as_object() else {
        return permanent(Failure::new(
            MISSING_OUTPUT,
            format!(
                "step {:?} returned {} instead of an object of its outputs {:?}",
                spec.name,
                kind_of(&outputs),
                spec.outputs
            ),
        ));
    };
    if let Some(missing) = spec.outputs.iter().find(|name| !fields.contains_key(*name)) {
        return permanent(Failure::new(
            MISSING_OUTPUT,
            format!("step {:?} did not return its output {missing:?}", spec.name),
        ));
    }
    match Failure::within_result_limit(outputs) {
        Ok(outputs) => AttemptResult::Succeeded(outputs),
        Err(failure) => permanent(failure),
    }
}
