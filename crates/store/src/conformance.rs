//! The conformance suite: one set of behaviours that every [`Store`] must show, run against
//! each implementation with [`conformance_suite!`](crate::conformance_suite).
//!
//! A store crate implements [`StoreFactory`] and writes, in a test file:
//!
//! ```text
//! flowstate_store::conformance_suite!(MyFactory::default());
//! ```
//!
//! Every test drives the store with a [`ManualClock`], so lease expiry and timers are exact and
//! no test sleeps.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::limits::{
    MAX_CLAIM_BATCH, MAX_EVENTS_PER_APPEND, MAX_EVENT_BODY_BYTES, MAX_LEASE_SECS, MAX_NAME_BYTES,
    MAX_PAGE_SIZE, MAX_READ_BATCH,
};
use flowstate_core::machine::{ActivationState, FlowState, PlanState};
use flowstate_core::{Clock, FlowId, FlowKind, FlowStatus, ManualClock, Timestamp};

mod keys;

pub use keys::{
    an_expired_idempotency_key_is_replaced, an_idempotency_key_creates_once,
    idempotency_key_limits_are_refused, idempotency_keys_survive_a_reopen,
};

use crate::{
    AppendBatch, Claim, FlowQuery, InvalidInput, NewEvent, NewFlow, NewTimer, Release, Store,
    StoreError, WakeKind, WorkerId,
};

/// Opens stores for the suite.
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// Where a store lives (a file, a schema, shared memory).
    type Location: Send + Sync;

    /// A new, empty location.
    async fn create(&self) -> Self::Location;

    /// Opens the store at `location`, driven by `clock`.
    async fn open(&self, location: &Self::Location, clock: Arc<dyn Clock>) -> Arc<dyn Store>;

    /// Whether the store can be tested here. A store that needs a server returns `false`
    /// (after printing that it skipped) when none is reachable, and must panic instead when
    /// `CI=true`, so that CI never passes by skipping.
    async fn available(&self) -> bool {
        true
    }
}

/// Generates one `#[tokio::test]` per conformance case for a factory expression.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            append_then_read_in_order,
            stale_expected_seq_conflicts_and_writes_nothing,
            concurrent_appenders_make_no_gap_and_no_duplicate,
            leases_expire_and_flows_are_reclaimed,
            a_wake_during_a_claim_is_not_lost,
            timers_fire_in_due_order_and_once,
            wakeups_and_the_next_timer_tell_idle_workers_when_to_look,
            due_timers_fire_once_and_wake_their_flows,
            reopen_keeps_everything,
            invalid_input_is_refused_and_nothing_written,
            list_filters_and_pages,
            delete_removes_flow_log_and_timers,
            status_and_ready_follow_appends,
            long_interleaved_logs_read_back_in_any_range,
            compaction_replaces_the_log_and_keeps_the_index_row,
            compaction_refusals_write_nothing,
            compacted_long_logs_read_back_in_any_range_and_after_reopen,
            a_compaction_and_a_racing_append_never_both_succeed,
            a_compacted_log_reads_from_its_first_event,
            an_idempotency_key_creates_once,
            an_expired_idempotency_key_is_replaced,
            idempotency_keys_survive_a_reopen,
            idempotency_key_limits_are_refused,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let factory = $factory;
                if $crate::conformance::StoreFactory::available(&factory).await {
                    $crate::conformance::$case(&factory).await;
                }
            }
        )*
    };
}

/// 2026-01-01T00:00:00Z.
const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

struct Fixture {
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
}

async fn fixture<F: StoreFactory>(factory: &F) -> (Fixture, F::Location) {
    let clock = Arc::new(ManualClock::new(START));
    let location = factory.create().await;
    let store = factory.open(&location, clock.clone()).await;
    (Fixture { clock, store }, location)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn new_flow_id(clock: &ManualClock) -> FlowId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n);
    FlowId::from_parts(clock.now(), random)
}

fn event(time: Timestamp, payload: &serde_json::Value) -> NewEvent {
    NewEvent {
        time,
        format: 1,
        body: serde_json::to_vec(payload).expect("json"),
    }
}

fn creation(flow: FlowId, kind: FlowKind, definition: &str, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        flow,
        expected_next_seq: 1,
        events,
        create: Some(NewFlow {
            kind,
            definition: definition.to_owned(),
            idempotency: None,
        }),
        status: None,
        ready: None,
        timers: Vec::new(),
    }
}

fn follow_up(flow: FlowId, expected_next_seq: u64, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        flow,
        expected_next_seq,
        events,
        create: None,
        status: None,
        ready: None,
        timers: Vec::new(),
    }
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker id")
}

async fn create_flow(fx: &Fixture, kind: FlowKind, definition: &str, ready: bool) -> FlowId {
    let flow = new_flow_id(&fx.clock);
    let mut batch = creation(
        flow,
        kind,
        definition,
        vec![event(fx.clock.now(), &serde_json::json!({"created": true}))],
    );
    batch.ready = ready.then_some(true);
    fx.store.append(batch).await.expect("create flow");
    flow
}

/// Appends land in order, are read back exactly, and the index row follows.
pub async fn append_then_read_in_order<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let flow = new_flow_id(&fx.clock);
    let t0 = fx.clock.now();
    let first: Vec<NewEvent> = (1..=3)
        .map(|n| event(t0, &serde_json::json!({ "n": n })))
        .collect();
    let outcome = fx
        .store
        .append(creation(flow, FlowKind::TaskGraph, "order", first.clone()))
        .await
        .expect("create");
    assert_eq!((outcome.first_seq, outcome.next_seq), (1, 4));
    fx.clock.advance(Duration::from_millis(5));
    let t1 = fx.clock.now();
    let second: Vec<NewEvent> = (4..=5)
        .map(|n| event(t1, &serde_json::json!({ "n": n })))
        .collect();
    let outcome = fx
        .store
        .append(follow_up(flow, 4, second.clone()))
        .await
        .expect("append");
    assert_eq!((outcome.first_seq, outcome.next_seq), (4, 6));

    let all = fx.store.read(flow, 1, 100).await.expect("read");
    let written: Vec<&NewEvent> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 5);
    for (index, (stored, sent)) in all.iter().zip(&written).enumerate() {
        assert_eq!(stored.flow, flow);
        assert_eq!(stored.seq, index as u64 + 1);
        assert_eq!(stored.time, sent.time);
        assert_eq!(stored.format, sent.format);
        assert_eq!(stored.body, sent.body);
    }
    let middle = fx.store.read(flow, 3, 2).await.expect("read range");
    assert_eq!(middle.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(fx
        .store
        .read(flow, 6, 10)
        .await
        .expect("read past end")
        .is_empty());

    let summary = fx.store.flow(flow).await.expect("flow").expect("exists");
    assert_eq!(summary.id, flow);
    assert_eq!(summary.kind, FlowKind::TaskGraph);
    assert_eq!(summary.definition, "order");
    assert_eq!(summary.status, FlowStatus::TaskGraph(FlowState::Pending));
    assert_eq!((summary.created_at, summary.updated_at), (t0, t1));
    assert_eq!(summary.next_seq, 6);
    assert_eq!(summary.events(), 5);
    let bytes: usize = written.iter().map(|e| e.body.len()).sum();
    assert_eq!(summary.bytes, bytes as u64);
    assert!(!summary.ready);

    let unknown = new_flow_id(&fx.clock);
    assert!(fx.store.flow(unknown).await.expect("lookup").is_none());
    assert!(matches!(
        fx.store.read(unknown, 1, 10).await,
        Err(StoreError::UnknownFlow { .. })
    ));
}

/// A stale or future expected sequence number conflicts, and writes nothing.
pub async fn stale_expected_seq_conflicts_and_writes_nothing<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let now = fx.clock.now();
    let flow = create_flow(&fx, FlowKind::Plan, "checkout", false).await;
    let one = || vec![event(now, &serde_json::json!({"late": true}))];

    let again = fx
        .store
        .append(creation(flow, FlowKind::Plan, "checkout", one()))
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "creating an existing flow must conflict, got {again:?}"
    );
    for expected in [3, 50] {
        let result = fx.store.append(follow_up(flow, expected, one())).await;
        assert!(
            matches!(result, Err(StoreError::Conflict { actual: 2, .. })),
            "expected_next_seq {expected} must conflict, got {result:?}"
        );
    }
    fx.store
        .append(follow_up(flow, 2, one()))
        .await
        .expect("the right one");
    let stale = fx.store.append(follow_up(flow, 2, one())).await;
    assert!(matches!(
        stale,
        Err(StoreError::Conflict {
            expected: 2,
            actual: 3,
            ..
        })
    ));

    let unknown = new_flow_id(&fx.clock);
    let result = fx.store.append(follow_up(unknown, 4, one())).await;
    assert!(
        matches!(result, Err(StoreError::UnknownFlow { .. })),
        "{result:?}"
    );
    assert!(fx.store.flow(unknown).await.expect("lookup").is_none());

    let events = fx.store.read(flow, 1, 100).await.expect("read");
    assert_eq!(events.len(), 2);
    assert_eq!(
        fx.store
            .flow(flow)
            .await
            .expect("flow")
            .expect("exists")
            .next_seq,
        3
    );
}

