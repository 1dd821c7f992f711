//! [`Engine`]: one engine process, assembled from a store URL and the definitions it can run.
//!
//! ```no_run
//! # async fn example(order_flow: flowstate::taskgraph::Flow) -> Result<(), Box<dyn std::error::Error>> {
//! // The same program runs on a laptop (an SQLite file) or as one of N processes sharing a
//! // PostgreSQL database; only the URL changes.
//! let engine = flowstate::Engine::builder("postgres://app@db.internal/flows")
//!     .task_graph(order_flow)
//!     .build()
//!     .await?;
//! let flow = engine
//!     .task_graphs()
//!     .submit("order", [("order".to_owned(), serde_json::json!(1042))].into_iter().collect())
//!     .await?;
//! println!("submitted {flow}");
//! engine.run_until_signal().await?; // takes its share of the work until SIGTERM or Ctrl-C
//! # Ok(()) }
//! ```

use std::sync::Arc;

use flowstate_core::{Clock, FlowKind};
use flowstate_durable::Functions;
use flowstate_engine::Controls;
use flowstate_store::{Store, SystemClock};
use flowstate_taskgraph::Flow;
use flowstate_worker::{ShutdownHandle, Worker, WorkerConfig, WorkerError, WorkerStats};

use crate::{open_store_as, Access, OpenError};

/// Why an engine could not be built or stopped working.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The worker's settings are out of bounds, or its store stopped.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Waking the durable functions at the start of the incarnation failed.
    #[error(transparent)]
    Functions(#[from] flowstate_durable::Error),
    /// The archive could not be opened, or its policy is out of bounds.
    #[error(transparent)]
    Archive(#[from] flowstate_archive::ArchiveError),
    /// A plan step was refused at registration.
    #[error(transparent)]
    Step(#[from] flowstate_plan::RegistrationError),
    /// A durable function was refused at registration.
    #[error(transparent)]
    Function(#[from] flowstate_durable::RegistrationError),
    /// Waiting for a shutdown signal failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(std::io::Error),
}

/// Registers one durable function with the engine's functions (kept by the builder until
/// [`EngineBuilder::build`]).
struct RegisterFunction(Box<dyn FnOnce(&Functions) -> Registered + Send>);

/// What registering a durable function gave.
type Registered = Result<(), flowstate_durable::RegistrationError>;

impl std::fmt::Debug for RegisterFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegisterFunction")
    }
}

/// What wraps the opened store.
type StoreWrapper = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send>;

/// Wraps the opened store ([`EngineBuilder::wrap_store`]).
struct WrapStore(StoreWrapper);

impl std::fmt::Debug for WrapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrapStore")
    }
}

/// Builds an [`Engine`].
#[derive(Debug)]
pub struct EngineBuilder {
    wrap_store: Option<WrapStore>,
    url: String,
    schema: Option<String>,
    clock: Arc<dyn Clock>,
    worker: Option<WorkerConfig>,
    task_graphs: Vec<Flow>,
    steps: Vec<flowstate_plan::Step>,
    functions: Vec<RegisterFunction>,
    archive: Option<(
        String,
        flowstate_archive::ArchivePolicy,
        std::time::Duration,
    )>,
    journal_retention: std::time::Duration,
    idempotency_window: std::time::Duration,
}

impl EngineBuilder {
    /// Runs flows in a PostgreSQL schema of its own (created if missing) rather than in the
    /// connection's default one. Ignored for SQLite.
    #[must_use]
    pub fn postgres_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Uses `clock` instead of the system clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Worker settings (lease, flows in flight, polling); the default has a worker id unique
    /// to this process.
    #[must_use]
    pub fn worker(mut self, config: WorkerConfig) -> Self {
        self.worker = Some(config);
        self
    }

    /// A task-graph definition this process can run (flows record its name).
    #[must_use]
    pub fn task_graph(mut self, flow: Flow) -> Self {
        self.task_graphs.push(flow);
        self
    }

    /// A plan step this process can run (new flows are planned from the newest version of
    /// each registered step).
    #[must_use]
    pub fn step(mut self, step: flowstate_plan::Step) -> Self {
        self.steps.push(step);
        self
    }

