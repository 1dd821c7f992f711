//! Several engine processes share one PostgreSQL database: 3 real processes run 2,000
//! task-graph flows of three shapes; one is SIGKILLed mid-run and a new one started later,
//! and another is stopped gracefully (SIGTERM) mid-run. Every flow ends in its expected
//! state, no step result is recorded twice, every log folds cleanly, the dead process's flows
//! were taken over (they show RESUMING), a step ran twice only if its process was killed
//! while it ran (and then with the same idempotency key), and nothing is left leased or
//! ready.
//!
//! (Plans and durable functions join this test as those kinds land.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::fold::Folder;
use flowstate_core::machine::{FlowState, TaskState};
use flowstate_core::{Clock, Event, EventBody, FlowId, FlowStatus};
use flowstate_store::{read_all, Store, SystemClock};
use flowstate_store_postgres::testing::{test_database, TestSchema};
use flowstate_store_postgres::PostgresStore;
use flowstate_taskgraph::Engine;
use flowstate_worker::WorkerStats;

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-engine-process");
const FLOWS: usize = 2_000;
const PROCESSES: usize = 3;

/// One engine process; SIGKILLed by the test or stopped with SIGTERM.
struct Process {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    fn start(schema: &TestSchema, executions: &std::path::Path) -> Self {
        let mut child = Command::new(CHILD)
            .args([&schema.url, &schema.name])
            .env("FLOWSTATE_LEASE_MS", "2000")
            .env("FLOWSTATE_POLL_MS", "250")
            .env("FLOWSTATE_EXEC_LOG", executions)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start an engine process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the process starts");
        assert_eq!(ready, "ready");
        Self { child, lines }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful shutdown; returns its counters.
    fn stop(mut self) -> WorkerStats {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "graceful exit: {status}");
        let stats = self
            .lines
            .iter()
            .find_map(|line| line.strip_prefix("stats ").map(str::to_owned))
            .expect("stats line");
        serde_json::from_str::<serde_json::Value>(&stats)
            .ok()
            .and_then(|v| {
                Some(WorkerStatsLite {
                    completed: v.get("completed")?.as_u64()?,
                    conflicts: v.get("conflicts")?.as_u64()?,
                    leases_lost: v.get("leases_lost")?.as_u64()?,
                })
            })
            .map(|lite| {
                let mut stats = WorkerStats::default();
                stats.completed = lite.completed;
                stats.conflicts = lite.conflicts;
                stats.leases_lost = lite.leases_lost;
                stats
            })
            .expect("stats parse")
    }
}

struct WorkerStatsLite {
    completed: u64,
    conflicts: u64,
    leases_lost: u64,
}

