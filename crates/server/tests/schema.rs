//! The OpenAPI document against the server's real answers: a server on a temporary SQLite
//! store is driven through every route (list, start each kind, state now and `?at=`, events,
//! signal, suspend/resume/cancel, steps register/list/remove, reports, both streams, and
//! problems of each kind), and every answer's body is validated against the schema the
//! document gives for that operation and status (`$ref`s resolved against its components).
//! An answer whose status the operation does not describe fails, and so does one with a
//! field its schema does not list: the test closes every object schema that lists its
//! properties (`additionalProperties: false`) unless the schema says otherwise.

use std::time::Duration;

use flowstate_server::{serve, RunningServer, ServerConfig};
use serde_json::{json, Value};

async fn start() -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let config = ServerConfig {
        examples: true,
        ..ServerConfig::new(dir.path().join("flows.db").display().to_string())
    };
    (serve(config).await.expect("serve"), dir)
}

/// The document, and the server it describes.
struct Contract {
    document: Value,
    base: String,
    client: reqwest::Client,
    /// Each (method, path, status) checked, to see that every operation was exercised.
    checked: std::sync::Mutex<Vec<(String, String, u16)>>,
}

/// Every object schema that lists its properties and says nothing of others is closed.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            if fields.contains_key("properties") && !fields.contains_key("additionalProperties") {
                fields.insert("additionalProperties".to_owned(), json!(false));
            }
            fields.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

impl Contract {
    async fn new(server: &RunningServer) -> Self {
        let base = format!("http://{}", server.addr());
        let client = reqwest::Client::new();
        let document: Value = client
            .get(format!("{base}/api/v1/openapi.json"))
            .send()
            .await
            .expect("get the document")
            .json()
            .await
            .expect("the document is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        Self {
            document,
            base,
            client,
            checked: std::sync::Mutex::default(),
        }
    }

    /// `#/components/...` in the document.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .document
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{reference} is not in the document")),
            None => value,
        }
    }

    /// The schema of `media` of the answer `status` to `method path` (panics if the
    /// document does not describe that answer).
    fn response_schema(&self, method: &str, path: &str, status: u16, media: &str) -> Value {
        let operation = &self.document["paths"][path][method];
        assert!(operation.is_object(), "the document has no {method} {path}");
        let response = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path} does not describe a {status} answer"));
        let response = self.resolve(response);
        response["content"][media]["schema"].clone()
    }

    /// Validates `body` against `schema` (with the document's components).
    fn validate(&self, schema: &Value, body: &Value, what: &str) {
        let mut root = schema.clone();
        if let Value::Object(fields) = &mut root {
            fields.insert("components".to_owned(), self.document["components"].clone());
        }
        close_objects(&mut root);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|error| panic!("the schema of {what} does not compile: {error}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match the document:\n{}\nbody: {body:#}",
            errors.join("\n")
        );
    }

    /// Sends `method url` (with `body` as JSON), checks the status is `expected`, and
    /// validates the answer against operation `method path`'s schema for it.
    async fn call(
        &self,
        method: &str,
        path: &str,
        url: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let mut request = self.client.request(
            method.to_uppercase().parse().expect("a method"),
            format!("{}{url}", self.base),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        self.check(method, path, url, response, expected).await
    }

    async fn check(
        &self,
        method: &str,
        path: &str,
        url: &str,
        response: reqwest::Response,
        expected: u16,
    ) -> Value {
        let status = response.status().as_u16();
        let media = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or_default().to_owned());
        let text = response.text().await.expect("the answer");
        let what = format!("{method} {url} → {status}");
        assert_eq!(status, expected, "{what}: {text}");
        self.checked
            .lock()
            .expect("lock")
            .push((method.to_owned(), path.to_owned(), status));
        let Some(media) = media.filter(|_| !text.is_empty()) else {
            let schema = self.response_schema(method, path, status, "application/json");
            assert!(
                schema.is_null(),
                "{what}: an empty answer, described with a body"
            );
            return Value::Null;
        };
        let schema = self.response_schema(method, path, status, &media);
        assert!(
            !schema.is_null(),
            "{what}: no {media} schema in the document"
        );
        let body: Value = serde_json::from_str(&text).expect("a JSON answer");
        self.validate(&schema, &body, &what);
        body
    }

    /// The first message of the event stream at `url`, validated against the schema of
    /// operation `get path`, after `then` ran.
    async fn first_message(&self, path: &str, url: &str, then: impl std::future::Future) -> Value {
        let mut response = self
            .client
            .get(format!("{}{url}", self.base))
            .send()
            .await
            .expect("open the stream");
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
        then.await;
        let mut text = String::new();
        let data = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let chunk = response.chunk().await.expect("read").expect("more");
                text.push_str(&String::from_utf8_lossy(&chunk));
                if let Some(line) = text.lines().find_map(|line| line.strip_prefix("data:")) {
                    return line.trim().to_owned();
                }
            }
        })
        .await
        .expect("a message within 20 s");
        let body: Value = serde_json::from_str(&data).expect("JSON data");
        let schema = self.response_schema("get", path, 200, "text/event-stream");
        self.validate(&schema, &body, &format!("a message of {url}"));
        self.checked
            .lock()
            .expect("lock")
            .push(("get".to_owned(), path.to_owned(), 200));
        body
    }

    /// Polls a flow's state until its status is `state`.
    async fn wait_for(&self, id: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("/api/v1/flows/{id}");
            let flow = self
                .call("get", "/api/v1/flows/{id}", &url, None, 200)
                .await;
            if flow["status"]["state"] == state {
                return flow;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not {state} in 30 s: {flow}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every operation of the document was called, with a success answer.
    fn all_operations_checked(&self) {
        let checked = self.checked.lock().expect("lock");
        let paths = self.document["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for method in item.as_object().expect("a path item").keys() {
                assert!(
                    checked
                        .iter()
                        .any(|(m, p, status)| m == method && p == path && *status < 300),
                    "{method} {path} was not exercised"
                );
            }
        }
    }
}

