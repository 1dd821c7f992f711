//! Durable HTTP step registrations: what `POST /api/v1/steps` and `DELETE` answered survives
//! a restart of the server on the same store (the registrations file next to it), versions
//! and all; a flow waiting for its HTTP step before the restart finishes after it; a file the
//! server cannot trust stops it from starting, naming the file; a registration that cannot be
//! written is a 500 that changes nothing.
//!
//! Nothing waits for a fixed time: every wait is for a condition, and the deadlines are only
//! guards against a test that would otherwise hang.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstate_server::registrations::{
    MAX_STEPS_FILE_BYTES, MAX_STEP_REGISTRATIONS, STEPS_FILE_SUFFIX,
};
use flowstate_server::{serve, RunningServer, ServerConfig, ServerError};
use serde_json::{json, Value};

/// How long any one wait may take before the test is declared hung.
const GUARD: Duration = Duration::from_secs(60);

fn config(dir: &Path, steps_file: Option<PathBuf>) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        store: dir.join("flows.db").display().to_string(),
        archive: None,
        archive_deactivated: false,
        archiving: flowstate_server::Archiving::default(),
        tokens: Vec::new(),
        examples: false,
        steps_file,
        idempotency_window: flowstate::DEFAULT_IDEMPOTENCY_WINDOW,
    }
}

