//! Task graphs: tasks with `execute` and `revert`, composed as linear, unordered and graph
//! flows with retry controllers, run durably on flowstate's event log (the TaskFlow model).
//!
//! - [`task`]: the [`Task`] trait, [`TaskAtom`] declarations, tasks from closures.
//! - [`flow`]: the patterns ([`Flow::linear`], [`Flow::unordered`], [`Flow::graph`]).
//! - [`retry`]: retry controllers and their decisions.
//! - [`compile`]: nested flows to one checked DAG.
//! - [`runtime`]: the sans-I/O scheduler (what to record, what to launch).
//! - [`engine`]: the driver that records, launches and notifies.
//! - [`listener`]: transition listeners.

pub mod compile;
mod control;
pub mod engine;
pub mod flow;
pub mod listener;
pub mod retry;
pub mod runtime;
pub mod task;

pub use compile::CompileError;
pub use engine::{Engine, Error, RunOutcome};

/// The task-graph engine's error, by its old name.
#[deprecated(since = "0.2.0", note = "renamed `Error`: one error per crate")]
pub type EngineError = Error;
pub use flow::Flow;
pub use listener::{CaptureListener, Listener, Transition};
pub use retry::{
    AlwaysRevert, AlwaysRevertAll, Decision, ForEach, ParameterizedForEach, RetryAtom,
    RetryController, Times,
};
pub use task::{
    task_fn, task_fn_with_revert, Inputs, Outcome, Provides, Task, TaskAtom, TaskContext,
};
