//! Child program of the durable-function upgrade test: four builds of one program.
//!
//! `flowstate-upgrade-function DB VERSION` (VERSION 1 to 4) opens the SQLite store `DB`,
//! registers the function `order` as that version of the program wrote it, starts one
//! activation (input 7) if the store has none, wakes the activations earlier processes left
//! (`Functions::wake_all`, the explicit start of an incarnation), and runs a worker. The
//! versions, four closed `async fn`s standing for four builds:
//!
//! 1. `reserve`, `charge`, sleep [`PAUSE`], `ship`, sleep [`PAUSE`], `deliver`.
//! 2. A compatible change guarded by `ctx.patched`: a fraud check before the first sleep
//!    (so an activation whose journal was written by version 1 takes the old path there:
//!    its journal goes on past that point) and a customer notification after it (which such
//!    an activation reaches live, after the change: it takes the new path).
//! 3. A divergent change: version 2 with the journaled step `charge` renamed `bill`.
//! 4. The fix: version 2 again.
//!
//! Every step body appends `run NAME KEY vVERSION` to the file named by
//! `FLOWSTATE_UPGRADE_LOG`, fsynced (KEY is the idempotency key the context passed), so the
//! test sees which process ran which step. On stdout it prints `flow ID`, then
//! `state STATE journal=N` each time it sees the activation's state or journal length change,
//! and ends (status 0) when the activation is done (`outcome TEXT`) or when this process's
//! run put it in replay failure (`replay_failure DIAGNOSTIC`). Otherwise it runs until it is
//! killed. Errors: one `error:` line on stderr, status 1.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flowstate_core::machine::ActivationState;
use flowstate_core::{Clock, Failure, FlowKind, FlowStatus, Machine};
use flowstate_durable::{Ctx, Functions};
use flowstate_engine::FlowWriter;
use flowstate_store::{FlowQuery, Store, SystemClock, WorkerId};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_worker::{Worker, WorkerConfig};

/// Each of the function's two sleeps.
pub const PAUSE: Duration = Duration::from_millis(1_500);

/// The version this process runs (for the step log).
static VERSION: OnceLock<u8> = OnceLock::new();

/// Appends `run NAME KEY vVERSION` to the step log, fsynced.
fn note(name: &str, key: &str) -> Result<(), Failure> {
    let log =
        std::env::var("FLOWSTATE_UPGRADE_LOG").map_err(|e| Failure::new("Env", e.to_string()))?;
    let version = VERSION.get().copied().unwrap_or(0);
    flowstate_testkit::append_line(log, &format!("run {name} {key} v{version}"))
        .map_err(|e| Failure::new("Io", e.to_string()))
}

/// A step body: notes that step `name` ran with `key`, and produces `value`.
async fn effect<T>(name: &'static str, key: String, value: T) -> Result<T, Failure> {
    note(name, &key)?;
    Ok(value)
}

/// Version 1.
async fn v1(ctx: Ctx, amount: u32) -> Result<String, Failure> {
    let reserved: String = ctx
        .step("reserve", |k| {
            effect("reserve", k, format!("reserved {amount}"))
        })
        .await?;
    let charged: u32 = ctx
        .step("charge", |k| effect("charge", k, amount * 100))
        .await?;
    ctx.sleep(PAUSE).await;
    let shipped: String = ctx
        .step("ship", |k| effect("ship", k, "shipped".to_owned()))
        .await?;
    ctx.sleep(PAUSE).await;
    let delivered: String = ctx
        .step("deliver", |k| effect("deliver", k, "delivered".to_owned()))
        .await?;
    Ok(format!(
        "{reserved}, charged {charged}, {shipped}, {delivered}"
    ))
}

/// Version 2: two changes, each behind `patched`.
async fn v2(ctx: Ctx, amount: u32) -> Result<String, Failure> {
    let reserved: String = ctx
        .step("reserve", |k| {
            effect("reserve", k, format!("reserved {amount}"))
        })
        .await?;
    let charged: u32 = ctx
        .step("charge", |k| effect("charge", k, amount * 100))
        .await?;
    let fraud = if ctx.patched("fraud-check").await {
        ctx.step("fraud-check", |k| {
            effect("fraud-check", k, "fraud checked".to_owned())
        })
        .await?
    } else {
        "not fraud checked".to_owned()
    };
    ctx.sleep(PAUSE).await;
    let notified = if ctx.patched("notify-customer").await {
        ctx.step("notify", |k| {
            effect("notify", k, "customer notified".to_owned())
        })
        .await?
    } else {
        "customer not notified".to_owned()
    };
    let shipped: String = ctx
        .step("ship", |k| effect("ship", k, "shipped".to_owned()))
        .await?;
    ctx.sleep(PAUSE).await;
    let delivered: String = ctx
        .step("deliver", |k| effect("deliver", k, "delivered".to_owned()))
        .await?;
    Ok(format!(
        "{reserved}, charged {charged}, {fraud}, {notified}, {shipped}, {delivered}"
    ))
}

/// Version 3: version 2 with the step `charge` renamed `bill`, which its journals do not
/// record: a divergence.
async fn v3(ctx: Ctx, amount: u32) -> Result<String, Failure> {
    let reserved: String = ctx
        .step("reserve", |k| {
            effect("reserve", k, format!("reserved {amount}"))
        })
        .await?;
    let charged: u32 = ctx
        .step("bill", |k| effect("bill", k, amount * 100))
        .await?;
    let fraud = if ctx.patched("fraud-check").await {
        ctx.step("fraud-check", |k| {
            effect("fraud-check", k, "fraud checked".to_owned())
        })
        .await?
    } else {
        "not fraud checked".to_owned()
    };
    ctx.sleep(PAUSE).await;
    let notified = if ctx.patched("notify-customer").await {
        ctx.step("notify", |k| {
            effect("notify", k, "customer notified".to_owned())
        })
        .await?
    } else {
        "customer not notified".to_owned()
    };
    let shipped: String = ctx
        .step("ship", |k| effect("ship", k, "shipped".to_owned()))
        .await?;
    ctx.sleep(PAUSE).await;
    let delivered: String = ctx
        .step("deliver", |k| effect("deliver", k, "delivered".to_owned()))
        .await?;
    Ok(format!(
        "{reserved}, billed {charged}, {fraud}, {notified}, {shipped}, {delivered}"
    ))
}

