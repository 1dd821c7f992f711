//! The PostgreSQL store: several engine processes, on several machines, share one database.
//!
//! Every operation is one short statement or transaction on a pooled connection, prepared
//! once per connection; appends are group-committed (`group.rs`), and reads of logs and
//! releases of leases are batched the same way (`batched.rs`), so that many flows a second
//! cost few statements. Appends lock the flows' rows (`FOR UPDATE`) and check the
//! expected sequence number, so two processes advancing one flow never both succeed: the
//! loser gets [`StoreError::Conflict`]. Claims of ready flows and
//! due timers use `FOR UPDATE SKIP LOCKED`, so claimers never wait on each other and never
//! take the same flow. All times come from the injected clock, as in every store.
//!
//! Wake-ups cross processes with `LISTEN/NOTIFY` (see `wake.rs`).

mod batch;
mod batched;
mod group;
mod schema;
#[doc(hidden)]
pub mod testing;
mod wake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowstate_core::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use flowstate_core::limits::MAX_READ_BATCH;
use flowstate_core::{Clock, FlowId, FlowKind, FlowStatus, RawEvent, Timestamp};
use flowstate_store::validate::{
    check_batch, check_lease, check_log_room, check_name, check_status_kind, claim_window,
    validate_append, validate_compact,
};
use flowstate_store::{
    AppendBatch, AppendOutcome, Claim, DueTimer, FiredTimer, FlowPage, FlowQuery, FlowSummary,
    IdempotencyKey, NewEvent, NewTimer, Release, Store, StoreError, StoreHealth, WakeCounts,
    WakeKind, Wakeups, WorkerId, KEY_PURGE_BATCH,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

pub use schema::SCHEMA_VERSION;
pub use wake::CHANNEL as WAKE_CHANNEL;
use wake::{WakeChannel, Wakes};

/// Connections kept by one store.
pub const POOL_SIZE: usize = 16;

/// Maps a PostgreSQL error.
pub(crate) fn pg_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::Io {
        message: match error.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => error.to_string(),
        },
    }
}

/// A batch task dropped a call without answering (it panicked): an I/O-class failure of
/// this call, not a closed store.
fn batcher_gone(what: &str) -> StoreError {
    StoreError::Io {
        message: format!("the {what} batcher stopped without answering"),
    }
}

fn pool_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        message: format!("PostgreSQL connection pool: {error}"),
    }
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { detail }
}

fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative {what} {value}")))
}

fn signed(value: u64) -> i64 {
    // Sequence numbers and counters stay far below i64::MAX (limits::MAX_EVENTS_PER_FLOW).
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn flow_id(uuid: uuid::Uuid) -> Result<FlowId, StoreError> {
    FlowId::try_from(uuid).map_err(|e| corrupt(e.to_string()))
}

fn uuid_of(flow: FlowId) -> uuid::Uuid {
    *flow.as_uuid()
}

/// A [`Store`] in a PostgreSQL database (in one schema of it).
pub struct PostgresStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
    /// The group committers' queue.
    appends: tokio::sync::mpsc::Sender<group::Pending>,
    wake: Arc<WakeChannel>,
    wakeups: Wakeups,
    /// The session that LISTENs, started with the first call to [`Store::wakeups`] (tools
    /// that only read never open it), and stopped when the store is closed or dropped.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    config: tokio_postgres::Config,
    commits: Arc<group::Counters>,
    reads: tokio::sync::mpsc::Sender<batched::ReadCall>,
    releases: tokio::sync::mpsc::Sender<batched::ReleaseCall>,
}

/// Group-commit counters of one store (see [`PostgresStore::commit_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommitStats {
    /// Groups taken by the committers (a transaction each).
    pub groups: u64,
    /// Appends in them.
    pub appends: u64,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop_listener();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

const SUMMARY: &str =
    "id, kind, definition, status, created_at, updated_at, next_seq, bytes, ready";

