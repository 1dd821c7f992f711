//! Cancelling plans (`Plans::cancel`): an active plan becomes failed with the reason
//! `cancelled: …`, and whichever worker runs it compensates and deactivates it as for any
//! failed plan; the lifecycle's table decides the rest (failed again: a no-op; completed,
//! deactivated: refused, nothing recorded).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate_core::machine::PlanState;
use flowstate_core::{Clock, Event, EventBody, FlowId, FlowStatus, FoldError, Transition};
use flowstate_engine::WriteError;
use flowstate_plan::{PlanRequest, Plans, Step};
use flowstate_store::{read_all, MemoryStore, Store, SystemClock, WorkerId};
use flowstate_worker::{Worker, WorkerConfig};
use serde_json::json;
use tokio::sync::watch;

type Log = Arc<Mutex<Vec<String>>>;

/// `reserve → charge → ship`: `reserve` is compensable, `charge` waits for `gate`.
fn steps(gate: &watch::Receiver<bool>, log: &Log) -> Vec<Step> {
    let (reserve_log, undo_log, charge_log, ship_log) =
        (log.clone(), log.clone(), log.clone(), log.clone());
    let gate = gate.clone();
    vec![
        Step::new("reserve")
            .input("order")
            .output("reservation")
            .body(move |_ctx| {
                reserve_log.lock().expect("lock").push("reserve".into());
                async { Ok(json!({"reservation": "r-1"})) }
            })
            .compensate(move |_ctx, _outputs| {
                undo_log.lock().expect("lock").push("unreserve".into());
                async { Ok(json!({})) }
            }),
        Step::new("charge")
            .input("reservation")
            .output("payment")
            .body(move |_ctx| {
                charge_log.lock().expect("lock").push("charge".into());
                let mut gate = gate.clone();
                async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(json!({"payment": "p-1"}))
                }
            }),
        Step::new("ship")
            .input("payment")
            .output("shipment")
            .body(move |_ctx| {
                ship_log.lock().expect("lock").push("ship".into());
                async { Ok(json!({"shipment": "s-1"})) }
            }),
    ]
}

fn plans(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    gate: &watch::Receiver<bool>,
    log: &Log,
) -> Plans {
    let plans = Plans::new(store.clone(), clock.clone());
    for step in steps(gate, log) {
        plans.register(step).expect("register");
    }
    plans
}

fn request() -> PlanRequest {
    PlanRequest::new(["shipment"]).input("order", json!(7))
}

async fn status(store: &dyn Store, flow: FlowId) -> FlowStatus {
    store
        .flow(flow)
        .await
        .expect("flow")
        .expect("exists")
        .status
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_active_plan_fails_compensates_and_deactivates_under_its_worker() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let (gate, open) = watch::channel(false);
    let log: Log = Arc::default();
    // The worker's process, and another process (say the server) that cancels.
    let running = plans(&store, &clock, &open, &log);
    let other = plans(&store, &clock, &open, &log);
    let worker = Arc::new(
        Worker::new(
            store.clone(),
            clock.clone(),
            WorkerConfig::new(WorkerId::new("w").expect("id")),
        )
        .expect("config")
        .with_runner(flowstate_core::FlowKind::Plan, Arc::new(running.clone())),
    );
    let looping = worker.clone();
    let handle = tokio::spawn(async move { looping.run().await });
    let flow = running.submit(request()).await.expect("start");
    wait_until("charge runs", async || {
        log.lock().expect("lock").contains(&"charge".to_owned())
    })
    .await;

    let cancelled = other.cancel(flow, "customer called").await.expect("cancel");
    assert_eq!(cancelled, Transition::Allowed);
    assert_eq!(
        status(store.as_ref(), flow).await,
        FlowStatus::Plan(PlanState::Failed)
    );
    // Failed again is a no-op by the table: nothing recorded.
    let before = read_all(store.as_ref(), flow).await.expect("read").len();
    assert_eq!(
        other.cancel(flow, "twice").await.expect("again"),
        Transition::Ignored
    );
    assert_eq!(
        read_all(store.as_ref(), flow).await.expect("read").len(),
        before
    );

    // `charge` ends: its (late) success is recorded, then everything that succeeded and
    // compensates is compensated, and the plan deactivates.
    gate.send_replace(true);
    wait_until("deactivated", async || {
        status(store.as_ref(), flow).await == FlowStatus::Plan(PlanState::Deactivated)
    })
    .await;
    let record = running
        .state(flow, flowstate_core::fold::StopAt::End)
        .await
        .expect("state");
    let failure = record
        .plan
        .as_ref()
        .and_then(|p| p.failure.clone())
        .expect("a failure");
    assert_eq!(failure.kind, "Cancelled");
    assert_eq!(failure.message, "cancelled: customer called");
    let log = log.lock().expect("lock").clone();
    assert!(log.contains(&"unreserve".to_owned()), "{log:?}");
    assert!(
        !log.contains(&"ship".to_owned()),
        "nothing new started: {log:?}"
    );
    // The run met the cancellation when it recorded `charge`'s result, and went on on top
    // of it: the attempt in flight was not run again.
    assert_eq!(
        log.iter().filter(|entry| *entry == "charge").count(),
        1,
        "{log:?}"
    );
    let events: Vec<EventBody> = read_all(store.as_ref(), flow)
        .await
        .expect("read")
        .iter()
        .map(|raw| Event::decode(raw).expect("decode").body)
        .collect();
    assert!(events.iter().any(|body| matches!(
        body,
        EventBody::CompensationSucceeded { step, .. } if step == "reserve"
    )));
    worker.shutdown_handle().shutdown();
    let _ = handle.await;
}

