//! The PostgreSQL store passes the same conformance suite as the memory and SQLite stores.
//!
//! The server comes from `FLOWSTATE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test gets its own schema, dropped at the
//! end, so runs never see each other. Without a reachable server the tests print that they
//! were skipped; with `CI=true` they fail instead.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::Clock;
use flowstate_store::conformance::StoreFactory;
use flowstate_store::Store;
use flowstate_store_postgres::PostgresStore;

fn url() -> String {
    std::env::var("FLOWSTATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[derive(Debug, Default)]
struct Postgres;

/// A schema of its own; dropped when the test ends.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, schema) = (url(), self.0.clone());
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

#[async_trait]
impl StoreFactory for Postgres {
    type Location = Schema;

    async fn create(&self) -> Schema {
        Schema(format!("flowstate_test_{:016x}", rand::random::<u64>()))
    }

    async fn open(&self, location: &Schema, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        Arc::new(
            PostgresStore::connect(&url(), Some(&location.0), clock)
                .await
                .expect("connect"),
        )
    }

    async fn available(&self) -> bool {
        let reachable = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&url(), tokio_postgres::NoTls),
        )
        .await;
        match reachable {
            Ok(Ok(_)) => true,
            other => {
                let why = match other {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".to_owned(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but PostgreSQL at {} is unreachable: {why}",
                    url()
                );
                eprintln!("skipped: PostgreSQL at {} is unreachable ({why})", url());
                false
            }
        }
    }
}

flowstate_store::conformance_suite!(Postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_flowstate_or_no_store_at_all_is_refused() {
    let factory = Postgres;
    if !factory.available().await {
        return;
    }
    let clock: Arc<dyn Clock> = Arc::new(flowstate_store::SystemClock);
    let schema = factory.create().await;
    let missing = PostgresStore::open(&url(), Some(&schema.0), clock.clone(), false).await;
    assert!(
        matches!(missing, Err(flowstate_store::StoreError::Missing { .. })),
        "{missing:?}"
    );
    let store = PostgresStore::connect(&url(), Some(&schema.0), clock.clone())
        .await
        .expect("create");
    store.close().await.expect("close");
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "UPDATE {}.flowstate_schema SET version = 99",
            schema.0
        ))
        .await
        .expect("bump");
    let newer = PostgresStore::connect(&url(), Some(&schema.0), clock).await;
    assert!(
        matches!(
            newer,
            Err(flowstate_store::StoreError::NewerFormat { found: 99, .. })
        ),
        "{newer:?}"
    );
}
