//! Child program of the multi-process tests: one engine process on a shared PostgreSQL
//! database. It registers the task graphs of [`flowstate_testkit::mix`] and the durable
//! functions of [`flowstate_testkit::functions`], runs a worker until
//! SIGTERM (then shuts down gracefully and prints `stats JSON`), and prints `ready` once it
//! works. Tests SIGKILL it to play a machine that dies.
//!
//! `flowstate-engine-process URL SCHEMA` (lease and poll from `FLOWSTATE_LEASE_MS` and
//! `FLOWSTATE_POLL_MS`; tasks and steps note their executions in `FLOWSTATE_EXEC_LOG` if
//! set).

use std::process::ExitCode;
use std::time::Duration;

use flowstate::worker::WorkerConfig;
use flowstate_testkit::mix::Executions;

fn millis(variable: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(variable)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

async fn run(url: &str, schema: &str) -> Result<(), String> {
    let config = WorkerConfig::new(WorkerConfig::process_worker_id())
        .with_lease(millis("FLOWSTATE_LEASE_MS", 2_000))
        .with_poll_interval(millis("FLOWSTATE_POLL_MS", 250))
        .with_max_in_flight(256);
    let executions = match std::env::var_os("FLOWSTATE_EXEC_LOG") {
        Some(path) => Executions::to_file(path.as_ref()).map_err(|e| e.to_string())?,
        None => Executions::default(),
    };
    let mut builder = flowstate::Engine::builder(url)
        .postgres_schema(schema)
        .worker(config);
    for (definition, _) in flowstate_testkit::mix::definitions(&executions) {
        builder = builder.task_graph(definition);
    }
    let engine = builder.build().await.map_err(|e| e.to_string())?;
    // Before `run`, which wakes the activations earlier processes left running.
    flowstate_testkit::functions::note_steps_in(executions);
    // The multi-process test reads the journals of finished functions.
    engine.functions().keep_journals(true);
    flowstate_testkit::functions::register(engine.functions()).map_err(|e| e.to_string())?;
    // SIGTERM is handled from before "ready": a test may send it at once.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let stop = engine.shutdown_handle();
    tokio::spawn(async move {
        terminate.recv().await;
        stop.shutdown();
    });
    println!("ready");
    let stats = engine.run().await.map_err(|e| e.to_string())?;
    println!(
        "stats {}",
        serde_json::to_string(&stats).map_err(|e| e.to_string())?
    );
    engine.store().close().await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(schema)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: flowstate-engine-process URL SCHEMA");
        return ExitCode::from(2);
    };
    flowstate_testkit::run_child(run(url, schema))
}
