//! The archive crash test: a child process archives deactivated plan flows from an SQLite
//! store to a local directory and is SIGKILLed between two steps of one flow (after it was
//! marked archived in the live log, after its file was written, after the file was verified,
//! after the live flow was deleted), round after round on the same store and archive, with
//! new flows each round. After each kill: nothing is lost (every flow is in the live store
//! or the archive, with its whole log), no flow is visible twice (a flow in the archive is
//! never in a live listing), and the killed flow is exactly where its step says. Finally an
//! archiver runs to the end: every deactivated flow is in the archive exactly once, readable
//! and folding, and the live store holds only the flows that were never deactivated.
//!
//! The pause steps, flows per round and which flow of a batch is killed come from a seed
//! printed at the start; set `FLOWSTATE_CRASH_SEED` to replay a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use flowstate_archive::{
    list_live, ArchiveAccess, ArchiveQuery, ArchiveStep, ArchiveStore, ArchivedFlow,
};
use flowstate_core::machine::{FlowState, PlanState};
use flowstate_core::{Clock, EventBody, FlowId, FlowKind, FlowStatus, RawEvent, StopAt};
use flowstate_engine::FlowWriter;
use flowstate_store::{read_all, FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use rand::{Rng, SeedableRng};

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-crash-archiver");

/// Kills: each of the four steps twice.
const ROUNDS: usize = 8;

/// Flows archived together by the child.
const BATCH: usize = 4;

fn open(db: &Path) -> SqliteStore {
    SqliteStore::open(db, Arc::new(SystemClock), SqliteOptions::default()).expect("open store")
}

/// Creates `count` deactivated plan flows (and returns their logs), plus one active plan and
/// one task graph that must never be archived.
async fn add_flows(
    store: &SqliteStore,
    rng: &mut impl Rng,
    count: usize,
) -> (BTreeMap<FlowId, Vec<RawEvent>>, Vec<FlowId>) {
    let clock = SystemClock;
    let mut deactivated = BTreeMap::new();
    let mut kept = Vec::new();
    for n in 0..count + 2 {
        let id = FlowId::from_parts(clock.now(), rng.random());
        let mut writer = FlowWriter::new(id);
        let kind = if n == count + 1 {
            FlowKind::TaskGraph
        } else {
            FlowKind::Plan
        };
        let created = EventBody::FlowCreated {
            kind,
            definition: "crash-archiver".to_owned(),
            input: serde_json::json!({ "n": n, "padding": "x".repeat(rng.random_range(0..2_000)) }),
        };
        writer
            .append(store, &clock, vec![created])
            .await
            .expect("create");
        let steps = match kind {
            FlowKind::TaskGraph => vec![EventBody::FlowStateChanged {
                to: FlowState::Running,
            }],
            _ if n == count => Vec::new(),
            _ => vec![
                EventBody::PlanStateChanged {
                    to: PlanState::Completed,
                    reason: None,
                },
                EventBody::PlanStateChanged {
                    to: PlanState::Deactivated,
                    reason: None,
                },
            ],
        };
        for body in steps {
            writer
                .append(store, &clock, vec![body])
                .await
                .expect("append");
        }
        if n < count {
            deactivated.insert(id, read_all(store, id).await.expect("read"));
        } else {
            kept.push(id);
        }
    }
    (deactivated, kept)
}

/// Runs the child until it prints `paused FLOW STEP`, SIGKILLs it, and returns the flow.
fn run_and_kill(db: &Path, archive: &Path, step: ArchiveStep, nth: usize) -> FlowId {
    let mut child = Command::new(CHILD)
        .arg(db)
        .arg(archive)
        .arg(BATCH.to_string())
        .env("FLOWSTATE_ARCHIVE_PAUSE", format!("{}:{nth}", step.key()))
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
    let paused = lines.recv_timeout(Duration::from_secs(120));
    child.kill().expect("SIGKILL the child");
    let output = child.wait_with_output().expect("reap the child");
    reader.join().expect("reader thread");
    let line = paused.unwrap_or_else(|_| {
        panic!(
            "the child never paused at {step:?} #{nth}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("paused"), "unexpected output {line:?}");
    let flow = parts.next().and_then(|f| f.parse().ok()).expect("flow id");
    assert_eq!(
        parts.next(),
        Some(step.key()),
        "paused at another step: {line:?}"
    );
    flow
}

/// Every archived flow, page by page.
async fn archived_ids(archive: &ArchiveStore) -> Vec<FlowId> {
    let mut ids = Vec::new();
    let mut query = ArchiveQuery {
        after: None,
        limit: 7,
    };
    loop {
        let page = archive.list(&query).await.expect("list the archive");
        ids.extend(page.flows.iter().map(|entry| entry.id));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return ids,
        }
    }
}

/// Every flow a live listing shows.
async fn visible_ids(store: &SqliteStore) -> BTreeSet<FlowId> {
    let mut ids = BTreeSet::new();
    let mut query = FlowQuery {
        limit: 7,
        ..FlowQuery::default()
    };
    loop {
        let page = list_live(store, &query).await.expect("list live");
        ids.extend(page.flows.iter().map(|f| f.id));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return ids,
        }
    }
}

/// The archive file of `flow` holds its original log plus the `archived` transition, and
/// folds.
async fn check_archived(archive: &ArchiveStore, flow: FlowId, original: &[RawEvent]) {
    let archived: ArchivedFlow = archive.read(flow).await.expect("readable from the archive");
    assert_eq!(archived.events.len(), original.len() + 1, "flow {flow}");
    assert_eq!(&archived.events[..original.len()], original, "flow {flow}");
    let record = archived
        .replay(StopAt::End)
        .expect("the archived log folds");
    assert_eq!(record.status, FlowStatus::Plan(PlanState::Archived));
}

/// Nothing lost, nothing visible twice; returns where each deactivated flow is.
async fn check_after_kill(
    db: &Path,
    archive_dir: &Path,
    originals: &BTreeMap<FlowId, Vec<RawEvent>>,
    kept: &[FlowId],
    round: usize,
) -> (BTreeSet<FlowId>, BTreeSet<FlowId>) {
    let store = open(db);
    let archive = ArchiveStore::open(&archive_dir.display().to_string(), ArchiveAccess::MustExist)
        .expect("the archive opens after a kill");
    let archived = archived_ids(&archive).await;
    let archived_set: BTreeSet<FlowId> = archived.iter().copied().collect();
    assert_eq!(
        archived.len(),
        archived_set.len(),
        "round {round}: listed twice"
    );
    let visible = visible_ids(&store).await;
    let both: Vec<_> = visible.intersection(&archived_set).collect();
    assert!(
        both.is_empty(),
        "round {round}: visible live and archived: {both:?}"
    );
    let mut live = BTreeSet::new();
    for (flow, original) in originals {
        let in_store = store.flow(*flow).await.expect("lookup").is_some();
        if in_store {
            live.insert(*flow);
            let log = read_all(&store, *flow).await.expect("read");
            assert_eq!(
                &log[..original.len()],
                &original[..],
                "round {round}: {flow}"
            );
            let status = flowstate_core::fold(&log, StopAt::End)
                .expect("the live log folds")
                .status;
            if status == FlowStatus::Plan(PlanState::Archived) {
                assert!(
                    !visible.contains(flow),
                    "round {round}: {flow} archived yet visible"
                );
            }
        } else {
            assert!(
                archived_set.contains(flow),
                "round {round}: flow {flow} lost"
            );
        }
        if archived_set.contains(flow) {
            check_archived(&archive, *flow, original).await;
        }
    }
    for flow in kept {
        assert!(
            visible.contains(flow),
            "round {round}: {flow} must stay live"
        );
    }
    store.close().await.expect("close");
    (live, archived_set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_archiver_loses_nothing_and_shows_nothing_twice() {
    let seed: u64 = std::env::var("FLOWSTATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("archive crash test seed {seed} (set FLOWSTATE_CRASH_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("live.db");
    let archive_dir = dir.path().join("archive");
    let mut originals = BTreeMap::new();
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        let store = open(&db);
        let count = rng.random_range(BATCH..3 * BATCH);
        let (new, never) = add_flows(&store, &mut rng, count).await;
        originals.extend(new);
        kept.extend(never);
        store.close().await.expect("close");

        let step = ArchiveStep::ALL[round % ArchiveStep::ALL.len()];
        let nth = rng.random_range(1..=BATCH);
        let killed = tokio::task::spawn_blocking({
            let (db, archive_dir) = (db.clone(), archive_dir.clone());
            move || run_and_kill(&db, &archive_dir, step, nth)
        })
        .await
        .expect("round ran");
        let (live, archived) = check_after_kill(&db, &archive_dir, &originals, &kept, round).await;
        // The killed flow is exactly where its step left it.
        let (in_store, in_archive) = (live.contains(&killed), archived.contains(&killed));
        match step {
            ArchiveStep::Marked => assert!(in_store, "round {round}: marked flow {killed}"),
            ArchiveStep::Written | ArchiveStep::Verified => {
                assert!(
                    in_store && in_archive,
                    "round {round}: {step:?} flow {killed}"
                );
            }
            _ => assert!(
                !in_store && in_archive,
                "round {round}: deleted flow {killed}"
            ),
        }
        println!(
            "round {round}: killed at {step:?} #{nth} of flow {killed}; {} live, {} archived",
            live.len(),
            archived.len()
        );
    }

    // A last archiver runs to the end.
    let finished = Command::new(CHILD)
        .arg(&db)
        .arg(&archive_dir)
        .arg(BATCH.to_string())
        .output()
        .expect("run the child");
    assert!(
        finished.status.success(),
        "the last pass failed: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let (live, archived) = check_after_kill(&db, &archive_dir, &originals, &kept, ROUNDS).await;
    assert!(live.is_empty(), "still live: {live:?}");
    let expected: BTreeSet<FlowId> = originals.keys().copied().collect();
    assert_eq!(
        archived, expected,
        "every deactivated flow archived exactly once"
    );
    let store = open(&db);
    assert_eq!(
        visible_ids(&store).await,
        kept.iter().copied().collect(),
        "the live store holds only the flows never deactivated"
    );
    let all = store
        .list(&FlowQuery {
            limit: 1_000,
            ..FlowQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        all.flows.len(),
        kept.len(),
        "no archived flow left in the store"
    );
    store.close().await.expect("close");
    println!(
        "{ROUNDS} kills, {} flows archived, none lost or shown twice",
        originals.len()
    );
}
