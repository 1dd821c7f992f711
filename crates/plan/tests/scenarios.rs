//! Scenarios that read like the seed (`004_…`: flows, terminal vs deactivated, provenance) and
//! Argyll's acceptance tests, on the memory store with real time (short backoffs).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstate_core::fold::StopAt;
use flowstate_core::machine::PlanState;
use flowstate_core::{EventBody, FlowRecord, FlowStatus, Predicate, StepState, WorkState};
use flowstate_plan::{PlanRequest, PlanningError, Plans, Step, StepError};
use flowstate_store::{MemoryStore, Store, SystemClock};
use serde_json::{json, Value};

fn engine() -> (Plans, Arc<dyn Store>) {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    (Plans::new(store.clone(), clock), store)
}

fn status(record: &FlowRecord) -> PlanState {
    match record.status {
        FlowStatus::Plan(state) => state,
        other => panic!("not a plan: {other:?}"),
    }
}

fn step_state(record: &FlowRecord, step: &str) -> StepState {
    record.plan.as_ref().expect("plan").steps[step].state
}

fn attribute(record: &FlowRecord, name: &str) -> Option<Value> {
    record
        .plan
        .as_ref()
        .expect("plan")
        .attributes
        .get(name)
        .map(|a| a.value.clone())
}

async fn types(store: &Arc<dyn Store>, flow: flowstate_core::FlowId) -> Vec<(String, Value)> {
    let raw = flowstate_store::read_all(&**store, flow)
        .await
        .expect("read");
    raw.iter()
        .map(|raw| {
            let event = flowstate_core::Event::decode(raw).expect("decode");
            let value = serde_json::to_value(&event.body).expect("encode");
            (event.body.type_name().to_owned(), value)
        })
        .collect()
}

fn position(events: &[(String, Value)], pred: impl Fn(&str, &Value) -> bool) -> usize {
    events
        .iter()
        .position(|(name, body)| pred(name, body))
        .expect("event present")
}

