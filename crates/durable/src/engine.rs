//! [`Functions`]: registration, starting, signals, outcomes, waking; and the worker's
//! runner for durable functions, which hands runs to the driver threads (`driver`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::sync::RwLock;

use flowstate_core::machine::ActivationState;
use flowstate_core::{
    Clock, EventBody, Failure, FlowId, FlowKind, FlowStatus, FunctionRecord, Transition,
};
use flowstate_engine::{
    create, CreateError, Created, Creation, FlowWriter, StartOptions, WriteError,
    DEFAULT_IDEMPOTENCY_WINDOW,
};
use flowstate_store::{FlowQuery, Store, StoreError};
use flowstate_worker::{FlowRunner, RunError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::driver::Pool;
use crate::registry::{Erased, RegistrationError, Registry};

/// Why a function could not be started, signalled or looked up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No function of this name is registered here.
    #[error("no durable function named {name:?} is registered")]
    Unknown {
        /// The name.
        name: String,
    },
    /// The input does not serialize.
    #[error("the input does not serialize: {0}")]
    Input(String),
    /// The activation is done: there is nothing left to cancel or signal.
    #[error("flow {flow} is done")]
    Done {
        /// The flow.
        flow: FlowId,
    },
    /// A flow with the id exists already; nothing was written.
    #[error("flow {flow} exists already")]
    Exists {
        /// The id.
        flow: FlowId,
    },
    /// The idempotency key started another request's flow; nothing was written.
    #[error("idempotency key {key:?} was used for another request, which started flow {flow}")]
    KeyReused {
        /// The key.
        key: String,
        /// The flow it started.
        flow: FlowId,
    },
    /// The flow is not a durable function.
    #[error("flow {flow} is not a durable function")]
    NotAFunction {
        /// The flow.
        flow: FlowId,
    },
    /// Recording failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a finished function ended, as its caller sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// The function returned an error.
    #[error("the function failed: {0}")]
    Failed(Failure),
    /// Its output does not decode as the type asked for.
    #[error("the output does not decode: {0}")]
    Output(String),
}

/// Most activations one process runs at once (loaded in memory, with their journals); more
/// wait for a place.
pub const MAX_ACTIVE_ACTIVATIONS: usize = 10_000;

/// How long a done activation keeps its journal by default before it is dropped (see
/// [`Functions::journal_retention`]): a week, as the archive's default age.
pub const DEFAULT_JOURNAL_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// The name of the store timer that wakes a done activation once its journal's retention
/// has passed, so that its run drops the journal.
pub const RETENTION_TIMER: &str = "journal-retention";

/// Durable functions on a store: register, start, signal, look up; and, as the worker's
/// runner for [`FlowKind::Function`], run activations.
#[derive(Clone)]
pub struct Functions {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    registry: RwLock<Registry>,
    /// Bounds the activations running at once ([`MAX_ACTIVE_ACTIVATIONS`]).
    active: tokio::sync::Semaphore,
    /// The driver threads, started by the first run (in the tokio runtime that runs it).
    pool: flowstate_core::sync::Mutex<Option<Arc<Pool>>>,
    /// The engine process running activations (recorded with each run).
    pub(crate) incarnation: String,
    /// Plans the children of `Ctx::start_plan`.
    planner: RwLock<Option<Arc<dyn ChildPlanner>>>,
    /// Whether done activations keep their journal (for audit) instead of dropping it.
    keep_journals: std::sync::atomic::AtomicBool,
    /// How long a done activation keeps its journal before dropping it, in µs.
    retention_micros: std::sync::atomic::AtomicU64,
    /// How long idempotency keys of starts are kept, in milliseconds.
    idempotency_window_ms: AtomicU64,
}

