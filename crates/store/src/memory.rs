//! The in-memory store: the reference implementation of the [`Store`] contract, used in tests
//! and by embedders who need no durability. Everything sits behind one mutex; every operation
//! is a short critical section with no await inside.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use flowstate_core::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::limits::{MAX_CLAIM_BATCH, MAX_READ_BATCH};
use flowstate_core::{Clock, FlowId, FlowKind, FlowStatus, RawEvent, Timestamp};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::types::{
    AppendBatch, AppendOutcome, Claim, DueTimer, FiredTimer, FlowPage, FlowQuery, FlowSummary,
    IdempotencyKey, NewEvent, NewTimer, Release, WorkerId,
};
use crate::validate::{
    check_batch, check_lease, check_log_room, check_name, check_status_kind, claim_window,
    validate_append, validate_compact,
};
use crate::{Store, StoreHealth, WakeCounts, WakeKind, Wakeups};

#[derive(Debug)]
struct Lease {
    owner: WorkerId,
    until: Timestamp,
}

#[derive(Debug)]
struct FlowEntry {
    summary: FlowSummary,
    /// Its log, dense from its first remaining event (1, or later once compacted).
    events: Vec<RawEvent>,
    /// When it last became ready (claim order).
    ready_since: Timestamp,
    wake: u64,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct TimerEntry {
    due: Timestamp,
    lease: Option<Lease>,
}

impl FlowEntry {
    /// Sets the ready flag (keeping its age if it was set) and counts the wake-up.
    fn mark_ready(&mut self, now: Timestamp) {
        if !self.summary.ready {
            self.ready_since = now;
        }
        self.summary.ready = true;
        self.wake += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    flows: BTreeMap<FlowId, FlowEntry>,
    timers: HashMap<(FlowId, String), TimerEntry>,
    /// Idempotency keys: the flow each started and the request's fingerprint.
    keys: HashMap<String, (FlowId, IdempotencyKey)>,
    /// The same keys by expiry, for the purge.
    expiring: BTreeSet<(Timestamp, String)>,
    closed: bool,
}

impl Inner {
    /// The refusal of a creation whose idempotency key is live at `now`.
    fn key_taken(&self, batch: &AppendBatch, now: Timestamp) -> Option<StoreError> {
        let key = batch.create.as_ref()?.idempotency.as_ref()?;
        let (flow, existing) = self.keys.get(&key.key)?;
        (existing.expires_at > now).then(|| StoreError::KeyTaken {
            key: key.key.clone(),
            flow: *flow,
            fingerprint: existing.fingerprint.clone(),
        })
    }

    /// Records `key` for `flow` (replacing an expired one) and purges up to
    /// [`crate::KEY_PURGE_BATCH`] other expired keys.
    fn record_key(&mut self, flow: FlowId, key: IdempotencyKey, now: Timestamp) {
        if let Some((_, old)) = self.keys.remove(&key.key) {
            self.expiring.remove(&(old.expires_at, old.key));
        }
        let expired: Vec<(Timestamp, String)> = self
            .expiring
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(crate::KEY_PURGE_BATCH)
            .cloned()
            .collect();
        for entry in expired {
            self.keys.remove(&entry.1);
            self.expiring.remove(&entry);
        }
        self.expiring.insert((key.expires_at, key.key.clone()));
        self.keys.insert(key.key.clone(), (flow, key));
    }

    /// Up to `limit` timers due at `now` that nobody holds, earliest first.
    fn due_timers(&self, now: Timestamp, limit: usize) -> Vec<(Timestamp, FlowId, String)> {
        let mut due: Vec<(Timestamp, FlowId, String)> = self
            .timers
            .iter()
            .filter(|(_, t)| t.due <= now && lease_free(t.lease.as_ref(), now))
            .map(|((flow, name), t)| (t.due, *flow, name.clone()))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        due
    }
}

/// The storage behind a [`MemoryStore`]. Opening a new `MemoryStore` on the same
/// `MemoryStorage` is how tests model "close and reopen".
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Inner>>,
    wakeups: Wakeups,
}

/// A [`Store`] in memory.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    storage: MemoryStorage,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::open(MemoryStorage::default(), clock)
    }

    /// A store over existing storage (reopened after [`Store::close`]).
    pub fn open(storage: MemoryStorage, clock: Arc<dyn Clock>) -> Self {
        storage.inner.lock().closed = false;
        Self { storage, clock }
    }

    /// The storage, to reopen it later.
    #[must_use]
    pub fn storage(&self) -> MemoryStorage {
        self.storage.clone()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let inner = self.storage.inner.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        Ok(inner)
    }
}

