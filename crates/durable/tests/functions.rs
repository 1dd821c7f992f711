//! Durable functions end to end on the memory store, run by a worker: steps journaled and
//! never run again on replay, durable sleeps that unload the activation, signals, journaled
//! clock and randomness, errors recorded by kind, the closed-function rule, and the upgrade
//! story (a divergent version fails to replay with a diagnostic; a fixed one repairs it;
//! `patched` guards a deliberate change).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::machine::ActivationState;
use flowstate_core::{Clock, Failure, FlowId, FlowKind, ManualClock, Timestamp};
use flowstate_durable::{Ctx, FunctionError, Functions};
use flowstate_store::{MemoryStore, Store, WorkerId};
use flowstate_worker::{ShutdownHandle, Worker, WorkerConfig};
use serde_json::json;

struct Process {
    functions: Functions,
    stop: ShutdownHandle,
    worker: Arc<Worker>,
    running: tokio::task::JoinHandle<()>,
}

impl Process {
    fn start(
        store: &Arc<dyn Store>,
        clock: &Arc<ManualClock>,
        name: &str,
        register: impl FnOnce(&Functions),
    ) -> Self {
        let clock: Arc<dyn Clock> = clock.clone();
        let functions = Functions::new(store.clone(), clock.clone(), name);
        // These tests read journals after the function is done (the default drops them;
        // `a_done_function_drops_its_journal_and_keeps_its_outcome` tests that).
        functions.keep_journals(true);
        register(&functions);
        let config = WorkerConfig::new(WorkerId::new(name).expect("id"))
            .with_poll_interval(Duration::from_millis(20))
            .with_park_for(Duration::from_millis(200));
        let worker = Arc::new(
            Worker::new(store.clone(), clock, config)
                .expect("config")
                .with_runner(FlowKind::Function, Arc::new(functions.clone())),
        );
        let looping = worker.clone();
        let running = tokio::spawn(async move {
            let _ = looping.run().await;
        });
        Self {
            stop: worker.shutdown_handle(),
            functions,
            worker,
            running,
        }
    }

    /// Stops the process's worker and waits until it has stopped.
    async fn stop(self) {
        self.stop.shutdown();
        let _ = self.running.await;
    }
}

fn setup() -> (Arc<dyn Store>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_767_225_600_000_000,
    )));
    (Arc::new(MemoryStore::new(clock.clone())), clock)
}

async fn wait_for_state(
    functions: &Functions,
    flow: FlowId,
    state: ActivationState,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (now, diagnostic) = functions.state(flow).await.expect("state");
        if now == state {
            return diagnostic;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flow {flow} is {now}, not {state} ({diagnostic:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the worker of `process` has parked a flow (a refused run), at most 15 s.
async fn wait_until_parked(process: &Process, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while process.worker.stats().parked == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

static CHARGES: AtomicUsize = AtomicUsize::new(0);
static SHIPMENTS: AtomicUsize = AtomicUsize::new(0);

async fn order(ctx: Ctx, amount: u32) -> Result<String, Failure> {
    let reserved: String = ctx
        .step(
            "reserve",
            |_key| async move { Ok(format!("reserved {amount}")) },
        )
        .await?;
    let charge: u32 = ctx
        .step("charge", |key| async move {
            CHARGES.fetch_add(1, Ordering::SeqCst);
            assert!(
                key.ends_with("/1"),
                "the idempotency key names the position: {key}"
            );
            Ok(amount * 100)
        })
        .await?;
    ctx.sleep(Duration::from_secs(3_600)).await;
    let shipped: String = ctx
        .step("ship", |_key| async move {
            SHIPMENTS.fetch_add(1, Ordering::SeqCst);
            Ok("shipped".to_owned())
        })
        .await?;
    Ok(format!("{reserved}, charged {charge}, {shipped}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_function_is_unloaded_woken_by_its_timer_and_replayed_without_rerunning_steps() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("order", order).expect("register")
    });
    let flow = process.functions.submit("order", 7).await.expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Sleeping).await;
    assert_eq!(CHARGES.load(Ordering::SeqCst), 1);
    assert_eq!(SHIPMENTS.load(Ordering::SeqCst), 0);
    assert_eq!(
        process
            .functions
            .outcome::<String>(flow)
            .await
            .expect("outcome"),
        None
    );
    // The timer is due in an hour; nothing happens before.
    clock.advance(Duration::from_secs(1_800));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        process.functions.state(flow).await.expect("state").0,
        ActivationState::Sleeping
    );
    clock.advance(Duration::from_secs(1_801));
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        CHARGES.load(Ordering::SeqCst),
        1,
        "replay did not charge again"
    );
    assert_eq!(SHIPMENTS.load(Ordering::SeqCst), 1);
    assert_eq!(
        process
            .functions
            .outcome::<String>(flow)
            .await
            .expect("outcome"),
        Some(Ok("reserved 7, charged 700, shipped".to_owned()))
    );
    assert!(process.worker.stats().timers_fired >= 1);
    process.stop().await;
}

async fn approval(ctx: Ctx, _input: ()) -> Result<bool, Failure> {
    let first: bool = ctx.signal("approve").await?;
    let second: bool = ctx.signal("approve").await?;
    Ok(first && !second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_sent_by_flow_id_wake_the_function_in_order() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("approval", approval).expect("register")
    });
    let flow = process
        .functions
        .submit("approval", ())
        .await
        .expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Sleeping).await;
    // Another process (any holder of the flow id) sends the signals.
    let sender = Functions::new(store.clone(), clock.clone(), "sender");
    sender.signal(flow, "approve", true).await.expect("signal");
    sender.signal(flow, "approve", false).await.expect("signal");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        process
            .functions
            .outcome::<bool>(flow)
            .await
            .expect("outcome"),
        Some(Ok(true))
    );
    process.stop().await;
}

static FLAKY: AtomicUsize = AtomicUsize::new(0);

