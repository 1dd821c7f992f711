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

use flowstate_store::{
    AppendBatch, AppendOutcome, IdempotencyKey, NewEvent, NewFlow, NewTimer, Store, StoreError,
};

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
    /// A compaction's new log changes another part of the flow's record that a compaction
    /// must keep (its kind, input, parent or creation time); nothing was written.
    #[error("flow {flow}: the compacted log changes the flow's {field}")]
    CompactionChanges {
        /// The flow.
        flow: FlowId,
        /// What it changes.
        field: CompactedField,
    },
}

impl WriteError {
    /// Whether another writer advanced the log first ([`StoreError::Conflict`]): reload and
    /// decide again (or rebase, [`crate::rebase`]).
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(StoreError::Conflict { .. }))
    }
}

/// A part of a flow's record that a compaction must keep ([`WriteError::CompactionChanges`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactedField {
    /// The flow's kind.
    Kind,
    /// Its input.
    Input,
    /// The flow that started it as its child (`child_of`).
    Parent,
    /// Its creation time (the time of its `flow_created`).
    CreatedAt,
}

impl std::fmt::Display for CompactedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kind => "kind",
            Self::Input => "input",
            Self::Parent => "parent",
            Self::CreatedAt => "creation time",
        })
    }
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
    /// What the staged events mean to operators, told after their commit.
    observed: Vec<crate::observe::Observed>,
    stale: bool,
    /// The idempotency key the creation records (sent with the first append).
    idempotency: Option<IdempotencyKey>,
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
            observed: Vec::new(),
            stale: false,
            idempotency: None,
        }
    }

    /// The idempotency key the creation's append records (`None` once it is recorded, or
    /// for a creation without one).
    #[must_use]
    pub fn idempotency(&self) -> Option<&IdempotencyKey> {
        self.idempotency.as_ref()
    }

    /// The creation's append (the first) records `key` with the flow, atomically.
    pub(crate) fn set_idempotency(&mut self, key: Option<IdempotencyKey>) {
        self.idempotency = key;
    }

    /// Loads an existing flow by folding its whole log (from its first event: 1, or later
    /// once compacted).
    ///
    /// The log is read in pages, and each page is folded while the store reads the next ones
    /// (`READS_AHEAD` at once, on threads or connections of its own), so reading and
    /// folding a long log overlap instead of adding up. A compaction between two pages makes
    /// the pages not follow each other (a gap); the load then starts over, once.
    pub async fn load(store: &dyn Store, flow: FlowId) -> Result<Self, WriteError> {
        match Self::load_once(store, flow).await {
            Err(WriteError::Refused(FoldError::Gap { .. })) => Self::load_once(store, flow).await,
            loaded => loaded,
        }
    }

    async fn load_once(store: &dyn Store, flow: FlowId) -> Result<Self, WriteError> {
        let mut folder = Folder::new();
        let fold_page = |folder: &mut Folder, page: &[RawEvent]| {
            page.iter()
                .try_for_each(|raw| folder.apply_raw(raw))
                .map_err(WriteError::from)
        };
        // A small first page, so that folding starts soon.
        let mut page = store.read(flow, 1, FIRST_LOAD_PAGE).await?;
        let mut full = page.len() == FIRST_LOAD_PAGE;
        // The pages after the first follow its last event (a compacted log starts after 1).
        let mut from = page.last().map_or(1, |last| last.seq + 1);
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
            observed: Vec::new(),
            stale: false,
            idempotency: None,
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

    /// Its state including staged events, taking the writer (no copy of the state).
    pub fn into_record(self) -> Result<FlowRecord, FoldError> {
        self.folder.finish()
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
                Ok(body) => {
                    self.staged.push(NewEvent {
                        time,
                        format: EVENT_FORMAT_VERSION,
                        body,
                    });
                    self.observed.extend(crate::observe::observe(&event.body));
                }
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
            idempotency: self.idempotency.clone(),
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
        let appended = store.append(batch).await;
        // Told once durable, or never (a rebase stages again what it still means); the
        // buffer's capacity is kept for the next commit.
        if let Ok(outcome) = &appended {
            self.stale = false;
            self.idempotency = None;
            self.durable_next_seq = outcome.next_seq;
            crate::observe::committed(self.durable_status, record, &self.observed);
            self.durable_status = Some(record.status);
        }
        self.observed.clear();
        Ok(Some(appended?))
    }

    /// Replaces the flow's log by `bodies` (timed by `clock`, except a `flow_created`, which
    /// keeps the flow's creation time), which must fold, from their `flow_created`, to a record
    /// that keeps what the current one says about the flow (else
    /// [`WriteError::Refused`] or another typed error, and nothing is written). On success the
    /// writer's state is the new log's.
    ///
    /// This is how a finished flow's log is compacted: a durable function that is done keeps
    /// its outcome and drops its journal. The new log is numbered right after the current one
    /// (from [`FlowWriter::durable_next_seq`]: sequence numbers never go back, so a writer that
    /// read the log before the compaction can never append to the new one) and folded with a
    /// fresh [`Folder`] (the same flow). Exactly these are compared with the current record, and
    /// must be equal: the status ([`WriteError::CompactionChangesState`]), the definition
    /// ([`WriteError::CompactionChangesDefinition`]), and the kind, input, parent (`child_of`)
    /// and creation time ([`WriteError::CompactionChanges`]); the rest (journal, atoms, plan
    /// state, update time, ...) is what a compaction may summarise or drop, and is the caller's
    /// responsibility. The new log is sent with [`Store::compact`], which succeeds only if
    /// nobody appended since this writer last saw the log ([`StoreError::Conflict`]
    /// otherwise). Refused while events are staged ([`WriteError::StagedEvents`]). As with
    /// [`FlowWriter::commit`], a failed or abandoned store call leaves the writer stale: load
    /// the flow again.
    pub async fn compact(
        &mut self,
        store: &dyn Store,
        clock: &dyn Clock,
        bodies: Vec<EventBody>,
    ) -> Result<AppendOutcome, WriteError> {
        let time = clock.now();
        let created_at = self.folder.record().map_or(time, |r| r.created_at);
        let timed = bodies
            .into_iter()
            .map(|body| match body {
                EventBody::FlowCreated { .. } => (created_at, body),
                body => (time, body),
            })
            .collect();
        self.compact_timed(store, timed).await
    }

    /// [`FlowWriter::compact`] with a time for each new event (a compacted log can keep the
    /// times of the events it summarises: the creation's, the outcome's).
    ///
    /// The new log need not be shorter than the old one (whether compacting is worth it is the
    /// caller's call): since it is numbered after the old one, no sequence number is ever used
    /// twice, whatever its length.
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
        // Numbered after the current log; a fresh folder accepts a first event after 1 only if
        // it is `flow_created` (said here as such, rather than as a gap).
        let mut seq = self.durable_next_seq;
        if let Some((_, first)) = timed.first() {
            if !matches!(first, EventBody::FlowCreated { .. }) {
                return Err(FoldError::NotCreatedFirst {
                    seq,
                    found: first.type_name(),
                }
                .into());
            }
        }
        let mut folder = Folder::new();
        let mut events = Vec::with_capacity(timed.len());
        for (time, body) in timed {
            let event = Event {
                flow: self.flow,
                seq,
                time,
                body,
            };
            let body = event.body.encode()?;
            folder.apply(&event)?;
            seq = folder.next_seq();
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
        let changed = [
            (record.kind != current.kind, CompactedField::Kind),
            (record.input != current.input, CompactedField::Input),
            (record.parent != current.parent, CompactedField::Parent),
            (
                record.created_at != current.created_at,
                CompactedField::CreatedAt,
            ),
        ]
        .into_iter()
        .find_map(|(changed, field)| changed.then_some(field));
        if let Some(field) = changed {
            return Err(WriteError::CompactionChanges {
                flow: self.flow,
                field,
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
    use flowstate_store::MemoryStore;

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
        flowstate_store::read_all(store, flow)
            .await
            .expect("read")
            .len()
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
        // Numbered after the old log: the next sequence number never goes down.
        assert_eq!((outcome.first_seq, outcome.next_seq), (5, 8));
        assert_eq!(writer.durable_next_seq(), 8);
        let record = writer.record().expect("record");
        assert_eq!(record.status, FlowStatus::TaskGraph(FlowState::Success));
        assert_eq!((record.first_seq, record.last_seq), (5, 7));
        let log = flowstate_store::read_all(&store, flow).await.expect("read");
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(
            log[0].time,
            writer.record().expect("record").created_at,
            "the creation keeps its time"
        );
        assert!(
            log[1..].iter().all(|e| e.time == clock.now()),
            "the rest timed by the clock"
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
        assert_eq!((outcome.first_seq, outcome.next_seq), (8, 9));
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
        let before = flowstate_store::read_all(&store, flow).await.expect("read");
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
                    seq: 5,
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
                Err(WriteError::Refused(FoldError::Transition { seq: 6, .. }))
            ),
            "{refused:?}"
        );
        let input = writer
            .compact(
                &store,
                clock.as_ref(),
                vec![
                    EventBody::FlowCreated {
                        kind: FlowKind::TaskGraph,
                        definition: "g".into(),
                        input: serde_json::json!({"n": 2}),
                    },
                    to(FlowState::Running),
                    to(FlowState::Success),
                ],
            )
            .await;
        assert!(
            matches!(
                input,
                Err(WriteError::CompactionChanges {
                    field: CompactedField::Input,
                    ..
                })
            ),
            "{input:?}"
        );
        let parent = writer
            .compact(
                &store,
                clock.as_ref(),
                vec![
                    created("g"),
                    EventBody::ChildOf {
                        parent: FlowId::from_parts(clock.now(), [9; 10]),
                    },
                    to(FlowState::Running),
                    to(FlowState::Success),
                ],
            )
            .await;
        assert!(
            matches!(
                parent,
                Err(WriteError::CompactionChanges {
                    field: CompactedField::Parent,
                    ..
                })
            ),
            "{parent:?}"
        );
        let later = clock.now().saturating_add(Duration::from_secs(5));
        let created_at = writer
            .compact_timed(
                &store,
                vec![
                    (later, created("g")),
                    (later, to(FlowState::Running)),
                    (later, to(FlowState::Success)),
                ],
            )
            .await;
        assert!(
            matches!(
                created_at,
                Err(WriteError::CompactionChanges {
                    field: CompactedField::CreatedAt,
                    ..
                })
            ),
            "{created_at:?}"
        );
        let empty = writer.compact(&store, clock.as_ref(), vec![]).await;
        assert!(
            matches!(empty, Err(WriteError::Refused(FoldError::EmptyLog))),
            "{empty:?}"
        );
        assert_eq!(
            flowstate_store::read_all(&store, flow).await.expect("read"),
            before
        );
        // None of these touched the writer: it still appends where the log ends.
        let outcome = writer
            .append(&store, clock.as_ref(), vec![to(FlowState::Running)])
            .await
            .expect("append");
        assert_eq!(outcome.first_seq, 5);
    }

    #[tokio::test]
    async fn a_writer_that_read_the_log_before_a_compaction_conflicts_after_it() {
        let (store, clock, mut writer) = finished().await;
        let flow = writer.flow();
        let mut stale = FlowWriter::load(&store, flow).await.expect("load");
        assert_eq!(stale.durable_next_seq(), 5);
        // Compacted to 4 events: the next sequence number would be 5 again if the new log
        // were numbered from 1.
        let created_at = writer.record().expect("record").created_at;
        let outcome = writer
            .compact_timed(
                &store,
                vec![
                    (created_at, created("g")),
                    (clock.now(), to(FlowState::Running)),
                    (clock.now(), to(FlowState::Suspending)),
                    (clock.now(), to(FlowState::Success)),
                ],
            )
            .await
            .expect("a compaction that does not shorten the log is allowed");
        assert_eq!((outcome.first_seq, outcome.next_seq), (5, 9));
        let late = stale
            .append(&store, clock.as_ref(), vec![to(FlowState::Running)])
            .await;
        assert!(
            matches!(
                late,
                Err(WriteError::Store(StoreError::Conflict {
                    expected: 5,
                    actual: 9,
                    ..
                }))
            ),
            "{late:?}"
        );
        let reloaded = FlowWriter::load(&store, flow).await.expect("reload");
        assert_eq!(reloaded.record(), writer.record());
        assert_eq!(reloaded.durable_next_seq(), 9);
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
