//! flowstate's archive: finished flows of every kind (deactivated plans, task graphs that
//! ended, durable functions that are done) leave the live store for archive storage, and can
//! still be listed, read and replayed from there.
//!
//! **What this crate owns.** The archive file format ([`ArchivedFlow`], one self-contained,
//! versioned JSON file per flow with its whole log), archive locations ([`ArchiveStore`]:
//! a local directory by default, S3-compatible storage by URL, through the `object_store`
//! crate), the policy that selects flows ([`ArchivePolicy`]: older than an age, or while the
//! live store holds more than a number of flows or bytes, oldest and largest first, in
//! batches), the crash-safe protocol that moves them ([`Archiver`]: mark `archived` in the
//! live log, write, read back and verify, then delete; a crash anywhere loses nothing and
//! shows nothing twice), and the rule that archived flows are not live ([`list_live`]).
//!
//! **What it never does.** It never deletes a live flow before its archive copy was read
//! back and checked; it never archives a flow that is not finished ([`FINISHED`]); it never
//! changes an archived file's meaning (the format only grows, and a newer one is refused);
//! it never interprets event bodies beyond what the core's fold does; and it never changes
//! the [`Store`] trait: what it needs of a store is `list`, `read`, `append` (through
//! [`flowstate_engine::FlowWriter`]), `flow` and `delete_flow`.

mod archiver;
mod error;
mod format;
mod policy;
mod storage;

pub use archiver::{ArchiveFailure, ArchiveObserver, ArchiveReport, ArchiveStep, Archiver};
pub use error::ArchiveError;
pub use format::{ArchivedFlow, ARCHIVE_FORMAT_VERSION};
pub use policy::{
    is_archived_state, is_finished, select, ArchivePolicy, Candidate, LiveTotals,
    DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL, DEFAULT_MAX_AGE, FINISHED, MAX_BATCH_SIZE,
};
pub use storage::{
    ArchiveAccess, ArchivePage, ArchiveQuery, ArchiveStore, ArchivedEntry, DEFAULT_ARCHIVE_PAGE,
};

use flowstate_core::machine::PlanState;
use flowstate_core::FlowStatus;
use flowstate_core::Machine;
use flowstate_store::{FlowPage, FlowQuery, Store, StoreError};

/// Where archives are kept when nothing else is said: a directory next to the working
/// directory's store.
pub const DEFAULT_ARCHIVE: &str = "flowstate-archive";

/// The environment variable that names the archive.
pub const ARCHIVE_ENV: &str = "FLOWSTATE_ARCHIVE";

/// Whether a flow with this status is archived: such a flow is hidden from live queries
/// (it is in the live store only until the archiver deletes it there).
#[must_use]
pub fn is_archived(status: FlowStatus) -> bool {
    status == FlowStatus::Plan(PlanState::Archived)
}

/// A live query: [`Store::list`] without archived flows, unless the query asks for the
/// status `archived` itself. Pages are filled up to the query's page size (reading further
/// pages of the store when archived flows were left out), and `next_after` continues after
/// the last flow returned.
pub async fn list_live(store: &dyn Store, query: &FlowQuery) -> Result<FlowPage, StoreError> {
    if query.status.as_deref() == Some(PlanState::Archived.key()) {
        return store.list(query).await;
    }
    let size = query.page_size()?;
    let mut query = query.clone();
    let mut flows = Vec::new();
    loop {
        let page = store.list(&query).await?;
        flows.extend(page.flows.into_iter().filter(|f| !is_archived(f.status)));
        match page.next_after {
            Some(after) if flows.len() < size => query.after = Some(after),
            Some(_) => {
                if flows.len() > size {
                    flows.truncate(size);
                }
                let next_after = flows.last().map(|f| f.id);
                return Ok(FlowPage { flows, next_after });
            }
            None => {
                let next_after = (flows.len() > size).then(|| {
                    flows.truncate(size);
                    flows[size - 1].id
                });
                return Ok(FlowPage { flows, next_after });
            }
        }
    }
}
