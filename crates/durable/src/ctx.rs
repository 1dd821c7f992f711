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

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flowstate_core::machine::ActivationState;
use flowstate_core::{
    expect_end, match_call, Call, Clock, Diagnostic, EventBody, Failure, FlowId, FlowKind,
    FlowStatus, JournalEntry, Replay, Timestamp,
};
use flowstate_engine::children::child_flow_id;
use flowstate_engine::{
    commit_or_rebase, create, AppendExtras, Committed, CreateError, Creation, FlowWriter, Rebases,
    WriteError,
};
use flowstate_store::Store;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a run of the activation stops before the function returns.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Every branch waits for a sleep (journal position, end), a signal or a child: it goes
    /// to sleep.
    Sleep {
        timers: Vec<(u32, Timestamp)>,
        signals: Vec<String>,
        children: Vec<FlowId>,
    },
    /// The code does not reproduce the journal.
    Diverged(Diagnostic),
    /// The live function waits for something no effect will settle.
    Deadlocked,
    /// Someone cancelled the activation: it is done with a `Cancelled` failure.
    Cancelled(String),
    /// Recording failed (a conflict with another run, a store error).
    Write(WriteError),
    /// The function used the context in a way that cannot be journaled.
    Misuse(String),
}

/// A branch of the function: the function itself, or one started by `all` or `race`.
pub(crate) struct Branch {
    /// `""` for the function itself.
    pub(crate) path: String,
    /// Journal positions of the entries this branch recorded in earlier runs, in order.
    pub(crate) lane: Vec<u32>,
    /// This branch's entries matched or recorded so far in this run (its next index).
    pub(crate) cursor: Cell<u32>,
    /// The branch's own task: its effects come from it alone.
    pub(crate) task: Cell<Option<flowstate_rt::TaskId>>,
    /// Combinators it started so far (they name their branches).
    combinators: Cell<u32>,
    /// Whether it waits for a combinator's branches (then it is not stalled, whatever its
    /// lane still holds).
    pub(crate) in_combinator: Cell<bool>,
    /// Whether the journal records it as finished (a branch of a combinator whose decision
    /// is recorded): past its lane it may not go live.
    closed: Cell<bool>,
    /// Whether a live effect of it is under way: a second one at the same time (`join!` over
    /// effects, an effect inside a step's body) could not be journaled in a replayable order.
    busy: Cell<bool>,
}

/// Marks a branch's live effect as under way for as long as it lives.
pub(crate) struct Busy(Rc<Branch>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}

impl Branch {
    pub(crate) fn new(path: String, lane: Vec<u32>) -> Self {
        Self {
            path,
            lane,
            cursor: Cell::new(0),
            task: Cell::new(None),
            combinators: Cell::new(0),
            in_combinator: Cell::new(false),
            closed: Cell::new(false),
            busy: Cell::new(false),
        }
    }

    /// Whether recorded entries of this branch remain to be matched.
    pub(crate) fn replaying(&self) -> bool {
        (self.cursor.get() as usize) < self.lane.len()
    }

    /// The next recorded entry of this branch, with its journal position.
    fn next<'j>(&self, journal: &'j [JournalEntry]) -> Option<(u32, &'j JournalEntry)> {
        let position = *self.lane.get(self.cursor.get() as usize)?;
        journal
            .get(position as usize)
            .map(|entry| (position, entry))
    }

    /// Checks that the branch may stop here (return, or wait for something unrecorded):
    /// nothing of it remains recorded.
    pub(crate) fn check_end(
        &self,
        journal: &[JournalEntry],
        attempted: &str,
        location: &str,
    ) -> Result<(), Diagnostic> {
        let next = self.next(journal);
        let position = next.map_or(u32::MAX, |(position, _)| position);
        expect_end(position, next.map(|(_, entry)| entry), attempted, location)
    }

    /// The idempotency key of its next effect: the same on every run.
    fn key(&self, flow: FlowId) -> String {
        if self.path.is_empty() {
            format!("{flow}/{}", self.cursor.get())
        } else {
            format!("{flow}/{}/{}", self.path, self.cursor.get())
        }
    }

    /// The event that records `entry` at `position` for this branch.
    fn recorded(&self, position: u32, entry: JournalEntry) -> EventBody {
        if self.path.is_empty() {
            EventBody::JournalEntryRecorded { position, entry }
        } else {
            EventBody::BranchEntryRecorded {
                branch: self.path.clone(),
                position,
                entry,
            }
        }
    }
}

