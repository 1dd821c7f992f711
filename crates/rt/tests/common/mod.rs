//! The harness of the await-rt and await-generator suites: deferred calls flushed in
//! counted rounds, and the `okSync`/`errSync`/`okAsync`/`errAsync` helpers.

#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use flowstate_rt::{pair, Runtime, TaskFailure, TaskHandle};

type Calls = Rc<RefCell<Vec<Box<dyn FnOnce()>>>>;

/// Calls to make later, flushed in counted rounds (await-rt's `deferred` queue).
#[derive(Default, Clone)]
pub struct Deferred(Calls);

impl Deferred {
    pub fn later(&self, call: impl FnOnce() + 'static) {
        self.0.borrow_mut().push(Box::new(call));
    }

    /// Runs every queued call (and what they queue meanwhile waits for the next round),
    /// then the runtime's woken tasks.
    pub fn round(&self, rt: &Runtime) {
        let calls = std::mem::take(&mut *self.0.borrow_mut());
        for call in calls {
            call();
        }
        rt.run_until_stalled();
    }

    /// Flushes until nothing is queued; returns the number of rounds.
    pub fn flush(&self, rt: &Runtime) -> usize {
        let mut rounds = 0;
        while !self.0.borrow().is_empty() {
            self.round(rt);
            rounds += 1;
        }
        rounds
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oops(pub &'static str);

/// A value resolved at once (await-rt's `okSync`).
pub async fn ok_sync(value: u32) -> Result<u32, Oops> {
    let (resolver, once) = pair::<u32, Oops>();
    resolver.resolve(value).expect("first resolve");
    once.await
}

/// A rejection at once (`errSync`).
pub async fn err_sync(error: &'static str) -> Result<u32, Oops> {
    let (_resolver, mut once) = pair::<u32, Oops>();
    once.rejecter().reject(Oops(error)).expect("first reject");
    once.await
}

/// A value resolved in the next round (`okAsync`).
pub async fn ok_async(later: Deferred, value: u32) -> Result<u32, Oops> {
    let (resolver, once) = pair::<u32, Oops>();
    later.later(move || resolver.resolve(value).expect("resolve"));
    once.await
}

/// A rejection in the next round (`errAsync`).
pub async fn err_async(later: Deferred, error: &'static str) -> Result<u32, Oops> {
    let (_resolver, mut once) = pair::<u32, Oops>();
    let rejecter = once.rejecter();
    later.later(move || rejecter.reject(Oops(error)).expect("reject"));
    once.await
}

pub fn outcome<O: 'static>(task: &TaskHandle<O>) -> Result<O, TaskFailure> {
    task.take_outcome().expect("the task has finished")
}

type Sleepers = Rc<RefCell<Vec<(u32, flowstate_rt::Resolver<()>)>>>;

/// await-generator's `MockClock`: tasks sleep until a tick; the test advances ticks one by
/// one, and each tick wakes its sleepers and lets the runtime run them.
#[derive(Default, Clone)]
pub struct MockClock {
    now: Rc<std::cell::Cell<u32>>,
    sleepers: Sleepers,
}

impl MockClock {
    /// Suspends the calling task until tick `tick`.
    pub async fn sleep_until(&self, tick: u32) {
        let (resolver, once) = pair::<(), std::convert::Infallible>();
        self.sleepers.borrow_mut().push((tick, resolver));
        let _ = once.await;
    }

    /// The current tick.
    pub fn now(&self) -> u32 {
        self.now.get()
    }

    /// Advances to the next tick, wakes its sleepers and runs them.
    pub fn next_tick(&self, rt: &Runtime) {
        let tick = self.now.get() + 1;
        self.now.set(tick);
        let due: Vec<_> = {
            let mut sleepers = self.sleepers.borrow_mut();
            let (due, rest) = sleepers.drain(..).partition(|(at, _)| *at <= tick);
            *sleepers = rest;
            due
        };
        for (_, resolver) in due {
            let _ = resolver.resolve(());
        }
        rt.run_until_stalled();
    }
}

/// Counts live guards: +1 when made, −1 when dropped (a task's cleanup).
#[derive(Default, Clone)]
pub struct Cleanup(pub Rc<std::cell::Cell<i32>>);

pub struct Guard(Rc<std::cell::Cell<i32>>);

impl Cleanup {
    pub fn guard(&self) -> Guard {
        self.0.set(self.0.get() + 1);
        Guard(self.0.clone())
    }

    pub fn live(&self) -> i32 {
        self.0.get()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}
