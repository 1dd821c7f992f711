//! How a finished flow ended, the same for every kind: [`Outcome`], derived from the folded
//! record alone ([`FlowRecord::outcome`]).
//!
//! A flow's lifecycle state says where it is by its kind's state table; its outcome says how
//! it ended, in words an operator shares across kinds: succeeded, failed (with the error's
//! kind and message), or cancelled (with the reason). A plan that failed keeps the outcome
//! `failed` after it deactivates and is archived, and a task graph that was reverted is
//! `cancelled` when someone asked for it and `failed` when a failure made it revert.
//!
//! **Must never:** record anything: the outcome is a function of the log, so it needs no
//! event of its own and can never disagree with the state.

use serde::{Deserialize, Serialize};

use crate::fold::{FlowRecord, FlowStatus};
use crate::machine::{ActivationState, FlowState, PlanState};
use crate::Failure;

/// The kind of failure a cancelled plan or function ends with (its message is the reason).
pub const CANCELLED: &str = "Cancelled";

/// How a finished flow ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// It did what it was for.
    Succeeded,
    /// It failed, with this failure.
    Failed {
        /// What failed.
        failure: Failure,
    },
    /// Someone cancelled it, with this reason (what it had done was undone or compensated).
    Cancelled {
        /// The reason given.
        reason: String,
    },
}

/// The kind of an [`Outcome`], what listings filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// [`Outcome::Succeeded`].
    Succeeded,
    /// [`Outcome::Failed`].
    Failed,
    /// [`Outcome::Cancelled`].
    Cancelled,
}

impl OutcomeKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 3] = [Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Its name in listings and filters.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The kind named `key`.
    #[must_use]
    pub fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.key() == key)
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl Outcome {
    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Succeeded => OutcomeKind::Succeeded,
            Self::Failed { .. } => OutcomeKind::Failed,
            Self::Cancelled { .. } => OutcomeKind::Cancelled,
        }
    }

    /// A failure ended the flow: cancelled when its kind is [`CANCELLED`], failed otherwise.
    fn of_failure(failure: &Failure) -> Self {
        if failure.kind == CANCELLED {
            Self::Cancelled {
                reason: failure.message.clone(),
            }
        } else {
            Self::Failed {
                failure: failure.clone(),
            }
        }
    }
}

impl FlowStatus {
    /// Whether a flow in this state has ended, so that it has an [`Outcome`]: a task graph in
    /// SUCCESS, FAILURE or REVERTED (a task graph may still be run again from there), a plan
    /// that is no longer active, a function that is done.
    #[must_use]
    pub fn has_ended(self) -> bool {
        match self {
            Self::TaskGraph(state) => matches!(
                state,
                FlowState::Success | FlowState::Failure | FlowState::Reverted
            ),
            Self::Plan(state) => state != PlanState::Active,
            Self::Function(state) => state == ActivationState::Done,
        }
    }
}

impl FlowRecord {
    /// How the flow ended, once it has ([`FlowStatus::has_ended`]): `None` while it may
    /// still go on (running, suspended, waiting, a plan still active, a function in replay
    /// failure).
    #[must_use]
    pub fn outcome(&self) -> Option<Outcome> {
        if !self.status.has_ended() {
            return None;
        }
        match self.status {
            FlowStatus::TaskGraph(state) => self.task_graph_outcome(state),
            FlowStatus::Plan(state) => self.plan_outcome(state),
            FlowStatus::Function(state) => self.function_outcome(state),
        }
    }

    fn task_graph_outcome(&self, state: FlowState) -> Option<Outcome> {
        match state {
            FlowState::Success => Some(Outcome::Succeeded),
            FlowState::Reverted => Some(match &self.cancel_requested {
                Some(reason) => Outcome::Cancelled {
                    reason: reason.clone(),
                },
                None => Outcome::Failed {
                    failure: self.first_atom_failure(),
                },
            }),
            FlowState::Failure => Some(Outcome::Failed {
                failure: self.first_atom_failure(),
            }),
            _ => None,
        }
    }

    /// The failure that made a task graph fail or revert: the atom failure recorded first
    /// (a revert that failed, if no execute did).
    fn first_atom_failure(&self) -> Failure {
        let by_order = |failures: Vec<(u64, &Failure)>| {
            failures
                .into_iter()
                .min_by_key(|(seq, _)| *seq)
                .map(|(_, failure)| failure.clone())
        };
        let executes = self.atoms.values().filter_map(|atom| {
            atom.failure
                .as_ref()
                .map(|failure| (atom.last_seq, failure))
        });
        let reverts = self.atoms.values().filter_map(|atom| {
            atom.revert_failure
                .as_ref()
                .map(|failure| (atom.last_seq, failure))
        });
        by_order(executes.collect())
            .or_else(|| by_order(reverts.collect()))
            .unwrap_or_else(|| Failure::new("Failed", "the task graph failed"))
    }

    fn plan_outcome(&self, state: PlanState) -> Option<Outcome> {
        if state == PlanState::Active {
            return None;
        }
        let failure = self.plan.as_ref().and_then(|plan| plan.failure.as_ref());
        Some(match failure {
            Some(failure) => Outcome::of_failure(failure),
            None if state == PlanState::Failed => Outcome::Failed {
                failure: Failure::new("Failed", "the plan failed"),
            },
            None => Outcome::Succeeded,
        })
    }

    fn function_outcome(&self, state: ActivationState) -> Option<Outcome> {
        if state != ActivationState::Done {
            return None;
        }
        match self.function.as_ref().and_then(|f| f.outcome.as_ref()) {
            Some(Ok(_)) => Some(Outcome::Succeeded),
            Some(Err(failure)) => Some(Outcome::of_failure(failure)),
            None => Some(Outcome::Failed {
                failure: Failure::new("Failed", "the function is done without an outcome"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_kinds_round_trip_by_key() {
        for kind in OutcomeKind::ALL {
            assert_eq!(OutcomeKind::parse(kind.key()), Some(kind));
        }
        assert_eq!(OutcomeKind::parse("terminated"), None);
    }

    #[test]
    fn a_plan_ends_once_when_it_fails_or_completes_not_again_when_it_deactivates() {
        let plan = FlowStatus::Plan;
        assert!(!plan(PlanState::Active).has_ended());
        for state in [
            PlanState::Completed,
            PlanState::Failed,
            PlanState::Deactivated,
        ] {
            assert!(plan(state).has_ended(), "{state:?}");
        }
        let graph = FlowStatus::TaskGraph;
        assert!(!graph(FlowState::Suspended).has_ended());
        assert!(graph(FlowState::Reverted).has_ended());
        assert!(!FlowStatus::Function(ActivationState::ReplayFailure).has_ended());
    }

    #[test]
    fn a_cancelled_failure_is_a_cancellation() {
        let cancelled = Outcome::of_failure(&Failure::new(CANCELLED, "customer called"));
        assert_eq!(
            cancelled,
            Outcome::Cancelled {
                reason: "customer called".to_owned()
            }
        );
        let failed = Outcome::of_failure(&Failure::new("Timeout", "too slow"));
        assert_eq!(failed.kind(), OutcomeKind::Failed);
    }
}
