//! `flowstate-bench`: measures flowstate on this machine and prints Markdown tables for
//! BENCHMARKS.md. Speed is measured here, never asserted in tests.
//!
//! `flowstate-bench append` measures durable appends on SQLite: one sequential writer with
//! one event per commit, then 64 and 1,024 concurrent flows each appending one event per
//! commit (group commit batches them). Every append is acknowledged only after its commit.
//!
//! `flowstate-bench sleepers` measures the resident memory of many sleeping durable
//! functions (run by a worker until each sleeps on a durable timer), and how long they all
//! take to wake and finish when their timers come due.
//!
//! `flowstate-bench archive` measures archive throughput: deactivated plan flows moved from
//! SQLite to a local directory, in flows per second (see `archive.rs`).

mod archive;
mod http;
mod plan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use flowstate_core::{Clock, FlowId, FlowKind};
use flowstate_store::{AppendBatch, NewEvent, NewFlow, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
#[command(about = "flowstate benchmarks")]
struct Cli {
    /// Run on tokio's single-threaded runtime instead of the multi-threaded one.
    #[arg(long, global = true)]
    current_thread: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Durable appends on SQLite.
    Append(AppendArgs),
    /// W1 as task graphs: flows of trivial tasks, every transition durable on SQLite.
    W1Taskgraph(W1Args),
    /// Durable appends on PostgreSQL, concurrent flows (each run in a fresh schema).
    AppendPostgres(PostgresArgs),
    /// W1 on PostgreSQL run by 1, 2, 3... engine processes (child processes of this binary).
    W1Postgres(W1PostgresArgs),
    /// W1 as durable functions (10 `ctx.step` calls) on SQLite, and the replay of a long journal.
    W1Function(W1FunctionArgs),
    /// One engine process of `w1-postgres` (started by it): runs a worker until stdin closes.
    #[command(hide = true)]
    W1Worker(W1WorkerArgs),
    /// Memory of many sleeping durable functions on SQLite, and how fast they all wake.
    Sleepers(SleepersArgs),
    /// Archive throughput: deactivated plan flows from SQLite to a local directory.
    Archive(archive::ArchiveArgs),
    /// Goal-driven plans: planning time in a large catalog, and W1 as a plan on SQLite.
    Plan(plan::PlanArgs),
    /// Flows started per second over HTTP (64 concurrent clients, one-step plans).
    Http(http::HttpArgs),
}

#[derive(clap::Args, Debug)]
struct SleepersArgs {
    /// Directory for the database file (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Activations started; all of them sleep at once, then wake at the same time.
    #[arg(long, default_value_t = 100_000)]
    activations: usize,
    /// Seconds from the first start to the common wake time; it must leave time for every
    /// activation to fall asleep (default: 10 plus 1 per 2,000 activations).
    #[arg(long)]
    sleep_seconds: Option<u64>,
    /// Spread the wake times evenly over this many milliseconds from T (0: all due at T).
    #[arg(long, default_value_t = 0)]
    spread_ms: u64,
    /// Activations the worker runs at once.
    #[arg(long, default_value_t = 4_096)]
    in_flight: usize,
    /// Activations whose outcome is read back and checked one by one (all are counted done).
    #[arg(long, default_value_t = 200)]
    check: usize,
}

#[derive(clap::Args, Debug)]
struct W1PostgresArgs {
    /// The database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    url: String,
    /// Engine process counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    processes: Vec<usize>,
    /// Flows per run, all submitted at once once the engine processes are up.
    #[arg(long, default_value_t = 8_000)]
    flows: usize,
    /// Tasks per flow.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Flows each engine process runs at once.
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// Flows of the sequential scenario (one at a time, started and awaited in this
    /// process, no worker), the shape of DBOS's sequential figure; 0 skips it.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Runs of each scenario; the table shows the run with the median throughput.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::Args, Debug)]
struct W1FunctionArgs {
    /// Directory for the database files (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Flows run one after another in the sequential scenario.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Activations run at once in the concurrent scenario.
    #[arg(long, default_value_t = 1_000)]
    concurrent: usize,
    /// Entries in the journal of the replay scenario.
    #[arg(long, default_value_t = 100_000)]
    replay_entries: usize,
    /// Runs of each scenario; the table shows the run with the median throughput.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::Args, Debug)]
struct W1WorkerArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    schema: String,
    #[arg(long)]
    steps: usize,
    #[arg(long)]
    in_flight: usize,
}

#[derive(clap::Args, Debug)]
struct PostgresArgs {
    /// The database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    url: String,
    /// How long each scenario runs, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent flow counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    flows: Vec<usize>,
    /// Runs of each scenario; the table shows the run with the median throughput.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::Args, Debug)]
struct W1Args {
    /// Directory for the database files (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Tasks per flow.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Flows run one after another in the sequential scenario.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Flows run at once in the concurrent scenario.
    #[arg(long, default_value_t = 256)]
    concurrent: usize,
    /// Concurrent batches (each of `concurrent` flows) in the concurrent scenario.
    #[arg(long, default_value_t = 8)]
    batches: usize,
    /// Runs of each scenario; the table shows the run with the median throughput.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(clap::Args, Debug)]
struct AppendArgs {
    /// Directory for the database files (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// SQLite synchronous setting.
    #[arg(long, value_enum, default_value = "full")]
    synchronous: SyncArg,
    /// How long each concurrent scenario runs, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Appends made by the sequential writer.
    #[arg(long, default_value_t = 10_000)]
    sequential: u64,
    /// Concurrent flow counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    flows: Vec<usize>,
    /// Runs of each scenario; the table shows the run with the median throughput.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events in the log that the read-back scenario reads and folds.
    #[arg(long, default_value_t = 100_000)]
    read_events: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SyncArg {
    Full,
    Normal,
    Off,
}

impl From<SyncArg> for Synchronous {
    fn from(arg: SyncArg) -> Self {
        match arg {
            SyncArg::Full => Self::Full,
            SyncArg::Normal => Self::Normal,
            SyncArg::Off => Self::Off,
        }
    }
}

/// One measured scenario.
struct Measured {
    scenario: String,
    events: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Measured {
    fn row(&self) -> String {
        let per_sec = self.events as f64 / self.elapsed.as_secs_f64();
        format!(
            "| {} | {} | {:.2} | {:.0} | {:.3} | {:.3} |",
            self.scenario,
            self.events,
            self.elapsed.as_secs_f64(),
            per_sec,
            self.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
            self.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// The run with the median throughput (runs are sorted; an even count takes the lower middle).
fn median(mut runs: Vec<Measured>) -> Option<Measured> {
    runs.sort_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
    let middle = runs.len().saturating_sub(1) / 2;
    runs.into_iter().nth(middle)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant histogram bounds are valid")
}

/// A realistic small body: an activation transition with a short diagnostic field.
fn body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "activation_state_changed",
        "to": "sleeping",
        "diagnostic": "bench payload bench payload bench payload"
    }))
    .unwrap_or_default()
}

async fn create_flows(store: &dyn Store, clock: &dyn Clock, count: usize) -> Vec<FlowId> {
    let mut flows = Vec::with_capacity(count);
    for _ in 0..count {
        let flow = FlowId::from_parts(clock.now(), rand::random());
        let created = serde_json::to_vec(&serde_json::json!({
            "type": "flow_created", "kind": "function", "definition": "bench"
        }))
        .unwrap_or_default();
        let batch = AppendBatch {
            flow,
            expected_next_seq: 1,
            events: vec![NewEvent {
                time: clock.now(),
                format: 1,
                body: created,
            }],
            create: Some(NewFlow {
                kind: FlowKind::Function,
                definition: "bench".into(),
                idempotency: None,
            }),
            status: None,
            ready: None,
            timers: Vec::new(),
        };
        if let Err(error) = store.append(batch).await {
            eprintln!("error: creating a flow failed: {error}");
            std::process::exit(1);
        }
        flows.push(flow);
    }
    flows
}

fn one_event(flow: FlowId, next: u64, clock: &dyn Clock, body: &[u8]) -> AppendBatch {
    AppendBatch {
        flow,
        expected_next_seq: next,
        events: vec![NewEvent {
            time: clock.now(),
            format: 1,
            body: body.to_vec(),
        }],
        create: None,
        status: None,
        ready: None,
        timers: Vec::new(),
    }
}

fn open(dir: &std::path::Path, name: &str, sync: Synchronous) -> Arc<dyn Store> {
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    match SqliteStore::open(dir.join(name), Arc::new(SystemClock), options) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}

async fn sequential(
    dir: &std::path::Path,
    sync: Synchronous,
    appends: u64,
    run: usize,
) -> Measured {
    let store = open(dir, &format!("sequential-{run}.db"), sync);
    let clock = SystemClock;
    let flow = create_flows(store.as_ref(), &clock, 1).await[0];
    let body = body();
    let mut latency_us = histogram();
    let start = Instant::now();
    for next in 2..appends + 2 {
        let began = Instant::now();
        if let Err(error) = store.append(one_event(flow, next, &clock, &body)).await {
            eprintln!("error: append failed: {error}");
            std::process::exit(1);
        }
        let _ = latency_us.record(began.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed();
    let _ = store.close().await;
    Measured {
        scenario: "1 writer, sequential, 1 event/commit".into(),
        events: appends,
        elapsed,
        latency_us,
    }
}

async fn concurrent(store: Arc<dyn Store>, flows: usize, seconds: u64) -> Measured {
    let ids = create_flows(store.as_ref(), &SystemClock, flows).await;
    let body = Arc::new(body());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(flows);
    for flow in ids {
        let (store, body) = (store.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let clock = SystemClock;
            let mut latency_us = histogram();
            let mut next = 2;
            while Instant::now() < deadline {
                let began = Instant::now();
                if let Err(error) = store.append(one_event(flow, next, &clock, &body)).await {
                    eprintln!("error: append failed: {error}");
                    std::process::exit(1);
                }
                let _ = latency_us.record(began.elapsed().as_micros() as u64);
                next += 1;
            }
            (next - 2, latency_us)
        }));
    }
    let mut events = 0;
    let mut latency_us = histogram();
    for task in tasks {
        if let Ok((count, histogram)) = task.await {
            events += count;
            let _ = latency_us.add(&histogram);
        }
    }
    let elapsed = start.elapsed();
    let _ = store.close().await;
    Measured {
        scenario: format!("{flows} concurrent flows, 1 event/commit each"),
        events,
        elapsed,
        latency_us,
    }
}

fn main() {
    let cli = Cli::parse();
    let mut builder = if cli.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    match cli.bench {
        Bench::Append(args) => runtime.block_on(append(args)),
        Bench::W1Taskgraph(args) => runtime.block_on(w1_taskgraph(args)),
        Bench::AppendPostgres(args) => runtime.block_on(append_postgres(args)),
        Bench::W1Postgres(args) => runtime.block_on(w1_postgres(args)),
        Bench::W1Worker(args) => runtime.block_on(w1_worker(args)),
        Bench::W1Function(args) => runtime.block_on(w1_function(args)),
        Bench::Sleepers(args) => runtime.block_on(sleepers(args)),
        Bench::Archive(args) => runtime.block_on(archive::archive(args)),
        Bench::Plan(args) => runtime.block_on(plan::plan(args)),
        Bench::Http(args) => runtime.block_on(http::http(args)),
    }
}

/// Writes one flow of `events` events (appends of 1,000), then reads it back with `read_all`
/// and folds it; reports the read-and-fold rate.
async fn read_back(dir: &std::path::Path, sync: Synchronous, events: u64) -> Measured {
    use flowstate_core::machine::ActivationState;
    use flowstate_core::{Event, EventBody};
    let store = open(dir, "read-back.db", sync);
    let clock = SystemClock;
    let flow = FlowId::from_parts(clock.now(), rand::random());
    let mut bodies = Vec::new();
    let created = EventBody::FlowCreated {
        kind: FlowKind::Function,
        definition: "bench".into(),
        input: serde_json::Value::Null,
    };
    bodies.push(created);
    let cycle = [
        ActivationState::Sleeping,
        ActivationState::ActiveReplay,
        ActivationState::ActiveCurrent,
    ];
    for i in 1..events {
        bodies.push(EventBody::ActivationStateChanged {
            to: cycle[usize::try_from((i - 1) % 3).unwrap_or(0)],
            diagnostic: None,
        });
    }
    let mut next = 1;
    for chunk in bodies.chunks(1_000) {
        let encoded = chunk
            .iter()
            .enumerate()
            .map(|(offset, body)| {
                Event {
                    flow,
                    seq: next + offset as u64,
                    time: clock.now(),
                    body: body.clone(),
                }
                .encode()
                .map(|raw| NewEvent {
                    time: raw.time,
                    format: raw.format,
                    body: raw.body,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|error| {
                eprintln!("error: {error}");
                std::process::exit(1)
            });
        let batch = AppendBatch {
            flow,
            expected_next_seq: next,
            events: encoded,
            create: (next == 1).then(|| NewFlow {
                kind: FlowKind::Function,
                definition: "bench".into(),
                idempotency: None,
            }),
            status: None,
            ready: None,
            timers: Vec::new(),
        };
        if let Err(error) = store.append(batch).await {
            eprintln!("error: append failed: {error}");
            std::process::exit(1);
        }
        next += chunk.len() as u64;
    }
    let mut latency_us = histogram();
    let start = Instant::now();
    let read = flowstate_store::read_all(store.as_ref(), flow).await;
    let folded = read.map(|log| flowstate_core::fold(&log, flowstate_core::StopAt::End));
    let elapsed = start.elapsed();
    match folded {
        Ok(Ok(record)) if record.last_seq == events => {}
        other => {
            eprintln!("error: read-back failed: {other:?}");
            std::process::exit(1);
        }
    }
    let _ = latency_us.record(elapsed.as_micros() as u64);
    let _ = store.close().await;
    Measured {
        scenario: format!("read back and fold one {events}-event log"),
        events,
        elapsed,
        latency_us,
    }
}

async fn append(args: AppendArgs) {
    let temp = match tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir)) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    let sync: Synchronous = args.synchronous.into();
    let runs = args.runs.max(1);
    println!(
        "durable appends on SQLite, synchronous={:?}, median of {runs} runs, files in {}",
        args.synchronous,
        temp.path().display()
    );
    println!();
    println!("| scenario | events | seconds | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let mut measured = Vec::new();
    for run in 0..runs {
        measured.push(sequential(temp.path(), sync, args.sequential, run).await);
    }
    print_median(measured);
    for flows in args.flows {
        let mut measured = Vec::new();
        for run in 0..runs {
            let store = open(temp.path(), &format!("concurrent-{flows}-{run}.db"), sync);
            measured.push(concurrent(store, flows, args.seconds).await);
        }
        print_median(measured);
    }
    if args.read_events > 0 {
        print_median(vec![read_back(temp.path(), sync, args.read_events).await]);
    }
}

fn print_median(runs: Vec<Measured>) {
    if let Some(median) = median(runs) {
        println!("{}", median.row());
    }
}

/// A linear flow of `steps` tasks, each `x -> x + 1`.
fn w1_flow(steps: usize) -> flowstate_taskgraph::Flow {
    let mut flow = flowstate_taskgraph::Flow::linear("w1");
    for step in 0..steps {
        let input = if step == 0 {
            "x".to_owned()
        } else {
            format!("x{}", step - 1)
        };
        let key = input.clone();
        let task = flowstate_taskgraph::task_fn(format!("step{step}"), move |_ctx, inputs| {
            let x = inputs
                .get(&key)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
            async move { Ok(serde_json::json!(x + 1)) }
        })
        .requires([input])
        .provides(format!("x{step}"));
        flow = flow.add(task);
    }
    flow
}

fn w1_inputs() -> flowstate_taskgraph::Inputs {
    std::iter::once(("x".to_owned(), serde_json::json!(0))).collect()
}

async fn w1_run(engine: &flowstate_taskgraph::Engine, steps: usize) -> u64 {
    let began = Instant::now();
    match engine.execute("w1", w1_inputs()).await {
        Ok(outcome) if outcome.state == flowstate_core::machine::FlowState::Success => {
            let last = format!("x{}", steps - 1);
            if outcome.results.get(&last) != Some(&serde_json::json!(steps)) {
                eprintln!("error: wrong result {:?}", outcome.results.get(&last));
                std::process::exit(1);
            }
        }
        other => {
            eprintln!("error: flow did not succeed: {other:?}");
            std::process::exit(1);
        }
    }
    began.elapsed().as_micros() as u64
}

async fn w1_taskgraph(args: W1Args) {
    let temp = match tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir)) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    let runs = args.runs.max(1);
    let steps = args.steps.max(1);
    println!(
        "W1 task graphs: flows of {steps} tasks, SQLite synchronous=FULL, median of {runs} runs"
    );
    println!();
    println!("| scenario | flows | steps | seconds | steps/s | flow p50 ms | flow p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut sequential = Vec::new();
    for run in 0..runs {
        let store = open(temp.path(), &format!("w1-seq-{run}.db"), Synchronous::Full);
        let engine = flowstate_taskgraph::Engine::serial(store.clone(), Arc::new(SystemClock));
        engine.register(w1_flow(steps));
        let mut latency_us = histogram();
        let start = Instant::now();
        for _ in 0..args.sequential {
            let _ = latency_us.record(w1_run(&engine, steps).await);
        }
        let elapsed = start.elapsed();
        let _ = store.close().await;
        sequential.push(Measured {
            scenario: format!("sequential, {} flows one at a time", args.sequential),
            events: (args.sequential * steps) as u64,
            elapsed,
            latency_us,
        });
    }
    print_w1(median(sequential), args.sequential);
    let mut concurrent = Vec::new();
    for run in 0..runs {
        let store = open(temp.path(), &format!("w1-conc-{run}.db"), Synchronous::Full);
        let engine = Arc::new(flowstate_taskgraph::Engine::new(
            store.clone(),
            Arc::new(SystemClock),
        ));
        engine.register(w1_flow(steps));
        let mut latency_us = histogram();
        let start = Instant::now();
        for _ in 0..args.batches {
            let mut tasks = Vec::with_capacity(args.concurrent);
            for _ in 0..args.concurrent {
                let engine = engine.clone();
                tasks.push(tokio::spawn(async move { w1_run(&engine, steps).await }));
            }
            for task in tasks {
                if let Ok(micros) = task.await {
                    let _ = latency_us.record(micros);
                }
            }
        }
        let elapsed = start.elapsed();
        let _ = store.close().await;
        concurrent.push(Measured {
            scenario: format!(
                "{} concurrent flows, {} batches",
                args.concurrent, args.batches
            ),
            events: (args.concurrent * args.batches * steps) as u64,
            elapsed,
            latency_us,
        });
    }
    print_w1(median(concurrent), args.concurrent * args.batches);
}

fn print_w1(measured: Option<Measured>, flows: usize) {
    if let Some(m) = measured {
        println!("{}", w1_row(&m, flows));
    }
}

/// `| scenario | flows | steps | seconds | steps/s | flow p50 ms | flow p99 ms |`.
fn w1_row(m: &Measured, flows: usize) -> String {
    format!(
        "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} |",
        m.scenario,
        flows,
        m.events,
        m.elapsed.as_secs_f64(),
        m.per_sec(),
        m.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
        m.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

async fn append_postgres(args: PostgresArgs) {
    println!(
        "durable appends on PostgreSQL at {}, median of {} runs",
        args.url,
        args.runs.max(1)
    );
    println!();
    println!("| scenario | events | seconds | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for flows in &args.flows {
        let mut measured = Vec::new();
        for _ in 0..args.runs.max(1) {
            let schema = format!("flowstate_bench_{:016x}", rand::random::<u64>());
            let store = match flowstate_store_postgres::PostgresStore::connect(
                &args.url,
                Some(&schema),
                Arc::new(SystemClock),
            )
            .await
            {
                Ok(store) => Arc::new(store),
                Err(error) => {
                    eprintln!("error: {error}");
                    std::process::exit(1);
                }
            };
            measured.push(concurrent(store, *flows, args.seconds).await);
            drop_schema(&args.url, &schema).await;
        }
        print_median(measured);
    }
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1);
}

async fn connect_postgres(url: &str, schema: &str) -> Arc<dyn Store> {
    match flowstate_store_postgres::PostgresStore::connect(url, Some(schema), Arc::new(SystemClock))
        .await
    {
        Ok(store) => Arc::new(store),
        Err(error) => fail(error),
    }
}

/// An engine process of `w1-postgres`: a worker running W1 flows, until stdin closes; then
/// it shuts down gracefully and prints its counters.
async fn w1_worker(args: W1WorkerArgs) {
    let postgres = match flowstate_store_postgres::PostgresStore::connect(
        &args.url,
        Some(&args.schema),
        Arc::new(SystemClock),
    )
    .await
    {
        Ok(store) => Arc::new(store),
        Err(error) => fail(error),
    };
    let store: Arc<dyn Store> = postgres.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Arc::new(flowstate_taskgraph::Engine::new(
        store.clone(),
        clock.clone(),
    ));
    engine.register(w1_flow(args.steps));
    let config =
        flowstate_worker::WorkerConfig::new(flowstate_worker::WorkerConfig::process_worker_id())
            .with_max_in_flight(args.in_flight)
            .with_claim_batch(args.in_flight.min(flowstate_core::limits::MAX_CLAIM_BATCH));
    let worker = match flowstate_worker::Worker::new(store.clone(), clock, config) {
        Ok(worker) => Arc::new(worker.with_runner(FlowKind::TaskGraph, engine)),
        Err(error) => fail(error),
    };
    let stop = worker.shutdown_handle();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        stop.shutdown();
    });
    println!("ready");
    match worker.run().await {
        Ok(stats) => {
            let commits = postgres.commit_stats();
            eprintln!(
                "engine process: {} appends in {} groups",
                commits.appends, commits.groups
            );
            println!(
                "stats {}",
                serde_json::to_string(&stats).unwrap_or_default()
            );
        }
        Err(error) => fail(error),
    }
    let _ = store.close().await;
}

/// One child engine process of `w1-postgres`.
struct EngineProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl EngineProcess {
    fn start(args: &W1PostgresArgs, schema: &str) -> Self {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
        let mut child = std::process::Command::new(exe)
            .args(["w1-worker", "--url", &args.url, "--schema", schema])
            .args(["--steps", &args.steps.to_string()])
            .args(["--in-flight", &args.in_flight.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(e));
        let Some(stdout) = child.stdout.take() else {
            fail("no stdout")
        };
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "ready" => {}
            other => fail(format!("engine process did not start: {other:?}")),
        }
        Self { child, lines }
    }

    /// Closes its stdin (a graceful shutdown) and returns its counters line.
    fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix("stats ").map(str::to_owned))
            .unwrap_or_default()
    }
}

async fn count_status(client: &tokio_postgres::Client, schema: &str, status: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.flows WHERE status = $1"),
            &[&status],
        )
        .await
        .map(|row| row.get(0))
        .unwrap_or_else(|e| fail(e))
}

/// W1 on PostgreSQL with N engine processes: the processes start and go idle; then this
/// process submits every flow (recorded ready, which NOTIFYs the idle workers) and waits
/// until all of them succeeded. Throughput is steps over the time from the first submission
/// to the last success; latency is per flow, from its first event to its last.
async fn w1_postgres(args: W1PostgresArgs) {
    let runs = args.runs.max(1);
    println!(
        "W1 on PostgreSQL at {}: {} flows of {} tasks per run, submitted at once to idle engine processes, median of {runs} runs",
        args.url, args.flows, args.steps
    );
    println!();
    println!("| engine processes | flows | steps | seconds | steps/s | flow p50 ms | flow p99 ms | conflicts |");
    println!("|---|---|---|---|---|---|---|---|");
    let (client, connection) = tokio_postgres::connect(&args.url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| fail(e));
    tokio::spawn(connection);
    if args.sequential > 0 {
        let mut measured = Vec::new();
        for _ in 0..runs {
            let schema = format!("flowstate_bench_{:016x}", rand::random::<u64>());
            let store = connect_postgres(&args.url, &schema).await;
            let engine = flowstate_taskgraph::Engine::serial(store.clone(), Arc::new(SystemClock));
            engine.register(w1_flow(args.steps));
            let mut latency_us = histogram();
            let start = Instant::now();
            for _ in 0..args.sequential {
                let _ = latency_us.record(w1_run(&engine, args.steps).await);
            }
            let elapsed = start.elapsed();
            let _ = store.close().await;
            drop_schema(&args.url, &schema).await;
            measured.push(Measured {
                scenario: "sequential: one flow at a time, no worker".into(),
                events: (args.sequential * args.steps) as u64,
                elapsed,
                latency_us,
            });
        }
        if let Some(m) = median(measured) {
            println!("{} 0 |", w1_row(&m, args.sequential));
        }
    }
    for &processes in &args.processes {
        let mut measured = Vec::new();
        let mut conflicts = Vec::new();
        for _ in 0..runs {
            let schema = format!("flowstate_bench_{:016x}", rand::random::<u64>());
            let store = connect_postgres(&args.url, &schema).await;
            let engine = Arc::new(flowstate_taskgraph::Engine::new(
                store.clone(),
                Arc::new(SystemClock),
            ));
            engine.register(w1_flow(args.steps));
            let children: Vec<EngineProcess> = (0..processes)
                .map(|_| EngineProcess::start(&args, &schema))
                .collect();
            let start = Instant::now();
            let mut submits = tokio::task::JoinSet::new();
            for submitter in 0..64 {
                let engine = engine.clone();
                let share = args.flows / 64 + usize::from(submitter < args.flows % 64);
                submits.spawn(async move {
                    for _ in 0..share {
                        if let Err(error) = engine.submit("w1", w1_inputs()).await {
                            fail(error);
                        }
                    }
                });
            }
            while submits.join_next().await.is_some() {}
            while count_status(&client, &schema, "success").await < args.flows as i64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let elapsed = start.elapsed();
            let mut latency_us = histogram();
            let rows = client
                .query(
                    &format!("SELECT updated_at - created_at FROM {schema}.flows"),
                    &[],
                )
                .await
                .unwrap_or_else(|e| fail(e));
            for row in rows {
                let _ = latency_us.record(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
            }
            let stats: Vec<String> = children.into_iter().map(EngineProcess::stop).collect();
            conflicts.push(
                stats
                    .iter()
                    .filter_map(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .filter_map(|v| v.get("conflicts").and_then(serde_json::Value::as_u64))
                    .sum::<u64>(),
            );
            let _ = store.close().await;
            drop_schema(&args.url, &schema).await;
            measured.push(Measured {
                scenario: processes.to_string(),
                events: (args.flows * args.steps) as u64,
                elapsed,
                latency_us,
            });
        }
        if let Some(m) = median(measured) {
            let conflicts = conflicts.iter().max().copied().unwrap_or(0);
            println!("{} {conflicts} |", w1_row(&m, args.flows));
        }
    }
}

/// W1 as a durable function: ten journaled steps, `x -> x + 1`.
async fn w1_durable(ctx: flowstate_durable::Ctx, x: u64) -> Result<u64, flowstate_core::Failure> {
    let mut x = x;
    for step in 0..10 {
        x = ctx
            .step(&format!("step{step}"), |_key| async move { Ok(x + 1) })
            .await?;
    }
    Ok(x)
}

/// A function that replays a long journal of random draws, then waits for a signal.
async fn long_journal(
    ctx: flowstate_durable::Ctx,
    entries: u64,
) -> Result<u64, flowstate_core::Failure> {
    let mut sum = 0u64;
    for _ in 0..entries {
        sum = sum.wrapping_add(ctx.random().await);
    }
    let _: bool = ctx.signal("go").await?;
    Ok(sum)
}

fn functions_on(store: &Arc<dyn Store>) -> flowstate_durable::Functions {
    let functions =
        flowstate_durable::Functions::new(store.clone(), Arc::new(SystemClock), "bench");
    if let Err(error) = functions.register("w1", w1_durable) {
        fail(error);
    }
    if let Err(error) = functions.register("long", long_journal) {
        fail(error);
    }
    functions
}

/// Starts and runs one W1 activation to its end (the worker's runner, called directly).
async fn w1_function_once(functions: &flowstate_durable::Functions) -> u64 {
    use flowstate_worker::FlowRunner;
    let began = Instant::now();
    let flow = functions
        .submit("w1", 0u64)
        .await
        .unwrap_or_else(|e| fail(e));
    if let Err(error) = functions.run(flow).await {
        fail(error);
    }
    match functions.outcome::<u64>(flow).await {
        Ok(Some(Ok(10))) => {}
        other => fail(format!("wrong outcome {other:?}")),
    }
    began.elapsed().as_micros() as u64
}

async fn w1_function(args: W1FunctionArgs) {
    let temp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))
        .unwrap_or_else(|e| fail(e));
    let runs = args.runs.max(1);
    println!("W1 durable functions: 10 ctx.step calls each, SQLite synchronous=FULL, median of {runs} runs");
    println!();
    println!("| scenario | flows | steps | seconds | steps/s | flow p50 ms | flow p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut sequential = Vec::new();
    for run in 0..runs {
        let store = open(temp.path(), &format!("fn-seq-{run}.db"), Synchronous::Full);
        let functions = functions_on(&store);
        let mut latency_us = histogram();
        let start = Instant::now();
        for _ in 0..args.sequential {
            let _ = latency_us.record(w1_function_once(&functions).await);
        }
        let elapsed = start.elapsed();
        let _ = store.close().await;
        sequential.push(Measured {
            scenario: format!("sequential, {} activations one at a time", args.sequential),
            events: (args.sequential * 10) as u64,
            elapsed,
            latency_us,
        });
    }
    print_w1(median(sequential), args.sequential);
    let mut concurrent = Vec::new();
    for run in 0..runs {
        let store = open(temp.path(), &format!("fn-conc-{run}.db"), Synchronous::Full);
        let functions = functions_on(&store);
        let mut latency_us = histogram();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrent {
            let functions = functions.clone();
            tasks.spawn(async move { w1_function_once(&functions).await });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok(micros) = joined {
                let _ = latency_us.record(micros);
            }
        }
        let elapsed = start.elapsed();
        let _ = store.close().await;
        concurrent.push(Measured {
            scenario: format!("{} activations at once", args.concurrent),
            events: (args.concurrent * 10) as u64,
            elapsed,
            latency_us,
        });
    }
    print_w1(median(concurrent), args.concurrent);

    // Replay: a journal of N entries written directly (batches of 1,000), then one run of the
    // activation replays all of it and goes to sleep on its signal.
    println!();
    println!("| replay scenario | entries | seconds | entries/s |");
    println!("|---|---|---|---|");
    let store = open(temp.path(), "replay.db", Synchronous::Full);
    let functions = functions_on(&store);
    let flow = functions
        .submit("long", args.replay_entries as u64)
        .await
        .unwrap_or_else(|e| fail(e));
    let clock = SystemClock;
    let mut writer = flowstate_engine::FlowWriter::load(store.as_ref(), flow)
        .await
        .unwrap_or_else(|e| fail(e));
    let mut written = 0;
    writer
        .stage(
            &clock,
            vec![flowstate_core::EventBody::RunStarted {
                run: 1,
                incarnation: "bench".into(),
            }],
        )
        .unwrap_or_else(|e| fail(e));
    while written < args.replay_entries {
        let batch = (args.replay_entries - written).min(999);
        let bodies = (0..batch)
            .map(|i| flowstate_core::EventBody::JournalEntryRecorded {
                position: (written + i) as u32,
                entry: flowstate_core::JournalEntry::Random { value: i as u64 },
            })
            .collect();
        writer.stage(&clock, bodies).unwrap_or_else(|e| fail(e));
        writer
            .commit(store.as_ref(), flowstate_engine::AppendExtras::default())
            .await
            .unwrap_or_else(|e| fail(e));
        written += batch;
    }
    let events = flowstate_store::read_all(store.as_ref(), flow)
        .await
        .unwrap_or_else(|e| fail(e));
    let folded = Instant::now();
    let record =
        flowstate_core::fold(&events, flowstate_core::StopAt::End).unwrap_or_else(|e| fail(e));
    let fold_seconds = folded.elapsed().as_secs_f64();
    let journal = record.function.map(|f| f.journal).unwrap_or_default();
    let matched = Instant::now();
    let mut replayer = flowstate_core::Replayer::new(&journal);
    for _ in 0..journal.len() {
        let _ = replayer.call(flowstate_core::Call::Random, "");
    }
    let match_seconds = matched.elapsed().as_secs_f64();
    let replayed = Instant::now();
    {
        use flowstate_worker::FlowRunner;
        if let Err(error) = functions.run(flow).await {
            fail(error);
        }
    }
    let run_seconds = replayed.elapsed().as_secs_f64();
    match functions.state(flow).await {
        Ok((flowstate_core::machine::ActivationState::Sleeping, _)) => {}
        other => fail(format!(
            "the replayed activation is {other:?}, not sleeping"
        )),
    }
    let n = journal.len() as f64;
    for (scenario, seconds) in [
        ("fold the log (decode + check every event)", fold_seconds),
        ("match the journal (sans-I/O replayer)", match_seconds),
        (
            "whole activation run: load, fold, replay through ctx, sleep",
            run_seconds,
        ),
    ] {
        println!(
            "| {scenario} | {} | {seconds:.3} | {:.0} |",
            journal.len(),
            n / seconds
        );
    }
    let _ = store.close().await;
}

/// A sleeper: one step, a durable sleep until the common wake time, one more step; `2n + 1`.
async fn sleeper(
    ctx: flowstate_durable::Ctx,
    input: (u64, flowstate_core::Timestamp),
) -> Result<u64, flowstate_core::Failure> {
    let (n, wake_at) = input;
    let doubled = ctx
        .step("before", |_key| async move { Ok(n.saturating_mul(2)) })
        .await?;
    ctx.sleep_until(wake_at).await;
    ctx.step("after", |_key| async move { Ok(doubled + 1) })
        .await
}

/// A field of `/proc/self/status` (`VmRSS`, `RssAnon`, ...) in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let kb = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = kb.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    proc_status_bytes("VmRSS").unwrap_or_else(|| fail("no VmRSS in /proc/self/status"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Samples the resident memory every 100 ms and keeps the largest since the last `take`.
struct RssSampler {
    peak: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let peak = Arc::new(AtomicU64::new(rss()));
        let task = tokio::spawn({
            let peak = peak.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    every.tick().await;
                    if let Some(now) = proc_status_bytes("VmRSS") {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { peak, task }
    }

    /// The peak since the last call (or the start); starts a new period from now.
    fn take(&self) -> u64 {
        let now = rss();
        self.peak
            .swap(now, std::sync::atomic::Ordering::Relaxed)
            .max(now)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sleepers in one activation state, from a walk over the flow list.
struct Census {
    count: usize,
    first_update: Option<flowstate_core::Timestamp>,
    last_update: Option<flowstate_core::Timestamp>,
    /// Microseconds from `since` to each one's last event (when asked for).
    since_us: Histogram<u64>,
}

async fn census(
    store: &dyn Store,
    state: flowstate_core::machine::ActivationState,
    since: Option<flowstate_core::Timestamp>,
) -> Census {
    let mut query = flowstate_store::FlowQuery {
        kind: Some(FlowKind::Function),
        definition: Some("sleeper".into()),
        status: Some(flowstate_core::Machine::key(state).to_owned()),
        limit: flowstate_core::limits::MAX_PAGE_SIZE,
        ..flowstate_store::FlowQuery::default()
    };
    let mut census = Census {
        count: 0,
        first_update: None,
        last_update: None,
        // 1 µs to 1 hour.
        since_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid"),
    };
    loop {
        let page = store.list(&query).await.unwrap_or_else(|e| fail(e));
        for flow in &page.flows {
            census.count += 1;
            census.first_update = Some(
                census
                    .first_update
                    .map_or(flow.updated_at, |first| first.min(flow.updated_at)),
            );
            census.last_update = census.last_update.max(Some(flow.updated_at));
            if let Some(since) = since {
                let us = flow
                    .updated_at
                    .as_micros()
                    .saturating_sub(since.as_micros());
                let _ = census
                    .since_us
                    .record(u64::try_from(us).unwrap_or(0).max(1));
            }
        }
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return census,
        }
    }
}

/// Waits until all `n` sleepers are in `state` and the worker has no run in flight. Watches
/// the worker's counters (cheap) until it has settled `n` runs more than `baseline`, then
/// walks the flow list to confirm (a walk reads every flow row: too dear to repeat often
/// while the store is busy). Fails if that takes past `deadline`.
async fn wait_for_all(
    store: &Arc<dyn Store>,
    worker: &flowstate_worker::Worker,
    state: flowstate_core::machine::ActivationState,
    n: usize,
    baseline: u64,
    since: Option<flowstate_core::Timestamp>,
    deadline: Option<flowstate_core::Timestamp>,
) -> Census {
    let mut progress = (0, Instant::now());
    loop {
        if deadline.is_some_and(|deadline| SystemClock.now() >= deadline) {
            let census = census(store.as_ref(), state, since).await;
            fail(format!(
                "only {} of {n} were {state:?} when the timers came due; pass a longer --sleep-seconds",
                census.count
            ));
        }
        let stats = worker.stats();
        if stats.completed.saturating_sub(baseline) >= n as u64 && runs_in_flight(worker) == 0 {
            let census = census(store.as_ref(), state, since).await;
            if census.count == n {
                return census;
            }
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        let moved = stats.completed + stats.parked + stats.timers_fired + stats.claimed;
        if moved > progress.0 {
            progress = (moved, Instant::now());
        } else if progress.1.elapsed() > Duration::from_secs(60) {
            let census = census(store.as_ref(), state, since).await;
            fail(format!(
                "stuck for 60 s: {} of {n} are {state:?}; worker {stats:?}",
                census.count
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs (claimed and not settled) in the worker, from its counters.
fn runs_in_flight(worker: &flowstate_worker::Worker) -> u64 {
    let stats = worker.stats();
    stats
        .claimed
        .saturating_sub(stats.completed + stats.parked + stats.leases_lost)
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn seconds_between(from: flowstate_core::Timestamp, to: flowstate_core::Timestamp) -> f64 {
    to.as_micros().saturating_sub(from.as_micros()) as f64 / 1e6
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✔"
    } else {
        "✘"
    }
}

/// The memory benchmark: N activations of `sleeper` started at once and run by a
/// worker until every one sleeps on a durable timer, all due at the same time T; resident
/// memory before and with all asleep; then the time from T until all of them are done.
async fn sleepers(args: SleepersArgs) {
    use flowstate_core::machine::ActivationState;
    let before = rss();
    let n = args.activations.max(1);
    let sleep = Duration::from_secs(args.sleep_seconds.unwrap_or(10 + (n / 2_000) as u64));
    let temp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))
        .unwrap_or_else(|e| fail(e));
    let path = temp.path().join("sleepers.db");
    let store = open(temp.path(), "sleepers.db", Synchronous::Full);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let functions = flowstate_durable::Functions::new(
        store.clone(),
        clock.clone(),
        format!("bench-{}", std::process::id()),
    );
    if let Err(error) = functions.register("sleeper", sleeper) {
        fail(error);
    }
    if let Err(error) = functions.wake_all().await {
        fail(error);
    }
    let in_flight = args.in_flight.max(1);
    let claim_batch = in_flight.min(flowstate_core::limits::MAX_CLAIM_BATCH);
    let config =
        flowstate_worker::WorkerConfig::new(flowstate_worker::WorkerConfig::process_worker_id())
            .with_max_in_flight(in_flight)
            .with_claim_batch(claim_batch);
    let worker = match flowstate_worker::Worker::new(store.clone(), clock.clone(), config) {
        Ok(worker) => Arc::new(worker.with_runner(FlowKind::Function, Arc::new(functions.clone()))),
        Err(error) => fail(error),
    };
    let working = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    let sampler = RssSampler::start();

    // Start every activation (64 submitters; group commit batches their appends) while the
    // worker runs them to their sleep. Only a sample of ids is kept, to be checked at the end.
    let began = Instant::now();
    let first_start = clock.now();
    let wake_at = first_start.saturating_add(sleep);
    let spread_us = args.spread_ms.saturating_mul(1_000);
    let every = (n / args.check.max(1)).max(1);
    let mut submitters = tokio::task::JoinSet::new();
    const SUBMITTERS: usize = 64;
    for submitter in 0..SUBMITTERS {
        let functions = functions.clone();
        submitters.spawn(async move {
            let mut sample = Vec::new();
            for i in (submitter..n).step_by(SUBMITTERS) {
                let offset = u128::from(spread_us) * i as u128 / n as u128;
                let due = wake_at.saturating_add(Duration::from_micros(offset as u64));
                let flow = functions
                    .submit("sleeper", (i as u64, due))
                    .await
                    .unwrap_or_else(|e| fail(e));
                if i % every == 0 {
                    sample.push((i as u64, flow));
                }
            }
            sample
        });
    }
    let mut sample = Vec::new();
    while let Some(joined) = submitters.join_next().await {
        sample.extend(joined.unwrap_or_else(|e| fail(e)));
    }
    let started_seconds = began.elapsed().as_secs_f64();

    // Until every activation sleeps and the worker has settled every run.
    let asleep = wait_for_all(
        &store,
        &worker,
        ActivationState::Sleeping,
        n,
        0,
        None,
        Some(wake_at),
    )
    .await;
    let asleep_seconds = began.elapsed().as_secs_f64();
    let all_asleep_at = asleep.last_update.unwrap_or(first_start);
    let asleep_in_time = all_asleep_at < wake_at && clock.now() < wake_at;
    // Let the last releases and reads finish, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asleep_rss = rss();
    let asleep_anon = proc_status_bytes("RssAnon").unwrap_or(0);
    let starting_peak = sampler.take();
    let db_bytes = file_len(&path);
    let wal_bytes = file_len(&temp.path().join("sleepers.db-wal"));
    let before_wake = worker.stats();

    // Wait for T, then until every activation is done.
    let until_t = wake_at.as_micros().saturating_sub(clock.now().as_micros());
    tokio::time::sleep(Duration::from_micros(u64::try_from(until_t).unwrap_or(0))).await;
    let _ = sampler.take();
    let done = wait_for_all(
        &store,
        &worker,
        ActivationState::Done,
        n,
        before_wake.completed,
        Some(wake_at),
        None,
    )
    .await;
    let wake_peak = sampler.take();
    let after_wake_rss = rss();
    let woke_early = done.first_update.is_some_and(|first| first < wake_at);
    let wake_seconds = seconds_between(wake_at, done.last_update.unwrap_or(wake_at));
    let mut right = 0;
    for (i, flow) in &sample {
        match functions.outcome::<u64>(*flow).await {
            Ok(Some(Ok(value))) if value == 2 * i + 1 => right += 1,
            other => eprintln!("error: activation {i} ({flow}) ended with {other:?}"),
        }
    }
    let stats = worker.stats();
    worker.shutdown_handle().shutdown();
    match working.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => fail(error),
        Err(error) => fail(error),
    }
    drop(sampler);
    let _ = store.close().await;

    let added = asleep_rss.saturating_sub(before);
    let due = if spread_us == 0 {
        "all due at the same time T".to_owned()
    } else {
        format!("due evenly over {} ms from T", args.spread_ms)
    };
    println!(
        "Sleeping durable functions on SQLite (synchronous=FULL): {n} activations of `step; sleep_until(T + spread); step`, {due}, T = {} s after the first start; worker with max_in_flight {in_flight}, claims of {claim_batch}; {} driver threads; MB = 10^6 bytes",
        sleep.as_secs(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    );
    println!();
    println!("| measure | value | target | |");
    println!("|---|---|---|---|");
    println!(
        "| started (recorded ready) | {n} in {started_seconds:.1} s ({:.0}/s) | | |",
        n as f64 / started_seconds
    );
    println!(
        "| all asleep (started, run, slept, released) | after {asleep_seconds:.1} s ({:.0}/s); last fell asleep {:.1} s before T | before T | {} |",
        n as f64 / asleep_seconds,
        seconds_between(all_asleep_at, wake_at),
        mark(asleep_in_time)
    );
    println!(
        "| resident memory before (VmRSS) | {:.1} MB | | |",
        mb(before)
    );
    println!(
        "| resident memory, all asleep, worker idle | {:.1} MB (anonymous {:.1} MB) | | |",
        mb(asleep_rss),
        mb(asleep_anon)
    );
    println!(
        "| **added while asleep** | **{:.1} MB** ({:.0} bytes per activation) | < 100 MB | {} |",
        mb(added),
        added as f64 / n as f64,
        mark(added < 100_000_000)
    );
    println!(
        "| peak resident memory while starting | {:.1} MB | | |",
        mb(starting_peak)
    );
    println!(
        "| SQLite file + WAL, all asleep | {:.1} MB + {:.1} MB ({:.0} bytes per activation) | | |",
        mb(db_bytes),
        mb(wal_bytes),
        (db_bytes + wal_bytes) as f64 / n as f64
    );
    println!(
        "| all done after T (woken, replayed, stepped, returned) | {wake_seconds:.1} s; {} | none before T | {} |",
        if woke_early {
            "some were done before T"
        } else {
            "none before T"
        },
        mark(!woke_early)
    );
    println!(
        "| wake throughput | {:.0} activations/s | | |",
        n as f64 / wake_seconds.max(1e-6)
    );
    println!(
        "| done after T, p50 / p99 / max | {:.2} s / {:.2} s / {:.2} s | | |",
        done.since_us.value_at_quantile(0.50) as f64 / 1e6,
        done.since_us.value_at_quantile(0.99) as f64 / 1e6,
        done.since_us.max() as f64 / 1e6
    );
    println!(
        "| peak resident memory during the wake | {:.1} MB (after: {:.1} MB) | | |",
        mb(wake_peak),
        mb(after_wake_rss)
    );
    println!(
        "| outcomes | {} of {n} done; {right} of {} sampled outcomes are 2n+1 | all | {} |",
        done.count,
        sample.len(),
        mark(done.count == n && right == sample.len())
    );
    println!(
        "| worker counters, until all asleep / in all: claims, conflicts, parked, timers fired | {}, {}, {}, {} / {}, {}, {}, {} | | |",
        before_wake.claimed,
        before_wake.conflicts,
        before_wake.parked,
        before_wake.timers_fired,
        stats.claimed,
        stats.conflicts,
        stats.parked,
        stats.timers_fired
    );
}