/// 8 appenders × 1,000 appends, contending for 8 flows with retries on conflict: every
/// append lands exactly once and every log is dense.
pub async fn concurrent_appenders_make_no_gap_and_no_duplicate<F: StoreFactory>(factory: &F) {
    const APPENDERS: usize = 8;
    const APPENDS: usize = 1_000;
    let (fx, _location) = fixture(factory).await;
    let mut flows = Vec::new();
    for _ in 0..APPENDERS {
        flows.push(create_flow(&fx, FlowKind::Function, "counter", false).await);
    }
    let flows = Arc::new(flows);
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let store = fx.store.clone();
        let flows = flows.clone();
        let time = fx.clock.now();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for k in 0..APPENDS {
                // Appender i's k-th append goes to flow (i + k) mod 8: all appenders contend.
                let flow = flows[(appender + k) % APPENDERS];
                let body = event(time, &serde_json::json!({ "appender": appender, "k": k }));
                loop {
                    let next = store
                        .flow(flow)
                        .await
                        .expect("head")
                        .expect("exists")
                        .next_seq;
                    match store
                        .append(follow_up(flow, next, vec![body.clone()]))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("append failed: {other}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.expect("appender finished");
    }
    let mut seen = BTreeSet::new();
    for flow in flows.iter() {
        let events = crate::read_all(fx.store.as_ref(), *flow)
            .await
            .expect("read");
        assert_eq!(events.len(), APPENDS + 1, "flow {flow}");
        for (index, stored) in events.iter().enumerate() {
            assert_eq!(
                stored.seq,
                index as u64 + 1,
                "dense sequence in flow {flow}"
            );
        }
        for stored in &events[1..] {
            let value: serde_json::Value = serde_json::from_slice(&stored.body).expect("json");
            let key = (value["appender"].as_u64(), value["k"].as_u64());
            assert!(seen.insert(key), "duplicate append {key:?}");
        }
    }
    assert_eq!(seen.len(), APPENDERS * APPENDS);
}

/// A claimed flow is invisible to other claimers until its lease expires; renewals extend it;
/// a worker whose lease expired and was taken over can neither renew nor release.
pub async fn leases_expire_and_flows_are_reclaimed<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let (w1, w2) = (worker("engine-1"), worker("engine-2"));
    let a = create_flow(&fx, FlowKind::TaskGraph, "a", true).await;
    fx.clock.advance(Duration::from_millis(1));
    let b = create_flow(&fx, FlowKind::TaskGraph, "b", true).await;
    let _idle = create_flow(&fx, FlowKind::TaskGraph, "idle", false).await;
    let lease = Duration::from_secs(30);

    let claims = fx
        .store
        .claim(&w1, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim");
    assert_eq!(
        claims.iter().map(|c| c.flow).collect::<Vec<_>>(),
        [a, b],
        "oldest ready first"
    );
    assert_eq!(claims[0].next_seq, 2);
    assert_eq!(
        claims[0].kind,
        FlowKind::TaskGraph,
        "a claim names the kind"
    );
    let plan = create_flow(&fx, FlowKind::Plan, "p", true).await;
    assert!(
        fx.store
            .claim(&w2, &[FlowKind::TaskGraph, FlowKind::Function], 10, lease)
            .await
            .expect("claim")
            .is_empty(),
        "only the kinds asked for are claimed"
    );
    let plans = fx
        .store
        .claim(&w2, &[FlowKind::Plan], 10, lease)
        .await
        .expect("claim");
    assert_eq!(plans.iter().map(|c| c.flow).collect::<Vec<_>>(), [plan]);
    assert!(fx
        .store
        .release(&w2, &plans[0], Release::Idle)
        .await
        .expect("release"));
    assert_eq!(claims[0].lease_until, fx.clock.now().saturating_add(lease));
    assert!(fx
        .store
        .claim(&w2, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim")
        .is_empty());

    fx.clock.advance(Duration::from_secs(10));
    let renewed = fx.store.renew(&w1, &[a], lease).await.expect("renew");
    assert_eq!(renewed, [a]);
    fx.clock.advance(Duration::from_secs(25)); // b's lease ran out 5 s ago; a's has 15 s left.
    let taken = fx
        .store
        .claim(&w2, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim");
    assert_eq!(taken.iter().map(|c| c.flow).collect::<Vec<_>>(), [b]);
    assert!(fx
        .store
        .renew(&w1, &[b], lease)
        .await
        .expect("renew")
        .is_empty());
    let stale_claim = claims[1].clone();
    assert!(!fx
        .store
        .release(&w1, &stale_claim, Release::Idle)
        .await
        .expect("release"));

    assert!(fx
        .store
        .release(&w2, &taken[0], Release::Idle)
        .await
        .expect("release"));
    let summary = fx.store.flow(b).await.expect("flow").expect("exists");
    assert!(!summary.ready, "an idle release clears the ready flag");
    assert!(fx
        .store
        .claim(&w2, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim")
        .is_empty());

    assert!(fx
        .store
        .release(&w1, &claims[0], Release::StillReady)
        .await
        .expect("release"));
    let again = fx
        .store
        .claim(&w2, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim");
    assert_eq!(again.iter().map(|c| c.flow).collect::<Vec<_>>(), [a]);
}

/// Marking a flow ready while a worker holds it survives that worker's idle release.
pub async fn a_wake_during_a_claim_is_not_lost<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let w = worker("engine-1");
    let flow = create_flow(&fx, FlowKind::Function, "f", false).await;
    assert!(fx
        .store
        .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(5))
        .await
        .expect("claim")
        .is_empty());
    fx.store.mark_ready(flow).await.expect("mark ready");
    let claims: Vec<Claim> = fx
        .store
        .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(5))
        .await
        .expect("claim");
    assert_eq!(claims.len(), 1);
    fx.store
        .mark_ready(flow)
        .await
        .expect("a signal arrives while claimed");
    assert!(fx
        .store
        .release(&w, &claims[0], Release::Idle)
        .await
        .expect("release"));
    let again = fx
        .store
        .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(5))
        .await
        .expect("claim");
    assert_eq!(
        again.len(),
        1,
        "the wake-up that arrived during the claim is kept"
    );
    assert!(fx
        .store
        .release(&w, &again[0], Release::Idle)
        .await
        .expect("release"));
    assert!(fx
        .store
        .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(5))
        .await
        .expect("claim")
        .is_empty());
    let unknown = new_flow_id(&fx.clock);
    assert!(matches!(
        fx.store.mark_ready(unknown).await,
        Err(StoreError::UnknownFlow { .. })
    ));
}

/// Timers become claimable when due, earliest first, are leased to one worker, fire once
/// when completed, and fire again only if their worker's lease ran out.
pub async fn timers_fire_in_due_order_and_once<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let (w1, w2) = (worker("timers-1"), worker("timers-2"));
    let lease = Duration::from_secs(10);
    let start = fx.clock.now();
    let at = |secs: u64| start.saturating_add(Duration::from_secs(secs));
    let flow = new_flow_id(&fx.clock);
    let mut batch = creation(
        flow,
        FlowKind::Function,
        "sleeper",
        vec![event(start, &serde_json::json!({}))],
    );
    batch.timers = vec![NewTimer {
        name: "third".into(),
        due: at(3),
    }];
    fx.store.append(batch).await.expect("create with a timer");
    let other = create_flow(&fx, FlowKind::Function, "sleeper", false).await;
    fx.store
        .schedule_timer(
            flow,
            NewTimer {
                name: "first".into(),
                due: at(1),
            },
        )
        .await
        .expect("schedule");
    fx.store
        .schedule_timer(
            other,
            NewTimer {
                name: "second".into(),
                due: at(2),
            },
        )
        .await
        .expect("schedule");
    fx.store
        .schedule_timer(
            flow,
            NewTimer {
                name: "cancelled".into(),
                due: at(1),
            },
        )
        .await
        .expect("schedule");
    assert!(fx
        .store
        .cancel_timer(flow, "cancelled")
        .await
        .expect("cancel"));
    assert!(!fx
        .store
        .cancel_timer(flow, "cancelled")
        .await
        .expect("cancel twice"));
    let unknown = new_flow_id(&fx.clock);
    assert!(matches!(
        fx.store
            .schedule_timer(
                unknown,
                NewTimer {
                    name: "x".into(),
                    due: at(1)
                }
            )
            .await,
        Err(StoreError::UnknownFlow { .. })
    ));

    assert!(fx
        .store
        .claim_due_timers(&w1, 10, lease)
        .await
        .expect("claim")
        .is_empty());
    fx.clock.set(at(2));
    let due = fx
        .store
        .claim_due_timers(&w1, 10, lease)
        .await
        .expect("claim");
    let names: Vec<&str> = due.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["first", "second"], "due timers, earliest first");
    assert_eq!((due[0].flow, due[0].due), (flow, at(1)));
    assert!(fx
        .store
        .claim_due_timers(&w2, 10, lease)
        .await
        .expect("claim")
        .is_empty());
    assert!(!fx
        .store
        .complete_timer(&w2, &due[0])
        .await
        .expect("complete"));
    assert!(fx
        .store
        .complete_timer(&w1, &due[0])
        .await
        .expect("complete"));
    assert!(fx
        .store
        .complete_timer(&w1, &due[1])
        .await
        .expect("complete"));
    assert!(!fx
        .store
        .complete_timer(&w1, &due[1])
        .await
        .expect("fires once"));

    fx.clock.set(at(3));
    let third = fx
        .store
        .claim_due_timers(&w1, 10, lease)
        .await
        .expect("claim");
    assert_eq!(third.len(), 1);
    // w1 dies holding it; after the lease another worker fires it.
    fx.clock.advance(lease + Duration::from_millis(1));
    let retaken = fx
        .store
        .claim_due_timers(&w2, 10, lease)
        .await
        .expect("claim");
    assert_eq!(
        retaken.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["third"]
    );
    assert!(!fx
        .store
        .complete_timer(&w1, &third[0])
        .await
        .expect("stale worker"));
    assert!(fx
        .store
        .complete_timer(&w2, &retaken[0])
        .await
        .expect("complete"));

    // Setting a timer again moves it, and a claim of the old due time no longer completes it.
    fx.store
        .schedule_timer(
            flow,
            NewTimer {
                name: "moved".into(),
                due: at(20),
            },
        )
        .await
        .expect("schedule");
    fx.store
        .schedule_timer(
            flow,
            NewTimer {
                name: "moved".into(),
                due: at(40),
            },
        )
        .await
        .expect("move");
    fx.clock.set(at(30));
    assert!(fx
        .store
        .claim_due_timers(&w1, 10, lease)
        .await
        .expect("claim")
        .is_empty());
    fx.clock.set(at(40));
    assert_eq!(
        fx.store
            .claim_due_timers(&w1, 10, lease)
            .await
            .expect("claim")
            .len(),
        1
    );
}

