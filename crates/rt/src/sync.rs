//! A channel and a mutex, as library code on completion pairs (after await-generator's
//! `Channel` and `Mutex`). Both are FIFO, and both skip waiters whose task is gone (aborted:
//! a race it lost), so a cancelled waiter never receives anything.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use crate::executor::spawn;
use crate::pair::{pair, Resolver};

struct ChannelState<T> {
    /// Senders waiting for a receiver, with their values.
    senders: VecDeque<(T, Resolver<()>)>,
    /// Receivers waiting for a value.
    receivers: VecDeque<Resolver<T>>,
}

/// An unbuffered FIFO channel: a send completes when a receiver takes the value.
pub struct Channel<T> {
    state: Rc<RefCell<ChannelState<T>>>,
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("senders", &self.senders_waiting())
            .field("receivers", &self.receivers_waiting())
            .finish()
    }
}

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Channel<T> {
    /// An empty channel.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Rc::new(RefCell::new(ChannelState {
                senders: VecDeque::new(),
                receivers: VecDeque::new(),
            })),
        }
    }

    /// Senders waiting (whose tasks are alive).
    #[must_use]
    pub fn senders_waiting(&self) -> usize {
        self.state
            .borrow()
            .senders
            .iter()
            .filter(|(_, r)| r.is_live())
            .count()
    }

    /// Receivers waiting (whose tasks are alive).
    #[must_use]
    pub fn receivers_waiting(&self) -> usize {
        self.state
            .borrow()
            .receivers
            .iter()
            .filter(|r| r.is_live())
            .count()
    }

    /// Hands `value` to the first live receiver, if any.
    pub fn try_send(&self, value: T) -> Result<(), T> {
        let receiver = {
            let mut state = self.state.borrow_mut();
            loop {
                match state.receivers.pop_front() {
                    Some(receiver) if receiver.is_live() => break Some(receiver),
                    Some(_) => continue,
                    None => break None,
                }
            }
        };
        match receiver {
            Some(receiver) => {
                // Live was checked just above, on this single thread: it cannot fail.
                let _ = receiver.resolve(value);
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Takes the first live sender's value, if any (that sender completes).
    pub fn try_receive(&self) -> Option<T> {
        let mut state = self.state.borrow_mut();
        loop {
            let (value, sender) = state.senders.pop_front()?;
            if sender.is_live() {
                drop(state);
                let _ = sender.resolve(());
                return Some(value);
            }
        }
    }

    /// Sends `value`, waiting until a receiver takes it.
    pub async fn send(&self, value: T) {
        let Err(value) = self.try_send(value) else {
            return;
        };
        let (resolver, once) = pair::<(), Infallible>();
        self.state.borrow_mut().senders.push_back((value, resolver));
        let _ = once.await;
    }

    /// Receives a value, waiting until a sender offers one.
    pub async fn receive(&self) -> T {
        if let Some(value) = self.try_receive() {
            return value;
        }
        let (resolver, once) = pair::<T, Infallible>();
        self.state.borrow_mut().receivers.push_back(resolver);
        match once.await {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

impl<T: 'static> Channel<T> {
    /// Sends `value` from a task of its own, so the caller does not wait.
    ///
    /// # Panics
    ///
    /// Outside a task of an await runtime.
    pub fn send_without_wait(&self, value: T) {
        let channel = self.clone();
        let _task = spawn(async move { channel.send(value).await });
    }
}

/// A FIFO mutex over a value: `lock` waits its turn, and dropping the guard hands the lock
/// straight to the next live waiter. Not reentrant: locking it again from the task that
/// holds it waits forever. A double release cannot happen (the guard is the release).
pub struct Mutex<T> {
    locked: Cell<bool>,
    /// Waiters, with a flag set when the lock is handed to them.
    waiters: RefCell<VecDeque<Waiter>>,
    value: RefCell<T>,
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("locked", &self.locked.get())
            .finish_non_exhaustive()
    }
}

impl<T> Mutex<T> {
    /// An unlocked mutex over `value`.
    pub fn new(value: T) -> Self {
        Self {
            locked: Cell::new(false),
            waiters: RefCell::new(VecDeque::new()),
            value: RefCell::new(value),
        }
    }

    /// Whether nobody holds it.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        !self.locked.get()
    }

    /// The lock, if nobody holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if self.locked.replace(true) {
            return None;
        }
        Some(MutexGuard {
            mutex: self,
            value: Some(self.value.borrow_mut()),
        })
    }

    /// Waits for the lock.
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        if self.locked.replace(true) {
            let (resolver, once) = pair::<(), Infallible>();
            let handed = Rc::new(Cell::new(false));
            self.waiters
                .borrow_mut()
                .push_back((resolver, handed.clone()));
            // If this waiter is aborted after the lock was handed to it but before it took
            // it, the lock passes on instead of staying locked forever.
            let mut waiting = Waiting {
                mutex: self,
                handed,
                armed: true,
            };
            // Ownership is handed over by the guard that releases it.
            let _ = once.await;
            waiting.armed = false;
        }
        // Only the lock's holder borrows the value, so this borrow never conflicts.
        MutexGuard {
            mutex: self,
            value: Some(self.value.borrow_mut()),
        }
    }

    fn release(&self) {
        loop {
            let next = self.waiters.borrow_mut().pop_front();
            match next {
                Some((waiter, handed)) if waiter.resolve(()).is_ok() => {
                    handed.set(true);
                    return;
                }
                Some(_) => continue,
                None => {
                    self.locked.set(false);
                    return;
                }
            }
        }
    }
}

/// A queued waiter: its resolver, and the flag set when the lock is handed to it.
type Waiter = (Resolver<()>, Rc<Cell<bool>>);

/// A waiter of [`Mutex::lock`], dropped only if the wait is abandoned.
struct Waiting<'a, T> {
    mutex: &'a Mutex<T>,
    handed: Rc<Cell<bool>>,
    /// Cleared once the waiter took the lock.
    armed: bool,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        if self.armed && self.handed.get() {
            // Handed the lock, never took it: pass it on.
            self.mutex.release();
        }
    }
}

/// Holds a [`Mutex`]; dropping it releases the lock (also on early return or panic).
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    /// `Some` until the guard is dropped: given back before the lock is handed on.
    value: Option<RefMut<'a, T>>,
}

impl<T> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard").finish_non_exhaustive()
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.value {
            Some(value) => value,
            None => unreachable!("the value is held until the guard is dropped"),
        }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.value {
            Some(value) => value,
            None => unreachable!("the value is held until the guard is dropped"),
        }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.value = None;
        self.mutex.release();
    }
}
