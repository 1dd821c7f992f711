//! End-to-end tests of the `flowstate` binary: each test writes a store with the library, runs
//! the real executable against it and checks what a user or a script would see.
//!
//! The store's clock is a [`ManualClock`] moved one second per append, so every time, every
//! `--at` point and every id is fixed: nothing here depends on timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use flowstate::core::machine::{FlowState, PlanState, TaskState};
use flowstate::core::{EventBody, Intention, ManualClock};
use flowstate::kernel::FlowWriter;
use flowstate::sqlite::{SqliteOptions, SqliteStore};
use flowstate::{Clock, FlowId, FlowKind, Store, Timestamp};
use serde_json::Value;

/// 2026-01-01T00:00:00Z.
const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

/// A store with two flows in a temporary directory.
struct Fixture {
    /// Keeps the directory alive for the test.
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// A task graph: created and running (events 1-2), one atom runs and succeeds (3-4), the
    /// flow succeeds (5). Event `n >= 2` is recorded at `START + (n - 2)` seconds.
    order: FlowId,
    /// A plan: active (1), completed (2), deactivated (3).
    plan: FlowId,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("flows.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (order, plan) = runtime.block_on(write_flows(&path));
    Fixture {
        _dir: dir,
        path,
        order,
        plan,
    }
}

async fn write_flows(path: &Path) -> (FlowId, FlowId) {
    let clock = Arc::new(ManualClock::new(START));
    let store =
        SqliteStore::open(path, clock.clone(), SqliteOptions::default()).expect("open store");
    let tick = || clock.advance(Duration::from_secs(1));

    let order = FlowId::from_parts(clock.now(), [1; 10]);
    let mut writer = FlowWriter::new(order);
    let task = |to| EventBody::TaskStateChanged {
        atom: "charge".to_owned(),
        to,
        intention: Intention::Execute,
        result: None,
        failure: None,
    };
    let steps = vec![
        vec![
            EventBody::FlowCreated {
                kind: FlowKind::TaskGraph,
                definition: "order".to_owned(),
                input: serde_json::json!({"order": 7}),
            },
            EventBody::FlowStateChanged {
                to: FlowState::Running,
            },
        ],
        vec![task(TaskState::Running)],
        vec![task(TaskState::Success)],
        vec![EventBody::FlowStateChanged {
            to: FlowState::Success,
        }],
    ];
    for bodies in steps {
        writer
            .append(&store, clock.as_ref(), bodies)
            .await
            .expect("append order");
        tick();
    }

    let plan = FlowId::from_parts(clock.now(), [2; 10]);
    let mut writer = FlowWriter::new(plan);
    let steps = vec![
        EventBody::FlowCreated {
            kind: FlowKind::Plan,
            definition: "onboarding".to_owned(),
            input: Value::Null,
        },
        EventBody::PlanStateChanged {
            to: PlanState::Completed,
            reason: None,
        },
        EventBody::PlanStateChanged {
            to: PlanState::Deactivated,
            reason: None,
        },
    ];
    for body in steps {
        writer
            .append(&store, clock.as_ref(), vec![body])
            .await
            .expect("append plan");
        tick();
    }

    store.close().await.expect("close");
    (order, plan)
}

/// Runs the binary against `store` with `args`, ignoring any store named by the environment.
fn flowstate(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("FLOWSTATE_STORE")
        .output()
        .expect("run flowstate")
}

/// Asserts success and returns stdout.
fn succeeds(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

/// Asserts the error contract (status 1, one `error:` line, no panic) and returns the line.
fn fails(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).expect("utf-8 stderr");
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "an error must print no result");
    lines[0].to_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&succeeds(output)).expect("stdout is JSON")
}

/// The value of a `name value` line of `flows show`.
fn field(stdout: &str, name: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let value = line.strip_prefix(name)?;
        value.starts_with(' ').then(|| value.trim().to_owned())
    })
}

