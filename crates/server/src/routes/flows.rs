//! The flows: list (`GET /flows`), start (`POST /flows`), a flow's state (`GET
//! /flows/{id}`, `?at=`) and its events (`GET /flows/{id}/events`), from the live store or,
//! once a flow left it, from the archive.
//!
//! It must never change a flow other than by starting one through the engines' public API,
//! and never write a view by hand: the answers are `flowstate_api` types.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use flowstate::core::fold::{fold, StopAt};
use flowstate::core::{Event, FlowId, FlowKind, Timestamp};
use flowstate::plan::PlanRequest;
use flowstate::store::FlowQuery;
use flowstate::{Created, StartOptions};
use flowstate_api::{
    AtParams, EventPage, EventParams, EventView, FlowPage, FlowSummaryView, FlowView, ListParams,
    ProblemCode, StartRequest, Started, IDEMPOTENCY_KEY_HEADER,
};

use crate::archived::from_archive;
use crate::extract::{flow_id, ApiJson, ApiQuery, Wire};
use crate::problem::{function_problem, store_problem, write_problem, Problem};
use crate::state::ApiState;

/// Most events one `GET …/events` returns.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;

/// List live flows; with archived=true, archived flows too
///
/// Archived flows are read from the archive and merged by id; time filters are refused with
/// them, and a server without an archive answers 409 `no_archive`.
#[utoipa::path(
    get,
    path = "/api/v1/flows",
    tag = "flows",
    params(ListParams),
    responses((status = 200, description = "A page of flows and the cursor of the next", body = FlowPage))
)]
pub(crate) async fn list_flows(
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Wire<FlowPage>, Problem> {
    let query = FlowQuery {
        kind: params.kind.as_deref().map(flow_kind).transpose()?,
        definition: params.definition,
        status: params.status,
        after: params.after.as_deref().map(flow_id).transpose()?,
        limit: params.limit,
        ..FlowQuery::default()
    };
    let store = state.inner.engine.store();
    if params.archived {
        let Some(archive) = crate::archived::open(&state)? else {
            if state.inner.archive.is_none() {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    ProblemCode::NoArchive,
                    "this server has no archive configured (serve --archive URL)",
                ));
            }
            // An archive that was never written to: the live flows are all there is.
            return list_live(store.as_ref(), &query).await.map(Wire::ok);
        };
        return crate::archived::list_with_archived(store.as_ref(), &archive, &query)
            .await
            .map(Wire::ok);
    }
    list_live(store.as_ref(), &query).await.map(Wire::ok)
}

fn flow_kind(text: &str) -> Result<FlowKind, Problem> {
    FlowKind::parse(text).ok_or_else(|| {
        Problem::invalid(format!(
            "unknown kind {text:?}: use task_graph, plan or function"
        ))
    })
}

/// A page of live flows (archived ones left out), as the listing shows it.
async fn list_live(
    store: &dyn flowstate::store::Store,
    query: &FlowQuery,
) -> Result<FlowPage, Problem> {
    let page = flowstate::archive::list_live(store, query)
        .await
        .map_err(|error| store_problem(&error))?;
    Ok(FlowPage {
        flows: page.flows.iter().map(FlowSummaryView::from).collect(),
        next_after: page.next_after,
    })
}

