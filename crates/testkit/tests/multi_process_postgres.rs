//! Several engine processes share one PostgreSQL database: 3 real processes run 2,000
//! task-graph flows of three shapes; one is SIGKILLed mid-run and a new one started later,
//! and another is stopped gracefully (SIGTERM) mid-run. Every flow ends in its expected
//! state, no step result is recorded twice, every log folds cleanly, the dead process's flows
//! were taken over (they show RESUMING), a step ran twice only if its process was killed
//! while it ran (and then with the same idempotency key), and nothing is left leased or
//! ready.
//!
//! The same with 300 durable-function activations (`flowstate_testkit::functions`), whose
//! wake-ups cross processes: a timer set by one process is fired by any, a child's end is
//! delivered by whichever process ran the child, and signals come from the test. Every
//! activation and every child ends with the value (or failure) its input says, every
//! journaled step ran (at most twice, and twice only if the killed process ran it once),
//! and nothing is left leased, ready or waiting on a timer.
//!
//! (Plans join this test as they land.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::fold::Folder;
use flowstate_core::machine::{ActivationState, FlowState, TaskState};
use flowstate_core::{
    fold, Clock, Event, EventBody, FlowId, FlowKind, FlowStatus, JournalEntry, StopAt,
};
use flowstate_durable::{FunctionError, Functions};
use flowstate_engine::FlowWriter;
use flowstate_store::{read_all, FlowQuery, Store, SystemClock};
use flowstate_store_postgres::testing::{test_database, TestSchema};
use flowstate_store_postgres::PostgresStore;
use flowstate_taskgraph::Engine;

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

    /// The process id, which the worker id (and so the incarnation of its runs) names.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful shutdown; returns its counters.
    fn stop(mut self) -> Counters {
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
        let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats parse");
        let counter = |name: &str| {
            stats
                .get(name)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_else(|| panic!("no {name} in {stats}"))
        };
        Counters {
            completed: counter("completed"),
            conflicts: counter("conflicts"),
            leases_lost: counter("leases_lost"),
            parked: counter("parked"),
            timers_fired: counter("timers_fired"),
            aborted_at_shutdown: counter("aborted_at_shutdown"),
        }
    }
}

/// A stopped process's worker counters (`flowstate_worker::WorkerStats`, as it printed them).
#[derive(Debug)]
struct Counters {
    completed: u64,
    conflicts: u64,
    leases_lost: u64,
    parked: u64,
    timers_fired: u64,
    aborted_at_shutdown: u64,
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

/// The tests of this file run one after the other: each keeps a machine's cores busy with
/// its processes, and their kills are timed on their own progress.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_work_and_survive_a_sigkill() {
    let _alone = ONE_AT_A_TIME.lock().await;
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
    wait_until_none_ready(&client, &schema.name).await;
    let mut stats: Vec<Counters> = processes.into_iter().map(Process::stop).collect();
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

/// Activations of `fn_order` started.
const ACTIVATIONS: u64 = 300;

/// Activations the killed process is to be running when it is killed (unless it never
/// runs that many before most orders are done).
const BUSY_AT_KILL: i64 = 5;

/// Time between two starts: the activations are at every stage at once when the kill comes.
const START_EVERY: Duration = Duration::from_millis(10);

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect("count").get(0)
}

/// Activations of `fn_order` that are done.
async fn orders_done(client: &tokio_postgres::Client, schema: &str) -> i64 {
    count(
        client,
        &format!(
            "SELECT count(*) FROM {schema}.flows WHERE definition = 'fn_order' AND status = 'done'"
        ),
    )
    .await
}

