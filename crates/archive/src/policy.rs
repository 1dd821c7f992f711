//! [`ArchivePolicy`]: which deactivated flows leave the live store, and the named defaults
//! and limits. Selection ([`select`]) is a pure function of the candidates, the live store's
//! totals, the policy and the time, so it is tested without a store.

use std::time::Duration;

use flowstate_core::machine::{ActivationState, FlowState, PlanState};
use flowstate_core::{FlowId, FlowKind, FlowStatus, Timestamp};

use crate::error::ArchiveError;

/// By default a finished flow is archived a week after its last event.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Flows archived together by default: their `archived` appends, writes and deletes are in
/// flight at once, so a store's group commit takes each step of a batch in one commit.
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// The largest batch: every flow of a batch is in flight at once (and, on SQLite, in one
/// group commit, whose largest group is 1,024 commands).
pub const MAX_BATCH_SIZE: usize = 1_024;

/// How long [`crate::Archiver::run`] waits between passes by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// When finished flows (see [`FINISHED`]) are moved to the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivePolicy {
    /// Archive every finished flow whose last event is at least this old.
    pub max_age: Duration,
    /// While the live store holds more flows than this, archive finished flows (oldest,
    /// then largest, first) whatever their age.
    pub max_live_flows: Option<u64>,
    /// While the live store's event bodies add up to more bytes than this, archive
    /// finished flows (oldest, then largest, first) whatever their age.
    pub max_live_bytes: Option<u64>,
    /// Flows archived together, 1 to [`MAX_BATCH_SIZE`].
    pub batch_size: usize,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        Self {
            max_age: DEFAULT_MAX_AGE,
            max_live_flows: None,
            max_live_bytes: None,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

impl ArchivePolicy {
    /// Refuses a batch size of 0 or over [`MAX_BATCH_SIZE`].
    pub fn check(&self) -> Result<(), ArchiveError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(ArchiveError::Policy {
                detail: format!(
                    "batch size {} is outside 1 to {MAX_BATCH_SIZE} (MAX_BATCH_SIZE)",
                    self.batch_size
                ),
            });
        }
        Ok(())
    }

    /// Whether the policy looks at the live store's size.
    #[must_use]
    pub fn has_limits(&self) -> bool {
        self.max_live_flows.is_some() || self.max_live_bytes.is_some()
    }
}

/// The finished states the archive worker moves, per kind: a plan once deactivated (all its
/// work recorded), a task graph that ended SUCCESS, FAILURE or REVERTED, a durable function
/// that is done.
pub const FINISHED: [(FlowKind, FlowStatus); 5] = [
    (FlowKind::Plan, FlowStatus::Plan(PlanState::Deactivated)),
    (
        FlowKind::TaskGraph,
        FlowStatus::TaskGraph(FlowState::Success),
    ),
    (
        FlowKind::TaskGraph,
        FlowStatus::TaskGraph(FlowState::Failure),
    ),
    (
        FlowKind::TaskGraph,
        FlowStatus::TaskGraph(FlowState::Reverted),
    ),
    (
        FlowKind::Function,
        FlowStatus::Function(ActivationState::Done),
    ),
];

/// Whether a flow in `status` is finished, so that the archive worker may move it.
#[must_use]
pub fn is_finished(status: FlowStatus) -> bool {
    FINISHED.iter().any(|(_, finished)| *finished == status)
}

/// Whether an archived copy may end in `status`: a plan marked `archived`, or a task graph or
/// function in a finished state (those kinds have no `archived` state: their copy ends as
/// the live log did).
#[must_use]
pub fn is_archived_state(status: FlowStatus) -> bool {
    match status {
        FlowStatus::Plan(state) => state == PlanState::Archived,
        other => is_finished(other),
    }
}

/// A finished flow that may be archived: what selection needs of its index row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The flow.
    pub id: FlowId,
    /// The time of its last event.
    pub updated_at: Timestamp,
    /// The size of its event bodies.
    pub bytes: u64,
}

/// How much the live store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveTotals {
    /// Flows.
    pub flows: u64,
    /// Bytes of event bodies.
    pub bytes: u64,
}