/// Everything that can make a flow claimable moves the wake-up counter before it returns
/// (spurious ticks are allowed, missed ones are not), and the next timer time is the earliest
/// moment a timer claim can succeed: a free timer's due time or a held one's lease end.
pub async fn wakeups_and_the_next_timer_tell_idle_workers_when_to_look<F: StoreFactory>(
    factory: &F,
) {
    let (fx, _location) = fixture(factory).await;
    let w = worker("waker");
    let mut wakeups = fx.store.wakeups();
    let mut seen = *wakeups.borrow_and_update();
    let mut saw_wake = |kind: WakeKind, what: &str| {
        let now = *wakeups.borrow_and_update();
        let moved = match kind {
            WakeKind::Flows => now.flows != seen.flows,
            WakeKind::Timers => now.timers != seen.timers,
        };
        assert!(moved, "{what} moves the {kind:?} wake-up counter");
        seen = now;
    };
    let flow = create_flow(&fx, FlowKind::Function, "f", true).await;
    saw_wake(WakeKind::Flows, "creating a ready flow");
    let idle = create_flow(&fx, FlowKind::Function, "f", false).await;
    fx.store.mark_ready(idle).await.expect("mark ready");
    saw_wake(WakeKind::Flows, "mark_ready");
    let mut append = follow_up(flow, 2, vec![event(fx.clock.now(), &serde_json::json!({}))]);
    append.ready = Some(true);
    fx.store.append(append).await.expect("append");
    saw_wake(WakeKind::Flows, "an append that sets the ready flag");
    let claims = fx
        .store
        .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(5))
        .await
        .expect("claim");
    assert_eq!(claims.len(), 2);
    assert!(claims.iter().all(|c| c.kind == FlowKind::Function));
    assert!(fx
        .store
        .release(&w, &claims[0], Release::StillReady)
        .await
        .expect("release"));
    saw_wake(WakeKind::Flows, "a release that leaves the flow ready");

    assert_eq!(fx.store.next_timer_due().await.expect("next"), None);
    let start = fx.clock.now();
    let at = |secs: u64| start.saturating_add(Duration::from_secs(secs));
    for (name, due) in [("later", at(30)), ("sooner", at(10))] {
        fx.store
            .schedule_timer(
                flow,
                NewTimer {
                    name: name.into(),
                    due,
                },
            )
            .await
            .expect("schedule");
        saw_wake(WakeKind::Timers, "setting a timer");
    }
    let mut append = follow_up(flow, 3, vec![event(fx.clock.now(), &serde_json::json!({}))]);
    append.timers = vec![NewTimer {
        name: "latest".into(),
        due: at(60),
    }];
    fx.store.append(append).await.expect("append with a timer");
    saw_wake(WakeKind::Timers, "an append that sets a timer");
    assert_eq!(fx.store.next_timer_due().await.expect("next"), Some(at(10)));
    fx.clock.set(at(10));
    let held = fx
        .store
        .claim_due_timers(&w, 10, Duration::from_secs(50))
        .await
        .expect("claim timers");
    assert_eq!(held.len(), 1);
    assert_eq!(
        fx.store.next_timer_due().await.expect("next"),
        Some(at(30)),
        "a held timer counts from its lease end (60 s), after the next free one"
    );
    fx.store.cancel_timer(flow, "later").await.expect("cancel");
    assert_eq!(
        fx.store.next_timer_due().await.expect("next"),
        Some(at(60)),
        "a held timer may be claimed again when its lease ends"
    );
    assert!(fx
        .store
        .complete_timer(&w, &held[0])
        .await
        .expect("complete"));
    assert_eq!(fx.store.next_timer_due().await.expect("next"), Some(at(60)));
}

/// `fire_due_timers` removes due timers nobody holds, earliest first, and marks their flows
/// ready in the same transaction: each timer fires once, and a held timer only after its
/// holder's lease ran out.
pub async fn due_timers_fire_once_and_wake_their_flows<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let start = fx.clock.now();
    let at = |secs: u64| start.saturating_add(Duration::from_secs(secs));
    let (one, two) = (
        create_flow(&fx, FlowKind::Function, "sleeper", false).await,
        create_flow(&fx, FlowKind::Function, "sleeper", false).await,
    );
    for (flow, name, due) in [
        (one, "a", at(1)),
        (two, "b", at(2)),
        (one, "c", at(10)),
        (two, "held", at(1)),
    ] {
        fx.store
            .schedule_timer(
                flow,
                NewTimer {
                    name: name.into(),
                    due,
                },
            )
            .await
            .expect("schedule");
    }
    fx.clock.set(at(1));
    let held = fx
        .store
        .claim_due_timers(&worker("old-style"), 10, Duration::from_secs(5))
        .await
        .expect("claim");
    let held: Vec<_> = held.into_iter().filter(|t| t.name == "held").collect();
    assert_eq!(held.len(), 1);
    // Release the others the old way so that only "held" stays leased.
    fx.store
        .schedule_timer(
            one,
            NewTimer {
                name: "a".into(),
                due: at(1),
            },
        )
        .await
        .expect("re-set a (free again)");
    fx.clock.set(at(3));
    let mut wakeups = fx.store.wakeups();
    let before = *wakeups.borrow_and_update();
    let fired = fx.store.fire_due_timers(10).await.expect("fire");
    let names: Vec<&str> = fired.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "due and free timers, earliest first");
    assert_eq!((fired[0].flow, fired[0].due), (one, at(1)));
    for flow in [one, two] {
        assert!(
            fx.store
                .flow(flow)
                .await
                .expect("flow")
                .expect("exists")
                .ready,
            "a fired timer's flow is ready"
        );
    }
    assert_ne!(
        wakeups.borrow_and_update().flows,
        before.flows,
        "workers are woken"
    );
    assert!(
        fx.store.fire_due_timers(10).await.expect("fire").is_empty(),
        "each timer fires once"
    );
    fx.clock.set(at(7));
    let fired = fx.store.fire_due_timers(10).await.expect("fire");
    assert_eq!(
        fired.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["held"],
        "a held timer fires once its holder's lease ran out; c is not due"
    );
    let _ = assert_invalid(fx.store.fire_due_timers(0).await, "fire 0 timers");
    assert_eq!(fx.store.next_timer_due().await.expect("next"), Some(at(10)));
}

/// Closing and opening the same location again keeps logs, index rows, flags and timers.
pub async fn reopen_keeps_everything<F: StoreFactory>(factory: &F) {
    let (fx, location) = fixture(factory).await;
    let flow = create_flow(&fx, FlowKind::Plan, "archive-me", true).await;
    let mut batch = follow_up(
        flow,
        2,
        vec![event(
            fx.clock.now(),
            &serde_json::json!({"to": "completed"}),
        )],
    );
    batch.status = Some(FlowStatus::Plan(PlanState::Completed));
    batch.timers = vec![NewTimer {
        name: "deactivate".into(),
        due: fx.clock.now(),
    }];
    fx.store.append(batch).await.expect("append");
    let before_events = fx.store.read(flow, 1, 100).await.expect("read");
    let before_summary = fx.store.flow(flow).await.expect("flow");
    fx.store.close().await.expect("close");
    assert!(matches!(fx.store.flow(flow).await, Err(StoreError::Closed)));

    let reopened = factory.open(&location, fx.clock.clone()).await;
    assert_eq!(
        reopened.read(flow, 1, 100).await.expect("read"),
        before_events
    );
    assert_eq!(reopened.flow(flow).await.expect("flow"), before_summary);
    let w = worker("after-restart");
    assert_eq!(
        reopened
            .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(1))
            .await
            .expect("claim")
            .len(),
        1
    );
    let timers = reopened
        .claim_due_timers(&w, 10, Duration::from_secs(1))
        .await
        .expect("timers");
    assert_eq!(
        timers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["deactivate"]
    );
    reopened.close().await.expect("close");
}