/// What the branches of a run wait for durably (each wait counted while it lasts).
#[derive(Debug, Default)]
pub(crate) struct Waits {
    pub(crate) timers: BTreeMap<u32, Timestamp>,
    pub(crate) signals: BTreeMap<String, usize>,
    pub(crate) children: BTreeMap<FlowId, usize>,
}

impl Waits {
    pub(crate) fn is_empty(&self) -> bool {
        self.timers.is_empty() && self.signals.is_empty() && self.children.is_empty()
    }
}

/// Takes one count of `key` off `counts`.
fn uncount<K: Ord>(counts: &mut BTreeMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

#[derive(Debug, Clone)]
enum Wait {
    Timer(u32, Timestamp),
    Signal(String),
    Child(FlowId),
}

thread_local! {
    /// Set when a branch on this thread starts a durable wait: the driver thread then looks
    /// at once whether a run can go to sleep.
    static WAITS_CHANGED: Cell<bool> = const { Cell::new(false) };
}

/// Whether a branch on this thread started a durable wait since the last call (and clears
/// it).
pub(crate) fn take_waits_changed() -> bool {
    WAITS_CHANGED.with(|changed| changed.replace(false))
}

/// One durable wait, counted for as long as it lasts (also when its branch is aborted).
struct WaitGuard {
    act: Rc<Activation>,
    wait: Wait,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut waits = self.act.waits.borrow_mut();
        match &self.wait {
            Wait::Timer(position, _) => {
                waits.timers.remove(position);
            }
            Wait::Signal(name) => uncount(&mut waits.signals, name),
            Wait::Child(child) => uncount(&mut waits.children, child),
        }
    }
}

/// Keeps a branch listed among the running ones for as long as it lives.
struct Entered {
    act: Rc<Activation>,
    branch: Rc<Branch>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.act
            .branches
            .borrow_mut()
            .retain(|running| !Rc::ptr_eq(running, &self.branch));
    }
}

/// One run of an activation: its journal as loaded, its branches, and its writer.
pub(crate) struct Activation {
    pub(crate) flow: FlowId,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Live effects hold it while they record: one commit at a time.
    pub(crate) writer: flowstate_rt::Mutex<FlowWriter>,
    pub(crate) journal: Vec<JournalEntry>,
    pub(crate) sleeps_ended: BTreeSet<u32>,
    /// Lanes (journal positions by branch path) of branches not started yet in this run.
    pub(crate) lanes: RefCell<HashMap<String, Vec<u32>>>,
    /// The branches running now, the function's own first.
    pub(crate) branches: RefCell<Vec<Rc<Branch>>>,
    /// Whether the activation is active current (past the end of its journal, recorded).
    pub(crate) live: Cell<bool>,
    pub(crate) stop: RefCell<Option<Stop>>,
    /// Live effects in flight, awaiting the outside world (a step's body, a commit): while
    /// there are none, nothing outside the runtime can wake the function.
    pub(crate) live_ops: Cell<usize>,
    /// What the branches wait for durably.
    pub(crate) waits: RefCell<Waits>,
    /// Why the activation was cancelled, if it was (it stops at its next live effect).
    pub(crate) cancelled: RefCell<Option<String>>,
    /// Polls of the function and its branches so far (progress, for the deadlock check).
    pub(crate) polls: Cell<u64>,
    /// The run's control task, waiting for the function to return or the run to stop.
    pub(crate) control: RefCell<Option<std::task::Waker>>,
    /// Plans children for [`Ctx::start_plan`], if a plan engine is wired in.
    pub(crate) planner: Option<Arc<dyn crate::ChildPlanner>>,
}

