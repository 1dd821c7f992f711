//! The on-disk format: schema, format identification and version checks.
//!
//! A flowstate file is recognised by SQLite's `application_id` header field. Its schema
//! version is `user_version`. An older binary refuses a newer file; a newer binary migrates
//! an older file forward at open, in one transaction ([`migrate`]). Version 2 adds the
//! `idempotency_keys` table (a start's key, the flow it made, the request's fingerprint and
//! when the key expires), written in the same transaction as the flow it names.
//!
//! **Table shape** is chosen for append speed (measured in BENCHMARKS.md). Events live in a
//! rowid table in append order, so a group commit of a thousand flows writes a few dozen
//! adjacent pages. There is deliberately no `(flow, seq)` index: with many flows appending at
//! once, such an index is updated at a thousand scattered places per commit, which cut
//! throughput by more than half in our measurements. Instead each event row points to the
//! previous event of its flow (`prev`), the flow row points to the last one (`last_event`),
//! and every [`MARK_INTERVAL`]-th event of a flow is entered in the small `event_marks` index.
//! Reading events `from..=to` starts at the first mark at or after `to` (or at the last event)
//! and follows `prev` back to `from`: at most `to - from + MARK_INTERVAL` row lookups by rowid.

use rusqlite::{Connection, OptionalExtension};

use flowstate_store::StoreError;

/// "flow" in ASCII: marks a file as a flowstate store.
pub const APPLICATION_ID: i32 = 0x666C_6F77;

/// Every event whose sequence number is a multiple of this is entered in `event_marks`, so
/// reading a range never walks more than this many events outside it.
pub const MARK_INTERVAL: u64 = 64;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 2;

/// Version 2: idempotency keys of starts, by key, with an index on their expiry for the
/// purge.
const MIGRATION_V2: &str = "
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    flow        BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
";

const SCHEMA_V1: &str = "
CREATE TABLE flows (
    flow_no     INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    next_seq    INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    ready       INTEGER NOT NULL,
    ready_since INTEGER NOT NULL,
    wake        INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_event  INTEGER
);
CREATE INDEX flows_ready ON flows (ready_since, flow_no) WHERE ready = 1;
CREATE INDEX flows_created ON flows (created_at);
CREATE TABLE events (
    flow_no INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    prev    INTEGER,
    time    INTEGER NOT NULL,
    format  INTEGER NOT NULL,
    body    BLOB NOT NULL
);
CREATE TABLE event_marks (
    flow_no INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    event   INTEGER NOT NULL,
    PRIMARY KEY (flow_no, seq)
) WITHOUT ROWID;
CREATE TABLE timers (
    flow_no     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    due         INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    PRIMARY KEY (flow_no, name)
) WITHOUT ROWID;
CREATE INDEX timers_due ON timers (due);
";

/// What a freshly opened file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// No tables and no application id: a new, empty file.
    Empty,
    /// A flowstate store of this version or an older one ([`migrate`] brings it forward).
    Current,
}

/// Identifies the file and checks its version, without changing it.
pub fn inspect(conn: &Connection, location: &str) -> Result<FileState, StoreError> {
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(|e| crate::open_error(e, location))?;
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| crate::open_error(e, location))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(|e| crate::open_error(e, location))?;
    if application_id == 0 && version == 0 && tables == 0 {
        return Ok(FileState::Empty);
    }
    if application_id != APPLICATION_ID {
        return Err(StoreError::Foreign {
            location: location.to_owned(),
            detail: format!(
                "an SQLite database with application id {application_id:#x} and {tables} schema objects"
            ),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerFormat {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::Corrupt {
            detail: format!("flowstate file with schema version {version}"),
        });
    }
    Ok(FileState::Current)
}

/// Creates the schema in an empty file, in one transaction.
pub fn create(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA_V1)?;
    tx.execute_batch(MIGRATION_V2)?;
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()
}

/// Brings a file of an older schema version to [`SCHEMA_VERSION`], in one transaction (a
/// no-op for a current file).
pub fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version < 2 {
        tx.execute_batch(MIGRATION_V2)?;
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    }
    tx.commit()
}

/// Indexes added since version 1 of the schema (each idempotent, run at every open). The
/// timers' order index serves `ORDER BY due, flow_no, name` without a sort: with many timers
/// due at the same moment (100,000 sleepers waking together) a sort per batch made firing
/// them quadratic.
pub fn ensure_indexes(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS timers_due_order ON timers (due, flow_no, name);
         DROP INDEX IF EXISTS timers_due;",
    )
}

/// Whether the schema has the tables this version expects (a cheap structural check).
pub fn check_tables(conn: &Connection) -> Result<(), StoreError> {
    for table in [
        "flows",
        "events",
        "event_marks",
        "timers",
        "idempotency_keys",
    ] {
        let found: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| StoreError::Corrupt {
                detail: e.to_string(),
            })?;
        if found.is_none() {
            return Err(StoreError::Corrupt {
                detail: format!("the {table} table is missing"),
            });
        }
    }
    Ok(())
}
