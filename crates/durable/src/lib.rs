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
//! effects, and the drivers that run activations on the await runtime (`flowstate-rt`)
//! against their journals and record what they do. The journal format, replay matching and
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
//! **Concurrency.** `ctx.all` and `ctx.race` run branches at once, each with a context of
//! its own; each branch's effects are journaled with the branch's path and replayed in the
//! branch's own order, and the combinator records which branch decided it, so a replay
//! reproduces the outcome whatever the timing (a race replays its recorded winner, and only
//! it). Effects from any other task (`flowstate_rt::spawn`, or `flowstate_rt::all` over
//! effects of one context) are refused with an error: no journal could say where they
//! belong. Commits are serialized on the activation's writer; step bodies are not.
//!
//! **Sleeping.** A durable wait (a sleep, a signal) suspends its branch; the activation
//! sleeps once every branch waits and nothing is in flight, and records what it waits for
//! (timers, signal names), so that only those wake it.
//!
//! **Cancellation** ([`Functions::cancel`]): the activation stops at its next live effect
//! (a step in flight finishes and is recorded first; a sleeping one is woken for it), its code
//! is dropped so its cleanup runs, and it is done with a [`CANCELLED`] failure.
//!
//! **Pending work when a function returns:** a function returns only when its own task
//! does; combinators return only once settled (losers and the rest of a failed `all` are
//! aborted before, and a commit they had under way finishes), so no step of a returned
//! function is still in flight. Child flows are flows of their own: a function that returns
//! without joining a child leaves it running, and the child's end is not delivered. A
//! branch that lost a race keeps what it recorded (a signal it consumed stays consumed).
//! Two effects of one branch under way at once (`join!` over effects, an effect inside a
//! step's body) are refused when seen: they could not be replayed in a known order.
//!
//! **What a function must be:** closed (it captures nothing: [`Functions::register`] checks
//! that the function value is zero-sized, which async-flow cannot), and deterministic apart
//! from its effects: everything it learns from outside comes through the context.

mod activation;
mod branch;
mod combinator;
mod control;
mod ctx;
mod driver;
mod engine;
mod registry;
mod waits;

pub use ctx::Ctx;
pub use driver::{CANCELLED, DEADLOCK_GRACE, MAX_DRIVER_THREADS};
pub use engine::{
    request_cancel, send_signal, ChildPlanner, Error, FunctionError, Functions,
    DEFAULT_JOURNAL_RETENTION, MAX_ACTIVE_ACTIVATIONS, RETENTION_TIMER,
};
pub use registry::RegistrationError;

/// The error of starting, signalling, cancelling and reading functions, by its old name.
#[deprecated(since = "0.2.0", note = "renamed `Error`: one error per crate")]
pub type StartError = Error;

/// The error of registering a function, by its old name.
#[deprecated(since = "0.2.0", note = "renamed `RegistrationError`, as in plans")]
pub type RegisterError = RegistrationError;