async fn start(dir: &Path, steps_file: Option<PathBuf>) -> RunningServer {
    serve(config(dir, steps_file)).await.expect("serve")
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &RunningServer) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: format!("http://{}/api/v1", server.addr()),
        }
    }

    /// Status, content type and JSON body.
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, kind, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, String, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> (u16, String, Value) {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn get(&self, path: &str) -> Value {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
            .2
    }

    /// The registered steps, by name.
    async fn steps(&self) -> std::collections::BTreeMap<String, Value> {
        self.get("/steps").await["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|step| {
                (
                    step["name"].as_str().expect("name").to_owned(),
                    step.clone(),
                )
            })
            .collect()
    }

    async fn register(&self, body: &Value) -> u64 {
        let (status, _, answer) = self.post("/steps", body).await;
        assert_eq!(status, 201, "{answer}");
        answer["version"].as_u64().expect("version")
    }

    async fn start_plan(&self, goal: &str, inputs: Value) -> (u16, Value) {
        let (status, _, answer) = self
            .post(
                "/flows",
                &json!({"kind": "plan", "goals": [goal], "inputs": inputs}),
            )
            .await;
        (status, answer)
    }

    async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let flow = self.get(&format!("/flows/{id}")).await;
            if flow["status"]["state"] == state {
                return flow;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not {state} within the guard: {flow}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A responder for the `quote` step: `price = weight * factor`, or 503 (retried) while it is
/// down. Counts the 503s and the successes.
struct Responder {
    url: String,
    up: Arc<AtomicBool>,
    refused: Arc<AtomicU32>,
    answered: Arc<AtomicU32>,
}

async fn responder() -> Responder {
    let (up, refused, answered) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let (is_up, refusals, answers) = (up.clone(), refused.clone(), answered.clone());
    let app = axum::Router::new().route(
        "/quote",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (is_up, refusals, answers) = (is_up.clone(), refusals.clone(), answers.clone());
            async move {
                if !is_up.load(Ordering::SeqCst) {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({})),
                    );
                }
                answers.fetch_add(1, Ordering::SeqCst);
                let weight = body["inputs"]["weight"].as_f64().unwrap_or(0.0);
                let factor = body["inputs"]["factor"].as_f64().unwrap_or(0.0);
                (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({ "price": weight * factor })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Responder {
        url: format!("http://{addr}/quote"),
        up,
        refused,
        answered,
    }
}

/// The `quote` step, with every setting a registration can carry.
fn quote(url: &str) -> Value {
    json!({
        "name": "quote",
        "inputs": [{"name": "weight"}, {"name": "factor", "optional": true, "default": 2}],
        "outputs": ["price"],
        "url": url,
        "mode": "sync",
        "predicate": {"op": "exists", "input": "weight"},
        "retry": {"max_attempts": 1000, "initial_backoff_ms": 10, "max_backoff_ms": 50, "jitter": false},
        "timeout_ms": 5000
    })
}

fn steps_file(dir: &Path) -> PathBuf {
    dir.join(format!("flows.db{STEPS_FILE_SUFFIX}"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_steps_survive_restarts_with_their_versions_and_waiting_flows_go_on() {
    let dir = tempfile::tempdir().expect("dir");
    let endpoint = responder().await;
    endpoint.up.store(false, Ordering::SeqCst);

    // First run: register, and start a flow that waits for the step (its endpoint is down,
    // so the attempts fail with 503 and are retried).
    let server = start(dir.path(), None).await;
    assert_eq!(server.steps_file(), Some(steps_file(dir.path()).as_path()));
    let api = Api::new(&server);
    assert_eq!(api.register(&quote(&endpoint.url)).await, 1);
    let listed = api.steps().await;
    assert_eq!(listed["quote"]["version"], 1);
    let kept = read_json(&steps_file(dir.path()));
    assert_eq!(kept["format"], 1);
    assert_eq!(kept["registrations"][0]["version"], 1);
    assert_eq!(kept["registrations"][0]["request"], {
        let mut request = quote(&endpoint.url);
        // The whole request is kept, with the fields it left out.
        request["map_over"] = Value::Null;
        request["parallelism"] = Value::Null;
        request
    });
    let (status, started) = api.start_plan("price", json!({"weight": 21})).await;
    assert_eq!(status, 201, "{started}");
    let waiting = started["id"].as_str().expect("id").to_owned();
    let deadline = tokio::time::Instant::now() + GUARD;
    while endpoint.refused.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await;

    // Second run, on the same store: the step is there as it was (same version, same
    // specification) before anything is asked, and the waiting flow finishes with it.
    endpoint.up.store(true, Ordering::SeqCst);
    let server = start(dir.path(), None).await;
    let api = Api::new(&server);
    assert_eq!(api.steps().await, listed);
    let done = api.wait_for_state(&waiting, "deactivated").await;
    assert_eq!(done["plan"]["attributes"]["price"]["value"], 42.0, "{done}");
    assert!(
        endpoint.answered.load(Ordering::SeqCst) >= 1,
        "answered only after the restart"
    );
    let (status, started) = api.start_plan("price", json!({"weight": 5})).await;
    assert_eq!(status, 201, "{started}");
    let done = api
        .wait_for_state(started["id"].as_str().expect("id"), "deactivated")
        .await;
    assert_eq!(done["plan"]["attributes"]["price"]["value"], 10.0, "{done}");
    // Numbering goes on.
    let mut second = quote(&endpoint.url);
    second["inputs"] =
        json!([{"name": "weight"}, {"name": "factor", "optional": true, "default": 3}]);
    assert_eq!(api.register(&second).await, 2);
    server.shutdown().await;

    // Third run: version 2 is the newest, and a flow can still be planned with it.
    let server = start(dir.path(), None).await;
    let api = Api::new(&server);
    assert_eq!(api.steps().await["quote"]["version"], 2);
    let (_, started) = api.start_plan("price", json!({"weight": 5})).await;
    let done = api
        .wait_for_state(started["id"].as_str().expect("id"), "deactivated")
        .await;
    assert_eq!(done["plan"]["attributes"]["price"]["value"], 15.0, "{done}");
    // A removal is kept too.
    let (status, _, _) = api.delete("/steps/quote").await;
    assert_eq!(status, 204);
    server.shutdown().await;
    let kept = read_json(&steps_file(dir.path()));
    assert_eq!(kept["removed"], json!(["quote"]));

    // Fourth run: the step is not planned from any more; registering it again makes
    // version 3 (the removed versions stay, for flows planned with them).
    let server = start(dir.path(), None).await;
    let api = Api::new(&server);
    assert!(!api.steps().await.contains_key("quote"));
    let (status, refused) = api.start_plan("price", json!({"weight": 5})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(api.register(&quote(&endpoint.url)).await, 3);
    assert_eq!(api.steps().await["quote"]["version"], 3);
    server.shutdown().await;
    let kept = read_json(&steps_file(dir.path()));
    assert_eq!(kept["removed"], json!([]));
    assert_eq!(kept["registrations"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_name_get_different_versions() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start(dir.path(), None).await;
    let api = Arc::new(Api::new(&server));
    let body = json!({"name": "spin", "outputs": ["turn"], "url": "http://127.0.0.1:9/spin"});
    let registrations: Vec<_> = (0..16)
        .map(|_| {
            let (api, body) = (api.clone(), body.clone());
            tokio::spawn(async move { api.register(&body).await })
        })
        .collect();
    let mut versions = Vec::new();
    for registration in registrations {
        versions.push(registration.await.expect("task"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>());
    server.shutdown().await;
    let server = start(dir.path(), None).await;
    let api = Api::new(&server);
    assert_eq!(api.steps().await["spin"]["version"], 16);
    assert_eq!(api.register(&body).await, 17);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_file_that_cannot_be_trusted_stops_the_server_and_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let file = steps_file(dir.path());
    let refusal = |expected: &'static str| {
        let (dir, file) = (dir.path().to_owned(), file.clone());
        async move {
            let error = serve(config(&dir, None))
                .await
                .expect_err("refused to start");
            assert!(matches!(error, ServerError::StepsFile { .. }), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    };
    std::fs::write(&file, "{\"format\": 1, \"registrations\": [").expect("write");
    refusal("not JSON").await;
    std::fs::write(&file, r#"{"format": 2, "registrations": []}"#).expect("write");
    refusal("newer flowstate").await;
    std::fs::write(&file, r#"{"registrations": []}"#).expect("write");
    refusal("\"format\"").await;
    std::fs::write(
        &file,
        r#"{"format": 1, "registrations": [{"name": "a", "version": 1, "request": {"name": "a", "outputs": [], "url": "http://127.0.0.1:9/"}}]}"#,
    )
    .expect("write");
    refusal("declares no outputs").await;
    let many: Vec<Value> = (1..=MAX_STEP_REGISTRATIONS + 1)
        .map(|version| {
            json!({"name": "a", "version": version, "request": {"name": "a", "outputs": ["x"], "url": "http://h/"}})
        })
        .collect();
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"format": 1, "registrations": many})).expect("json"),
    )
    .expect("write");
    refusal("MAX_STEP_REGISTRATIONS").await;
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(MAX_STEPS_FILE_BYTES + 1))
        .expect("grow");
    refusal("MAX_STEPS_FILE_BYTES").await;
    // A file in a directory that does not exist is refused at start, not at the first
    // registration.
    let elsewhere = dir.path().join("missing").join("steps.json");
    let error = serve(config(dir.path(), Some(elsewhere.clone())))
        .await
        .expect_err("refused to start");
    assert!(
        error.to_string().contains(&elsewhere.display().to_string()),
        "{error}"
    );
    // With the file gone, the same store serves again.
    std::fs::remove_file(&file).expect("remove");
    start(dir.path(), None).await.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_cannot_be_written_is_a_500_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let keep = dir.path().join("keep");
    std::fs::create_dir(&keep).expect("mkdir");
    let file = keep.join("steps.json");
    let server = start(dir.path(), Some(file.clone())).await;
    let api = Api::new(&server);
    let step = |name: &str| json!({"name": name, "outputs": [format!("{name}_out")], "url": "http://127.0.0.1:9/x"});
    assert_eq!(api.register(&step("a")).await, 1);
    let before = api.steps().await;

    // The file's directory disappears: nothing can be written.
    std::fs::remove_dir_all(&keep).expect("rm");
    for name in ["a", "b"] {
        let (status, kind, problem) = api.post("/steps", &step(name)).await;
        assert_eq!(status, 500, "{problem}");
        assert_eq!(kind, "application/problem+json");
        assert_eq!(problem["code"], "internal");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(&file.display().to_string()), "{detail}");
        assert!(detail.contains("nothing was registered"), "{detail}");
    }
    let (status, _, problem) = api.delete("/steps/a").await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["code"], "internal");
    assert_eq!(api.steps().await, before);

    // Once it can be written again, no version was used up, and the whole registry is
    // written (version 1 too).
    std::fs::create_dir(&keep).expect("mkdir");
    assert_eq!(api.register(&step("a")).await, 2);
    server.shutdown().await;
    let kept = read_json(&file);
    let versions: Vec<&Value> = kept["registrations"]
        .as_array()
        .expect("registrations")
        .iter()
        .map(|r| &r["version"])
        .collect();
    assert_eq!(versions, [&json!(1), &json!(2)]);
    let server = start(dir.path(), Some(file)).await;
    let api = Api::new(&server);
    assert_eq!(api.steps().await["a"]["version"], 2);
    assert!(!api.steps().await.contains_key("b"));
    server.shutdown().await;
}

/// An HTTP step named like an example step, registered while the examples were off, takes
/// the example's version 1: a later start with the examples on says so and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_step_that_shadows_an_example_is_named_when_the_examples_come_back() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start(dir.path(), None).await;
    let api = Api::new(&server);
    let mut echo = quote("http://127.0.0.1:9/");
    echo["name"] = json!("echo");
    let (status, _, body) = api.post("/steps", &echo).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    server.shutdown().await;

    let error = serve(ServerConfig {
        examples: true,
        ..config(dir.path(), None)
    })
    .await
    .expect_err("refused to start");
    let message = error.to_string();
    assert!(matches!(error, ServerError::StepsFile { .. }), "{error:?}");
    assert!(message.contains("\"echo\""), "{message}");
    assert!(message.contains("--no-examples"), "{message}");
}
