//! The worker loop against the memory store, with scripted runners. Tokio's clock is paused
//! (it jumps ahead whenever everything waits), and the store reads the same clock, so leases,
//! timers and polls are exact and nothing waits for real time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::{Clock, FlowId, FlowKind, Timestamp};
use flowstate_store::testing::InstrumentedStore;
use flowstate_store::{
    AppendBatch, Claim, MemoryStore, NewEvent, NewFlow, NewTimer, Release, Store, WorkerId,
};
use flowstate_worker::{FlowRunner, RunError, Worker, WorkerConfig, WorkerStats};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A clock that follows tokio's (paused) clock, so store times and worker sleeps agree.
#[derive(Debug)]
struct TokioClock {
    base: Timestamp,
    started: Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.saturating_add(self.started.elapsed())
    }
}

fn store() -> (Arc<dyn Store>, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock {
        base: Timestamp::from_micros(1_767_225_600_000_000),
        started: Instant::now(),
    });
    (Arc::new(MemoryStore::new(clock.clone())), clock)
}

fn id(name: &str) -> WorkerId {
    WorkerId::new(name).expect("worker id")
}

fn config(name: &str) -> WorkerConfig {
    WorkerConfig::new(id(name))
        .with_lease(Duration::from_secs(3))
        .with_poll_interval(Duration::from_secs(3_600))
        .with_park_for(Duration::from_secs(10))
        .with_shutdown_grace(Duration::from_secs(1))
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn create(store: &dyn Store, clock: &dyn Clock, kind: FlowKind, ready: bool) -> FlowId {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    let flow = FlowId::from_parts(clock.now(), random);
    store
        .append(AppendBatch {
            flow,
            expected_next_seq: 1,
            events: vec![NewEvent {
                time: clock.now(),
                format: 1,
                body: b"{}".to_vec(),
            }],
            create: Some(NewFlow {
                kind,
                definition: "d".into(),
                idempotency: None,
            }),
            status: None,
            ready: ready.then_some(true),
            timers: Vec::new(),
        })
        .await
        .expect("create");
    flow
}

/// What a scripted run does.
#[derive(Debug, Clone)]
enum Act {
    Succeed,
    Conflict,
    Fail,
    Panic,
    /// Waits until the run is dropped (aborted); reports the drop.
    Hang,
    /// Reports that this process lacks the flow's definition.
    Missing,
    /// Something marks the flow ready while it runs (a signal arrives); then it succeeds.
    WokenWhileRunning,
}

#[derive(Debug, Default)]
struct Script {
    acts: Mutex<HashMap<FlowId, VecDeque<Act>>>,
    runs: Mutex<Vec<FlowId>>,
    started: Mutex<Option<mpsc::UnboundedSender<FlowId>>>,
    dropped: Mutex<Option<mpsc::UnboundedSender<FlowId>>>,
    store: Mutex<Option<Arc<dyn Store>>>,
}

impl Script {
    fn plan(&self, flow: FlowId, acts: impl IntoIterator<Item = Act>) {
        self.acts
            .lock()
            .expect("lock")
            .insert(flow, acts.into_iter().collect());
    }

    fn runs_of(&self, flow: FlowId) -> usize {
        self.runs
            .lock()
            .expect("lock")
            .iter()
            .filter(|f| **f == flow)
            .count()
    }

    fn on_start(&self) -> mpsc::UnboundedReceiver<FlowId> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.started.lock().expect("lock") = Some(tx);
        rx
    }

    fn on_drop(&self) -> mpsc::UnboundedReceiver<FlowId> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.dropped.lock().expect("lock") = Some(tx);
        rx
    }
}

struct DropGuard(FlowId, Option<mpsc::UnboundedSender<FlowId>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(tx) = &self.1 {
            let _ = tx.send(self.0);
        }
    }
}

#[async_trait]
impl FlowRunner for Script {
    async fn run(&self, flow: FlowId) -> Result<(), RunError> {
        self.runs.lock().expect("lock").push(flow);
        if let Some(tx) = self.started.lock().expect("lock").as_ref() {
            let _ = tx.send(flow);
        }
        let act = self
            .acts
            .lock()
            .expect("lock")
            .get_mut(&flow)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Act::Succeed);
        match act {
            Act::Succeed => Ok(()),
            Act::Conflict => Err(RunError::Conflict {
                flow,
                expected: 2,
                actual: 3,
            }),
            Act::Fail => Err(RunError::failed("scripted failure")),
            Act::Panic => panic!("scripted panic"),
            Act::Hang => {
                let _guard = DropGuard(flow, self.dropped.lock().expect("lock").clone());
                std::future::pending::<()>().await;
                Ok(())
            }
            Act::Missing => Err(RunError::MissingDefinition {
                kind: FlowKind::TaskGraph,
                definition: "d".into(),
            }),
            Act::WokenWhileRunning => {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let store = self.store.lock().expect("lock").clone().expect("store set");
                store.mark_ready(flow).await.expect("mark ready");
                Ok(())
            }
        }
    }
}

