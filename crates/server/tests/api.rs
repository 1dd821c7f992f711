//! The HTTP API against a real server on a temporary SQLite store: starting each kind of
//! flow, reading state (now and as of an event), events, signals, cancels, streams, and the
//! contract for bad input (problem details with a stable code, the store unchanged).

use std::time::Duration;

use flowstate_server::{serve, RunningServer, ServerConfig, ServerError};
use serde_json::{json, Value};

async fn start(tokens: Vec<String>) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let config = ServerConfig {
        tokens,
        examples: true,
        ..ServerConfig::new(dir.path().join("flows.db").display().to_string())
    };
    (serve(config).await.expect("serve"), dir)
}

/// The id in a `201 {"id": ...}` answer.
trait StartedId {
    async fn id(self) -> String;
}

impl StartedId for reqwest::Response {
    async fn id(self) -> String {
        let body: Value = self.json().await.expect("json");
        body["id"].as_str().expect("an id").to_owned()
    }
}

fn url(server: &RunningServer, path: &str) -> String {
    format!("http://{}{path}", server.addr())
}

async fn wait_for_status(
    client: &reqwest::Client,
    server: &RunningServer,
    id: &str,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flow: Value = client
            .get(url(server, &format!("/api/v1/flows/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if flow["status"]["state"] == status {
            return flow;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {status} in 30 s: {flow}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_started_over_http_runs_and_its_state_is_readable_at_any_event() {
    let (server, _dir) = start(Vec::new()).await;
    let client = reqwest::Client::new();
    let started = client
        .post(url(&server, "/api/v1/flows"))
        .json(&json!({"kind": "plan", "goals": ["confirmation_id"], "inputs": {"customer_id": 42}}))
        .send()
        .await
        .expect("post");
    assert_eq!(started.status(), 201);
    let id = started.id().await;
    let done = wait_for_status(&client, &server, &id, "deactivated").await;
    let attributes = &done["plan"]["attributes"];
    assert_eq!(attributes["customer_name"]["value"], "Customer 42");
    assert_eq!(attributes["amount"]["step"], "calculate_total");
    let total = done["total_seq"].as_u64().expect("total");
    assert_eq!(done["last_seq"].as_u64(), Some(total));
    // As of event 2 (the plan started), nothing ran yet.
    let early: Value = client
        .get(url(&server, &format!("/api/v1/flows/{id}?at=2")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(early["status"]["state"], "active");
    assert_eq!(
        early["plan"]["steps"]["lookup_customer"]["state"],
        "pending"
    );
    assert_eq!(early["total_seq"].as_u64(), Some(total));
    let events: Value = client
        .get(url(
            &server,
            &format!("/api/v1/flows/{id}/events?after=1&limit=2"),
        ))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let types: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["plan_started", "step_started"]);
    // The flow's stream replays its events from the start.
    let mut stream = client
        .get(url(&server, &format!("/api/v1/flows/{id}/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(
        stream.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    let mut text = String::new();
    while !text.contains("\"seq\":3") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("a chunk in time")
            .expect("chunk")
            .expect("not ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: flow_event"), "{text}");
    assert!(text.contains("plan_started"), "{text}");
    drop(stream);
    let steps: Value = client
        .get(url(&server, "/api/v1/steps"))
        .send()
        .await
        .expect("steps")
        .json()
        .await
        .expect("json");
    assert!(steps["steps"].as_array().expect("steps").len() >= 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_graphs_and_functions_start_by_name_and_functions_take_signals_and_cancels() {
    let (server, _dir) = start(Vec::new()).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(url(&server, path)).json(&body).send();
    let graph = post(
        "/api/v1/flows",
        json!({"kind": "task_graph", "name": "greet", "inputs": {"name": "ada"}}),
    )
    .await
    .expect("post");
    assert_eq!(graph.status(), 201);
    let graph = graph.id().await;
    wait_for_status(&client, &server, &graph, "success").await;
    for (approve, outcome) in [(true, "approved 14"), (false, "rejected 14")] {
        let function = post(
            "/api/v1/flows",
            json!({"kind": "function", "name": "approval", "input": 7}),
        )
        .await
        .expect("post")
        .id()
        .await;
        wait_for_status(&client, &server, &function, "sleeping").await;
        let sent = post(
            &format!("/api/v1/flows/{function}/signals"),
            json!({"name": "approve", "value": approve}),
        )
        .await
        .expect("signal");
        assert_eq!(sent.status(), 202);
        let done = wait_for_status(&client, &server, &function, "done").await;
        assert_eq!(done["function"]["outcome"]["Ok"], outcome, "{done}");
    }
    let function = post(
        "/api/v1/flows",
        json!({"kind": "function", "name": "approval", "input": 1}),
    )
    .await
    .expect("post")
    .id()
    .await;
    wait_for_status(&client, &server, &function, "sleeping").await;
    let cancelled = post(
        &format!("/api/v1/flows/{function}/cancel"),
        json!({"reason": "test"}),
    )
    .await
    .expect("cancel");
    assert_eq!(cancelled.status(), 202);
    let done = wait_for_status(&client, &server, &function, "done").await;
    assert_eq!(
        done["function"]["outcome"]["Err"]["kind"], "Cancelled",
        "{done}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_is_served_and_with_tokens_every_call_needs_one() {
    let dir = tempfile::tempdir().expect("dir");
    let refused = serve(ServerConfig {
        addr: "0.0.0.0:0".parse().expect("addr"),
        ..ServerConfig::new(dir.path().join("flows.db").display().to_string())
    })
    .await
    .expect_err("refused");
    assert!(
        matches!(refused, ServerError::Unauthenticated { .. }),
        "{refused}"
    );
    let weak = serve(ServerConfig {
        tokens: vec![String::new()],
        ..ServerConfig::new(dir.path().join("weak.db").display().to_string())
    })
    .await
    .expect_err("refused");
    assert!(
        matches!(weak, ServerError::WeakToken { length: 0 }),
        "{weak}"
    );
    // Without tokens, a request for another host name (a DNS-rebinding page) is refused.
    let (open, _open_dir) = start(Vec::new()).await;
    let rebound = reqwest::Client::new()
        .get(url(&open, "/api/v1/flows"))
        .header("host", "evil.example:7280")
        .send()
        .await
        .expect("get");
    assert_eq!(rebound.status(), 403);
    open.shutdown().await;
    let (server, _dir) = start(vec!["s3cret-s3cret-s3cret".to_owned()]).await;
    let client = reqwest::Client::new();
    let none = client
        .get(url(&server, "/api/v1/flows"))
        .send()
        .await
        .expect("get");
    assert_eq!(none.status(), 401);
    let problem: Value = none.json().await.expect("json");
    assert_eq!(problem["code"], "unauthorized");
    let wrong = client
        .get(url(&server, "/api/v1/flows"))
        .bearer_auth("guess")
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(url(&server, "/api/v1/flows"))
        .bearer_auth("s3cret-s3cret-s3cret")
        .send()
        .await
        .expect("get");
    assert_eq!(right.status(), 200);
    server.shutdown().await;
}

/// 1,000 malformed or hostile requests (invalid suspend, resume and cancel among them): each
/// gets the right 4xx with a problem body, and the store is unchanged afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_requests_get_the_right_4xx_and_change_nothing() {
    let (server, _dir) = start(vec!["t0ken-t0ken-t0ken".to_owned()]).await;
    let client = reqwest::Client::new();
    // One real flow, finished, to check that nothing touches it.
    let id = client
        .post(url(&server, "/api/v1/flows"))
        .bearer_auth("t0ken-t0ken-t0ken")
        .json(&json!({"kind": "task_graph", "name": "greet", "inputs": {}}))
        .send()
        .await
        .expect("post")
        .id()
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flow: Value = client
            .get(url(&server, &format!("/api/v1/flows/{id}")))
            .bearer_auth("t0ken-t0ken-t0ken")
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if flow["status"]["state"] == "success" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = || async {
        client
            .get(url(&server, "/api/v1/flows?limit=1000"))
            .bearer_auth("t0ken-t0ken-t0ken")
            .send()
            .await
            .expect("list")
            .json::<Value>()
            .await
            .expect("json")
    };
    let before = snapshot().await;
    let unknown = "01a214b4-2e9c-7b72-978c-140b5819b08a";
    let big = "x".repeat(flowstate_server::MAX_REQUEST_BYTES + 10);
    let mut counts = std::collections::BTreeMap::<(u16, String), usize>::new();
    for n in 0..1_000_usize {
        let flows = url(&server, "/api/v1/flows");
        let request = match n % 24 {
            0 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .header("content-type", "application/json")
                .body("{not json"),
            1 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .body("{}"),
            2 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"kind": "rocket"})),
            3 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"kind": "plan", "goals": "not a list"})),
            4 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"kind": "plan", "goals": [format!("ghost{n}")]})),
            5 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"kind": "task_graph", "name": format!("nope{n}")})),
            6 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"kind": "function", "name": "nope"})),
            7 => client
                .post(&flows)
                .bearer_auth("t0ken-t0ken-t0ken")
                .header("content-type", "application/json")
                .body(big.clone()),
            8 => client
                .get(url(&server, &format!("/api/v1/flows/not-an-id-{n}")))
                .bearer_auth("t0ken-t0ken-t0ken"),
            9 => client
                .get(url(&server, &format!("/api/v1/flows/{unknown}")))
                .bearer_auth("t0ken-t0ken-t0ken"),
            10 => client
                .get(url(&server, &format!("/api/v1/flows/{id}?at=yesterday")))
                .bearer_auth("t0ken-t0ken-t0ken"),
            11 => client
                .get(url(&server, &format!("/api/v1/flows/{id}/events?limit=0")))
                .bearer_auth("t0ken-t0ken-t0ken"),
            12 => client
                .get(url(&server, "/api/v1/flows?kind=spaceship"))
                .bearer_auth("t0ken-t0ken-t0ken"),
            13 => client
                .get(url(&server, "/api/v1/flows?limit=5000"))
                .bearer_auth("t0ken-t0ken-t0ken"),
            14 => client
                .post(url(&server, &format!("/api/v1/flows/{id}/signals")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"name": "x"})),
            15 => client
                .post(url(&server, &format!("/api/v1/flows/{unknown}/cancel")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({})),
            16 => client
                .post(url(&server, &format!("/api/v1/flows/{id}/signals")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"name": ""})),
            17 => client.get(&flows).bearer_auth(format!("bad{n}")),
            18 => client
                .post(&flows)
                .json(&json!({"kind": "task_graph", "name": "greet"})),
            // Suspend, resume and cancel that the flow's state, or the request, refuses.
            20 => client
                .post(url(&server, &format!("/api/v1/flows/{id}/resume")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({})),
            21 => client
                .post(url(&server, &format!("/api/v1/flows/{unknown}/suspend")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"reason": "x"})),
            22 => client
                .post(url(&server, &format!("/api/v1/flows/{id}/cancel")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"reason": format!("late {n}")})),
            23 => client
                .post(url(&server, &format!("/api/v1/flows/{id}/suspend")))
                .bearer_auth("t0ken-t0ken-t0ken")
                .json(&json!({"reason": n})),
            _ => client
                .get(url(&server, "/api/v1/nothing-here"))
                .bearer_auth("t0ken-t0ken-t0ken"),
        };
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status), "request {n}: {status} {body}");
        assert_eq!(
            content_type, "application/problem+json",
            "request {n}: {body}"
        );
        let code = body["code"].as_str().unwrap_or("").to_owned();
        let expected = match n % 24 {
            0 | 2 | 3 | 8 | 10 | 11 | 12 | 13 | 16 | 23 => "invalid_request",
            1 => "unsupported_media_type",
            4 => "planning_failed",
            5 | 6 => "unknown_definition",
            7 => "too_large",
            9 | 15 | 19 | 21 => "not_found",
            14 | 20 | 22 => "invalid_state",
            _ => "unauthorized",
        };
        assert_eq!(code, expected, "request {n}: {status} {body}");
        *counts.entry((status, code)).or_default() += 1;
    }
    let after = snapshot().await;
    assert_eq!(before, after, "the store changed");
    println!("{counts:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let (server, _dir) = start(Vec::new()).await;
    let document: Value = reqwest::get(url(&server, "/api/v1/openapi.json"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/api/v1/flows",
        "/api/v1/flows/{id}",
        "/api/v1/flows/{id}/events",
        "/api/v1/flows/{id}/stream",
        "/api/v1/flows/{id}/signals",
        "/api/v1/flows/{id}/cancel",
        "/api/v1/flows/{id}/suspend",
        "/api/v1/flows/{id}/resume",
        "/api/v1/events/stream",
        "/api/v1/steps",
        "/api/v1/steps/{name}",
        "/api/v1/work/{token}",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not described"
        );
    }
    server.shutdown().await;
}

