//! The engine: runs a flow's compiled graph against a store, driving the engine state
//! machine of the spec (RESUMING → SCHEDULING → WAITING → ANALYZING → … → GAME_OVER → final),
//! recording every flow and atom transition through [`FlowWriter`] (so each is checked
//! against the tables and durable before the work it allows starts), and notifying listeners
//! after each append.
//!
//! One append per scheduling round: the results analysed since the last round and the
//! transitions of the atoms that start now share one atomic append, so a linear flow costs
//! one durable commit per task.
//!
//! **Requests from anywhere.** A suspension or a cancellation is recorded in the flow's log by
//! whoever asks ([`Engine::request_suspend`], [`Engine::cancel`]; the server does), while
//! possibly another process runs the flow. That run's next append then conflicts. When all
//! that was appended meanwhile are such requests, the run reloads the log, stages again the
//! outcomes it had not recorded yet (work in flight stays in flight), and decides the rest
//! again on top of the requests: they are honoured at that step boundary, and no result is
//! lost or work run twice. Before the run's opening transitions are recorded it simply
//! starts over from the log. Anything else appended meanwhile is another run: the conflict
//! goes to the caller, as before.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::sync::{Mutex, RwLock};

use flowstate_core::machine::{EngineState, FlowState};
use flowstate_core::{
    Clock, EventBody, Failure, FlowId, FlowKind, FlowRecord, FlowStatus, Intention, Machine,
    Transition,
};
use flowstate_engine::{
    commit_or_rebase, create, AppendExtras, Committed, CreateError, Created, Creation, FlowWriter,
    Rebases, StartOptions, WriteError, DEFAULT_IDEMPOTENCY_WINDOW,
};
use flowstate_store::{Store, StoreError};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::compile::{compile, AtomKind, CompileError, Graph};
use crate::flow::Flow;
use crate::listener::{Listener, Notifier};
use crate::runtime::{Runtime, Work};
use crate::task::{Inputs, TaskContext};

/// Why a run could not proceed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No flow of this name is registered with the engine.
    #[error("no task-graph flow named {name:?} is registered")]
    UnknownDefinition {
        /// The name.
        name: String,
    },
    /// The flow is not a task graph.
    #[error("flow {flow} is a {kind} flow, not a task graph")]
    NotATaskGraph {
        /// The flow.
        flow: FlowId,
        /// Its kind.
        kind: FlowKind,
    },
    /// The flow does not compile with its inputs.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Recording failed (including conflicts with another process and refused transitions).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A flow with the id exists already; nothing was written.
    #[error("flow {flow} exists already")]
    FlowExists {
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
    /// The flow is already being run by this engine.
    #[error("flow {flow} is already running in this engine")]
    AlreadyRunning {
        /// The flow.
        flow: FlowId,
    },
    /// A REVERTED flow whose revert once failed (and was repaired) cannot run again: the
    /// atom's REVERT_FAILURE state is terminal.
    #[error(
        "the flow cannot run again: atom {atom:?} is in REVERT_FAILURE, which no transition leaves"
    )]
    CannotRerun {
        /// The atom.
        atom: String,
    },
    /// The engine state machine refused a step: a bug.
    #[error(transparent)]
    Engine(#[from] flowstate_core::InvalidState),
    /// A request (suspend, resume, cancel) that the flow's state does not allow; nothing was
    /// recorded.
    #[error("cannot {request} flow {flow}: it is {state}; {detail}")]
    NotAllowed {
        /// The flow.
        flow: FlowId,
        /// What was asked: "suspend", "resume" or "cancel".
        request: &'static str,
        /// The flow's state.
        state: FlowState,
        /// Why not, and what can be done instead.
        detail: String,
    },
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Self::Write(WriteError::Store(error))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The flow.
    pub flow: FlowId,
    /// Its state: SUCCESS, FAILURE, REVERTED or SUSPENDED.
    pub state: FlowState,
    /// Execute failures, by atom.
    pub failures: Vec<(String, Failure)>,
    /// Revert failures, by atom.
    pub revert_failures: Vec<(String, Failure)>,
    /// Every provided value of every atom that succeeded (TaskFlow's `fetch_all`).
    pub results: Inputs,
}

/// Runs task-graph flows.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    max_concurrency: usize,
    definitions: RwLock<HashMap<String, Arc<Flow>>>,
    notifier: Notifier,
    suspends: Mutex<HashSet<FlowId>>,
    active: Mutex<HashSet<FlowId>>,
    /// How long idempotency keys of starts are kept, in milliseconds.
    idempotency_window_ms: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// `window` in milliseconds, saturating.
fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

/// Most atoms one run executes at once by default.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

