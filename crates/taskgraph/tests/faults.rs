//! TaskFlow's known faults, each avoided and pinned by a test (the list is in
//! `shared/research/taskflow.md`, section 4 and 6). Others are pinned elsewhere:
//! a nested REVERT never leaves outer tasks SUCCESS (`retries.rs`, s27); re-running a failed
//! flow really runs it and retries the failed revert (`engines.rs`); revert-only inputs are
//! checked before the flow starts (`engines.rs`, s13).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use flowstate_core::machine::{FlowState, RetryState, TaskState};
use flowstate_core::{Event, EventBody, FlowId, FlowKind, Folder, Intention, Timestamp};
use flowstate_engine::FlowWriter;
use flowstate_store::testing::InstrumentedStore;
use flowstate_store::{MemoryStore, Store};
use flowstate_taskgraph::compile::compile;
use flowstate_taskgraph::runtime::{Runtime, Work};
use flowstate_taskgraph::{Engine, Flow, RetryAtom, Times};
use serde_json::json;

/// Drives the scheduler over a linear flow of `tasks` tasks without I/O; returns readiness
/// checks per task.
fn examinations_per_task(tasks: usize) -> f64 {
    let mut flow = Flow::linear("chain");
    for index in 0..tasks {
        flow = flow.add(progressing(&format!("t{index}")));
    }
    let graph = Arc::new(compile(&flow, &BTreeSet::new()).expect("compiles"));
    let mut runtime = Runtime::new(graph);
    let id = FlowId::from_parts(Timestamp::from_micros(1_000_000), [1; 10]);
    let mut folder = Folder::new();
    let apply = |folder: &mut Folder, bodies: Vec<EventBody>| {
        for body in bodies {
            let event = Event {
                flow: id,
                seq: folder.next_seq(),
                time: Timestamp::EPOCH,
                body,
            };
            folder
                .apply(&event)
                .expect("the scheduler only decides legal transitions");
        }
    };
    apply(
        &mut folder,
        vec![
            EventBody::FlowCreated {
                kind: FlowKind::TaskGraph,
                definition: "chain".into(),
                input: json!({}),
            },
            EventBody::FlowStateChanged {
                to: FlowState::Running,
            },
        ],
    );
    loop {
        let record = folder.record().expect("created").clone();
        let step = runtime.schedule(&record, 64, false);
        apply(&mut folder, step.events);
        if step.launch.is_empty() {
            break;
        }
        for work in step.launch {
            let Work::Execute { atom, .. } = work else {
                panic!("nothing fails here")
            };
            let record = folder.record().expect("created").clone();
            let events = runtime.executed(&record, atom, Ok(json!(5)));
            apply(&mut folder, events);
        }
    }
    let record = folder.record().expect("created");
    assert_eq!(runtime.outcome(record, false), FlowState::Success);
    runtime.examinations() as f64 / tasks as f64
}

#[test]
fn scheduling_cost_per_task_does_not_grow_with_the_flow() {
    // TaskFlow rescans successors breadth-first: 2.3 ms per task at 10 tasks, 39 ms at 1,000.
    let small = examinations_per_task(10);
    let large = examinations_per_task(1_000);
    assert!(
        large <= 8.0,
        "{large} readiness checks per task at 1,000 tasks"
    );
    assert!(
        large <= small * 1.2,
        "per-task cost grew from {small} to {large}"
    );
}

#[tokio::test]
async fn one_atomic_append_per_step_and_no_rewrite_of_other_atoms() {
    // TaskFlow rewrites every atom row of the flow on each flow update; here a linear flow of
    // n tasks is n + 1 appends (creation shares the first, the last result the final state)
    // and each append carries only the transitions that happened.
    let clock = clock();
    let store = Arc::new(InstrumentedStore::new(Arc::new(MemoryStore::new(
        clock.clone(),
    ))));
    let engine = Engine::serial(store.clone(), clock);
    let mut flow = Flow::linear("chain");
    for index in 0..20 {
        flow = flow.add(progressing(&format!("t{index}")));
    }
    engine.register(flow);
    let outcome = engine.execute("chain", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    assert_eq!(store.appends(), 21);
    let summary = store
        .flow(outcome.flow)
        .await
        .expect("lookup")
        .expect("exists");
    // created, RUNNING, 20 × (RUNNING, SUCCESS), SUCCESS.
    assert_eq!(summary.events(), 2 * 20 + 3);
}

#[tokio::test]
async fn resuming_in_the_middle_of_a_retry_depends_only_on_the_log() {
    // Crash point: the retry decided RETRY, the scope reverted, and the process died before
    // the retry moved to RETRYING. Everything needed to continue is in the log: the retry's
    // intention (RETRY) and the atoms' states.
    let clock = clock();
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let id = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [9; 10]);
    let mut writer = FlowWriter::new(id);
    let task = |atom: &str, to, intention| EventBody::TaskStateChanged {
        atom: atom.into(),
        to,
        intention,
        result: (to == TaskState::Success).then(|| json!(5)),
        failure: None,
    };
    let retry = |to, intention, result| EventBody::RetryStateChanged {
        atom: "r1".into(),
        to,
        intention,
        result,
        failure: None,
        failures: Default::default(),
    };
    let log = vec![
        EventBody::FlowCreated {
            kind: FlowKind::TaskGraph,
            definition: "f".into(),
            input: json!({}),
        },
        EventBody::FlowStateChanged {
            to: FlowState::Running,
        },
        retry(RetryState::Running, Intention::Execute, None),
        retry(RetryState::Success, Intention::Execute, Some(json!(1))),
        task("t1", TaskState::Running, Intention::Execute),
        task("t1", TaskState::Success, Intention::Execute),
        task("t2", TaskState::Running, Intention::Execute),
        EventBody::TaskStateChanged {
            atom: "t2".into(),
            to: TaskState::Failure,
            intention: Intention::Revert,
            result: None,
            failure: Some(flowstate_core::Failure::new("RuntimeError", "Woot!")),
        },
        EventBody::AtomIntentionChanged {
            atom: "r1".into(),
            retry: true,
            intention: Intention::Retry,
        },
        EventBody::AtomIntentionChanged {
            atom: "t1".into(),
            retry: false,
            intention: Intention::Revert,
        },
        task("t2", TaskState::Reverting, Intention::Revert),
        task("t2", TaskState::Reverted, Intention::Revert),
        task("t1", TaskState::Reverting, Intention::Revert),
        task("t1", TaskState::Reverted, Intention::Revert),
    ];
    writer
        .append(store.as_ref(), clock.as_ref(), log)
        .await
        .expect("a legal log");

    let engine = Engine::serial(store, clock);
    let capture = Arc::new(flowstate_taskgraph::CaptureListener::default());
    engine.listen(capture.clone());
    engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", Times::new(3)))
            .add(progressing("t1"))
            .add(progressing("t2")),
    );
    let outcome = engine.run(id).await.expect("resumes");
    assert_eq!(outcome.state, FlowState::Success);
    let expected = lines(&[
        &s("flow RESUMING, flow SUSPENDED, flow RUNNING, r1 RETRYING, t1 PENDING, t2 PENDING, r1 RUNNING, r1 SUCCESS(2)"),
        &ok("t1"),
        &ok("t2"),
        &s("flow SUCCESS"),
    ]);
    assert_eq!(capture.captured(), expected);
}
