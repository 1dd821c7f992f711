//! `flowstate archive ...`: list, show and replay archived flows (the archive only; the store
//! is not opened), and run one archive pass (store and archive).
//!
//! Like every command, arguments are parsed before anything is opened, and inspection opens
//! the archive with [`ArchiveAccess::MustExist`]: a mistyped directory is an error, never a
//! new empty archive.

use std::sync::Arc;
use std::time::Duration;

use flowstate::core::Event;
use flowstate::{Access, SystemClock};
use flowstate_archive::{ArchiveAccess, ArchivePolicy, ArchiveQuery, ArchiveStore, Archiver};

use crate::commands::{flow_args, parse_id, within_log};
use crate::render::{self, Output};
use crate::{ArchiveCommand, ArchiveRunArgs, CliError};

/// Runs one `archive` command.
pub(crate) async fn run(
    command: ArchiveCommand,
    store: &str,
    archive: &str,
    json: bool,
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
            let record = flow.replay(stop)?;
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
            let pass = match Archiver::new(store.clone(), archive, policy, clock) {
                Ok(archiver) => archiver.run_once().await.map_err(CliError::from),
                Err(error) => Err(error.into()),
            };
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
            .map(parse_duration)
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

/// A duration: a whole number with a unit, `s`, `m`, `h` or `d` (`0` needs none).
fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let invalid = || {
        CliError::new(format!(
            "--max-age {text:?} is not a duration such as 90s, 30m, 12h or 7d"
        ))
    };
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m").ok(), Some(Duration::from_secs(1_800)));
        assert_eq!(
            parse_duration("12h").ok(),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(
            parse_duration("7d").ok(),
            Some(Duration::from_secs(604_800))
        );
        for bad in ["", "7", "d", "-1d", "1w", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