async fn wait_for_orders(client: &tokio_postgres::Client, schema: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = orders_done(client, schema).await;
        if done >= at_least as i64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {at_least} orders done after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no flow is ready: a flow the killed process ran but never released stays
/// ready until its lease runs out and a survivor claims it, finds nothing to do, and
/// releases it.
async fn wait_until_none_ready(client: &tokio_postgres::Client, schema: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = count(
            client,
            &format!("SELECT count(*) FROM {schema}.flows WHERE ready"),
        )
        .await;
        if ready == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{ready} flows still ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a durable function's log says, beyond its folded record.
#[derive(Default)]
struct Journaled {
    /// The idempotency keys of its journaled steps, with how often each was recorded.
    steps: HashMap<String, usize>,
    /// The children it started: kind, definition, id.
    children: Vec<(FlowKind, String, FlowId)>,
    /// The signals it consumed.
    signals: Vec<serde_json::Value>,
    /// Runs opened on a run that never closed (its process died, or it lost a race to a
    /// delivery): the activation went from active current straight to sleeping and replay.
    takeovers: usize,
}

/// Reads a durable function's log: the key of each journaled effect is `FLOW/INDEX`, or
/// `FLOW/BRANCH/INDEX` in a concurrent branch, INDEX counting the branch's entries.
fn journaled(flow: FlowId, events: &[flowstate_core::RawEvent]) -> Journaled {
    let mut seen = Journaled::default();
    let mut lanes: HashMap<String, u32> = HashMap::new();
    let mut previous: Option<EventBody> = None;
    for raw in events {
        let body = Event::decode(raw).expect("decodes").body;
        let recorded = match &body {
            EventBody::JournalEntryRecorded { entry, .. } => Some((String::new(), entry)),
            EventBody::BranchEntryRecorded { branch, entry, .. } => Some((branch.clone(), entry)),
            _ => None,
        };
        if let Some((lane, entry)) = recorded {
            let index = lanes.entry(lane.clone()).or_default();
            let key = if lane.is_empty() {
                format!("{flow}/{index}")
            } else {
                format!("{flow}/{lane}/{index}")
            };
            *index += 1;
            match entry {
                JournalEntry::Step { .. } => *seen.steps.entry(key).or_default() += 1,
                JournalEntry::ChildStarted {
                    kind,
                    definition,
                    child,
                } => seen.children.push((*kind, definition.clone(), *child)),
                JournalEntry::Signal { value, .. } => seen.signals.push(value.clone()),
                _ => {}
            }
        }
        if let EventBody::ActivationStateChanged {
            to: ActivationState::Sleeping,
            ..
        } = &body
        {
            let awaited = matches!(
                previous,
                Some(
                    EventBody::TimerAwaited { .. }
                        | EventBody::SignalAwaited { .. }
                        | EventBody::ChildAwaited { .. }
                )
            );
            if !awaited {
                seen.takeovers += 1;
            }
        }
        previous = Some(body);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_run_durable_functions_and_survive_a_sigkill() {
    use flowstate_testkit::functions::{
        expected_child, expected_order, fails, needs_signal, signal_value, DECLINED, SIGNAL,
    };

    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(url) = test_database().await else {
        return;
    };
    let began = Instant::now();
    let schema = TestSchema::new(&url, "flowstate_mpfn");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&url, Some(&schema.name), clock.clone())
            .await
            .expect("connect"),
    );
    // The test starts and signals activations; only the engine processes run them.
    let functions = Functions::new(store.clone(), clock, "the test");
    flowstate_testkit::functions::register(&functions).expect("register");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let logs = tempfile::tempdir().expect("dir");
    let log = |n: usize| logs.path().join(format!("process-{n}.log"));
    let mut processes: Vec<Process> = (0..PROCESSES)
        .map(|n| Process::start(&schema, &log(n)))
        .collect();

    // Start the activations while the processes run. Half the signals are sent at once (they
    // wait in the inbox, or arrive while the activation runs); the others once the
    // activation sleeps on the signal (a wake-up from outside every engine process).
    let (to_signal, mut signal_later) = tokio::sync::mpsc::unbounded_channel::<(u64, FlowId)>();
    let starter = {
        let functions = functions.clone();
        tokio::spawn(async move {
            let mut starts = tokio::task::JoinSet::new();
            for n in 0..ACTIVATIONS {
                let (functions, to_signal) = (functions.clone(), to_signal.clone());
                starts.spawn(async move {
                    let flow = functions.submit("fn_order", n).await.expect("start");
                    if needs_signal(n) {
                        if n % 2 == 0 {
                            functions
                                .signal(flow, SIGNAL, signal_value(n))
                                .await
                                .expect("signal");
                        } else {
                            to_signal.send((n, flow)).expect("the signaller runs");
                        }
                    }
                    (n, flow)
                });
                tokio::time::sleep(START_EVERY).await;
            }
            drop(to_signal);
            let mut started = Vec::new();
            while let Some(joined) = starts.join_next().await {
                started.push(joined.expect("started"));
            }
            started.sort_unstable();
            (started, began.elapsed().as_secs_f64())
        })
    };
    let signaller = {
        let (functions, store) = (functions.clone(), store.clone());
        tokio::spawn(async move {
            let mut pending: Vec<(u64, FlowId)> = Vec::new();
            let mut open = true;
            let mut sent = 0;
            while open || !pending.is_empty() {
                loop {
                    match signal_later.try_recv() {
                        Ok(started) => pending.push(started),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                let mut waiting = Vec::new();
                for (n, flow) in pending.drain(..) {
                    let writer = FlowWriter::load(store.as_ref(), flow).await.expect("load");
                    let sleeping_on_it = writer.record().is_some_and(|record| {
                        record.status == FlowStatus::Function(ActivationState::Sleeping)
                            && record
                                .function
                                .as_ref()
                                .is_some_and(|f| f.awaiting.contains(SIGNAL))
                    });
                    if sleeping_on_it {
                        functions
                            .signal(flow, SIGNAL, signal_value(n))
                            .await
                            .expect("signal");
                        sent += 1;
                    } else {
                        waiting.push((n, flow));
                    }
                }
                pending = waiting;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };

    // SIGKILL one process mid-run, while it runs activations (not only holds sleeping ones).
    wait_for_orders(&client, &schema.name, ACTIVATIONS / 5).await;
    let victim = processes[1].pid();
    let busy = format!(
        "SELECT count(*) FROM {}.flows WHERE kind = 'function' AND status IN ('active_current', 'active_replay') AND lease_owner LIKE '%/{victim}/%'",
        schema.name
    );
    let mut busy_at_kill = 0;
    while orders_done(&client, &schema.name).await < (ACTIVATIONS * 3 / 5) as i64 {
        busy_at_kill = count(&client, &busy).await;
        if busy_at_kill >= BUSY_AT_KILL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Seconds since the start when the kill came, the new process started, one stopped, the
    // last order was done, and nothing was ready any more.
    let mut phases = Vec::new();
    let mut phase = || phases.push((began.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    processes.remove(1).kill();
    phase();
    let killed_at = orders_done(&client, &schema.name).await;
    // The new process starts while the killed one's leases still hold (it wakes every
    // activation left active as it starts), so it takes its share of the takeovers.
    wait_for_orders(&client, &schema.name, ACTIVATIONS * 3 / 10).await;
    processes.push(Process::start(&schema, &log(PROCESSES)));
    phase();
    wait_for_orders(&client, &schema.name, ACTIVATIONS * 13 / 20).await;
    let stopped = processes.remove(0).stop();
    phase();
    wait_for_orders(&client, &schema.name, ACTIVATIONS).await;
    phase();
    let (started, all_started) = starter.await.expect("started");
    let signalled_asleep = signaller.await.expect("signalled");
    wait_until_none_ready(&client, &schema.name).await;
    phase();
    let mut stats: Vec<Counters> = processes.into_iter().map(Process::stop).collect();
    stats.insert(0, stopped);
    println!(
        "killed (with {busy_at_kill} activations running there) at {killed_at} orders done; {signalled_asleep} signals sent to sleeping activations; all started at {all_started:.1} s; phases (s): {phases:?}; the stopped, surviving and new processes: {stats:?}"
    );
    for (process, counters) in stats.iter().enumerate() {
        assert_eq!(
            (counters.parked, counters.aborted_at_shutdown),
            (0, 0),
            "process {process}: no run failed, none was cut short by the graceful stop"
        );
    }
    assert!(
        stats.iter().filter(|c| c.timers_fired > 0).count() > 1,
        "timers set by one process are fired by any"
    );
    assert_eq!(
        signalled_asleep,
        started
            .iter()
            .filter(|(n, _)| needs_signal(*n) && n % 2 == 1)
            .count(),
        "each activation that waited for its signal was signalled while it slept"
    );

    // How often each step (and each task of a child task graph) really ran, in all processes
    // and in the killed one.
    let mut executions: HashMap<String, usize> = HashMap::new();
    let mut in_killed: HashMap<String, usize> = HashMap::new();
    for n in 0..=PROCESSES {
        for line in std::fs::read_to_string(log(n)).unwrap_or_default().lines() {
            *executions.entry(line.to_owned()).or_default() += 1;
            if n == 1 {
                *in_killed.entry(line.to_owned()).or_default() += 1;
            }
        }
    }

    // Every flow in the schema: the orders, and the children they started.
    let mut flows = Vec::new();
    let mut query = FlowQuery {
        limit: flowstate_core::limits::MAX_PAGE_SIZE,
        ..FlowQuery::default()
    };
    loop {
        let page = store.list(&query).await.expect("list");
        flows.extend(page.flows);
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    let orders: HashMap<FlowId, u64> = started.iter().map(|(n, flow)| (*flow, *n)).collect();
    let mut lasted: Vec<i64> = flows
        .iter()
        .filter(|summary| orders.contains_key(&summary.id))
        .map(|summary| summary.updated_at.as_millis() - summary.created_at.as_millis())
        .collect();
    lasted.sort_unstable();
    println!(
        "orders lasted (ms) {} at the median, {} at the 90th percentile, {} at most",
        lasted[lasted.len() / 2],
        lasted[lasted.len() * 9 / 10],
        lasted[lasted.len() - 1]
    );
    let diamonds = (0..ACTIVATIONS).filter(|n| n % 3 == 0).count();
    let reverting = (0..ACTIVATIONS).filter(|n| n % 7 == 1).count();
    assert_eq!(
        flows.len(),
        2 * ACTIVATIONS as usize + diamonds + reverting,
        "the orders, one fn_child each, and their task graphs: no flow more"
    );
    let mut records: HashMap<FlowId, flowstate_core::FlowRecord> = HashMap::new();
    let mut journals: HashMap<FlowId, Journaled> = HashMap::new();
    let mut journaled_steps: HashMap<String, usize> = HashMap::new();
    let killed_incarnation = format!("/{victim}/");
    let (mut takeovers, mut killed_runs_carried_on, mut across) = (0, 0, 0);
    for summary in &flows {
        let flow = summary.id;
        assert!(!summary.ready, "flow {flow} left ready");
        let events = read_all(store.as_ref(), flow).await.expect("read");
        let record =
            fold(&events, StopAt::End).unwrap_or_else(|e| panic!("flow {flow} does not fold: {e}"));
        match record.kind {
            FlowKind::Function => {
                assert_eq!(
                    record.status,
                    FlowStatus::Function(ActivationState::Done),
                    "{} {flow}",
                    record.definition
                );
                let function = record.function.as_ref().expect("a function record");
                assert!(
                    function
                        .inbox
                        .values()
                        .all(std::collections::VecDeque::is_empty),
                    "flow {flow}: a signal left unconsumed"
                );
                assert!(
                    function.awaiting.is_empty()
                        && function.awaiting_timers.is_empty()
                        && function.awaiting_children.is_empty(),
                    "flow {flow} is done and still waits"
                );
                let seen = journaled(flow, &events);
                for (key, times) in &seen.steps {
                    assert_eq!(*times, 1, "step {key} recorded {times} results");
                    journaled_steps.insert(key.clone(), *times);
                }
                takeovers += usize::from(seen.takeovers > 0);
                let incarnations: std::collections::HashSet<&String> =
                    function.incarnations.iter().map(|(_, i)| i).collect();
                across += usize::from(incarnations.len() > 1);
                let killed_ran = function
                    .incarnations
                    .iter()
                    .position(|(_, i)| i.contains(&killed_incarnation));
                killed_runs_carried_on += usize::from(
                    killed_ran.is_some_and(|first| first + 1 < function.incarnations.len()),
                );
                journals.insert(flow, seen);
            }
            FlowKind::TaskGraph => {
                let expected = match record.definition.as_str() {
                    "mix-diamond" => FlowState::Success,
                    "mix-reverting" => FlowState::Reverted,
                    other => panic!("flow {flow}: unexpected task graph {other}"),
                };
                assert_eq!(record.status, FlowStatus::TaskGraph(expected), "{flow}");
                let mut successes: HashMap<String, usize> = HashMap::new();
                for raw in &events {
                    if let EventBody::TaskStateChanged {
                        atom,
                        to: TaskState::Success,
                        ..
                    } = Event::decode(raw).expect("decodes").body
                    {
                        *successes.entry(atom).or_default() += 1;
                    }
                }
                for (atom, times) in successes {
                    assert_eq!(times, 1, "flow {flow}: {atom} recorded {times} results");
                    assert!(
                        executions.contains_key(&format!("{flow}/{atom}/1 execute")),
                        "flow {flow}: {atom} succeeded without running"
                    );
                }
            }
            other => panic!("flow {flow}: unexpected kind {other:?}"),
        }
        records.insert(flow, record);
    }

    // Every order ends as its input says, with its children: each started once, each ended
    // and delivered its end to the order, which joined it.
    let mut children_checked = 0;
    for (n, flow) in &started {
        let (n, flow) = (*n, *flow);
        let outcome = functions
            .outcome::<u64>(flow)
            .await
            .expect("outcome")
            .expect("done");
        if fails(n) {
            assert!(
                matches!(&outcome, Err(FunctionError::Failed(f)) if f.kind == DECLINED),
                "order {n} ({flow}): {outcome:?}"
            );
        } else {
            assert_eq!(outcome, Ok(expected_order(n)), "order {n} ({flow})");
        }
        let seen = &journals[&flow];
        let signals: Vec<serde_json::Value> = if needs_signal(n) {
            vec![serde_json::json!(signal_value(n))]
        } else {
            Vec::new()
        };
        assert_eq!(
            seen.signals, signals,
            "order {n} ({flow}): signals consumed"
        );
        let mut definitions: Vec<&str> = seen.children.iter().map(|(_, d, _)| d.as_str()).collect();
        definitions.sort_unstable();
        let mut expected = vec!["fn_child"];
        if n % 3 == 0 {
            expected.push("mix-diamond");
        }
        if n % 7 == 1 {
            expected.push("mix-reverting");
        }
        expected.sort_unstable();
        assert_eq!(definitions, expected, "order {n} ({flow}): children");
        let ended = &records[&flow]
            .function
            .as_ref()
            .expect("function")
            .children_ended;
        for (kind, definition, child) in &seen.children {
            let record = records
                .get(child)
                .unwrap_or_else(|| panic!("order {n}: child {child} does not exist"));
            assert_eq!(record.kind, *kind, "child {child}");
            assert_eq!(&record.definition, definition, "child {child}");
            assert_eq!(record.parent, Some(flow), "child {child} knows its parent");
            let end = ended
                .get(child)
                .unwrap_or_else(|| panic!("order {n}: the end of child {child} never arrived"));
            match definition.as_str() {
                "fn_child" => {
                    let value = serde_json::json!(expected_child(n));
                    assert_eq!(end, &Ok(value.clone()), "child {child}");
                    let own = record.function.as_ref().and_then(|f| f.outcome.clone());
                    assert_eq!(own, Some(Ok(value)), "child {child}");
                }
                "mix-diamond" => {
                    let d = end.as_ref().ok().and_then(|r| r.get("d")).cloned();
                    assert_eq!(d, Some(serde_json::json!(2 * n + 5)), "child {child}");
                }
                _ => assert!(
                    matches!(end, Err(f) if f.kind == "TaskGraphFailed"),
                    "child {child}: {end:?}"
                ),
            }
            children_checked += 1;
        }
    }
    // Every child is some order's.
    for (flow, record) in &records {
        if !orders.contains_key(flow) {
            let parent = record.parent.expect("a child has a parent");
            assert!(orders.contains_key(&parent), "child {flow} of {parent}");
        }
    }

    // A step ran at most twice, twice only if the killed process ran it once; every step
    // that ran was journaled (a step cut short by the kill ran again, with its key), and
    // every journaled step ran.
    let mut twice = 0;
    for (line, times) in &executions {
        let (key, what) = line.split_once(' ').expect("KEY WHAT");
        let flow = key.split('/').next().unwrap_or_default();
        assert!(*times <= 2, "{line} ran {times} times");
        if *times == 2 {
            twice += 1;
            assert!(
                in_killed.contains_key(line),
                "{line} ran twice, never in the killed process"
            );
            let flow: FlowId = flow.parse().expect("a flow id");
            let record = &records[&flow];
            if let Some(function) = &record.function {
                assert!(
                    function
                        .incarnations
                        .iter()
                        .any(|(_, i)| i.contains(&killed_incarnation)),
                    "{line} ran twice in an activation the killed process never ran"
                );
            }
        }
        if what == "step" {
            assert!(
                journaled_steps.contains_key(key),
                "step {key} ran and was never journaled"
            );
        }
    }
    for key in journaled_steps.keys() {
        assert!(
            executions.contains_key(&format!("{key} step")),
            "step {key} journaled without running"
        );
    }
    println!(
        "{} steps journaled, {children_checked} children; {twice} steps (or tasks) ran twice, each once in the killed process; {takeovers} activations taken over from a run that never closed; {killed_runs_carried_on} activations the killed process ran were carried on by others; {across} activations ran in more than one process",
        journaled_steps.len()
    );
    assert_eq!(
        journaled_steps.len(),
        7 * ACTIVATIONS as usize,
        "5 steps per order, 2 per child"
    );
    if busy_at_kill >= BUSY_AT_KILL {
        assert!(
            takeovers > 0,
            "the activations the killed process was running were taken over"
        );
    }
    assert!(
        killed_runs_carried_on > 0,
        "activations the killed process ran were carried on by the others"
    );
    assert!(across > 0, "activations moved between processes");
    let leased = count(
        &client,
        &format!(
            "SELECT count(*) FROM {}.flows WHERE lease_owner IS NOT NULL",
            schema.name
        ),
    )
    .await;
    assert_eq!(leased, 0, "every lease released at shutdown");
    let timers = count(
        &client,
        &format!("SELECT count(*) FROM {}.timers", schema.name),
    )
    .await;
    assert_eq!(timers, 0, "every timer fired");
    store.close().await.expect("close");
}
