//! Suspend, resume and cancel as durable requests: recorded in the flow's log by one engine
//! (another process, say the server) while another engine runs the flow, honoured by the
//! runner at its next step boundary, with nothing lost or run twice. Both engines share one
//! SQLite store, as two processes would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate_core::machine::FlowState;
use flowstate_core::{Clock, Event, EventBody, FlowId, FlowStatus, Transition};
use flowstate_store::{read_all, Store, SystemClock};
use flowstate_taskgraph::{task_fn_with_revert, Engine, Flow, Inputs, TaskAtom};
use serde_json::json;
use tokio::sync::watch;

/// What the tasks did, in order: `"execute b b-key"`, `"revert b"`.
type Log = Arc<Mutex<Vec<String>>>;

/// A task that records its execution, waits until `gate` is open, and records its revert.
fn gated(name: &'static str, gate: &watch::Receiver<bool>, log: &Log) -> TaskAtom {
    let (gate, log, revert_log) = (gate.clone(), log.clone(), log.clone());
    task_fn_with_revert(
        name,
        move |ctx, _inputs| {
            log.lock()
                .expect("lock")
                .push(format!("execute {name} {}", ctx.idempotency_key));
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(json!(name))
            }
        },
        move |_ctx, _inputs, _outcome| {
            revert_log
                .lock()
                .expect("lock")
                .push(format!("revert {name}"));
            async { Ok(()) }
        },
    )
}

struct Setup {
    store: Arc<dyn Store>,
    /// The engine that runs the flow ("process A").
    runner: Arc<Engine>,
    /// The engine that sends requests ("process B"); it also has the definition.
    other: Engine,
    gate: watch::Sender<bool>,
    log: Log,
    _dir: tempfile::TempDir,
}

/// `a` runs at once, `b` waits for the gate, `c` runs at once.
fn setup() -> Setup {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        flowstate_store_sqlite::SqliteStore::open(
            dir.path().join("requests.db"),
            clock.clone(),
            Default::default(),
        )
        .expect("open"),
    );
    let (gate, open) = watch::channel(false);
    let log: Log = Arc::default();
    let (_, always) = watch::channel(true);
    let definition = || {
        Flow::linear("f")
            .add(gated("a", &always, &log))
            .add(gated("b", &open, &log))
            .add(gated("c", &always, &log))
    };
    let runner = Arc::new(Engine::new(store.clone(), clock.clone()));
    runner.register(definition());
    let other = Engine::new(store.clone(), clock);
    other.register(definition());
    Setup {
        store,
        runner,
        other,
        gate,
        log,
        _dir: dir,
    }
}