fn summary(row: &Row) -> Result<FlowSummary, StoreError> {
    let kind: String = row.get(1);
    let kind = FlowKind::parse(&kind).ok_or_else(|| corrupt(format!("flow kind {kind:?}")))?;
    let status: String = row.get(3);
    let status = FlowStatus::parse(kind, &status)
        .ok_or_else(|| corrupt(format!("status {status:?} of a {kind} flow")))?;
    Ok(FlowSummary {
        id: flow_id(row.get(0))?,
        kind,
        definition: row.get(2),
        status,
        created_at: Timestamp::from_micros(row.get(4)),
        updated_at: Timestamp::from_micros(row.get(5)),
        next_seq: unsigned(row.get(6), "next_seq")?,
        bytes: unsigned(row.get(7), "byte count")?,
        ready: row.get(8),
    })
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL), optionally inside `schema` (created if
    /// missing), and migrates the schema. Refuses a schema written by a newer flowstate.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open(url, schema, clock, true).await
    }

    /// Like [`PostgresStore::connect`]; without `create`, a database (or schema) that holds
    /// no flowstate store is refused with [`StoreError::Missing`] rather than initialised.
    pub async fn open(
        url: &str,
        schema: Option<&str>,
        clock: Arc<dyn Clock>,
        create: bool,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Io {
            message: format!("{url} is not a PostgreSQL URL: {e}"),
        })?;
        if let Some(schema) = schema {
            check_schema_name(schema)?;
            let (client, connection) = config.connect(NoTls).await.map_err(pg_error)?;
            let driver = tokio::spawn(connection);
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(pg_error)?;
            drop(client);
            let _ = driver.await;
            config.options(format!("-c search_path={schema}"));
        }
        config.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(pool_error)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        let location = match schema {
            Some(schema) => format!("{} (schema {schema})", redact(url)),
            None => redact(url),
        };
        schema::migrate(&mut client, create, &location).await?;
        drop(client);
        let wakeups = Wakeups::new();
        let wake = Arc::new(WakeChannel::new(
            schema.unwrap_or("public").to_owned(),
            wakeups.clone(),
        ));
        let commits = Arc::new(group::Counters::default());
        let appends = group::start(pool.clone(), wake.clone(), commits.clone());
        let reads = batched::start_reads(pool.clone());
        let releases = batched::start_releases(pool.clone(), wake.clone());
        Ok(Self {
            pool,
            clock,
            closed: AtomicBool::new(false),
            appends,
            wake,
            wakeups,
            listener: Mutex::new(None),
            config,
            commits,
            reads,
            releases,
        })
    }

    /// How well group commit is batching: appends committed and groups they were taken in.
    #[must_use]
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            groups: self.commits.groups.load(Ordering::Relaxed),
            appends: self.commits.appends.load(Ordering::Relaxed),
        }
    }

    fn stop_listener(&self) {
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(pool_error)
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Schema names are spliced into SQL, so only plain identifiers are accepted.
fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        Ok(())
    } else {
        Err(StoreError::Io {
            message: format!(
                "schema name {schema:?} must be a lowercase identifier of at most 63 characters"
            ),
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        validate_append(&batch)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let now = self.clock.now();
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.appends
            .send(group::Pending { batch, now, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| batcher_gone("append"))?
    }

    async fn compact(
        &self,
        flow: FlowId,
        expected_next_seq: u64,
        events: Vec<NewEvent>,
        status: FlowStatus,
    ) -> Result<AppendOutcome, StoreError> {
        validate_compact(expected_next_seq, &events)?;
        let mut client = self.client().await?;
        compact_one(&mut client, flow, expected_next_seq, events, status).await
    }

    async fn read(
        &self,
        flow: FlowId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError> {
        check_batch("read limit", limit, MAX_READ_BATCH)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, result) = tokio::sync::oneshot::channel();
        let call = batched::ReadCall {
            flow,
            from_seq,
            limit,
            reply,
        };
        self.reads
            .send(call)
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| batcher_gone("read"))?
    }

    async fn flow(&self, flow: FlowId) -> Result<Option<FlowSummary>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!("SELECT {SUMMARY} FROM flows WHERE id = $1"))
                    .await
                    .map_err(pg_error)?,
                &[&uuid_of(flow)],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(summary).transpose()
    }

    async fn list(&self, query: &FlowQuery) -> Result<FlowPage, StoreError> {
        let size = query.page_size()?;
        let mut sql = format!("SELECT {SUMMARY} FROM flows WHERE TRUE");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut filter = |clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            sql.push_str(&format!(" AND {clause} ${}", params.len()));
        };
        if let Some(kind) = query.kind {
            filter("kind =", Box::new(kind.key().to_owned()));
        }
        if let Some(definition) = &query.definition {
            filter("definition =", Box::new(definition.clone()));
        }
        if let Some(status) = &query.status {
            filter("status =", Box::new(status.clone()));
        }
        if let Some(from) = query.created_from {
            filter("created_at >=", Box::new(from.as_micros()));
        }
        if let Some(before) = query.created_before {
            filter("created_at <", Box::new(before.as_micros()));
        }
        if let Some(after) = query.after {
            filter("id >", Box::new(uuid_of(after)));
        }
        params.push(Box::new(signed(size as u64 + 1)));
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&sql, &refs).await.map_err(pg_error)?;
        let mut flows = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
        let next_after = (flows.len() > size).then(|| {
            flows.truncate(size);
            flows[size - 1].id
        });
        Ok(FlowPage { flows, next_after })
    }

    async fn mark_ready(&self, flow: FlowId) -> Result<(), StoreError> {
        let now = self.clock.now().as_micros();
        let client = self.client().await?;
        let changed = client
            .execute(
                &client.prepare_cached("UPDATE flows SET ready_since = CASE WHEN ready THEN ready_since ELSE $2 END,
                                  ready = TRUE, wake = wake + 1
                 WHERE id = $1").await.map_err(pg_error)?,
                &[&uuid_of(flow), &now],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(StoreError::UnknownFlow { flow });
        }
        self.wake.notify_now(&client, WakeKind::Flows).await;
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
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "WITH picked AS (
                    SELECT flow_no FROM flows
                    WHERE ready AND (lease_until IS NULL OR lease_until <= $1)
                      AND kind = ANY($5)
                    ORDER BY ready_since, flow_no LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                 UPDATE flows f SET lease_owner = $3, lease_until = $4
                 FROM picked WHERE f.flow_no = picked.flow_no
                 RETURNING f.id, f.next_seq, f.wake, f.ready_since, f.flow_no, f.kind",
                    )
                    .await
                    .map_err(pg_error)?,
                &[
                    &now.as_micros(),
                    &signed(limit as u64),
                    &worker.as_str(),
                    &until.as_micros(),
                    &kinds.iter().map(|k| k.key()).collect::<Vec<&str>>(),
                ],
            )
            .await
            .map_err(pg_error)?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok((
                    (row.get::<_, i64>(3), row.get::<_, i64>(4)),
                    Claim {
                        flow: flow_id(row.get(0))?,
                        kind: {
                            let kind: String = row.get(5);
                            FlowKind::parse(&kind)
                                .ok_or_else(|| corrupt(format!("flow kind {kind:?}")))?
                        },
                        next_seq: unsigned(row.get(1), "next_seq")?,
                        lease_until: until,
                        wake: unsigned(row.get(2), "wake count")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|(order, _)| *order);
        Ok(claimed.into_iter().map(|(_, claim)| claim).collect())
    }

    async fn renew(
        &self,
        worker: &WorkerId,
        flows: &[FlowId],
        lease: Duration,
    ) -> Result<Vec<FlowId>, StoreError> {
        check_lease(lease)?;
        let until = self.clock.now().saturating_add(lease).as_micros();
        let ids: Vec<uuid::Uuid> = flows.iter().copied().map(uuid_of).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                // Rows are locked in id order, as group commits lock them: in any other order a
                // renewal and a group commit can deadlock (PostgreSQL breaks the tie after
                // deadlock_timeout, by which time the lease may have run out).
                "UPDATE flows SET lease_until = $3 WHERE flow_no IN (
                    SELECT flow_no FROM flows WHERE id = ANY($1) AND lease_owner = $2
                    ORDER BY id FOR UPDATE)
                 RETURNING id",
                &[&ids, &worker.as_str(), &until],
            )
            .await
            .map_err(pg_error)?;
        let renewed: std::collections::HashSet<FlowId> = rows
            .iter()
            .map(|row| flow_id(row.get(0)))
            .collect::<Result<_, _>>()?;
        Ok(flows
            .iter()
            .copied()
            .filter(|f| renewed.contains(f))
            .collect())
    }

    async fn release(
        &self,
        worker: &WorkerId,
        claim: &Claim,
        release: Release,
    ) -> Result<bool, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, result) = tokio::sync::oneshot::channel();
        let call = batched::ReleaseCall {
            worker: worker.clone(),
            claim: claim.clone(),
            release,
            reply,
        };
        self.releases
            .send(call)
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| batcher_gone("release"))?
    }

    async fn schedule_timer(&self, flow: FlowId, timer: NewTimer) -> Result<(), StoreError> {
        check_name("timer name", &timer.name)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached("SELECT flow_no FROM flows WHERE id = $1")
                    .await
                    .map_err(pg_error)?,
                &[&uuid_of(flow)],
            )
            .await
            .map_err(pg_error)?
        else {
            return Err(StoreError::UnknownFlow { flow });
        };
        upsert_timer(&tx, row.get(0), &timer).await?;
        self.wake.notify(&tx, WakeKind::Timers).await?;
        tx.commit().await.map_err(pg_error)?;
        self.wake.wake_here(WakeKind::Timers);
        Ok(())
    }

    async fn cancel_timer(&self, flow: FlowId, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                &client
                    .prepare_cached(
                        "DELETE FROM timers WHERE name = $2
                 AND flow_no = (SELECT flow_no FROM flows WHERE id = $1)",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&uuid_of(flow), &name],
            )
            .await
            .map_err(pg_error)?;
        Ok(deleted == 1)
    }

    async fn claim_due_timers(
        &self,
        worker: &WorkerId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let (now, until) = claim_window("timer claim limit", limit, lease, self.clock.as_ref())?;
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "WITH picked AS (
                    SELECT flow_no, name FROM timers
                    WHERE due <= $1 AND (lease_until IS NULL OR lease_until <= $1)
                    ORDER BY due, flow_no, name LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                 UPDATE timers t SET lease_owner = $3, lease_until = $4
                 FROM picked WHERE t.flow_no = picked.flow_no AND t.name = picked.name
                 RETURNING (SELECT id FROM flows WHERE flows.flow_no = t.flow_no), t.name, t.due",
                    )
                    .await
                    .map_err(pg_error)?,
                &[
                    &now.as_micros(),
                    &signed(limit as u64),
                    &worker.as_str(),
                    &until.as_micros(),
                ],
            )
            .await
            .map_err(pg_error)?;
        let mut timers = rows
            .iter()
            .map(|row| {
                Ok(DueTimer {
                    flow: flow_id(row.get(0))?,
                    name: row.get(1),
                    due: Timestamp::from_micros(row.get(2)),
                    lease_until: until,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        timers.sort_by(|a, b| (a.due, a.flow, &a.name).cmp(&(b.due, b.flow, &b.name)));
        Ok(timers)
    }

    async fn fire_due_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, StoreError> {
        check_batch(
            "timer fire limit",
            limit,
            flowstate_core::limits::MAX_CLAIM_BATCH,
        )?;
        let now = self.clock.now().as_micros();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The due timers nobody holds, skipping those another process is firing right now.
        let due = tx
            .query(
                &tx.prepare_cached(
                    "SELECT t.flow_no, t.name, t.due FROM timers t
                     WHERE t.due <= $1 AND (t.lease_until IS NULL OR t.lease_until <= $1)
                     ORDER BY t.due, t.flow_no, t.name LIMIT $2
                     FOR UPDATE SKIP LOCKED",
                )
                .await
                .map_err(pg_error)?,
                &[&now, &signed(limit as u64)],
            )
            .await
            .map_err(pg_error)?;
        if due.is_empty() {
            tx.rollback().await.map_err(pg_error)?;
            return Ok(Vec::new());
        }
        let flow_nos: Vec<i64> = due.iter().map(|row| row.get(0)).collect();
        let names: Vec<String> = due.iter().map(|row| row.get(1)).collect();
        // Their flows, locked in id order like every multi-row lock (no deadlock with group
        // commits), then marked ready.
        let flows = tx
            .query(
                &tx.prepare_cached(
                    "WITH locked AS (
                         SELECT flow_no FROM flows WHERE flow_no = ANY($1) ORDER BY id FOR UPDATE)
                     UPDATE flows f SET
                         ready_since = CASE WHEN f.ready THEN f.ready_since ELSE $2 END,
                         ready = TRUE, wake = f.wake + 1
                     FROM locked WHERE f.flow_no = locked.flow_no
                     RETURNING f.flow_no, f.id",
                )
                .await
                .map_err(pg_error)?,
                &[&flow_nos, &now],
            )
            .await
            .map_err(pg_error)?;
        let ids: std::collections::HashMap<i64, uuid::Uuid> =
            flows.iter().map(|row| (row.get(0), row.get(1))).collect();
        tx.execute(
            &tx.prepare_cached(
                "DELETE FROM timers t USING UNNEST($1::BIGINT[], $2::TEXT[]) AS d(flow_no, name)
                 WHERE t.flow_no = d.flow_no AND t.name = d.name",
            )
            .await
            .map_err(pg_error)?,
            &[&flow_nos, &names],
        )
        .await
        .map_err(pg_error)?;
        self.wake.notify(&tx, WakeKind::Flows).await?;
        tx.commit().await.map_err(pg_error)?;
        self.wake.wake_here(WakeKind::Flows);
        due.iter()
            .filter_map(|row| {
                let id = ids.get(&row.get::<_, i64>(0))?;
                Some(flow_id(*id).map(|flow| FiredTimer {
                    flow,
                    name: row.get(1),
                    due: Timestamp::from_micros(row.get(2)),
                }))
            })
            .collect()
    }

    async fn next_timer_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        // Both halves are served by an index (see migration 2): the first free timer in due
        // order, and the earliest lease end among held ones (a timer is claimed only once it
        // is due, so a held timer's lease always ends after its due time).
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT least(
                    (SELECT due FROM timers WHERE lease_until IS NULL ORDER BY due LIMIT 1),
                    (SELECT lease_until FROM timers WHERE lease_until IS NOT NULL
                     ORDER BY lease_until LIMIT 1))",
                    )
                    .await
                    .map_err(pg_error)?,
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get::<_, Option<i64>>(0).map(Timestamp::from_micros))
    }

    async fn complete_timer(
        &self,
        worker: &WorkerId,
        timer: &DueTimer,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                &client
                    .prepare_cached(
                        "DELETE FROM timers WHERE name = $2 AND due = $3 AND lease_owner = $4
                 AND flow_no = (SELECT flow_no FROM flows WHERE id = $1)",
                    )
                    .await
                    .map_err(pg_error)?,
                &[
                    &uuid_of(timer.flow),
                    &timer.name,
                    &timer.due.as_micros(),
                    &worker.as_str(),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(deleted == 1)
    }

    async fn delete_flow(&self, flow: FlowId) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached("DELETE FROM flows WHERE id = $1 RETURNING flow_no")
                    .await
                    .map_err(pg_error)?,
                &[&uuid_of(flow)],
            )
            .await
            .map_err(pg_error)?
        else {
            return Ok(false);
        };
        let flow_no: i64 = row.get(0);
        tx.execute(
            &tx.prepare_cached("DELETE FROM events WHERE flow_no = $1")
                .await
                .map_err(pg_error)?,
            &[&flow_no],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM timers WHERE flow_no = $1")
                .await
                .map_err(pg_error)?,
            &[&flow_no],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    fn wakeups(&self) -> tokio::sync::watch::Receiver<WakeCounts> {
        {
            let mut listener = self.listener.lock();
            let runtime = tokio::runtime::Handle::try_current();
            if let (None, Ok(runtime)) = (listener.as_ref(), runtime) {
                if !self.closed.load(Ordering::Acquire) {
                    *listener = Some(runtime.spawn(self.wake.clone().listen(self.config.clone())));
                }
            }
        }
        self.wakeups.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Closed);
        }
        self.stop_listener();
        self.pool.close();
        Ok(())
    }

    /// Closed, or whether the last group commit could get a connection (its last known
    /// state: no round trip).
    fn health(&self) -> StoreHealth {
        if self.closed.load(Ordering::Acquire) {
            return StoreHealth::Closed;
        }
        match self.commits.unreachable.lock().clone() {
            Some(cause) => StoreHealth::Unreachable { cause },
            None => StoreHealth::Ok,
        }
    }
}

