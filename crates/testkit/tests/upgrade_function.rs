//! The upgrade story of a durable function with real processes, four builds of one program
//! on one SQLite store (`flowstate-upgrade-function`, see its docs for the versions):
//!
//! 1. version 1 runs an activation to its first `sleep` and is SIGKILLed there;
//! 2. version 2 (a compatible change behind `patched`) continues it when the sleep is due:
//!    the fraud check, placed before the sleep, is not run (the journal, written before the
//!    change, goes on past it), the customer notification, placed after the sleep, is (the
//!    activation reaches it live); it runs to the second sleep and is SIGKILLed there;
//! 3. version 3 (a journaled step renamed) puts it in replay failure when the second sleep is
//!    due, with a diagnostic that names the journal position, what was logged, what the code
//!    did and the source file, and runs nothing;
//! 4. version 4 (the fix) repairs it on its explicit start and it completes.
//!
//! Checked: each version's stdout (the states it saw, the diagnostic, the outcome); that
//! every step ran exactly once, by the version expected, with the idempotency key of its
//! journal position (no journaled step ran again in a later process); the final journal,
//! entry by entry; the activation's state changes in the log (replay failure with the same
//! diagnostic, then active replay, then done); and that runs were started by versions 1, 2,
//! 3 and 4 in that order.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flowstate_core::machine::ActivationState;
use flowstate_core::{fold, Event, EventBody, FlowKind, FlowRecord, JournalEntry, Machine, StopAt};
use flowstate_store::{read_all, FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-upgrade-function");

/// Longest wait for one child to say something (the sleeps are 1.5 s).
const PATIENCE: Duration = Duration::from_secs(20);

/// One version of the program, running.
struct Child {
    version: u8,
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Its stdout lines so far.
    seen: Vec<String>,
    stderr: PathBuf,
}

impl Child {
    fn start(dir: &Path, version: u8) -> Self {
        let stderr = dir.join(format!("v{version}.stderr"));
        let mut process = Command::new(CHILD)
            .arg(dir.join("flows.db"))
            .arg(version.to_string())
            .env("FLOWSTATE_UPGRADE_LOG", dir.join("steps.log"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start the child");
        let stdout = process.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            version,
            process,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn describe(&self) -> String {
        format!(
            "version {}: stdout {:#?}, stderr {:?}",
            self.version,
            self.seen,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits for a stdout line that is `line`, at most [`PATIENCE`].
    fn wait_for(&mut self, line: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.seen.iter().any(|l| l == line) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(next) => self.seen.push(next),
                Err(_) => panic!("never printed {line:?}; {}", self.describe()),
            }
        }
    }

    /// SIGKILLs it.
    fn kill(mut self) -> Vec<String> {
        self.process.kill().expect("SIGKILL");
        self.process.wait().expect("reap");
        self.seen.extend(self.lines.try_iter());
        std::mem::take(&mut self.seen)
    }

    /// Waits until it exits by itself (successfully), at most [`PATIENCE`]; its stdout.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.process.try_wait().expect("wait") {
                // Its stdout closes as it exits: read to the end.
                self.seen.extend(self.lines.iter());
                assert!(status.success(), "{status}; {}", self.describe());
                return std::mem::take(&mut self.seen);
            }
            assert!(
                Instant::now() < deadline,
                "did not finish; {}",
                self.describe()
            );
            self.seen.extend(self.lines.try_iter());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A failed test leaves no process behind.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The step log: `(name, key, version)` per step body run, in order.
fn steps_run(dir: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(dir.join("steps.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            assert!(
                parts.len() == 4 && parts[0] == "run",
                "a step log line: {line:?}"
            );
            (
                parts[1].to_owned(),
                parts[2].to_owned(),
                parts[3].to_owned(),
            )
        })
        .collect()
}

/// The activation's events and its folded record.
async fn activation(dir: &Path) -> (Vec<Event>, FlowRecord) {
    let store = SqliteStore::open(
        dir.join("flows.db"),
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
    assert_eq!(flows.flows.len(), 1, "one activation, started by version 1");
    let raw = read_all(&store, flows.flows[0].id).await.expect("read");
    let record = fold(&raw, StopAt::End).expect("the log folds");
    let events = raw
        .iter()
        .map(|raw| Event::decode(raw).expect("decodes"))
        .collect();
    store.close().await.expect("close");
    (events, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_versions_run_kill_continue_fail_to_replay_and_repair_one_activation() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();

    // Version 1: to the first sleep, killed there.
    let mut v1 = Child::start(dir, 1);
    v1.wait_for("state sleeping journal=3");
    let v1_out = v1.kill();
    let flow = v1_out
        .first()
        .and_then(|l| l.strip_prefix("flow "))
        .expect("the child names its flow")
        .to_owned();
    let key = |position: u32| format!("{flow}/{position}");
    let run = |name: &str, position: u32, version: &str| {
        (name.to_owned(), key(position), version.to_owned())
    };
    assert_eq!(
        steps_run(dir),
        vec![run("reserve", 0, "v1"), run("charge", 1, "v1")],
        "version 1 was killed in its sleep, before shipping"
    );

    // Version 2: continues it when the sleep is due, to the second sleep; killed there.
    let mut v2 = Child::start(dir, 2);
    v2.wait_for("state sleeping journal=7");
    v2.kill();
    assert_eq!(
        steps_run(dir)[2..],
        [run("notify", 4, "v2"), run("ship", 5, "v2")],
        "the old activation took the old path before the sleep (no fraud check) and the new \
         one after it (notified)"
    );

    // Version 3: divergent; replay failure with a diagnostic when the second sleep is due.
    let v3_out = Child::start(dir, 3).finish();
    let diagnostic = v3_out
        .last()
        .and_then(|l| l.strip_prefix("replay_failure "))
        .unwrap_or_else(|| panic!("version 3 fails to replay: {v3_out:?}"))
        .to_owned();
    for part in [
        "journal position 1",
        "the journal recorded step \"charge\"",
        "the code asked for step \"bill\"",
        "upgrade_function.rs:",
    ] {
        assert!(diagnostic.contains(part), "{part:?} in {diagnostic}");
    }
    assert_eq!(steps_run(dir).len(), 4, "version 3 ran nothing");

    // Version 4: the fix repairs it on its explicit start, and it completes.
    let v4_out = Child::start(dir, 4).finish();
    assert_eq!(
        v4_out.last().map(String::as_str),
        Some(
            "outcome reserved 7, charged 700, not fraud checked, customer notified, shipped, \
             delivered"
        ),
        "{v4_out:?}"
    );

    // Every step ran exactly once, by the version expected, with its position's key.
    let steps = steps_run(dir);
    assert_eq!(
        steps,
        vec![
            run("reserve", 0, "v1"),
            run("charge", 1, "v1"),
            run("notify", 4, "v2"),
            run("ship", 5, "v2"),
            run("deliver", 7, "v4"),
        ]
    );

    let (events, record) = activation(dir).await;
    let function = record.function.expect("a function record");
    let journal: Vec<String> = function.journal.iter().map(ToString::to_string).collect();
    assert_eq!(
        journal,
        [
            "step \"reserve\"",
            "step \"charge\"",
            "sleep",
            "patched \"notify-customer\"",
            "step \"notify\"",
            "step \"ship\"",
            "sleep",
            "step \"deliver\"",
        ]
    );
    assert_eq!(function.sleeps_ended, [2, 6].into_iter().collect());
    for (name, key, _) in &steps {
        let position: usize = key
            .rsplit('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("FLOW/POSITION");
        assert_eq!(
            journal[position],
            format!("step {name:?}"),
            "{key} is the key of {name}'s entry"
        );
    }

    // Each sleep lasted from when it was first reached (by the process that got there)
    // until its recorded end, and ended (in a later process) no earlier.
    for position in [2u32, 6] {
        let Some(JournalEntry::Sleep { until }) = function.journal.get(position as usize) else {
            panic!("a sleep at {position}");
        };
        let at = |wanted: &dyn Fn(&EventBody) -> bool| {
            events
                .iter()
                .find(|event| wanted(&event.body))
                .map(|event| event.time)
                .expect("the event")
        };
        let reached = at(
            &|body| matches!(body, EventBody::JournalEntryRecorded { position: p, .. } if *p == position),
        );
        let ended =
            at(&|body| matches!(body, EventBody::SleepEnded { position: p } if *p == position));
        assert!(
            until.as_micros() - reached.as_micros() > 1_000_000,
            "the sleep at {position} lasts from when it was reached"
        );
        assert!(ended >= *until, "the sleep at {position} ended early");
    }

    // The state changes, in order; the diagnostic recorded with the replay failure.
    let changes: Vec<(ActivationState, Option<String>)> = events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::ActivationStateChanged { to, diagnostic } => Some((*to, diagnostic.clone())),
            _ => None,
        })
        .collect();
    let states: Vec<&str> = changes.iter().map(|(state, _)| state.key()).collect();
    assert_eq!(
        states,
        [
            "sleeping",       // version 1, first sleep
            "active_replay",  // version 2, woken by the timer
            "active_current", // past the end of version 1's journal
            "sleeping",       // second sleep
            "active_replay",  // version 3, woken by the timer
            "replay_failure", // diverged
            "active_replay",  // version 4's explicit start
            "active_current", // past the end of the journal
            "done",
        ]
    );
    assert_eq!(changes[5].1.as_deref(), Some(diagnostic.as_str()));
    assert_eq!(
        function.outcome.as_ref().map(Result::is_ok),
        Some(true),
        "{:?}",
        function.outcome
    );

    // One run per process, in version order.
    let runs: Vec<&str> = events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::RunStarted { incarnation, .. } => incarnation.split('-').next(),
            _ => None,
        })
        .collect();
    assert_eq!(runs, ["v1", "v2", "v3", "v4"]);
    println!("the upgrade story took {:?}", started.elapsed());
}
