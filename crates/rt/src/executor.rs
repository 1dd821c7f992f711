//! The executor: tasks, wake-ups, rounds, identity, abort.
//!
//! Tasks live in a table owned by the runtime; a task's future is taken out of the table
//! while it is polled, so that it can spawn (and synchronously run) children, which insert
//! themselves. Wakers carry only the task's number and the wake queue (the `Waker` contract
//! wants `Send + Sync`); tasks woken are polled in the order they were woken.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use flowstate_core::machine::PairState;

use crate::error::{ProtocolError, TaskFailure};

/// A task's identity: unique within its runtime (the protocol's `identity` query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// What a task shares with the pairs it creates: its protocol state.
#[derive(Debug)]
pub(crate) struct TaskCell {
    pub(crate) id: TaskId,
    pub(crate) pair: Cell<PairState>,
    /// Where the outstanding pair was created.
    pub(crate) pair_created: Cell<Option<&'static Location<'static>>>,
    pub(crate) alive: Cell<bool>,
    abort_requested: Cell<bool>,
}

/// The wake queue: task numbers, each at most once, in wake order.
#[derive(Debug, Default)]
struct WakeQueue {
    order: VecDeque<TaskId>,
    queued: HashSet<TaskId>,
    /// A [`RemoteWake`] asked the driver thread to look at something outside the runtime.
    poked: bool,
}

/// The wake queue and the condition a driver thread waits on for it.
#[derive(Debug, Default)]
struct Wakes {
    queue: Mutex<WakeQueue>,
    woken: Condvar,
}

struct TaskWaker {
    id: TaskId,
    wakes: Arc<Wakes>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut queue = self
            .wakes
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.queued.insert(self.id) {
            queue.order.push_back(self.id);
        }
        // A driver thread may wait for this (futures of other runtimes wake from their threads).
        self.wakes.woken.notify_all();
    }
}

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

struct Slot {
    /// `None` while the task is being polled.
    future: Option<BoxedTask>,
    cell: Rc<TaskCell>,
    /// Records a failure in the task's typed outcome and runs its completion hooks.
    fail: Box<dyn Fn(TaskFailure)>,
    /// Runs the completion hooks after a normal return.
    completed: Box<dyn Fn()>,
}

pub(crate) struct Inner {
    tasks: RefCell<HashMap<TaskId, Slot>>,
    wakes: Arc<Wakes>,
    next: Cell<u64>,
}

/// The frame of the task being polled (a stack: a task may run a child synchronously).
struct Frame {
    rt: Rc<Inner>,
    cell: Rc<TaskCell>,
}

thread_local! {
    static CURRENT: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// The task being polled on this thread, if any.
pub(crate) fn current_cell() -> Option<Rc<TaskCell>> {
    CURRENT.with(|c| c.borrow().last().map(|f| f.cell.clone()))
}

fn current_runtime() -> Option<Rc<Inner>> {
    CURRENT.with(|c| c.borrow().last().map(|f| f.rt.clone()))
}

/// The identity of the task being polled: the same for every query in one task, different
/// between tasks; `None` outside any task.
#[must_use]
pub fn current_task() -> Option<TaskId> {
    current_cell().map(|c| c.id)
}

/// Fails the task being polled with `error`, right where it broke the protocol (like the
/// exception await-rt throws into the generator). The executor catches it.
pub(crate) fn violate(error: ProtocolError) -> ! {
    std::panic::resume_unwind(Box::new(error))
}

/// What a task's handle and its hooks share.
struct Shared<O> {
    outcome: RefCell<Option<Result<O, TaskFailure>>>,
    finished: Cell<bool>,
    hooks: RefCell<Vec<Box<dyn FnOnce()>>>,
}

impl<O> Shared<O> {
    fn finish(&self, outcome: Result<O, TaskFailure>) {
        *self.outcome.borrow_mut() = Some(outcome);
        self.finished.set(true);
        let hooks = std::mem::take(&mut *self.hooks.borrow_mut());
        for hook in hooks {
            hook();
        }
    }
}

/// The handle of a task: its outcome once it finished, completion hooks, abort. Clones
/// refer to the same task; dropping a handle does not stop the task.
pub struct TaskHandle<O> {
    id: TaskId,
    rt: Weak<Inner>,
    shared: Rc<Shared<O>>,
}

impl<O> fmt::Debug for TaskHandle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("finished", &self.shared.finished.get())
            .finish()
    }
}