async fn upsert_timer(
    tx: &deadpool_postgres::Transaction<'_>,
    flow_no: i64,
    timer: &NewTimer,
) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO timers (flow_no, name, due, lease_owner, lease_until)
         VALUES ($1, $2, $3, NULL, NULL)
         ON CONFLICT (flow_no, name)
         DO UPDATE SET due = excluded.due, lease_owner = NULL, lease_until = NULL",
        )
        .await
        .map_err(pg_error)?,
        &[&flow_no, &timer.name, &timer.due.as_micros()],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Replaces a flow's whole log (see [`Store::compact`]) in one transaction: deletes its
/// events (all before `expected_next_seq`) and inserts the new ones numbered from
/// `expected_next_seq`, so the next sequence number never goes down. The flow's row is
/// locked (`FOR UPDATE`) before its next sequence number is checked, as every append does
/// (group commits too), so a compaction and an append of the same flow are serialized by
/// that lock and the later one sees the earlier one's sequence number: one of them gets
/// [`StoreError::Conflict`] unless the second really expects the first's outcome. Nothing is
/// written before every check passed.
async fn compact_one(
    client: &mut deadpool_postgres::Object,
    flow: FlowId,
    expected_next_seq: u64,
    events: Vec<NewEvent>,
    status: FlowStatus,
) -> Result<AppendOutcome, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT flow_no, next_seq, kind FROM flows WHERE id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg_error)?,
            &[&uuid_of(flow)],
        )
        .await
        .map_err(pg_error)?;
    let checked = row.ok_or(StoreError::UnknownFlow { flow }).and_then(|row| {
        let actual = unsigned(row.get(1), "next_seq")?;
        if actual != expected_next_seq {
            return Err(StoreError::Conflict {
                flow,
                expected: expected_next_seq,
                actual,
            });
        }
        let kind: String = row.get(2);
        let kind = FlowKind::parse(&kind).ok_or_else(|| corrupt(format!("flow kind {kind:?}")))?;
        check_status_kind(kind, status)?;
        check_log_room(expected_next_seq, events.len())?;
        Ok(row.get::<_, i64>(0))
    });
    let flow_no = match checked {
        Ok(flow_no) => flow_no,
        Err(refusal) => {
            // Roll back now rather than leave a pooled connection idle in a transaction.
            tx.rollback().await.map_err(pg_error)?;
            return Err(refusal);
        }
    };
    tx.execute(
        &tx.prepare_cached("DELETE FROM events WHERE flow_no = $1 AND seq < $2")
            .await
            .map_err(pg_error)?,
        &[&flow_no, &signed(expected_next_seq)],
    )
    .await
    .map_err(pg_error)?;
    let count = events.len();
    let last_time = events[count - 1].time.as_micros();
    let seqs: Vec<i64> = (expected_next_seq..expected_next_seq + count as u64)
        .map(signed)
        .collect();
    let times: Vec<i64> = events.iter().map(|e| e.time.as_micros()).collect();
    let formats: Vec<i16> = events
        .iter()
        .map(|e| i16::try_from(e.format).unwrap_or(i16::MAX))
        .collect();
    let bytes: i64 = events.iter().map(|e| signed(e.body.len() as u64)).sum();
    let bodies: Vec<Vec<u8>> = events.into_iter().map(|e| e.body).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO events (flow_no, seq, time, format, body)
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::SMALLINT[], $5::BYTEA[])",
        )
        .await
        .map_err(pg_error)?,
        &[&flow_no, &seqs, &times, &formats, &bodies],
    )
    .await
    .map_err(pg_error)?;
    let next_seq = expected_next_seq + count as u64;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE flows SET next_seq = $2, updated_at = $3, bytes = $4, status = $5
             WHERE flow_no = $1",
        )
        .await
        .map_err(pg_error)?,
        &[
            &flow_no,
            &signed(next_seq),
            &last_time,
            &bytes,
            &status.key(),
        ],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(AppendOutcome {
        first_seq: expected_next_seq,
        next_seq,
    })
}

