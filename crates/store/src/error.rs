//! The store's typed errors: [`StoreError`] (why a store refused or failed an operation) and
//! [`InvalidInput`] (which limit or rule a request broke; nothing was written).

use flowstate_core::FlowId;

/// Why a store refused or failed an operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer advanced the log first: re-read and decide again.
    #[error("conflict on flow {flow}: expected next event {expected}, but the log's next event is {actual}")]
    Conflict {
        /// The flow.
        flow: FlowId,
        /// The caller's expected next sequence number.
        expected: u64,
        /// The log's actual next sequence number.
        actual: u64,
    },
    /// The flow is not in the live store (never created, deleted or archived).
    #[error("flow {flow} is not in the store")]
    UnknownFlow {
        /// The flow.
        flow: FlowId,
    },
    /// The request breaks a limit or a rule; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The underlying storage failed.
    #[error("storage error: {message}")]
    Io {
        /// What failed.
        message: String,
    },
    /// An earlier write failed with an I/O error, so this store stopped writing rather than
    /// guess what reached the disk. Close it and open it again.
    #[error("the store stopped writing after an earlier I/O error ({cause}); close and reopen it")]
    Poisoned {
        /// The first error.
        cause: String,
    },
    /// The stored data is not what flowstate writes.
    #[error("the store is corrupt: {detail}")]
    Corrupt {
        /// What was found.
        detail: String,
    },
    /// The storage was written by a newer flowstate.
    #[error("the store has schema version {found}, newer than the {supported} this build knows; upgrade flowstate")]
    NewerFormat {
        /// The storage's schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// The file or database is not a flowstate store.
    #[error("{location} is not a flowstate store ({detail})")]
    Foreign {
        /// Where.
        location: String,
        /// Why it was not recognised.
        detail: String,
    },
    /// A store opened for reading does not exist.
    #[error("no flowstate store at {location}")]
    Missing {
        /// Where it was looked for.
        location: String,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// Another engine process holds the store's process lock: one engine process per
    /// SQLite file.
    #[error("{location} is in use by another engine process (it holds the lock on {lock}); stop it first, or use a PostgreSQL store to run several engine processes")]
    InUse {
        /// The store's file.
        location: String,
        /// The lock file.
        lock: String,
    },
    /// A creation's idempotency key is live already; nothing was written.
    #[error("idempotency key {key:?} started flow {flow} already")]
    KeyTaken {
        /// The key.
        key: String,
        /// The flow it started.
        flow: FlowId,
        /// The fingerprint of the request that started it.
        fingerprint: String,
    },
}

/// A request that breaks a limit or a rule. Each variant names the limit and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// Too many events in one append.
    #[error("{count} events in one append, over the limit of {limit} (MAX_EVENTS_PER_APPEND)")]
    TooManyEvents {
        /// How many were sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An event body over the size limit.
    #[error("event {index} of the append has a {bytes}-byte body, over the limit of {limit} (MAX_EVENT_BODY_BYTES)")]
    BodyTooLarge {
        /// Its index in the append.
        index: usize,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// An event body that is not JSON.
    #[error("event {index} of the append has a body that is not JSON: {message}")]
    MalformedBody {
        /// Its index in the append.
        index: usize,
        /// The parser's message.
        message: String,
    },
    /// A body format this build does not write or read.
    #[error("event {index} of the append has body format {format}; this build supports 1 to {supported}")]
    UnsupportedFormat {
        /// Its index in the append.
        index: usize,
        /// The format given.
        format: u16,
        /// The newest this build supports.
        supported: u16,
    },
    /// Sequence numbers start at 1.
    #[error("expected_next_seq must be at least 1")]
    ZeroSequence,
    /// The first append of a flow must say what the flow is.
    #[error("the first append of a flow (expected_next_seq 1) must carry `create`")]
    MissingCreate,
    /// Only the first append may create a flow.
    #[error("`create` is only allowed with expected_next_seq 1, not {expected}")]
    UnexpectedCreate {
        /// The expected sequence number given.
        expected: u64,
    },
    /// A status of another kind of flow.
    #[error("status {status} belongs to a {status_kind} flow, not to a {kind} flow")]
    StatusKindMismatch {
        /// The status key.
        status: String,
        /// The status's kind.
        status_kind: String,
        /// The flow's kind.
        kind: String,
    },
    /// A name that is empty or too long.
    #[error("{what} must be 1 to {limit} bytes, got {length}")]
    BadName {
        /// Which name.
        what: &'static str,
        /// Its length.
        length: usize,
        /// The limit (MAX_NAME_BYTES).
        limit: usize,
    },
    /// The flow's log would grow past the limit.
    #[error("the log would reach {would_be} events, over the limit of {limit} (MAX_EVENTS_PER_FLOW); continue in a new flow")]
    LogFull {
        /// The length it would reach.
        would_be: u64,
        /// The limit.
        limit: u64,
    },
    /// A claim or read over its batch limit, or zero.
    #[error("{what} of {requested} is outside 1..={limit}")]
    BatchOutOfRange {
        /// Which batch.
        what: &'static str,
        /// What was asked.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// A listing page over the limit.
    #[error("page size {requested} is over the limit of {limit} (MAX_PAGE_SIZE)")]
    PageTooLarge {
        /// What was asked.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// An idempotency key or fingerprint that is empty or too long.
    #[error("{what} must be 1 to {limit} bytes, got {length}")]
    BadIdempotencyKey {
        /// `idempotency key` or `fingerprint`.
        what: &'static str,
        /// Its length.
        length: usize,
        /// The limit (MAX_IDEMPOTENCY_KEY_BYTES or MAX_FINGERPRINT_BYTES).
        limit: usize,
    },
    /// A lease of zero or longer than the limit.
    #[error("a lease of {requested_ms} ms is outside 1 ms..={limit_secs} s (MAX_LEASE_SECS)")]
    LeaseOutOfRange {
        /// What was asked, in ms.
        requested_ms: u128,
        /// The limit, in seconds.
        limit_secs: u64,
    },
}