#[test]
fn ls_lists_filters_and_pages() {
    let f = fixture();
    let table = succeeds(&flowstate(&f.path, &["flows", "ls"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&f.order.to_string()), "{table}");
    assert!(table.contains(&f.plan.to_string()), "{table}");

    let all = json(&flowstate(&f.path, &["--json", "flows", "ls"]));
    assert_eq!(all["flows"].as_array().map(Vec::len), Some(2));
    assert_eq!(all["flows"][0]["id"], f.order.to_string());
    assert_eq!(all["flows"][0]["next_seq"], 6);
    assert_eq!(all["next_after"], Value::Null);

    let plans = json(&flowstate(
        &f.path,
        &["flows", "ls", "--kind", "plan", "--json"],
    ));
    let plans = plans["flows"].as_array().expect("flows array");
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0]["id"], f.plan.to_string());
    assert_eq!(plans[0]["status"]["state"], "deactivated");

    let table = succeeds(&flowstate(&f.path, &["flows", "ls", "--kind", "plan"]));
    assert!(!table.contains(&f.order.to_string()), "{table}");

    // State keys and spec labels both filter; the kind may be left out.
    let done = json(&flowstate(
        &f.path,
        &["--json", "flows", "ls", "--state", "SUCCESS"],
    ));
    assert_eq!(done["flows"][0]["id"], f.order.to_string());
    assert_eq!(done["flows"].as_array().map(Vec::len), Some(1));

    let first = flowstate(&f.path, &["flows", "ls", "--limit", "1"]);
    let page = succeeds(&first);
    assert!(!page.contains(&f.plan.to_string()), "{page}");
    let hint = String::from_utf8_lossy(&first.stderr);
    assert_eq!(hint.trim(), format!("more: --after {}", f.order));
    let after = f.order.to_string();
    let next = json(&flowstate(
        &f.path,
        &["--json", "flows", "ls", "--after", &after],
    ));
    assert_eq!(next["flows"][0]["id"], f.plan.to_string());

    let created = "2026-01-01T00:00:04Z";
    let late = json(&flowstate(
        &f.path,
        &["--json", "flows", "ls", "--created-from", created],
    ));
    assert_eq!(late["flows"].as_array().map(Vec::len), Some(1));
    assert_eq!(late["flows"][0]["id"], f.plan.to_string());
}

#[test]
fn ls_refuses_unknown_kinds_and_states() {
    let f = fixture();
    let line = fails(&flowstate(&f.path, &["flows", "ls", "--kind", "dag"]));
    assert!(line.contains("task_graph, plan, function"), "{line}");
    let line = fails(&flowstate(
        &f.path,
        &["flows", "ls", "--kind", "plan", "--state", "running"],
    ));
    assert!(line.contains("deactivated"), "{line}");
    fails(&flowstate(
        &f.path,
        &["flows", "ls", "--created-before", "tuesday"],
    ));
    fails(&flowstate(
        &f.path,
        &["flows", "ls", "--after", "not-an-id"],
    ));
}