impl Engine {
    /// A parallel engine (up to [`DEFAULT_MAX_CONCURRENCY`] atoms at once).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            definitions: RwLock::new(HashMap::new()),
            notifier: Notifier::default(),
            suspends: Mutex::new(HashSet::new()),
            active: Mutex::new(HashSet::new()),
            idempotency_window_ms: AtomicU64::new(window_ms(DEFAULT_IDEMPOTENCY_WINDOW)),
        }
    }

    /// A serial engine: one atom at a time (TaskFlow's default engine).
    pub fn serial(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self::new(store, clock).with_max_concurrency(1)
    }

    /// Sets how many atoms may run at once (at least 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }

    /// Keeps the idempotency keys of starts ([`Engine::submit_with`]) for `window` (default
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`]).
    pub fn set_idempotency_window(&self, window: Duration) {
        self.idempotency_window_ms
            .store(window_ms(window), Ordering::Relaxed);
    }

    /// The store the engine records in.
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Adds a listener for flow, atom and engine transitions.
    pub fn listen(&self, listener: Arc<dyn Listener>) {
        self.notifier.add(listener);
    }

    /// Registers a flow definition under its name; flows record the name and are re-run
    /// (after a crash, in another process) with the definition registered then.
    pub fn register(&self, flow: Flow) {
        self.definitions
            .write()
            .insert(flow.name.clone(), Arc::new(flow));
    }

    fn definition(&self, name: &str) -> Result<Arc<Flow>, Error> {
        self.definitions
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownDefinition {
                name: name.to_owned(),
            })
    }

    /// A writer holding the staged creation of a flow of `name` with `inputs`, after
    /// checking that the definition compiles with them (every input of every execute and
    /// revert is available).
    fn new_flow(
        &self,
        name: &str,
        inputs: Inputs,
        options: &StartOptions,
    ) -> Result<FlowWriter, Error> {
        let definition = self.definition(name)?;
        compile(&definition, &inputs.keys().cloned().collect())?;
        let input = Value::Object(inputs.into_iter().collect());
        let window = Duration::from_millis(self.idempotency_window_ms.load(Ordering::Relaxed));
        Ok(Creation::new(FlowKind::TaskGraph, name, input)
            .with_start(options)
            .idempotency_window(window)
            .stage(self.clock.as_ref())?)
    }

    /// Creates a flow of the registered definition `name` with `inputs`; nothing is
    /// recorded if it does not compile with them. The flow is PENDING until [`Engine::run`].
    pub async fn create(&self, name: &str, inputs: Inputs) -> Result<FlowId, Error> {
        Ok(self
            .create_with(name, inputs, &StartOptions::new())
            .await?
            .id())
    }

    /// [`Engine::create`] with a chosen id and/or an idempotency key: starting again with the
    /// same request gives the first flow ([`Created::Existing`]) and records nothing; the same
    /// key with another request is [`Error::KeyReused`].
    pub async fn create_with(
        &self,
        name: &str,
        inputs: Inputs,
        options: &StartOptions,
    ) -> Result<Created, Error> {
        let writer = self.new_flow(name, inputs, options)?;
        Ok(create::record(self.store.as_ref(), writer, false).await?)
    }

    /// Creates a flow and leaves it to the workers: it is recorded ready, and the first
    /// worker (of any process on the store) with this definition claims and runs it. Nothing
    /// is recorded if it does not compile with its inputs.
    pub async fn submit(&self, name: &str, inputs: Inputs) -> Result<FlowId, Error> {
        Ok(self
            .submit_with(name, inputs, &StartOptions::new())
            .await?
            .id())
    }

    /// [`Engine::submit`] with a chosen id and/or an idempotency key, as
    /// [`Engine::create_with`].
    pub async fn submit_with(
        &self,
        name: &str,
        inputs: Inputs,
        options: &StartOptions,
    ) -> Result<Created, Error> {
        let writer = self.new_flow(name, inputs, options)?;
        Ok(create::record(self.store.as_ref(), writer, true).await?)
    }

    /// Creates a flow and runs it to the end (or to a suspension). The creation is durable
    /// together with the flow's first transitions, in one commit.
    #[deprecated(since = "0.2.0", note = "renamed `execute`, as in every front door")]
    pub async fn start(&self, name: &str, inputs: Inputs) -> Result<RunOutcome, Error> {
        self.execute(name, inputs).await
    }

    /// Creates a flow and runs it here, to the end (or to a suspension), without offering it
    /// to workers. The creation is durable together with the flow's first transitions, in
    /// one commit.
    pub async fn execute(&self, name: &str, inputs: Inputs) -> Result<RunOutcome, Error> {
        let writer = self.new_flow(name, inputs, &StartOptions::new())?;
        self.run_exclusively(writer).await
    }

    /// [`Engine::execute`] with a chosen id and/or an idempotency key. The first start runs
    /// the flow here ([`Created::New`]); a replay (the same key and request) runs nothing and
    /// answers the first flow's outcome as its log says now ([`Created::Existing`]; a flow
    /// whose first run died is carried on by [`Engine::run`], as after any `execute`). The
    /// same key with another request is [`Error::KeyReused`].
    pub async fn execute_with(
        &self,
        name: &str,
        inputs: Inputs,
        options: &StartOptions,
    ) -> Result<(Created, RunOutcome), Error> {
        let writer = self.new_flow(name, inputs, options)?;
        let flow = writer.flow();
        let fingerprint = writer.idempotency().map(|key| key.fingerprint.clone());
        match self.run_exclusively(writer).await {
            Ok(outcome) => Ok((Created::New(flow), outcome)),
            Err(Error::Write(error @ WriteError::Store(StoreError::KeyTaken { .. }))) => {
                let created = create::settled(error, flow, fingerprint.as_deref())?;
                Ok((created, self.outcome_of(created.id()).await?))
            }
            Err(error) => Err(error),
        }
    }

    /// A flow's outcome as its log says now, running nothing.
    async fn outcome_of(&self, flow: FlowId) -> Result<RunOutcome, Error> {
        let writer = FlowWriter::load(self.store.as_ref(), flow).await?;
        let record = record_of(&writer)?;
        let Some(state) = state_of(record) else {
            return Err(Error::NotATaskGraph {
                flow,
                kind: record.kind,
            });
        };
        let definition = self.definition(&record.definition)?;
        let graph = compile(&definition, &input_names(record))?;
        Ok(outcome(flow, &graph, record, state))
    }

    /// Asks a flow this engine is running to suspend: running atoms finish, nothing new
    /// starts. In this process only, and void if the flow is not running here (as in
    /// TaskFlow); [`Engine::request_suspend`] records the request for whichever process runs
    /// the flow.
    pub fn suspend(&self, flow: FlowId) {
        self.suspends.lock().insert(flow);
    }

    fn take_suspend(&self, flow: FlowId) -> bool {
        self.suspends.lock().remove(&flow)
    }

    /// Asks the flow to suspend, durably and from any process: RUNNING → SUSPENDING is
    /// recorded in its log, and whichever engine runs it (here or in another process) honours
    /// it at its next step boundary: running atoms finish, nothing new starts, the flow ends
    /// SUSPENDED and no worker takes it up again until [`Engine::resume`]. A flow found
    /// SUSPENDING by a new run (its runner died) is loaded through RESUMING to SUSPENDED.
    ///
    /// Returns [`Transition::Ignored`] (nothing recorded) where the flow table makes
    /// suspending a no-op: a flow that is PENDING, SUSPENDING, SUSPENDED or finished. A flow
    /// being loaded after a crash (RESUMING) is [`Error::NotAllowed`].
    pub async fn request_suspend(&self, flow: FlowId) -> Result<Transition, Error> {
        self.request(flow, |_, state| {
            match FlowState::transition(state, FlowState::Suspending) {
                Ok(Transition::Allowed) => Ok(Some((
                    EventBody::FlowStateChanged {
                        to: FlowState::Suspending,
                    },
                    None,
                ))),
                Ok(Transition::Ignored) => Ok(None),
                Err(invalid) => Err(Error::NotAllowed {
                    flow,
                    request: "suspend",
                    state,
                    detail: format!(
                        "{invalid}; it is being loaded after its engine stopped, try again once it runs"
                    ),
                }),
            }
        })
        .await
    }

    /// Resumes a SUSPENDED flow, from any process: SUSPENDED → RUNNING is recorded and the
    /// flow is marked ready, so a worker (of any process with its definition) runs it on; that
    /// run loads it as the spec loads every flow it finds RUNNING (RESUMING, SUSPENDED,
    /// RUNNING). Resuming a RUNNING flow is a no-op ([`Transition::Ignored`]); any other
    /// state is [`Error::NotAllowed`] (a finished flow runs again only through
    /// [`Engine::run`]).
    pub async fn resume(&self, flow: FlowId) -> Result<Transition, Error> {
        self.request(flow, |_, state| match state {
            FlowState::Suspended => Ok(Some((
                EventBody::FlowStateChanged {
                    to: FlowState::Running,
                },
                Some(true),
            ))),
            FlowState::Running => Ok(None),
            FlowState::Suspending => Err(Error::NotAllowed {
                flow,
                request: "resume",
                state,
                detail: "the flow table has no SUSPENDING → RUNNING: wait until it is SUSPENDED"
                    .to_owned(),
            }),
            _ => Err(Error::NotAllowed {
                flow,
                request: "resume",
                state,
                detail: "only a SUSPENDED flow resumes (SUSPENDED → RUNNING)".to_owned(),
            }),
        })
        .await
    }

    /// Cancels a flow that has not finished, from any process: `cancel_requested` is recorded
    /// (with `reason`) and the engine that runs it reverts it, at its next step boundary: no
    /// new atom starts, running atoms finish, and every atom that ran is reverted (in reverse
    /// order, as after a failure that nothing retries), so the flow ends REVERTED (FAILURE if
    /// a revert fails), through transitions the tables allow. A SUSPENDED flow is marked
    /// ready so that a worker runs it to its revert (SUSPENDED → RUNNING → REVERTED).
    ///
    /// Cancelling a REVERTED flow, or one already cancelled, is a no-op
    /// ([`Transition::Ignored`]: the first reason stands); a SUCCESS or FAILURE flow is
    /// [`Error::NotAllowed`] (the flow table has no way from there to REVERTED).
    pub async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, Error> {
        self.request(flow, |record, state| match state {
            FlowState::Success | FlowState::Failure => Err(Error::NotAllowed {
                flow,
                request: "cancel",
                state,
                detail: format!(
                    "it finished, and the flow table has no {} → REVERTED",
                    state.label()
                ),
            }),
            FlowState::Reverted => Ok(None),
            _ if record.cancel_requested.is_some() => Ok(None),
            _ => Ok(Some((
                EventBody::CancelRequested {
                    reason: reason.to_owned(),
                },
                // Nobody runs a suspended flow: hand it to the workers. Any other flow is
                // run (or will be claimed) by someone already; marking it ready would let a
                // worker take a flow this process runs without a lease.
                (state == FlowState::Suspended).then_some(true),
            ))),
        })
        .await
    }

    /// Appends what `decide` says to the task graph `flow` (with the ready flag it gives),
    /// reading the log again and deciding again when a run appended meanwhile.
    async fn request(
        &self,
        flow: FlowId,
        decide: impl Fn(&FlowRecord, FlowState) -> Result<Option<(EventBody, Option<bool>)>, Error>,
    ) -> Result<Transition, Error> {
        let recorded = flowstate_engine::deliver_with(
            self.store.as_ref(),
            self.clock.as_ref(),
            flow,
            |record| {
                let FlowStatus::TaskGraph(state) = record.status else {
                    return Err(Error::NotATaskGraph {
                        flow,
                        kind: record.kind,
                    });
                };
                decide(record, state)
            },
        )
        .await?;
        Ok(if recorded {
            Transition::Allowed
        } else {
            Transition::Ignored
        })
    }

    /// Runs (or resumes, or re-runs) a flow until it is SUCCESS, FAILURE, REVERTED or
    /// SUSPENDED. A flow found mid-run (its process died) is loaded through RESUMING and
    /// SUSPENDED; atoms that were running run again with the same attempt number.
    pub async fn run(&self, flow: FlowId) -> Result<RunOutcome, Error> {
        let writer = FlowWriter::load(self.store.as_ref(), flow).await?;
        self.run_exclusively(writer).await
    }

    /// What a worker does with a claimed flow: runs it if it is unfinished (PENDING, or
    /// RUNNING, SUSPENDING or RESUMING because the process that ran it died or because it
    /// was resumed, or SUSPENDED with a cancellation to carry out), and leaves it alone
    /// otherwise. Re-running a finished or suspended flow is a deliberate act
    /// ([`Engine::run`], [`Engine::resume`]), never a side effect of a spurious wake-up or a
    /// lease that ran out after the final append. Returns `None` when there was nothing to do.
    pub async fn run_unfinished(&self, flow: FlowId) -> Result<Option<RunOutcome>, Error> {
        let writer = FlowWriter::load(self.store.as_ref(), flow).await?;
        let unfinished = writer.record().is_some_and(|record| match record.status {
            FlowStatus::TaskGraph(
                FlowState::Pending
                | FlowState::Running
                | FlowState::Suspending
                | FlowState::Resuming,
            ) => true,
            FlowStatus::TaskGraph(FlowState::Suspended) => record.cancel_requested.is_some(),
            _ => false,
        });
        if !unfinished {
            // A child flow whose run died between its last commit and telling its parent
            // tells it now (the parent ignores a second telling).
            if let Some(record) = writer.record().filter(|r| r.parent.is_some()) {
                let definition = self.definition(&record.definition)?;
                let initial = input_names(record);
                let graph = compile(&definition, &initial)?;
                if let FlowStatus::TaskGraph(state) = record.status {
                    self.tell_parent(record, &outcome(flow, &graph, record, state))
                        .await?;
                }
            }
            return Ok(None);
        }
        self.run_exclusively(writer).await.map(Some)
    }

    /// Runs a flow, refusing a second concurrent run of it in this engine.
    async fn run_exclusively(&self, writer: FlowWriter) -> Result<RunOutcome, Error> {
        let flow = writer.flow();
        // A suspension asked for while the flow was not running is void (as in TaskFlow).
        let _stale = self.take_suspend(flow);
        let _running = ActiveRun::enter(&self.active, flow)?;
        self.run_claimed(writer).await
    }

    /// Runs a loaded flow; starts over from the log when requests (a suspension, a
    /// cancellation) were appended before its opening transitions were recorded.
    async fn run_claimed(&self, writer: FlowWriter) -> Result<RunOutcome, Error> {
        let flow = writer.flow();
        let mut writer = writer;
        let mut rebases = Rebases::default();
        loop {
            match self.run_loaded(writer, &mut rebases).await? {
                Some(outcome) => return Ok(outcome),
                None => writer = FlowWriter::load(self.store.as_ref(), flow).await?,
            }
        }
    }

    /// One run of a loaded flow (the engine machine from RESUMING to a final state). `None`:
    /// requests were appended before anything was recorded or launched; load and run again.
    #[allow(clippy::too_many_lines)] // one engine machine, read top to bottom
    async fn run_loaded(
        &self,
        writer: FlowWriter,
        rebases: &mut Rebases,
    ) -> Result<Option<RunOutcome>, Error> {
        let flow = writer.flow();
        let mut engine = EngineState::INITIAL;
        self.step_engine(flow, &mut engine, EngineState::Resuming)?;
        let record = record_of(&writer)?.clone();
        let FlowStatus::TaskGraph(state) = record.status else {
            return Err(Error::NotATaskGraph {
                flow,
                kind: record.kind,
            });
        };
        let definition = self.definition(&record.definition)?;
        let initial = input_names(&record);
        let graph = Arc::new(compile(&definition, &initial)?);
        let mut run = Run::new(self, writer, graph.clone(), *rebases);
        let mut tasks = InFlight::default();
        let mut opening = Vec::new();
        match state {
            FlowState::Pending | FlowState::Suspended | FlowState::Success | FlowState::Failure => {
            }
            FlowState::Reverted => {
                // Re-running a reverted flow starts it over (TaskFlow resets it the same way).
                opening.push(EventBody::FlowStateChanged {
                    to: FlowState::Pending,
                });
                opening.extend(reset_atoms(&graph, &record)?);
            }
            FlowState::Suspending if record.cancel_requested.is_none() => {
                // A suspension was asked for and nobody carried it out (its runner died, or
                // the flow waited for a worker): it is honoured as the flow is loaded,
                // RESUMING then SUSPENDED, and nothing runs until it is resumed.
                run.stage(vec![
                    EventBody::FlowStateChanged {
                        to: FlowState::Resuming,
                    },
                    EventBody::FlowStateChanged {
                        to: FlowState::Suspended,
                    },
                ])?;
                if run.flush_suspended(&tasks).await? == Flushed::Restart {
                    *rebases = run.rebases;
                    return Ok(None);
                }
                for next in [
                    EngineState::Scheduling,
                    EngineState::Waiting,
                    EngineState::Analyzing,
                    EngineState::GameOver,
                    EngineState::Suspended,
                ] {
                    self.step_engine(flow, &mut engine, next)?;
                }
                return Ok(Some(outcome(
                    flow,
                    &graph,
                    run.record()?,
                    FlowState::Suspended,
                )));
            }
            FlowState::Running | FlowState::Suspending | FlowState::Resuming => {
                // The process that ran it died (or it was resumed): load it the way the
                // spec says.
                if state != FlowState::Resuming {
                    opening.push(EventBody::FlowStateChanged {
                        to: FlowState::Resuming,
                    });
                }
                opening.push(EventBody::FlowStateChanged {
                    to: FlowState::Suspended,
                });
            }
        }
        opening.push(EventBody::FlowStateChanged {
            to: FlowState::Running,
        });
        run.stage(opening)?;
        // Work the log shows in flight when its process died runs again once the opening
        // transitions are durable.
        let mut resumed = run.runtime.resume_in_flight(record_of(&run.writer)?);
        if state == FlowState::Failure {
            // Re-running a failed flow really runs it: the reverts that failed run again, and
            // each that succeeds now is recorded as repaired, so the rest can revert.
            if run.flush(&tasks).await? == Flushed::Restart {
                *rebases = run.rebases;
                return Ok(None);
            }
            let retried = run.runtime.failed_reverts(record_of(&run.writer)?);
            for work in retried {
                let atom = match &work {
                    Work::Revert { atom, .. } | Work::Execute { atom, .. } => *atom,
                };
                let mut once = InFlight::default();
                self.launch(&mut once, &graph, flow, work);
                if let Some((_, Finished::Reverted(result))) = once.next().await {
                    run.record_outcome(atom, Finished::RevertRetried(result))?;
                }
            }
        }
        self.step_engine(flow, &mut engine, EngineState::Scheduling)?;
        let final_state = 'run: loop {
            let mut held_back;
            loop {
                // SCHEDULING: a suspension (asked in this process, or recorded by a request)
                // and a cancellation are taken into account at every step boundary.
                run.take_requests()?;
                let capacity = self
                    .max_concurrency
                    .saturating_sub(tasks.len() + resumed.len());
                let step = run
                    .runtime
                    .schedule(record_of(&run.writer)?, capacity, run.stopping);
                held_back = step.held_back && run.stopping;
                run.stage(step.events)?;
                if step.again && step.launch.is_empty() && resumed.is_empty() && tasks.is_empty() {
                    if run.flush(&tasks).await? == Flushed::Restart {
                        *rebases = run.rebases;
                        return Ok(None);
                    }
                    self.step_engine(flow, &mut engine, EngineState::Waiting)?;
                    self.step_engine(flow, &mut engine, EngineState::Analyzing)?;
                    self.step_engine(flow, &mut engine, EngineState::Scheduling)?;
                    continue;
                }
                if step.launch.is_empty() && resumed.is_empty() && tasks.is_empty() {
                    // The run is over: what is staged goes out with the final state.
                    self.step_engine(flow, &mut engine, EngineState::Waiting)?;
                    self.step_engine(flow, &mut engine, EngineState::Analyzing)?;
                    break;
                }
                // Every transition is durable before the work it allows starts.
                match run.flush(&tasks).await? {
                    Flushed::Committed => {}
                    Flushed::Restart => {
                        *rebases = run.rebases;
                        return Ok(None);
                    }
                    // Requests came first: decide again on top of them (nothing of this
                    // round was launched).
                    Flushed::Rebased => continue,
                }
                for work in resumed.drain(..).chain(step.launch) {
                    self.launch(&mut tasks, &graph, flow, work);
                }
                // WAITING (something was launched above or is still running).
                self.step_engine(flow, &mut engine, EngineState::Waiting)?;
                let first = tasks.next().await;
                // ANALYZING: this completion and every other one already finished.
                self.step_engine(flow, &mut engine, EngineState::Analyzing)?;
                let mut finished: Vec<(usize, Finished)> = first.into_iter().collect();
                while let Some(more) = tasks.try_next() {
                    finished.extend(more);
                }
                for (atom, outcome) in finished {
                    run.record_outcome(atom, outcome)?;
                }
                if self.notifier.wants() {
                    // Listeners see each result before anything it unblocks starts (so a
                    // listener can suspend the flow right after an atom, as in TaskFlow).
                    // Without listeners results and the next starts share one commit.
                    if run.flush(&tasks).await? == Flushed::Restart {
                        *rebases = run.rebases;
                        return Ok(None);
                    }
                }
                self.step_engine(flow, &mut engine, EngineState::Scheduling)?;
            }
            // GAME_OVER: the final flow state.
            self.step_engine(flow, &mut engine, EngineState::GameOver)?;
            let final_state = run.runtime.outcome(run.record()?, held_back);
            if state_of(run.record()?) != Some(final_state) {
                run.stage(vec![EventBody::FlowStateChanged { to: final_state }])?;
            }
            let flushed = if final_state == FlowState::Suspended {
                run.flush_suspended(&tasks).await?
            } else {
                run.flush(&tasks).await?
            };
            match flushed {
                Flushed::Committed => break 'run final_state,
                Flushed::Restart => {
                    *rebases = run.rebases;
                    return Ok(None);
                }
                Flushed::Rebased => {
                    // Requests came before the final state could be recorded: this run of
                    // the engine machine ends unrecorded and a new one goes on from the log.
                    engine = EngineState::INITIAL;
                    self.step_engine(flow, &mut engine, EngineState::Resuming)?;
                    self.step_engine(flow, &mut engine, EngineState::Scheduling)?;
                }
            }
        };
        let final_engine = match final_state {
            FlowState::Success => EngineState::Success,
            FlowState::Failure => EngineState::Failure,
            FlowState::Suspended => EngineState::Suspended,
            _ => EngineState::Reverted,
        };
        self.step_engine(flow, &mut engine, final_engine)?;
        let finished = outcome(flow, &graph, run.record()?, final_state);
        self.tell_parent(run.record()?, &finished).await?;
        Ok(Some(finished))
    }

    /// Tells the durable function that started this flow as its child (if one did) how the
    /// flow ended: its results, or a `TaskGraphFailed` failure. Nothing while suspended.
    async fn tell_parent(&self, record: &FlowRecord, outcome: &RunOutcome) -> Result<(), Error> {
        if record.parent.is_none() {
            return Ok(());
        }
        let ended = match outcome.state {
            FlowState::Success => Ok(Value::Object(outcome.results.clone().into_iter().collect())),
            FlowState::Failure | FlowState::Reverted => {
                let mut failed: Vec<String> = outcome
                    .failures
                    .iter()
                    .map(|(atom, failure)| format!("{atom}: {failure}"))
                    .collect();
                if let Some(reason) = &record.cancel_requested {
                    failed.push(format!("cancelled: {reason}"));
                }
                Err(Failure::new(
                    "TaskGraphFailed",
                    format!(
                        "task graph {} ended {}: {}",
                        outcome.flow,
                        outcome.state,
                        failed.join("; ")
                    ),
                ))
            }
            _ => return Ok(()),
        };
        flowstate_engine::children::notify_parent(
            self.store.as_ref(),
            self.clock.as_ref(),
            record,
            &ended,
        )
        .await?;
        Ok(())
    }

    fn step_engine(
        &self,
        flow: FlowId,
        engine: &mut EngineState,
        to: EngineState,
    ) -> Result<(), Error> {
        let _allowed = engine.advance(to)?;
        self.notifier.engine(flow, to);
        Ok(())
    }

    fn launch(&self, tasks: &mut InFlight, graph: &Arc<Graph>, flow: FlowId, work: Work) {
        let (atom, attempt) = match &work {
            Work::Execute { atom, attempt, .. } | Work::Revert { atom, attempt, .. } => {
                (*atom, *attempt)
            }
        };
        let compiled = &graph.atoms[atom];
        let AtomKind::Task(task) = &compiled.kind else {
            return;
        };
        let task = task.task.clone();
        let ctx = TaskContext {
            flow,
            atom: compiled.name.clone(),
            attempt,
            // A revert gets its own key: a refund must not be deduplicated against its charge.
            idempotency_key: match &work {
                Work::Execute { .. } => format!("{flow}/{}/{attempt}", compiled.name),
                Work::Revert { .. } => format!("{flow}/{}/{attempt}/revert", compiled.name),
            },
        };
        let reverting = matches!(work, Work::Revert { .. });
        let handle = tasks.set.spawn(async move {
            let finished = match work {
                Work::Execute { inputs, .. } => {
                    let started = std::time::Instant::now();
                    let executed = task.execute(&ctx, inputs).await;
                    metrics::histogram!("flowstate_step_duration_seconds", "kind" => "task_graph")
                        .record(started.elapsed().as_secs_f64());
                    Finished::Executed(executed)
                }
                Work::Revert {
                    inputs, outcome, ..
                } => Finished::Reverted(task.revert(&ctx, inputs, outcome).await),
            };
            (atom, finished)
        });
        tasks.launched.insert(handle.id(), (atom, reverting));
    }
}

/// Marks a flow as running in this engine for as long as it lives, so that the mark is
/// removed however the run ends: returned, failed, or dropped (a worker aborts a run whose
/// lease it lost, or that outlived a shutdown's grace).
struct ActiveRun<'a> {
    active: &'a Mutex<HashSet<FlowId>>,
    flow: FlowId,
}

impl<'a> ActiveRun<'a> {
    fn enter(active: &'a Mutex<HashSet<FlowId>>, flow: FlowId) -> Result<Self, Error> {
        let inserted = active.lock().insert(flow);
        if !inserted {
            return Err(Error::AlreadyRunning { flow });
        }
        Ok(Self { active, flow })
    }
}

impl Drop for ActiveRun<'_> {
    fn drop(&mut self) {
        self.active.lock().remove(&self.flow);
    }
}

/// The atoms whose execute or revert is in flight, as tokio tasks.
#[derive(Default)]
struct InFlight {
    set: JoinSet<(usize, Finished)>,
    /// Which atom each task runs, so that a panic can be charged to its atom.
    launched: HashMap<tokio::task::Id, (usize, bool)>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn len(&self) -> usize {
        self.set.len()
    }

    /// The atoms whose work is in flight.
    fn atoms(&self) -> impl Iterator<Item = usize> + '_ {
        self.launched.values().map(|(atom, _)| *atom)
    }

    /// Turns a joined task into its atom's outcome; a panicking task is a failing task, not
    /// a dead engine.
    fn outcome(
        &mut self,
        joined: Result<(tokio::task::Id, (usize, Finished)), tokio::task::JoinError>,
    ) -> Option<(usize, Finished)> {
        match joined {
            Ok((id, done)) => {
                self.launched.remove(&id);
                Some(done)
            }
            Err(error) => {
                let (atom, reverting) = self.launched.remove(&error.id())?;
                let failure = Failure::new("Panicked", error.to_string());
                Some(if reverting {
                    (atom, Finished::Reverted(Err(failure)))
                } else {
                    (atom, Finished::Executed(Err(failure)))
                })
            }
        }
    }

    async fn next(&mut self) -> Option<(usize, Finished)> {
        let joined = self.set.join_next_with_id().await?;
        self.outcome(joined)
    }

    fn try_next(&mut self) -> Option<Option<(usize, Finished)>> {
        let joined = self.set.try_join_next_with_id()?;
        Some(self.outcome(joined))
    }
}

/// How an atom's work ended.
#[derive(Clone)]
enum Finished {
    Executed(Result<Value, Failure>),
    Reverted(Result<(), Failure>),
    /// A failed revert run again (re-running a FAILURE flow).
    RevertRetried(Result<(), Failure>),
}

/// What a commit of one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// Recorded (or nothing was staged).
    Committed,
    /// Requests (a suspension, a cancellation) were appended since the run last read the
    /// log: it now stands on top of them, with the outcomes it had not recorded yet staged
    /// again, and decides the rest again. Nothing staged for launching was launched.
    Rebased,
    /// Requests were appended before the run's opening transitions were recorded: load the
    /// flow and run it again (nothing ran yet).
    Restart,
}

/// One run's writer and scheduler: decisions are staged (checked and folded at once) and
/// committed as one append per scheduling round.
struct Run<'a> {
    engine: &'a Engine,
    writer: FlowWriter,
    graph: Arc<Graph>,
    runtime: Runtime,
    /// Outcomes whose events are staged but not durable yet, in the order they were staged
    /// (staged again on top of requests after a rebase).
    unrecorded: Vec<(usize, Finished)>,
    /// Whether the run's first append (its opening transitions) is durable.
    opened: bool,
    /// Rebases and restarts of the commit in progress (the kernel's budget).
    rebases: Rebases,
    /// Nothing new starts: a suspension was asked for (in this process or in the log).
    stopping: bool,
    /// A suspension asked for in this process ([`Engine::suspend`]).
    suspend_asked: bool,
    /// The cancellation in the log has been turned into reverts.
    cancelling: bool,
}

impl<'a> Run<'a> {
    fn new(engine: &'a Engine, writer: FlowWriter, graph: Arc<Graph>, rebases: Rebases) -> Self {
        Self {
            engine,
            writer,
            runtime: Runtime::new(graph.clone()),
            graph,
            unrecorded: Vec::new(),
            opened: false,
            rebases,
            stopping: false,
            suspend_asked: false,
            cancelling: false,
        }
    }

    /// The flow's state, including staged decisions.
    fn record(&self) -> Result<&FlowRecord, Error> {
        record_of(&self.writer)
    }

    fn stage(&mut self, events: Vec<EventBody>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let notify = self.engine.notifier.wants().then(|| events.clone());
        self.writer.stage(self.engine.clock.as_ref(), events)?;
        if let Some(events) = notify {
            // Only accepted transitions are queued for listeners; they get them once durable.
            self.engine.notifier.events(self.writer.flow(), &events);
        }
        Ok(())
    }

    /// Stages what an atom's finished work means (and remembers it until it is durable).
    fn record_outcome(&mut self, atom: usize, finished: Finished) -> Result<(), Error> {
        let events = match finished.clone() {
            Finished::Executed(result) => {
                self.runtime
                    .executed(record_of(&self.writer)?, atom, result)
            }
            Finished::Reverted(result) => self.runtime.reverted(atom, result),
            Finished::RevertRetried(result) => self.runtime.revert_retried(atom, result),
        };
        self.stage(events)?;
        self.unrecorded.push((atom, finished));
        Ok(())
    }

    /// At a step boundary: a suspension asked for in this process or recorded in the log
    /// stops new work (recording SUSPENDING if the log does not say it yet), and a
    /// cancellation in the log marks everything for revert.
    fn take_requests(&mut self) -> Result<(), Error> {
        let flow = self.writer.flow();
        if !self.suspend_asked {
            self.suspend_asked = self.engine.take_suspend(flow);
        }
        let suspending = state_of(self.record()?) == Some(FlowState::Suspending);
        if !self.stopping && (suspending || self.suspend_asked) {
            self.stopping = true;
            if !suspending {
                self.stage(vec![EventBody::FlowStateChanged {
                    to: FlowState::Suspending,
                }])?;
            }
        }
        if !self.cancelling && self.record()?.cancel_requested.is_some() {
            self.cancelling = true;
            let events = self.runtime.cancel(record_of(&self.writer)?);
            self.stage(events)?;
        }
        Ok(())
    }

    /// Appends everything staged as one atomic append, then notifies listeners.
    async fn flush(&mut self, in_flight: &InFlight) -> Result<Flushed, Error> {
        self.flush_with(in_flight, AppendExtras::default()).await
    }

    /// The append that records SUSPENDED: it also clears the ready flag, so that no worker
    /// takes the flow up again until it is resumed (or cancelled). A flow cancelled while it
    /// was suspending stays ready instead: the suspension held its reverts back, and a worker
    /// carries the cancellation out (SUSPENDED → RUNNING → REVERTED), as for a flow cancelled
    /// once suspended.
    async fn flush_suspended(&mut self, in_flight: &InFlight) -> Result<Flushed, Error> {
        let cancelled = self.record()?.cancel_requested.is_some();
        let extras = AppendExtras {
            ready: Some(cancelled),
            ..AppendExtras::default()
        };
        self.flush_with(in_flight, extras).await
    }

    async fn flush_with(
        &mut self,
        in_flight: &InFlight,
        extras: AppendExtras,
    ) -> Result<Flushed, Error> {
        if !self.writer.has_staged() {
            return Ok(Flushed::Committed);
        }
        let flow = self.writer.flow();
        let store = self.engine.store.as_ref();
        // Requests (a suspension, a cancellation) are expected: a client records them in the
        // log while this run runs the flow, and the run goes on on top of them.
        let committed = commit_or_rebase(
            &mut self.writer,
            store,
            extras,
            &mut self.rebases,
            is_request,
        )
        .await;
        match committed {
            Ok(Committed::Recorded(_)) => {
                self.opened = true;
                self.unrecorded.clear();
                if self.engine.notifier.wants() {
                    self.engine.notifier.flush(flow);
                }
                Ok(Flushed::Committed)
            }
            Ok(Committed::Rebased) if !self.opened => {
                self.engine.notifier.discard(flow);
                Ok(Flushed::Restart)
            }
            Ok(Committed::Rebased) => {
                self.engine.notifier.discard(flow);
                // A new scheduler for the new state: what runs stays running, outcomes not
                // yet recorded are staged again, everything else is decided again.
                self.runtime = Runtime::new(self.graph.clone());
                self.runtime.in_flight(in_flight.atoms());
                self.stopping = false;
                self.cancelling = false;
                for (atom, finished) in std::mem::take(&mut self.unrecorded) {
                    self.record_outcome(atom, finished)?;
                }
                Ok(Flushed::Rebased)
            }
            Err(error) => {
                if error.is_conflict() {
                    self.engine.notifier.discard(flow);
                }
                Err(error.into())
            }
        }
    }
}

/// The requests a client appends to a task graph's log while a run runs it.
fn is_request(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::FlowStateChanged {
            to: FlowState::Suspending
        } | EventBody::CancelRequested { .. }
    )
}

/// The state a writer holds, including staged events.
fn record_of(writer: &FlowWriter) -> Result<&FlowRecord, Error> {
    writer.record().ok_or(Error::Write(WriteError::Refused(
        flowstate_core::FoldError::EmptyLog,
    )))
}

fn state_of(record: &FlowRecord) -> Option<FlowState> {
    match record.status {
        FlowStatus::TaskGraph(state) => Some(state),
        _ => None,
    }
}

/// Events that put every atom back to PENDING with the intention to execute, for a re-run of
/// a REVERTED flow. An atom in REVERT_FAILURE (terminal, even once repaired) cannot be reset,
/// so such a flow cannot run again.
fn reset_atoms(graph: &Graph, record: &FlowRecord) -> Result<Vec<EventBody>, Error> {
    let mut events = Vec::new();
    for atom in &graph.atoms {
        let Some(state) = record.atoms.get(&atom.name) else {
            continue;
        };
        match state.state.key() {
            "reverted" | "ignore" => {}
            "pending" if state.intention != Intention::Execute => {
                events.push(EventBody::AtomIntentionChanged {
                    atom: atom.name.clone(),
                    retry: atom.is_retry(),
                    intention: Intention::Execute,
                });
                continue;
            }
            "revert_failure" => {
                return Err(Error::CannotRerun {
                    atom: atom.name.clone(),
                })
            }
            _ => continue,
        }
        events.push(match &atom.kind {
            AtomKind::Task(_) => EventBody::TaskStateChanged {
                atom: atom.name.clone(),
                to: flowstate_core::machine::TaskState::Pending,
                intention: Intention::Execute,
                result: None,
                failure: None,
            },
            AtomKind::Retry(_) => EventBody::RetryStateChanged {
                atom: atom.name.clone(),
                to: flowstate_core::machine::RetryState::Pending,
                intention: Intention::Execute,
                result: None,
                failure: None,
                failures: std::collections::BTreeMap::new(),
            },
        });
    }
    Ok(events)
}

/// The names of a flow's inputs.
fn input_names(record: &FlowRecord) -> BTreeSet<String> {
    record
        .input
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn outcome(flow: FlowId, graph: &Graph, record: &FlowRecord, state: FlowState) -> RunOutcome {
    let mut failures = Vec::new();
    let mut revert_failures = Vec::new();
    let mut results = Inputs::new();
    for atom in &graph.atoms {
        let Some(stored) = record.atoms.get(&atom.name) else {
            continue;
        };
        if let Some(failure) = &stored.failure {
            failures.push((atom.name.clone(), failure.clone()));
        }
        if let Some(failure) = &stored.revert_failure {
            revert_failures.push((atom.name.clone(), failure.clone()));
        }
        if let Some(result) = &stored.result {
            for name in atom.provides() {
                let value = match &atom.kind {
                    AtomKind::Task(task) => task.provides.extract(result, &name),
                    AtomKind::Retry(_) => Some(result.clone()),
                };
                if let Some(value) = value {
                    results.insert(name, value);
                }
            }
        }
    }
    RunOutcome {
        flow,
        state,
        failures,
        revert_failures,
        results,
    }
}

impl From<CreateError> for Error {
    fn from(error: CreateError) -> Self {
        match error {
            CreateError::Exists { flow } => Self::FlowExists { flow },
            CreateError::KeyReused { key, flow } => Self::KeyReused { key, flow },
            CreateError::Write(write) => Self::Write(write),
        }
    }
}

/// Workers run task-graph flows with the engine (see [`Engine::run_unfinished`]).
#[async_trait::async_trait]
impl flowstate_worker::FlowRunner for Engine {
    async fn run(&self, flow: FlowId) -> Result<(), flowstate_worker::RunError> {
        self.run_unfinished(flow)
            .await
            .map(drop)
            .map_err(Into::into)
    }
}

impl From<Error> for flowstate_worker::RunError {
    fn from(error: Error) -> Self {
        match error {
            Error::Write(write) => write.into(),
            Error::UnknownDefinition { name } => Self::MissingDefinition {
                kind: FlowKind::TaskGraph,
                definition: name,
            },
            other => Self::failed(other),
        }
    }
}
