//! The web UI's static files (`/`, `/app.js`, `/app.css`), compiled into the binary.
//!
//! It must never serve anything but these files: the UI reads everything else through the
//! API, like any client.

use axum::http::header;
use axum::response::IntoResponse;

/// A UI file of `content_type`. No version in the file names: browsers must revalidate after
/// an upgrade.
fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub(crate) async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", include_str!("../ui/index.html"))
}

pub(crate) async fn app_js() -> impl IntoResponse {
    file(
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    )
}

pub(crate) async fn app_css() -> impl IntoResponse {
    file("text/css; charset=utf-8", include_str!("../ui/app.css"))
}
