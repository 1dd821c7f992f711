//! Quickstart: record a few flows in a store, then list them.
//!
//! Run with `cargo run -p flowstate --example quickstart`. It opens the store named by
//! `$FLOWSTATE_STORE` (default `flowstate.db` in the working directory), creating it if
//! missing, and records one flow of each shape through [`FlowWriter`], the one path from
//! "this happened" to the log. The writer checks every event against the state tables before
//! anything reaches the store, so each step below is a transition the spec allows.
//!
//! The plan is run by the plan engine; the other flows are recorded event by event.

use std::error::Error;
use std::sync::Arc;

use flowstate::core::machine::{ActivationState, FlowState, TaskState};
use flowstate::core::{EventBody, Intention};
use flowstate::kernel::FlowWriter;
use flowstate::store::FlowQuery;
use flowstate::{Access, Clock, FlowKind, Store, SystemClock};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[tokio::main]
async fn main() -> Result<()> {
    let url =
        std::env::var(flowstate::STORE_ENV).unwrap_or_else(|_| flowstate::DEFAULT_STORE.to_owned());
    let clock = Arc::new(SystemClock);
    let store = flowstate::open_store(&url, clock.clone(), Access::CreateIfMissing).await?;
    // Only this run's flows are listed at the end, so running the example twice shows the
    // second run's flows rather than the first page of everything ever recorded.
    let started = clock.now();

    let recorded = record_flows(&store, clock.as_ref()).await;
    let listed = match recorded {
        Ok(()) => list_flows(store.as_ref(), started).await,
        Err(error) => Err(error),
    };
    // Close even after a failure: it waits for the writer thread and closes the file cleanly.
    store.close().await?;
    listed?;
    println!();
    println!("store: {url}");
    println!("inspect them with: cargo run -p flowstate-cli -- flows ls");
    Ok(())
}

async fn record_flows(shared: &Arc<dyn Store>, clock: &dyn Clock) -> Result<()> {
    let store = shared.as_ref();
    order_succeeds(store, clock).await?;
    shipment_fails_and_reverts(store, clock).await?;
    plan_completes(shared).await?;
    function_sleeps(store, clock).await?;
    Ok(())
}

/// A task graph whose two atoms succeed, and then the flow.
async fn order_succeeds(store: &dyn Store, clock: &dyn Clock) -> Result<()> {
    let mut flow = FlowWriter::new(flowstate::new_flow_id(clock));
    let created = created(
        FlowKind::TaskGraph,
        "order",
        json!({"order": 1042, "items": 3}),
    );
    flow.append(store, clock, vec![created, flow_to(FlowState::Running)])
        .await?;
    for atom in ["reserve_stock", "charge_card"] {
        flow.append(
            store,
            clock,
            vec![task(atom, TaskState::Running, Intention::Execute)],
        )
        .await?;
        flow.append(
            store,
            clock,
            vec![task(atom, TaskState::Success, Intention::Execute)],
        )
        .await?;
    }
    flow.append(store, clock, vec![flow_to(FlowState::Success)])
        .await?;
    Ok(())
}

