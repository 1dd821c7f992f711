//! The contract between the worker loop and a kind's runner: [`FlowRunner`] runs one flow
//! while the worker holds its lease, and says with a typed [`RunError`] why a run did not end
//! normally, so that the worker can tell a conflict (run again) from a missing definition
//! (park, count) from a failure (park, retry later).
//!
//! **Must never:** turn an error into a string: the error that stopped a run is kept, typed.

use async_trait::async_trait;
use flowstate_core::{FlowId, FlowKind};
use flowstate_store::StoreError;

use crate::WriteError;

/// Runs the flows of one kind for a worker.
#[async_trait]
pub trait FlowRunner: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `flow` until it has nothing more to do now: it finished, or it waits for a timer,
    /// a signal or a child. Called only while the worker holds the flow's lease; a flow with
    /// nothing to do (already finished) returns `Ok` at once.
    async fn run(&self, flow: FlowId) -> Result<(), RunError>;
}

/// Why a run did not end normally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Another process appended to the flow first. The worker re-reads the log and runs the
    /// flow again (if it still holds the lease).
    #[error("flow {flow}: another process advanced the log (expected next sequence number {expected}, found {actual})")]
    Conflict {
        /// The flow.
        flow: FlowId,
        /// The sequence number the run expected to write.
        expected: u64,
        /// The log's actual next sequence number.
        actual: u64,
    },
    /// This process has no definition for the flow. It stays ready (parked), for this process
    /// once the definition is registered or for another one that has it; it never fails.
    #[error("no {kind} definition named {definition:?} is registered in this process")]
    MissingDefinition {
        /// The flow's kind.
        kind: FlowKind,
        /// The definition it runs (for a plan: the missing step and its version).
        definition: String,
    },
    /// Recording failed: the store failed, or the fold refused an event. The flow is parked
    /// and retried.
    #[error(transparent)]
    Write(WriteError),
    /// The run could not go on for another reason (its runtime did not start, it broke a
    /// rule of its kind), said by the error that stopped it. The flow is parked and retried.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl RunError {
    /// A run that could not go on because of `cause` (an error, or a message).
    pub fn failed(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(cause.into())
    }
}

impl From<WriteError> for RunError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Store(StoreError::Conflict {
                flow,
                expected,
                actual,
            }) => Self::Conflict {
                flow,
                expected,
                actual,
            },
            other => Self::Write(other),
        }
    }
}

impl From<StoreError> for RunError {
    fn from(error: StoreError) -> Self {
        WriteError::Store(error).into()
    }
}

#[cfg(test)]
mod tests {
    use flowstate_core::Timestamp;

    use super::*;

    #[test]
    fn a_conflict_is_a_conflict_and_other_errors_stay_typed() {
        let flow = FlowId::from_parts(Timestamp::from_micros(1), [1; 10]);
        let conflict = RunError::from(StoreError::Conflict {
            flow,
            expected: 3,
            actual: 4,
        });
        assert!(matches!(
            conflict,
            RunError::Conflict {
                expected: 3,
                actual: 4,
                ..
            }
        ));
        let unknown = RunError::from(StoreError::UnknownFlow { flow });
        assert!(matches!(
            unknown,
            RunError::Write(WriteError::Store(StoreError::UnknownFlow { .. }))
        ));
        let failed = RunError::failed(std::io::Error::other("no threads"));
        assert_eq!(failed.to_string(), "no threads");
    }
}
