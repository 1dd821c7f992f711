//! Plans under the kernel's one control surface ([`FlowControl`]): a cancellation is recorded
//! in the flow's log by [`Plans::cancel`], from any process; plans have no suspended state.
//!
//! **Must never:** decide anything [`Plans::cancel`] does not: this is a mapping of its
//! outcomes and errors to the kernel's.

use async_trait::async_trait;
use flowstate_core::fold::StopAt;
use flowstate_core::{FlowId, FlowKind, FlowRecord, FoldError, Transition};
use flowstate_engine::control::{state_at, ControlRequest};
use flowstate_engine::{ControlError, FlowControl, WriteError};

use crate::engine::{Error, Plans};

/// Why a plan cannot be suspended or resumed.
const NO_SUSPENDED_STATE: &str = "it is a plan, and the goal-driven flow lifecycle (active, completed | failed, deactivated, archived) has no suspended state; to stop it, cancel it";

#[async_trait]
impl FlowControl for Plans {
    async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, ControlError> {
        Plans::cancel(self, flow, reason)
            .await
            .map_err(|error| match error {
                Error::Write(WriteError::Refused(FoldError::Transition {
                    source, ..
                })) => ControlError::not_allowed(
                    flow,
                    ControlRequest::Cancel,
                    format!("{source}: a plan that completed, deactivated or was archived cannot be cancelled"),
                ),
                Error::NotAPlan { flow, kind } => ControlError::WrongKind {
                    flow,
                    expected: FlowKind::Plan,
                    found: kind,
                },
                Error::Store(store) => store.into(),
                Error::Write(WriteError::Store(store)) => store.into(),
                Error::Write(write) => ControlError::Write(write),
                other => ControlError::Failed(Box::new(other)),
            })
    }

    async fn suspend(&self, flow: FlowId) -> Result<Transition, ControlError> {
        Err(no_suspended_state(flow, ControlRequest::Suspend))
    }

    async fn resume(&self, flow: FlowId) -> Result<Transition, ControlError> {
        Err(no_suspended_state(flow, ControlRequest::Resume))
    }

    async fn state(&self, flow: FlowId, at: StopAt) -> Result<FlowRecord, ControlError> {
        state_at(self.store(), flow, at).await
    }
}

fn no_suspended_state(flow: FlowId, request: ControlRequest) -> ControlError {
    ControlError::NotSupported {
        flow,
        kind: FlowKind::Plan,
        request,
        detail: NO_SUSPENDED_STATE.to_owned(),
    }
}