/// HTTP steps registered over the API: the engine POSTs the inputs with the idempotency key,
/// retries a 503, and fails the item on a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_steps_are_called_with_their_inputs_and_retried_on_server_errors() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    let calls = Arc::new(AtomicU32::new(0));
    let keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let (counter, seen) = (calls.clone(), keys.clone());
    let endpoint = axum::Router::new()
        .route(
            "/quote",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let (counter, seen) = (counter.clone(), seen.clone());
                    async move {
                        seen.lock()
                            .expect("lock")
                            .push(headers["idempotency-key"].to_str().expect("key").to_owned());
                        // The first call fails with 503: retried.
                        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                            return (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(json!({})),
                            );
                        }
                        let weight = body["inputs"]["weight"].as_f64().unwrap_or(0.0);
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({ "price": weight * 2.0 })),
                        )
                    }
                },
            ),
        )
        .route(
            "/refuse",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "no such parcel",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, endpoint).await });
    let (server, _dir) = start(Vec::new()).await;
    let client = reqwest::Client::new();
    for (name, path) in [("quote", "quote"), ("refuse", "refuse")] {
        let registered = client
            .post(url(&server, "/api/v1/steps"))
            .json(&json!({
                "name": name,
                "inputs": [{"name": "weight"}],
                "outputs": [if name == "quote" { "price" } else { "refusal" }],
                "url": format!("http://{endpoint_addr}/{path}"),
                "retry": {"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50, "jitter": true},
                "timeout_ms": 5000
            }))
            .send()
            .await
            .expect("register");
        assert_eq!(registered.status(), 201, "{:?}", registered.text().await);
    }
    let bad_url = client
        .post(url(&server, "/api/v1/steps"))
        .json(&json!({"name": "x", "outputs": ["y"], "url": "ftp://nope"}))
        .send()
        .await
        .expect("register");
    assert_eq!(bad_url.status(), 400);
    let start_plan = |goal: &'static str| {
        client
            .post(url(&server, "/api/v1/flows"))
            .json(&json!({"kind": "plan", "goals": [goal], "inputs": {"weight": 21}}))
            .send()
    };
    let id = start_plan("price").await.expect("start").id().await;
    let done = wait_for_status(&client, &server, &id, "deactivated").await;
    assert_eq!(done["plan"]["attributes"]["price"]["value"], 42.0);
    assert_eq!(done["plan"]["attributes"]["price"]["attempt"], 2);
    let keys = keys.lock().expect("lock").clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys[0], keys[1],
        "both attempts carry the same idempotency key"
    );
    assert_eq!(keys[0], format!("{id}/quote/0"));
    let id = start_plan("refusal").await.expect("start").id().await;
    let failed = wait_for_status(&client, &server, &id, "deactivated").await;
    assert_eq!(
        failed["plan"]["steps"]["refuse"]["failure"]["kind"], "Http422",
        "{failed}"
    );
    // Removed: new flows can no longer plan it.
    let removed = client
        .delete(url(&server, "/api/v1/steps/quote"))
        .send()
        .await
        .expect("delete");
    assert_eq!(removed.status(), 204);
    let refused = start_plan("price").await.expect("start");
    assert_eq!(refused.status(), 400);
    server.shutdown().await;
}

