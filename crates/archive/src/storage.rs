//! [`ArchiveStore`]: where archive files live, through the `object_store` crate, and how
//! they are read back, listed and replayed.
//!
//! Locations: a directory path or `file://PATH` (the default; writes are fsynced, file and
//! directory, before they count), `memory://` (in this process only: for tests), and
//! `s3://BUCKET[/PREFIX]` for S3-compatible storage configured from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for
//! S3-compatible servers, `AWS_ALLOW_HTTP=true` for a plain-HTTP one). Each flow is the object
//! `[PREFIX/]flows/<flow id>.json`.

use std::path::PathBuf;
use std::sync::Arc;

use flowstate_core::limits::MAX_PAGE_SIZE;
use flowstate_core::{Event, FlowId, FlowRecord, StopAt, Timestamp};
use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::error::ArchiveError;
use crate::format::ArchivedFlow;

/// The folder under the prefix that holds one file per flow.
const FLOWS_DIR: &str = "flows";

/// The extension of archive files.
const EXTENSION: &str = ".json";

/// Default page size of [`ArchiveStore::list`].
pub const DEFAULT_ARCHIVE_PAGE: usize = 100;

/// Whether opening a local archive may create its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveAccess {
    /// Create the directory if it is missing (the archiver).
    CreateIfMissing,
    /// The directory must exist (inspection): a typo is an error, not a new empty archive.
    MustExist,
}

