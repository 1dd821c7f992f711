//! The engine builder: one program, the store chosen by URL; flows submitted to it are run
//! by its worker.

use std::time::Duration;

use flowstate::core::machine::FlowState;
use flowstate::taskgraph::{task_fn, Flow, Inputs};
use flowstate::FlowStatus;
use serde_json::json;

fn greeting() -> Flow {
    Flow::linear("greet")
        .add(task_fn("hello", |_ctx, _inputs| async { Ok(json!("hello")) }).provides("word"))
        .add(
            task_fn("shout", |_ctx, inputs: Inputs| async move {
                Ok(json!(inputs
                    .get("word")
                    .and_then(|w| w.as_str())
                    .unwrap_or_default()
                    .to_uppercase()))
            })
            .requires(["word"]),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_built_from_a_sqlite_url_runs_submitted_flows() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("flows.db").display());
    let engine = flowstate::Engine::builder(url)
        .task_graph(greeting())
        .build()
        .await
        .expect("build");
    let flow = engine
        .task_graphs()
        .submit("greet", Inputs::new())
        .await
        .expect("submit");
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.stats().completed < 1 {
        assert!(tokio::time::Instant::now() < deadline, "not run in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summary = engine
        .store()
        .flow(flow)
        .await
        .expect("flow")
        .expect("exists");
    assert_eq!(summary.status, FlowStatus::TaskGraph(FlowState::Success));
    engine.shutdown_handle().shutdown();
    let stats = worker.await.expect("joined").expect("worker");
    assert_eq!(stats.completed, 1);
    engine.store().close().await.expect("close");
}

#[tokio::test]
async fn an_unknown_store_scheme_is_refused_with_the_accepted_forms() {
    let refused = flowstate::Engine::builder("redis://localhost")
        .build()
        .await
        .expect_err("unknown scheme");
    assert!(refused.to_string().contains("postgres://"), "{refused}");
}

/// The outcome of a durable function, once it has one (at most 30 s).
async fn outcome_within_30s(
    functions: &flowstate::durable::Functions,
    flow: flowstate::FlowId,
) -> Result<String, flowstate::durable::FunctionError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(outcome) = functions.outcome::<String>(flow).await.expect("read") {
            return outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not done in 30 s: {:?}",
            functions.state(flow).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn shipping_quote(
    ctx: flowstate::durable::Ctx,
    weight: u32,
) -> Result<u32, flowstate::core::Failure> {
    ctx.step("quote", move |_| async move { Ok(weight * 3) })
        .await
}

async fn declines(
    _ctx: flowstate::durable::Ctx,
    _input: (),
) -> Result<u32, flowstate::core::Failure> {
    Err(flowstate::core::Failure::new("Declined", "no stock"))
}

/// A durable function with three children: a function it calls, a task graph it starts and
/// joins, and a function that fails.
async fn checkout(
    ctx: flowstate::durable::Ctx,
    weight: u32,
) -> Result<String, flowstate::core::Failure> {
    let quote: u32 = ctx.call("shipping_quote", weight).await?;
    let greeting = ctx.start_task_graph("greet", json!({})).await?;
    let failing = ctx.start_function("declines", ()).await?;
    let results: serde_json::Value = ctx.join(greeting).await?;
    let declined = ctx.join::<u32>(failing).await.err().map(|f| f.kind);
    Ok(format!(
        "{quote} {} {}",
        results["word"],
        declined.unwrap_or_default()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_function_starts_and_joins_child_functions_and_task_graphs() {
    use flowstate::core::machine::ActivationState;
    let dir = tempfile::tempdir().expect("dir");
    let engine = flowstate::Engine::builder(dir.path().join("flows.db").display().to_string())
        .task_graph(greeting())
        .build()
        .await
        .expect("build");
    let functions = engine.functions();
    // Kept for this test, which reads the parent's journal after it is done.
    functions.keep_journals(true);
    functions.register("checkout", checkout).expect("register");
    functions
        .register("shipping_quote", shipping_quote)
        .expect("register");
    functions.register("declines", declines).expect("register");
    let parent = functions.submit("checkout", 4).await.expect("start");
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });
    let outcome = outcome_within_30s(functions, parent).await;
    assert_eq!(outcome, Ok("12 \"hello\" Declined".to_owned()));
    assert_eq!(
        functions.state(parent).await.expect("state").0,
        ActivationState::Done
    );
    // Each child knows its parent, and the parent's journal names each child once.
    let record = flowstate::kernel::FlowWriter::load(engine.store().as_ref(), parent)
        .await
        .expect("load")
        .record()
        .cloned()
        .expect("record");
    let function = record.function.expect("function");
    assert_eq!(function.children_ended.len(), 3);
    for child in function.children_ended.keys() {
        let child = flowstate::kernel::FlowWriter::load(engine.store().as_ref(), *child)
            .await
            .expect("load child")
            .record()
            .cloned()
            .expect("child");
        assert_eq!(child.parent, Some(parent));
    }
    engine.shutdown_handle().shutdown();
    worker.await.expect("joined").expect("worker");
    engine.store().close().await.expect("close");
}

/// Plans submitted to an engine are run by its worker; a retry waits on a store timer (the
/// run ends, the timer wakes the flow, the next run starts the attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_runs_plans_with_retries_through_store_timers() {
    use flowstate::core::machine::PlanState;
    use flowstate::plan::{PlanRequest, Step, StepError};
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("flows.db").display());
    let engine = flowstate::Engine::builder(url)
        .step(
            Step::new("quote")
                .input("parcel")
                .output("price")
                .retry(3, Duration::from_millis(50), Duration::from_millis(50))
                .body(|ctx| async move {
                    if ctx.attempt < 2 {
                        return Err(StepError::retryable("Unavailable", "carrier API down"));
                    }
                    let weight: f64 = ctx.input("parcel")?;
                    Ok(json!({ "price": weight * 2.0 }))
                }),
        )
        .step(
            Step::new("label")
                .input("price")
                .output("label")
                .body(|ctx| async move {
                    let price: f64 = ctx.input("price")?;
                    Ok(json!({ "label": format!("paid {price}") }))
                }),
        )
        .build()
        .await
        .expect("build");
    let mut flows = Vec::new();
    for weight in 1..=20 {
        let request = PlanRequest::new(["label"]).input("parcel", json!(f64::from(weight)));
        flows.push(engine.plans().submit(request).await.expect("start"));
    }
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (weight, flow) in (1..=20).zip(&flows) {
        loop {
            let summary = engine
                .store()
                .flow(*flow)
                .await
                .expect("flow")
                .expect("exists");
            if summary.status == FlowStatus::Plan(PlanState::Deactivated) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{flow} not done: {summary:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = engine
            .plans()
            .state(*flow, flowstate::core::fold::StopAt::End)
            .await
            .expect("state");
        let plan = state.plan.expect("plan");
        assert_eq!(
            plan.attributes["label"].value,
            json!(format!("paid {}", f64::from(weight) * 2.0))
        );
        assert_eq!(plan.attributes["price"].attempt, 2);
    }
    engine.shutdown_handle().shutdown();
    worker.await.expect("joined").expect("worker");
    engine.store().close().await.expect("close");
}

/// A durable function that starts goal-driven plans as children: one that completes (its
/// goals' attributes come back when it is deactivated), one that fails (a `PlanFailed`
/// failure), and one whose goal cannot be planned (the `plan` step's error).
async fn fulfil(
    ctx: flowstate::durable::Ctx,
    order: u32,
) -> Result<String, flowstate::core::Failure> {
    let shipped = ctx
        .start_plan(&["label"], json!({ "order": order }))
        .await?;
    let refused = ctx
        .start_plan(&["refund"], json!({ "order": order }))
        .await?;
    let unknown = ctx
        .start_plan(&["teleport"], json!({}))
        .await
        .err()
        .map(|f| f.kind);
    let attributes: serde_json::Value = ctx.join(shipped).await?;
    let failed = ctx.join::<serde_json::Value>(refused).await.err();
    Ok(format!(
        "{} {} {}",
        attributes["label"],
        failed.map(|f| f.kind).unwrap_or_default(),
        unknown.unwrap_or_default()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_function_starts_and_joins_child_plans() {
    use flowstate::core::machine::{ActivationState, PlanState};
    use flowstate::plan::{Step, StepError};
    let dir = tempfile::tempdir().expect("dir");
    let engine = flowstate::Engine::builder(dir.path().join("flows.db").display().to_string())
        .step(
            Step::new("pack")
                .input("order")
                .output("parcel")
                .body(|ctx| async move {
                    let order: u32 = ctx.input("order")?;
                    Ok(json!({ "parcel": format!("parcel-{order}") }))
                }),
        )
        .step(
            Step::new("label")
                .input("parcel")
                .output("label")
                .body(|ctx| async move {
                    let parcel: String = ctx.input("parcel")?;
                    Ok(json!({ "label": format!("label for {parcel}") }))
                }),
        )
        .step(
            Step::new("refund")
                .input("order")
                .output("refund")
                .body(|_| async { Err(StepError::permanent("NotPaid", "nothing to refund")) }),
        )
        .function("fulfil", fulfil)
        .build()
        .await
        .expect("build");
    let functions = engine.functions();
    functions.keep_journals(true);
    let parent = functions.submit("fulfil", 9).await.expect("start");
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });
    let outcome = outcome_within_30s(functions, parent).await;
    assert_eq!(
        outcome,
        Ok("\"label for parcel-9\" PlanFailed PlanningFailed".to_owned())
    );
    assert_eq!(
        functions.state(parent).await.expect("state").0,
        ActivationState::Done
    );
    let record = flowstate::kernel::FlowWriter::load(engine.store().as_ref(), parent)
        .await
        .expect("load")
        .record()
        .cloned()
        .expect("record");
    for child in record.function.expect("function").children_ended.keys() {
        let summary = engine
            .store()
            .flow(*child)
            .await
            .expect("flow")
            .expect("child");
        assert_eq!(summary.status, FlowStatus::Plan(PlanState::Deactivated));
    }
    engine.shutdown_handle().shutdown();
    worker.await.expect("joined").expect("worker");
    engine.store().close().await.expect("close");
}

/// An engine with an archive moves its deactivated plans there while it runs: gone from the
/// live store, readable and replayable from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_with_an_archive_moves_deactivated_plans_there() {
    use flowstate::archive::{ArchiveAccess, ArchivePolicy, ArchiveStore};
    use flowstate::core::machine::PlanState;
    use flowstate::plan::{PlanRequest, Step};
    let dir = tempfile::tempdir().expect("dir");
    let archive_dir = dir.path().join("archive");
    let policy = ArchivePolicy {
        max_age: Duration::ZERO,
        ..ArchivePolicy::default()
    };
    let engine = flowstate::Engine::builder(dir.path().join("flows.db").display().to_string())
        .step(
            Step::new("greet")
                .input("name")
                .output("greeting")
                .body(|ctx| async move {
                    let name: String = ctx.input("name")?;
                    Ok(json!({ "greeting": format!("hello {name}") }))
                }),
        )
        .archive(
            archive_dir.display().to_string(),
            policy,
            Duration::from_millis(50),
        )
        .build()
        .await
        .expect("build");
    let flow = engine
        .plans()
        .submit(PlanRequest::new(["greeting"]).input("name", json!("ada")))
        .await
        .expect("start");
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while engine.store().flow(flow).await.expect("flow").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not archived in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let archive = ArchiveStore::open(&archive_dir.display().to_string(), ArchiveAccess::MustExist)
        .expect("archive");
    let record = archive
        .replay(flow, flowstate::core::fold::StopAt::End)
        .await
        .expect("replay");
    assert_eq!(record.status, FlowStatus::Plan(PlanState::Archived));
    let attributes = record.plan.expect("plan").attributes;
    assert_eq!(attributes["greeting"].value, json!("hello ada"));
    engine.shutdown_handle().shutdown();
    worker.await.expect("joined").expect("worker");
    engine.store().close().await.expect("close");
}
