//! What goes wrong, and to whom it is reported.

use std::panic::Location;

use flowstate_core::InvalidState;

/// A broken rule of the protocol, reported by failing the task that broke it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A transition the spec's table does not list (for example taking a rejecter twice).
    #[error("{transition} (at {at})")]
    Invalid {
        /// The refused transition.
        transition: InvalidState,
        /// Where in the task's code.
        at: &'static Location<'static>,
    },
    /// A step that would leave the task in the state it is in (for example taking a pair's
    /// rejecter twice): the protocol has no such transition.
    #[error("the task is already {state}; that step cannot be taken again (at {at})")]
    Repeated {
        /// The state.
        state: &'static str,
        /// Where in the task's code.
        at: &'static Location<'static>,
    },
    /// A second pair was created while one was outstanding: a task awaits one pair at a time.
    #[error("a pair was created at {at} while the pair created at {outstanding} was outstanding")]
    PairOutstanding {
        /// Where the second pair was created.
        at: &'static Location<'static>,
        /// Where the outstanding one was.
        outstanding: &'static Location<'static>,
    },
    /// A pair was awaited by a task other than the one that created it.
    #[error("the pair created at {created} must be awaited by the task that created it")]
    ForeignPair {
        /// Where the pair was created.
        created: &'static Location<'static>,
    },
    /// The task returned while its pair (created at `created`) was never awaited.
    #[error("the task returned while the pair created at {created} was outstanding")]
    ReturnedWithOutstandingPair {
        /// Where the pair was created.
        created: &'static Location<'static>,
    },
    /// Every resolver and rejecter of the unsettled pair created at `created` was dropped:
    /// nothing can resume the task.
    #[error("every resolver of the pair created at {created} was dropped before it settled")]
    Abandoned {
        /// Where the pair was created.
        created: &'static Location<'static>,
    },
    /// A pair's `Once` was polled again after it had resumed the task.
    #[error("the pair created at {created} was awaited again after it resumed the task")]
    AwaitedTwice {
        /// Where the pair was created.
        created: &'static Location<'static>,
    },
}

/// Why a resolve or reject was refused; the task is untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The pair was already resolved or rejected (at `first`).
    #[error("the pair was already settled at {first}")]
    AlreadySettled {
        /// Where it was settled first.
        first: &'static Location<'static>,
    },
    /// The task already resumed from this pair.
    #[error("the task already resumed from this pair (settled at {first})")]
    AlreadyResumed {
        /// Where it was settled.
        first: &'static Location<'static>,
    },
    /// The task that awaits the pair is gone (it finished, failed or was aborted).
    #[error("the task that awaits this pair is gone")]
    TaskGone,
}

/// How a task ended when it did not return its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskFailure {
    /// It broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// It panicked.
    #[error("the task panicked: {message}")]
    Panicked {
        /// The panic message, if it was a string.
        message: String,
    },
    /// It was aborted (a race it lost, or its owner gave up on it).
    #[error("the task was aborted")]
    Aborted,
}
