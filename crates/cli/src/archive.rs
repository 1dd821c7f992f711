//! `flowstate archive ...`: list, show and replay archived flows (the archive only; the store
//! is not opened), and run one archive pass (store and archive).
//!
//! Like every command, arguments are parsed before anything is opened, and inspection opens
//! the archive with [`ArchiveAccess::MustExist`]: a mistyped directory is an error, never a
//! new empty archive. A pass shows the flows it has moved so far, and replaying a long
//! archived log shows a bar (on a terminal, see [`crate::progress`]).

use std::sync::Arc;

use async_trait::async_trait;
use flowstate::core::Event;
use flowstate::{Access, FlowId, SystemClock};
use flowstate_archive::{
    ArchiveAccess, ArchiveObserver, ArchivePolicy, ArchiveQuery, ArchiveStep, ArchiveStore,
    Archiver,
};

use crate::commands::{flow_args, parse_duration, parse_id, within_log};
use crate::progress::{self, Bar, Progress};
use crate::render::{self, Output};
use crate::{ArchiveCommand, ArchiveRunArgs, CliError};

/// Counts the flows a pass has moved (deleted from the live store) on a spinner.
#[derive(Debug)]
struct PassProgress {
    spinner: Bar,
    moved: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl ArchiveObserver for PassProgress {
    async fn step(&self, _flow: FlowId, step: ArchiveStep) {
        if step == ArchiveStep::Deleted {
            let moved = self
                .moved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            self.spinner
                .message(format!("archiving: {moved} flows moved"));
        }
    }
}

/// Runs one `archive` command.
pub(crate) async fn run(
    command: ArchiveCommand,
    store: &str,
    archive: &str,
    json: bool,
    progress: Progress,
) -> Result<Output, CliError> {
    match command {
        ArchiveCommand::Ls(args) => {
            let query = ArchiveQuery {
                after: args.after.as_deref().map(parse_id).transpose()?,
                // clap bounds the value to 1..=MAX_PAGE_SIZE; 0 asks for the default page.
                limit: args
                    .limit
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0),
            };
            let archive = ArchiveStore::open(archive, ArchiveAccess::MustExist)?;
            render::archived(&archive.list(&query).await?, json)
        }
        ArchiveCommand::Show(args) => {
            let (id, at) = flow_args(&args)?;
            let flow = ArchiveStore::open(archive, ArchiveAccess::MustExist)?
                .read(id)
                .await?;
            let stop = within_log(id, &flow.events, at)?;
            let record = progress::fold(&flow.events, stop, progress)
                .map_err(|e| CliError::new(format!("flow {id}: {e}")))?;
            render::record(&record, at.is_some().then_some(flow.events.len()), json)
        }
        ArchiveCommand::Events(args) => {
            let (id, at) = flow_args(&args)?;
            let flow = ArchiveStore::open(archive, ArchiveAccess::MustExist)?
                .read(id)
                .await?;
            let stop = within_log(id, &flow.events, at)?;
            let decoded = flow
                .events
                .iter()
                .take_while(|raw| !stop.excludes(raw.seq, raw.time))
                .map(|raw| Event::decode(raw).map_err(|e| CliError::new(format!("flow {id}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            render::events(&decoded, json)
        }
        ArchiveCommand::Run(args) => {
            let policy = policy(&args)?;
            let archive = ArchiveStore::open(archive, ArchiveAccess::CreateIfMissing)?;
            let clock = Arc::new(SystemClock);
            let store = flowstate::open_store(store, clock.clone(), Access::MustExist).await?;
            let observer = Arc::new(PassProgress {
                spinner: progress.spinner("archiving: 0 flows moved"),
                moved: 0.into(),
            });
            let pass = match Archiver::new(store.clone(), archive, policy, clock) {
                Ok(archiver) => archiver
                    .with_observer(observer.clone())
                    .run_once()
                    .await
                    .map_err(CliError::from),
                Err(error) => Err(error.into()),
            };
            drop(observer);
            let closed = store.close().await;
            let report = pass?;
            closed?;
            if let Some(first) = report.failed.first() {
                return Err(CliError::new(format!(
                    "{} flows could not be archived and stay in the store ({} archived); first: {}",
                    report.failed.len(),
                    report.archived + report.recovered,
                    first.error
                )));
            }
            render::archive_report(&report, json)
        }
    }
}

fn policy(args: &ArchiveRunArgs) -> Result<ArchivePolicy, CliError> {
    let defaults = ArchivePolicy::default();
    Ok(ArchivePolicy {
        max_age: args
            .max_age
            .as_deref()
            .map(|text| parse_duration("max-age", text))
            .transpose()?
            .unwrap_or(defaults.max_age),
        max_live_flows: args.max_live_flows,
        max_live_bytes: args.max_live_bytes,
        // clap bounds the value to 1..=MAX_BATCH_SIZE.
        batch_size: args
            .batch
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(defaults.batch_size),
    })
}
