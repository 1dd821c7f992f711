//! Example definitions registered on a fresh server so that there is something to run: a
//! checkout plan (three chained steps, each taking a moment so that the UI has something to
//! watch), a task graph and a durable function.

use std::time::Duration;

use flowstate::core::Failure;
use flowstate::durable::{Ctx, Functions};
use flowstate::plan::{Step, StepError};
use flowstate::taskgraph::{task_fn, Flow, Inputs};
use serde_json::json;

/// How long each example step takes.
const STEP_TIME: Duration = Duration::from_millis(300);

/// Plan steps: `customer_id → customer_name → amount → confirmation_id`, and `echo`
/// (`text → echo`, at once: the one-step plan of the HTTP benchmark).
pub(crate) fn steps() -> Vec<Step> {
    vec![
        Step::new("echo")
            .input("text")
            .output("echo")
            .body(|ctx| async move {
                let text: serde_json::Value = ctx.input("text")?;
                Ok(json!({ "echo": text }))
            }),
        Step::new("lookup_customer")
            .input("customer_id")
            .output("customer_name")
            .body(|ctx| async move {
                let id: u64 = ctx.input("customer_id")?;
                tokio::time::sleep(STEP_TIME).await;
                Ok(json!({ "customer_name": format!("Customer {id}") }))
            }),
        Step::new("calculate_total")
            .input("customer_name")
            .output("amount")
            .body(|_| async move {
                tokio::time::sleep(STEP_TIME).await;
                Ok(json!({ "amount": 150.0 }))
            }),
        Step::new("process_payment")
            .input("amount")
            .output("confirmation_id")
            .retry(3, Duration::from_millis(200), Duration::from_secs(2))
            .body(|ctx| async move {
                let amount: f64 = ctx.input("amount")?;
                if amount <= 0.0 {
                    return Err(StepError::permanent("InvalidAmount", "nothing to charge"));
                }
                tokio::time::sleep(STEP_TIME).await;
                Ok(json!({ "confirmation_id": format!("txn-{}", ctx.idempotency_key().len()) }))
            }),
    ]
}

/// A two-task graph: `greet` says hello, `shout` upper-cases it.
pub(crate) fn task_graphs() -> Vec<Flow> {
    vec![Flow::linear("greet")
        .add(
            task_fn("hello", |_ctx, inputs: Inputs| async move {
                tokio::time::sleep(STEP_TIME).await;
                let name = inputs
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("world")
                    .to_owned();
                Ok(json!(format!("hello {name}")))
            })
            .provides("word"),
        )
        .add(
            task_fn("shout", |_ctx, inputs: Inputs| async move {
                Ok(json!(inputs
                    .get("word")
                    .and_then(|w| w.as_str())
                    .unwrap_or_default()
                    .to_uppercase()))
            })
            .requires(["word"]),
        )]
}

/// A durable function: two steps and a signal (`approve`) it waits for.
async fn approval(ctx: Ctx, amount: u64) -> Result<String, Failure> {
    let quote: u64 = ctx
        .step("quote", move |_| async move { Ok(amount * 2) })
        .await?;
    let approved: bool = ctx.signal("approve").await?;
    let verdict = if approved { "approved" } else { "rejected" };
    ctx.step("record", move |_| async move {
        Ok(format!("{verdict} {quote}"))
    })
    .await
}

/// Registers the example functions.
pub(crate) fn register_functions(functions: &Functions) -> Result<(), String> {
    functions
        .register("approval", approval)
        .map_err(|error| error.to_string())
}
