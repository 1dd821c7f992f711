//! Suspend, resume and cancel over the HTTP API, against a real server (its worker runs the
//! flows) on a temporary SQLite store: each kind answers as its lifecycle allows, refused
//! requests are 4xx problems that change nothing, and accepted ones are honoured by the
//! worker at a step boundary. Plus the server-wide leftovers: RFC 3339 times, security
//! headers, 405 problems.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate::plan::Step;
use flowstate::taskgraph::{task_fn_with_revert, Flow, TaskAtom};
use flowstate_server::{serve, RunningServer, ServerConfig};
use serde_json::{json, Value};
use tokio::sync::watch;

type Log = Arc<Mutex<Vec<String>>>;

async fn start() -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let config = ServerConfig {
        examples: true,
        ..ServerConfig::new(dir.path().join("flows.db").display().to_string())
    };
    (serve(config).await.expect("serve"), dir)
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &RunningServer) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: format!("http://{}", server.addr()),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn start(&self, body: Value) -> String {
        let (status, answer) = self.post("/api/v1/flows", body).await;
        assert_eq!(status, 201, "{answer}");
        answer["id"].as_str().expect("id").to_owned()
    }

    async fn flow(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/flows/{id}")).await
    }

    /// Waits (a deadlock guard, not a timing assertion) for the flow to reach `state`.
    async fn wait_for(&self, id: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let flow = self.flow(id).await;
            if flow["status"]["state"] == state {
                return flow;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not {state} in 30 s: {flow}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The types of the flow's events after `after`.
    async fn event_types(&self, id: &str) -> Vec<(u64, String, Value)> {
        let events = self.get(&format!("/api/v1/flows/{id}/events")).await;
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["seq"].as_u64().expect("seq"),
                    e["type"].as_str().expect("type").to_owned(),
                    e["body"].clone(),
                )
            })
            .collect()
    }

    /// The flow's summary in the list (ready flag included).
    async fn summary(&self, id: &str) -> Value {
        let list = self.get("/api/v1/flows?limit=1000").await;
        list["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .find(|flow| flow["id"] == id)
            .cloned()
            .expect("listed")
    }
}

fn logged(log: &Log, line: &str) -> usize {
    log.lock()
        .expect("lock")
        .iter()
        .filter(|l| l.as_str() == line)
        .count()
}

async fn wait_logged(log: &Log, line: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while logged(log, line) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line:?} never logged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A task that logs `execute NAME`, waits for `gate`, and logs `revert NAME` when reverted.
fn gated(name: &'static str, gate: &watch::Receiver<bool>, log: &Log) -> TaskAtom {
    let (gate, log, reverts) = (gate.clone(), log.clone(), log.clone());
    task_fn_with_revert(
        name,
        move |_ctx, _inputs| {
            log.lock().expect("lock").push(format!("execute {name}"));
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(json!(name))
            }
        },
        move |_ctx, _inputs, _outcome| {
            reverts.lock().expect("lock").push(format!("revert {name}"));
            async { Ok(()) }
        },
    )
}

