//! How a finished flow ended, the same words for every kind: a flow's outcome (succeeded,
//! failed with the error's kind and message, cancelled with the reason) read from its state
//! through the kernel's control surface, for task graphs, plans and durable functions.

use std::time::Duration;

use flowstate::core::fold::StopAt;
use flowstate::core::{Failure, Outcome};
use flowstate::kernel::FlowControl;
use flowstate::plan::{PlanRequest, Step, StepError};
use flowstate::taskgraph::{task_fn, Flow, Inputs};
use flowstate::{Engine, FlowId};
use serde_json::json;

fn graphs() -> [Flow; 2] {
    [
        Flow::linear("fine").add(task_fn("one", |_ctx, _inputs| async { Ok(json!(1)) })),
        Flow::linear("broken")
            .add(task_fn("one", |_ctx, _inputs| async { Ok(json!(1)) }))
            .add(task_fn("two", |_ctx, _inputs| async {
                Err(Failure::new("Woot", "the second task broke"))
            })),
    ]
}

async fn engine(dir: &tempfile::TempDir) -> Engine {
    let [fine, broken] = graphs();
    Engine::builder(format!("sqlite://{}", dir.path().join("f.db").display()))
        .task_graph(fine)
        .task_graph(broken)
        .step(
            Step::new("charge")
                .input("order")
                .output("receipt")
                .body(|_| async { Err(StepError::permanent("CardDeclined", "no funds")) }),
        )
        .function("approve", approve)
        .build()
        .await
        .expect("build")
}

/// Approves an amount after a step that records who approved it (an effect: a cancellation
/// stops a function at its next one).
async fn approve(ctx: flowstate::durable::Ctx, amount: u32) -> Result<u32, Failure> {
    let _clerk: String = ctx
        .step("clerk", |_key| async { Ok("ada".to_owned()) })
        .await?;
    if amount > 100 {
        return Err(Failure::new(
            "TooMuch",
            format!("{amount} is over the limit"),
        ));
    }
    Ok(amount)
}

async fn outcome(engine: &Engine, flow: FlowId) -> Option<Outcome> {
    let state = engine.control().state(flow, StopAt::End).await;
    state.expect("state").outcome()
}

/// The outcome of a flow the worker runs, once it has one (at most 30 s).
async fn settled(engine: &Engine, flow: FlowId) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(outcome) = outcome(engine, flow).await {
            return outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{flow} not finished in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_graphs_succeed_fail_by_their_first_failure_or_are_cancelled() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = engine(&dir).await;
    let graphs = engine.task_graphs();

    let fine = graphs.execute("fine", Inputs::new()).await.expect("run");
    assert_eq!(outcome(&engine, fine.flow).await, Some(Outcome::Succeeded));

    let broken = graphs.execute("broken", Inputs::new()).await.expect("run");
    let Some(Outcome::Failed { failure }) = outcome(&engine, broken.flow).await else {
        panic!("a reverted flow that nobody cancelled failed");
    };
    assert_eq!(failure.kind, "Woot");
    assert_eq!(failure.message, "the second task broke");

    let pending = graphs.create("fine", Inputs::new()).await.expect("create");
    assert_eq!(outcome(&engine, pending).await, None, "not finished");
    let cancel = engine.control().cancel(pending, "not needed").await;
    assert_eq!(
        cancel.expect("cancel"),
        flowstate::core::Transition::Allowed
    );
    graphs.run(pending).await.expect("run");
    assert_eq!(
        outcome(&engine, pending).await,
        Some(Outcome::Cancelled {
            reason: "not needed".to_owned()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_failed_stays_failed_once_deactivated_and_a_cancelled_one_is_cancelled() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = engine(&dir).await;
    let plans = engine.plans();

    let request = PlanRequest::new(["receipt"]).input("order", json!(7));
    let failed = plans.execute(request.clone()).await.expect("run");
    assert_eq!(failed.status.key(), "deactivated");
    let Some(Outcome::Failed { failure }) = failed.outcome() else {
        panic!(
            "a failed plan is failed after deactivation: {:?}",
            failed.outcome()
        );
    };
    assert_eq!(failure.kind, "GoalFailed");
    assert!(failure.message.contains("no funds"), "{failure:?}");

    let created = plans.create(request).await.expect("create");
    assert_eq!(outcome(&engine, created).await, None, "active");
    let cancel = engine.control().cancel(created, "customer called").await;
    assert_eq!(
        cancel.expect("cancel"),
        flowstate::core::Transition::Allowed
    );
    plans.run_to_end(created).await.expect("run");
    assert_eq!(
        outcome(&engine, created).await,
        Some(Outcome::Cancelled {
            reason: "cancelled: customer called".to_owned()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_succeed_fail_with_their_error_or_are_cancelled() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = engine(&dir).await;
    let functions = engine.functions();
    let fine = functions.submit("approve", 5).await.expect("submit");
    let refused = functions.submit("approve", 500).await.expect("submit");
    // Cancelled before any worker runs it: its run ends it with the reason.
    let cancelled = functions.submit("approve", 5).await.expect("submit");
    let cancel = engine.control().cancel(cancelled, "duplicate order").await;
    assert_eq!(
        cancel.expect("cancel"),
        flowstate::core::Transition::Allowed
    );
    let running = engine.clone();
    let worker = tokio::spawn(async move { running.run().await });

    assert_eq!(settled(&engine, fine).await, Outcome::Succeeded);
    let Outcome::Failed { failure } = settled(&engine, refused).await else {
        panic!("the function returned an error");
    };
    assert_eq!(failure.kind, "TooMuch");
    assert_eq!(
        settled(&engine, cancelled).await,
        Outcome::Cancelled {
            reason: "duplicate order".to_owned()
        }
    );
    engine.shutdown_handle().shutdown();
    worker.await.expect("joined").expect("worker");
}
