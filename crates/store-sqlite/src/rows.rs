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

/// Reads a range of one flow's log, in one read transaction so the flow lookup and the range
/// see the same snapshot.
pub fn read_events(
    conn: &Connection,
    flow: FlowId,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<RawEvent>, StoreError> {
    let tx = conn.unchecked_transaction().map_err(read_error)?;
    let flow_no: Option<i64> = tx
        .prepare_cached("SELECT flow_no FROM flows WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([flow.as_bytes()], |row| row.get(0))
                .optional()
        })
        .map_err(read_error)?;
    let Some(flow_no) = flow_no else {
        return Err(StoreError::UnknownFlow { flow });
    };
    let from = i64::try_from(from_seq.max(1)).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = tx
        .prepare_cached(
            "SELECT seq, time, format, body FROM events
             WHERE flow_no = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(read_error)?;
    let rows = stmt
        .query_map((flow_no, from, limit), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(read_error)?;
    let mut events = Vec::new();
    for row in rows {
        let (seq, time, format, body) = row.map_err(read_error)?;
        events.push(RawEvent {
            flow,
            seq: unsigned(seq, "sequence number")?,
            time: Timestamp::from_micros(time),
            format: u16::try_from(format).map_err(|_| corrupt(format!("format {format}")))?,
            body,
        });
    }
    Ok(events)
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
