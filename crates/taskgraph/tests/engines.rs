//! Engine, pattern, argument and suspension scenarios ported from TaskFlow's
//! `test_engines.py`, `test_arguments_passing.py`, `test_flow_dependencies.py` and
//! `test_suspend.py` (numbers as in `shared/research/taskflow.md`).

mod common;

use std::sync::{Arc, Mutex, OnceLock, Weak};

use common::*;
use flowstate_core::machine::{EngineState, FlowState};
use flowstate_core::{FlowId, Machine};
use flowstate_taskgraph::task::{map_task, reduce_task};
use flowstate_taskgraph::{task_fn, CompileError, Engine, Flow, Listener, Provides, Transition};
use serde_json::{json, Value};

#[derive(Debug, Default)]
struct EngineStates(Mutex<Vec<EngineState>>);

impl Listener for EngineStates {
    fn on_transition(&self, _flow: FlowId, _transition: &Transition) {}
    fn on_engine(&self, _flow: FlowId, state: EngineState) {
        self.0.lock().expect("lock").push(state);
    }
}

#[tokio::test]
async fn s01_an_empty_flow_walks_the_engine_machine_to_success() {
    let h = serial();
    let states = Arc::new(EngineStates::default());
    h.engine.listen(states.clone());
    h.engine
        .register(Flow::linear("empty").add(Flow::unordered("nested").add(Flow::graph("deeper"))));
    let outcome = h.engine.execute("empty", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    // TaskFlow yields these (it hides its internal GAME_OVER); flowstate reports it too.
    let seen: Vec<&str> = states
        .0
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.label())
        .collect();
    assert_eq!(
        seen,
        [
            "RESUMING",
            "SCHEDULING",
            "WAITING",
            "ANALYZING",
            "GAME_OVER",
            "SUCCESS"
        ]
    );
}

