//! Steps as users write them: a specification (inputs, outputs, policy) built with [`Step`],
//! and an async body, optionally with a compensation.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::{Failure, FlowId, InputSpec, Predicate, RetryPolicy, StepSpec};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a body returns: an object of its outputs, or why it failed.
pub type StepResult = Result<Value, StepError>;

/// A boxed body future.
pub type StepFuture = Pin<Box<dyn Future<Output = StepResult> + Send>>;

/// A step's body.
pub type Body = Arc<dyn Fn(StepContext) -> StepFuture + Send + Sync>;

/// A step's compensation: gets the context and the outputs the item produced.
pub type Compensation = Arc<dyn Fn(StepContext, Value) -> StepFuture + Send + Sync>;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepError {
    /// Another attempt may succeed (within the step's retry policy).
    Retryable(Failure),
    /// No attempt will: the item fails at once.
    Permanent(Failure),
}

impl StepError {
    /// A failure another attempt may fix.
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retryable(Failure::new(kind, message))
    }

    /// A failure no attempt will fix.
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent(Failure::new(kind, message))
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable(failure) => write!(f, "{failure} (retryable)"),
            Self::Permanent(failure) => write!(f, "{failure}"),
        }
    }
}

impl std::error::Error for StepError {}

/// What a body knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The flow.
    pub flow: FlowId,
    /// The step.
    pub step: String,
    /// The work item (0 unless the step is mapped).
    pub item: u32,
    /// The attempt, from 1. An attempt that ran in a process that died runs again with the
    /// same number.
    pub attempt: u32,
    /// Whether this runs the step's compensation (its attempts are numbered on their own).
    pub compensating: bool,
    /// The item's inputs (a mapped step sees its element under the list's name).
    pub inputs: BTreeMap<String, Value>,
}

impl StepContext {
    /// The same for every attempt of this item: give it to the outside world so that an
    /// attempt repeated after a crash or a retry does not act twice.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        if self.compensating {
            // Distinct from the body's, or a provider would take the refund for a replay
            // of the charge.
            format!("{}/{}/{}/compensate", self.flow, self.step, self.item)
        } else {
            format!("{}/{}/{}", self.flow, self.step, self.item)
        }
    }

    /// Identifies this attempt: a report for another attempt is refused as stale.
    #[must_use]
    pub fn completion_token(&self) -> String {
        if self.compensating {
            format!(
                "{}/{}/{}/compensate/{}",
                self.flow, self.step, self.item, self.attempt
            )
        } else {
            format!("{}/{}/{}/{}", self.flow, self.step, self.item, self.attempt)
        }
    }

    /// An input, decoded; absent or of another shape is a permanent failure.
    pub fn input<T: DeserializeOwned>(&self, name: &str) -> Result<T, StepError> {
        let value = self.inputs.get(name).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|error| {
            StepError::permanent(
                "BadInput",
                format!("input {name:?} of step {:?}: {error}", self.step),
            )
        })
    }
}

/// A step: its specification and code. Build with [`Step::new`].
#[derive(Clone)]
pub struct Step {
    pub(crate) spec: StepSpec,
    pub(crate) body: Option<Body>,
    pub(crate) compensation: Option<Compensation>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Step {
    /// A step named `name`, version 1, with no inputs or outputs yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: StepSpec {
                name: name.into(),
                version: 1,
                inputs: Vec::new(),
                outputs: Vec::new(),
                map_over: None,
                parallelism: 1,
                predicate: None,
                retry: RetryPolicy::default(),
                timeout_ms: None,
                compensable: false,
            },
            body: None,
            compensation: None,
        }
    }

    /// A step from a specification (for example one received over HTTP), with its body.
    pub fn from_spec(spec: StepSpec) -> Self {
        Self {
            spec,
            body: None,
            compensation: None,
        }
    }

    /// Its version (a running flow keeps the version it was planned with).
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.spec.version = version;
        self
    }

    /// A required input.
    #[must_use]
    pub fn input(mut self, name: impl Into<String>) -> Self {
        self.spec.inputs.push(InputSpec {
            name: name.into(),
            optional: false,
            default: None,
        });
        self
    }

    /// An optional input; `default` is used when nothing produced it (`None`: left out).
    #[must_use]
    pub fn optional_input(mut self, name: impl Into<String>, default: Option<Value>) -> Self {
        self.spec.inputs.push(InputSpec {
            name: name.into(),
            optional: true,
            default,
        });
        self
    }

    /// An output.
    #[must_use]
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.spec.outputs.push(name.into());
        self
    }

    /// Makes it a mapped step over the (required) list input `input`, running at most
    /// `parallelism` items at once.
    #[must_use]
    pub fn map_over(mut self, input: impl Into<String>, parallelism: u32) -> Self {
        self.spec.map_over = Some(input.into());
        self.spec.parallelism = parallelism;
        self
    }

    /// Runs only if `predicate` holds over its inputs.
    #[must_use]
    pub fn when(mut self, predicate: Predicate) -> Self {
        self.spec.predicate = Some(predicate);
        self
    }

    /// Retries: `max_attempts` in all, exponential backoff from `initial` up to `max`, with
    /// jitter.
    #[must_use]
    pub fn retry(mut self, max_attempts: u32, initial: Duration, max: Duration) -> Self {
        self.spec.retry = RetryPolicy {
            max_attempts,
            initial_backoff_ms: duration_ms(initial),
            max_backoff_ms: duration_ms(max),
            jitter: true,
        };
        self
    }

    /// The whole retry policy.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.spec.retry = policy;
        self
    }

    /// Longest an attempt may take (a slower one fails with kind `Timeout`, retryable).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout_ms = Some(duration_ms(timeout));
        self
    }

    /// The body.
    #[must_use]
    pub fn body<F, Fut>(mut self, body: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        self.body = Some(Arc::new(move |ctx| Box::pin(body(ctx))));
        self
    }

    /// The compensation, run with the outputs of each succeeded item when the flow fails.
    #[must_use]
    pub fn compensate<F, Fut>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        self.spec.compensable = true;
        self.compensation = Some(Arc::new(move |ctx, outputs| {
            Box::pin(compensation(ctx, outputs))
        }));
        self
    }

    /// Its specification.
    #[must_use]
    pub fn spec(&self) -> &StepSpec {
        &self.spec
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
