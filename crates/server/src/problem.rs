//! Errors as RFC 9457 problem details ([`Problem`]): a stable code a client can match on
//! (`flowstate_api::ProblemCode`), the HTTP status, and a `detail` that says what is wrong;
//! and the mapping of the engines' and the store's errors that several routes share.
//!
//! It must never hide a server failure as the client's: only errors the request caused
//! (unknown flow, invalid input, a value over a limit) become 4xx; the rest are 500
//! `internal`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowstate::kernel::{ControlError, WriteError};
use flowstate::store::StoreError;
use flowstate_api::{ProblemCode, ProblemDetails};

/// A problem-details answer (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub ProblemDetails);

impl Problem {
    /// A problem with `status`, stable `code` and `detail`.
    pub fn new(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        Self(ProblemDetails::new(
            status.as_u16(),
            title,
            code,
            detail.into(),
        ))
    }

    /// 400: the request is malformed or names something that cannot be used.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ProblemCode::InvalidRequest, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ProblemCode::NotFound, detail)
    }

    /// 409: the request conflicts with the flow's state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ProblemCode::InvalidState, detail)
    }

    /// 500: the engine or the store failed.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::Internal,
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

/// A store error: an unknown flow is 404, input the store refuses is 400.
pub(crate) fn store_problem(error: &StoreError) -> Problem {
    match error {
        StoreError::UnknownFlow { flow } => {
            Problem::not_found(format!("flow {flow} does not exist"))
        }
        StoreError::Invalid(input) => Problem::invalid(input.to_string()),
        other => Problem::internal(other.to_string()),
    }
}

/// A refused write caused by the request (inputs over a limit) is the client's problem.
pub(crate) fn write_problem(error: &WriteError) -> Problem {
    match error {
        WriteError::Store(store) => store_problem(store),
        WriteError::Encode(encode) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ProblemCode::TooLarge,
            encode.to_string(),
        ),
        other => Problem::internal(other.to_string()),
    }
}

/// A refused control request (suspend, resume, cancel), the same for every kind: a request
/// the flow's kind does not have is 409 `not_suspendable`, one its state table does not allow
/// now is 409 `invalid_state`.
pub(crate) fn control_problem(error: &ControlError) -> Problem {
    match error {
        ControlError::UnknownFlow { flow } => {
            Problem::not_found(format!("flow {flow} does not exist"))
        }
        ControlError::NotSupported { flow, .. } => Problem::new(
            StatusCode::CONFLICT,
            ProblemCode::NotSuspendable,
            format!("{error} (POST /api/v1/flows/{flow}/cancel)"),
        ),
        ControlError::NotAllowed { .. } | ControlError::WrongKind { .. } => {
            Problem::conflict(error.to_string())
        }
        ControlError::Write(write) => write_problem(write),
        other => Problem::internal(other.to_string()),
    }
}

/// A durable function's refusal (start, signal).
pub(crate) fn function_problem(error: &flowstate::durable::Error) -> Problem {
    use flowstate::durable::Error as StartError;
    match error {
        StartError::Unknown { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            ProblemCode::UnknownDefinition,
            error.to_string(),
        ),
        StartError::Input(_) => Problem::invalid(error.to_string()),
        StartError::Done { .. } | StartError::NotAFunction { .. } => {
            Problem::conflict(error.to_string())
        }
        StartError::Store(store) => store_problem(store),
        StartError::Write(WriteError::Store(store)) => store_problem(store),
        other => Problem::internal(other.to_string()),
    }
}
