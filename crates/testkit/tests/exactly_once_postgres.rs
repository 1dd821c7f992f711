//! Exactly-once starts on PostgreSQL across processes: three engines, each on a store of its
//! own (as three processes would be), take 1,000 starts whose first try is cut off (the
//! answer is lost; the creation may or may not have been committed) and retried one to three
//! times on the other engines, some at once. Exactly 1,000 flows exist, one per key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::{Clock, FlowId};
use flowstate_engine::{Created, StartOptions};
use flowstate_store::{FlowQuery, Store, SystemClock};
use flowstate_store_postgres::testing::{test_database, TestSchema};
use flowstate_store_postgres::PostgresStore;
use flowstate_taskgraph::{task_fn, Engine, Flow, Inputs};
use serde_json::json;
use tokio::task::JoinSet;

const STARTS: usize = 1_000;

/// Starts in flight at once.
const PARALLEL: usize = 48;

fn graph() -> Flow {
    Flow::linear("order").add(
        task_fn(
            "noop",
            |_ctx, _inputs: Inputs| async move { Ok(json!(null)) },
        )
        .provides("done"),
    )
}

fn inputs(n: usize) -> Inputs {
    [("n".to_owned(), json!(n))].into_iter().collect()
}

async fn submit(engine: &Engine, n: usize) -> Created {
    let options = StartOptions::new().with_idempotency_key(format!("order-{n}"));
    engine
        .submit_with("order", inputs(n), &options)
        .await
        .expect("a start whose answer arrives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_retried_starts_across_processes_make_a_thousand_flows() {
    let Some(url) = test_database().await else {
        return;
    };
    let schema = TestSchema::new(&url, "flowstate_exactly_once");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut engines = Vec::new();
    for _ in 0..3 {
        let store: Arc<dyn Store> = Arc::new(
            PostgresStore::connect(&url, Some(&schema.name), clock.clone())
                .await
                .expect("connect"),
        );
        let engine = Engine::new(store, clock.clone());
        engine.register(graph());
        engines.push(Arc::new(engine));
    }
    let engines = Arc::new(engines);
    let mut answers: BTreeMap<usize, Vec<Created>> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    for n in 0..STARTS {
        if tasks.len() >= PARALLEL {
            let (n, got) = tasks.join_next().await.expect("a task").expect("join");
            answers.insert(n, got);
        }
        let engines = engines.clone();
        tasks.spawn(async move {
            let (first, second, third) = (
                &engines[n % 3],
                &engines[(n + 1) % 3],
                &engines[(n + 2) % 3],
            );
            // The first try's answer is lost: cut off after 0 to 4 ms.
            let cut = Duration::from_millis((n % 5) as u64);
            let _lost = tokio::time::timeout(cut, submit(first, n)).await;
            let mut got = Vec::new();
            if n.is_multiple_of(3) {
                let (a, b) = tokio::join!(submit(second, n), submit(third, n));
                got.extend([a, b]);
            }
            for _ in 0..=(n % 2) {
                got.push(submit(second, n).await);
            }
            (n, got)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (n, got) = joined.expect("join");
        answers.insert(n, got);
    }
    let mut ids = BTreeSet::new();
    for (n, got) in &answers {
        let id = got[0].id();
        assert!(
            got.iter().all(|created| created.id() == id),
            "start {n}: one key, several flows: {got:?}"
        );
        let new = got.iter().filter(|created| !created.is_existing()).count();
        assert!(new <= 1, "start {n}: {new} answers said created");
        ids.insert(id);
    }
    assert_eq!(ids.len(), STARTS, "each key its own flow");
    let store = PostgresStore::connect(&url, Some(&schema.name), clock.clone())
        .await
        .expect("connect");
    let mut stored: BTreeSet<FlowId> = BTreeSet::new();
    let mut query = FlowQuery {
        limit: 1_000,
        ..FlowQuery::default()
    };
    loop {
        let page = store.list(&query).await.expect("list");
        stored.extend(page.flows.iter().map(|flow| flow.id));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    assert_eq!(stored, ids, "exactly one flow per start");
    store.close().await.expect("close");
}
