//! The transition tables, transcribed from `docs/spec/state-machines.md` (the repository's copy
//! of the shared spec) and, where that document defers to them, from the seeds it cites
//! (`docs/spec/seeds/`). Edit only together with the spec.

use super::state_machine;

state_machine! {
    /// A task-graph flow (TaskFlow's flow states, `states.py::_ALLOWED_FLOW_TRANSITIONS`).
    pub enum FlowState as "flow", initial Pending {
        /// Built but never run.
        Pending = "PENDING" / "pending",
        /// An engine is running the flow.
        Running = "RUNNING" / "running",
        /// Every atom finished successfully (or was ignored).
        Success = "SUCCESS" / "success",
        /// A failure could not be reverted, or more than one failure happened.
        Failure = "FAILURE" / "failure",
        /// A failure happened and every atom was reverted.
        Reverted = "REVERTED" / "reverted",
        /// A suspend was requested; running atoms are finishing.
        Suspending = "SUSPENDING" / "suspending",
        /// Nothing runs; the flow can be resumed.
        Suspended = "SUSPENDED" / "suspended",
        /// Being loaded after a hard stop.
        Resuming = "RESUMING" / "resuming",
    }
    allowed {
        Pending -> [Running],
        Running -> [Success, Failure, Reverted, Suspending, Resuming],
        Success -> [Running, Pending],
        Failure -> [Running],
        Reverted -> [Pending],
        Suspending -> [Suspended, Success, Failure, Reverted, Resuming],
        Suspended -> [Running],
        Resuming -> [Suspended],
    }
    ignored {
        [Pending, Failure, Success, Suspended, Reverted] -> [Suspending, Suspended, Resuming],
    }
}

state_machine! {
    /// A task (atom) of a task graph.
    pub enum TaskState as "task", initial Pending {
        /// Waiting for its predecessors.
        Pending = "PENDING" / "pending",
        /// `execute` is running.
        Running = "RUNNING" / "running",
        /// `execute` returned a result.
        Success = "SUCCESS" / "success",
        /// `execute` failed.
        Failure = "FAILURE" / "failure",
        /// `revert` is running.
        Reverting = "REVERTING" / "reverting",
        /// `revert` finished.
        Reverted = "REVERTED" / "reverted",
        /// `revert` failed; terminal, reported as FAILURE by the flow.
        RevertFailure = "REVERT_FAILURE" / "revert_failure",
        /// Skipped by a decider.
        Ignore = "IGNORE" / "ignore",
    }
    allowed {
        Pending -> [Running, Ignore],
        Running -> [Success, Failure],
        Failure -> [Reverting],
        Success -> [Reverting],
        Reverting -> [Reverted, RevertFailure],
        Reverted -> [Pending],
        Ignore -> [Pending],
    }
    ignored {}
}

state_machine! {
    /// A retry controller atom: the task machine plus RETRYING.
    pub enum RetryState as "retry", initial Pending {
        /// Waiting for its predecessors.
        Pending = "PENDING" / "pending",
        /// `execute` is running.
        Running = "RUNNING" / "running",
        /// `execute` returned.
        Success = "SUCCESS" / "success",
        /// `execute` failed.
        Failure = "FAILURE" / "failure",
        /// `revert` is running.
        Reverting = "REVERTING" / "reverting",
        /// `revert` finished.
        Reverted = "REVERTED" / "reverted",
        /// `revert` failed; terminal.
        RevertFailure = "REVERT_FAILURE" / "revert_failure",
        /// Skipped by a decider.
        Ignore = "IGNORE" / "ignore",
        /// Its scope failed and was reverted; it prepares the next attempt.
        Retrying = "RETRYING" / "retrying",
    }
    allowed {
        Pending -> [Running, Ignore],
        Running -> [Success, Failure],
        Failure -> [Reverting],
        Success -> [Reverting, Retrying],
        Reverting -> [Reverted, RevertFailure],
        Reverted -> [Pending],
        Ignore -> [Pending],
        Retrying -> [Running],
    }
    ignored {}
}

