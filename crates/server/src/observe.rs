//! What the server tells operators: `GET /metrics` (every `flowstate_` metric of the process
//! in the Prometheus text format), `GET /healthz` (the process answers), `GET /readyz` (it
//! can do its work: its store writes and its worker runs; else 503 `not_ready`, naming
//! why), and the count of HTTP requests by matched route and status.
//!
//! The Prometheus recorder is installed once per process ([`recorder`]), the first time a
//! server starts; the library crates only call the `metrics` macros.
//!
//! **Must never:** label a metric with a raw path (ids would make every request a series of
//! its own): routes are the route table's templates.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowstate_api::ProblemCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};

use crate::problem::Problem;
use crate::state::ApiState;

/// How often the recorder drains its histograms (also done at every scrape).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Bucket bounds of the `_seconds` histograms: 1 ms to 5 min.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// Bucket bounds of the commit batch sizes (commands or appends per group).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed as the global `metrics` recorder on the
/// first call (with a task that drains histograms every [`UPKEEP_INTERVAL`]). `None` if
/// another recorder was installed first (then `/metrics` says so).
pub(crate) fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &BATCH_BUCKETS)
                })
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "metric buckets refused; histograms are summaries");
                    PrometheusBuilder::new()
                });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(error) = metrics::set_global_recorder(recorder) {
                tracing::warn!(%error, "another metrics recorder is installed; /metrics is empty");
                return None;
            }
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UPKEEP_INTERVAL).await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .as_ref()
}

/// `GET /metrics`: the process's metrics in the Prometheus text format.
pub(crate) async fn metrics() -> Response {
    let Some(handle) = recorder() else {
        return Problem::internal("another metrics recorder is installed in this process")
            .into_response();
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store can write and the worker runs; else 503 `not_ready`
/// with the reason. A supervisor restarts a process whose `/readyz` keeps failing.
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let health = state.inner.engine.store().health();
    if !health.is_ok() {
        return not_ready(health.to_string());
    }
    if !state.inner.worker_running.load(Ordering::Acquire) {
        return not_ready("the worker is not running".into());
    }
    Json(json!({ "status": "ready" })).into_response()
}

fn not_ready(detail: String) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ProblemCode::NotReady,
        detail,
    )
    .into_response()
}

/// The route template a request matched, carried on its answer to [`count_requests`].
#[derive(Clone)]
struct Route(MatchedPath);

/// On matched routes (a route layer): puts the matched route template on the answer.
pub(crate) async fn mark_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// On every request: counts it by route template (`unmatched` when no route matched),
/// method and status.
pub(crate) async fn count_requests(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let route = response.extensions().get::<Route>().map_or_else(
        || "unmatched".to_owned(),
        |Route(path)| path.as_str().to_owned(),
    );
    metrics::counter!(
        "flowstate_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    response
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use flowstate::store::testing::InstrumentedStore;
    use flowstate::store::{Store, StoreHealth};

    use super::*;

    /// `/readyz` over a store that can be made to report a stopped store, and a worker
    /// flag: ready only when both are well, else 503 `not_ready` naming why.
    #[tokio::test]
    async fn readyz_tells_a_stopped_store_and_a_stopped_worker() {
        let dir = tempfile::tempdir().expect("dir");
        let slot: Arc<Mutex<Option<Arc<InstrumentedStore>>>> = Arc::default();
        let kept = slot.clone();
        let engine = flowstate::Engine::builder(dir.path().join("flows.db").display().to_string())
            .wrap_store(move |store| {
                let wrapped = Arc::new(InstrumentedStore::new(store));
                *kept.lock().expect("lock") = Some(wrapped.clone());
                wrapped as Arc<dyn Store>
            })
            .build()
            .await
            .expect("engine");
        let store = slot.lock().expect("lock").clone().expect("wrapped");
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let addr = "127.0.0.1:0".parse().expect("addr");
        let state = ApiState::new(engine.clone(), addr, Vec::new(), stopped);

        let answer = readyz(State(state.clone())).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(answer).await.contains("the worker is not running"));

        state.inner.worker_running.store(true, Ordering::Release);
        assert_eq!(readyz(State(state.clone())).await.status(), StatusCode::OK);

        store.set_health(Some(StoreHealth::Stopped {
            cause: "disk I/O error".into(),
        }));
        let answer = readyz(State(state.clone())).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = body(answer).await;
        let problem: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(problem["code"], "not_ready", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("disk I/O error")),
            "{problem}"
        );
        assert_eq!(healthz().await.0["status"], "ok", "the process is alive");

        store.set_health(None);
        assert_eq!(readyz(State(state)).await.status(), StatusCode::OK);
        engine.store().close().await.expect("close");
        assert_eq!(engine.store().health(), StoreHealth::Closed);
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
