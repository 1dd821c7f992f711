//! The drivers: a few threads, each with one await runtime that runs many activations at
//! once.
//!
//! **What it owns:** the driver threads, handing each run of an activation to the least
//! busy one, the run itself (load the log, open a run, run the function against its
//! journal, record how the run ended), and the checks that only the thread can make because
//! they need its runtime to be stalled: a replay that stopped at an await its journal
//! records as settled (a stall), and a live function that waits for something no effect
//! will ever settle (a deadlock).
//!
//! **What it must never do:** block its thread. Everything an activation waits for (its
//! store's commits, its steps' bodies) is a future polled by the thread's runtime, and a
//! blocked thread stalls every activation on it. Step bodies must therefore be async too
//! (CPU-heavy work belongs on `tokio::task::spawn_blocking`), as on any async runtime.
//!
//! Runtimes are single-threaded (`!Send`: the await-rt protocol is about one task at a time),
//! so an activation stays on the thread that started it until its run ends. Futures of other
//! runtimes (tokio's I/O) wake its tasks from their own threads, through the wake queue.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use flowstate_core::machine::ActivationState;
use flowstate_core::{
    EventBody, Failure, FlowId, FlowKind, FlowStatus, FunctionRecord, StepOutcome, Timestamp,
};
use flowstate_engine::{AppendExtras, FlowWriter};
use flowstate_rt::{RemoteWake, Runtime, TaskFailure, TaskHandle};
use flowstate_store::NewTimer;
use flowstate_worker::RunError;

use crate::activation::{lanes, Activation, Counted, Stop};
use crate::branch::Branch;
use crate::ctx::Ctx;
use crate::engine::Shared;
use crate::registry::Erased;
use crate::waits::{take_waits_changed, Waits};

/// Most driver threads (the default is one per core).
pub const MAX_DRIVER_THREADS: usize = 64;

/// How long a live function may wait with no effect in flight before the run is stopped as
/// deadlocked: it awaits something no effect will ever settle (a future outside the
/// context, or a pair nobody resolves).
pub const DEADLOCK_GRACE: Duration = Duration::from_secs(1);

/// The failure kind of a cancelled function's outcome.
pub const CANCELLED: &str = flowstate_core::outcome::CANCELLED;

/// How often a driver thread looks for stalled replays and deadlocked functions (right
/// after its runtime stalled, so that what it sees is settled).
const SCAN_INTERVAL: Duration = Duration::from_millis(20);

/// How long an idle driver thread sleeps when nothing wakes it (new work does).
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// One run of an activation, handed to a driver thread.
struct Job {
    shared: Arc<Shared>,
    flow: FlowId,
    cancelled: Arc<AtomicBool>,
    reply: tokio::sync::oneshot::Sender<Result<(), RunError>>,
}

/// One driver thread, as the rest of the process sees it.
struct Driver {
    jobs: mpsc::Sender<Job>,
    wake: RemoteWake,
    /// Runs on it now.
    running: Arc<AtomicUsize>,
}

/// The driver threads of one [`crate::Functions`].
pub(crate) struct Pool {
    drivers: Vec<Driver>,
}

impl Pool {
    /// Starts `threads` driver threads that run their futures in `handle`'s context (the
    /// stores' I/O is tokio's).
    pub(crate) fn start(threads: usize, handle: &tokio::runtime::Handle) -> std::io::Result<Self> {
        let mut drivers = Vec::new();
        for index in 0..threads.clamp(1, MAX_DRIVER_THREADS) {
            let (jobs, inbox) = mpsc::channel();
            let (wake_tx, wake_rx) = mpsc::sync_channel(1);
            let running = Arc::new(AtomicUsize::new(0));
            let (handle, count) = (handle.clone(), running.clone());
            std::thread::Builder::new()
                .name(format!("flowstate-fn-{index}"))
                .spawn(move || drive_thread(&inbox, &handle, &count, &wake_tx))?;
            let wake = wake_rx
                .recv()
                .map_err(|_| std::io::Error::other("a driver thread died as it started"))?;
            drivers.push(Driver {
                jobs,
                wake,
                running,
            });
        }
        Ok(Self { drivers })
    }