/// A refused append: what it tests, the batch, and the error it must give.
type Refusal<'a> = (&'a str, AppendBatch, fn(&InvalidInput) -> bool);

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) -> InvalidInput {
    match result {
        Err(StoreError::Invalid(invalid)) => invalid,
        other => panic!("{what}: expected StoreError::Invalid, got {other:?}"),
    }
}

/// Oversized or malformed input is refused with a typed error, and nothing is written.
pub async fn invalid_input_is_refused_and_nothing_written<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let now = fx.clock.now();
    let small = || event(now, &serde_json::json!({}));
    let fresh = new_flow_id(&fx.clock);
    let existing = create_flow(&fx, FlowKind::TaskGraph, "g", false).await;

    let mut huge = small();
    huge.body = format!("\"{}\"", "x".repeat(MAX_EVENT_BODY_BYTES)).into_bytes();
    let refusals: Vec<Refusal<'_>> = vec![
        (
            "empty append",
            creation(fresh, FlowKind::Plan, "p", vec![]),
            |e| matches!(e, InvalidInput::EmptyAppend),
        ),
        (
            "too many events",
            creation(
                fresh,
                FlowKind::Plan,
                "p",
                vec![small(); MAX_EVENTS_PER_APPEND + 1],
            ),
            |e| matches!(e, InvalidInput::TooManyEvents { .. }),
        ),
        (
            "oversized body",
            creation(fresh, FlowKind::Plan, "p", vec![small(), huge]),
            |e| matches!(e, InvalidInput::BodyTooLarge { index: 1, .. }),
        ),
        (
            "body that is not JSON",
            creation(
                fresh,
                FlowKind::Plan,
                "p",
                vec![NewEvent {
                    time: now,
                    format: 1,
                    body: b"{not json".to_vec(),
                }],
            ),
            |e| matches!(e, InvalidInput::MalformedBody { index: 0, .. }),
        ),
        (
            "unknown format",
            creation(
                fresh,
                FlowKind::Plan,
                "p",
                vec![NewEvent {
                    time: now,
                    format: 99,
                    body: b"{}".to_vec(),
                }],
            ),
            |e| matches!(e, InvalidInput::UnsupportedFormat { format: 99, .. }),
        ),
        (
            "sequence zero",
            follow_up(existing, 0, vec![small()]),
            |e| matches!(e, InvalidInput::ZeroSequence),
        ),
        (
            "first append without create",
            follow_up(fresh, 1, vec![small()]),
            |e| matches!(e, InvalidInput::MissingCreate),
        ),
        (
            "create on a later append",
            AppendBatch {
                expected_next_seq: 2,
                ..creation(existing, FlowKind::TaskGraph, "g", vec![small()])
            },
            |e| matches!(e, InvalidInput::UnexpectedCreate { expected: 2 }),
        ),
        (
            "empty definition",
            creation(fresh, FlowKind::Plan, "", vec![small()]),
            |e| matches!(e, InvalidInput::BadName { .. }),
        ),
        (
            "definition too long",
            creation(
                fresh,
                FlowKind::Plan,
                &"d".repeat(MAX_NAME_BYTES + 1),
                vec![small()],
            ),
            |e| matches!(e, InvalidInput::BadName { .. }),
        ),
        (
            "status of another kind on create",
            AppendBatch {
                status: Some(FlowStatus::Function(ActivationState::Done)),
                ..creation(fresh, FlowKind::Plan, "p", vec![small()])
            },
            |e| matches!(e, InvalidInput::StatusKindMismatch { .. }),
        ),
        (
            "status of another kind later",
            AppendBatch {
                status: Some(FlowStatus::Plan(PlanState::Failed)),
                ..follow_up(existing, 2, vec![small()])
            },
            |e| matches!(e, InvalidInput::StatusKindMismatch { .. }),
        ),
        (
            "empty timer name",
            AppendBatch {
                timers: vec![NewTimer {
                    name: String::new(),
                    due: now,
                }],
                ..follow_up(existing, 2, vec![small()])
            },
            |e| matches!(e, InvalidInput::BadName { .. }),
        ),
    ];
    for (what, batch, expected) in refusals {
        let invalid = assert_invalid(fx.store.append(batch).await, what);
        assert!(expected(&invalid), "{what}: wrong error {invalid:?}");
        assert!(!invalid.to_string().is_empty());
        assert!(
            fx.store.flow(fresh).await.expect("lookup").is_none(),
            "{what} wrote a flow"
        );
        let summary = fx
            .store
            .flow(existing)
            .await
            .expect("lookup")
            .expect("exists");
        assert_eq!(summary.next_seq, 2, "{what} wrote an event");
        assert_eq!(
            summary.status,
            FlowStatus::TaskGraph(FlowState::Pending),
            "{what}"
        );
    }

    let w = worker("w");
    let lease = Duration::from_secs(1);
    assert_invalid(
        fx.store.claim(&w, &FlowKind::ALL, 0, lease).await,
        "claim 0",
    );
    assert_invalid(
        fx.store
            .claim(&w, &FlowKind::ALL, MAX_CLAIM_BATCH + 1, lease)
            .await,
        "claim too many",
    );
    assert_invalid(
        fx.store.claim(&w, &FlowKind::ALL, 1, Duration::ZERO).await,
        "zero lease",
    );
    let too_long = Duration::from_secs(MAX_LEASE_SECS + 1);
    assert_invalid(
        fx.store.claim(&w, &FlowKind::ALL, 1, too_long).await,
        "lease too long",
    );
    assert_invalid(
        fx.store.renew(&w, &[existing], too_long).await,
        "renew too long",
    );
    assert_invalid(
        fx.store.claim_due_timers(&w, 0, lease).await,
        "timer claim 0",
    );
    assert_invalid(fx.store.read(existing, 1, 0).await, "read 0");
    assert_invalid(
        fx.store.read(existing, 1, MAX_READ_BATCH + 1).await,
        "read too many",
    );
    let page = FlowQuery {
        limit: MAX_PAGE_SIZE + 1,
        ..FlowQuery::default()
    };
    assert_invalid(fx.store.list(&page).await, "page too large");
    assert_invalid(
        fx.store
            .schedule_timer(
                existing,
                NewTimer {
                    name: "t".repeat(MAX_NAME_BYTES + 1),
                    due: now,
                },
            )
            .await,
        "timer name too long",
    );
    assert!(WorkerId::new("").is_err());
    assert!(WorkerId::new("w".repeat(MAX_NAME_BYTES + 1)).is_err());
}

/// Listing filters by kind, definition, status and creation time, and pages by id.
pub async fn list_filters_and_pages<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let mut created = Vec::new();
    for i in 0..25 {
        fx.clock.advance(Duration::from_millis(10));
        let (kind, definition) = match i % 3 {
            0 => (FlowKind::TaskGraph, "graph"),
            1 => (FlowKind::Plan, "plan"),
            _ => (FlowKind::Function, "func"),
        };
        let flow = create_flow(&fx, kind, definition, false).await;
        created.push((flow, kind, fx.clock.now()));
    }
    let running = created[0].0;
    let mut batch = follow_up(
        running,
        2,
        vec![event(fx.clock.now(), &serde_json::json!({}))],
    );
    batch.status = Some(FlowStatus::TaskGraph(FlowState::Running));
    fx.store.append(batch).await.expect("append");

    let mut pages = Vec::new();
    let mut query = FlowQuery {
        limit: 10,
        ..FlowQuery::default()
    };
    loop {
        let page = fx.store.list(&query).await.expect("list");
        pages.push(page.flows.len());
        query.after = page.next_after;
        if page.next_after.is_none() {
            break;
        }
    }
    assert_eq!(pages, [10, 10, 5]);

    let all = fx.store.list(&FlowQuery::default()).await.expect("list");
    let ids: Vec<FlowId> = all.flows.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        created.iter().map(|c| c.0).collect::<Vec<_>>(),
        "ordered by creation"
    );
    assert_eq!(all.next_after, None);

    let plans = FlowQuery {
        kind: Some(FlowKind::Plan),
        ..FlowQuery::default()
    };
    assert_eq!(fx.store.list(&plans).await.expect("list").flows.len(), 8);
    let funcs = FlowQuery {
        definition: Some("func".into()),
        ..FlowQuery::default()
    };
    assert_eq!(fx.store.list(&funcs).await.expect("list").flows.len(), 8);
    let by_status = FlowQuery {
        status: Some("running".into()),
        ..FlowQuery::default()
    };
    let found = fx.store.list(&by_status).await.expect("list");
    assert_eq!(
        found.flows.iter().map(|s| s.id).collect::<Vec<_>>(),
        [running]
    );
    let window = FlowQuery {
        created_from: Some(created[5].2),
        created_before: Some(created[10].2),
        ..FlowQuery::default()
    };
    let found = fx.store.list(&window).await.expect("list");
    let expected: Vec<FlowId> = created[5..10].iter().map(|c| c.0).collect();
    assert_eq!(
        found.flows.iter().map(|s| s.id).collect::<Vec<_>>(),
        expected
    );
}

