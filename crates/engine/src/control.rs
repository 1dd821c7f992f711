//! One control surface for every kind: [`FlowControl`] (cancel, suspend, resume, state), and
//! [`Controls`], which sends each request to the kind of the flow it names.
//!
//! A control request is recorded in the flow's log through [`crate::deliver()`], from any
//! process and with nothing but the store: the run that holds the flow meets it on its next
//! commit ([`crate::rebase`]), or a worker picks the flow up. So the server and the CLI's
//! direct-to-store route do the same thing for every kind.
//!
//! **Must never:** decide what a request means for a kind (each kind's implementation does,
//! by its state table), or run a flow.

use std::sync::Arc;

use async_trait::async_trait;
use flowstate_core::fold::{fold, StopAt};
use flowstate_core::{FlowId, FlowKind, FlowRecord, Transition};
use flowstate_store::{Store, StoreError};

use crate::WriteError;

/// A request an operator makes of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlRequest {
    /// Stop it, undoing or compensating what its kind undoes.
    Cancel,
    /// Stop it at a step boundary, to resume later.
    Suspend,
    /// Go on after a suspension.
    Resume,
}

impl std::fmt::Display for ControlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cancel => "cancel",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
        })
    }
}

/// Why a control request was not carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No live flow has the id.
    #[error("flow {flow} does not exist")]
    UnknownFlow {
        /// The id.
        flow: FlowId,
    },
    /// The flow is of another kind than the one asked.
    #[error("flow {flow} is a {found}, not a {expected}")]
    WrongKind {
        /// The flow.
        flow: FlowId,
        /// The kind asked.
        expected: FlowKind,
        /// The flow's kind.
        found: FlowKind,
    },
    /// The flow's kind has no such request (plans and functions have no suspended state).
    #[error("cannot {request} flow {flow}: {detail}")]
    NotSupported {
        /// The flow.
        flow: FlowId,
        /// Its kind.
        kind: FlowKind,
        /// The request.
        request: ControlRequest,
        /// Why, in the words of the kind's lifecycle.
        detail: String,
    },
    /// The flow's state table does not allow the request now; nothing was recorded.
    #[error("cannot {request} flow {flow}: {detail}")]
    NotAllowed {
        /// The flow.
        flow: FlowId,
        /// The request.
        request: ControlRequest,
        /// Why, with the flow's state.
        detail: String,
    },
    /// Recording failed (the store failed, or too many runs raced the request).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The kind's engine failed for another reason, said by its error.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl ControlError {
    /// The error of a request that the flow's state does not allow now.
    pub fn not_allowed(flow: FlowId, request: ControlRequest, detail: impl Into<String>) -> Self {
        Self::NotAllowed {
            flow,
            request,
            detail: detail.into(),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownFlow { flow } => Self::UnknownFlow { flow },
            other => Self::Write(WriteError::Store(other)),
        }
    }
}

/// The requests an operator makes of a flow, the same for every kind. Each returns
/// [`Transition::Allowed`] when it recorded the request, [`Transition::Ignored`] when the
/// state table makes it a no-op (nothing recorded).
#[async_trait]
pub trait FlowControl: Send + Sync + std::fmt::Debug {
    /// Cancels `flow`, with `reason` kept in its log.
    async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, ControlError>;

    /// Suspends `flow` at its next step boundary.
    async fn suspend(&self, flow: FlowId) -> Result<Transition, ControlError>;

    /// Resumes a suspended `flow`.
    async fn resume(&self, flow: FlowId) -> Result<Transition, ControlError>;

    /// The state of `flow` as of `at` (time travel), folded from its log.
    async fn state(&self, flow: FlowId, at: StopAt) -> Result<FlowRecord, ControlError>;
}

/// The state of `flow` as of `at`, folded from its whole log: the same for every kind.
pub async fn state_at(
    store: &dyn Store,
    flow: FlowId,
    at: StopAt,
) -> Result<FlowRecord, ControlError> {
    let events = flowstate_store::read_all(store, flow).await?;
    if events.is_empty() {
        return Err(ControlError::UnknownFlow { flow });
    }
    fold(&events, at).map_err(|error| ControlError::Write(WriteError::Refused(error)))
}

/// Every kind's [`FlowControl`] behind one: a request goes to the kind of the flow it names
/// (read from the store's index).
#[derive(Debug, Clone)]
pub struct Controls {
    store: Arc<dyn Store>,
    kinds: Vec<(FlowKind, Arc<dyn FlowControl>)>,
}

