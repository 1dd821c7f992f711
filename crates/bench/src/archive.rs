//! `flowstate-bench archive`: archive throughput, in flows per second, from SQLite
//! (`synchronous=FULL`) to a local directory (every file and its directory fsynced).
//!
//! Each run fills a new store with deactivated plan flows of a one-step plan (created,
//! planned, the step started, its work started and succeeded, its output set, the step
//! completed, the plan completed and deactivated: 9 events, about 1.8 KB as an archive
//! file), then times one archive pass over all of them: mark each `archived`, write its
//! file, read it back and verify it, delete it from the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_archive::{ArchiveAccess, ArchivePolicy, ArchiveStore, Archiver};
use flowstate_core::machine::PlanState;
use flowstate_core::{fold, Clock, FlowId, FlowKind, FlowStatus, RawEvent, StopAt};
use flowstate_store::{AppendBatch, NewEvent, NewFlow, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

#[derive(clap::Args, Debug)]
pub(crate) struct ArchiveArgs {
    /// Directory for the database files and archives (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Deactivated flows archived in each run.
    #[arg(long, default_value_t = 10_000)]
    flows: usize,
    /// Batch sizes to measure (flows archived together).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    batch: Vec<usize>,
    /// Runs of each batch size; the table shows the run with the median throughput.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1);
}

/// The bodies of one flow's log: a one-step plan from creation to deactivation.
fn plan_log(n: usize) -> Vec<serde_json::Value> {
    use serde_json::json;
    let order = json!({
        "order": format!("order-{n:08}"),
        "customer": "c-0042",
        "lines": [{"sku": "A-1", "qty": 2, "price": 1250}, {"sku": "B-7", "qty": 1, "price": 4990}],
        "currency": "EUR"
    });
    let receipt = json!({"receipt": format!("r-{n:08}"), "charged": 7490, "currency": "EUR", "provider": "bench"});
    vec![
        json!({"type": "flow_created", "kind": "plan", "definition": "checkout", "input": order}),
        json!({"type": "plan_started", "plan": {
            "goals": [{"goal": "attribute", "name": "receipt"}],
            "steps": {"charge": {"name": "charge", "version": 1, "inputs": [{"name": "order"}], "outputs": ["receipt"]}},
            "providers": {},
            "inputs": ["order"]
        }}),
        json!({"type": "step_started", "step": "charge", "inputs": {"order": order}, "items": 1}),
        json!({"type": "work_started", "step": "charge", "item": 0, "attempt": 1}),
        json!({"type": "work_succeeded", "step": "charge", "item": 0, "attempt": 1, "outputs": receipt}),
        json!({"type": "attribute_set", "name": "receipt", "value": receipt["receipt"], "step": "charge", "attempt": 1}),
        json!({"type": "step_completed", "step": "charge"}),
        json!({"type": "plan_state_changed", "to": "completed"}),
        json!({"type": "plan_state_changed", "to": "deactivated"}),
    ]
}

fn encoded(n: usize, clock: &dyn Clock) -> Vec<NewEvent> {
    plan_log(n)
        .iter()
        .map(|body| NewEvent {
            time: clock.now(),
            format: flowstate_core::EVENT_FORMAT_VERSION,
            body: serde_json::to_vec(body).unwrap_or_default(),
        })
        .collect()
}

/// Checks once that the log folds to a deactivated plan (the archiver refuses anything else).
fn check_log() {
    let clock = SystemClock;
    let flow = FlowId::from_parts(clock.now(), [0; 10]);
    let raw: Vec<RawEvent> = encoded(0, &clock)
        .into_iter()
        .enumerate()
        .map(|(i, event)| RawEvent {
            flow,
            seq: i as u64 + 1,
            time: event.time,
            format: event.format,
            body: event.body,
        })
        .collect();
    match fold(&raw, StopAt::End) {
        Ok(record) if record.status == FlowStatus::Plan(PlanState::Deactivated) => {}
        Ok(record) => fail(format!("the bench log folds to {}", record.status)),
        Err(error) => fail(format!("the bench log does not fold: {error}")),
    }
}

/// A new store holding `flows` deactivated plan flows, created 512 at a time (one append of
/// the whole log each, group-committed).
async fn fill(path: &Path, flows: usize) -> Arc<dyn Store> {
    let store: Arc<dyn Store> =
        match SqliteStore::open(path, Arc::new(SystemClock), SqliteOptions::default()) {
            Ok(store) => Arc::new(store),
            Err(error) => fail(error),
        };
    let mut n = 0;
    while n < flows {
        let mut tasks = Vec::new();
        for n in n..(n + 512).min(flows) {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let clock = SystemClock;
                let batch = AppendBatch {
                    flow: FlowId::from_parts(clock.now(), rand::random()),
                    expected_next_seq: 1,
                    events: encoded(n, &clock),
                    create: Some(NewFlow {
                        kind: FlowKind::Plan,
                        definition: "checkout".into(),
                        idempotency: None,
                    }),
                    status: Some(FlowStatus::Plan(PlanState::Deactivated)),
                    ready: None,
                    timers: Vec::new(),
                };
                store.append(batch).await
            }));
        }
        for task in tasks {
            match task.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => fail(error),
                Err(error) => fail(error),
            }
        }
        n = (n + 512).min(flows);
    }
    store
}

