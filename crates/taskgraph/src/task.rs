//! Atoms: the [`Task`] trait, task declarations ([`TaskAtom`]) with requires, provides, rebind
//! and inject, tasks from closures, and the map and reduce helpers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::{Failure, FlowId};
use serde_json::Value;

/// Named values passed to `execute` and `revert`.
pub type Inputs = BTreeMap<String, Value>;

/// What a task knows about the run it is part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    /// The flow.
    pub flow: FlowId,
    /// The atom's name.
    pub atom: String,
    /// Which execution of the atom this is (1 for the first). A run that resumes an atom
    /// interrupted by a crash gets the same attempt number as the interrupted run.
    pub attempt: u32,
    /// `FLOW/ATOM/ATTEMPT`: the same for every run of one attempt, so external systems can
    /// deduplicate the at-least-once executions.
    pub idempotency_key: String,
}

/// What `revert` is told about the execution it undoes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `execute` returned this.
    Result(Value),
    /// `execute` failed like this.
    Failure(Failure),
}

/// A unit of work with an optional undo.
///
/// `execute` may run more than once for one attempt (after a crash); make it idempotent with
/// [`TaskContext::idempotency_key`]. Errors are returned as [`Failure`]s, which are stored.
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The default name of atoms made from this task.
    fn name(&self) -> String {
        std::any::type_name::<Self>()
            .rsplit("::")
            .next()
            .unwrap_or("task")
            .to_owned()
    }

    /// The inputs `execute` needs (before rebinding).
    fn requires(&self) -> Vec<String> {
        Vec::new()
    }

    /// Inputs that only `revert` needs.
    fn revert_requires(&self) -> Vec<String> {
        Vec::new()
    }

    /// What the result is stored as.
    fn provides(&self) -> Provides {
        Provides::Nothing
    }

    /// Does the work.
    async fn execute(&self, ctx: &TaskContext, inputs: Inputs) -> Result<Value, Failure>;

    /// Undoes it. `inputs` has both the execute and the revert inputs.
    async fn revert(
        &self,
        _ctx: &TaskContext,
        _inputs: Inputs,
        _outcome: Outcome,
    ) -> Result<(), Failure> {
        Ok(())
    }
}

/// How an atom's result becomes named values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Provides {
    /// The result is not stored under any name.
    #[default]
    Nothing,
    /// The whole result under one name.
    Whole(String),
    /// A JSON object result, split by key: each name gets the field of that name.
    Keys(Vec<String>),
    /// A JSON array result, split by position.
    Positions(Vec<String>),
}

impl Provides {
    /// The names provided.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Nothing => Vec::new(),
            Self::Whole(name) => vec![name.clone()],
            Self::Keys(names) | Self::Positions(names) => names.clone(),
        }
    }

    /// The value provided under `name`, taken from `result`.
    #[must_use]
    pub fn extract(&self, result: &Value, name: &str) -> Option<Value> {
        match self {
            Self::Nothing => None,
            Self::Whole(whole) => (whole == name).then(|| result.clone()),
            Self::Keys(names) => names
                .iter()
                .any(|n| n == name)
                .then(|| result.get(name).cloned())
                .flatten(),
            Self::Positions(names) => names
                .iter()
                .position(|n| n == name)
                .and_then(|index| result.get(index).cloned()),
        }
    }
}

impl From<&str> for Provides {
    fn from(name: &str) -> Self {
        Self::Whole(name.to_owned())
    }
}

impl From<String> for Provides {
    fn from(name: String) -> Self {
        Self::Whole(name)
    }
}

/// A task declared in a flow: the task plus how its inputs and outputs are named.
#[derive(Clone)]
pub struct TaskAtom {
    pub(crate) name: String,
    pub(crate) requires: Vec<String>,
    pub(crate) revert_requires: Vec<String>,
    pub(crate) provides: Provides,
    /// Argument name → stored name.
    pub(crate) rebind: BTreeMap<String, String>,
    pub(crate) inject: Inputs,
    pub(crate) task: Arc<dyn Task>,
}

impl std::fmt::Debug for TaskAtom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskAtom")
            .field("name", &self.name)
            .field("requires", &self.requires)
            .field("provides", &self.provides)
            .finish_non_exhaustive()
    }
}

impl TaskAtom {
    /// Declares `task` with the name and names it reports itself.
    pub fn new(task: impl Task) -> Self {
        Self {
            name: task.name(),
            requires: task.requires(),
            revert_requires: task.revert_requires(),
            provides: task.provides(),
            rebind: BTreeMap::new(),
            inject: Inputs::new(),
            task: Arc::new(task),
        }
    }

    /// Renames the atom.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds inputs that `execute` needs.
    #[must_use]
    pub fn requires<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.requires.extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds inputs that only `revert` needs.
    #[must_use]
    pub fn revert_requires<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.revert_requires
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets what the result is stored as.
    #[must_use]
    pub fn provides(mut self, provides: impl Into<Provides>) -> Self {
        self.provides = provides.into();
        self
    }

    /// Reads the input `argument` from the stored name `from`.
    #[must_use]
    pub fn rebind(mut self, argument: impl Into<String>, from: impl Into<String>) -> Self {
        self.rebind.insert(argument.into(), from.into());
        self
    }