/// Paging through the archive, by flow id (which is creation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveQuery {
    /// Only flows after this id (the previous page's `next_after`).
    pub after: Option<FlowId>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`]; 0 means [`DEFAULT_ARCHIVE_PAGE`].
    pub limit: usize,
}

/// One archived flow as a listing sees it (without reading the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedEntry {
    /// The flow.
    pub id: FlowId,
    /// The size of its archive file, in bytes.
    pub bytes: u64,
    /// When the file was stored (the storage's clock).
    pub stored_at: Timestamp,
}

/// One page of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ArchivePage {
    /// The flows, ordered by id.
    pub flows: Vec<ArchivedEntry>,
    /// Pass as [`ArchiveQuery::after`] for the next page; `None` on the last page.
    pub next_after: Option<FlowId>,
}

/// An archive location: an object store and a prefix inside it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    objects: Arc<dyn ObjectStore>,
    /// Empty, or path segments without leading or trailing slashes.
    prefix: String,
    /// How the location was named, for messages.
    location: String,
}

impl ArchiveStore {
    /// An archive in `objects` under `prefix` (may be empty).
    #[must_use]
    pub fn new(objects: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            location: format!("{objects}"),
            objects,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// A new, empty archive in memory.
    #[must_use]
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()), "")
    }

    /// Opens the archive named by `url`: a directory path or `file://PATH`, `memory://`, or
    /// `s3://BUCKET[/PREFIX]` (configured from the `AWS_*` environment variables).
    pub fn open(url: &str, access: ArchiveAccess) -> Result<Self, ArchiveError> {
        let invalid = |reason: String| ArchiveError::Location {
            url: url.to_owned(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("memory://") {
            let mut store = Self::new(Arc::new(InMemory::new()), rest);
            store.location = url.to_owned();
            return Ok(store);
        }
        if url.starts_with("s3://") || url.starts_with("s3a://") {
            let (_, rest) = url.split_once("://").unwrap_or_default();
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(
                    "no bucket: expected s3://BUCKET[/PREFIX]".to_owned(),
                ));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            let mut store = Self::new(Arc::new(s3), prefix);
            store.location = url.to_owned();
            return Ok(store);
        }
        let path = match url.strip_prefix("file://") {
            Some(path) => PathBuf::from(path),
            None if url.contains("://") => {
                return Err(invalid(
                    "unknown scheme: use a directory path, file://PATH, s3://BUCKET[/PREFIX] or memory://".to_owned(),
                ))
            }
            None if url.is_empty() => return Err(invalid("empty location".to_owned())),
            None => PathBuf::from(url),
        };
        match access {
            ArchiveAccess::CreateIfMissing => std::fs::create_dir_all(&path)
                .map_err(|e| invalid(format!("cannot create the directory: {e}")))?,
            ArchiveAccess::MustExist if !path.is_dir() => {
                return Err(invalid(format!(
                    "no archive directory at {}",
                    path.display()
                )))
            }
            ArchiveAccess::MustExist => {}
        }
        // Every write is fsynced (the file and its directory) before it returns: the
        // archiver deletes the live flow only after its copy is durable.
        let local = LocalFileSystem::new_with_prefix(&path)
            .map_err(|e| invalid(e.to_string()))?
            .with_fsync(true);
        let mut store = Self::new(Arc::new(local), "");
        store.location = path.display().to_string();
        Ok(store)
    }

    /// How the location was named.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object store underneath.
    #[must_use]
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    fn flows_dir(&self) -> Path {
        if self.prefix.is_empty() {
            Path::from(FLOWS_DIR)
        } else {
            Path::from(format!("{}/{FLOWS_DIR}", self.prefix))
        }
    }

    /// The key of `flow`'s archive file.
    #[must_use]
    pub fn key(&self, flow: FlowId) -> Path {
        self.flows_dir().join(format!("{flow}{EXTENSION}"))
    }

    /// Writes (or overwrites) `flow`'s file; returns once the storage says it is stored.
    pub(crate) async fn put(&self, flow: FlowId, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let key = self.key(flow);
        self.objects
            .put(&key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| storage("write", &key, &e))
    }

    /// The bytes of `flow`'s file, or `None` if there is none.
    pub async fn get(&self, flow: FlowId) -> Result<Option<Vec<u8>>, ArchiveError> {
        let key = self.key(flow);
        let got = match self.objects.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(storage("read", &key, &e)),
        };
        match got.bytes().await {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage("read", &key, &e)),
        }
    }

    /// Whether the archive holds `flow`.
    pub async fn contains(&self, flow: FlowId) -> Result<bool, ArchiveError> {
        let key = self.key(flow);
        match self.objects.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(storage("read", &key, &e)),
        }
    }

    /// Reads `flow`'s archive file.
    pub async fn read(&self, flow: FlowId) -> Result<ArchivedFlow, ArchiveError> {
        let bytes = self
            .get(flow)
            .await?
            .ok_or(ArchiveError::NotArchived { flow })?;
        ArchivedFlow::decode(flow, &bytes)
    }

    /// `flow`'s events, decoded.
    pub async fn events(&self, flow: FlowId) -> Result<Vec<Event>, ArchiveError> {
        self.read(flow).await?.decoded_events()
    }

    /// `flow`'s state up to `stop` (time travel on an archived flow).
    pub async fn replay(&self, flow: FlowId, stop: StopAt) -> Result<FlowRecord, ArchiveError> {
        self.read(flow).await?.replay(stop)
    }

    /// Archived flows after `query.after`, ordered by id, one page at a time.
    ///
    /// Lists the keys after the cursor (S3 starts there; a local directory is walked) and
    /// keeps the first page: files that are not archive files (a write in progress, anything
    /// else) are skipped.
    pub async fn list(&self, query: &ArchiveQuery) -> Result<ArchivePage, ArchiveError> {
        let size = match query.limit {
            0 => DEFAULT_ARCHIVE_PAGE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ArchiveError::Policy {
                    detail: format!(
                        "page size {n} is over the limit of {MAX_PAGE_SIZE} (MAX_PAGE_SIZE)"
                    ),
                })
            }
            n => n,
        };
        let dir = self.flows_dir();
        let dir_text = format!("{dir}/");
        let mut listing = match query.after {
            Some(after) => self.objects.list_with_offset(Some(&dir), &self.key(after)),
            None => self.objects.list(Some(&dir)),
        };
        let mut flows = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(storage("list", &dir, &e)),
            };
            let id = meta
                .location
                .as_ref()
                .strip_prefix(&dir_text)
                .and_then(|name| name.strip_suffix(EXTENSION))
                .and_then(|id| id.parse::<FlowId>().ok());
            let Some(id) = id else { continue };
            if query.after.is_some_and(|after| id <= after) {
                continue;
            }
            flows.push(ArchivedEntry {
                id,
                bytes: meta.size,
                stored_at: Timestamp::from_micros(meta.last_modified.timestamp_micros()),
            });
        }
        flows.sort_by_key(|entry| entry.id);
        let next_after = (flows.len() > size).then(|| {
            flows.truncate(size);
            flows[size - 1].id
        });
        Ok(ArchivePage { flows, next_after })
    }
}

fn storage(operation: &'static str, key: &Path, error: &object_store::Error) -> ArchiveError {
    ArchiveError::Storage {
        operation,
        key: key.to_string(),
        message: error.to_string(),
    }
}
