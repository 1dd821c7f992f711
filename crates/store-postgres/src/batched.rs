//! Reads of logs and releases of leases, batched (see `batch.rs`): every flow a worker runs
//! costs one read when its run starts and one release when it ends, so at thousands of flows
//! a second these two would otherwise be most of the database's statements.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use flowstate_core::{FlowId, RawEvent, Timestamp};
use flowstate_store::{Claim, Release, StoreError, WorkerId};
use tokio::sync::{mpsc, oneshot};

use crate::wake::WakeChannel;
use crate::{corrupt, pg_error, pool_error, signed, unsigned, uuid_of};

/// Most calls one batched statement serves.
pub const MAX_BATCH: usize = 256;

/// Tasks serving each kind of batch (each holds one pooled connection while it runs).
pub const BATCHERS: usize = 2;

/// Most events one call gets from a batched read; a call that wants more gets the rest from
/// reads of its own, so that one long log cannot make a batch's answer enormous (a batch
/// answers at most `MAX_BATCH * BATCHED_READ_ROWS` rows).
pub const BATCHED_READ_ROWS: usize = 1_000;

pub(crate) struct ReadCall {
    pub(crate) flow: FlowId,
    pub(crate) from_seq: u64,
    pub(crate) limit: usize,
    pub(crate) reply: oneshot::Sender<Result<Vec<RawEvent>, StoreError>>,
}

pub(crate) struct ReleaseCall {
    pub(crate) worker: WorkerId,
    pub(crate) claim: Claim,
    pub(crate) release: Release,
    pub(crate) reply: oneshot::Sender<Result<bool, StoreError>>,
}

