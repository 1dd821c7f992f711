//! A graph flow whose order comes from what tasks require and provide, not from the order
//! they are added in; independent tasks run in parallel. (TaskFlow's `graph_flow.py`.)
//! Run: `cargo run -p flowstate-taskgraph --example graph_flow`

use std::sync::Arc;

use flowstate_store::{MemoryStore, SystemClock};
use flowstate_taskgraph::{task_fn, Engine, Flow, Inputs, TaskAtom};
use serde_json::json;

fn adder(name: &str, a: &str, b: &str, provides: &str) -> TaskAtom {
    let (a_name, b_name) = (a.to_owned(), b.to_owned());
    let label = name.to_owned();
    task_fn(name, move |_ctx, inputs| {
        let (a, b) = (
            inputs[&a_name].as_i64().unwrap_or(0),
            inputs[&b_name].as_i64().unwrap_or(0),
        );
        let label = label.clone();
        async move {
            println!("{label}: {a} + {b} = {}", a + b);
            Ok(json!(a + b))
        }
    })
    .requires([a, b])
    .provides(provides)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(SystemClock);
    let engine = Engine::new(Arc::new(MemoryStore::new(clock.clone())), clock);
    // z = (x1 + x2) + (y1 + y2): the two sums run in parallel, the total after both.
    engine.register(
        Flow::graph("sums")
            .add(adder("total", "x", "y", "z"))
            .add(adder("sum_x", "x1", "x2", "x"))
            .add(adder("sum_y", "y1", "y2", "y")),
    );
    let inputs: Inputs = [("x1", 2), ("x2", 3), ("y1", 5), ("y2", 8)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let outcome = engine.execute("sums", inputs).await?;
    println!("flow ended {}: z = {}", outcome.state, outcome.results["z"]);
    Ok(())
}
