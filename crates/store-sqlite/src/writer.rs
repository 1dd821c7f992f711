//! The writer thread: group commit over the one read-write connection. See the crate docs for
//! the protocol. This module owns the only code that changes the file.

use flowstate_core::{FlowId, FlowKind, FlowStatus, Timestamp};
use flowstate_store::validate::{check_log_room, check_status_kind};
use flowstate_store::{
    AppendBatch, AppendOutcome, Claim, DueTimer, FiredTimer, IdempotencyKey, NewEvent, NewTimer,
    Release, StoreError, WorkerId, KEY_PURGE_BATCH,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{flow_id, unsigned};
use crate::schema::MARK_INTERVAL;
use crate::MAX_GROUP_COMMIT;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One change, with the channel its durable outcome goes back on. Times are taken by the
/// caller from the injected clock, so the writer never reads a clock.
#[derive(Debug)]
pub enum Command {
    Append {
        batch: AppendBatch,
        now: Timestamp,
        reply: Reply<AppendOutcome>,
    },
    Compact {
        flow: FlowId,
        expected_next_seq: u64,
        events: Vec<NewEvent>,
        status: FlowStatus,
        reply: Reply<AppendOutcome>,
    },
    MarkReady {
        flow: FlowId,
        now: Timestamp,
        reply: Reply<()>,
    },
    Claim {
        worker: WorkerId,
        kinds: Vec<FlowKind>,
        limit: usize,
        now: Timestamp,
        until: Timestamp,
        reply: Reply<Vec<Claim>>,
    },
    Renew {
        worker: WorkerId,
        flows: Vec<FlowId>,
        until: Timestamp,
        reply: Reply<Vec<FlowId>>,
    },
    Release {
        worker: WorkerId,
        claim: Claim,
        release: Release,
        /// `None` when the worker no longer held the flow, else whether it is still ready.
        reply: Reply<Option<bool>>,
    },
    ScheduleTimer {
        flow: FlowId,
        timer: NewTimer,
        reply: Reply<()>,
    },
    CancelTimer {
        flow: FlowId,
        name: String,
        reply: Reply<bool>,
    },
    ClaimTimers {
        worker: WorkerId,
        limit: usize,
        now: Timestamp,
        until: Timestamp,
        reply: Reply<Vec<DueTimer>>,
    },
    CompleteTimer {
        worker: WorkerId,
        timer: DueTimer,
        reply: Reply<bool>,
    },
    FireTimers {
        limit: usize,
        now: Timestamp,
        reply: Reply<Vec<FiredTimer>>,
    },
    DeleteFlow {
        flow: FlowId,
        reply: Reply<bool>,
    },
    ReleaseForeignLeases {
        worker: WorkerId,
        reply: Reply<u64>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// Why one command did not succeed.
enum OpError {
    /// Refused (conflict, unknown flow, invalid input): undo this command only.
    Refused(StoreError),
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        Self::Refused(error)
    }
}

impl From<flowstate_store::InvalidInput> for OpError {
    fn from(error: flowstate_store::InvalidInput) -> Self {
        Self::Refused(error.into())
    }
}

/// Errors after which nothing more is written until the store is reopened.
fn is_fatal(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
        )
    )
}

fn io(error: &rusqlite::Error) -> StoreError {
    StoreError::Io {
        message: error.to_string(),
    }
}

/// A reply held back until the commit: delivers the command's result, or the commit's error.
type Deliver = Box<dyn FnOnce(Option<StoreError>) + Send>;

/// Holds a command's reply until the commit; also returns the SQLite error, if any, that
/// dooms the whole group.
fn hold<T: Send + 'static>(
    reply: Reply<T>,
    result: Result<T, OpError>,
) -> (Deliver, Option<rusqlite::Error>) {
    let (result, failed) = match result {
        Ok(value) => (Ok(value), None),
        Err(OpError::Refused(error)) => (Err(error), None),
        Err(OpError::Sqlite(error)) => (Err(io(&error)), Some(error)),
    };
    let deliver: Deliver = Box::new(move |commit_error| {
        // A caller that stopped waiting is no error: its write still happened (or not) as told.
        let _ignored = reply.send(match commit_error {
            None => result,
            Some(error) => Err(error),
        });
    });
    (deliver, failed)
}