state_machine! {
    /// One run of a task-graph engine (TaskFlow's action engine machine).
    pub enum EngineState as "engine", initial Undefined {
        /// Internal start state.
        Undefined = "UNDEFINED" / "undefined",
        /// Preparing the flow and its atoms.
        Resuming = "RESUMING" / "resuming",
        /// Submitting ready atoms.
        Scheduling = "SCHEDULING" / "scheduling",
        /// Waiting for atoms to finish.
        Waiting = "WAITING" / "waiting",
        /// Processing finished atoms.
        Analyzing = "ANALYZING" / "analyzing",
        /// Internal state before the final one.
        GameOver = "GAME_OVER" / "game_over",
        /// Final: success.
        Success = "SUCCESS" / "success",
        /// Final: failure.
        Failure = "FAILURE" / "failure",
        /// Final: reverted.
        Reverted = "REVERTED" / "reverted",
        /// Final: suspended.
        Suspended = "SUSPENDED" / "suspended",
    }
    allowed {
        Undefined -> [Resuming],
        Resuming -> [Scheduling],
        Scheduling -> [Waiting],
        Waiting -> [Analyzing],
        Analyzing -> [Scheduling, Waiting, GameOver],
        GameOver -> [Success, Failure, Reverted, Suspended],
    }
    ignored {}
}

state_machine! {
    /// A flow offered to many workers (TaskFlow's job board).
    pub enum JobState as "job", initial Unclaimed {
        /// Nobody works on it.
        Unclaimed = "UNCLAIMED" / "unclaimed",
        /// One worker holds it.
        Claimed = "CLAIMED" / "claimed",
        /// Finished.
        Complete = "COMPLETE" / "complete",
    }
    allowed {
        Unclaimed -> [Claimed],
        Claimed -> [Unclaimed, Complete],
    }
    ignored {}
}

state_machine! {
    /// A durable async function activation (async-flow's activation lifecycle).
    pub enum ActivationState as "activation", initial ActiveCurrent {
        /// Running, caught up with its journal.
        ActiveCurrent = "active current" / "active_current",
        /// Waiting on something unsettled; holds no memory.
        Sleeping = "sleeping" / "sleeping",
        /// Re-running from the start against its journal.
        ActiveReplay = "active replay" / "active_replay",
        /// The code did not reproduce the journal; a diagnostic says how.
        ReplayFailure = "replay failure" / "replay_failure",
        /// The outcome settled; the journal is dropped.
        Done = "done" / "done",
    }
    allowed {
        ActiveCurrent -> [Sleeping, Done],
        Sleeping -> [ActiveReplay],
        ActiveReplay -> [ActiveCurrent, ReplayFailure],
        ReplayFailure -> [ActiveReplay],
    }
    ignored {}
}

state_machine! {
    /// The lifecycle of a goal-driven flow (Argyll's flow states).
    pub enum PlanState as "plan", initial Active {
        /// Steps may start.
        Active = "active" / "active",
        /// Every goal was produced; work may still be in flight.
        Completed = "completed" / "completed",
        /// A goal failed or became unreachable; work may still be in flight.
        Failed = "failed" / "failed",
        /// Terminal and nothing in flight.
        Deactivated = "deactivated" / "deactivated",
        /// Moved to archive storage.
        Archived = "archived" / "archived",
    }
    allowed {
        Active -> [Completed, Failed],
        Completed -> [Deactivated],
        Failed -> [Deactivated],
        Deactivated -> [Archived],
    }
    ignored {}
}

state_machine! {
    /// The state of a task in the await runtime with respect to its completion pair (await-rt).
    pub enum PairState as "completion pair", initial Running {
        /// The task runs and holds no pair.
        Running = "running" / "running",
        /// A resolver exists; no rejecter yet; unsettled.
        SchedulingSingle = "scheduling/single" / "scheduling_single",
        /// A resolver and a rejecter exist; unsettled.
        SchedulingDouble = "scheduling/double" / "scheduling_double",
        /// Resolved before the await; only a resolver was handed out.
        ReadySingle = "ready/single" / "ready_single",
        /// Resolved before the await; both halves were handed out.
        ReadyDouble = "ready/double" / "ready_double",
        /// Rejected before the await.
        Failed = "failed" / "failed",
        /// Awaiting an unsettled pair.
        Pending = "pending" / "pending",
    }
    allowed {
        Running -> [SchedulingSingle],
        SchedulingSingle -> [SchedulingDouble, ReadySingle, Pending],
        SchedulingDouble -> [ReadyDouble, Failed, Pending],
        ReadySingle -> [ReadyDouble, Running],
        ReadyDouble -> [Running],
        Failed -> [Running],
        Pending -> [Running],
    }
    ignored {}
}
