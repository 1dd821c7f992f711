//! Helpers for tests that need a PostgreSQL server: which database, whether it is reachable
//! (and the CI rule), and a schema of their own that is dropped when they end. Not part of
//! the store's API (hidden from its documentation); shared by the test suites of several
//! crates.

use std::time::Duration;

use tokio_postgres::NoTls;

/// The database tests use: `FLOWSTATE_TEST_PG`, or `postgres://postgres@127.0.0.1:5432/test`.
/// `None` (after printing that the test is skipped) when it is unreachable; with `CI=true`
/// an unreachable database panics instead, so that CI never passes by skipping.
pub async fn test_database() -> Option<String> {
    let url = std::env::var("FLOWSTATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let reachable =
        tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls)).await;
    let why = match reachable {
        Ok(Ok(_)) => return Some(url),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but PostgreSQL at {url} is unreachable: {why}"
    );
    eprintln!("skipped: PostgreSQL at {url} is unreachable ({why})");
    None
}

/// A schema of its own for one test, so runs never see each other; dropped (with everything
/// in it) when this value is dropped, even when the test panics.
#[derive(Debug)]
pub struct TestSchema {
    /// The database.
    pub url: String,
    /// The schema's name.
    pub name: String,
}

impl TestSchema {
    /// A fresh schema name on `url` (the store creates the schema when it connects).
    #[must_use]
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run outside a runtime (or inside one that is shutting down): use a thread
        // with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}
