//! [`Wakeups`]: how a store tells idle workers that there may be work, so that they wait for
//! it instead of polling.
//!
//! Two counters behind a `tokio::sync::watch`: one moves when a flow may have become
//! claimable, the other when a timer was set. Every receiver sees that a counter moved since
//! it last looked, so a wake-up sent while a worker was busy is not lost, and a worker looks
//! only for what changed (a submitted flow costs it a claim, not a timer query too). A wake-up
//! is a hint, never a claim: the worker still claims through the store, and a worker that
//! misses one (another process's, while its listener reconnects) finds the work at its next
//! poll.

use std::sync::Arc;

use tokio::sync::watch;

/// What may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeKind {
    /// A flow may have become claimable: its ready flag was set, or a release left it ready.
    Flows,
    /// A timer was set (or moved).
    Timers,
}

/// The two wake-up counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WakeCounts {
    /// Moves on [`WakeKind::Flows`].
    pub flows: u64,
    /// Moves on [`WakeKind::Timers`].
    pub timers: u64,
}

/// The wake-up counters of one store (and, for a shared store, of every process on it).
#[derive(Debug, Clone)]
pub struct Wakeups(Arc<watch::Sender<WakeCounts>>);

impl Default for Wakeups {
    fn default() -> Self {
        Self::new()
    }
}

impl Wakeups {
    /// Counters at zero.
    #[must_use]
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(WakeCounts::default())))
    }

    /// Tells every subscriber there may be work of this kind.
    pub fn wake(&self, kind: WakeKind) {
        self.0.send_modify(|counts| match kind {
            WakeKind::Flows => counts.flows = counts.flows.wrapping_add(1),
            WakeKind::Timers => counts.timers = counts.timers.wrapping_add(1),
        });
    }

    /// Tells every subscriber to look at everything (for instance after a listener
    /// reconnected and may have missed notifications).
    pub fn wake_all(&self) {
        // One change, so a subscriber never sees one counter moved and not the other.
        self.0.send_modify(|counts| {
            counts.flows = counts.flows.wrapping_add(1);
            counts.timers = counts.timers.wrapping_add(1);
        });
    }

    /// A receiver whose `changed()` completes after the next wake-up of either kind.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<WakeCounts> {
        self.0.subscribe()
    }
}
