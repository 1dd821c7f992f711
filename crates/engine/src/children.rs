//! Parents and children: the id a parent gives the child that one of its effects starts, and
//! telling a parent that its child ended.
//!
//! **Must never:** start or run a child (its kind's front door does), or tell a parent more
//! than once: the end waits in the parent's log, once, until the parent joins the child.

use flowstate_core::{Clock, EventBody, Failure, FlowId, FlowRecord, StepOutcome};
use flowstate_store::{Store, StoreError};

use crate::{deliver, WriteError};

/// The id of the child started by the parent's effect with idempotency key `key`: the parent's
/// creation time (children sort with their parent) and a stable hash of the key (FNV-1a,
/// which no toolchain upgrade changes), so every run of that effect names the same child.
#[must_use]
pub fn child_flow_id(parent: FlowId, key: &str) -> FlowId {
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (high, low) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&high.to_be_bytes());
    random[8..].copy_from_slice(&low.to_be_bytes()[..2]);
    FlowId::from_parts(parent.created_at(), random)
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
        Ok(awaits_end(record, id).then(|| EventBody::ChildEnded {
            child: id,
            outcome: outcome.clone(),
        }))
    })
    .await;
    match delivered {
        // The parent is gone (deleted, or archived): there is nobody to tell.
        Err(WriteError::Store(StoreError::UnknownFlow { .. })) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Whether `parent` is still to be told that `child` ended: it is a durable function (the one
/// kind whose effects start children) that is not done and has not been told yet.
fn awaits_end(parent: &FlowRecord, child: FlowId) -> bool {
    parent.function.as_ref().is_some_and(|function| {
        function.outcome.is_none() && !function.children_ended.contains_key(&child)
    })
}

#[cfg(test)]
mod tests {
    use flowstate_core::Timestamp;

    use super::*;

    #[test]
    fn a_child_id_is_stable_and_sorts_with_its_parent() {
        let parent = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [1; 10]);
        let one = child_flow_id(parent, "call:0");
        assert_eq!(one, child_flow_id(parent, "call:0"));
        assert_ne!(one, child_flow_id(parent, "call:1"));
        assert_eq!(one.created_at(), parent.created_at());
    }
}
