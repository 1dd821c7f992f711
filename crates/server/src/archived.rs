//! Archived flows over the API: the flows listing with archived flows included on request
//! (`GET /flows?archived=true`), and a flow's state and events read from the archive once its
//! log has left the live store, and opening the archive (once per server).
//!
//! It must never write to the archive: the archiver (in the engine) is what moves flows
//! there.

use flowstate::archive::{ArchiveQuery, ArchiveStore, ArchivedFlow};
use flowstate::core::fold::StopAt;
use flowstate::core::{Event, FlowId, FlowRecord};
use flowstate::store::{FlowQuery, FlowSummary, Store};
use flowstate_api::{FlowPage, FlowSummaryView};

use crate::problem::Problem;
use crate::state::ApiState;

/// The server's archive, opened for reading once it exists; `None` when the server has none,
/// or when it is a local directory that does not exist yet (nothing was ever archived
/// there). A `memory://` archive opened here is empty: the archiver's lives in the engine.
pub(crate) fn open(state: &ApiState) -> Result<Option<ArchiveStore>, Problem> {
    let Some(url) = &state.inner.archive else {
        return Ok(None);
    };
    if let Some(archive) = state.inner.opened_archive.get() {
        return Ok(Some(archive.clone()));
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    if !url.contains("://") || url.starts_with("file://") {
        match std::fs::metadata(local) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Problem::internal(format!("the archive {url}: {error}"))),
            Ok(_) => {}
        }
    }
    let archive = ArchiveStore::open(url, flowstate::archive::ArchiveAccess::MustExist)
        .map_err(|error| Problem::internal(format!("the archive {url}: {error}")))?;
    Ok(Some(
        state.inner.opened_archive.get_or_init(|| archive).clone(),
    ))
}

/// `flow` from the archive, if the server has one and the flow is there. Ask it after the
/// live store said the flow is not there: the archiver writes a flow's file before it
/// deletes the flow from the live store.
pub(crate) async fn from_archive(
    state: &ApiState,
    flow: FlowId,
) -> Result<Option<ArchivedFlow>, Problem> {
    match open(state)? {
        Some(archive) => read(&archive, flow).await,
        None => Ok(None),
    }
}

/// An archived flow as the listing shows it (its file is read for its kind and definition).
fn entry(archived: &ArchivedFlow, bytes: u64) -> FlowSummaryView {
    FlowSummaryView {
        id: archived.flow,
        kind: Some(archived.kind.key().to_owned()),
        definition: Some(archived.definition.clone()),
        status: "archived".to_owned(),
        created_at: archived.flow.created_at().into(),
        updated_at: Some(archived.archived_at.into()),
        events: Some(archived.events.last().map_or(0, |event| event.seq)),
        bytes,
        ready: Some(false),
        archived: true,
        error: None,
    }
}

/// An archived flow whose file cannot be read: listed with its error (and without what only
/// its contents say), so that one damaged file does not hide the rest of the page.
fn damaged(id: FlowId, bytes: u64, error: &flowstate::archive::ArchiveError) -> FlowSummaryView {
    FlowSummaryView {
        id,
        kind: None,
        definition: None,
        status: "archived".to_owned(),
        created_at: id.created_at().into(),
        updated_at: None,
        events: None,
        bytes,
        ready: None,
        archived: true,
        error: Some(error.to_string()),
    }
}

/// Whether an archived flow passes the query's filters (the time filters are the live
/// store's only; the listing refuses them with `archived=true`).
fn matches(archived: &ArchivedFlow, query: &FlowQuery) -> bool {
    query.kind.is_none_or(|kind| kind == archived.kind)
        && query
            .definition
            .as_deref()
            .is_none_or(|definition| definition == archived.definition)
        && query
            .status
            .as_deref()
            .is_none_or(|status| status == "archived")
}

fn archive_problem(error: &flowstate::archive::ArchiveError) -> Problem {
    Problem::internal(format!("the archive failed: {error}"))
}

