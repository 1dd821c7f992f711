//! Durable async functions: a plain Rust `async fn` whose effects go through a context
//! ([`Ctx`]) that journals them. After a crash or an upgrade the function runs again from
//! the start and each effect is matched with the next journal entry: a match returns the
//! recorded outcome without running anything; anything else puts the activation in *replay
//! failure* with a diagnostic (journal position, what was logged, what the code did, and the
//! source location of the call), until a version of the code that reproduces the journal
//! repairs it. The model is Agoric's async-flow (`../shared/research/async-flow.md`), with the
//! lessons of its bugs.
//!
//! **What it owns:** the registry of functions (closed functions only), the context and its
//! effects, and the driver that runs one activation on the await runtime (`flowstate-rt`)
//! against its journal and records what it does. The journal format, replay matching and
//! the activation machine are the sans-I/O core's (`flowstate_core::journal`).
//!
//! **Where activations run:** on a few driver threads (one per core), each an await runtime
//! that multiplexes many activations; a thread must never block, so step bodies are async.
//!
//! **Lifecycle** (the spec's activation machine, every transition an event): a new
//! activation is *active current*; one that waits on a timer or a signal that has not
//! settled is *sleeping* (unloaded: its task is dropped, only its log remains) and is woken
//! by the worker when the timer fires or a signal arrives; a woken activation is *active
//! replay* until it reaches the end of its journal, then active current again; a divergence
//! is *replay failure*, retried by [`Functions::wake_all`] with the code of the next process;
//! a return is *done*.
//!
//! **Effects run one at a time, from the function's own task.** A live effect holds the
//! activation's writer from its call until its entry is durable, so journal order is call
//! order. Effects from concurrent branches (`flowstate_rt::all`, `race`, `spawn`) are refused
//! with an error: one journal cursor cannot reproduce how such branches interleaved, and a
//! wrong replay is worse than none. Journaling per branch is the next step.
//!
//! **What a function must be:** closed (it captures nothing: [`Functions::register`] checks
//! that the function value is zero-sized, which async-flow cannot), and deterministic apart
//! from its effects: everything it learns from outside comes through the context.

mod ctx;
mod driver;
mod engine;
mod registry;

pub use ctx::Ctx;
pub use driver::{CANCELLED, DEADLOCK_GRACE, MAX_DRIVER_THREADS};
pub use engine::{
    request_cancel, send_signal, FunctionError, Functions, StartError, MAX_ACTIVE_ACTIVATIONS,
};
pub use registry::RegisterError;
