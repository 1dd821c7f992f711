//! The mixed workload of the multi-process test: task-graph flows of three shapes, whose
//! tasks take a few milliseconds so that a SIGKILL lands in the middle of many runs.
//!
//! | definition | shape | ends |
//! |---|---|---|
//! | `mix-linear` | 10 tasks in a chain, each adds one | SUCCESS, `x9 = 10` |
//! | `mix-diamond` | a → (b, c in parallel) → d | SUCCESS, `d = 4` |
//! | `mix-reverting` | a → b → fails | REVERTED (a and b reverted) |

use std::time::Duration;

use flowstate_core::machine::FlowState;
use flowstate_core::Failure;
use flowstate_taskgraph::{task_fn, task_fn_with_revert, Flow, Inputs};
use serde_json::{json, Value};

/// How long every task takes.
pub const TASK_TIME: Duration = Duration::from_millis(3);

/// The definitions, with the state each one's flows end in.
#[must_use]
pub fn definitions() -> Vec<(Flow, FlowState)> {
    vec![
        (linear(), FlowState::Success),
        (diamond(), FlowState::Success),
        (reverting(), FlowState::Reverted),
    ]
}

/// The inputs every flow of the mix starts with.
#[must_use]
pub fn inputs() -> Inputs {
    [("x".to_owned(), json!(0))].into_iter().collect()
}

fn number(inputs: &Inputs, name: &str) -> i64 {
    inputs.get(name).and_then(Value::as_i64).unwrap_or(0)
}

fn linear() -> Flow {
    let mut flow = Flow::linear("mix-linear");
    for i in 0..10 {
        let input = if i == 0 {
            "x".to_owned()
        } else {
            format!("x{}", i - 1)
        };
        flow = flow.add(
            task_fn(format!("step{i}"), |_ctx, inputs: Inputs| async move {
                tokio::time::sleep(TASK_TIME).await;
                Ok(json!(number(&inputs, "x") + 1))
            })
            .rebind("x", input)
            .provides(format!("x{i}")),
        );
    }
    flow
}

fn diamond() -> Flow {
    let add = |name: &str, from: &[&str]| {
        let from: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
        let sum_of = from.clone();
        task_fn(name.to_owned(), move |_ctx, inputs: Inputs| {
            let sum_of = sum_of.clone();
            async move {
                tokio::time::sleep(TASK_TIME).await;
                Ok(json!(
                    sum_of.iter().map(|n| number(&inputs, n)).sum::<i64>() + 1
                ))
            }
        })
        .requires(from)
        .provides(name.to_owned())
    };
    Flow::graph("mix-diamond")
        .add(add("a", &["x"]))
        .add(add("b", &["a"]))
        .add(add("c", &["a"]))
        .add(add("d", &["b", "c"]))
}

fn reverting() -> Flow {
    let undoable = |name: &str| {
        task_fn_with_revert(
            name.to_owned(),
            |_ctx, _inputs| async {
                tokio::time::sleep(TASK_TIME).await;
                Ok(json!(1))
            },
            |_ctx, _inputs, _outcome| async {
                tokio::time::sleep(TASK_TIME).await;
                Ok(())
            },
        )
    };
    Flow::linear("mix-reverting")
        .add(undoable("a"))
        .add(undoable("b"))
        .add(task_fn("boom", |_ctx, _inputs| async {
            tokio::time::sleep(TASK_TIME).await;
            Err(Failure::new("Declined", "the card was declined"))
        }))
}
