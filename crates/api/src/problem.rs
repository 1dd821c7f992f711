//! Problem details (RFC 9457) as the API writes them, and their stable codes.
//!
//! It must never hold a code that is not in [`ProblemCode`]: a client matches on the code.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The stable code of a problem, what a client may match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemCode {
    /// 400: the request is malformed or names something that cannot be used.
    InvalidRequest,
    /// 404.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: the request conflicts with the flow's state.
    InvalidState,
    /// 409: suspend or resume of a flow that has no suspended state.
    NotSuspendable,
    /// 401: no bearer token, or not a valid one.
    Unauthorized,
    /// 403: without tokens, a Host that is not a loopback name.
    ForbiddenHost,
    /// 413.
    TooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 400: no plan reaches the goals.
    PlanningFailed,
    /// 400: no task graph or function of that name.
    UnknownDefinition,
    /// 409: too many step registrations.
    LimitReached,
    /// 409: `archived=true` on a server without an archive.
    NoArchive,
    /// 409: a start's `Idempotency-Key` was used by a start with another request.
    IdempotencyKeyReused,
    /// 409: a start's chosen `id` is a flow another request started.
    FlowExists,
    /// 500: the engine or the store failed.
    Internal,
    /// 503 (`/readyz`): the process cannot do its work (its store stopped after an I/O
    /// error or cannot reach its database, or its worker is not running).
    NotReady,
}

impl ProblemCode {
    /// The code as written on the wire.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidState => "invalid_state",
            Self::NotSuspendable => "not_suspendable",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenHost => "forbidden_host",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PlanningFailed => "planning_failed",
            Self::UnknownDefinition => "unknown_definition",
            Self::LimitReached => "limit_reached",
            Self::NoArchive => "no_archive",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::FlowExists => "flow_exists",
            Self::Internal => "internal",
            Self::NotReady => "not_ready",
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// A problem-details body (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind (the status's reason phrase).
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What is wrong with this request.
    pub detail: String,
    /// The stable code.
    pub code: ProblemCode,
}

impl ProblemDetails {
    /// The problem of `status` (with its reason phrase `title`), `code` and `detail`.
    #[must_use]
    pub fn new(status: u16, title: &str, code: ProblemCode, detail: String) -> Self {
        Self {
            kind: format!("https://flowstate.invalid/problems/{code}"),
            title: title.to_owned(),
            status,
            detail,
            code,
        }
    }
}
