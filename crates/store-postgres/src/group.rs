//! Group commit on PostgreSQL: appends that arrive together, from many flows, share one
//! transaction: the flows' rows are locked in id order (so concurrent groups cannot
//! deadlock), every append's expected sequence number is checked in arrival order, and the
//! events, flow rows and timers are written with one multi-row statement each. A group costs
//! a handful of round trips whatever its size, instead of five per append.
//!
//! If anything unusual happens in a group (a creation raced by another process, an SQL
//! error), the group is rolled back and its appends are retried one by one, which reports
//! each one's own outcome precisely.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowstate_core::{FlowKind, FlowStatus, Timestamp};
use flowstate_store::validate::{check_log_room, check_status_kind};
use flowstate_store::{AppendBatch, AppendOutcome, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::wake::{WakeChannel, Wakes};
use crate::{corrupt, pg_error, signed, unsigned, uuid_of};

/// Most appends one group takes.
pub const MAX_GROUP: usize = 1_024;

/// Group committers per store (each uses one pooled connection at a time).
pub const COMMITTERS: usize = 4;

pub(crate) struct Pending {
    pub(crate) batch: AppendBatch,
    pub(crate) now: Timestamp,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// How many appends the committers took, in how many groups (one transaction each, unless
/// a group fell back to one transaction per append), and whether the last group could reach
/// the database.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) groups: AtomicU64,
    pub(crate) appends: AtomicU64,
    /// Why the last group could not get a connection (`None`: it could).
    pub(crate) unreachable: flowstate_core::sync::Mutex<Option<String>>,
}

/// Starts the committers; they stop when every sender is dropped.
pub(crate) fn start(
    pool: deadpool_postgres::Pool,
    wake: Arc<WakeChannel>,
    counters: Arc<Counters>,
) -> mpsc::Sender<Pending> {
    crate::batch::spawn(COMMITTERS, MAX_GROUP, move |group: Vec<Pending>| {
        let (pool, wake, counters) = (pool.clone(), wake.clone(), counters.clone());
        async move {
            counters.groups.fetch_add(1, Ordering::Relaxed);
            counters
                .appends
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            let (started, size) = (std::time::Instant::now(), group.len());
            commit(&pool, &wake, &counters, group).await;
            metrics::histogram!("flowstate_store_commit_seconds", "store" => "postgres")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("flowstate_store_commit_batch_size", "store" => "postgres")
                .record(size as f64);
        }
    })
}

async fn commit(
    pool: &deadpool_postgres::Pool,
    wake: &WakeChannel,
    counters: &Counters,
    group: Vec<Pending>,
) {
    let got = pool.get().await;
    {
        let mut unreachable = counters.unreachable.lock();
        match &got {
            Ok(_) if unreachable.is_some() => *unreachable = None,
            Ok(_) => {}
            Err(error) => *unreachable = Some(error.to_string()),
        }
    }
    let mut client = match got {
        Ok(client) => client,
        Err(error) => {
            let error = StoreError::Io {
                message: format!("PostgreSQL connection pool: {error}"),
            };
            for pending in group {
                let _ignored = pending.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    // Creations with an idempotency key go one by one (each claims its key first, see
    // `append_one`); the rest share a group.
    let (keyed, group): (Vec<Pending>, Vec<Pending>) = group.into_iter().partition(|p| {
        p.batch
            .create
            .as_ref()
            .is_some_and(|c| c.idempotency.is_some())
    });
    for pending in keyed {
        let outcome = crate::append_one(&mut client, wake, pending.batch, pending.now).await;
        let _ignored = pending.reply.send(outcome);
    }
    if group.is_empty() {
        return;
    }
    if group.len() == 1 {
        for pending in group {
            let outcome = crate::append_one(&mut client, wake, pending.batch, pending.now).await;
            let _ignored = pending.reply.send(outcome);
        }
        return;
    }
    let batches: Vec<&AppendBatch> = group.iter().map(|p| &p.batch).collect();
    let now = group
        .iter()
        .map(|p| p.now)
        .max()
        .unwrap_or(Timestamp::EPOCH);
    match commit_group(&mut client, wake, &batches, now).await {
        Ok(outcomes) => {
            for (pending, outcome) in group.into_iter().zip(outcomes) {
                let _ignored = pending.reply.send(outcome);
            }
        }
        Err(_) => {
            // Something unusual: each append on its own says precisely what happened to it.
            for pending in group {
                let outcome =
                    crate::append_one(&mut client, wake, pending.batch, pending.now).await;
                let _ignored = pending.reply.send(outcome);
            }
        }
    }
}

struct FlowState {
    flow_no: Option<i64>,
    next_seq: u64,
    kind: FlowKind,
    /// Index of the group member that creates it.
    created_by: Option<usize>,
}

#[derive(Default)]
struct FlowUpdate {
    next_seq: u64,
    updated_at: i64,
    bytes: i64,
    status: Option<&'static str>,
    ready: Option<bool>,
    wakes: i64,
}

/// Runs a group in one transaction; `Err` means "roll back and go one by one".
async fn commit_group(
    client: &mut deadpool_postgres::Object,
    wake: &WakeChannel,
    batches: &[&AppendBatch],
    now: Timestamp,
) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let mut ids: Vec<uuid::Uuid> = batches.iter().map(|b| uuid_of(b.flow)).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            &tx.prepare_cached("SELECT id, flow_no, next_seq, kind FROM flows WHERE id = ANY($1) ORDER BY id FOR UPDATE").await.map_err(pg_error)?,
            &[&ids],
        )
        .await
        .map_err(pg_error)?;
    let mut flows: HashMap<uuid::Uuid, FlowState> = HashMap::new();
    for row in rows {
        let kind: String = row.get(3);
        let kind = FlowKind::parse(&kind).ok_or_else(|| corrupt(format!("flow kind {kind:?}")))?;
        flows.insert(
            row.get(0),
            FlowState {
                flow_no: Some(row.get(1)),
                next_seq: unsigned(row.get(2), "next_seq")?,
                kind,
                created_by: None,
            },
        );
    }
    // Decide every append in arrival order, as if they had come one after another.
    let mut outcomes = Vec::with_capacity(batches.len());
    for (index, batch) in batches.iter().enumerate() {
        let id = uuid_of(batch.flow);
        let outcome = match flows.get_mut(&id) {
            Some(state) if state.next_seq != batch.expected_next_seq => Err(StoreError::Conflict {
                flow: batch.flow,
                expected: batch.expected_next_seq,
                actual: state.next_seq,
            }),
            Some(state) => match accept(state.kind, state.next_seq, batch) {
                Ok(outcome) => {
                    state.next_seq = outcome.next_seq;
                    Ok(outcome)
                }
                Err(error) => Err(error),
            },
            None => match &batch.create {
                Some(create) => match accept(create.kind, 1, batch) {
                    Ok(outcome) => {
                        flows.insert(
                            id,
                            FlowState {
                                flow_no: None,
                                next_seq: outcome.next_seq,
                                kind: create.kind,
                                created_by: Some(index),
                            },
                        );
                        Ok(outcome)
                    }
                    Err(error) => Err(error),
                },
                None => Err(StoreError::UnknownFlow { flow: batch.flow }),
            },
        };
        outcomes.push(outcome);
    }
    // Create the new flows, in one statement.
    let creators: Vec<usize> = flows.values().filter_map(|f| f.created_by).collect();
    if !creators.is_empty() {
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &index in &creators {
            let batch = batches[index];
            let create = batch
                .create
                .as_ref()
                .ok_or_else(|| corrupt("creation without create".into()))?;
            let status = batch
                .status
                .unwrap_or_else(|| FlowStatus::initial(create.kind));
            cols.0.push(uuid_of(batch.flow));
            cols.1.push(create.kind.key().to_owned());
            cols.2.push(create.definition.clone());
            cols.3.push(status.key().to_owned());
            cols.4.push(batch.events[0].time.as_micros());
        }
        let created = tx
            .query(
                &tx.prepare_cached("INSERT INTO flows (id, kind, definition, status, created_at, updated_at,
                                    next_seq, bytes, ready, ready_since, wake)
                 SELECT u.id, u.kind, u.definition, u.status, u.created_at, u.created_at, 1, 0, FALSE, $6, 0
                 FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])
                      AS u(id, kind, definition, status, created_at)
                 ON CONFLICT (id) DO NOTHING RETURNING id, flow_no").await.map_err(pg_error)?,
                &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &now.as_micros()],
            )
            .await
            .map_err(pg_error)?;
        if created.len() != creators.len() {
            // Another process created one of them meanwhile.
            return Err(StoreError::Io {
                message: "creation raced".into(),
            });
        }
        for row in created {
            if let Some(state) = flows.get_mut(&row.get::<_, uuid::Uuid>(0)) {
                state.flow_no = Some(row.get(1));
            }
        }
    }
    // Events, flow rows and timers of the accepted appends.
    let (mut e_flow, mut e_seq, mut e_time, mut e_format, mut e_body) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut updates: BTreeMap<i64, FlowUpdate> = BTreeMap::new();
    let mut timers: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut wakes = Wakes::default();
    for (batch, outcome) in batches.iter().zip(&outcomes) {
        let Ok(outcome) = outcome else { continue };
        wakes.add(Wakes::of(batch));
        let flow_no = flows
            .get(&uuid_of(batch.flow))
            .and_then(|f| f.flow_no)
            .ok_or_else(|| corrupt("accepted append without a flow row".into()))?;
        for (offset, event) in batch.events.iter().enumerate() {
            e_flow.push(flow_no);
            e_seq.push(signed(outcome.first_seq + offset as u64));
            e_time.push(event.time.as_micros());
            e_format.push(i16::try_from(event.format).unwrap_or(i16::MAX));
            e_body.push(event.body.clone());
        }
        let update = updates.entry(flow_no).or_default();
        update.next_seq = outcome.next_seq;
        update.updated_at = batch.events[batch.events.len() - 1].time.as_micros();
        update.bytes += batch
            .events
            .iter()
            .map(|e| signed(e.body.len() as u64))
            .sum::<i64>();
        if let Some(status) = batch.status {
            update.status = Some(status.key());
        }
        if let Some(ready) = batch.ready {
            update.ready = Some(ready);
            update.wakes += i64::from(ready);
        }
        for timer in &batch.timers {
            timers.insert((flow_no, timer.name.clone()), timer.due.as_micros());
        }
    }
    if !e_flow.is_empty() {
        tx.execute(
            &tx.prepare_cached("INSERT INTO events (flow_no, seq, time, format, body)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::SMALLINT[], $5::BYTEA[])").await.map_err(pg_error)?,
            &[&e_flow, &e_seq, &e_time, &e_format, &e_body],
        )
        .await
        .map_err(pg_error)?;
        let flow_nos: Vec<i64> = updates.keys().copied().collect();
        let next: Vec<i64> = updates.values().map(|u| signed(u.next_seq)).collect();
        let updated: Vec<i64> = updates.values().map(|u| u.updated_at).collect();
        let bytes: Vec<i64> = updates.values().map(|u| u.bytes).collect();
        let status: Vec<Option<&str>> = updates.values().map(|u| u.status).collect();
        let ready: Vec<Option<bool>> = updates.values().map(|u| u.ready).collect();
        let wakes: Vec<i64> = updates.values().map(|u| u.wakes).collect();
        tx.execute(
            &tx.prepare_cached("UPDATE flows f SET
                next_seq = u.next_seq, updated_at = u.updated_at, bytes = f.bytes + u.bytes,
                status = coalesce(u.status, f.status),
                ready_since = CASE WHEN u.ready IS TRUE AND NOT f.ready THEN $8 ELSE f.ready_since END,
                wake = f.wake + u.wakes,
                ready = coalesce(u.ready, f.ready)
             FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::BOOLEAN[], $7::BIGINT[])
                  AS u(flow_no, next_seq, updated_at, bytes, status, ready, wakes)
             WHERE f.flow_no = u.flow_no").await.map_err(pg_error)?,
            &[&flow_nos, &next, &updated, &bytes, &status, &ready, &wakes, &now.as_micros()],
        )
        .await
        .map_err(pg_error)?;
    }
    if !timers.is_empty() {
        let flow_nos: Vec<i64> = timers.keys().map(|(f, _)| *f).collect();
        let names: Vec<String> = timers.keys().map(|(_, n)| n.clone()).collect();
        let dues: Vec<i64> = timers.values().copied().collect();
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO timers (flow_no, name, due, lease_owner, lease_until)
             SELECT u.flow_no, u.name, u.due, NULL, NULL
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[]) AS u(flow_no, name, due)
             ON CONFLICT (flow_no, name)
             DO UPDATE SET due = excluded.due, lease_owner = NULL, lease_until = NULL",
            )
            .await
            .map_err(pg_error)?,
            &[&flow_nos, &names, &dues],
        )
        .await
        .map_err(pg_error)?;
    }
    wake.notify_all(&tx, wakes).await?;
    tx.commit().await.map_err(pg_error)?;
    wake.wake_here_all(wakes);
    Ok(outcomes)
}

/// Checks one append against its flow's state (the sequence number already matches).
fn accept(kind: FlowKind, next_seq: u64, batch: &AppendBatch) -> Result<AppendOutcome, StoreError> {
    if let Some(status) = batch.status {
        check_status_kind(kind, status)?;
    }
    check_log_room(next_seq, batch.events.len())?;
    Ok(AppendOutcome {
        first_seq: next_seq,
        next_seq: next_seq + batch.events.len() as u64,
    })
}