async fn effects(ctx: Ctx, _input: ()) -> Result<serde_json::Value, Failure> {
    let now = ctx.now().await;
    let random = ctx.random().await;
    let id = ctx.uuid().await;
    let failed: Result<u32, Failure> = ctx
        .step("flaky", |_key| async move {
            FLAKY.fetch_add(1, Ordering::SeqCst);
            Err(Failure::new("CardDeclined", "insufficient funds"))
        })
        .await;
    ctx.sleep(Duration::from_secs(1)).await;
    // After the replay these must be what was recorded before the sleep.
    Ok(json!({
        "now": now.as_micros(),
        "random": random,
        "uuid": id.to_string(),
        "error": failed.err().map(|f| f.kind),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_randomness_ids_and_step_errors_are_journaled_and_replayed() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("effects", effects).expect("register")
    });
    let flow = process
        .functions
        .submit("effects", ())
        .await
        .expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Sleeping).await;
    let started_at = clock.now();
    clock.advance(Duration::from_secs(5));
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    let outcome = process
        .functions
        .outcome::<serde_json::Value>(flow)
        .await
        .expect("outcome")
        .expect("done")
        .expect("ok");
    assert_eq!(
        outcome["now"],
        json!(started_at.as_micros()),
        "the recorded time"
    );
    assert_eq!(
        outcome["error"],
        json!("CardDeclined"),
        "the recorded error, by kind"
    );
    assert_eq!(FLAKY.load(Ordering::SeqCst), 1, "the failing step ran once");
    let events = flowstate_store::read_all(store.as_ref(), flow)
        .await
        .expect("read");
    let record = flowstate_core::fold(&events, flowstate_core::StopAt::End).expect("folds");
    let journal = record.function.expect("function").journal;
    assert!(
        matches!(journal[1], flowstate_core::JournalEntry::Random { value } if json!(value) == outcome["random"])
    );
    process.stop().await;
}

#[tokio::test]
async fn a_function_that_captures_anything_is_refused() {
    let (store, clock) = setup();
    let functions = Functions::new(store, clock, "p");
    let captured = String::from("state that would not survive a restart");
    let refused = functions.register("capturing", move |_ctx: Ctx, _input: ()| {
        let captured = captured.clone();
        async move { Ok(captured) }
    });
    match refused {
        Err(flowstate_durable::RegistrationError::Captures { name, bytes }) => {
            assert_eq!(name, "capturing");
            assert!(bytes > 0);
        }
        other => panic!("expected Captures, got {other:?}"),
    }
    assert!(
        functions.register("closed", order).is_ok(),
        "fn items are closed"
    );
    assert!(matches!(
        functions.register("closed", order),
        Err(flowstate_durable::RegistrationError::Duplicate { .. })
    ));
}

// The upgrade story. Version 1 sleeps between two steps. Version 3 diverges (it charges
// before it reserves) and leaves the activations in replay failure. Version 2, a compatible
// change guarded by `patched`, repairs them on its explicit start.

async fn v1(ctx: Ctx, _input: ()) -> Result<Vec<String>, Failure> {
    let a: String = ctx
        .step("reserve", |_k| async { Ok("reserved".to_owned()) })
        .await?;
    ctx.sleep(Duration::from_secs(60)).await;
    let b: String = ctx
        .step("ship", |_k| async { Ok("shipped".to_owned()) })
        .await?;
    Ok(vec![a, b])
}

async fn v2(ctx: Ctx, _input: ()) -> Result<Vec<String>, Failure> {
    let a: String = ctx
        .step("reserve", |_k| async { Ok("reserved".to_owned()) })
        .await?;
    // The change: a fraud check, only where the journal was not written before it.
    let checked = if ctx.patched("fraud-check").await {
        let _: bool = ctx.step("fraud-check", |_k| async { Ok(true) }).await?;
        "checked"
    } else {
        "not checked"
    };
    ctx.sleep(Duration::from_secs(60)).await;
    let b: String = ctx
        .step("ship", |_k| async { Ok("shipped".to_owned()) })
        .await?;
    Ok(vec![a, checked.to_owned(), b])
}

async fn v3(ctx: Ctx, _input: ()) -> Result<Vec<String>, Failure> {
    let charged: String = ctx
        .step("charge", |_k| async { Ok("charged".to_owned()) })
        .await?;
    Ok(vec![charged])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_version_fails_to_replay_with_a_diagnostic_and_a_fixed_one_repairs_it() {
    let (store, clock) = setup();
    // Version 1 runs two activations to their sleep.
    let p1 = Process::start(&store, &clock, "v1", |f| {
        f.register("order", v1).expect("register")
    });
    let old = p1.functions.submit("order", ()).await.expect("start");
    wait_for_state(&p1.functions, old, ActivationState::Sleeping).await;
    let diverging = p1.functions.submit("order", ()).await.expect("start");
    wait_for_state(&p1.functions, diverging, ActivationState::Sleeping).await;
    p1.stop().await;

    // Version 3 (divergent) wakes when the timers fire: replay failure, with a diagnostic.
    let p3 = Process::start(&store, &clock, "v3", |f| {
        f.register("order", v3).expect("register")
    });
    clock.advance(Duration::from_secs(61));
    let diagnostic = wait_for_state(&p3.functions, diverging, ActivationState::ReplayFailure)
        .await
        .expect("a diagnostic");
    assert!(diagnostic.contains("journal position 0"), "{diagnostic}");
    assert!(diagnostic.contains("step \"reserve\""), "{diagnostic}");
    assert!(diagnostic.contains("step \"charge\""), "{diagnostic}");
    assert!(
        diagnostic.contains("functions.rs"),
        "the source location: {diagnostic}"
    );
    wait_for_state(&p3.functions, old, ActivationState::ReplayFailure).await;
    p3.stop().await;

    // Version 2 (compatible, the change behind `patched`) repairs both on its explicit start.
    let p2 = Process::start(&store, &clock, "v2", |f| {
        f.register("order", v2).expect("register")
    });
    assert_eq!(p2.functions.wake_all().await.expect("wake"), 2);
    wait_for_state(&p2.functions, old, ActivationState::Done).await;
    wait_for_state(&p2.functions, diverging, ActivationState::Done).await;
    assert_eq!(
        p2.functions
            .outcome::<Vec<String>>(old)
            .await
            .expect("outcome"),
        Some(Ok(vec![
            "reserved".into(),
            "not checked".into(),
            "shipped".into()
        ])),
        "a journal written before the change takes the old path"
    );
    // A new activation takes the new path.
    let new = p2.functions.submit("order", ()).await.expect("start");
    wait_for_state(&p2.functions, new, ActivationState::Sleeping).await;
    clock.advance(Duration::from_secs(61));
    wait_for_state(&p2.functions, new, ActivationState::Done).await;
    assert_eq!(
        p2.functions
            .outcome::<Vec<String>>(new)
            .await
            .expect("outcome"),
        Some(Ok(vec![
            "reserved".into(),
            "checked".into(),
            "shipped".into()
        ]))
    );
    p2.stop().await;
}

async fn fails(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let _: u32 = ctx
        .step("only", |_k| async {
            Err(Failure::new("OutOfStock", "none left"))
        })
        .await?;
    Ok(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_returns_an_error_is_done_with_that_error() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("fails", fails).expect("register")
    });
    let flow = process.functions.submit("fails", ()).await.expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    match process
        .functions
        .outcome::<u32>(flow)
        .await
        .expect("outcome")
    {
        Some(Err(FunctionError::Failed(failure))) => assert_eq!(failure.kind, "OutOfStock"),
        other => panic!("{other:?}"),
    }
    process.stop().await;
}