/// One append in its own transaction (a lone append, or a group that fell back).
/// Records `key` for the flow `id` (replacing an expired row of the key) after purging up
/// to [`KEY_PURGE_BATCH`] expired keys, or refuses with [`StoreError::KeyTaken`] if the key
/// is live (the caller's transaction is then dropped, rolling back).
async fn claim_key(
    tx: &deadpool_postgres::Transaction<'_>,
    id: uuid::Uuid,
    key: &IdempotencyKey,
    now: Timestamp,
) -> Result<(), StoreError> {
    let limit = i64::try_from(KEY_PURGE_BATCH).unwrap_or(i64::MAX);
    tx.execute(
        &tx.prepare_cached(
            "DELETE FROM idempotency_keys WHERE key IN
               (SELECT key FROM idempotency_keys WHERE expires_at <= $1 AND key <> $3
                ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .await
        .map_err(pg_error)?,
        &[&now.as_micros(), &limit, &key.key],
    )
    .await
    .map_err(pg_error)?;
    let claimed = tx
        .query_opt(
            &tx.prepare_cached(
                "INSERT INTO idempotency_keys (key, flow, fingerprint, expires_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET flow = excluded.flow,
                     fingerprint = excluded.fingerprint, expires_at = excluded.expires_at
                 WHERE idempotency_keys.expires_at <= $5
                 RETURNING key",
            )
            .await
            .map_err(pg_error)?,
            &[
                &key.key,
                &id,
                &key.fingerprint,
                &key.expires_at.as_micros(),
                &now.as_micros(),
            ],
        )
        .await
        .map_err(pg_error)?;
    if claimed.is_some() {
        return Ok(());
    }
    let row = tx
        .query_one(
            &tx.prepare_cached("SELECT flow, fingerprint FROM idempotency_keys WHERE key = $1")
                .await
                .map_err(pg_error)?,
            &[&key.key],
        )
        .await
        .map_err(pg_error)?;
    Err(StoreError::KeyTaken {
        key: key.key.clone(),
        flow: flow_id(row.get(0))?,
        fingerprint: row.get(1),
    })
}

pub(crate) async fn append_one(
    client: &mut deadpool_postgres::Object,
    wake: &WakeChannel,
    batch: AppendBatch,
    now: Timestamp,
) -> Result<AppendOutcome, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let id = uuid_of(batch.flow);
    if let Some(key) = batch.create.as_ref().and_then(|c| c.idempotency.as_ref()) {
        // First, so that a live key is reported whether or not its flow exists; the key's
        // row stays locked until this transaction ends, so concurrent starts with one key
        // are decided one after the other.
        claim_key(&tx, id, key, now).await?;
    }
    let existing = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT flow_no, next_seq, kind FROM flows WHERE id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg_error)?,
            &[&id],
        )
        .await
        .map_err(pg_error)?;
    let first_time = batch.events[0].time.as_micros();
    let last_time = batch.events[batch.events.len() - 1].time.as_micros();
    let (flow_no, actual) = match (existing, &batch.create) {
        (Some(row), _) => {
            let actual = unsigned(row.get(1), "next_seq")?;
            if actual != batch.expected_next_seq {
                return Err(StoreError::Conflict {
                    flow: batch.flow,
                    expected: batch.expected_next_seq,
                    actual,
                });
            }
            let kind: String = row.get(2);
            let kind =
                FlowKind::parse(&kind).ok_or_else(|| corrupt(format!("flow kind {kind:?}")))?;
            if let Some(status) = batch.status {
                check_status_kind(kind, status)?;
            }
            (row.get::<_, i64>(0), actual)
        }
        (None, Some(create)) => {
            let status = batch
                .status
                .unwrap_or_else(|| FlowStatus::initial(create.kind));
            check_status_kind(create.kind, status)?;
            let inserted = tx
                .query_opt(
                    &tx.prepare_cached(
                        "INSERT INTO flows (id, kind, definition, status, created_at, updated_at,
                                            next_seq, bytes, ready, ready_since, wake)
                         VALUES ($1, $2, $3, $4, $5, $5, 1, 0, FALSE, $6, 0)
                         ON CONFLICT (id) DO NOTHING RETURNING flow_no",
                    )
                    .await
                    .map_err(pg_error)?,
                    &[
                        &id,
                        &create.kind.key(),
                        &create.definition,
                        &status.key(),
                        &first_time,
                        &now.as_micros(),
                    ],
                )
                .await
                .map_err(pg_error)?;
            let Some(row) = inserted else {
                // Another process created it between our lookup and our insert.
                return Err(StoreError::Conflict {
                    flow: batch.flow,
                    expected: 1,
                    actual: 2,
                });
            };
            (row.get::<_, i64>(0), 1)
        }
        (None, None) => return Err(StoreError::UnknownFlow { flow: batch.flow }),
    };
    check_log_room(actual, batch.events.len())?;
    let count = batch.events.len();
    let seqs: Vec<i64> = (0..count).map(|i| signed(actual + i as u64)).collect();
    let times: Vec<i64> = batch.events.iter().map(|e| e.time.as_micros()).collect();
    let formats: Vec<i16> = batch
        .events
        .iter()
        .map(|e| i16::try_from(e.format).unwrap_or(i16::MAX))
        .collect();
    let bytes: i64 = batch
        .events
        .iter()
        .map(|e| signed(e.body.len() as u64))
        .sum();
    let wakes = Wakes::of(&batch);
    let bodies: Vec<Vec<u8>> = batch.events.into_iter().map(|e| e.body).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO events (flow_no, seq, time, format, body)
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::SMALLINT[], $5::BYTEA[])",
        )
        .await
        .map_err(pg_error)?,
        &[&flow_no, &seqs, &times, &formats, &bodies],
    )
    .await
    .map_err(pg_error)?;
    let next_seq = actual + count as u64;
    let status = batch.status.map(|s| s.key());
    tx.execute(
            &tx.prepare_cached("UPDATE flows SET
                next_seq = $2, updated_at = $3, bytes = bytes + $4, status = coalesce($5, status),
                ready_since = CASE WHEN $6::BOOLEAN IS TRUE AND NOT ready THEN $7 ELSE ready_since END,
                wake = CASE WHEN $6::BOOLEAN IS TRUE THEN wake + 1 ELSE wake END,
                ready = coalesce($6::BOOLEAN, ready)
             WHERE flow_no = $1").await.map_err(pg_error)?,
            &[&flow_no, &signed(next_seq), &last_time, &bytes, &status, &batch.ready, &now.as_micros()],
        )
        .await
        .map_err(pg_error)?;
    for timer in &batch.timers {
        upsert_timer(&tx, flow_no, timer).await?;
    }
    wake.notify_all(&tx, wakes).await?;
    tx.commit().await.map_err(pg_error)?;
    wake.wake_here_all(wakes);
    Ok(AppendOutcome {
        first_seq: actual,
        next_seq,
    })
}
