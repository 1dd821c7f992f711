//! A linear flow whose last task fails: what ran is reverted, newest first.
//! (TaskFlow's `reverting_linear.py`.) Run: `cargo run -p flowstate-taskgraph --example reverting_linear`

use std::sync::Arc;

use flowstate_core::Failure;
use flowstate_store::{MemoryStore, SystemClock};
use flowstate_taskgraph::{task_fn, task_fn_with_revert, CaptureListener, Engine, Flow, Inputs};
use serde_json::json;

fn call(name: &'static str, number: &'static str) -> flowstate_taskgraph::TaskAtom {
    task_fn_with_revert(
        name,
        move |_ctx, _inputs| async move {
            println!("Calling {number}.");
            Ok(json!(number))
        },
        move |_ctx, _inputs, _outcome| async move {
            println!("Calling {number} and apologizing.");
            Ok(())
        },
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(SystemClock);
    let engine = Engine::serial(Arc::new(MemoryStore::new(clock.clone())), clock);
    let capture = Arc::new(CaptureListener::default());
    engine.listen(capture.clone());
    engine.register(
        Flow::linear("call-them")
            .add(call("call_jim", "444"))
            .add(call("call_joe", "555"))
            .add(task_fn("call_suzzie", |_ctx, _inputs| async {
                Err(Failure::new("IOError", "Suzzie not home right now."))
            })),
    );
    let outcome = engine.execute("call-them", Inputs::new()).await?;
    println!(
        "\nflow ended {}; failures: {:?}",
        outcome.state, outcome.failures
    );
    println!("transitions:\n  {}", capture.captured().join("\n  "));
    Ok(())
}