impl Shared {
    pub(crate) fn keeps_journals(&self) -> bool {
        self.keep_journals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn journal_retention(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.retention_micros
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub(crate) fn planner(&self) -> Option<Arc<dyn ChildPlanner>> {
        self.planner.read().clone()
    }
}

/// A duration in µs, saturating.
fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Computes the plan of a child plan flow ([`Ctx::start_plan`]). The plan engine
/// implements it; the facade wires it in with [`Functions::plan_with`].
pub trait ChildPlanner: Send + Sync + 'static {
    /// The plan for `goals` from `inputs`, or why there is none.
    fn plan(
        &self,
        goals: &[String],
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<flowstate_core::ExecutionPlan, Failure>;
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Functions")
            .field("incarnation", &self.shared.incarnation)
            .finish_non_exhaustive()
    }
}

impl Functions {
    /// Functions on `store`, run by the engine process `incarnation` (unique per process
    /// start: a host, a pid and a start time, for example).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        incarnation: impl Into<String>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                clock,
                registry: RwLock::new(Registry::default()),
                active: tokio::sync::Semaphore::new(MAX_ACTIVE_ACTIVATIONS),
                pool: flowstate_core::sync::Mutex::new(None),
                incarnation: incarnation.into(),
                planner: RwLock::new(None),
                keep_journals: std::sync::atomic::AtomicBool::new(false),
                retention_micros: std::sync::atomic::AtomicU64::new(micros(
                    DEFAULT_JOURNAL_RETENTION,
                )),
                idempotency_window_ms: AtomicU64::new(
                    u64::try_from(DEFAULT_IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(u64::MAX),
                ),
            }),
        }
    }

    /// Keeps the idempotency keys of starts ([`Functions::submit_with`]) for `window`
    /// (default [`DEFAULT_IDEMPOTENCY_WINDOW`]).
    pub fn set_idempotency_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .idempotency_window_ms
            .store(ms, Ordering::Relaxed);
    }

    /// Whether an activation that is done keeps its journal for good (for audit) or, as by
    /// default, drops it once its retention ([`Functions::journal_retention`]) has passed
    /// and keeps its outcome: its log is compacted to its creation, its outcome and a
    /// `journal_dropped` event that says how much was dropped.
    pub fn keep_journals(&self, keep: bool) {
        self.shared
            .keep_journals
            .store(keep, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long a done activation keeps its whole journal before dropping it
    /// ([`DEFAULT_JOURNAL_RETENTION`] unless set; zero drops it as soon as the activation
    /// has told its parent). Measured from its last event with the engine's clock: its run
    /// sets a store timer ([`RETENTION_TIMER`]) for then, and the run the timer wakes
    /// compacts the log. Until then the archive worker may move the whole log.
    pub fn journal_retention(&self, retention: std::time::Duration) {
        self.shared
            .retention_micros
            .store(micros(retention), std::sync::atomic::Ordering::Relaxed);
    }

    /// Wires in the plan engine that plans the children of [`Ctx::start_plan`].
    pub fn plan_with(&self, planner: Arc<dyn ChildPlanner>) {
        *self.shared.planner.write() = Some(planner);
    }

    /// Registers a closed function under `name`. A function that captures anything is
    /// refused ([`RegistrationError::Captures`]).
    pub fn register<F, Fut, I, O>(&self, name: &str, function: F) -> Result<(), RegistrationError>
    where
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Failure>> + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
    {
        self.shared.registry.write().register(name, function)
    }

    /// Starts an activation of `name` with `input`: recorded ready, so a worker runs it.
    #[deprecated(since = "0.2.0", note = "renamed `submit`, as in every front door")]
    pub async fn start(&self, name: &str, input: impl Serialize) -> Result<FlowId, Error> {
        self.submit(name, input).await
    }

    /// Records an activation of `name` with `input`, ready for whichever worker claims it.
    pub async fn submit(&self, name: &str, input: impl Serialize) -> Result<FlowId, Error> {
        Ok(self
            .submit_with(name, input, &StartOptions::new())
            .await?
            .id())
    }

    /// [`Functions::submit`] with a chosen id and/or an idempotency key: starting again with
    /// the same name and input gives the first flow ([`Created::Existing`]) and records
    /// nothing; the same key with another request is [`Error::KeyReused`].
    pub async fn submit_with(
        &self,
        name: &str,
        input: impl Serialize,
        options: &StartOptions,
    ) -> Result<Created, Error> {
        let known = self.shared.registry.read().get(name).is_some();
        if !known {
            return Err(Error::Unknown {
                name: name.to_owned(),
            });
        }
        let input = serde_json::to_value(input).map_err(|e| Error::Input(e.to_string()))?;
        let window =
            Duration::from_millis(self.shared.idempotency_window_ms.load(Ordering::Relaxed));
        let writer = Creation::new(FlowKind::Function, name, input)
            .with_start(options)
            .idempotency_window(window)
            .stage(self.shared.clock.as_ref())?;
        match create::record(self.shared.store.as_ref(), writer, true).await {
            Ok(created) => Ok(created),
            Err(CreateError::Exists { flow }) => Err(Error::Exists { flow }),
            Err(CreateError::KeyReused { key, flow }) => Err(Error::KeyReused { key, flow }),
            Err(CreateError::Write(error)) => Err(error.into()),
        }
    }

    /// Sends signal `name` with `value` to the activation `flow` (from any process): it
    /// waits in the activation's inbox until `ctx.signal(name)` consumes it, and wakes it.
    pub async fn signal(
        &self,
        flow: FlowId,
        name: &str,
        value: impl Serialize,
    ) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(|e| Error::Input(e.to_string()))?;
        send_signal(
            self.shared.store.as_ref(),
            self.shared.clock.as_ref(),
            flow,
            name,
            value,
        )
        .await
    }

    /// Cancels the activation `flow` (from any process): it stops at its next effect (a step
    /// in flight finishes first; a sleeping one is woken for it), its code is dropped (so its
    /// cleanup runs), and it is done with a `Cancelled` failure carrying `reason`. An
    /// activation in replay failure stays there until a version that replays it is
    /// deployed, then stops. Cancelling twice keeps the first reason: the second records
    /// nothing and returns [`Transition::Ignored`].
    pub async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, Error> {
        request_cancel(
            self.shared.store.as_ref(),
            self.shared.clock.as_ref(),
            flow,
            reason,
        )
        .await
    }

    /// The outcome of `flow`, once it is done: `None` while it is not.
    pub async fn outcome<O: DeserializeOwned>(
        &self,
        flow: FlowId,
    ) -> Result<Option<Result<O, FunctionError>>, Error> {
        let writer = FlowWriter::load(self.shared.store.as_ref(), flow).await?;
        let record = writer.record().ok_or(Error::NotAFunction { flow })?;
        let function = record
            .function
            .as_ref()
            .ok_or(Error::NotAFunction { flow })?;
        Ok(function.outcome.clone().map(|outcome| match outcome {
            Ok(value) => {
                serde_json::from_value(value).map_err(|e| FunctionError::Output(e.to_string()))
            }
            Err(failure) => Err(FunctionError::Failed(failure)),
        }))
    }

    /// The activation's state and its last replay-failure diagnostic.
    pub async fn state(&self, flow: FlowId) -> Result<(ActivationState, Option<String>), Error> {
        let writer = FlowWriter::load(self.shared.store.as_ref(), flow).await?;
        match writer.record() {
            Some(record) => match record.status {
                FlowStatus::Function(state) => Ok((state, record.diagnostic.clone())),
                _ => Err(Error::NotAFunction { flow }),
            },
            None => Err(Error::NotAFunction { flow }),
        }
    }

    /// The store the activations are recorded in, and the clock that times their events.
    pub(crate) fn store_and_clock(&self) -> (&dyn Store, &dyn Clock) {
        (self.shared.store.as_ref(), self.shared.clock.as_ref())
    }

    /// The explicit start of an incarnation, called once every definition is registered (so
    /// nothing wakes before its code is there): marks ready every activation that is neither
    /// sleeping nor done — including replay failures, which get another try with this
    /// process's code. Returns how many.
    pub async fn wake_all(&self) -> Result<usize, Error> {
        let mut woken = 0;
        for state in [
            ActivationState::ActiveCurrent,
            ActivationState::ActiveReplay,
            ActivationState::ReplayFailure,
        ] {
            let mut query = FlowQuery {
                kind: Some(FlowKind::Function),
                status: Some(flowstate_core::Machine::key(state).to_owned()),
                limit: flowstate_core::limits::MAX_PAGE_SIZE,
                ..FlowQuery::default()
            };
            loop {
                let page = self.shared.store.list(&query).await?;
                for summary in &page.flows {
                    self.shared.store.mark_ready(summary.id).await?;
                    woken += 1;
                }
                match page.next_after {
                    Some(after) => query.after = Some(after),
                    None => break,
                }
            }
        }
        Ok(woken)
    }
}

