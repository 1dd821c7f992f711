//! Completion pairs: a [`Resolver`] (and, on request, a [`Rejecter`]) and the [`Once`]
//! future that awaits them. The task's protocol state moves only through
//! [`PairState`]'s table.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use flowstate_core::machine::{Machine, PairState, Transition};

use crate::error::{ProtocolError, SettleError};
use crate::executor::{current_cell, violate, TaskCell};

struct PairCell<T, E> {
    owner: Weak<TaskCell>,
    owner_id: crate::TaskId,
    created: &'static Location<'static>,
    value: RefCell<Option<Result<T, E>>>,
    settled_at: Cell<Option<&'static Location<'static>>>,
    resumed: Cell<bool>,
    /// Live resolvers and rejecters.
    handles: Cell<usize>,
    abandoned: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Moves the task's state to `to`, which the spec's table must list as allowed from the
/// current state.
fn step(
    task: &TaskCell,
    to: PairState,
    at: &'static Location<'static>,
) -> Result<(), ProtocolError> {
    match PairState::transition(task.pair.get(), to) {
        Ok(Transition::Allowed) => {
            task.pair.set(to);
            Ok(())
        }
        // "Ignored" (the same state again) is not a transition this protocol has either.
        Ok(_) => Err(ProtocolError::Repeated {
            state: to.label(),
            at,
        }),
        Err(transition) => Err(ProtocolError::Invalid { transition, at }),
    }
}

/// Creates a completion pair in the task being polled (running → scheduling/single).
///
/// # Panics
///
/// Outside a task of an await runtime. Inside one, a protocol violation (a pair already
/// outstanding) fails the task with [`ProtocolError::PairOutstanding`].
#[track_caller]
#[must_use]
pub fn pair<T, E>() -> (Resolver<T, E>, Once<T, E>) {
    let at = Location::caller();
    let Some(task) = current_cell() else {
        panic!("flowstate_rt::pair called at {at} outside a task of an await runtime");
    };
    if task.pair.get() != PairState::Running {
        violate(ProtocolError::PairOutstanding {
            at,
            outstanding: task.pair_created.get().unwrap_or(at),
        });
    }
    if let Err(error) = step(&task, PairState::SchedulingSingle, at) {
        violate(error);
    }
    task.pair_created.set(Some(at));
    let cell = Rc::new(PairCell {
        owner: Rc::downgrade(&task),
        owner_id: task.id,
        created: at,
        value: RefCell::new(None),
        settled_at: Cell::new(None),
        resumed: Cell::new(false),
        handles: Cell::new(1),
        abandoned: Cell::new(false),
        waker: RefCell::new(None),
    });
    (Resolver { cell: cell.clone() }, Once { cell })
}

impl<T, E> PairCell<T, E> {
    /// Whether a settlement now would reach a live task.
    fn is_live(&self) -> bool {
        !self.resumed.get()
            && self.settled_at.get().is_none()
            && self.owner.upgrade().is_some_and(|t| t.alive.get())
    }

    fn settle(
        &self,
        outcome: Result<T, E>,
        at: &'static Location<'static>,
    ) -> Result<(), SettleError> {
        if let Some(first) = self.settled_at.get() {
            return Err(if self.resumed.get() {
                SettleError::AlreadyResumed { first }
            } else {
                SettleError::AlreadySettled { first }
            });
        }
        let task = self
            .owner
            .upgrade()
            .filter(|t| t.alive.get())
            .ok_or(SettleError::TaskGone)?;
        let to = match (task.pair.get(), outcome.is_ok()) {
            (PairState::SchedulingSingle, true) => PairState::ReadySingle,
            (PairState::SchedulingDouble, true) => PairState::ReadyDouble,
            (PairState::SchedulingDouble, false) => PairState::Failed,
            // Pending → running: the task resumes (at its next poll, in this round).
            (PairState::Pending, _) => PairState::Running,
            // The task moved on from this pair (it can only be gone: checked above).
            _ => return Err(SettleError::TaskGone),
        };
        if step(&task, to, at).is_err() {
            return Err(SettleError::TaskGone);
        }
        *self.value.borrow_mut() = Some(outcome);
        self.settled_at.set(Some(at));
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
        Ok(())
    }