pub(crate) fn start_reads(pool: deadpool_postgres::Pool) -> mpsc::Sender<ReadCall> {
    crate::batch::spawn(BATCHERS, MAX_BATCH, move |calls: Vec<ReadCall>| {
        let pool = pool.clone();
        async move {
            match read_batch(&pool, &calls).await {
                Ok(mut results) => {
                    for (call, result) in calls.into_iter().zip(results.drain(..)) {
                        let _ignored = call.reply.send(result);
                    }
                }
                Err(error) => {
                    for call in calls {
                        let _ignored = call.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    })
}

/// One statement (so one snapshot) for every read of the batch.
async fn read_batch(
    pool: &deadpool_postgres::Pool,
    calls: &[ReadCall],
) -> Result<Vec<Result<Vec<RawEvent>, StoreError>>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let ids: Vec<uuid::Uuid> = calls.iter().map(|c| uuid_of(c.flow)).collect();
    let froms: Vec<i64> = calls.iter().map(|c| signed(c.from_seq.max(1))).collect();
    let limits: Vec<i64> = calls
        .iter()
        .map(|c| signed(c.limit.min(BATCHED_READ_ROWS) as u64))
        .collect();
    let statement = client
        .prepare_cached(
            // One row per event; a call whose flow exists but whose range is empty gets one
            // row without an event, an unknown flow one row without a flow.
            "SELECT r.ord, f.flow_no IS NOT NULL, e.seq, e.time, e.format, e.body
             FROM UNNEST($1::UUID[], $2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY
                  AS r(id, from_seq, lim, ord)
             LEFT JOIN flows f ON f.id = r.id
             LEFT JOIN LATERAL (
                 SELECT seq, time, format, body FROM events
                 WHERE events.flow_no = f.flow_no AND seq >= r.from_seq
                 ORDER BY seq LIMIT r.lim) e ON TRUE
             ORDER BY r.ord, e.seq",
        )
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(&statement, &[&ids, &froms, &limits])
        .await
        .map_err(pg_error)?;
    // `None` until a row shows the flow exists.
    let mut found: Vec<Option<Vec<RawEvent>>> = calls.iter().map(|_| None).collect();
    for row in rows {
        let ordinal: i64 = row.try_get(0).map_err(pg_error)?;
        let index =
            usize::try_from(ordinal - 1).map_err(|_| corrupt("read batch ordinal".into()))?;
        let (Some(call), Some(slot)) = (calls.get(index), found.get_mut(index)) else {
            return Err(corrupt("read batch ordinal out of range".into()));
        };
        if !row.try_get::<_, bool>(1).map_err(pg_error)? {
            continue;
        }
        let events = slot.get_or_insert_with(Vec::new);
        if let Some(seq) = row.try_get::<_, Option<i64>>(2).map_err(pg_error)? {
            events.push(RawEvent {
                flow: call.flow,
                seq: unsigned(seq, "sequence number")?,
                time: Timestamp::from_micros(row.try_get(3).map_err(pg_error)?),
                format: u16::try_from(row.try_get::<_, i16>(4).map_err(pg_error)?)
                    .map_err(|_| corrupt("negative format".into()))?,
                body: row.try_get(5).map_err(pg_error)?,
            });
        }
    }
    // Calls that want more than a batch gives them read the rest on their own.
    for (call, events) in calls.iter().zip(found.iter_mut()) {
        let Some(events) = events else { continue };
        while events.len() < call.limit && events.len() % BATCHED_READ_ROWS == 0 {
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            let want = (call.limit - events.len()).min(BATCHED_READ_ROWS);
            let more = read_range(&client, call.flow, last + 1, want).await?;
            let done = more.len() < want;
            events.extend(more);
            if done {
                break;
            }
        }
    }
    Ok(calls
        .iter()
        .zip(found)
        .map(|(call, events)| events.ok_or(StoreError::UnknownFlow { flow: call.flow }))
        .collect())
}

/// One call's range, in one statement.
async fn read_range(
    client: &deadpool_postgres::Object,
    flow: FlowId,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<RawEvent>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT e.seq, e.time, e.format, e.body FROM flows f
             JOIN events e ON e.flow_no = f.flow_no AND e.seq >= $2
             WHERE f.id = $1 ORDER BY e.seq LIMIT $3",
        )
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(
            &statement,
            &[&uuid_of(flow), &signed(from_seq), &signed(limit as u64)],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            Ok(RawEvent {
                flow,
                seq: unsigned(row.try_get(0).map_err(pg_error)?, "sequence number")?,
                time: Timestamp::from_micros(row.try_get(1).map_err(pg_error)?),
                format: u16::try_from(row.try_get::<_, i16>(2).map_err(pg_error)?)
                    .map_err(|_| corrupt("negative format".into()))?,
                body: row.try_get(3).map_err(pg_error)?,
            })
        })
        .collect()
}

pub(crate) fn start_releases(
    pool: deadpool_postgres::Pool,
    wake: Arc<WakeChannel>,
) -> mpsc::Sender<ReleaseCall> {
    crate::batch::spawn(BATCHERS, MAX_BATCH, move |calls: Vec<ReleaseCall>| {
        let (pool, wake) = (pool.clone(), wake.clone());
        async move {
            // A flow released twice in one batch: the second call goes in the next round,
            // so that each gets its own answer.
            let mut pending = calls;
            while !pending.is_empty() {
                let mut seen = HashSet::new();
                let (round, later): (Vec<ReleaseCall>, Vec<ReleaseCall>) = pending
                    .into_iter()
                    .partition(|call| seen.insert(call.claim.flow));
                pending = later;
                match release_batch(&pool, &wake, &round).await {
                    Ok(released) => {
                        for call in round {
                            let _ignored = call.reply.send(Ok(released.contains(&call.claim.flow)));
                        }
                    }
                    Err(error) => {
                        for call in round {
                            let _ignored = call.reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        }
    })
}

/// Releases every claim of the batch in one statement; returns the flows that were released.
async fn release_batch(
    pool: &deadpool_postgres::Pool,
    wake: &WakeChannel,
    calls: &[ReleaseCall],
) -> Result<HashSet<FlowId>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let ids: Vec<uuid::Uuid> = calls.iter().map(|c| uuid_of(c.claim.flow)).collect();
    let owners: Vec<&str> = calls.iter().map(|c| c.worker.as_str()).collect();
    let idle: Vec<bool> = calls.iter().map(|c| c.release == Release::Idle).collect();
    let wakes: Vec<i64> = calls.iter().map(|c| signed(c.claim.wake)).collect();
    let statement = client
        .prepare_cached(
            // Rows are locked in id order, as group commits and renewals lock them.
            "WITH locked AS (
                 SELECT flow_no, id FROM flows WHERE id = ANY($1) ORDER BY id FOR UPDATE),
             calls AS (
                 SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::BOOLEAN[], $4::BIGINT[])
                     AS c(id, owner, idle, wake))
             UPDATE flows f SET lease_owner = NULL, lease_until = NULL,
                 ready = CASE WHEN calls.idle AND f.wake = calls.wake THEN FALSE ELSE f.ready END
             FROM locked JOIN calls ON calls.id = locked.id
             WHERE f.flow_no = locked.flow_no AND f.lease_owner = calls.owner
             RETURNING f.id, f.ready",
        )
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(&statement, &[&ids, &owners, &idle, &wakes])
        .await
        .map_err(pg_error)?;
    let mut released = HashSet::with_capacity(rows.len());
    let mut still_ready = false;
    let by_id: HashMap<uuid::Uuid, FlowId> = calls
        .iter()
        .map(|c| (uuid_of(c.claim.flow), c.claim.flow))
        .collect();
    for row in rows {
        let id: uuid::Uuid = row.try_get(0).map_err(pg_error)?;
        if let Some(flow) = by_id.get(&id) {
            released.insert(*flow);
        }
        still_ready |= row.try_get::<_, bool>(1).map_err(pg_error)?;
    }
    if still_ready {
        // A worker that tried to claim one of them while it was held may be asleep.
        wake.notify_now(&client, flowstate_store::WakeKind::Flows)
            .await;
    }
    Ok(released)
}
