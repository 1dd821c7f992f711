//! Retry scenarios ported from TaskFlow's `test_retries.py` (numbers as in
//! `shared/research/taskflow.md`).

mod common;

use common::*;
use flowstate_core::machine::FlowState;
use flowstate_taskgraph::{
    AlwaysRevert, AlwaysRevertAll, Flow, ForEach, ParameterizedForEach, RetryAtom, Times,
};
use serde_json::json;

#[tokio::test]
async fn s23_times_three_gives_three_attempts_numbered_1_2_3() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", Times::new(3)).provides("attempt"))
            .add(echo("seen", "attempt"))
            .add(failing("fail")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let attempts: Vec<String> = h.lines_starting("seen SUCCESS");
    assert_eq!(
        attempts,
        s("seen SUCCESS(1), seen SUCCESS(2), seen SUCCESS(3)")
    );
}

#[tokio::test]
async fn s24_a_revert_failure_inside_a_retry_fails_the_flow_without_retrying() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", Times::new(3)).provides("x"))
            .add(nasty("t1"))
            .add(failing("t2")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Failure);
    let captured = h.capture.captured();
    assert!(
        captured.contains(&"t1 REVERT_FAILURE".to_owned()),
        "{captured:?}"
    );
    assert!(
        !captured.contains(&"r1 RETRYING".to_owned()),
        "{captured:?}"
    );
    assert_eq!(
        outcome.results.get("x"),
        Some(&json!(1)),
        "the retry's value stays"
    );
}

#[tokio::test]
async fn s25_only_the_inner_scope_is_retried_by_a_nested_retry() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r0", AlwaysRevert))
            .add(progressing("t1"))
            .add(
                Flow::linear("inner")
                    .retry(RetryAtom::new("r1", Times::new(3)))
                    .add(progressing("t2"))
                    .add(flaky("t3", 1)),
            )
            .add(progressing("t4")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let captured = h.capture.captured();
    assert_eq!(
        captured.iter().filter(|l| *l == "t1 RUNNING").count(),
        1,
        "outer task ran once"
    );
    assert_eq!(
        captured.iter().filter(|l| *l == "t2 RUNNING").count(),
        2,
        "inner scope ran twice"
    );
    assert!(captured.contains(&"r1 RETRYING".to_owned()));
    assert!(!captured.contains(&"r0 RETRYING".to_owned()));
    assert_eq!(
        captured
            .iter()
            .filter(|l| l.starts_with("t4 SUCCESS"))
            .count(),
        1
    );
}

#[tokio::test]
async fn s26_an_inner_revert_defers_to_the_outer_retry() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", Times::new(3)))
            .add(progressing("t1"))
            .add(
                Flow::linear("inner")
                    .retry(RetryAtom::new("r2", Times::new(0)))
                    .add(flaky("t2", 1)),
            ),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let captured = h.capture.captured();
    let expected_window = s(
        "t2 FAILURE, t2 REVERTING, t2 REVERTED, r2 REVERTING, r2 REVERTED, t1 REVERTING, t1 REVERTED, \
         r1 RETRYING, t1 PENDING, r2 PENDING, t2 PENDING",
    );
    let start = captured
        .iter()
        .position(|l| l == "t2 FAILURE")
        .expect("t2 failed");
    assert_eq!(
        captured[start..start + expected_window.len()],
        expected_window[..],
        "{captured:?}"
    );
}

#[tokio::test]
async fn s27_a_nested_revert_with_no_outer_retry_reverts_the_whole_flow() {
    // TaskFlow's default would leave task1 SUCCESS and report the flow REVERTED; flowstate
    // always defers (TaskFlow's defer_reverts=True), so everything is reverted.
    let h = serial();
    h.engine.register(
        Flow::linear("f").add(progressing("task1")).add(
            Flow::linear("inner")
                .retry(RetryAtom::new("r1", Times::new(1)))
                .add(failing("task2")),
        ),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let captured = h.capture.captured();
    assert!(
        captured.contains(&"task1 REVERTED".to_owned()),
        "{captured:?}"
    );
    assert!(captured.contains(&"r1 REVERTED".to_owned()), "{captured:?}");
}

#[tokio::test]
async fn s28_revert_all_ignores_the_outer_retry() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", Times::new(3)))
            .add(progressing("t1"))
            .add(
                Flow::linear("inner")
                    .retry(RetryAtom::new("r2", AlwaysRevertAll))
                    .add(failing("t2")),
            ),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let captured = h.capture.captured();
    assert!(
        !captured.iter().any(|l| l.ends_with("RETRYING")),
        "{captured:?}"
    );
    for atom in ["t2", "r2", "t1", "r1"] {
        assert!(
            captured.contains(&format!("{atom} REVERTED")),
            "{atom}: {captured:?}"
        );
    }
}

