//! Two stores open on one file (as two engine processes would be): each writer keeps the
//! index rows of the flows it wrote in memory, and must notice every append the other one
//! committed in between: the sequence check stays exact and the event chain unbroken.

use std::sync::Arc;

use flowstate_core::{FlowId, FlowKind, ManualClock, Timestamp};
use flowstate_store::{AppendBatch, NewEvent, NewFlow, Store, StoreError};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

fn open(path: &std::path::Path) -> SqliteStore {
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_767_225_600_000_000,
    )));
    SqliteStore::open(path, clock, SqliteOptions::default()).expect("open")
}

fn batch(flow: FlowId, expected_next_seq: u64, events: usize) -> AppendBatch {
    let event = NewEvent {
        time: Timestamp::from_micros(1),
        format: 1,
        body: br#"{"type":"flow_created","kind":"plan","definition":"p"}"#.to_vec(),
    };
    AppendBatch {
        flow,
        expected_next_seq,
        events: vec![event; events],
        create: (expected_next_seq == 1).then(|| NewFlow {
            kind: FlowKind::Plan,
            definition: "p".into(),
            idempotency: None,
        }),
        status: None,
        ready: None,
        timers: Vec::new(),
    }
}

#[tokio::test]
async fn appends_alternating_between_two_stores_on_one_file_stay_in_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let first = open(&path);
    let second = open(&path);
    let flow = FlowId::from_parts(Timestamp::from_micros(1_767_225_600_000_000), [7; 10]);

    first.append(batch(flow, 1, 2)).await.expect("create");
    let mut next = 3;
    for round in 0..20 {
        let (writer, other) = if round % 2 == 0 {
            (&second, &first)
        } else {
            (&first, &second)
        };
        let outcome = writer.append(batch(flow, next, 3)).await.expect("append");
        assert_eq!(outcome.first_seq, next);
        next = outcome.next_seq;
        // The other store last wrote an older state of this flow: its append with that
        // state's sequence number is a conflict, never a second event with the same number.
        let stale = other.append(batch(flow, next - 3, 1)).await;
        assert!(
            matches!(stale, Err(StoreError::Conflict { actual, .. }) if actual == next),
            "round {round}: {stale:?}"
        );
    }
    let events = flowstate_store::read_all(&first, flow).await.expect("read");
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..next).collect::<Vec<_>>());
    first.close().await.expect("close");
    second.close().await.expect("close");
}