/// The lanes of a journal: the positions of each branch's entries, by branch path.
pub(crate) fn lanes(function: &flowstate_core::FunctionRecord) -> HashMap<String, Vec<u32>> {
    let mut lanes: HashMap<String, Vec<u32>> = HashMap::new();
    // The function's own entries (usually nearly all) go straight to its lane, without a
    // lookup by path each.
    let branches = &function.branches;
    let mut own = Vec::with_capacity(function.journal.len().saturating_sub(branches.len()));
    for position in 0..u32::try_from(function.journal.len()).unwrap_or(u32::MAX) {
        match branches.get(&position).filter(|path| !path.is_empty()) {
            None => own.push(position),
            Some(branch) => lanes.entry(branch.clone()).or_default().push(position),
        }
    }
    if !own.is_empty() {
        lanes.insert(String::new(), own);
    }
    lanes
}

/// Counts one live effect in flight for as long as it lives (also when its task is aborted).
struct LiveOp<'a>(&'a Cell<usize>);

impl<'a> LiveOp<'a> {
    fn start(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Self(count)
    }
}

impl Drop for LiveOp<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Counts the polls of a branch (progress, for the deadlock check).
pub(crate) struct Counted<F: ?Sized> {
    pub(crate) inner: Pin<Box<F>>,
    pub(crate) act: Rc<Activation>,
}