async fn start_flow(contract: &Contract, body: Value) -> String {
    let started = contract
        .call("post", "/api/v1/flows", "/api/v1/flows", Some(body), 201)
        .await;
    started["id"].as_str().expect("an id").to_owned()
}

/// Flows: list, start each kind, state now and at an event, events, and their problems.
async fn flows(contract: &Contract) -> (String, String, String) {
    let list = "/api/v1/flows";
    let plan = start_flow(
        contract,
        json!({"kind": "plan", "goals": ["confirmation_id"], "inputs": {"customer_id": 42}}),
    )
    .await;
    let graph = start_flow(
        contract,
        json!({"kind": "task_graph", "name": "greet", "inputs": {"name": "ada"}}),
    )
    .await;
    let function = start_flow(
        contract,
        json!({"kind": "function", "name": "approval", "input": 7}),
    )
    .await;
    idempotent_starts(contract).await;
    contract.call("get", list, list, None, 200).await;
    contract
        .call("get", list, "/api/v1/flows?kind=plan&limit=1", None, 200)
        .await;
    contract
        .call("get", list, "/api/v1/flows?archived=true", None, 409)
        .await;
    contract
        .call("get", list, "/api/v1/flows?kind=nope", None, 400)
        .await;
    let unknown = json!({"kind": "task_graph", "name": "nope"});
    contract.call("post", list, list, Some(unknown), 400).await;
    contract
        .call("post", list, list, Some(json!({"kind": "x"})), 400)
        .await;
    contract.wait_for(&plan, "deactivated").await;
    contract.wait_for(&graph, "success").await;
    let one = "/api/v1/flows/{id}";
    contract
        .call("get", one, &format!("/api/v1/flows/{plan}?at=2"), None, 200)
        .await;
    contract
        .call(
            "get",
            one,
            &format!("/api/v1/flows/{plan}?at=soon"),
            None,
            400,
        )
        .await;
    contract
        .call("get", one, "/api/v1/flows/not-an-id", None, 400)
        .await;
    let nobody = "01970000-0000-7000-8000-000000000001";
    contract
        .call("get", one, &format!("/api/v1/flows/{nobody}"), None, 404)
        .await;
    let events = "/api/v1/flows/{id}/events";
    for id in [&plan, &graph, &function] {
        let url = format!("/api/v1/flows/{id}/events");
        contract.call("get", events, &url, None, 200).await;
    }
    let url = format!("/api/v1/flows/{plan}/events?after=1&limit=0");
    contract.call("get", events, &url, None, 400).await;
    (plan, graph, function)
}

