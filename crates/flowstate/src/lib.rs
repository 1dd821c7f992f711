//! flowstate: durable flows on an append-only event log.
//!
//! This facade re-exports the layers (`core`, `store`, the stores, the engines and the
//! worker), chooses a store from a URL, and assembles an engine process ([`Engine`]).

mod engine;

use std::path::PathBuf;
use std::sync::Arc;

pub use engine::{store_controls, Engine, EngineBuilder, Error};

/// The engine's error, by its old name.
#[deprecated(since = "0.2.0", note = "renamed `Error`: one error per crate")]
pub type EngineError = Error;

pub use flowstate_archive as archive;
pub use flowstate_core as core;
pub use flowstate_durable as durable;
pub use flowstate_engine as kernel;
pub use flowstate_plan as plan;
pub use flowstate_store as store;
pub use flowstate_store_postgres as postgres;
pub use flowstate_store_sqlite as sqlite;
pub use flowstate_taskgraph as taskgraph;
pub use flowstate_worker as worker;

pub use flowstate_core::{Clock, FlowId, FlowKind, FlowRecord, FlowStatus, Timestamp};
pub use flowstate_engine::{Created, StartOptions, DEFAULT_IDEMPOTENCY_WINDOW};
pub use flowstate_store::{Store, StoreError, SystemClock};

/// Where the default embedded store lives when nothing else is said.
pub const DEFAULT_STORE: &str = "flowstate.db";

/// The environment variable that names the store.
pub const STORE_ENV: &str = "FLOWSTATE_STORE";

/// A parsed store location.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// An SQLite file: a plain path or `sqlite://PATH` (`sqlite:///abs/path` for absolute).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://`).
    Postgres(String),
}

/// Why a store URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL's scheme is not one flowstate knows.
    #[error(
        "unknown store URL scheme in {url:?}: use a file path, sqlite://PATH or postgres://..."
    )]
    UnknownScheme {
        /// The URL.
        url: String,
    },
    /// The store refused to open.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreUrl {
    /// Parses a store location: a path, `sqlite://PATH`, or `postgres://...`.
    pub fn parse(url: &str) -> Result<Self, OpenError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if url.contains("://") || url.is_empty() {
            return Err(OpenError::UnknownScheme {
                url: url.to_owned(),
            });
        }
        Ok(Self::Sqlite(PathBuf::from(url)))
    }
}

/// Whether opening may create a new, empty store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create the store if it does not exist (engines, `serve`).
    CreateIfMissing,
    /// The store must exist (inspection commands): a typo is an error, not a new empty file.
    MustExist,
}

/// Opens the store named by `url`.
pub async fn open_store(
    url: &str,
    clock: Arc<dyn Clock>,
    access: Access,
) -> Result<Arc<dyn Store>, OpenError> {
    open_store_in(url, None, clock, access).await
}

/// Opens the store named by `url`; for PostgreSQL, inside `schema` (created if missing)
/// rather than the connection's default schema.
pub async fn open_store_in(
    url: &str,
    schema: Option<&str>,
    clock: Arc<dyn Clock>,
    access: Access,
) -> Result<Arc<dyn Store>, OpenError> {
    open_store_as(url, schema, clock, access, false).await
}

/// Opens the store named by `url`; `engine`: for the one engine process on an SQLite file,
/// which takes the file's process lock (`sqlite::lock`) or is refused
/// ([`StoreError::InUse`]). A PostgreSQL store is shared and takes no lock.
pub(crate) async fn open_store_as(
    url: &str,
    schema: Option<&str>,
    clock: Arc<dyn Clock>,
    access: Access,
    engine: bool,
) -> Result<Arc<dyn Store>, OpenError> {
    match StoreUrl::parse(url)? {
        StoreUrl::Sqlite(path) => {
            let options = sqlite::SqliteOptions {
                create: access == Access::CreateIfMissing,
                ..sqlite::SqliteOptions::default()
            };
            let store = sqlite::SqliteStore::open(path, clock, options)?;
            if engine {
                store.lock_process()?;
            }
            Ok(Arc::new(store))
        }
        StoreUrl::Postgres(url) => Ok(Arc::new(
            postgres::PostgresStore::open(&url, schema, clock, access == Access::CreateIfMissing)
                .await?,
        )),
    }
}

/// A new flow id for a flow created now (UUIDv7: time-ordered, with 74 random bits).
#[must_use]
pub fn new_flow_id(clock: &dyn Clock) -> FlowId {
    flowstate_engine::create::mint_flow_id(clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse() {
        assert_eq!(
            StoreUrl::parse("flows.db").ok(),
            Some(StoreUrl::Sqlite("flows.db".into()))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/f.db").ok(),
            Some(StoreUrl::Sqlite("/var/lib/f.db".into()))
        );
        assert!(matches!(
            StoreUrl::parse("postgres://u@h/db"),
            Ok(StoreUrl::Postgres(_))
        ));
        assert!(StoreUrl::parse("redis://x").is_err());
        assert!(StoreUrl::parse("").is_err());
    }
}
