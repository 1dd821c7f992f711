//! Archived flows over the API: a plan run by the server, moved to the archive by a real
//! archive pass, is gone from the live listing, listed again with `archived=true` (merged by
//! id with the live flows, filters applied), and its state (also as of an earlier event) and
//! events are read from the archive. A server without an archive says so.

use std::sync::Arc;
use std::time::Duration;

use flowstate::archive::{ArchiveAccess, ArchivePolicy, ArchiveStore, Archiver};
use flowstate::store::SystemClock;
use flowstate_server::{serve, RunningServer, ServerConfig};
use serde_json::{json, Value};

fn config(dir: &std::path::Path, archive: Option<String>) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        store: dir.join("flows.db").display().to_string(),
        archive,
        archive_deactivated: false,
        archiving: flowstate_server::Archiving::default(),
        tokens: Vec::new(),
        examples: true,
        steps_file: None,
        idempotency_window: flowstate::DEFAULT_IDEMPOTENCY_WINDOW,
    }
}

async fn get(server: &RunningServer, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path}", server.addr()))
        .await
        .expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn start(server: &RunningServer, body: Value) -> String {
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/flows", server.addr()))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 201);
    let answer: Value = response.json().await.expect("json");
    answer["id"].as_str().expect("id").to_owned()
}

/// Waits (a deadlock guard, not a timing assertion) until the flow is deactivated.
async fn wait_deactivated(server: &RunningServer, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, flow) = get(server, &format!("/api/v1/flows/{id}")).await;
        if flow["status"]["state"] == "deactivated" {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{flow}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(listing: &Value) -> Vec<String> {
    listing["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|flow| flow["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_flows_are_listed_on_request_and_read_from_the_archive() {
    let dir = tempfile::tempdir().expect("dir");
    let archive_dir = dir.path().join("archive");
    let archive_url = archive_dir.display().to_string();

    // A plan that deactivates, and a function waiting for a signal that stays live (every
    // finished flow is archived, whatever its kind).
    let server = serve(config(dir.path(), Some(archive_url.clone())))
        .await
        .expect("serve");
    let plan = start(
        &server,
        json!({"kind": "plan", "goals": ["echo"], "inputs": {"text": "kept"}}),
    )
    .await;
    wait_deactivated(&server, &plan).await;
    let graph = start(
        &server,
        json!({"kind": "function", "name": "approval", "input": 5}),
    )
    .await;
    // Nothing archived yet: the archive's directory does not even exist.
    let (status, listing) = get(&server, "/api/v1/flows?archived=true").await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(ids(&listing).len(), 2);
    let (_, before) = get(&server, &format!("/api/v1/flows/{plan}")).await;
    server.shutdown().await;

    // A real archive pass (every deactivated plan, whatever its age).
    let clock = Arc::new(SystemClock);
    let store = flowstate::open_store(
        &dir.path().join("flows.db").display().to_string(),
        clock.clone(),
        flowstate::Access::MustExist,
    )
    .await
    .expect("store");
    let archive =
        ArchiveStore::open(&archive_url, ArchiveAccess::CreateIfMissing).expect("archive");
    let policy = ArchivePolicy {
        max_age: Duration::ZERO,
        ..ArchivePolicy::default()
    };
    let report = Archiver::new(store.clone(), archive, policy, clock)
        .expect("archiver")
        .run_once()
        .await
        .expect("pass");
    assert_eq!(report.archived, 1, "{report:?}");
    store.close().await.expect("close");

    let server = serve(config(dir.path(), Some(archive_url)))
        .await
        .expect("serve again");
    let (_, live) = get(&server, "/api/v1/flows").await;
    assert_eq!(
        ids(&live),
        std::slice::from_ref(&graph),
        "archived flows are not live"
    );
    let (_, all) = get(&server, "/api/v1/flows?archived=true").await;
    let mut expected = vec![plan.clone(), graph.clone()];
    expected.sort();
    assert_eq!(ids(&all), expected, "merged by id");
    let archived = all["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .find(|flow| flow["id"] == plan.as_str())
        .expect("listed");
    assert_eq!(archived["archived"], true);
    assert_eq!(archived["kind"], "plan");
    assert_eq!(archived["status"], "archived");
    // Filters apply to archived flows too; one page of one, then the next.
    let (_, plans) = get(&server, "/api/v1/flows?archived=true&kind=plan").await;
    assert_eq!(ids(&plans), std::slice::from_ref(&plan));
    let (_, running) = get(&server, "/api/v1/flows?archived=true&status=running").await;
    assert!(!ids(&running).contains(&plan));
    let (_, first) = get(&server, "/api/v1/flows?archived=true&limit=1").await;
    assert_eq!(ids(&first), expected[..1]);
    let after = first["next_after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = get(
        &server,
        &format!("/api/v1/flows?archived=true&limit=1&after={after}"),
    )
    .await;
    assert_eq!(ids(&second), expected[1..]);
    assert!(second["next_after"].is_null(), "{second}");

    // Its state and events, from the archive.
    let (status, state) = get(&server, &format!("/api/v1/flows/{plan}")).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["archived"], true);
    assert_eq!(state["status"]["state"], "archived");
    assert_eq!(
        state["plan"]["attributes"]["echo"],
        before["plan"]["attributes"]["echo"]
    );
    let (_, early) = get(&server, &format!("/api/v1/flows/{plan}?at=2")).await;
    assert_eq!(early["status"]["state"], "active");
    let (_, events) = get(&server, &format!("/api/v1/flows/{plan}/events?after=1")).await;
    let events = events["events"].as_array().expect("events");
    assert_eq!(events[0]["seq"], 2);
    assert_eq!(events[0]["type"], "plan_started");
    assert_eq!(events.last().expect("last")["type"], "plan_state_changed");

    // A damaged archive file is listed with its error; it does not hide the rest.
    let damaged = "01a215ca-0000-7000-8000-000000000001";
    std::fs::write(
        archive_dir.join("flows").join(format!("{damaged}.json")),
        b"not an archive",
    )
    .expect("write");
    let (status, all) = get(&server, "/api/v1/flows?archived=true").await;
    assert_eq!(status, 200, "{all}");
    let listed = ids(&all);
    assert_eq!(listed.len(), 3, "{all}");
    assert!(listed.contains(&plan) && listed.contains(&graph));
    let broken = all["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .find(|flow| flow["id"] == damaged)
        .expect("listed");
    assert!(broken["error"].is_string(), "{broken}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_without_an_archive_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let server = serve(config(dir.path(), None)).await.expect("serve");
    let (status, problem) = get(&server, "/api/v1/flows?archived=true").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "no_archive");
    server.shutdown().await;
}
