//! Durable functions under the kernel's one control surface ([`FlowControl`]): a cancellation
//! is recorded in the activation's log ([`request_cancel`]), from any process and with the
//! store alone; functions have no suspended state.
//!
//! **Must never:** decide anything [`request_cancel`] does not: this is a mapping of its
//! outcomes and errors to the kernel's.

use async_trait::async_trait;
use flowstate_core::fold::StopAt;
use flowstate_core::{FlowId, FlowKind, FlowRecord, Transition};
use flowstate_engine::control::{state_at, ControlRequest};
use flowstate_engine::{ControlError, FlowControl, WriteError};

use crate::engine::{request_cancel, Error, Functions};

/// Why a function cannot be suspended or resumed.
const NO_SUSPENDED_STATE: &str = "it is a durable function, and the activation lifecycle (active current, sleeping, active replay, replay failure, done) has no suspended state: a function sleeps only when it awaits a timer, a signal or a child; to stop it, cancel it";

#[async_trait]
impl FlowControl for Functions {
    async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, ControlError> {
        let (store, clock) = self.store_and_clock();
        match request_cancel(store, clock, flow, reason).await {
            Ok(transition) => Ok(transition),
            Err(Error::NotAFunction { flow }) => {
                let found = store.flow(flow).await?.map(|summary| summary.kind);
                Err(found.map_or(ControlError::UnknownFlow { flow }, |found| {
                    ControlError::WrongKind {
                        flow,
                        expected: FlowKind::Function,
                        found,
                    }
                }))
            }
            Err(Error::Done { flow }) => Err(ControlError::not_allowed(
                flow,
                ControlRequest::Cancel,
                "it is done",
            )),
            Err(Error::Store(store)) => Err(store.into()),
            Err(Error::Write(WriteError::Store(store))) => Err(store.into()),
            Err(Error::Write(write)) => Err(ControlError::Write(write)),
            Err(other) => Err(ControlError::Failed(Box::new(other))),
        }
    }

    async fn suspend(&self, flow: FlowId) -> Result<Transition, ControlError> {
        Err(no_suspended_state(flow, ControlRequest::Suspend))
    }

    async fn resume(&self, flow: FlowId) -> Result<Transition, ControlError> {
        Err(no_suspended_state(flow, ControlRequest::Resume))
    }

    async fn state(&self, flow: FlowId, at: StopAt) -> Result<FlowRecord, ControlError> {
        state_at(self.store_and_clock().0, flow, at).await
    }
}

fn no_suspended_state(flow: FlowId, request: ControlRequest) -> ControlError {
    ControlError::NotSupported {
        flow,
        kind: FlowKind::Function,
        request,
        detail: NO_SUSPENDED_STATE.to_owned(),
    }
}
