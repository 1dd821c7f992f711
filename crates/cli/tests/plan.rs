//! `flowstate flows show` on a goal-driven plan: the goals, the steps and the attributes with
//! their provenance, now and as of any event (time travel).

use std::process::Command;
use std::sync::Arc;

use flowstate::core::ManualClock;
use flowstate::plan::{PlanRequest, Plans, Step, StepError};
use flowstate::sqlite::{SqliteOptions, SqliteStore};
use flowstate::{Store, Timestamp};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z.
const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

fn flowstate(store: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run flowstate");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn show_prints_steps_and_attributes_with_provenance_at_any_point() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flows.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let flow = runtime.block_on(async {
        let clock = Arc::new(ManualClock::new(START));
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&path, clock.clone(), SqliteOptions::default()).expect("open"),
        );
        let plans = Plans::new(store.clone(), clock);
        plans
            .register(
                Step::new("lookup_customer")
                    .input("customer_id")
                    .output("customer_name")
                    .body(|_| async { Ok(json!({"customer_name": "Alice"})) }),
            )
            .expect("register");
        plans
            .register(
                Step::new("process_payment")
                    .input("customer_name")
                    .output("confirmation_id")
                    .body(|_| async { Err(StepError::permanent("Declined", "card declined")) }),
            )
            .expect("register");
        let flow = plans
            .submit(PlanRequest::new(["confirmation_id"]).input("customer_id", json!(7)))
            .await
            .expect("start");
        plans.run(flow).await.expect("run");
        store.close().await.expect("close");
        flow
    });
    let id = flow.to_string();
    let now = flowstate(&path, &["flows", "show", &id]);
    assert!(now.contains("deactivated"), "{now}");
    assert!(now.contains("goals"), "{now}");
    assert!(now.contains("GoalFailed"), "{now}");
    assert!(now.contains("Declined: card declined"), "{now}");
    let provenance = now
        .lines()
        .find(|line| line.starts_with("customer_name"))
        .expect("attribute row");
    assert!(
        provenance.contains("\"Alice\"") && provenance.contains("lookup_customer"),
        "{now}"
    );
    // Before the first step ran, only the input was an attribute.
    let before = flowstate(&path, &["flows", "show", &id, "--at", "2"]);
    assert!(before.contains("active"), "{before}");
    assert!(!before.contains("\"Alice\""), "{before}");
    assert!(before
        .lines()
        .any(|l| l.starts_with("customer_id") && l.contains("input")));
    let json_now: Value =
        serde_json::from_str(&flowstate(&path, &["flows", "show", &id, "--json"])).expect("json");
    assert_eq!(
        json_now["plan"]["attributes"]["customer_name"]["step"],
        "lookup_customer"
    );
    assert_eq!(
        json_now["plan"]["steps"]["process_payment"]["state"],
        "failed"
    );
}
