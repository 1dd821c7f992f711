//! The fold rebuilds a flow's state, refuses bad logs naming the event at fault, and stops
//! early for time travel.

use flowstate_core::machine::{FlowState, TaskState};
use flowstate_core::{
    fold, AtomState, Event, EventBody, FlowId, FlowKind, FlowStatus, FoldError, Folder, Intention,
    RawEvent, StopAt, Timestamp,
};
use proptest::prelude::*;

fn flow() -> FlowId {
    FlowId::from_parts(Timestamp::from_micros(1_700_000_000_000_000), [7; 10])
}

fn raw(seq: u64, body: EventBody) -> RawEvent {
    Event {
        flow: flow(),
        seq,
        time: Timestamp::from_micros(1_000 * i64::try_from(seq).expect("small")),
        body,
    }
    .encode()
    .expect("encodes")
}

fn created() -> EventBody {
    EventBody::FlowCreated {
        kind: FlowKind::TaskGraph,
        definition: "order".into(),
        input: serde_json::json!({"amount": 3}),
    }
}

fn flow_to(to: FlowState) -> EventBody {
    EventBody::FlowStateChanged { to }
}

fn task_to(atom: &str, to: TaskState) -> EventBody {
    EventBody::TaskStateChanged {
        atom: atom.into(),
        to,
        intention: Intention::Execute,
        result: None,
        failure: None,
    }
}

fn good_log() -> Vec<RawEvent> {
    vec![
        raw(1, created()),
        raw(2, flow_to(FlowState::Running)),
        raw(3, task_to("charge", TaskState::Running)),
        raw(4, task_to("charge", TaskState::Success)),
        raw(5, flow_to(FlowState::Success)),
    ]
}

#[test]
fn a_clean_log_folds_to_its_final_state() {
    let record = fold(&good_log(), StopAt::End).expect("folds");
    assert_eq!(record.status, FlowStatus::TaskGraph(FlowState::Success));
    assert_eq!(record.last_seq, 5);
    assert_eq!(record.definition, "order");
    assert_eq!(
        record.atoms["charge"].state,
        AtomState::Task(TaskState::Success)
    );
    assert_eq!(record.created_at, Timestamp::from_micros(1_000));
    assert_eq!(record.updated_at, Timestamp::from_micros(5_000));
}

#[test]
fn folding_stops_at_a_sequence_number_or_a_time() {
    let log = good_log();
    let at_three = fold(&log, StopAt::Seq(3)).expect("folds");
    assert_eq!(at_three.last_seq, 3);
    assert_eq!(
        at_three.atoms["charge"].state,
        AtomState::Task(TaskState::Running)
    );
    let at_time = fold(&log, StopAt::Time(Timestamp::from_micros(2_500))).expect("folds");
    assert_eq!(at_time.last_seq, 2);
    assert_eq!(at_time.status, FlowStatus::TaskGraph(FlowState::Running));
    assert_eq!(
        fold(&log, StopAt::Time(Timestamp::from_micros(10))),
        Err(FoldError::EmptyLog)
    );
}

#[test]
fn a_gap_or_a_duplicate_names_the_sequence_number() {
    let mut log = good_log();
    log.remove(2);
    assert_eq!(
        fold(&log, StopAt::End),
        Err(FoldError::Gap {
            expected: 3,
            found: 4
        })
    );
    let mut log = good_log();
    log.insert(3, log[2].clone());
    assert_eq!(
        fold(&log, StopAt::End),
        Err(FoldError::Duplicate {
            expected: 4,
            found: 3
        })
    );
}

#[test]
fn an_unknown_format_or_body_is_refused_with_its_sequence_number() {
    let mut log = good_log();
    log[3].format = 99;
    let error = fold(&log, StopAt::End).expect_err("refused");
    assert!(
        error.to_string().contains("event 4 has body format 99"),
        "{error}"
    );
    let mut log = good_log();
    log[1].body = br#"{"type":"from_the_future"}"#.to_vec();
    let error = fold(&log, StopAt::End).expect_err("refused");
    assert!(
        error.to_string().starts_with("event 2 has a body"),
        "{error}"
    );
}