fn lease_free(lease: Option<&Lease>, now: Timestamp) -> bool {
    lease.is_none_or(|lease| lease.until <= now)
}

fn held_by(lease: Option<&Lease>, worker: &WorkerId) -> bool {
    lease.is_some_and(|lease| &lease.owner == worker)
}

#[async_trait]
impl Store for MemoryStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        let creates = validate_append(&batch)?;
        let mut inner = self.lock()?;
        let now = self.clock.now();
        if let Some(taken) = inner.key_taken(&batch, now) {
            return Err(taken);
        }
        let actual = inner
            .flows
            .get(&batch.flow)
            .map_or(1, |e| e.summary.next_seq);
        if actual != batch.expected_next_seq {
            if creates.is_none() && !inner.flows.contains_key(&batch.flow) {
                return Err(StoreError::UnknownFlow { flow: batch.flow });
            }
            return Err(StoreError::Conflict {
                flow: batch.flow,
                expected: batch.expected_next_seq,
                actual,
            });
        }
        let kind = match (&batch.create, inner.flows.get(&batch.flow)) {
            (Some(create), _) => create.kind,
            (None, Some(entry)) => entry.summary.kind,
            (None, None) => return Err(StoreError::UnknownFlow { flow: batch.flow }),
        };
        if let Some(status) = batch.status {
            crate::validate::check_status_kind(kind, status)?;
        }
        check_log_room(actual, batch.events.len())?;
        let first_time = batch.events[0].time;
        let last_time = batch.events[batch.events.len() - 1].time;
        let count = batch.events.len();
        let entry = inner.flows.entry(batch.flow).or_insert_with(|| {
            let create = batch.create.as_ref();
            FlowEntry {
                summary: FlowSummary {
                    id: batch.flow,
                    kind,
                    definition: create.map(|c| c.definition.clone()).unwrap_or_default(),
                    status: FlowStatus::initial(kind),
                    created_at: first_time,
                    updated_at: first_time,
                    next_seq: 1,
                    bytes: 0,
                    ready: false,
                },
                events: Vec::new(),
                ready_since: now,
                wake: 0,
                lease: None,
            }
        });
        for (offset, event) in batch.events.into_iter().enumerate() {
            entry.summary.bytes += event.body.len() as u64;
            entry.events.push(RawEvent {
                flow: batch.flow,
                seq: actual + offset as u64,
                time: event.time,
                format: event.format,
                body: event.body,
            });
        }
        let next_seq = actual + count as u64;
        entry.summary.next_seq = next_seq;
        entry.summary.updated_at = last_time;
        if let Some(status) = batch.status {
            entry.summary.status = status;
        }
        match batch.ready {
            Some(true) => entry.mark_ready(now),
            Some(false) => entry.summary.ready = false,
            None => {}
        }
        let wake_flows = batch.ready == Some(true);
        let wake_timers = !batch.timers.is_empty();
        if let Some(key) = batch.create.and_then(|create| create.idempotency) {
            inner.record_key(batch.flow, key, now);
        }
        for timer in batch.timers {
            inner.timers.insert(
                (batch.flow, timer.name),
                TimerEntry {
                    due: timer.due,
                    lease: None,
                },
            );
        }
        drop(inner);
        if wake_flows {
            self.storage.wakeups.wake(WakeKind::Flows);
        }
        if wake_timers {
            self.storage.wakeups.wake(WakeKind::Timers);
        }
        Ok(AppendOutcome {
            first_seq: actual,
            next_seq,
        })
    }

    async fn compact(
        &self,
        flow: FlowId,
        expected_next_seq: u64,
        events: Vec<NewEvent>,
        status: FlowStatus,
    ) -> Result<AppendOutcome, StoreError> {
        validate_compact(expected_next_seq, &events)?;
        let mut inner = self.lock()?;
        let entry = inner
            .flows
            .get_mut(&flow)
            .ok_or(StoreError::UnknownFlow { flow })?;
        if entry.summary.next_seq != expected_next_seq {
            return Err(StoreError::Conflict {
                flow,
                expected: expected_next_seq,
                actual: entry.summary.next_seq,
            });
        }
        check_status_kind(entry.summary.kind, status)?;
        // All checks are done: the log is replaced whole, numbered after the old one (so
        // the next sequence number never goes down), and the rest of the row is kept.
        let last_time = events[events.len() - 1].time;
        entry.events = events
            .into_iter()
            .zip(expected_next_seq..)
            .map(|(event, seq)| RawEvent {
                flow,
                seq,
                time: event.time,
                format: event.format,
                body: event.body,
            })
            .collect();
        let next_seq = expected_next_seq + entry.events.len() as u64;
        entry.summary.next_seq = next_seq;
        entry.summary.bytes = entry.events.iter().map(|e| e.body.len() as u64).sum();
        entry.summary.status = status;
        entry.summary.updated_at = last_time;
        Ok(AppendOutcome {
            first_seq: expected_next_seq,
            next_seq,
        })
    }

    async fn read(
        &self,
        flow: FlowId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError> {
        check_batch("read limit", limit, MAX_READ_BATCH)?;
        let inner = self.lock()?;
        let entry = inner
            .flows
            .get(&flow)
            .ok_or(StoreError::UnknownFlow { flow })?;
        // A compacted log starts after 1: index from its first event's sequence number.
        let first = entry.events.first().map_or(1, |e| e.seq);
        let start = usize::try_from(from_seq.saturating_sub(first)).unwrap_or(usize::MAX);
        Ok(entry
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn flow(&self, flow: FlowId) -> Result<Option<FlowSummary>, StoreError> {
        Ok(self.lock()?.flows.get(&flow).map(|e| e.summary.clone()))
    }

    async fn list(&self, query: &FlowQuery) -> Result<FlowPage, StoreError> {
        let size = query.page_size()?;
        let inner = self.lock()?;
        let mut flows: Vec<FlowSummary> = inner
            .flows
            .values()
            .map(|e| &e.summary)
            .filter(|s| query.matches(s))
            .take(size + 1)
            .cloned()
            .collect();
        let next_after = (flows.len() > size).then(|| {
            flows.truncate(size);
            flows[size - 1].id
        });
        Ok(FlowPage { flows, next_after })
    }

    async fn mark_ready(&self, flow: FlowId) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let entry = inner
            .flows
            .get_mut(&flow)
            .ok_or(StoreError::UnknownFlow { flow })?;
        entry.mark_ready(now);
        drop(inner);
        self.storage.wakeups.wake(WakeKind::Flows);
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
        let mut inner = self.lock()?;
        let mut candidates: Vec<(Timestamp, FlowId)> = inner
            .flows
            .values()
            .filter(|e| {
                e.summary.ready
                    && kinds.contains(&e.summary.kind)
                    && lease_free(e.lease.as_ref(), now)
            })
            .map(|e| (e.ready_since, e.summary.id))
            .collect();
        candidates.sort_unstable();
        candidates.truncate(limit);
        let mut claims = Vec::with_capacity(candidates.len());
        for (_, flow) in candidates {
            if let Some(entry) = inner.flows.get_mut(&flow) {
                entry.lease = Some(Lease {
                    owner: worker.clone(),
                    until,
                });
                claims.push(Claim {
                    flow,
                    kind: entry.summary.kind,
                    next_seq: entry.summary.next_seq,
                    lease_until: until,
                    wake: entry.wake,
                });
            }
        }
        Ok(claims)
    }

    async fn renew(
        &self,
        worker: &WorkerId,
        flows: &[FlowId],
        lease: Duration,
    ) -> Result<Vec<FlowId>, StoreError> {
        check_lease(lease)?;
        let until = self.clock.now().saturating_add(lease);
        let mut inner = self.lock()?;
        let mut renewed = Vec::new();
        for flow in flows {
            if let Some(entry) = inner.flows.get_mut(flow) {
                if held_by(entry.lease.as_ref(), worker) {
                    entry.lease = Some(Lease {
                        owner: worker.clone(),
                        until,
                    });
                    renewed.push(*flow);
                }
            }
        }
        Ok(renewed)
    }

    async fn release(
        &self,
        worker: &WorkerId,
        claim: &Claim,
        release: Release,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(entry) = inner.flows.get_mut(&claim.flow) else {
            return Ok(false);
        };
        if !held_by(entry.lease.as_ref(), worker) {
            return Ok(false);
        }
        entry.lease = None;
        if release == Release::Idle && entry.wake == claim.wake {
            entry.summary.ready = false;
        }
        let still_ready = entry.summary.ready;
        drop(inner);
        if still_ready {
            self.storage.wakeups.wake(WakeKind::Flows);
        }
        Ok(true)
    }

    async fn release_foreign_leases(&self, worker: &WorkerId) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let mut released = 0;
        let foreign = |lease: &Option<Lease>| lease.as_ref().is_some_and(|l| &l.owner != worker);
        for entry in inner.flows.values_mut() {
            if foreign(&entry.lease) {
                entry.lease = None;
                released += 1;
            }
        }
        for timer in inner.timers.values_mut() {
            if foreign(&timer.lease) {
                timer.lease = None;
                released += 1;
            }
        }
        drop(inner);
        if released > 0 {
            self.storage.wakeups.wake(WakeKind::Flows);
            self.storage.wakeups.wake(WakeKind::Timers);
        }
        Ok(released)
    }

    async fn schedule_timer(&self, flow: FlowId, timer: NewTimer) -> Result<(), StoreError> {
        check_name("timer name", &timer.name)?;
        let mut inner = self.lock()?;
        if !inner.flows.contains_key(&flow) {
            return Err(StoreError::UnknownFlow { flow });
        }
        inner.timers.insert(
            (flow, timer.name),
            TimerEntry {
                due: timer.due,
                lease: None,
            },
        );
        drop(inner);
        self.storage.wakeups.wake(WakeKind::Timers);
        Ok(())
    }

    async fn cancel_timer(&self, flow: FlowId, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .timers
            .remove(&(flow, name.to_owned()))
            .is_some())
    }

    async fn claim_due_timers(
        &self,
        worker: &WorkerId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let (now, until) = claim_window("timer claim limit", limit, lease, self.clock.as_ref())?;
        let mut inner = self.lock()?;
        let due = inner.due_timers(now, limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (due, flow, name) in due {
            if let Some(timer) = inner.timers.get_mut(&(flow, name.clone())) {
                timer.lease = Some(Lease {
                    owner: worker.clone(),
                    until,
                });
                claimed.push(DueTimer {
                    flow,
                    name,
                    due,
                    lease_until: until,
                });
            }
        }
        Ok(claimed)
    }

    async fn fire_due_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, StoreError> {
        check_batch("timer fire limit", limit, MAX_CLAIM_BATCH)?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let due = inner.due_timers(now, limit);
        let mut fired = Vec::with_capacity(due.len());
        for (due, flow, name) in due {
            inner.timers.remove(&(flow, name.clone()));
            if let Some(entry) = inner.flows.get_mut(&flow) {
                entry.mark_ready(now);
            }
            fired.push(FiredTimer { flow, name, due });
        }
        drop(inner);
        if !fired.is_empty() {
            self.storage.wakeups.wake(WakeKind::Flows);
        }
        Ok(fired)
    }

    async fn next_timer_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .lock()?
            .timers
            .values()
            .map(|t| {
                t.lease
                    .as_ref()
                    .map_or(t.due, |lease| t.due.max(lease.until))
            })
            .min())
    }

    async fn complete_timer(
        &self,
        worker: &WorkerId,
        timer: &DueTimer,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let key = (timer.flow, timer.name.clone());
        let held = inner
            .timers
            .get(&key)
            .is_some_and(|t| t.due == timer.due && held_by(t.lease.as_ref(), worker));
        if held {
            inner.timers.remove(&key);
        }
        Ok(held)
    }

    async fn delete_flow(&self, flow: FlowId) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        inner
            .timers
            .retain(|(timer_flow, _), _| *timer_flow != flow);
        Ok(inner.flows.remove(&flow).is_some())
    }

    fn wakeups(&self) -> watch::Receiver<WakeCounts> {
        self.storage.wakeups.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.lock()?.closed = true;
        Ok(())
    }

    fn health(&self) -> StoreHealth {
        match self.lock() {
            Ok(_) => StoreHealth::Ok,
            Err(_) => StoreHealth::Closed,
        }
    }
}
