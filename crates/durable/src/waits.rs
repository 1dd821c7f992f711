//! Durable waits: what the branches of a run wait for (timers, signals, children), counted
//! for as long as each wait lasts.
//!
//! **What it owns:** the [`Waits`] of an activation, the guard that counts one wait while
//! it lives (also when its branch is aborted), and the thread's flag that a wait started.
//!
//! **What it must never do:** decide that the run sleeps or record anything: the driver
//! looks at the waits once every branch waits and nothing is in flight, and records them.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use flowstate_core::{FlowId, Timestamp};

use crate::activation::{Activation, Stop};

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
pub(crate) enum Wait {
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
pub(crate) struct WaitGuard {
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

impl Activation {
    /// Starts a durable wait, unless the activation was cancelled (then it stops for good).
    pub(crate) fn wait(self: &Rc<Self>, wait: Wait) -> Option<WaitGuard> {
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
}