/// The seed's example: payment fails while the inventory reservation is still running. The
/// flow fails at once, no new step starts, the reservation's success is recorded afterwards,
/// and only then is the flow deactivated.
#[tokio::test]
async fn order_processing_payment_fails_while_reservation_runs() {
    let (plans, store) = engine();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let shipped = Arc::new(AtomicU32::new(0));
    plans
        .register(
            Step::new("process_payment")
                .input("order")
                .output("payment")
                .body(|_| async {
                    Err(StepError::permanent("CardDeclined", "insufficient funds"))
                }),
        )
        .expect("register");
    plans
        .register(
            Step::new("reserve_inventory")
                .input("order")
                .output("reservation")
                .body(move |_| {
                    let release = release_rx.lock().expect("lock").take();
                    async move {
                        if let Some(release) = release {
                            let _ = release.await;
                        }
                        Ok(json!({"reservation": "r-1"}))
                    }
                }),
        )
        .expect("register");
    let counter = shipped.clone();
    plans
        .register(
            Step::new("ship")
                .input("payment")
                .input("reservation")
                .output("shipment")
                .body(move |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Ok(json!({"shipment": "s-1"})) }
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["shipment"]).input("order", json!({"id": 7})))
        .await
        .expect("start");
    let runner = plans.clone();
    let run = tokio::spawn(async move { runner.run(flow).await });
    // Wait until the flow is failed while the reservation is still running.
    let failed = loop {
        let record = plans.state(flow, StopAt::End).await.expect("state");
        if status(&record) == PlanState::Failed {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(step_state(&failed, "process_payment"), StepState::Failed);
    assert_eq!(step_state(&failed, "reserve_inventory"), StepState::Active);
    let reason = failed
        .plan
        .as_ref()
        .and_then(|p| p.failure.clone())
        .expect("reason");
    assert!(reason.message.contains("insufficient funds"), "{reason:?}");
    release_tx.send(()).expect("release");
    let end = run.await.expect("join").expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    assert_eq!(
        shipped.load(Ordering::SeqCst),
        0,
        "no new step starts after failure"
    );
    // Ship could never run (its payment input cannot be produced): failed as unreachable,
    // never started.
    assert_eq!(step_state(&end, "ship"), StepState::Failed);
    assert_eq!(attribute(&end, "reservation"), Some(json!("r-1")));
    let events = types(&store, flow).await;
    let failed_at = position(&events, |n, b| {
        n == "plan_state_changed" && b["to"] == "failed"
    });
    let late = position(&events, |n, b| {
        n == "work_succeeded" && b["step"] == "reserve_inventory"
    });
    let deactivated = position(&events, |n, b| {
        n == "plan_state_changed" && b["to"] == "deactivated"
    });
    assert!(failed_at < late && late < deactivated, "{events:?}");
    assert!(!events
        .iter()
        .any(|(n, b)| n == "step_started" && b["step"] == "ship"));
}

#[tokio::test]
async fn provenance_records_step_attempt_sequence_and_time() {
    let (plans, _store) = engine();
    plans
        .register(
            Step::new("lookup_customer")
                .input("customer_id")
                .output("customer_name")
                .body(|ctx| async move {
                    let id: u32 = ctx.input("customer_id")?;
                    Ok(json!({"customer_name": format!("Alice #{id}")}))
                }),
        )
        .expect("register");
    plans
        .register(
            Step::new("calculate_total")
                .input("customer_name")
                .output("amount")
                .body(|_| async { Ok(json!({"amount": 150.0, "ignored": true})) }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["amount"]).input("customer_id", json!(42)))
        .await
        .expect("start");
    let end = plans.run(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    let attributes = &end.plan.as_ref().expect("plan").attributes;
    let input = &attributes["customer_id"];
    assert_eq!(input.step, None);
    let name = &attributes["customer_name"];
    assert_eq!(name.value, json!("Alice #42"));
    assert_eq!(name.step.as_deref(), Some("lookup_customer"));
    assert_eq!(name.attempt, 1);
    let amount = &attributes["amount"];
    assert_eq!(amount.step.as_deref(), Some("calculate_total"));
    assert!(amount.seq > name.seq && amount.time >= name.time);
    assert!(
        !attributes.contains_key("ignored"),
        "undeclared outputs are not attributes"
    );
    // Time travel: as of the event that set the name, the amount did not exist yet.
    let then = plans
        .state(flow, StopAt::Seq(name.seq))
        .await
        .expect("state");
    assert_eq!(attribute(&then, "customer_name"), Some(json!("Alice #42")));
    assert_eq!(attribute(&then, "amount"), None);
    assert_eq!(status(&then), PlanState::Active);
}

#[tokio::test]
async fn unreachable_goal_fails_the_flow_and_cascades() {
    let (plans, store) = engine();
    let calls = Arc::new(AtomicU32::new(0));
    plans
        .register(
            Step::new("fetch")
                .input("url")
                .output("page")
                .body(|_| async { Err(StepError::permanent("NotFound", "404")) }),
        )
        .expect("register");
    for (name, input, output) in [("parse", "page", "doc"), ("index", "doc", "indexed")] {
        let calls = calls.clone();
        plans
            .register(Step::new(name).input(input).output(output).body(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(json!({})) }
            }))
            .expect("register");
    }
    let flow = plans
        .submit(PlanRequest::new(["index"]).input("url", json!("x")))
        .await
        .expect("start");
    let end = plans.run(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "consumers are never invoked"
    );
    let plan = end.plan.as_ref().expect("plan");
    for step in ["fetch", "parse", "index"] {
        assert_eq!(plan.steps[step].state, StepState::Failed, "{step}");
    }
    let parse = plan.steps["parse"].failure.as_ref().expect("why");
    assert_eq!(parse.kind, "Unreachable");
    assert!(
        parse
            .message
            .contains("\"page\" is no longer available: step \"fetch\" failed"),
        "{parse:?}"
    );
    let events = types(&store, flow).await;
    assert!(events
        .iter()
        .any(|(n, b)| n == "plan_state_changed" && b["to"] == "failed"));
}