    /// Runs one activation of `flow` on the least busy thread; cancelled when dropped (the
    /// worker gave the flow up).
    pub(crate) async fn run(&self, shared: Arc<Shared>, flow: FlowId) -> Result<(), RunError> {
        let driver = self
            .drivers
            .iter()
            .min_by_key(|d| d.running.load(Ordering::Relaxed))
            .ok_or_else(|| failed("no driver thread"))?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let cancel = CancelOnDrop {
            cancelled: Arc::new(AtomicBool::new(false)),
            wake: driver.wake.clone(),
        };
        driver.running.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            shared,
            flow,
            cancelled: cancel.cancelled.clone(),
            reply,
        };
        if driver.jobs.send(job).is_err() {
            driver.running.fetch_sub(1, Ordering::Relaxed);
            return Err(failed("the driver thread is gone"));
        }
        driver.wake.wake();
        let result = outcome
            .await
            .unwrap_or_else(|_| Err(failed("the driver thread dropped the run")));
        drop(cancel);
        result
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The job senders go with the pool; idle threads see that once woken, and end.
        for driver in &self.drivers {
            driver.wake.wake();
        }
    }
}

/// Tells a driver thread that its run was given up (lost lease, shutdown), when dropped
/// before the run ended.
struct CancelOnDrop {
    cancelled: Arc<AtomicBool>,
    wake: RemoteWake,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.wake.wake();
        }
    }
}

/// The task that runs the function: its outcome is the function's.
type FunctionTask = TaskHandle<Result<serde_json::Value, Failure>>;

/// What a run publishes for its thread once the function runs.
#[derive(Default)]
struct Published {
    function: RefCell<Option<(Rc<Activation>, FunctionTask)>>,
}

/// A run on a driver thread.
struct Running {
    control: TaskHandle<Result<(), RunError>>,
    published: Rc<Published>,
    cancelled: Arc<AtomicBool>,
    reply: Option<tokio::sync::oneshot::Sender<Result<(), RunError>>>,
    /// Since when, and at how many polls of the function, it was last seen live and waiting
    /// with no effect in flight.
    idle: Option<(Instant, u64)>,
}

impl Running {
    fn abort(&self) {
        if let Some((_, function)) = self.published.function.borrow().as_ref() {
            function.abort();
        }
        self.control.abort();
    }
}

