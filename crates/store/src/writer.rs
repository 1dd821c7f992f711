//! [`FlowWriter`]: the one path from "this happened" to the log. It checks each new event
//! against the fold (so a transition the tables refuse never reaches a store), encodes it,
//! derives the index values, and appends atomically.
//!
//! Events can be *staged* (checked and folded into the writer's state at once) and committed
//! later as one append, which is how an engine records the results it analysed and the
//! transitions it starts in one durable commit. Folding happens in place, so the cost of an
//! event does not depend on the size of the flow.
//!
//! **Invariant:** if staging is refused or a commit fails, the writer's in-memory state may
//! be ahead of the log; it then refuses further use with [`WriteError::Stale`] and the caller
//! must [`FlowWriter::load`] the flow again. That is also the right reaction to a conflict.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use flowstate_core::fold::Folder;
use flowstate_core::{
    Clock, EncodeError, Event, EventBody, FlowId, FlowRecord, FlowStatus, FoldError, RawEvent,
    EVENT_FORMAT_VERSION,
};

use crate::error::StoreError;
use crate::types::{AppendBatch, AppendOutcome, NewEvent, NewFlow, NewTimer};
use crate::Store;

/// Events per read when a flow is loaded (after the first read).
const LOAD_PAGE: usize = 2_500;

/// Events of the first read when a flow is loaded.
const FIRST_LOAD_PAGE: usize = 500;

/// Reads in flight while a flow is loaded (after the first read).
const READS_AHEAD: usize = 2;
const _: () = assert!(READS_AHEAD > 0);

/// A read of a page of a log, and what it read once it is done.
struct Read<'a> {
    future: Pin<Box<dyn Future<Output = Result<Vec<RawEvent>, StoreError>> + Send + 'a>>,
    done: Option<Result<Vec<RawEvent>, StoreError>>,
}

/// Why recording events failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The events do not follow from the flow's state (for example a transition the state
    /// tables refuse); nothing was written.
    #[error(transparent)]
    Refused(#[from] FoldError),
    /// An event could not be encoded; nothing was written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The store failed or refused; on [`StoreError::Conflict`], reload and decide again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An earlier staging or commit failed; load the flow again.
    #[error("flow {flow}: the writer's state is ahead of the log after an earlier failure; load the flow again")]
    Stale {
        /// The flow.
        flow: FlowId,
    },
    /// A compaction was asked for while events are staged; nothing was written.
    #[error("flow {flow}: events are staged; commit them before compacting the log")]
    StagedEvents {
        /// The flow.
        flow: FlowId,
    },
    /// A compaction's new log folds to another status than the flow's; nothing was written.
    #[error(
        "flow {flow}: the compacted log folds to status {to}, not to the flow's status {from}"
    )]
    CompactionChangesState {
        /// The flow.
        flow: FlowId,
        /// The flow's status.
        from: FlowStatus,
        /// The status the new log folds to.
        to: FlowStatus,
    },
    /// A compaction's new log runs another definition than the flow's (the store keeps the
    /// index row's); nothing was written.
    #[error("flow {flow}: the compacted log runs definition {to:?}, not the flow's {from:?}")]
    CompactionChangesDefinition {
        /// The flow.
        flow: FlowId,
        /// The flow's definition.
        from: String,
        /// The definition of the new log.
        to: String,
    },
    /// A compacted log must be shorter than the log it replaces; nothing was written.
    #[error(
        "flow {flow}: a compaction to {compacted} events would not shorten its log of {events}"
    )]
    CompactionNotShorter {
        /// The flow.
        flow: FlowId,
        /// Events in the log.
        events: u64,
        /// Events of the compacted log.
        compacted: usize,
    },
}

/// Extra index changes that go with an append.
#[derive(Debug, Clone, Default)]
pub struct AppendExtras {
    /// Sets or clears the ready flag.
    pub ready: Option<bool>,
    /// Timers to set in the same transaction.
    pub timers: Vec<NewTimer>,
}

/// Writes one flow's log, keeping the folded state in step with it.
#[derive(Debug, Clone)]
pub struct FlowWriter {
    flow: FlowId,
    folder: Folder,
    /// The log's next sequence number (staged events not counted).
    durable_next_seq: u64,
    /// The status the log's index has (before staged events).
    durable_status: Option<FlowStatus>,
    staged: Vec<NewEvent>,
    stale: bool,
}

