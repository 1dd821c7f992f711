//! The context: the membrane between a durable function and the world. Every effect is
//! matched against the journal first (replay: the recorded outcome, nothing runs) and only
//! past its end does it run and get recorded.
//!
//! **Branches.** The function is one branch (path `""`); `ctx.all` and `ctx.race` start
//! concurrent branches, each with a context of its own and a path that names it by where it
//! was started (`"0.1"`: branch 1 of the function's first combinator). Each branch's effects
//! are journaled with its path and replayed in the branch's own order, so how the branches
//! interleaved does not matter; a combinator records which branch decided it (`Settled`),
//! and a replay follows that decision instead of racing again. An effect from any other task
//! (`flowstate_rt::spawn`, or a context moved into one) is refused: no journal could say
//! where it belongs.
//!
//! **Waits.** A durable wait (a sleep not yet due, a signal not yet delivered) registers
//! itself and suspends its branch. The run goes to sleep (unloaded) when every branch waits
//! and no effect is in flight; the driver records what it waits for, so that only those
//! wake it.
//!
//! **What it owns:** [`Ctx`], the only API user code has, and its effects: each asks the
//! activation to match it against the journal, runs it only when the branch is live, and
//! has the activation record it. The combinators' settling is in `combinator.rs`, replay
//! matching in `branch.rs`, recording and stopping in `activation.rs`.
//!
//! **What it must never do:** touch the store or the writer directly (only through the
//! activation), run an effect before the journal was consulted, or hand user code anything
//! of the activation's internals.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::{
    Call, Diagnostic, EventBody, Failure, FlowId, FlowKind, JournalEntry, Timestamp,
};
use flowstate_engine::children::child_flow_id;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::activation::{create_child, halted, Activation, LiveOp, Stop, Stopped};
use crate::branch::{location, At, Branch, Replayed};
use crate::waits::Wait;

/// A branch for [`Ctx::all`] or [`Ctx::race`] whose branches differ in type: box each with
/// [`Ctx::branch`].
pub type BranchFn<T> = Box<dyn FnOnce(Ctx) -> Pin<Box<dyn Future<Output = Result<T, Failure>>>>>;

/// The context of a durable function (or of one of its concurrent branches): its only way
/// to the world. Cheap to clone, but only usable from the task it was given to.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) act: Rc<Activation>,
    pub(crate) branch: Rc<Branch>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("flow", &self.act.flow)
            .field("branch", &self.branch.path)
            .field("replaying", &self.branch.replaying())
            .finish()
    }
}

impl Ctx {
    /// The activation's flow id.
    #[must_use]
    pub fn flow(&self) -> FlowId {
        self.act.flow
    }

    /// Whether this branch is replaying its journal (effects return recorded outcomes).
    #[must_use]
    pub fn is_replaying(&self) -> bool {
        self.branch.replaying()
    }

    /// The console loophole: logs `message` when live, stays quiet during replay, and is
    /// never journaled (so it may differ between versions).
    pub fn log(&self, message: impl std::fmt::Display) {
        if !self.branch.replaying() {
            tracing::info!(flow = %self.act.flow, branch = %self.branch.path, "{message}");
        }
    }

