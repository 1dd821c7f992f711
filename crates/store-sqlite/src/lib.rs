//! The embedded store: one SQLite file in WAL mode.
//!
//! **Write path.** Every change goes through one writer thread that owns the only read-write
//! connection. Callers send commands over a bounded queue and wait on a oneshot reply. The
//! writer takes every command that is queued (up to [`MAX_GROUP_COMMIT`]), runs them in one
//! transaction, each inside its own savepoint so that one refused command does not undo the
//! others, commits once (one fsync with `synchronous=FULL`), and only then replies. So no
//! caller is acknowledged before its write is durable, and a thousand flows appending at once
//! share one fsync instead of waiting for a thousand.
//!
//! **Fail-stop.** If a commit or a statement fails with an I/O-class error, the writer stops:
//! every later write is refused with [`StoreError::Poisoned`] until the store is reopened.
//! Guessing what reached the disk is how stores lose data.
//!
//! **Process lock.** An engine process (one that runs a worker) takes an exclusive OS lock
//! on `STORE.lock` next to the file for its life ([`SqliteStore::lock_process`], [`lock`]):
//! a second engine process on the file is refused, and the one that holds it may take over
//! a dead process's leases at once ([`Store::release_foreign_leases`]).
//!
//! **Read path.** Reads use a small pool of separate connections on blocking threads; in WAL
//! mode they never wait for the writer and see only committed data.

pub mod lock;
mod rows;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowstate_core::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::limits::MAX_READ_BATCH;
use flowstate_core::{Clock, FlowId, FlowKind, FlowStatus, RawEvent, Timestamp};
use flowstate_store::validate::{
    check_batch, check_lease, check_name, claim_window, validate_append, validate_compact,
};
use flowstate_store::{
    AppendBatch, AppendOutcome, Claim, DueTimer, FiredTimer, FlowPage, FlowQuery, FlowSummary,
    NewEvent, NewTimer, Release, Store, StoreError, StoreHealth, WakeCounts, WakeKind, Wakeups,
    WorkerId,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
use writer::Command;

/// Most commands one group commit takes from the queue.
pub const MAX_GROUP_COMMIT: usize = 4_096;

/// Most commands waiting for the writer; senders wait (backpressure) when it is full.
pub const WRITE_QUEUE_CAPACITY: usize = 16_384;

/// Most read connections kept open, and most reads at once: more wait their turn (on the
/// async side) rather than each taking a blocking thread and a connection of its own, which
/// under load costs more in thread and connection churn than the reads themselves.
pub const MAX_READ_CONNECTIONS: usize = 8;

/// SQLite's `synchronous` setting: how hard a commit pushes to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync the WAL on every commit: a commit survives power loss. The default.
    #[default]
    Full,
    /// fsync only at checkpoints: a commit survives a process crash but maybe not power loss.
    Normal,
    /// Never fsync: for throwaway data only.
    Off,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
            Self::Off => "OFF",
        }
    }
}

/// How to open a store file.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Create the file (and its schema) if missing. Read-only tools set this to `false`, so a
    /// mistyped path is an error instead of a new empty store.
    pub create: bool,
    /// Durability of each commit.
    pub synchronous: Synchronous,
    /// The writer connection's page cache ([`DEFAULT_CACHE_BYTES`]; clamped to
    /// [`MIN_CACHE_BYTES`]..=[`MAX_CACHE_BYTES`]). The operating system caches the file too;
    /// this only saves SQLite's own page lookups, and it is most of the store's memory.
    pub cache_bytes: usize,
}

/// The writer's page cache unless set: enough for the hot part of a busy store (the flows
/// index and recent logs), small enough that the process stays lean.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Smallest page cache the writer gets.
pub const MIN_CACHE_BYTES: usize = 1 << 20;