impl FlowWriter {
    /// A writer for a flow that does not exist yet; its first event must be `flow_created`.
    #[must_use]
    pub fn new(flow: FlowId) -> Self {
        Self {
            flow,
            folder: Folder::new(),
            durable_next_seq: 1,
            durable_status: None,
            staged: Vec::new(),
            stale: false,
        }
    }

    /// Loads an existing flow by folding its whole log.
    ///
    /// The log is read in pages, and each page is folded while the store reads the next ones
    /// ([`READS_AHEAD`] at once, on threads or connections of its own), so reading and
    /// folding a long log overlap instead of adding up.
    pub async fn load(store: &dyn Store, flow: FlowId) -> Result<Self, WriteError> {
        let mut folder = Folder::new();
        let fold_page = |folder: &mut Folder, page: &[RawEvent]| {
            page.iter()
                .try_for_each(|raw| folder.apply_raw(raw))
                .map_err(WriteError::from)
        };
        // A small first page, so that folding starts soon.
        let mut page = store.read(flow, 1, FIRST_LOAD_PAGE).await?;
        let mut full = page.len() == FIRST_LOAD_PAGE;
        let mut from = FIRST_LOAD_PAGE as u64 + 1;
        let mut reading = VecDeque::new();
        while full {
            while reading.len() < READS_AHEAD {
                let future = store.read(flow, from, LOAD_PAGE);
                reading.push_back(Read { future, done: None });
                from += LOAD_PAGE as u64;
            }
            let mut folded = false;
            // The first poll starts the reads; the page is folded meanwhile.
            page = std::future::poll_fn(|cx| {
                for read in reading.iter_mut().filter(|read| read.done.is_none()) {
                    if let Poll::Ready(done) = read.future.as_mut().poll(cx) {
                        read.done = Some(done);
                    }
                }
                if !folded {
                    folded = true;
                    if let Err(error) = fold_page(&mut folder, &page) {
                        return Poll::Ready(Err(error));
                    }
                }
                match reading.front_mut().and_then(|oldest| oldest.done.take()) {
                    Some(done) => Poll::Ready(done.map_err(WriteError::from)),
                    None => Poll::Pending,
                }
            })
            .await?;
            reading.pop_front();
            // A short page is the end of the log (reads after it are dropped).
            full = page.len() == LOAD_PAGE;
        }
        fold_page(&mut folder, &page)?;
        Ok(Self {
            flow,
            durable_next_seq: folder.next_seq(),
            durable_status: folder.record().map(|r| r.status),
            folder,
            staged: Vec::new(),
            stale: false,
        })
    }

    /// The flow.
    #[must_use]
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// Its state including staged events, once created.
    #[must_use]
    pub fn record(&self) -> Option<&FlowRecord> {
        self.folder.record()
    }

    /// The log's next sequence number as this writer last saw it durable (staged events not
    /// counted): where its next commit goes.
    #[must_use]
    pub fn durable_next_seq(&self) -> u64 {
        self.durable_next_seq
    }

    /// Whether events are staged and not yet committed.
    #[must_use]
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    fn check_fresh(&self) -> Result<(), WriteError> {
        if self.stale {
            return Err(WriteError::Stale { flow: self.flow });
        }
        Ok(())
    }