    /// A durable function this process can run, under `name` (flows record the name). It
    /// must be closed (capture nothing): [`EngineBuilder::build`] refuses it otherwise.
    #[must_use]
    pub fn function<F, Fut, I, O>(mut self, name: &str, function: F) -> Self
    where
        F: Fn(flowstate_durable::Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<O, flowstate_core::Failure>> + 'static,
        I: serde::de::DeserializeOwned + 'static,
        O: serde::Serialize + 'static,
    {
        let name = name.to_owned();
        self.functions
            .push(RegisterFunction(Box::new(move |functions| {
                functions.register(&name, function)
            })));
        self
    }

    /// Keeps the idempotency keys of starts (`submit_with` and the like, with a
    /// [`crate::StartOptions`] key or id) for `window`: a start repeated within it gives the
    /// first flow (default [`crate::DEFAULT_IDEMPOTENCY_WINDOW`], a day).
    #[must_use]
    pub fn idempotency_window(mut self, window: std::time::Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Moves finished flows (deactivated plans, task graphs that ended SUCCESS, FAILURE or
    /// REVERTED, durable functions that are done) to the archive at `url` (a directory,
    /// `file://`, `memory://` or `s3://BUCKET/PREFIX`) by `policy`, a pass every `interval`,
    /// while the engine runs.
    #[must_use]
    pub fn archive(
        mut self,
        url: impl Into<String>,
        policy: flowstate_archive::ArchivePolicy,
        interval: std::time::Duration,
    ) -> Self {
        self.archive = Some((url.into(), policy, interval));
        self
    }

    /// How long a durable function that is done keeps its whole journal before dropping it
    /// (`flowstate_durable::DEFAULT_JOURNAL_RETENTION`, a week, unless set).
    #[must_use]
    pub fn journal_retention(mut self, retention: std::time::Duration) -> Self {
        self.journal_retention = retention;
        self
    }

    /// Wraps the store once it is opened, before anything uses it (a test's instrumented
    /// store, for instance).
    #[must_use]
    pub fn wrap_store(
        mut self,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send + 'static,
    ) -> Self {
        self.wrap_store = Some(WrapStore(Box::new(wrap)));
        self
    }

    /// Opens the store (creating and migrating it if needed) and assembles the engine.
    pub async fn build(self) -> Result<Engine, Error> {
        // The engine process of an SQLite file holds its process lock for its life.
        let mut store = open_store_as(
            &self.url,
            self.schema.as_deref(),
            self.clock.clone(),
            Access::CreateIfMissing,
            true,
        )
        .await?;
        if let Some(WrapStore(wrap)) = self.wrap_store {
            store = wrap(store);
        }
        let task_graphs = Arc::new(flowstate_taskgraph::Engine::new(
            store.clone(),
            self.clock.clone(),
        ));
        task_graphs.set_idempotency_window(self.idempotency_window);
        for flow in self.task_graphs {
            task_graphs.register(flow);
        }
        let plans = flowstate_plan::Plans::new(store.clone(), self.clock.clone());
        plans.set_idempotency_window(self.idempotency_window);
        for step in self.steps {
            plans.register(step)?;
        }
        let config = self
            .worker
            .unwrap_or_else(|| WorkerConfig::new(WorkerConfig::process_worker_id()));
        // The worker id is unique per process start: the incarnation of its activations.
        let functions = flowstate_durable::Functions::new(
            store.clone(),
            self.clock.clone(),
            config.id.to_string(),
        );
        functions.set_idempotency_window(self.idempotency_window);
        functions.plan_with(Arc::new(ChildPlans(plans.clone())));
        functions.journal_retention(self.journal_retention);
        for register in self.functions {
            (register.0)(&functions)?;
        }
        let archiver = match self.archive {
            Some((url, policy, interval)) => {
                let archive = flowstate_archive::ArchiveStore::open(
                    &url,
                    flowstate_archive::ArchiveAccess::CreateIfMissing,
                )?;
                let archiver = flowstate_archive::Archiver::new(
                    store.clone(),
                    archive,
                    policy,
                    self.clock.clone(),
                )?;
                Some((Arc::new(archiver), interval))
            }
            None => None,
        };
        let config_id = config.id.clone();
        let worker = Worker::new(store.clone(), self.clock, config)
            .map_err(WorkerError::from)?
            .with_runner(FlowKind::TaskGraph, task_graphs.clone())
            .with_runner(FlowKind::Function, Arc::new(functions.clone()))
            .with_runner(FlowKind::Plan, Arc::new(plans.clone()));
        let controls = controls_of(&store, &task_graphs, &plans, &functions);
        Ok(Engine {
            worker_id: config_id,
            store,
            task_graphs,
            functions,
            plans,
            controls,
            archiver,
            worker: Arc::new(worker),
        })
    }
}

/// Every kind's control, for the flows of `store`.
fn controls_of(
    store: &Arc<dyn Store>,
    task_graphs: &Arc<flowstate_taskgraph::Engine>,
    plans: &flowstate_plan::Plans,
    functions: &flowstate_durable::Functions,
) -> Controls {
    Controls::new(store.clone())
        .with(FlowKind::TaskGraph, task_graphs.clone())
        .with(FlowKind::Plan, Arc::new(plans.clone()))
        .with(FlowKind::Function, Arc::new(functions.clone()))
}

/// Cancel, suspend, resume or read the flows of `store`, whatever their kind, with the store
/// alone (no definitions needed): what a process that runs no engine on the store (the CLI)
/// uses. A request is recorded in the flow's log, and whichever engine runs the flow honours
/// it.
#[must_use]
pub fn store_controls(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Controls {
    let task_graphs = Arc::new(flowstate_taskgraph::Engine::new(
        store.clone(),
        clock.clone(),
    ));
    let plans = flowstate_plan::Plans::new(store.clone(), clock.clone());
    // Its incarnation is never used: this process runs no function.
    let functions = flowstate_durable::Functions::new(store.clone(), clock, "control".to_owned());
    controls_of(&store, &task_graphs, &plans, &functions)
}

/// The plan engine as the planner of durable functions' child plans.
struct ChildPlans(flowstate_plan::Plans);

impl flowstate_durable::ChildPlanner for ChildPlans {
    fn plan(
        &self,
        goals: &[String],
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<flowstate_core::ExecutionPlan, flowstate_core::Failure> {
        let request = flowstate_plan::PlanRequest {
            name: "plan".to_owned(),
            goals: goals.to_vec(),
            inputs: inputs.clone(),
            choices: std::collections::BTreeMap::new(),
        };
        self.0
            .preview(&request)
            .map_err(|error| flowstate_core::Failure::new("PlanningFailed", error.to_string()))
    }
}

/// One engine process: a store, the engines of each kind of flow, and the worker that claims
/// this process's share of the store's ready flows. Start as many as you like on one
/// PostgreSQL database; they split the work and take over each other's flows.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    task_graphs: Arc<flowstate_taskgraph::Engine>,
    functions: flowstate_durable::Functions,
    plans: flowstate_plan::Plans,
    controls: Controls,
    archiver: Option<(Arc<flowstate_archive::Archiver>, std::time::Duration)>,
    worker: Arc<Worker>,
    worker_id: flowstate_store::WorkerId,
}

impl Engine {
    /// A builder for the store at `url`: a file path or `sqlite://PATH` (embedded), or
    /// `postgres://...` (shared by many processes).
    #[must_use]
    pub fn builder(url: impl Into<String>) -> EngineBuilder {
        EngineBuilder {
            wrap_store: None,
            url: url.into(),
            schema: None,
            clock: Arc::new(SystemClock),
            worker: None,
            task_graphs: Vec::new(),
            steps: Vec::new(),
            functions: Vec::new(),
            archive: None,
            journal_retention: flowstate_durable::DEFAULT_JOURNAL_RETENTION,
            idempotency_window: crate::DEFAULT_IDEMPOTENCY_WINDOW,
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The task-graph engine: create, submit or execute task-graph flows, run or control them.
    /// The three kinds answer the same verbs with the same meaning (`create`: recorded, not
    /// offered to workers; `submit`: recorded for the workers; `execute`: created and run here).
    #[must_use]
    pub fn task_graphs(&self) -> &flowstate_taskgraph::Engine {
        &self.task_graphs
    }

    /// The durable functions: register them (before [`Engine::run`]), submit, signal,
    /// cancel, or look up activations.
    #[must_use]
    pub fn functions(&self) -> &flowstate_durable::Functions {
        &self.functions
    }

    /// The plan engine: register steps, preview plans, create, submit or execute flows by
    /// goals, read a flow's state at any point.
    #[must_use]
    pub fn plans(&self) -> &flowstate_plan::Plans {
        &self.plans
    }

    /// Cancel, suspend, resume or read any flow, whatever its kind: one call, sent to the
    /// flow's kind.
    #[must_use]
    pub fn control(&self) -> &Controls {
        &self.controls
    }

    /// The worker's counters.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.worker.stats()
    }

    /// Stops [`Engine::run`] gracefully.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.worker.shutdown_handle()
    }

    /// Takes this process's share of the work until shut down. This is the start of the
    /// process's incarnation: register every durable function first, since it wakes the
    /// activations that earlier processes left running or failing to replay.
    ///
    /// On an SQLite store, whose process lock this engine holds, it first takes over the
    /// leases a dead engine process left behind ([`Store::release_foreign_leases`]), so that
    /// its flows and timers carry on now rather than when those leases run out.
    pub async fn run(&self) -> Result<WorkerStats, Error> {
        let released = self
            .store
            .release_foreign_leases(&self.worker_id)
            .await
            .map_err(WorkerError::Store)?;
        if released > 0 {
            tracing::info!(
                released,
                "took over the leases of an engine process that is gone"
            );
        }
        self.functions.wake_all().await?;
        let Some((archiver, interval)) = self.archiver.clone() else {
            return Ok(self.worker.run().await?);
        };
        // The archive worker runs beside the flow worker and stops with it.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let archiving = tokio::spawn(async move {
            archiver
                .run(interval, async {
                    let _ = stopped.await;
                })
                .await
        });
        let ran = self.worker.run().await;
        let _ = stop.send(());
        match archiving.await {
            Ok(report) => tracing::info!(archived = report.archived, "archive worker stopped"),
            Err(error) => tracing::error!(%error, "the archive worker failed"),
        }
        Ok(ran?)
    }

    /// Like [`Engine::run`], shutting down gracefully on SIGTERM or Ctrl-C.
    pub async fn run_until_signal(&self) -> Result<WorkerStats, Error> {
        let stop = self.shutdown_handle();
        let signals = shutdown_signal().map_err(Error::Signal)?;
        let waiter = tokio::spawn(async move {
            signals.await;
            stop.shutdown();
        });
        let ran = self.run().await;
        waiter.abort();
        ran
    }
}

/// Completes on SIGTERM or Ctrl-C.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}
