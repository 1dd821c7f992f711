//! Test support: [`InstrumentedStore`], a store that wraps another one to count its appends
//! or to misbehave on demand (renewals that fail, a slow database, a health that says it
//! stopped), for tests of what sits on top of a store. Not for production use.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::{FlowId, FlowKind, FlowStatus, RawEvent, Timestamp};

use crate::{
    AppendBatch, AppendOutcome, Claim, DueTimer, FiredTimer, FlowPage, FlowQuery, FlowSummary,
    NewEvent, NewTimer, Release, Store, StoreError, StoreHealth, WakeCounts, WorkerId,
};

/// Wraps a store: counts appends, and on demand fails renewals, delays claims and
/// releases (with tokio's clock, so paused-time tests stay exact), or reports a health of
/// its own.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    appends: AtomicUsize,
    failing_renewals: AtomicBool,
    health: Mutex<Option<StoreHealth>>,
    claim_delay: Duration,
    release_delay: Duration,
}

impl InstrumentedStore {
    /// A transparent wrapper around `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            appends: AtomicUsize::new(0),
            failing_renewals: AtomicBool::new(false),
            health: Mutex::new(None),
            claim_delay: Duration::ZERO,
            release_delay: Duration::ZERO,
        }
    }

    /// Every claim waits `claim` first, every release `release` (a slow database).
    #[must_use]
    pub fn with_delays(mut self, claim: Duration, release: Duration) -> Self {
        self.claim_delay = claim;
        self.release_delay = release;
        self
    }

    /// From now on renewals fail with an I/O error (`true`), or work again (`false`).
    pub fn fail_renewals(&self, failing: bool) {
        self.failing_renewals.store(failing, Ordering::SeqCst);
    }

    /// From now on [`Store::health`] answers `health` (`None`: the wrapped store's).
    pub fn set_health(&self, health: Option<StoreHealth>) {
        *self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = health;
    }

    /// Appends made through this wrapper.
    #[must_use]
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(batch).await
    }
    async fn compact(
        &self,
        flow: FlowId,
        expected_next_seq: u64,
        events: Vec<NewEvent>,
        status: FlowStatus,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner
            .compact(flow, expected_next_seq, events, status)
            .await
    }
    async fn read(
        &self,
        flow: FlowId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.inner.read(flow, from_seq, limit).await
    }
    async fn flow(&self, flow: FlowId) -> Result<Option<FlowSummary>, StoreError> {
        self.inner.flow(flow).await
    }
    async fn list(&self, query: &FlowQuery) -> Result<FlowPage, StoreError> {
        self.inner.list(query).await
    }
    async fn mark_ready(&self, flow: FlowId) -> Result<(), StoreError> {
        self.inner.mark_ready(flow).await
    }
    async fn claim(
        &self,
        worker: &WorkerId,
        kinds: &[FlowKind],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        pause(self.claim_delay).await;
        self.inner.claim(worker, kinds, limit, lease).await
    }
    async fn renew(
        &self,
        worker: &WorkerId,
        flows: &[FlowId],
        lease: Duration,
    ) -> Result<Vec<FlowId>, StoreError> {
        if self.failing_renewals.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                message: "renewals fail (InstrumentedStore)".into(),
            });
        }
        self.inner.renew(worker, flows, lease).await
    }
    async fn release(
        &self,
        worker: &WorkerId,
        claim: &Claim,
        release: Release,
    ) -> Result<bool, StoreError> {
        pause(self.release_delay).await;
        self.inner.release(worker, claim, release).await
    }
    async fn schedule_timer(&self, flow: FlowId, timer: NewTimer) -> Result<(), StoreError> {
        self.inner.schedule_timer(flow, timer).await
    }
    async fn cancel_timer(&self, flow: FlowId, name: &str) -> Result<bool, StoreError> {
        self.inner.cancel_timer(flow, name).await
    }
    async fn claim_due_timers(
        &self,
        worker: &WorkerId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        self.inner.claim_due_timers(worker, limit, lease).await
    }
    async fn fire_due_timers(&self, limit: usize) -> Result<Vec<FiredTimer>, StoreError> {
        self.inner.fire_due_timers(limit).await
    }
    async fn next_timer_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.inner.next_timer_due().await
    }
    async fn complete_timer(
        &self,
        worker: &WorkerId,
        timer: &DueTimer,
    ) -> Result<bool, StoreError> {
        self.inner.complete_timer(worker, timer).await
    }
    async fn delete_flow(&self, flow: FlowId) -> Result<bool, StoreError> {
        self.inner.delete_flow(flow).await
    }
    fn wakeups(&self) -> tokio::sync::watch::Receiver<WakeCounts> {
        self.inner.wakeups()
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
    fn health(&self) -> StoreHealth {
        let set = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        set.unwrap_or_else(|| self.inner.health())
    }
}