impl Setup {
    fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.log().iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits (a deadlock guard, not a timing assertion) until `line` was logged.
    async fn wait_logged(&self, prefix: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.count(prefix) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{prefix:?} never logged: {:?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts the runner's run of a new flow in a task of its own; returns once `b` runs.
    async fn running(
        &self,
    ) -> (
        FlowId,
        tokio::task::JoinHandle<
            Result<flowstate_taskgraph::RunOutcome, flowstate_taskgraph::Error>,
        >,
    ) {
        let flow = self
            .runner
            .create("f", Inputs::new())
            .await
            .expect("create");
        let runner = self.runner.clone();
        let run = tokio::spawn(async move { runner.run(flow).await });
        self.wait_logged("execute b").await;
        (flow, run)
    }

    async fn bodies(&self, flow: FlowId) -> Vec<EventBody> {
        read_all(self.store.as_ref(), flow)
            .await
            .expect("read")
            .iter()
            .map(|raw| Event::decode(raw).expect("decode").body)
            .collect()
    }

    /// The flow's state changes, in log order.
    async fn flow_states(&self, flow: FlowId) -> Vec<FlowState> {
        self.bodies(flow)
            .await
            .into_iter()
            .filter_map(|body| match body {
                EventBody::FlowStateChanged { to } => Some(to),
                _ => None,
            })
            .collect()
    }

    async fn summary(&self, flow: FlowId) -> flowstate_store::FlowSummary {
        self.store.flow(flow).await.expect("flow").expect("exists")
    }
}

use FlowState::{Resuming, Running, Success, Suspended, Suspending};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_recorded_by_another_engine_stops_the_run_at_the_next_task_boundary() {
    let t = setup();
    let (flow, run) = t.running().await;
    // Another process records the request while `b` runs.
    let asked = t.other.request_suspend(flow).await.expect("suspend");
    assert_eq!(asked, Transition::Allowed);
    assert_eq!(
        t.summary(flow).await.status,
        FlowStatus::TaskGraph(Suspending)
    );
    // Asking again is a no-op by the table (SUSPENDING → SUSPENDING): nothing appended.
    let before = t.bodies(flow).await.len();
    assert_eq!(
        t.other.request_suspend(flow).await.expect("again"),
        Transition::Ignored
    );
    assert_eq!(t.bodies(flow).await.len(), before);

    // `b` finishes; the runner records it on top of the request and starts nothing new.
    t.gate.send_replace(true);
    let outcome = run.await.expect("joined").expect("runs");
    assert_eq!(outcome.state, Suspended);
    assert_eq!(t.count("execute c"), 0, "{:?}", t.log());
    assert_eq!(
        t.flow_states(flow).await,
        [Running, Suspending, Suspended],
        "b's result is recorded between them"
    );
    let suspended = t.summary(flow).await;
    assert!(!suspended.ready, "no worker takes a suspended flow");
    // A worker that claims it anyway (a lease that ran out) leaves it alone.
    assert!(t.other.run_unfinished(flow).await.expect("run").is_none());

    // Resume from the other process: recorded, ready for a worker.
    assert_eq!(
        t.other.resume(flow).await.expect("resume"),
        Transition::Allowed
    );
    let resumed = t.summary(flow).await;
    assert_eq!(resumed.status, FlowStatus::TaskGraph(Running));
    assert!(resumed.ready);
    // Resuming a running flow is a no-op (RUNNING → RUNNING).
    assert_eq!(
        t.other.resume(flow).await.expect("again"),
        Transition::Ignored
    );
    let finished = t
        .other
        .run_unfinished(flow)
        .await
        .expect("run")
        .expect("it had work");
    assert_eq!(finished.state, Success);
    // Each task ran exactly once.
    for atom in ["a", "b", "c"] {
        assert_eq!(t.count(&format!("execute {atom} ")), 1, "{:?}", t.log());
    }
    assert_eq!(
        t.flow_states(flow).await,
        [
            Running, Suspending, Suspended, // suspended at the task boundary
            Running,   // resumed
            Resuming, Suspended,
            Running, // loaded by the next run, as the spec loads a RUNNING flow
            Success
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_whose_runner_died_is_honoured_by_the_next_run_and_nothing_runs_twice() {
    let t = setup();
    let (flow, run) = t.running().await;
    assert_eq!(
        t.other.request_suspend(flow).await.expect("suspend"),
        Transition::Allowed
    );
    // The runner's process dies while `b` runs.
    run.abort();
    let _ = run.await;
    // The next run (a worker took over the flow) loads it through RESUMING to SUSPENDED and
    // runs nothing: `b` stays RUNNING in the log until the flow is resumed.
    let loaded = t
        .other
        .run_unfinished(flow)
        .await
        .expect("run")
        .expect("it had work");
    assert_eq!(loaded.state, Suspended);
    assert_eq!(t.count("execute b"), 1);
    assert_eq!(
        t.flow_states(flow).await,
        [Running, Suspending, Resuming, Suspended]
    );
    assert!(!t.summary(flow).await.ready);
    // Resumed, `b` runs again with the same attempt (same idempotency key), then `c`.
    t.gate.send_replace(true);
    assert_eq!(
        t.other.resume(flow).await.expect("resume"),
        Transition::Allowed
    );
    let finished = t
        .other
        .run_unfinished(flow)
        .await
        .expect("run")
        .expect("work");
    assert_eq!(finished.state, Success);
    let b: Vec<String> = t
        .log()
        .into_iter()
        .filter(|l| l.starts_with("execute b "))
        .collect();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0], b[1], "the interrupted attempt again, same key");
    assert_eq!(t.count("execute c"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_recorded_by_another_engine_reverts_what_ran_and_starts_nothing_new() {
    let t = setup();
    let (flow, run) = t.running().await;
    assert_eq!(
        t.other.cancel(flow, "operator").await.expect("cancel"),
        Transition::Allowed
    );
    // A second request keeps the first reason and records nothing.
    let before = t.bodies(flow).await.len();
    assert_eq!(
        t.other.cancel(flow, "again").await.expect("again"),
        Transition::Ignored
    );
    assert_eq!(t.bodies(flow).await.len(), before);
    t.gate.send_replace(true);
    let outcome = run.await.expect("joined").expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(t.count("execute c"), 0);
    let reverts: Vec<String> = t
        .log()
        .into_iter()
        .filter(|l| l.starts_with("revert"))
        .collect();
    assert_eq!(reverts, ["revert b", "revert a"], "in reverse order");
    let record = t.runner.run(flow).await;
    // (A re-run of the cancelled, REVERTED flow is a new run: the request was for the old.)
    assert_eq!(record.expect("re-runs").state, Success);

    // Cancelling a finished flow: REVERTED is a no-op, SUCCESS and FAILURE are refused; a
    // suspend of a finished flow is a no-op; nothing is appended by any of them.
    let before = t.bodies(flow).await.len();
    let refused = t.other.cancel(flow, "late").await;
    assert!(
        matches!(
            refused,
            Err(flowstate_taskgraph::Error::NotAllowed {
                request: "cancel",
                state: Success,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        t.other.request_suspend(flow).await.expect("suspend"),
        Transition::Ignored
    );
    let resume = t.other.resume(flow).await;
    assert!(
        matches!(
            resume,
            Err(flowstate_taskgraph::Error::NotAllowed {
                request: "resume",
                ..
            })
        ),
        "{resume:?}"
    );
    assert_eq!(t.bodies(flow).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_suspended_flow_is_handed_to_the_workers_and_reverted() {
    let t = setup();
    let (flow, run) = t.running().await;
    assert_eq!(
        t.other.request_suspend(flow).await.expect("suspend"),
        Transition::Allowed
    );
    t.gate.send_replace(true);
    assert_eq!(run.await.expect("joined").expect("runs").state, Suspended);
    assert!(!t.summary(flow).await.ready);
    assert_eq!(
        t.other
            .cancel(flow, "no longer needed")
            .await
            .expect("cancel"),
        Transition::Allowed
    );
    assert!(t.summary(flow).await.ready, "a worker must carry it out");
    let outcome = t
        .other
        .run_unfinished(flow)
        .await
        .expect("run")
        .expect("work");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(t.count("execute c"), 0);
    assert_eq!(t.count("revert"), 2);
    let record = flowstate_core::fold::fold(
        &read_all(t.store.as_ref(), flow).await.expect("read"),
        flowstate_core::fold::StopAt::End,
    )
    .expect("folds");
    assert_eq!(record.cancel_requested.as_deref(), Some("no longer needed"));
}

/// Cancelled while suspending: the suspension holds the reverts back and the run ends
/// SUSPENDED, but the flow stays ready, so a worker carries the cancellation out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_cancelled_while_suspending_is_left_ready_and_reverted() {
    let t = setup();
    let (flow, run) = t.running().await;
    assert_eq!(
        t.other.request_suspend(flow).await.expect("suspend"),
        Transition::Allowed
    );
    assert_eq!(
        t.other
            .cancel(flow, "changed my mind")
            .await
            .expect("cancel"),
        Transition::Allowed
    );
    t.gate.send_replace(true);
    assert_eq!(run.await.expect("joined").expect("runs").state, Suspended);
    assert!(t.summary(flow).await.ready, "a worker must carry it out");
    let outcome = t
        .other
        .run_unfinished(flow)
        .await
        .expect("run")
        .expect("work");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(t.count("execute c"), 0);
    assert_eq!(t.count("revert"), 2);
}

/// Sends a suspend request (through an engine of its own, as another process would) the
/// first time the engine it listens to reaches SCHEDULING: before that run's opening
/// transitions are recorded.
struct SuspendBeforeOpening {
    requester: Engine,
    sent: std::sync::atomic::AtomicBool,
}

impl flowstate_taskgraph::Listener for SuspendBeforeOpening {
    fn on_transition(&self, _flow: FlowId, _transition: &flowstate_taskgraph::Transition) {}

    fn on_engine(&self, flow: FlowId, state: flowstate_core::machine::EngineState) {
        if state != flowstate_core::machine::EngineState::Scheduling
            || self.sent.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let asked = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.requester.request_suspend(flow))
        });
        assert_eq!(asked.expect("suspend"), Transition::Allowed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_recorded_before_the_runs_opening_makes_it_start_over_and_suspend() {
    let t = setup();
    let (flow, run) = t.running().await;
    assert_eq!(
        t.other.request_suspend(flow).await.expect("suspend"),
        Transition::Allowed
    );
    t.gate.send_replace(true);
    assert_eq!(run.await.expect("joined").expect("runs").state, Suspended);
    assert_eq!(
        t.other.resume(flow).await.expect("resume"),
        Transition::Allowed
    );
    // The next run loads the RUNNING flow; a suspension lands before its opening append.
    t.other.listen(Arc::new(SuspendBeforeOpening {
        requester: Engine::new(t.store.clone(), Arc::new(SystemClock)),
        sent: std::sync::atomic::AtomicBool::new(false),
    }));
    let outcome = t
        .other
        .run_unfinished(flow)
        .await
        .expect("the conflict is absorbed")
        .expect("work");
    assert_eq!(outcome.state, Suspended);
    assert_eq!(t.count("execute c"), 0, "nothing ran");
    assert_eq!(
        t.flow_states(flow).await,
        [
            Running, Suspending, Suspended, Running,    // resumed
            Suspending, // the request
            Resuming, Suspended // the run started over and honoured it
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_in_flight_when_a_request_lands_finishes_and_is_recorded_once() {
    let t = setup();
    let (first_gate, first) = watch::channel(false);
    let (second_gate, second) = watch::channel(false);
    let (_, always) = watch::channel(true);
    let parallel = Flow::linear("p")
        .add(
            Flow::unordered("both")
                .add(gated("x", &first, &t.log))
                .add(gated("y", &second, &t.log)),
        )
        .add(gated("z", &always, &t.log));
    t.runner.register(parallel);
    let flow = t.runner.create("p", Inputs::new()).await.expect("create");
    let runner = t.runner.clone();
    let run = tokio::spawn(async move { runner.run(flow).await });
    t.wait_logged("execute x").await;
    t.wait_logged("execute y").await;
    assert_eq!(
        t.other.request_suspend(flow).await.expect("suspend"),
        Transition::Allowed
    );
    // `x` ends first: its result is recorded on top of the request while `y` still runs.
    first_gate.send_replace(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let x_done = t.bodies(flow).await.iter().any(|body| {
            matches!(body, EventBody::TaskStateChanged { atom, to, .. }
                if atom == "x" && *to == flowstate_core::machine::TaskState::Success)
        });
        if x_done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "x never recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    second_gate.send_replace(true);
    let outcome = run.await.expect("joined").expect("runs");
    assert_eq!(outcome.state, Suspended);
    assert_eq!(t.count("execute z"), 0);
    let successes = |bodies: &[EventBody], name: &str| {
        bodies
            .iter()
            .filter(|body| {
                matches!(body, EventBody::TaskStateChanged { atom, to, .. }
                    if atom == name && *to == flowstate_core::machine::TaskState::Success)
            })
            .count()
    };
    let bodies = t.bodies(flow).await;
    assert_eq!((successes(&bodies, "x"), successes(&bodies, "y")), (1, 1));
    assert_eq!(t.count("execute x"), 1);
    assert_eq!(t.count("execute y"), 1);
}