    /// Gives the input `argument` a fixed value (it is then not looked up).
    #[must_use]
    pub fn inject(mut self, argument: impl Into<String>, value: Value) -> Self {
        self.inject.insert(argument.into(), value);
        self
    }

    /// The atom's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored names an argument is read from, for `execute` (and `revert` when
    /// `with_revert`), minus injected ones: `(argument, stored name)`.
    pub(crate) fn lookups(&self, with_revert: bool) -> Vec<(String, String)> {
        let revert = with_revert
            .then_some(&self.revert_requires)
            .into_iter()
            .flatten();
        let mut seen = std::collections::BTreeSet::new();
        self.requires
            .iter()
            .chain(revert)
            .filter(|argument| !self.inject.contains_key(*argument))
            .filter(|argument| seen.insert((*argument).clone()))
            .map(|argument| {
                let stored = self.rebind.get(argument).unwrap_or(argument).clone();
                (argument.clone(), stored)
            })
            .collect()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ExecuteFn = dyn Fn(TaskContext, Inputs) -> BoxFuture<Result<Value, Failure>> + Send + Sync;
type RevertFn =
    dyn Fn(TaskContext, Inputs, Outcome) -> BoxFuture<Result<(), Failure>> + Send + Sync;

/// A task made from closures (TaskFlow's functor task).
pub struct FnTask {
    execute: Box<ExecuteFn>,
    revert: Option<Box<RevertFn>>,
}

impl std::fmt::Debug for FnTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTask")
            .field("reverts", &self.revert.is_some())
            .finish()
    }
}

#[async_trait]
impl Task for FnTask {
    async fn execute(&self, ctx: &TaskContext, inputs: Inputs) -> Result<Value, Failure> {
        (self.execute)(ctx.clone(), inputs).await
    }

    async fn revert(
        &self,
        ctx: &TaskContext,
        inputs: Inputs,
        outcome: Outcome,
    ) -> Result<(), Failure> {
        match &self.revert {
            Some(revert) => revert(ctx.clone(), inputs, outcome).await,
            None => Ok(()),
        }
    }
}

/// Declares a task atom from an async closure.
pub fn task_fn<F, Fut>(name: impl Into<String>, execute: F) -> TaskAtom
where
    F: Fn(TaskContext, Inputs) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
{
    TaskAtom::new(FnTask {
        execute: Box::new(move |ctx, inputs| Box::pin(execute(ctx, inputs))),
        revert: None,
    })
    .named(name)
}

/// Declares a task atom from an async execute closure and an async revert closure.
pub fn task_fn_with_revert<F, Fut, R, RFut>(
    name: impl Into<String>,
    execute: F,
    revert: R,
) -> TaskAtom
where
    F: Fn(TaskContext, Inputs) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    R: Fn(TaskContext, Inputs, Outcome) -> RFut + Send + Sync + 'static,
    RFut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    TaskAtom::new(FnTask {
        execute: Box::new(move |ctx, inputs| Box::pin(execute(ctx, inputs))),
        revert: Some(Box::new(move |ctx, inputs, outcome| {
            Box::pin(revert(ctx, inputs, outcome))
        })),
    })
    .named(name)
}

/// Applies `function` to each element of the list input `over` and provides the list of
/// results (TaskFlow's map functor). The function runs on a blocking thread.
pub fn map_task<F>(name: impl Into<String>, over: impl Into<String>, function: F) -> TaskAtom
where
    F: Fn(&Value) -> Result<Value, Failure> + Send + Sync + 'static,
{
    let over = over.into();
    let function = Arc::new(function);
    let input = over.clone();
    task_fn(name, move |_ctx, inputs| {
        let items = inputs.get(&input).cloned();
        let (function, input) = (function.clone(), input.clone());
        async move {
            let Some(Value::Array(items)) = items else {
                return Err(Failure::new(
                    "NotAList",
                    format!("input {input} is not a list"),
                ));
            };
            let mapped = tokio::task::spawn_blocking(move || {
                items
                    .iter()
                    .map(|item| function(item))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| Failure::new("Panicked", e.to_string()))??;
            Ok(Value::Array(mapped))
        }
    })
    .requires([over])
}

/// Folds the list input `over` with `function`, starting from `initial` (TaskFlow's reduce
/// functor).
pub fn reduce_task<F>(
    name: impl Into<String>,
    over: impl Into<String>,
    initial: Value,
    function: F,
) -> TaskAtom
where
    F: Fn(Value, &Value) -> Result<Value, Failure> + Send + Sync + 'static,
{
    let over = over.into();
    let function = Arc::new(function);
    let input = over.clone();
    task_fn(name, move |_ctx, inputs| {
        let items = inputs.get(&input).cloned();
        let (function, input, initial) = (function.clone(), input.clone(), initial.clone());
        async move {
            let Some(Value::Array(items)) = items else {
                return Err(Failure::new(
                    "NotAList",
                    format!("input {input} is not a list"),
                ));
            };
            items
                .iter()
                .try_fold(initial, |acc, item| function(acc, item))
        }
    })
    .requires([over])
}

/// Runs a blocking closure off the async threads: for tasks that do blocking I/O or heavy
/// computation inside `execute`.
pub async fn blocking<T, F>(work: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::new("Panicked", e.to_string()))?
}