/// A task graph whose second atom fails: both atoms are reverted, newest first, and the flow
/// ends REVERTED.
async fn shipment_fails_and_reverts(store: &dyn Store, clock: &dyn Clock) -> Result<()> {
    let mut flow = FlowWriter::new(flowstate::new_flow_id(clock));
    let created = created(FlowKind::TaskGraph, "shipment", json!({"order": 1042}));
    flow.append(store, clock, vec![created, flow_to(FlowState::Running)])
        .await?;
    let book = "book_courier";
    let label = "print_label";
    flow.append(
        store,
        clock,
        vec![task(book, TaskState::Running, Intention::Execute)],
    )
    .await?;
    flow.append(
        store,
        clock,
        vec![task(book, TaskState::Success, Intention::Execute)],
    )
    .await?;
    flow.append(
        store,
        clock,
        vec![task(label, TaskState::Running, Intention::Execute)],
    )
    .await?;
    // The failure and the decision to revert are one append: a crash in between must not
    // leave a failed atom with no recorded plan for it.
    flow.append(
        store,
        clock,
        vec![
            task(label, TaskState::Failure, Intention::Revert),
            task(label, TaskState::Reverting, Intention::Revert),
        ],
    )
    .await?;
    flow.append(
        store,
        clock,
        vec![task(label, TaskState::Reverted, Intention::Revert)],
    )
    .await?;
    flow.append(
        store,
        clock,
        vec![task(book, TaskState::Reverting, Intention::Revert)],
    )
    .await?;
    flow.append(
        store,
        clock,
        vec![task(book, TaskState::Reverted, Intention::Revert)],
    )
    .await?;
    flow.append(store, clock, vec![flow_to(FlowState::Reverted)])
        .await?;
    Ok(())
}

/// A goal-driven plan, really run: two steps chained by the attributes they need and
/// produce, planned backwards from the goal; every attribute records where it came from.
async fn plan_completes(store: &Arc<dyn Store>) -> Result<()> {
    use flowstate::plan::{PlanRequest, Plans, Step};
    let plans = Plans::new(store.clone(), Arc::new(SystemClock));
    plans.register(
        Step::new("create_account")
            .input("email")
            .output("account")
            .body(|ctx| async move {
                let email: String = ctx.input("email")?;
                Ok(json!({ "account": format!("acct-{}", email.len()) }))
            }),
    )?;
    plans.register(
        Step::new("send_welcome_mail")
            .input("email")
            .input("account")
            .output("welcome_mail")
            .body(|_| async { Ok(json!({ "welcome_mail": "sent" })) }),
    )?;
    let flow = plans
        .create(
            PlanRequest::new(["welcome_mail"])
                .named("onboarding")
                .input("email", json!("ada@example.com")),
        )
        .await?;
    plans.run(flow).await?;
    Ok(())
}

/// A durable function that runs and then sleeps, waiting on something (a timer, a signal).
async fn function_sleeps(store: &dyn Store, clock: &dyn Clock) -> Result<()> {
    let mut flow = FlowWriter::new(flowstate::new_flow_id(clock));
    let created = created(
        FlowKind::Function,
        "send_reminder",
        json!({"user": "ada", "in": "P1D"}),
    );
    // A function flow is born active_current; sleeping is its first recorded transition.
    flow.append(store, clock, vec![created]).await?;
    let sleep = EventBody::ActivationStateChanged {
        to: ActivationState::Sleeping,
        diagnostic: None,
    };
    flow.append(store, clock, vec![sleep]).await?;
    Ok(())
}

/// Prints the flows created since `since` as a small table.
async fn list_flows(store: &dyn Store, since: flowstate::Timestamp) -> Result<()> {
    let query = FlowQuery {
        created_from: Some(since),
        ..FlowQuery::default()
    };
    let page = store.list(&query).await?;
    println!(
        "{:<36}  {:<10}  {:<13}  {:<11}  {:>6}",
        "ID", "KIND", "DEFINITION", "STATE", "EVENTS"
    );
    for flow in &page.flows {
        println!(
            "{:<36}  {:<10}  {:<13}  {:<11}  {:>6}",
            flow.id.to_string(),
            flow.kind.key(),
            flow.definition,
            flow.status.key(),
            flow.events()
        );
    }
    Ok(())
}

fn created(kind: FlowKind, definition: &str, input: serde_json::Value) -> EventBody {
    EventBody::FlowCreated {
        kind,
        definition: definition.to_owned(),
        input,
    }
}

fn flow_to(to: FlowState) -> EventBody {
    EventBody::FlowStateChanged { to }
}

fn task(atom: &str, to: TaskState, intention: Intention) -> EventBody {
    EventBody::TaskStateChanged {
        atom: atom.to_owned(),
        to,
        intention,
        result: None,
        failure: None,
    }
}