impl<F: Future + ?Sized> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polls = &self.act.polls;
        polls.set(polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

impl Activation {
    /// Stops the run (the first reason stays) and wakes its control task.
    pub(crate) fn stop_with(&self, stop: Stop) {
        {
            let mut current = self.stop.borrow_mut();
            if current.is_none() {
                *current = Some(stop);
            }
        }
        self.wake_control();
    }

    /// Starts a durable wait, unless the activation was cancelled (then it stops for good).
    fn wait(self: &Rc<Self>, wait: Wait) -> Option<WaitGuard> {
        let cancelled = self.cancelled.borrow().clone();
        if let Some(reason) = cancelled {
            self.stop_with(Stop::Cancelled(reason));
            return None;
        }
        {
            let mut waits = self.waits.borrow_mut();
            match &wait {
                Wait::Timer(position, until) => {
                    waits.timers.insert(*position, *until);
                }
                Wait::Signal(name) => *waits.signals.entry(name.clone()).or_default() += 1,
                Wait::Child(child) => *waits.children.entry(*child).or_default() += 1,
            }
        }
        WAITS_CHANGED.with(|changed| changed.set(true));
        Some(WaitGuard {
            act: self.clone(),
            wait,
        })
    }

    /// The branch `path`, listed among the running ones while the returned guard lives.
    fn enter(self: &Rc<Self>, branch: &Rc<Branch>) -> Entered {
        self.branches.borrow_mut().push(branch.clone());
        Entered {
            act: self.clone(),
            branch: branch.clone(),
        }
    }

    /// Stages the end of replay (active replay → active current) once.
    fn ensure_live(&self, writer: &mut FlowWriter) -> Result<(), WriteError> {
        if self.live.get() {
            return Ok(());
        }
        let replaying = matches!(
            writer.record().map(|r| r.status),
            Some(FlowStatus::Function(ActivationState::ActiveReplay))
        );
        if replaying {
            writer.stage(
                self.clock.as_ref(),
                vec![EventBody::ActivationStateChanged {
                    to: ActivationState::ActiveCurrent,
                    diagnostic: None,
                }],
            )?;
        }
        self.live.set(true);
        Ok(())
    }

    /// Stages `bodies` (after the end of replay, if not recorded yet) and commits them.
    ///
    /// A delivery meanwhile (a signal, a child's end, a cancellation: the only things anyone
    /// else appends to a live activation's log) makes the commit conflict; then the log is
    /// read again and the same events are staged on top of the delivery, so that a step's
    /// result is not thrown away (and the step run again) because something arrived while it
    /// ran.
    async fn record(&self, writer: &mut FlowWriter, bodies: Vec<EventBody>) -> Result<(), ()> {
        let _in_flight = LiveOp::start(&self.live_ops);
        // Only a commit of just these events can be replayed on top of a delivery.
        let rebasable = !writer.has_staged();
        let mut rebases = Rebases::default();
        loop {
            let was_live = self.live.get();
            let staged = self
                .ensure_live(writer)
                .and_then(|()| writer.stage(self.clock.as_ref(), bodies.clone()));
            if let Err(error) = staged {
                self.stop_with(Stop::Write(error));
                return Err(());
            }
            let store = self.store.as_ref();
            let extras = AppendExtras::default();
            let committed = if rebasable {
                commit_or_rebase(writer, store, extras, &mut rebases, is_delivery).await
            } else {
                writer.commit(store, extras).await.map(Committed::Recorded)
            };
            match committed {
                Ok(Committed::Recorded(_)) => return Ok(()),
                Ok(Committed::Rebased) => {
                    let cancel = writer
                        .record()
                        .and_then(|r| r.function.as_ref())
                        .and_then(|f| f.cancel_requested.clone());
                    *self.cancelled.borrow_mut() = cancel;
                    self.live.set(was_live);
                }
                Err(error) => {
                    self.stop_with(Stop::Write(error));
                    return Err(());
                }
            }
        }
    }

    /// Matches `call` by `branch` against the branch's part of the journal. `Err(())` when
    /// the run must stop (recorded in `stop`).
    fn replay(&self, branch: &Rc<Branch>, call: Call<'_>, location: &At) -> Result<Replayed, ()> {
        if self.stop.borrow().is_some() {
            return Err(());
        }
        if flowstate_rt::current_task() != branch.task.get() {
            self.stop_with(Stop::Misuse(format!(
                "{call} at {location} was called from a task other than its branch's own; run concurrent effects with ctx.all or ctx.race, each branch through the context it is given (flowstate_rt::spawn, all and race cannot be journaled)"
            )));
            return Err(());
        }
        let next = branch.next(&self.journal);
        let position = next.map_or(u32::MAX, |(position, _)| position);
        // The location is written out only for a divergence.
        match match_call(position, next.map(|(_, entry)| entry), call, "") {
            Replay::Recorded { position, entry } => {
                branch.cursor.set(branch.cursor.get() + 1);
                Ok(Replayed::Recorded {
                    position,
                    entry: entry.clone(),
                })
            }
            Replay::Live { .. } if branch.closed.get() => {
                if let Call::Patched { .. } = call {
                    // The branch finished before the change: the old path.
                    return Ok(Replayed::Unpatched);
                }
                self.stop_with(Stop::Diverged(Diagnostic {
                    position,
                    logged: format!("the end of branch {:?}, which had finished", branch.path),
                    attempted: format!("asked for {call}"),
                    location: location.to_string(),
                }));
                Err(())
            }
            Replay::Live { .. } => {
                if branch.busy.get() {
                    self.stop_with(Stop::Misuse(format!(
                        "{call} at {location} was called while another effect of the same branch was under way (join! or select! over effects, or an effect inside a step's body); run concurrent effects with ctx.all or ctx.race"
                    )));
                    return Err(());
                }
                // A cancelled activation stops at its first effect past its journal.
                let cancelled = self.cancelled.borrow().clone();
                if let Some(reason) = cancelled {
                    self.stop_with(Stop::Cancelled(reason));
                    return Err(());
                }
                branch.busy.set(true);
                Ok(Replayed::Live(Busy(branch.clone())))
            }
            Replay::Unpatched => Ok(Replayed::Unpatched),
            Replay::Diverged(mut diagnostic) => {
                diagnostic.location = location.to_string();
                self.stop_with(Stop::Diverged(diagnostic));
                Err(())
            }
        }
    }

    /// Records `entry` as `branch`'s next, at the journal's next position; returns it.
    async fn record_entry(
        self: &Rc<Self>,
        branch: &Rc<Branch>,
        entry: JournalEntry,
    ) -> Result<u32, ()> {
        let recorder = branch.clone();
        let position = self
            .commit(move |writer| {
                let position = Self::next_position(writer);
                (vec![recorder.recorded(position, entry)], position)
            })
            .await?;
        branch.cursor.set(branch.cursor.get() + 1);
        Ok(position)
    }

    /// Takes the writer, lets `decide` say what to record from the log's state, and commits
    /// it, in a task of its own: a branch aborted meanwhile (a race's loser) never cuts a
    /// commit off halfway, which would leave the writer behind the log. `Err(())` when the
    /// run must stop (recorded in `stop`).
    async fn commit<T: 'static>(
        self: &Rc<Self>,
        decide: impl FnOnce(&FlowWriter) -> (Vec<EventBody>, T) + 'static,
    ) -> Result<T, ()> {
        let act = self.clone();
        let task = flowstate_rt::spawn(async move {
            let mut writer = act.writer.lock().await;
            let (bodies, value) = decide(&writer);
            if !bodies.is_empty() {
                act.record(&mut writer, bodies).await?;
            }
            Ok(value)
        });
        match task.join().await {
            Ok(committed) => committed,
            Err(failure) => {
                self.stop_with(Stop::Misuse(format!("a commit failed: {failure}")));
                Err(())
            }
        }
    }

    /// Takes what `find` sees delivered in the log (a signal, a child's end) and journals it
    /// with `entry` as `branch`'s next, in one commit; or, when nothing is there yet, waits
    /// durably (the activation sleeps until it is delivered, and this run never resumes).
    async fn take_or_wait<V: Clone + 'static>(
        self: &Rc<Self>,
        branch: &Rc<Branch>,
        find: impl FnOnce(&flowstate_core::FunctionRecord) -> Option<V> + 'static,
        entry: impl FnOnce(V) -> JournalEntry + 'static,
        waiting: Wait,
    ) -> V {
        let recorder = branch.clone();
        let taken = self
            .commit(move |writer| {
                let delivered = writer
                    .record()
                    .and_then(|r| r.function.as_ref())
                    .and_then(find);
                match delivered {
                    Some(value) => {
                        let position = Self::next_position(writer);
                        let recorded = recorder.recorded(position, entry(value.clone()));
                        (vec![recorded], Some(value))
                    }
                    None => (Vec::new(), None),
                }
            })
            .await;
        match taken {
            Ok(Some(value)) => {
                branch.cursor.set(branch.cursor.get() + 1);
                value
            }
            Ok(None) => {
                let _waiting = self.wait(waiting);
                halted().await
            }
            Err(()) => halted().await,
        }
    }

    /// Checks that no branch that recorded entries was left unstarted by the code (at the
    /// function's return): entries of branches the code no longer starts are a divergence.
    pub(crate) fn check_no_lane_left(&self) -> Result<(), Diagnostic> {
        let lanes = self.lanes.borrow();
        let Some((path, lane)) = lanes
            .iter()
            .filter(|(_, lane)| !lane.is_empty())
            .min_by_key(|(_, lane)| lane[0])
        else {
            return Ok(());
        };
        let position = lane[0];
        let logged = self
            .journal
            .get(position as usize)
            .map_or_else(String::new, ToString::to_string);
        Err(Diagnostic {
            position,
            logged: format!("{logged} in branch {path:?}"),
            attempted: format!("returned without starting branch {path:?}"),
            location: "the function's return".to_owned(),
        })
    }

    /// Forgets the lanes of branch `path` and of every branch nested in it (their entries are
    /// not replayed: the journal records a decision that skips them).
    fn skip_lanes(&self, path: &str) {
        let nested = format!("{path}/");
        self.lanes
            .borrow_mut()
            .retain(|lane, _| lane != path && !lane.starts_with(&nested));
    }

    /// The position the next live entry takes.
    fn next_position(writer: &FlowWriter) -> u32 {
        writer
            .record()
            .and_then(|r| r.function.as_ref())
            .map_or(0, |f| u32::try_from(f.journal.len()).unwrap_or(u32::MAX))
    }
}