fn drive_thread(
    inbox: &mpsc::Receiver<Job>,
    handle: &tokio::runtime::Handle,
    count: &AtomicUsize,
    wake_tx: &mpsc::SyncSender<RemoteWake>,
) {
    let _tokio = handle.enter();
    let rt = Runtime::new();
    if wake_tx.send(rt.remote()).is_err() {
        return;
    }
    let mut running: Vec<Running> = Vec::new();
    let mut open = true;
    let mut last_scan = Instant::now();
    loop {
        loop {
            match inbox.try_recv() {
                Ok(job) => {
                    let published = Rc::new(Published::default());
                    let control = rt.run(run_activation(job.shared, job.flow, published.clone()));
                    running.push(Running {
                        control,
                        published,
                        cancelled: job.cancelled,
                        reply: Some(job.reply),
                        idle: None,
                    });
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        rt.run_until_stalled();
        running.retain_mut(|run| {
            let outcome = if run.cancelled.load(Ordering::Acquire) {
                // Given up by the worker: stop here and record nothing.
                run.abort();
                Err(failed("the run was cancelled"))
            } else if run.control.is_finished() {
                match run.control.take_outcome() {
                    Some(Ok(outcome)) => outcome,
                    Some(Err(failure)) => Err(failed(format!("the run's task failed: {failure}"))),
                    None => Err(failed("the run ended without an outcome")),
                }
            } else {
                return true;
            };
            if let Some(reply) = run.reply.take() {
                let _ = reply.send(outcome);
            }
            count.fetch_sub(1, Ordering::Relaxed);
            false
        });
        if take_waits_changed() || last_scan.elapsed() >= SCAN_INTERVAL {
            last_scan = Instant::now();
            for run in &mut running {
                check_waiting(run);
            }
        }
        if running.is_empty() && !open {
            return;
        }
        rt.wait_for_wake(if running.is_empty() {
            IDLE_WAIT
        } else {
            SCAN_INTERVAL
        });
    }
}

/// Looks at a run while its thread's runtime is stalled (none of its tasks can go on until
/// something outside wakes it), with no effect in flight: a branch that still has recorded
/// entries to replay stalled (it waits at an await its journal records as settled); if
/// every branch waits durably, the run goes to sleep; a live function waiting for anything
/// else for longer than [`DEADLOCK_GRACE`] is deadlocked.
fn check_waiting(run: &mut Running) {
    let published = run.published.function.borrow();
    let Some((activation, function)) = published.as_ref() else {
        return;
    };
    let waiting = !function.is_finished()
        && activation.stop.borrow().is_none()
        && activation.live_ops.get() == 0;
    if !waiting {
        run.idle = None;
        return;
    }
    let stalled = activation
        .branches
        .borrow()
        .iter()
        // Only a branch with recorded entries left can have stalled (and only then is the
        // diagnostic's text worth building: this runs for every waiting activation).
        .filter(|branch| !branch.in_combinator.get() && branch.replaying())
        .find_map(|branch| {
            branch
                .check_end(
                    &activation.journal,
                    "stopped to wait for something the journal does not record",
                    &format!("an await of branch {:?}", branch.path),
                )
                .err()
        });
    if let Some(diagnostic) = stalled {
        activation.stop_with(Stop::Diverged(diagnostic));
        return;
    }
    let sleep = {
        let waits = activation.waits.borrow();
        (!waits.is_empty()).then(|| Stop::Sleep {
            timers: waits.timers.iter().map(|(p, until)| (*p, *until)).collect(),
            signals: waits.signals.keys().cloned().collect(),
            children: waits.children.keys().copied().collect(),
        })
    };
    if let Some(sleep) = sleep {
        activation.stop_with(sleep);
        return;
    }
    let polls = activation.polls.get();
    match run.idle {
        Some((since, seen)) if seen == polls => {
            if since.elapsed() >= DEADLOCK_GRACE {
                activation.stop_with(Stop::Deadlocked);
            }
        }
        _ => run.idle = Some((Instant::now(), polls)),
    }
}

/// Ready once the function returned or its run must stop.
struct Ended<'a> {
    activation: &'a Activation,
    function: &'a FunctionTask,
}

impl Future for Ended<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.function.is_finished() || self.activation.stop.borrow().is_some() {
            return Poll::Ready(());
        }
        *self.activation.control.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// One run of the activation `flow`: until it returns, sleeps, or fails to replay.
async fn run_activation(
    shared: Arc<Shared>,
    flow: FlowId,
    published: Rc<Published>,
) -> Result<(), RunError> {
    let (mut writer, state, definition, input, function) = load(&shared, flow).await?;
    if nothing_to_do(&shared, flow, state, &function)? {
        if state == ActivationState::Sleeping {
            // Woken early (another worker's clock runs ahead, or for something it does not
            // wait for): its timers are set again, in case that wake-up was theirs.
            rearm_timers(&shared, flow, &function).await?;
        }
        return settle_done(&shared, &mut writer).await;
    }
    let Some(code) = shared.definition(&definition) else {
        // It stays as it is (asleep, or awaiting replay) until a process has the code.
        return Err(RunError::MissingDefinition {
            kind: FlowKind::Function,
            definition,
        });
    };
    // Open a new run: a first run is live at once; any other replays its journal.
    let first = state == ActivationState::ActiveCurrent && function.run == 0;
    writer
        .stage(
            shared.clock.as_ref(),
            opening(&shared, state, first, function.run),
        )
        .map_err(RunError::from)?;
    writer
        .commit(shared.store.as_ref(), AppendExtras::default())
        .await
        .map_err(RunError::from)?;

    let (activation, root) = new_activation(&shared, flow, writer, function, first);
    let outcome = run_function(&activation, &root, &code, input, &published).await;
    let stop = activation.stop.borrow_mut().take();
    // A commit still in flight (of a branch aborted meanwhile) finishes first: commits are
    // never cut off halfway.
    let mut writer = activation.writer.lock().await;
    let (bodies, extras) = how_it_ended(flow, &activation, &root, &writer, stop, outcome)?;
    writer
        .stage(shared.clock.as_ref(), bodies)
        .map_err(RunError::from)?;
    writer
        .commit(shared.store.as_ref(), extras)
        .await
        .map_err(RunError::from)?;
    settle_done(&shared, &mut writer).await
}

/// The log of `flow` and what a run needs of it: its state, its definition, its input and
/// its function record.
async fn load(
    shared: &Shared,
    flow: FlowId,
) -> Result<
    (
        FlowWriter,
        ActivationState,
        String,
        serde_json::Value,
        FunctionRecord,
    ),
    RunError,
> {
    let writer = FlowWriter::load(shared.store.as_ref(), flow)
        .await
        .map_err(RunError::from)?;
    let (state, definition, input, function) = {
        let Some(record) = writer.record() else {
            return Err(failed(format!("flow {flow} has no events")));
        };
        let FlowStatus::Function(state) = record.status else {
            return Err(failed(format!("flow {flow} is not a durable function")));
        };
        (
            state,
            record.definition.clone(),
            record.input.clone(),
            record.function.clone().unwrap_or_default(),
        )
    };
    Ok((writer, state, definition, input, function))
}

/// Whether a run has nothing to do (the activation is done, or was woken by something it
/// does not wait for); an error for a replay failure in the incarnation whose code failed.
fn nothing_to_do(
    shared: &Shared,
    flow: FlowId,
    state: ActivationState,
    function: &FunctionRecord,
) -> Result<bool, RunError> {
    Ok(match state {
        ActivationState::Done => true,
        // Woken by something it does not wait for (another signal, a stale timer).
        ActivationState::Sleeping => !function.wake_is_due(shared.clock.now()),
        ActivationState::ReplayFailure
            if function
                .incarnations
                .last()
                .is_some_and(|(_, incarnation)| *incarnation == shared.incarnation) =>
        {
            // A replay failure gets another try from the next incarnation, not from a wake
            // in the one whose code failed. It stays ready (the worker parks it), so that in
            // a rolling deploy a process with other code takes it even if this one claimed
            // it first.
            return Err(failed(format!(
                "flow {flow} failed to replay with this process's code; it waits for a process with other code"
            )));
        }
        _ => false,
    })
}

/// The events that open a new run from `state` (a run of number `run + 1`).
fn opening(shared: &Shared, state: ActivationState, first: bool, run: u64) -> Vec<EventBody> {
    let mut opening = Vec::new();
    match state {
        ActivationState::ActiveCurrent if !first => {
            // Its process died while it ran: load it the way the table allows.
            opening.push(moved_to(ActivationState::Sleeping));
            opening.push(moved_to(ActivationState::ActiveReplay));
        }
        ActivationState::Sleeping | ActivationState::ReplayFailure => {
            opening.push(moved_to(ActivationState::ActiveReplay));
        }
        _ => {}
    }
    opening.push(EventBody::RunStarted {
        run: run + 1,
        incarnation: shared.incarnation.clone(),
    });
    opening
}

/// The activation of a new run of `flow` over its journal, and its root branch (the
/// function's own).
fn new_activation(
    shared: &Shared,
    flow: FlowId,
    writer: FlowWriter,
    function: FunctionRecord,
    first: bool,
) -> (Rc<Activation>, Rc<Branch>) {
    let mut lanes = lanes(&function);
    let root = Rc::new(Branch::new(
        String::new(),
        lanes.remove("").unwrap_or_default(),
    ));
    let activation = Rc::new(Activation {
        flow,
        store: shared.store.clone(),
        clock: shared.clock.clone(),
        writer: flowstate_rt::Mutex::new(writer),
        journal: function.journal,
        sleeps_ended: function.sleeps_ended,
        lanes: RefCell::new(lanes),
        branches: RefCell::new(vec![root.clone()]),
        live: Cell::new(first),
        stop: RefCell::new(None),
        live_ops: Cell::new(0),
        waits: RefCell::new(Waits::default()),
        cancelled: RefCell::new(function.cancel_requested),
        polls: Cell::new(0),
        control: RefCell::new(None),
        planner: shared.planner(),
    });
    (activation, root)
}

/// Runs the function until it returns or its run must stop; then unloads it (its task and
/// everything it holds) and gives its outcome, if it returned.
async fn run_function(
    activation: &Rc<Activation>,
    root: &Rc<Branch>,
    code: &Arc<dyn Erased>,
    input: serde_json::Value,
    published: &Published,
) -> Option<Result<StepOutcome, TaskFailure>> {
    let running = code.call(
        Ctx {
            act: activation.clone(),
            branch: root.clone(),
        },
        input,
    );
    let counted = Counted {
        inner: Box::pin(running),
        act: activation.clone(),
    };
    let task = flowstate_rt::spawn({
        let root = root.clone();
        async move {
            root.task.set(flowstate_rt::current_task());
            counted.await
        }
    });
    {
        let activation = activation.clone();
        task.on_complete(move || activation.wake_control());
    }
    *published.function.borrow_mut() = Some((activation.clone(), task.clone()));
    Ended {
        activation,
        function: &task,
    }
    .await;
    let outcome = task.take_outcome();
    // Unload the function (its task and everything it holds) before recording the end.
    task.abort();
    outcome
}

/// What to record of how a run ended (and the timers to set with it), or the error that ends
/// it unrecorded.
fn how_it_ended(
    flow: FlowId,
    activation: &Activation,
    root: &Branch,
    writer: &FlowWriter,
    stop: Option<Stop>,
    outcome: Option<Result<StepOutcome, TaskFailure>>,
) -> Result<(Vec<EventBody>, AppendExtras), RunError> {
    let mut extras = AppendExtras::default();
    let bodies = match (stop, outcome) {
        (Some(Stop::Write(error)), _) => return Err(error.into()),
        (Some(Stop::Misuse(message)), _) => return Err(failed(message)),
        (Some(Stop::Deadlocked), _) => {
            return Err(failed(format!(
                "flow {flow}: the function waits with no effect in flight, for something no effect will settle (a durable function may only await its context's effects)"
            )))
        }
        (Some(Stop::Diverged(diagnostic)), _) => replay_failure(writer, &diagnostic),
        (Some(Stop::Cancelled(reason)), _) => {
            returned(activation, Err(Failure::new(CANCELLED, reason)))
        }
        (
            Some(Stop::Sleep {
                timers,
                signals,
                children,
            }),
            _,
        ) => going_to_sleep(activation, timers, signals, children, &mut extras),
        (None, Some(Ok(outcome_returned))) => {
            let unreplayed = root
                .check_end(&activation.journal, "returned", "the function's return")
                .and_then(|()| activation.check_no_lane_left());
            match unreplayed {
                Err(diagnostic) => replay_failure(writer, &diagnostic),
                Ok(()) => returned(activation, outcome_returned),
            }
        }
        (None, Some(Err(failure))) => {
            return Err(failed(format!("the function's task failed: {failure}")))
        }
        (None, None) => return Err(failed("the function's run ended without an outcome")),
    };
    Ok((bodies, extras))
}

/// What records that the run goes to sleep waiting for `timers`, `signals` and `children`
/// (the timers to set go to `extras`).
fn going_to_sleep(
    activation: &Activation,
    timers: Vec<(u32, Timestamp)>,
    signals: Vec<String>,
    children: Vec<FlowId>,
    extras: &mut AppendExtras,
) -> Vec<EventBody> {
    let mut bodies = Vec::new();
    if !activation.live.get() {
        bodies.push(moved_to(ActivationState::ActiveCurrent));
    }
    for (position, due) in timers {
        bodies.push(EventBody::TimerAwaited { position });
        extras.timers.push(NewTimer {
            name: format!("sleep-{position}"),
            due,
        });
    }
    bodies.extend(
        signals
            .into_iter()
            .map(|name| EventBody::SignalAwaited { name }),
    );
    bodies.extend(
        children
            .into_iter()
            .map(|child| EventBody::ChildAwaited { child }),
    );
    bodies.push(moved_to(ActivationState::Sleeping));
    bodies
}

/// What a run does once its activation is done (and again, if a run died before it was
/// finished, and when the retention timer wakes it): tell the parent, then, unless journals
/// are kept, drop the journal once its retention has passed (the log is compacted to its
/// creation, its outcome and `journal_dropped`), or set the store timer that wakes the
/// activation then. The timer is set before the flow is released, so a process that dies
/// first leaves the flow ready and the next run sets it.
async fn settle_done(shared: &Shared, writer: &mut FlowWriter) -> Result<(), RunError> {
    tell_parent(shared, writer).await?;
    if shared.keeps_journals() {
        return Ok(());
    }
    let Some(record) = writer.record() else {
        return Ok(());
    };
    let Some(events) = compacted(record) else {
        return Ok(());
    };
    let due = record.updated_at.saturating_add(shared.journal_retention());
    if shared.clock.now() < due {
        let timer = NewTimer {
            name: crate::engine::RETENTION_TIMER.to_owned(),
            due,
        };
        return shared
            .store
            .schedule_timer(writer.flow(), timer)
            .await
            .map_err(RunError::from);
    }
    writer
        .compact_timed(shared.store.as_ref(), events)
        .await
        .map_err(RunError::from)?;
    Ok(())
}

/// The compacted log of a done activation that still has its journal: its creation (and
/// parent) at its creation time, its outcome and what was dropped at the time it was done.
/// The store numbers it after the old log, so `journal_dropped` counts the sequence numbers
/// before it: the old log's last one (which the fold checks). `None` when there is nothing to
/// drop (the new log would not have fewer events than the old one).
fn compacted(
    record: &flowstate_core::FlowRecord,
) -> Option<Vec<(flowstate_core::Timestamp, EventBody)>> {
    let function = record.function.as_ref()?;
    if record.status != FlowStatus::Function(ActivationState::Done)
        || function.journal_dropped.is_some()
    {
        return None;
    }
    let mut bodies = vec![EventBody::FlowCreated {
        kind: record.kind,
        definition: record.definition.clone(),
        input: record.input.clone(),
    }];
    if let Some(parent) = record.parent {
        bodies.push(EventBody::ChildOf { parent });
    }
    bodies.push(EventBody::FunctionReturned {
        outcome: function.outcome.clone()?,
    });
    bodies.push(EventBody::ActivationStateChanged {
        to: ActivationState::Done,
        diagnostic: None,
    });
    bodies.push(EventBody::JournalDropped {
        entries: u32::try_from(function.journal.len()).unwrap_or(u32::MAX),
        events: record.last_seq,
    });
    // The old log's events: it starts at 1 unless it was compacted before (a journal is
    // dropped once, so it was not, but the count does not depend on that).
    let old_events = record.last_seq + 1 - record.first_seq;
    if bodies.len() as u64 >= old_events {
        return None;
    }
    let created = 1 + usize::from(record.parent.is_some());
    Some(
        bodies
            .into_iter()
            .enumerate()
            .map(|(index, body)| {
                let time = if index < created {
                    record.created_at
                } else {
                    record.updated_at
                };
                (time, body)
            })
            .collect(),
    )
}

/// Tells the parent of a function that is done (if it has one) how it ended. Repeated by
/// the next run if this one dies first: the flow is only released once this is done.
async fn tell_parent(shared: &Shared, writer: &FlowWriter) -> Result<(), RunError> {
    let Some(record) = writer.record().filter(|r| r.parent.is_some()) else {
        return Ok(());
    };
    let Some(outcome) = record.function.as_ref().and_then(|f| f.outcome.as_ref()) else {
        return Ok(());
    };
    flowstate_engine::children::notify_parent(
        shared.store.as_ref(),
        shared.clock.as_ref(),
        record,
        outcome,
    )
    .await
    .map_err(RunError::from)
}

/// How a run that found a divergence ends: in replay failure with the diagnostic. If a
/// branch had already gone live (another branch diverged later), the activation is active
/// current; the table's way from there is to unload it (sleeping) and load it again (active
/// replay) before the failure.
fn replay_failure(writer: &FlowWriter, diagnostic: &flowstate_core::Diagnostic) -> Vec<EventBody> {
    tracing::warn!(flow = %writer.flow(), %diagnostic, "replay failure");
    let mut bodies = Vec::new();
    let live = matches!(
        writer.record().map(|r| r.status),
        Some(FlowStatus::Function(ActivationState::ActiveCurrent))
    );
    if live {
        bodies.push(moved_to(ActivationState::Sleeping));
        bodies.push(moved_to(ActivationState::ActiveReplay));
    }
    bodies.push(EventBody::ActivationStateChanged {
        to: ActivationState::ReplayFailure,
        diagnostic: Some(diagnostic.to_string()),
    });
    bodies
}

/// Sets the timers a sleeping function waits for again (setting a timer is idempotent).
async fn rearm_timers(
    shared: &Shared,
    flow: FlowId,
    function: &flowstate_core::FunctionRecord,
) -> Result<(), RunError> {
    for position in &function.awaiting_timers {
        if let Some(flowstate_core::JournalEntry::Sleep { until }) =
            function.journal.get(*position as usize)
        {
            let timer = NewTimer {
                name: format!("sleep-{position}"),
                due: *until,
            };
            shared
                .store
                .schedule_timer(flow, timer)
                .await
                .map_err(RunError::from)?;
        }
    }
    Ok(())
}

/// The end of a function whose outcome settled: caught up with its journal (if it was not
/// yet), its outcome, done.
fn returned(activation: &Activation, outcome: StepOutcome) -> Vec<EventBody> {
    let mut bodies = Vec::new();
    if !activation.live.get() {
        bodies.push(moved_to(ActivationState::ActiveCurrent));
    }
    bodies.push(EventBody::FunctionReturned { outcome });
    bodies.push(moved_to(ActivationState::Done));
    bodies
}

fn moved_to(to: ActivationState) -> EventBody {
    EventBody::ActivationStateChanged {
        to,
        diagnostic: None,
    }
}

fn failed(message: impl Into<String>) -> RunError {
    RunError::failed(message.into())
}

impl Activation {
    /// Wakes the run's control task (the function returned, or the run must stop).
    pub(crate) fn wake_control(&self) {
        if let Some(waker) = self.control.borrow_mut().take() {
            Waker::wake(waker);
        }
    }
}
