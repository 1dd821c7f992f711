//! A durable function end to end on the embedded store: an order that reserves stock,
//! charges, sleeps durably for a few seconds, then ships. Kill it (Ctrl-C) during the sleep
//! and run it again: it carries on from its journal, without charging twice.
//!
//! ```sh
//! cargo run -p flowstate-durable --example durable_order
//! cargo run -p flowstate-cli -- flows show ID      # its journal, state and outcome
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::{Clock, Failure, FlowKind};
use flowstate_durable::{Ctx, Functions};
use flowstate_store::{FlowQuery, Store, SystemClock, WorkerId};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_worker::{Worker, WorkerConfig};

async fn order(ctx: Ctx, amount: u32) -> Result<String, Failure> {
    let reservation: String = ctx
        .step("reserve", |key| async move {
            println!("reserving stock (idempotency key {key})");
            Ok(format!("R-{amount}"))
        })
        .await?;
    let charge: u32 = ctx
        .step("charge", |key| async move {
            println!("charging {amount} (idempotency key {key})");
            Ok(amount * 100)
        })
        .await?;
    // The console loophole: not journaled, quiet during replay.
    if !ctx.is_replaying() {
        println!("waiting five seconds before shipping: try Ctrl-C now, then run again");
    }
    ctx.sleep(Duration::from_secs(5)).await;
    let tracking: String = ctx
        .step("ship", |_key| async move {
            println!("shipping");
            Ok("TRACK-1".to_owned())
        })
        .await?;
    Ok(format!("{reservation} charged {charge} shipped {tracking}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::var("FLOWSTATE_STORE").unwrap_or_else(|_| "flowstate.db".to_owned());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        &path,
        clock.clone(),
        SqliteOptions::default(),
    )?);
    let functions = Functions::new(
        store.clone(),
        clock.clone(),
        format!("example-{}", std::process::id()),
    );
    functions.register("durable-order", order)?;
    // An order left unfinished by an earlier run of this example carries on; else start one.
    let unfinished = store
        .list(&FlowQuery {
            kind: Some(FlowKind::Function),
            definition: Some("durable-order".into()),
            ..FlowQuery::default()
        })
        .await?
        .flows
        .into_iter()
        .find(|f| f.status.key() != "done");
    let flow = match unfinished {
        Some(summary) => {
            println!("carrying on with order {}", summary.id);
            summary.id
        }
        None => {
            let flow = functions.submit("durable-order", 7).await?;
            println!("started order {flow}");
            flow
        }
    };
    functions.wake_all().await?;
    let config = WorkerConfig::new(WorkerId::new(format!("example-{}", std::process::id()))?)
        .with_lease(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(200));
    let worker = Arc::new(
        Worker::new(store.clone(), clock, config)?
            .with_runner(FlowKind::Function, Arc::new(functions.clone())),
    );
    let running = worker.clone();
    let task = tokio::spawn(async move { running.run().await });
    let outcome = loop {
        if let Some(outcome) = functions.outcome::<String>(flow).await? {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("order {flow}: {outcome:?}");
    worker.shutdown_handle().shutdown();
    let _ = task.await;
    store.close().await?;
    Ok(())
}