/// Version 4: the fix (version 2's code again).
async fn v4(ctx: Ctx, amount: u32) -> Result<String, Failure> {
    let reserved: String = ctx
        .step("reserve", |k| {
            effect("reserve", k, format!("reserved {amount}"))
        })
        .await?;
    let charged: u32 = ctx
        .step("charge", |k| effect("charge", k, amount * 100))
        .await?;
    let fraud = if ctx.patched("fraud-check").await {
        ctx.step("fraud-check", |k| {
            effect("fraud-check", k, "fraud checked".to_owned())
        })
        .await?
    } else {
        "not fraud checked".to_owned()
    };
    ctx.sleep(PAUSE).await;
    let notified = if ctx.patched("notify-customer").await {
        ctx.step("notify", |k| {
            effect("notify", k, "customer notified".to_owned())
        })
        .await?
    } else {
        "customer not notified".to_owned()
    };
    let shipped: String = ctx
        .step("ship", |k| effect("ship", k, "shipped".to_owned()))
        .await?;
    ctx.sleep(PAUSE).await;
    let delivered: String = ctx
        .step("deliver", |k| effect("deliver", k, "delivered".to_owned()))
        .await?;
    Ok(format!(
        "{reserved}, charged {charged}, {fraud}, {notified}, {shipped}, {delivered}"
    ))
}

/// Registers `order` as version `version` wrote it.
fn register(functions: &Functions, version: u8) -> Result<(), String> {
    let registered = match version {
        1 => functions.register("order", v1),
        2 => functions.register("order", v2),
        3 => functions.register("order", v3),
        4 => functions.register("order", v4),
        other => return Err(format!("no version {other} (1 to 4)")),
    };
    registered.map_err(|e| e.to_string())
}

async fn run(db: &str, version: u8) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(db, clock.clone(), SqliteOptions::default())
            .map_err(|e| e.to_string())?,
    );
    let incarnation = format!("v{version}-pid-{}", std::process::id());
    let functions = Functions::new(store.clone(), clock.clone(), incarnation.clone());
    // The test reads the repaired activation's whole journal once it is done.
    functions.keep_journals(true);
    register(&functions, version)?;
    let existing = store
        .list(&FlowQuery {
            kind: Some(FlowKind::Function),
            ..FlowQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let flow = match existing.flows.first() {
        Some(summary) => summary.id,
        None => functions
            .submit("order", 7u32)
            .await
            .map_err(|e| e.to_string())?,
    };
    println!("flow {flow}");
    functions.wake_all().await.map_err(|e| e.to_string())?;
    let config = WorkerConfig::new(WorkerId::new(&incarnation).map_err(|e| e.to_string())?)
        .with_lease(Duration::from_millis(300))
        .with_poll_interval(Duration::from_millis(50));
    let worker = Arc::new(
        Worker::new(store.clone(), clock, config)
            .map_err(|e| e.to_string())?
            .with_runner(FlowKind::Function, Arc::new(functions.clone())),
    );
    let running = worker.clone();
    let loop_task = tokio::spawn(async move { running.run().await });

    let mut seen = None;
    let ended = loop {
        let writer = FlowWriter::load(store.as_ref(), flow)
            .await
            .map_err(|e| e.to_string())?;
        let record = writer
            .record()
            .ok_or_else(|| format!("flow {flow} has no events"))?;
        let FlowStatus::Function(state) = record.status else {
            return Err(format!("flow {flow} is not a durable function"));
        };
        let function = record
            .function
            .as_ref()
            .ok_or_else(|| format!("flow {flow} has no function record"))?;
        let now = (state, function.journal.len());
        if seen != Some(now) {
            println!("state {} journal={}", state.key(), now.1);
            seen = Some(now);
        }
        match state {
            ActivationState::Done => {
                let outcome = functions
                    .outcome::<String>(flow)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("flow {flow} is done without an outcome"))?;
                match outcome {
                    Ok(text) => break Ok(format!("outcome {text}")),
                    Err(error) => break Err(format!("the function failed: {error}")),
                }
            }
            ActivationState::ReplayFailure
                if function
                    .incarnations
                    .last()
                    .is_some_and(|(_, by)| *by == incarnation) =>
            {
                let diagnostic = record.diagnostic.clone().unwrap_or_default();
                break Ok(format!("replay_failure {diagnostic}"));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown_handle().shutdown();
    let _ = loop_task.await;
    store.close().await.map_err(|e| e.to_string())?;
    println!("{}", ended?);
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(version)) = (args.next(), args.next()) else {
        eprintln!("usage: flowstate-upgrade-function DB VERSION (1 to 4; step log path in FLOWSTATE_UPGRADE_LOG)");
        return ExitCode::from(2);
    };
    let Ok(version) = version.parse::<u8>() else {
        eprintln!("error: VERSION must be 1, 2, 3 or 4, not {version:?}");
        return ExitCode::from(2);
    };
    let _ = VERSION.set(version);
    flowstate_testkit::run_child(run(&db, version))
}