/// One page of live and archived flows together, by id (creation order): a page of each,
/// merged, cut at the page size. Every flow up to the cut is there: each source's page holds
/// all of that source's flows up to its own last id, and the cut is at or before the last id
/// of every source that has more. Archived entries that the filters leave out are dropped
/// after the cut (their files say their kind and definition), so a page may be shorter than
/// the page size and still have a next page. A flow in both (marked archived in the live
/// store, its file written, not yet deleted there) is listed once, from the archive; a task
/// graph or function in both (written, not yet deleted: those kinds are not marked) is
/// listed once, as live.
pub(crate) async fn list_with_archived(
    store: &dyn Store,
    archive: &ArchiveStore,
    query: &FlowQuery,
) -> Result<FlowPage, Problem> {
    if query.created_from.is_some() || query.created_before.is_some() {
        return Err(Problem::invalid(
            "time filters apply to live flows only: leave out archived=true",
        ));
    }
    let size = query
        .page_size()
        .map_err(|error| Problem::invalid(error.to_string()))?;
    let live = flowstate::archive::list_live(store, query)
        .await
        .map_err(|error| Problem::internal(format!("the store failed: {error}")))?;
    let archived = archived_page(archive, query, size).await?;
    let mut merged: Vec<(FlowId, Option<&FlowSummary>, Option<u64>)> = live
        .flows
        .iter()
        .filter(|flow| !flowstate::archive::is_archived(flow.status))
        .map(|flow| (flow.id, Some(flow), None))
        .chain(
            archived
                .flows
                .iter()
                .map(|entry| (entry.id, None, Some(entry.bytes))),
        )
        .collect();
    merged.sort_by_key(|(id, _, _)| *id);
    merged.dedup_by_key(|(id, _, _)| *id);
    let more = live.next_after.is_some() || archived.next_after.is_some() || merged.len() > size;
    merged.truncate(size);
    let next_after = if more {
        merged.last().map(|(id, _, _)| *id)
    } else {
        None
    };
    let mut flows = Vec::with_capacity(merged.len());
    for (id, live, bytes) in merged {
        match (live, bytes) {
            (Some(flow), _) => flows.push(FlowSummaryView::from(flow)),
            (None, Some(bytes)) => flows.extend(listed(archive, id, bytes, query).await),
            (None, None) => {}
        }
    }
    Ok(FlowPage { flows, next_after })
}

/// A page of archived flows after the query's `after`, or none when the query leaves every
/// archived flow out: a status other than `archived` (flows of every kind are archived; the
/// kind is filtered from each file).
async fn archived_page(
    archive: &ArchiveStore,
    query: &FlowQuery,
    size: usize,
) -> Result<flowstate::archive::ArchivePage, Problem> {
    let only_live = query
        .status
        .as_deref()
        .is_some_and(|status| status != "archived");
    if only_live {
        return Ok(flowstate::archive::ArchivePage::default());
    }
    archive
        .list(&ArchiveQuery {
            after: query.after,
            limit: size,
        })
        .await
        .map_err(|error| archive_problem(&error))
}

/// Archived flow `id` (its file `bytes` long) as the listing shows it, if the query's
/// filters keep it and it is still there.
async fn listed(
    archive: &ArchiveStore,
    id: FlowId,
    bytes: u64,
    query: &FlowQuery,
) -> Option<FlowSummaryView> {
    match archive.read(id).await {
        Ok(file) => matches(&file, query).then(|| entry(&file, bytes)),
        // Removed from the archive since it was listed (a retention rule, say).
        Err(flowstate::archive::ArchiveError::NotArchived { .. }) => None,
        Err(error) => Some(damaged(id, bytes, &error)),
    }
}

/// `flow` from the archive, or `None` when it is not there either.
pub(crate) async fn read(
    archive: &ArchiveStore,
    flow: FlowId,
) -> Result<Option<ArchivedFlow>, Problem> {
    match archive.read(flow).await {
        Ok(file) => Ok(Some(file)),
        Err(flowstate::archive::ArchiveError::NotArchived { .. }) => Ok(None),
        Err(error) => Err(archive_problem(&error)),
    }
}

/// An archived flow's state at `at`.
pub(crate) fn state(file: &ArchivedFlow, at: StopAt) -> Result<FlowRecord, Problem> {
    file.replay(at).map_err(|error| match error {
        flowstate::archive::ArchiveError::Fold {
            source: flowstate::core::FoldError::EmptyLog,
            ..
        } => Problem::invalid(format!("flow {} has no events up to {at:?}", file.flow)),
        other => archive_problem(&other),
    })
}

/// An archived flow's events after `after`, at most `limit`.
pub(crate) fn events(file: &ArchivedFlow, after: u64, limit: usize) -> Result<Vec<Event>, Problem> {
    let decoded = file
        .decoded_events()
        .map_err(|error| archive_problem(&error))?;
    Ok(decoded
        .into_iter()
        .filter(|event| event.seq > after)
        .take(limit)
        .collect())
}
