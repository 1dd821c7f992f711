//! Child program of the archive crash test: runs one archive pass from an SQLite store to a
//! local directory, archiving every deactivated plan flow (no minimum age) in batches.
//!
//! Usage: `flowstate-crash-archiver DB ARCHIVE_DIR BATCH`. With `FLOWSTATE_ARCHIVE_PAUSE=STEP:N`
//! (STEP one of `marked`, `written`, `verified`, `deleted`), the pass stops for good when the
//! N-th flow completes STEP: it prints `paused FLOW STEP` (flushed) and waits there, for
//! the test to SIGKILL it. Without it the pass runs to the end and prints `done ARCHIVED
//! RECOVERED`; a flow that fails makes it exit with an error.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstate_archive::{
    ArchiveAccess, ArchiveObserver, ArchivePolicy, ArchiveStep, ArchiveStore, Archiver,
};
use flowstate_core::FlowId;
use flowstate_store::{Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

/// The environment variable that names the pause point.
const PAUSE_ENV: &str = "FLOWSTATE_ARCHIVE_PAUSE";

/// Stops the pass at the `nth` completion of `step`.
#[derive(Debug)]
struct Pause {
    step: ArchiveStep,
    nth: usize,
    seen: AtomicUsize,
}

#[async_trait]
impl ArchiveObserver for Pause {
    async fn step(&self, flow: FlowId, step: ArchiveStep) {
        if step != self.step || self.seen.fetch_add(1, Ordering::SeqCst) + 1 != self.nth {
            return;
        }
        say(&format!("paused {flow} {}", step.key()));
        std::future::pending::<()>().await;
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write means the parent is gone; there is nobody left to tell.
    let _written = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn pause_point() -> Result<Option<Pause>, String> {
    let Ok(text) = std::env::var(PAUSE_ENV) else {
        return Ok(None);
    };
    let invalid = || format!("{PAUSE_ENV}={text:?}: expected STEP:N, such as written:3");
    let (step, nth) = text.split_once(':').ok_or_else(invalid)?;
    Ok(Some(Pause {
        step: ArchiveStep::parse(step).ok_or_else(invalid)?,
        nth: nth.parse().map_err(|_| invalid())?,
        seen: AtomicUsize::new(0),
    }))
}

async fn run(db: &str, archive: &str, batch_size: usize) -> Result<(), String> {
    let pause = pause_point()?;
    let clock = Arc::new(SystemClock);
    let options = SqliteOptions {
        create: false,
        ..SqliteOptions::default()
    };
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(db, clock.clone(), options).map_err(|e| e.to_string())?);
    let archive =
        ArchiveStore::open(archive, ArchiveAccess::CreateIfMissing).map_err(|e| e.to_string())?;
    let policy = ArchivePolicy {
        max_age: Duration::ZERO,
        batch_size,
        ..ArchivePolicy::default()
    };
    let mut archiver =
        Archiver::new(store.clone(), archive, policy, clock).map_err(|e| e.to_string())?;
    if let Some(pause) = pause {
        archiver = archiver.with_observer(Arc::new(pause));
    }
    let report = archiver.run_once().await.map_err(|e| e.to_string())?;
    store.close().await.map_err(|e| e.to_string())?;
    if let Some(failure) = report.failed.first() {
        return Err(format!(
            "{} flows failed; first: {}",
            report.failed.len(),
            failure.error
        ));
    }
    say(&format!("done {} {}", report.archived, report.recovered));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(db), Some(archive), Some(batch)) = (
        args.get(1),
        args.get(2),
        args.get(3).and_then(|n| n.parse().ok()),
    ) else {
        eprintln!("usage: flowstate-crash-archiver DB ARCHIVE_DIR BATCH");
        return ExitCode::from(2);
    };
    flowstate_testkit::run_child(run(db, archive, batch))
}