async fn waits_for_go(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let _: bool = ctx.signal("go").await?;
    Ok(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_function_is_not_replayed_for_what_it_does_not_wait_for() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("waits", waits_for_go).expect("register")
    });
    let flow = process.functions.submit("waits", ()).await.expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Sleeping).await;
    let before = store
        .flow(flow)
        .await
        .expect("flow")
        .expect("exists")
        .events();
    for _ in 0..3 {
        process
            .functions
            .signal(flow, "other", 1)
            .await
            .expect("signal");
    }
    // Each unrelated signal marks the flow ready; the worker runs it, which does nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.flow(flow).await.expect("flow").expect("exists").ready {
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = store
        .flow(flow)
        .await
        .expect("flow")
        .expect("exists")
        .events();
    assert_eq!(after, before + 3, "only the three deliveries were recorded");
    process
        .functions
        .signal(flow, "go", true)
        .await
        .expect("signal");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    process.stop().await;
}

async fn panicking_step(ctx: Ctx, _input: ()) -> Result<String, Failure> {
    let failed: Result<u32, Failure> = ctx
        .step("explodes", |_k| async { panic!("the step blew up") })
        .await;
    Ok(failed.err().map(|f| f.kind).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_is_a_failed_step_not_a_failed_run() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("panics", panicking_step).expect("register")
    });
    let flow = process.functions.submit("panics", ()).await.expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        process
            .functions
            .outcome::<String>(flow)
            .await
            .expect("outcome"),
        Some(Ok("Panicked".to_owned()))
    );
    process.stop().await;
}

type Branch = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, Failure>>>>;

async fn concurrent_effects(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let (a, b) = (ctx.clone(), ctx.clone());
    let inputs: Vec<(u8, Branch)> = vec![
        (
            0,
            Box::pin(async move { a.step("a", |_k| async { Ok(1u32) }).await }),
        ),
        (
            1,
            Box::pin(async move { b.step("b", |_k| async { Ok(2u32) }).await }),
        ),
    ];
    let both = flowstate_rt::all(inputs).await?;
    Ok(both.iter().map(|(_, v)| v).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_from_concurrent_branches_are_refused_not_journaled_wrongly() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("concurrent", concurrent_effects)
            .expect("register")
    });
    let flow = process
        .functions
        .submit("concurrent", ())
        .await
        .expect("start");
    wait_until_parked(&process, "the run was not refused").await;
    let events = flowstate_store::read_all(store.as_ref(), flow)
        .await
        .expect("read");
    let record = flowstate_core::fold(&events, flowstate_core::StopAt::End).expect("folds");
    assert!(
        record.function.expect("function").journal.is_empty(),
        "nothing journaled"
    );
    process.stop().await;
}

static SIGNALLING_RUNS: AtomicUsize = AtomicUsize::new(0);
static SIGNAL_STORE: std::sync::OnceLock<Arc<dyn Store>> = std::sync::OnceLock::new();

async fn signalled_while_stepping(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let flow = ctx.flow();
    let value: u32 = ctx
        .step("slow", move |_k| async move {
            SIGNALLING_RUNS.fetch_add(1, Ordering::SeqCst);
            // Someone signals the activation while this step runs.
            let store = SIGNAL_STORE.get().expect("store set").clone();
            flowstate_durable::send_signal(
                store.as_ref(),
                &flowstate_store::SystemClock,
                flow,
                "ping",
                json!(5),
            )
            .await
            .map_err(|e| Failure::new("Signal", e.to_string()))?;
            Ok(1u32)
        })
        .await?;
    let ping: u32 = ctx.signal("ping").await?;
    Ok(value + ping)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_delivered_while_a_step_runs_does_not_make_the_step_run_again() {
    let (store, clock) = setup();
    let _ = SIGNAL_STORE.set(store.clone());
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("signalled", signalled_while_stepping)
            .expect("register")
    });
    let flow = process
        .functions
        .submit("signalled", ())
        .await
        .expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        process
            .functions
            .outcome::<u32>(flow)
            .await
            .expect("outcome"),
        Some(Ok(6))
    );
    assert_eq!(
        SIGNALLING_RUNS.load(Ordering::SeqCst),
        1,
        "the step's result was recorded on top of the delivery, not thrown away"
    );
    assert_eq!(process.worker.stats().conflicts, 0);
    process.stop().await;
}

async fn awaits_nothing_durable(_ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    // A wait that no effect will ever settle (here: a pair nobody resolves).
    let (resolver, once) = flowstate_rt::pair::<u32, Failure>();
    let value = once.await;
    drop(resolver);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_function_that_waits_for_nothing_durable_is_stopped_not_left_hanging() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("hangs", awaits_nothing_durable)
            .expect("register")
    });
    let _flow = process.functions.submit("hangs", ()).await.expect("start");
    wait_until_parked(&process, "the run hangs").await;
    process.stop().await;
}

