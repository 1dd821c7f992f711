//! Requests that change a running flow: a signal for a durable function, and suspend,
//! resume and cancel.
//!
//! Suspend, resume and cancel are one call each on the kernel's `FlowControl`, which sends
//! them to the flow's kind. It must never decide what a request does to a flow: the engines
//! answer (a transition `recorded` or `ignored`, or a refusal), and this module only turns
//! that into HTTP.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowstate::core::Transition;
use flowstate::kernel::FlowControl;
use flowstate_api::{ReasonRequest, RequestOutcome, SignalRequest};
use tracing::Instrument;

use crate::extract::{flow_id, ApiJson, Wire};
use crate::problem::{control_problem, function_problem, Problem};
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

/// 202: what a request did, `{"outcome": "recorded"}` (in the flow's log) or
/// `{"outcome": "ignored"}` (a no-op by the state table: nothing recorded).
fn requested(transition: Transition) -> Wire<RequestOutcome> {
    Wire(StatusCode::ACCEPTED, RequestOutcome::from(transition))
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
    // The kernel logs the request (`operator action`); the reason goes with it in a span.
    let reason = tracing::info_span!("suspend", reason = %request.reason);
    let done = state
        .inner
        .engine
        .control()
        .suspend(flow)
        .instrument(reason)
        .await;
    Ok(requested(done.map_err(|error| control_problem(&error))?))
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
    // The kernel logs the request (`operator action`); the reason goes with it in a span.
    let reason = tracing::info_span!("resume", reason = %request.reason);
    let done = state
        .inner
        .engine
        .control()
        .resume(flow)
        .instrument(reason)
        .await;
    Ok(requested(done.map_err(|error| control_problem(&error))?))
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
    let control = state.inner.engine.control();
    let done = control.cancel(flow, &request.reason).await;
    Ok(requested(done.map_err(|error| control_problem(&error))?))
}