/// An asynchronous HTTP step: its endpoint accepts the work at once, and its worker reports
/// later to the report URL (which carries the attempt's completion token); a second report
/// of the same attempt is refused with 409 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_http_steps_complete_by_report_and_duplicate_reports_are_refused() {
    use std::sync::{Arc, Mutex};
    let report_urls = Arc::new(Mutex::new(Vec::<(String, Value)>::new()));
    let seen = report_urls.clone();
    let endpoint = axum::Router::new().route(
        "/label",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let report_url = body["report_url"].as_str().expect("report url").to_owned();
                seen.lock()
                    .expect("lock")
                    .push((report_url, body["inputs"].clone()));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, endpoint).await });
    let (server, _dir) = start(Vec::new()).await;
    let client = reqwest::Client::new();
    let registered = client
        .post(url(&server, "/api/v1/steps"))
        .json(&json!({
            "name": "label",
            "inputs": [{"name": "parcel"}],
            "outputs": ["label"],
            "url": format!("http://{endpoint_addr}/label"),
            "mode": "async",
            "timeout_ms": 20000
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);
    let id = client
        .post(url(&server, "/api/v1/flows"))
        .json(&json!({"kind": "plan", "goals": ["label"], "inputs": {"parcel": "p-7"}}))
        .send()
        .await
        .expect("start")
        .id()
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (report_url, inputs) = loop {
        if let Some(first) = report_urls.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step was never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(inputs["parcel"], "p-7");
    let token: String = format!("{id}/label/0/1")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        report_url.contains(&format!("/api/v1/work/{token}?key=")),
        "{report_url}"
    );
    // A report with a wrong key is refused like one nobody waits for.
    let (base, _) = report_url.split_once("?key=").expect("key");
    let forged = client
        .post(format!("{base}?key=00000000000000000000000000000000"))
        .json(&json!({"outputs": {"label": "forged"}}))
        .send()
        .await
        .expect("report");
    assert_eq!(forged.status(), 409);
    // The worker reports, once; a duplicate is refused.
    let report = json!({"outputs": {"label": "L-p-7"}});
    let first = client
        .post(&report_url)
        .json(&report)
        .send()
        .await
        .expect("report");
    assert_eq!(first.status(), 202);
    let done = wait_for_status(&client, &server, &id, "deactivated").await;
    assert_eq!(done["plan"]["attributes"]["label"]["value"], "L-p-7");
    let before = done["last_seq"].clone();
    let duplicate = client
        .post(&report_url)
        .json(&report)
        .send()
        .await
        .expect("report");
    assert_eq!(duplicate.status(), 409);
    assert_eq!(
        duplicate.json::<Value>().await.expect("json")["code"],
        "invalid_state"
    );
    let malformed = client
        .post(&report_url)
        .json(&json!({"outputs": {}, "error": {"kind": "X"}}))
        .send()
        .await
        .expect("report");
    assert_eq!(malformed.status(), 400);
    let after: Value = client
        .get(url(&server, &format!("/api/v1/flows/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(after["last_seq"], before, "refused reports change nothing");
    server.shutdown().await;
}
