//! HTTP steps: the registered plan steps (`GET /steps`), registering an HTTP step (`POST
//! /steps`), removing one (`DELETE /steps/{name}`), loading the kept registrations at start,
//! and the reports of asynchronous HTTP steps (`POST /work/{token}`).
//!
//! It must never register or remove a step that the registrations file does not keep
//! (a failed write changes nothing), and never let a dropped request stop a registration
//! halfway (see [`uncancelled`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowstate_api::{HttpStepRequest, ProblemCode, Registered, Report, ReportKey, StepList};

use crate::extract::{ApiJson, ApiQuery, Wire};
use crate::problem::Problem;
use crate::registrations::{SaveError, StepsFile};
use crate::state::ApiState;

/// The HTTP step of `request`, as version `version`, calling out with the state's client and
/// reporting to this server.
fn http_step(state: &ApiState, request: HttpStepRequest, version: u32) -> flowstate::plan::Step {
    crate::http_steps::step(
        request,
        version,
        state.inner.http.clone(),
        state.inner.waiting.clone(),
        state.inner.report_base.clone(),
    )
}

/// Registers every HTTP step version kept in the registrations file at `path` (none yet:
/// nothing) and keeps later registrations and removals there. Called once, before the API
/// serves and the worker runs.
pub(crate) async fn load_steps(state: &ApiState, path: std::path::PathBuf) -> Result<(), String> {
    let mut steps = state.inner.steps.lock().await;
    *steps = StepsFile::load(path, state.inner.engine.plans(), |request, version| {
        http_step(state, request, version)
    })?;
    Ok(())
}

/// The registered plan steps (newest versions)
#[utoipa::path(
    get,
    path = "/api/v1/steps",
    tag = "steps",
    responses((status = 200, description = "The steps", body = StepList))
)]
pub(crate) async fn steps(State(state): State<ApiState>) -> Wire<StepList> {
    Wire::ok(StepList {
        steps: state.inner.engine.plans().steps(),
    })
}

/// Register an HTTP step: the engine POSTs each work item's inputs (and its Idempotency-Key) to `url` and reads the outputs from the JSON object it answers; 408, 429, 5xx and transport errors are retried
///
/// Answered 201 once the registration is kept in the server's registrations file (durable
/// across restarts), as a new version if the name is registered already; a write that fails
/// is 500 `internal` and registers nothing; past MAX_STEP_REGISTRATIONS versions (or the
/// file's size limit), 409 `limit_reached`. One lock covers choosing the version, writing and
/// registering, so concurrent registrations of one name get different versions.
#[utoipa::path(
    post,
    path = "/api/v1/steps",
    tag = "steps",
    request_body = HttpStepRequest,
    responses((status = 201, description = "Registered", body = Registered))
)]
pub(crate) async fn register_step(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<HttpStepRequest>,
) -> Result<Wire<Registered>, Problem> {
    if let Some(reason) = crate::http_steps::invalid_url(&request.url) {
        return Err(Problem::invalid(reason));
    }
    uncancelled(async move { register_locked(&state, request).await }).await
}

/// Runs `work` on a task of its own, so that a request dropped meanwhile (the client went
/// away, or shutdown ended it) cannot stop it between writing the registrations file and
/// updating the registry: a lock released halfway would let the next registration choose
/// the same version and overwrite this one's file entry.
async fn uncancelled<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Problem>> + Send + 'static,
) -> Result<T, Problem> {
    tokio::spawn(work)
        .await
        .map_err(|error| Problem::internal(format!("the registration's task failed: {error}")))?
}

/// [`register_step`] under the registrations lock.
async fn register_locked(
    state: &ApiState,
    request: HttpStepRequest,
) -> Result<Wire<Registered>, Problem> {
    let engine = &state.inner.engine;
    let plans = engine.plans();
    let mut steps = state.inner.steps.lock().await;
    let version = plans
        .newest_version(&request.name)
        .max(steps.newest_version(&request.name))
        .map_or(1, |v| v + 1);
    // Checked on a scratch registry first, so that nothing is written for a step the
    // registry would refuse.
    let scratch = flowstate::plan::Plans::new(
        engine.store().clone(),
        Arc::new(flowstate::store::SystemClock),
    );
    scratch
        .register(http_step(state, request.clone(), version))
        .map_err(|error| Problem::invalid(error.to_string()))?;
    steps
        .add(version, &request)
        .await
        .map_err(|error| save_problem(error, "nothing was registered"))?;
    let name = request.name.clone();
    plans
        .register(http_step(state, request, version))
        .map_err(|error| {
            tracing::error!(%error, step = %name, version, "a registration kept in the file was refused");
            Problem::internal(error.to_string())
        })?;
    Ok(Wire(StatusCode::CREATED, Registered { name, version }))
}

/// The problem of a registration or removal that could not be kept.
fn save_problem(error: SaveError, outcome: &str) -> Problem {
    match error {
        SaveError::Limit(reason) => Problem::new(
            StatusCode::CONFLICT,
            ProblemCode::LimitReached,
            format!("{reason}; {outcome}"),
        ),
        SaveError::Write(reason) => {
            tracing::error!(%reason, "keeping an HTTP step registration failed");
            Problem::internal(format!("{reason}; {outcome}"))
        }
    }
}

/// Remove a step from what new flows are planned from (running flows keep it)
///
/// Kept in the registrations file before 204; a write that fails is 500 `internal` and the
/// step stays registered.
#[utoipa::path(
    delete,
    path = "/api/v1/steps/{name}",
    tag = "steps",
    params(("name" = String, Path, description = "The step")),
    responses((status = 204, description = "Removed"))
)]
pub(crate) async fn remove_step(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    uncancelled(async move { remove_locked(&state, name).await }).await
}

/// [`remove_step`] under the registrations lock.
async fn remove_locked(state: &ApiState, name: String) -> Result<StatusCode, Problem> {
    let plans = state.inner.engine.plans();
    let mut steps = state.inner.steps.lock().await;
    if !plans.steps().iter().any(|step| step.name == name) {
        return Err(Problem::not_found(format!(
            "no step named {name:?} is registered"
        )));
    }
    steps
        .remove(&name)
        .await
        .map_err(|error| save_problem(error, "the step is still registered"))?;
    plans.unregister(&name);
    Ok(StatusCode::NO_CONTENT)
}

/// Report the outcome of an asynchronous HTTP step's attempt (the token is the report URL's last segment)
///
/// The attempt is found by its completion token (hex) and the attempt's secret key; a report
/// for an attempt that is not waiting (stale, duplicate, timed out) is 409 and changes
/// nothing.
#[utoipa::path(
    post,
    path = "/api/v1/work/{token}",
    tag = "steps",
    security(()),
    params(("token" = String, Path, description = "The completion token"), ReportKey),
    request_body = Report,
    responses((status = 202, description = "Handed to the waiting attempt"))
)]
pub(crate) async fn report_work(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    ApiQuery(key): ApiQuery<ReportKey>,
    ApiJson(report): ApiJson<Report>,
) -> Result<StatusCode, Problem> {
    let Some(token) = crate::http_steps::decode_token(&token) else {
        return Err(Problem::invalid(
            "the report URL's token is not one this server made",
        ));
    };
    match state.inner.waiting.report(&token, &key.key, report) {
        Ok(true) => Ok(StatusCode::ACCEPTED),
        Ok(false) => Err(Problem::conflict(format!(
            "no attempt waits for a report with token {token:?}: it was reported already, it is stale (another attempt runs), or it timed out"
        ))),
        Err(reason) => Err(Problem::invalid(reason)),
    }
}
