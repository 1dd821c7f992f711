//! Plans survive hard crashes: a child process runs several plan flows at once (chains, a
//! diamond, a mapped step with parallelism 2, retries) and is SIGKILLed mid-plan again and
//! again; each time a new process resumes every flow that is not deactivated, until a last
//! one runs them all to the end.
//!
//! What must hold, checked against the call log the step bodies write (`start|done|fail KEY
//! ATTEMPT`, with a `kill N` line the test appends after each kill) and against the stores'
//! logs, both at every kill and at the end:
//!
//! - every flow continues: it ends completed and deactivated, every step completed, every
//!   attribute with its provenance, and its log folds after every kill;
//! - no completed work runs again: an item whose success was durable at a kill never starts
//!   after that kill, and an attempt whose failure was durable never runs again (its retry
//!   has the next number);
//! - work in flight runs again with the same idempotency key and the same attempt number:
//!   an item the log shows running at a kill starts again after it with that attempt, and
//!   crashes never use up attempts (only the planned retryable failures do);
//! - a process runs each attempt at most once, so an attempt starts at most once plus once
//!   for each kill that found it running;
//! - every key in the call log is the `FLOW/STEP/ITEM` of a work item whose attempt the log
//!   recorded as started, every recorded attempt ran, and every recorded success or failure
//!   was reported by that attempt.
//!
//! Kills are placed by counting `done` lines (progress, not time), after a seeded random
//! number of them; `FLOWSTATE_CRASH_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::machine::PlanState;
use flowstate_core::{
    fold, Event, EventBody, FlowId, FlowRecord, FlowStatus, StepState, StopAt, WorkState,
};
use flowstate_store::{read_all, FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_testkit::{append_line, log_lines};
use rand::{Rng, SeedableRng};
use serde_json::json;

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-crash-plan");
/// Flows the child starts (see `src/bin/crash_plan.rs`).
const FLOWS: usize = 5;
/// Work items per flow: 11 steps of one item and a mapped step of 4.
const ITEMS_PER_FLOW: usize = 15;
const ROUNDS: usize = 4;
/// Kills per round (fewer if the flows end first).
const KILLS_PER_ROUND: usize = 7;
/// Each kill comes after 1 to this many more `done` lines.
const MOST_DONE_BETWEEN_KILLS: usize = 10;

/// A line of the call log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// `start|done|fail KEY ATTEMPT`, written by a step body.
    Call {
        kind: String,
        key: String,
        attempt: u32,
    },
    /// `kill N`, written by the test after the N-th kill (counted from 1 in each round).
    Kill,
}

fn read_log(log: &Path) -> Vec<Line> {
    let lines = log_lines(log);
    lines
        .iter()
        .enumerate()
        .filter_map(|(index, (kind, rest))| match kind.as_str() {
            "kill" => Some(Line::Kill),
            "start" | "done" | "fail" => {
                let parsed = rest.rsplit_once(' ').and_then(|(key, attempt)| {
                    Some((key.to_owned(), attempt.parse::<u32>().ok()?))
                });
                match parsed {
                    Some((key, attempt)) => Some(Line::Call {
                        kind: kind.clone(),
                        key,
                        attempt,
                    }),
                    // Only a line torn by a kill may be incomplete: the next line must be
                    // that kill's marker.
                    None => {
                        assert!(
                            lines.get(index + 1).is_some_and(|(next, _)| next == "kill"),
                            "a malformed call line not torn by a kill: {kind} {rest}"
                        );
                        None
                    }
                }
            }
            other => panic!("unexpected call log line {other} {rest}"),
        })
        .collect()
}

fn done_lines(log: &Path) -> usize {
    log_lines(log)
        .iter()
        .filter(|(kind, _)| kind == "done")
        .count()
}

