//! Limits on everything a caller can send, each a named constant with a clear error when hit.
//! Every store enforces these before it writes anything.

/// Largest encoded event body, in bytes. Bigger payloads belong in object storage, referenced
/// from the event.
pub const MAX_EVENT_BODY_BYTES: usize = 1024 * 1024;

/// Largest result (of a task or a durable function's step) recorded, in bytes: the event
/// body limit less room for the envelope. A larger result is recorded as the step's failure
/// ([`crate::Failure::within_result_limit`]), never as an engine error that would wedge the
/// flow.
pub const MAX_RESULT_BYTES: usize = MAX_EVENT_BODY_BYTES - 4 * 1024;

/// Most events one append may carry. One append is one transition of one flow; a thousand is
/// far beyond any legitimate transition and keeps one group commit bounded.
pub const MAX_EVENTS_PER_APPEND: usize = 1_000;

/// Longest log a single flow may have. A flow that needs more should continue as a new flow
/// (as Temporal's continue-as-new does); replaying ever-longer logs is a latency trap.
pub const MAX_EVENTS_PER_FLOW: u64 = 1_000_000;

/// Longest name (flow kind, definition, atom, timer, worker) in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Most flows or timers one claim may return.
pub const MAX_CLAIM_BATCH: usize = 1_024;

/// Most flows one listing page may return.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// Most events one read may return; read a long log in ranges.
pub const MAX_READ_BATCH: usize = 100_000;

/// Longest lease a worker may take on a flow or a timer, in seconds. A longer lease would
/// leave a crashed worker's flows stuck for too long.
pub const MAX_LEASE_SECS: u64 = 3_600;

/// Longest idempotency key of a start (`Idempotency-Key`, `--idempotency-key`) in bytes. A
/// key names one start; a client's UUID or a hash fits many times over.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Longest fingerprint of a start's request, in bytes (the engine's are 68: a version tag
/// and a SHA-256 in hex).
pub const MAX_FINGERPRINT_BYTES: usize = 128;
