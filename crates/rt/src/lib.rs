//! The await runtime: a small, deterministic, single-threaded executor that implements the
//! await-rt protocol (`../shared/spec/seeds/003_…`) in Rust terms, and the combinators built
//! on it as library code. Durable functions run on it, one activation at a time, so that the
//! order of their effects (and so their journal) is reproducible.
//!
//! **The protocol.** A task suspends only on a *completion pair*: [`pair`] hands out a
//! [`Resolver`] (and, on request, a [`Rejecter`]) and the [`Once`] future that awaits them.
//! Each task holds at most one pair at a time, and moves through the states of the spec's
//! table ([`flowstate_core::machine::PairState`]): running → scheduling/single (a pair
//! exists) → scheduling/double (its rejecter was taken) → ready or failed (settled before
//! the await) or pending (awaited first) → running again. Every transition is checked against
//! that table; a transition it does not list is a [`ProtocolError`].
//!
//! - A task that never suspends completes inside [`Runtime::run`].
//! - A resolve while the task is still scheduling makes its next await ready at once, without
//!   a round of the executor; a later resolve wakes the task, which finishes in the next
//!   round ([`Runtime::run_until_stalled`]).
//! - A rejection is returned at the await as the original error, unwrapped.
//! - Errors are reported to whoever caused them: a second resolve or reject of one pair, or
//!   one after the task resumed, is an `Err` for the caller of `resolve`/`reject`; awaiting a
//!   pair of another task, a second pair while one is outstanding, and returning while a pair
//!   is outstanding fail the task with a [`ProtocolError`], reported through its
//!   [`TaskHandle`] (to the caller of `run` when that happens synchronously).
//! - **A dropped resolver fails the task** (our choice, [`ProtocolError::Abandoned`]): when
//!   every resolver and rejecter of an unsettled pair is gone, nothing can ever resume the
//!   task, and a durable function that silently never finishes is a bug to report, not to
//!   hide.
//!
//! **What it must never do:** run two tasks at once, or poll in an order that depends on
//! anything but the order of wake-ups (first woken, first polled). It uses no clock, no
//! randomness and no threads.

mod combinators;
mod error;
mod executor;
mod pair;
mod sync;

pub use combinators::{all, race, RaceError};
pub use error::{ProtocolError, SettleError, TaskFailure};
pub use executor::{current_task, spawn, RemoteWake, Runtime, TaskHandle, TaskId};
pub use pair::{pair, Once, Rejecter, Resolver};
pub use sync::{Channel, Mutex, MutexGuard};
