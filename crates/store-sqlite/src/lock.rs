//! The process lock: an exclusive OS lock (`flock` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::try_lock`) on `STORE.lock`, a file next to the database, held by the one
//! engine process (a process that runs a worker) on the file for as long as it runs.
//!
//! Holding it proves that no other engine process works on the file, so at its start the
//! process may take over the leases a dead one left behind at once
//! ([`flowstate_store::Store::release_foreign_leases`]) instead of waiting for them to run
//! out; and a second engine process on the same file is refused
//! ([`StoreError::InUse`]) instead of running beside the first. Processes that run no worker
//! (inspection, `flows signal` and `flows cancel`) never take it: SQLite itself keeps their
//! writes safe. The operating system drops the lock when the process dies, however it dies;
//! the file itself stays (it holds nothing) and is reused.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use flowstate_store::StoreError;

/// What the lock file's name adds to the database's: `flows.db` is locked through
/// `flows.db.lock`.
pub const LOCK_SUFFIX: &str = ".lock";

/// The lock file of the store at `database`.
#[must_use]
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

/// Takes the process lock of the store at `database`, or says who has it.
pub(crate) fn acquire(database: &Path) -> Result<File, StoreError> {
    let path = lock_path(database);
    let io = |error: std::io::Error| StoreError::Io {
        message: format!("the process lock {}: {error}", path.display()),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
            location: database.display().to_string(),
            lock: path.display().to_string(),
        }),
        Err(TryLockError::Error(error)) => Err(io(error)),
    }
}
