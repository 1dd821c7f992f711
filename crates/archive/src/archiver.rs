//! [`Archiver`]: one pass ([`Archiver::run_once`]) or a loop ([`Archiver::run`]) that moves
//! finished flows from the live store to the archive: deactivated plans, task graphs that
//! ended SUCCESS, FAILURE or REVERTED, and durable functions that are done
//! ([`crate::FINISHED`]).
//!
//! Each flow goes through four steps, each durable before the next starts:
//!
//! 1. **mark**: `plan_state_changed {to: archived}` is appended to its live log through
//!    [`FlowWriter`] (checked against the fold, conflict-safe). From now on live listings hide
//!    it ([`crate::list_live`]);
//! 2. **write**: the whole log, that event included, is written to the archive as one file;
//! 3. **verify**: the file is read back and must be byte for byte what was written, decode
//!    to the live log's events and fold to `archived`;
//! 4. **delete**: the flow is deleted from the live store, only if its log has not grown
//!    since.
//!
//! A crash anywhere loses nothing and shows no flow twice: before (1) the flow is simply
//! live; between (1) and (4) it is hidden from live listings (and maybe already in the
//! archive), and the next pass finds it in the live store as `archived` and does (2) to (4)
//! again; the file's bytes depend only on the log, so writing it again writes the same file.
//! Nothing is deleted before its copy was read back and checked. For the same reason a pass
//! may be stopped at any point (dropping its future): that is a crash the protocol covers.
//!
//! Task graphs and functions have no `archived` state, so they skip (1): a crash between
//! (2) and (4) leaves the flow live (listed as live, and its copy in the archive, which
//! readers of a flow id ignore while the live one exists), and a later pass selects it again
//! by the policy, writes the same bytes (the log of a finished flow does not change; a
//! function whose journal was dropped meanwhile gets its new, shorter log) and deletes it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstate_core::limits::MAX_PAGE_SIZE;
use flowstate_core::machine::PlanState;
use flowstate_core::Machine;
use flowstate_core::{Clock, EventBody, FlowId, FlowKind, FlowStatus, RawEvent, StopAt};
use flowstate_engine::{FlowWriter, WriteError};
use flowstate_store::{read_all, FlowQuery, FlowSummary, Store, StoreError};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::ArchiveError;
use crate::format::ArchivedFlow;
use crate::policy::{
    is_archived_state, is_finished, select, ArchivePolicy, Candidate, LiveTotals, FINISHED,
};
use crate::storage::ArchiveStore;

/// A step of archiving one flow, reported to an [`ArchiveObserver`] once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArchiveStep {
    /// `archived` is in the live log (or already was): the flow is hidden from live listings.
    Marked,
    /// The archive file is written.
    Written,
    /// The file was read back and matches the live log.
    Verified,
    /// The flow is gone from the live store.
    Deleted,
}

impl ArchiveStep {
    /// Every step, in order.
    pub const ALL: [Self; 4] = [Self::Marked, Self::Written, Self::Verified, Self::Deleted];

    /// The step's name ("marked", "written", "verified", "deleted").
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            Self::Marked => "marked",
            Self::Written => "written",
            Self::Verified => "verified",
            Self::Deleted => "deleted",
        }
    }

    /// Parses a step's name.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.key() == text)
    }
}

/// Told of every step of every flow, after the step is durable and before the next one
/// starts: for progress reports, and for tests that stop (or kill) an archiver between two
/// steps. The archiver awaits it, so a slow observer slows archiving.
#[async_trait]
pub trait ArchiveObserver: Send + Sync + std::fmt::Debug {
    /// `flow` has completed `step`.
    async fn step(&self, flow: FlowId, step: ArchiveStep);
}

/// A flow that could not be archived in a pass (it stays in the live store, and the next
/// pass tries again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveFailure {
    /// The flow.
    pub flow: FlowId,
    /// Why.
    pub error: String,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    /// Flows selected by the policy and moved to the archive.
    pub archived: u64,
    /// Flows found `archived` in the live store (an earlier pass stopped after marking
    /// them) and moved now.
    pub recovered: u64,
    /// Bytes of archive files written.
    pub bytes: u64,
    /// Events in them.
    pub events: u64,
    /// Batches processed.
    pub batches: u64,
    /// Flows left alone because another process changed or removed them meanwhile.
    pub skipped: u64,
    /// Flows that failed (they stay in the live store).
    pub failed: Vec<ArchiveFailure>,
}

