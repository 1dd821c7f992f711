//! Durable-function journals: replay matches calls to entries by kind and name, names the
//! position, both sides and the source location when they differ, catches early returns and
//! stalls, follows `patched` semantics; and the fold keeps journals dense, live-only and
//! fenced.

use flowstate_core::machine::ActivationState;
use flowstate_core::{
    fold, Call, Event, EventBody, Failure, FlowId, FlowKind, FoldError, JournalEntry, JournalError,
    Replay, Replayer, StopAt, Timestamp,
};
use proptest::prelude::*;
use serde_json::json;

fn step(name: &str, value: i64) -> JournalEntry {
    JournalEntry::Step {
        name: name.to_owned(),
        outcome: Ok(json!(value)),
    }
}

#[test]
fn a_journal_replays_its_own_calls_without_running_them() {
    let journal = vec![
        step("reserve", 1),
        JournalEntry::Now {
            time: Timestamp::from_micros(5),
        },
        JournalEntry::Step {
            name: "charge".into(),
            outcome: Err(Failure::new("CardDeclined", "insufficient funds")),
        },
    ];
    let mut replay = Replayer::new(&journal);
    assert!(matches!(
        replay.call(Call::Step { name: "reserve" }, "f.rs:1:1"),
        Replay::Recorded { position: 0, .. }
    ));
    assert!(matches!(
        replay.call(Call::Now, "f.rs:2:1"),
        Replay::Recorded {
            position: 1,
            entry: JournalEntry::Now { .. }
        }
    ));
    match replay.call(Call::Step { name: "charge" }, "f.rs:3:1") {
        Replay::Recorded {
            entry:
                JournalEntry::Step {
                    outcome: Err(failure),
                    ..
                },
            ..
        } => assert_eq!(failure.kind, "CardDeclined", "the recorded error, by kind"),
        other => panic!("{other:?}"),
    }
    assert!(!replay.is_replaying());
    assert_eq!(
        replay.call(Call::Step { name: "ship" }, "f.rs:4:1"),
        Replay::Live { position: 3 }
    );
    assert_eq!(replay.check_return("f.rs:5:1"), Ok(()));
}

