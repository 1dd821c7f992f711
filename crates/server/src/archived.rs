//! Archived flows over the API: the flows listing with archived flows included on request
//! (`GET /flows?archived=true`), and a flow's state and events read from the archive once its
//! log has left the live store. This module only reads the archive; the archiver (in the
//! engine) is what moves flows there.

use flowstate::archive::{ArchiveQuery, ArchiveStore, ArchivedFlow};
use flowstate::core::fold::StopAt;
use flowstate::core::{Event, FlowId};
use flowstate::store::{FlowQuery, FlowSummary, Store};
use serde_json::{json, Value};

use crate::problem::Problem;

/// An archived flow as the listing shows it (its file is read for its kind and definition).
fn entry(archived: &ArchivedFlow, bytes: u64) -> Value {
    json!({
        "id": archived.flow,
        "kind": archived.kind.key(),
        "definition": archived.definition,
        "status": "archived",
        "created_at": archived.flow.created_at().to_string(),
        "updated_at": archived.archived_at.to_string(),
        "events": archived.events.last().map_or(0, |event| event.seq),
        "bytes": bytes,
        "ready": false,
        "archived": true,
    })
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
/// store, its file written, not yet deleted there) is listed once, from the archive.
pub(crate) async fn list_with_archived(
    store: &dyn Store,
    archive: &ArchiveStore,
    query: &FlowQuery,
    summary: impl Fn(&FlowSummary) -> Value,
) -> Result<Value, Problem> {
    if query.created_from.is_some() || query.created_before.is_some() {
        return Err(Problem::invalid(
            "time filters apply to live flows only: leave out archived=true",
        ));
    }
    let size = query
        .page_size()
        .map_err(|error| Problem::invalid(error.to_string()))?;
    // A status other than `archived`, or a kind other than plans (only deactivated plans
    // are archived), leaves every archived flow out: no need to list them.
    let only_live = query
        .status
        .as_deref()
        .is_some_and(|status| status != "archived")
        || query
            .kind
            .is_some_and(|kind| kind != flowstate::core::FlowKind::Plan);
    let live = flowstate::archive::list_live(store, query)
        .await
        .map_err(|error| Problem::internal(format!("the store failed: {error}")))?;
    // A status other than `archived` leaves every archived flow out: no need to list them.
    let archived = if only_live {
        flowstate::archive::ArchivePage::default()
    } else {
        archive
            .list(&ArchiveQuery {
                after: query.after,
                limit: size,
            })
            .await
            .map_err(|error| archive_problem(&error))?
    };
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
            (Some(flow), _) => flows.push(summary(flow)),
            (None, Some(bytes)) => match archive.read(id).await {
                Ok(file) if matches(&file, query) => flows.push(entry(&file, bytes)),
                Ok(_) => {}
                // Removed from the archive since it was listed (a retention rule, say).
                Err(flowstate::archive::ArchiveError::NotArchived { .. }) => {}
                // One damaged file does not hide the rest of the page: it is listed with its
                // error (and without what only its contents say).
                Err(error) => flows.push(json!({
                    "id": id,
                    "status": "archived",
                    "created_at": id.created_at().to_string(),
                    "bytes": bytes,
                    "archived": true,
                    "error": error.to_string(),
                })),
            },
            (None, None) => {}
        }
    }
    Ok(json!({ "flows": flows, "next_after": next_after }))
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

/// An archived flow's state at `at`, as the live state is shown, marked `archived`.
pub(crate) fn state(file: &ArchivedFlow, at: StopAt) -> Result<Value, Problem> {
    let record = file.replay(at).map_err(|error| match error {
        flowstate::archive::ArchiveError::Fold {
            source: flowstate::core::FoldError::EmptyLog,
            ..
        } => Problem::invalid(format!("flow {} has no events up to {at:?}", file.flow)),
        other => archive_problem(&other),
    })?;
    serde_json::to_value(&record).map_err(|error| Problem::internal(error.to_string()))
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
