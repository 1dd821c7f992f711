//! Delivering to another flow's log: an event appended to a flow that someone else may be
//! writing at the same moment (a running durable function), which marks it ready so that
//! a worker looks at it. Signals, cancellations and the ends of child flows go this way.

use flowstate_core::{Clock, EventBody, Failure, FlowId, FlowRecord, StepOutcome};

use crate::{AppendExtras, FlowWriter, Store, StoreError, WriteError};

/// Most attempts to deliver while the flow's own runs keep appending.
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

/// Most events [`appended_only`] reads: more than this appended meanwhile is never only
/// requests (a flow takes one suspension and one cancellation at a time).
pub const MAX_REQUESTS_APPENDED: usize = 64;

/// Whether the events `from..to` of `flow` (appended by others while a run held the flow)
/// are all requests that `is_request` accepts, at most [`MAX_REQUESTS_APPENDED`] of them: the
/// test a run makes before it goes on on top of them instead of giving the flow up. Events
/// that do not decode are not requests.
pub async fn appended_only(
    store: &dyn Store,
    flow: FlowId,
    from: u64,
    to: u64,
    is_request: impl Fn(&EventBody) -> bool,
) -> Result<bool, StoreError> {
    let wanted = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    if wanted == 0 || wanted > MAX_REQUESTS_APPENDED {
        return Ok(false);
    }
    let raw = store.read(flow, from, wanted).await?;
    Ok(raw.len() == wanted
        && raw.iter().all(|raw| {
            flowstate_core::Event::decode(raw).is_ok_and(|event| is_request(&event.body))
        }))
}

/// Tells the parent of `child` (if it has one) that the child ended with `outcome`: the end
/// waits in the parent's log until the parent joins the child, and wakes it. Idempotent, so
/// that a run that died between its child's last commit and this call can repeat it; a
/// parent that is done already is not told (children outlive their parents).
pub async fn notify_parent(
    store: &dyn Store,
    clock: &dyn Clock,
    child: &FlowRecord,
    outcome: &StepOutcome,
) -> Result<(), WriteError> {
    let Some(parent) = child.parent else {
        return Ok(());
    };
    let id = child.id;
    // An outcome too large for an event is delivered as the failure that says so.
    let outcome = outcome.clone().and_then(Failure::within_result_limit);
    let delivered = deliver(store, clock, parent, |record| {
        Ok(match &record.function {
            Some(function)
                if function.outcome.is_none() && !function.children_ended.contains_key(&id) =>
            {
                Some(EventBody::ChildEnded {
                    child: id,
                    outcome: outcome.clone(),
                })
            }
            _ => None,
        })
    })
    .await;
    match delivered {
        // The parent is gone (deleted, or archived): there is nobody to tell.
        Err(WriteError::Store(StoreError::UnknownFlow { .. })) => Ok(()),
        other => other.map(|_| ()),
    }
}
