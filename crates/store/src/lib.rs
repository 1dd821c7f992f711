//! Where flows live: the [`Store`] trait, its types, the checks every store makes before a
//! write ([`validate`]), the in-memory store, and (feature `testing`) the conformance suite
//! that every store must pass and test wrappers.
//!
//! A store keeps, per flow, an append-only log of events and a small index row (kind,
//! definition, status, times, ready flag, lease). It never interprets event bodies: the
//! caller (an engine, through `flowstate_engine::FlowWriter`) validates events against the
//! fold and tells the store the index values to keep. That keeps every store a thin, fast layer and puts all
//! meaning in the sans-I/O core.
//!
//! **Architecture invariant:** `append` is the only way to extend a log, and `compact` (which
//! replaces a finished flow's log by a shorter one that folds to the same state, numbered
//! after the old one) the only other way to change one; both are atomic, and both succeed
//! only when `expected_next_seq` equals the log's next sequence number. Neither ever lowers
//! the next sequence number, so a number a writer once read never becomes valid again. This
//! is how two engine processes never both advance one flow: the loser gets
//! [`StoreError::Conflict`] and re-reads.
//!
//! **Invariant:** a store acknowledges an append only after it is durable by the store's own
//! definition (the memory store: in memory; SQLite: committed and fsynced).

mod clock;
#[cfg(feature = "testing")]
pub mod conformance;
mod error;
mod memory;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
pub mod validate;
mod wake;

pub use clock::SystemClock;
pub use error::{InvalidInput, StoreError};
pub use memory::{MemoryStorage, MemoryStore};
pub use types::{
    AppendBatch, AppendOutcome, Claim, DueTimer, FiredTimer, FlowPage, FlowQuery, FlowSummary,
    IdempotencyKey, NewEvent, NewFlow, NewTimer, Release, WorkerId,
};
pub use wake::{WakeCounts, WakeKind, Wakeups};

use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::{FlowId, FlowKind, FlowStatus, RawEvent, Timestamp};

/// How many expired idempotency keys a creation that records a key purges, at most, in its
/// own transaction. Every keyed creation adds one key and removes up to this many expired
/// ones, so expired keys go at least as fast as new keys come, at a bounded cost per
/// creation; a store that stops taking keyed starts keeps the expired keys it has (they are
/// inert: an expired key counts as absent).
pub const KEY_PURGE_BATCH: usize = 16;