/// Counts how many `cancellable` functions dropped their code (their cleanup ran).
static CLEANUPS: AtomicUsize = AtomicUsize::new(0);
static AFTER_CANCEL: AtomicUsize = AtomicUsize::new(0);

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        CLEANUPS.fetch_add(1, Ordering::SeqCst);
    }
}

async fn cancellable(ctx: Ctx, wait: String) -> Result<u32, Failure> {
    let _cleanup = Cleanup;
    let first: u32 = ctx.step("first", |_| async { Ok(1) }).await?;
    if wait == "sleep" {
        ctx.sleep(Duration::from_secs(3_600)).await;
    } else {
        let _: u32 = ctx
            .step("slow", |_| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(2)
            })
            .await?;
    }
    ctx.step("after", |_| async {
        AFTER_CANCEL.fetch_add(1, Ordering::SeqCst);
        Ok(3)
    })
    .await
    .map(|third: u32| first + third)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_function_stops_at_its_next_effect_and_is_done_with_a_cancelled_failure() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("cancellable", cancellable).expect("register")
    });

    // Asleep: woken for the cancellation, replayed, and done without running anything else.
    let asleep = process
        .functions
        .submit("cancellable", "sleep")
        .await
        .expect("start");
    wait_for_state(&process.functions, asleep, ActivationState::Sleeping).await;
    assert_eq!(
        process
            .functions
            .cancel(asleep, "the customer changed their mind")
            .await
            .expect("cancel"),
        flowstate_core::Transition::Allowed
    );
    wait_for_state(&process.functions, asleep, ActivationState::Done).await;
    let outcome = process
        .functions
        .outcome::<u32>(asleep)
        .await
        .expect("read");
    let Some(Err(FunctionError::Failed(failure))) = outcome else {
        panic!("a cancelled function fails: {outcome:?}");
    };
    assert_eq!(failure.kind, flowstate_durable::CANCELLED);
    assert_eq!(failure.message, "the customer changed their mind");

    // Running a step: the step finishes (and is journaled), nothing after it runs.
    let busy = process
        .functions
        .submit("cancellable", "step")
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        process
            .functions
            .cancel(busy, "first")
            .await
            .expect("cancel"),
        flowstate_core::Transition::Allowed
    );
    // The first reason stands: the second request records nothing.
    assert_eq!(
        process
            .functions
            .cancel(busy, "second")
            .await
            .expect("again"),
        flowstate_core::Transition::Ignored
    );
    wait_for_state(&process.functions, busy, ActivationState::Done).await;
    let outcome = process.functions.outcome::<u32>(busy).await.expect("read");
    let Some(Err(FunctionError::Failed(failure))) = outcome else {
        panic!("a cancelled function fails: {outcome:?}");
    };
    assert_eq!(failure.message, "first", "the first request's reason stays");
    assert_eq!(AFTER_CANCEL.load(Ordering::SeqCst), 0);
    let journal = flowstate_engine::FlowWriter::load(store.as_ref(), busy)
        .await
        .expect("load")
        .record()
        .and_then(|r| r.function.clone())
        .expect("function")
        .journal;
    assert_eq!(
        journal.len(),
        2,
        "the step in flight finished and was journaled"
    );
    assert!(
        CLEANUPS.load(Ordering::SeqCst) >= 2,
        "the function's code was dropped"
    );

    // Done: nothing left to cancel.
    let again = process.functions.cancel(busy, "late").await;
    assert!(
        matches!(again, Err(flowstate_durable::Error::Done { .. })),
        "{again:?}"
    );
    process.stop().await;
}

/// The journal of `flow` as folded, with the branch of each entry.
async fn journal_of(store: &Arc<dyn Store>, flow: FlowId) -> flowstate_core::FunctionRecord {
    flowstate_engine::FlowWriter::load(store.as_ref(), flow)
        .await
        .expect("load")
        .record()
        .and_then(|r| r.function.clone())
        .expect("a function")
}

static FETCHES: AtomicUsize = AtomicUsize::new(0);
static FETCHING: AtomicUsize = AtomicUsize::new(0);
static MOST_FETCHING: AtomicUsize = AtomicUsize::new(0);
static FETCH_KEYS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn fan_out(ctx: Ctx, branches: u32) -> Result<Vec<u32>, Failure> {
    let values = ctx
        .all((0..branches).map(|i| {
            move |ctx: Ctx| async move {
                let fetched: u32 = ctx
                    .step("fetch", move |key| async move {
                        FETCHES.fetch_add(1, Ordering::SeqCst);
                        FETCH_KEYS.lock().expect("keys").push(key);
                        let now = FETCHING.fetch_add(1, Ordering::SeqCst) + 1;
                        MOST_FETCHING.fetch_max(now, Ordering::SeqCst);
                        // Later branches finish first: the journal's order is not call order.
                        let wait = 40 + 30 * u64::from(branches - i);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        FETCHING.fetch_sub(1, Ordering::SeqCst);
                        Ok(i * 10)
                    })
                    .await?;
                ctx.step("double", move |_| async move { Ok(fetched * 2) })
                    .await
            }
        }))
        .await?;
    // Unloaded here: the run that finishes replays the branches from the journal.
    ctx.sleep(Duration::from_secs(3_600)).await;
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_runs_branches_at_once_and_a_replay_reproduces_them_whatever_their_interleaving() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("fan_out", fan_out).expect("register")
    });
    let flow = process.functions.submit("fan_out", 3).await.expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Sleeping).await;
    assert_eq!(FETCHES.load(Ordering::SeqCst), 3);
    assert!(
        MOST_FETCHING.load(Ordering::SeqCst) >= 2,
        "the branches' steps ran at the same time"
    );
    let mut keys = FETCH_KEYS.lock().expect("keys").clone();
    keys.sort();
    let expected: Vec<String> = (0..3).map(|i| format!("{flow}/0.{i}/0")).collect();
    assert_eq!(keys, expected, "each branch has keys of its own");

    let function = journal_of(&store, flow).await;
    // Six branch entries, the settlement, the sleep.
    assert_eq!(function.journal.len(), 8, "{:?}", function.journal);
    assert_eq!(function.branches.len(), 6);
    let first_fetch = function.branches.values().next().cloned();
    assert_eq!(
        first_fetch.as_deref(),
        Some("0.2"),
        "the last branch finished first"
    );

    clock.advance(Duration::from_secs(3_601));
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        FETCHES.load(Ordering::SeqCst),
        3,
        "replay ran no step again"
    );
    assert_eq!(
        process
            .functions
            .outcome::<Vec<u32>>(flow)
            .await
            .expect("outcome"),
        Some(Ok(vec![0, 20, 40]))
    );
    process.stop().await;
}