/// Start a flow: a plan by goals and inputs, or a registered task graph or durable function by name
///
/// Idempotent with an `Idempotency-Key` header or a chosen `id` in the body (the id is the
/// key when no header is given): the same key and request again, within the server's
/// idempotency window (a day by default), answers 200 with the first flow and
/// `existing: true`, and changes nothing; the same key with another request is 409
/// `idempotency_key_reused`, and a chosen id that another request's flow has is 409
/// `flow_exists`.
#[utoipa::path(
    post,
    path = "/api/v1/flows",
    tag = "flows",
    request_body = StartRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the start idempotent: 1 to 256 bytes naming this start")),
    responses(
        (status = 201, description = "Started", body = Started),
        (status = 200, description = "The same start was made before: its flow (`existing: true`)", body = Started),
    )
)]
pub(crate) async fn start_flow(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<StartRequest>,
) -> Result<Wire<Started>, Problem> {
    let engine = &state.inner.engine;
    let mut options = StartOptions::new();
    if let Some(key) = idempotency_key(&headers)? {
        options = options.with_idempotency_key(key);
    }
    let created = match request {
        StartRequest::Plan {
            goals,
            inputs,
            choices,
            name,
            id,
        } => {
            let request = PlanRequest {
                name: name.unwrap_or_else(|| "plan".to_owned()),
                goals,
                inputs,
                choices,
            };
            start_plan(engine, request, &with_id(options, id)).await?
        }
        StartRequest::TaskGraph { name, inputs, id } => engine
            .task_graphs()
            .submit_with(&name, inputs, &with_id(options, id))
            .await
            .map_err(|error| task_graph_start_problem(&error))?,
        StartRequest::Function { name, input, id } => engine
            .functions()
            .submit_with(&name, input, &with_id(options, id))
            .await
            .map_err(|error| start_function_problem(&error))?,
    };
    let (status, existing) = if created.is_existing() {
        (StatusCode::OK, true)
    } else {
        (StatusCode::CREATED, false)
    };
    let id = created.id();
    Ok(Wire(status, Started { id, existing }))
}

fn with_id(options: StartOptions, id: Option<FlowId>) -> StartOptions {
    match id {
        Some(id) => options.with_id(id),
        None => options,
    }
}

/// The `Idempotency-Key` header, if any: printable ASCII (a header value), 1 to
/// `MAX_IDEMPOTENCY_KEY_BYTES` bytes.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::invalid(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header is given more than once"
        )));
    }
    let key = value.to_str().map_err(|_| {
        Problem::invalid(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII"
        ))
    })?;
    flowstate::store::validate::check_idempotency_key(key)
        .map_err(|error| Problem::invalid(format!("{IDEMPOTENCY_KEY_HEADER}: {error}")))?;
    Ok(Some(key.to_owned()))
}

fn key_reused(key: &str, flow: FlowId) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        ProblemCode::IdempotencyKeyReused,
        format!("idempotency key {key:?} was used for another request, which started flow {flow}; use a new key for a new start"),
    )
}

fn flow_exists(flow: FlowId) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        ProblemCode::FlowExists,
        format!("flow {flow} exists and was started with another request (or before the idempotency window); choose a new id"),
    )
}

async fn start_plan(
    engine: &flowstate::Engine,
    request: PlanRequest,
    options: &StartOptions,
) -> Result<Created, Problem> {
    engine
        .plans()
        .submit_with(request, options)
        .await
        .map_err(|error| match error {
            flowstate::plan::Error::Planning(planning) => Problem::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::PlanningFailed,
                planning.to_string(),
            ),
            flowstate::plan::Error::KeyReused { key, flow } => key_reused(&key, flow),
            flowstate::plan::Error::FlowExists { flow } => flow_exists(flow),
            flowstate::plan::Error::Write(write) => write_problem(&write),
            flowstate::plan::Error::Store(store) => store_problem(&store),
            other => Problem::internal(other.to_string()),
        })
}

fn task_graph_start_problem(error: &flowstate::taskgraph::Error) -> Problem {
    use flowstate::taskgraph::Error;
    match error {
        Error::UnknownDefinition { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::UnknownDefinition,
            error.to_string(),
        ),
        Error::Compile(_) => Problem::invalid(error.to_string()),
        Error::KeyReused { key, flow } => key_reused(key, *flow),
        Error::FlowExists { flow } => flow_exists(*flow),
        Error::Write(write) => write_problem(write),
        other => Problem::internal(other.to_string()),
    }
}

fn start_function_problem(error: &flowstate::durable::Error) -> Problem {
    use flowstate::durable::Error;
    match error {
        Error::KeyReused { key, flow } => key_reused(key, *flow),
        Error::Exists { flow } => flow_exists(*flow),
        other => function_problem(other),
    }
}

/// `SEQ` or an RFC 3339 time.
fn stop_at(text: Option<&str>) -> Result<StopAt, Problem> {
    let Some(text) = text else {
        return Ok(StopAt::End);
    };
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(StopAt::Seq(seq));
    }
    Timestamp::parse_rfc3339(text)
        .map(StopAt::Time)
        .map_err(|_| {
            Problem::invalid(format!(
                "at={text:?} is neither a sequence number nor an RFC 3339 time"
            ))
        })
}

