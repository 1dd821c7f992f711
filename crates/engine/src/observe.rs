//! What the kernel tells operators: one structured log event (with the `flow` id as a field)
//! and the metrics for each flow that starts, each flow that finishes (with its outcome,
//! [`flowstate_core::Outcome`], kind and definition), each step that succeeds or fails (a task-graph atom, a
//! plan's work item, a function's step), each retry, and each operator request made
//! through [`crate::Controls`]. Every kind's events reach the log through
//! [`crate::FlowWriter`], so this is the one place where they are seen, whatever the front
//! door, and they are told once they are durable (after the commit that records them).
//!
//! **Must never:** log or label a payload (a flow's input, a result, a signal's value) or
//! allocate on the hot path: metric labels are static strings.

use flowstate_core::journal::JournalEntry;
use flowstate_core::machine::{RetryState, TaskState};
use flowstate_core::{
    EventBody, Failure, FlowId, FlowKind, FlowRecord, FlowStatus, OutcomeKind, Transition,
};

use crate::{ControlError, ControlRequest};

/// A flow counter, histogram or gauge labelled with a flow's kind (and more static labels),
/// with no allocation: every label is a literal.
macro_rules! by_kind {
    ($kind:expr, $macro:ident, $name:literal $(, $key:literal => $value:literal)*) => {
        match $kind {
            FlowKind::TaskGraph => metrics::$macro!($name, "kind" => "task_graph" $(, $key => $value)*),
            FlowKind::Plan => metrics::$macro!($name, "kind" => "plan" $(, $key => $value)*),
            _ => metrics::$macro!($name, "kind" => "function" $(, $key => $value)*),
        }
    };
}

/// After a successful commit: logs and counts a flow that started (`before` is `None`: the
/// commit created it), what the committed events meant (`observed`), and a flow that ended
/// (its status moved from one that had not ended into one that has: a plan's deactivation
/// after it failed is not a second end), in that order.
pub(crate) fn committed(before: Option<FlowStatus>, record: &FlowRecord, observed: &[Observed]) {
    let (flow, kind, definition) = (record.id, record.kind, record.definition.as_str());
    if before.is_none() {
        by_kind!(kind, counter, "flowstate_flows_started_total").increment(1);
        tracing::info!(flow = %flow, kind = kind.key(), definition, "flow started");
    }
    told(flow, observed);
    if before.is_some_and(FlowStatus::has_ended) {
        return;
    }
    let Some(outcome) = record.outcome().map(|outcome| outcome.kind()) else {
        return;
    };
    let seconds = record
        .updated_at
        .as_micros()
        .saturating_sub(record.created_at.as_micros()) as f64
        / 1e6;
    match outcome {
        OutcomeKind::Succeeded => {
            by_kind!(kind, counter, "flowstate_flows_finished_total", "outcome" => "succeeded")
                .increment(1);
        }
        OutcomeKind::Cancelled => {
            by_kind!(kind, counter, "flowstate_flows_finished_total", "outcome" => "cancelled")
                .increment(1);
        }
        _ => {
            by_kind!(kind, counter, "flowstate_flows_finished_total", "outcome" => "failed")
                .increment(1);
        }
    }
    by_kind!(kind, histogram, "flowstate_flow_duration_seconds").record(seconds);
    tracing::info!(
        flow = %flow,
        kind = kind.key(),
        definition,
        outcome = outcome.key(),
        status = record.status.key(),
        duration_seconds = seconds,
        "flow finished"
    );
}

/// What a staged event means to operators, told once its commit succeeded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observed {
    /// A step succeeded (counted, not logged: the common case).
    StepSucceeded(FlowKind),
    /// A step failed (for good, or this attempt).
    StepFailed {
        kind: FlowKind,
        step: String,
        failure_kind: String,
        message: String,
    },
    /// A retry was decided: a task graph's retry controller runs its scope again, or a
    /// plan's work item is tried again at `due`.
    Retry {
        kind: FlowKind,
        step: String,
        /// The attempt that comes next, when the kind numbers attempts.
        attempt: Option<u32>,
        /// The kind of failure that made the retry (empty when the kind does not say).
        failure_kind: String,
    },
}

impl Observed {
    fn failed(kind: FlowKind, step: &str, failure: Option<&Failure>) -> Self {
        Self::StepFailed {
            kind,
            step: step.to_owned(),
            failure_kind: failure.map(|f| f.kind.clone()).unwrap_or_default(),
            message: failure.map(|f| f.message.clone()).unwrap_or_default(),
        }
    }
}

