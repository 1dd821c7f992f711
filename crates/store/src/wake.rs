//! [`Wakeups`]: how a store tells idle workers that there may be work, so that they wait for
//! it instead of polling.
//!
//! It is a counter behind a `tokio::sync::watch`: every receiver sees that the counter moved
//! since it last looked, so a wake-up sent while a worker was busy is not lost. A wake-up is
//! a hint, never a claim: the worker still claims through the store, and a worker that misses
//! one (another process's, while its listener reconnects) finds the work at its next poll.

use std::sync::Arc;

use tokio::sync::watch;

/// The wake-up counter of one store (and, for a shared store, of every process on it).
#[derive(Debug, Clone)]
pub struct Wakeups(Arc<watch::Sender<u64>>);

impl Default for Wakeups {
    fn default() -> Self {
        Self::new()
    }
}

impl Wakeups {
    /// A counter at zero.
    #[must_use]
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }

    /// Tells every subscriber there may be work: a flow became ready or a timer was set.
    pub fn wake(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A receiver whose `changed()` completes after the next [`Wakeups::wake`].
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}