    /// Runs `body` (at least once: again after a crash before its result was recorded) and
    /// journals its value or its error. Replayed, it returns the recorded outcome and runs
    /// nothing; recorded errors keep their kind. The idempotency key for the outside world
    /// is `FLOW/INDEX` (`FLOW/BRANCH/INDEX` in a concurrent branch), the same on every run
    /// of this effect. Steps of concurrent branches run at the same time.
    #[track_caller]
    pub fn step<T, F, Fut>(&self, name: &str, body: F) -> impl Future<Output = Result<T, Failure>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.step_at(name, body, location(Location::caller()))
    }

    fn step_at<T, F, Fut>(
        &self,
        name: &str,
        body: F,
        at: At,
    ) -> impl Future<Output = Result<T, Failure>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let (act, branch, name) = (self.act.clone(), self.branch.clone(), name.to_owned());
        async move {
            let _busy = match act.replay(&branch, Call::Step { name: &name }, &at) {
                Ok(Replayed::Recorded {
                    position,
                    entry: JournalEntry::Step { outcome, .. },
                }) => {
                    let what = format!("step {name:?} with a value");
                    return decode_recorded(&act, position, &what, outcome, &at).await;
                }
                Ok(replayed) => replayed.into_busy(),
                Err(Stopped) => return halted().await,
            };
            let in_flight = LiveOp::start(&act.live_ops);
            let started = std::time::Instant::now();
            let outcome = CatchUnwind(Box::pin(body(branch.key(act.flow)))).await;
            metrics::histogram!("flowstate_step_duration_seconds", "kind" => "function")
                .record(started.elapsed().as_secs_f64());
            let recorded = outcome
                .and_then(|value| {
                    serde_json::to_value(value)
                        .map_err(|e| Failure::new("InvalidOutput", e.to_string()))
                })
                .and_then(Failure::within_result_limit);
            let entry = JournalEntry::Step {
                name: name.clone(),
                outcome: recorded.clone(),
            };
            let committed = act.record_entry(&branch, entry).await;
            drop(in_flight);
            match committed {
                // What was recorded, exactly as a replay will return it.
                Ok(_) => decode(recorded),
                Err(Stopped) => halted().await,
            }
        }
    }

    /// A journaled value: replayed as recorded, otherwise made by `make` and recorded.
    async fn value(
        act: Rc<Activation>,
        branch: Rc<Branch>,
        call: Call<'static>,
        at: At,
        make: impl FnOnce() -> JournalEntry,
    ) -> JournalEntry {
        match act.replay(&branch, call, &at) {
            Ok(Replayed::Recorded { entry, .. }) => entry,
            Ok(replayed) => {
                let _busy = replayed.into_busy();
                let entry = make();
                match act.record_entry(&branch, entry.clone()).await {
                    Ok(_) => entry,
                    Err(Stopped) => halted().await,
                }
            }
            Err(Stopped) => halted().await,
        }
    }

    /// The time, journaled (the same on every replay).
    #[track_caller]
    pub fn now(&self) -> impl Future<Output = Timestamp> {
        let at = location(Location::caller());
        let (act, branch) = (self.act.clone(), self.branch.clone());
        let clock = act.clock.clone();
        async move {
            let make = move || JournalEntry::Now { time: clock.now() };
            match Self::value(act, branch, Call::Now, at, make).await {
                JournalEntry::Now { time } => time,
                _ => halted().await,
            }
        }
    }

    /// A random number, journaled.
    #[track_caller]
    pub fn random(&self) -> impl Future<Output = u64> {
        let at = location(Location::caller());
        let (act, branch) = (self.act.clone(), self.branch.clone());
        async move {
            let make = || JournalEntry::Random {
                value: rand::random(),
            };
            match Self::value(act, branch, Call::Random, at, make).await {
                JournalEntry::Random { value } => value,
                _ => halted().await,
            }
        }
    }

    /// A new uuid (v4), journaled.
    #[track_caller]
    pub fn uuid(&self) -> impl Future<Output = uuid::Uuid> {
        let at = location(Location::caller());
        let (act, branch) = (self.act.clone(), self.branch.clone());
        async move {
            let make = || JournalEntry::Uuid {
                value: uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string(),
            };
            match Self::value(act, branch, Call::Uuid, at, make).await {
                JournalEntry::Uuid { value } => value.parse().unwrap_or_default(),
                _ => halted().await,
            }
        }
    }

    /// Whether the code of change `change` applies: `true` for new activations and for old
    /// ones that reach this point after the change was deployed; `false` when replaying a
    /// journal written before it (take the old path then).
    #[track_caller]
    pub fn patched(&self, change: &str) -> impl Future<Output = bool> {
        let at = location(Location::caller());
        let (act, branch, change) = (self.act.clone(), self.branch.clone(), change.to_owned());
        async move {
            match act.replay(&branch, Call::Patched { change: &change }, &at) {
                Ok(Replayed::Recorded { .. }) => true,
                Ok(Replayed::Unpatched) => false,
                Ok(Replayed::Live(_busy)) => {
                    let entry = JournalEntry::Patched { change };
                    match act.record_entry(&branch, entry).await {
                        Ok(_) => true,
                        Err(Stopped) => halted().await,
                    }
                }
                Err(Stopped) => halted().await,
            }
        }
    }

    /// A durable timer: the activation sleeps (unloaded, once nothing else runs) until
    /// `duration` from now, as read when `sleep` is called the first time (the end is
    /// recorded, so a replay sleeps until the same time).
    #[track_caller]
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        let until = self.act.clock.now().saturating_add(duration);
        self.sleep_at(until, Location::caller())
    }

    /// A durable timer until `time`.
    #[track_caller]
    pub fn sleep_until(&self, time: Timestamp) -> impl Future<Output = ()> {
        self.sleep_at(time, Location::caller())
    }

    fn sleep_at(
        &self,
        until: Timestamp,
        at: &'static Location<'static>,
    ) -> impl Future<Output = ()> {
        let at = location(at);
        let (act, branch) = (self.act.clone(), self.branch.clone());
        async move {
            let (position, until) = match act.replay(&branch, Call::Sleep, &at) {
                Ok(Replayed::Recorded {
                    position,
                    entry: JournalEntry::Sleep { until },
                }) => {
                    if act.sleeps_ended.contains(&position) {
                        return;
                    }
                    if branch.replaying() {
                        // The journal goes on past a sleep it does not record as ended.
                        act.stop_with(Stop::Diverged(Diagnostic {
                            position,
                            logged: "a sleep that never ended, followed by more entries".into(),
                            attempted: "waited for the sleep".into(),
                            location: at.to_string(),
                        }));
                        return halted().await;
                    }
                    (position, until)
                }
                Ok(replayed) => {
                    // A new sleep: its entry is committed at once (a commit staged for later
                    // could not be rebased over a delivery by another branch's commit).
                    let _busy = replayed.into_busy();
                    match act
                        .record_entry(&branch, JournalEntry::Sleep { until })
                        .await
                    {
                        Ok(position) => (position, until),
                        Err(Stopped) => return halted().await,
                    }
                }
                Err(Stopped) => return halted().await,
            };
            if act.clock.now() >= until {
                let ended = act
                    .commit(move |_| (vec![EventBody::SleepEnded { position }], ()))
                    .await;
                if ended.is_err() {
                    halted::<()>().await;
                }
                return;
            }
            let _waiting = act.wait(Wait::Timer(position, until));
            halted().await
        }
    }

    /// Waits for the oldest signal named `name` that anyone sent to this flow (by flow id),
    /// consuming it. The activation sleeps (unloaded, once nothing else runs) until one
    /// arrives.
    #[track_caller]
    pub fn signal<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<T, Failure>> {
        let at = location(Location::caller());
        let (act, branch, name) = (self.act.clone(), self.branch.clone(), name.to_owned());
        async move {
            let decode = |value: serde_json::Value| {
                serde_json::from_value::<T>(value)
                    .map_err(|e| Failure::new("InvalidSignal", e.to_string()))
            };
            let _busy = match act.replay(&branch, Call::Signal { name: &name }, &at) {
                Ok(Replayed::Recorded {
                    entry: JournalEntry::Signal { value, .. },
                    ..
                }) => return decode(value),
                Ok(replayed) => replayed.into_busy(),
                Err(Stopped) => return halted().await,
            };
            // The oldest delivered signal of the name, consumed in the same commit that
            // journals it.
            let (wanted, journaled) = (name.clone(), name.clone());
            let value = act
                .take_or_wait(
                    &branch,
                    move |function| function.pending_signal(&wanted).cloned(),
                    move |value| JournalEntry::Signal {
                        name: journaled,
                        value,
                    },
                    Wait::Signal(name),
                )
                .await;
            decode(value)
        }
    }

    /// Starts the durable function `name` with `input` as a child flow (run by any worker,
    /// like any flow) and returns its id, journaled: a replay returns the same child and
    /// starts nothing. The child's id is derived from this effect's idempotency key, so a
    /// run that died between starting the child and journaling it finds the same child
    /// again. Children outlive their parent: one still running when the parent returns
    /// runs on, and its end is not delivered. Wait for it with [`Ctx::join`].
    #[track_caller]
    pub fn start_function(
        &self,
        name: &str,
        input: impl Serialize,
    ) -> impl Future<Output = Result<FlowId, Failure>> {
        let input = serde_json::to_value(input);
        self.start_child(
            FlowKind::Function,
            name,
            input,
            Vec::new(),
            Location::caller(),
        )
    }

    /// Starts the task graph `name` with `inputs` (a map of input names to values) as a
    /// child flow; as [`Ctx::start_function`]. Joined, it gives its results (every value its
    /// atoms provided), or a `TaskGraphFailed` failure.
    #[track_caller]
    pub fn start_task_graph(
        &self,
        name: &str,
        inputs: impl Serialize,
    ) -> impl Future<Output = Result<FlowId, Failure>> {
        let inputs = serde_json::to_value(inputs);
        self.start_child(
            FlowKind::TaskGraph,
            name,
            inputs,
            Vec::new(),
            Location::caller(),
        )
    }

    /// Starts a goal-driven plan for `goals` from `inputs` (a map of attribute names to
    /// values) as a child flow, and returns its id. The plan is computed by the plan engine
    /// wired into this process ([`crate::Functions::plan_with`]) and journaled as a step named
    /// `plan` (so a replay uses the same plan, whatever the registry holds by then); a goal
    /// that cannot be planned is that step's error. Joined, the child gives an object of its
    /// goals' attributes once it is deactivated (all its work recorded), or a `PlanFailed`
    /// failure.
    #[track_caller]
    pub fn start_plan(
        &self,
        goals: &[&str],
        inputs: impl Serialize,
    ) -> impl Future<Output = Result<FlowId, Failure>> {
        let at = Location::caller();
        let goals: Vec<String> = goals.iter().map(|goal| (*goal).to_owned()).collect();
        let inputs = serde_json::to_value(inputs);
        let ctx = self.clone();
        async move {
            let inputs = inputs.map_err(|e| Failure::new("InvalidInput", e.to_string()))?;
            let serde_json::Value::Object(fields) = &inputs else {
                return Err(Failure::new(
                    "InvalidInput",
                    "a plan's inputs are a map of attribute names to values",
                ));
            };
            let planner = ctx.act.planner.clone();
            let fields = fields.clone();
            let plan: flowstate_core::ExecutionPlan = ctx
                .step_at(
                    "plan",
                    move |_| async move {
                        let planner = planner.ok_or_else(|| {
                            Failure::new(
                                "NoPlanner",
                                "no plan engine is wired into this process (Functions::plan_with)",
                            )
                        })?;
                        planner.plan(&goals, &fields)
                    },
                    location(at),
                )
                .await?;
            let started = vec![EventBody::PlanStarted { plan }];
            ctx.start_child(FlowKind::Plan, "plan", Ok(inputs), started, at)
                .await
        }
    }

    /// Starts the durable function `name` as a child and waits for its outcome.
    #[track_caller]
    pub fn call<T: DeserializeOwned>(
        &self,
        name: &str,
        input: impl Serialize,
    ) -> impl Future<Output = Result<T, Failure>> {
        let at = Location::caller();
        let started = self.start_child(
            FlowKind::Function,
            name,
            serde_json::to_value(input),
            Vec::new(),
            at,
        );
        let ctx = self.clone();
        async move {
            let child = started.await?;
            ctx.join_at(child, at).await
        }
    }

    fn start_child(
        &self,
        kind: FlowKind,
        name: &str,
        input: Result<serde_json::Value, serde_json::Error>,
        started: Vec<EventBody>,
        at: &'static Location<'static>,
    ) -> impl Future<Output = Result<FlowId, Failure>> {
        let at = location(at);
        let (act, branch, name) = (self.act.clone(), self.branch.clone(), name.to_owned());
        async move {
            let _busy = match act.replay(&branch, Call::ChildStarted { definition: &name }, &at) {
                Ok(Replayed::Recorded {
                    entry: JournalEntry::ChildStarted { child, .. },
                    ..
                }) => return Ok(child),
                Ok(replayed) => replayed.into_busy(),
                Err(Stopped) => return halted().await,
            };
            let input = input.map_err(|e| Failure::new("InvalidInput", e.to_string()))?;
            if kind == FlowKind::TaskGraph && !input.is_object() {
                return Err(Failure::new(
                    "InvalidInput",
                    "a task graph's inputs are a map of input names to values",
                ));
            }
            let in_flight = LiveOp::start(&act.live_ops);
            let child = child_flow_id(act.flow, &branch.key(act.flow));
            if let Err(stop) = create_child(&act, child, kind, &name, input, started).await {
                act.stop_with(stop);
                return halted().await;
            }
            let entry = JournalEntry::ChildStarted {
                kind,
                definition: name,
                child,
            };
            let recorded = act.record_entry(&branch, entry).await;
            drop(in_flight);
            match recorded {
                Ok(_) => Ok(child),
                Err(Stopped) => halted().await,
            }
        }
    }

    /// Waits for the child flow `child` (started by this function) to end, and returns its
    /// outcome: journaled, so a replay returns it without waiting. The activation sleeps
    /// (unloaded, once nothing else runs) until the child ends.
    #[track_caller]
    pub fn join<T: DeserializeOwned>(
        &self,
        child: FlowId,
    ) -> impl Future<Output = Result<T, Failure>> {
        self.join_at(child, Location::caller())
    }

    fn join_at<T: DeserializeOwned>(
        &self,
        child: FlowId,
        at: &'static Location<'static>,
    ) -> impl Future<Output = Result<T, Failure>> {
        let at = location(at);
        let (act, branch) = (self.act.clone(), self.branch.clone());
        async move {
            let _busy = match act.replay(&branch, Call::ChildJoined, &at) {
                Ok(Replayed::Recorded {
                    position,
                    entry:
                        JournalEntry::ChildJoined {
                            child: joined,
                            outcome,
                        },
                }) => {
                    if joined != child {
                        act.stop_with(Stop::Diverged(Diagnostic {
                            position,
                            logged: format!("joined child {joined}"),
                            attempted: format!("joined child {child}"),
                            location: at.to_string(),
                        }));
                        return halted().await;
                    }
                    return decode_recorded(&act, position, "a child's outcome", outcome, &at)
                        .await;
                }
                Ok(replayed) => replayed.into_busy(),
                Err(Stopped) => return halted().await,
            };
            let outcome = act
                .take_or_wait(
                    &branch,
                    move |function| function.children_ended.get(&child).cloned(),
                    move |outcome| JournalEntry::ChildJoined { child, outcome },
                    Wait::Child(child),
                )
                .await;
            decode(outcome)
        }
    }

    /// Boxes `branch` for [`Ctx::all`] or [`Ctx::race`] over branches of different types.
    pub fn branch<T, F, Fut>(branch: F) -> BranchFn<T>
    where
        F: FnOnce(Ctx) -> Fut + 'static,
        Fut: Future<Output = Result<T, Failure>> + 'static,
    {
        Box::new(move |ctx| Box::pin(branch(ctx)))
    }

    /// Runs `branches` concurrently, each with a context of its own, and returns their
    /// values in order; the first error (in time) ends it, and the branches still running
    /// are aborted (their cleanup runs, their steps in flight are not recorded). Journaled:
    /// a replay reproduces the outcome whatever the timing.
    #[track_caller]
    pub fn all<T, F, Fut>(
        &self,
        branches: impl IntoIterator<Item = F>,
    ) -> impl Future<Output = Result<Vec<T>, Failure>>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'static,
        T: 'static,
    {
        let at = location(Location::caller());
        let started = self.start_branches(branches);
        let ctx = self.clone();
        async move {
            let Some((index, branches)) = started else {
                return Ok(Vec::new());
            };
            let Ok((decided, _busy)) = ctx.decision("all", &at) else {
                return halted().await;
            };
            ctx.branch.in_combinator.set(true);
            let settled = ctx.settle_all(index, branches, decided, &at).await;
            ctx.branch.in_combinator.set(false);
            match settled {
                Some(outcome) => outcome,
                None => halted().await,
            }
        }
    }

    /// Runs `branches` concurrently until the first finishes (in time); returns its index and
    /// its outcome, and aborts the others (their cleanup runs, their steps in flight are not
    /// recorded). Journaled: a replay runs the recorded winner again, and only it.
    #[track_caller]
    pub fn race<T, F, Fut>(
        &self,
        branches: impl IntoIterator<Item = F>,
    ) -> impl Future<Output = (usize, Result<T, Failure>)>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'static,
        T: 'static,
    {
        let at = location(Location::caller());
        let started = self.start_branches(branches);
        let ctx = self.clone();
        async move {
            let Some((index, branches)) = started else {
                ctx.act.stop_with(Stop::Misuse(format!(
                    "ctx.race at {at} over no branches never settles"
                )));
                return halted().await;
            };
            let Ok((decided, _busy)) = ctx.decision("race", &at) else {
                return halted().await;
            };
            ctx.branch.in_combinator.set(true);
            let settled = ctx.settle_race(index, branches, decided, &at).await;
            ctx.branch.in_combinator.set(false);
            match settled {
                Some(outcome) => outcome,
                None => halted().await,
            }
        }
    }
}