/// What `body` means to operators, if anything: a step's end or a retry.
pub(crate) fn observe(body: &EventBody) -> Option<Observed> {
    match body {
        EventBody::TaskStateChanged {
            atom, to, failure, ..
        } => match to {
            TaskState::Success => Some(Observed::StepSucceeded(FlowKind::TaskGraph)),
            TaskState::Failure => Some(Observed::failed(
                FlowKind::TaskGraph,
                atom,
                failure.as_ref(),
            )),
            _ => None,
        },
        EventBody::RetryStateChanged {
            atom,
            to: RetryState::Retrying,
            ..
        } => Some(Observed::Retry {
            kind: FlowKind::TaskGraph,
            step: atom.clone(),
            attempt: None,
            failure_kind: String::new(),
        }),
        EventBody::WorkSucceeded { .. } => Some(Observed::StepSucceeded(FlowKind::Plan)),
        EventBody::WorkFailed { step, failure, .. } => {
            Some(Observed::failed(FlowKind::Plan, step, Some(failure)))
        }
        EventBody::RetryScheduled {
            step,
            attempt,
            failure,
            ..
        } => Some(Observed::Retry {
            // The attempt failed and another is scheduled: one retry, told with the failure.
            kind: FlowKind::Plan,
            step: step.clone(),
            attempt: Some(attempt.saturating_add(1)),
            failure_kind: failure.kind.clone(),
        }),
        EventBody::JournalEntryRecorded { entry, .. }
        | EventBody::BranchEntryRecorded { entry, .. } => match entry {
            JournalEntry::Step { outcome: Ok(_), .. } => {
                Some(Observed::StepSucceeded(FlowKind::Function))
            }
            JournalEntry::Step {
                name,
                outcome: Err(failure),
            } => Some(Observed::failed(FlowKind::Function, name, Some(failure))),
            _ => None,
        },
        _ => None,
    }
}

/// Tells what the events of a successful commit of `flow` meant (see [`observe`]).
fn told(flow: FlowId, observed: &[Observed]) {
    for observed in observed {
        match observed {
            Observed::StepSucceeded(kind) => {
                by_kind!(*kind, counter, "flowstate_steps_total", "outcome" => "succeeded")
                    .increment(1);
            }
            Observed::StepFailed {
                kind,
                step,
                failure_kind,
                message,
            } => {
                by_kind!(*kind, counter, "flowstate_steps_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(
                    flow = %flow,
                    kind = kind.key(),
                    step = step.as_str(),
                    failure = failure_kind.as_str(),
                    message = message.as_str(),
                    "step failed"
                );
            }
            Observed::Retry {
                kind,
                step,
                attempt,
                failure_kind,
            } => {
                by_kind!(*kind, counter, "flowstate_retries_total").increment(1);
                tracing::info!(
                    flow = %flow,
                    kind = kind.key(),
                    step = step.as_str(),
                    attempt = *attempt,
                    failure = failure_kind.as_str(),
                    "retry"
                );
            }
        }
    }
}

/// Logs and counts an operator's request of `flow` (through [`crate::Controls`]), with
/// what became of it.
pub(crate) fn operator_action(
    flow: FlowId,
    request: ControlRequest,
    reason: Option<&str>,
    result: &Result<Transition, ControlError>,
) {
    let result_key = match result {
        Ok(Transition::Allowed) => "recorded",
        Ok(Transition::Ignored) => "ignored",
        Err(_) => "refused",
    };
    match request {
        ControlRequest::Cancel => {
            metrics::counter!("flowstate_operator_actions_total", "action" => "cancel")
        }
        ControlRequest::Suspend => {
            metrics::counter!("flowstate_operator_actions_total", "action" => "suspend")
        }
        ControlRequest::Resume => {
            metrics::counter!("flowstate_operator_actions_total", "action" => "resume")
        }
    }
    .increment(1);
    match result {
        Err(error) => tracing::info!(
            flow = %flow,
            action = %request,
            reason,
            result = result_key,
            %error,
            "operator action"
        ),
        Ok(_) => tracing::info!(
            flow = %flow,
            action = %request,
            reason,
            result = result_key,
            "operator action"
        ),
    }
}