#[tokio::test]
async fn refused_starts_say_what_is_missing_and_record_nothing() {
    let (plans, store) = engine();
    plans
        .register(
            Step::new("charge")
                .input("card")
                .output("receipt")
                .body(|_| async { Ok(json!({"receipt": 1})) }),
        )
        .expect("register");
    let error = plans
        .submit(PlanRequest::new(["receipt"]))
        .await
        .expect_err("card missing");
    assert!(
        error
            .to_string()
            .contains("\"card\": no step provides it and it is not an input"),
        "{error}"
    );
    let error = plans
        .submit(PlanRequest::new(["nothing"]))
        .await
        .expect_err("unknown");
    assert!(matches!(
        error,
        flowstate_plan::Error::Planning(PlanningError::UnknownGoal { .. })
    ));
    let listed = store.list(&Default::default()).await.expect("list");
    assert!(listed.flows.is_empty(), "nothing recorded");
}

#[tokio::test]
async fn optional_inputs_take_defaults_and_predicates_skip_a_branch() {
    let (plans, _store) = engine();
    plans
        .register(
            Step::new("express_label")
                .input("order")
                .input("priority")
                .output("express")
                .when(Predicate::Equals {
                    input: "priority".into(),
                    value: json!(true),
                })
                .body(|_| async { Ok(json!({"express": "EX-1"})) }),
        )
        .expect("register");
    plans
        .register(
            Step::new("ship")
                .input("order")
                .optional_input("express", Some(json!("standard")))
                .optional_input("gift_note", None)
                .output("shipment")
                .body(|ctx| async move {
                    let express: String = ctx.input("express")?;
                    let note = ctx.inputs.contains_key("gift_note");
                    Ok(json!({"shipment": format!("{express}/{note}")}))
                }),
        )
        .expect("register");
    for (priority, expected, express_state) in [
        (true, "EX-1/false", StepState::Completed),
        (false, "standard/false", StepState::Skipped),
    ] {
        let flow = plans
            .submit(
                PlanRequest::new(["shipment"])
                    .input("order", json!(1))
                    .input("priority", json!(priority)),
            )
            .await
            .expect("start");
        let end = plans.run(flow).await.expect("run");
        assert_eq!(status(&end), PlanState::Deactivated);
        assert_eq!(attribute(&end, "shipment"), Some(json!(expected)));
        assert_eq!(step_state(&end, "express_label"), express_state);
    }
}