#[tokio::test]
async fn cancelling_a_plan_that_completed_is_refused_and_records_nothing() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let (_gate, open) = watch::channel(true);
    let log: Log = Arc::default();
    let plans = plans(&store, &clock, &open, &log);
    let flow = plans.create(request()).await.expect("create");
    let done = plans.run_to_end(flow).await.expect("runs");
    assert_eq!(done.status, FlowStatus::Plan(PlanState::Deactivated));
    let before = read_all(store.as_ref(), flow).await.expect("read");
    let refused = plans.cancel(flow, "too late").await;
    assert!(
        matches!(
            refused,
            Err(flowstate_plan::Error::Write(WriteError::Refused(
                FoldError::Transition { .. }
            )))
        ),
        "{refused:?}"
    );
    assert_eq!(read_all(store.as_ref(), flow).await.expect("read"), before);
    // Not a plan at all: refused too.
    let unknown = plans
        .cancel(FlowId::from_parts(clock.now(), [1; 10]), "x")
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
}

#[tokio::test]
async fn a_cancelled_plan_that_nobody_runs_yet_deactivates_when_run() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let (_gate, open) = watch::channel(true);
    let log: Log = Arc::default();
    let plans = plans(&store, &clock, &open, &log);
    let flow = plans.create(request()).await.expect("create");
    assert_eq!(
        plans.cancel(flow, "").await.expect("cancel"),
        Transition::Allowed
    );
    assert!(
        store.flow(flow).await.expect("flow").expect("exists").ready,
        "marked ready for a worker"
    );
    let done = plans.run_to_end(flow).await.expect("runs");
    assert_eq!(done.status, FlowStatus::Plan(PlanState::Deactivated));
    let failure = done
        .plan
        .as_ref()
        .and_then(|p| p.failure.clone())
        .expect("failure");
    assert_eq!(failure.message, "cancelled");
    assert!(log.lock().expect("lock").is_empty(), "no step ran");
}

/// A plan run in this process (no lease) while a worker serves the same store: cancelling it
/// must not hand it to the worker while its step is in flight (the worker would run that
/// step a second time); the run in progress carries the cancellation out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_plan_run_in_process_leaves_it_to_that_run() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let (gate, open) = watch::channel(false);
    let log: Log = Arc::default();
    let in_process = plans(&store, &clock, &open, &log);
    let worker = Arc::new(
        Worker::new(
            store.clone(),
            clock.clone(),
            WorkerConfig::new(WorkerId::new("w").expect("id")),
        )
        .expect("config")
        .with_runner(
            flowstate_core::FlowKind::Plan,
            Arc::new(plans(&store, &clock, &open, &log)),
        ),
    );
    let looping = worker.clone();
    let handle = tokio::spawn(async move { looping.run().await });
    let flow = in_process.create(request()).await.expect("create");
    let running = in_process.clone();
    let run = tokio::spawn(async move { running.run_to_end(flow).await });
    wait_until("charge runs", async || {
        log.lock().expect("lock").contains(&"charge".to_owned())
    })
    .await;

    assert_eq!(
        in_process.cancel(flow, "").await.expect("cancel"),
        Transition::Allowed
    );
    assert!(
        !store.flow(flow).await.expect("flow").expect("exists").ready,
        "not offered to the worker while its step is in flight"
    );
    gate.send_replace(true);
    let done = run.await.expect("joined").expect("the run goes on");
    assert_eq!(done.status, FlowStatus::Plan(PlanState::Deactivated));
    let log = log.lock().expect("lock").clone();
    assert_eq!(log, ["reserve", "charge", "unreserve"]);
    worker.shutdown_handle().shutdown();
    let _ = handle.await;
}
