//! The HTTP/JSON API (`/api/v1`), the event streams and the UI's static files.
//!
//! Every handler validates what it is given before it calls the engine, and answers a
//! refusal with a [`Problem`] (a stable `code`, the status, a `detail`); a refused request
//! changes nothing. Bodies are limited to [`MAX_REQUEST_BYTES`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flowstate::core::fold::{fold, StopAt};
use flowstate::core::{Event, FlowId, FlowKind, Timestamp, Transition};
use flowstate::plan::{PlanEngineError, PlanRequest};
use flowstate::store::{FlowQuery, FlowSummary, StoreError};
use flowstate::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::problem::Problem;
use crate::STREAM_POLL;

/// Largest request body accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Most events one `GET …/events` returns.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;

/// Most flows the all-flows stream watches for changes: the newest ones (by id, that is by
/// creation time), plus every flow created while it runs (the window slides forward).
pub const MAX_WATCHED_FLOWS: usize = 1_000;

/// Most flows one poll of the all-flows stream reads; after a burst of more new flows than
/// this it looks for the newest ones again instead of reading its way through the burst.
pub const MAX_STREAM_READ: usize = 4 * MAX_WATCHED_FLOWS;

/// Most flows below its window the all-flows stream follows: flows created while it runs
/// whose ids sort before the window (a child flow's id carries its parent's creation time; a
/// process whose clock lags makes ids in the past). The one found first is dropped first.
pub const MAX_STRAY_FLOWS: usize = 256;

/// How far before its previous poll the all-flows stream looks for flows created since
/// (creation times come from the clock of the process that created the flow).
const STRAY_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

// The window is found with listings of `MAX_WATCHED_FLOWS` flows.
const _: () = assert!(MAX_WATCHED_FLOWS <= flowstate::core::limits::MAX_PAGE_SIZE);

/// The Content-Security-Policy of every answer: the UI loads its script, style and data
/// from this server only, runs no inline script or style, and is never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    inner: crate::Shared,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("tokens", &self.inner.tokens.len())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    engine: Engine,
    tokens: Vec<String>,
    stopped: tokio::sync::watch::Receiver<bool>,
    http: reqwest::Client,
    waiting: Arc<crate::http_steps::Waiting>,
    report_base: String,
    /// The HTTP step registrations, and the lock that serializes registering and removing
    /// (choosing the version, writing the file, changing the registry).
    steps: tokio::sync::Mutex<crate::registrations::StepsFile>,
    /// The archive's URL, if the server has one: read for archived flows.
    archive: Option<String>,
    /// The archive, once opened (an S3 client is built once, not per request).
    opened_archive: std::sync::OnceLock<flowstate::archive::ArchiveStore>,
}

