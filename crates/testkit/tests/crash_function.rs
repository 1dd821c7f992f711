//! A durable function survives SIGKILL: one activation of 60 steps is killed 20 times, at
//! seeded random points measured in finished steps, and a new process carries it on each
//! time. A step whose result was journaled before a kill never runs again; the step in
//! flight at a kill runs again (at most once per kill), with the same idempotency key; the
//! function finishes with the right sum and a journal of exactly 60 steps.
//! `FLOWSTATE_CRASH_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;

use flowstate_core::{fold, FlowKind, JournalEntry, StopAt};
use flowstate_store::{read_all, FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_testkit::{log_lines, wait_for_done};
use rand::{Rng, SeedableRng};

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-crash-function");
const KILLS: usize = 20;
const STEPS: u64 = 60;

/// The keys of the steps whose results are in the journal.
async fn journaled(db: &std::path::Path) -> BTreeSet<String> {
    let store = SqliteStore::open(
        db,
        Arc::new(SystemClock),
        SqliteOptions {
            create: false,
            ..SqliteOptions::default()
        },
    )
    .expect("open");
    let flows = store
        .list(&FlowQuery {
            kind: Some(FlowKind::Function),
            ..FlowQuery::default()
        })
        .await
        .expect("list");
    let mut keys = BTreeSet::new();
    if let Some(summary) = flows.flows.first() {
        let events = read_all(&store, summary.id).await.expect("read");
        let record = fold(&events, StopAt::End).expect("the log folds after the kill");
        for (position, entry) in record
            .function
            .expect("a function")
            .journal
            .iter()
            .enumerate()
        {
            if let JournalEntry::Step { .. } = entry {
                keys.insert(format!("{}/{position}", summary.id));
            }
        }
    }
    store.close().await.expect("close");
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_killed_20_times_never_reruns_a_journaled_step() {
    let seed: u64 = std::env::var("FLOWSTATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("dir");
    let (db, log) = (dir.path().join("flows.db"), dir.path().join("steps.log"));
    let child = || {
        let mut command = Command::new(CHILD);
        command
            .arg(&db)
            .env("FLOWSTATE_CRASH_LOG", &log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    // Per kill: the steps journaled at that moment and the one in flight.
    let mut in_flight: BTreeMap<String, usize> = BTreeMap::new();
    let mut journaled_at_kill: Vec<(usize, BTreeSet<String>)> = Vec::new();
    let mut target = 0usize;
    for kill in 0..KILLS {
        target += rng.random_range(1..=2);
        let mut running = child().spawn().expect("start the child");
        wait_for_done(&log, target).await;
        running.kill().expect("SIGKILL");
        running.wait().expect("reap");
        let journal = journaled(&db).await;
        let calls = log_lines(&log);
        let started: BTreeSet<&String> = calls
            .iter()
            .filter(|(kind, _)| kind == "start")
            .map(|(_, key)| key)
            .collect();
        let flight: Vec<&&String> = started.iter().filter(|k| !journal.contains(**k)).collect();
        assert!(
            flight.len() <= 1,
            "kill {kill}: steps run one at a time: {flight:?}"
        );
        for key in flight {
            *in_flight.entry((*key).clone()).or_default() += 1;
        }
        journaled_at_kill.push((calls.len(), journal));
    }
    let output = child().output().expect("the last child runs to the end");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: u64 = (0..STEPS).sum();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("outcome {expected}")),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let calls = log_lines(&log);
    // A step journaled before a kill never starts after it.
    for (kill, (seen, journal)) in journaled_at_kill.iter().enumerate() {
        for (kind, key) in &calls[*seen..] {
            assert!(
                !(kind == "start" && journal.contains(key)),
                "kill {kill}: journaled step {key} ran again"
            );
        }
    }
    // Each step started once, plus once per kill that caught it in flight; same key always.
    let mut starts: BTreeMap<&String, usize> = BTreeMap::new();
    for (kind, key) in &calls {
        if kind == "start" {
            *starts.entry(key).or_default() += 1;
        }
    }
    assert_eq!(starts.len() as u64, STEPS, "one key per step");
    for (key, count) in &starts {
        let allowed = 1 + in_flight.get(*key).copied().unwrap_or(0);
        assert!(
            *count <= allowed,
            "{key} started {count} times (allowed {allowed})"
        );
    }
    assert_eq!(journaled(&db).await.len() as u64, STEPS);
    println!(
        "{} steps were in flight at a kill and ran again with the same key",
        in_flight.len()
    );
}
