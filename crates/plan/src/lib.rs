//! Goal-driven plans (the Argyll model): steps declare the attributes they need and produce; a
//! flow starts with goals and inputs; the engine computes the smallest plan that reaches the
//! goals (backward chaining), runs it with independent steps in parallel, and records where
//! every attribute came from (provenance).
//!
//! **What this crate owns:** the step registry and its versions ([`Step`], [`Plans::register`]),
//! the planner ([`planner`], pure), the runtime's decisions ([`runtime`], pure: the folded flow
//! and the time in, events out), and the engine that records and runs them ([`Plans`]).
//!
//! **What it must never do:** decide anything outside [`runtime`] (the engine only stages what
//! the runtime decides and runs what the log says is running), or keep state a crash would
//! lose: after a restart every decision is made again from the log.
//!
//! The lifecycle (spec table "Goal-driven flow lifecycle"): active → completed | failed
//! (terminal: no new step or attempt starts, but work in flight is still recorded) →
//! deactivated (terminal and nothing in flight; work that will never run is recorded as
//! abandoned, so every terminal flow deactivates) → archived.

mod control;
mod engine;
pub mod planner;
mod registry;
pub mod runtime;
mod step;

pub use engine::{
    outcome, Error, PlanRequest, Plans, MAX_DECISION_BATCHES, PLAN_CACHE_ENTRIES, RETRY_TIMER,
};
pub use planner::{Catalog, PlanningError, MAX_GOALS};
pub use registry::{RegistrationError, MAX_STEP_ATTRIBUTES};

/// The plan engine's error, by its old name.
#[deprecated(since = "0.2.0", note = "renamed `Error`: one error per crate")]
pub type PlanEngineError = Error;
pub use step::{Body, Compensation, Step, StepContext, StepError, StepFuture, StepResult};
