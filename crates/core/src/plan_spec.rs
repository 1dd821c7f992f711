//! What a goal-driven plan is: the specs of its steps (inputs, outputs, predicate, retry policy,
//! mapping, compensation), its goals, and the execution plan a flow stores whole in its
//! `plan_started` event, with the limits on their size.
//!
//! **What this module owns:** plan data as it is written and stored, and the pure functions over
//! it (a retry's backoff, a predicate's value over a step's inputs). It never holds or changes
//! a flow's state (that is the plan record, `kind/plan.rs`), never decides what happens next
//! (that is `flowstate-plan`'s runtime) and never runs a step. Its items are public as
//! `crate::plan::*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most work items one step may have (a mapped step over a longer list fails).
pub const MAX_WORK_ITEMS_PER_STEP: usize = 10_000;

/// Most attempts a retry policy may allow per work item.
pub const MAX_STEP_ATTEMPTS: u32 = 1_000;

/// Most steps one plan may hold.
pub const MAX_PLAN_STEPS: usize = 10_000;

/// An input of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The attribute it reads.
    pub name: String,
    /// Whether the step may run without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// For an optional input: the value used when no provider produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// How a failed attempt is retried: exponential backoff from `initial_backoff_ms`, doubling,
/// capped at `max_backoff_ms`, with full jitter when `jitter` is set (the delay is drawn
/// uniformly between half and all of the backoff, so retries of many flows spread out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, 1 to [`MAX_STEP_ATTEMPTS`] (1: no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff_ms: u64,
    /// Longest delay between attempts.
    pub max_backoff_ms: u64,
    /// Whether delays are jittered.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff_ms: 100,
            max_backoff_ms: 60_000,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), given a uniform random number.
    #[must_use]
    pub fn backoff_ms(&self, attempt: u32, random: u64) -> u64 {
        let doublings = attempt.saturating_sub(1).min(40);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.max_backoff_ms);
        if !self.jitter || base < 2 {
            return base;
        }
        let half = base / 2;
        half + random % (base - half + 1)
    }
}

/// A condition over a step's inputs; the step runs only if it holds. Data, not code, so that
/// it is stored with the plan and a step registered over HTTP can have one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Predicate {
    /// The input has a value (not null).
    Exists {
        /// The input.
        input: String,
    },
    /// The input equals the value.
    Equals {
        /// The input.
        input: String,
        /// The value.
        value: serde_json::Value,
    },
    /// The input is a number greater than the value.
    GreaterThan {
        /// The input.
        input: String,
        /// The bound.
        value: f64,
    },
    /// The input is a number less than the value.
    LessThan {
        /// The input.
        input: String,
        /// The bound.
        value: f64,
    },
    /// The input is true, a non-zero number, a non-empty string, list or object.
    Truthy {
        /// The input.
        input: String,
    },
    /// Every condition holds.
    All {
        /// The conditions.
        of: Vec<Predicate>,
    },
    /// Some condition holds.
    Any {
        /// The conditions.
        of: Vec<Predicate>,
    },
    /// The condition does not hold.
    Not {
        /// The condition.
        not: Box<Predicate>,
    },
}

impl Predicate {
    /// Evaluates the condition over a step's inputs.
    #[must_use]
    pub fn holds(&self, inputs: &BTreeMap<String, serde_json::Value>) -> bool {
        use serde_json::Value;
        let get = |name: &str| inputs.get(name).filter(|value| !value.is_null());
        match self {
            Self::Exists { input } => get(input).is_some(),
            Self::Equals { input, value } => inputs.get(input).unwrap_or(&Value::Null) == value,
            Self::GreaterThan { input, value } => get(input)
                .and_then(Value::as_f64)
                .is_some_and(|found| found > *value),
            Self::LessThan { input, value } => get(input)
                .and_then(Value::as_f64)
                .is_some_and(|found| found < *value),
            Self::Truthy { input } => match get(input) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(flag)) => *flag,
                Some(Value::Number(number)) => number.as_f64().is_some_and(|n| n != 0.0),
                Some(Value::String(text)) => !text.is_empty(),
                Some(Value::Array(items)) => !items.is_empty(),
                Some(Value::Object(fields)) => !fields.is_empty(),
            },
            Self::All { of } => of.iter().all(|p| p.holds(inputs)),
            Self::Any { of } => of.iter().any(|p| p.holds(inputs)),
            Self::Not { not } => !not.holds(inputs),
        }
    }

    /// Every input the condition reads.
    #[must_use]
    pub fn inputs(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_inputs(&mut names);
        names
    }

    fn collect_inputs<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Self::Exists { input }
            | Self::Equals { input, .. }
            | Self::GreaterThan { input, .. }
            | Self::LessThan { input, .. }
            | Self::Truthy { input } => names.push(input),
            Self::All { of } | Self::Any { of } => {
                of.iter().for_each(|p| p.collect_inputs(names));
            }
            Self::Not { not } => not.collect_inputs(names),
        }
    }
}

