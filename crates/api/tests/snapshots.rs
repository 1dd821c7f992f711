//! One representative value of each view, serialized as the server writes it (keys sorted,
//! as `serde_json::Value` orders them) and compared with the snapshot next to this file, so
//! that any change of the wire format shows in review. `UPDATE_EXPECT=1 cargo test -p
//! flowstate-api` rewrites the snapshots.

use expect_test::{expect_file, ExpectFile};
use flowstate_api::{
    EventPage, EventView, FlowPage, FlowSummaryView, FlowView, Outcome, ProblemCode,
    ProblemDetails, Registered, RequestOutcome, Started, StepList, StreamMessage, Time,
};
use flowstate_core::{Event, FlowId, FlowRecord, StepSpec, Timestamp};
use serde_json::{json, Value};

/// 2023-11-14T22:13:20Z, and a few µs later.
const T0: i64 = 1_700_000_000_000_000;

fn id(n: u8) -> FlowId {
    FlowId::from_parts(Timestamp::from_micros(T0), [n; 10])
}

fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    snapshot: ExpectFile,
) {
    let json = serde_json::to_value(value).expect("serialize");
    snapshot.assert_eq(&format!("{json:#}\n"));
    let back: T = serde_json::from_value(json).expect("deserialize");
    assert_eq!(&back, value, "the view reads back as it was written");
}