/// A start with an `Idempotency-Key` (201), the same again (200, `existing`), the key with
/// another request (409), and a chosen id taken by another request (409).
async fn idempotent_starts(contract: &Contract) {
    let list = "/api/v1/flows";
    let send = |key: &'static str, body: Value| {
        contract
            .client
            .post(format!("{}{list}", contract.base))
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let body = json!({"kind": "function", "name": "approval", "input": 8});
    let response = send("schema-1", body.clone()).send().await.expect("send");
    let first = contract.check("post", list, list, response, 201).await;
    let response = send("schema-1", body).send().await.expect("send");
    let again = contract.check("post", list, list, response, 200).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["existing"], true);
    let other = json!({"kind": "function", "name": "approval", "input": 9});
    let response = send("schema-1", other).send().await.expect("send");
    let refused = contract.check("post", list, list, response, 409).await;
    assert_eq!(refused["code"], "idempotency_key_reused");
    let id = first["id"].as_str().expect("an id");
    let taken = json!({"kind": "function", "name": "approval", "input": 10, "id": id});
    let refused = contract.call("post", list, list, Some(taken), 409).await;
    assert_eq!(refused["code"], "flow_exists");
}

/// Signal, suspend, resume and cancel, and their problems.
async fn control(contract: &Contract, plan: &str, graph: &str, function: &str) {
    let signals = "/api/v1/flows/{id}/signals";
    let url = format!("/api/v1/flows/{function}/signals");
    let approve = json!({"name": "approve", "value": true});
    contract
        .call("post", signals, &url, Some(approve), 202)
        .await;
    let empty = json!({"name": ""});
    contract.call("post", signals, &url, Some(empty), 400).await;
    contract.wait_for(function, "done").await;
    let url = format!("/api/v1/flows/{plan}/signals");
    let to_a_plan = json!({"name": "approve"});
    contract
        .call("post", signals, &url, Some(to_a_plan), 409)
        .await;
    // A finished graph: suspend is a no-op, resume and cancel are refused.
    for (action, status) in [("suspend", 202), ("resume", 409), ("cancel", 409)] {
        let path = format!("/api/v1/flows/{{id}}/{action}");
        let url = format!("/api/v1/flows/{graph}/{action}");
        contract
            .call("post", &path, &url, Some(json!({})), status)
            .await;
        // A plan: not suspendable, and deactivated (cannot be cancelled).
        let url = format!("/api/v1/flows/{plan}/{action}");
        contract
            .call("post", &path, &url, Some(json!({})), 409)
            .await;
    }
    // A running graph (each task takes 300 ms): suspended at a task boundary, resumed.
    let body = json!({"kind": "task_graph", "name": "greet", "inputs": {}});
    let running = start_flow(contract, body).await;
    contract.wait_for(&running, "running").await;
    let url = format!("/api/v1/flows/{running}/suspend");
    let reason = json!({"reason": "maintenance"});
    let path = "/api/v1/flows/{id}/suspend";
    let suspended = contract.call("post", path, &url, Some(reason), 202).await;
    assert_eq!(suspended["outcome"], "recorded");
    contract.wait_for(&running, "suspended").await;
    let url = format!("/api/v1/flows/{running}/resume");
    let path = "/api/v1/flows/{id}/resume";
    let resumed = contract
        .call("post", path, &url, Some(json!({})), 202)
        .await;
    assert_eq!(resumed["outcome"], "recorded");
    contract.wait_for(&running, "success").await;
    let cancel = "/api/v1/flows/{id}/cancel";
    let waiting = start_flow(
        contract,
        json!({"kind": "function", "name": "approval", "input": 1}),
    )
    .await;
    let url = format!("/api/v1/flows/{waiting}/cancel");
    let reason = json!({"reason": "enough"});
    let first = contract.call("post", cancel, &url, Some(reason), 202).await;
    assert_eq!(first["outcome"], "recorded");
    let extra = json!({"reason": "x", "why": "y"});
    contract.call("post", cancel, &url, Some(extra), 400).await;
}

/// An asynchronous HTTP step's endpoint: accepts the work, hands out the report URLs.
async fn async_endpoint() -> (String, tokio::sync::mpsc::Receiver<String>) {
    let (urls, received) = tokio::sync::mpsc::channel(8);
    let endpoint = axum::Router::new().route(
        "/label",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let urls = urls.clone();
            async move {
                let url = body["report_url"]
                    .as_str()
                    .expect("a report url")
                    .to_owned();
                let _ = urls.send(url).await;
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, endpoint).await });
    (format!("http://{addr}/label"), received)
}

