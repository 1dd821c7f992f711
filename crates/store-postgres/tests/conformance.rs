//! The PostgreSQL store passes the same conformance suite as the memory and SQLite stores.
//!
//! The server comes from `FLOWSTATE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test gets its own schema, dropped at the
//! end, so runs never see each other. Without a reachable server the tests print that they
//! were skipped; with `CI=true` they fail instead.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::Clock;
use flowstate_store::conformance::StoreFactory;
use flowstate_store::{Store, WakeCounts};
use flowstate_store_postgres::testing::TestSchema;
use flowstate_store_postgres::PostgresStore;

fn url() -> String {
    std::env::var("FLOWSTATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[derive(Debug, Default)]
struct Postgres;

#[async_trait]
impl StoreFactory for Postgres {
    type Location = TestSchema;

    async fn create(&self) -> TestSchema {
        TestSchema::new(&url(), "flowstate_test")
    }

    async fn open(&self, location: &TestSchema, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        Arc::new(
            PostgresStore::connect(&url(), Some(&location.name), clock)
                .await
                .expect("connect"),
        )
    }

    async fn available(&self) -> bool {
        flowstate_store_postgres::testing::test_database()
            .await
            .is_some()
    }
}

flowstate_store::conformance_suite!(Postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_flowstate_or_no_store_at_all_is_refused() {
    let factory = Postgres;
    if !factory.available().await {
        return;
    }
    let clock: Arc<dyn Clock> = Arc::new(flowstate_store::SystemClock);
    let schema = factory.create().await;
    let missing = PostgresStore::open(&url(), Some(&schema.name), clock.clone(), false).await;
    assert!(
        matches!(missing, Err(flowstate_store::StoreError::Missing { .. })),
        "{missing:?}"
    );
    let store = PostgresStore::connect(&url(), Some(&schema.name), clock.clone())
        .await
        .expect("create");
    store.close().await.expect("close");
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "UPDATE {}.flowstate_schema SET version = 99",
            schema.name
        ))
        .await
        .expect("bump");
    let newer = PostgresStore::connect(&url(), Some(&schema.name), clock).await;
    assert!(
        matches!(
            newer,
            Err(flowstate_store::StoreError::NewerFormat { found: 99, .. })
        ),
        "{newer:?}"
    );
}

/// Waits until `pick` of the counters passes `after`, or panics after 10 s; returns them.
async fn moved(
    wakeups: &mut tokio::sync::watch::Receiver<WakeCounts>,
    pick: fn(&WakeCounts) -> u64,
    after: u64,
    what: &str,
) -> WakeCounts {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = *wakeups.borrow_and_update();
        if pick(&now) > after {
            return now;
        }
        tokio::time::timeout_at(deadline, wakeups.changed())
            .await
            .unwrap_or_else(|_| panic!("no wake-up within 10 s: {what}"))
            .expect("store alive");
    }
}

fn flows(c: &WakeCounts) -> u64 {
    c.flows
}

fn timers(c: &WakeCounts) -> u64 {
    c.timers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_wakes_other_processes_on_the_same_schema_only() {
    use flowstate_core::{FlowId, FlowKind, Timestamp};
    use flowstate_store::{AppendBatch, NewEvent, NewFlow, NewTimer};

    let factory = Postgres;
    if !factory.available().await {
        return;
    }
    let clock: Arc<dyn Clock> = Arc::new(flowstate_store::SystemClock);
    let (shared, other) = (factory.create().await, factory.create().await);
    // Four "processes": a writer and a listener on each schema.
    let writer = factory.open(&shared, clock.clone()).await;
    let listener = factory.open(&shared, clock.clone()).await;
    let other_writer = factory.open(&other, clock.clone()).await;
    let elsewhere = factory.open(&other, clock.clone()).await;
    let (mut here, mut there) = (listener.wakeups(), elsewhere.wakeups());
    // Each listener ticks both counters once its LISTEN is in place.
    let here_base = moved(&mut here, flows, 0, "listener connected").await;
    let there_base = moved(&mut there, flows, 0, "listener connected").await;

    let create = |flow: FlowId| AppendBatch {
        flow,
        expected_next_seq: 1,
        events: vec![NewEvent {
            time: clock.now(),
            format: 1,
            body: b"{}".to_vec(),
        }],
        create: Some(NewFlow {
            kind: FlowKind::Function,
            definition: "f".into(),
            idempotency: None,
        }),
        status: None,
        ready: Some(true),
        timers: Vec::new(),
    };
    let flow = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [7; 10]);
    writer
        .append(create(flow))
        .await
        .expect("create a ready flow");
    let seen = moved(
        &mut here,
        flows,
        here_base.flows,
        "a ready flow created by another process",
    )
    .await;
    writer.mark_ready(flow).await.expect("mark ready");
    let seen = moved(
        &mut here,
        flows,
        seen.flows,
        "mark_ready in another process",
    )
    .await;
    let timer = NewTimer {
        name: "t".into(),
        due: clock.now(),
    };
    writer.schedule_timer(flow, timer).await.expect("timer");
    moved(
        &mut here,
        timers,
        seen.timers,
        "a timer set by another process",
    )
    .await;

    // PostgreSQL delivers notifications in commit order: once the other schema's own
    // notification has arrived, every notification of the first schema has been seen (and
    // must have been ignored).
    let other_flow = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [8; 10]);
    other_writer
        .append(create(other_flow))
        .await
        .expect("create");
    let after = moved(
        &mut there,
        flows,
        there_base.flows,
        "its own schema's wake-up",
    )
    .await;
    assert_eq!(
        (
            after.flows - there_base.flows,
            after.timers - there_base.timers
        ),
        (1, 0),
        "a store on another schema is woken only by its own schema"
    );
    for store in [writer, listener, other_writer, elsewhere] {
        store.close().await.expect("close");
    }
}
