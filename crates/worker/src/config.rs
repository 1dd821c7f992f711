//! The worker's settings, each with a default and a bound.

use std::time::Duration;

use flowstate_core::limits::{MAX_CLAIM_BATCH, MAX_LEASE_SECS};
use flowstate_store::WorkerId;

/// Most flows one worker runs at once.
pub const MAX_IN_FLIGHT: usize = 65_536;

/// Shortest lease a worker takes: renewals happen every third of it, and must not turn into
/// a busy loop.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// How a worker behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The name leases are held under; unique per process (the default is host and pid).
    pub id: WorkerId,
    /// How long a claim lasts unless renewed; renewed every third of it. A crashed process's
    /// flows are taken over this long after its last renewal.
    pub lease: Duration,
    /// Most flows run at once.
    pub max_in_flight: usize,
    /// Most flows taken in one claim.
    pub claim_batch: usize,
    /// Longest sleep without a wake-up: the fallback when a wake-up is missed, and how soon
    /// the flows of a dead process are noticed once their leases ran out.
    pub poll_interval: Duration,
    /// How long a flow whose run failed (or whose definition is missing) waits before it may
    /// be claimed again.
    pub park_for: Duration,
    /// How many times in a row a flow is re-run after conflicts before it is parked.
    pub max_conflict_reruns: u32,
    /// How long a shutdown waits for runs in flight before it aborts them and gives their
    /// flows back (ready, for any other worker).
    pub shutdown_grace: Duration,
}

/// A setting out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The lease is shorter than [`MIN_LEASE`] or longer than the store allows.
    #[error("lease of {lease:?} is outside {MIN_LEASE:?} ..= {MAX_LEASE_SECS} s")]
    Lease {
        /// The lease asked for.
        lease: Duration,
    },
    /// `max_in_flight` or `claim_batch` is 0 or over its limit.
    #[error("{setting} = {value} is outside 1 ..= {limit}")]
    OutOfRange {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: usize,
        /// Its limit.
        limit: usize,
    },
    /// `poll_interval` is zero.
    #[error("poll_interval must be longer than zero")]
    PollInterval,
    /// A duration setting is zero or longer than its limit.
    #[error("{setting} of {value:?} is outside (0, {limit:?}]")]
    Duration {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: Duration,
        /// Its limit.
        limit: Duration,
    },
}

/// Longest shutdown grace: a process that does not stop within it is not shutting down.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3_600);

impl WorkerConfig {
    /// Defaults: a 30 s lease, 1,024 flows at once, claims of 128, a 1 s poll fallback,
    /// 5 s parking, 3 conflict re-runs, 10 s shutdown grace.
    #[must_use]
    pub fn new(id: WorkerId) -> Self {
        Self {
            id,
            lease: Duration::from_secs(30),
            max_in_flight: 1_024,
            claim_batch: 128,
            poll_interval: Duration::from_secs(1),
            park_for: Duration::from_secs(5),
            max_conflict_reruns: 3,
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// A worker id unique to this worker: host name (if known), process id, a counter, and
    /// random bits. Leases are fenced by the worker id, so two workers must never share one,
    /// not even a container restarted with the same host name and pid.
    #[must_use]
    pub fn process_worker_id() -> WorkerId {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().chars().take(64).collect::<String>())
            .unwrap_or_else(|_| "host".to_owned());
        // RandomState is seeded from the operating system's randomness.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!(
            "{host}/{}/{}/{random:016x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A host name is at most 64 bytes, so the name is far inside the id limit.
        WorkerId::new(name).unwrap_or_else(|_| unreachable_id())
    }

    /// Sets the lease.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets how many flows run at once.
    #[must_use]
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Sets the claim batch.
    #[must_use]
    pub fn with_claim_batch(mut self, batch: usize) -> Self {
        self.claim_batch = batch;
        self
    }

    /// Sets the poll fallback.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets how long failed flows are parked.
    #[must_use]
    pub fn with_park_for(mut self, park_for: Duration) -> Self {
        self.park_for = park_for;
        self
    }

    /// Sets the shutdown grace.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Checks every setting against its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease < MIN_LEASE || self.lease > Duration::from_secs(MAX_LEASE_SECS) {
            return Err(ConfigError::Lease { lease: self.lease });
        }
        for (setting, value, limit) in [
            ("max_in_flight", self.max_in_flight, MAX_IN_FLIGHT),
            ("claim_batch", self.claim_batch, MAX_CLAIM_BATCH),
        ] {
            if value == 0 || value > limit {
                return Err(ConfigError::OutOfRange {
                    setting,
                    value,
                    limit,
                });
            }
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::PollInterval);
        }
        for (setting, value, limit) in [
            ("park_for", self.park_for, crate::worker::MAX_PARK),
            ("shutdown_grace", self.shutdown_grace, MAX_SHUTDOWN_GRACE),
        ] {
            if value.is_zero() || value > limit {
                return Err(ConfigError::Duration {
                    setting,
                    value,
                    limit,
                });
            }
        }
        Ok(())
    }
}

fn unreachable_id() -> WorkerId {
    WorkerId::new(format!("pid-{}", std::process::id())).expect("a short name is a valid id")
}