#[test]
fn a_divergence_names_the_position_both_sides_and_the_location() {
    let journal = vec![step("reserve", 1), step("charge", 2)];
    let mut replay = Replayer::new(&journal);
    let _ = replay.call(Call::Step { name: "reserve" }, "a.rs:1:1");
    match replay.call(Call::Step { name: "refund" }, "src/order.rs:42:9") {
        Replay::Diverged(diagnostic) => {
            assert_eq!(diagnostic.position, 1);
            assert_eq!(diagnostic.logged, "step \"charge\"");
            assert_eq!(diagnostic.attempted, "asked for step \"refund\"");
            assert_eq!(diagnostic.location, "src/order.rs:42:9");
            assert_eq!(
                diagnostic.to_string(),
                "journal position 1: the journal recorded step \"charge\", but the code asked for step \"refund\" (at src/order.rs:42:9)"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut replay = Replayer::new(&journal);
    assert!(matches!(
        replay.call(Call::Sleep, "b.rs:1:1"),
        Replay::Diverged(_)
    ));
}

#[test]
fn returning_or_waiting_before_the_journal_ends_is_a_replay_failure() {
    let journal = vec![step("a", 1), step("b", 2)];
    let mut replay = Replayer::new(&journal);
    let _ = replay.call(Call::Step { name: "a" }, "x");
    let early = replay.check_return("f.rs:9:1").expect_err("early return");
    assert_eq!((early.position, early.attempted.as_str()), (1, "returned"));
    let stall = replay
        .check_wait("signal \"go\"", "f.rs:8:1")
        .expect_err("stall");
    assert_eq!(stall.attempted, "stopped to wait for signal \"go\"");
    let _ = replay.call(Call::Step { name: "b" }, "x");
    assert_eq!(replay.check_wait("a timer", "x"), Ok(()));
}

#[test]
fn patched_is_true_live_and_when_recorded_false_in_an_older_journal() {
    // Written before the change: no marker; the old code path continues with "old".
    let old = vec![step("before", 1), step("old", 2)];
    let mut replay = Replayer::new(&old);
    let _ = replay.call(Call::Step { name: "before" }, "x");
    assert_eq!(
        replay.call(Call::Patched { change: "v2" }, "x"),
        Replay::Unpatched
    );
    assert!(matches!(
        replay.call(Call::Step { name: "old" }, "x"),
        Replay::Recorded { position: 1, .. }
    ));
    // Reached live: recorded, so that later replays take the new path again.
    assert_eq!(
        replay.call(Call::Patched { change: "v3" }, "x"),
        Replay::Live { position: 2 }
    );
    let new = vec![
        step("before", 1),
        JournalEntry::Patched {
            change: "v2".into(),
        },
        step("new", 3),
    ];
    let mut replay = Replayer::new(&new);
    let _ = replay.call(Call::Step { name: "before" }, "x");
    assert!(matches!(
        replay.call(Call::Patched { change: "v2" }, "x"),
        Replay::Recorded { position: 1, .. }
    ));
}

/// A program: the calls a function makes, in order.
fn entry_for(kind: u8, name: u8) -> JournalEntry {
    let name = format!("s{name}");
    match kind % 4 {
        0 => step(&name, 1),
        1 => JournalEntry::Random { value: 7 },
        2 => JournalEntry::Sleep {
            until: Timestamp::from_micros(9),
        },
        _ => JournalEntry::Uuid { value: "u".into() },
    }
}

proptest! {
    /// Against a simple model: a program replays its own journal completely, and a program
    /// that first differs at index k diverges exactly at position k.
    #[test]
    fn replay_diverges_exactly_where_the_program_first_differs(
        program in proptest::collection::vec((0u8..4, 0u8..3), 0..20),
        changed in proptest::collection::vec((0u8..4, 0u8..3), 0..20),
    ) {
        let journal: Vec<JournalEntry> =
            program.iter().map(|&(k, n)| entry_for(k, n)).collect();
        let mut same = Replayer::new(&journal);
        for entry in &journal {
            let replayed = matches!(same.call(entry.call(), "x"), Replay::Recorded { .. });
            prop_assert!(replayed, "a journal replays its own program");
        }
        prop_assert!(same.check_return("x").is_ok());

        let other: Vec<JournalEntry> =
            changed.iter().map(|&(k, n)| entry_for(k, n)).collect();
        let first_difference = journal
            .iter()
            .zip(&other)
            .position(|(a, b)| a.call() != b.call());
        let mut replay = Replayer::new(&journal);
        let mut diverged_at = None;
        for entry in &other {
            match replay.call(entry.call(), "x") {
                Replay::Diverged(d) => {
                    diverged_at = Some(d.position as usize);
                    break;
                }
                Replay::Live { .. } => break,
                _ => {}
            }
        }
        prop_assert_eq!(diverged_at, first_difference);
    }
}

const FLOW_TIME: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

fn events(bodies: Vec<EventBody>) -> Vec<flowstate_core::RawEvent> {
    let flow = FlowId::from_parts(FLOW_TIME, [1; 10]);
    std::iter::once(EventBody::FlowCreated {
        kind: FlowKind::Function,
        definition: "order".into(),
        input: json!({}),
    })
    .chain(bodies)
    .enumerate()
    .map(|(i, body)| {
        Event {
            flow,
            seq: i as u64 + 1,
            time: FLOW_TIME,
            body,
        }
        .encode()
        .expect("encode")
    })
    .collect()
}

fn recorded(position: u32, entry: JournalEntry) -> EventBody {
    EventBody::JournalEntryRecorded { position, entry }
}

fn journal_error(bodies: Vec<EventBody>) -> JournalError {
    match fold(&events(bodies), StopAt::End) {
        Err(FoldError::Journal { source, .. }) => source,
        other => panic!("expected a journal error, got {other:?}"),
    }
}

#[test]
fn the_fold_keeps_the_journal_inbox_and_outcome() {
    let record = fold(
        &events(vec![
            EventBody::RunStarted {
                run: 1,
                incarnation: "host/1".into(),
            },
            recorded(0, step("reserve", 1)),
            recorded(
                1,
                JournalEntry::Sleep {
                    until: Timestamp::from_micros(10),
                },
            ),
            EventBody::ActivationStateChanged {
                to: ActivationState::Sleeping,
                diagnostic: None,
            },
            EventBody::SignalDelivered {
                name: "approved".into(),
                value: json!(true),
            },
            EventBody::RunStarted {
                run: 2,
                incarnation: "host/2".into(),
            },
            EventBody::ActivationStateChanged {
                to: ActivationState::ActiveReplay,
                diagnostic: None,
            },
            EventBody::ActivationStateChanged {
                to: ActivationState::ActiveCurrent,
                diagnostic: None,
            },
            EventBody::SleepEnded { position: 1 },
            recorded(
                2,
                JournalEntry::Signal {
                    name: "approved".into(),
                    value: json!(true),
                },
            ),
            EventBody::FunctionReturned {
                outcome: Ok(json!("shipped")),
            },
            EventBody::ActivationStateChanged {
                to: ActivationState::Done,
                diagnostic: None,
            },
        ]),
        StopAt::End,
    )
    .expect("folds");
    let function = record.function.expect("a function record");
    assert_eq!(function.journal.len(), 3);
    assert!(function.sleeps_ended.contains(&1));
    assert!(function.inbox.is_empty(), "the signal was consumed");
    assert_eq!(function.outcome, Some(Ok(json!("shipped"))));
    assert_eq!(function.run, 2);
    assert_eq!(function.incarnations.len(), 2);
}

#[test]
fn the_fold_refuses_journals_that_are_not_dense_live_and_fenced() {
    assert_eq!(
        journal_error(vec![recorded(1, step("a", 1))]),
        JournalError::OutOfOrder {
            expected: 0,
            found: 1
        }
    );
    assert!(matches!(
        journal_error(vec![
            EventBody::ActivationStateChanged {
                to: ActivationState::Sleeping,
                diagnostic: None,
            },
            recorded(0, step("a", 1)),
        ]),
        JournalError::NotLive { .. }
    ));
    assert_eq!(
        journal_error(vec![
            recorded(0, step("a", 1)),
            EventBody::SleepEnded { position: 0 }
        ]),
        JournalError::NoSuchSleep { position: 0 }
    );
    assert!(matches!(
        journal_error(vec![recorded(
            0,
            JournalEntry::Signal {
                name: "go".into(),
                value: json!(1)
            }
        )]),
        JournalError::SignalNotDelivered { .. }
    ));
    assert_eq!(
        journal_error(vec![
            EventBody::RunStarted {
                run: 2,
                incarnation: "a".into()
            },
            EventBody::RunStarted {
                run: 2,
                incarnation: "b".into()
            },
        ]),
        JournalError::StaleRun { run: 2, last: 2 }
    );
    assert_eq!(
        journal_error(vec![
            EventBody::FunctionReturned {
                outcome: Ok(json!(1))
            },
            EventBody::FunctionReturned {
                outcome: Ok(json!(2))
            },
        ]),
        JournalError::ReturnedTwice
    );
    assert!(matches!(
        journal_error(vec![
            EventBody::FunctionReturned {
                outcome: Ok(json!(1))
            },
            EventBody::SignalDelivered {
                name: "late".into(),
                value: json!(null)
            },
        ]),
        JournalError::DeliveredWhenDone { .. }
    ));
}
