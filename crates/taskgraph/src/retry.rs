//! Retry controllers: atoms that decide, when something in their scope fails, whether to run
//! the scope again (RETRY), to revert it and let the enclosing retry decide (REVERT), or to
//! revert the whole flow (REVERT_ALL), exactly as TaskFlow's controllers do.
//!
//! One deliberate difference from TaskFlow's default: REVERT always defers to the enclosing
//! retry (TaskFlow's `defer_reverts=True`), and with no enclosing retry the whole flow is
//! reverted. TaskFlow's default reverts only the scope and can report a flow REVERTED while
//! outer tasks stay SUCCESS; its own documentation calls that "generally not the desired
//! behavior".

use std::sync::Arc;

use flowstate_core::{Failure, RetryAttempt};
use serde_json::Value;

use crate::task::Inputs;

/// What to do about a failure in a retry's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Revert the scope and run it again.
    Retry,
    /// Revert the scope and let the enclosing retry (or the flow) decide.
    Revert,
    /// Revert the whole flow.
    RevertAll,
}

/// What a controller sees: the finished attempts, and the failures of the current one.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Finished attempts, oldest first.
    pub attempts: &'a [RetryAttempt],
    /// The failures of the attempt in progress, by atom (empty when executing).
    pub current: &'a std::collections::BTreeMap<String, Failure>,
}

impl History<'_> {
    /// Attempts so far, counting the one in progress when it has failed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.attempts.len() + usize::from(!self.current.is_empty())
    }

    /// Whether no attempt has finished or failed yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A retry controller.
pub trait RetryController: Send + Sync + 'static {
    /// The value provided to the scope for the next attempt (TaskFlow's `execute`).
    fn execute(&self, history: &History<'_>, inputs: &Inputs) -> Result<Value, Failure>;

    /// The decision about a failure in the scope.
    fn on_failure(&self, history: &History<'_>, inputs: &Inputs) -> Decision;

    /// The inputs `execute` and `on_failure` need.
    fn requires(&self) -> Vec<String> {
        Vec::new()
    }
}

fn give_up(revert_all: bool) -> Decision {
    if revert_all {
        Decision::RevertAll
    } else {
        Decision::Revert
    }
}

/// Always revert the scope (and defer to the enclosing retry).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysRevert;

impl RetryController for AlwaysRevert {
    fn execute(&self, _: &History<'_>, _: &Inputs) -> Result<Value, Failure> {
        Ok(Value::Null)
    }

    fn on_failure(&self, _: &History<'_>, _: &Inputs) -> Decision {
        Decision::Revert
    }
}

/// Always revert the whole flow.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysRevertAll;

impl RetryController for AlwaysRevertAll {
    fn execute(&self, _: &History<'_>, _: &Inputs) -> Result<Value, Failure> {
        Ok(Value::Null)
    }

    fn on_failure(&self, _: &History<'_>, _: &Inputs) -> Decision {
        Decision::RevertAll
    }
}

/// Up to `attempts` attempts in all (so 0 and 1 mean no retry); provides the attempt number.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Total attempts.
    pub attempts: usize,
    /// Revert the whole flow, rather than defer, when attempts run out.
    pub revert_all: bool,
}

impl Times {
    /// `attempts` attempts in all, then defer to the enclosing retry.
    #[must_use]
    pub fn new(attempts: usize) -> Self {
        Self {
            attempts,
            revert_all: false,
        }
    }
}

impl RetryController for Times {
    fn execute(&self, history: &History<'_>, _: &Inputs) -> Result<Value, Failure> {
        Ok(Value::from(history.attempts.len() + 1))
    }

    fn on_failure(&self, history: &History<'_>, _: &Inputs) -> Decision {
        if history.len() < self.attempts {
            Decision::Retry
        } else {
            give_up(self.revert_all)
        }
    }
}

/// The values not yet tried, as a multiset difference (so `[3, 2, 3, 5]` tries 3, 2, 3, 5).
fn remaining(values: &[Value], history: &History<'_>) -> Vec<Value> {
    let mut left = values.to_vec();
    for attempt in history.attempts {
        if let Some(index) = left.iter().position(|v| *v == attempt.value) {
            left.remove(index);
        }
    }
    left
}

fn next_value(values: &[Value], history: &History<'_>) -> Result<Value, Failure> {
    remaining(values, history)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Failure::new(
                "NotFound",
                "No elements left in collection of iterable for retry controller",
            )
        })
}

fn decide_on_values(values: &[Value], history: &History<'_>, revert_all: bool) -> Decision {
    // The value of the failed attempt is still "remaining" until it moves into the history.
    if remaining(values, history).len() > 1 {
        Decision::Retry
    } else {
        give_up(revert_all)
    }
}

/// Tries each value in turn; provides the value.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// The values.
    pub values: Vec<Value>,
    /// Revert the whole flow, rather than defer, when values run out.
    pub revert_all: bool,
}

impl ForEach {
    /// Tries `values` in order.
    #[must_use]
    pub fn new(values: Vec<Value>) -> Self {
        Self {
            values,
            revert_all: false,
        }
    }
}