/// Most flows whose index rows [`FlowRows`] keeps; when full it starts again empty.
pub const MAX_CACHED_FLOW_ROWS: usize = 4096;

/// The index rows (`find_flow`'s answers) of the flows this connection appended to last, so
/// that the next append to one of them needs no lookup (it is most of an append's reads).
/// Valid only while the file holds what this connection committed: emptied when another
/// connection has committed since (SQLite's `data_version` changed), when a group rolls
/// back, and per flow when its log is compacted or deleted.
#[derive(Default)]
struct FlowRows {
    /// `PRAGMA data_version` when the rows were last known valid.
    data_version: Option<i64>,
    rows: std::collections::HashMap<FlowId, FlowRow>,
}

impl FlowRows {
    /// At the start of a group (the write lock held): forgets everything if another
    /// connection has committed since the last group.
    fn check(&mut self, conn: &Connection) -> Result<(), rusqlite::Error> {
        let version: i64 = conn.query_row("PRAGMA data_version", [], |row| row.get(0))?;
        if self.data_version != Some(version) {
            self.rows.clear();
            self.data_version = Some(version);
        }
        Ok(())
    }

    fn forget_all(&mut self) {
        self.rows.clear();
        self.data_version = None;
    }

    fn remember(&mut self, flow: FlowId, row: FlowRow) {
        if self.rows.len() >= MAX_CACHED_FLOW_ROWS && !self.rows.contains_key(&flow) {
            self.rows.clear();
        }
        self.rows.insert(flow, row);
    }

    /// The flow's row, from memory or from the file.
    fn find(&self, conn: &Connection, flow: FlowId) -> Result<Option<FlowRow>, OpError> {
        match self.rows.get(&flow) {
            Some(row) => Ok(Some(row.clone())),
            None => find_flow(conn, flow),
        }
    }
}

/// Runs until every sender is gone or a Close command is processed. Sets `stopped` to the
/// cause when the store stops writing after an I/O error (the store's health), and records
/// each group's commit latency and size.
pub fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Command>,
    stopped: &std::sync::OnceLock<String>,
) {
    let mut poisoned: Option<String> = None;
    let mut rows = FlowRows::default();
    let mut batch = Vec::with_capacity(MAX_GROUP_COMMIT);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP_COMMIT {
            match queue.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let (started, size) = (std::time::Instant::now(), batch.len());
        let closing = commit_group(&mut conn, &mut batch, &mut poisoned, &mut rows);
        metrics::histogram!("flowstate_store_commit_seconds", "store" => "sqlite")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("flowstate_store_commit_batch_size", "store" => "sqlite")
            .record(size as f64);
        if let Some(cause) = poisoned.as_ref().filter(|_| stopped.get().is_none()) {
            let _ = stopped.set(cause.clone());
        }
        if closing {
            break;
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing the SQLite store failed");
    }
}

/// Runs one group of commands in one transaction, commits once, then replies. Returns
/// whether a Close was among them.
///
/// Every operation makes all of its checks before its first write, so a refused command
/// (conflict, unknown flow, invalid input) has written nothing and needs no savepoint. Any
/// SQLite error rolls the whole group back and fails every command in it; an I/O-class error
/// also poisons the store.
fn commit_group(
    conn: &mut Connection,
    batch: &mut Vec<Command>,
    poisoned: &mut Option<String>,
    rows: &mut FlowRows,
) -> bool {
    let mut closing = false;
    if let Some(cause) = poisoned.as_ref() {
        for command in batch.drain(..) {
            let error = StoreError::Poisoned {
                cause: cause.clone(),
            };
            closing |= refuse(command, error);
        }
        return closing;
    }
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Typically another process holding the write lock past the busy timeout: refuse
        // this group, but keep the store usable.
        for command in batch.drain(..) {
            closing |= refuse(command, io(&error));
        }
        return closing;
    }
    let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
    let mut failed: Option<rusqlite::Error> = rows.check(conn).err();
    for command in batch.drain(..) {
        if let Some(error) = &failed {
            // The transaction is lost; answer the rest without running them.
            closing |= refuse(command, io(error));
            continue;
        }
        let (deliver, outcome) = execute(conn, command, &mut closing, rows);
        delivers.push(deliver);
        if let Some(error) = outcome {
            failed = Some(error);
        }
    }
    let committed = match failed {
        Some(error) => Err(error),
        None => conn.execute_batch("COMMIT"),
    };
    match committed {
        Ok(()) => delivers.into_iter().for_each(|deliver| deliver(None)),
        Err(error) => {
            let _rolled_back = conn.execute_batch("ROLLBACK");
            rows.forget_all();
            if is_fatal(&error) {
                let cause = error.to_string();
                tracing::error!(%cause, "a write failed with an I/O error; the store stops writing");
                *poisoned = Some(cause);
            }
            delivers
                .into_iter()
                .for_each(|deliver| deliver(Some(io(&error))));
        }
    }
    closing
}

