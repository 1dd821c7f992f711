//! The route table ([`router`]): the API under `/api/v1` (authenticated), the report URL of
//! asynchronous HTTP steps, the OpenAPI document, `/metrics` (authenticated like the API),
//! `/healthz`, `/readyz` and the UI; the body limit, the security headers, the count of
//! requests by route, and the problems of unknown routes and methods.
//!
//! It must never hold a handler's logic: each route's handler lives in the module of its
//! concern (`flows`, `control`, `steps`, `streams`), and every route of `/api/v1` is listed
//! in the OpenAPI document (`crate::openapi`, checked by the tests).

pub(crate) mod control;
pub(crate) mod flows;
pub(crate) mod steps;
pub(crate) mod streams;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use flowstate_api::ProblemCode;

use crate::problem::Problem;
use crate::state::ApiState;

/// Largest request body accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The Content-Security-Policy of every answer: the UI loads its script, style and data
/// from this server only, runs no inline script or style, and is never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The whole application: the API under `/api/v1`, the UI at `/`, `/metrics`, `/healthz`
/// and `/readyz`.
pub fn router(state: ApiState) -> Router {
    // The metrics say as much as the API about the flows: the same authentication.
    let metrics = Router::new()
        .route("/metrics", get(crate::observe::metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ));
    Router::new()
        .nest("/api/v1", api(state.clone()))
        .merge(metrics)
        .route("/api/v1/openapi.json", get(crate::openapi::serve))
        // Reports carry their own secret (the attempt's key in the URL), not a bearer token:
        // the worker that reports was given only the report URL.
        .route("/api/v1/work/{token}", post(steps::report_work))
        .route("/healthz", get(crate::observe::healthz))
        .route("/readyz", get(crate::observe::readyz))
        .route("/", get(crate::ui::index))
        .route("/app.js", get(crate::ui::app_js))
        .route("/app.css", get(crate::ui::app_css))
        .route_layer(middleware::from_fn(crate::observe::mark_route))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(crate::observe::count_requests))
        .with_state(state)
}

/// The authenticated routes of `/api/v1`.
fn api(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/flows", get(flows::list_flows).post(flows::start_flow))
        .route("/flows/{id}", get(flows::get_flow))
        .route("/flows/{id}/events", get(flows::flow_events))
        .route("/flows/{id}/stream", get(streams::flow_stream))
        .route("/flows/{id}/signals", post(control::signal))
        .route("/flows/{id}/cancel", post(control::cancel))
        .route("/flows/{id}/suspend", post(control::suspend))
        .route("/flows/{id}/resume", post(control::resume))
        .route("/events/stream", get(streams::all_stream))
        .route("/steps", get(steps::steps).post(steps::register_step))
        .route("/steps/{name}", delete(steps::remove_step))
        .fallback(|| async { Problem::not_found("no such API route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state,
            crate::auth::authenticate,
        ))
}

/// 405 as a problem: the path exists, the method does not.
async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ProblemCode::MethodNotAllowed,
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
