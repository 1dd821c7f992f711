//! Schema migrations, embedded, versioned and applied at start under an advisory lock (so
//! several engine processes starting together migrate once). An older binary refuses a newer
//! schema.

use flowstate_store::StoreError;
use tokio_postgres::Client;

use crate::pg_error;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 3;

/// Migrations by version: `MIGRATIONS[v - 1]` takes the schema from `v - 1` to `v`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE flows (
    flow_no     BIGSERIAL PRIMARY KEY,
    id          UUID NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    next_seq    BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    ready       BOOLEAN NOT NULL,
    ready_since BIGINT NOT NULL,
    wake        BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX flows_ready ON flows (ready_since, flow_no) WHERE ready;
CREATE INDEX flows_created ON flows (created_at);
CREATE TABLE events (
    flow_no BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    time    BIGINT NOT NULL,
    format  SMALLINT NOT NULL,
    body    BYTEA NOT NULL,
    PRIMARY KEY (flow_no, seq)
);
CREATE TABLE timers (
    flow_no     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    due         BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    PRIMARY KEY (flow_no, name)
);
CREATE INDEX timers_due ON timers (due);
",
    "
-- Version 2: idle workers ask for the next time a timer may be claimed (a free timer's due
-- time, or a held timer's lease end); both halves need an index with 100,000 sleepers.
CREATE INDEX timers_free_due ON timers (due) WHERE lease_until IS NULL;
CREATE INDEX timers_lease ON timers (lease_until) WHERE lease_until IS NOT NULL;
",
    "
-- Version 3: idempotency keys of starts (the flow each made, the request's fingerprint, when
-- the key expires), written in the same transaction as the flow; expiry-ordered for the purge.
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    flow        UUID NOT NULL,
    fingerprint TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
",
];

/// Brings the schema (in the connection's `search_path`) to [`SCHEMA_VERSION`]. Without
/// `create`, a database with no flowstate schema is refused instead of initialised.
pub async fn migrate(client: &mut Client, create: bool, location: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    // One migrator at a time across processes; released at commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('flowstate-migrate'))",
        &[],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS flowstate_schema (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), version INTEGER NOT NULL)",
    )
    .await
    .map_err(pg_error)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM flowstate_schema", &[])
        .await
        .map_err(pg_error)?
        .map_or(0, |row| row.get(0));
    let refusal = if version == 0 && !create {
        Some(StoreError::Missing {
            location: location.to_owned(),
        })
    } else if version > SCHEMA_VERSION {
        Some(StoreError::NewerFormat {
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: u32::try_from(SCHEMA_VERSION).unwrap_or(0),
        })
    } else {
        None
    };
    if let Some(refusal) = refusal {
        // Roll back now rather than leave a pooled connection idle in a transaction.
        tx.rollback().await.map_err(pg_error)?;
        return Err(refusal);
    }
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let target = i32::try_from(index).unwrap_or(i32::MAX) + 1;
        if target > version {
            tx.batch_execute(migration).await.map_err(pg_error)?;
        }
    }
    tx.execute(
        "INSERT INTO flowstate_schema (id, version) VALUES (TRUE, $1)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}
