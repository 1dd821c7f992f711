//! Shared fixtures for the scenario tests, after TaskFlow's test utilities: tasks that
//! succeed with 5, fail with "Woot!", or fail to revert with "Gotcha!".

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use flowstate_core::{Failure, ManualClock, Timestamp};
use flowstate_store::MemoryStore;
use flowstate_taskgraph::{
    task_fn, task_fn_with_revert, CaptureListener, Engine, Inputs, TaskAtom,
};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Harness {
    pub engine: Engine,
    pub capture: Arc<CaptureListener>,
}

impl Harness {
    /// The captured transitions that start with `prefix`, in order.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.capture
            .captured()
            .into_iter()
            .filter(|line| line.starts_with(prefix))
            .collect()
    }
}

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_micros(
        1_767_225_600_000_000,
    )))
}

pub fn serial() -> Harness {
    let clock = clock();
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let engine = Engine::serial(store, clock);
    let capture = Arc::new(CaptureListener::default());
    engine.listen(capture.clone());
    Harness { engine, capture }
}

pub fn parallel() -> Harness {
    let clock = clock();
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let engine = Engine::new(store, clock);
    let capture = Arc::new(CaptureListener::default());
    engine.listen(capture.clone());
    Harness { engine, capture }
}

/// Succeeds with 5.
pub fn progressing(name: &str) -> TaskAtom {
    task_fn(name, |_ctx, _inputs| async { Ok(json!(5)) })
}

/// Fails with RuntimeError("Woot!").
pub fn failing(name: &str) -> TaskAtom {
    task_fn(name, |_ctx, _inputs| async {
        Err(Failure::new("RuntimeError", "Woot!"))
    })
}

/// Succeeds with 5, but its revert fails with RuntimeError("Gotcha!").
pub fn nasty(name: &str) -> TaskAtom {
    task_fn_with_revert(
        name,
        |_ctx, _inputs| async { Ok(json!(5)) },
        |_ctx, _inputs, _outcome| async { Err(Failure::new("RuntimeError", "Gotcha!")) },
    )
}

/// Fails when its inputs x and y differ.
pub fn conditional(name: &str) -> TaskAtom {
    task_fn(name, |_ctx, inputs: Inputs| async move {
        if inputs.get("x") == inputs.get("y") {
            Ok(json!(5))
        } else {
            Err(Failure::new("RuntimeError", "Woot!"))
        }
    })
    .requires(["x", "y"])
}

/// Records every execute call's idempotency key.
pub fn counting(name: &str, calls: Arc<Mutex<Vec<String>>>) -> TaskAtom {
    task_fn(name, move |ctx, _inputs| {
        let calls = calls.clone();
        async move {
            if let Ok(mut calls) = calls.lock() {
                calls.push(ctx.idempotency_key.clone());
            }
            Ok(Value::from(1))
        }
    })
}

pub fn inputs(pairs: &[(&str, Value)]) -> Inputs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// `a✓` shorthand: the RUNNING and SUCCESS(5) lines of a progressing task.
pub fn ok(name: &str) -> Vec<String> {
    vec![format!("{name} RUNNING"), format!("{name} SUCCESS(5)")]
}

pub fn lines(parts: &[&[String]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

pub fn s(text: &str) -> Vec<String> {
    text.split(',')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Fails its first `failures` executions with "Woot!", then succeeds with 5.
pub fn flaky(name: &str, failures: usize) -> TaskAtom {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    task_fn(name, move |_ctx, _inputs| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n < failures {
                Err(Failure::new("RuntimeError", "Woot!"))
            } else {
                Ok(json!(5))
            }
        }
    })
}

/// Returns its input `value` (to see what a retry provided).
pub fn echo(name: &str, input: &str) -> TaskAtom {
    let input = input.to_owned();
    let key = input.clone();
    task_fn(name, move |_ctx, inputs: Inputs| {
        let value = inputs.get(&key).cloned().unwrap_or_default();
        async move { Ok(value) }
    })
    .requires([input])
}

/// Succeeds with 5; its first revert fails with "Gotcha!", later ones succeed. `reverts`
/// counts revert calls.
pub fn revert_fails_once(name: &str, reverts: Arc<std::sync::atomic::AtomicUsize>) -> TaskAtom {
    task_fn_with_revert(
        name,
        |_ctx, _inputs| async { Ok(json!(5)) },
        move |_ctx, _inputs, _outcome| {
            let n = reverts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Failure::new("RuntimeError", "Gotcha!"))
                } else {
                    Ok(())
                }
            }
        },
    )
}
