//! The sans-I/O core of flowstate.
//!
//! This crate owns the vocabulary every other crate speaks: flow ids, timestamps, the event
//! envelope and its typed bodies, the state machines of `docs/spec/state-machines.md` (the
//! repository's copy of the shared spec), the fold that rebuilds a flow's state from its log,
//! and the limits on everything a user can send.
//!
//! **Architecture invariant:** nothing here performs I/O, reads the clock or draws randomness.
//! Time arrives as a [`Timestamp`] argument (or through the [`Clock`] trait, which callers
//! implement), randomness as bytes. There is no tokio and no database in the dependency tree, so
//! the same inputs always give the same outputs and any run can be reproduced from its log.

mod decode;
pub mod event;
pub mod failure;
pub mod fold;
pub mod id;
pub mod journal;
mod kind;
pub mod limits;
pub mod machine;
pub mod outcome;
pub mod plan;
mod plan_spec;
pub mod sync;
pub mod time;

pub use event::{
    DecodeError, EncodeError, Event, EventBody, FlowKind, Intention, RawEvent, EVENT_FORMAT_VERSION,
};
pub use failure::Failure;
pub use fold::{
    fold, AtomRecord, AtomState, FlowRecord, FlowStatus, FoldError, Folder, RetryAttempt, StopAt,
};
pub use id::{FlowId, IdError};
pub use journal::{
    expect_end, match_call, Call, Diagnostic, DroppedJournal, FunctionRecord, JournalEntry,
    JournalError, Replay, Replayer, StepOutcome,
};
pub use machine::{InvalidState, Machine, Transition};
pub use outcome::{Outcome, OutcomeKind};
pub use plan::{
    AttributeValue, ExecutionPlan, Goal, InputSpec, PlanError, PlanRecord, Predicate, RetryPolicy,
    StepRecord, StepSpec, StepState, WorkRecord, WorkState,
};
pub use time::{Clock, ManualClock, Timestamp};