pub(crate) fn not_anywhere(flow: FlowId) -> Problem {
    Problem::not_found(format!(
        "flow {flow} is not in the live store, nor in this server's archive if it has one"
    ))
}

/// A flow's state (now, or as of a sequence number or time), with its plan or graph, attributes and provenance
///
/// The folded record, plus `total_seq`; read from the archive (and marked `archived: true`)
/// when the flow is no longer in the live store.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{id}",
    tag = "flows",
    params(("id" = String, Path, format = Uuid, description = "The flow"), AtParams),
    responses((status = 200, description = "The flow's state", body = FlowView))
)]
pub(crate) async fn get_flow(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<AtParams>,
) -> Result<Wire<FlowView>, Problem> {
    let flow = flow_id(&id)?;
    let at = stop_at(params.at.as_deref())?;
    let store = state.inner.engine.store();
    let events = match flowstate::store::read_all(store.as_ref(), flow).await {
        Ok(events) => events,
        Err(flowstate::store::StoreError::UnknownFlow { .. }) => Vec::new(),
        Err(error) => return Err(store_problem(&error)),
    };
    if events.is_empty() {
        // Not live (any more: the archiver deletes a flow only once its file is written, so
        // the archive is asked after the live store, never before).
        let Some(file) = from_archive(&state, flow).await? else {
            return Err(not_anywhere(flow));
        };
        let record = crate::archived::state(&file, at)?;
        let total = file.events.last().map_or(0, |event| event.seq);
        return Ok(Wire::ok(FlowView::new(&record, total, true)));
    }
    let total = events.last().map_or(0, |event| event.seq);
    let record = fold(&events, at).map_err(|error| match error {
        flowstate::core::FoldError::EmptyLog => {
            Problem::invalid(format!("flow {flow} has no events up to {at:?}"))
        }
        other => Problem::internal(format!("flow {flow}'s log does not fold: {other}")),
    })?;
    Ok(Wire::ok(FlowView::new(&record, total, false)))
}

/// Whether the live store has `flow`.
async fn is_live(state: &ApiState, flow: FlowId) -> Result<bool, Problem> {
    state
        .inner
        .engine
        .store()
        .flow(flow)
        .await
        .map(|found| found.is_some())
        .map_err(|error| store_problem(&error))
}

/// A flow's events after a sequence number
///
/// Read from the archive (with `archived: true`) when the flow is no longer in the live
/// store.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{id}/events",
    tag = "flows",
    params(("id" = String, Path, format = Uuid, description = "The flow"), EventParams),
    responses((status = 200, description = "The events", body = EventPage))
)]
pub(crate) async fn flow_events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Wire<EventPage>, Problem> {
    let flow = flow_id(&id)?;
    let limit = params.limit.unwrap_or(MAX_EVENTS_PER_REQUEST);
    if limit == 0 || limit > MAX_EVENTS_PER_REQUEST {
        return Err(Problem::invalid(format!(
            "limit must be 1 to {MAX_EVENTS_PER_REQUEST} (MAX_EVENTS_PER_REQUEST)"
        )));
    }
    let archived = |file: flowstate::archive::ArchivedFlow| {
        let events = crate::archived::events(&file, params.after, limit)?;
        Ok(Wire::ok(page(&events, true)))
    };
    if !is_live(&state, flow).await? {
        return match from_archive(&state, flow).await? {
            Some(file) => archived(file),
            None => Err(not_anywhere(flow)),
        };
    }
    let raw = state
        .inner
        .engine
        .store()
        .read(flow, params.after.saturating_add(1), limit)
        .await
        .map_err(|error| store_problem(&error))?;
    if raw.is_empty() && !is_live(&state, flow).await? {
        // Archived between the two reads.
        if let Some(file) = from_archive(&state, flow).await? {
            return archived(file);
        }
    }
    let events = raw
        .iter()
        .map(Event::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Problem::internal(error.to_string()))?;
    Ok(Wire::ok(page(&events, false)))
}

fn page(events: &[Event], archived: bool) -> EventPage {
    EventPage {
        events: events.iter().map(EventView::from).collect(),
        archived,
    }
}