struct Run {
    elapsed: Duration,
    archived: u64,
    events: u64,
    bytes: u64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.archived as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) async fn archive(args: ArchiveArgs) {
    let temp = match tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir)) {
        Ok(dir) => dir,
        Err(error) => fail(error),
    };
    check_log();
    let runs = args.runs.max(1);
    println!(
        "archive: {} deactivated plan flows (9 events each) from SQLite synchronous=FULL to a local directory (fsynced), median of {runs} runs, files in {}",
        args.flows,
        temp.path().display()
    );
    println!();
    println!("| batch | flows | events written | seconds | flows/s | MB written |");
    println!("|---|---|---|---|---|---|");
    for batch_size in args.batch {
        let mut measured = Vec::new();
        for run in 0..runs {
            let store = fill(
                &temp.path().join(format!("archive-{batch_size}-{run}.db")),
                args.flows,
            )
            .await;
            let dir = temp.path().join(format!("archive-{batch_size}-{run}"));
            let archive = match ArchiveStore::open(
                &dir.display().to_string(),
                ArchiveAccess::CreateIfMissing,
            ) {
                Ok(archive) => archive,
                Err(error) => fail(error),
            };
            let policy = ArchivePolicy {
                max_age: Duration::ZERO,
                batch_size,
                ..ArchivePolicy::default()
            };
            let archiver =
                match Archiver::new(store.clone(), archive, policy, Arc::new(SystemClock)) {
                    Ok(archiver) => archiver,
                    Err(error) => fail(error),
                };
            let start = Instant::now();
            let report = match archiver.run_once().await {
                Ok(report) => report,
                Err(error) => fail(error),
            };
            let elapsed = start.elapsed();
            if let Some(failure) = report.failed.first() {
                fail(format!(
                    "{} flows failed; first: {}",
                    report.failed.len(),
                    failure.error
                ));
            }
            if report.archived != args.flows as u64 {
                fail(format!(
                    "archived {} of {} flows",
                    report.archived, args.flows
                ));
            }
            let _ = store.close().await;
            measured.push(Run {
                elapsed,
                archived: report.archived,
                events: report.events,
                bytes: report.bytes,
            });
        }
        measured.sort_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
        if let Some(m) = measured.get(measured.len().saturating_sub(1) / 2) {
            println!(
                "| {batch_size} | {} | {} | {:.2} | **{:.0}** | {:.1} |",
                m.archived,
                m.events,
                m.elapsed.as_secs_f64(),
                m.per_sec(),
                m.bytes as f64 / 1e6
            );
        }
    }
}