/// A step as a plan stores it: everything needed to run it except its code, which the engine
/// finds by name and version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Its name, unique in a registry.
    pub name: String,
    /// Its version: a running flow keeps the version it was planned with.
    pub version: u32,
    /// What it reads.
    pub inputs: Vec<InputSpec>,
    /// The attributes it produces.
    pub outputs: Vec<String>,
    /// A mapped step: the (required) input whose list value gives one work item per element.
    /// Each output becomes a list, in the order of the elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_over: Option<String>,
    /// For a mapped step: most work items running at once.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Runs only if this holds over its inputs; otherwise it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Predicate>,
    /// How failed attempts are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Longest an attempt may take; a slower one fails with kind `Timeout` (retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether it has a compensation, run (in reverse order of success) when the flow fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensable: bool,
}

const fn one() -> u32 {
    1
}

impl StepSpec {
    /// The input named `name`.
    #[must_use]
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|input| input.name == name)
    }
}

/// A goal: a step to run or an attribute to produce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "goal", content = "name", rename_all = "snake_case")]
pub enum Goal {
    /// This step must complete.
    Step(String),
    /// This attribute must be set.
    Attribute(String),
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step(name) => write!(f, "step {name:?}"),
            Self::Attribute(name) => write!(f, "attribute {name:?}"),
        }
    }
}

/// What a flow runs: its goals, the steps that reach them (whole definitions, so a flow never
/// changes under later registrations and replay needs no registry), and which step provides
/// each attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    /// The goals, as asked.
    pub goals: Vec<Goal>,
    /// The planned steps, by name.
    pub steps: BTreeMap<String, StepSpec>,
    /// The chosen provider of each attribute a planned step reads (absent: an initial input,
    /// or an optional input nobody provides).
    pub providers: BTreeMap<String, String>,
    /// Initial inputs the plan uses.
    pub inputs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            jitter: false,
        };
        let delays: Vec<u64> = (1..=6).map(|n| policy.backoff_ms(n, 0)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        let jittered = RetryPolicy {
            jitter: true,
            ..policy
        };
        for random in [0, 1, 77, u64::MAX] {
            let delay = jittered.backoff_ms(3, random);
            assert!((200..=400).contains(&delay), "{delay}");
        }
        assert_eq!(jittered.backoff_ms(u32::MAX, 0), 500);
    }

    #[test]
    fn predicates_read_inputs() {
        let inputs: BTreeMap<String, serde_json::Value> = [
            ("amount".to_owned(), serde_json::json!(150)),
            ("country".to_owned(), serde_json::json!("NL")),
            ("note".to_owned(), serde_json::Value::Null),
        ]
        .into_iter()
        .collect();
        let large = Predicate::GreaterThan {
            input: "amount".into(),
            value: 100.0,
        };
        assert!(large.holds(&inputs));
        assert!(!Predicate::Exists {
            input: "note".into()
        }
        .holds(&inputs));
        let both = Predicate::All {
            of: vec![
                large.clone(),
                Predicate::Equals {
                    input: "country".into(),
                    value: serde_json::json!("NL"),
                },
            ],
        };
        assert!(both.holds(&inputs));
        assert!(!Predicate::Not {
            not: Box::new(both.clone())
        }
        .holds(&inputs));
        assert_eq!(both.inputs(), ["amount", "country"]);
    }
}
