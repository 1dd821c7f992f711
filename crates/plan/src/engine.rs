//! The plan engine: plans a flow from its goals, records it, and runs it on any store, either
//! in the calling process ([`Plans::run`], [`Plans::run_to_end`]) or through workers (it is the
//! worker's [`FlowRunner`] for plans).
//!
//! **Every transition is durable before the work it allows starts:** a round stages what the
//! runtime decides (folded at once, so a decision the tables refuse never reaches the store),
//! commits it as one append, and only then runs the attempts the log now says are running. A
//! linear plan costs one commit per step (the result of one step and the start of the next
//! are one append). An attempt the log shows running when a run begins (its process died)
//! runs again with the same attempt number, so with the same token and idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flowstate_core::sync::{Mutex, RwLock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::fold::{fold, StopAt};
use flowstate_core::machine::PlanState;
use flowstate_core::{
    Clock, EventBody, ExecutionPlan, Failure, FlowId, FlowKind, FlowRecord, FlowStatus, FoldError,
    Timestamp,
};
use flowstate_engine::{
    commit_or_rebase, create, AppendExtras, Committed, CreateError, Created, Creation, FlowWriter,
    Rebases, StartOptions, WriteError, DEFAULT_IDEMPOTENCY_WINDOW,
};
use flowstate_store::{NewTimer, Store, StoreError};
use flowstate_worker::{FlowRunner, RunError};
use tokio::task::JoinSet;

use crate::planner::PlanningError;
use crate::registry::{Registered, RegistrationError, Registry};
use crate::runtime::{self, AttemptResult, Launch, LaunchKind};
use crate::step::{Step, StepContext, StepError};

/// What a run needs to go on on top of a cancellation: the results staged since its last
/// commit, and the rebases of the commit in progress.
#[derive(Default)]
struct Rebase {
    unrecorded: Vec<(Launch, AttemptResult)>,
    rebases: Rebases,
}

/// Most events one commit of a round carries (half the append limit, so that the results
/// staged before the decisions always fit).
const COMMIT_CHUNK: usize = flowstate_core::limits::MAX_EVENTS_PER_APPEND / 2;

/// The name of the store timer that wakes a plan for its next retry.
pub const RETRY_TIMER: &str = "plan-retry";

/// Most decision batches one round may stage before the engine suspects a loop (each batch
/// changes the state, and a plan has at most `MAX_PLAN_STEPS` steps; this is far beyond
/// any legitimate round).
pub const MAX_DECISION_BATCHES: usize = 100_000;

/// How to start a flow: goals, initial inputs, and choices between providers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanRequest {
    /// A name for the flow's definition in listings (default `"plan"`).
    pub name: String,
    /// Goals: step names or attribute names.
    pub goals: Vec<String>,
    /// Initial inputs (attributes).
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Attribute → the step that must provide it, where several could.
    pub choices: BTreeMap<String, String>,
}

impl PlanRequest {
    /// A request for these goals.
    pub fn new<S: Into<String>>(goals: impl IntoIterator<Item = S>) -> Self {
        Self {
            name: "plan".to_owned(),
            goals: goals.into_iter().map(Into::into).collect(),
            inputs: serde_json::Map::new(),
            choices: BTreeMap::new(),
        }
    }

    /// Adds an initial input.
    #[must_use]
    pub fn input(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.inputs.insert(name.into(), value);
        self
    }

    /// Chooses the provider of an attribute.
    #[must_use]
    pub fn choose(mut self, attribute: impl Into<String>, step: impl Into<String>) -> Self {
        self.choices.insert(attribute.into(), step.into());
        self
    }