static NOTIFIED: AtomicUsize = AtomicUsize::new(0);

/// The timeout pattern: an approval races a deadline.
async fn approval_with_deadline(ctx: Ctx, _input: ()) -> Result<String, Failure> {
    let (winner, decision) = ctx
        .race(vec![
            Ctx::branch(|ctx: Ctx| async move {
                let approved: bool = ctx.signal("approve").await?;
                Ok(if approved { "approved" } else { "rejected" }.to_owned())
            }),
            Ctx::branch(|ctx: Ctx| async move {
                ctx.sleep(Duration::from_secs(3_600)).await;
                Ok("timed out".to_owned())
            }),
        ])
        .await;
    let decision = decision?;
    // Unloaded again: the last run replays the race from its recorded winner.
    ctx.sleep(Duration::from_secs(60)).await;
    ctx.step("notify", |_| async {
        NOTIFIED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .await?;
    Ok(format!("{winner}: {decision}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_between_a_signal_and_a_sleep_sleeps_for_both_and_replays_its_recorded_winner() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("approval", approval_with_deadline)
            .expect("register")
    });

    // The signal comes first.
    let approved = process
        .functions
        .submit("approval", ())
        .await
        .expect("start");
    wait_for_state(&process.functions, approved, ActivationState::Sleeping).await;
    let waiting = journal_of(&store, approved).await;
    assert!(waiting.awaiting.contains("approve"), "{waiting:?}");
    assert_eq!(waiting.awaiting_timers.len(), 1, "{waiting:?}");
    process
        .functions
        .signal(approved, "approve", true)
        .await
        .expect("signal");
    // It wakes for the signal, takes it, and sleeps for its minute.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let function = journal_of(&store, approved).await;
        if function.journal.iter().any(|entry| {
            matches!(
                entry,
                flowstate_core::JournalEntry::Settled {
                    branch: Some(0),
                    ..
                }
            )
        }) && function.awaiting_timers.len() == 1
            && process.functions.state(approved).await.expect("state").0
                == ActivationState::Sleeping
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{function:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Nobody answers the other: the deadline wins.
    let timed_out = process
        .functions
        .submit("approval", ())
        .await
        .expect("start");
    wait_for_state(&process.functions, timed_out, ActivationState::Sleeping).await;
    clock.advance(Duration::from_secs(3_601));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !journal_of(&store, timed_out)
        .await
        .journal
        .iter()
        .any(|entry| {
            matches!(
                entry,
                flowstate_core::JournalEntry::Settled {
                    branch: Some(1),
                    ..
                }
            )
        })
    {
        assert!(tokio::time::Instant::now() < deadline, "the deadline won");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for_state(&process.functions, timed_out, ActivationState::Sleeping).await;

    // Both minutes pass: each replays its race from the recorded winner and finishes.
    clock.advance(Duration::from_secs(61));
    wait_for_state(&process.functions, approved, ActivationState::Done).await;
    wait_for_state(&process.functions, timed_out, ActivationState::Done).await;
    assert_eq!(
        process
            .functions
            .outcome::<String>(approved)
            .await
            .expect("outcome"),
        Some(Ok("0: approved".to_owned()))
    );
    assert_eq!(
        process
            .functions
            .outcome::<String>(timed_out)
            .await
            .expect("outcome"),
        Some(Ok("1: timed out".to_owned()))
    );
    assert_eq!(NOTIFIED.load(Ordering::SeqCst), 2);
    let late = process.functions.signal(timed_out, "approve", true).await;
    assert!(
        matches!(late, Err(flowstate_durable::Error::Done { .. })),
        "{late:?}"
    );
    process.stop().await;
}

static SLOW_STARTED: AtomicUsize = AtomicUsize::new(0);
static SLOW_FINISHED: AtomicUsize = AtomicUsize::new(0);

async fn fail_fast(ctx: Ctx, _input: ()) -> Result<String, Failure> {
    let outcome = ctx
        .all(vec![
            Ctx::branch(|ctx: Ctx| async move {
                ctx.step("slow", |_| async {
                    SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    SLOW_FINISHED.fetch_add(1, Ordering::SeqCst);
                    Ok(1u32)
                })
                .await
            }),
            Ctx::branch(|ctx: Ctx| async move {
                ctx.step("charge", |_| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<u32, _>(Failure::new("Declined", "card declined"))
                })
                .await
            }),
        ])
        .await;
    let kind = outcome
        .err()
        .map(|failure| failure.kind)
        .unwrap_or_default();
    ctx.sleep(Duration::from_secs(60)).await;
    Ok(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_fails_fast_aborts_the_other_branches_and_a_replay_returns_the_same_error() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("fail_fast", fail_fast).expect("register")
    });
    let flow = process
        .functions
        .submit("fail_fast", ())
        .await
        .expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Sleeping).await;
    assert_eq!(SLOW_STARTED.load(Ordering::SeqCst), 1);
    assert_eq!(
        SLOW_FINISHED.load(Ordering::SeqCst),
        0,
        "the slow branch was aborted"
    );
    let function = journal_of(&store, flow).await;
    let steps: Vec<String> = function
        .journal
        .iter()
        .filter_map(|entry| match entry {
            flowstate_core::JournalEntry::Step { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["charge"], "the aborted step was not recorded");

    clock.advance(Duration::from_secs(61));
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        SLOW_STARTED.load(Ordering::SeqCst),
        1,
        "the replay ran only the branch that decided the outcome"
    );
    assert_eq!(
        process
            .functions
            .outcome::<String>(flow)
            .await
            .expect("outcome"),
        Some(Ok("Declined".to_owned()))
    );
    process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_rolling_deploy_the_fixed_version_repairs_what_the_broken_one_still_running_claims() {
    let (store, clock) = setup();
    let p1 = Process::start(&store, &clock, "v1", |f| {
        f.register("order", v1).expect("register")
    });
    let flow = p1.functions.submit("order", ()).await.expect("start");
    wait_for_state(&p1.functions, flow, ActivationState::Sleeping).await;
    p1.stop().await;
    let broken = Process::start(&store, &clock, "v3", |f| {
        f.register("order", v3).expect("register")
    });
    clock.advance(Duration::from_secs(61));
    wait_for_state(&broken.functions, flow, ActivationState::ReplayFailure).await;
    // The fixed version's incarnation starts (it marks the activation ready) while the
    // broken one still runs, and the broken one's worker claims it first: it must leave it
    // ready (parked) rather than release it as handled.
    let starting: Arc<dyn Clock> = clock.clone();
    let fixed_functions = Functions::new(store.clone(), starting, "v2");
    fixed_functions.register("order", v2).expect("register");
    assert_eq!(fixed_functions.wake_all().await.expect("wake"), 1);
    wait_until_parked(&broken, "the broken version left the activation ready").await;
    // The old process goes (the deploy goes on); the fixed one takes the activation over
    // without another explicit start.
    broken.stop().await;
    // Its park (a lease) runs out on the store's clock.
    clock.advance(Duration::from_secs(1));
    let fixed = Process::start(&store, &clock, "v2", |f| {
        f.register("order", v2).expect("register")
    });
    wait_for_state(&fixed.functions, flow, ActivationState::Done).await;
    fixed.stop().await;
}

async fn counted_v1(ctx: Ctx, _input: ()) -> Result<String, Failure> {
    let count: u32 = ctx.step("count", |_| async { Ok(3) }).await?;
    let _: bool = ctx.signal("go").await?;
    Ok(count.to_string())
}

async fn counted_v2(ctx: Ctx, _input: ()) -> Result<String, Failure> {
    let count: String = ctx.step("count", |_| async { Ok("3".to_owned()) }).await?;
    let _: bool = ctx.signal("go").await?;
    Ok(count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_value_the_new_code_cannot_decode_is_a_replay_failure_not_a_step_error() {
    let (store, clock) = setup();
    let p1 = Process::start(&store, &clock, "v1", |f| {
        f.register("counted", counted_v1).expect("register")
    });
    let flow = p1.functions.submit("counted", ()).await.expect("start");
    wait_for_state(&p1.functions, flow, ActivationState::Sleeping).await;
    p1.stop().await;
    let p2 = Process::start(&store, &clock, "v2", |f| {
        f.register("counted", counted_v2).expect("register")
    });
    p2.functions.signal(flow, "go", true).await.expect("signal");
    let diagnostic = wait_for_state(&p2.functions, flow, ActivationState::ReplayFailure)
        .await
        .expect("a diagnostic");
    assert!(diagnostic.contains("journal position 0"), "{diagnostic}");
    assert!(diagnostic.contains("another type"), "{diagnostic}");
    assert_eq!(
        p2.functions.outcome::<String>(flow).await.expect("read"),
        None,
        "not done with the decoding error"
    );
    p2.stop().await;
}

static SLOW_WHILE_CHILD_ENDS: AtomicUsize = AtomicUsize::new(0);

async fn quick_child(_ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    Ok(1)
}

async fn parent_stepping_while_child_ends(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let child = ctx.start_function("quick_child", ()).await?;
    let slow: u32 = ctx
        .step("slow", |_| async {
            SLOW_WHILE_CHILD_ENDS.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(2)
        })
        .await?;
    Ok(slow + ctx.join::<u32>(child).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ending_while_its_parent_runs_a_step_does_not_make_the_step_run_again() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("parent", parent_stepping_while_child_ends)
            .expect("register");
        f.register("quick_child", quick_child).expect("register");
    });
    let flow = process.functions.submit("parent", ()).await.expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    assert_eq!(
        process.functions.outcome::<u32>(flow).await.expect("read"),
        Some(Ok(3))
    );
    assert_eq!(SLOW_WHILE_CHILD_ENDS.load(Ordering::SeqCst), 1);
    assert_eq!(process.worker.stats().conflicts, 0);
    process.stop().await;
}

/// A store on an SQLite file (commits take real time there, unlike the memory store's).
fn setup_sqlite() -> (Arc<dyn Store>, Arc<ManualClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_767_225_600_000_000,
    )));
    let store = flowstate_store_sqlite::SqliteStore::open(
        dir.path().join("functions.db"),
        clock.clone(),
        flowstate_store_sqlite::SqliteOptions::default(),
    )
    .expect("open");
    (Arc::new(store), clock, dir)
}

async fn two_steps_race(ctx: Ctx, _input: ()) -> Result<usize, Failure> {
    let branch = |name: &'static str| {
        move |ctx: Ctx| async move {
            ctx.step(name, |_| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(name.to_owned())
            })
            .await
        }
    };
    let (winner, value) = ctx.race(vec![branch("a"), branch("b")]).await;
    value?;
    Ok(winner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_whose_loser_is_committing_when_the_winner_finishes_ends_cleanly_on_sqlite() {
    let (store, clock, _dir) = setup_sqlite();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("race", two_steps_race).expect("register")
    });
    let mut flows = Vec::new();
    for _ in 0..10 {
        flows.push(process.functions.submit("race", ()).await.expect("start"));
    }
    for flow in &flows {
        wait_for_state(&process.functions, *flow, ActivationState::Done).await;
        let winner = process
            .functions
            .outcome::<usize>(*flow)
            .await
            .expect("read");
        assert!(matches!(winner, Some(Ok(0 | 1))), "{winner:?}");
        let function = journal_of(&store, *flow).await;
        let settled: Vec<_> = function
            .journal
            .iter()
            .filter(|e| matches!(e, flowstate_core::JournalEntry::Settled { .. }))
            .collect();
        assert_eq!(settled.len(), 1, "{:?}", function.journal);
    }
    let stats = process.worker.stats();
    assert_eq!(stats.parked, 0, "no run failed: {stats:?}");
    assert_eq!(stats.conflicts, 0, "{stats:?}");
    process.stop().await;
    store.close().await.expect("close");
}