/// The flows to archive, in the order to archive them: oldest last event first, then the
/// largest, then by id. Every candidate at least `max_age` old is selected; so are younger
/// ones, in that order, while the live store (`totals`, less what is selected) holds more
/// flows or bytes than the policy's limits.
#[must_use]
pub fn select(
    mut candidates: Vec<Candidate>,
    totals: LiveTotals,
    policy: &ArchivePolicy,
    now: Timestamp,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| {
        a.updated_at
            .cmp(&b.updated_at)
            .then(b.bytes.cmp(&a.bytes))
            .then(a.id.cmp(&b.id))
    });
    let max_age = i64::try_from(policy.max_age.as_micros()).unwrap_or(i64::MAX);
    let cutoff = Timestamp::from_micros(now.as_micros().saturating_sub(max_age));
    let mut left = totals;
    let over = |left: &LiveTotals| {
        policy.max_live_flows.is_some_and(|max| left.flows > max)
            || policy.max_live_bytes.is_some_and(|max| left.bytes > max)
    };
    let mut selected = Vec::new();
    for candidate in candidates {
        // Sorted by age: once one is young enough and the store is within its limits, so are
        // all that follow.
        if candidate.updated_at > cutoff && !over(&left) {
            break;
        }
        left.flows = left.flows.saturating_sub(1);
        left.bytes = left.bytes.saturating_sub(candidate.bytes);
        selected.push(candidate);
    }
    selected
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn candidate(n: u8, hours_ago: i64, bytes: u64) -> Candidate {
        Candidate {
            id: FlowId::from_parts(Timestamp::from_micros(i64::from(n)), [n; 10]),
            updated_at: Timestamp::from_micros(100 * HOUR - hours_ago * HOUR),
            bytes,
        }
    }

    fn ids(selected: &[Candidate]) -> Vec<FlowId> {
        selected.iter().map(|c| c.id).collect()
    }

    fn policy(hours: u64) -> ArchivePolicy {
        ArchivePolicy {
            max_age: Duration::from_secs(hours * 3600),
            ..ArchivePolicy::default()
        }
    }

    const NOW: Timestamp = Timestamp::from_micros(100 * HOUR);

    #[test]
    fn old_enough_flows_are_selected_oldest_first() {
        let (a, b, c) = (
            candidate(1, 5, 10),
            candidate(2, 30, 10),
            candidate(3, 1, 10),
        );
        let totals = LiveTotals::default();
        let selected = select(vec![a, b, c], totals, &policy(2), NOW);
        assert_eq!(ids(&selected), vec![b.id, a.id]);
        // Exactly max_age old counts as old enough.
        let selected = select(vec![a, b, c], totals, &policy(5), NOW);
        assert_eq!(ids(&selected), vec![b.id, a.id]);
        assert!(select(vec![a, b, c], totals, &policy(31), NOW).is_empty());
    }

    #[test]
    fn over_the_flow_limit_the_oldest_then_largest_go_first() {
        let (a, b, c, d) = (
            candidate(1, 3, 10),
            candidate(2, 3, 500),
            candidate(3, 9, 1),
            candidate(4, 1, 10),
        );
        let policy = ArchivePolicy {
            max_live_flows: Some(8),
            ..policy(100)
        };
        let totals = LiveTotals {
            flows: 11,
            bytes: 0,
        };
        // Three over the limit: the oldest (c), then of the two equally old the larger (b).
        let selected = select(vec![a, b, c, d], totals, &policy, NOW);
        assert_eq!(ids(&selected), vec![c.id, b.id, a.id]);
        let within = LiveTotals { flows: 8, bytes: 0 };
        assert!(select(vec![a, b, c, d], within, &policy, NOW).is_empty());
    }

    #[test]
    fn over_the_byte_limit_flows_go_until_the_store_is_within_it() {
        let (a, b, c) = (
            candidate(1, 3, 400),
            candidate(2, 2, 300),
            candidate(3, 1, 200),
        );
        let policy = ArchivePolicy {
            max_live_bytes: Some(1_000),
            ..policy(100)
        };
        let totals = LiveTotals {
            flows: 3,
            bytes: 1_500,
        };
        // 1,500 - 400 = 1,100 is still over; - 300 = 800 is within.
        let selected = select(vec![c, b, a], totals, &policy, NOW);
        assert_eq!(ids(&selected), vec![a.id, b.id]);
    }

    #[test]
    fn batch_sizes_are_checked() {
        for batch_size in [0, MAX_BATCH_SIZE + 1] {
            let policy = ArchivePolicy {
                batch_size,
                ..ArchivePolicy::default()
            };
            assert!(matches!(policy.check(), Err(ArchiveError::Policy { .. })));
        }
        assert!(ArchivePolicy::default().check().is_ok());
    }
}