    fn release_handle(&self) {
        let left = self.handles.get().saturating_sub(1);
        self.handles.set(left);
        if left == 0 && self.settled_at.get().is_none() {
            self.abandoned.set(true);
            if let Some(waker) = self.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// Resolves a pair. Clones share the pair: the first settlement wins and every later one is
/// an error for its caller.
pub struct Resolver<T, E = Infallible> {
    cell: Rc<PairCell<T, E>>,
}

impl<T, E> fmt::Debug for Resolver<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("created", &self.cell.created)
            .field("task", &self.cell.owner_id)
            .finish()
    }
}

impl<T, E> Clone for Resolver<T, E> {
    fn clone(&self) -> Self {
        self.cell.handles.set(self.cell.handles.get() + 1);
        Self {
            cell: self.cell.clone(),
        }
    }
}

impl<T, E> Drop for Resolver<T, E> {
    fn drop(&mut self) {
        self.cell.release_handle();
    }
}

impl<T, E> Resolver<T, E> {
    /// Settles the pair with `value`. While the task is still scheduling, its next await is
    /// ready at once; when it is pending, it is woken and resumes in this round.
    #[track_caller]
    pub fn resolve(&self, value: T) -> Result<(), SettleError> {
        self.cell.settle(Ok(value), Location::caller())
    }

    /// Whether resolving now would reach a live task (not settled, not resumed, not gone).
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.cell.is_live()
    }
}

/// Rejects a pair; its awaiting task gets the error itself at the await.
pub struct Rejecter<T, E> {
    cell: Rc<PairCell<T, E>>,
}

impl<T, E> fmt::Debug for Rejecter<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejecter")
            .field("created", &self.cell.created)
            .finish()
    }
}

impl<T, E> Clone for Rejecter<T, E> {
    fn clone(&self) -> Self {
        self.cell.handles.set(self.cell.handles.get() + 1);
        Self {
            cell: self.cell.clone(),
        }
    }
}

impl<T, E> Drop for Rejecter<T, E> {
    fn drop(&mut self) {
        self.cell.release_handle();
    }
}

impl<T, E> Rejecter<T, E> {
    /// Settles the pair with `error`.
    #[track_caller]
    pub fn reject(&self, error: E) -> Result<(), SettleError> {
        self.cell.settle(Err(error), Location::caller())
    }
}

/// Awaits a pair: the resolved value, or the rejection's error itself.
pub struct Once<T, E = Infallible> {
    cell: Rc<PairCell<T, E>>,
}

impl<T, E> fmt::Debug for Once<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once")
            .field("created", &self.cell.created)
            .finish()
    }
}

impl<T, E> Once<T, E> {
    /// Hands out the rejecter (scheduling/single → scheduling/double, or ready/single →
    /// ready/double once it is already resolved). A second call fails the task.
    #[track_caller]
    #[must_use]
    pub fn rejecter(&mut self) -> Rejecter<T, E> {
        let at = Location::caller();
        let Some(task) = self.cell.owner.upgrade() else {
            violate(ProtocolError::ForeignPair {
                created: self.cell.created,
            });
        };
        let to = match task.pair.get() {
            PairState::ReadySingle => PairState::ReadyDouble,
            _ => PairState::SchedulingDouble,
        };
        if let Err(error) = step(&task, to, at) {
            violate(error);
        }
        self.cell.handles.set(self.cell.handles.get() + 1);
        Rejecter {
            cell: self.cell.clone(),
        }
    }
}

impl<T, E> Future for Once<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let cell = &self.cell;
        let here = current_cell();
        let Some(task) = here.filter(|t| t.id == cell.owner_id) else {
            violate(ProtocolError::ForeignPair {
                created: cell.created,
            });
        };
        if cell.resumed.get() {
            violate(ProtocolError::AwaitedTwice {
                created: cell.created,
            });
        }
        let settled = cell.value.borrow_mut().take();
        if let Some(outcome) = settled {
            // Ready or failed before the await, or resolved while pending (already running).
            if task.pair.get() != PairState::Running {
                if let Err(error) = step(&task, PairState::Running, cell.created) {
                    violate(error);
                }
            }
            cell.resumed.set(true);
            task.pair_created.set(None);
            return Poll::Ready(outcome);
        }
        if cell.abandoned.get() {
            violate(ProtocolError::Abandoned {
                created: cell.created,
            });
        }
        if task.pair.get() != PairState::Pending {
            if let Err(error) = step(&task, PairState::Pending, cell.created) {
                violate(error);
            }
        }
        *cell.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}