/// Largest page cache the writer gets.
pub const MAX_CACHE_BYTES: usize = 4 << 30;

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            create: true,
            synchronous: Synchronous::Full,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// A [`Store`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    commands: mpsc::Sender<Command>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    /// One permit per read in progress ([`MAX_READ_CONNECTIONS`]).
    read_slots: tokio::sync::Semaphore,
    closed: AtomicBool,
    wakeups: Wakeups,
    /// The process lock, once taken ([`SqliteStore::lock_process`]); dropped at close.
    process_lock: Mutex<Option<std::fs::File>>,
    /// Set by the writer thread when it stopped writing after an I/O error: the cause.
    poisoned: Arc<std::sync::OnceLock<String>>,
}

#[derive(Debug)]
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn with<T>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = op(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < MAX_READ_CONNECTIONS {
            idle.push(conn);
        }
        drop(idle);
        result
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let location = path.display().to_string();
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(e, &location))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| open_error(e, &location))?;
    Ok(conn)
}

/// Maps an error met while opening to what the user needs to know.
pub(crate) fn open_error(error: rusqlite::Error, location: &str) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::Foreign {
            location: location.to_owned(),
            detail: "not an SQLite database, or a corrupt one".into(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            detail: format!("{location}: {error}"),
        },
        _ => StoreError::Io {
            message: format!("{location}: {error}"),
        },
    }
}

/// Maps an error met while reading.
pub(crate) fn read_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            detail: error.to_string(),
        },
        _ => StoreError::Io {
            message: error.to_string(),
        },
    }
}