async fn branches_v1(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let values = ctx
        .all(vec![
            Ctx::branch(|ctx: Ctx| async move { ctx.step("a", |_| async { Ok(1u32) }).await }),
            Ctx::branch(|ctx: Ctx| async move { ctx.step("b", |_| async { Ok(2u32) }).await }),
        ])
        .await?;
    let _: bool = ctx.signal("go").await?;
    Ok(values.iter().sum())
}

static LATE_EXTRAS: AtomicUsize = AtomicUsize::new(0);

/// v1 with a change behind `patched` at the end of a branch that had finished.
async fn branches_patched(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let values = ctx
        .all(vec![
            Ctx::branch(|ctx: Ctx| async move {
                let a: u32 = ctx.step("a", |_| async { Ok(1u32) }).await?;
                if ctx.patched("extra").await {
                    ctx.step("extra", |_| async {
                        LATE_EXTRAS.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await?;
                }
                Ok(a)
            }),
            Ctx::branch(|ctx: Ctx| async move { ctx.step("b", |_| async { Ok(2u32) }).await }),
        ])
        .await?;
    let _: bool = ctx.signal("go").await?;
    Ok(values.iter().sum())
}

/// v1 with an unconditional new step at the end of a branch that had finished.
async fn branches_grown(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let values = ctx
        .all(vec![
            Ctx::branch(|ctx: Ctx| async move {
                let a: u32 = ctx.step("a", |_| async { Ok(1u32) }).await?;
                ctx.step("extra", |_| async {
                    LATE_EXTRAS.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await?;
                Ok(a)
            }),
            Ctx::branch(|ctx: Ctx| async move { ctx.step("b", |_| async { Ok(2u32) }).await }),
        ])
        .await?;
    let _: bool = ctx.signal("go").await?;
    Ok(values.iter().sum())
}

/// Branches, one of them waiting for the signal when the activation goes to sleep.
async fn branches_waiting(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let values = ctx
        .all(vec![
            Ctx::branch(|ctx: Ctx| async move { ctx.step("a", |_| async { Ok(1u32) }).await }),
            Ctx::branch(|ctx: Ctx| async move {
                let _: bool = ctx.signal("go").await?;
                Ok(2u32)
            }),
        ])
        .await?;
    Ok(values.iter().sum())
}

/// `branches_waiting` without its branches: what they recorded is never replayed.
async fn branches_dropped(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    let _: bool = ctx.signal("go").await?;
    Ok(3)
}

/// Starts an activation of `old`, lets it sleep on its signal, and wakes it with `new`.
async fn replay_branches_with<F, Fut, G, Gut>(
    old: G,
    new: F,
) -> (
    ActivationState,
    Option<String>,
    Option<Result<u32, FunctionError>>,
)
where
    F: Fn(Ctx, ()) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u32, Failure>> + 'static,
    G: Fn(Ctx, ()) -> Gut + Copy + Send + Sync + 'static,
    Gut: std::future::Future<Output = Result<u32, Failure>> + 'static,
{
    let (store, clock) = setup();
    let p1 = Process::start(&store, &clock, "v1", |f| {
        f.register("branches", old).expect("register")
    });
    let flow = p1.functions.submit("branches", ()).await.expect("start");
    wait_for_state(&p1.functions, flow, ActivationState::Sleeping).await;
    p1.stop().await;
    let p2 = Process::start(&store, &clock, "v2", |f| {
        f.register("branches", new).expect("register")
    });
    p2.functions.signal(flow, "go", true).await.expect("signal");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (state, diagnostic) = loop {
        let (state, diagnostic) = p2.functions.state(flow).await.expect("state");
        if matches!(
            state,
            ActivationState::Done | ActivationState::ReplayFailure
        ) {
            break (state, diagnostic);
        }
        assert!(tokio::time::Instant::now() < deadline, "still {state}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let outcome = p2.functions.outcome::<u32>(flow).await.expect("read");
    p2.stop().await;
    (state, diagnostic, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_branch_cannot_go_live_on_replay_and_its_patched_is_false() {
    let (state, _, outcome) = replay_branches_with(branches_v1, branches_patched).await;
    assert_eq!(state, ActivationState::Done);
    assert_eq!(outcome, Some(Ok(3)));
    assert_eq!(
        LATE_EXTRAS.load(Ordering::SeqCst),
        0,
        "the old path, as at the root"
    );

    let (state, diagnostic, _) = replay_branches_with(branches_v1, branches_grown).await;
    assert_eq!(state, ActivationState::ReplayFailure);
    let diagnostic = diagnostic.expect("a diagnostic");
    assert!(diagnostic.contains("had finished"), "{diagnostic}");
    assert_eq!(LATE_EXTRAS.load(Ordering::SeqCst), 0);

    let (state, diagnostic, _) = replay_branches_with(branches_waiting, branches_dropped).await;
    assert_eq!(state, ActivationState::ReplayFailure);
    let diagnostic = diagnostic.expect("a diagnostic");
    assert!(
        diagnostic.contains("without starting branch \"0.0\""),
        "{diagnostic}"
    );
}

async fn joined_effects(ctx: Ctx, _input: ()) -> Result<u32, Failure> {
    // The first step's body suspends, so both are under way at once.
    let (a, b) = tokio::join!(
        ctx.step("a", |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(1u32)
        }),
        ctx.step("b", |_| async { Ok(2u32) })
    );
    Ok(a? + b?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_effects_of_one_branch_at_once_are_refused() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p1", |f| {
        f.register("joined", joined_effects).expect("register")
    });
    let flow = process.functions.submit("joined", ()).await.expect("start");
    wait_until_parked(&process, "the run was not refused").await;
    assert!(
        journal_of(&store, flow).await.journal.len() <= 1,
        "the second effect was not journaled"
    );
    process.stop().await;
}

async fn three_steps(ctx: Ctx, n: u32) -> Result<u32, Failure> {
    let mut total = n;
    for name in ["a", "b", "c"] {
        total = ctx
            .step(name, move |_| async move { Ok(total + 1) })
            .await?;
    }
    Ok(total)
}

async fn calls_three_steps(ctx: Ctx, n: u32) -> Result<u32, Failure> {
    let child: u32 = ctx.call("three_steps", n).await?;
    Ok(child * 10)
}

/// A done activation keeps its whole journal for its retention, measured by the engine's
/// clock from its last event (a store timer wakes it then), and drops it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_function_keeps_its_journal_until_its_retention_passes() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p", |f| {
        f.register("three_steps", three_steps).expect("register");
    });
    process.functions.keep_journals(false);
    let retention = Duration::from_secs(3_600);
    process.functions.journal_retention(retention);
    let flow = process
        .functions
        .submit("three_steps", 1)
        .await
        .expect("start");
    wait_for_state(&process.functions, flow, ActivationState::Done).await;
    let done_at = store.flow(flow).await.expect("flow").expect("exists");
    let journal_len = |events: &[flowstate_core::RawEvent]| {
        let record = flowstate_core::fold(events, flowstate_core::StopAt::End).expect("folds");
        let function = record.function.expect("function");
        (function.journal.len(), function.journal_dropped.is_some())
    };
    // The retention timer is set before the flow is released; wait until it is.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.flow(flow).await.expect("flow").expect("exists").ready {
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.next_timer_due().await.expect("next timer"),
        Some(done_at.updated_at.saturating_add(retention)),
        "the retention timer is due when the retention passes"
    );
    clock.advance(retention - Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kept = flowstate_store::read_all(&*store, flow)
        .await
        .expect("read");
    assert_eq!(journal_len(&kept), (3, false), "kept within its retention");

    clock.advance(Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = flowstate_store::read_all(&*store, flow)
            .await
            .expect("read");
        if journal_len(&events) == (0, true) {
            assert!(events.len() < kept.len());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal was not dropped after its retention"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        process
            .functions
            .outcome::<u32>(flow)
            .await
            .expect("outcome"),
        Some(Ok(4)),
        "the outcome stays"
    );
    assert_eq!(store.next_timer_due().await.expect("next"), None);
    process.stop().await;
}

/// With a retention of zero, a done activation drops its journal and keeps its outcome: its log becomes
/// its creation (and parent), its outcome, the done transition and `journal_dropped`, with
/// the creation time kept. A child that dropped its journal has still told its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_function_drops_its_journal_and_keeps_its_outcome() {
    let (store, clock) = setup();
    let process = Process::start(&store, &clock, "p", |f| {
        f.register("three_steps", three_steps).expect("register");
        f.register("calls_three_steps", calls_three_steps)
            .expect("register");
    });
    process.functions.keep_journals(false);
    process.functions.journal_retention(Duration::ZERO);
    let parent = process
        .functions
        .submit("calls_three_steps", 1)
        .await
        .expect("start");
    wait_for_state(&process.functions, parent, ActivationState::Done).await;
    assert_eq!(
        process
            .functions
            .outcome::<u32>(parent)
            .await
            .expect("outcome"),
        Some(Ok(40))
    );
    let list = store
        .list(&flowstate_store::FlowQuery::default())
        .await
        .expect("list");
    assert_eq!(list.flows.len(), 2, "the parent and its child");
    for summary in list.flows {
        // The compaction follows the transition to done; wait for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let events = loop {
            let events = flowstate_store::read_all(&*store, summary.id)
                .await
                .expect("read");
            if events.len() <= 5 {
                break events;
            }
            assert!(tokio::time::Instant::now() < deadline, "never compacted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let record = flowstate_core::fold(&events, flowstate_core::StopAt::End).expect("folds");
        let function = record.function.as_ref().expect("function");
        assert!(function.journal.is_empty());
        let dropped = function.journal_dropped.expect("dropped");
        assert!(
            dropped.entries >= 1 && dropped.events > events.len() as u64,
            "{dropped:?}"
        );
        assert_eq!(record.created_at, summary.created_at, "creation time kept");
        assert!(function.outcome.is_some());
        let types: Vec<&str> = events
            .iter()
            .map(|raw| {
                flowstate_core::Event::decode(raw)
                    .expect("decode")
                    .body
                    .type_name()
            })
            .collect();
        let expected: &[&str] = if record.parent.is_some() {
            &[
                "flow_created",
                "child_of",
                "function_returned",
                "activation_state_changed",
                "journal_dropped",
            ]
        } else {
            &[
                "flow_created",
                "function_returned",
                "activation_state_changed",
                "journal_dropped",
            ]
        };
        assert_eq!(types, expected);
        // The compacted log is numbered after the old one: the next sequence number never
        // goes down, so nobody who read the old log can append to the new one.
        assert_eq!(
            events[0].seq,
            dropped.events + 1,
            "numbered after the old log"
        );
        assert_eq!(record.first_seq, dropped.events + 1);
        let now = store.flow(summary.id).await.expect("flow").expect("exists");
        assert_eq!(now.next_seq, dropped.events + events.len() as u64 + 1);
        assert!(
            now.next_seq >= summary.next_seq,
            "the next sequence number never goes down"
        );
        // An append that expects what the next sequence number would be had the new log been
        // numbered from 1 (a stale writer's number once), or the old log's, is refused.
        for stale in [events.len() as u64 + 1, dropped.events + 1] {
            let append = store
                .append(flowstate_store::AppendBatch {
                    flow: summary.id,
                    expected_next_seq: stale,
                    events: vec![flowstate_store::NewEvent {
                        time: clock.now(),
                        format: flowstate_core::EVENT_FORMAT_VERSION,
                        body: br#"{"type":"cancel_requested","reason":"late"}"#.to_vec(),
                    }],
                    create: None,
                    status: None,
                    ready: None,
                    timers: Vec::new(),
                })
                .await;
            assert!(
                matches!(
                    append,
                    Err(flowstate_store::StoreError::Conflict { expected, actual, .. })
                        if expected == stale && actual == now.next_seq
                ),
                "an append expecting {stale}: {append:?}"
            );
        }
        assert_eq!(
            flowstate_store::read_all(&*store, summary.id)
                .await
                .expect("read"),
            events,
            "nothing was appended"
        );
    }
    // Waking a compacted activation changes nothing.
    let before = flowstate_store::read_all(&*store, parent)
        .await
        .expect("read");
    store.mark_ready(parent).await.expect("ready");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = flowstate_store::read_all(&*store, parent)
        .await
        .expect("read");
    assert_eq!(before, after);
    process.stop().await;
}