/// Durable storage for flow logs, their index, the ready queue and timers.
///
/// Every method is safe to call from many tasks at once. Implementations: [`MemoryStore`],
/// `flowstate_store_sqlite::SqliteStore` and `flowstate_store_postgres::PostgresStore`. All of
/// them pass
/// the conformance suite (`conformance`, with the `testing` feature).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Appends `batch.events` to the flow's log, atomically, numbering them from
    /// `batch.expected_next_seq`. Fails with [`StoreError::Conflict`] (and writes nothing) when
    /// the log's next sequence number is different; creates the flow when
    /// `expected_next_seq == 1` and `batch.create` is given.
    ///
    /// A creation with an idempotency key ([`NewFlow::idempotency`]) whose key is live (its
    /// `expires_at` is after the store's clock) writes nothing and fails with
    /// [`StoreError::KeyTaken`]; this is checked before the flow's existence. Otherwise the
    /// key (replacing an expired one) is recorded in the same transaction as the flow, and up
    /// to [`KEY_PURGE_BATCH`] expired keys are purged.
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError>;

    /// Replaces the whole log of `flow` by `events`, atomically, if the log's next sequence
    /// number is `expected_next_seq`; otherwise [`StoreError::Conflict`] and nothing is written
    /// ([`StoreError::UnknownFlow`] if there is no such flow). The new events are numbered from
    /// `expected_next_seq` (right after the old log's last event) and every old event (all of
    /// them have `seq < expected_next_seq`) is deleted, so a compacted log starts later than 1:
    /// [`Store::read`] from 1 returns it from its first event. Sequence numbers only ever grow,
    /// so an append by a writer that read the log before the compaction always conflicts.
    ///
    /// This is how a finished flow's log is compacted (a durable function that is done keeps
    /// its outcome and drops its journal); the caller (`flowstate_engine::FlowWriter::compact`) checks that the
    /// new log folds to the same state. The index row keeps its kind, definition, creation time,
    /// ready flag, lease, wake counter and timers; its next sequence number
    /// (`expected_next_seq + events.len()`), size in bytes, status (`status`) and update time
    /// (the last new event's time) follow the new log.
    ///
    /// The events are checked like an append's ([`validate::validate_compact`]: at least one,
    /// the limits on their number and bodies, room below the limit on sequence numbers;
    /// `status` of the flow's kind) before anything is written. Returns
    /// `AppendOutcome { first_seq: expected_next_seq, next_seq: expected_next_seq + events.len() }`.
    async fn compact(
        &self,
        flow: FlowId,
        expected_next_seq: u64,
        events: Vec<NewEvent>,
        status: FlowStatus,
    ) -> Result<AppendOutcome, StoreError>;

    /// Events of `flow` with `seq >= from_seq`, in order, at most `limit`
    /// (at most [`flowstate_core::limits::MAX_READ_BATCH`]). A compacted log starts after 1:
    /// a read from before its first event returns the log from its first event.
    async fn read(
        &self,
        flow: FlowId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError>;

    /// The index row of one flow, or `None` if the live store does not have it.
    async fn flow(&self, flow: FlowId) -> Result<Option<FlowSummary>, StoreError>;

    /// Flows matching `query`, ordered by id (that is, by creation time), one page at a time.
    async fn list(&self, query: &FlowQuery) -> Result<FlowPage, StoreError>;

    /// Marks a flow as having work (a signal arrived, a child finished, ...).
    async fn mark_ready(&self, flow: FlowId) -> Result<(), StoreError>;

    /// Claims up to `limit` ready flows of `kinds` that nobody holds (or whose lease
    /// expired), oldest ready first, leasing them to `worker` for `lease`. A worker names the
    /// kinds it can run, so flows of other kinds are left to the processes that can.
    async fn claim(
        &self,
        worker: &WorkerId,
        kinds: &[FlowKind],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Extends `worker`'s leases on `flows`; returns the flows it still holds (a flow whose
    /// lease expired and was claimed by another worker is not among them).
    async fn renew(
        &self,
        worker: &WorkerId,
        flows: &[FlowId],
        lease: Duration,
    ) -> Result<Vec<FlowId>, StoreError>;

    /// Gives a claimed flow back. Returns `false` if `worker` no longer held it.
    async fn release(
        &self,
        worker: &WorkerId,
        claim: &Claim,
        release: Release,
    ) -> Result<bool, StoreError>;

    /// Sets (or moves) a durable timer of `flow`.
    async fn schedule_timer(&self, flow: FlowId, timer: NewTimer) -> Result<(), StoreError>;

    /// Removes a timer that has not fired. Returns whether it existed.
    async fn cancel_timer(&self, flow: FlowId, name: &str) -> Result<bool, StoreError>;

    /// Claims up to `limit` timers that are due and not held, earliest first.
    async fn claim_due_timers(
        &self,
        worker: &WorkerId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError>;

    /// Fires up to `limit` due timers that no worker holds, earliest first: each is removed
    /// and its flow marked ready in one transaction, so a timer fires exactly once and its
    /// wake-up is never lost (nothing happens between the two). Costs one transaction for
    /// the whole batch, which is what a storm of 100,000 sleepers waking at once needs.
    async fn fire_due_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, StoreError>;

    /// The earliest time at which [`Store::claim_due_timers`] may return a timer that no
    /// worker holds now: the earliest due time of a free timer, or the end of a lease on a
    /// held one. `None` when there are no timers. Idle workers sleep until then.
    async fn next_timer_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Marks a claimed timer as fired (it is gone afterwards). Returns `false` if `worker` no
    /// longer held it, in which case the caller must not act on it.
    async fn complete_timer(&self, worker: &WorkerId, timer: &DueTimer)
        -> Result<bool, StoreError>;

    /// Deletes a flow, its log and its timers from the live store (after archiving).
    /// Returns whether it existed.
    async fn delete_flow(&self, flow: FlowId) -> Result<bool, StoreError>;

    /// Takes over at once every lease on flows and timers held by a worker other than
    /// `worker`, so that they can be claimed now instead of when the leases run out; returns
    /// how many leases it cleared. Only a store that can prove that no other engine process
    /// works on it does anything: the memory store (one process by definition; its caller
    /// must run no other worker on it), and an SQLite store that holds its process lock
    /// (`SqliteStore::lock_process`). The default does nothing and returns 0: PostgreSQL is
    /// shared by many processes, whose leases are live.
    ///
    /// An engine process calls it once, at its start, before its worker claims anything:
    /// a process that died (SIGKILL, power loss) left its leases behind, and nobody else can
    /// hold them.
    async fn release_foreign_leases(&self, worker: &WorkerId) -> Result<u64, StoreError> {
        let _ = worker;
        Ok(0)
    }

    /// Wake-ups: the flows counter moves whenever a flow may have become claimable (an
    /// append or [`Store::mark_ready`] set its ready flag, a release left it ready), the
    /// timers counter whenever a timer was set, by this process or, for a shared store, by
    /// any other. A hint for idle workers, never a substitute for claiming.
    fn wakeups(&self) -> tokio::sync::watch::Receiver<WakeCounts>;

    /// Finishes pending writes and closes the store; later calls fail with
    /// [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError>;

    /// Whether the store can write, as far as it knows without asking its database (cheap:
    /// its last known state). A store that stopped after an I/O error or cannot reach its
    /// database says why; a process whose store stays unhealthy should be restarted.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }
}

/// Whether a store can write ([`Store::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// Open, and writing as far as it knows.
    Ok,
    /// It stopped writing after an I/O error (fail-stop), and stays stopped until it is
    /// opened again (the process restarted).
    Stopped {
        /// The error that stopped it.
        cause: String,
    },
    /// Its last attempt to reach its database failed.
    Unreachable {
        /// Why.
        cause: String,
    },
    /// It was closed.
    Closed,
}

impl StoreHealth {
    /// Whether the store can write.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }
}

impl std::fmt::Display for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("the store is writing"),
            Self::Stopped { cause } => write!(
                f,
                "the store stopped writing after an I/O error ({cause}); restart the process"
            ),
            Self::Unreachable { cause } => {
                write!(f, "the store cannot reach its database: {cause}")
            }
            Self::Closed => f.write_str("the store is closed"),
        }
    }
}

/// Reads a whole log, in batches (from its first event: 1, or later once compacted).
pub async fn read_all(store: &dyn Store, flow: FlowId) -> Result<Vec<RawEvent>, StoreError> {
    const BATCH: usize = 10_000;
    let mut events: Vec<RawEvent> = Vec::new();
    loop {
        let next = events.last().map_or(1, |last| last.seq + 1);
        let batch = store.read(flow, next, BATCH).await?;
        let done = batch.len() < BATCH;
        events.extend(batch);
        if done {
            return Ok(events);
        }
    }
}
