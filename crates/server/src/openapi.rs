//! The OpenAPI document served at `/api/v1/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` annotations and the `flowstate_api` types' schemas, plus what every
//! operation shares: the problem responses and the bearer security scheme.
//!
//! It must never describe a body by hand: a schema comes from the type the handler reads or
//! writes (the schema test validates real answers against this document).

use axum::Json;
use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{control, flows, steps, streams};

/// The statuses of the problems any operation may answer.
const PROBLEM_STATUSES: [&str; 8] = ["400", "401", "404", "405", "409", "413", "415", "500"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flowstate",
        description = "A durable flow engine: task graphs, goal-driven plans and durable functions on an append-only event log. Errors are RFC 9457 problem details with a stable `code`. Every time in a JSON answer is an RFC 3339 string (UTC, microseconds)."
    ),
    paths(
        flows::list_flows,
        flows::start_flow,
        flows::get_flow,
        flows::flow_events,
        streams::flow_stream,
        streams::all_stream,
        control::signal,
        control::cancel,
        control::suspend,
        control::resume,
        steps::steps,
        steps::register_step,
        steps::remove_step,
        steps::report_work,
    ),
    components(schemas(flowstate_api::ProblemDetails)),
    security(("bearer" = []), ()),
    modifiers(&Shared)
)]
struct ApiDoc;

/// Adds what every operation shares.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let problem = ResponseBuilder::new()
            .description("A problem (RFC 9457)")
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(
                        flowstate_api::ProblemDetails::name(),
                    )))
                    .build(),
            )
            .build();
        components
            .responses
            .insert("Problem".to_owned(), RefOr::T(problem));
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                add_problems(operation);
            }
        }
    }
}

/// Every problem status an operation does not describe otherwise: the `Problem` response.
fn add_problems(operation: &mut Operation) {
    for status in PROBLEM_STATUSES {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::new("#/components/responses/Problem")));
    }
}

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Json<Value> {
    Json(serde_json::to_value(document()).unwrap_or_default())
}
