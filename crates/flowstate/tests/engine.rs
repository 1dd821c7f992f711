//! The engine builder: one program, the store chosen by URL; flows submitted to it are run
//! by its worker.

use std::time::Duration;

use flowstate::core::machine::FlowState;
use flowstate::taskgraph::{task_fn, Flow, Inputs};
use flowstate::FlowStatus;
use serde_json::json;

fn greeting() -> Flow {
    Flow::linear("greet")
        .add(task_fn("hello", |_ctx, _inputs| async { Ok(json!("hello")) }).provides("word"))
        .add(
            task_fn("shout", |_ctx, inputs: Inputs| async move {
                Ok(json!(inputs
                    .get("word")
                    .and_then(|w| w.as_str())
                    .unwrap_or_default()
                    .to_uppercase()))
            })
            .requires(["word"]),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_built_from_a_sqlite_url_runs_submitted_flows() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("flows.db").display());
    let engine = flowstate::Engine::builder(url)
        .task_graph(greeting())
        .build()
        .await
        .expect("build");
    let flow = engine
        .task_graphs()
        .submit("greet", Inputs::new())
        .await
        .expect("submit");
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.stats().completed < 1 {
        assert!(tokio::time::Instant::now() < deadline, "not run in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summary = engine
        .store()
        .flow(flow)
        .await
        .expect("flow")
        .expect("exists");
    assert_eq!(summary.status, FlowStatus::TaskGraph(FlowState::Success));
    engine.shutdown_handle().shutdown();
    let stats = worker.await.expect("joined").expect("worker");
    assert_eq!(stats.completed, 1);
    engine.store().close().await.expect("close");
}

#[tokio::test]
async fn an_unknown_store_scheme_is_refused_with_the_accepted_forms() {
    let refused = flowstate::Engine::builder("redis://localhost")
        .build()
        .await
        .expect_err("unknown scheme");
    assert!(refused.to_string().contains("postgres://"), "{refused}");
}
