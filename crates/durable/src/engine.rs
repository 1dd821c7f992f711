//! [`Functions`]: registration, starting, signals, outcomes, waking, and the driver that
//! runs one activation (the worker's runner for durable functions).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flowstate_core::machine::ActivationState;
use flowstate_core::{Clock, EventBody, Failure, FlowId, FlowKind, FlowStatus, Replayer};
use flowstate_store::{AppendExtras, FlowQuery, FlowWriter, Store, StoreError, WriteError};
use flowstate_worker::{FlowRunner, RunError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ctx::{Activation, Ctx, Stop};
use crate::registry::{RegisterError, Registry};

/// Why a function could not be started, signalled or looked up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No function of this name is registered here.
    #[error("no durable function named {name:?} is registered")]
    Unknown {
        /// The name.
        name: String,
    },
    /// The input does not serialize.
    #[error("the input does not serialize: {0}")]
    Input(String),
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

/// Most attempts to deliver a signal when the activation keeps appending meanwhile.
const SIGNAL_ATTEMPTS: usize = 16;

/// Most activations one process runs at once. Each holds a blocking thread while it runs,
/// and the stores need blocking threads of their own (SQLite's reads): tokio's pool has
/// 512, so activations must leave room.
pub const MAX_ACTIVE_ACTIVATIONS: usize = 256;

/// How long a live function may wait with no effect in flight before the run is stopped as
/// deadlocked: it awaits something no effect will ever settle (a future outside the
/// context, or a pair nobody resolves).
pub const DEADLOCK_GRACE: Duration = Duration::from_secs(1);

/// Durable functions on a store: register, start, signal, look up; and, as the worker's
/// runner for [`FlowKind::Function`], run activations.
#[derive(Clone)]
pub struct Functions {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: RwLock<Registry>,
    drivers: tokio::sync::Semaphore,
    /// The engine process running activations (recorded with each run).
    incarnation: String,
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
                drivers: tokio::sync::Semaphore::new(MAX_ACTIVE_ACTIVATIONS),
                incarnation: incarnation.into(),
            }),
        }
    }

    /// Registers a closed function under `name`. A function that captures anything is
    /// refused ([`RegisterError::Captures`]).
    pub fn register<F, Fut, I, O>(&self, name: &str, function: F) -> Result<(), RegisterError>
    where
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Failure>> + 'static,
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
    {
        self.shared
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register(name, function)
    }

    /// Starts an activation of `name` with `input`: recorded ready, so a worker runs it.
    pub async fn start(&self, name: &str, input: impl Serialize) -> Result<FlowId, StartError> {
        let known = self
            .shared
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .is_some();
        if !known {
            return Err(StartError::Unknown {
                name: name.to_owned(),
            });
        }
        let input = serde_json::to_value(input).map_err(|e| StartError::Input(e.to_string()))?;
        let flow = FlowId::from_parts(self.shared.clock.now(), rand::random());
        let mut writer = FlowWriter::new(flow);
        writer.stage(
            self.shared.clock.as_ref(),
            vec![EventBody::FlowCreated {
                kind: FlowKind::Function,
                definition: name.to_owned(),
                input,
            }],
        )?;
        let ready = AppendExtras {
            ready: Some(true),
            ..AppendExtras::default()
        };
        writer.commit(self.shared.store.as_ref(), ready).await?;
        Ok(flow)
    }

    /// Sends signal `name` with `value` to the activation `flow` (from any process): it
    /// waits in the activation's inbox until `ctx.signal(name)` consumes it, and wakes it.
    pub async fn signal(
        &self,
        flow: FlowId,
        name: &str,
        value: impl Serialize,
    ) -> Result<(), StartError> {
        let value = serde_json::to_value(value).map_err(|e| StartError::Input(e.to_string()))?;
        send_signal(
            self.shared.store.as_ref(),
            self.shared.clock.as_ref(),
            flow,
            name,
            value,
        )
        .await
    }

    /// The outcome of `flow`, once it is done: `None` while it is not.
    pub async fn outcome<O: DeserializeOwned>(
        &self,
        flow: FlowId,
    ) -> Result<Option<Result<O, FunctionError>>, StartError> {
        let writer = FlowWriter::load(self.shared.store.as_ref(), flow).await?;
        let record = writer.record().ok_or(StartError::NotAFunction { flow })?;
        let function = record
            .function
            .as_ref()
            .ok_or(StartError::NotAFunction { flow })?;
        Ok(function.outcome.clone().map(|outcome| match outcome {
            Ok(value) => {
                serde_json::from_value(value).map_err(|e| FunctionError::Output(e.to_string()))
            }
            Err(failure) => Err(FunctionError::Failed(failure)),
        }))
    }

    /// The activation's state and its last replay-failure diagnostic.
    pub async fn state(
        &self,
        flow: FlowId,
    ) -> Result<(ActivationState, Option<String>), StartError> {
        let writer = FlowWriter::load(self.shared.store.as_ref(), flow).await?;
        match writer.record() {
            Some(record) => match record.status {
                FlowStatus::Function(state) => Ok((state, record.diagnostic.clone())),
                _ => Err(StartError::NotAFunction { flow }),
            },
            None => Err(StartError::NotAFunction { flow }),
        }
    }

    /// The explicit start of an incarnation, called once every definition is registered (so
    /// nothing wakes before its code is there): marks ready every activation that is neither
    /// sleeping nor done — including replay failures, which get another try with this
    /// process's code. Returns how many.
    pub async fn wake_all(&self) -> Result<usize, StartError> {
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
    /// Runs one activation until it returns, sleeps, or fails to replay (on this thread).
    fn drive(
        &self,
        flow: FlowId,
        handle: &tokio::runtime::Handle,
        cancelled: &AtomicBool,
    ) -> Result<(), RunError> {
        let _runtime = handle.enter();
        let mut writer = handle
            .block_on(FlowWriter::load(self.store.as_ref(), flow))
            .map_err(run_error)?;
        let (state, definition, input, function) = {
            let Some(record) = writer.record() else {
                return Err(RunError::Failed {
                    message: format!("flow {flow} has no events"),
                });
            };
            let FlowStatus::Function(state) = record.status else {
                return Err(RunError::Failed {
                    message: format!("flow {flow} is not a durable function"),
                });
            };
            (
                state,
                record.definition.clone(),
                record.input.clone(),
                record.function.clone().unwrap_or_default(),
            )
        };
        let nothing_to_do = match state {
            ActivationState::Done => true,
            // Woken by something it does not wait for (another signal, a stale timer).
            ActivationState::Sleeping => !function.wake_is_due(self.clock.now()),
            // A replay failure gets another try from the next incarnation, not from a wake
            // in the one whose code failed.
            ActivationState::ReplayFailure => function
                .incarnations
                .last()
                .is_some_and(|(_, incarnation)| *incarnation == self.incarnation),
            _ => false,
        };
        if nothing_to_do {
            return Ok(());
        }
        let Some(code) = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&definition)
        else {
            // It stays as it is (asleep, or awaiting replay) until a process has the code.
            return Err(RunError::MissingDefinition {
                kind: FlowKind::Function,
                definition,
            });
        };
        // Open a new run: a first run is live at once; any other replays its journal.
        let first = state == ActivationState::ActiveCurrent && function.run == 0;
        let mut opening = Vec::new();
        let to = |to| EventBody::ActivationStateChanged {
            to,
            diagnostic: None,
        };
        match state {
            ActivationState::ActiveCurrent if !first => {
                // Its process died while it ran: load it the way the table allows.
                opening.push(to(ActivationState::Sleeping));
                opening.push(to(ActivationState::ActiveReplay));
            }
            ActivationState::Sleeping | ActivationState::ReplayFailure => {
                opening.push(to(ActivationState::ActiveReplay));
            }
            _ => {}
        }
        opening.push(EventBody::RunStarted {
            run: function.run + 1,
            incarnation: self.incarnation.clone(),
        });
        writer
            .stage(self.clock.as_ref(), opening)
            .map_err(run_error)?;
        handle
            .block_on(writer.commit(self.store.as_ref(), AppendExtras::default()))
            .map_err(run_error)?;

        let rt = flowstate_rt::Runtime::new();
        let activation = Rc::new(Activation {
            flow,
            store: self.store.clone(),
            clock: self.clock.clone(),
            writer: flowstate_rt::Mutex::new(writer),
            journal: function.journal,
            sleeps_ended: function.sleeps_ended,
            cursor: Cell::new(0),
            task: Cell::new(None),
            live: Cell::new(first),
            stop: RefCell::new(None),
            live_ops: Cell::new(0),
        });
        let ctx = Ctx {
            act: activation.clone(),
        };
        let task = rt.run({
            let activation = activation.clone();
            let function = code.call(ctx, input);
            async move {
                activation.task.set(flowstate_rt::current_task());
                function.await
            }
        });
        loop {
            if cancelled.load(Ordering::Acquire) {
                // The worker gave the flow up (its lease was lost, or a shutdown's grace ran
                // out): stop here and record nothing.
                task.abort();
                return Err(RunError::Failed {
                    message: "the run was cancelled".into(),
                });
            }
            rt.run_until_stalled();
            if task.is_finished() || activation.stop.borrow().is_some() {
                break;
            }
            if activation.replaying() && activation.live_ops.get() == 0 {
                // Nothing live is in flight, the journal is not exhausted, and the function
                // waits: it stopped at an await the journal records as already settled.
                let replayer = Replayer::starting_at(&activation.journal, activation.cursor.get());
                if let Err(diagnostic) = replayer.check_wait(
                    "something the journal does not record",
                    "the function's own await",
                ) {
                    *activation.stop.borrow_mut() = Some(Stop::Diverged(diagnostic));
                    break;
                }
            }
            if !activation.replaying()
                && activation.live_ops.get() == 0
                && !rt.wait_for_wake(DEADLOCK_GRACE)
                && activation.live_ops.get() == 0
            {
                task.abort();
                return Err(RunError::Failed {
                    message: format!(
                        "flow {flow}: the function waits with no effect in flight, for something no effect will settle (a durable function may only await its context's effects)"
                    ),
                });
            }
            rt.wait_for_wake(Duration::from_millis(100));
        }
        let outcome = task.take_outcome();
        // Unload the function (its task and everything it holds) before recording the end.
        task.abort();
        let stop = activation.stop.borrow_mut().take();
        let mut writer = activation
            .writer
            .try_lock()
            .ok_or_else(|| RunError::Failed {
                message: "the activation's writer is still held after its task ended".into(),
            })?;
        let mut extras = AppendExtras::default();
        let bodies = match (stop, outcome) {
            (Some(Stop::Write(error)), _) => return Err(run_error(error)),
            (Some(Stop::Misuse(message)), _) => return Err(RunError::Failed { message }),
            (Some(Stop::Diverged(diagnostic)), _) => {
                tracing::warn!(%flow, %diagnostic, "replay failure");
                vec![EventBody::ActivationStateChanged {
                    to: ActivationState::ReplayFailure,
                    diagnostic: Some(diagnostic.to_string()),
                }]
            }
            (Some(Stop::Sleep { timer }), _) => {
                extras.timers.extend(timer);
                vec![to(ActivationState::Sleeping)]
            }
            (None, Some(Ok(returned))) => {
                let replayer = Replayer::starting_at(&activation.journal, activation.cursor.get());
                match replayer.check_return("the function's return") {
                    Err(diagnostic) => vec![EventBody::ActivationStateChanged {
                        to: ActivationState::ReplayFailure,
                        diagnostic: Some(diagnostic.to_string()),
                    }],
                    Ok(()) => {
                        let mut bodies = Vec::new();
                        if !activation.live.get() {
                            bodies.push(to(ActivationState::ActiveCurrent));
                        }
                        bodies.push(EventBody::FunctionReturned { outcome: returned });
                        bodies.push(to(ActivationState::Done));
                        bodies
                    }
                }
            }
            (None, Some(Err(failure))) => {
                return Err(RunError::Failed {
                    message: format!("the function's task failed: {failure}"),
                })
            }
            (None, None) => {
                return Err(RunError::Failed {
                    message: "the function's run ended without an outcome".into(),
                })
            }
        };
        writer
            .stage(self.clock.as_ref(), bodies)
            .map_err(run_error)?;
        handle
            .block_on(writer.commit(self.store.as_ref(), extras))
            .map_err(run_error)?;
        Ok(())
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
) -> Result<(), StartError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut writer = FlowWriter::load(store, flow).await?;
        if writer.record().map(|r| r.kind) != Some(FlowKind::Function) {
            return Err(StartError::NotAFunction { flow });
        }
        writer.stage(
            clock,
            vec![EventBody::SignalDelivered {
                name: name.to_owned(),
                value: value.clone(),
            }],
        )?;
        let ready = AppendExtras {
            ready: Some(true),
            ..AppendExtras::default()
        };
        match writer.commit(store, ready).await {
            Ok(_) => return Ok(()),
            // The activation appended meanwhile: read again and retry.
            Err(WriteError::Store(StoreError::Conflict { .. })) if attempt < SIGNAL_ATTEMPTS => {}
            Err(error) => return Err(error.into()),
        }
    }
}

fn run_error(error: WriteError) -> RunError {
    match error {
        WriteError::Store(StoreError::Conflict {
            flow,
            expected,
            actual,
        }) => RunError::Conflict {
            flow,
            expected,
            actual,
        },
        other => RunError::Failed {
            message: other.to_string(),
        },
    }
}

/// Workers run durable functions: each activation on a blocking thread of its own, with an
/// await runtime that polls the function and the futures its steps await.
#[async_trait::async_trait]
impl FlowRunner for Functions {
    async fn run(&self, flow: FlowId) -> Result<(), RunError> {
        let _permit = self
            .shared
            .drivers
            .acquire()
            .await
            .map_err(|e| RunError::Failed {
                message: e.to_string(),
            })?;
        let functions = self.shared.clone();
        let handle = tokio::runtime::Handle::current();
        // If the worker drops this run (lost lease, shutdown), the blocking thread sees it.
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancelled = cancel.0.clone();
        tokio::task::spawn_blocking(move || functions.drive(flow, &handle, &cancelled))
            .await
            .map_err(|e| RunError::Failed {
                message: format!("the activation's thread failed: {e}"),
            })?
    }
}

/// Sets its flag when dropped: tells a driver thread that its run was given up.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
