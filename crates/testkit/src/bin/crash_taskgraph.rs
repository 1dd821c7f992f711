//! Child program of the task-graph crash test.
//!
//! `flowstate-crash-taskgraph DB LOG start` creates a flow of 30 tasks and runs it;
//! `flowstate-crash-taskgraph DB LOG resume` runs every unfinished flow in the store to the end
//! and prints `outcome STATE`. Each task appends `start KEY` to LOG (fsynced) when its execute
//! begins and `done KEY` before it returns, then sleeps a little, so that a SIGKILL lands
//! mid-flow. KEY is the idempotency key the engine passed.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::machine::FlowState;
use flowstate_core::FlowStatus;
use flowstate_store::{FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_taskgraph::{task_fn, Engine, Flow, Inputs};

/// Tasks in the flow.
pub const TASKS: usize = 30;

fn note(log: &str, line: &str) -> Result<(), String> {
    flowstate_testkit::append_line(log, line).map_err(|e| e.to_string())
}

fn long_flow(log: &str) -> Flow {
    let mut flow = Flow::linear("long");
    for index in 0..TASKS {
        let log = log.to_owned();
        flow = flow.add(task_fn(format!("t{index:02}"), move |ctx, _inputs| {
            let log = log.clone();
            async move {
                let failure = |e: String| flowstate_core::Failure::new("Io", e);
                note(&log, &format!("start {}", ctx.idempotency_key)).map_err(failure)?;
                tokio::time::sleep(Duration::from_millis(15)).await;
                note(&log, &format!("done {}", ctx.idempotency_key)).map_err(failure)?;
                Ok(serde_json::json!(index))
            }
        }));
    }
    flow
}

async fn run(db: &str, log: &str, mode: &str) -> Result<(), String> {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(db, clock.clone(), SqliteOptions::default())
            .map_err(|e| e.to_string())?,
    );
    let engine = Engine::serial(store.clone(), clock);
    engine.register(long_flow(log));
    match mode {
        "start" => {
            let flow = engine
                .create("long", Inputs::new())
                .await
                .map_err(|e| e.to_string())?;
            println!("flow {flow}");
            let outcome = engine.run(flow).await.map_err(|e| e.to_string())?;
            println!("outcome {}", outcome.state);
        }
        "resume" => {
            let flows = store
                .list(&FlowQuery::default())
                .await
                .map_err(|e| e.to_string())?;
            for summary in flows.flows {
                let done = matches!(summary.status, FlowStatus::TaskGraph(FlowState::Success));
                if !done {
                    let outcome = engine.run(summary.id).await.map_err(|e| e.to_string())?;
                    println!("outcome {}", outcome.state);
                }
            }
        }
        other => return Err(format!("unknown mode {other}")),
    }
    store.close().await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(db), Some(log), Some(mode)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: flowstate-crash-taskgraph DB LOG start|resume");
        return ExitCode::from(2);
    };
    flowstate_testkit::run_child(run(db, log, mode))
}