/// Runs a worker in the background.
fn spawn(worker: Worker) -> (Arc<Worker>, tokio::task::JoinHandle<WorkerStats>) {
    let worker = Arc::new(worker);
    let running = worker.clone();
    let handle = tokio::spawn(async move { running.run().await.expect("worker ran") });
    (worker, handle)
}

/// Waits (in paused time, so instantly) until `condition` holds, at most `limit`.
async fn until(limit: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ready(store: &dyn Store, flow: FlowId) -> bool {
    store.flow(flow).await.expect("flow").expect("exists").ready
}

#[tokio::test(start_paused = true)]
async fn ready_flows_run_once_each_and_are_released_idle() {
    let (store, clock) = store();
    let mut flows = Vec::new();
    for _ in 0..300 {
        flows.push(create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await);
    }
    let _not_ready = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, false).await;
    let script = Arc::new(Script::default());
    let worker = Worker::new(
        store.clone(),
        clock,
        config("w").with_max_in_flight(64).with_claim_batch(16),
    )
    .expect("config")
    .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, handle) = spawn(worker);
    until(Duration::from_secs(5), async || {
        worker.stats().completed == 300
    })
    .await;
    for flow in &flows {
        assert_eq!(script.runs_of(*flow), 1);
        assert!(!ready(store.as_ref(), *flow).await, "released idle");
    }
    assert_eq!(
        script.runs.lock().expect("lock").len(),
        300,
        "the unready flow never runs"
    );
    worker.shutdown_handle().shutdown();
    let stats = handle.await.expect("joined");
    assert_eq!(
        (stats.claimed, stats.completed, stats.parked),
        (300, 300, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_flow_made_ready_while_idle_runs_on_the_wake_up_not_at_the_next_poll() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let mut started = script.on_start();
    let worker = Worker::new(store.clone(), clock.clone(), config("w"))
        .expect("config")
        .with_runner(FlowKind::Function, script.clone());
    let (worker, _handle) = spawn(worker);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let began = Instant::now();
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::Function, false).await;
    store.mark_ready(flow).await.expect("mark ready");
    assert_eq!(started.recv().await, Some(flow));
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "woken at once, not by the hourly poll ({:?})",
        began.elapsed()
    );
    worker.shutdown_handle().shutdown();
}

#[tokio::test(start_paused = true)]
async fn a_due_timer_wakes_its_flow_at_its_time_and_fires_once() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let mut started = script.on_start();
    let worker = Worker::new(store.clone(), clock.clone(), config("w"))
        .expect("config")
        .with_runner(FlowKind::Function, script.clone());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::Function, false).await;
    let due = clock.now().saturating_add(Duration::from_secs(90));
    store
        .schedule_timer(
            flow,
            NewTimer {
                name: "sleep-1".into(),
                due,
            },
        )
        .await
        .expect("timer");
    let (worker, _handle) = spawn(worker);
    assert_eq!(started.recv().await, Some(flow));
    let now = clock.now();
    assert!(now >= due, "not before it is due");
    assert!(
        now.as_micros() - due.as_micros() < 1_000_000,
        "at its time, not at the hourly poll"
    );
    until(Duration::from_secs(5), async || {
        worker.stats().completed == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3 * 3_600)).await;
    assert_eq!(script.runs_of(flow), 1, "fired once");
    assert_eq!(worker.stats().timers_fired, 1);
    assert_eq!(store.next_timer_due().await.expect("next"), None);
}

#[tokio::test(start_paused = true)]
async fn a_conflict_is_counted_and_the_flow_runs_again_from_the_log() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, [Act::Conflict, Act::Succeed]);
    let worker = Worker::new(store.clone(), clock, config("w"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, _handle) = spawn(worker);
    until(Duration::from_secs(5), async || {
        worker.stats().completed == 1
    })
    .await;
    assert_eq!(script.runs_of(flow), 2);
    assert_eq!(worker.stats().conflicts, 1);
    assert!(!ready(store.as_ref(), flow).await);
}

