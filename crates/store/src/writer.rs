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