enum Replayed {
    Recorded {
        position: u32,
        entry: JournalEntry,
    },
    /// Past the end of the branch's lane: run it and record it (the branch is busy until
    /// the guard goes).
    Live(Busy),
    Unpatched,
}

impl Replayed {
    /// The busy guard of a live effect (to keep until its entry is recorded).
    fn into_busy(self) -> Option<Busy> {
        match self {
            Self::Live(busy) => Some(busy),
            _ => None,
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

/// A run that must stop never resumes: the driver drops the function's task.
async fn halted<T>() -> T {
    std::future::pending().await
}

/// Where the function's code asked for an effect. Kept as the caller's location and written
/// out (`file:line:column`) only when a diagnostic needs it, not on every effect: a replay
/// asks for one per journal entry.
#[derive(Debug, Clone, Copy)]
struct At(&'static Location<'static>);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.0.file(), self.0.line(), self.0.column())
    }
}

fn location(at: &'static Location<'static>) -> At {
    At(at)
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
                Err(()) => return halted().await,
            };
            let in_flight = LiveOp::start(&act.live_ops);
            let outcome = CatchUnwind(Box::pin(body(branch.key(act.flow)))).await;
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
                Err(()) => halted().await,
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
                    Err(()) => halted().await,
                }
            }
            Err(()) => halted().await,
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
                        Err(()) => halted().await,
                    }
                }
                Err(()) => halted().await,
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
                        Err(()) => return halted().await,
                    }
                }
                Err(()) => return halted().await,
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
                Err(()) => return halted().await,
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
                Err(()) => return halted().await,
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
                Err(()) => halted().await,
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
                Err(()) => return halted().await,
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

    /// How the journal says this branch's next combinator settled (its `settled` entry's
    /// position and decision), or `None` with the busy guard when it is to settle live.
    /// `Err(())` when the run must stop.
    #[allow(clippy::type_complexity)]
    fn decision(
        &self,
        combinator: &'static str,
        at: &At,
    ) -> Result<(Option<(u32, Option<u32>)>, Option<Busy>), ()> {
        match self
            .act
            .replay(&self.branch, Call::Settled { combinator }, at)?
        {
            Replayed::Recorded {
                position,
                entry: JournalEntry::Settled { branch, .. },
            } => Ok((Some((position, branch)), None)),
            replayed => Ok((None, replayed.into_busy())),
        }
    }

    /// Names the next combinator of this branch and prepares its branches (their code is
    /// called, nothing runs yet). `None` for no branches.
    fn start_branches<T, F, Fut>(
        &self,
        branches: impl IntoIterator<Item = F>,
    ) -> Option<(u32, Vec<Pending<T>>)>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'static,
        T: 'static,
    {
        let codes: Vec<F> = branches.into_iter().collect();
        if codes.is_empty() {
            // Nothing to run and nothing journaled: it takes no index either, so that adding
            // a combinator that is empty here does not rename later branches.
            return None;
        }
        let index = self.branch.combinators.get();
        self.branch.combinators.set(index + 1);
        let pending: Vec<Pending<T>> = codes
            .into_iter()
            .enumerate()
            .map(|(number, code)| {
                let path = if self.branch.path.is_empty() {
                    format!("{index}.{number}")
                } else {
                    format!("{}/{index}.{number}", self.branch.path)
                };
                let lane = self
                    .act
                    .lanes
                    .borrow_mut()
                    .remove(&path)
                    .unwrap_or_default();
                let branch = Rc::new(Branch::new(path, lane));
                let ctx = Ctx {
                    act: self.act.clone(),
                    branch: branch.clone(),
                };
                let future: Pin<Box<dyn Future<Output = Result<T, Failure>>>> = Box::pin(code(ctx));
                Pending { branch, future }
            })
            .collect();
        Some((index, pending))
    }

    /// Runs one prepared branch as a task of its own (a future for `flowstate_rt`'s
    /// combinators), checking when it returns that it replayed all it had recorded.
    fn run_branch<T: 'static>(
        &self,
        pending: Pending<T>,
    ) -> impl Future<Output = Result<T, Failure>> + 'static {
        let act = self.act.clone();
        let Pending { branch, future } = pending;
        let counted = Counted {
            inner: future,
            act: act.clone(),
        };
        async move {
            let _entered = act.enter(&branch);
            branch.task.set(flowstate_rt::current_task());
            let outcome = counted.await;
            if let Err(diagnostic) = branch.check_end(
                &act.journal,
                "returned",
                &format!("the end of branch {}", branch.path),
            ) {
                act.stop_with(Stop::Diverged(diagnostic));
                return halted().await;
            }
            outcome
        }
    }

    async fn settle_all<T: 'static>(
        &self,
        index: u32,
        branches: Vec<Pending<T>>,
        decided: Option<(u32, Option<u32>)>,
        at: &At,
    ) -> Option<Result<Vec<T>, Failure>> {
        let count = branches.len();
        // Replaying a failure: only the branch that failed runs again (the others' values
        // were never used).
        let failed = match decided {
            Some((position, Some(failed))) => {
                self.skip_all_but(&branches, failed);
                let Some(pending) = branches.into_iter().nth(failed as usize) else {
                    return self.diverged(
                        position,
                        &format!("all over branches decided by branch {failed}'s error"),
                        &format!("ran ctx.all #{index} over {count} branches"),
                        at,
                    );
                };
                let run = self.run_branch(pending);
                return match flowstate_rt::race(vec![(failed, run)]).await {
                    Ok((_, Err(failure))) => Some(Err(failure)),
                    _ => self.diverged(
                        position,
                        &format!("all over branches ended by branch {failed}'s error"),
                        &format!("branch {failed} of ctx.all #{index} succeeded"),
                        at,
                    ),
                };
            }
            other => other,
        };
        if failed.is_some() {
            // Recorded as all succeeding: every branch finished.
            for pending in &branches {
                pending.branch.closed.set(true);
            }
        }
        let inputs: Vec<_> = branches
            .into_iter()
            .enumerate()
            .map(|(number, pending)| {
                let run = self.run_branch(pending);
                let number = u32::try_from(number).unwrap_or(u32::MAX);
                (number, async move { run.await.map_err(|e| (number, e)) })
            })
            .collect();
        let outcome = flowstate_rt::all(inputs).await;
        if let Some((position, _)) = failed {
            // Recorded as all succeeding.
            return match outcome {
                Ok(values) => Some(Ok(values.into_iter().map(|(_, v)| v).collect())),
                Err((number, _)) => self.diverged(
                    position,
                    "all over branches, every branch succeeding",
                    &format!("branch {number} of ctx.all #{index} failed"),
                    at,
                ),
            };
        }
        let decision = match &outcome {
            Ok(_) => None,
            Err((number, _)) => Some(*number),
        };
        self.record_settled("all", decision).await.ok()?;
        Some(
            outcome
                .map(|values| values.into_iter().map(|(_, v)| v).collect())
                .map_err(|(_, failure)| failure),
        )
    }

    async fn settle_race<T: 'static>(
        &self,
        index: u32,
        branches: Vec<Pending<T>>,
        decided: Option<(u32, Option<u32>)>,
        at: &At,
    ) -> Option<(usize, Result<T, Failure>)> {
        let count = branches.len();
        let inputs: Vec<_> = match decided {
            // Replaying: the recorded winner alone runs again.
            Some((position, winner)) => {
                self.skip_all_but(&branches, winner.unwrap_or(u32::MAX));
                let pending = winner.and_then(|w| branches.into_iter().nth(w as usize));
                let (Some(winner), Some(pending)) = (winner, pending) else {
                    return self.diverged(
                        position,
                        &format!("race over branches won by branch {winner:?}"),
                        &format!("raced {count} branches in ctx.race #{index}"),
                        at,
                    );
                };
                vec![(winner, self.run_branch(pending))]
            }
            None => branches
                .into_iter()
                .enumerate()
                .map(|(number, pending)| {
                    (
                        u32::try_from(number).unwrap_or(u32::MAX),
                        self.run_branch(pending),
                    )
                })
                .collect(),
        };
        let (winner, outcome) = flowstate_rt::race(inputs).await.ok()?;
        if decided.is_none() {
            self.record_settled("race", Some(winner)).await.ok()?;
        }
        Some((winner as usize, outcome))
    }

    /// Under a recorded decision: the branch `chosen` runs again, closed (the journal records
    /// it as finished); the lanes of the others (and of branches nested in them) are skipped.
    fn skip_all_but<T>(&self, branches: &[Pending<T>], chosen: u32) {
        for (number, pending) in branches.iter().enumerate() {
            if u32::try_from(number).ok() == Some(chosen) {
                pending.branch.closed.set(true);
            } else {
                self.act.skip_lanes(&pending.branch.path);
            }
        }
    }

    /// Records how a combinator of this branch settled.
    async fn record_settled(&self, combinator: &str, branch: Option<u32>) -> Result<(), ()> {
        let entry = JournalEntry::Settled {
            combinator: combinator.to_owned(),
            branch,
        };
        self.act.record_entry(&self.branch, entry).await.map(drop)
    }

    fn diverged<T>(&self, position: u32, logged: &str, attempted: &str, at: &At) -> Option<T> {
        self.act.stop_with(Stop::Diverged(Diagnostic {
            position,
            logged: logged.to_owned(),
            attempted: attempted.to_owned(),
            location: at.to_string(),
        }));
        None
    }
}

