//! Checks every store runs before it writes, so that all stores refuse the same inputs with
//! the same typed errors and write nothing when they do.

use std::time::Duration;

use flowstate_core::limits::{
    MAX_CLAIM_BATCH, MAX_EVENTS_PER_APPEND, MAX_EVENTS_PER_FLOW, MAX_EVENT_BODY_BYTES,
    MAX_FINGERPRINT_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_LEASE_SECS, MAX_NAME_BYTES,
};
use flowstate_core::{FlowKind, EVENT_FORMAT_VERSION};

use crate::error::InvalidInput;
use crate::types::{AppendBatch, NewEvent};

/// Checks an append against every limit that does not need the stored log; returns the
/// flow's kind if the batch creates it. A created flow without `status` starts in the initial
/// state of its kind.
pub fn validate_append(batch: &AppendBatch) -> Result<Option<FlowKind>, InvalidInput> {
    check_events(batch.expected_next_seq, &batch.events)?;
    for timer in &batch.timers {
        check_name("timer name", &timer.name)?;
    }
    let creates = match (&batch.create, batch.expected_next_seq) {
        (Some(create), 1) => {
            check_name("definition", &create.definition)?;
            if let Some(idempotency) = &create.idempotency {
                check_idempotency_key(&idempotency.key)?;
                check_bytes(
                    "fingerprint",
                    &idempotency.fingerprint,
                    MAX_FINGERPRINT_BYTES,
                )?;
            }
            Some(create.kind)
        }
        (None, 1) => return Err(InvalidInput::MissingCreate),
        (Some(_), expected) => return Err(InvalidInput::UnexpectedCreate { expected }),
        (None, _) => None,
    };
    if let (Some(kind), Some(status)) = (creates, batch.status) {
        check_status_kind(kind, status)?;
    }
    Ok(creates)
}

/// Checks a compaction ([`crate::Store::compact`]) against every limit that does not need the
/// stored log: its new events get exactly an append's checks (at least one, at most
/// [`MAX_EVENTS_PER_APPEND`], bodies within [`MAX_EVENT_BODY_BYTES`], of a known format, JSON),
/// numbered from `expected_next_seq` (a compaction never lowers the next sequence number, so
/// its events must fit below [`MAX_EVENTS_PER_FLOW`] after the old log's sequence numbers).
/// The status's kind is checked against the flow's by the store.
pub fn validate_compact(expected_next_seq: u64, events: &[NewEvent]) -> Result<(), InvalidInput> {
    check_events(expected_next_seq, events)
}

/// The checks of the events of an append or a compaction (numbered from `expected_next_seq`),
/// in the order appends have always made them.
fn check_events(expected_next_seq: u64, events: &[NewEvent]) -> Result<(), InvalidInput> {
    if events.is_empty() {
        return Err(InvalidInput::EmptyAppend);
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(InvalidInput::TooManyEvents {
            count: events.len(),
            limit: MAX_EVENTS_PER_APPEND,
        });
    }
    if expected_next_seq == 0 {
        return Err(InvalidInput::ZeroSequence);
    }
    check_log_room(expected_next_seq, events.len())?;
    for (index, event) in events.iter().enumerate() {
        if event.body.len() > MAX_EVENT_BODY_BYTES {
            return Err(InvalidInput::BodyTooLarge {
                index,
                bytes: event.body.len(),
                limit: MAX_EVENT_BODY_BYTES,
            });
        }
        if event.format == 0 || event.format > EVENT_FORMAT_VERSION {
            return Err(InvalidInput::UnsupportedFormat {
                index,
                format: event.format,
                supported: EVENT_FORMAT_VERSION,
            });
        }
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&event.body) {
            return Err(InvalidInput::MalformedBody {
                index,
                message: error.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks that `status` belongs to a flow of `kind`.
pub fn check_status_kind(
    kind: FlowKind,
    status: flowstate_core::FlowStatus,
) -> Result<(), InvalidInput> {
    if status.kind() == kind {
        return Ok(());
    }
    Err(InvalidInput::StatusKindMismatch {
        status: status.key().to_owned(),
        status_kind: status.kind().key().to_owned(),
        kind: kind.key().to_owned(),
    })
}

/// Checks that a log starting its next event at `next_seq` has room for `count` more.
pub fn check_log_room(next_seq: u64, count: usize) -> Result<(), InvalidInput> {
    let would_be = next_seq.saturating_sub(1).saturating_add(count as u64);
    if would_be > MAX_EVENTS_PER_FLOW {
        return Err(InvalidInput::LogFull {
            would_be,
            limit: MAX_EVENTS_PER_FLOW,
        });
    }
    Ok(())
}

/// Checks a name against [`MAX_NAME_BYTES`].
pub fn check_name(what: &'static str, name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(InvalidInput::BadName {
            what,
            length: name.len(),
            limit: MAX_NAME_BYTES,
        });
    }
    Ok(())
}

/// Checks an idempotency key against [`MAX_IDEMPOTENCY_KEY_BYTES`] (and that it is not
/// empty).
pub fn check_idempotency_key(key: &str) -> Result<(), InvalidInput> {
    check_bytes("idempotency key", key, MAX_IDEMPOTENCY_KEY_BYTES)
}

fn check_bytes(what: &'static str, text: &str, limit: usize) -> Result<(), InvalidInput> {
    if text.is_empty() || text.len() > limit {
        return Err(InvalidInput::BadIdempotencyKey {
            what,
            length: text.len(),
            limit,
        });
    }
    Ok(())
}

/// Checks a lease duration against [`MAX_LEASE_SECS`].
pub fn check_lease(lease: Duration) -> Result<(), InvalidInput> {
    if lease.is_zero() || lease > Duration::from_secs(MAX_LEASE_SECS) {
        return Err(InvalidInput::LeaseOutOfRange {
            requested_ms: lease.as_millis(),
            limit_secs: MAX_LEASE_SECS,
        });
    }
    Ok(())
}

/// The window of a claim: checks the batch size (1 to [`MAX_CLAIM_BATCH`]) and the lease,
/// and returns `(now, lease_until)` from `clock`. Every store's `claim` and
/// `claim_due_timers` start here, so all of them refuse the same requests.
pub fn claim_window(
    what: &'static str,
    limit: usize,
    lease: Duration,
    clock: &dyn flowstate_core::Clock,
) -> Result<(flowstate_core::Timestamp, flowstate_core::Timestamp), InvalidInput> {
    check_batch(what, limit, MAX_CLAIM_BATCH)?;
    check_lease(lease)?;
    let now = clock.now();
    Ok((now, now.saturating_add(lease)))
}

/// Checks a batch size: 1 to `limit`.
pub fn check_batch(what: &'static str, requested: usize, limit: usize) -> Result<(), InvalidInput> {
    if requested == 0 || requested > limit {
        return Err(InvalidInput::BatchOutOfRange {
            what,
            requested,
            limit,
        });
    }
    Ok(())
}
