//! [`FlowWriter`]: the one path from "this happened" to the log. It checks each new event
//! against the fold (so a transition the tables refuse never reaches a store), encodes it,
//! derives the index values, appends atomically, and only then moves its own state forward.

use flowstate_core::fold::Folder;
use flowstate_core::{
    Clock, EncodeError, Event, EventBody, FlowId, FlowRecord, FoldError, EVENT_FORMAT_VERSION,
};

use crate::error::StoreError;
use crate::types::{AppendBatch, AppendOutcome, NewEvent, NewFlow, NewTimer};
use crate::{read_all, Store};

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
}

/// Extra index changes that go with an append.
#[derive(Debug, Clone, Default)]
pub struct AppendExtras {
    /// Sets or clears the ready flag.
    pub ready: Option<bool>,
    /// Timers to set in the same transaction.
    pub timers: Vec<NewTimer>,
}

/// Writes one flow's log, keeping the folded state in step with what is durable.
#[derive(Debug, Clone)]
pub struct FlowWriter {
    flow: FlowId,
    folder: Folder,
}

impl FlowWriter {
    /// A writer for a flow that does not exist yet; its first event must be `flow_created`.
    #[must_use]
    pub fn new(flow: FlowId) -> Self {
        Self {
            flow,
            folder: Folder::new(),
        }
    }

    /// Loads an existing flow by folding its whole log.
    pub async fn load(store: &dyn Store, flow: FlowId) -> Result<Self, WriteError> {
        let mut folder = Folder::new();
        for raw in read_all(store, flow).await? {
            folder.apply_raw(&raw)?;
        }
        Ok(Self { flow, folder })
    }

    /// The flow.
    #[must_use]
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// Its state as of the last durable append, once created.
    #[must_use]
    pub fn record(&self) -> Option<&FlowRecord> {
        self.folder.record()
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
        let time = clock.now();
        let expected_next_seq = self.folder.next_seq();
        // Fold into a copy first: the writer's state moves only after the append is durable.
        let mut next = self.folder.clone();
        let mut events = Vec::with_capacity(bodies.len());
        for (offset, body) in bodies.into_iter().enumerate() {
            let event = Event {
                flow: self.flow,
                seq: expected_next_seq + offset as u64,
                time,
                body,
            };
            next.apply(&event)?;
            events.push(NewEvent {
                time,
                format: EVENT_FORMAT_VERSION,
                body: event.body.encode()?,
            });
        }
        let record = next.record().ok_or(FoldError::EmptyLog)?;
        let create = (expected_next_seq == 1).then(|| NewFlow {
            kind: record.kind,
            definition: record.definition.clone(),
        });
        let status_changed = self.folder.record().map(|r| r.status) != Some(record.status);
        let batch = AppendBatch {
            flow: self.flow,
            expected_next_seq,
            events,
            create,
            status: status_changed.then_some(record.status),
            ready: extras.ready,
            timers: extras.timers,
        };
        let outcome = store.append(batch).await?;
        self.folder = next;
        Ok(outcome)
    }
}
