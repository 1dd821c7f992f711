//! The crash test: a child process appends in a loop and prints each acknowledged sequence
//! number; the parent SIGKILLs it at a random moment, 20 times in a row on the same file.
//! After each kill, every acknowledged event is present and every log folds cleanly.
//!
//! The random kill delays come from a seed printed at the start; set `FLOWSTATE_CRASH_SEED`
//! to replay a run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::{fold, FlowId, StopAt};
use flowstate_store::{read_all, FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;
const FLOWS: usize = 8;

/// Runs the child until its first acknowledgement, lets it run a random while longer, kills
/// it, and returns everything it acknowledged.
fn run_and_kill(db: &std::path::Path, delay: Duration) -> Vec<(FlowId, u64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowstate-crash-appender"))
        .arg(db)
        .arg(FLOWS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = Vec::new();
    let mut record = |line: String| {
        let mut parts = line.split_whitespace();
        assert_eq!(
            parts.next(),
            Some("ack"),
            "unexpected child output {line:?}"
        );
        let flow: FlowId = parts.next().and_then(|f| f.parse().ok()).expect("flow id");
        let seq: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seq");
        acked.push((flow, seq));
    };
    let first = lines.recv_timeout(Duration::from_secs(60));
    match first {
        Ok(line) => record(line),
        Err(_) => {
            let _ = child.kill();
            let output = child.wait_with_output().expect("child output");
            panic!(
                "the child acknowledged nothing: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("reader thread");
    // Lines the child printed before it died are acknowledgements too.
    while let Ok(line) = lines.try_recv() {
        record(line);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_sigkill() {
    let seed: u64 = std::env::var("FLOWSTATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (set FLOWSTATE_CRASH_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let mut highest: BTreeMap<FlowId, u64> = BTreeMap::new();
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.random_range(0..250));
        let acked = tokio::task::spawn_blocking({
            let db = db.clone();
            move || run_and_kill(&db, delay)
        })
        .await
        .expect("round ran");
        total_acks += acked.len();
        for (flow, seq) in acked {
            let entry = highest.entry(flow).or_default();
            *entry = (*entry).max(seq);
        }
        let store = SqliteStore::open(
            &db,
            Arc::new(SystemClock),
            SqliteOptions {
                create: false,
                ..SqliteOptions::default()
            },
        )
        .expect("the store opens after a kill");
        let listed = store.list(&FlowQuery::default()).await.expect("list");
        assert!(listed.flows.len() <= FLOWS, "round {round}: too many flows");
        for (flow, seq) in &highest {
            let summary = store.flow(*flow).await.expect("lookup");
            let summary =
                summary.unwrap_or_else(|| panic!("round {round}: acknowledged flow {flow} lost"));
            assert!(
                summary.next_seq > *seq,
                "round {round}: flow {flow} acknowledged event {seq} but the log ends at {}",
                summary.next_seq - 1
            );
        }
        for summary in &listed.flows {
            let events = read_all(&store, summary.id).await.expect("read");
            assert_eq!(
                events.len() as u64,
                summary.next_seq - 1,
                "index and log agree"
            );
            let record = fold(&events, StopAt::End).unwrap_or_else(|e| {
                panic!("round {round}: flow {} does not fold: {e}", summary.id)
            });
            assert_eq!(
                record.status, summary.status,
                "index status matches the fold"
            );
        }
        store.close().await.expect("close");
    }
    assert!(
        total_acks >= ROUNDS,
        "every round acknowledged at least one append"
    );
    println!("{ROUNDS} kills, {total_acks} acknowledged appends, all present");
}
