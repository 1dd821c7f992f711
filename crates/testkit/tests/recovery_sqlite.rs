//! Fast recovery on one machine: an engine process on an SQLite file is SIGKILLed with flows
//! in flight under long leases (120 s), and the process started again on the same file takes
//! them over at once (its process lock proves the old one is gone) instead of waiting for the
//! leases to run out; a second engine process on the file while one runs is refused, naming
//! the file and the lock. The test itself reads and submits beside the running engines, as
//! the CLI's inspection commands and `flows signal/cancel` do.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::machine::FlowState;
use flowstate_core::{Clock, FlowId, FlowStatus};
use flowstate_store::{Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};
use flowstate_taskgraph::Engine;

const CHILD: &str = env!("CARGO_BIN_EXE_flowstate-engine-process");
const FLOWS: usize = 100;
/// Far longer than the test may take: a flow that waited for a lease would be obvious.
const LEASE: Duration = Duration::from_secs(120);
/// How long the restarted process may take to finish every flow; waiting for the dead
/// process's leases would take at least two thirds of [`LEASE`] (they were renewed at most
/// a third of a lease before the kill).
const RECOVERY: Duration = Duration::from_secs(60);

fn start(
    db: &std::path::Path,
    log: &std::path::Path,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(CHILD)
        .arg(db)
        .arg("unused")
        .env("FLOWSTATE_LEASE_MS", LEASE.as_millis().to_string())
        .env("FLOWSTATE_POLL_MS", "250")
        .env("FLOWSTATE_EXEC_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start an engine process");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

fn wait_ready(child: &mut Child, lines: &std::sync::mpsc::Receiver<String>) {
    match lines.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => assert_eq!(line, "ready"),
        Err(_) => {
            let _ = child.kill();
            let output = child.wait_with_output_lossy();
            panic!("the engine process did not start: {output}");
        }
    }
}

trait Lossy {
    fn wait_with_output_lossy(&mut self) -> String;
}

impl Lossy for Child {
    fn wait_with_output_lossy(&mut self) -> String {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        let _ = self.wait();
        stderr
    }
}

async fn unfinished(store: &dyn Store, flows: &[FlowId]) -> Vec<FlowId> {
    let mut left = Vec::new();
    for flow in flows {
        let summary = store.flow(*flow).await.expect("flow").expect("exists");
        if summary.status != FlowStatus::TaskGraph(FlowState::Success) || summary.ready {
            left.push(*flow);
        }
    }
    left
}

fn lines_in(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_restarted_on_its_file_takes_its_flows_over_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, log) = (
        dir.path().join("flows.db"),
        dir.path().join("executions.log"),
    );
    let (mut first, first_lines) = start(&db, &log);
    wait_ready(&mut first, &first_lines);

    // Beside the running engine: this process opens the file, and submits, without the lock.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let options = SqliteOptions {
        create: false,
        ..SqliteOptions::default()
    };
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&db, clock.clone(), options).expect("open beside the engine"));
    let engine = Engine::new(store.clone(), clock.clone());
    for (definition, _) in flowstate_testkit::mix::definitions(&Default::default()) {
        engine.register(definition);
    }
    let mut flows = Vec::with_capacity(FLOWS);
    for _ in 0..FLOWS {
        flows.push(
            engine
                .submit("mix-linear", flowstate_testkit::mix::inputs())
                .await
                .expect("submit"),
        );
    }
    // SIGKILL once it has started some tasks, long before it can have finished them all
    // (10 tasks a flow).
    let waited = Instant::now();
    while lines_in(&log) < 20 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no task started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let left = unfinished(store.as_ref(), &flows).await;
    assert!(
        !left.is_empty(),
        "the kill should catch flows in flight (every flow finished first)"
    );

    let restarted = Instant::now();
    let (mut second, second_lines) = start(&db, &log);
    wait_ready(&mut second, &second_lines);

    // A second engine process on the file is refused while this one runs.
    let (mut third, _third_lines) = start(&db, &log);
    let status = third.wait().expect("the third process exits");
    let stderr = third.wait_with_output_lossy();
    assert!(!status.success(), "a second engine process must not start");
    assert!(
        stderr.contains(&db.display().to_string())
            && stderr.contains(&format!("{}.lock", db.display()))
            && stderr.contains("in use by another engine process"),
        "the error names the file and the lock: {stderr}"
    );

    loop {
        let left = unfinished(store.as_ref(), &flows).await;
        if left.is_empty() {
            break;
        }
        assert!(
            restarted.elapsed() < RECOVERY,
            "{} flows still wait {:?} after the restart: the dead process's leases were not taken over",
            left.len(),
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} flows in flight at the kill; all finished {:?} after the restart (lease {LEASE:?})",
        left.len(),
        restarted.elapsed()
    );
    second.kill().expect("stop");
    second.wait().expect("reap");
    store.close().await.expect("close");
}
