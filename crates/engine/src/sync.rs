//! Locks with one poisoning policy: [`flowstate_core::sync`], named here for the front doors
//! (the stores, below the kernel, use it from `core`).

pub use flowstate_core::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
