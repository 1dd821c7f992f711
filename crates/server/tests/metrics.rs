//! `GET /metrics` on a real server: authenticated like the API, in the Prometheus text
//! format, and its counters move when flows run (compared before and after, since the
//! recorder is the process's).

use std::time::Duration;

use flowstate_server::{serve, RunningServer, ServerConfig};
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn start() -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let config = ServerConfig {
        tokens: vec![TOKEN.to_owned()],
        examples: true,
        ..ServerConfig::new(dir.path().join("flows.db").display().to_string())
    };
    (serve(config).await.expect("serve"), dir)
}

/// The value of the sample `name{labels}` (labels in the exporter's order), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    let answer = client
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(answer.status(), 200);
    let kind = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    answer.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_when_flows_run() {
    let (server, _dir) = start().await;
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::new();

    let refused = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(refused.status(), 401, "the metrics need the token");
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("get");
    assert_eq!(ready.status(), 200);

    let before = scrape(&client, &base).await;
    let started = client
        .post(format!("{base}/api/v1/flows"))
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "task_graph", "name": "greet", "inputs": {"name": "ada"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(started.status(), 201);
    let id = started.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flow: Value = client
            .get(format!("{base}/api/v1/flows/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if flow["status"]["state"] == "success" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{flow}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = scrape(&client, &base).await;

    let moved = |series: &str, by: f64| {
        let delta = sample(&after, series) - sample(&before, series);
        assert!(delta >= by, "{series} moved by {delta}, not {by}:\n{after}");
    };
    moved(r#"flowstate_flows_started_total{kind="task_graph"}"#, 1.0);
    moved(
        r#"flowstate_flows_finished_total{kind="task_graph",outcome="succeeded"}"#,
        1.0,
    );
    moved(
        r#"flowstate_steps_total{kind="task_graph",outcome="succeeded"}"#,
        2.0,
    );
    moved(
        r#"flowstate_step_duration_seconds_count{kind="task_graph"}"#,
        2.0,
    );
    moved(
        r#"flowstate_flow_duration_seconds_count{kind="task_graph"}"#,
        1.0,
    );
    moved(
        r#"flowstate_store_commit_seconds_count{store="sqlite"}"#,
        1.0,
    );
    moved(
        r#"flowstate_store_commit_batch_size_count{store="sqlite"}"#,
        1.0,
    );
    moved("flowstate_flows_claimed_total", 1.0);
    moved(
        r#"flowstate_http_requests_total{route="/api/v1/flows",method="POST",status="201"}"#,
        1.0,
    );
    moved(
        r#"flowstate_http_requests_total{route="/api/v1/flows/{id}",method="GET",status="200"}"#,
        1.0,
    );
    assert!(
        !after.contains(&id),
        "no metric is labelled with a flow id or a raw path"
    );
    server.shutdown().await;
}