/// Deleting a flow removes its log, its index row and its timers, and nothing else.
pub async fn delete_removes_flow_log_and_timers<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let gone = create_flow(&fx, FlowKind::Plan, "p", true).await;
    let kept = create_flow(&fx, FlowKind::Plan, "p", false).await;
    let now = fx.clock.now();
    for flow in [gone, kept] {
        fx.store
            .schedule_timer(
                flow,
                NewTimer {
                    name: "t".into(),
                    due: now,
                },
            )
            .await
            .expect("schedule");
    }
    assert!(fx.store.delete_flow(gone).await.expect("delete"));
    assert!(!fx.store.delete_flow(gone).await.expect("delete twice"));
    assert!(fx.store.flow(gone).await.expect("lookup").is_none());
    assert!(matches!(
        fx.store.read(gone, 1, 10).await,
        Err(StoreError::UnknownFlow { .. })
    ));
    let w = worker("w");
    assert!(fx
        .store
        .claim(&w, &FlowKind::ALL, 10, Duration::from_secs(1))
        .await
        .expect("claim")
        .is_empty());
    let timers = fx
        .store
        .claim_due_timers(&w, 10, Duration::from_secs(1))
        .await
        .expect("timers");
    assert_eq!(timers.iter().map(|t| t.flow).collect::<Vec<_>>(), [kept]);
    assert_eq!(fx.store.read(kept, 1, 10).await.expect("read").len(), 1);
    let listed = fx.store.list(&FlowQuery::default()).await.expect("list");
    assert_eq!(
        listed.flows.iter().map(|s| s.id).collect::<Vec<_>>(),
        [kept]
    );
}

/// The status and the ready flag of the index row follow what each append says.
pub async fn status_and_ready_follow_appends<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let flow = create_flow(&fx, FlowKind::Function, "f", false).await;
    let now = fx.clock.now();
    let mut batch = follow_up(flow, 2, vec![event(now, &serde_json::json!({}))]);
    batch.status = Some(FlowStatus::Function(ActivationState::Sleeping));
    batch.ready = Some(true);
    fx.store.append(batch).await.expect("append");
    let summary = fx.store.flow(flow).await.expect("flow").expect("exists");
    assert_eq!(
        summary.status,
        FlowStatus::Function(ActivationState::Sleeping)
    );
    assert!(summary.ready);
    let mut batch = follow_up(flow, 3, vec![event(now, &serde_json::json!({}))]);
    batch.ready = Some(false);
    fx.store.append(batch).await.expect("append");
    let summary = fx.store.flow(flow).await.expect("flow").expect("exists");
    assert_eq!(
        summary.status,
        FlowStatus::Function(ActivationState::Sleeping),
        "kept"
    );
    assert!(!summary.ready);
}

/// Two long logs written in interleaved appends of varying size read back exactly, in every
/// range (stores may index logs sparsely; ranges that start and end anywhere must still work).
pub async fn long_interleaved_logs_read_back_in_any_range<F: StoreFactory>(factory: &F) {
    // Longer than a batched read's share (the PostgreSQL store reads 1,000 events per call
    // in a batch, and the rest separately).
    const EVENTS: u64 = 2_500;
    let (fx, _location) = fixture(factory).await;
    let flows = [
        create_flow(&fx, FlowKind::TaskGraph, "long-a", false).await,
        create_flow(&fx, FlowKind::TaskGraph, "long-b", false).await,
    ];
    let mut next = [2u64, 2u64];
    let mut size = 1;
    while next.iter().any(|&n| n <= EVENTS) {
        for (i, flow) in flows.iter().enumerate() {
            let count = size.min(EVENTS + 1 - next[i].min(EVENTS + 1));
            if count == 0 {
                continue;
            }
            let events = (0..count)
                .map(|k| {
                    event(
                        fx.clock.now(),
                        &serde_json::json!({ "flow": i, "seq": next[i] + k }),
                    )
                })
                .collect();
            fx.store
                .append(follow_up(*flow, next[i], events))
                .await
                .expect("append");
            next[i] += count;
        }
        size = size % 13 + 1;
    }
    for (i, flow) in flows.iter().enumerate() {
        let all = crate::read_all(fx.store.as_ref(), *flow)
            .await
            .expect("read");
        assert_eq!(all.len() as u64, EVENTS);
        for (index, stored) in all.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_slice(&stored.body).expect("json");
            let seq = index as u64 + 1;
            assert_eq!(stored.seq, seq);
            if seq > 1 {
                assert_eq!(
                    (value["flow"].as_u64(), value["seq"].as_u64()),
                    (Some(i as u64), Some(seq))
                );
            }
        }
        for (from, limit) in [
            (1, 1),
            (1, 64),
            (63, 3),
            (64, 1),
            (65, 64),
            (100, 250),
            (640, 100),
            (699, 5),
            (700, 1),
            (701, 10),
            (990, 20),
            (1, 1_000),
            (1, 1_001),
            (2, 2_000),
            (1_000, 1_500),
            (2_499, 5),
            (2_500, 1),
            (2_501, 10),
            (5, 100_000),
        ] {
            let range = fx.store.read(*flow, from, limit).await.expect("range");
            let expected: Vec<u64> = (from..=EVENTS).take(limit).collect();
            let got: Vec<u64> = range.iter().map(|e| e.seq).collect();
            assert_eq!(got, expected, "read({from}, {limit})");
            for stored in &range {
                assert_eq!(
                    stored.body,
                    all[usize::try_from(stored.seq - 1).expect("small")].body
                );
            }
        }
    }
    assert!(fx.store.delete_flow(flows[0]).await.expect("delete"));
    assert_eq!(
        crate::read_all(fx.store.as_ref(), flows[1])
            .await
            .expect("read")
            .len() as u64,
        EVENTS
    );
}

/// The bodies' total size, as the index row counts it.
fn body_bytes(events: &[NewEvent]) -> u64 {
    events.iter().map(|e| e.body.len() as u64).sum()
}

/// Checks that `flow`'s log is exactly `expected`, numbered from 1, and that nothing lies
/// beyond it.
async fn assert_log(store: &dyn Store, flow: FlowId, expected: &[NewEvent], what: &str) {
    assert_log_from(store, flow, 1, expected, what).await;
}

/// Checks that `flow`'s log, read from 1, is exactly `expected`, numbered from `first` (a
/// compacted log starts after 1), and that nothing lies beyond it.
async fn assert_log_from(
    store: &dyn Store,
    flow: FlowId,
    first: u64,
    expected: &[NewEvent],
    what: &str,
) {
    let stored = crate::read_all(store, flow).await.expect("read");
    assert_eq!(stored.len(), expected.len(), "{what}: length");
    for (seq, (stored, sent)) in (first..).zip(stored.iter().zip(expected)) {
        assert_eq!(
            (stored.flow, stored.seq, stored.time, stored.format),
            (flow, seq, sent.time, sent.format),
            "{what}: event {seq}"
        );
        assert_eq!(stored.body, sent.body, "{what}: body of event {seq}");
    }
    let beyond = first + expected.len() as u64;
    assert!(
        store
            .read(flow, beyond, 1_000)
            .await
            .expect("read past the end")
            .is_empty(),
        "{what}: events from {beyond}"
    );
}

/// `n` events of a log, timed from `time` one millisecond apart, tagged with `tag` so that
/// one log's events are never mistaken for another's.
fn numbered(time: Timestamp, tag: &str, from: u64, n: u64) -> Vec<NewEvent> {
    (from..from + n)
        .map(|seq| {
            event(
                time.saturating_add(Duration::from_millis(seq)),
                &serde_json::json!({ "tag": tag, "seq": seq }),
            )
        })
        .collect()
}