impl SqliteStore {
    /// Opens (or, with `options.create`, creates) the store at `path`.
    ///
    /// Refuses a missing file when `create` is false, a file that is not a flowstate store,
    /// a corrupt file, and a file written by a newer flowstate, each with its own error.
    pub fn open(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let location = path.display().to_string();
        if !options.create && !path.exists() {
            return Err(StoreError::Missing { location });
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if options.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn =
            Connection::open_with_flags(&path, flags).map_err(|e| open_error(e, &location))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| open_error(e, &location))?;
        match schema::inspect(&conn, &location)? {
            schema::FileState::Empty if !options.create => {
                return Err(StoreError::Foreign {
                    location,
                    detail: "an empty file".into(),
                })
            }
            schema::FileState::Empty => {
                set_pragmas(&conn, &options, &location)?;
                schema::create(&mut conn).map_err(|e| open_error(e, &location))?;
            }
            schema::FileState::Current => {
                set_pragmas(&conn, &options, &location)?;
                schema::migrate(&mut conn).map_err(|e| open_error(e, &location))?;
                schema::check_tables(&conn)?;
            }
        }
        schema::ensure_indexes(&conn).map_err(|e| open_error(e, &location))?;
        let (commands, queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let poisoned = Arc::new(std::sync::OnceLock::new());
        let stopped = poisoned.clone();
        let writer = std::thread::Builder::new()
            .name("flowstate-sqlite-writer".into())
            .spawn(move || writer::run(conn, queue, &stopped))
            .map_err(|e| StoreError::Io {
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            readers: Arc::new(ReaderPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            read_slots: tokio::sync::Semaphore::new(MAX_READ_CONNECTIONS),
            path,
            clock,
            commands,
            writer: Mutex::new(Some(writer)),
            closed: AtomicBool::new(false),
            wakeups: Wakeups::new(),
            process_lock: Mutex::new(None),
            poisoned,
        })
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the process lock ([`lock`]): this process is the engine process on the file
    /// until the store is closed or dropped. Refused with [`StoreError::InUse`] (naming the
    /// file and the lock) while another process holds it. Taking it twice is a no-op.
    pub fn lock_process(&self) -> Result<(), StoreError> {
        self.check_open()?;
        let mut held = self.process_lock.lock();
        if held.is_none() {
            *held = Some(lock::acquire(&self.path)?);
        }
        Ok(())
    }

    /// Whether this store holds the process lock.
    #[must_use]
    pub fn holds_process_lock(&self) -> bool {
        self.process_lock.lock().is_some()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Sends a command to the writer and waits for its durable outcome.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        self.check_open()?;
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.check_open()?;
        let _slot = self
            .read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(op))
            .await
            .map_err(|e| StoreError::Io {
                message: format!("read task failed: {e}"),
            })?
    }
}

fn set_pragmas(
    conn: &Connection,
    options: &SqliteOptions,
    location: &str,
) -> Result<(), StoreError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| open_error(e, location))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io {
            message: format!("{location}: cannot switch to WAL mode (got {mode})"),
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -{};",
        options.synchronous.pragma(),
        options.cache_bytes.clamp(MIN_CACHE_BYTES, MAX_CACHE_BYTES) / 1024
    ))
    .map_err(|e| open_error(e, location))
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Dropping the sender ends the writer loop after it drains the queue; wait for it so
        // the file is closed cleanly (and a reopen in the same process sees everything).
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.commands, closed_tx));
        if let Some(handle) = self.writer.lock().take() {
            let _joined = handle.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        validate_append(&batch)?;
        let now = self.clock.now();
        let wake_flows = batch.ready == Some(true);
        let wake_timers = !batch.timers.is_empty();
        let outcome = self
            .write(|reply| Command::Append { batch, now, reply })
            .await?;
        if wake_flows {
            self.wakeups.wake(WakeKind::Flows);
        }
        if wake_timers {
            self.wakeups.wake(WakeKind::Timers);
        }
        Ok(outcome)
    }

    async fn compact(
        &self,
        flow: FlowId,
        expected_next_seq: u64,
        events: Vec<NewEvent>,
        status: FlowStatus,
    ) -> Result<AppendOutcome, StoreError> {
        validate_compact(expected_next_seq, &events)?;
        // Neither the ready flag nor a timer changes: nothing to wake.
        self.write(|reply| Command::Compact {
            flow,
            expected_next_seq,
            events,
            status,
            reply,
        })
        .await
    }

    async fn read(
        &self,
        flow: FlowId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError> {
        check_batch("read limit", limit, MAX_READ_BATCH)?;
        self.read_with(move |conn| rows::read_events(conn, flow, from_seq, limit))
            .await
    }

    async fn flow(&self, flow: FlowId) -> Result<Option<FlowSummary>, StoreError> {
        self.read_with(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {} FROM flows WHERE id = ?1",
                rows::SUMMARY
            ))
            .and_then(|mut stmt| {
                stmt.query_row([flow.as_bytes()], rows::summary_row)
                    .optional()
            })
            .map_err(read_error)?
            .transpose()
        })
        .await
    }

    async fn list(&self, query: &FlowQuery) -> Result<FlowPage, StoreError> {
        let size = query.page_size()?;
        let query = query.clone();
        self.read_with(move |conn| rows::list(conn, &query, size))
            .await
    }

    async fn mark_ready(&self, flow: FlowId) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.write(|reply| Command::MarkReady { flow, now, reply })
            .await?;
        self.wakeups.wake(WakeKind::Flows);
        Ok(())
    }

    async fn claim(
        &self,
        worker: &WorkerId,
        kinds: &[FlowKind],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let (now, until) = claim_window("claim limit", limit, lease, self.clock.as_ref())?;
        let worker = worker.clone();
        let kinds = kinds.to_vec();
        self.write(|reply| Command::Claim {
            worker,
            kinds,
            limit,
            now,
            until,
            reply,
        })
        .await
    }

    async fn renew(
        &self,
        worker: &WorkerId,
        flows: &[FlowId],
        lease: Duration,
    ) -> Result<Vec<FlowId>, StoreError> {
        check_lease(lease)?;
        let until = self.clock.now().saturating_add(lease);
        let (worker, flows) = (worker.clone(), flows.to_vec());
        self.write(|reply| Command::Renew {
            worker,
            flows,
            until,
            reply,
        })
        .await
    }

    async fn release(
        &self,
        worker: &WorkerId,
        claim: &Claim,
        release: Release,
    ) -> Result<bool, StoreError> {
        let (worker, claim) = (worker.clone(), claim.clone());
        let still_ready = self
            .write(|reply| Command::Release {
                worker,
                claim,
                release,
                reply,
            })
            .await?;
        if still_ready == Some(true) {
            self.wakeups.wake(WakeKind::Flows);
        }
        Ok(still_ready.is_some())
    }

    async fn schedule_timer(&self, flow: FlowId, timer: NewTimer) -> Result<(), StoreError> {
        check_name("timer name", &timer.name)?;
        self.write(|reply| Command::ScheduleTimer { flow, timer, reply })
            .await?;
        self.wakeups.wake(WakeKind::Timers);
        Ok(())
    }

    async fn cancel_timer(&self, flow: FlowId, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(|reply| Command::CancelTimer { flow, name, reply })
            .await
    }

    async fn claim_due_timers(
        &self,
        worker: &WorkerId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let (now, until) = claim_window("timer claim limit", limit, lease, self.clock.as_ref())?;
        let worker = worker.clone();
        self.write(|reply| Command::ClaimTimers {
            worker,
            limit,
            now,
            until,
            reply,
        })
        .await
    }

    async fn fire_due_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, StoreError> {
        check_batch(
            "timer fire limit",
            limit,
            flowstate_core::limits::MAX_CLAIM_BATCH,
        )?;
        let now = self.clock.now();
        let fired = self
            .write(|reply| Command::FireTimers { limit, now, reply })
            .await?;
        if !fired.is_empty() {
            self.wakeups.wake(WakeKind::Flows);
        }
        Ok(fired)
    }

    async fn next_timer_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read_with(|conn| {
            // Free timers through the due index (first match); held ones are few (a claim is
            // completed within moments), so scanning for them is cheap.
            conn.query_row(
                "SELECT min(t) FROM (
                    SELECT * FROM (SELECT due AS t FROM timers WHERE lease_until IS NULL
                                   ORDER BY due LIMIT 1)
                    UNION ALL
                    SELECT max(due, lease_until) FROM timers WHERE lease_until IS NOT NULL)",
                [],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map(|due| due.map(Timestamp::from_micros))
            .map_err(read_error)
        })
        .await
    }

    async fn complete_timer(
        &self,
        worker: &WorkerId,
        timer: &DueTimer,
    ) -> Result<bool, StoreError> {
        let (worker, timer) = (worker.clone(), timer.clone());
        self.write(|reply| Command::CompleteTimer {
            worker,
            timer,
            reply,
        })
        .await
    }

    async fn delete_flow(&self, flow: FlowId) -> Result<bool, StoreError> {
        self.write(|reply| Command::DeleteFlow { flow, reply })
            .await
    }

    async fn release_foreign_leases(&self, worker: &WorkerId) -> Result<u64, StoreError> {
        if !self.holds_process_lock() {
            // Another engine process may be running on the file: its leases are live.
            return Ok(0);
        }
        let worker = worker.clone();
        let released = self
            .write(|reply| Command::ReleaseForeignLeases { worker, reply })
            .await?;
        if released > 0 {
            self.wakeups.wake(WakeKind::Flows);
            self.wakeups.wake(WakeKind::Timers);
        }
        Ok(released)
    }

    fn wakeups(&self) -> tokio::sync::watch::Receiver<WakeCounts> {
        self.wakeups.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        let result = self.write(|reply| Command::Close { reply }).await;
        self.closed.store(true, Ordering::Release);
        self.readers.idle.lock().clear();
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StoreError::Io {
                    message: format!("writer thread join failed: {e}"),
                })?
                .map_err(|_| StoreError::Io {
                    message: "the writer thread panicked".into(),
                })?;
        }
        // The file is closed: another engine process may have it now.
        drop(self.process_lock.lock().take());
        result
    }

    /// Closed, stopped after an I/O error (fail-stop: [`StoreError::Poisoned`]), or writing.
    /// A writer thread that ended without a close (it panicked) has stopped too.
    fn health(&self) -> StoreHealth {
        if self.closed.load(Ordering::Acquire) {
            return StoreHealth::Closed;
        }
        if let Some(cause) = self.poisoned.get() {
            return StoreHealth::Stopped {
                cause: cause.clone(),
            };
        }
        let ended = self
            .writer
            .lock()
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished);
        if ended {
            return StoreHealth::Stopped {
                cause: "the writer thread ended".into(),
            };
        }
        StoreHealth::Ok
    }
}
