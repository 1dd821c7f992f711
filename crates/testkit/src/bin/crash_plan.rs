//! Child program of the plan crash test.
//!
//! `flowstate-crash-plan DB LOG start` starts [`FLOWS`] plan flows (prints `flow ID` for each)
//! and runs them all at once to the end, printing `outcome ID STATE`;
//! `flowstate-crash-plan DB LOG resume` runs every plan flow in the store that is not
//! deactivated to the end, the same way.
//!
//! Each flow's plan has 12 steps: a chain (`a` → `b` → `c`), a diamond (`c` → `d1`, `d2` →
//! `d3`), a mapped step (`split` makes a list of 4, `m` maps over it with parallelism 2) and
//! a tail (`flaky`, `join`, `e`, `report`; the goal is `report`). `flaky`, and item 2 of `m`,
//! fail with a retryable error on their first attempt, so retries cross crashes too.
//!
//! Each attempt appends `start KEY ATTEMPT` to LOG (fsynced) when it begins and, after a
//! short sleep (so that a SIGKILL lands mid-plan), `done KEY ATTEMPT` before it returns its
//! outputs, or `fail KEY ATTEMPT` before it returns its retryable failure. KEY is the
//! idempotency key the engine passed (`FLOW/STEP/ITEM`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::machine::PlanState;
use flowstate_core::{FlowId, FlowKind, FlowRecord, FlowStatus};
use flowstate_plan::{PlanRequest, Plans, Step, StepContext, StepError};
use flowstate_store::{FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// Flows the `start` mode starts.
const FLOWS: usize = 5;
/// How long an attempt sleeps between its `start` and its `done` line.
const STEP_MS: u64 = 20;
/// Elements of the list the mapped step maps over.
const PARTS: usize = 4;

/// `(step, inputs, output)` of every step of the plan.
const STEPS: [(&str, &[&str], &str); 12] = [
    ("a", &["order"], "a"),
    ("b", &["a"], "b"),
    ("c", &["b"], "c"),
    ("d1", &["c"], "d1"),
    ("d2", &["c"], "d2"),
    ("d3", &["d1", "d2"], "d3"),
    ("split", &["c"], "parts"),
    ("m", &["parts"], "processed"),
    ("flaky", &["d3"], "f"),
    ("join", &["f", "processed"], "j"),
    ("e", &["j"], "e"),
    ("report", &["e"], "report"),
];

fn note(log: &str, line: &str) -> Result<(), StepError> {
    flowstate_testkit::append_line(log, line).map_err(|e| StepError::permanent("Io", e.to_string()))
}

/// Whether this attempt fails (retryably): the first attempt of `flaky` and of item 2 of `m`.
fn fails(ctx: &StepContext) -> bool {
    ctx.attempt == 1 && (ctx.step == "flaky" || (ctx.step == "m" && ctx.item == 2))
}

async fn body(log: Arc<str>, output: &'static str, ctx: StepContext) -> Result<Value, StepError> {
    let key = ctx.idempotency_key();
    let attempt = ctx.attempt;
    note(&log, &format!("start {key} {attempt}"))?;
    tokio::time::sleep(Duration::from_millis(STEP_MS)).await;
    if fails(&ctx) {
        note(&log, &format!("fail {key} {attempt}"))?;
        return Err(StepError::retryable("Flaky", "the first attempt fails"));
    }
    let value = match ctx.step.as_str() {
        "split" => json!((0..PARTS).collect::<Vec<_>>()),
        "m" => json!(ctx.input::<u64>("parts")? * 10),
        step => json!(format!("{step}@{}", ctx.flow)),
    };
    note(&log, &format!("done {key} {attempt}"))?;
    Ok(json!({ output: value }))
}

fn register(plans: &Plans, log: &str) -> Result<(), String> {
    let log: Arc<str> = Arc::from(log);
    for (name, inputs, output) in STEPS {
        let mut step = Step::new(name).output(output);
        for input in inputs {
            step = step.input(*input);
        }
        if name == "m" {
            step = step.map_over("parts", 2);
        }
        if matches!(name, "m" | "flaky") {
            step = step.retry(3, Duration::from_millis(60), Duration::from_millis(120));
        }
        let log = log.clone();
        step = step.body(move |ctx| body(log.clone(), output, ctx));
        plans.register(step).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn state(record: &FlowRecord) -> String {
    match record.status {
        FlowStatus::Plan(state) => state.to_string(),
        other => format!("{other:?}"),
    }
}

/// Runs the flows at once, each to its end, printing `outcome ID STATE` as each ends.
async fn run_all(plans: &Plans, flows: Vec<FlowId>) -> Result<(), String> {
    let mut running = JoinSet::new();
    for flow in flows {
        let plans = plans.clone();
        running.spawn(async move { (flow, plans.run_to_end(flow).await) });
    }
    while let Some(joined) = running.join_next().await {
        let (flow, result) = joined.map_err(|e| e.to_string())?;
        let record = result.map_err(|e| format!("flow {flow}: {e}"))?;
        println!("outcome {flow} {}", state(&record));
    }
    Ok(())
}

/// Every plan flow in the store that is not deactivated (or archived).
async fn unfinished(store: &dyn Store) -> Result<Vec<FlowId>, String> {
    let mut flows = Vec::new();
    let mut query = FlowQuery {
        kind: Some(FlowKind::Plan),
        ..FlowQuery::default()
    };
    loop {
        let page = store.list(&query).await.map_err(|e| e.to_string())?;
        flows.extend(
            page.flows
                .iter()
                .filter(|summary| {
                    !matches!(
                        summary.status,
                        FlowStatus::Plan(PlanState::Deactivated | PlanState::Archived)
                    )
                })
                .map(|summary| summary.id),
        );
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return Ok(flows),
        }
    }
}

async fn run(db: &str, log: &str, mode: &str) -> Result<(), String> {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(db, clock.clone(), SqliteOptions::default())
            .map_err(|e| e.to_string())?,
    );
    let plans = Plans::new(store.clone(), clock);
    register(&plans, log)?;
    let flows = match mode {
        "start" => {
            let mut flows = Vec::new();
            for index in 0..FLOWS {
                let request = PlanRequest::new(["report"])
                    .named("crash-plan")
                    .input("order", json!(index));
                let flow = plans.submit(request).await.map_err(|e| e.to_string())?;
                println!("flow {flow}");
                flows.push(flow);
            }
            flows
        }
        "resume" => unfinished(&*store).await?,
        other => return Err(format!("unknown mode {other}")),
    };
    run_all(&plans, flows).await?;
    store.close().await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(db), Some(log), Some(mode)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: flowstate-crash-plan DB LOG start|resume");
        return ExitCode::from(2);
    };
    flowstate_testkit::run_child(run(db, log, mode))
}