/// A compaction replaces the whole log (read back exactly, numbered after the old log,
/// nothing before or beyond it), updates the next sequence number, size, status and update
/// time, and keeps the rest of the index row: kind, definition, creation time, ready flag,
/// lease, wake counter and timers. Appends continue after the new log; an append that expects
/// any earlier next sequence number conflicts.
pub async fn compaction_replaces_the_log_and_keeps_the_index_row<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let flow = new_flow_id(&fx.clock);
    let old = numbered(fx.clock.now(), "old", 1, 12);
    let created_at = old[0].time;
    let mut batch = creation(flow, FlowKind::Function, "compact-me", old[..5].to_vec());
    batch.ready = Some(true);
    batch.timers = vec![NewTimer {
        name: "wake".into(),
        due: created_at.saturating_add(Duration::from_secs(60)),
    }];
    fx.store.append(batch).await.expect("create");
    let mut batch = follow_up(flow, 6, old[5..].to_vec());
    batch.status = Some(FlowStatus::Function(ActivationState::Done));
    fx.store.append(batch).await.expect("append");
    let neighbour = create_flow(&fx, FlowKind::Function, "compact-me", false).await;
    let neighbour_log = fx.store.read(neighbour, 1, 10).await.expect("read");
    let w = worker("holder");
    let lease = Duration::from_secs(30);
    let claims = fx
        .store
        .claim(&w, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim");
    assert_eq!(claims.iter().map(|c| c.flow).collect::<Vec<_>>(), [flow]);
    let before = fx.store.flow(flow).await.expect("flow").expect("exists");
    assert_eq!(before.next_seq, 13);
    assert_eq!(before.bytes, body_bytes(&old));

    fx.clock.advance(Duration::from_secs(1));
    let compacted = numbered(fx.clock.now(), "new", 13, 3);
    let outcome = fx
        .store
        .compact(
            flow,
            13,
            compacted.clone(),
            FlowStatus::Function(ActivationState::Done),
        )
        .await
        .expect("compact");
    assert_eq!((outcome.first_seq, outcome.next_seq), (13, 16));
    assert_log_from(fx.store.as_ref(), flow, 13, &compacted, "the compacted log").await;
    assert_eq!(
        fx.store.read(flow, 14, 1).await.expect("read"),
        fx.store.read(flow, 13, 3).await.expect("read")[1..2],
        "a range of the new log"
    );
    assert_eq!(
        fx.store.read(flow, 1, 3).await.expect("read"),
        fx.store.read(flow, 13, 3).await.expect("read"),
        "a read from 1 starts at the new log's first event"
    );
    let after = fx.store.flow(flow).await.expect("flow").expect("exists");
    assert_eq!(after.id, flow);
    assert_eq!(after.kind, FlowKind::Function, "kind kept");
    assert_eq!(after.definition, "compact-me", "definition kept");
    assert_eq!(after.created_at, created_at, "creation time kept");
    assert_eq!(
        after.updated_at, compacted[2].time,
        "the last new event's time"
    );
    assert_eq!(
        after.next_seq, 16,
        "the next sequence number never goes down"
    );
    assert_eq!(after.bytes, body_bytes(&compacted));
    assert_eq!(after.status, FlowStatus::Function(ActivationState::Done));
    assert!(after.ready, "ready flag kept");
    let done = FlowQuery {
        status: Some("done".into()),
        ..FlowQuery::default()
    };
    assert_eq!(
        fx.store
            .list(&done)
            .await
            .expect("list")
            .flows
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        [flow],
        "the index lists the compacted flow by its status"
    );
    assert_eq!(
        fx.store.read(neighbour, 1, 10).await.expect("read"),
        neighbour_log,
        "another flow's log is untouched"
    );

    // The lease and the wake counter are kept: nobody else can claim the flow, its holder
    // renews it, and an idle release clears the ready flag (nobody marked it ready since).
    assert!(fx
        .store
        .claim(&worker("other"), &FlowKind::ALL, 10, lease)
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        fx.store.renew(&w, &[flow], lease).await.expect("renew"),
        [flow]
    );
    assert!(fx
        .store
        .release(&w, &claims[0], Release::Idle)
        .await
        .expect("release"));
    assert!(
        !fx.store
            .flow(flow)
            .await
            .expect("flow")
            .expect("exists")
            .ready,
        "the wake counter was kept, so the idle release cleared the flag"
    );

    // The timer is kept.
    fx.clock.advance(Duration::from_secs(60));
    let timers = fx
        .store
        .claim_due_timers(&w, 10, lease)
        .await
        .expect("timers");
    assert_eq!(
        timers
            .iter()
            .map(|t| (t.flow, t.name.as_str()))
            .collect::<Vec<_>>(),
        [(flow, "wake")]
    );

    // Appends continue after the new log. A writer that read the log before the compaction
    // expects an earlier next sequence number, whatever it was (4: the compacted log's length
    // plus one; 13: the old log's), and conflicts.
    for expected in [2, 4, 6, 12, 13, 14, 15] {
        let stale = fx
            .store
            .append(follow_up(
                flow,
                expected,
                numbered(fx.clock.now(), "late", expected, 1),
            ))
            .await;
        assert!(
            matches!(
                stale,
                Err(StoreError::Conflict { expected: e, actual: 16, .. }) if e == expected
            ),
            "an append expecting {expected} conflicts: {stale:?}"
        );
    }
    assert_log_from(
        fx.store.as_ref(),
        flow,
        13,
        &compacted,
        "after the stale appends",
    )
    .await;
    let more = numbered(fx.clock.now(), "more", 16, 2);
    let outcome = fx
        .store
        .append(follow_up(flow, 16, more.clone()))
        .await
        .expect("append after the compaction");
    assert_eq!((outcome.first_seq, outcome.next_seq), (16, 18));
    let log: Vec<NewEvent> = compacted.iter().chain(&more).cloned().collect();
    assert_log_from(
        fx.store.as_ref(),
        flow,
        13,
        &log,
        "compacted, then appended",
    )
    .await;
    let last = fx.store.flow(flow).await.expect("flow").expect("exists");
    assert_eq!((last.next_seq, last.bytes), (18, body_bytes(&log)));
    assert_eq!(last.created_at, created_at);
}

