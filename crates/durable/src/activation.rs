//! The activation: one run of a durable function against its journal, and the path by which
//! its effects are recorded.
//!
//! **What it owns:** the [`Activation`] (the journal as loaded, the lanes of branches not
//! started yet, the running branches, the writer), how a run stops ([`Stop`], kept in the
//! activation's stop slot, and [`Stopped`], which says that it must), the commit path
//! ([`Activation::record`] over `flowstate_engine::commit_or_rebase`, serialized on the
//! writer and run in a task of its own), the count of live effects in flight ([`LiveOp`]),
//! and the creation of child flows.
//!
//! **What it must never do:** be reachable by user code: everything here is `pub(crate)`,
//! a function sees only [`crate::Ctx`], and the context reaches the store only through the
//! activation. Nor may it cut a commit off halfway, which would leave the writer behind
//! the log (a race's loser is aborted, a commit it had under way is not). Once the stop
//! slot is set the run never resumes; the driver records how it ended.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use flowstate_core::machine::ActivationState;
use flowstate_core::{
    Clock, Diagnostic, EventBody, FlowId, FlowKind, FlowStatus, JournalEntry, Timestamp,
};
use flowstate_engine::{
    commit_or_rebase, create, AppendExtras, Committed, CreateError, Creation, FlowWriter, Rebases,
    WriteError,
};
use flowstate_store::Store;

use crate::branch::Branch;
use crate::waits::{Wait, Waits};

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

/// The run must stop; the cause is in the activation's stop slot (set by
/// [`Activation::stop_with`] before this is returned). A run that must stop never resumes:
/// the effect that gets this halts ([`halted`]) and the driver records how the run ended.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

/// Keeps a branch listed among the running ones for as long as it lives.
pub(crate) struct Entered {
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
    /// Plans children for [`crate::Ctx::start_plan`], if a plan engine is wired in.
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
pub(crate) struct LiveOp<'a>(&'a Cell<usize>);

impl<'a> LiveOp<'a> {
    pub(crate) fn start(count: &'a Cell<usize>) -> Self {
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

    /// The branch `path`, listed among the running ones while the returned guard lives.
    pub(crate) fn enter(self: &Rc<Self>, branch: &Rc<Branch>) -> Entered {
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
    async fn record(&self, writer: &mut FlowWriter, bodies: Vec<EventBody>) -> Result<(), Stopped> {
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
                return Err(Stopped);
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
                    return Err(Stopped);
                }
            }
        }
    }

    /// Records `entry` as `branch`'s next, at the journal's next position; returns it.
    pub(crate) async fn record_entry(
        self: &Rc<Self>,
        branch: &Rc<Branch>,
        entry: JournalEntry,
    ) -> Result<u32, Stopped> {
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
    /// commit off halfway, which would leave the writer behind the log. `Err(Stopped)` when
    /// the run must stop (recorded in `stop`).
    pub(crate) async fn commit<T: 'static>(
        self: &Rc<Self>,
        decide: impl FnOnce(&FlowWriter) -> (Vec<EventBody>, T) + 'static,
    ) -> Result<T, Stopped> {
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
                Err(Stopped)
            }
        }
    }

    /// Takes what `find` sees delivered in the log (a signal, a child's end) and journals it
    /// with `entry` as `branch`'s next, in one commit; or, when nothing is there yet, waits
    /// durably (the activation sleeps until it is delivered, and this run never resumes).
    pub(crate) async fn take_or_wait<V: Clone + 'static>(
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
            Err(Stopped) => halted().await,
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
    pub(crate) fn skip_lanes(&self, path: &str) {
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

/// A run that must stop never resumes: the driver drops the function's task.
pub(crate) async fn halted<T>() -> T {
    std::future::pending().await
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
pub(crate) async fn create_child(
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
        Err(CreateError::KeyReused { key, flow }) => Err(Stop::Misuse(format!(
            "a child has no idempotency key, yet key {key:?} named flow {flow}"
        ))),
        Err(CreateError::Write(error)) => Err(Stop::Write(error)),
    }
}