    /// Checks `bodies` against the flow's state and folds them in, timed by `clock`; they
    /// reach the log with the next [`FlowWriter::commit`].
    pub fn stage(&mut self, clock: &dyn Clock, bodies: Vec<EventBody>) -> Result<(), WriteError> {
        self.check_fresh()?;
        let time = clock.now();
        let staged_before = self.staged.len();
        for body in bodies {
            let event = Event {
                flow: self.flow,
                seq: self.folder.next_seq(),
                time,
                body,
            };
            let encoded = event.body.encode();
            let applied = encoded.map_err(WriteError::from).and_then(|bytes| {
                self.folder.apply(&event)?;
                Ok(bytes)
            });
            match applied {
                Ok(body) => self.staged.push(NewEvent {
                    time,
                    format: EVENT_FORMAT_VERSION,
                    body,
                }),
                Err(error) => {
                    // The refused event left the state untouched (the fold is atomic per
                    // event); earlier events of this call were folded in, and cannot be
                    // taken back without a reload.
                    self.stale = self.staged.len() > staged_before;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Appends everything staged as one atomic append, with `extras`. Does nothing (and
    /// returns `None`) when nothing is staged: an append needs at least one event, so extras
    /// alone are not sent.
    pub async fn commit(
        &mut self,
        store: &dyn Store,
        extras: AppendExtras,
    ) -> Result<Option<AppendOutcome>, WriteError> {
        self.check_fresh()?;
        if self.staged.is_empty() {
            return Ok(None);
        }
        let record = self.folder.record().ok_or(FoldError::EmptyLog)?;
        let expected_next_seq = self.durable_next_seq;
        let create = (expected_next_seq == 1).then(|| NewFlow {
            kind: record.kind,
            definition: record.definition.clone(),
        });
        let status = (self.durable_status != Some(record.status)).then_some(record.status);
        let batch = AppendBatch {
            flow: self.flow,
            expected_next_seq,
            events: std::mem::take(&mut self.staged),
            create,
            status,
            ready: extras.ready,
            timers: extras.timers,
        };
        // Stale until the append is known to have succeeded: if this future is dropped
        // mid-append (its task aborted), the staged events are gone from the writer but may
        // or may not be in the log, so the writer must be loaded again.
        self.stale = true;
        match store.append(batch).await {
            Ok(outcome) => {
                self.stale = false;
                self.durable_next_seq = outcome.next_seq;
                self.durable_status = Some(record.status);
                Ok(Some(outcome))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces the flow's log by `bodies` (timed by `clock`), which must fold, from the start,
    /// to a record whose status is the current one (else [`WriteError::Refused`] or another
    /// typed error, and nothing is written). On success the writer's state is the new log's.
    ///
    /// This is how a finished flow's log is compacted: a durable function that is done keeps
    /// its outcome and drops its journal. The new log is folded with a fresh [`Folder`] (the
    /// same flow, numbered from 1) and must keep the flow's status and definition; it is sent
    /// with [`Store::compact`], which succeeds only if nobody appended since this writer last
    /// saw the log ([`StoreError::Conflict`] otherwise). Refused while events are staged
    /// ([`WriteError::StagedEvents`]). As with [`FlowWriter::commit`], a failed or abandoned
    /// store call leaves the writer stale: load the flow again.
    pub async fn compact(
        &mut self,
        store: &dyn Store,
        clock: &dyn Clock,
        bodies: Vec<EventBody>,
    ) -> Result<AppendOutcome, WriteError> {
        let time = clock.now();
        let timed = bodies.into_iter().map(|body| (time, body)).collect();
        self.compact_timed(store, timed).await
    }

    /// [`FlowWriter::compact`] with a time for each new event (a compacted log can keep the
    /// times of the events it summarises: the creation's, the outcome's).
    ///
    /// The new log must be shorter than the old one ([`WriteError::CompactionNotShorter`]):
    /// a log whose length came back to a value a slow writer once read could let that
    /// writer's append through the sequence check.
    pub async fn compact_timed(
        &mut self,
        store: &dyn Store,
        timed: Vec<(flowstate_core::Timestamp, EventBody)>,
    ) -> Result<AppendOutcome, WriteError> {
        self.check_fresh()?;
        if self.has_staged() {
            return Err(WriteError::StagedEvents { flow: self.flow });
        }
        let current = self
            .folder
            .record()
            .ok_or(StoreError::UnknownFlow { flow: self.flow })?;
        if timed.len() as u64 >= current.last_seq {
            return Err(WriteError::CompactionNotShorter {
                flow: self.flow,
                events: current.last_seq,
                compacted: timed.len(),
            });
        }
        let mut folder = Folder::new();
        let mut events = Vec::with_capacity(timed.len());
        for (time, body) in timed {
            let event = Event {
                flow: self.flow,
                seq: folder.next_seq(),
                time,
                body,
            };
            let body = event.body.encode()?;
            folder.apply(&event)?;
            events.push(NewEvent {
                time,
                format: EVENT_FORMAT_VERSION,
                body,
            });
        }
        let record = folder.record().ok_or(FoldError::EmptyLog)?;
        if record.status != current.status {
            return Err(WriteError::CompactionChangesState {
                flow: self.flow,
                from: current.status,
                to: record.status,
            });
        }
        if record.definition != current.definition {
            return Err(WriteError::CompactionChangesDefinition {
                flow: self.flow,
                from: current.definition.clone(),
                to: record.definition.clone(),
            });
        }
        let status = record.status;
        // Stale until the compaction is known to have succeeded (see `commit`).
        self.stale = true;
        let outcome = store
            .compact(self.flow, self.durable_next_seq, events, status)
            .await?;
        self.stale = false;
        self.folder = folder;
        self.durable_next_seq = outcome.next_seq;
        self.durable_status = Some(status);
        Ok(outcome)
    }

    /// Records `bodies` as one atomic append, timed by `clock`.
    pub async fn append(
        &mut self,
        store: &dyn Store,
        clock: &dyn Clock,
        bodies: Vec<EventBody>,
    ) -> Result<AppendOutcome, WriteError> {
        self.append_with(store, clock, bodies, AppendExtras::default())
            .await
    }

    /// Records `bodies` with index changes, as one atomic append.
    pub async fn append_with(
        &mut self,
        store: &dyn Store,
        clock: &dyn Clock,
        bodies: Vec<EventBody>,
        extras: AppendExtras,
    ) -> Result<AppendOutcome, WriteError> {
        self.stage(clock, bodies)?;
        self.commit(store, extras)
            .await?
            .ok_or(WriteError::Refused(FoldError::EmptyLog))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use flowstate_core::machine::FlowState;
    use flowstate_core::{FlowKind, ManualClock, Timestamp};

    use super::*;
    use crate::MemoryStore;

    fn created(definition: &str) -> EventBody {
        EventBody::FlowCreated {
            kind: FlowKind::TaskGraph,
            definition: definition.to_owned(),
            input: serde_json::json!({"n": 1}),
        }
    }

    fn to(state: FlowState) -> EventBody {
        EventBody::FlowStateChanged { to: state }
    }

    /// A task graph that ran, suspended on its way and succeeded: four events.
    async fn finished() -> (MemoryStore, Arc<ManualClock>, FlowWriter) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_767_225_600_000_000,
        )));
        let store = MemoryStore::new(clock.clone());
        let flow = FlowId::from_parts(clock.now(), [3; 10]);
        let mut writer = FlowWriter::new(flow);
        writer
            .append(
                &store,
                clock.as_ref(),
                vec![created("g"), to(FlowState::Running)],
            )
            .await
            .expect("create");
        clock.advance(Duration::from_secs(1));
        writer
            .append(
                &store,
                clock.as_ref(),
                vec![to(FlowState::Suspending), to(FlowState::Success)],
            )
            .await
            .expect("finish");
        (store, clock, writer)
    }

    async fn log_len(store: &MemoryStore, flow: FlowId) -> usize {
        crate::read_all(store, flow).await.expect("read").len()
    }

    #[tokio::test]
    async fn a_compaction_that_keeps_the_state_replaces_the_log_and_the_writers_state() {
        let (store, clock, mut writer) = finished().await;
        let flow = writer.flow();
        clock.advance(Duration::from_secs(1));
        let outcome = writer
            .compact(
                &store,
                clock.as_ref(),
                vec![created("g"), to(FlowState::Running), to(FlowState::Success)],
            )
            .await
            .expect("compact");
        assert_eq!((outcome.first_seq, outcome.next_seq), (1, 4));
        assert_eq!(writer.durable_next_seq(), 4);
        let record = writer.record().expect("record");
        assert_eq!(record.status, FlowStatus::TaskGraph(FlowState::Success));
        assert_eq!(record.last_seq, 3);
        let log = crate::read_all(&store, flow).await.expect("read");
        assert_eq!(log.len(), 3);
        assert!(
            log.iter().all(|e| e.time == clock.now()),
            "timed by the clock"
        );
        let loaded = FlowWriter::load(&store, flow).await.expect("load");
        assert_eq!(
            loaded.record(),
            writer.record(),
            "the writer's state is the log's"
        );
        let summary = store.flow(flow).await.expect("flow").expect("exists");
        assert_eq!(summary.status, FlowStatus::TaskGraph(FlowState::Success));
        // The writer goes on from the new log.
        let outcome = writer
            .append(&store, clock.as_ref(), vec![to(FlowState::Running)])
            .await
            .expect("append after the compaction");
        assert_eq!((outcome.first_seq, outcome.next_seq), (4, 5));
        assert_eq!(
            store
                .flow(flow)
                .await
                .expect("flow")
                .expect("exists")
                .status,
            FlowStatus::TaskGraph(FlowState::Running)
        );
    }

    #[tokio::test]
    async fn a_compaction_that_changes_the_state_or_does_not_fold_writes_nothing() {
        let (store, clock, mut writer) = finished().await;
        let flow = writer.flow();
        let before = crate::read_all(&store, flow).await.expect("read");
        let changes = writer
            .compact(
                &store,
                clock.as_ref(),
                vec![created("g"), to(FlowState::Running)],
            )
            .await;
        assert!(
            matches!(
                changes,
                Err(WriteError::CompactionChangesState {
                    from: FlowStatus::TaskGraph(FlowState::Success),
                    to: FlowStatus::TaskGraph(FlowState::Running),
                    ..
                })
            ),
            "{changes:?}"
        );
        let definition = writer
            .compact(
                &store,
                clock.as_ref(),
                vec![
                    created("other"),
                    to(FlowState::Running),
                    to(FlowState::Success),
                ],
            )
            .await;
        assert!(
            matches!(
                definition,
                Err(WriteError::CompactionChangesDefinition { .. })
            ),
            "{definition:?}"
        );
        let unfolded = writer
            .compact(&store, clock.as_ref(), vec![to(FlowState::Running)])
            .await;
        assert!(
            matches!(
                unfolded,
                Err(WriteError::Refused(FoldError::NotCreatedFirst {
                    seq: 1,
                    ..
                }))
            ),
            "{unfolded:?}"
        );
        let refused = writer
            .compact(
                &store,
                clock.as_ref(),
                vec![created("g"), to(FlowState::Success)],
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(WriteError::Refused(FoldError::Transition { seq: 2, .. }))
            ),
            "{refused:?}"
        );
        let empty = writer.compact(&store, clock.as_ref(), vec![]).await;
        assert!(
            matches!(empty, Err(WriteError::Refused(FoldError::EmptyLog))),
            "{empty:?}"
        );
        assert_eq!(crate::read_all(&store, flow).await.expect("read"), before);
        // None of these touched the writer: it still appends where the log ends.
        let outcome = writer
            .append(&store, clock.as_ref(), vec![to(FlowState::Running)])
            .await
            .expect("append");
        assert_eq!(outcome.first_seq, 5);
    }

    #[tokio::test]
    async fn a_compaction_is_refused_while_events_are_staged_and_after_a_conflict() {
        let (store, clock, mut writer) = finished().await;
        let flow = writer.flow();
        let compacted = || vec![created("g"), to(FlowState::Running), to(FlowState::Success)];
        writer
            .stage(clock.as_ref(), vec![to(FlowState::Running)])
            .expect("stage");
        let staged = writer.compact(&store, clock.as_ref(), compacted()).await;
        assert!(
            matches!(staged, Err(WriteError::StagedEvents { .. })),
            "{staged:?}"
        );
        assert_eq!(log_len(&store, flow).await, 4);
        writer
            .commit(&store, AppendExtras::default())
            .await
            .expect("commit");

        // Another writer appends meanwhile: the compaction conflicts, writes nothing, and
        // this writer must be loaded again.
        let mut other = FlowWriter::load(&store, flow).await.expect("load");
        let mut stale = FlowWriter::load(&store, flow).await.expect("load");
        other
            .append(&store, clock.as_ref(), vec![to(FlowState::Success)])
            .await
            .expect("append");
        let conflict = stale
            .compact(
                &store,
                clock.as_ref(),
                vec![created("g"), to(FlowState::Running)],
            )
            .await;
        assert!(
            matches!(
                conflict,
                Err(WriteError::Store(StoreError::Conflict {
                    expected: 6,
                    actual: 7,
                    ..
                }))
            ),
            "{conflict:?}"
        );
        assert_eq!(log_len(&store, flow).await, 6);
        let again = stale
            .append(&store, clock.as_ref(), vec![to(FlowState::Success)])
            .await;
        assert!(matches!(again, Err(WriteError::Stale { .. })), "{again:?}");

        // A writer of a flow that was never created has nothing to compact.
        let mut new = FlowWriter::new(FlowId::from_parts(clock.now(), [4; 10]));
        let unknown = new.compact(&store, clock.as_ref(), compacted()).await;
        assert!(
            matches!(
                unknown,
                Err(WriteError::Store(StoreError::UnknownFlow { .. }))
            ),
            "{unknown:?}"
        );
    }
}