/// A plan as the log folds it: attributes with provenance, a step with a work item waiting
/// for a retry and one whose compensation waits, a failure.
fn plan_record() -> FlowRecord {
    serde_json::from_value(json!({
        "id": id(1), "kind": "plan", "definition": "plan", "input": { "city": "Lyon" },
        "status": { "kind": "plan", "state": "failed" },
        "created_at": T0, "updated_at": T0 + 5_000_123, "last_seq": 9, "atoms": {},
        "diagnostic": null,
        "plan": {
            "plan": {
                "goals": [{ "goal": "attribute", "name": "quote" }],
                "steps": { "fetch": {
                    "name": "fetch", "version": 2, "inputs": [{ "name": "city" }],
                    "outputs": ["quote"], "parallelism": 1,
                    "retry": { "max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 1000, "jitter": false },
                    "compensable": true
                } },
                "providers": { "quote": "fetch" }, "inputs": ["city"]
            },
            "attributes": {
                "city": { "value": "Lyon", "seq": 1, "time": T0 },
                "quote": { "value": 12.5, "step": "fetch", "attempt": 2, "seq": 7, "time": T0 + 4_000_000 }
            },
            "steps": { "fetch": {
                "state": "failed", "inputs": { "city": "Lyon" },
                "items": [
                    { "state": "retry_waiting", "attempt": 1, "retry_due": T0 + 2_000_000,
                      "failure": { "kind": "Timeout", "message": "no answer in 30s" } },
                    { "state": "succeeded", "attempt": 2, "outputs": { "quote": 12.5 }, "succeeded_seq": 7,
                      "compensation_attempt": 1, "compensation_due": T0 + 6_000_000 }
                ],
                "failure": { "kind": "Http", "message": "503", "causes": [{ "kind": "io", "message": "reset" }] }
            } },
            "failure": { "kind": "StepFailed", "message": "fetch failed" }
        }
    }))
    .expect("a plan record")
}

/// A durable function asleep, whose journal has every effect.
fn function_record() -> FlowRecord {
    serde_json::from_value(json!({
        "id": id(2), "kind": "function", "definition": "greet", "input": "Ada",
        "status": { "kind": "function", "state": "sleeping" },
        "created_at": T0, "updated_at": T0 + 1, "last_seq": 14, "first_seq": 3, "atoms": {},
        "diagnostic": "position 4: expected sleep",
        "parent": id(3),
        "function": {
            "journal": [
                { "effect": "step", "name": "lookup", "outcome": { "Ok": { "name": "Ada" } } },
                { "effect": "now", "time": T0 + 10 },
                { "effect": "random", "value": 42 },
                { "effect": "uuid", "value": "0190a1b2-0000-7000-8000-000000000000" },
                { "effect": "sleep", "until": T0 + 60_000_000 },
                { "effect": "signal", "name": "go", "value": [1, 2] },
                { "effect": "patched", "change": "v2" },
                { "effect": "child_started", "kind": "task_graph", "definition": "etl", "child": id(4) },
                { "effect": "child_joined", "child": id(4), "outcome": { "Err": { "kind": "Cancelled", "message": "stop" } } },
                { "effect": "settled", "combinator": "race", "branch": 1 }
            ],
            "sleeps_ended": [4], "inbox": { "go": [true] }, "outcome": null, "run": 3,
            "incarnations": [[1, "host-a"], [3, "host-b"]], "branches": { "9": "0.1" },
            "awaiting": ["go"], "awaiting_timers": [4], "awaiting_children": [id(4)],
            "children_ended": { id(4).to_string(): { "Ok": 1 } }, "cancel_requested": "enough",
            "journal_dropped": { "entries": 2, "events": 5 }
        }
    }))
    .expect("a function record")
}

/// A task graph with an atom, being cancelled.
fn task_graph_record() -> FlowRecord {
    serde_json::from_value(json!({
        "id": id(5), "kind": "task_graph", "definition": "etl", "input": {},
        "status": { "kind": "task_graph", "state": "running" },
        "created_at": T0, "updated_at": T0, "last_seq": 4, "diagnostic": null,
        "atoms": { "extract": {
            "state": { "machine": "task", "state": "running" }, "intention": "execute",
            "last_seq": 4, "executions": 1
        } },
        "cancel_requested": "maintenance"
    }))
    .expect("a task graph record")
}

#[test]
fn flow_views() {
    check(
        &FlowView::new(&plan_record(), 12, false),
        expect_file!["snapshots/flow_view_plan.json"],
    );
    check(
        &FlowView::new(&function_record(), 14, true),
        expect_file!["snapshots/flow_view_function.json"],
    );
    check(
        &FlowView::new(&task_graph_record(), 4, false),
        expect_file!["snapshots/flow_view_task_graph.json"],
    );
}

#[test]
fn views_turn_back_into_the_records() {
    for record in [plan_record(), function_record(), task_graph_record()] {
        assert_eq!(FlowRecord::from(FlowView::new(&record, 1, false)), record);
    }
}

fn event(seq: u64, body: Value) -> Event {
    serde_json::from_value(json!({ "flow": id(1), "seq": seq, "time": T0 + 7, "body": body }))
        .expect("an event")
}

#[test]
fn event_pages() {
    let events = [
        event(
            1,
            json!({ "type": "flow_created", "kind": "plan", "definition": "plan", "input": {} }),
        ),
        event(
            2,
            json!({ "type": "retry_scheduled", "step": "fetch", "item": 0, "attempt": 1,
            "failure": { "kind": "Timeout", "message": "slow" }, "due": T0 + 2_000_000 }),
        ),
        event(
            3,
            json!({ "type": "compensation_failed", "step": "fetch", "item": 1,
            "failure": { "kind": "Http", "message": "500" }, "retry_due": T0 + 3_000_000 }),
        ),
        event(
            4,
            json!({ "type": "compensation_failed", "step": "fetch", "item": 1,
            "failure": { "kind": "Http", "message": "500" } }),
        ),
        event(
            5,
            json!({ "type": "journal_entry_recorded", "position": 1,
            "entry": { "effect": "now", "time": T0 + 10 } }),
        ),
        event(
            6,
            json!({ "type": "branch_entry_recorded", "branch": "0.1", "position": 2,
            "entry": { "effect": "sleep", "until": T0 + 60_000_000 } }),
        ),
    ];
    let page = EventPage {
        events: events.iter().map(EventView::from).collect(),
        archived: false,
    };
    check(&page, expect_file!["snapshots/event_page.json"]);
    for event in &events {
        let view = EventView::from(event);
        assert_eq!(flowstate_core::EventBody::from(view.body), event.body);
    }
    let archived = EventPage {
        events: Vec::new(),
        archived: true,
    };
    check(
        &archived,
        expect_file!["snapshots/event_page_archived.json"],
    );
}

#[test]
fn flow_pages() {
    let live = FlowSummaryView {
        id: id(1),
        kind: Some("plan".to_owned()),
        definition: Some("plan".to_owned()),
        status: "active".to_owned(),
        created_at: Time(Timestamp::from_micros(T0)),
        updated_at: Some(Time(Timestamp::from_micros(T0 + 1))),
        events: Some(9),
        bytes: 2048,
        ready: Some(true),
        archived: false,
        error: None,
    };
    let archived = FlowSummaryView {
        id: id(2),
        status: "archived".to_owned(),
        ready: Some(false),
        archived: true,
        ..live.clone()
    };
    let damaged = FlowSummaryView {
        id: id(3),
        kind: None,
        definition: None,
        status: "archived".to_owned(),
        updated_at: None,
        events: None,
        ready: None,
        archived: true,
        error: Some("the file is truncated".to_owned()),
        ..live.clone()
    };
    let page = FlowPage {
        flows: vec![live, archived, damaged],
        next_after: Some(id(3)),
    };
    check(&page, expect_file!["snapshots/flow_page.json"]);
}

#[test]
fn small_answers() {
    let problem = ProblemDetails::new(
        404,
        "Not Found",
        ProblemCode::NotFound,
        "flow 1 does not exist".to_owned(),
    );
    check(&problem, expect_file!["snapshots/problem.json"]);
    let outcome = RequestOutcome {
        outcome: Outcome::Ignored,
    };
    check(&outcome, expect_file!["snapshots/request_outcome.json"]);
    check(
        &Started {
            id: id(1),
            existing: false,
        },
        expect_file!["snapshots/started.json"],
    );
    check(
        &Started {
            id: id(1),
            existing: true,
        },
        expect_file!["snapshots/started_existing.json"],
    );
    let registered = Registered {
        name: "quote".to_owned(),
        version: 3,
    };
    check(&registered, expect_file!["snapshots/registered.json"]);
    let change = StreamMessage {
        flow: id(1),
        seq: 9,
        status: Some("active".to_owned()),
        kind: "changed".to_owned(),
    };
    check(&change, expect_file!["snapshots/stream_change.json"]);
    let steps = StepList {
        steps: plan_record()
            .plan
            .and_then(|plan| plan.plan)
            .map(|plan| plan.steps.into_values().collect::<Vec<StepSpec>>())
            .unwrap_or_default(),
    };
    check(&steps, expect_file!["snapshots/step_list.json"]);
}
