//! The worker loop: how one engine process takes its share of the work in a store, so that
//! several processes (on several machines, sharing one PostgreSQL database) split the flows
//! between them and take over each other's flows when one dies.
//!
//! **What it owns:** claiming ready flows under a lease, running each with the
//! [`FlowRunner`] of its kind, renewing the leases of flows in flight, releasing flows when
//! their run ends, firing due timers, waking when the store says there may be work (polling
//! only as a fallback), counting conflicts and lost leases, and a graceful shutdown.
//!
//! **What it must never do:** interpret events or decide anything about a flow. What a flow
//! does when it runs is its runner's business; the worker only decides *who* runs it *when*.
//!
//! **Invariants.**
//! - A flow is run only while this worker holds its lease, and by one run at a time. A lease
//!   found lost at a renewal (it expired while the process stalled, and another worker took
//!   the flow) aborts the run, and so does a lease whose renewal could not be confirmed before
//!   it would run out (the store did not answer): a run never outlives the last lease the
//!   worker knows it had. Leases are fenced by the worker id, which is unique per worker
//!   (random bits included). Whatever an aborted run appended after another worker moved the
//!   log on is refused by the store's sequence check, so no event is lost or written twice;
//!   a step it had started may still complete outside, which is why steps get idempotency
//!   keys.
//! - Lease times come from each process's clock: clocks must agree (NTP) to well within a
//!   lease; a process whose clock runs ahead by *d* may take a lease *d* early.
//! - A conflict (another process appended first) is counted and resolved by running the flow
//!   again from the re-read log, never by retrying the refused append.
//! - A worker claims only flows of the kinds it has runners for. A flow whose run failed, or
//!   whose definition this process lacks, stays ready: it is *parked* (its lease set to
//!   [`WorkerConfig::park_for`], doubling with each consecutive failure up to [`MAX_PARK`],
//!   and forgotten), so that it is retried later, here or by a process that has the
//!   definition, without a hot loop and without recording a failure the flow did not have.
//! - A due timer is a wake-up, not an event: the store removes it and marks its flow ready in
//!   one transaction ([`flowstate_store::Store::fire_due_timers`], a batch at a time), and
//!   the flow's runner decides from the log what the timer means.

mod config;
mod stats;
mod worker;

pub use config::{ConfigError, WorkerConfig, MAX_IN_FLIGHT, MAX_SHUTDOWN_GRACE, MIN_LEASE};
pub use stats::WorkerStats;
pub use worker::{
    ShutdownHandle, Worker, WorkerError, MAX_PARK, MAX_TRACKED_FAILURES, TIMER_BATCH,
};

/// The runner contract lives in the kernel; the worker is its caller.
pub use flowstate_engine::{FlowRunner, RunError};
