//! Requests that change a running flow: a signal for a durable function, and suspend,
//! resume and cancel.
//!
//! It must never decide what a request does to a flow: the engines answer (a transition
//! `recorded` or `ignored`, or a refusal), and this module only turns that into HTTP.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowstate::core::{FlowId, FlowKind, Transition};
use flowstate::plan::PlanEngineError;
use flowstate_api::{ProblemCode, ReasonRequest, RequestOutcome, SignalRequest};

use crate::extract::{flow_id, ApiJson, Wire};
use crate::problem::{function_problem, store_problem, write_problem, Problem};
use crate::state::ApiState;

/// Send a signal to a durable function
#[utoipa::path(
    post,
    path = "/api/v1/flows/{id}/signals",
    tag = "control",
    params(("id" = String, Path, format = Uuid, description = "The flow")),
    request_body = SignalRequest,
    responses((status = 202, description = "Delivered"))
)]
pub(crate) async fn signal(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<SignalRequest>,
) -> Result<StatusCode, Problem> {
    let flow = flow_id(&id)?;
    if request.name.is_empty() || request.name.len() > flowstate::core::limits::MAX_NAME_BYTES {
        return Err(Problem::invalid(
            "a signal name is 1 to 256 bytes (MAX_NAME_BYTES)",
        ));
    }
    state
        .inner
        .engine
        .functions()
        .signal(flow, &request.name, request.value)
        .await
        .map_err(|error| function_problem(&error))?;
    Ok(StatusCode::ACCEPTED)
}

/// The kind of a flow of the live store (404 if it has none).
async fn flow_kind(state: &ApiState, flow: FlowId) -> Result<FlowKind, Problem> {
    match state.inner.engine.store().flow(flow).await {
        Ok(Some(summary)) => Ok(summary.kind),
        Ok(None) => Err(Problem::not_found(format!("flow {flow} does not exist"))),
        Err(error) => Err(store_problem(&error)),
    }
}

/// 202: what a request did, `{"outcome": "recorded"}` (in the flow's log) or
/// `{"outcome": "ignored"}` (a no-op by the state table: nothing recorded).
fn requested(transition: Transition) -> Wire<RequestOutcome> {
    Wire(StatusCode::ACCEPTED, RequestOutcome::from(transition))
}

fn task_graph_problem(error: &flowstate::taskgraph::EngineError) -> Problem {
    use flowstate::taskgraph::EngineError;
    match error {
        EngineError::NotAllowed { .. } | EngineError::NotATaskGraph { .. } => {
            Problem::conflict(error.to_string())
        }
        EngineError::Write(write) => write_problem(write),
        other => Problem::internal(other.to_string()),
    }
}

fn plan_problem(error: &PlanEngineError) -> Problem {
    use flowstate::core::FoldError;
    use flowstate::store::WriteError;
    match error {
        PlanEngineError::Write(WriteError::Refused(FoldError::Transition { source, .. })) => {
            Problem::conflict(format!(
                "{source}: a plan that completed, deactivated or was archived cannot be cancelled"
            ))
        }
        PlanEngineError::NotAPlan { .. } => Problem::conflict(error.to_string()),
        PlanEngineError::Store(store) => store_problem(store),
        PlanEngineError::Write(write) => write_problem(write),
        other => Problem::internal(other.to_string()),
    }
}

/// 409 `not_suspendable`: plans and durable functions have no suspended state.
fn not_suspendable(flow: FlowId, kind: FlowKind, request: &str) -> Problem {
    let lifecycle = match kind {
        FlowKind::Plan => {
            "a plan, and the goal-driven flow lifecycle (active, completed | failed, deactivated, archived) has no suspended state"
        }
        FlowKind::Function => {
            "a durable function, and the activation lifecycle (active current, sleeping, active replay, replay failure, done) has no suspended state: a function sleeps only when it awaits a timer, a signal or a child"
        }
        _ => "not a task graph, and only task graphs have a suspended state",
    };
    Problem::new(
        StatusCode::CONFLICT,
        ProblemCode::NotSuspendable,
        format!(
            "cannot {request} flow {flow}: it is {lifecycle}; to stop it, cancel it (POST /api/v1/flows/{flow}/cancel)"
        ),
    )
}

