//! Who may call the API: `Authorization: Bearer TOKEN` when tokens are configured, and
//! without tokens only requests to a loopback name (against DNS rebinding).
//!
//! It must never compare a secret in time that depends on its contents, and never let a
//! request through to a handler before it is authenticated.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flowstate_api::ProblemCode;

use crate::problem::Problem;
use crate::state::ApiState;

/// Requires `Authorization: Bearer TOKEN` when tokens are configured.
pub(crate) async fn authenticate(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if state.inner.tokens.is_empty() {
        return match forbidden_host(&request) {
            Some(problem) => problem.into_response(),
            None => next.run(request).await,
        };
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
    let detail = match given {
        Some(token) if valid(token) => return next.run(request).await,
        Some(_) => "the bearer token is not valid",
        None => "this server requires an Authorization: Bearer TOKEN header",
    };
    Problem::new(StatusCode::UNAUTHORIZED, ProblemCode::Unauthorized, detail).into_response()
}

/// Without tokens the server listens on loopback only; a Host that is not a loopback name is
/// a page that rebound its DNS name to 127.0.0.1 (DNS rebinding).
fn forbidden_host(request: &Request) -> Option<Problem> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    (!loopback_host(host)).then(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            ProblemCode::ForbiddenHost,
            format!(
                "without tokens this server answers only requests to a loopback name, not {host:?}"
            ),
        )
    })
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