#[tokio::test]
async fn mapped_items_with_one_failing_item_and_retries() {
    let (plans, store) = engine();
    let attempts = Arc::new(Mutex::new(Vec::<(u32, u32, String)>::new()));
    let seen = attempts.clone();
    plans
        .register(
            Step::new("resize")
                .input("images")
                .output("thumbnails")
                .map_over("images", 2)
                .retry(3, Duration::from_millis(1), Duration::from_millis(5))
                .body(move |ctx| {
                    let seen = seen.clone();
                    async move {
                        let image: String = ctx.input("images")?;
                        seen.lock().expect("lock").push((
                            ctx.item,
                            ctx.attempt,
                            ctx.idempotency_key(),
                        ));
                        match image.as_str() {
                            // Fails twice, then succeeds on the third attempt.
                            "flaky" if ctx.attempt < 3 => {
                                Err(StepError::retryable("Busy", "try again"))
                            }
                            _ => Ok(json!({"thumbnails": format!("{image}.thumb")})),
                        }
                    }
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["thumbnails"]).input("images", json!(["a", "flaky", "c"])))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    assert_eq!(
        attribute(&end, "thumbnails"),
        Some(json!(["a.thumb", "flaky.thumb", "c.thumb"]))
    );
    let seen = attempts.lock().expect("lock").clone();
    let flaky: Vec<_> = seen.iter().filter(|(item, _, _)| *item == 1).collect();
    assert_eq!(
        flaky.iter().map(|(_, a, _)| *a).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        flaky.iter().all(|(_, _, key)| *key == flaky[0].2),
        "one idempotency key per item"
    );
    let provenance = &end.plan.as_ref().expect("plan").attributes["thumbnails"];
    assert_eq!(provenance.attempt, 3);
    let events = types(&store, flow).await;
    assert_eq!(
        events
            .iter()
            .filter(|(n, _)| n == "retry_scheduled")
            .count(),
        2
    );

    // Now an item that always fails: fail-fast, the rest abandoned, the flow still deactivates.
    let (plans, store) = engine();
    plans
        .register(
            Step::new("resize")
                .input("images")
                .output("thumbnails")
                .map_over("images", 1)
                .retry(2, Duration::from_millis(1), Duration::from_millis(2))
                .body(|ctx| async move {
                    let image: String = ctx.input("images")?;
                    if image == "broken" {
                        Err(StepError::retryable("Corrupt", "cannot decode"))
                    } else {
                        Ok(json!({"thumbnails": image}))
                    }
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["thumbnails"]).input("images", json!(["broken", "b", "c"])))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    let step = &end.plan.as_ref().expect("plan").steps["resize"];
    assert_eq!(step.state, StepState::Failed);
    let states: Vec<WorkState> = step.items.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [
            WorkState::Failed,
            WorkState::Abandoned,
            WorkState::Abandoned
        ]
    );
    assert_eq!(step.items[0].attempt, 2);
    let events = types(&store, flow).await;
    assert_eq!(
        events.iter().filter(|(n, _)| n == "work_abandoned").count(),
        2
    );
    assert!(events
        .iter()
        .any(|(n, b)| n == "plan_state_changed" && b["to"] == "failed"));
}

#[tokio::test]
async fn saga_compensates_in_reverse_order_of_success() {
    let (plans, _store) = engine();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    for (name, input, output) in [
        ("book_flight", "trip", "flight"),
        ("book_hotel", "flight", "hotel"),
        ("book_car", "hotel", "car"),
    ] {
        let done = log.clone();
        let undone = log.clone();
        plans
            .register(
                Step::new(name)
                    .input(input)
                    .output(output)
                    .body(move |_| {
                        done.lock().expect("lock").push(format!("do {name}"));
                        async move { Ok(json!({ output: format!("{output}-1") })) }
                    })
                    .compensate(move |_, outputs| {
                        undone
                            .lock()
                            .expect("lock")
                            .push(format!("undo {name} {}", outputs[output]));
                        async { Ok(Value::Null) }
                    }),
            )
            .expect("register");
    }
    plans
        .register(
            Step::new("charge")
                .input("car")
                .output("invoice")
                .body(|_| async { Err(StepError::permanent("Declined", "card declined")) }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["invoice"]).input("trip", json!("lisbon")))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    assert_eq!(
        *log.lock().expect("lock"),
        [
            "do book_flight",
            "do book_hotel",
            "do book_car",
            "undo book_car \"car-1\"",
            "undo book_hotel \"hotel-1\"",
            "undo book_flight \"flight-1\"",
        ]
    );
    let plan = end.plan.as_ref().expect("plan");
    for step in ["book_flight", "book_hotel", "book_car"] {
        assert_eq!(
            plan.steps[step].items[0].state,
            WorkState::Compensated,
            "{step}"
        );
    }
}

#[tokio::test]
async fn timeouts_fail_attempts_and_retry_them() {
    let (plans, _store) = engine();
    plans
        .register(
            Step::new("slow")
                .input("x")
                .output("y")
                .timeout(Duration::from_millis(20))
                .retry(2, Duration::from_millis(1), Duration::from_millis(1))
                .body(|ctx| async move {
                    if ctx.attempt == 1 {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Ok(json!({"y": ctx.attempt}))
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["y"]).input("x", json!(0)))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(attribute(&end, "y"), Some(json!(2)));
    let item = &end.plan.as_ref().expect("plan").steps["slow"].items[0];
    assert_eq!(item.attempt, 2);
}

#[tokio::test]
async fn a_running_flow_keeps_the_step_versions_it_was_planned_with() {
    let (plans, _store) = engine();
    plans
        .register(
            Step::new("greet")
                .input("name")
                .output("greeting")
                .body(|ctx| async move {
                    Ok(json!({"greeting": format!("hello {}", ctx.input::<String>("name")?)}))
                }),
        )
        .expect("register");
    let old = plans
        .submit(PlanRequest::new(["greeting"]).input("name", json!("ada")))
        .await
        .expect("start");
    plans
        .register(
            Step::new("greet")
                .version(2)
                .input("name")
                .output("greeting")
                .body(|ctx| async move {
                    Ok(json!({"greeting": format!("hi {}", ctx.input::<String>("name")?)}))
                }),
        )
        .expect("register v2");
    let new = plans
        .submit(PlanRequest::new(["greeting"]).input("name", json!("bob")))
        .await
        .expect("start");
    assert_eq!(
        attribute(&plans.run(old).await.expect("run"), "greeting"),
        Some(json!("hello ada"))
    );
    assert_eq!(
        attribute(&plans.run(new).await.expect("run"), "greeting"),
        Some(json!("hi bob"))
    );
    // The same version with another definition is refused.
    let error = plans
        .register(
            Step::new("greet")
                .version(2)
                .input("name")
                .output("other")
                .body(|_| async { Ok(json!({})) }),
        )
        .expect_err("conflict");
    assert!(error.to_string().contains("already registered"), "{error}");
}

#[tokio::test]
async fn a_step_missing_its_output_fails_without_retry() {
    let (plans, _store) = engine();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    plans
        .register(
            Step::new("forgetful")
                .input("x")
                .output("y")
                .retry(5, Duration::from_millis(1), Duration::from_millis(1))
                .body(move |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Ok(json!({"z": 1})) }
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["y"]).input("x", json!(0)))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let failure = end.plan.as_ref().expect("plan").steps["forgetful"]
        .failure
        .clone()
        .expect("why");
    assert_eq!(failure.kind, "MissingOutput");
}

#[tokio::test]
async fn the_plan_is_in_the_start_event() {
    let (plans, store) = engine();
    plans
        .register(
            Step::new("a")
                .input("x")
                .output("y")
                .body(|_| async { Ok(json!({"y": 1})) }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["y"]).input("x", json!(0)))
        .await
        .expect("start");
    let raw = flowstate_store::read_all(&*store, flow)
        .await
        .expect("read");
    let second = flowstate_core::Event::decode(&raw[1]).expect("decode");
    let EventBody::PlanStarted { plan } = second.body else {
        panic!("{second:?}");
    };
    assert_eq!(plan.steps["a"].outputs, ["y"]);
    assert_eq!(plan.inputs, ["x"]);
}

/// Each attempt has its own completion token: a report for an earlier attempt (stale) or a
/// second report for the same one (duplicate) is refused by the fold, and nothing is written.
#[tokio::test]
async fn stale_and_duplicate_reports_are_refused() {
    use flowstate_engine::FlowWriter;
    let (plans, store) = engine();
    plans
        .register(
            Step::new("flaky")
                .input("x")
                .output("y")
                .retry(2, Duration::from_millis(1), Duration::from_millis(1))
                .body(|ctx| async move {
                    if ctx.attempt == 1 {
                        Err(StepError::retryable("Busy", "later"))
                    } else {
                        Ok(json!({"y": ctx.completion_token()}))
                    }
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["y"]).input("x", json!(0)))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(
        attribute(&end, "y"),
        Some(json!(format!("{flow}/flaky/0/2")))
    );
    let events_before = end.last_seq;
    let mut writer = FlowWriter::load(&*store, flow).await.expect("load");
    for attempt in [1, 2] {
        let report = EventBody::WorkSucceeded {
            step: "flaky".into(),
            item: 0,
            attempt,
            outputs: json!({"y": "late"}),
        };
        let error = writer
            .append(&*store, &SystemClock, vec![report])
            .await
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .contains(&format!("report for attempt {attempt}")),
            "{error}"
        );
        writer = FlowWriter::load(&*store, flow).await.expect("load");
    }
    let after = plans.state(flow, StopAt::End).await.expect("state");
    assert_eq!(after.last_seq, events_before, "nothing written");
}

/// A body that panics fails its attempt (retryable), and the next attempt runs.
#[tokio::test]
async fn a_panicking_body_is_a_failed_attempt_not_a_failed_run() {
    let (plans, _store) = engine();
    plans
        .register(
            Step::new("fragile")
                .input("x")
                .output("y")
                .retry(2, Duration::from_millis(1), Duration::from_millis(1))
                .body(|ctx| async move {
                    assert!(ctx.attempt > 1, "first attempt panics");
                    Ok(json!({"y": ctx.attempt}))
                }),
        )
        .expect("register");
    let flow = plans
        .submit(PlanRequest::new(["y"]).input("x", json!(0)))
        .await
        .expect("start");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(attribute(&end, "y"), Some(json!(2)));
    let item = &end.plan.as_ref().expect("plan").steps["fragile"].items[0];
    assert_eq!(item.attempt, 2);
}

/// A round that decides more than one append can hold (1,499 work items abandoned when the
/// first of 1,500 fails) is committed in parts, and the flow still deactivates.
#[tokio::test]
async fn a_round_larger_than_one_append_is_committed_in_parts() {
    let (plans, store) = engine();
    plans
        .register(
            Step::new("each")
                .input("items")
                .output("done")
                .map_over("items", 1)
                .body(|ctx| async move {
                    let item: u32 = ctx.input("items")?;
                    if item == 0 {
                        return Err(StepError::permanent("Broken", "the first item fails"));
                    }
                    Ok(json!({"done": item}))
                }),
        )
        .expect("register");
    let items: Vec<u32> = (0..1_500).collect();
    let flow = plans
        .create(PlanRequest::new(["done"]).input("items", json!(items)))
        .await
        .expect("create");
    let end = plans.run_to_end(flow).await.expect("run");
    assert_eq!(status(&end), PlanState::Deactivated);
    let step = &end.plan.as_ref().expect("plan").steps["each"];
    assert_eq!(step.state, StepState::Failed);
    let abandoned = step
        .items
        .iter()
        .filter(|item| item.state == WorkState::Abandoned)
        .count();
    assert_eq!(abandoned, 1_499);
    let events = types(&store, flow).await;
    assert_eq!(
        events.iter().filter(|(n, _)| n == "work_abandoned").count(),
        1_499
    );
}

/// A compensation has an idempotency key of its own: a provider must not take the refund
/// for a replay of the charge.
#[tokio::test]
async fn a_compensation_has_its_own_idempotency_key() {
    let (plans, _store) = engine();
    let keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let (charged, refunded) = (keys.clone(), keys.clone());
    plans
        .register(
            Step::new("charge")
                .input("order")
                .output("payment")
                .body(move |ctx| {
                    charged.lock().expect("lock").push(ctx.idempotency_key());
                    async { Ok(json!({"payment": 1})) }
                })
                .compensate(move |ctx, _| {
                    refunded.lock().expect("lock").push(ctx.idempotency_key());
                    async { Ok(Value::Null) }
                }),
        )
        .expect("register");
    plans
        .register(
            Step::new("ship")
                .input("payment")
                .output("shipment")
                .body(|_| async { Err(StepError::permanent("NoStock", "nothing to ship")) }),
        )
        .expect("register");
    let flow = plans
        .create(PlanRequest::new(["shipment"]).input("order", json!(1)))
        .await
        .expect("create");
    plans.run_to_end(flow).await.expect("run");
    let keys = keys.lock().expect("lock").clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[1], format!("{}/compensate", keys[0]));
}
