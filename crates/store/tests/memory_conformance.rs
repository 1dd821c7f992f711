//! The memory store passes the conformance suite.

use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::Clock;
use flowstate_store::conformance::StoreFactory;
use flowstate_store::{MemoryStorage, MemoryStore, Store};

#[derive(Debug, Default)]
struct Memory;

#[async_trait]
impl StoreFactory for Memory {
    type Location = MemoryStorage;

    async fn create(&self) -> MemoryStorage {
        MemoryStorage::default()
    }

    async fn open(&self, location: &MemoryStorage, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        Arc::new(MemoryStore::open(location.clone(), clock))
    }
}

flowstate_store::conformance_suite!(Memory);
