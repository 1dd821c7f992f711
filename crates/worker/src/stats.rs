//! What a worker did, for operators and tests.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one worker, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Flows claimed.
    pub claimed: u64,
    /// Runs that ended normally (the flow was released).
    pub completed: u64,
    /// Appends refused because another process advanced the flow first.
    pub conflicts: u64,
    /// Leases found gone at renewal (the run was aborted) or at release.
    pub leases_lost: u64,
    /// Runs that failed or found no definition; their flows were parked.
    pub parked: u64,
    /// Of those, flows whose definition this process lacks.
    pub missing_definitions: u64,
    /// Due timers fired (their flows marked ready).
    pub timers_fired: u64,
    /// Store calls of the loop itself (claim, renew, release, timers) that failed.
    pub store_errors: u64,
    /// Runs aborted by a shutdown whose grace ran out (their flows were given back ready).
    pub aborted_at_shutdown: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) claimed: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) leases_lost: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) missing_definitions: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) aborted_at_shutdown: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            claimed: get(&self.claimed),
            completed: get(&self.completed),
            conflicts: get(&self.conflicts),
            leases_lost: get(&self.leases_lost),
            parked: get(&self.parked),
            missing_definitions: get(&self.missing_definitions),
            timers_fired: get(&self.timers_fired),
            store_errors: get(&self.store_errors),
            aborted_at_shutdown: get(&self.aborted_at_shutdown),
        }
    }
}