#[test]
fn a_transition_the_tables_refuse_is_refused_with_its_sequence_number() {
    let mut log = good_log();
    log[4] = raw(5, flow_to(FlowState::Pending)); // RUNNING -> PENDING is not in the table
    let error = fold(&log, StopAt::End).expect_err("refused");
    assert!(
        matches!(error, FoldError::Transition { seq: 5, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "event 5: invalid flow transition RUNNING -> PENDING: not allowed by the state table"
    );
    let mut log = good_log();
    log[3] = raw(4, task_to("charge", TaskState::Reverted));
    assert!(matches!(
        fold(&log, StopAt::End),
        Err(FoldError::Transition { seq: 4, .. })
    ));
}

#[test]
fn a_recorded_no_op_and_a_log_without_creation_are_refused() {
    let mut log = good_log();
    log[4] = raw(5, flow_to(FlowState::Running));
    assert!(matches!(
        fold(&log, StopAt::End),
        Err(FoldError::IgnoredRecorded { seq: 5, .. })
    ));
    let log = vec![raw(1, flow_to(FlowState::Running))];
    assert!(matches!(
        fold(&log, StopAt::End),
        Err(FoldError::NotCreatedFirst { seq: 1, .. })
    ));
    let log = vec![raw(1, created()), raw(2, created())];
    assert_eq!(
        fold(&log, StopAt::End),
        Err(FoldError::CreatedTwice { seq: 2 })
    );
    let log = vec![
        raw(1, created()),
        raw(
            2,
            EventBody::PlanStateChanged {
                to: flowstate_core::machine::PlanState::Completed,
                reason: None,
            },
        ),
    ];
    assert!(matches!(
        fold(&log, StopAt::End),
        Err(FoldError::WrongKind { seq: 2, .. })
    ));
}

#[test]
fn a_refused_event_leaves_the_state_untouched() {
    let mut folder = Folder::new();
    for event in &good_log()[..3] {
        folder.apply_raw(event).expect("applies");
    }
    let before = folder.record().cloned();
    let bad = raw(4, task_to("charge", TaskState::Reverting));
    assert!(folder.apply_raw(&bad).is_err());
    assert_eq!(folder.record().cloned(), before);
    assert_eq!(folder.next_seq(), 4);
}

// A property against a simple model: a random walk through the flow machine, recorded as a log,
// folds to the walk's last state; cutting the log anywhere folds to the walk's state there.
proptest! {
    #[test]
    fn random_walks_fold_to_the_walked_state(choices in proptest::collection::vec(0usize..8, 0..60), cut in 0usize..61) {
        use flowstate_core::Machine;
        let mut log = vec![raw(1, created())];
        let mut states = vec![FlowState::Pending];
        let mut state = FlowState::Pending;
        for choice in choices {
            let candidates: Vec<FlowState> = FlowState::STATES
                .iter()
                .copied()
                .filter(|&to| matches!(FlowState::transition(state, to), Ok(flowstate_core::Transition::Allowed)))
                .collect();
            if candidates.is_empty() { break; }
            state = candidates[choice % candidates.len()];
            let seq = u64::try_from(log.len()).expect("small") + 1;
            log.push(raw(seq, flow_to(state)));
            states.push(state);
        }
        let record = fold(&log, StopAt::End).expect("a walk of allowed transitions folds");
        prop_assert_eq!(record.status, FlowStatus::TaskGraph(state));
        let cut = cut.min(log.len() - 1);
        let partial = fold(&log, StopAt::Seq(u64::try_from(cut).expect("small") + 1)).expect("folds");
        prop_assert_eq!(partial.status, FlowStatus::TaskGraph(states[cut]));
    }
}

/// The log of a done durable function compacted after `dropped` events: its creation at
/// `dropped + 1`, its outcome, the done transition and `journal_dropped` counting `recorded`.
fn compacted_function(dropped: u64, recorded: u64) -> Vec<RawEvent> {
    use flowstate_core::machine::ActivationState;
    let first = dropped + 1;
    vec![
        raw(
            first,
            EventBody::FlowCreated {
                kind: FlowKind::Function,
                definition: "checkout".into(),
                input: serde_json::json!({"cart": 1}),
            },
        ),
        raw(
            first + 1,
            EventBody::FunctionReturned {
                outcome: Ok(serde_json::json!("paid")),
            },
        ),
        raw(
            first + 2,
            EventBody::ActivationStateChanged {
                to: ActivationState::Done,
                diagnostic: None,
            },
        ),
        raw(
            first + 3,
            EventBody::JournalDropped {
                entries: 2,
                events: recorded,
            },
        ),
    ]
}

#[test]
fn a_compacted_log_starts_later_with_its_creation_and_folds() {
    use flowstate_core::machine::ActivationState;
    let log = compacted_function(6, 6);
    assert_eq!(log[0].seq, 7);
    let record = fold(&log, StopAt::End).expect("folds");
    assert_eq!(record.status, FlowStatus::Function(ActivationState::Done));
    assert_eq!((record.first_seq, record.last_seq), (7, 10));
    assert_eq!(record.created_at, Timestamp::from_micros(7_000));
    let function = record.function.as_ref().expect("function");
    assert_eq!(function.outcome, Some(Ok(serde_json::json!("paid"))));
    let dropped = function.journal_dropped.expect("dropped");
    assert_eq!((dropped.entries, dropped.events), (2, 6));
    // The folder goes on after the last event.
    let mut folder = Folder::new();
    for event in &log {
        folder.apply_raw(event).expect("applies");
    }
    assert_eq!(folder.next_seq(), 11);
    // Time travel within the compacted log.
    assert_eq!(
        fold(&log, StopAt::Seq(8)).expect("folds").last_seq,
        8,
        "stops inside the compacted log"
    );
    assert_eq!(
        fold(&log, StopAt::Seq(6)),
        Err(FoldError::EmptyLog),
        "nothing before the compacted log"
    );
    // A log that was never compacted has its first event at 1.
    assert_eq!(fold(&good_log(), StopAt::End).expect("folds").first_seq, 1);
}

#[test]
fn a_log_that_starts_later_with_another_event_is_a_gap() {
    let later = vec![raw(7, flow_to(FlowState::Running))];
    assert_eq!(
        fold(&later, StopAt::End),
        Err(FoldError::Gap {
            expected: 1,
            found: 7
        })
    );
    // Also when the first event is a good log's second one, or does not even decode.
    let log = good_log();
    assert_eq!(
        fold(&log[1..], StopAt::End),
        Err(FoldError::Gap {
            expected: 1,
            found: 2
        })
    );
    let mut garbage = raw(3, created());
    garbage.body = b"{\"type\":\"no_such_event\"}".to_vec();
    assert_eq!(
        fold(std::slice::from_ref(&garbage), StopAt::End),
        Err(FoldError::Gap {
            expected: 1,
            found: 3
        })
    );
    // At 1 it is still "not created first".
    assert!(matches!(
        fold(&[raw(1, flow_to(FlowState::Running))], StopAt::End),
        Err(FoldError::NotCreatedFirst { seq: 1, .. })
    ));
    // And a creation in the middle of a log is still a gap there, not a new start.
    let mut gap = good_log();
    gap.push(raw(9, created()));
    assert_eq!(
        fold(&gap, StopAt::End),
        Err(FoldError::Gap {
            expected: 6,
            found: 9
        })
    );
}

#[test]
fn a_compacted_log_must_count_the_events_it_dropped() {
    for recorded in [0, 5, 7, 10] {
        assert_eq!(
            fold(&compacted_function(6, recorded), StopAt::End),
            Err(FoldError::DroppedCountMismatch {
                seq: 10,
                recorded,
                dropped: 6
            }),
            "journal_dropped says {recorded}"
        );
    }
    // The refused event leaves the state untouched.
    let log = compacted_function(6, 5);
    let mut folder = Folder::new();
    for event in &log[..3] {
        folder.apply_raw(event).expect("applies");
    }
    let before = folder.record().cloned();
    assert!(folder.apply_raw(&log[3]).is_err());
    assert_eq!(folder.record().cloned(), before);
}