/// What others append to a live activation's log: a signal, a child's end, a request to
/// cancel. A commit goes on on top of these ([`Activation::record`]).
fn is_delivery(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::SignalDelivered { .. }
            | EventBody::ChildEnded { .. }
            | EventBody::CancelRequested { .. }
    )
}

/// Creates the child flow `child`, ready for workers; if it exists already (an earlier run
/// created it and died before journaling it), it must be this activation's child.
async fn create_child(
    act: &Activation,
    child: FlowId,
    kind: FlowKind,
    definition: &str,
    input: serde_json::Value,
    started: Vec<EventBody>,
) -> Result<(), Stop> {
    let writer = Creation::new(kind, definition, input)
        .with_id(child)
        .child_of(act.flow)
        .then(started)
        .stage(act.clock.as_ref())
        .map_err(Stop::Write)?;
    match create::record(act.store.as_ref(), writer, true).await {
        Ok(_) => Ok(()),
        Err(CreateError::Exists { .. }) => {
            let existing = FlowWriter::load(act.store.as_ref(), child)
                .await
                .map_err(Stop::Write)?;
            match existing.record() {
                Some(record) if record.parent == Some(act.flow) => Ok(()),
                _ => Err(Stop::Misuse(format!(
                    "flow {child} exists and is not a child of {}",
                    act.flow
                ))),
            }
        }
        Err(CreateError::Write(error)) => Err(Stop::Write(error)),
    }
}

/// A branch whose code was called, not run yet.
struct Pending<T> {
    branch: Rc<Branch>,
    future: Pin<Box<dyn Future<Output = Result<T, Failure>>>>,
}