#[test]
fn show_prints_the_state_now_and_at_any_point() {
    let f = fixture();
    let id = f.order.to_string();
    let now = succeeds(&flowstate(&f.path, &["flows", "show", &id]));
    assert_eq!(field(&now, "id").as_deref(), Some(id.as_str()));
    assert_eq!(field(&now, "kind").as_deref(), Some("task_graph"));
    assert_eq!(field(&now, "definition").as_deref(), Some("order"));
    assert_eq!(field(&now, "state").as_deref(), Some("success"));
    assert_eq!(field(&now, "last seq").as_deref(), Some("5"));
    assert_eq!(field(&now, "input").as_deref(), Some(r#"{"order":7}"#));
    assert!(
        now.lines().any(|line| line
            .split_whitespace()
            .eq(["charge", "success", "execute", "4"])),
        "{now}"
    );

    let early = succeeds(&flowstate(&f.path, &["flows", "show", &id, "--at", "2"]));
    assert_eq!(field(&early, "state").as_deref(), Some("running"));
    assert_eq!(field(&early, "last seq").as_deref(), Some("2 (of 5)"));
    assert!(!early.contains("charge"), "no atom has run yet: {early}");

    // Event 3 is recorded at START + 1 s; a time is inclusive.
    let at = "2026-01-01T00:00:01Z";
    let record = json(&flowstate(
        &f.path,
        &["--json", "flows", "show", &id, "--at", at],
    ));
    assert_eq!(record["last_seq"], 3);
    assert_eq!(record["status"]["state"], "running");
    assert_eq!(record["atoms"]["charge"]["state"]["state"], "running");

    let record = json(&flowstate(&f.path, &["flows", "show", &id, "--json"]));
    assert_eq!(record["id"], id);
    assert_eq!(record["status"]["kind"], "task_graph");
    assert_eq!(record["status"]["state"], "success");
    assert_eq!(record["input"]["order"], 7);

    let plan = json(&flowstate(
        &f.path,
        &["--json", "flows", "show", &f.plan.to_string()],
    ));
    assert_eq!(plan["status"]["state"], "deactivated");
}

#[test]
fn show_refuses_points_outside_the_log() {
    let f = fixture();
    let id = f.order.to_string();
    let line = fails(&flowstate(&f.path, &["flows", "show", &id, "--at", "6"]));
    assert!(line.contains("past its last event"), "{line}");
    fails(&flowstate(&f.path, &["flows", "show", &id, "--at", "0"]));
    let line = fails(&flowstate(&f.path, &["flows", "show", &id, "--at", "soon"]));
    assert!(line.contains("RFC 3339"), "{line}");
    let before = "2025-12-31T23:59:59Z";
    let line = fails(&flowstate(&f.path, &["flows", "show", &id, "--at", before]));
    assert!(line.contains("did not exist yet"), "{line}");
}

#[test]
fn events_prints_the_log_up_to_a_point() {
    let f = fixture();
    let id = f.order.to_string();
    let events = json(&flowstate(&f.path, &["--json", "flows", "events", &id]));
    let events = events.as_array().expect("an array of events");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(events[0]["body"]["type"], "flow_created");
    assert!(events.iter().all(|e| e["flow"] == id.as_str()));

    let some = json(&flowstate(
        &f.path,
        &["--json", "flows", "events", &id, "--at", "2"],
    ));
    assert_eq!(some.as_array().map(Vec::len), Some(2));

    let table = succeeds(&flowstate(&f.path, &["flows", "events", &id]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 6, "{table}");
    assert!(rows[0]
        .split_whitespace()
        .eq(["SEQ", "TIME", "TYPE", "DETAIL"]));
    let last: Vec<&str> = rows[5].split_whitespace().collect();
    assert_eq!(
        last,
        [
            "5",
            "2026-01-01T00:00:03.000000Z",
            "flow_state_changed",
            r#"{"to":"success"}"#
        ]
    );

    let before = "2025-12-31T23:59:59Z";
    let line = fails(&flowstate(
        &f.path,
        &["flows", "events", &id, "--at", before],
    ));
    assert!(line.contains("did not exist yet"), "{line}");
}

#[test]
fn bad_and_unknown_ids_are_one_line_errors() {
    let f = fixture();
    let line = fails(&flowstate(&f.path, &["flows", "show", "not-a-flow"]));
    assert!(line.contains("not a flow id"), "{line}");
    // A UUID, but version 4: flow ids are version 7.
    let v4 = "9b2f6c1e-4f7a-4c1b-9a4e-2f0d7c3b1a55";
    fails(&flowstate(&f.path, &["flows", "events", v4]));

    let unknown = FlowId::from_parts(START, [9; 10]).to_string();
    for command in ["show", "events"] {
        let line = fails(&flowstate(&f.path, &["flows", command, &unknown]));
        assert_eq!(line, format!("error: flow {unknown} is not in the store"));
    }
}

#[test]
fn a_missing_store_is_an_error_and_is_not_created() {
    let line = fails(&flowstate(Path::new("/nonexistent/x.db"), &["flows", "ls"]));
    assert!(line.contains("/nonexistent/x.db"), "{line}");
    assert!(!Path::new("/nonexistent/x.db").exists());

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("typo.db");
    fails(&flowstate(&path, &["flows", "ls"]));
    let url = format!("sqlite://{}", path.display());
    fails(&flowstate(Path::new(&url), &["flows", "ls"]));
    assert!(!path.exists(), "inspecting must never create a store");
}

#[test]
fn files_that_are_not_stores_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        b"this is not an SQLite database, not even close\n".repeat(100),
    )
    .expect("write garbage");
    let line = fails(&flowstate(&garbage, &["flows", "ls"]));
    assert!(line.contains("not a flowstate store"), "{line}");

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("write empty file");
    fails(&flowstate(&empty, &["flows", "ls"]));
    let order = FlowId::from_parts(START, [1; 10]).to_string();
    fails(&flowstate(&empty, &["flows", "show", &order]));
    // Refusing it must not have turned it into a store.
    assert_eq!(std::fs::metadata(&empty).map(|m| m.len()).ok(), Some(0));

    fails(&flowstate(
        Path::new("redis://localhost/0"),
        &["flows", "ls"],
    ));
}

#[test]
fn the_store_can_come_from_the_environment() {
    let f = fixture();
    let output = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["--json", "flows", "ls"])
        .env("FLOWSTATE_STORE", &f.path)
        .output()
        .expect("run flowstate");
    assert_eq!(json(&output)["flows"].as_array().map(Vec::len), Some(2));
}