impl ArchiveReport {
    fn add(&mut self, other: Self) {
        self.archived += other.archived;
        self.recovered += other.recovered;
        self.bytes += other.bytes;
        self.events += other.events;
        self.batches += other.batches;
        self.skipped += other.skipped;
        self.failed.extend(other.failed);
    }
}

/// One archived flow's size.
#[derive(Debug, Clone, Copy)]
struct Moved {
    bytes: u64,
    events: u64,
}

/// Moves finished flows of every kind from a live store to an archive; see the module docs.
#[derive(Debug, Clone)]
pub struct Archiver {
    store: Arc<dyn Store>,
    archive: ArchiveStore,
    policy: ArchivePolicy,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn ArchiveObserver>>,
}

impl Archiver {
    /// An archiver from `store` to `archive`, deciding by `policy`, timed by `clock` (the
    /// `archived` events and the age of flows). Refuses a policy that breaks a limit.
    pub fn new(
        store: Arc<dyn Store>,
        archive: ArchiveStore,
        policy: ArchivePolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ArchiveError> {
        policy.check()?;
        Ok(Self {
            store,
            archive,
            policy,
            clock,
            observer: None,
        })
    }

    /// Tells `observer` of every step of every flow.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn ArchiveObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The archive it writes to (and reads archived flows from).
    #[must_use]
    pub fn archive(&self) -> &ArchiveStore {
        &self.archive
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &ArchivePolicy {
        &self.policy
    }

    /// One pass: first the flows an earlier pass left marked `archived` in the live store,
    /// then the deactivated flows the policy selects, oldest (then largest) first, in
    /// batches. A flow that fails is reported and left in the live store; an error is
    /// returned only when the live store cannot be listed.
    pub async fn run_once(&self) -> Result<ArchiveReport, ArchiveError> {
        let mut report = ArchiveReport::default();
        let archived_key = PlanState::Archived.key();
        let mut unfinished = Vec::new();
        self.scan(Some(archived_key), |flow| unfinished.push(candidate(flow)))
            .await?;
        for batch in unfinished.chunks(self.policy.batch_size) {
            self.batch(batch, true, &mut report).await;
        }

        let mut candidates = Vec::new();
        for (kind, status) in FINISHED {
            self.scan_kind(kind, Some(status.key()), |flow| {
                // A finished flow still ready has a run to finish (its worker releases it
                // after telling a parent it ended): archiving it now could lose that telling.
                if !flow.ready {
                    candidates.push(candidate(flow));
                }
            })
            .await?;
        }
        let mut totals = LiveTotals::default();
        if self.policy.has_limits() && !candidates.is_empty() {
            self.scan_all(|flow| {
                totals.flows += 1;
                totals.bytes += flow.bytes;
            })
            .await?;
        }
        let selected = select(candidates, totals, &self.policy, self.clock.now());
        for batch in selected.chunks(self.policy.batch_size) {
            self.batch(batch, false, &mut report).await;
        }
        Ok(report)
    }

    /// Runs a pass every `interval` until `shutdown` completes, and returns what all passes
    /// did. A pass that cannot list the live store is logged and tried again next time.
    /// Shutdown stops a pass where it is (see the module docs: that loses nothing).
    pub async fn run(
        &self,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> ArchiveReport {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut total = ArchiveReport::default();
        loop {
            tokio::select! {
                () = &mut shutdown => return total,
                pass = self.run_once() => match pass {
                    Ok(report) => {
                        for failure in &report.failed {
                            tracing::warn!(flow = %failure.flow, error = %failure.error, "archiving failed; the flow stays live and is tried again next pass");
                        }
                        total.add(report);
                    }
                    Err(error) => tracing::warn!(%error, "archive pass failed; trying again next pass"),
                },
            }
            tokio::select! {
                () = &mut shutdown => return total,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Plan flows in the live store with status `status`, page by page.
    async fn scan(
        &self,
        status: Option<&str>,
        each: impl FnMut(&FlowSummary),
    ) -> Result<(), ArchiveError> {
        self.scan_kind(FlowKind::Plan, status, each).await
    }

    /// Flows of `kind` in the live store with status `status`, page by page.
    async fn scan_kind(
        &self,
        kind: FlowKind,
        status: Option<&str>,
        each: impl FnMut(&FlowSummary),
    ) -> Result<(), ArchiveError> {
        let query = FlowQuery {
            kind: Some(kind),
            status: status.map(str::to_owned),
            limit: MAX_PAGE_SIZE,
            ..FlowQuery::default()
        };
        self.scan_query(query, each).await
    }

    /// Every flow in the live store, page by page.
    async fn scan_all(&self, each: impl FnMut(&FlowSummary)) -> Result<(), ArchiveError> {
        let query = FlowQuery {
            limit: MAX_PAGE_SIZE,
            ..FlowQuery::default()
        };
        self.scan_query(query, each).await
    }

    async fn scan_query(
        &self,
        mut query: FlowQuery,
        mut each: impl FnMut(&FlowSummary),
    ) -> Result<(), ArchiveError> {
        loop {
            let page = self.store.list(&query).await?;
            page.flows.iter().for_each(&mut each);
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => return Ok(()),
            }
        }
    }

    /// Archives the flows of one batch, all in flight at once.
    async fn batch(&self, batch: &[Candidate], recovering: bool, report: &mut ArchiveReport) {
        // Futures pushed one by one (not a stream of closures), so that the pass stays a
        // future that can be spawned.
        let mut in_flight = FuturesUnordered::new();
        for candidate in batch {
            let flow = candidate.id;
            in_flight.push(async move { (flow, self.archive_one(flow).await) });
        }
        let mut results = Vec::with_capacity(batch.len());
        while let Some(done) = in_flight.next().await {
            results.push(done);
        }
        report.batches += 1;
        for (flow, result) in results {
            match result {
                Ok(Some(moved)) => {
                    if recovering {
                        report.recovered += 1;
                    } else {
                        report.archived += 1;
                    }
                    report.bytes += moved.bytes;
                    report.events += moved.events;
                }
                Ok(None) => report.skipped += 1,
                Err(error) => report.failed.push(ArchiveFailure {
                    flow,
                    error: error.to_string(),
                }),
            }
        }
    }

    async fn observe(&self, flow: FlowId, step: ArchiveStep) {
        if let Some(observer) = &self.observer {
            observer.step(flow, step).await;
        }
    }

    /// The four steps for one flow (three for a kind without an `archived` state, which is
    /// not marked). `None`: another process removed it meanwhile.
    async fn archive_one(&self, flow: FlowId) -> Result<Option<Moved>, ArchiveError> {
        if !self.mark(flow).await? {
            return Ok(None);
        }
        self.observe(flow, ArchiveStep::Marked).await;

        let events = match read_all(self.store.as_ref(), flow).await {
            Ok(events) => events,
            Err(StoreError::UnknownFlow { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let archived = ArchivedFlow::from_log(flow, events)?;
        let bytes = archived.encode()?;
        let moved = Moved {
            bytes: bytes.len() as u64,
            events: archived.events.len() as u64,
        };
        self.archive.put(flow, bytes.clone()).await?;
        self.observe(flow, ArchiveStep::Written).await;

        let back = self.archive.get(flow).await?;
        verify(&archived, &bytes, back.as_deref())?;
        self.observe(flow, ArchiveStep::Verified).await;

        match self.store.flow(flow).await? {
            // Another archiver finished it first: the copy is verified all the same.
            None => return Ok(None),
            Some(live) if live.events() != moved.events => {
                return Err(ArchiveError::ChangedAfterArchive {
                    flow,
                    live: live.events(),
                    archived: moved.events,
                })
            }
            Some(_) => {}
        }
        if !self.store.delete_flow(flow).await? {
            return Ok(None);
        }
        self.observe(flow, ArchiveStep::Deleted).await;
        Ok(Some(moved))
    }

    /// Appends `archived` to a deactivated flow's log; a flow already `archived` (an earlier
    /// pass stopped after this step) is left as it is. Returns `false` when the flow is gone.
    async fn mark(&self, flow: FlowId) -> Result<bool, ArchiveError> {
        let write = |source: WriteError| ArchiveError::Write { flow, source };
        // A conflict means another process appended first (another archiver marking it):
        // reload once and look again.
        for _attempt in 0..2 {
            let mut writer = match FlowWriter::load(self.store.as_ref(), flow).await {
                Ok(writer) => writer,
                Err(WriteError::Store(StoreError::UnknownFlow { .. })) => return Ok(false),
                Err(error) => return Err(write(error)),
            };
            let Some(record) = writer.record() else {
                return Ok(false);
            };
            match record.status {
                FlowStatus::Plan(PlanState::Archived) => return Ok(true),
                FlowStatus::Plan(PlanState::Deactivated) => {}
                // Task graphs and functions have no `archived` state: a finished one is
                // written as it is, and stays visible until it is deleted.
                status if is_finished(status) => return Ok(true),
                status => {
                    return Err(ArchiveError::NotArchivable {
                        flow,
                        kind: record.kind.key().to_owned(),
                        state: status.key().to_owned(),
                    })
                }
            }
            let body = EventBody::PlanStateChanged {
                to: PlanState::Archived,
                reason: None,
            };
            match writer
                .append(self.store.as_ref(), self.clock.as_ref(), vec![body])
                .await
            {
                Ok(_) => return Ok(true),
                Err(WriteError::Store(StoreError::Conflict { .. })) => {}
                Err(WriteError::Store(StoreError::UnknownFlow { .. })) => return Ok(false),
                Err(error) => return Err(write(error)),
            }
        }
        Err(ArchiveError::Contended { flow })
    }
}

fn candidate(flow: &FlowSummary) -> Candidate {
    Candidate {
        id: flow.id,
        updated_at: flow.updated_at,
        bytes: flow.bytes,
    }
}

/// Checks the file read back: the same bytes as written, the live log's events, and a log
/// that folds to `archived`.
fn verify(
    archived: &ArchivedFlow,
    written: &[u8],
    back: Option<&[u8]>,
) -> Result<(), ArchiveError> {
    let flow = archived.flow;
    let failed = |detail: String| ArchiveError::VerifyFailed { flow, detail };
    let back = back.ok_or_else(|| failed("the file is missing after the write".to_owned()))?;
    if back != written {
        return Err(failed(format!(
            "{} bytes were written, {} different bytes read back",
            written.len(),
            back.len()
        )));
    }
    let decoded = ArchivedFlow::decode(flow, back).map_err(|e| failed(e.to_string()))?;
    if decoded.events.len() != archived.events.len() {
        return Err(failed(format!(
            "the copy has {} events, the live log {}",
            decoded.events.len(),
            archived.events.len()
        )));
    }
    for (copy, live) in decoded.events.iter().zip(&archived.events) {
        if !same_event(copy, live) {
            return Err(failed(format!("event {} differs", live.seq)));
        }
    }
    let record = decoded
        .replay(StopAt::End)
        .map_err(|e| failed(e.to_string()))?;
    if !is_archived_state(record.status) {
        return Err(failed(format!("the copy folds to {}", record.status)));
    }
    Ok(())
}

/// The same event: envelope equal, and the body the same bytes or the same JSON (the file
/// embeds a body without surrounding whitespace).
fn same_event(copy: &RawEvent, live: &RawEvent) -> bool {
    let envelope = copy.flow == live.flow
        && copy.seq == live.seq
        && copy.time == live.time
        && copy.format == live.format;
    envelope
        && (copy.body == live.body || {
            let parse = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).ok();
            parse(&copy.body).is_some_and(|copy| Some(copy) == parse(&live.body))
        })
}