/// Answers a command with an error without running it. Returns whether it was a Close.
fn refuse(command: Command, error: StoreError) -> bool {
    macro_rules! answer {
        ($reply:expr) => {{
            let _ignored = $reply.send(Err(error));
            false
        }};
    }
    match command {
        Command::Append { reply, .. } | Command::Compact { reply, .. } => answer!(reply),
        Command::MarkReady { reply, .. } | Command::ScheduleTimer { reply, .. } => answer!(reply),
        Command::Claim { reply, .. } => answer!(reply),
        Command::Renew { reply, .. } => answer!(reply),
        Command::Release { reply, .. } => answer!(reply),
        Command::CancelTimer { reply, .. }
        | Command::CompleteTimer { reply, .. }
        | Command::DeleteFlow { reply, .. } => answer!(reply),
        Command::ClaimTimers { reply, .. } => answer!(reply),
        Command::FireTimers { reply, .. } => answer!(reply),
        Command::ReleaseForeignLeases { reply, .. } => answer!(reply),
        Command::Close { reply } => {
            let _ignored = reply.send(Err(error));
            true
        }
    }
}

fn execute(
    conn: &Connection,
    command: Command,
    closing: &mut bool,
    rows: &mut FlowRows,
) -> (Deliver, Option<rusqlite::Error>) {
    match command {
        Command::Append { batch, now, reply } => hold(reply, append(conn, batch, now, rows)),
        Command::Compact {
            flow,
            expected_next_seq,
            events,
            status,
            reply,
        } => {
            rows.rows.remove(&flow);
            hold(
                reply,
                compact(conn, flow, expected_next_seq, &events, status),
            )
        }
        Command::MarkReady { flow, now, reply } => hold(reply, mark_ready(conn, flow, now)),
        Command::Claim {
            worker,
            kinds,
            limit,
            now,
            until,
            reply,
        } => hold(reply, claim(conn, &worker, &kinds, limit, now, until)),
        Command::Renew {
            worker,
            flows,
            until,
            reply,
        } => hold(reply, renew(conn, &worker, &flows, until)),
        Command::Release {
            worker,
            claim,
            release,
            reply,
        } => hold(reply, release_claim(conn, &worker, &claim, release)),
        Command::ScheduleTimer { flow, timer, reply } => {
            hold(reply, schedule_timer(conn, flow, &timer))
        }
        Command::CancelTimer { flow, name, reply } => hold(reply, cancel_timer(conn, flow, &name)),
        Command::ClaimTimers {
            worker,
            limit,
            now,
            until,
            reply,
        } => hold(reply, claim_timers(conn, &worker, limit, now, until)),
        Command::CompleteTimer {
            worker,
            timer,
            reply,
        } => hold(reply, complete_timer(conn, &worker, &timer)),
        Command::FireTimers { limit, now, reply } => hold(reply, fire_timers(conn, limit, now)),
        Command::DeleteFlow { flow, reply } => {
            rows.rows.remove(&flow);
            hold(reply, delete_flow(conn, flow))
        }
        Command::ReleaseForeignLeases { worker, reply } => {
            hold(reply, release_foreign_leases(conn, &worker))
        }
        Command::Close { reply } => {
            *closing = true;
            hold(reply, Ok(()))
        }
    }
}

