//! A retry controller over a subflow: try each phone number until a call goes through.
//! (TaskFlow's `retry_flow.py`, with `ParameterizedForEach`.)
//! Run: `cargo run -p flowstate-taskgraph --example retry_flow`

use std::sync::Arc;

use flowstate_core::Failure;
use flowstate_store::{MemoryStore, SystemClock};
use flowstate_taskgraph::{task_fn, Engine, Flow, Inputs, ParameterizedForEach, RetryAtom};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(SystemClock);
    let engine = Engine::serial(Arc::new(MemoryStore::new(clock.clone())), clock);
    engine.register(
        Flow::linear("call-jim")
            .retry(
                RetryAtom::new("try-numbers", ParameterizedForEach::new("phones"))
                    .provides("phone"),
            )
            .add(
                task_fn("call", |_ctx, inputs| async move {
                    let phone = inputs["phone"].as_str().unwrap_or_default().to_owned();
                    if phone == "555-1212" {
                        println!("Calling {phone}: Jim answers.");
                        Ok(json!(phone))
                    } else {
                        println!("Calling {phone}: wrong number.");
                        Err(Failure::new("WrongNumber", phone))
                    }
                })
                .requires(["phone"]),
            ),
    );
    let inputs: Inputs = [(
        "phones".to_owned(),
        json!(["555-0000", "555-9999", "555-1212"]),
    )]
    .into();
    let outcome = engine.execute("call-jim", inputs).await?;
    println!(
        "flow ended {} with phone {}",
        outcome.state, outcome.results["phone"]
    );
    Ok(())
}
