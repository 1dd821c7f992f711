//! Delivering to another flow's log: an event appended to a flow that someone else may be
//! writing at the same moment (a run in progress), which marks it ready so that a worker
//! looks at it. Signals, cancellations, suspensions and the ends of child flows go this way.
//!
//! The run on the other side meets the delivery as a conflict on its next commit and goes on
//! on top of it ([`crate::rebase`]); the deliverer retries its own append when the run
//! committed first, up to [`DELIVERY_ATTEMPTS`] times.
//!
//! **Must never:** decide what to deliver: the caller's `make` decides from the flow's state.

use flowstate_core::{Clock, EventBody, FlowId, FlowRecord};
use flowstate_store::{Store, StoreError};

use crate::{AppendExtras, FlowWriter, WriteError};

/// Most attempts to deliver while the flow's own runs keep appending; past it the last
/// conflict goes to the caller.
pub const DELIVERY_ATTEMPTS: usize = 16;

/// Appends what `make` decides from the flow's state (nothing, for `Ok(None)`) and marks the
/// flow ready, in one commit; reads the log again and decides again when something was
/// appended meanwhile. Returns whether an event was appended.
pub async fn deliver<E>(
    store: &dyn Store,
    clock: &dyn Clock,
    flow: FlowId,
    make: impl Fn(&FlowRecord) -> Result<Option<EventBody>, E>,
) -> Result<bool, E>
where
    E: From<WriteError> + From<StoreError>,
{
    deliver_with(store, clock, flow, |record| {
        Ok(make(record)?.map(|body| (body, Some(true))))
    })
    .await
}

/// [`deliver`], where `make` also decides the ready flag that goes with its event (`None`
/// leaves it as it is): for a request that a run in progress honours by itself, marking the
/// flow ready would let a worker run it beside that run.
pub async fn deliver_with<E>(
    store: &dyn Store,
    clock: &dyn Clock,
    flow: FlowId,
    make: impl Fn(&FlowRecord) -> Result<Option<(EventBody, Option<bool>)>, E>,
) -> Result<bool, E>
where
    E: From<WriteError> + From<StoreError>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut writer = FlowWriter::load(store, flow).await?;
        let Some(record) = writer.record() else {
            return Err(StoreError::UnknownFlow { flow }.into());
        };
        let Some((body, ready)) = make(record)? else {
            return Ok(false);
        };
        writer.stage(clock, vec![body])?;
        let ready = AppendExtras {
            ready,
            ..AppendExtras::default()
        };
        match writer.commit(store, ready).await {
            Ok(_) => return Ok(true),
            Err(WriteError::Store(StoreError::Conflict { .. })) if attempt < DELIVERY_ATTEMPTS => {}
            Err(error) => return Err(error.into()),
        }
    }
}
