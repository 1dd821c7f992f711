//! Row decoding and the read queries. A row that does not decode is corruption, never a panic.

use flowstate_core::{FlowId, FlowKind, FlowStatus, RawEvent, Timestamp};
use flowstate_store::{FlowPage, FlowQuery, FlowSummary, StoreError};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::read_error;

/// The columns [`summary_row`] reads, in order.
pub const SUMMARY: &str =
    "id, kind, definition, status, created_at, updated_at, next_seq, bytes, ready";

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { detail }
}

/// Decodes a flow id column.
pub fn flow_id(bytes: &[u8]) -> Result<FlowId, StoreError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("a flow id of {} bytes", bytes.len())))?;
    FlowId::from_bytes(array).map_err(|e| corrupt(e.to_string()))
}

/// Decodes a non-negative integer column into u64.
pub fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative {what} {value}")))
}

/// Reads one row of [`SUMMARY`]; the outer error is SQLite's, the inner one is decoding.
pub fn summary_row(row: &Row<'_>) -> rusqlite::Result<Result<FlowSummary, StoreError>> {
    let id: Vec<u8> = row.get(0)?;
    let kind: String = row.get(1)?;
    let definition: String = row.get(2)?;
    let status: String = row.get(3)?;
    let created_at: i64 = row.get(4)?;
    let updated_at: i64 = row.get(5)?;
    let next_seq: i64 = row.get(6)?;
    let bytes: i64 = row.get(7)?;
    let ready: bool = row.get(8)?;
    Ok((|| {
        let id = flow_id(&id)?;
        let kind = FlowKind::parse(&kind).ok_or_else(|| corrupt(format!("flow kind {kind:?}")))?;
        let status = FlowStatus::parse(kind, &status)
            .ok_or_else(|| corrupt(format!("status {status:?} of a {kind} flow")))?;
        Ok(FlowSummary {
            id,
            kind,
            definition,
            status,
            created_at: Timestamp::from_micros(created_at),
            updated_at: Timestamp::from_micros(updated_at),
            next_seq: unsigned(next_seq, "next_seq")?,
            bytes: unsigned(bytes, "byte count")?,
            ready,
        })
    })())
}

