//! What goes in and out of a handler as JSON: the extractors [`ApiJson`] (a body) and
//! [`ApiQuery`] (query parameters), whose rejections are problems, a flow id from a path, and
//! the answer [`Wire`] of a `flowstate_api` type.
//!
//! It must never answer a rejection with anything but a [`Problem`], and never write a wire
//! type other than through `serde_json::Value`: the API has always written its keys in the
//! order a `Value` keeps them (sorted), the views' field order is not that.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowstate::core::FlowId;
use flowstate_api::ProblemCode;
use serde::Serialize;

use crate::problem::Problem;
use crate::routes::MAX_REQUEST_BYTES;

/// A JSON body whose rejections are problems.
pub(crate) struct ApiJson<T>(pub T);

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
pub(crate) struct ApiQuery<T>(pub T);

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
            ProblemCode::TooLarge,
            format!("the body is over {MAX_REQUEST_BYTES} bytes (MAX_REQUEST_BYTES)"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            ProblemCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ),
        _ => Problem::invalid(text),
    }
}

fn query_rejected(rejection: &QueryRejection) -> Problem {
    Problem::invalid(rejection.body_text())
}

/// The flow id of a path segment.
pub(crate) fn flow_id(text: &str) -> Result<FlowId, Problem> {
    text.parse()
        .map_err(|_| Problem::invalid(format!("{text:?} is not a flow id (a UUID)")))
}

/// An answer of a wire type, with its status.
#[derive(Debug)]
pub(crate) struct Wire<T>(pub StatusCode, pub T);

impl<T> Wire<T> {
    /// 200 with `body`.
    pub(crate) fn ok(body: T) -> Self {
        Self(StatusCode::OK, body)
    }
}

impl<T: Serialize> IntoResponse for Wire<T> {
    fn into_response(self) -> Response {
        match serde_json::to_value(&self.1) {
            Ok(body) => (self.0, Json(body)).into_response(),
            Err(error) => Problem::internal(error.to_string()).into_response(),
        }
    }
}
