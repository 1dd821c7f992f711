//! Due timers and wake-ups across processes on PostgreSQL: three workers, each on a store of
//! its own (as three processes would be), polling only once an hour, so that everything they
//! do is driven by `LISTEN/NOTIFY` and the store's next timer time. 200 timers set by a fourth
//! store fire once each, at their time, and each flow runs once; a flow made ready by the
//! fourth store is run at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowstate_core::{Clock, FlowId, FlowKind, Timestamp};
use flowstate_store::{AppendBatch, NewEvent, NewFlow, NewTimer, Store, SystemClock};
use flowstate_store_postgres::testing::{test_database, TestSchema};
use flowstate_store_postgres::PostgresStore;
use flowstate_worker::{FlowRunner, RunError, Worker, WorkerConfig};

const TIMERS: usize = 200;

#[derive(Debug, Default)]
struct Counting {
    runs: Mutex<HashMap<FlowId, (usize, Timestamp)>>,
}

#[async_trait]
impl FlowRunner for Counting {
    async fn run(&self, flow: FlowId) -> Result<(), RunError> {
        let now = SystemClock.now();
        let mut runs = self.runs.lock().expect("lock");
        let entry = runs.entry(flow).or_insert((0, now));
        entry.0 += 1;
        Ok(())
    }
}

async fn create(store: &dyn Store, ready: bool) -> FlowId {
    let now = SystemClock.now();
    let flow = FlowId::from_parts(now, rand::random());
    store
        .append(AppendBatch {
            flow,
            expected_next_seq: 1,
            events: vec![NewEvent {
                time: now,
                format: 1,
                body: b"{}".to_vec(),
            }],
            create: Some(NewFlow {
                kind: FlowKind::Function,
                definition: "sleeper".into(),
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

async fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_at_their_time_and_notifications_wake_idle_processes() {
    let Some(url) = test_database().await else {
        return;
    };
    let schema = TestSchema::new(&url, "flowstate_timers");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let connect = || async {
        let store: Arc<dyn Store> = Arc::new(
            PostgresStore::connect(&url, Some(&schema.name), clock.clone())
                .await
                .expect("connect"),
        );
        store
    };
    let setter = connect().await;
    let runner = Arc::new(Counting::default());
    let mut workers = Vec::new();
    for index in 0..3 {
        let config = WorkerConfig::new(
            flowstate_store::WorkerId::new(format!("process-{index}")).expect("id"),
        )
        .with_poll_interval(Duration::from_secs(3_600));
        let worker = Arc::new(
            Worker::new(connect().await, clock.clone(), config)
                .expect("config")
                .with_runner(FlowKind::Function, runner.clone()),
        );
        let running = worker.clone();
        tokio::spawn(async move { running.run().await });
        workers.push(worker);
    }
    // Let the workers go idle (their first look finds nothing; their listeners connect).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut flows = Vec::new();
    for _ in 0..TIMERS {
        flows.push(create(setter.as_ref(), false).await);
    }
    let due = SystemClock
        .now()
        .saturating_add(Duration::from_millis(1_500));
    for flow in &flows {
        setter
            .schedule_timer(
                *flow,
                NewTimer {
                    name: "wake-up".into(),
                    due,
                },
            )
            .await
            .expect("timer");
    }
    let total = |runner: &Counting| runner.runs.lock().expect("lock").len();
    wait_for(Duration::from_secs(30), || total(&runner) == TIMERS).await;
    // Anything fired twice would show up now.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    {
        let runs = runner.runs.lock().expect("lock");
        for flow in &flows {
            let (count, first) = runs[flow];
            assert_eq!(count, 1, "flow {flow} ran {count} times");
            assert!(first >= due, "flow {flow} woke before its timer was due");
            assert!(
                first.as_micros() - due.as_micros() < 5_000_000,
                "flow {flow} woke {} ms late",
                (first.as_micros() - due.as_micros()) / 1_000
            );
        }
    }
    let fired: u64 = workers.iter().map(|w| w.stats().timers_fired).sum();
    assert_eq!(fired, TIMERS as u64, "each timer fired once");
    assert_eq!(setter.next_timer_due().await.expect("next"), None);

    // A flow made ready by another process: an hourly poll would never find it in time.
    let began = Instant::now();
    let ready = create(setter.as_ref(), true).await;
    wait_for(Duration::from_secs(10), || {
        runner.runs.lock().expect("lock").contains_key(&ready)
    })
    .await;
    println!(
        "a ready flow was picked up {:?} after it was created",
        began.elapsed()
    );

    for worker in &workers {
        worker.shutdown_handle().shutdown();
    }
}