/// Reads events `from_seq..` (at most `limit`) of one flow's log, in one read transaction so
/// the flow row and the events are one snapshot. Walks the `prev` chain backwards from the
/// nearest mark (see [`crate::schema`]), checking that every link is the event before.
///
/// A compacted log starts after 1: its chain ends at its first event, whose `prev` is NULL.
/// A read from before that event finds where the log starts on its way and reads again from
/// there (so it still returns up to `limit` events).
pub fn read_events(
    conn: &Connection,
    flow: FlowId,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<RawEvent>, StoreError> {
    let tx = conn.unchecked_transaction().map_err(read_error)?;
    let head: Option<(i64, i64, Option<i64>)> = tx
        .prepare_cached("SELECT flow_no, next_seq, last_event FROM flows WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([flow.as_bytes()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(read_error)?;
    let Some((flow_no, next_seq, last_event)) = head else {
        return Err(StoreError::UnknownFlow { flow });
    };
    let head = Head {
        flow,
        flow_no,
        last_seq: unsigned(next_seq, "next_seq")?.saturating_sub(1),
        last_event,
    };
    match walk(&tx, &head, from_seq.max(1), limit)? {
        Walked::Events(events) => Ok(events),
        Walked::StartsAt(first) => match walk(&tx, &head, first, limit)? {
            Walked::Events(events) => Ok(events),
            // The chain ended before `first` the first time and after it now: it changed
            // within one snapshot, which it cannot.
            Walked::StartsAt(_) => Err(broken_chain(flow, first)),
        },
    }
}

/// What [`read_events`] knows of a flow's log before it walks it.
struct Head {
    flow: FlowId,
    flow_no: i64,
    last_seq: u64,
    last_event: Option<i64>,
}

/// What a walk of a flow's chain found.
enum Walked {
    /// The events asked for.
    Events(Vec<RawEvent>),
    /// The log starts at this event (compacted), after the first one asked for: read again
    /// from there.
    StartsAt(u64),
}

/// Reads events `from..` (at most `limit`) of a flow by walking its chain back from the
/// first mark at or after the range's end.
fn walk(
    tx: &rusqlite::Transaction<'_>,
    head: &Head,
    from: u64,
    limit: usize,
) -> Result<Walked, StoreError> {
    let Head {
        flow,
        flow_no,
        last_seq,
        last_event,
    } = *head;
    let to = last_seq.min(from.saturating_add(limit as u64).saturating_sub(1));
    if from > to {
        return Ok(Walked::Events(Vec::new()));
    }
    // Start at the first mark at or after `to`, or at the last event.
    let mark: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT seq, event FROM event_marks WHERE flow_no = ?1 AND seq >= ?2
             ORDER BY seq LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row((flow_no, seq_value(to)), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(read_error)?;
    let (mut expected, mut next) = match mark {
        Some((seq, event)) => (unsigned(seq, "mark")?, Some(event)),
        None => (last_seq, last_event),
    };
    // Each event is looked up by the rowid its successor names. A flow's events are appended
    // in order, so they often lie close together: then the events before one are read with
    // a scan of the flow's rows in descending rowid order (stepping a cursor costs far less
    // than a search per event, and rows of other flows are passed over inside SQLite), and
    // each must still be the row its successor names. The scan stops at the first event
    // more than `MAX_SCAN_GAP` rows before its successor, or at anything unexpected: the
    // search by rowid takes over from there, and has the last word on a broken chain.
    // Both queries give what `follow` reads after a first column: the owner for a search,
    // the rowid for a scan (of this flow's rows only).
    let mut search = tx
        .prepare_cached(
            "SELECT flow_no, seq, prev, time, format, body FROM events WHERE rowid = ?1",
        )
        .map_err(read_error)?;
    let mut scan = tx
        .prepare_cached(
            "SELECT rowid, seq, prev, time, format, body FROM events
             WHERE rowid <= ?1 AND rowid >= ?2 AND flow_no = ?3 ORDER BY rowid DESC",
        )
        .map_err(read_error)?;
    let close = |rowid: i64, prev: Option<i64>| {
        prev.is_some_and(|prev| prev < rowid && rowid - prev <= MAX_SCAN_GAP)
    };
    let mut events = Vec::with_capacity(usize::try_from(to - from + 1).unwrap_or(0));
    let mut walked = false;
    while expected >= from {
        let Some(rowid) = next else {
            if !walked {
                // No event to start from (the flow row names no last event): a flow has one.
                return Err(broken_chain(flow, expected));
            }
            // The chain ends here: the log (compacted) starts at the event after `expected`.
            return Ok(Walked::StartsAt(expected + 1));
        };
        walked = true;
        next = search
            .query_row([rowid], |row| {
                let owner: i64 = row.get(0)?;
                Ok(if owner == flow_no {
                    follow(row, flow, expected, to, &mut events)
                } else {
                    Err(broken_chain(flow, expected))
                })
            })
            .optional()
            .map_err(read_error)?
            .ok_or_else(|| broken_chain(flow, expected))??;
        expected -= 1;
        if expected < from || !close(rowid, next) {
            continue;
        }
        // While the scan goes on, each event lies at most `MAX_SCAN_GAP` rows before the one
        // after it, so the events still needed lie above `lowest`.
        let needed = i64::try_from(expected - from + 1).unwrap_or(i64::MAX);
        let mut wanted = next.unwrap_or_default();
        let lowest = wanted.saturating_sub(needed.saturating_mul(MAX_SCAN_GAP));
        let mut rows = scan.query((wanted, lowest, flow_no)).map_err(read_error)?;
        while let Some(row) = rows.next().map_err(read_error)? {
            let rowid: i64 = row.get(0).map_err(read_error)?;
            if rowid > wanted {
                // A row of this flow that is not in its chain: not part of the log.
                continue;
            }
            if rowid < wanted {
                // `wanted` is not a row of this flow: the search says what is wrong.
                break;
            }
            next = follow(row, flow, expected, to, &mut events)?;
            expected -= 1;
            if expected < from || !close(rowid, next) {
                break;
            }
            wanted = next.unwrap_or_default();
        }
    }
    events.reverse();
    Ok(Walked::Events(events))
}

/// How far back (in rows) a read scans for a flow's previous event before it searches for it
/// instead: passing over a row of another flow costs about a sixth of a search (measured),
/// so a scan pays off across a few of them only.
const MAX_SCAN_GAP: i64 = 4;

/// Checks that `row` (a row of the flow, with columns `_, seq, prev, time, format, body`) is
/// event `seq`, keeps it if `seq` is in the range read (up to `to`), and returns the rowid
/// of the event before it.
fn follow(
    row: &Row<'_>,
    flow: FlowId,
    seq: u64,
    to: u64,
    events: &mut Vec<RawEvent>,
) -> Result<Option<i64>, StoreError> {
    let (found, prev): (i64, Option<i64>) = (
        row.get(1).map_err(read_error)?,
        row.get(2).map_err(read_error)?,
    );
    if found != seq_value(seq) {
        return Err(broken_chain(flow, seq));
    }
    if seq <= to {
        let time: i64 = row.get(3).map_err(read_error)?;
        let format: i64 = row.get(4).map_err(read_error)?;
        events.push(RawEvent {
            flow,
            seq,
            time: Timestamp::from_micros(time),
            format: u16::try_from(format).map_err(|_| corrupt(format!("format {format}")))?,
            body: row.get(5).map_err(read_error)?,
        });
    }
    Ok(prev)
}

fn seq_value(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn broken_chain(flow: FlowId, seq: u64) -> StoreError {
    corrupt(format!(
        "flow {flow}: event {seq} is missing from its chain"
    ))
}

/// One page of the flow index.
pub fn list(conn: &Connection, query: &FlowQuery, size: usize) -> Result<FlowPage, StoreError> {
    let mut sql = format!("SELECT {SUMMARY} FROM flows WHERE 1 = 1");
    let mut params: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        params.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", params.len()));
    };
    if let Some(kind) = query.kind {
        filter("kind =", Value::Text(kind.key().to_owned()));
    }
    if let Some(definition) = &query.definition {
        filter("definition =", Value::Text(definition.clone()));
    }
    if let Some(status) = &query.status {
        filter("status =", Value::Text(status.clone()));
    }
    if let Some(from) = query.created_from {
        filter("created_at >=", Value::Integer(from.as_micros()));
    }
    if let Some(before) = query.created_before {
        filter("created_at <", Value::Integer(before.as_micros()));
    }
    if let Some(after) = query.after {
        filter("id >", Value::Blob(after.as_bytes().to_vec()));
    }
    let fetch = i64::try_from(size + 1).unwrap_or(i64::MAX);
    params.push(Value::Integer(fetch));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", params.len()));
    let mut stmt = conn.prepare(&sql).map_err(read_error)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), summary_row)
        .map_err(read_error)?;
    let mut flows = Vec::new();
    for row in rows {
        flows.push(row.map_err(read_error)??);
    }
    let next_after = (flows.len() > size).then(|| {
        flows.truncate(size);
        flows[size - 1].id
    });
    Ok(FlowPage { flows, next_after })
}
