//! The mixed workload of the multi-process test: task-graph flows of three shapes, whose
//! tasks take a few milliseconds so that a SIGKILL lands in the middle of many runs.
//!
//! | definition | shape | ends |
//! |---|---|---|
//! | `mix-linear` | 10 tasks in a chain, each adds one | SUCCESS, `x9 = 10` |
//! | `mix-diamond` | a → (b, c in parallel) → d | SUCCESS, `d = 4` |
//! | `mix-reverting` | a → b → fails | REVERTED (a and b reverted) |
//!
//! With an execution log, every execute and revert first appends `KEY execute|revert` to
//! the log (before the task's work; a SIGKILL cannot undo a completed write), so a test can
//! count how often each step really ran.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate_core::machine::FlowState;
use flowstate_core::Failure;
use flowstate_taskgraph::{task_fn, task_fn_with_revert, Flow, Inputs, TaskAtom, TaskContext};
use serde_json::{json, Value};

/// How long every task takes.
pub const TASK_TIME: Duration = Duration::from_millis(3);

/// Where tasks note their executions, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Executions(Option<Arc<Mutex<std::fs::File>>>);

impl Executions {
    /// Notes into the file at `path` (appending).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self(Some(Arc::new(Mutex::new(file)))))
    }

    fn note(&self, ctx: &TaskContext, what: &str) -> Result<(), Failure> {
        self.note_key(&ctx.idempotency_key, what)
    }

    /// Appends the line `KEY WHAT` in one write (unbuffered: a SIGKILL after it returns
    /// cannot undo it, nor leave half a line).
    pub fn note_key(&self, key: &str, what: &str) -> Result<(), Failure> {
        let Some(file) = &self.0 else {
            return Ok(());
        };
        let mut file = file
            .lock()
            .map_err(|_| Failure::new("Io", "execution log poisoned"))?;
        file.write_all(format!("{key} {what}\n").as_bytes())
            .map_err(|e| Failure::new("Io", e.to_string()))
    }
}

/// The definitions, with the state each one's flows end in.
#[must_use]
pub fn definitions(executions: &Executions) -> Vec<(Flow, FlowState)> {
    vec![
        (linear(executions), FlowState::Success),
        (diamond(executions), FlowState::Success),
        (reverting(executions), FlowState::Reverted),
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

/// A task that notes its execution, takes [`TASK_TIME`], and returns one more than the sum
/// of `inputs`.
fn adder(executions: &Executions, name: String, inputs: Vec<String>) -> TaskAtom {
    let executions = executions.clone();
    let summed = inputs.clone();
    task_fn(name, move |ctx, values: Inputs| {
        let noted = executions.note(&ctx, "execute");
        let sum: i64 = summed.iter().map(|n| number(&values, n)).sum();
        async move {
            noted?;
            tokio::time::sleep(TASK_TIME).await;
            Ok(json!(sum + 1))
        }
    })
    .requires(inputs)
}

fn linear(executions: &Executions) -> Flow {
    let mut flow = Flow::linear("mix-linear");
    for i in 0..10 {
        let input = if i == 0 {
            "x".to_owned()
        } else {
            format!("x{}", i - 1)
        };
        flow =
            flow.add(adder(executions, format!("step{i}"), vec![input]).provides(format!("x{i}")));
    }
    flow
}

fn diamond(executions: &Executions) -> Flow {
    let add = |name: &str, from: &[&str]| {
        adder(
            executions,
            name.to_owned(),
            from.iter().map(|s| (*s).to_owned()).collect(),
        )
        .provides(name.to_owned())
    };
    Flow::graph("mix-diamond")
        .add(add("a", &["x"]))
        .add(add("b", &["a"]))
        .add(add("c", &["a"]))
        .add(add("d", &["b", "c"]))
}

fn reverting(executions: &Executions) -> Flow {
    let undoable = |name: &str| {
        let (on_execute, on_revert) = (executions.clone(), executions.clone());
        task_fn_with_revert(
            name.to_owned(),
            move |ctx, _inputs| {
                let noted = on_execute.note(&ctx, "execute");
                async move {
                    noted?;
                    tokio::time::sleep(TASK_TIME).await;
                    Ok(json!(1))
                }
            },
            move |ctx, _inputs, _outcome| {
                let noted = on_revert.note(&ctx, "revert");
                async move {
                    noted?;
                    tokio::time::sleep(TASK_TIME).await;
                    Ok(())
                }
            },
        )
    };
    let on_boom = executions.clone();
    Flow::linear("mix-reverting")
        .add(undoable("a"))
        .add(undoable("b"))
        .add(task_fn("boom", move |ctx, _inputs| {
            let noted = on_boom.note(&ctx, "execute");
            async move {
                noted?;
                tokio::time::sleep(TASK_TIME).await;
                Err(Failure::new("Declined", "the card was declined"))
            }
        }))
}
