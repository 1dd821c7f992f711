//! Task graphs run by workers: flows submitted to the store are claimed and run to the end,
//! and two processes advancing one flow end with one clean log (the loser's conflict is
//! counted and resolved by re-reading).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::fold::Folder;
use flowstate_core::machine::FlowState;
use flowstate_core::{Clock, EventBody, FlowStatus};
use flowstate_store::{read_all, MemoryStore, Store, SystemClock, WorkerId};
use flowstate_taskgraph::{task_fn, Engine, Flow, Inputs};
use flowstate_worker::{Worker, WorkerConfig};
use serde_json::json;
use tokio::sync::Notify;

fn w1(name: &str, steps: usize) -> Flow {
    let mut flow = Flow::linear(name);
    for i in 0..steps {
        let input = if i == 0 {
            "x".to_owned()
        } else {
            format!("x{}", i - 1)
        };
        flow = flow.add(
            task_fn(format!("step{i}"), |_ctx, inputs: Inputs| async move {
                Ok(json!(
                    inputs.get("x").and_then(|v| v.as_i64()).unwrap_or(0) + 1
                ))
            })
            .rebind("x", input)
            .provides(format!("x{i}")),
        );
    }
    flow
}

fn inputs() -> Inputs {
    [("x".to_owned(), json!(0))].into_iter().collect()
}

async fn wait_for(mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn state(store: &dyn Store, flow: flowstate_core::FlowId) -> FlowStatus {
    store
        .flow(flow)
        .await
        .expect("flow")
        .expect("exists")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_flows_are_run_to_success_by_a_worker() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        flowstate_store_sqlite::SqliteStore::open(
            dir.path().join("w.db"),
            clock.clone(),
            Default::default(),
        )
        .expect("open"),
    );
    let engine = Arc::new(Engine::new(store.clone(), clock.clone()));
    engine.register(w1("w1", 10));
    let mut flows = Vec::new();
    for _ in 0..50 {
        flows.push(engine.submit("w1", inputs()).await.expect("submit"));
    }
    let worker = Arc::new(
        Worker::new(
            store.clone(),
            clock,
            WorkerConfig::new(WorkerId::new("w").expect("id")),
        )
        .expect("config")
        .with_runner(flowstate_core::FlowKind::TaskGraph, engine.clone()),
    );
    let running = worker.clone();
    let handle = tokio::spawn(async move { running.run().await });
    wait_for(async || worker.stats().completed == 50).await;
    for flow in flows {
        assert_eq!(
            state(store.as_ref(), flow).await,
            FlowStatus::TaskGraph(FlowState::Success)
        );
        assert!(!store.flow(flow).await.expect("flow").expect("exists").ready);
    }
    worker.shutdown_handle().shutdown();
    let stats = handle.await.expect("joined").expect("worker");
    assert_eq!((stats.completed, stats.conflicts, stats.parked), (50, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_advancing_one_flow_leave_one_clean_log() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    // The first execution of `slow` (in the worker's process) hangs until released; any
    // later one (in the other process) returns at once.
    let gate = Arc::new(Notify::new());
    let executions = Arc::new(AtomicUsize::new(0));
    let definition = || {
        let (gate, executions) = (gate.clone(), executions.clone());
        Flow::linear("race")
            .add(
                task_fn("slow", move |_ctx, _inputs| {
                    let (gate, executions) = (gate.clone(), executions.clone());
                    async move {
                        if executions.fetch_add(1, Ordering::SeqCst) == 0 {
                            gate.notified().await;
                        }
                        Ok(json!(1))
                    }
                })
                .provides("a"),
            )
            .add(task_fn("after", |_ctx, _inputs| async { Ok(json!(2)) }).requires(["a"]))
    };
    let worker_engine = Arc::new(Engine::new(store.clone(), clock.clone()));
    worker_engine.register(definition());
    let other_process = Engine::new(store.clone(), clock.clone());
    other_process.register(definition());
    let flow = worker_engine
        .submit("race", Inputs::new())
        .await
        .expect("submit");
    let worker = Arc::new(
        Worker::new(
            store.clone(),
            clock,
            WorkerConfig::new(WorkerId::new("w").expect("id")),
        )
        .expect("config")
        .with_runner(flowstate_core::FlowKind::TaskGraph, worker_engine),
    );
    let running = worker.clone();
    tokio::spawn(async move { running.run().await });
    wait_for(async || executions.load(Ordering::SeqCst) == 1).await;

    // Another process runs the same flow meanwhile (as after a stall past the lease): it
    // loads it through RESUMING, runs `slow` again and finishes the flow.
    let outcome = other_process
        .run(flow)
        .await
        .expect("the other process runs it");
    assert_eq!(outcome.state, FlowState::Success);
    // The worker's run wakes up and tries to record `slow`'s result: refused, counted, and
    // resolved by re-reading the log, which says the flow is finished.
    gate.notify_one();
    wait_for(async || worker.stats().completed == 1).await;
    let stats = worker.stats();
    assert_eq!(stats.conflicts, 1, "{stats:?}");

    let events = read_all(store.as_ref(), flow).await.expect("read");
    let mut folder = Folder::new();
    for event in &events {
        folder.apply_raw(event).expect("the log folds cleanly");
    }
    let successes = |atom: &str| {
        events
            .iter()
            .filter(|raw| {
                matches!(
                    flowstate_core::Event::decode(raw).map(|e| e.body),
                    Ok(EventBody::TaskStateChanged { atom: a, to, .. })
                        if a == atom && to == flowstate_core::machine::TaskState::Success
                )
            })
            .count()
    };
    assert_eq!(successes("slow"), 1, "one recorded result for the attempt");
    assert_eq!(successes("after"), 1);
    assert_eq!(
        state(store.as_ref(), flow).await,
        FlowStatus::TaskGraph(FlowState::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dropped_midway_can_run_again_in_the_same_engine() {
    // A worker drops (aborts) a run whose lease it lost; the engine must not go on believing
    // the flow is running.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let executions = Arc::new(AtomicUsize::new(0));
    let counted = executions.clone();
    let engine = Arc::new(Engine::new(store.clone(), clock));
    engine.register(
        Flow::linear("hangs-once").add(task_fn("t", move |_ctx, _inputs| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok(json!(1))
            }
        })),
    );
    let flow = engine
        .create("hangs-once", Inputs::new())
        .await
        .expect("create");
    let running = engine.clone();
    let run = tokio::spawn(async move { running.run(flow).await });
    wait_for(async || executions.load(Ordering::SeqCst) == 1).await;
    run.abort();
    let _ = run.await;
    let outcome = engine.run(flow).await.expect("runs again after the drop");
    assert_eq!(outcome.state, FlowState::Success);
}
