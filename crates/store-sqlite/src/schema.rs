//! The on-disk format: schema, format identification and version checks.
//!
//! A flowstate file is recognised by SQLite's `application_id` header field. Its schema
//! version is `user_version`. An older binary refuses a newer file; a newer binary migrates
//! an older file forward at open (there is one version so far).
//!
//! Table shape is chosen for append speed (see BENCHMARKS.md): events are a rowid table in
//! append order, located by a small integer flow number, with a unique `(flow_no, seq)` index
//! as the last line of defence against a duplicate sequence number.

use rusqlite::{Connection, OptionalExtension};

use flowstate_store::StoreError;

/// "flow" in ASCII: marks a file as a flowstate store.
pub const APPLICATION_ID: i32 = 0x666C_6F77;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

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
    lease_until INTEGER
);
CREATE INDEX flows_ready ON flows (ready_since, flow_no) WHERE ready = 1;
CREATE INDEX flows_created ON flows (created_at);
CREATE TABLE events (
    flow_no INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    time    INTEGER NOT NULL,
    format  INTEGER NOT NULL,
    body    BLOB NOT NULL
);
CREATE UNIQUE INDEX events_by_flow ON events (flow_no, seq);
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
    /// A flowstate store of this version.
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
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()
}

/// Whether the schema has the tables this version expects (a cheap structural check).
pub fn check_tables(conn: &Connection) -> Result<(), StoreError> {
    for table in ["flows", "events", "timers"] {
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
