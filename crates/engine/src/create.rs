//! Flow creation, for every kind: one id policy and one way to record a new flow.
//!
//! A flow's id is minted from the clock and 74 random bits ([`mint_flow_id`]: a UUIDv7,
//! so ids sort by creation time), or chosen by the caller ([`Creation::with_id`]: a child's
//! stable id, or a client's id that makes a start idempotent). A new flow's first append
//! carries its `flow_created` (and `child_of`, and whatever the kind records with its
//! creation, such as a plan's `plan_started`), checked against the fold like every event.
//!
//! **Must never:** decide a kind's definitions or inputs (the front door checks them before it
//! stages a creation), or overwrite a flow: a creation whose id is taken is
//! [`CreateError::Exists`], and nothing is written.

use flowstate_core::{Clock, EventBody, FlowId, FlowKind};
use flowstate_store::Store;

use crate::{AppendExtras, FlowWriter, WriteError};

/// A new flow's id: the clock's time and 74 random bits (UUIDv7).
#[must_use]
pub fn mint_flow_id(clock: &dyn Clock) -> FlowId {
    FlowId::from_parts(clock.now(), rand::random())
}

/// What a new flow is: its kind, definition and input, and how it gets its id.
#[derive(Debug, Clone)]
#[must_use = "a creation does nothing until it is staged and recorded"]
pub struct Creation {
    id: Option<FlowId>,
    kind: FlowKind,
    definition: String,
    input: serde_json::Value,
    parent: Option<FlowId>,
    then: Vec<EventBody>,
}

impl Creation {
    /// A flow of `kind` running `definition` with `input`, with a minted id.
    pub fn new(kind: FlowKind, definition: impl Into<String>, input: serde_json::Value) -> Self {
        Self {
            id: None,
            kind,
            definition: definition.into(),
            input,
            parent: None,
            then: Vec::new(),
        }
    }

    /// The flow gets the id `id` instead of a minted one.
    pub fn with_id(mut self, id: FlowId) -> Self {
        self.id = Some(id);
        self
    }

    /// The flow is the child of `parent` (`child_of` is recorded with its creation).
    pub fn child_of(mut self, parent: FlowId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// `events` are recorded in the creation's append, after `flow_created` (and `child_of`).
    pub fn then(mut self, events: impl IntoIterator<Item = EventBody>) -> Self {
        self.then.extend(events);
        self
    }

    /// A writer for the new flow with its creation staged (checked and folded), timed by
    /// `clock`: record it with [`record`], or stage more and commit it with the flow's first
    /// decisions.
    pub fn stage(self, clock: &dyn Clock) -> Result<FlowWriter, WriteError> {
        let id = self.id.unwrap_or_else(|| mint_flow_id(clock));
        let mut events = Vec::with_capacity(2 + self.then.len());
        events.push(EventBody::FlowCreated {
            kind: self.kind,
            definition: self.definition,
            input: self.input,
        });
        events.extend(self.parent.map(|parent| EventBody::ChildOf { parent }));
        events.extend(self.then);
        let mut writer = FlowWriter::new(id);
        writer.stage(clock, events)?;
        Ok(writer)
    }
}

/// Why a creation was not recorded. Exhaustive on purpose: a creation either finds its id
/// taken or fails to write, and every front door maps both to its own error.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A flow with the id exists already; nothing was written.
    #[error("flow {flow} exists already")]
    Exists {
        /// The id.
        flow: FlowId,
    },
    /// The creation was refused or the store failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Records the creation staged in `writer` (by [`Creation::stage`]), marked ready for workers
/// when `ready` (else it runs in this process, or waits to be started). Returns its id.
pub async fn record(
    store: &dyn Store,
    mut writer: FlowWriter,
    ready: bool,
) -> Result<FlowId, CreateError> {
    let flow = writer.flow();
    let extras = AppendExtras {
        ready: Some(ready),
        ..AppendExtras::default()
    };
    match writer.commit(store, extras).await {
        Ok(_) => Ok(flow),
        Err(error) if error.is_conflict() => Err(CreateError::Exists { flow }),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowstate_core::{ManualClock, Timestamp};
    use flowstate_store::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn a_chosen_id_is_created_once() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_767_225_600_000_000,
        )));
        let store = MemoryStore::new(clock.clone());
        let id = mint_flow_id(clock.as_ref());
        let creation = Creation::new(FlowKind::Function, "f", serde_json::json!(1)).with_id(id);
        let writer = creation.clone().stage(clock.as_ref()).expect("stage");
        assert_eq!(record(&store, writer, true).await.expect("record"), id);
        let again = creation.stage(clock.as_ref()).expect("stage");
        let error = record(&store, again, true).await.expect_err("taken");
        assert!(matches!(error, CreateError::Exists { flow } if flow == id));
        let summary = flowstate_store::Store::flow(&store, id)
            .await
            .expect("read")
            .expect("exists");
        assert!(summary.ready);
    }

    #[tokio::test]
    async fn a_child_records_its_parent() {
        let clock = ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000));
        let parent = mint_flow_id(&clock);
        let writer = Creation::new(FlowKind::Function, "child", serde_json::Value::Null)
            .child_of(parent)
            .stage(&clock)
            .expect("stage");
        assert_eq!(writer.record().and_then(|r| r.parent), Some(parent));
        assert_ne!(writer.flow(), parent, "a minted id");
    }
}
