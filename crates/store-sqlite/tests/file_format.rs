//! A file that is missing, foreign, corrupt or from a newer flowstate gives a clear, typed
//! error when opened, never a panic and never a silently created store.

use std::path::Path;
use std::sync::Arc;

use flowstate_core::{FlowId, FlowKind, ManualClock, Timestamp};
use flowstate_store::{AppendBatch, NewEvent, NewFlow, Store, StoreError};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore, SCHEMA_VERSION};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_micros(
        1_767_225_600_000_000,
    )))
}

fn open(path: &Path, create: bool) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(
        path,
        clock(),
        SqliteOptions {
            create,
            ..SqliteOptions::default()
        },
    )
}

async fn store_with_one_flow(path: &Path) -> FlowId {
    let store = open(path, true).expect("create");
    let flow = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [1; 10]);
    let event = NewEvent {
        time: Timestamp::from_micros(1),
        format: 1,
        body: br#"{"type":"flow_created","kind":"plan","definition":"p"}"#.to_vec(),
    };
    store
        .append(AppendBatch {
            flow,
            expected_next_seq: 1,
            events: vec![event; 50],
            create: Some(NewFlow {
                kind: FlowKind::Plan,
                definition: "p".into(),
                idempotency: None,
            }),
            status: None,
            ready: None,
            timers: Vec::new(),
        })
        .await
        .expect("append");
    store.close().await.expect("close");
    flow
}

#[test]
fn a_missing_file_is_an_error_and_is_not_created_without_create() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("absent.db");
    let error = open(&path, false).expect_err("refused");
    assert!(matches!(error, StoreError::Missing { .. }), "{error:?}");
    assert!(error.to_string().contains("absent.db"));
    assert!(!path.exists());
}

#[test]
fn garbage_bytes_are_not_a_store() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write");
    for create in [false, true] {
        let error = open(&path, create).expect_err("refused");
        assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
    }
}

#[test]
fn an_empty_file_is_not_a_store_for_readers_but_can_be_initialised() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("write");
    let error = open(&path, false).expect_err("refused");
    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
    drop(open(&path, true).expect("initialised"));
    drop(open(&path, false).expect("now a store"));
}

#[test]
fn another_applications_database_is_foreign() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")
        .expect("schema");
    drop(conn);
    let error = open(&path, true).expect_err("refused");
    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
}

#[tokio::test]
async fn a_file_from_a_newer_flowstate_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("newer.db");
    store_with_one_flow(&path).await;
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .expect("bump");
    drop(conn);
    let error = open(&path, true).expect_err("refused");
    assert!(
        matches!(error, StoreError::NewerFormat { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade flowstate"));
}

#[tokio::test]
async fn a_damaged_file_gives_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("damaged.db");
    let flow = store_with_one_flow(&path).await;

    // A missing table.
    let copy = dir.path().join("no-events.db");
    std::fs::copy(&path, &copy).expect("copy");
    let conn = rusqlite::Connection::open(&copy).expect("sqlite");
    conn.execute_batch("DROP TABLE events").expect("drop");
    drop(conn);
    let error = open(&copy, false).expect_err("refused");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");

    // Pages overwritten with garbage after the header: opening may succeed (the header is
    // intact), but reading must then fail with an error.
    let bytes = std::fs::read(&path).expect("read");
    let mut damaged = bytes.clone();
    for byte in damaged.iter_mut().skip(4096) {
        *byte = 0xa5;
    }
    std::fs::write(&path, &damaged).expect("write");
    match open(&path, false) {
        Err(error) => assert!(!error.to_string().is_empty()),
        Ok(store) => {
            let read = store.read(flow, 1, 100).await;
            let listed = store.list(&Default::default()).await;
            assert!(read.is_err() || listed.is_err(), "damage went unnoticed");
        }
    }
}

#[tokio::test]
async fn a_broken_event_chain_is_corruption_not_a_shorter_log() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chain.db");
    let flow = store_with_one_flow(&path).await;
    // The 50 events lie in adjacent rows (one append), so reads follow them with a scan.
    let damages = [
        ("a missing event", "DELETE FROM events WHERE seq = 25"),
        (
            "an event with another number",
            "UPDATE events SET seq = 99 WHERE seq = 25",
        ),
        (
            "an event of another flow",
            "UPDATE events SET flow_no = flow_no + 1 WHERE seq = 25",
        ),
        (
            "a link that skips an event",
            "UPDATE events SET prev = prev - 1 WHERE seq = 26",
        ),
        (
            "a link that points ahead",
            "UPDATE events SET prev = prev + 2 WHERE seq = 26",
        ),
    ];
    for (number, (damage, sql)) in damages.into_iter().enumerate() {
        let copy = dir.path().join(format!("chain-{number}.db"));
        std::fs::copy(&path, &copy).expect("copy");
        let conn = rusqlite::Connection::open(&copy).expect("sqlite");
        conn.execute_batch(sql).expect("damage");
        drop(conn);
        let store = open(&copy, false).expect("open");
        let error = store.read(flow, 1, 100).await.expect_err(damage);
        assert!(
            matches!(&error, StoreError::Corrupt { detail } if detail.contains("chain")),
            "{damage}: {error:?}"
        );
        // The events after the damage still read back.
        let tail = store.read(flow, 27, 100).await.expect("tail");
        assert_eq!(tail.len(), 24, "{damage}");
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_version_1_file_is_migrated_and_takes_idempotency_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("v1.db");
    let flow = store_with_one_flow(&path).await;
    // What a version-1 build wrote: no key table.
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(
        "DROP INDEX idempotency_keys_expiry; DROP TABLE idempotency_keys; PRAGMA user_version = 1;",
    )
    .expect("downgrade");
    drop(conn);
    let store = open(&path, false).expect("migrated");
    assert!(store.flow(flow).await.expect("flow").is_some());
    let keyed = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [2; 10]);
    let batch = || AppendBatch {
        flow: keyed,
        expected_next_seq: 1,
        events: vec![NewEvent {
            time: Timestamp::from_micros(1),
            format: 1,
            body: br#"{"type":"flow_created","kind":"plan","definition":"p"}"#.to_vec(),
        }],
        create: Some(NewFlow {
            kind: FlowKind::Plan,
            definition: "p".into(),
            idempotency: Some(flowstate_store::IdempotencyKey {
                key: "k".into(),
                fingerprint: "fp".into(),
                expires_at: Timestamp::from_micros(i64::MAX),
            }),
        }),
        status: None,
        ready: None,
        timers: Vec::new(),
    };
    store.append(batch()).await.expect("keyed creation");
    store.close().await.expect("close");
    let version: u32 = rusqlite::Connection::open(&path)
        .expect("sqlite")
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    let store = open(&path, false).expect("reopen");
    let error = store.append(batch()).await.expect_err("the key is kept");
    assert!(
        matches!(&error, StoreError::KeyTaken { flow, .. } if *flow == keyed),
        "{error:?}"
    );
}