/// HTTP steps: register, list, a plan that runs one and its report, remove; their problems.
async fn steps(contract: &Contract) {
    let steps = "/api/v1/steps";
    let (endpoint, mut report_urls) = async_endpoint().await;
    let step = json!({
        "name": "label", "url": endpoint, "outputs": ["label"], "mode": "async",
        "inputs": [{"name": "parcel"}, {"name": "carrier", "optional": true, "default": "post"}],
        "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 100,
            "jitter": false},
        "timeout_ms": 20000
    });
    let registered = contract.call("post", steps, steps, Some(step), 201).await;
    assert_eq!(registered["version"], 1);
    let bad = json!({"name": "bad", "url": "ftp://x", "outputs": []});
    contract.call("post", steps, steps, Some(bad), 400).await;
    contract.call("get", steps, steps, None, 200).await;
    let plan = json!({"kind": "plan", "goals": ["label"], "inputs": {"parcel": "p-7"}});
    let id = start_flow(contract, plan).await;
    let report_url = tokio::time::timeout(Duration::from_secs(30), report_urls.recv())
        .await
        .expect("the step is called within 30 s")
        .expect("a report url");
    let url = report_url
        .strip_prefix(&contract.base)
        .expect("a report url of this server");
    let work = "/api/v1/work/{token}";
    let report = json!({"outputs": {"label": "L-p-7"}});
    contract
        .call("post", work, url, Some(report.clone()), 202)
        .await;
    contract.wait_for(&id, "deactivated").await;
    contract
        .call("post", work, url, Some(report.clone()), 409)
        .await;
    let url = "/api/v1/work/zz?key=k";
    contract.call("post", work, url, Some(report), 400).await;
    let one = "/api/v1/steps/{name}";
    contract
        .call("delete", one, "/api/v1/steps/label", None, 204)
        .await;
    contract
        .call("delete", one, "/api/v1/steps/label", None, 404)
        .await;
}

/// Both event streams: their first message.
async fn streams(contract: &Contract, plan: &str) {
    let path = "/api/v1/flows/{id}/stream";
    let url = format!("/api/v1/flows/{plan}/stream");
    let first = contract.first_message(path, &url, async {}).await;
    assert_eq!(first["seq"], 1);
    let path = "/api/v1/events/stream";
    let changed = contract
        .first_message(path, path, async {
            let body = json!({"kind": "task_graph", "name": "greet", "inputs": {}});
            start_flow(contract, body).await;
        })
        .await;
    assert_eq!(changed["type"], "changed");
    let nobody = "/api/v1/flows/01970000-0000-7000-8000-000000000001/stream";
    contract
        .call("get", "/api/v1/flows/{id}/stream", nobody, None, 404)
        .await;
}

/// Problems any route may answer: a body too large, not JSON, a method a path has not.
async fn problems(contract: &Contract) {
    let list = "/api/v1/flows";
    let big = "x".repeat(flowstate_server::MAX_REQUEST_BYTES + 10);
    let response = contract
        .client
        .post(format!("{}{list}", contract.base))
        .header("content-type", "application/json")
        .body(format!("\"{big}\""))
        .send()
        .await
        .expect("send");
    contract.check("post", list, list, response, 413).await;
    let response = contract
        .client
        .post(format!("{}{list}", contract.base))
        .body("{}")
        .send()
        .await
        .expect("send");
    contract.check("post", list, list, response, 415).await;
    let response = contract
        .client
        .put(format!("{}{list}", contract.base))
        .send()
        .await
        .expect("send");
    // No PUT operation to look up: the problem is validated as any operation's 405.
    contract.check("get", list, list, response, 405).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let (server, _dir) = start().await;
    let contract = Contract::new(&server).await;
    let (plan, graph, function) = flows(&contract).await;
    control(&contract, &plan, &graph, &function).await;
    steps(&contract).await;
    streams(&contract, &plan).await;
    problems(&contract).await;
    contract.all_operations_checked();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_describes_its_bodies() {
    let (server, _dir) = start().await;
    let contract = Contract::new(&server).await;
    let paths = contract.document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            if let Some(body) = operation.get("requestBody") {
                assert!(
                    !body["content"]["application/json"]["schema"].is_null(),
                    "{method} {path}: a request body without a schema"
                );
            }
            let responses = operation["responses"].as_object().expect("responses");
            for status in ["400", "401", "404", "405", "409", "413", "415", "500"] {
                let problem = contract.resolve(&responses[status]);
                assert!(
                    !problem["content"]["application/problem+json"]["schema"].is_null(),
                    "{method} {path}: {status} is not a problem"
                );
            }
            let success = responses
                .iter()
                .find(|(status, _)| status.starts_with('2'))
                .unwrap_or_else(|| panic!("{method} {path}: no success answer"));
            if !["202", "204"].contains(&success.0.as_str()) {
                let content = &contract.resolve(success.1)["content"];
                assert!(
                    content
                        .as_object()
                        .is_some_and(|media| media.values().all(|m| m["schema"].is_object())),
                    "{method} {path}: the {} answer has no schema",
                    success.0
                );
            }
        }
    }
    server.shutdown().await;
}
