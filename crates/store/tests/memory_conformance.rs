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

/// The memory store takes over other workers' leases at once.
#[tokio::test]
async fn foreign_leases_are_released() {
    let clock = Arc::new(flowstate_core::ManualClock::new(
        flowstate_core::Timestamp::from_micros(1_767_225_600_000_000),
    ));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    flowstate_store::conformance::foreign_leases_are_released(store, clock).await;
}
