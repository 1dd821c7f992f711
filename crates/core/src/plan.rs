//! Goal-driven plans: what a plan is (stored whole in the flow's `plan_started` event), the
//! machines of its steps and work items, and the fold of a plan flow's events into its state
//! (attributes with provenance, steps, work items).
//!
//! This module is the public path of all of it; the code lives with its kind:
//!
//! - the plan's data as written and stored (step specs, retry policies, predicates, goals, the
//!   execution plan and its limits): `plan_spec.rs`;
//! - the step and work item tables ([`StepState`], [`WorkState`]): `machine/plan_steps.rs`,
//!   with the other machines;
//! - the plan record ([`PlanRecord`], [`StepRecord`], [`WorkRecord`], [`AttributeValue`]), the
//!   events it folds ([`PlanEvent`]) and why it refuses one ([`PlanError`]): `kind/plan.rs`.
//!
//! **What plans own:** the data of a plan and the rules every recorded plan event must follow.
//! They never decide what happens next (that is `flowstate-plan`'s runtime) and never run a
//! step.

pub use crate::kind::plan::{
    AttributeValue, PlanError, PlanEvent, PlanRecord, StepRecord, WorkRecord,
};
pub use crate::machine::{StepState, WorkState};
pub use crate::plan_spec::{
    ExecutionPlan, Goal, InputSpec, Predicate, RetryPolicy, StepSpec, MAX_PLAN_STEPS,
    MAX_STEP_ATTEMPTS, MAX_WORK_ITEMS_PER_STEP,
};
