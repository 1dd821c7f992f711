//! `Plans::execute` (plan, record and run in one call) and the plan cache behind
//! `Plans::preview`: what they record, what they cost in appends, and that a cached plan
//! never outlives the registry it was computed from.

use std::sync::Arc;

use flowstate_core::machine::PlanState;
use flowstate_core::{FlowStatus, Goal};
use flowstate_plan::{PlanRequest, PlanningError, Plans, Step};
use flowstate_store::testing::InstrumentedStore;
use flowstate_store::{FlowQuery, MemoryStore, Store, SystemClock};
use serde_json::json;

/// Steps `s0..s{n}`, each adding one to the previous step's output (`v{i}`).
fn chain(plans: &Plans, steps: usize) {
    for index in 0..steps {
        let input = if index == 0 {
            "x".to_owned()
        } else {
            format!("v{}", index - 1)
        };
        let output = format!("v{index}");
        let step = Step::new(format!("s{index}"))
            .input(input.clone())
            .output(output.clone())
            .body(move |ctx| {
                let (input, output) = (input.clone(), output.clone());
                async move {
                    let value: u64 = ctx.input(&input)?;
                    Ok(json!({ output: value + 1 }))
                }
            });
        plans.register(step).expect("register");
    }
}

#[tokio::test]
async fn execute_runs_a_new_plan_with_one_append_per_step_and_one_more() {
    let clock = Arc::new(SystemClock);
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let counted = Arc::new(InstrumentedStore::new(memory.clone()));
    let plans = Plans::new(counted.clone(), clock);
    chain(&plans, 3);

    let record = plans
        .execute(PlanRequest::new(["v2"]).input("x", json!(1)))
        .await
        .expect("execute");

    assert_eq!(record.status, FlowStatus::Plan(PlanState::Deactivated));
    let attributes = &record.plan.as_ref().expect("plan").attributes;
    assert_eq!(attributes["v2"].value, json!(4));
    // The creation and the plan go with the first step's start; each step's result goes
    // with the next step's start; the last result goes with completion and deactivation.
    assert_eq!(counted.appends(), 4);
    let events = flowstate_store::read_all(&*memory, record.id)
        .await
        .expect("read");
    let types: Vec<String> = events
        .iter()
        .map(|raw| {
            flowstate_core::Event::decode(raw)
                .expect("decode")
                .body
                .type_name()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types[..4],
        [
            "flow_created",
            "plan_started",
            "step_started",
            "work_started"
        ]
    );
    // Run in this process: never offered to the workers.
    let page = memory.list(&FlowQuery::default()).await.expect("list");
    assert_eq!(page.flows.len(), 1);
    assert!(!page.flows[0].ready);
}

#[tokio::test]
async fn execute_records_nothing_when_the_goals_cannot_be_planned() {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let plans = Plans::new(store.clone(), clock);
    chain(&plans, 2);

    let refused = plans
        .execute(PlanRequest::new(["v1"]).input("y", json!(1)))
        .await;

    assert!(
        matches!(
            refused,
            Err(flowstate_plan::Error::Planning(
                PlanningError::Unreachable { .. }
            ))
        ),
        "{refused:?}"
    );
    let page = store.list(&FlowQuery::default()).await.expect("list");
    assert!(page.flows.is_empty());
}

#[tokio::test]
async fn a_cached_plan_never_outlives_a_registration() {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let plans = Plans::new(store, clock);
    chain(&plans, 2);
    let request = PlanRequest::new(["v1"]).input("x", json!(1));

    let first = plans.preview(&request).expect("plan");
    assert_eq!(first.steps["s1"].version, 1);
    assert_eq!(plans.preview(&request).expect("again"), first);
    // Another value of the same input: the same plan (plans depend on input names only).
    let other_value = PlanRequest::new(["v1"]).input("x", json!(99));
    assert_eq!(plans.preview(&other_value).expect("same names"), first);

    // A new version of a step in the plan: the next plan uses it.
    plans
        .register(
            Step::new("s1")
                .version(2)
                .input("v0")
                .output("v1")
                .body(|_ctx| async { Ok(json!({ "v1": 0 })) }),
        )
        .expect("register v2");
    assert_eq!(
        plans.preview(&request).expect("replanned").steps["s1"].version,
        2
    );

    // Its provider removed: the goal is unknown now.
    assert!(plans.unregister("s1"));
    assert!(matches!(
        plans.preview(&request),
        Err(PlanningError::UnknownGoal { .. })
    ));
    assert_eq!(first.goals, [Goal::Attribute("v1".to_owned())]);
}

#[tokio::test]
async fn execute_with_a_key_runs_once_and_replays_the_state() {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let plans = Plans::new(store.clone(), clock);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    plans
        .register(Step::new("count").input("x").output("y").body(move |ctx| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let x: u64 = ctx.input("x")?;
                Ok(json!({ "y": x + 1 }))
            }
        }))
        .expect("register");
    let key = flowstate_engine::StartOptions::new().with_idempotency_key("plan-1");
    let request = || PlanRequest::new(["y"]).input("x", json!(1));
    let (created, first) = plans.execute_with(request(), &key).await.expect("execute");
    assert!(!created.is_existing());
    assert_eq!(first.status, FlowStatus::Plan(PlanState::Deactivated));
    let (again, replayed) = plans.execute_with(request(), &key).await.expect("replay");
    assert_eq!(again, flowstate_engine::Created::Existing(first.id));
    assert_eq!(replayed.status, first.status);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Other goals or choices are another request.
    let error = plans
        .execute_with(PlanRequest::new(["count"]).input("x", json!(1)), &key)
        .await
        .expect_err("another request");
    assert!(
        matches!(&error, flowstate_plan::Error::KeyReused { flow, .. } if *flow == first.id),
        "{error:?}"
    );
    let page = store.list(&FlowQuery::default()).await.expect("list");
    assert_eq!(page.flows.len(), 1);
}
