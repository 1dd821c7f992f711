//! Idempotent starts of task graphs: `create_with`, `submit_with` and `execute_with` with a
//! key or a chosen id record one flow, answer a replay with it (running nothing again), and
//! refuse the key with another request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowstate_core::machine::FlowState;
use flowstate_engine::{Created, StartOptions};
use flowstate_store::{FlowQuery, MemoryStore, Store, SystemClock};
use flowstate_taskgraph::{task_fn, Engine, Error, Flow, Inputs};
use serde_json::json;

/// An engine with `count`, a graph whose one task counts its runs.
fn engine() -> (Engine, Arc<dyn Store>, Arc<AtomicUsize>) {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let engine = Engine::new(store.clone(), clock);
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    engine.register(
        Flow::linear("count").add(
            task_fn("count", move |_ctx, inputs: Inputs| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(json!(inputs.get("x").cloned().unwrap_or_default()))
                }
            })
            .provides("counted"),
        ),
    );
    (engine, store, runs)
}

fn inputs(x: i64) -> Inputs {
    [("x".to_owned(), json!(x))].into_iter().collect()
}

async fn flows(store: &dyn Store) -> usize {
    store
        .list(&FlowQuery::default())
        .await
        .expect("list")
        .flows
        .len()
}

#[tokio::test]
async fn execute_with_a_key_runs_once_and_replays_the_outcome() {
    let (engine, store, runs) = engine();
    let key = StartOptions::new().with_idempotency_key("run-1");
    let (created, first) = engine
        .execute_with("count", inputs(1), &key)
        .await
        .expect("execute");
    assert!(matches!(created, Created::New(_)));
    assert_eq!(first.state, FlowState::Success);
    let (again, replayed) = engine
        .execute_with("count", inputs(1), &key)
        .await
        .expect("replay");
    assert_eq!(again, Created::Existing(first.flow));
    assert_eq!(
        (replayed.flow, replayed.state, &replayed.results),
        (first.flow, FlowState::Success, &first.results)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the task ran once");
    let error = engine
        .execute_with("count", inputs(2), &key)
        .await
        .expect_err("another request");
    assert!(
        matches!(&error, Error::KeyReused { key, flow } if key == "run-1" && *flow == first.flow),
        "{error:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(flows(store.as_ref()).await, 1);
}

#[tokio::test]
async fn create_and_submit_with_a_key_or_an_id_record_one_flow() {
    let (engine, store, _runs) = engine();
    let key = StartOptions::new().with_idempotency_key("order-9");
    let first = engine
        .submit_with("count", inputs(1), &key)
        .await
        .expect("submit");
    let again = engine
        .create_with("count", inputs(1), &key)
        .await
        .expect("replay");
    // `create` and `submit` make the same flow; only the ready flag differs, and the
    // replay changes nothing.
    assert_eq!(again, Created::Existing(first.id()));
    let summary = store.flow(first.id()).await.expect("flow").expect("exists");
    assert!(summary.ready);

    let id = flowstate_engine::create::mint_flow_id(&SystemClock);
    let chosen = StartOptions::new().with_id(id);
    let made = engine.create_with("count", inputs(3), &chosen).await;
    assert_eq!(made.expect("create"), Created::New(id));
    let made = engine.create_with("count", inputs(3), &chosen).await;
    assert_eq!(made.expect("replay"), Created::Existing(id));
    let error = engine
        .create_with("count", inputs(4), &chosen)
        .await
        .expect_err("another request");
    assert!(
        matches!(error, Error::FlowExists { flow } if flow == id),
        "{error:?}"
    );
    assert_eq!(flows(store.as_ref()).await, 2);
}
