//! The machines of a plan's steps and work items, as data.
//!
//! **Not from the spec.** `docs/spec/state-machines.md` gives the plan table for the flow
//! lifecycle only ([`PlanState`](super::PlanState)). The step and work item machines below are
//! ours, after Argyll's `policy/transitions.go`, with two changes: a work item that will run
//! again is `retry_waiting` (Argyll's `not_completed`), and `abandoned` is an explicit end for
//! work that will never run (a pending item of a step that failed, a retry still waiting when
//! the flow ended), so that every terminal flow can deactivate (Argyll's fail-fast items stayed
//! pending forever). `tests/spec_tables.rs` checks every pair of both against its own
//! transcription of these tables. Edit only together with that transcription.

use super::state_machine;

state_machine! {
    /// A step of a plan.
    pub enum StepState as "step", initial Pending {
        /// In the plan, not started.
        Pending = "pending" / "pending",
        /// Its work items were created; some may run.
        Active = "active" / "active",
        /// Every work item succeeded; its outputs are attributes.
        Completed = "completed" / "completed",
        /// Its predicate was false, or its outputs were no longer needed.
        Skipped = "skipped" / "skipped",
        /// A work item failed for good, or a required input can no longer be produced.
        Failed = "failed" / "failed",
    }
    allowed {
        Pending -> [Active, Skipped, Failed],
        Active -> [Completed, Failed],
    }
    ignored {}
}

state_machine! {
    /// One work item of a step (a mapped step has one per list element).
    pub enum WorkState as "work item", initial Pending {
        /// Created, not started.
        Pending = "pending" / "pending",
        /// An attempt runs (or ran in a process that died: it runs again with the same token).
        Active = "active" / "active",
        /// An attempt failed and another is scheduled.
        RetryWaiting = "retry_waiting" / "retry_waiting",
        /// An attempt succeeded.
        Succeeded = "succeeded" / "succeeded",
        /// Failed for good.
        Failed = "failed" / "failed",
        /// Will never run (its step failed or the flow ended first).
        Abandoned = "abandoned" / "abandoned",
        /// Its compensation runs (the flow failed after it succeeded).
        Compensating = "compensating" / "compensating",
        /// Its compensation succeeded.
        Compensated = "compensated" / "compensated",
        /// Its compensation failed for good.
        CompensationFailed = "compensation_failed" / "compensation_failed",
    }
    allowed {
        Pending -> [Active, Abandoned],
        Active -> [Succeeded, Failed, RetryWaiting],
        RetryWaiting -> [Active, Abandoned],
        Succeeded -> [Compensating],
        Compensating -> [Compensated, CompensationFailed],
    }
    ignored {}
}

impl WorkState {
    /// Whether the item still has work that can run or report (it blocks deactivation).
    #[must_use]
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Active | Self::RetryWaiting | Self::Compensating
        )
    }
}