/// A compaction that expects another next sequence number conflicts, one of an unknown flow
/// is `UnknownFlow`, and one that breaks a limit or gives a status of another kind is
/// refused with the same typed error as an append; none of them writes anything.
pub async fn compaction_refusals_write_nothing<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let now = fx.clock.now();
    let flow = new_flow_id(&fx.clock);
    let log = numbered(now, "kept", 1, 4);
    fx.store
        .append(creation(flow, FlowKind::Function, "f", log.clone()))
        .await
        .expect("create");
    let done = FlowStatus::Function(ActivationState::Done);
    let before = fx.store.flow(flow).await.expect("flow").expect("exists");
    let small = || event(now, &serde_json::json!({"compacted": true}));
    let unchanged = |what: String| {
        let (store, log, before) = (fx.store.clone(), log.clone(), before.clone());
        async move {
            assert_log(store.as_ref(), flow, &log, &what).await;
            assert_eq!(
                store.flow(flow).await.expect("flow").expect("exists"),
                before,
                "{what} changed the index row"
            );
        }
    };

    for expected in [1, 2, 4, 6, 1_000] {
        let result = fx.store.compact(flow, expected, vec![small()], done).await;
        assert!(
            matches!(
                result,
                Err(StoreError::Conflict { expected: e, actual: 5, .. }) if e == expected
            ),
            "expected_next_seq {expected}: {result:?}"
        );
        unchanged(format!("a compaction expecting {expected}")).await;
    }
    let unknown = new_flow_id(&fx.clock);
    let result = fx.store.compact(unknown, 5, vec![small()], done).await;
    assert!(
        matches!(result, Err(StoreError::UnknownFlow { flow: f }) if f == unknown),
        "{result:?}"
    );
    assert!(fx.store.flow(unknown).await.expect("lookup").is_none());

    let mut huge = small();
    huge.body = format!("\"{}\"", "x".repeat(MAX_EVENT_BODY_BYTES)).into_bytes();
    type CompactRefusal = (
        &'static str,
        u64,
        Vec<NewEvent>,
        FlowStatus,
        fn(&InvalidInput) -> bool,
    );
    let refusals: Vec<CompactRefusal> = vec![
        ("no events", 5, vec![], done, |e| {
            matches!(e, InvalidInput::EmptyAppend)
        }),
        (
            "too many events",
            5,
            vec![small(); MAX_EVENTS_PER_APPEND + 1],
            done,
            |e| matches!(e, InvalidInput::TooManyEvents { .. }),
        ),
        ("oversized body", 5, vec![small(), huge], done, |e| {
            matches!(e, InvalidInput::BodyTooLarge { index: 1, .. })
        }),
        (
            "body that is not JSON",
            5,
            vec![
                small(),
                NewEvent {
                    time: now,
                    format: 1,
                    body: b"{not json".to_vec(),
                },
            ],
            done,
            |e| matches!(e, InvalidInput::MalformedBody { index: 1, .. }),
        ),
        (
            "unknown format",
            5,
            vec![NewEvent {
                time: now,
                format: 99,
                body: b"{}".to_vec(),
            }],
            done,
            |e| matches!(e, InvalidInput::UnsupportedFormat { format: 99, .. }),
        ),
        ("sequence zero", 0, vec![small()], done, |e| {
            matches!(e, InvalidInput::ZeroSequence)
        }),
        (
            "status of another kind",
            5,
            vec![small()],
            FlowStatus::Plan(PlanState::Completed),
            |e| matches!(e, InvalidInput::StatusKindMismatch { .. }),
        ),
    ];
    for (what, expected_next_seq, events, status, check) in refusals {
        let invalid = assert_invalid(
            fx.store
                .compact(flow, expected_next_seq, events.clone(), status)
                .await,
            what,
        );
        assert!(check(&invalid), "{what}: wrong error {invalid:?}");
        unchanged(format!("a compaction with {what}")).await;
        if what != "status of another kind" && what != "sequence zero" {
            // Input that breaks a limit is refused before the flow is even looked up.
            let invalid = assert_invalid(
                fx.store
                    .compact(unknown, expected_next_seq, events, status)
                    .await,
                what,
            );
            assert!(
                check(&invalid),
                "{what} (unknown flow): wrong error {invalid:?}"
            );
        }
    }

    // After an append, a compaction that expected the log before it conflicts.
    fx.store
        .append(follow_up(flow, 5, vec![small()]))
        .await
        .expect("append");
    let result = fx.store.compact(flow, 5, vec![small()], done).await;
    assert!(
        matches!(
            result,
            Err(StoreError::Conflict {
                expected: 5,
                actual: 6,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        fx.store.read(flow, 1, 100).await.expect("read").len(),
        5,
        "nothing written"
    );
}

/// A long log compacted into a shorter one that is still longer than a few marks' worth
/// (stores may index logs sparsely: the old index must not leak into the new log) reads back
/// in any range, numbered after the old log, with nothing of the old log before or beyond
/// it; compacted again, appended to, and after a reopen, it still does. Appends that expect
/// a next sequence number from before a compaction conflict.
pub async fn compacted_long_logs_read_back_in_any_range_and_after_reopen<F: StoreFactory>(
    factory: &F,
) {
    let (fx, location) = fixture(factory).await;
    let t = fx.clock.now();
    let flows = [new_flow_id(&fx.clock), new_flow_id(&fx.clock)];
    // Two logs of 1,000 events, written interleaved so that neither lies in adjacent rows.
    let mut logs: [Vec<NewEvent>; 2] = [numbered(t, "a-old", 1, 1_000), numbered(t, "b", 1, 1_000)];
    for (i, flow) in flows.iter().enumerate() {
        fx.store
            .append(creation(
                *flow,
                FlowKind::Function,
                "long",
                logs[i][..1].to_vec(),
            ))
            .await
            .expect("create");
    }
    let mut next = 2usize;
    while next <= 1_000 {
        let count = (next % 7 + 1).min(1_001 - next);
        for (i, flow) in flows.iter().enumerate() {
            fx.store
                .append(follow_up(
                    *flow,
                    next as u64,
                    logs[i][next - 1..next - 1 + count].to_vec(),
                ))
                .await
                .expect("append");
        }
        next += count;
    }
    let created_at = logs[0][0].time;
    let done = FlowStatus::Function(ActivationState::Done);
    // `log` numbered from `first`.
    let check = |first: u64, log: Vec<NewEvent>, what: &'static str| {
        let store = fx.store.clone();
        let flow = flows[0];
        async move {
            let last = first + log.len() as u64 - 1;
            assert_log_from(store.as_ref(), flow, first, &log, what).await;
            // Ranges around the start (reads from before it start at it), the marks of a
            // sparse index (multiples of 64) and the end.
            let ranges: [(u64, usize); 20] = [
                (1, 1),
                (1, 64),
                (1, 100_000),
                (first - 1, 3),
                (first, 1),
                (first, 64),
                (first + 1, 63),
                (first + 2, 200),
                (first.next_multiple_of(64) - 1, 3),
                (first.next_multiple_of(64), 1),
                (first.next_multiple_of(64) + 1, 64),
                (first + 99, 150),
                (first.next_multiple_of(64) + 64, 1),
                (first.next_multiple_of(64) + 65, 100),
                (last - 1, 5),
                (last, 1),
                (last + 1, 10),
                (last + 64, 10),
                (first / 2, 10),
                (first / 2, 100_000),
            ];
            for (from, limit) in ranges {
                let range = store.read(flow, from, limit).await.expect("range");
                let expected: Vec<u64> = (from.max(first)..=last).take(limit).collect();
                assert_eq!(
                    range.iter().map(|e| e.seq).collect::<Vec<_>>(),
                    expected,
                    "{what}: read({from}, {limit})"
                );
                for stored in &range {
                    let sent = &log[usize::try_from(stored.seq - first).expect("small")];
                    assert_eq!(
                        (stored.time, &stored.body),
                        (sent.time, &sent.body),
                        "{what}"
                    );
                }
            }
            let summary = store.flow(flow).await.expect("flow").expect("exists");
            assert_eq!(summary.next_seq, last + 1, "{what}");
            assert_eq!(summary.bytes, body_bytes(&log), "{what}");
        }
    };
    // Appends that expect `stale` next sequence numbers conflict, and write nothing.
    let refused = |stale: Vec<u64>, actual: u64, what: &'static str| {
        let store = fx.store.clone();
        let (flow, t) = (flows[0], fx.clock.now());
        async move {
            for expected in stale {
                let result = store
                    .append(follow_up(flow, expected, numbered(t, "stale", expected, 2)))
                    .await;
                assert!(
                    matches!(
                        result,
                        Err(StoreError::Conflict { expected: e, actual: a, .. })
                            if e == expected && a == actual
                    ),
                    "{what}: an append expecting {expected}: {result:?}"
                );
            }
        }
    };

    fx.clock.advance(Duration::from_secs(1));
    let compacted = numbered(fx.clock.now(), "a-300", 1_001, 300);
    let outcome = fx
        .store
        .compact(flows[0], 1_001, compacted.clone(), done)
        .await
        .expect("compact 1,000 into 300");
    assert_eq!((outcome.first_seq, outcome.next_seq), (1_001, 1_301));
    check(1_001, compacted, "compacted to 300").await;
    // 301 would have been the compacted log's next sequence number had it been numbered
    // from 1.
    refused(
        vec![2, 301, 302, 1_000, 1_001, 1_300],
        1_301,
        "compacted once",
    )
    .await;

    // Again (a compacted log is compacted like any other), into fewer events, then appended
    // to past several marks.
    let mut compacted = numbered(fx.clock.now(), "a-130", 1_301, 130);
    let conflict = fx
        .store
        .compact(flows[0], 301, compacted.clone(), done)
        .await;
    assert!(
        matches!(
            conflict,
            Err(StoreError::Conflict {
                expected: 301,
                actual: 1_301,
                ..
            })
        ),
        "a compaction that expects the old numbering: {conflict:?}"
    );
    let outcome = fx
        .store
        .compact(flows[0], 1_301, compacted.clone(), done)
        .await
        .expect("compact 300 into 130");
    assert_eq!((outcome.first_seq, outcome.next_seq), (1_301, 1_431));
    check(1_301, compacted.clone(), "compacted again to 130").await;
    refused(
        vec![131, 301, 1_001, 1_301, 1_430],
        1_431,
        "compacted twice",
    )
    .await;
    let mut next = 1_431u64;
    while next < 1_631 {
        let more = numbered(fx.clock.now(), "a-more", next, 40);
        fx.store
            .append(follow_up(flows[0], next, more.clone()))
            .await
            .expect("append after compactions");
        // The other flow keeps growing meanwhile, so the new events are not adjacent.
        let other = numbered(fx.clock.now(), "b", logs[1].len() as u64 + 1, 3);
        fx.store
            .append(follow_up(flows[1], logs[1].len() as u64 + 1, other.clone()))
            .await
            .expect("append to the other flow");
        logs[1].extend(other);
        compacted.extend(more);
        next += 40;
    }
    logs[0] = compacted;
    check(1_301, logs[0].clone(), "appended past several marks").await;
    assert_log(fx.store.as_ref(), flows[1], &logs[1], "the other flow").await;

    fx.store.close().await.expect("close");
    let reopened = factory.open(&location, fx.clock.clone()).await;
    let fx = Fixture {
        clock: fx.clock.clone(),
        store: reopened,
    };
    assert_log_from(
        fx.store.as_ref(),
        flows[0],
        1_301,
        &logs[0],
        "after a reopen",
    )
    .await;
    assert_log(
        fx.store.as_ref(),
        flows[1],
        &logs[1],
        "the other flow after a reopen",
    )
    .await;
    let summary = fx
        .store
        .flow(flows[0])
        .await
        .expect("flow")
        .expect("exists");
    assert_eq!((summary.next_seq, summary.status), (1_631, done));
    let range = fx.store.read(flows[0], 1, 70).await.expect("range");
    assert_eq!(
        range.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1_301..1_371).collect::<Vec<_>>(),
        "a range read from 1 after a reopen"
    );
    assert_eq!(summary.created_at, created_at, "creation time kept");
    // Deleting the compacted flow removes exactly its log.
    assert!(fx.store.delete_flow(flows[0]).await.expect("delete"));
    assert_log(
        fx.store.as_ref(),
        flows[1],
        &logs[1],
        "the other flow after a deletion",
    )
    .await;
    fx.store.close().await.expect("close");
}

