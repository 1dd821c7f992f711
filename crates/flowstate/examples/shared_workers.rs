//! One engine process of many sharing one store: start it several times (in several
//! terminals, or on several machines) against one PostgreSQL database and watch the flows
//! spread over the processes; SIGKILL one and watch another take its flows over.
//!
//! ```sh
//! export FLOWSTATE_STORE=postgres://postgres@127.0.0.1:5432/test
//! cargo run -p flowstate --example shared_workers            # in two or three terminals
//! cargo run -p flowstate --example shared_workers -- 100     # also submits 100 orders
//! ```
//!
//! Each process prints the steps it runs, with its process id. Ctrl-C stops a process
//! gracefully (its unfinished flows go back to the others at once).

use std::error::Error;
use std::time::Duration;

use flowstate::taskgraph::{task_fn, Flow, Inputs, TaskContext};
use serde_json::json;

fn step(name: &'static str) -> flowstate::taskgraph::TaskAtom {
    task_fn(name, move |ctx: TaskContext, inputs: Inputs| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!(
            "pid {} ran {name} of order {} (key {})",
            std::process::id(),
            inputs.get("order").cloned().unwrap_or_default(),
            ctx.idempotency_key
        );
        Ok(json!(name))
    })
    .requires(["order"])
}

fn order_flow() -> Flow {
    Flow::linear("order")
        .add(step("reserve"))
        .add(step("charge"))
        .add(step("ship"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url =
        std::env::var(flowstate::STORE_ENV).unwrap_or_else(|_| flowstate::DEFAULT_STORE.to_owned());
    let engine = flowstate::Engine::builder(url.as_str())
        .task_graph(order_flow())
        .build()
        .await?;
    let submit: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for order in 0..submit {
        let inputs: Inputs = [("order".to_owned(), json!(order))].into_iter().collect();
        engine.task_graphs().submit("order", inputs).await?;
    }
    println!("pid {} working on {url} (Ctrl-C stops)", std::process::id());
    let stats = engine.run_until_signal().await?;
    println!("pid {} stopped: {stats:?}", std::process::id());
    engine.store().close().await?;
    Ok(())
}
