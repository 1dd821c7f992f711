//! The process lock: one engine process per file, and the one that holds the lock takes over
//! the leases a dead process left behind at once. (Across real processes: `testkit`'s
//! `recovery_sqlite` test.)

use std::sync::Arc;

use flowstate_core::{ManualClock, Timestamp};
use flowstate_store::{Store, StoreError, SystemClock, WorkerId};
use flowstate_store_sqlite::lock::lock_path;
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

fn open(path: &std::path::Path, clock: Arc<dyn flowstate_core::Clock>) -> SqliteStore {
    SqliteStore::open(path, clock, SqliteOptions::default()).expect("open")
}

#[tokio::test]
async fn a_second_engine_on_the_file_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flows.db");
    let first = open(&path, Arc::new(SystemClock));
    first.lock_process().expect("the first takes the lock");
    first.lock_process().expect("taking it again is a no-op");
    assert!(first.holds_process_lock());

    // A second store on the file (another process, or another open in this one): reading
    // and writing work, but it cannot become the engine process.
    let second = open(&path, Arc::new(SystemClock));
    match second.lock_process() {
        Err(error @ StoreError::InUse { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(
                message.contains(&lock_path(&path).display().to_string()),
                "{message}"
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(!second.holds_process_lock());
    let worker = WorkerId::new("w").expect("id");
    assert_eq!(
        second
            .release_foreign_leases(&worker)
            .await
            .expect("release"),
        0,
        "without the lock, nothing is taken over"
    );

    first.close().await.expect("close");
    second
        .lock_process()
        .expect("the lock is free once the first store is closed");
    second.close().await.expect("close");
}

#[tokio::test]
async fn the_lock_holder_takes_over_foreign_leases() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flows.db");
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_767_225_600_000_000,
    )));
    let store = Arc::new(open(&path, clock.clone()));
    store.lock_process().expect("lock");
    flowstate_store::conformance::foreign_leases_are_released(store.clone(), clock).await;
    store.close().await.expect("close");
}