/// A compaction and an append of the same flow that both expect the same next sequence
/// number race (with appends of other flows around them, so that stores that group commits
/// group them): exactly one of them succeeds, the other conflicts, and the log is exactly the
/// winner's.
pub async fn a_compaction_and_a_racing_append_never_both_succeed<F: StoreFactory>(factory: &F) {
    const ROUNDS: u64 = 40;
    const FILLERS: usize = 8;
    let (fx, _location) = fixture(factory).await;
    let done = FlowStatus::Function(ActivationState::Done);
    let mut fillers = Vec::new();
    for _ in 0..FILLERS {
        fillers.push(create_flow(&fx, FlowKind::Function, "filler", false).await);
    }
    let mut filler_next = [2u64; FILLERS];
    let mut wins = [0u64; 2];
    for round in 0..ROUNDS {
        let t = fx.clock.now();
        let flow = new_flow_id(&fx.clock);
        let log = numbered(t, &format!("round-{round}"), 1, 10);
        fx.store
            .append(creation(flow, FlowKind::Function, "race", log.clone()))
            .await
            .expect("create");
        let appended = numbered(t, "appended", 11, 2);
        let compacted = numbered(t, "compacted", 11, 3);
        let mut tasks = Vec::new();
        for (i, filler) in fillers.iter().enumerate() {
            let (store, filler, next) = (fx.store.clone(), *filler, filler_next[i]);
            let body = numbered(t, "filler", next, 1);
            tasks.push(tokio::spawn(async move {
                store
                    .append(follow_up(filler, next, body))
                    .await
                    .map(|_| ())
            }));
            filler_next[i] += 1;
        }
        // Alternate which one is sent first.
        let (store, batch) = (fx.store.clone(), follow_up(flow, 11, appended.clone()));
        let append = async move { store.append(batch).await };
        let (store, events) = (fx.store.clone(), compacted.clone());
        let compact = async move { store.compact(flow, 11, events, done).await };
        let (appending, compacting) = if round % 2 == 0 {
            let appending = tokio::spawn(append);
            (appending, tokio::spawn(compact))
        } else {
            let compacting = tokio::spawn(compact);
            (tokio::spawn(append), compacting)
        };
        let appending = appending.await.expect("append task");
        let compacting = compacting.await.expect("compact task");
        for task in tasks {
            task.await.expect("filler task").expect("filler append");
        }
        let (first, expected): (u64, Vec<NewEvent>) = match (&appending, &compacting) {
            (Ok(outcome), Err(StoreError::Conflict { actual: 13, .. })) => {
                assert_eq!((outcome.first_seq, outcome.next_seq), (11, 13));
                wins[0] += 1;
                (1, log.iter().chain(&appended).cloned().collect())
            }
            (Err(StoreError::Conflict { actual: 14, .. }), Ok(outcome)) => {
                assert_eq!((outcome.first_seq, outcome.next_seq), (11, 14));
                wins[1] += 1;
                (11, compacted.clone())
            }
            other => panic!("round {round}: exactly one must succeed, got {other:?}"),
        };
        assert_log_from(
            fx.store.as_ref(),
            flow,
            first,
            &expected,
            "the winner's log",
        )
        .await;
        let summary = fx.store.flow(flow).await.expect("flow").expect("exists");
        assert_eq!(summary.next_seq, first + expected.len() as u64);
        assert_eq!(summary.bytes, body_bytes(&expected));
        fx.clock.advance(Duration::from_millis(100));
    }
    for (i, filler) in fillers.iter().enumerate() {
        assert_eq!(
            fx.store
                .flow(*filler)
                .await
                .expect("flow")
                .expect("exists")
                .next_seq,
            filler_next[i]
        );
    }
    assert_eq!(wins.iter().sum::<u64>(), ROUNDS);
}

/// After a compaction, a read from 1 (or from any sequence number before the new log) returns
/// the new log from its first event, up to the limit; a read from inside it returns the rest,
/// and one past it nothing. A short compacted log (no sparse index mark in it) and a flow
/// compacted to a single event read back the same way.
pub async fn a_compacted_log_reads_from_its_first_event<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let done = FlowStatus::Function(ActivationState::Done);
    let t = fx.clock.now();
    // (old length, new length): the new log starts at old length + 1.
    for (old_len, new_len) in [(6u64, 4u64), (100, 3), (70, 1), (130, 80)] {
        let flow = new_flow_id(&fx.clock);
        fx.store
            .append(creation(
                flow,
                FlowKind::Function,
                "short",
                numbered(t, "old", 1, old_len),
            ))
            .await
            .expect("create");
        let first = old_len + 1;
        let compacted = numbered(t, "new", first, new_len);
        let outcome = fx
            .store
            .compact(flow, first, compacted.clone(), done)
            .await
            .expect("compact");
        assert_eq!(
            (outcome.first_seq, outcome.next_seq),
            (first, first + new_len)
        );
        let seqs = |events: Vec<flowstate_core::RawEvent>| {
            events.iter().map(|e| e.seq).collect::<Vec<_>>()
        };
        let last = first + new_len - 1;
        for (from, limit) in [
            (1, 1),
            (1, 2),
            (1, 1_000),
            (2, 3),
            (first - 1, 2),
            (first, 1),
            (first, 1_000),
            (first + 1, 2),
            (last, 5),
        ] {
            let expected: Vec<u64> = (from.max(first)..=last).take(limit).collect();
            assert_eq!(
                seqs(fx.store.read(flow, from, limit).await.expect("read")),
                expected,
                "{old_len} compacted to {new_len}: read({from}, {limit})"
            );
        }
        let all = fx.store.read(flow, 1, 1_000).await.expect("read");
        for (stored, sent) in all.iter().zip(&compacted) {
            assert_eq!((stored.time, &stored.body), (sent.time, &sent.body));
        }
        assert!(fx
            .store
            .read(flow, last + 1, 10)
            .await
            .expect("read")
            .is_empty());
        assert_log_from(fx.store.as_ref(), flow, first, &compacted, "compacted").await;
        // Deleting a compacted flow works (stores that walk a log to delete it accept one
        // that starts after 1).
        if old_len == 70 {
            assert!(fx.store.delete_flow(flow).await.expect("delete"));
            assert!(fx.store.flow(flow).await.expect("flow").is_none());
        }
    }
}

/// What a store that can prove it is the only engine process's (the memory store, an SQLite
/// store holding its process lock) does at a process's start: every lease on a flow or a
/// timer held by another worker is gone at once, and the new worker claims them without
/// waiting for them to run out; its own leases stay. Not in [`conformance_suite!`]: a shared
/// store (PostgreSQL) keeps other processes' leases. `store` must be driven by `clock`.
pub async fn foreign_leases_are_released(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let fx = Fixture { clock, store };
    let (dead, alive) = (worker("dead-process"), worker("new-process"));
    let lease = Duration::from_secs(60);
    let a = create_flow(&fx, FlowKind::TaskGraph, "a", true).await;
    fx.clock.advance(Duration::from_millis(1));
    let b = create_flow(&fx, FlowKind::Function, "b", true).await;
    fx.clock.advance(Duration::from_millis(1));
    let own = create_flow(&fx, FlowKind::Plan, "own", true).await;
    let held = fx
        .store
        .claim(&dead, &[FlowKind::TaskGraph, FlowKind::Function], 10, lease)
        .await
        .expect("claim");
    assert_eq!(held.len(), 2);
    let mine = fx
        .store
        .claim(&alive, &[FlowKind::Plan], 10, lease)
        .await
        .expect("claim");
    assert_eq!(mine.iter().map(|c| c.flow).collect::<Vec<_>>(), [own]);
    fx.store
        .schedule_timer(
            a,
            NewTimer {
                name: "t".to_owned(),
                due: fx.clock.now(),
            },
        )
        .await
        .expect("timer");
    let timers = fx
        .store
        .claim_due_timers(&dead, 10, lease)
        .await
        .expect("claim timers");
    assert_eq!(timers.len(), 1);

    let released = fx
        .store
        .release_foreign_leases(&alive)
        .await
        .expect("release foreign leases");
    assert_eq!(released, 3, "two flows and a timer");
    // No time passes: nothing waits for a lease to run out.
    let taken = fx
        .store
        .claim(&alive, &FlowKind::ALL, 10, lease)
        .await
        .expect("claim");
    assert_eq!(
        taken.iter().map(|c| c.flow).collect::<Vec<_>>(),
        [a, b],
        "the dead worker's flows, not the new worker's own"
    );
    assert!(
        fx.store
            .renew(&dead, &[a, b], lease)
            .await
            .expect("renew")
            .is_empty(),
        "the dead worker holds nothing"
    );
    assert_eq!(
        fx.store.renew(&alive, &[own], lease).await.expect("renew"),
        [own],
        "its own lease stays"
    );
    let timers = fx
        .store
        .claim_due_timers(&alive, 10, lease)
        .await
        .expect("claim timers");
    assert_eq!(timers.iter().map(|t| t.flow).collect::<Vec<_>>(), [a]);
    assert_eq!(
        fx.store
            .release_foreign_leases(&alive)
            .await
            .expect("again"),
        0,
        "nothing left to take over"
    );
}