async fn finished(client: &tokio_postgres::Client, schema: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.flows WHERE status IN ('success', 'reverted', 'failure')"),
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

async fn wait_until_finished(client: &tokio_postgres::Client, schema: &str, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while finished(client, schema).await < at_least {
        assert!(Instant::now() < deadline, "flows did not finish in 300 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_work_and_survive_a_sigkill() {
    let Some(url) = test_database().await else {
        return;
    };
    let schema = TestSchema::new(&url, "flowstate_mp");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&url, Some(&schema.name), clock.clone())
            .await
            .expect("connect"),
    );
    let engine = Arc::new(Engine::new(store.clone(), clock));
    let definitions = flowstate_testkit::mix::definitions(&Default::default());
    let expected: HashMap<String, FlowState> = definitions
        .iter()
        .map(|(flow, state)| (flow.name().to_owned(), *state))
        .collect();
    let names: Vec<String> = definitions
        .iter()
        .map(|(f, _)| f.name().to_owned())
        .collect();
    for (definition, _) in definitions {
        engine.register(definition);
    }
    let mut submits = tokio::task::JoinSet::new();
    for index in 0..FLOWS {
        let (engine, name) = (engine.clone(), names[index % names.len()].clone());
        submits.spawn(async move {
            let flow = engine
                .submit(&name, flowstate_testkit::mix::inputs())
                .await
                .expect("submit");
            (flow, name)
        });
    }
    let mut flows: Vec<(FlowId, String)> = Vec::with_capacity(FLOWS);
    while let Some(joined) = submits.join_next().await {
        flows.push(joined.expect("submitted"));
    }

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let logs = tempfile::tempdir().expect("dir");
    let log = |n: usize| logs.path().join(format!("process-{n}.log"));
    let mut processes: Vec<Process> = (0..PROCESSES)
        .map(|n| Process::start(&schema, &log(n)))
        .collect();
    // SIGKILL one process mid-run (it holds up to 256 flows in flight), start another later.
    wait_until_finished(&client, &schema.name, (FLOWS / 5) as i64).await;
    processes.remove(1).kill();
    let killed_at = finished(&client, &schema.name).await;
    wait_until_finished(&client, &schema.name, (FLOWS * 9 / 20) as i64).await;
    processes.push(Process::start(&schema, &log(PROCESSES)));
    // Stop one gracefully mid-run: its runs finish (or are handed back) and it exits 0.
    wait_until_finished(&client, &schema.name, (FLOWS * 13 / 20) as i64).await;
    let stopped = processes.remove(0).stop();
    wait_until_finished(&client, &schema.name, FLOWS as i64).await;
    // A flow the killed process finished but never released is still ready; once its lease
    // runs out a survivor claims it, finds nothing to do, and releases it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {}.flows WHERE ready", schema.name),
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if ready == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{ready} flows still ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stats: Vec<WorkerStats> = processes.into_iter().map(Process::stop).collect();
    stats.insert(0, stopped);
    println!(
        "killed at {killed_at} finished flows; (completed, conflicts, leases lost) of the stopped, surviving and new processes: {:?}",
        stats
            .iter()
            .map(|s| (s.completed, s.conflicts, s.leases_lost))
            .collect::<Vec<_>>()
    );

    // How often each step really ran, in any process.
    let mut executions: HashMap<String, usize> = HashMap::new();
    for n in 0..=PROCESSES {
        for line in std::fs::read_to_string(log(n)).unwrap_or_default().lines() {
            *executions.entry(line.to_owned()).or_default() += 1;
        }
    }
    let mut resumed_flows = std::collections::HashSet::new();
    let mut resumed = 0;
    for (flow, name) in &flows {
        let summary = store.flow(*flow).await.expect("flow").expect("exists");
        assert_eq!(
            summary.status,
            FlowStatus::TaskGraph(expected[name]),
            "{name} flow {flow}"
        );
        assert!(!summary.ready, "flow {flow} left ready");
        let events = read_all(store.as_ref(), *flow).await.expect("read");
        let mut folder = Folder::new();
        let mut successes: HashMap<String, usize> = HashMap::new();
        for raw in &events {
            folder
                .apply_raw(raw)
                .unwrap_or_else(|e| panic!("flow {flow} does not fold: {e}"));
            match Event::decode(raw).expect("decodes").body {
                EventBody::TaskStateChanged {
                    atom,
                    to: TaskState::Success,
                    ..
                } => *successes.entry(atom).or_default() += 1,
                EventBody::FlowStateChanged {
                    to: FlowState::Resuming,
                } => {
                    resumed += 1;
                    resumed_flows.insert(flow.to_string());
                }
                _ => {}
            }
        }
        for (atom, count) in successes {
            assert_eq!(count, 1, "flow {flow}: {atom} recorded {count} results");
            assert!(
                executions.contains_key(&format!("{flow}/{atom}/1 execute")),
                "flow {flow}: {atom} succeeded without running"
            );
        }
    }
    let mut twice = 0;
    for (key, count) in &executions {
        assert!(*count <= 2, "{key} ran {count} times");
        if *count == 2 {
            twice += 1;
            let flow = key.split('/').next().unwrap_or_default();
            assert!(
                resumed_flows.contains(flow),
                "{key} ran twice in a flow that was never taken over"
            );
        }
    }
    println!("{twice} steps ran twice (in flight in the killed process), each with one key");
    assert!(
        resumed > 0,
        "the killed process's flows were taken over through RESUMING"
    );
    println!("{resumed} flows were taken over from the killed process");
    let leased: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.flows WHERE lease_owner IS NOT NULL",
                schema.name
            ),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(leased, 0, "every lease released at shutdown");
    store.close().await.expect("close");
}
