//! The seed's order-processing example, run for real on an SQLite file.
//!
//! `cargo run -p flowstate-plan --example order_plan [DB]`: the goal is a shipment; the
//! engine plans payment and inventory reservation (in parallel) before shipping. Payment is
//! declined while the reservation is still running: the flow fails at once and no new step
//! starts, but the reservation's success is still recorded 500 ms later, and only then is the
//! flow deactivated. Then look at it with
//! `cargo run -p flowstate-cli -- --store DB flows show ID` (add `--at SEQ` to travel in time).

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::fold::StopAt;
use flowstate_core::Event;
use flowstate_plan::{PlanRequest, Plans, Step, StepError};
use flowstate_store::{Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "flowstate.db".to_owned());
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        &path,
        clock.clone(),
        SqliteOptions::default(),
    )?);
    let plans = Plans::new(store.clone(), clock);
    plans.register(
        Step::new("process_payment")
            .input("order")
            .output("payment")
            .retry(3, Duration::from_millis(50), Duration::from_millis(200))
            .body(|ctx| async move {
                println!("  charging, idempotency key {}", ctx.idempotency_key());
                Err(StepError::permanent("CardDeclined", "insufficient funds"))
            }),
    )?;
    plans.register(
        Step::new("reserve_inventory")
            .input("order")
            .output("reservation")
            .body(|_| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(json!({ "reservation": "r-7" }))
            }),
    )?;
    plans.register(
        Step::new("ship")
            .input("payment")
            .input("reservation")
            .output("shipment")
            .body(|_| async { Ok(json!({ "shipment": "s-1" })) }),
    )?;
    let request = PlanRequest::new(["shipment"])
        .named("order")
        .input("order", json!({ "id": 7, "total": 150.0 }));
    let plan = plans.preview(&request)?;
    println!("plan: {:?}", plan.steps.keys().collect::<Vec<_>>());
    let flow = plans.create(request).await?;
    println!("flow {flow}");
    let end = plans.run_to_end(flow).await?;
    println!("ended {}", end.status);
    for raw in flowstate_store::read_all(store.as_ref(), flow).await? {
        let event = Event::decode(&raw)?;
        println!("  {:>3} {}", event.seq, event.body.type_name());
    }
    let failed_at = plans
        .state(flow, StopAt::End)
        .await?
        .plan
        .and_then(|p| p.failure)
        .map(|f| f.message)
        .unwrap_or_default();
    println!("why: {failed_at}");
    store.close().await?;
    Ok(())
}
