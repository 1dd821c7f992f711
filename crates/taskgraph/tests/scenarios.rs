//! Scenarios ported from TaskFlow's own tests (`test_engines`, `test_retries`,
//! `test_suspend`, `test_arguments_passing`, `test_flow_dependencies`). Each asserts the
//! ordered transitions and the flow's final state, as TaskFlow's tests do. The numbers refer
//! to the scenario list in `shared/research/taskflow.md`.

mod common;

use common::*;
use flowstate_core::machine::FlowState;
use flowstate_taskgraph::{Flow, Times};
use serde_json::json;

#[tokio::test]
async fn s02_a_single_task_runs_and_succeeds() {
    let h = serial();
    h.engine.register(Flow::linear("f").add(progressing("t")));
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    assert_eq!(
        h.capture.captured(),
        s("flow RUNNING, t RUNNING, t SUCCESS(5), flow SUCCESS")
    );
}

#[tokio::test]
async fn s03_linear_flow_runs_in_order() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(progressing("a"))
            .add(progressing("b")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let expected = lines(&[&s("flow RUNNING"), &ok("a"), &ok("b"), &s("flow SUCCESS")]);
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn s04_a_failure_reverts_in_reverse_order_failed_atom_first() {
    let h = serial();
    h.engine.register(
        Flow::linear("root").add(progressing("t1")).add(
            Flow::linear("child")
                .add(progressing("t2"))
                .add(failing("fail")),
        ),
    );
    let outcome = h.engine.execute("root", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(outcome.failures.len(), 1);
    assert_eq!(outcome.failures[0].1.message, "Woot!");
    let expected = lines(&[
        &s("flow RUNNING"),
        &ok("t1"),
        &ok("t2"),
        &s("fail RUNNING, fail FAILURE, fail REVERTING, fail REVERTED, t2 REVERTING, t2 REVERTED, t1 REVERTING, t1 REVERTED, flow REVERTED"),
    ]);
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn s05_atoms_after_a_failure_never_run() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(failing("fail"))
            .add(progressing("never")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(
        h.capture.captured(),
        s("flow RUNNING, fail RUNNING, fail FAILURE, fail REVERTING, fail REVERTED, flow REVERTED")
    );
}

#[tokio::test]
async fn s06_revert_removes_outputs() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(progressing("t1").provides("x"))
            .add(failing("fail")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert!(outcome.results.is_empty(), "{:?}", outcome.results);
}

#[tokio::test]
async fn s07_a_revert_failure_ends_the_flow_in_failure() {
    let h = serial();
    h.engine
        .register(Flow::linear("f").add(nasty("nasty")).add(failing("fail")));
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Failure);
    assert_eq!(
        outcome
            .failures
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>(),
        ["fail"]
    );
    assert_eq!(outcome.revert_failures.len(), 1);
    assert_eq!(outcome.revert_failures[0].0, "nasty");
    assert_eq!(outcome.revert_failures[0].1.message, "Gotcha!");
}

#[tokio::test]
async fn s08_reverting_stops_at_the_first_revert_failure() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .add(progressing("t1"))
            .add(progressing("t2"))
            .add(nasty("nasty"))
            .add(failing("fail")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Failure);
    let captured = h.capture.captured();
    assert!(
        captured.contains(&"nasty REVERT_FAILURE".to_owned()),
        "{captured:?}"
    );
    assert!(
        !captured
            .iter()
            .any(|l| l.starts_with("t2 REVERT") || l.starts_with("t1 REVERT")),
        "{captured:?}"
    );
}

#[tokio::test]
async fn s09_rerunning_a_reverted_flow_starts_it_over() {
    let h = serial();
    h.engine
        .register(Flow::linear("f").add(progressing("t")).add(failing("fail")));
    let first = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(first.state, FlowState::Reverted);
    h.capture.clear();
    let second = h.engine.run(first.flow).await.expect("runs again");
    assert_eq!(second.state, FlowState::Reverted);
    let expected = lines(&[
        &s("flow PENDING, t PENDING, fail PENDING, flow RUNNING"),
        &ok("t"),
        &s("fail RUNNING, fail FAILURE, fail REVERTING, fail REVERTED, t REVERTING, t REVERTED, flow REVERTED"),
    ]);
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn s10_graph_flow_infers_order_from_requires_and_provides() {
    let h = serial();
    let task = |name: &str, requires: Option<&str>, provides: &str| {
        let atom = progressing(name).provides(provides);
        match requires {
            Some(r) => atom.requires([r]),
            None => atom,
        }
    };
    h.engine.register(
        Flow::graph("g")
            .add(task("task4", Some("c"), "d"))
            .add(task("task2", Some("a"), "b"))
            .add(task("task3", Some("b"), "c"))
            .add(task("task1", None, "a")),
    );
    let outcome = h.engine.execute("g", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let expected = lines(&[
        &s("flow RUNNING"),
        &ok("task1"),
        &ok("task2"),
        &ok("task3"),
        &ok("task4"),
        &s("flow SUCCESS"),
    ]);
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn s10b_graph_failure_reverts_in_dependency_order() {
    let h = serial();
    h.engine.register(
        Flow::graph("g")
            .add(progressing("task2").requires(["a"]).provides("b"))
            .add(failing("task3").requires(["b"]))
            .add(progressing("task1").provides("a")),
    );
    let outcome = h.engine.execute("g", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let reverts: Vec<String> = h
        .capture
        .captured()
        .into_iter()
        .filter(|l| l.ends_with("REVERTED"))
        .collect();
    assert_eq!(
        reverts,
        s("task3 REVERTED, task2 REVERTED, task1 REVERTED, flow REVERTED")
    );
}

#[tokio::test]
async fn s21_times_retries_and_succeeds_on_the_second_attempt() {
    let h = serial();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = attempts.clone();
    let flaky = flowstate_taskgraph::task_fn("t2", move |_ctx, _inputs| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                Err(flowstate_core::Failure::new("RuntimeError", "Woot!"))
            } else {
                Ok(json!(5))
            }
        }
    });
    h.engine.register(
        Flow::linear("f")
            .retry(flowstate_taskgraph::RetryAtom::new("r1", Times::new(4)))
            .add(progressing("t1"))
            .add(flaky),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let expected = s(
        "flow RUNNING, r1 RUNNING, r1 SUCCESS(1), t1 RUNNING, t1 SUCCESS(5), t2 RUNNING, t2 FAILURE, \
         t2 REVERTING, t2 REVERTED, t1 REVERTING, t1 REVERTED, r1 RETRYING, t1 PENDING, t2 PENDING, \
         r1 RUNNING, r1 SUCCESS(2), t1 RUNNING, t1 SUCCESS(5), t2 RUNNING, t2 SUCCESS(5), flow SUCCESS",
    );
    assert_eq!(h.capture.captured(), expected);
}

#[tokio::test]
async fn s22_times_exhausted_reverts_everything() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(flowstate_taskgraph::RetryAtom::new("r1", Times::new(2)).provides("x"))
            .add(progressing("t1"))
            .add(failing("t2")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let captured = h.capture.captured();
    let tail: Vec<String> = captured[captured.len() - 5..].to_vec();
    assert_eq!(
        tail,
        s("t1 REVERTING, t1 REVERTED, r1 REVERTING, r1 REVERTED, flow REVERTED")
    );
    assert_eq!(captured.iter().filter(|l| *l == "r1 RETRYING").count(), 1);
    assert!(
        !outcome.results.contains_key("x"),
        "the retry's value is gone after revert"
    );
}
