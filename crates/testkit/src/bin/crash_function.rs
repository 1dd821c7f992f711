//! Child program of the durable-function crash test.
//!
//! `flowstate-crash-function DB LOG` opens the SQLite store `DB`, registers the function
//! `long` (60 steps; each appends `start KEY` to LOG, fsynced, works 5 ms, then appends
//! `done KEY`), starts one activation if the store has none, wakes the activations of earlier
//! (killed) processes, and runs a worker until the activation is done; then prints
//! `outcome SUM`. KEY is the idempotency key the context passed.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::{Clock, Failure, FlowKind};
use flowstate_durable::{Ctx, Functions};
use flowstate_store::{FlowQuery, Store, SystemClock, WorkerId};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_worker::{Worker, WorkerConfig};

/// Steps in the function.
pub const STEPS: u64 = 60;

fn note(line: &str) -> Result<(), Failure> {
    let log =
        std::env::var("FLOWSTATE_CRASH_LOG").map_err(|e| Failure::new("Env", e.to_string()))?;
    flowstate_testkit::append_line(log, line).map_err(|e| Failure::new("Io", e.to_string()))
}

async fn long(ctx: Ctx, _input: ()) -> Result<u64, Failure> {
    let mut sum = 0;
    for index in 0..STEPS {
        sum += ctx
            .step(&format!("s{index}"), |key| async move {
                note(&format!("start {key}"))?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                note(&format!("done {key}"))?;
                Ok(index)
            })
            .await?;
    }
    Ok(sum)
}

async fn run(db: &str) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(db, clock.clone(), SqliteOptions::default())
            .map_err(|e| e.to_string())?,
    );
    let functions = Functions::new(
        store.clone(),
        clock.clone(),
        format!("pid-{}", std::process::id()),
    );
    // The test reads the journal of the finished function.
    functions.keep_journals(true);
    functions
        .register("long", long)
        .map_err(|e| e.to_string())?;
    let existing = store
        .list(&FlowQuery {
            kind: Some(FlowKind::Function),
            ..FlowQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let flow = match existing.flows.first() {
        Some(summary) => summary.id,
        None => functions
            .submit("long", ())
            .await
            .map_err(|e| e.to_string())?,
    };
    functions.wake_all().await.map_err(|e| e.to_string())?;
    let config = WorkerConfig::new(
        WorkerId::new(format!("pid-{}", std::process::id())).map_err(|e| e.to_string())?,
    )
    .with_lease(Duration::from_millis(300))
    .with_poll_interval(Duration::from_millis(50));
    let worker = Arc::new(
        Worker::new(store.clone(), clock, config)
            .map_err(|e| e.to_string())?
            .with_runner(FlowKind::Function, Arc::new(functions.clone())),
    );
    let running = worker.clone();
    let loop_task = tokio::spawn(async move { running.run().await });
    let sum = loop {
        if let Some(outcome) = functions
            .outcome::<u64>(flow)
            .await
            .map_err(|e| e.to_string())?
        {
            break outcome.map_err(|e| e.to_string())?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown_handle().shutdown();
    let _ = loop_task.await;
    println!("outcome {sum}");
    store.close().await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let Some(db) = std::env::args().nth(1) else {
        eprintln!("usage: flowstate-crash-function DB (log path in FLOWSTATE_CRASH_LOG)");
        return ExitCode::from(2);
    };
    flowstate_testkit::run_child(run(&db))
}
