//! Resume after a hard crash: a child process runs a flow of 30 tasks and is SIGKILLed
//! mid-run; a new process loads the flow (RESUMING, SUSPENDED) and runs it to the end.
//! Completed atoms never run again; the atom that was running when the process died runs
//! again with the same idempotency key. Three rounds, killed after a seeded random number of
//! finished tasks (`FLOWSTATE_CRASH_SEED` replays a run).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use flowstate_core::machine::FlowState;
use flowstate_core::{fold, FlowId, FlowStatus, StopAt};
use flowstate_store::{read_all, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_testkit::{log_lines, wait_for_done};
use rand::{Rng, SeedableRng};

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-crash-taskgraph");
const ROUNDS: usize = 3;

fn open(db: &std::path::Path) -> SqliteStore {
    SqliteStore::open(
        db,
        Arc::new(SystemClock),
        SqliteOptions {
            create: false,
            ..SqliteOptions::default()
        },
    )
    .expect("open")
}

async fn atom_states(db: &std::path::Path, flow: FlowId) -> BTreeMap<String, String> {
    let store = open(db);
    let events = read_all(&store, flow).await.expect("read");
    let record = fold(&events, StopAt::End).expect("the log folds after the kill");
    store.close().await.expect("close");
    record
        .atoms
        .iter()
        .map(|(name, a)| (name.clone(), a.state.key().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_flow_resumes_in_a_new_process_without_rerunning_completed_atoms() {
    let seed: u64 = std::env::var("FLOWSTATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("dir");
        let (db, log) = (dir.path().join("flows.db"), dir.path().join("calls.log"));
        let mut child = Command::new(CHILD)
            .args([db.as_os_str(), log.as_os_str()])
            .arg("start")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("the child names its flow");
        let flow: FlowId = first
            .trim()
            .strip_prefix("flow ")
            .and_then(|id| id.parse().ok())
            .expect("flow id");
        // Let it run a random part of the way (measured in finished tasks, not in time, so a
        // slow machine changes nothing), then kill it. At least two: a task's "done" line is
        // written before its success is durable, but the next task starts only after it is,
        // so a second "done" line means at least one success is in the log.
        let target = rng.random_range(2..25);
        wait_for_done(&log, target).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        let before = atom_states(&db, flow).await;
        let done_before: Vec<String> = before
            .iter()
            .filter(|(_, s)| *s == "success")
            .map(|(n, _)| n.clone())
            .collect();
        let running: Vec<String> = before
            .iter()
            .filter(|(_, s)| *s == "running")
            .map(|(n, _)| n.clone())
            .collect();
        assert!(
            !done_before.is_empty(),
            "round {round}: killed before any atom finished; the delay is too short"
        );
        assert!(
            running.len() <= 1,
            "round {round}: serial engine, at most one atom running: {running:?}"
        );
        let calls_before = log_lines(&log);

        let output = Command::new(CHILD)
            .args([db.as_os_str(), log.as_os_str()])
            .arg("resume")
            .output()
            .expect("run the resuming child");
        assert!(
            output.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("outcome SUCCESS"),
            "round {round}"
        );

        let store = open(&db);
        let events = read_all(&store, flow).await.expect("read");
        let record = fold(&events, StopAt::End).expect("folds");
        assert_eq!(record.status, FlowStatus::TaskGraph(FlowState::Success));
        store.close().await.expect("close");
        // The resumed run loaded the flow through RESUMING and SUSPENDED.
        let bodies: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect();
        let resuming = bodies
            .iter()
            .position(|b| b.contains(r#""to":"resuming""#))
            .expect("RESUMING recorded");
        assert!(
            bodies[resuming + 1].contains(r#""to":"suspended""#),
            "then SUSPENDED"
        );

        let calls = log_lines(&log);
        let resumed_calls = &calls[calls_before.len()..];
        for atom in &done_before {
            let key_suffix = format!("/{atom}/");
            assert!(
                !resumed_calls
                    .iter()
                    .any(|(_, key)| key.contains(&key_suffix)),
                "round {round}: completed atom {atom} ran again"
            );
        }
        for atom in &running {
            let key_suffix = format!("/{atom}/");
            let keys: Vec<&String> = calls
                .iter()
                .filter(|(kind, key)| kind == "start" && key.contains(&key_suffix))
                .map(|(_, k)| k)
                .collect();
            assert!(
                !keys.is_empty(),
                "round {round}: the interrupted atom {atom} ran again"
            );
            assert!(
                keys.iter().all(|k| *k == keys[0]),
                "round {round}: {atom} got different keys {keys:?}"
            );
            assert!(
                resumed_calls.iter().any(|(_, k)| k.contains(&key_suffix)),
                "round {round}: {atom} ran in the new process"
            );
        }
        // Every atom finished exactly once in all.
        let mut done = BTreeMap::new();
        for (kind, key) in &calls {
            if kind == "done" {
                *done.entry(key.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(done.len(), 30, "round {round}: every atom finished");
        println!(
            "round {round}: killed after {target}+ calls with {} done, {running:?} running",
            done_before.len()
        );
    }
}