/// A step body that panics fails its step (recorded as `Panicked`) rather than the run.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<T, F: Future<Output = Result<T, Failure>>> Future for CatchUnwind<F> {
    type Output = Result<T, Failure>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                std::task::Poll::Ready(Err(Failure::new("Panicked", message)))
            }
        }
    }
}

/// A recorded outcome as the code's type. A recorded value the type no longer accepts is a
/// divergence, not an error for the code to handle (or to end the function with).
async fn decode_recorded<T: DeserializeOwned>(
    act: &Activation,
    position: u32,
    what: &str,
    outcome: Result<serde_json::Value, Failure>,
    at: &At,
) -> Result<T, Failure> {
    match outcome.map(serde_json::from_value::<T>) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            act.stop_with(Stop::Diverged(Diagnostic {
                position,
                logged: what.to_owned(),
                attempted: format!("expected a value of another type ({error})"),
                location: at.to_string(),
            }));
            halted().await
        }
        Err(failure) => Err(failure),
    }
}

fn decode<T: DeserializeOwned>(outcome: Result<serde_json::Value, Failure>) -> Result<T, Failure> {
    outcome.and_then(|value| {
        serde_json::from_value(value)
            .map_err(|e| Failure::new("InvalidRecordedValue", e.to_string()))
    })
}