fn open(db: &Path) -> SqliteStore {
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

/// Every flow's decoded events and folded record (the fold must succeed after any kill).
async fn load(db: &Path, flows: &[FlowId]) -> BTreeMap<FlowId, (Vec<Event>, FlowRecord)> {
    let store = open(db);
    let listed = store
        .list(&FlowQuery::default())
        .await
        .expect("list")
        .flows
        .iter()
        .map(|summary| summary.id)
        .collect::<BTreeSet<_>>();
    assert_eq!(
        listed,
        flows.iter().copied().collect(),
        "the store holds exactly the flows the child started"
    );
    let mut loaded = BTreeMap::new();
    for &flow in flows {
        let raw = read_all(&store, flow).await.expect("read");
        let record = fold(&raw, StopAt::End).expect("the log folds");
        let events = raw
            .iter()
            .map(|raw| Event::decode(raw).expect("decode"))
            .collect();
        loaded.insert(flow, (events, record));
    }
    store.close().await.expect("close");
    loaded
}

/// Work item key (`FLOW/STEP/ITEM`) → (state, last attempt started), over all flows.
fn items(
    loaded: &BTreeMap<FlowId, (Vec<Event>, FlowRecord)>,
) -> BTreeMap<String, (WorkState, u32)> {
    let mut items = BTreeMap::new();
    for (flow, (_, record)) in loaded {
        let plan = record.plan.as_ref().expect("a started plan");
        for (step, step_record) in &plan.steps {
            for (index, item) in step_record.items.iter().enumerate() {
                items.insert(format!("{flow}/{step}/{index}"), (item.state, item.attempt));
            }
        }
    }
    items
}

/// How often an attempt fails before it succeeds: the first attempts of `flaky` and of item
/// 2 of `m` fail (retryably), as the child program says.
fn planned_attempts(key: &str) -> u32 {
    if key.ends_with("/flaky/0") || key.ends_with("/m/2") {
        2
    } else {
        1
    }
}

/// Waits until the call log holds `count` `done` lines (true) or the child exits (false).
fn wait_for_done_or_exit(log: &Path, count: usize, child: &mut Child) -> bool {
    let waited = Instant::now();
    loop {
        if done_lines(log) >= count {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return done_lines(log) >= count;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the child made no progress: fewer than {count} steps done"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn spawn(db: &Path, log: &Path, mode: &str) -> Child {
    Command::new(CHILD)
        .args([db.as_os_str(), log.as_os_str()])
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child")
}

/// `outcome ID STATE` lines of a child that ran to its end (which it must have done well).
fn outcomes(child: Child, what: &str) -> BTreeMap<FlowId, String> {
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("outcome "))
        .map(|rest| {
            let (id, state) = rest.split_once(' ').expect("outcome ID STATE");
            (id.parse().expect("flow id"), state.to_owned())
        })
        .collect()
}

/// What one round saw, for the summary line.
#[derive(Debug, Default)]
struct Seen {
    kills: usize,
    in_flight_at_kills: usize,
    retry_waiting_at_kills: usize,
    succeeded_at_kills: usize,
    starts: usize,
}

/// The checks at a kill, against the state durable at that kill: the flows are still
/// healthy (nothing failed or was abandoned), and the state is consistent with the calls
/// that happened before it.
fn check_at_kill(
    round: usize,
    kill: usize,
    loaded: &BTreeMap<FlowId, (Vec<Event>, FlowRecord)>,
    items: &BTreeMap<String, (WorkState, u32)>,
    calls: &[Line],
) {
    for (flow, (_, record)) in loaded {
        assert!(
            matches!(
                record.status,
                FlowStatus::Plan(PlanState::Active | PlanState::Completed | PlanState::Deactivated)
            ),
            "round {round} kill {kill}: flow {flow} is {:?}",
            record.status
        );
    }
    for (key, (state, attempt)) in items {
        assert!(
            matches!(
                state,
                WorkState::Pending
                    | WorkState::Active
                    | WorkState::RetryWaiting
                    | WorkState::Succeeded
            ),
            "round {round} kill {kill}: {key} is {state:?} (attempt {attempt})"
        );
        // A crash never uses up an attempt.
        assert!(
            *attempt <= planned_attempts(key),
            "round {round} kill {kill}: {key} is at attempt {attempt}"
        );
        // An attempt whose result is durable was started (and reported) by a body.
        let reported = |kind: &str, n: u32| {
            calls.iter().any(|line| {
                matches!(line, Line::Call { kind: k, key: c, attempt: a }
                    if k == kind && c == key && *a == n)
            })
        };
        if *state == WorkState::Succeeded {
            assert!(
                reported("done", *attempt),
                "round {round} kill {kill}: {key} attempt {attempt} succeeded without a done line"
            );
        }
        if *state == WorkState::RetryWaiting {
            assert!(
                reported("fail", *attempt),
                "round {round} kill {kill}: {key} attempt {attempt} failed without a fail line"
            );
        }
    }
}

/// The checks of the call log against the snapshots taken at each kill and the final logs.
fn check_calls(
    round: usize,
    calls: &[Line],
    snapshots: &[BTreeMap<String, (WorkState, u32)>],
    loaded: &BTreeMap<FlowId, (Vec<Event>, FlowRecord)>,
) -> usize {
    // What the stores recorded, per (key, attempt).
    let mut started = BTreeMap::<(String, u32), usize>::new();
    let mut succeeded = BTreeSet::<(String, u32)>::new();
    let mut failed = BTreeSet::<(String, u32)>::new();
    for (flow, (events, _)) in loaded {
        for event in events {
            match &event.body {
                EventBody::WorkStarted {
                    step,
                    item,
                    attempt,
                } => {
                    *started
                        .entry((format!("{flow}/{step}/{item}"), *attempt))
                        .or_default() += 1;
                }
                EventBody::WorkSucceeded {
                    step,
                    item,
                    attempt,
                    ..
                } => {
                    succeeded.insert((format!("{flow}/{step}/{item}"), *attempt));
                }
                EventBody::RetryScheduled {
                    step,
                    item,
                    attempt,
                    ..
                } => {
                    failed.insert((format!("{flow}/{step}/{item}"), *attempt));
                }
                _ => {}
            }
        }
    }
    // Attempts of each item are recorded dense from 1, once each.
    let keys: BTreeSet<&String> = started.keys().map(|(key, _)| key).collect();
    assert_eq!(keys.len(), FLOWS * ITEMS_PER_FLOW, "round {round}");
    for key in &keys {
        let attempts: Vec<u32> = started
            .iter()
            .filter(|((k, _), _)| k == *key)
            .map(|((_, attempt), count)| {
                assert_eq!(
                    *count, 1,
                    "round {round}: {key} attempt {attempt} recorded twice"
                );
                *attempt
            })
            .collect();
        let planned = planned_attempts(key);
        assert_eq!(
            attempts,
            (1..=planned).collect::<Vec<_>>(),
            "round {round}: attempts of {key}"
        );
        assert!(
            succeeded.contains(&((*key).clone(), planned)),
            "round {round}: {key}"
        );
        for attempt in 1..planned {
            assert!(
                failed.contains(&((*key).clone(), attempt)),
                "round {round}: {key}"
            );
        }
    }

    // Split the call log into the lives of the processes (epoch k follows the k-th kill).
    let mut epochs: Vec<Vec<(&str, &str, u32)>> = vec![Vec::new()];
    for line in calls {
        match line {
            Line::Kill => epochs.push(Vec::new()),
            Line::Call { kind, key, attempt } => {
                epochs
                    .last_mut()
                    .expect("an epoch")
                    .push((kind.as_str(), key.as_str(), *attempt));
            }
        }
    }
    assert_eq!(epochs.len(), snapshots.len() + 1, "round {round}");

    let mut starts = BTreeMap::<(String, u32), usize>::new();
    for (epoch, lines) in epochs.iter().enumerate() {
        let mut here = BTreeMap::<(&str, &str, u32), usize>::new();
        for &(kind, key, attempt) in lines {
            // Same key: every call is an attempt of a work item the log recorded as started.
            assert!(
                started.contains_key(&(key.to_owned(), attempt)),
                "round {round}: {kind} {key} {attempt} is no recorded attempt of a work item"
            );
            let count = here.entry((kind, key, attempt)).or_default();
            *count += 1;
            assert_eq!(
                *count, 1,
                "round {round}: process {epoch} ran {key} attempt {attempt} twice ({kind})"
            );
            if kind == "start" {
                *starts.entry((key.to_owned(), attempt)).or_default() += 1;
            }
        }
    }
    for (key, attempt) in started.keys() {
        assert!(
            starts.contains_key(&(key.clone(), *attempt)),
            "round {round}: {key} attempt {attempt} was recorded but never ran"
        );
    }
    for (key, attempt) in &succeeded {
        assert!(
            epochs
                .iter()
                .flatten()
                .any(|&(k, c, a)| k == "done" && c == key && a == *attempt),
            "round {round}: {key} attempt {attempt} succeeded without a done line"
        );
    }

    for (kill, snapshot) in snapshots.iter().enumerate() {
        let after: Vec<&(&str, &str, u32)> = epochs[kill + 1..].iter().flatten().collect();
        for (key, (state, attempt)) in snapshot {
            let later = after
                .iter()
                .filter(|(kind, k, _)| *kind == "start" && k == key)
                .map(|(_, _, a)| *a);
            match state {
                // No completed work runs again.
                WorkState::Succeeded => {
                    let again: Vec<u32> = later.collect();
                    assert!(
                        again.is_empty(),
                        "round {round}: {key} had succeeded (attempt {attempt}) at kill {}, \
                         yet started again: attempts {again:?}",
                        kill + 1
                    );
                }
                // A failed attempt is not run again; its retry has the next number.
                WorkState::RetryWaiting => {
                    for again in later {
                        assert!(
                            again > *attempt,
                            "round {round}: {key} attempt {attempt} had failed at kill {}, \
                             yet attempt {again} started after it",
                            kill + 1
                        );
                    }
                }
                // In-flight work runs again with the same key and attempt.
                WorkState::Active => {
                    let later: Vec<u32> = later.collect();
                    assert!(
                        later.iter().all(|again| again >= attempt),
                        "round {round}: {key} at attempt {attempt} at kill {}: later {later:?}",
                        kill + 1
                    );
                    assert!(
                        later.contains(attempt),
                        "round {round}: {key} attempt {attempt} was running at kill {} \
                         and never ran again with that attempt: later {later:?}",
                        kill + 1
                    );
                }
                _ => {}
            }
        }
    }
    // An attempt starts at most once, plus once for each kill that found it running.
    for ((key, attempt), count) in &starts {
        let running_at_kills = snapshots
            .iter()
            .filter(|snapshot| snapshot.get(key) == Some(&(WorkState::Active, *attempt)))
            .count();
        assert!(
            *count <= 1 + running_at_kills,
            "round {round}: {key} attempt {attempt} started {count} times, \
             with {running_at_kills} kills finding it running"
        );
    }
    starts.values().sum()
}

/// The end state of every flow: completed, deactivated, every attribute with provenance.
fn check_end(round: usize, loaded: &BTreeMap<FlowId, (Vec<Event>, FlowRecord)>) {
    for (flow, (events, record)) in loaded {
        assert_eq!(
            record.status,
            FlowStatus::Plan(PlanState::Deactivated),
            "round {round}: flow {flow}"
        );
        let lifecycle: Vec<PlanState> = events
            .iter()
            .filter_map(|event| match &event.body {
                EventBody::PlanStateChanged { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(
            lifecycle,
            [PlanState::Completed, PlanState::Deactivated],
            "round {round}: flow {flow}"
        );
        let plan_record = record.plan.as_ref().expect("plan");
        assert!(plan_record.failure.is_none(), "round {round}: flow {flow}");
        let plan = plan_record.plan.as_ref().expect("plan");
        assert_eq!(plan.steps.len(), 12, "round {round}: flow {flow}");
        for (name, step) in &plan_record.steps {
            assert_eq!(
                step.state,
                StepState::Completed,
                "round {round}: flow {flow} step {name}"
            );
            for item in &step.items {
                assert_eq!(
                    item.state,
                    WorkState::Succeeded,
                    "round {round}: {flow}/{name}"
                );
            }
        }
        // Every attribute has provenance: an initial input, or the output of its provider,
        // recorded by the event it names.
        let expected: BTreeSet<&str> = plan
            .steps
            .values()
            .flat_map(|spec| spec.outputs.iter().map(String::as_str))
            .chain(["order"])
            .collect();
        assert_eq!(
            plan_record
                .attributes
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            expected,
            "round {round}: flow {flow}"
        );
        for (name, attribute) in &plan_record.attributes {
            let Some(step) = &attribute.step else {
                assert_eq!(name, "order", "round {round}: flow {flow}");
                continue;
            };
            // The step declares it, and is its chosen provider where the plan names one
            // (an attribute no planned step reads, like the goal, has none).
            assert!(
                plan.steps[step].outputs.contains(name)
                    && plan.providers.get(name).is_none_or(|p| p == step),
                "round {round}: flow {flow} attribute {name} from step {step}"
            );
            let items = &plan_record.steps[step].items;
            let highest = items.iter().map(|item| item.attempt).max().unwrap_or(0);
            assert!(
                attribute.attempt >= 1 && attribute.attempt == highest,
                "{name}"
            );
            let event = events
                .iter()
                .find(|event| event.seq == attribute.seq)
                .expect("the event that set it");
            assert_eq!(event.time, attribute.time, "round {round}: {name}");
            match &event.body {
                EventBody::AttributeSet {
                    name: n,
                    value,
                    step: s,
                    attempt,
                } => assert!(
                    n == name
                        && s == step
                        && *attempt == attribute.attempt
                        && *value == attribute.value,
                    "round {round}: flow {flow} attribute {name}: {:?}",
                    event.body
                ),
                other => panic!("round {round}: attribute {name} set by {other:?}"),
            }
        }
        let processed = &plan_record.attributes["processed"].value;
        assert_eq!(
            *processed,
            json!([0, 10, 20, 30]),
            "round {round}: flow {flow}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_plans_resume_without_rerunning_completed_work() {
    let seed: u64 = std::env::var("FLOWSTATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started_at = Instant::now();
    let mut total = Seen::default();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("dir");
        let (db, log) = (dir.path().join("flows.db"), dir.path().join("calls.log"));
        let mut child = spawn(&db, &log, "start");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut flows = Vec::new();
        for _ in 0..FLOWS {
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("the child names its flows");
            flows.push(
                line.trim()
                    .strip_prefix("flow ")
                    .and_then(|id| id.parse::<FlowId>().ok())
                    .unwrap_or_else(|| panic!("round {round}: not a flow line: {line:?}")),
            );
        }
        let mut seen = Seen::default();
        let mut snapshots = Vec::new();
        for kill in 1..=KILLS_PER_ROUND {
            let target = done_lines(&log) + rng.random_range(1..=MOST_DONE_BETWEEN_KILLS);
            if !wait_for_done_or_exit(&log, target, &mut child) {
                break;
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            // On a line of its own: a SIGKILL can tear the child's last line (a write that
            // crosses a page boundary may stop half way), and the marker must not be glued
            // to it.
            append_line(&log, &format!("\nkill {kill}")).expect("mark the kill");
            seen.kills += 1;
            let loaded = load(&db, &flows).await;
            let snapshot = items(&loaded);
            check_at_kill(round, kill, &loaded, &snapshot, &read_log(&log));
            seen.in_flight_at_kills += snapshot
                .values()
                .filter(|(state, _)| *state == WorkState::Active)
                .count();
            seen.retry_waiting_at_kills += snapshot
                .values()
                .filter(|(state, _)| *state == WorkState::RetryWaiting)
                .count();
            seen.succeeded_at_kills += snapshot
                .values()
                .filter(|(state, _)| *state == WorkState::Succeeded)
                .count();
            snapshots.push(snapshot);
            child = spawn(&db, &log, "resume");
        }
        // The last process runs everything that is left to the end (the first one, if
        // it finished before the kills were used up, had its stdout taken: no outcomes).
        let ended = outcomes(child, "the last process");
        for (flow, state) in &ended {
            assert!(flows.contains(flow), "round {round}: unknown flow {flow}");
            assert_eq!(state, "deactivated", "round {round}: flow {flow}");
        }
        // Nothing is left for another process to do.
        let again = outcomes(spawn(&db, &log, "resume"), "a resume after the end");
        assert!(again.is_empty(), "round {round}: resumed again: {again:?}");

        let loaded = load(&db, &flows).await;
        check_end(round, &loaded);
        seen.starts = check_calls(round, &read_log(&log), &snapshots, &loaded);
        println!("round {round}: {seen:?}");
        total.kills += seen.kills;
        total.in_flight_at_kills += seen.in_flight_at_kills;
        total.retry_waiting_at_kills += seen.retry_waiting_at_kills;
        total.succeeded_at_kills += seen.succeeded_at_kills;
        total.starts += seen.starts;
    }
    println!("in all: {total:?} in {:?}", started_at.elapsed());
    assert!(
        total.kills >= ROUNDS,
        "the flows ended before they could be killed: {total:?}"
    );
    assert!(
        total.in_flight_at_kills > 0,
        "no kill found work in flight, so the test checked nothing: {total:?}"
    );
}
