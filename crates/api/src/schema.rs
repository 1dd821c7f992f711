//! Schemas of the core types the views embed as they are (they hold no time, so their JSON
//! is the log's): `Failure`, `FlowStatus`, a step's spec, an atom's record, … The core
//! cannot derive `ToSchema` (it knows nothing of the API), so these types exist for their
//! schema only (`#[schema(value_type = …)]` on the view's field) and are never built.
//!
//! They must describe the core types' JSON exactly: the schema test of the server validates
//! real answers against them.

#![allow(dead_code, missing_debug_implementations)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// A failure: a kind (the error's name), a message and its causes, outermost first.
#[derive(ToSchema)]
pub struct Failure {
    /// The error's name: what code may match on.
    pub kind: String,
    /// Human-readable detail.
    pub message: String,
    /// The source chain.
    #[schema(no_recursion)]
    pub causes: Option<Vec<Failure>>,
}

/// How a finished flow ended.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// It did what it was for.
    Succeeded,
    /// It failed (see `failure`).
    Failed,
    /// Someone cancelled it (see `reason`).
    Cancelled,
}

/// A flow's kind.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum FlowKind {
    /// A task graph.
    TaskGraph,
    /// A goal-driven plan.
    Plan,
    /// A durable function.
    Function,
}

/// A flow's lifecycle state, in the machine of its kind.
#[derive(ToSchema)]
pub struct FlowStatus {
    /// The machine (the flow's kind).
    pub kind: FlowKind,
    /// The state's key in it.
    pub state: String,
}

/// What a step (or a durable function, or a child flow) produced: `{"Ok": value}` or
/// `{"Err": failure}`.
#[derive(ToSchema)]
pub enum StepOutcome {
    /// Its value.
    Ok(Value),
    /// Its failure.
    Err(Failure),
}

/// An atom of a task graph, as the log says.
#[derive(ToSchema)]
pub struct AtomRecord {
    /// Its state: `{"machine": "task" | "retry", "state": KEY}`.
    pub state: BTreeMap<String, String>,
    /// What the engine means to do with it next.
    pub intention: String,
    /// The event that last changed it.
    pub last_seq: u64,
    /// What its last successful `execute` returned.
    pub result: Option<Value>,
    /// Why its last `execute` failed.
    pub failure: Option<Failure>,
    /// Why its `revert` failed.
    pub revert_failure: Option<Failure>,
    /// Whether a failed revert was later run again successfully.
    pub revert_recovered: Option<bool>,
    /// How many times it entered RUNNING.
    pub executions: u32,
    /// For a retry controller: one entry per finished attempt of its scope.
    pub history: Option<Vec<RetryAttempt>>,
}

/// One attempt of a retry controller's scope.
#[derive(ToSchema)]
pub struct RetryAttempt {
    /// The value the controller provided.
    pub value: Value,
    /// The failures that ended it, by atom.
    pub failures: BTreeMap<String, Failure>,
}

/// An input of a step.
#[derive(ToSchema)]
pub struct InputSpec {
    /// The attribute it reads.
    pub name: String,
    /// Whether the step runs without it.
    pub optional: Option<bool>,
    /// Its value when nobody provides it.
    pub default: Option<Value>,
}

/// A retry policy.
#[derive(ToSchema)]
pub struct RetryPolicy {
    /// Most attempts, the first included.
    pub max_attempts: u32,
    /// The first backoff.
    pub initial_backoff_ms: u64,
    /// The longest backoff.
    pub max_backoff_ms: u64,
    /// Whether backoffs are randomized.
    pub jitter: bool,
}

/// A predicate over a step's inputs (`{"op": …}`).
#[derive(ToSchema)]
pub struct Predicate {
    /// The operator (`exists`, `equals`, `all`, `any`, `not`, …).
    pub op: String,
}

/// A step's definition, as a plan keeps it.
#[derive(ToSchema)]
pub struct StepSpec {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// What it reads.
    pub inputs: Vec<InputSpec>,
    /// What it produces.
    pub outputs: Vec<String>,
    /// A mapped step: the list input giving one work item per element.
    pub map_over: Option<String>,
    /// Most items of a mapped step at once.
    pub parallelism: u32,
    /// Runs only if this holds over its inputs.
    pub predicate: Option<Predicate>,
    /// Its retries.
    pub retry: RetryPolicy,
    /// Longest an attempt may take.
    pub timeout_ms: Option<u64>,
    /// Whether it has a compensation.
    pub compensable: Option<bool>,
}

/// A goal: `{"goal": "step" | "attribute", "name": …}`.
#[derive(ToSchema)]
pub struct Goal {
    /// `step` or `attribute`.
    pub goal: String,
    /// The step or attribute.
    pub name: String,
}

/// What a plan runs: its goals, its steps, the provider of each attribute.
#[derive(ToSchema)]
pub struct ExecutionPlan {
    /// The goals, as asked.
    pub goals: Vec<Goal>,
    /// The planned steps, by name.
    pub steps: BTreeMap<String, StepSpec>,
    /// The chosen provider of each attribute a planned step reads.
    pub providers: BTreeMap<String, String>,
    /// Initial inputs the plan uses.
    pub inputs: Vec<String>,
}

/// What a done activation dropped when its log was compacted.
#[derive(ToSchema)]
pub struct DroppedJournal {
    /// Journal entries dropped.
    pub entries: u32,
    /// Events the log had before.
    pub events: u64,
}

/// An event body without a time (its JSON is the log's): `{"type": …, …}`.
#[derive(ToSchema)]
pub struct EventBody {
    /// The event's type.
    #[serde(rename = "type")]
    pub kind: String,
}