    /// Names the flow's definition.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The goals cannot be planned from the inputs; nothing was recorded.
    #[error(transparent)]
    Planning(#[from] PlanningError),
    /// Recording failed (a refused transition, a conflict, a store error).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The log does not fold.
    #[error(transparent)]
    Fold(#[from] FoldError),
    /// No such flow.
    #[error("flow {flow} does not exist")]
    UnknownFlow {
        /// The flow.
        flow: FlowId,
    },
    /// The flow is not a plan.
    #[error("flow {flow} is a {kind} flow, not a plan")]
    NotAPlan {
        /// The flow.
        flow: FlowId,
        /// Its kind.
        kind: FlowKind,
    },
    /// The flow's plan uses a step version this process does not have.
    #[error("flow {flow} needs step {step:?} version {version}, which is not registered in this process")]
    MissingStep {
        /// The flow.
        flow: FlowId,
        /// The step.
        step: String,
        /// Its version.
        version: u32,
    },
    /// The runtime kept deciding without end (a bug; the flow is left as it was).
    #[error("flow {flow}: more than {MAX_DECISION_BATCHES} decision batches in one round")]
    Runaway {
        /// The flow.
        flow: FlowId,
    },
}

/// Most plans [`Plans`] keeps computed (by goals, input names and choices); when full, it
/// starts again empty.
pub const PLAN_CACHE_ENTRIES: usize = 256;

/// What a plan depends on besides the registry: the goals, the names of the inputs (never
/// their values) and the choices.
type PlanKey = (Vec<String>, Vec<String>, BTreeMap<String, String>);

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: RwLock<Registry>,
    /// Plans computed for the registry as it is: cleared by every (un)registration, under
    /// the registry's write lock, so a plan computed under its read lock is never stale.
    plans: Mutex<HashMap<PlanKey, ExecutionPlan>>,
    /// How long idempotency keys of starts are kept, in milliseconds.
    idempotency_window_ms: AtomicU64,
}

/// The plan engine. Cheap to clone.
#[derive(Clone)]
pub struct Plans {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Plans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plans").finish_non_exhaustive()
    }
}

