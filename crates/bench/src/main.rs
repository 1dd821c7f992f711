//! `flowstate-bench`: measures flowstate on this machine and prints Markdown tables for
//! BENCHMARKS.md. Speed is measured here, never asserted in tests.
//!
//! `flowstate-bench append` measures durable appends on SQLite: one sequential writer with
//! one event per commit, then 64 and 1,024 concurrent flows each appending one event per
//! commit (group commit batches them). Every append is acknowledged only after its commit.

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
    match engine.start("w1", w1_inputs()).await {
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
        .start("w1", 0u64)
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
        .start("long", args.replay_entries as u64)
        .await
        .unwrap_or_else(|e| fail(e));
    let clock = SystemClock;
    let mut writer = flowstate_store::FlowWriter::load(store.as_ref(), flow)
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
            .commit(store.as_ref(), flowstate_store::AppendExtras::default())
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