#[tokio::test]
async fn s29_for_each_tries_every_value_then_reverts() {
    let h = serial();
    let values = [3, 2, 3, 5].map(|v| json!(v)).to_vec();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", ForEach::new(values)).provides("value"))
            .add(echo("seen", "value"))
            .add(failing("fail")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let tried: Vec<String> = h.lines_starting("seen SUCCESS");
    assert_eq!(
        tried,
        s("seen SUCCESS(3), seen SUCCESS(2), seen SUCCESS(3), seen SUCCESS(5)")
    );
}

#[tokio::test]
async fn s29b_for_each_over_nothing_fails_with_not_found() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", ForEach::new(Vec::new())))
            .add(progressing("t")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(outcome.failures.len(), 1);
    assert_eq!(outcome.failures[0].1.kind, "NotFound");
    assert!(outcome.failures[0]
        .1
        .message
        .starts_with("No elements left"));
}

#[tokio::test]
async fn s29c_parameterized_for_each_reads_its_values_from_the_inputs() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", ParameterizedForEach::new("values")).provides("value"))
            .add(echo("seen", "value"))
            .add(failing("fail")),
    );
    let outcome = h
        .engine
        .execute("f", inputs(&[("values", json!(["a", "b"]))]))
        .await
        .expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    let tried: Vec<String> = h.lines_starting("seen SUCCESS");
    assert_eq!(tried, s(r#"seen SUCCESS("a"), seen SUCCESS("b")"#));
}

#[tokio::test]
async fn s30_atoms_that_never_ran_emit_nothing_on_retry() {
    let h = serial();
    h.engine.register(
        Flow::linear("f")
            .retry(RetryAtom::new("r1", Times::new(2)))
            .add(flaky("c", 1))
            .add(progressing("t1")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let captured = h.capture.captured();
    let retrying = captured
        .iter()
        .position(|l| l == "r1 RETRYING")
        .expect("retried");
    assert_eq!(
        captured[retrying + 1..retrying + 3],
        s("c PENDING, r1 RUNNING")[..],
        "{captured:?}"
    );
}

#[tokio::test]
async fn s31_a_retry_whose_execute_fails_reverts_the_flow_with_its_failure() {
    let h = serial();
    h.engine.register(
        Flow::linear("f").add(progressing("before")).add(
            Flow::linear("inner")
                .retry(RetryAtom::new("r1", ForEach::new(Vec::new())))
                .add(progressing("t")),
        ),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Reverted);
    assert_eq!(
        outcome
            .failures
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>(),
        ["r1"]
    );
    assert!(h.capture.captured().contains(&"before REVERTED".to_owned()));
}

/// Times(n) that counts how often it was asked about a failure.
struct Counting {
    inner: Times,
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl flowstate_taskgraph::RetryController for Counting {
    fn execute(
        &self,
        history: &flowstate_taskgraph::retry::History<'_>,
        inputs: &flowstate_taskgraph::Inputs,
    ) -> Result<serde_json::Value, flowstate_core::Failure> {
        self.inner.execute(history, inputs)
    }

    fn on_failure(
        &self,
        history: &flowstate_taskgraph::retry::History<'_>,
        inputs: &flowstate_taskgraph::Inputs,
    ) -> flowstate_taskgraph::Decision {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.on_failure(history, inputs)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_failures_in_one_retry_scope_retry_once() {
    // `b` fails only after `a`'s failure is recorded, so its failure arrives while the scope
    // is already being reverted for a retry: the controller is not asked again, and the
    // attempt is retried once.
    let h = parallel();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a_failed = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = a_failed.clone();
    let b_runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b_count = b_runs.clone();
    let a_runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a_count = a_runs.clone();
    let a = flowstate_taskgraph::task_fn("a", move |_c, _i| {
        let first = a_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let signal = signal.clone();
        async move {
            if first {
                signal.notify_one();
                Err(flowstate_core::Failure::new("RuntimeError", "a"))
            } else {
                Ok(json!(5))
            }
        }
    });
    let b = flowstate_taskgraph::task_fn("b", move |_c, _i| {
        let first = b_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let waiter = a_failed.clone();
        async move {
            if first {
                waiter.notified().await;
                tokio::task::yield_now().await;
                Err(flowstate_core::Failure::new("RuntimeError", "b"))
            } else {
                Ok(json!(5))
            }
        }
    });
    h.engine.register(
        Flow::unordered("f")
            .retry(RetryAtom::new(
                "r1",
                Counting {
                    inner: Times::new(2),
                    asked: asked.clone(),
                },
            ))
            .add(a)
            .add(b)
            .add(progressing("c")),
    );
    let outcome = h.engine.execute("f", inputs(&[])).await.expect("runs");
    assert_eq!(outcome.state, FlowState::Success);
    let captured = h.capture.captured();
    assert_eq!(
        captured.iter().filter(|l| *l == "r1 RETRYING").count(),
        1,
        "{captured:?}"
    );
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the controller was asked once"
    );
    assert!(captured.contains(&"b FAILURE".to_owned()), "{captured:?}");
}
