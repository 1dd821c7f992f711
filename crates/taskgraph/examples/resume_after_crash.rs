//! Resume after a hard crash. The example runs itself as a child process that starts a flow
//! of five slow tasks on an SQLite file and dies abruptly (`abort`) in the middle of the third.
//! The parent then opens the same file and runs the flow: it goes RESUMING, SUSPENDED,
//! RUNNING; the first two tasks are not run again; the third runs again with the same
//! idempotency key. Run: `cargo run -p flowstate-taskgraph --example resume_after_crash`

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::Machine;
use flowstate_store::{FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_taskgraph::{task_fn, CaptureListener, Engine, Flow, Inputs};
use serde_json::json;

fn flow(crash: bool) -> Flow {
    let mut flow = Flow::linear("boot-vm");
    for (index, step) in ["allocate", "network", "disk", "image", "power-on"]
        .into_iter()
        .enumerate()
    {
        flow = flow.add(task_fn(step, move |ctx, _inputs| async move {
            println!(
                "  [pid {}] {step} (key {})",
                std::process::id(),
                ctx.idempotency_key
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            if crash && index == 2 {
                println!("  [pid {}] the machine dies", std::process::id());
                std::process::abort();
            }
            Ok(json!(step))
        }));
    }
    flow
}

async fn open(path: &str) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    Ok(Arc::new(SqliteStore::open(
        path,
        Arc::new(SystemClock),
        SqliteOptions::default(),
    )?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, path] = args.as_slice() {
        if mode == "child" {
            let store = open(path).await?;
            let engine = Engine::serial(store, Arc::new(SystemClock));
            engine.register(flow(true));
            engine.execute("boot-vm", Inputs::new()).await?;
            return Ok(());
        }
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("flows.db").display().to_string();
    println!("first process (will crash):");
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["child", &path])
        .status()?;
    println!("child exited with {status}\n");

    println!("second process resumes:");
    let store = open(&path).await?;
    let engine = Engine::serial(store.clone(), Arc::new(SystemClock));
    let capture = Arc::new(CaptureListener::default());
    engine.listen(capture.clone());
    engine.register(flow(false));
    let flows = store.list(&FlowQuery::default()).await?;
    for summary in flows.flows {
        println!("found flow {} in state {}", summary.id, summary.status);
        let outcome = engine.run(summary.id).await?;
        println!("flow ended {}", outcome.state.label());
    }
    println!(
        "transitions of the second run:\n  {}",
        capture.captured().join("\n  ")
    );
    store.close().await?;
    Ok(())
}