impl RetryController for ForEach {
    fn execute(&self, history: &History<'_>, _: &Inputs) -> Result<Value, Failure> {
        next_value(&self.values, history)
    }

    fn on_failure(&self, history: &History<'_>, _: &Inputs) -> Decision {
        decide_on_values(&self.values, history, self.revert_all)
    }
}

/// Like [`ForEach`], with the values read from the input `values`.
#[derive(Debug, Clone)]
pub struct ParameterizedForEach {
    /// The input holding the list of values.
    pub input: String,
    /// Revert the whole flow, rather than defer, when values run out.
    pub revert_all: bool,
}

impl ParameterizedForEach {
    /// Tries the values of the list input `input` in order.
    #[must_use]
    pub fn new(input: impl Into<String>) -> Self {
        Self {
            input: input.into(),
            revert_all: false,
        }
    }

    fn values(&self, inputs: &Inputs) -> Vec<Value> {
        match inputs.get(&self.input) {
            Some(Value::Array(values)) => values.clone(),
            _ => Vec::new(),
        }
    }
}

impl RetryController for ParameterizedForEach {
    fn execute(&self, history: &History<'_>, inputs: &Inputs) -> Result<Value, Failure> {
        next_value(&self.values(inputs), history)
    }

    fn on_failure(&self, history: &History<'_>, inputs: &Inputs) -> Decision {
        decide_on_values(&self.values(inputs), history, self.revert_all)
    }

    fn requires(&self) -> Vec<String> {
        vec![self.input.clone()]
    }
}

/// A retry declared on a flow: the controller, its name, and what its value is stored as.
#[derive(Clone)]
pub struct RetryAtom {
    pub(crate) name: String,
    pub(crate) provides: Option<String>,
    pub(crate) rebind: std::collections::BTreeMap<String, String>,
    pub(crate) controller: Arc<dyn RetryController>,
}

impl std::fmt::Debug for RetryAtom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryAtom")
            .field("name", &self.name)
            .field("provides", &self.provides)
            .finish_non_exhaustive()
    }
}

impl RetryAtom {
    /// A retry named `name` with `controller`.
    pub fn new(name: impl Into<String>, controller: impl RetryController) -> Self {
        Self {
            name: name.into(),
            provides: None,
            rebind: std::collections::BTreeMap::new(),
            controller: Arc::new(controller),
        }
    }

    /// Stores each attempt's value under `name` for the scope to read.
    #[must_use]
    pub fn provides(mut self, name: impl Into<String>) -> Self {
        self.provides = Some(name.into());
        self
    }

    /// Reads the controller's input `argument` from the stored name `from`.
    #[must_use]
    pub fn rebind(mut self, argument: impl Into<String>, from: impl Into<String>) -> Self {
        self.rebind.insert(argument.into(), from.into());
        self
    }

    /// The atom's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn lookups(&self) -> Vec<(String, String)> {
        self.controller
            .requires()
            .into_iter()
            .map(|argument| {
                let stored = self.rebind.get(&argument).unwrap_or(&argument).clone();
                (argument, stored)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn attempt(value: Value) -> RetryAttempt {
        RetryAttempt {
            value,
            failures: BTreeMap::from([("t".to_owned(), Failure::new("Woot", "x"))]),
        }
    }

    #[test]
    fn times_counts_total_attempts() {
        let failed = BTreeMap::from([("t".to_owned(), Failure::new("Woot", "x"))]);
        let none = Inputs::new();
        let times = Times::new(2);
        let first = History {
            attempts: &[],
            current: &failed,
        };
        assert_eq!(times.on_failure(&first, &none), Decision::Retry);
        let past = [attempt(Value::from(1))];
        let second = History {
            attempts: &past,
            current: &failed,
        };
        assert_eq!(times.on_failure(&second, &none), Decision::Revert);
        assert_eq!(
            times
                .execute(
                    &History {
                        attempts: &past,
                        current: &BTreeMap::new()
                    },
                    &none
                )
                .ok(),
            Some(Value::from(2))
        );
        assert_eq!(Times::new(1).on_failure(&first, &none), Decision::Revert);
        assert_eq!(Times::new(0).on_failure(&first, &none), Decision::Revert);
    }

    #[test]
    fn for_each_tries_a_multiset_in_order_then_runs_out() {
        let values: Vec<Value> = [3, 2, 3, 5].into_iter().map(Value::from).collect();
        let each = ForEach::new(values);
        let empty = BTreeMap::new();
        let mut past = Vec::new();
        let mut tried = Vec::new();
        for _ in 0..4 {
            let history = History {
                attempts: &past,
                current: &empty,
            };
            let value = each
                .execute(&history, &Inputs::new())
                .expect("a value is left");
            tried.push(value.clone());
            past.push(attempt(value));
        }
        assert_eq!(tried, [3, 2, 3, 5].map(Value::from));
        let history = History {
            attempts: &past,
            current: &empty,
        };
        let error = each
            .execute(&history, &Inputs::new())
            .expect_err("none left");
        assert!(error.message.starts_with("No elements left"));
        assert!(ForEach::new(Vec::new())
            .execute(
                &History {
                    attempts: &[],
                    current: &empty
                },
                &Inputs::new()
            )
            .is_err());
    }
}
