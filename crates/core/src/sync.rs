//! Locks with one poisoning policy, for every crate of flowstate.
//!
//! **The policy:** a lock whose holder panicked is taken over as it is. Every critical section
//! in flowstate keeps the data it guards valid at each point where it can panic (no invariant
//! spans a call that may panic), so a panic is the holder's bug, reported where it happened,
//! and the rest of the process goes on with the data as the holder left it. No caller checks
//! for poisoning, and none may skip its work because of it (as `if let Ok(..) = lock()` would,
//! silently).
//!
//! **Must never:** be held across an `.await` (these are blocking locks; the guards are not
//! `Send`), or guard I/O.

use std::sync::PoisonError;

/// A mutual-exclusion lock under the policy above.
#[derive(Debug, Default)]
pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

/// A guard of [`Mutex`].
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    /// The guarded value, taken out of the lock.
    pub fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, waiting for the holder; a panicked holder's value is taken over.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reader-writer lock under the policy above.
#[derive(Debug, Default)]
pub struct RwLock<T: ?Sized>(std::sync::RwLock<T>);

/// A read guard of [`RwLock`].
pub type RwLockReadGuard<'a, T> = std::sync::RwLockReadGuard<'a, T>;

/// A write guard of [`RwLock`].
pub type RwLockWriteGuard<'a, T> = std::sync::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        Self(std::sync::RwLock::new(value))
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading; a panicked writer's value is taken over.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks for writing; a panicked holder's value is taken over.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_panicked_holder_leaves_the_value_to_the_next() {
        let lock = Arc::new(Mutex::new(1));
        let held = lock.clone();
        let panicked = std::thread::spawn(move || {
            let mut value = held.lock();
            *value = 2;
            panic!("the holder's bug");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(*lock.lock(), 2);
        let rw = Arc::new(RwLock::new(1));
        let held = rw.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.write();
            panic!("the writer's bug");
        })
        .join();
        *rw.write() += 1;
        assert_eq!(*rw.read(), 2);
    }
}