impl<O> Clone for TaskHandle<O> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            rt: self.rt.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<O: 'static> TaskHandle<O> {
    /// The task's identity.
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Whether it returned, failed or was aborted.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.shared.finished.get()
    }

    /// Its outcome, once: the output it returned, or why it failed.
    pub fn take_outcome(&self) -> Option<Result<O, TaskFailure>> {
        self.shared.outcome.borrow_mut().take()
    }

    /// Runs `hook` when the task finishes (at once if it already has).
    pub fn on_complete(&self, hook: impl FnOnce() + 'static) {
        if self.is_finished() {
            hook();
        } else {
            self.shared.hooks.borrow_mut().push(Box::new(hook));
        }
    }

    /// Stops the task: its future is dropped (so its cleanup runs) and its outcome is
    /// [`TaskFailure::Aborted`]. A task that is being polled stops when its poll returns.
    pub fn abort(&self) {
        if let Some(rt) = self.rt.upgrade() {
            rt.abort(self.id);
        }
    }

    /// Waits for the task's outcome (through a completion pair, like any suspension).
    pub async fn join(self) -> Result<O, TaskFailure> {
        if !self.is_finished() {
            let (resolver, once) = crate::pair::<(), std::convert::Infallible>();
            self.on_complete(move || {
                // The joining task may be gone (aborted); then nobody waits.
                let _ = resolver.resolve(());
            });
            let _ = once.await;
        }
        self.take_outcome().unwrap_or(Err(TaskFailure::Aborted))
    }
}

/// A deterministic, single-threaded executor of tasks that follow the await-rt protocol.
#[derive(Clone)]
pub struct Runtime {
    inner: Rc<Inner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("tasks", &self.inner.tasks.borrow().len())
            .finish()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// An empty runtime.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Rc::new(Inner {
                tasks: RefCell::new(HashMap::new()),
                wakes: Arc::new(Wakes::default()),
                next: Cell::new(1),
            }),
        }
    }

    /// Starts `future` as a task and runs it until it first suspends: a task that never
    /// suspends has finished when `run` returns.
    pub fn run<F>(&self, future: F) -> TaskHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.inner.spawn(future)
    }

    /// Polls woken tasks, in the order they were woken, until none is left; returns how many
    /// polls that took. One call is one *round*.
    pub fn run_until_stalled(&self) -> usize {
        let mut polls = 0;
        loop {
            let next = {
                let mut queue = self
                    .inner
                    .wakes
                    .queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let next = queue.order.pop_front();
                if let Some(id) = next {
                    queue.queued.remove(&id);
                }
                next
            };
            let Some(id) = next else {
                return polls;
            };
            polls += 1;
            self.inner.poll(id);
        }
    }

    /// Tasks that have not finished.
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        self.inner.tasks.borrow().len()
    }

    /// Blocks this thread until a task is woken, a [`RemoteWake`] is used, or `timeout`
    /// passed; returns whether either happened.
    /// For a driver whose tasks also await futures of another runtime (a step's I/O on
    /// tokio), which wake them from other threads.
    pub fn wait_for_wake(&self, timeout: Duration) -> bool {
        let queue = self
            .inner
            .wakes
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut queue, _) = self
            .inner
            .wakes
            .woken
            .wait_timeout_while(queue, timeout, |q| q.order.is_empty() && !q.poked)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let poked = std::mem::take(&mut queue.poked);
        poked || !queue.order.is_empty()
    }

    /// A handle that other threads use to end this runtime's [`Runtime::wait_for_wake`]
    /// (new work for its driver thread, a cancellation).
    #[must_use]
    pub fn remote(&self) -> RemoteWake {
        RemoteWake {
            wakes: self.inner.wakes.clone(),
        }
    }
}

/// Wakes a runtime's driver thread from any thread, without waking any task.
#[derive(Clone)]
pub struct RemoteWake {
    wakes: Arc<Wakes>,
}

impl fmt::Debug for RemoteWake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWake").finish_non_exhaustive()
    }
}