impl Controls {
    /// Controls for the flows of `store`, with no kind yet.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            kinds: Vec::new(),
        }
    }

    /// The flows of `kind` are controlled by `control`.
    #[must_use]
    pub fn with(mut self, kind: FlowKind, control: Arc<dyn FlowControl>) -> Self {
        self.kinds.retain(|(known, _)| *known != kind);
        self.kinds.push((kind, control));
        self
    }

    /// The control of `flow`'s kind, for `request`.
    async fn of(
        &self,
        flow: FlowId,
        request: ControlRequest,
    ) -> Result<&dyn FlowControl, ControlError> {
        let summary = self
            .store
            .flow(flow)
            .await?
            .ok_or(ControlError::UnknownFlow { flow })?;
        self.kinds
            .iter()
            .find(|(kind, _)| *kind == summary.kind)
            .map(|(_, control)| control.as_ref())
            .ok_or_else(|| ControlError::NotSupported {
                flow,
                kind: summary.kind,
                request,
                detail: format!("this process has no control for {} flows", summary.kind),
            })
    }
}

#[async_trait]
impl FlowControl for Controls {
    async fn cancel(&self, flow: FlowId, reason: &str) -> Result<Transition, ControlError> {
        let request = ControlRequest::Cancel;
        let result = match self.of(flow, request).await {
            Ok(control) => control.cancel(flow, reason).await,
            Err(error) => Err(error),
        };
        crate::observe::operator_action(flow, request, Some(reason), &result);
        result
    }

    async fn suspend(&self, flow: FlowId) -> Result<Transition, ControlError> {
        let request = ControlRequest::Suspend;
        let result = match self.of(flow, request).await {
            Ok(control) => control.suspend(flow).await,
            Err(error) => Err(error),
        };
        crate::observe::operator_action(flow, request, None, &result);
        result
    }

    async fn resume(&self, flow: FlowId) -> Result<Transition, ControlError> {
        let request = ControlRequest::Resume;
        let result = match self.of(flow, request).await {
            Ok(control) => control.resume(flow).await,
            Err(error) => Err(error),
        };
        crate::observe::operator_action(flow, request, None, &result);
        result
    }

    async fn state(&self, flow: FlowId, at: StopAt) -> Result<FlowRecord, ControlError> {
        state_at(self.store.as_ref(), flow, at).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use flowstate_core::{ManualClock, Timestamp};
    use flowstate_store::MemoryStore;

    use super::*;
    use crate::create::{self, Creation};

    /// A kind's control that counts the cancellations it was sent.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl FlowControl for Counting {
        async fn cancel(&self, _flow: FlowId, _reason: &str) -> Result<Transition, ControlError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Transition::Allowed)
        }

        async fn suspend(&self, _flow: FlowId) -> Result<Transition, ControlError> {
            Ok(Transition::Ignored)
        }

        async fn resume(&self, _flow: FlowId) -> Result<Transition, ControlError> {
            Ok(Transition::Ignored)
        }

        async fn state(&self, flow: FlowId, _at: StopAt) -> Result<FlowRecord, ControlError> {
            Err(ControlError::UnknownFlow { flow })
        }
    }

    #[tokio::test]
    async fn a_request_goes_to_the_flows_kind_and_only_there() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_767_225_600_000_000,
        )));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
        let new = |kind| {
            Creation::new(kind, "d", serde_json::Value::Null)
                .stage(clock.as_ref())
                .expect("stage")
        };
        let function = create::record(store.as_ref(), new(FlowKind::Function), true)
            .await
            .expect("create")
            .id();
        let plan = create::record(store.as_ref(), new(FlowKind::Plan), true)
            .await
            .expect("create")
            .id();
        let functions = Arc::new(Counting::default());
        let controls = Controls::new(store.clone()).with(FlowKind::Function, functions.clone());

        let cancelled = controls.cancel(function, "stop").await.expect("cancel");
        assert_eq!(cancelled, Transition::Allowed);
        assert_eq!(functions.0.load(Ordering::SeqCst), 1);

        let error = controls.suspend(plan).await.expect_err("no plan control");
        assert!(matches!(
            error,
            ControlError::NotSupported {
                kind: FlowKind::Plan,
                request: ControlRequest::Suspend,
                ..
            }
        ));
        let missing = create::mint_flow_id(clock.as_ref());
        let error = controls.cancel(missing, "stop").await.expect_err("unknown");
        assert!(matches!(error, ControlError::UnknownFlow { flow } if flow == missing));
        assert_eq!(
            functions.0.load(Ordering::SeqCst),
            1,
            "nothing else was sent"
        );

        let state = controls.state(function, StopAt::End).await.expect("state");
        assert_eq!(
            state.kind,
            FlowKind::Function,
            "the state is folded by the kernel"
        );
    }
}