/// A durable function asleep, waiting for signal "approve", with one journaled step.
async fn write_sleeping_function(path: &Path) -> FlowId {
    use flowstate::core::machine::ActivationState;
    use flowstate::core::JournalEntry;
    let clock = Arc::new(ManualClock::new(START));
    let store = SqliteStore::open(path, clock.clone(), SqliteOptions::default()).expect("open");
    let flow = FlowId::from_parts(clock.now(), [3; 10]);
    let mut writer = FlowWriter::new(flow);
    writer
        .append(
            &store,
            clock.as_ref(),
            vec![
                EventBody::FlowCreated {
                    kind: FlowKind::Function,
                    definition: "approval".into(),
                    input: serde_json::json!({}),
                },
                EventBody::RunStarted {
                    run: 1,
                    incarnation: "test".into(),
                },
                EventBody::JournalEntryRecorded {
                    position: 0,
                    entry: JournalEntry::Step {
                        name: "reserve".into(),
                        outcome: Ok(serde_json::json!(42)),
                    },
                },
                EventBody::SignalAwaited {
                    name: "approve".into(),
                },
                EventBody::ActivationStateChanged {
                    to: ActivationState::Sleeping,
                    diagnostic: None,
                },
            ],
        )
        .await
        .expect("append");
    store.close().await.expect("close");
    flow
}

#[test]
fn signal_reaches_a_sleeping_function_and_show_prints_its_journal() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("functions.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let flow = runtime.block_on(write_sleeping_function(&path));
    let id = flow.to_string();
    let shown = succeeds(&flowstate(&path, &["flows", "show", &id]));
    assert_eq!(field(&shown, "state").as_deref(), Some("sleeping"));
    assert_eq!(
        field(&shown, "awaiting").as_deref(),
        Some("signal \"approve\"")
    );
    assert!(shown.contains("step \"reserve\""), "{shown}");
    assert!(shown.contains("42"), "{shown}");

    let sent = succeeds(&flowstate(
        &path,
        &["flows", "signal", &id, "approve", "--value", "true"],
    ));
    assert!(sent.contains("sent"), "{sent}");
    let shown = succeeds(&flowstate(&path, &["flows", "show", &id]));
    assert_eq!(
        field(&shown, "inbox").as_deref(),
        Some("approve: 1 waiting")
    );
    let summary = json(&flowstate(&path, &["flows", "ls", "--json"]));
    assert_eq!(
        summary["flows"][0]["ready"],
        serde_json::json!(true),
        "woken"
    );

    let bad = fails(&flowstate(
        &path,
        &["flows", "signal", &id, "approve", "--value", "{nope"],
    ));
    assert!(bad.contains("is not JSON"), "{bad}");
    let fixture = fixture();
    let not_a_function = fails(&flowstate(
        &fixture.path,
        &["flows", "signal", &fixture.order.to_string(), "approve"],
    ));
    assert!(
        not_a_function.contains("not a durable function"),
        "{not_a_function}"
    );

    let cancelled = succeeds(&flowstate(
        &path,
        &["flows", "cancel", &id, "--reason", "no longer needed"],
    ));
    assert!(cancelled.contains("cancellation requested"), "{cancelled}");
    let shown = succeeds(&flowstate(&path, &["flows", "show", &id]));
    assert_eq!(
        field(&shown, "cancel requested").as_deref(),
        Some("\"no longer needed\"")
    );
    let again = succeeds(&flowstate(
        &path,
        &["flows", "cancel", &id, "--reason", "again"],
    ));
    assert!(again.contains("cancellation ignored"), "{again}");

    // Every kind goes through its own state table: a finished task graph and a deactivated
    // plan refuse, and nothing is appended to either.
    for (flow, table) in [(fixture.order, "REVERTED"), (fixture.plan, "deactivated")] {
        let flow = flow.to_string();
        let refused = fails(&flowstate(&fixture.path, &["flows", "cancel", &flow]));
        assert!(refused.contains("cannot cancel"), "{refused}");
        assert!(refused.contains(table), "{refused}");
    }
}
