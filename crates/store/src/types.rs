//! The values that cross the [`crate::Store`] boundary.

use std::fmt;

use flowstate_core::limits::{MAX_NAME_BYTES, MAX_PAGE_SIZE};
use flowstate_core::{FlowId, FlowKind, FlowStatus, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// One event to append; the store assigns its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Wall time of the event, from the caller's injected clock.
    pub time: Timestamp,
    /// The body format version it was encoded with.
    pub format: u16,
    /// The encoded body (JSON).
    pub body: Vec<u8>,
}

/// The index values of a flow being created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFlow {
    /// Its kind.
    pub kind: FlowKind,
    /// The definition it runs.
    pub definition: String,
    /// The start's idempotency key, recorded in the same transaction as the flow.
    pub idempotency: Option<IdempotencyKey>,
}

/// An idempotency key of a start, kept with the flow it created until `expires_at`.
///
/// A creation that carries one succeeds only if no live key (one whose `expires_at` is
/// after the store's clock) of that text exists; otherwise it writes nothing and fails with
/// [`crate::StoreError::KeyTaken`], naming the flow the key made and the fingerprint of the
/// request that made it. An expired key is replaced. The store never interprets the
/// fingerprint: comparing it is the engine's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key, 1 to [`flowstate_core::limits::MAX_IDEMPOTENCY_KEY_BYTES`] bytes.
    pub key: String,
    /// What identifies the request, 1 to [`flowstate_core::limits::MAX_FINGERPRINT_BYTES`]
    /// bytes.
    pub fingerprint: String,
    /// When the key stops counting (and may be purged).
    pub expires_at: Timestamp,
}

/// A timer to set: when it is due, a worker claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTimer {
    /// Unique within the flow; setting an existing name moves that timer.
    pub name: String,
    /// When it is due.
    pub due: Timestamp,
}

/// One atomic append to one flow's log, with the index changes that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBatch {
    /// The flow.
    pub flow: FlowId,
    /// The sequence number the first event must get; 1 creates the flow.
    pub expected_next_seq: u64,
    /// The events, at least one.
    pub events: Vec<NewEvent>,
    /// Required exactly when `expected_next_seq == 1`.
    pub create: Option<NewFlow>,
    /// The flow's status after these events, if it changed (required on create).
    pub status: Option<FlowStatus>,
    /// Sets (`Some(true)`) or clears (`Some(false)`) the ready flag.
    pub ready: Option<bool>,
    /// Timers to set in the same transaction.
    pub timers: Vec<NewTimer>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Sequence number of the first event appended.
    pub first_seq: u64,
    /// The log's next sequence number afterwards.
    pub next_seq: u64,
}

/// A flow's index row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// The flow.
    pub id: FlowId,
    /// Its kind.
    pub kind: FlowKind,
    /// The definition it runs.
    pub definition: String,
    /// Its status, as the last append said.
    pub status: FlowStatus,
    /// Time of its first event.
    pub created_at: Timestamp,
    /// Time of its last event.
    pub updated_at: Timestamp,
    /// The next sequence number (one past the last event's; sequence numbers only grow,
    /// also across a compaction).
    pub next_seq: u64,
    /// Total size of its event bodies, in bytes.
    pub bytes: u64,
    /// Whether it has work waiting for a worker.
    pub ready: bool,
}

impl FlowSummary {
    /// The last sequence number: the number of events in its log, unless the log was
    /// compacted (then it starts later than 1).
    #[must_use]
    pub fn events(&self) -> u64 {
        self.next_seq - 1
    }
}

/// A filter over the flow index, with keyset paging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowQuery {
    /// Only flows of this kind.
    pub kind: Option<FlowKind>,
    /// Only flows running this definition.
    pub definition: Option<String>,
    /// Only flows whose status has this key ("running", "sleeping", ...).
    pub status: Option<String>,
    /// Only flows created at or after this time.
    pub created_from: Option<Timestamp>,
    /// Only flows created before this time.
    pub created_before: Option<Timestamp>,
    /// Only flows after this id (the previous page's `next_after`).
    pub after: Option<FlowId>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`]; 0 means 100.
    pub limit: usize,
}

impl FlowQuery {
    /// The page size this query asks for, or an error if it is over the limit.
    pub fn page_size(&self) -> Result<usize, InvalidInput> {
        match self.limit {
            0 => Ok(100),
            n if n > MAX_PAGE_SIZE => Err(InvalidInput::PageTooLarge {
                requested: n,
                limit: MAX_PAGE_SIZE,
            }),
            n => Ok(n),
        }
    }

    /// Whether `summary` passes the filters (not the paging).
    #[must_use]
    pub fn matches(&self, summary: &FlowSummary) -> bool {
        self.kind.is_none_or(|kind| summary.kind == kind)
            && self
                .definition
                .as_deref()
                .is_none_or(|d| summary.definition == d)
            && self
                .status
                .as_deref()
                .is_none_or(|s| summary.status.key() == s)
            && self.created_from.is_none_or(|t| summary.created_at >= t)
            && self.created_before.is_none_or(|t| summary.created_at < t)
            && self.after.is_none_or(|after| summary.id > after)
    }
}

/// One page of flows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowPage {
    /// The flows, ordered by id.
    pub flows: Vec<FlowSummary>,
    /// Pass as `FlowQuery::after` for the next page; `None` on the last page.
    pub next_after: Option<FlowId>,
}

/// The name of a worker (an engine process or one of its loops) that holds leases.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(String);

impl WorkerId {
    /// A worker id: 1 to [`MAX_NAME_BYTES`] bytes.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        let name = name.into();
        crate::validate::check_name("worker id", &name)?;
        Ok(Self(name))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const _: () = assert!(MAX_NAME_BYTES >= 64);

/// A flow leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The flow.
    pub flow: FlowId,
    /// Its kind, so that a worker can hand it to the right engine without a lookup.
    pub kind: FlowKind,
    /// Its log's next sequence number when it was claimed.
    pub next_seq: u64,
    /// When the lease runs out unless renewed.
    pub lease_until: Timestamp,
    /// How many times the flow had been marked ready when it was claimed; a release can only
    /// clear the ready flag if nobody marked it ready since (so no wake-up is lost).
    pub wake: u64,
}

/// How a worker gives a flow back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The flow has no more work now; clear its ready flag unless it was marked ready again
    /// after the claim.
    Idle,
    /// The flow still has work; leave it ready for any worker.
    StillReady,
}

/// A timer that fired: removed, and its flow marked ready, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    /// The flow it belonged to (now ready).
    pub flow: FlowId,
    /// Its name.
    pub name: String,
    /// When it was due.
    pub due: Timestamp,
}

/// A timer that is due, leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The flow it belongs to.
    pub flow: FlowId,
    /// Its name.
    pub name: String,
    /// When it was due.
    pub due: Timestamp,
    /// When the lease runs out; after that another worker may fire it.
    pub lease_until: Timestamp,
}
