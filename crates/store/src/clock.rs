//! [`SystemClock`], the wall clock a store is given outside tests. Stores read time only
//! from the clock they are given (tests give a `ManualClock`), so leases and timers are exact.

use flowstate_core::{Clock, Timestamp};

/// The operating system's wall clock: the one impure [`Clock`], used outside tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
            });
        Timestamp::from_micros(micros)
    }
}