#[tokio::test]
async fn s11_results_split_by_keys_and_positions_and_read_through_rebind() {
    let h = serial();
    h.engine.register(
        Flow::graph("g")
            .add(
                task_fn("split", |_c, _i| async {
                    Ok(json!({"a": 1, "b": 3, "c": 5}))
                })
                .provides(Provides::Keys(vec![
                    "a".into(),
                    "b".into(),
                    "c".into(),
                ])),
            )
            .add(
                task_fn("pair", |_c, _i| async { Ok(json!([30, 38])) })
                    .provides(Provides::Positions(vec!["x".into(), "y".into()])),
            )
            .add(
                task_fn("sum", |_c, inputs| async move {
                    let get = |k: &str| inputs.get(k).and_then(Value::as_i64).unwrap_or(0);
                    Ok(json!(get("first") + get("y") - get("b") + get("k")))
                })
                .requires(["first", "y", "b", "k"])
                .rebind("first", "x")
                .inject("k", json!(7))
                .provides("z"),
            ),
    );
    let outcome = h.engine.execute("g", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let expected = json!({"a": 1, "b": 3, "c": 5, "x": 30, "y": 38, "z": 72});
    assert_eq!(
        Value::Object(outcome.results.into_iter().collect()),
        expected
    );
}

fn compile_error(flow: Flow, given: &[(&str, Value)]) -> CompileError {
    let h = serial();
    let name = flow.name().to_owned();
    h.engine.register(flow);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    match runtime.block_on(h.engine.create(&name, inputs(given))) {
        Err(flowstate_taskgraph::Error::Compile(error)) => error,
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn s12_cycles_ambiguity_and_duplicates_are_refused_with_names() {
    let cycle = compile_error(
        Flow::graph("g")
            .add(progressing("a"))
            .add(progressing("b"))
            .link("a", "b")
            .link("b", "a"),
        &[],
    );
    assert!(
        matches!(&cycle, CompileError::Cycle { atoms } if atoms.len() == 2),
        "{cycle}"
    );
    let ambiguous = compile_error(
        Flow::graph("g")
            .add(progressing("p1").provides("x"))
            .add(progressing("p2").provides("x"))
            .add(progressing("c").requires(["x"])),
        &[],
    );
    assert!(
        matches!(&ambiguous, CompileError::Ambiguous { atom, input, .. } if atom == "c" && input == "x"),
        "{ambiguous}"
    );
    let duplicate = compile_error(
        Flow::linear("f")
            .add(progressing("t"))
            .add(progressing("t")),
        &[],
    );
    assert_eq!(duplicate, CompileError::Duplicate { name: "t".into() });
    let unknown = compile_error(Flow::graph("g").add(progressing("a")).link("a", "zz"), &[]);
    assert!(matches!(unknown, CompileError::UnknownLinkTarget { .. }));
    // An explicit link chooses between two providers.
    let h = serial();
    h.engine.register(
        Flow::graph("chosen")
            .add(progressing("p1").provides("x"))
            .add(progressing("p2").provides("x"))
            .add(progressing("c").requires(["x"]))
            .link("p2", "c"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    assert!(runtime
        .block_on(h.engine.create("chosen", inputs(&[])))
        .is_ok());
}

#[test]
fn s13_missing_inputs_including_revert_only_ones_are_refused_before_anything_runs() {
    let missing = compile_error(
        Flow::linear("f")
            .add(progressing("a").requires(["x"]))
            .add(progressing("b").revert_requires(["undo_token"])),
        &[],
    );
    assert_eq!(
        missing,
        CompileError::MissingInputs {
            missing: vec![("a".into(), "x".into()), ("b".into(), "undo_token".into())]
        }
    );
    assert!(missing.to_string().contains("b: undo_token"));
    let not_before = compile_error(
        Flow::unordered("u")
            .add(progressing("p").provides("x"))
            .add(progressing("c").requires(["x"])),
        &[],
    );
    assert!(
        matches!(not_before, CompileError::NotBefore { .. }),
        "{not_before}"
    );
}

#[tokio::test]
async fn s15_a_false_decider_ignores_the_rest_of_its_branch() {
    let h = serial();
    h.engine.register(
        Flow::graph("g")
            .add(progressing("t1"))
            .add(progressing("t2"))
            .add(progressing("t2_2"))
            .add(progressing("t3"))
            .link_if("t1", "t2", |_| false)
            .link("t2", "t2_2")
            .link_if("t1", "t3", |_| true),
    );
    let outcome = h.engine.execute("g", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let expected = lines(&[
        &s("flow RUNNING"),
        &ok("t1"),
        &s("t2 IGNORE, t2_2 IGNORE"),
        &ok("t3"),
        &s("flow SUCCESS"),
    ]);
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn s16_one_false_vote_ignores_a_diamond_join() {
    let h = serial();
    h.engine.register(
        Flow::graph("g")
            .add(progressing("t1"))
            .add(progressing("t2"))
            .add(progressing("t3"))
            .add(progressing("t4"))
            .link("t1", "t2")
            .link("t1", "t3")
            .link_if("t2", "t4", |_| false)
            .link_if("t3", "t4", |_| true),
    );
    let outcome = h.engine.execute("g", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    assert!(h.capture.captured().contains(&"t4 IGNORE".to_owned()));
}

#[tokio::test]
async fn deciders_see_the_results_of_their_sources() {
    for approved in [true, false] {
        let h = serial();
        h.engine.register(
            Flow::graph("g")
                .add(task_fn("check", move |_c, _i| async move {
                    Ok(json!({ "approved": approved }))
                }))
                .add(progressing("ship"))
                .link_if("check", "ship", |results| {
                    results["check"]["approved"] == json!(true)
                }),
        );
        h.engine.execute("g", inputs(&[])).await.expect("runs");
        let shipped = h.capture.captured().contains(&"ship SUCCESS(5)".to_owned());
        assert_eq!(shipped, approved, "{:?}", h.capture.captured());
    }
}

#[tokio::test]
async fn s19_a_failure_after_an_ignored_atom_reverts_what_ran() {
    let h = serial();
    h.engine.register(
        Flow::graph("g")
            .add(progressing("a"))
            .add(progressing("b"))
            .add(failing("c"))
            .link_if("a", "b", |_| false)
            .link("a", "c"),
    );
    let outcome = h.engine.execute("g", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let expected = lines(&[
        &s("flow RUNNING"),
        &ok("a"),
        &s("b IGNORE, c RUNNING, c FAILURE, c REVERTING, c REVERTED, a REVERTING, a REVERTED, flow REVERTED"),
    ]);
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn unordered_flows_run_their_children_in_parallel() {
    let h = parallel();
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let waiter = |name: &str| {
        let barrier = barrier.clone();
        task_fn(name, move |_c, _i| {
            let barrier = barrier.clone();
            async move {
                // Completes only when all three run at the same time.
                barrier.wait().await;
                Ok(json!(5))
            }
        })
    };
    h.engine.register(
        Flow::unordered("u")
            .add(waiter("a"))
            .add(waiter("b"))
            .add(waiter("c")),
    );
    let run = h.engine.execute("u", inputs(&[]));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the three tasks ran concurrently")
        .expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
}

#[tokio::test]
async fn independent_branches_revert_and_the_flow_reports_every_failure() {
    let h = parallel();
    h.engine.register(
        Flow::unordered("u")
            .add(failing("f1"))
            .add(failing("f2"))
            .add(progressing("ok")),
    );
    let outcome = h.engine.execute("u", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let mut failed: Vec<&str> = outcome.failures.iter().map(|f| f.0.as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed, ["f1", "f2"]);
}

#[tokio::test]
async fn a_panicking_task_is_a_failure_not_a_dead_engine() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(progressing("a"))
            .add(task_fn("boom", |_c, _i| async { panic!("kaboom") })),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(outcome.failures[0].1.kind, "Panicked");
}

#[tokio::test]
async fn map_and_reduce_helpers_apply_and_combine() {
    let h = serial();
    h.engine.register(
        Flow::linear("mr")
            .add(
                map_task("square", "numbers", |n| {
                    Ok(json!(n.as_i64().unwrap_or(0).pow(2)))
                })
                .provides("squares"),
            )
            .add(
                reduce_task("total", "squares", json!(0), |acc, n| {
                    Ok(json!(acc.as_i64().unwrap_or(0) + n.as_i64().unwrap_or(0)))
                })
                .provides("sum"),
            ),
    );
    let outcome = h
        .engine
        .execute("mr", inputs(&[("numbers", json!([1, 2, 3]))]))
        .await
        .expect("runs");
    assert_eq!(outcome.results.get("sum"), Some(&json!(14)));
}

/// Suspends the flow when `atom` reaches `state`.
struct SuspendOn {
    engine: OnceLock<Weak<Engine>>,
    atom: &'static str,
    state: &'static str,
}

impl Listener for SuspendOn {
    fn on_transition(&self, flow: FlowId, transition: &Transition) {
        if let Transition::Atom { atom, to, .. } = transition {
            if atom == self.atom && *to == self.state {
                if let Some(engine) = self.engine.get().and_then(Weak::upgrade) {
                    engine.suspend(flow);
                }
            }
        }
    }
}

fn suspending_engine(
    atom: &'static str,
    state: &'static str,
) -> (Arc<Engine>, Arc<flowstate_taskgraph::CaptureListener>) {
    let clock = clock();
    let store = Arc::new(flowstate_store::MemoryStore::new(clock.clone()));
    let engine = Arc::new(Engine::serial(store, clock));
    let capture = Arc::new(flowstate_taskgraph::CaptureListener::default());
    engine.listen(capture.clone());
    let suspender = Arc::new(SuspendOn {
        engine: OnceLock::new(),
        atom,
        state,
    });
    let _ = suspender.engine.set(Arc::downgrade(&engine));
    engine.listen(suspender);
    (engine, capture)
}

#[tokio::test]
async fn s35_suspend_after_an_atom_then_resume_runs_only_the_rest() {
    let (engine, capture) = suspending_engine("b", "success");
    engine.register(
        Flow::linear("f")
            .add(progressing("a"))
            .add(progressing("b"))
            .add(progressing("c")),
    );
    let outcome = engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Suspended);
    let expected = lines(&[
        &s("flow RUNNING"),
        &ok("a"),
        &ok("b"),
        &s("flow SUSPENDING, flow SUSPENDED"),
    ]);
    assert_eq!(capture.captured(), expected);
    capture.clear();
    let resumed = engine.run(outcome.flow).await.expect("resumes");
    assert_eq!(resumed.state, FlowState::Success);
    let expected = lines(&[&s("flow RUNNING"), &ok("c"), &s("flow SUCCESS")]);
    assert_eq!(capture.captured(), expected);
}

#[tokio::test]
async fn s36_suspend_while_reverting_then_resume_finishes_the_revert() {
    let (engine, capture) = suspending_engine("b", "reverted");
    engine.register(
        Flow::linear("f")
            .add(progressing("a"))
            .add(progressing("b"))
            .add(failing("c")),
    );
    let outcome = engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Suspended);
    assert!(!capture.captured().contains(&"a REVERTING".to_owned()));
    capture.clear();
    let resumed = engine.run(outcome.flow).await.expect("resumes");
    assert_eq!(resumed.state, FlowState::Reverted);
    assert_eq!(
        capture.captured(),
        s("flow RUNNING, a REVERTING, a REVERTED, flow REVERTED")
    );
    assert_eq!(
        resumed
            .failures
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
}

#[tokio::test]
async fn s39_rerunning_a_successful_flow_runs_no_atom() {
    let h = serial();
    h.engine.register(Flow::linear("f").add(progressing("a")));
    let first = h.engine.execute("f", inputs(&[])).await.expect("runs");
    h.capture.clear();
    let again = h.engine.run(first.flow).await.expect("runs again");
    assert_eq!(again.state, FlowState::Success);
    assert_eq!(h.capture.captured(), s("flow RUNNING, flow SUCCESS"));
}

#[tokio::test]
async fn an_unknown_definition_is_an_error() {
    let h = serial();
    assert!(matches!(
        h.engine.create("nope", inputs(&[])).await,
        Err(flowstate_taskgraph::Error::UnknownDefinition { .. })
    ));
}

#[tokio::test]
async fn rerunning_a_failed_flow_retries_the_failed_revert_and_finishes_reverting() {
    let h = serial();
    let reverts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shaky = revert_fails_once("shaky", reverts.clone());
    h.engine.register(
        Flow::linear("f")
            .add(progressing("first"))
            .add(shaky)
            .add(failing("fail")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Failure);
    assert!(
        !h.capture.captured().contains(&"first REVERTED".to_owned()),
        "stuck behind the failed revert"
    );
    h.capture.clear();
    let again = h.engine.run(outcome.flow).await.expect("re-runs");
    assert_eq!(again.state, FlowState::Reverted);
    assert_eq!(
        h.capture.captured(),
        s("flow RUNNING, first REVERTING, first REVERTED, flow REVERTED")
    );
    assert_eq!(reverts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rerunning_a_reverted_flow_runs_atoms_that_never_ran_before() {
    // The first run failed at `flaky` and marked `after` (never run) for revert; the re-run
    // gets past the failure and must run `after` too.
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(flaky("flaky", 1))
            .add(progressing("after")),
    );
    let first = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(first.state, FlowState::Reverted);
    let again = h.engine.run(first.flow).await.expect("re-runs");
    assert_eq!(again.state, FlowState::Success);
    assert!(h
        .capture
        .captured()
        .contains(&"after SUCCESS(5)".to_owned()));
}

#[tokio::test]
async fn an_oversized_result_is_the_tasks_failure_and_the_flow_reverts() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(progressing("before"))
            .add(task_fn("huge", |_c, _i| async {
                Ok(json!("x".repeat(2 * 1024 * 1024)))
            })),
    );
    let outcome = h
        .engine
        .execute("f", inputs(&[]))
        .await
        .expect("the engine survives");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(outcome.failures[0].1.kind, "ResultTooLarge");
}

#[tokio::test]
async fn execute_and_revert_get_different_idempotency_keys() {
    let h = serial();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let (execute_keys, revert_keys) = (keys.clone(), keys.clone());
    h.engine.register(
        Flow::linear("f")
            .add(flowstate_taskgraph::task_fn_with_revert(
                "charge",
                move |ctx, _i| {
                    execute_keys.lock().expect("lock").push(ctx.idempotency_key);
                    async { Ok(json!(5)) }
                },
                move |ctx, _i, _o| {
                    revert_keys.lock().expect("lock").push(ctx.idempotency_key);
                    async { Ok(()) }
                },
            ))
            .add(failing("fail")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    let keys = keys.lock().expect("lock").clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], format!("{}/charge/1", outcome.flow));
    assert_eq!(keys[1], format!("{}/charge/1/revert", outcome.flow));
}

#[tokio::test]
async fn a_suspension_asked_for_while_the_flow_is_not_running_is_void() {
    let h = serial();
    h.engine.register(Flow::linear("f").add(progressing("a")));
    let flow = h.engine.create("f", inputs(&[])).await.expect("creates");
    h.engine.suspend(flow);
    let outcome = h.engine.run(flow).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
}

#[tokio::test]
async fn a_retry_whose_scope_holds_a_repaired_revert_failure_gives_up_instead_of_resetting_it() {
    let h = serial();
    let reverts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shaky = revert_fails_once("shaky", reverts.clone());
    h.engine.register(
        Flow::linear("f").add(progressing("outer")).add(
            Flow::linear("inner")
                .retry(flowstate_taskgraph::RetryAtom::new(
                    "r1",
                    flowstate_taskgraph::Times::new(3),
                ))
                .add(shaky)
                .add(failing("fail")),
        ),
    );
    let first = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(first.state, FlowState::Failure);
    let again = h
        .engine
        .run(first.flow)
        .await
        .expect("re-runs without a refused transition");
    assert_eq!(again.state, FlowState::Reverted);
    assert!(h.capture.captured().contains(&"outer REVERTED".to_owned()));
    let rerun = h.engine.run(first.flow).await;
    assert!(
        matches!(rerun, Err(flowstate_taskgraph::Error::CannotRerun { .. })),
        "{rerun:?}"
    );
}