impl Plans {
    /// An engine over `store`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                registry: RwLock::new(Registry::default()),
                plans: Mutex::new(HashMap::new()),
                idempotency_window_ms: AtomicU64::new(
                    u64::try_from(DEFAULT_IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(u64::MAX),
                ),
            }),
        }
    }

    /// Keeps the idempotency keys of starts ([`Plans::submit_with`]) for `window` (default
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`]).
    pub fn set_idempotency_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .idempotency_window_ms
            .store(ms, Ordering::Relaxed);
    }

    fn registry(&self) -> flowstate_core::sync::RwLockReadGuard<'_, Registry> {
        self.inner.registry.read()
    }

    /// Registers a step (a new name, or a new version of one). New flows are planned with
    /// the newest version of each step; running flows keep theirs.
    pub fn register(&self, step: Step) -> Result<(), RegistrationError> {
        let mut registry = self.inner.registry.write();
        self.forget_plans();
        registry.register(step)
    }

    /// Empties the plan cache; called with the registry's write lock held.
    fn forget_plans(&self) {
        self.inner.plans.lock().clear();
    }

    /// Removes `name` from the steps new flows are planned from; running flows that use it
    /// keep its code. Returns whether it was there.
    pub fn unregister(&self, name: &str) -> bool {
        let mut registry = self.inner.registry.write();
        self.forget_plans();
        registry.unregister(name)
    }

    /// The newest version registered for `name` (also one removed from the catalog).
    #[must_use]
    pub fn newest_version(&self, name: &str) -> Option<u32> {
        self.registry().newest_version(name)
    }

    /// Whether version `version` of step `name` is registered (removed from the catalog or
    /// not: running flows may still use it).
    #[must_use]
    pub fn version_registered(&self, name: &str, version: u32) -> bool {
        self.registry().version(name, version).is_some()
    }

    /// The newest version of every registered step, by name.
    #[must_use]
    pub fn steps(&self) -> Vec<flowstate_core::StepSpec> {
        self.registry().catalog.steps().cloned().collect()
    }

    /// The plan a request would run, without starting anything.
    pub fn preview(&self, request: &PlanRequest) -> Result<ExecutionPlan, PlanningError> {
        let registry = self.registry();
        let mut input_names: Vec<String> = request.inputs.keys().cloned().collect();
        input_names.sort_unstable();
        let key: PlanKey = (request.goals.clone(), input_names, request.choices.clone());
        let plans = || self.inner.plans.lock();
        if let Some(plan) = plans().get(&key) {
            return Ok(plan.clone());
        }
        // Planned under the registry's read lock, so no (un)registration can come between
        // the planning and the caching.
        let plan = registry
            .catalog
            .plan(&request.goals, &request.inputs, &request.choices)?;
        let mut plans = plans();
        if plans.len() >= PLAN_CACHE_ENTRIES {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Plans and records a new flow, ready for whichever worker claims it.
    #[deprecated(since = "0.2.0", note = "renamed `submit`, as in every front door")]
    pub async fn start(&self, request: PlanRequest) -> Result<FlowId, Error> {
        self.submit(request).await
    }

    /// Plans and records a new flow, ready for whichever worker claims it. Refused, with
    /// nothing recorded, when the goals cannot be planned.
    pub async fn submit(&self, request: PlanRequest) -> Result<FlowId, Error> {
        Ok(self.record(request, true, &StartOptions::new()).await?.id())
    }

    /// [`Plans::submit`] with a chosen id and/or an idempotency key: starting again with the
    /// same request (name, goals, inputs and choices) gives the first flow
    /// ([`Created::Existing`]) and records nothing, even if the steps changed meanwhile; the
    /// same key with another request is [`Error::KeyReused`].
    pub async fn submit_with(
        &self,
        request: PlanRequest,
        options: &StartOptions,
    ) -> Result<Created, Error> {
        self.record(request, true, options).await
    }

    /// [`Plans::create`] with a chosen id and/or an idempotency key, as [`Plans::submit_with`].
    pub async fn create_with(
        &self,
        request: PlanRequest,
        options: &StartOptions,
    ) -> Result<Created, Error> {
        self.record(request, false, options).await
    }

    /// Plans and records a new flow that no worker claims: run it in this process with
    /// [`Plans::run`] or [`Plans::run_to_end`] (if the process dies, a later `run` carries
    /// it on).
    pub async fn create(&self, request: PlanRequest) -> Result<FlowId, Error> {
        Ok(self
            .record(request, false, &StartOptions::new())
            .await?
            .id())
    }

    /// Plans a flow, records it and runs it in this process, the way
    /// `taskgraph::Engine::execute` does: the flow's creation and plan are committed with its
    /// first decisions (one append, no read back). Returns the state the run left, as
    /// [`Plans::run`] does. Like [`Plans::create`], the flow is not offered to workers: after
    /// a crash it continues when [`Plans::run`] is called for it. Nothing is recorded when
    /// the goals cannot be planned.
    pub async fn execute(&self, request: PlanRequest) -> Result<FlowRecord, Error> {
        let writer = self.new_flow(request, &StartOptions::new())?;
        self.run_writer(writer).await
    }

    /// [`Plans::execute`] with a chosen id and/or an idempotency key. The first start runs
    /// the flow here ([`Created::New`]); a replay (the same key and request) runs nothing and
    /// answers the first flow's state as its log says now ([`Created::Existing`]; a flow
    /// whose first run died is carried on by [`Plans::run`]). The same key with another
    /// request is [`Error::KeyReused`].
    pub async fn execute_with(
        &self,
        request: PlanRequest,
        options: &StartOptions,
    ) -> Result<(Created, FlowRecord), Error> {
        let writer = self.new_flow(request, options)?;
        let flow = writer.flow();
        let fingerprint = writer.idempotency().map(|key| key.fingerprint.clone());
        match self.run_writer(writer).await {
            Ok(record) => Ok((Created::New(flow), record)),
            Err(Error::Write(error @ WriteError::Store(StoreError::KeyTaken { .. }))) => {
                let created = create::settled(error, flow, fingerprint.as_deref())?;
                Ok((created, self.state(created.id(), StopAt::End).await?))
            }
            Err(error) => Err(error),
        }
    }

    async fn record(
        &self,
        request: PlanRequest,
        ready: bool,
        options: &StartOptions,
    ) -> Result<Created, Error> {
        let writer = self.new_flow(request, options)?;
        Ok(create::record(&*self.inner.store, writer, ready).await?)
    }

    /// A writer for a new flow with its creation and plan staged (not yet recorded). The
    /// goals and choices are part of the start's fingerprint (the plan computed from them is
    /// not: a replay after the steps changed still matches).
    fn new_flow(&self, request: PlanRequest, options: &StartOptions) -> Result<FlowWriter, Error> {
        let plan = self.preview(&request)?;
        let fingerprinted = serde_json::json!({
            "goals": request.goals,
            "choices": request.choices,
        });
        let window =
            Duration::from_millis(self.inner.idempotency_window_ms.load(Ordering::Relaxed));
        let definition = if request.name.is_empty() {
            "plan".to_owned()
        } else {
            request.name
        };
        let input = serde_json::Value::Object(request.inputs);
        Ok(Creation::new(FlowKind::Plan, definition, input)
            .with_start(options)
            .with_request(fingerprinted)
            .idempotency_window(window)
            .then([EventBody::PlanStarted { plan }])
            .stage(&*self.inner.clock)?)
    }

    /// The flow's state as of a sequence number or a time (time travel).
    pub async fn state(&self, flow: FlowId, at: StopAt) -> Result<FlowRecord, Error> {
        let events = flowstate_store::read_all(&*self.inner.store, flow).await?;
        if events.is_empty() {
            return Err(Error::UnknownFlow { flow });
        }
        Ok(fold(&events, at)?)
    }

    /// The store the plans are recorded in.
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// Commits what `writer` staged. When someone appended first and all they appended is a
    /// cancellation ([`Plans::cancel`], which a client records while a run runs the flow),
    /// the run goes on on top of it: the log is reloaded, the results not yet recorded are
    /// staged again (the attempts still running keep running), and the caller decides the
    /// rest again (returns `true`). Any other conflict is another run's: an error.
    async fn commit(&self, writer: &mut FlowWriter, rebase: &mut Rebase) -> Result<bool, Error> {
        let store = &*self.inner.store;
        let clock = &*self.inner.clock;
        let extras = AppendExtras::default();
        match commit_or_rebase(writer, store, extras, &mut rebase.rebases, is_cancellation).await? {
            Committed::Recorded(_) => {
                rebase.unrecorded.clear();
                Ok(false)
            }
            Committed::Rebased => {
                for (launch, result) in &rebase.unrecorded {
                    let record = writer.record().ok_or(FoldError::EmptyLog)?;
                    let event = runtime::attempt_finished(
                        record,
                        launch,
                        result.clone(),
                        clock.now(),
                        rand::random(),
                    );
                    writer.stage(clock, vec![event])?;
                }
                Ok(true)
            }
        }
    }

    /// Runs what can run now, in this process, until nothing runs: the flow deactivated, or
    /// it waits for a retry (a store timer is set for it). Returns the state it left.
    ///
    /// It takes no lease: call it for flows made with [`Plans::create`], or where no worker
    /// runs plans on this store. A worker calls it for the flows it claims. (Two runs of one
    /// flow never both record: the log's sequence check refuses the second; but both may
    /// run an attempt, which is why attempts get idempotency keys.)
    pub async fn run(&self, flow: FlowId) -> Result<FlowRecord, Error> {
        let writer = FlowWriter::load(&*self.inner.store, flow).await?;
        self.run_writer(writer).await
    }

    /// [`Plans::run`] on a loaded (or new, staged) writer.
    async fn run_writer(&self, mut writer: FlowWriter) -> Result<FlowRecord, Error> {
        let store = &*self.inner.store;
        let clock = &*self.inner.clock;
        let flow = writer.flow();
        let record = writer.record().ok_or(Error::UnknownFlow { flow })?;
        if record.kind != FlowKind::Plan {
            return Err(Error::NotAPlan {
                flow,
                kind: record.kind,
            });
        }
        if matches!(
            record.status,
            FlowStatus::Plan(PlanState::Deactivated | PlanState::Archived)
        ) {
            // A child whose run died between deactivating and telling its parent tells it
            // now (the parent ignores a second telling).
            self.tell_parent(record).await?;
            return Ok(record.clone());
        }
        let code = self.code_for(flow, record)?;
        let mut running: JoinSet<AttemptResult> = JoinSet::new();
        let mut in_process: HashMap<tokio::task::Id, Launch> = HashMap::new();
        let mut staged = 0_usize;
        let mut rebase = Rebase::default();
        'round: loop {
            let mut batches = 0;
            loop {
                let record = writer.record().ok_or(FoldError::EmptyLog)?;
                let runtime::Decision {
                    mut events,
                    settled,
                } = runtime::decide(record, clock.now());
                if events.is_empty() {
                    break;
                }
                batches += 1;
                if batches > MAX_DECISION_BATCHES {
                    return Err(Error::Runaway { flow });
                }
                // A round may decide more than one append holds (a thousand items
                // abandoned at once): it is committed in parts, each a prefix of the
                // decisions, which the runtime makes again after a crash.
                while !events.is_empty() {
                    let room = COMMIT_CHUNK.saturating_sub(staged).max(1);
                    let rest = events.split_off(room.min(events.len()));
                    staged += events.len();
                    writer.stage(clock, std::mem::replace(&mut events, rest))?;
                    if staged >= COMMIT_CHUNK {
                        staged = 0;
                        if self.commit(&mut writer, &mut rebase).await? {
                            staged = rebase.unrecorded.len();
                            continue 'round;
                        }
                    }
                }
                if settled {
                    break;
                }
            }
            staged = 0;
            if self.commit(&mut writer, &mut rebase).await? {
                staged = rebase.unrecorded.len();
                continue 'round;
            }
            let record = writer.record().ok_or(FoldError::EmptyLog)?;
            for launch in runtime::launches(record) {
                if !in_process.values().any(|running| *running == launch) {
                    let task = running.spawn(attempt(flow, record, &launch, &code));
                    in_process.insert(task.id(), launch);
                }
            }
            if record.status == FlowStatus::Plan(PlanState::Deactivated) {
                self.tell_parent(record).await?;
            }
            let due = runtime::next_due(record);
            if running.is_empty() {
                if let Some(due) = due {
                    store
                        .schedule_timer(
                            flow,
                            NewTimer {
                                name: RETRY_TIMER.to_owned(),
                                due,
                            },
                        )
                        .await?;
                }
                return Ok(writer.into_record()?);
            }
            // Wait for the next retry only if it is still to come. One that came due after
            // this round's decisions (the clock moved on meanwhile) is decided now, rather
            // than after some unrelated attempt ends (which may take hours); one already due
            // that the runtime still does not start waits for a free slot, that is for an
            // attempt to end.
            let now = clock.now();
            if due.is_some_and(|due| due <= now) && !runtime::next_events(record, now).is_empty() {
                continue 'round;
            }
            let wait = due.filter(|due| *due > now).map(|due| until(now, due));
            let finished = tokio::select! {
                joined = running.join_next_with_id() => joined,
                () = sleep_for(wait) => None,
            };
            let mut results = Vec::new();
            let mut next = finished;
            while let Some(joined) = next {
                results.push(match joined {
                    Ok((id, result)) => (id, result),
                    Err(error) => (error.id(), panicked(&error)),
                });
                next = running.try_join_next_with_id();
            }
            for (id, result) in results {
                let Some(launch) = in_process.remove(&id) else {
                    continue;
                };
                let record = writer.record().ok_or(FoldError::EmptyLog)?;
                let event = runtime::attempt_finished(
                    record,
                    &launch,
                    result.clone(),
                    clock.now(),
                    rand::random(),
                );
                writer.stage(clock, vec![event])?;
                rebase.unrecorded.push((launch, result));
                staged += 1;
            }
        }
    }

    /// Runs the flow in this process until it deactivates, waiting for its retries here.
    pub async fn run_to_end(&self, flow: FlowId) -> Result<FlowRecord, Error> {
        loop {
            let record = self.run(flow).await?;
            if !matches!(
                record.status,
                FlowStatus::Plan(PlanState::Active | PlanState::Completed | PlanState::Failed)
            ) {
                return Ok(record);
            }
            match runtime::next_due(&record) {
                Some(due) => tokio::time::sleep(until(self.inner.clock.now(), due)).await,
                // Nothing runs and nothing is due, yet it did not deactivate: only another
                // process can move it on; report the state rather than wait forever.
                None => return Ok(record),
            }
        }
    }

    /// Tells the durable function that started this flow as its child (if one did) how it
    /// ended, once it is deactivated: an object of its goals' attributes, or a `PlanFailed`
    /// failure.
    async fn tell_parent(&self, record: &FlowRecord) -> Result<(), Error> {
        if record.parent.is_none() {
            return Ok(());
        }
        let outcome = outcome(record);
        flowstate_engine::children::notify_parent(
            &*self.inner.store,
            &*self.inner.clock,
            record,
            &outcome,
        )
        .await?;
        Ok(())
    }

    /// The code of every step version the flow's plan uses.
    fn code_for(
        &self,
        flow: FlowId,
        record: &FlowRecord,
    ) -> Result<HashMap<String, Arc<Registered>>, Error> {
        let registry = self.registry();
        let plan = record.plan.as_ref().and_then(|p| p.plan.as_ref());
        plan.map(|plan| plan.steps.values())
            .into_iter()
            .flatten()
            .map(|spec| {
                registry
                    .version(&spec.name, spec.version)
                    .map(|code| (spec.name.clone(), code))
                    .ok_or_else(|| Error::MissingStep {
                        flow,
                        step: spec.name.clone(),
                        version: spec.version,
                    })
            })
            .collect()
    }

    /// Cancels the plan `flow`, from any process: an active plan becomes failed with the
    /// reason `cancelled: REASON` (a `Cancelled` failure; the lifecycle allows active →
    /// failed), and from there goes on as any failed plan: nothing new starts, work in
    /// flight is recorded when it ends, succeeded compensable work is compensated, and the
    /// plan deactivates. A run in progress (with work in flight) meets the cancellation as a
    /// conflict on its next commit and goes on on top of it, so the flow is marked ready only
    /// when nothing is in flight: then a worker carries the cancellation out (marking it
    /// ready beside a run in progress would let a worker run its attempts a second time).
    ///
    /// Returns [`flowstate_core::Transition::Ignored`] (nothing recorded) for a plan that
    /// has failed already (failed → failed is a no-op by the table). A completed,
    /// deactivated or archived plan is refused with the table's error
    /// ([`Error::Write`] of a [`FoldError::Transition`]), and nothing is recorded.
    pub async fn cancel(
        &self,
        flow: FlowId,
        reason: &str,
    ) -> Result<flowstate_core::Transition, Error> {
        use flowstate_core::{Machine, Transition};
        let message = if reason.is_empty() {
            "cancelled".to_owned()
        } else {
            format!("cancelled: {reason}")
        };
        let recorded = flowstate_engine::deliver_with(
            &*self.inner.store,
            &*self.inner.clock,
            flow,
            |record| -> Result<Option<(EventBody, Option<bool>)>, Error> {
                let FlowStatus::Plan(state) = record.status else {
                    return Err(Error::NotAPlan {
                        flow,
                        kind: record.kind,
                    });
                };
                let transition =
                    PlanState::transition(state, PlanState::Failed).map_err(|source| {
                        Error::Write(WriteError::Refused(FoldError::Transition {
                            seq: record.last_seq + 1,
                            source,
                        }))
                    })?;
                let nothing_in_flight = record
                    .plan
                    .as_ref()
                    .is_none_or(|plan| plan.first_in_flight().is_none());
                Ok((transition == Transition::Allowed).then(|| {
                    (
                        EventBody::PlanStateChanged {
                            to: PlanState::Failed,
                            reason: Some(Failure::new(runtime::CANCELLED, message.clone())),
                        },
                        nothing_in_flight.then_some(true),
                    )
                }))
            },
        )
        .await?;
        Ok(if recorded {
            Transition::Allowed
        } else {
            Transition::Ignored
        })
    }
}

/// How a terminal plan ended, as a parent sees it: an object of its goals' attributes (a
/// step goal gives all its outputs), or a `PlanFailed` failure with the reason.
pub fn outcome(record: &FlowRecord) -> Result<serde_json::Value, Failure> {
    let Some(plan_record) = record.plan.as_ref() else {
        return Err(Failure::new("PlanFailed", "the flow has no plan"));
    };
    if let Some(failure) = &plan_record.failure {
        return Err(Failure::new(
            "PlanFailed",
            format!("plan {} failed: {}", record.id, failure.message),
        ));
    }
    let mut goals = serde_json::Map::new();
    if let Some(plan) = &plan_record.plan {
        for goal in &plan.goals {
            let names: Vec<&String> = match goal {
                flowstate_core::Goal::Attribute(name) => vec![name],
                flowstate_core::Goal::Step(step) => plan
                    .steps
                    .get(step)
                    .map(|spec| spec.outputs.iter().collect())
                    .unwrap_or_default(),
            };
            for name in names {
                if let Some(attribute) = plan_record.attributes.get(name) {
                    goals.insert(name.clone(), attribute.value.clone());
                }
            }
        }
    }
    Ok(serde_json::Value::Object(goals))
}

/// The future of one attempt: the body (or compensation) under the step's timeout.
fn attempt(
    flow: FlowId,
    record: &FlowRecord,
    launch: &Launch,
    code: &HashMap<String, Arc<Registered>>,
) -> impl std::future::Future<Output = AttemptResult> + Send + 'static {
    let context = StepContext {
        flow,
        step: launch.step.clone(),
        item: launch.item,
        attempt: launch.attempt,
        compensating: launch.kind == LaunchKind::Compensate,
        inputs: runtime::item_inputs(record, &launch.step, launch.item),
    };
    let registered = code.get(&launch.step).cloned();
    let outputs = record
        .plan
        .as_ref()
        .and_then(|p| p.steps.get(&launch.step))
        .and_then(|s| s.items.get(launch.item as usize))
        .and_then(|item| item.outputs.clone())
        .unwrap_or_default();
    let kind = launch.kind;
    async move {
        let Some(registered) = registered else {
            return AttemptResult::Failed {
                failure: Failure::new("MissingStep", "the step's code is not registered"),
                retryable: false,
            };
        };
        let future = match (kind, &registered.compensation) {
            (LaunchKind::Execute, _) => (registered.body)(context),
            (LaunchKind::Compensate, Some(compensation)) => compensation(context, outputs),
            (LaunchKind::Compensate, None) => {
                return AttemptResult::Succeeded(serde_json::Value::Null)
            }
        };
        // The attempt runs on the run's own task (its `JoinSet` entry): a panic there is
        // caught by the join and becomes a retryable failure; dropping the run aborts it.
        let started = std::time::Instant::now();
        let returned = match registered.spec.timeout_ms {
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), future).await {
                Ok(returned) => returned,
                Err(_) => {
                    step_duration(started);
                    return AttemptResult::Failed {
                        failure: Failure::new(
                            runtime::TIMEOUT,
                            format!("the attempt took longer than its timeout of {ms} ms"),
                        ),
                        retryable: true,
                    };
                }
            },
            None => future.await,
        };
        step_duration(started);
        match returned {
            Ok(outputs) => AttemptResult::Succeeded(outputs),
            Err(StepError::Retryable(failure)) => AttemptResult::Failed {
                failure,
                retryable: true,
            },
            Err(StepError::Permanent(failure)) => AttemptResult::Failed {
                failure,
                retryable: false,
            },
        }
    }
}

/// Records how long an attempt (or a compensation) that started at `started` took.
fn step_duration(started: std::time::Instant) {
    metrics::histogram!("flowstate_step_duration_seconds", "kind" => "plan")
        .record(started.elapsed().as_secs_f64());
}

/// A body that panicked (or was cancelled) failed; another attempt may succeed.
fn panicked(error: &tokio::task::JoinError) -> AttemptResult {
    let message = if error.is_panic() {
        "the step's code panicked"
    } else {
        "the step's task was cancelled"
    };
    AttemptResult::Failed {
        failure: Failure::new("Panic", message),
        retryable: true,
    }
}

fn until(now: Timestamp, due: Timestamp) -> Duration {
    Duration::from_micros(u64::try_from(due.as_micros() - now.as_micros()).unwrap_or(0))
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
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

/// The cancellation a client appends to a plan's log while a run runs it ([`Plans::cancel`]).
fn is_cancellation(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::PlanStateChanged {
            to: PlanState::Failed,
            reason: Some(failure),
        } if failure.kind == runtime::CANCELLED
    )
}

#[async_trait]
impl FlowRunner for Plans {
    async fn run(&self, flow: FlowId) -> Result<(), RunError> {
        Plans::run(self, flow).await.map(drop).map_err(Into::into)
    }
}

impl From<Error> for RunError {
    fn from(error: Error) -> Self {
        match error {
            Error::Write(write) => write.into(),
            Error::Store(store) => store.into(),
            Error::MissingStep { step, version, .. } => Self::MissingDefinition {
                kind: FlowKind::Plan,
                definition: format!("{step} v{version}"),
            },
            other => Self::failed(other),
        }
    }
}
