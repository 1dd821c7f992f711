//! Task graphs under the kernel's one control surface ([`FlowControl`]): cancel, suspend and
//! resume are requests recorded in the flow's log by [`Engine`], from any process.
//!
//! **Must never:** decide anything the engine's request methods do not: this is a mapping of
//! their outcomes and errors to the kernel's.

use async_trait::async_trait;
use flowstate_core::fold::StopAt;
use flowstate_core::{FlowId, FlowKind, FlowRecord, Transition};
use flowstate_engine::control::{state_at, ControlRequest};
use flowstate_engine::{ControlError, FlowControl};

use crate::engine::{Engine, Error};

#[async_trait]
impl FlowControl for Engine {
    async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, ControlError> {
        let cancelled = Engine::cancel(self, flow, reason).await;
        cancelled.map_err(|error| control_error(error, ControlRequest::Cancel))
    }

    async fn suspend(&self, flow: FlowId) -> Result<Transition, ControlError> {
        let suspended = self.request_suspend(flow).await;
        suspended.map_err(|error| control_error(error, ControlRequest::Suspend))
    }

    async fn resume(&self, flow: FlowId) -> Result<Transition, ControlError> {
        let resumed = Engine::resume(self, flow).await;
        resumed.map_err(|error| control_error(error, ControlRequest::Resume))
    }

    async fn state(&self, flow: FlowId, at: StopAt) -> Result<FlowRecord, ControlError> {
        state_at(self.store(), flow, at).await
    }
}

fn control_error(error: Error, request: ControlRequest) -> ControlError {
    match error {
        Error::NotAllowed {
            flow,
            state,
            detail,
            ..
        } => ControlError::not_allowed(flow, request, format!("it is {state}; {detail}")),
        Error::NotATaskGraph { flow, kind } => ControlError::WrongKind {
            flow,
            expected: FlowKind::TaskGraph,
            found: kind,
        },
        Error::Write(flowstate_engine::WriteError::Store(store)) => store.into(),
        Error::Write(write) => ControlError::Write(write),
        other => ControlError::Failed(Box::new(other)),
    }
}
