//! The engine kernel: what task graphs, goal-driven plans and durable functions share, written
//! once. The three front doors (`flowstate-taskgraph`, `flowstate-plan`, `flowstate-durable`)
//! decide *what* happens to a flow; this crate owns *how* it reaches the log.
//!
//! **What it owns:**
//! - [`FlowWriter`], the one path from "this happened" to the log (staged, folded, committed
//!   atomically; stale after a failure).
//! - [`create`]: flow ids and flow creation, with one id policy, an optional caller-chosen
//!   id, and idempotent starts (a key recorded with the flow, a fingerprint of the request).
//! - [`deliver()`]: appending a request (a signal, a cancellation, a suspension, a child's end)
//!   to a log that a run may be writing at the same moment.
//! - [`rebase`]: the one routine by which a run commits on top of requests appended while it
//!   ran, with one budget ([`rebase::MAX_REBASES`]).
//! - [`children`]: telling a parent flow that its child ended, and naming children.
//! - [`FlowRunner`] and [`RunError`]: the contract between the worker loop and a kind's runner.
//! - [`FlowControl`]: cancel, suspend, resume and state, the same for every kind.
//! - [`observe`]: the log event and metrics of every flow that starts or finishes, and of
//!   every operator request.
//!
//! Locks with one poisoning policy are `flowstate_core::sync`, below the kernel, so that the
//! stores use the same policy as the front doors.
//!
//! **What it must never do:** know a kind's semantics (which events a task graph, a plan or a
//! function records, how they are decided) beyond the predicates a front door hands it, or
//! talk to a database other than through [`flowstate_store::Store`]. It depends on `core`
//! and `store` only.
//!
//! **Invariant:** every event reaches a log through [`FlowWriter`], so every event was checked
//! against the fold (the state tables) before any store saw it.

pub mod children;
pub mod control;
pub mod create;
mod deliver;
pub mod observe;
pub mod rebase;
mod runner;
mod writer;

pub use control::{ControlError, ControlRequest, Controls, FlowControl};
pub use create::{CreateError, Created, Creation, StartOptions, DEFAULT_IDEMPOTENCY_WINDOW};
pub use deliver::{deliver, deliver_with, DELIVERY_ATTEMPTS};
pub use rebase::{commit_or_rebase, Committed, Rebases};
pub use runner::{FlowRunner, RunError};
pub use writer::{AppendExtras, CompactedField, FlowWriter, WriteError};