fn seq_param(value: u64) -> i64 {
    // Sequence numbers are bounded by MAX_EVENTS_PER_FLOW, far below i64::MAX.
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[derive(Clone)]
struct FlowRow {
    flow_no: i64,
    next_seq: u64,
    kind: FlowKind,
    /// Rowid of the flow's last event.
    last_event: Option<i64>,
}

fn find_flow(conn: &Connection, flow: FlowId) -> Result<Option<FlowRow>, OpError> {
    let row: Option<(i64, i64, String, Option<i64>)> = conn
        .prepare_cached("SELECT flow_no, next_seq, kind, last_event FROM flows WHERE id = ?1")?
        .query_row([flow.as_bytes()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((flow_no, next_seq, kind, last_event)) = row else {
        return Ok(None);
    };
    let kind = FlowKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
        detail: format!("flow {flow} has kind {kind:?}"),
    })?;
    Ok(Some(FlowRow {
        flow_no,
        next_seq: unsigned(next_seq, "next_seq")?,
        kind,
        last_event,
    }))
}

fn flow_no(conn: &Connection, flow: FlowId) -> Result<Option<i64>, OpError> {
    Ok(conn
        .prepare_cached("SELECT flow_no FROM flows WHERE id = ?1")?
        .query_row([flow.as_bytes()], |row| row.get(0))
        .optional()?)
}

fn append(
    conn: &Connection,
    batch: AppendBatch,
    now: Timestamp,
    rows: &mut FlowRows,
) -> Result<AppendOutcome, OpError> {
    let key = batch.create.as_ref().and_then(|c| c.idempotency.as_ref());
    if let Some(key) = key {
        key_taken(conn, key, now)?;
    }
    let existing = rows.find(conn, batch.flow)?;
    let actual = existing.as_ref().map_or(1, |row| row.next_seq);
    if actual != batch.expected_next_seq {
        if existing.is_none() {
            return Err(StoreError::UnknownFlow { flow: batch.flow }.into());
        }
        return Err(StoreError::Conflict {
            flow: batch.flow,
            expected: batch.expected_next_seq,
            actual,
        }
        .into());
    }
    check_log_room(actual, batch.events.len())?;
    let first_time = batch.events[0].time;
    let last_time = batch.events[batch.events.len() - 1].time;
    let kind = match (&existing, &batch.create) {
        (Some(row), _) => row.kind,
        (None, Some(create)) => create.kind,
        (None, None) => return Err(StoreError::UnknownFlow { flow: batch.flow }.into()),
    };
    if let Some(status) = batch.status {
        check_status_kind(kind, status)?;
    }
    // All checks are done; from here on, only an SQLite error can stop this append.
    let prev = existing.as_ref().and_then(|row| row.last_event);
    let flow_no = match (existing, &batch.create) {
        (Some(row), _) => row.flow_no,
        (None, Some(create)) => {
            let status = batch
                .status
                .unwrap_or_else(|| flowstate_core::FlowStatus::initial(create.kind));
            conn.prepare_cached(
                "INSERT INTO flows (id, kind, definition, status, created_at, updated_at,
                                    next_seq, bytes, ready, ready_since, wake)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, 0, 0, ?6, 0)",
            )?
            .execute((
                batch.flow.as_bytes(),
                create.kind.key(),
                &create.definition,
                status.key(),
                first_time.as_micros(),
                now.as_micros(),
            ))?;
            let flow_no = conn.last_insert_rowid();
            if let Some(key) = &create.idempotency {
                record_key(conn, batch.flow, key, now)?;
            }
            flow_no
        }
        (None, None) => return Err(StoreError::UnknownFlow { flow: batch.flow }.into()),
    };
    let (last_event, bytes) = insert_events(conn, flow_no, actual, prev, &batch.events)?;
    let next_seq = actual + batch.events.len() as u64;
    conn.prepare_cached(
        "UPDATE flows SET
            next_seq = ?2, updated_at = ?3, bytes = bytes + ?4, status = coalesce(?5, status),
            ready_since = CASE WHEN ?6 = 1 AND ready = 0 THEN ?7 ELSE ready_since END,
            wake = CASE WHEN ?6 = 1 THEN wake + 1 ELSE wake END,
            ready = coalesce(?6, ready),
            last_event = ?8
         WHERE flow_no = ?1",
    )?
    .execute((
        flow_no,
        seq_param(next_seq),
        last_time.as_micros(),
        bytes,
        batch.status.map(|s| s.key()),
        batch.ready,
        now.as_micros(),
        last_event,
    ))?;
    for timer in &batch.timers {
        upsert_timer(conn, flow_no, timer)?;
    }
    rows.remember(
        batch.flow,
        FlowRow {
            flow_no,
            next_seq,
            kind,
            last_event,
        },
    );
    Ok(AppendOutcome {
        first_seq: actual,
        next_seq,
    })
}

