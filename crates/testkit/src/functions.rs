//! The durable functions of the multi-process test: an order that takes steps, sleeps on a
//! durable timer (any process's worker fires it), runs two branches at once, calls a child
//! function, waits for a signal sent from outside (some inputs), joins a child task graph of
//! [`crate::mix`] (some inputs), and fails (some inputs); its value (or failure) follows from
//! its input, so a test can check every outcome.
//!
//! | function | does | returns |
//! |---|---|---|
//! | `fn_order(n)` | steps `reserve`, `charge`; `ctx.sleep` 300–800 ms; `all` of 2 branches with a step `pack` each; `ctx.call("fn_child", n)`; if [`needs_signal`]: `ctx.signal("go")`; if `n % 3 == 0`: joins a `mix-diamond` child; if `n % 7 == 1`: joins a `mix-reverting` child (which fails); step `ship` | [`expected_order`] |
//! | `fn_child(n)` | steps `quote`, `confirm` | `3n + 30` |
//!
//! Every step body first appends `KEY step` to the execution log set with
//! [`note_steps_in`] (KEY: the idempotency key the context passed, `FLOW/INDEX` or
//! `FLOW/BRANCH/INDEX`), then takes [`STEP_TIME`] without blocking its thread, so a test can
//! count how often each step really ran.

use std::sync::OnceLock;
use std::time::Duration;

use flowstate_core::Failure;
use flowstate_durable::{Ctx, Functions};
use serde_json::json;

use crate::mix::Executions;

/// How long every step takes.
pub const STEP_TIME: Duration = Duration::from_millis(20);

/// The signal `fn_order` waits for when [`needs_signal`].
pub const SIGNAL: &str = "go";

/// The failure kind of the orders that fail ([`fails`]).
pub const DECLINED: &str = "Declined";

/// The failure kind of a task graph that failed, as its parent joins it.
pub const TASK_GRAPH_FAILED: &str = "TaskGraphFailed";

/// Where steps note their executions: functions are closed (they capture nothing), so the
/// log is the process's.
static EXECUTIONS: OnceLock<Executions> = OnceLock::new();

/// Makes this process's steps note their executions in `executions` (once per process).
pub fn note_steps_in(executions: Executions) {
    let _ = EXECUTIONS.set(executions);
}

/// Registers `fn_order` and `fn_child`.
pub fn register(functions: &Functions) -> Result<(), flowstate_durable::RegistrationError> {
    functions.register("fn_order", fn_order)?;
    functions.register("fn_child", fn_child)
}

/// Whether `fn_order(n)` waits for the signal [`SIGNAL`].
#[must_use]
pub fn needs_signal(n: u64) -> bool {
    n.is_multiple_of(5)
}

/// The value to send as `fn_order(n)`'s signal.
#[must_use]
pub fn signal_value(n: u64) -> u64 {
    7 * n
}

/// Whether `fn_order(n)` fails (with [`DECLINED`]) once everything else is done.
#[must_use]
pub fn fails(n: u64) -> bool {
    n % 11 == 4
}

/// What `fn_child(n)` returns.
#[must_use]
pub fn expected_child(n: u64) -> u64 {
    3 * (n + 10)
}

/// The value of `fn_order(n)` (unless it [`fails`]).
#[must_use]
pub fn expected_order(n: u64) -> u64 {
    let steps = (n + 1) + 2 * n + (n + 2 * n) + 1;
    let signal = if needs_signal(n) { signal_value(n) } else { 0 };
    // mix-diamond from x = n: a = n + 1, b = c = n + 2, d = 2n + 5.
    let diamond = if n.is_multiple_of(3) { 2 * n + 5 } else { 0 };
    let reverted = if n % 7 == 1 { 100 } else { 0 };
    steps + expected_child(n) + signal + diamond + reverted
}

/// How long `fn_order(n)` sleeps.
#[must_use]
pub fn sleep_for(n: u64) -> Duration {
    Duration::from_millis(300 + (n % 6) * 100)
}

/// A step body: notes its execution, then takes [`STEP_TIME`] (asleep, not blocking).
async fn work(key: String, value: u64) -> Result<u64, Failure> {
    if let Some(executions) = EXECUTIONS.get() {
        executions.note_key(&key, "step")?;
    }
    tokio::time::sleep(STEP_TIME).await;
    Ok(value)
}

/// The order (see the module's table).
pub async fn fn_order(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let reserved = ctx.step("reserve", |key| work(key, n + 1)).await?;
    let charged = ctx.step("charge", |key| work(key, 2 * n)).await?;
    ctx.sleep(sleep_for(n)).await;
    let packed = ctx
        .all([1, 2].map(|k: u64| {
            move |ctx: Ctx| async move { ctx.step("pack", |key| work(key, k * n)).await }
        }))
        .await?;
    let child: u64 = ctx.call("fn_child", n).await?;
    let signal = if needs_signal(n) {
        ctx.signal::<u64>(SIGNAL).await?
    } else {
        0
    };
    let diamond = if n.is_multiple_of(3) {
        let graph = ctx
            .start_task_graph("mix-diamond", json!({ "x": n }))
            .await?;
        let results: serde_json::Value = ctx.join(graph).await?;
        results
            .get("d")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| Failure::new("Unexpected", format!("diamond results {results}")))?
    } else {
        0
    };
    let reverted = if n % 7 == 1 {
        let graph = ctx
            .start_task_graph("mix-reverting", json!({ "x": n }))
            .await?;
        match ctx.join::<serde_json::Value>(graph).await {
            Err(failure) if failure.kind == TASK_GRAPH_FAILED => 100,
            other => {
                return Err(Failure::new(
                    "Unexpected",
                    format!("the reverting graph ended {other:?}"),
                ))
            }
        }
    } else {
        0
    };
    let shipped = ctx.step("ship", |key| work(key, 1)).await?;
    if fails(n) {
        return Err(Failure::new(DECLINED, format!("order {n} declined")));
    }
    Ok(reserved
        + charged
        + packed.iter().sum::<u64>()
        + child
        + signal
        + diamond
        + reverted
        + shipped)
}

/// The child each order calls.
pub async fn fn_child(ctx: Ctx, n: u64) -> Result<u64, Failure> {
    let quote = ctx.step("quote", |key| work(key, n + 10)).await?;
    ctx.step("confirm", |key| work(key, 3 * quote)).await
}
