//! Exactly-once starts over HTTP: a client whose answers are lost retries 1,000 starts (each
//! with its own `Idempotency-Key`, some retries concurrent) and exactly 1,000 flows exist,
//! one per key; keys survive a restart of the server on its SQLite store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flowstate::store::FlowQuery;
use flowstate::{FlowId, FlowKind};
use flowstate_server::{serve, RunningServer, ServerConfig};
use serde_json::{json, Value};
use tokio::task::JoinSet;

const STARTS: usize = 1_000;

/// Starts sent at once.
const PARALLEL: usize = 32;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        store: dir.join("flows.db").display().to_string(),
        archive: None,
        archive_deactivated: false,
        tokens: Vec::new(),
        examples: true,
        steps_file: None,
        idempotency_window: flowstate::DEFAULT_IDEMPOTENCY_WINDOW,
        archiving: flowstate_server::Archiving::default(),
    }
}

fn url(server: &RunningServer) -> String {
    format!("http://{}/api/v1/flows", server.addr())
}

fn body(n: usize) -> Value {
    json!({"kind": "function", "name": "approval", "input": n})
}

/// One start whose answer arrives: 201 (new) or 200 (`existing: true`), and the flow's id.
/// Without `key`, the body's `id` is the key.
async fn start(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, FlowId) {
    for _ in 0..50 {
        let mut request = client.post(url).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let sent = request.send().await;
        let Ok(response) = sent else {
            // A connection refused under load: a client retries that too.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("a JSON answer");
        assert!(status == 201 || status == 200, "{key:?}: {status} {answer}");
        assert_eq!(
            answer["existing"] == true,
            status == 200,
            "{key:?}: {answer}"
        );
        let id = answer["id"]
            .as_str()
            .expect("an id")
            .parse()
            .expect("a flow id");
        return (status, id);
    }
    panic!("{key:?}: no answer after 50 tries");
}

/// The first try of start `n`, whose answer is lost: the request is cut off after a few
/// milliseconds (it may or may not have reached the store), or sent whole and its answer
/// dropped unread.
async fn lost_start(client: &reqwest::Client, url: &str, n: usize) {
    let request = client
        .post(url)
        .header("Idempotency-Key", format!("start-{n}"))
        .json(&body(n));
    if n.is_multiple_of(2) {
        let cut = Duration::from_millis(1 + (n % 7) as u64);
        let _lost = tokio::time::timeout(cut, request.send()).await;
    } else {
        let _lost = request.send().await;
    }
}

/// Every flow in the store, by id.
async fn all_flows(server: &RunningServer) -> BTreeMap<FlowId, FlowKind> {
    let store = server.engine().store();
    let mut flows = BTreeMap::new();
    let mut query = FlowQuery {
        limit: 1_000,
        ..FlowQuery::default()
    };
    loop {
        let page = store.list(&query).await.expect("list");
        flows.extend(page.flows.iter().map(|f| (f.id, f.kind)));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return flows,
        }
    }
}

/// The input a flow was started with (its `flow_created`).
async fn input_of(server: &RunningServer, flow: FlowId) -> Value {
    let events = server
        .engine()
        .store()
        .read(flow, 1, 1)
        .await
        .expect("read");
    let body: Value = serde_json::from_slice(&events[0].body).expect("json");
    body["input"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_retried_starts_make_a_thousand_flows() {
    let dir = tempfile::tempdir().expect("dir");
    let server = serve(config(dir.path())).await.expect("serve");
    let client = reqwest::Client::new();
    let url = Arc::new(url(&server));
    let mut answers: BTreeMap<usize, Vec<(u16, FlowId)>> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    for n in 0..STARTS {
        if tasks.len() >= PARALLEL {
            let (n, got) = tasks.join_next().await.expect("a task").expect("join");
            answers.insert(n, got);
        }
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            lost_start(&client, &url, n).await;
            let key = format!("start-{n}");
            let body = body(n);
            // One to three retries; every third start retries twice at once.
            let mut got = Vec::new();
            if n.is_multiple_of(3) {
                let (a, b) = tokio::join!(
                    start(&client, &url, Some(&key), &body),
                    start(&client, &url, Some(&key), &body)
                );
                got.extend([a, b]);
            }
            for _ in 0..=(n % 2) {
                got.push(start(&client, &url, Some(&key), &body).await);
            }
            (n, got)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (n, got) = joined.expect("join");
        answers.insert(n, got);
    }
    assert_eq!(answers.len(), STARTS);
    let mut ids = BTreeSet::new();
    for (n, got) in &answers {
        let first = got[0].1;
        assert!(
            got.iter().all(|(_, id)| *id == first),
            "start {n}: one key, several flows: {got:?}"
        );
        let created = got.iter().filter(|(status, _)| *status == 201).count();
        assert!(created <= 1, "start {n}: {created} answers said created");
        ids.insert(first);
    }
    assert_eq!(ids.len(), STARTS, "each key its own flow");
    let flows = all_flows(&server).await;
    assert_eq!(flows.len(), STARTS, "exactly one flow per start");
    assert!(flows.values().all(|kind| *kind == FlowKind::Function));
    assert_eq!(flows.keys().copied().collect::<BTreeSet<_>>(), ids);
    for (n, got) in answers.iter().step_by(37) {
        assert_eq!(input_of(&server, got[0].1).await, json!(n), "start {n}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_chosen_ids_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let server = serve(config(dir.path())).await.expect("serve");
    let client = reqwest::Client::new();
    let chosen: FlowId = "01970000-0000-7000-8000-0000000000aa".parse().expect("id");
    let with_id = json!({"kind": "function", "name": "approval", "input": 2, "id": chosen});
    let (status, keyed) = start(&client, &url(&server), Some("restart-1"), &body(1)).await;
    assert_eq!(status, 201);
    let (status, id) = start(&client, &url(&server), None, &with_id).await;
    assert_eq!((status, id), (201, chosen));
    server.shutdown().await;

    let server = serve(config(dir.path())).await.expect("serve again");
    let (status, again) = start(&client, &url(&server), Some("restart-1"), &body(1)).await;
    assert_eq!((status, again), (200, keyed));
    let (status, again) = start(&client, &url(&server), None, &with_id).await;
    assert_eq!((status, again), (200, chosen));
    let refused = client
        .post(url(&server))
        .header("Idempotency-Key", "restart-1")
        .json(&body(3))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status().as_u16(), 409);
    let problem: Value = refused.json().await.expect("json");
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(all_flows(&server).await.len(), 2);
    server.shutdown().await;
}