/// Registers `name` = `a → b → c` where `b` waits for the returned gate.
fn register_gated_graph(
    server: &RunningServer,
    name: &'static str,
    log: &Log,
) -> watch::Sender<bool> {
    let (gate, open) = watch::channel(false);
    let (_, always) = watch::channel(true);
    server.engine().task_graphs().register(
        Flow::linear(name)
            .add(gated("a", &always, log))
            .add(gated("b", &open, log))
            .add(gated("c", &always, log)),
    );
    gate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_graph_is_suspended_at_a_task_boundary_and_finishes_after_resume() {
    let (server, _dir) = start().await;
    let api = Api::new(&server);
    let log: Log = Arc::default();
    let gate = register_gated_graph(&server, "gated", &log);
    let id = api
        .start(json!({"kind": "task_graph", "name": "gated"}))
        .await;
    wait_logged(&log, "execute b").await;
    let path = |action: &str| format!("/api/v1/flows/{id}/{action}");

    // Resuming a running flow is a no-op by the table (RUNNING → RUNNING).
    let (status, answer) = api.post(&path("resume"), json!({})).await;
    assert_eq!((status, answer), (202, json!({"outcome": "ignored"})));

    let (status, answer) = api
        .post(&path("suspend"), json!({"reason": "maintenance"}))
        .await;
    assert_eq!((status, answer), (202, json!({"outcome": "recorded"})));
    assert_eq!(api.flow(&id).await["status"]["state"], "suspending");
    // Resuming a flow that is still suspending: the table has no SUSPENDING → RUNNING.
    let before = api.flow(&id).await["last_seq"].clone();
    let (status, problem) = api.post(&path("resume"), json!({})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "invalid_state");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("SUSPENDING")),
        "{problem}"
    );
    assert_eq!(api.flow(&id).await["last_seq"], before, "nothing recorded");

    // `b` finishes; the worker records it and starts nothing new.
    gate.send_replace(true);
    let suspended = api.wait_for(&id, "suspended").await;
    assert_eq!(logged(&log, "execute c"), 0);
    assert_eq!(suspended["atoms"]["b"]["state"]["state"], "success");
    assert!(suspended["atoms"].get("c").is_none(), "{suspended}");
    let events = api.event_types(&id).await;
    let asked = events
        .iter()
        .find(|(_, kind, body)| kind == "flow_state_changed" && body["to"] == "suspending")
        .map(|(seq, _, _)| *seq)
        .expect("the request is in the log");
    assert!(
        !events.iter().any(|(seq, kind, body)| *seq > asked
            && kind == "task_state_changed"
            && body["to"] == "running"),
        "no atom started after the request: {events:?}"
    );
    // Not offered to workers while suspended.
    assert_eq!(api.summary(&id).await["ready"], false);
    // Suspending it again is a no-op: 202 ignored, nothing appended.
    let last = suspended["last_seq"].clone();
    let (status, answer) = api.post(&path("suspend"), json!({})).await;
    assert_eq!((status, answer), (202, json!({"outcome": "ignored"})));
    assert_eq!(api.flow(&id).await["last_seq"], last);
    assert_eq!(logged(&log, "execute c"), 0, "not run while suspended");

    let (status, answer) = api.post(&path("resume"), json!({})).await;
    assert_eq!((status, answer), (202, json!({"outcome": "recorded"})));
    api.wait_for(&id, "success").await;
    for atom in ["a", "b", "c"] {
        assert_eq!(
            logged(&log, &format!("execute {atom}")),
            1,
            "{atom} ran once"
        );
    }
    // Finished: suspending is a no-op, resuming and cancelling are refused; nothing appended.
    let last = api.flow(&id).await["last_seq"].clone();
    let (status, answer) = api.post(&path("suspend"), json!({})).await;
    assert_eq!((status, answer), (202, json!({"outcome": "ignored"})));
    for action in ["resume", "cancel"] {
        let (status, problem) = api.post(&path(action), json!({})).await;
        assert_eq!(status, 409, "{action}: {problem}");
        assert_eq!(problem["code"], "invalid_state", "{action}: {problem}");
    }
    assert_eq!(api.flow(&id).await["last_seq"], last);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_graph_reverts_what_ran_and_starts_nothing_new() {
    let (server, _dir) = start().await;
    let api = Api::new(&server);
    let log: Log = Arc::default();
    let gate = register_gated_graph(&server, "gated", &log);
    let id = api
        .start(json!({"kind": "task_graph", "name": "gated"}))
        .await;
    wait_logged(&log, "execute b").await;
    let (status, answer) = api
        .post(
            &format!("/api/v1/flows/{id}/cancel"),
            json!({"reason": "wrong input"}),
        )
        .await;
    assert_eq!((status, answer), (202, json!({"outcome": "recorded"})));
    assert_eq!(api.flow(&id).await["cancel_requested"], "wrong input");
    gate.send_replace(true);
    api.wait_for(&id, "reverted").await;
    assert_eq!(logged(&log, "execute c"), 0);
    let reverts: Vec<String> = log
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.starts_with("revert"))
        .cloned()
        .collect();
    assert_eq!(reverts, ["revert b", "revert a"]);
    // Cancelling it again: REVERTED → REVERTED is a no-op.
    let (status, answer) = api
        .post(&format!("/api/v1/flows/{id}/cancel"), json!({}))
        .await;
    assert_eq!((status, answer), (202, json!({"outcome": "ignored"})));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_and_functions_cannot_be_suspended_or_resumed() {
    let (server, _dir) = start().await;
    let api = Api::new(&server);
    let plan = api
        .start(json!({"kind": "plan", "goals": ["confirmation_id"], "inputs": {"customer_id": 1}}))
        .await;
    let function = api
        .start(json!({"kind": "function", "name": "approval", "input": 3}))
        .await;
    api.wait_for(&function, "sleeping").await;
    for (id, lifecycle) in [(&plan, "goal-driven"), (&function, "activation")] {
        let before = api.flow(id).await["last_seq"].clone();
        for action in ["suspend", "resume"] {
            let (status, problem) = api
                .post(&format!("/api/v1/flows/{id}/{action}"), json!({}))
                .await;
            assert_eq!(status, 409, "{problem}");
            assert_eq!(problem["code"], "not_suspendable");
            let detail = problem["detail"].as_str().expect("detail");
            assert!(detail.contains(lifecycle), "{detail}");
            assert!(detail.contains("cancel"), "{detail}");
        }
        if id == &function {
            assert_eq!(api.flow(id).await["last_seq"], before);
        }
    }
    // Unknown flows are 404, malformed bodies 400.
    let unknown = "01a214b4-2e9c-7b72-978c-140b5819b08a";
    let (status, problem) = api
        .post(&format!("/api/v1/flows/{unknown}/suspend"), json!({}))
        .await;
    assert_eq!((status, problem["code"].clone()), (404, json!("not_found")));
    let (status, problem) = api
        .post(&format!("/api/v1/flows/{plan}/suspend"), json!({"why": 1}))
        .await;
    assert_eq!(
        (status, problem["code"].clone()),
        (400, json!("invalid_request"))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_plan_fails_compensates_and_deactivates_and_a_finished_one_refuses() {
    let (server, _dir) = start().await;
    let api = Api::new(&server);
    let log: Log = Arc::default();
    let (gate, open) = watch::channel(false);
    let (reserved, unreserved, charged) = (log.clone(), log.clone(), log.clone());
    let plans = server.engine().plans();
    plans
        .register(
            Step::new("reserve")
                .input("order")
                .output("reservation")
                .body(move |_ctx| {
                    reserved.lock().expect("lock").push("reserve".into());
                    async { Ok(json!({"reservation": "r-1"})) }
                })
                .compensate(move |_ctx, _outputs| {
                    unreserved.lock().expect("lock").push("unreserve".into());
                    async { Ok(json!({})) }
                }),
        )
        .expect("register");
    plans
        .register(
            Step::new("charge")
                .input("reservation")
                .output("payment")
                .body(move |_ctx| {
                    charged.lock().expect("lock").push("charge".into());
                    let mut open = open.clone();
                    async move {
                        let _ = open.wait_for(|open| *open).await;
                        Ok(json!({"payment": "p-1"}))
                    }
                }),
        )
        .expect("register");
    let id = api
        .start(json!({"kind": "plan", "goals": ["payment"], "inputs": {"order": 1}}))
        .await;
    wait_logged(&log, "charge").await;
    let (status, answer) = api
        .post(
            &format!("/api/v1/flows/{id}/cancel"),
            json!({"reason": "customer called"}),
        )
        .await;
    assert_eq!((status, answer), (202, json!({"outcome": "recorded"})));
    let failed = api.flow(&id).await;
    assert_eq!(failed["status"]["state"], "failed");
    assert_eq!(
        failed["plan"]["failure"]["message"],
        "cancelled: customer called"
    );
    gate.send_replace(true);
    let done = api.wait_for(&id, "deactivated").await;
    assert_eq!(logged(&log, "unreserve"), 1, "compensated");
    let events = api.event_types(&id).await;
    assert!(events
        .iter()
        .any(|(_, kind, body)| kind == "compensation_succeeded" && body["step"] == "reserve"));
    // Terminal now: cancelling is refused and appends nothing.
    let (status, problem) = api
        .post(&format!("/api/v1/flows/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "invalid_state");
    assert_eq!(api.flow(&id).await["last_seq"], done["last_seq"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_rfc3339_and_answers_carry_security_headers_and_405_is_a_problem() {
    let (server, _dir) = start().await;
    let api = Api::new(&server);
    let id = api
        .start(json!({"kind": "plan", "goals": ["confirmation_id"], "inputs": {"customer_id": 2}}))
        .await;
    let done = api.wait_for(&id, "deactivated").await;
    let is_time = |value: &Value| {
        value
            .as_str()
            .is_some_and(|text| text.ends_with('Z') && text.contains('T'))
    };
    assert!(is_time(&done["created_at"]), "{done}");
    assert!(is_time(&done["updated_at"]), "{done}");
    assert!(
        is_time(&done["plan"]["attributes"]["amount"]["time"]),
        "{done}"
    );
    let summary = api.summary(&id).await;
    assert!(is_time(&summary["created_at"]), "{summary}");
    for path in ["/", "/app.js", "/api/v1/flows"] {
        let response = reqwest::get(format!("{}{path}", api.base))
            .await
            .expect("get");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let policy = headers["content-security-policy"].to_str().expect("csp");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v1/flows".to_owned()),
        (reqwest::Method::GET, format!("/api/v1/flows/{id}/suspend")),
    ] {
        let response = api
            .client
            .request(method.clone(), format!("{}{path}", api.base))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("json");
        assert_eq!(problem["code"], "method_not_allowed");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_flows_stream_follows_new_flows_past_the_watched_window() {
    let (server, _dir) = start().await;
    let api = Api::new(&server);
    // More old flows than the stream watches (created, never run: they stay as they are).
    let plans = server.engine().plans();
    let old = flowstate_server::MAX_WATCHED_FLOWS + 200;
    for chunk in 0..old.div_ceil(100) {
        let creations = (0..100.min(old - chunk * 100)).map(|i| {
            plans.create(
                flowstate::plan::PlanRequest::new(["echo"])
                    .input("text", json!(format!("old {chunk}/{i}"))),
            )
        });
        for created in futures_util::future::join_all(creations).await {
            created.expect("create");
        }
    }
    let mut stream = api
        .client
        .get(format!("{}/api/v1/events/stream", api.base))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    // The stream reads its window once before it reports changes, so a flow started before
    // that first read may go unreported: start new flows until one is reported (each poll
    // interval a new one; the deadline only guards against a hang).
    let mut text = String::new();
    let mut started = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !started.iter().any(|id: &String| text.contains(id.as_str())) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new flow reported: {text}"
        );
        started.push(
            api.start(json!({"kind": "plan", "goals": ["echo"], "inputs": {"text": "new"}}))
                .await,
        );
        let poll = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(poll);
        loop {
            tokio::select! {
                chunk = stream.chunk() => {
                    let chunk = chunk.expect("chunk").expect("not ended");
                    text.push_str(&String::from_utf8_lossy(&chunk));
                }
                () = &mut poll => break,
            }
        }
    }
    assert!(text.contains("\"type\":\"changed\""), "{text}");

    // A flow created now whose id sorts an hour back (as a child flow's id carries its
    // parent's creation time): below the window, found by its creation time.
    use flowstate::core::Clock as _;
    let now = flowstate::store::SystemClock.now();
    let stray = flowstate::core::FlowId::from_parts(
        flowstate::core::Timestamp::from_micros(now.as_micros() - 3_600_000_000),
        [7; 10],
    );
    let created = flowstate::core::EventBody::FlowCreated {
        kind: flowstate::core::FlowKind::Plan,
        definition: "stray".to_owned(),
        input: json!({}),
    };
    server
        .engine()
        .store()
        .append(flowstate::store::AppendBatch {
            flow: stray,
            expected_next_seq: 1,
            events: vec![flowstate::store::NewEvent {
                time: now,
                format: flowstate::core::EVENT_FORMAT_VERSION,
                body: created.encode().expect("encode"),
            }],
            create: Some(flowstate::store::NewFlow {
                kind: flowstate::core::FlowKind::Plan,
                definition: "stray".to_owned(),
                idempotency: None,
            }),
            status: None,
            ready: None,
            timers: Vec::new(),
        })
        .await
        .expect("append");
    let stray = stray.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !text.contains(&stray) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "the stray flow was not reported: {text}");
        if let Ok(chunk) = tokio::time::timeout(left, stream.chunk()).await {
            let chunk = chunk.expect("chunk").expect("not ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    drop(stream);
    server.shutdown().await;
}
