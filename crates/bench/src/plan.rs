//! `flowstate-bench plan`: goal-driven plans.
//!
//! - **Planning time**: a catalog of 10,000 steps in which the goal needs a chain of 100
//!   (the other 9,900 read and produce attributes of their own, some of them reachable from
//!   the inputs), planned again and again: the median and p99 of one `Catalog::plan`.
//! - **W1 as a plan**: flows of 10 chained steps (each reads the previous step's output),
//!   every transition durable on SQLite (`synchronous=FULL`): one flow at a time, and 256
//!   flows at once. Each flow is planned, recorded and run in this process
//!   (`Plans::execute`, the plan counterpart of the task graph benchmark's `Engine::execute`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::machine::PlanState;
use flowstate_core::{FlowStatus, InputSpec, RetryPolicy, StepSpec};
use flowstate_plan::{Catalog, PlanRequest, Plans, Step};
use flowstate_store::{Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub(crate) struct PlanArgs {
    /// Directory for the database files (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Steps in the catalog of the planning benchmark.
    #[arg(long, default_value_t = 10_000)]
    catalog: usize,
    /// Steps the planned goal needs.
    #[arg(long, default_value_t = 100)]
    plan_steps: usize,
    /// Plans computed for the planning benchmark.
    #[arg(long, default_value_t = 300)]
    plannings: usize,
    /// Steps per W1 flow.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Flows run one after another.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Flows run at once.
    #[arg(long, default_value_t = 256)]
    concurrent: usize,
    /// Batches of concurrent flows.
    #[arg(long, default_value_t = 4)]
    batches: usize,
    /// Runs of each scenario; the table shows the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1);
}

fn spec(name: String, inputs: Vec<String>, output: String) -> StepSpec {
    StepSpec {
        name,
        version: 1,
        inputs: inputs
            .into_iter()
            .map(|name| InputSpec {
                name,
                optional: false,
                default: None,
            })
            .collect(),
        outputs: vec![output],
        map_over: None,
        parallelism: 1,
        predicate: None,
        retry: RetryPolicy::default(),
        timeout_ms: None,
        compensable: false,
    }
}

/// The planning catalog: chain steps `c0..c{n}` and distractors `d*`.
fn catalog(size: usize, chain: usize) -> Catalog {
    let mut catalog = Catalog::new();
    for index in 0..chain {
        let input = if index == 0 {
            "seed".to_owned()
        } else {
            format!("a{}", index - 1)
        };
        catalog.insert(spec(format!("c{index}"), vec![input], format!("a{index}")));
    }
    for index in 0..size.saturating_sub(chain) {
        // Half read the seed or a chain attribute (reachable), half read attributes nobody
        // provides (unreachable): both kinds cost the forward pass something.
        let input = match index % 4 {
            0 => "seed".to_owned(),
            1 => format!("a{}", index % chain.max(1)),
            2 => format!("missing{index}"),
            _ => format!("x{}", index.saturating_sub(1)),
        };
        catalog.insert(spec(format!("d{index}"), vec![input], format!("x{index}")));
    }
    catalog
}

fn planning(args: &PlanArgs) {
    let catalog = catalog(args.catalog, args.plan_steps);
    let goal = vec![format!("a{}", args.plan_steps.saturating_sub(1))];
    let inputs: serde_json::Map<String, serde_json::Value> =
        [("seed".to_owned(), json!(1))].into_iter().collect();
    let choices = BTreeMap::new();
    let mut times = Vec::with_capacity(args.plannings);
    for _ in 0..args.plannings.max(1) {
        let began = Instant::now();
        let plan = catalog
            .plan(&goal, &inputs, &choices)
            .unwrap_or_else(|error| fail(error));
        times.push(began.elapsed());
        if plan.steps.len() != args.plan_steps {
            fail(format!("planned {} steps", plan.steps.len()));
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "Planning: catalog of {} steps, a goal that needs {} of them, {} plans",
        args.catalog, args.plan_steps, args.plannings
    );
    println!();
    println!("| median ms | p99 ms | max ms |");
    println!("|---|---|---|");
    println!(
        "| {:.3} | {:.3} | {:.3} |",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    );
    println!();
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn open(dir: &Path, name: &str) -> Arc<dyn Store> {
    let options = SqliteOptions {
        synchronous: Synchronous::Full,
        ..SqliteOptions::default()
    };
    match SqliteStore::open(dir.join(name), Arc::new(SystemClock), options) {
        Ok(store) => Arc::new(store),
        Err(error) => fail(error),
    }
}

fn w1_engine(store: Arc<dyn Store>, steps: usize) -> Plans {
    let plans = Plans::new(store, Arc::new(SystemClock));
    for index in 0..steps {
        let input = if index == 0 {
            "x".to_owned()
        } else {
            format!("v{}", index - 1)
        };
        let output = format!("v{index}");
        let step = Step::new(format!("s{index}"))
            .input(input.clone())
            .output(output.clone())
            .body(move |ctx| {
                let (input, output) = (input.clone(), output.clone());
                async move {
                    let value: u64 = ctx.input(&input)?;
                    Ok(json!({ output: value + 1 }))
                }
            });
        if let Err(error) = plans.register(step) {
            fail(error);
        }
    }
    plans
}

/// Starts and runs one flow; its latency in microseconds.
async fn w1_once(plans: &Plans, steps: usize) -> u64 {
    let began = Instant::now();
    let goal = format!("v{}", steps - 1);
    match plans
        .execute(PlanRequest::new([goal]).input("x", json!(0)))
        .await
    {
        Ok(record) if record.status == FlowStatus::Plan(PlanState::Deactivated) => {}
        other => fail(format!("flow did not complete: {other:?}")),
    }
    u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)
}

struct Run {
    elapsed: Duration,
    latencies: Vec<u64>,
    steps: usize,
}

fn row(scenario: &str, flows: usize, run: &mut Run) -> String {
    run.latencies.sort_unstable();
    let at = |q: f64| {
        run.latencies
            .get(((run.latencies.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1_000.0
    };
    format!(
        "| {scenario} | {flows} | {} | {:.2} | {:.0} | {:.2} | {:.2} |",
        run.steps,
        run.elapsed.as_secs_f64(),
        run.steps as f64 / run.elapsed.as_secs_f64(),
        at(0.5),
        at(0.99)
    )
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|run| run.elapsed);
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

pub(crate) async fn plan(args: PlanArgs) {
    planning(&args);
    let temp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))
        .unwrap_or_else(|error| fail(error));
    let steps = args.steps.max(1);
    let runs = args.runs.max(1);
    println!("W1 as a plan: flows of {steps} chained steps, SQLite synchronous=FULL, median of {runs} runs");
    println!();
    println!("| scenario | flows | steps | seconds | steps/s | flow p50 ms | flow p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut sequential = Vec::new();
    for run in 0..runs {
        let store = open(temp.path(), &format!("plan-seq-{run}.db"));
        let plans = w1_engine(store.clone(), steps);
        let began = Instant::now();
        let mut latencies = Vec::with_capacity(args.sequential);
        for _ in 0..args.sequential {
            latencies.push(w1_once(&plans, steps).await);
        }
        sequential.push(Run {
            elapsed: began.elapsed(),
            latencies,
            steps: args.sequential * steps,
        });
        let _ = store.close().await;
    }
    println!(
        "{}",
        row(
            "sequential, one flow at a time",
            args.sequential,
            &mut median(sequential)
        )
    );
    let mut concurrent = Vec::new();
    for run in 0..runs {
        let store = open(temp.path(), &format!("plan-conc-{run}.db"));
        let plans = w1_engine(store.clone(), steps);
        let began = Instant::now();
        let mut latencies = Vec::new();
        for _ in 0..args.batches.max(1) {
            let tasks: Vec<_> = (0..args.concurrent)
                .map(|_| {
                    let plans = plans.clone();
                    tokio::spawn(async move { w1_once(&plans, steps).await })
                })
                .collect();
            for task in tasks {
                latencies.push(task.await.unwrap_or_else(|error| fail(error)));
            }
        }
        concurrent.push(Run {
            elapsed: began.elapsed(),
            latencies,
            steps: args.concurrent * args.batches.max(1) * steps,
        });
        let _ = store.close().await;
    }
    println!(
        "{}",
        row(
            &format!(
                "{} flows at once, {} batches",
                args.concurrent, args.batches
            ),
            args.concurrent * args.batches.max(1),
            &mut median(concurrent)
        )
    );
}