impl ApiState {
    /// State over `engine`, served at `addr`, accepting `tokens` (none: no authentication);
    /// streams end when `stopped` turns true.
    #[must_use]
    pub fn new(
        engine: Engine,
        addr: std::net::SocketAddr,
        tokens: Vec<String>,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                tokens,
                stopped,
                // No redirects: an HTTP step calls exactly the URL it was registered with.
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap_or_default(),
                waiting: Arc::default(),
                report_base: format!("http://{addr}/api/v1/work"),
                steps: tokio::sync::Mutex::default(),
                archive: None,
                opened_archive: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Reads archived flows from the archive at `url` (see `ServerConfig::archive`). Call it
    /// on a new state, before it is shared.
    #[must_use]
    pub fn with_archive(mut self, url: Option<String>) -> Self {
        let unshared = Arc::get_mut(&mut self.inner).map(|inner| inner.archive = url);
        debug_assert!(unshared.is_some(), "with_archive on a shared state");
        self
    }

    /// The archive, opened for reading once it exists; `None` when the server has none, or
    /// when it is a local directory that does not exist yet (nothing was ever archived
    /// there). A `memory://` archive opened here is empty: the archiver's lives in the engine.
    fn archive(&self) -> Result<Option<flowstate::archive::ArchiveStore>, Problem> {
        let Some(url) = &self.inner.archive else {
            return Ok(None);
        };
        if let Some(archive) = self.inner.opened_archive.get() {
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
        let archive = flowstate::archive::ArchiveStore::open(
            url,
            flowstate::archive::ArchiveAccess::MustExist,
        )
        .map_err(|error| Problem::internal(format!("the archive {url}: {error}")))?;
        Ok(Some(
            self.inner.opened_archive.get_or_init(|| archive).clone(),
        ))
    }

    /// The HTTP step of `request`, as version `version`, calling out with this state's
    /// client and reporting to this server.
    fn http_step(
        &self,
        request: crate::http_steps::HttpStepRequest,
        version: u32,
    ) -> flowstate::plan::Step {
        crate::http_steps::step(
            request,
            version,
            self.inner.http.clone(),
            self.inner.waiting.clone(),
            self.inner.report_base.clone(),
        )
    }

    /// Registers every HTTP step version kept in the registrations file at `path` (none
    /// yet: nothing) and keeps later registrations and removals there. Called once, before
    /// the API serves and the worker runs.
    pub(crate) async fn load_steps(&self, path: std::path::PathBuf) -> Result<(), String> {
        let mut steps = self.inner.steps.lock().await;
        *steps = crate::registrations::StepsFile::load(
            path,
            self.inner.engine.plans(),
            |request, version| self.http_step(request, version),
        )?;
        Ok(())
    }
}

/// The whole application: the API under `/api/v1`, the UI at `/`, `/healthz`.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/flows", get(list_flows).post(start_flow))
        .route("/flows/{id}", get(get_flow))
        .route("/flows/{id}/events", get(flow_events))
        .route("/flows/{id}/stream", get(flow_stream))
        .route("/flows/{id}/signals", post(signal))
        .route("/flows/{id}/cancel", post(cancel))
        .route("/flows/{id}/suspend", post(suspend))
        .route("/flows/{id}/resume", post(resume))
        .route("/events/stream", get(all_stream))
        .route("/steps", get(steps).post(register_step))
        .route("/steps/{name}", axum::routing::delete(remove_step))
        .fallback(|| async { Problem::not_found("no such API route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/api/v1", api)
        .route("/api/v1/openapi.json", get(openapi))
        // Reports carry their own secret (the attempt's key in the URL), not a bearer token:
        // the worker that reports was given only the report URL.
        .route("/api/v1/work/{token}", post(report_work))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// 405 as a problem: the path exists, the method does not.
async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not a method of {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Headers on every answer: no MIME sniffing, and the content security policy.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// Requires `Authorization: Bearer TOKEN` when tokens are configured.
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if state.inner.tokens.is_empty() {
        // Without tokens the server listens on loopback only; a Host that is not a loopback
        // name is a page that rebound its DNS name to 127.0.0.1 (DNS rebinding).
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!("without tokens this server answers only requests to a loopback name, not {host:?}"),
            )
            .into_response();
        }
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Every configured token is compared, each in constant time.
    let valid = |token: &str| {
        state
            .inner
            .tokens
            .iter()
            .fold(false, |found, known| found | same_secret(known, token))
    };
    match given {
        Some(token) if valid(token) => next.run(request).await,
        Some(_) => Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        )
        .into_response(),
        None => Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server requires an Authorization: Bearer TOKEN header",
        )
        .into_response(),
    }
}

/// Whether two secrets are equal, in time that depends only on their lengths.
pub(crate) fn same_secret(known: &str, given: &str) -> bool {
    known.len() == given.len()
        && known
            .bytes()
            .zip(given.bytes())
            .fold(0_u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Whether a Host header names this machine's loopback interface (`localhost`, `127.0.0.1`,
/// `[::1]`, with or without a port).
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A JSON body whose rejections are problems.
struct ApiJson<T>(T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// Query parameters whose rejections are problems.
struct ApiQuery<T>(T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejected(&rejection)),
        }
    }
}

fn rejected(status: StatusCode, text: String) -> Problem {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            status,
            "too_large",
            format!("the body is over {MAX_REQUEST_BYTES} bytes (MAX_REQUEST_BYTES)"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        _ => Problem::invalid(text),
    }
}

fn query_rejected(rejection: &QueryRejection) -> Problem {
    Problem::invalid(rejection.body_text())
}

fn flow_id(text: &str) -> Result<FlowId, Problem> {
    text.parse()
        .map_err(|_| Problem::invalid(format!("{text:?} is not a flow id (a UUID)")))
}

fn store_problem(error: &StoreError) -> Problem {
    match error {
        StoreError::UnknownFlow { flow } => {
            Problem::not_found(format!("flow {flow} does not exist"))
        }
        StoreError::Invalid(input) => Problem::invalid(input.to_string()),
        other => Problem::internal(other.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    kind: Option<String>,
    status: Option<String>,
    definition: Option<String>,
    after: Option<String>,
    #[serde(default)]
    limit: usize,
    /// Include archived flows (from the archive), merged by id.
    #[serde(default)]
    archived: bool,
}

fn summary(flow: &FlowSummary) -> Value {
    json!({
        "id": flow.id,
        "kind": flow.kind.key(),
        "definition": flow.definition,
        "status": flow.status.key(),
        "created_at": flow.created_at.to_string(),
        "updated_at": flow.updated_at.to_string(),
        "events": flow.events(),
        "bytes": flow.bytes,
        "ready": flow.ready,
    })
}

async fn list_flows(
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, Problem> {
    let kind = match params.kind.as_deref() {
        None => None,
        Some(text) => Some(FlowKind::parse(text).ok_or_else(|| {
            Problem::invalid(format!(
                "unknown kind {text:?}: use task_graph, plan or function"
            ))
        })?),
    };
    let query = FlowQuery {
        kind,
        definition: params.definition,
        status: params.status,
        after: params.after.as_deref().map(flow_id).transpose()?,
        limit: params.limit,
        ..FlowQuery::default()
    };
    let store = state.inner.engine.store();
    if params.archived {
        let Some(archive) = state.archive()? else {
            if state.inner.archive.is_none() {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "no_archive",
                    "this server has no archive configured (serve --archive URL)",
                ));
            }
            // An archive that was never written to: the live flows are all there is.
            return list_live_json(store.as_ref(), &query).await.map(Json);
        };
        return crate::archived::list_with_archived(store.as_ref(), &archive, &query, summary)
            .await
            .map(Json);
    }
    list_live_json(store.as_ref(), &query).await.map(Json)
}

/// A page of live flows (archived ones left out), as the listing shows it.
async fn list_live_json(
    store: &dyn flowstate::store::Store,
    query: &FlowQuery,
) -> Result<Value, Problem> {
    let page = flowstate::archive::list_live(store, query)
        .await
        .map_err(|error| store_problem(&error))?;
    Ok(json!({
        "flows": page.flows.iter().map(summary).collect::<Vec<_>>(),
        "next_after": page.next_after,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StartRequest {
    Plan {
        goals: Vec<String>,
        #[serde(default)]
        inputs: serde_json::Map<String, Value>,
        #[serde(default)]
        choices: BTreeMap<String, String>,
        #[serde(default)]
        name: Option<String>,
    },
    TaskGraph {
        name: String,
        #[serde(default)]
        inputs: BTreeMap<String, Value>,
    },
    Function {
        name: String,
        #[serde(default)]
        input: Value,
    },
}

async fn start_flow(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<StartRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let engine = &state.inner.engine;
    let flow = match request {
        StartRequest::Plan {
            goals,
            inputs,
            choices,
            name,
        } => {
            let request = PlanRequest {
                name: name.unwrap_or_else(|| "plan".to_owned()),
                goals,
                inputs,
                choices,
            };
            engine
                .plans()
                .start(request)
                .await
                .map_err(|error| match error {
                    PlanEngineError::Planning(planning) => Problem::new(
                        StatusCode::BAD_REQUEST,
                        "planning_failed",
                        planning.to_string(),
                    ),
                    PlanEngineError::Write(write) => write_problem(&write),
                    PlanEngineError::Store(store) => store_problem(&store),
                    other => Problem::internal(other.to_string()),
                })?
        }
        StartRequest::TaskGraph { name, inputs } => engine
            .task_graphs()
            .submit(&name, inputs)
            .await
            .map_err(|error| match error {
                flowstate::taskgraph::EngineError::UnknownDefinition { .. } => Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_definition",
                    error.to_string(),
                ),
                flowstate::taskgraph::EngineError::Compile(_) => {
                    Problem::invalid(error.to_string())
                }
                flowstate::taskgraph::EngineError::Write(write) => write_problem(&write),
                other => Problem::internal(other.to_string()),
            })?,
        StartRequest::Function { name, input } => engine
            .functions()
            .start(&name, input)
            .await
            .map_err(|error| function_problem(&error))?,
    };
    Ok((StatusCode::CREATED, Json(json!({ "id": flow }))))
}

/// A refused write caused by the request (inputs over a limit) is the client's problem.
fn write_problem(error: &flowstate::kernel::WriteError) -> Problem {
    match error {
        flowstate::kernel::WriteError::Store(store) => store_problem(store),
        flowstate::kernel::WriteError::Encode(encode) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            encode.to_string(),
        ),
        other => Problem::internal(other.to_string()),
    }
}

fn function_problem(error: &flowstate::durable::StartError) -> Problem {
    use flowstate::durable::StartError;
    match error {
        StartError::Unknown { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            "unknown_definition",
            error.to_string(),
        ),
        StartError::Input(_) => Problem::invalid(error.to_string()),
        StartError::Done { .. } | StartError::NotAFunction { .. } => {
            Problem::conflict(error.to_string())
        }
        StartError::Store(store) => store_problem(store),
        StartError::Write(flowstate::kernel::WriteError::Store(store)) => store_problem(store),
        other => Problem::internal(other.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AtParams {
    at: Option<String>,
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

fn not_anywhere(flow: FlowId) -> Problem {
    Problem::not_found(format!(
        "flow {flow} is not in the live store, nor in this server's archive if it has one"
    ))
}

async fn get_flow(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<AtParams>,
) -> Result<Json<Value>, Problem> {
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
        let mut body = crate::archived::state(&file, at)?;
        record_times(&mut body);
        if let Value::Object(fields) = &mut body {
            let total = file.events.last().map_or(0, |event| event.seq);
            fields.insert("total_seq".to_owned(), json!(total));
            fields.insert("archived".to_owned(), json!(true));
        }
        return Ok(Json(body));
    }
    let total = events.last().map_or(0, |event| event.seq);
    let record = fold(&events, at).map_err(|error| match error {
        flowstate::core::FoldError::EmptyLog => {
            Problem::invalid(format!("flow {flow} has no events up to {at:?}"))
        }
        other => Problem::internal(format!("flow {flow}'s log does not fold: {other}")),
    })?;
    let mut body = serde_json::to_value(&record).map_err(|e| Problem::internal(e.to_string()))?;
    record_times(&mut body);
    if let Value::Object(fields) = &mut body {
        fields.insert("total_seq".to_owned(), json!(total));
    }
    Ok(Json(body))
}

/// Turns a timestamp as the log serializes it (µs since the epoch) into RFC 3339, as every
/// time in the API's JSON is written.
fn rfc3339(value: &mut Value) {
    if let Some(micros) = value.as_i64() {
        *value = Value::String(Timestamp::from_micros(micros).to_string());
    }
}

/// The times of a journal entry (`now`, `sleep`) in RFC 3339.
fn journal_entry_times(entry: &mut Value) {
    match entry.get("effect").and_then(Value::as_str) {
        Some("now") => entry.get_mut("time").map(rfc3339),
        Some("sleep") => entry.get_mut("until").map(rfc3339),
        _ => None,
    };
}

/// The times of a folded record in RFC 3339: only the fields that are timestamps (never a
/// value a flow produced).
fn record_times(record: &mut Value) {
    for field in ["created_at", "updated_at"] {
        if let Some(value) = record.get_mut(field) {
            rfc3339(value);
        }
    }
    if let Some(plan) = record.get_mut("plan") {
        if let Some(Value::Object(attributes)) = plan.get_mut("attributes") {
            for attribute in attributes.values_mut() {
                if let Some(time) = attribute.get_mut("time") {
                    rfc3339(time);
                }
            }
        }
        if let Some(Value::Object(steps)) = plan.get_mut("steps") {
            for step in steps.values_mut() {
                if let Some(Value::Array(items)) = step.get_mut("items") {
                    for item in items {
                        for field in ["retry_due", "compensation_due"] {
                            if let Some(value) = item.get_mut(field) {
                                rfc3339(value);
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(Value::Array(journal)) = record
        .get_mut("function")
        .and_then(|function| function.get_mut("journal"))
    {
        journal.iter_mut().for_each(journal_entry_times);
    }
}

/// The times of an event body in RFC 3339.
fn event_body_times(body: &mut Value) {
    match body.get("type").and_then(Value::as_str) {
        Some("retry_scheduled") => body.get_mut("due").map(rfc3339),
        Some("compensation_failed") => body.get_mut("retry_due").map(rfc3339),
        Some("journal_entry_recorded" | "branch_entry_recorded") => {
            body.get_mut("entry").map(journal_entry_times)
        }
        _ => None,
    };
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// `flow` from the archive, if the server has one and the flow is there. Ask it after the
/// live store said the flow is not there: the archiver writes a flow's file before it
/// deletes the flow from the live store.
async fn from_archive(
    state: &ApiState,
    flow: FlowId,
) -> Result<Option<flowstate::archive::ArchivedFlow>, Problem> {
    match state.archive()? {
        Some(archive) => crate::archived::read(&archive, flow).await,
        None => Ok(None),
    }
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

async fn require_flow(state: &ApiState, flow: FlowId) -> Result<(), Problem> {
    match state.inner.engine.store().flow(flow).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Problem::not_found(format!("flow {flow} does not exist"))),
        Err(error) => Err(store_problem(&error)),
    }
}

fn event_json(event: &Event) -> Value {
    let mut body = serde_json::to_value(&event.body).unwrap_or(Value::Null);
    event_body_times(&mut body);
    json!({
        "seq": event.seq,
        "time": event.time.to_string(),
        "type": event.body.type_name(),
        "body": body,
    })
}

async fn flow_events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<Value>, Problem> {
    let flow = flow_id(&id)?;
    let limit = params.limit.unwrap_or(MAX_EVENTS_PER_REQUEST);
    if limit == 0 || limit > MAX_EVENTS_PER_REQUEST {
        return Err(Problem::invalid(format!(
            "limit must be 1 to {MAX_EVENTS_PER_REQUEST} (MAX_EVENTS_PER_REQUEST)"
        )));
    }
    let archived = |file: flowstate::archive::ArchivedFlow| {
        let events = crate::archived::events(&file, params.after, limit)?;
        let events: Vec<Value> = events.iter().map(event_json).collect();
        Ok(Json(json!({ "events": events, "archived": true })))
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
        .map(|raw| Event::decode(raw).map(|event| event_json(&event)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Problem::internal(error.to_string()))?;
    Ok(Json(json!({ "events": events })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalRequest {
    name: String,
    #[serde(default)]
    value: Value,
}

async fn signal(
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

/// The body of suspend, resume and cancel: `{}` or `{"reason": "..."}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonRequest {
    #[serde(default)]
    reason: String,
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
fn requested(transition: Transition) -> (StatusCode, Json<Value>) {
    let outcome = match transition {
        Transition::Allowed => "recorded",
        Transition::Ignored => "ignored",
    };
    (StatusCode::ACCEPTED, Json(json!({ "outcome": outcome })))
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
    use flowstate::kernel::WriteError;
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
        "not_suspendable",
        format!(
            "cannot {request} flow {flow}: it is {lifecycle}; to stop it, cancel it (POST /api/v1/flows/{flow}/cancel)"
        ),
    )
}

/// Suspends a task graph: running atoms finish, nothing new starts, it ends SUSPENDED and
/// no worker takes it until it is resumed. Plans and functions cannot be suspended.
async fn suspend(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
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

/// Resumes a SUSPENDED task graph (ready for the workers again).
async fn resume(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
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

/// Cancels a flow of any kind: a function stops at its next effect; a plan fails
/// (`cancelled: REASON`), compensates and deactivates; a task graph reverts what ran.
async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReasonRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
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

/// Registers an HTTP step (a new version if the name is registered already), once the
/// registration is kept in the registrations file: a failed write is a 500 and changes
/// nothing. One lock covers choosing the version, writing and registering, so concurrent
/// registrations of one name get different versions.
async fn register_step(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<crate::http_steps::HttpStepRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
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
    request: crate::http_steps::HttpStepRequest,
) -> Result<(StatusCode, Json<Value>), Problem> {
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
        .register(state.http_step(request.clone(), version))
        .map_err(|error| Problem::invalid(error.to_string()))?;
    steps
        .add(version, &request)
        .await
        .map_err(|error| save_problem(error, "nothing was registered"))?;
    let name = request.name.clone();
    plans
        .register(state.http_step(request, version))
        .map_err(|error| {
            tracing::error!(%error, step = %name, version, "a registration kept in the file was refused");
            Problem::internal(error.to_string())
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "version": version })),
    ))
}

/// The problem of a registration or removal that could not be kept.
fn save_problem(error: crate::registrations::SaveError, outcome: &str) -> Problem {
    match error {
        crate::registrations::SaveError::Limit(reason) => Problem::new(
            StatusCode::CONFLICT,
            "limit_reached",
            format!("{reason}; {outcome}"),
        ),
        crate::registrations::SaveError::Write(reason) => {
            tracing::error!(%reason, "keeping an HTTP step registration failed");
            Problem::internal(format!("{reason}; {outcome}"))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportKey {
    key: String,
}

/// The report of an asynchronous HTTP step's attempt, by its completion token (hex) and the
/// attempt's secret key.
async fn report_work(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    ApiQuery(key): ApiQuery<ReportKey>,
    ApiJson(report): ApiJson<crate::http_steps::Report>,
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

/// Removes a step from what new flows are planned from (running flows keep it), once the
/// removal is kept in the registrations file.
async fn remove_step(
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

async fn steps(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "steps": state.inner.engine.plans().steps() }))
}

type EventStream = Response;

fn sse(receiver: tokio::sync::mpsc::Receiver<Value>) -> EventStream {
    let stream = ReceiverStream::new(receiver).map(|data| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .event("flow_event")
                .data(data.to_string()),
        )
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Sends one stream message; false when the client went away or the server stops (a client
/// that stopped reading must not keep the task, and the server's shutdown, waiting).
async fn send_or_stop(
    sender: &tokio::sync::mpsc::Sender<Value>,
    data: Value,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stopped.borrow() {
        return false;
    }
    tokio::select! {
        sent = sender.send(data) => sent.is_ok(),
        _ = stopped.changed() => false,
    }
}

/// Waits for the next poll, or returns false when the server stops.
async fn next_poll(stopped: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(STREAM_POLL) => !*stopped.borrow(),
        changed = stopped.changed() => changed.is_ok() && !*stopped.borrow(),
    }
}

/// New events of one flow, as they are recorded (from `after`, default the start).
async fn flow_stream(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<EventStream, Problem> {
    let flow = flow_id(&id)?;
    require_flow(&state, flow).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    let mut stopped = state.inner.stopped.clone();
    let store = state.inner.engine.store().clone();
    let mut next = params.after.saturating_add(1);
    tokio::spawn(async move {
        loop {
            match store.read(flow, next, MAX_EVENTS_PER_REQUEST).await {
                Ok(events) => {
                    for raw in events {
                        next = raw.seq + 1;
                        let kind = Event::decode(&raw)
                            .map(|event| event.body.type_name())
                            .unwrap_or("undecodable");
                        let data = json!({ "flow": flow, "seq": raw.seq, "type": kind });
                        if !send_or_stop(&sender, data, &mut stopped).await {
                            return; // the client went away
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%flow, %error, "event stream read failed");
                }
            }
            if sender.is_closed() || !next_poll(&mut stopped).await {
                return;
            }
        }
    });
    Ok(sse(receiver))
}

/// A change of any recent flow (its last sequence number moved), for live lists: the
/// newest [`MAX_WATCHED_FLOWS`] flows when the stream opens, and every flow created while it
/// runs (the window slides forward; a new flow whose id sorts below the window is found by
/// its creation time and followed too, up to [`MAX_STRAY_FLOWS`]). A poll lists only that
/// window (an index range by id) and the flows created since the previous poll, never
/// every flow; changes of older flows are followed by their own streams.
async fn all_stream(State(state): State<ApiState>) -> EventStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    let mut stopped = state.inner.stopped.clone();
    let store = state.inner.engine.store().clone();
    tokio::spawn(async move {
        let mut seen: HashMap<FlowId, u64> = HashMap::new();
        // `None`: find the newest flows; `Some(after)`: the window is the flows after it.
        let mut floor: Option<Option<FlowId>> = None;
        let mut first = true;
        let mut strays = Strays::default();
        loop {
            if floor.is_none() {
                match newest_floor(store.as_ref()).await {
                    Ok(found) => floor = Some(found),
                    Err(error) => {
                        tracing::warn!(%error, "the all-flows stream could not list flows")
                    }
                }
            }
            if let Some(after) = floor {
                match watched(store.as_ref(), after).await {
                    Ok((flows, complete)) => {
                        for flow in &flows {
                            let last = flow.next_seq - 1;
                            let before = seen.insert(flow.id, last);
                            if !first && before != Some(last) {
                                let data = json!({
                                    "flow": flow.id,
                                    "seq": last,
                                    "type": "changed",
                                    "status": flow.status.key(),
                                });
                                if !send_or_stop(&sender, data, &mut stopped).await {
                                    return;
                                }
                            }
                        }
                        // Slide the window: keep the newest, forget the rest.
                        if flows.len() > MAX_WATCHED_FLOWS {
                            let edge = flows[flows.len() - MAX_WATCHED_FLOWS - 1].id;
                            floor = Some(Some(edge));
                            seen.retain(|id, _| *id > edge);
                        }
                        if !complete {
                            // More new flows than one poll reads: find the newest again.
                            floor = None;
                        }
                        first = false;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the all-flows stream could not list flows")
                    }
                }
            }
            if let Some(Some(edge)) = floor {
                match strays.poll(store.as_ref(), edge).await {
                    Ok(changed) => {
                        for data in changed {
                            if !send_or_stop(&sender, data, &mut stopped).await {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the all-flows stream could not list new flows")
                    }
                }
            }
            if sender.is_closed() || !next_poll(&mut stopped).await {
                return;
            }
        }
    });
    sse(receiver)
}

/// The flows below the all-flows stream's window that it follows (see [`MAX_STRAY_FLOWS`]).
#[derive(Default)]
struct Strays {
    /// Each flow's last sequence number as last reported (`None`: not reported yet).
    last: HashMap<FlowId, Option<u64>>,
    /// In the order they were found, for dropping the oldest.
    found: std::collections::VecDeque<FlowId>,
    /// When the previous poll looked for new flows.
    since: Option<Timestamp>,
}

impl Strays {
    /// Finds the flows created since the previous poll whose ids sort at or below `edge`,
    /// then reads every followed flow's index row: the changes to report.
    async fn poll(
        &mut self,
        store: &dyn flowstate::store::Store,
        edge: FlowId,
    ) -> Result<Vec<Value>, StoreError> {
        use flowstate::core::Clock as _;
        let now = flowstate::store::SystemClock.now();
        let since = self.since.unwrap_or(now);
        self.since = Some(now);
        let slack = i64::try_from(STRAY_SLACK.as_micros()).unwrap_or(i64::MAX);
        let created = store
            .list(&FlowQuery {
                created_from: Some(Timestamp::from_micros(
                    since.as_micros().saturating_sub(slack),
                )),
                limit: flowstate::core::limits::MAX_PAGE_SIZE,
                ..FlowQuery::default()
            })
            .await?;
        for flow in created.flows.iter().filter(|flow| flow.id <= edge) {
            if self.last.contains_key(&flow.id) {
                continue;
            }
            if self.found.len() >= MAX_STRAY_FLOWS {
                if let Some(oldest) = self.found.pop_front() {
                    self.last.remove(&oldest);
                }
            }
            self.found.push_back(flow.id);
            self.last.insert(flow.id, None);
        }
        let mut changed = Vec::new();
        for id in self.found.clone() {
            let Some(flow) = store.flow(id).await? else {
                // Deleted (archived): no longer followed.
                self.last.remove(&id);
                self.found.retain(|found| *found != id);
                continue;
            };
            let last = flow.next_seq - 1;
            if self.last.insert(id, Some(last)) != Some(Some(last)) {
                changed.push(json!({
                    "flow": id,
                    "seq": last,
                    "type": "changed",
                    "status": flow.status.key(),
                }));
            }
        }
        Ok(changed)
    }
}

/// The flows after `after` in id order, at most [`MAX_STREAM_READ`], and whether that was
/// all of them.
async fn watched(
    store: &dyn flowstate::store::Store,
    after: Option<FlowId>,
) -> Result<(Vec<FlowSummary>, bool), StoreError> {
    let mut flows = Vec::new();
    let mut query = FlowQuery {
        after,
        limit: flowstate::core::limits::MAX_PAGE_SIZE,
        ..FlowQuery::default()
    };
    loop {
        let page = store.list(&query).await?;
        flows.extend(page.flows);
        match page.next_after {
            None => return Ok((flows, true)),
            Some(_) if flows.len() >= MAX_STREAM_READ => return Ok((flows, false)),
            Some(next) => query.after = Some(next),
        }
    }
}

/// Where the newest flows begin: an `after` id with at most [`MAX_WATCHED_FLOWS`] flows
/// after it (`None`: all flows are that few). Ids are UUIDv7, ordered by creation time, so
/// the smallest id of a moment is a bound; it looks back from now in doubling spans (1 s,
/// 2 s, 4 s, …), each a listing of at most `MAX_WATCHED_FLOWS + 1` flows.
async fn newest_floor(store: &dyn flowstate::store::Store) -> Result<Option<FlowId>, StoreError> {
    use flowstate::core::Clock as _;
    let now = flowstate::store::SystemClock.now();
    let mut best = FlowId::from_parts(now, [0; 10]);
    let mut span: i64 = 1_000_000;
    loop {
        let start = now.as_micros().saturating_sub(span);
        let candidate =
            (start > 0).then(|| FlowId::from_parts(Timestamp::from_micros(start), [0; 10]));
        let query = FlowQuery {
            after: candidate,
            limit: MAX_WATCHED_FLOWS,
            ..FlowQuery::default()
        };
        if store.list(&query).await?.next_after.is_some() {
            return Ok(Some(best));
        }
        match candidate {
            None => return Ok(None),
            Some(candidate) => best = candidate,
        }
        span = span.saturating_mul(2);
    }
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No version in the file names: browsers must revalidate after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../ui/index.html"),
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // No version in the file names: browsers must revalidate after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../ui/app.js"),
    )
}

async fn app_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            // No version in the file names: browsers must revalidate after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../ui/app.css"),
    )
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