#[tokio::test(start_paused = true)]
async fn endless_conflicts_park_the_flow_instead_of_looping() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, std::iter::repeat_n(Act::Conflict, 4));
    let worker = Worker::new(store.clone(), clock, config("w"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, _handle) = spawn(worker);
    until(Duration::from_secs(5), async || worker.stats().parked == 1).await;
    assert_eq!(script.runs_of(flow), 4, "the first run and three re-runs");
    assert!(ready(store.as_ref(), flow).await, "parked, still ready");
    until(Duration::from_secs(60), async || {
        worker.stats().completed == 1
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_aborts_the_run_and_the_new_holder_keeps_the_flow() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let (mut started, mut dropped) = (script.on_start(), script.on_drop());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, [Act::Hang]);
    let worker = Worker::new(store.clone(), clock, config("stalled"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, _handle) = spawn(worker);
    assert_eq!(started.recv().await, Some(flow));
    // Another process takes the flow over, as it would after this one stalled past its lease.
    let stolen = Claim {
        flow,
        kind: FlowKind::TaskGraph,
        next_seq: 2,
        lease_until: Timestamp::EPOCH,
        wake: 0,
    };
    assert!(store
        .release(&id("stalled"), &stolen, Release::StillReady)
        .await
        .expect("release"));
    let taken = store
        .claim(&id("thief"), &FlowKind::ALL, 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(dropped.recv().await, Some(flow), "the run was aborted");
    assert_eq!(worker.stats().leases_lost, 1);
    assert_eq!(
        store
            .renew(&id("thief"), &[flow], Duration::from_secs(60))
            .await
            .expect("renew"),
        [flow],
        "the new holder keeps it"
    );
}

#[tokio::test(start_paused = true)]
async fn flows_whose_run_fails_or_lacks_a_definition_stay_ready_and_parked() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let plan = create(store.as_ref(), clock.as_ref(), FlowKind::Plan, true).await;
    let missing = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    let failing = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    let panicking = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(missing, [Act::Missing]);
    script.plan(failing, [Act::Fail]);
    script.plan(panicking, [Act::Panic]);
    let worker = Worker::new(store.clone(), clock.clone(), config("w"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, handle) = spawn(worker);
    until(Duration::from_secs(5), async || worker.stats().parked == 3).await;
    assert_eq!(worker.stats().missing_definitions, 1);
    assert_eq!(
        worker.stats().claimed,
        3,
        "a kind without a runner is not claimed"
    );
    for flow in [plan, missing, failing, panicking] {
        assert!(ready(store.as_ref(), flow).await, "still ready");
    }
    // Parked flows come back after `park_for`; now they succeed.
    until(Duration::from_secs(30), async || {
        worker.stats().completed == 3
    })
    .await;
    assert_eq!(script.runs_of(failing), 2);
    worker.shutdown_handle().shutdown();
    handle.await.expect("joined");
    // A process that has a runner for plans takes the plan at once: nobody parked it.
    let plans = Arc::new(Script::default());
    let other = Worker::new(store.clone(), clock, config("with-plans"))
        .expect("config")
        .with_runner(FlowKind::Plan, plans.clone());
    let began = Instant::now();
    let (other, _handle) = spawn(other);
    until(Duration::from_secs(30), async || {
        other.stats().completed == 1
    })
    .await;
    assert!(began.elapsed() < Duration::from_secs(1));
    assert_eq!(plans.runs_of(plan), 1);
}

#[tokio::test(start_paused = true)]
async fn a_flow_failing_again_and_again_is_parked_longer_each_time() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, std::iter::repeat_n(Act::Fail, 4));
    let worker = Worker::new(store.clone(), clock, config("w"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let began = Instant::now();
    let (worker, _handle) = spawn(worker);
    until(Duration::from_secs(600), async || {
        worker.stats().completed == 1
    })
    .await;
    // Parked 10 s, 20 s, 40 s, 80 s: the fifth run comes after 150 s, not after 40 s.
    assert!(
        began.elapsed() >= Duration::from_secs(150),
        "{:?}",
        began.elapsed()
    );
    assert!(
        began.elapsed() < Duration::from_secs(160),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(script.runs_of(flow), 5);
}

#[tokio::test(start_paused = true)]
async fn leases_of_long_runs_are_renewed_so_nobody_else_takes_them() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, [Act::Hang]);
    let worker = Worker::new(store.clone(), clock, config("holder"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, _handle) = spawn(worker);
    until(Duration::from_secs(5), async || script.runs_of(flow) == 1).await;
    // Five leases long, another worker keeps trying.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let taken = store
            .claim(&id("other"), &FlowKind::ALL, 10, Duration::from_secs(3))
            .await
            .expect("claim");
        assert!(taken.is_empty(), "the lease of a running flow ran out");
    }
    assert_eq!(worker.stats().leases_lost, 0);
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_cannot_be_renewed_is_aborted_before_the_lease_runs_out() {
    let (inner, clock) = store();
    let store = Arc::new(InstrumentedStore::new(inner.clone()));
    let script = Arc::new(Script::default());
    let mut dropped = script.on_drop();
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, [Act::Hang]);
    let worker = Worker::new(store.clone(), clock, config("cut-off"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, _handle) = spawn(worker);
    until(Duration::from_secs(5), async || script.runs_of(flow) == 1).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        worker.stats().leases_lost,
        0,
        "renewed while the store answers"
    );
    let cut = Instant::now();
    store.fail_renewals(true);
    assert_eq!(dropped.recv().await, Some(flow));
    let aborted_after = cut.elapsed();
    // The last renewal confirmed the lease for 3 s from at most 1 s before the cut.
    assert!(aborted_after < Duration::from_secs(3), "{aborted_after:?}");
    assert_eq!(worker.stats().leases_lost, 1);
    // Only then may anyone else take the flow: its lease in the store has not run out yet.
    assert!(inner
        .claim(&id("other"), &FlowKind::ALL, 10, Duration::from_secs(3))
        .await
        .expect("claim")
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_flow_claimed_again_while_its_last_run_is_booked_keeps_its_new_lease() {
    // Run A releases the flow while a signal made it ready again, and this worker's claim
    // (slow: the signal woke it while A was still settling) takes the flow again; booking
    // A's end afterwards must not forget run B, whose lease must go on being renewed.
    let (inner, clock) = store();
    let store: Arc<dyn Store> = Arc::new(
        InstrumentedStore::new(inner)
            .with_delays(Duration::from_millis(100), Duration::from_millis(50)),
    );
    let script = Arc::new(Script::default());
    *script.store.lock().expect("lock") = Some(store.clone());
    let flow = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(flow, [Act::WokenWhileRunning, Act::Hang]);
    let worker = Worker::new(store.clone(), clock, config("w"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, _handle) = spawn(worker);
    until(Duration::from_secs(5), async || script.runs_of(flow) == 2).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store
            .claim(&id("other"), &FlowKind::ALL, 10, Duration::from_secs(3))
            .await
            .expect("claim")
            .is_empty());
    }
    assert_eq!(worker.stats().leases_lost, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_runs_finish_within_the_grace_then_gives_the_rest_back_ready() {
    let (store, clock) = store();
    let script = Arc::new(Script::default());
    let mut dropped = script.on_drop();
    let hanging = create(store.as_ref(), clock.as_ref(), FlowKind::TaskGraph, true).await;
    script.plan(hanging, [Act::Hang]);
    let worker = Worker::new(store.clone(), clock.clone(), config("w"))
        .expect("config")
        .with_runner(FlowKind::TaskGraph, script.clone());
    let (worker, handle) = spawn(worker);
    until(Duration::from_secs(5), async || {
        script.runs_of(hanging) == 1
    })
    .await;
    let asked = Instant::now();
    worker.shutdown_handle().shutdown();
    let stats = handle.await.expect("joined");
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "the grace was given"
    );
    assert_eq!(dropped.recv().await, Some(hanging));
    assert_eq!(stats.aborted_at_shutdown, 1);
    let taken = store
        .claim(&id("next"), &FlowKind::ALL, 10, Duration::from_secs(5))
        .await
        .expect("claim");
    assert_eq!(
        taken.iter().map(|c| c.flow).collect::<Vec<_>>(),
        [hanging],
        "given back ready at once, not after its lease"
    );
}

#[test]
fn settings_out_of_bounds_are_refused() {
    use flowstate_worker::ConfigError;
    let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) = {
        let clock: Arc<dyn Clock> = Arc::new(flowstate_store::SystemClock);
        (Arc::new(MemoryStore::new(clock.clone())), clock)
    };
    let refused = |config: WorkerConfig| Worker::new(store.clone(), clock.clone(), config).err();
    assert!(matches!(
        refused(config("w").with_lease(Duration::from_millis(10))),
        Some(ConfigError::Lease { .. })
    ));
    assert!(matches!(
        refused(config("w").with_claim_batch(0)),
        Some(ConfigError::OutOfRange {
            setting: "claim_batch",
            ..
        })
    ));
    assert!(matches!(
        refused(config("w").with_poll_interval(Duration::ZERO)),
        Some(ConfigError::PollInterval)
    ));
    assert!(refused(config("w")).is_none());
}