impl RemoteWake {
    /// Ends the driver thread's current (or next) [`Runtime::wait_for_wake`].
    pub fn wake(&self) {
        let mut queue = self
            .wakes
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queue.poked = true;
        self.wakes.woken.notify_all();
    }
}

/// Starts `future` as a task of the runtime of the task being polled, and runs it until it
/// first suspends (so a child that never suspends has finished when `spawn` returns).
///
/// # Panics
///
/// Outside a task of an await runtime: there is no runtime to spawn on.
pub fn spawn<F>(future: F) -> TaskHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match current_runtime() {
        Some(rt) => rt.spawn(future),
        None => panic!("flowstate_rt::spawn called outside a task of an await runtime"),
    }
}

impl Inner {
    fn spawn<F>(self: &Rc<Self>, future: F) -> TaskHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let id = TaskId(self.next.get());
        self.next.set(id.0 + 1);
        let cell = Rc::new(TaskCell {
            id,
            pair: Cell::new(PairState::Running),
            pair_created: Cell::new(None),
            alive: Cell::new(true),
            abort_requested: Cell::new(false),
        });
        let shared = Rc::new(Shared {
            outcome: RefCell::new(None),
            finished: Cell::new(false),
            hooks: RefCell::new(Vec::new()),
        });
        let output = shared.clone();
        let task: BoxedTask = Box::pin(async move {
            let value = future.await;
            *output.outcome.borrow_mut() = Some(Ok(value));
        });
        let (failed, completed) = (shared.clone(), shared.clone());
        self.tasks.borrow_mut().insert(
            id,
            Slot {
                future: Some(task),
                cell,
                fail: Box::new(move |failure| failed.finish(Err(failure))),
                completed: Box::new(move || {
                    let outcome = completed.outcome.borrow_mut().take();
                    if let Some(outcome) = outcome {
                        completed.finish(outcome);
                    }
                }),
            },
        );
        self.poll(id);
        TaskHandle {
            id,
            rt: Rc::downgrade(self),
            shared,
        }
    }

    fn poll(self: &Rc<Self>, id: TaskId) {
        let (mut future, cell) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(&id) else {
                return; // finished or aborted since it was woken
            };
            let Some(future) = slot.future.take() else {
                return; // being polled (it woke itself)
            };
            (future, slot.cell.clone())
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            wakes: self.wakes.clone(),
        }));
        let mut cx = Context::from_waker(&waker);
        CURRENT.with(|c| {
            c.borrow_mut().push(Frame {
                rt: self.clone(),
                cell: cell.clone(),
            });
        });
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        CURRENT.with(|c| c.borrow_mut().pop());
        let failure = match polled {
            Ok(Poll::Pending) if !cell.abort_requested.get() => {
                if let Some(slot) = self.tasks.borrow_mut().get_mut(&id) {
                    slot.future = Some(future);
                }
                return;
            }
            Ok(Poll::Pending) => Some(TaskFailure::Aborted),
            Ok(Poll::Ready(())) => match cell.pair.get() {
                PairState::Running => None,
                _ => Some(TaskFailure::Protocol(
                    ProtocolError::ReturnedWithOutstandingPair {
                        created: cell.pair_created.get().unwrap_or(Location::caller()),
                    },
                )),
            },
            Err(payload) => Some(match payload.downcast::<ProtocolError>() {
                Ok(error) => TaskFailure::Protocol(*error),
                Err(payload) => TaskFailure::Panicked {
                    message: panic_message(payload.as_ref()),
                },
            }),
        };
        drop(future);
        self.finish(id, failure);
    }

    /// Removes a finished task and reports its outcome.
    fn finish(&self, id: TaskId, failure: Option<TaskFailure>) {
        let Some(slot) = self.tasks.borrow_mut().remove(&id) else {
            return;
        };
        slot.cell.alive.set(false);
        match failure {
            None => (slot.completed)(),
            Some(failure) => (slot.fail)(failure),
        }
    }

    fn abort(&self, id: TaskId) {
        let future = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(&id) else {
                return;
            };
            match slot.future.take() {
                Some(future) => future,
                None => {
                    // Being polled: it stops when that poll returns.
                    slot.cell.abort_requested.set(true);
                    return;
                }
            }
        };
        // Dropping the future runs the task's cleanup (destructors of what it holds).
        drop(future);
        self.finish(id, Some(TaskFailure::Aborted));
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}