/// Refuses a creation whose idempotency key is live at `now` ([`StoreError::KeyTaken`]).
fn key_taken(conn: &Connection, key: &IdempotencyKey, now: Timestamp) -> Result<(), OpError> {
    let row: Option<(Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT flow, fingerprint FROM idempotency_keys WHERE key = ?1 AND expires_at > ?2",
        )?
        .query_row((&key.key, now.as_micros()), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((flow, fingerprint)) = row else {
        return Ok(());
    };
    let flow = flow_id(&flow)?;
    Err(StoreError::KeyTaken {
        key: key.key.clone(),
        flow,
        fingerprint,
    }
    .into())
}

/// Purges up to [`KEY_PURGE_BATCH`] expired keys and records `key` for `flow` (replacing
/// an expired row of the same key).
fn record_key(
    conn: &Connection,
    flow: FlowId,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<(), OpError> {
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE key IN
            (SELECT key FROM idempotency_keys WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    )?
    .execute((now.as_micros(), KEY_PURGE_BATCH as i64))?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (key, flow, fingerprint, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((
        &key.key,
        flow.as_bytes(),
        &key.fingerprint,
        key.expires_at.as_micros(),
    ))?;
    Ok(())
}

/// Inserts `events` as events `first_seq..` of the flow, chained after the event in row
/// `prev` (its last one), with a mark every [`MARK_INTERVAL`] events. Returns the rowid of
/// the last one inserted and the size of their bodies.
fn insert_events(
    conn: &Connection,
    flow_no: i64,
    first_seq: u64,
    mut prev: Option<i64>,
    events: &[NewEvent],
) -> Result<(Option<i64>, i64), OpError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (flow_no, seq, prev, time, format, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut mark =
        conn.prepare_cached("INSERT INTO event_marks (flow_no, seq, event) VALUES (?1, ?2, ?3)")?;
    let mut bytes: i64 = 0;
    for (offset, event) in events.iter().enumerate() {
        let seq = first_seq + offset as u64;
        bytes += i64::try_from(event.body.len()).unwrap_or(i64::MAX);
        insert.execute((
            flow_no,
            seq_param(seq),
            prev,
            event.time.as_micros(),
            event.format,
            &event.body,
        ))?;
        let rowid = conn.last_insert_rowid();
        if seq.is_multiple_of(MARK_INTERVAL) {
            mark.execute((flow_no, seq_param(seq), rowid))?;
        }
        prev = Some(rowid);
    }
    Ok((prev, bytes))
}

/// Replaces a flow's whole log (see `Store::compact`) by `events` numbered from
/// `expected_next_seq` (after the old log: the next sequence number never goes down): all
/// checks (the flow, its next sequence number, the status's kind, room for the new sequence
/// numbers, and the old log's chain) come before the first write, so a refusal has written
/// nothing. The new log's first event has no `prev` (a chain ends there), and its marks fall
/// on the multiples of [`MARK_INTERVAL`] as an append's do. The flow row keeps everything but
/// what follows the log.
fn compact(
    conn: &Connection,
    flow: FlowId,
    expected_next_seq: u64,
    events: &[NewEvent],
    status: FlowStatus,
) -> Result<AppendOutcome, OpError> {
    let row = find_flow(conn, flow)?.ok_or(StoreError::UnknownFlow { flow })?;
    if row.next_seq != expected_next_seq {
        return Err(StoreError::Conflict {
            flow,
            expected: expected_next_seq,
            actual: row.next_seq,
        }
        .into());
    }
    check_status_kind(row.kind, status)?;
    check_log_room(expected_next_seq, events.len())?;
    let old = chain(conn, flow, &row)?;
    // All checks are done; from here on, only an SQLite error can stop this compaction.
    delete_log(conn, row.flow_no, &old)?;
    let (last_event, bytes) = insert_events(conn, row.flow_no, expected_next_seq, None, events)?;
    let next_seq = expected_next_seq + events.len() as u64;
    let last_time = events[events.len() - 1].time;
    conn.prepare_cached(
        "UPDATE flows SET next_seq = ?2, updated_at = ?3, bytes = ?4, status = ?5, last_event = ?6
         WHERE flow_no = ?1",
    )?
    .execute((
        row.flow_no,
        seq_param(next_seq),
        last_time.as_micros(),
        bytes,
        status.key(),
        last_event,
    ))?;
    Ok(AppendOutcome {
        first_seq: expected_next_seq,
        next_seq,
    })
}

/// The rows of a flow's events, last first, found through the chain of `prev` pointers
/// (there is no flow index). Every link is checked before anything is deleted (its owner, and
/// that its sequence number is one less than its successor's, starting at the last one), so a
/// broken chain (a `prev` to a missing row or a row of another flow, a skipped or repeated
/// sequence number, no last event) is refused as corruption with nothing written. The chain
/// ends at the event whose `prev` is NULL: event 1, or the first event of a compacted log.
fn chain(conn: &Connection, flow: FlowId, row: &FlowRow) -> Result<Vec<i64>, OpError> {
    let mut walk =
        conn.prepare_cached("SELECT seq, prev FROM events WHERE rowid = ?1 AND flow_no = ?2")?;
    let broken = |seq: u64| StoreError::Corrupt {
        detail: format!("flow {flow}: event {seq} is missing from its chain"),
    };
    let mut expected = row.next_seq.saturating_sub(1);
    let mut rowids = Vec::new();
    let mut next = row.last_event;
    if next.is_none() && expected != 0 {
        // A flow has at least one event.
        return Err(broken(expected).into());
    }
    while let Some(rowid) = next {
        let (seq, prev) = walk
            .query_row((rowid, row.flow_no), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .optional()?
            .ok_or_else(|| broken(expected))?;
        if expected == 0 || seq != seq_param(expected) {
            return Err(broken(expected).into());
        }
        rowids.push(rowid);
        expected -= 1;
        next = prev;
    }
    Ok(rowids)
}

/// Deletes a flow's log: the event rows `chain` found, and the marks.
fn delete_log(conn: &Connection, flow_no: i64, rowids: &[i64]) -> Result<(), OpError> {
    let mut delete = conn.prepare_cached("DELETE FROM events WHERE rowid = ?1")?;
    for rowid in rowids {
        delete.execute([rowid])?;
    }
    conn.prepare_cached("DELETE FROM event_marks WHERE flow_no = ?1")?
        .execute([flow_no])?;
    Ok(())
}

fn upsert_timer(conn: &Connection, flow_no: i64, timer: &NewTimer) -> Result<(), OpError> {
    conn.prepare_cached(
        "INSERT INTO timers (flow_no, name, due, lease_owner, lease_until)
         VALUES (?1, ?2, ?3, NULL, NULL)
         ON CONFLICT (flow_no, name)
         DO UPDATE SET due = excluded.due, lease_owner = NULL, lease_until = NULL",
    )?
    .execute((flow_no, &timer.name, timer.due.as_micros()))?;
    Ok(())
}

fn mark_ready(conn: &Connection, flow: FlowId, now: Timestamp) -> Result<(), OpError> {
    let changed = conn
        .prepare_cached(
            "UPDATE flows SET
                ready_since = CASE WHEN ready = 0 THEN ?2 ELSE ready_since END,
                ready = 1, wake = wake + 1
             WHERE id = ?1",
        )?
        .execute((flow.as_bytes(), now.as_micros()))?;
    if changed == 0 {
        return Err(StoreError::UnknownFlow { flow }.into());
    }
    Ok(())
}

fn claim(
    conn: &Connection,
    worker: &WorkerId,
    kinds: &[FlowKind],
    limit: usize,
    now: Timestamp,
    until: Timestamp,
) -> Result<Vec<Claim>, OpError> {
    let mut select = conn.prepare_cached(
        "SELECT flow_no, id, next_seq, wake, kind FROM flows
         WHERE ready = 1 AND (lease_until IS NULL OR lease_until <= ?1)
           AND kind IN (SELECT value FROM json_each(?3))
         ORDER BY ready_since, flow_no LIMIT ?2",
    )?;
    // A JSON array of the kinds' keys (plain identifiers), for json_each.
    let kinds = format!(
        "[{}]",
        kinds
            .iter()
            .map(|k| format!("\"{}\"", k.key()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let rows = select
        .query_map(
            (
                now.as_micros(),
                i64::try_from(limit).unwrap_or(i64::MAX),
                kinds,
            ),
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let mut lease = conn
        .prepare_cached("UPDATE flows SET lease_owner = ?2, lease_until = ?3 WHERE flow_no = ?1")?;
    let mut claims = Vec::with_capacity(rows.len());
    for (flow_no, id, next_seq, wake, kind) in rows {
        lease.execute((flow_no, worker.as_str(), until.as_micros()))?;
        claims.push(Claim {
            flow: flow_id(&id)?,
            kind: FlowKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                detail: format!("flow kind {kind:?}"),
            })?,
            next_seq: unsigned(next_seq, "next_seq")?,
            lease_until: until,
            wake: unsigned(wake, "wake count")?,
        });
    }
    Ok(claims)
}

fn renew(
    conn: &Connection,
    worker: &WorkerId,
    flows: &[FlowId],
    until: Timestamp,
) -> Result<Vec<FlowId>, OpError> {
    let mut update = conn
        .prepare_cached("UPDATE flows SET lease_until = ?3 WHERE id = ?1 AND lease_owner = ?2")?;
    let mut renewed = Vec::new();
    for flow in flows {
        if update.execute((flow.as_bytes(), worker.as_str(), until.as_micros()))? == 1 {
            renewed.push(*flow);
        }
    }
    Ok(renewed)
}

fn release_claim(
    conn: &Connection,
    worker: &WorkerId,
    claim: &Claim,
    release: Release,
) -> Result<Option<bool>, OpError> {
    let idle = release == Release::Idle;
    let still_ready = conn
        .prepare_cached(
            "UPDATE flows SET
                lease_owner = NULL, lease_until = NULL,
                ready = CASE WHEN ?3 AND wake = ?4 THEN 0 ELSE ready END
             WHERE id = ?1 AND lease_owner = ?2 RETURNING ready",
        )?
        .query_row(
            (
                claim.flow.as_bytes(),
                worker.as_str(),
                idle,
                i64::try_from(claim.wake).unwrap_or(i64::MAX),
            ),
            |row| row.get::<_, bool>(0),
        )
        .optional()?;
    Ok(still_ready)
}

/// Clears every lease on flows and timers not held by `worker` (the process lock proves
/// their holders are gone). One scan of each table, once per process start.
fn release_foreign_leases(conn: &Connection, worker: &WorkerId) -> Result<u64, OpError> {
    let mut released = 0;
    for table in ["flows", "timers"] {
        released += conn
            .prepare_cached(&format!(
                "UPDATE {table} SET lease_owner = NULL, lease_until = NULL
                 WHERE lease_owner IS NOT NULL AND lease_owner <> ?1"
            ))?
            .execute([worker.as_str()])?;
    }
    Ok(released as u64)
}

fn schedule_timer(conn: &Connection, flow: FlowId, timer: &NewTimer) -> Result<(), OpError> {
    let flow_no = flow_no(conn, flow)?.ok_or(StoreError::UnknownFlow { flow })?;
    upsert_timer(conn, flow_no, timer)
}

fn cancel_timer(conn: &Connection, flow: FlowId, name: &str) -> Result<bool, OpError> {
    let Some(flow_no) = flow_no(conn, flow)? else {
        return Ok(false);
    };
    let deleted = conn
        .prepare_cached("DELETE FROM timers WHERE flow_no = ?1 AND name = ?2")?
        .execute((flow_no, name))?;
    Ok(deleted == 1)
}

/// A due timer's row: `(flow_no, flow id, name, due)`.
type DueRow = (i64, Vec<u8>, String, i64);

/// Up to `limit` timers due at `now` that nobody holds, earliest first.
fn due_timers(conn: &Connection, limit: usize, now: Timestamp) -> Result<Vec<DueRow>, OpError> {
    let mut select = conn.prepare_cached(
        "SELECT t.flow_no, f.id, t.name, t.due FROM timers t JOIN flows f ON f.flow_no = t.flow_no
         WHERE t.due <= ?1 AND (t.lease_until IS NULL OR t.lease_until <= ?1)
         ORDER BY t.due, t.flow_no, t.name LIMIT ?2",
    )?;
    let rows = select
        .query_map(
            (now.as_micros(), i64::try_from(limit).unwrap_or(i64::MAX)),
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn claim_timers(
    conn: &Connection,
    worker: &WorkerId,
    limit: usize,
    now: Timestamp,
    until: Timestamp,
) -> Result<Vec<DueTimer>, OpError> {
    let rows = due_timers(conn, limit, now)?;
    let mut lease = conn.prepare_cached(
        "UPDATE timers SET lease_owner = ?3, lease_until = ?4 WHERE flow_no = ?1 AND name = ?2",
    )?;
    let mut timers = Vec::with_capacity(rows.len());
    for (flow_no, id, name, due) in rows {
        lease.execute((flow_no, &name, worker.as_str(), until.as_micros()))?;
        timers.push(DueTimer {
            flow: flow_id(&id)?,
            name,
            due: Timestamp::from_micros(due),
            lease_until: until,
        });
    }
    Ok(timers)
}

fn fire_timers(
    conn: &Connection,
    limit: usize,
    now: Timestamp,
) -> Result<Vec<FiredTimer>, OpError> {
    let rows = due_timers(conn, limit, now)?;
    let mut remove = conn.prepare_cached("DELETE FROM timers WHERE flow_no = ?1 AND name = ?2")?;
    let mut ready = conn.prepare_cached(
        "UPDATE flows SET
            ready_since = CASE WHEN ready = 0 THEN ?2 ELSE ready_since END,
            ready = 1, wake = wake + 1
         WHERE flow_no = ?1",
    )?;
    let mut fired = Vec::with_capacity(rows.len());
    for (flow_no, id, name, due) in rows {
        remove.execute((flow_no, &name))?;
        ready.execute((flow_no, now.as_micros()))?;
        fired.push(FiredTimer {
            flow: flow_id(&id)?,
            name,
            due: Timestamp::from_micros(due),
        });
    }
    Ok(fired)
}

fn complete_timer(conn: &Connection, worker: &WorkerId, timer: &DueTimer) -> Result<bool, OpError> {
    let Some(flow_no) = flow_no(conn, timer.flow)? else {
        return Ok(false);
    };
    let deleted = conn
        .prepare_cached(
            "DELETE FROM timers WHERE flow_no = ?1 AND name = ?2 AND due = ?3 AND lease_owner = ?4",
        )?
        .execute((flow_no, &timer.name, timer.due.as_micros(), worker.as_str()))?;
    Ok(deleted == 1)
}

fn delete_flow(conn: &Connection, flow: FlowId) -> Result<bool, OpError> {
    let Some(row) = find_flow(conn, flow)? else {
        return Ok(false);
    };
    let flow_no = row.flow_no;
    let events = chain(conn, flow, &row)?;
    // All checks are done; from here on, only an SQLite error can stop this deletion.
    delete_log(conn, flow_no, &events)?;
    conn.prepare_cached("DELETE FROM timers WHERE flow_no = ?1")?
        .execute([flow_no])?;
    conn.prepare_cached("DELETE FROM flows WHERE flow_no = ?1")?
        .execute([flow_no])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use flowstate_core::machine::ActivationState;

    use super::*;

    /// After an I/O-class failure every write is refused, compactions included, and nothing
    /// reaches the file.
    #[test]
    fn a_poisoned_writer_refuses_compactions() {
        let mut conn = Connection::open_in_memory().expect("sqlite");
        let (reply, mut outcome) = oneshot::channel();
        let flow = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [1; 10]);
        let mut batch = vec![Command::Compact {
            flow,
            expected_next_seq: 2,
            events: vec![NewEvent {
                time: Timestamp::from_micros(1),
                format: 1,
                body: b"{}".to_vec(),
            }],
            status: FlowStatus::Function(ActivationState::Done),
            reply,
        }];
        let mut poisoned = Some("disk I/O error".to_owned());
        assert!(!commit_group(
            &mut conn,
            &mut batch,
            &mut poisoned,
            &mut FlowRows::default()
        ));
        let refused = outcome.try_recv().expect("answered");
        assert!(
            matches!(&refused, Err(StoreError::Poisoned { cause }) if cause == "disk I/O error"),
            "{refused:?}"
        );
    }
}