/// Suspend a task graph: running atoms finish, nothing new starts, it ends SUSPENDED and no worker takes it until it is resumed
///
/// RUNNING → SUSPENDING is recorded and honoured by whichever engine process runs the flow,
/// at its next task boundary. PENDING, SUSPENDING, SUSPENDED and finished flows: `ignored`
/// (the flow table's no-ops). A flow being loaded after a crash (RESUMING): 409
/// `invalid_state`. Plans and durable functions have no suspended state: 409
/// `not_suspendable` (cancel them instead). The reason is logged, not recorded.
#[utoipa::path(
    post,
    path = "/api/v1/flows/{id}/suspend",
    tag = "control",
    params(("id" = String, Path, format = Uuid, description = "The flow")),
    request_body = ReasonRequest,
    responses((status = 202, description = "Accepted: `recorded` in the flow's log, or `ignored` (a no-op by the state table; nothing recorded)", body = RequestOutcome))
)]
pub(crate) async fn suspend(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<Wire<RequestOutcome>, Problem> {
    let flow = flow_id(&id)?;
    match flow_kind(&state, flow).await? {
        FlowKind::TaskGraph => {
            let done = state
                .inner
                .engine
                .task_graphs()
                .request_suspend(flow)
                .await
                .map_err(|error| task_graph_problem(&error))?;
            tracing::info!(%flow, reason = %request.reason, ?done, "suspend requested");
            Ok(requested(done))
        }
        kind => Err(not_suspendable(flow, kind, "suspend")),
    }
}

/// Resume a SUSPENDED task graph (SUSPENDED → RUNNING; ready for the workers again)
///
/// A RUNNING flow: `ignored`. Any other state: 409 `invalid_state`. Plans and durable
/// functions: 409 `not_suspendable`. The reason is logged, not recorded.
#[utoipa::path(
    post,
    path = "/api/v1/flows/{id}/resume",
    tag = "control",
    params(("id" = String, Path, format = Uuid, description = "The flow")),
    request_body = ReasonRequest,
    responses((status = 202, description = "Accepted: `recorded` in the flow's log, or `ignored` (a no-op by the state table; nothing recorded)", body = RequestOutcome))
)]
pub(crate) async fn resume(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<Wire<RequestOutcome>, Problem> {
    let flow = flow_id(&id)?;
    match flow_kind(&state, flow).await? {
        FlowKind::TaskGraph => {
            let done = state
                .inner
                .engine
                .task_graphs()
                .resume(flow)
                .await
                .map_err(|error| task_graph_problem(&error))?;
            tracing::info!(%flow, reason = %request.reason, ?done, "resume requested");
            Ok(requested(done))
        }
        kind => Err(not_suspendable(flow, kind, "resume")),
    }
}

/// Cancel a flow of any kind
///
/// A durable function stops at its next effect (a step in flight finishes first) and is done
/// with a `Cancelled` failure. A plan that is active fails with the reason `cancelled:
/// REASON`, compensates what succeeded and deactivates; one that failed already is
/// `ignored`; a completed, deactivated or archived plan is 409 `invalid_state`. A task graph
/// that has not finished reverts: no new atom starts, running atoms finish, every atom that
/// ran is reverted and the flow ends REVERTED (FAILURE if a revert fails); a SUSPENDED one is
/// handed to the workers for it; REVERTED, or cancelled already, is `ignored`; SUCCESS or
/// FAILURE is 409 `invalid_state`.
#[utoipa::path(
    post,
    path = "/api/v1/flows/{id}/cancel",
    tag = "control",
    params(("id" = String, Path, format = Uuid, description = "The flow")),
    request_body = ReasonRequest,
    responses((status = 202, description = "Accepted: `recorded` in the flow's log, or `ignored` (a no-op by the state table; nothing recorded)", body = RequestOutcome))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<Wire<RequestOutcome>, Problem> {
    let flow = flow_id(&id)?;
    let engine = &state.inner.engine;
    let done = match flow_kind(&state, flow).await? {
        FlowKind::TaskGraph => engine
            .task_graphs()
            .cancel(flow, &request.reason)
            .await
            .map_err(|error| task_graph_problem(&error))?,
        FlowKind::Plan => engine
            .plans()
            .cancel(flow, &request.reason)
            .await
            .map_err(|error| plan_problem(&error))?,
        // A function keeps the first request's reason: a second one records nothing.
        _ => engine
            .functions()
            .cancel(flow, &request.reason)
            .await
            .map_err(|error| function_problem(&error))?,
    };
    Ok(requested(done))
}