impl Shared {
    /// The code of the function `name`, if this process registered it.
    pub(crate) fn definition(&self, name: &str) -> Option<Arc<dyn Erased>> {
        self.registry.read().get(name)
    }

    fn pool(&self) -> Result<Arc<Pool>, RunError> {
        let mut pool = self.pool.lock();
        if let Some(pool) = pool.as_ref() {
            return Ok(pool.clone());
        }
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let started = Pool::start(threads, &tokio::runtime::Handle::current())
            .map_err(|e| RunError::failed(format!("the driver threads did not start: {e}")))?;
        Ok(pool.insert(Arc::new(started)).clone())
    }
}

/// Sends signal `name` with `value` to the durable function `flow`, through its store alone
/// (no registry needed: the CLI and other processes use this). The value waits in the
/// activation's inbox, and the activation is marked ready.
pub async fn send_signal(
    store: &dyn Store,
    clock: &dyn Clock,
    flow: FlowId,
    name: &str,
    value: serde_json::Value,
) -> Result<(), Error> {
    let signal = EventBody::SignalDelivered {
        name: name.to_owned(),
        value,
    };
    deliver(store, clock, flow, |_| Some(signal.clone()))
        .await
        .map(|_| ())
}

/// Asks the durable function `flow` to stop, through its store alone (the CLI and other
/// processes use this); see [`Functions::cancel`].
pub async fn request_cancel(
    store: &dyn Store,
    clock: &dyn Clock,
    flow: FlowId,
    reason: &str,
) -> Result<Transition, Error> {
    let asked = deliver(store, clock, flow, |function| {
        // Asked already: the first request stands.
        function
            .cancel_requested
            .is_none()
            .then(|| EventBody::CancelRequested {
                reason: reason.to_owned(),
            })
    })
    .await?;
    Ok(if asked {
        Transition::Allowed
    } else {
        Transition::Ignored
    })
}

/// Appends what `make` says (nothing if `None`) to a function that is not done, and marks
/// it ready.
async fn deliver(
    store: &dyn Store,
    clock: &dyn Clock,
    flow: FlowId,
    make: impl Fn(&FunctionRecord) -> Option<EventBody>,
) -> Result<bool, Error> {
    flowstate_engine::deliver(store, clock, flow, |record| {
        let function = record
            .function
            .as_ref()
            .ok_or(Error::NotAFunction { flow })?;
        if function.outcome.is_some() {
            return Err(Error::Done { flow });
        }
        Ok(make(function))
    })
    .await
}

/// Workers run durable functions: many activations on each of a few driver threads, each
/// thread an await runtime that polls the functions and the futures their effects await.
#[async_trait::async_trait]
impl FlowRunner for Functions {
    async fn run(&self, flow: FlowId) -> Result<(), RunError> {
        let _permit = self
            .shared
            .active
            .acquire()
            .await
            .map_err(RunError::failed)?;
        let pool = self.shared.pool()?;
        pool.run(self.shared.clone(), flow).await
    }
}
