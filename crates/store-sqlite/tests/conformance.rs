//! The SQLite store passes the conformance suite, on a real file with `synchronous=FULL`.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::Clock;
use flowstate_store::conformance::StoreFactory;
use flowstate_store::Store;
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

#[derive(Debug, Default)]
struct Sqlite;

struct Location {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

#[async_trait]
impl StoreFactory for Sqlite {
    type Location = Location;

    async fn create(&self) -> Location {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("flows.db");
        Location { _dir: dir, path }
    }

    async fn open(&self, location: &Location, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&location.path, clock, SqliteOptions::default()).expect("open"))
    }
}

flowstate_store::conformance_suite!(Sqlite);
