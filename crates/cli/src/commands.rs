//! What the store-side commands do (`flows ls | show | events | signal | cancel`): parse
//! their arguments, open the store, ask the store and the fold, and hand the result to
//! [`crate::render`]. Also the parsers of values every command shares (ids, `--at`,
//! durations).
//!
//! Every argument is parsed before the store is opened, so a typo never touches a file. The
//! store is always opened with [`Access::MustExist`]: inspecting a mistyped path must be an
//! error, never a new empty store that then lists no flows. `flows signal` and `flows cancel`
//! append to the store directly, without a server (for a store no server is running on; any
//! engine on the store still sees them, as the append marks the flow ready); `flowstate
//! signal` and `flowstate cancel` go through the server ([`crate::remote`]).

use std::sync::Arc;

use flowstate::kernel::FlowControl;
use std::time::Duration;

use flowstate::core::machine::{ActivationState, FlowState, PlanState};
use flowstate::core::{Event, FlowStatus, Machine, RawEvent, StopAt};
use flowstate::store::FlowQuery;
use flowstate::{Access, FlowId, FlowKind, Store, StoreError, SystemClock, Timestamp};
use flowstate_archive::{ArchiveAccess, ArchiveStore};

use crate::progress::{self, Progress};
use crate::render::{self, Output};
use crate::{Cli, CliError, Command, FlowArgs, FlowsCommand, LsArgs};

/// Events read from the store per request when reading a whole log.
const READ_BATCH: usize = 10_000;

/// A command with its arguments parsed.
#[derive(Debug)]
enum Request {
    List(FlowQuery),
    Show {
        id: FlowId,
        at: Option<StopAt>,
    },
    Events {
        id: FlowId,
        at: Option<StopAt>,
    },
    Signal {
        id: FlowId,
        name: String,
        value: serde_json::Value,
    },
    Cancel {
        id: FlowId,
        reason: String,
    },
}

/// Runs one command and closes the store, whatever the command's outcome.
pub(crate) async fn run(cli: Cli) -> Result<Output, CliError> {
    let progress = Progress::for_people(cli.json);
    let request = match cli.command {
        Command::Archive(command) => {
            return crate::archive::run(command, &cli.store, &cli.archive, cli.json, progress).await
        }
        // `main` runs the server itself, on a multi-threaded runtime.
        Command::Serve(_) => return Err(CliError::new("serve is run by main")),
        Command::Start(_)
        | Command::Signal(_)
        | Command::Cancel(_)
        | Command::Suspend(_)
        | Command::Resume(_)
        | Command::Steps(_)
        | Command::Flows(FlowsCommand::Watch(_)) => {
            return Err(CliError::new("this command goes through the server"))
        }
        Command::Flows(FlowsCommand::Ls(args)) => Request::List(list_query(args)?),
        Command::Flows(FlowsCommand::Show(args)) => {
            let (id, at) = flow_args(&args)?;
            Request::Show { id, at }
        }
        Command::Flows(FlowsCommand::Events(args)) => {
            let (id, at) = flow_args(&args)?;
            Request::Events { id, at }
        }
        Command::Flows(FlowsCommand::Signal(args)) => Request::Signal {
            id: parse_id(&args.id)?,
            value: match &args.value {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| CliError::new(format!("--value {text:?} is not JSON: {e}")))?,
                None => serde_json::Value::Null,
            },
            name: args.name,
        },
        Command::Flows(FlowsCommand::Cancel(args)) => Request::Cancel {
            id: parse_id(&args.id)?,
            reason: args.reason,
        },
    };
    let store = flowstate::open_store(&cli.store, Arc::new(SystemClock), Access::MustExist).await?;
    let result = execute(&store, &cli.archive, request, cli.json, progress).await;
    let closed = store.close().await;
    // The command's own error says more than a failure to close after it.
    let output = result?;
    closed?;
    Ok(output)
}

async fn execute(
    shared: &Arc<dyn Store>,
    archive: &str,
    request: Request,
    json: bool,
    progress: Progress,
) -> Result<Output, CliError> {
    let store = shared.as_ref();
    match request {
        Request::List(query) => {
            // Archived flows are not live (unless asked for by state): `archive ls` lists them.
            let page = flowstate_archive::list_live(store, &query).await?;
            render::flows(&page, json)
        }
        Request::Show { id, at } => {
            let (events, stop) = read_log(store, archive, id, at, progress).await?;
            let record = progress::fold(&events, stop, progress)
                .map_err(|e| CliError::new(format!("flow {id}: {e}")))?;
            let mut output = render::record(&record, at.is_some().then_some(events.len()), json)?;
            if !json && flowstate_archive::is_archived(record.status) {
                output.hint = Some(format!(
                    "flow {id} is archived; the archiver removes it from the store on its next pass (then: flowstate archive show {id})"
                ));
            }
            Ok(output)
        }
        Request::Events { id, at } => {
            let (events, stop) = read_log(store, archive, id, at, progress).await?;
            let decoded = events
                .iter()
                .take_while(|raw| !stop.excludes(raw.seq, raw.time))
                .map(|raw| Event::decode(raw).map_err(|e| CliError::new(format!("flow {id}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            render::events(&decoded, json)
        }
        Request::Signal { id, name, value } => {
            flowstate::durable::send_signal(store, &SystemClock, id, &name, value)
                .await
                .map_err(|e| CliError::new(format!("flow {id}: {e}")))?;
            Ok(render::sent(id, &name))
        }
        Request::Cancel { id, reason } => {
            // Any kind: recorded in its log, whichever engine runs the flow honours it.
            let controls = flowstate::store_controls(shared.clone(), Arc::new(SystemClock));
            let transition = controls
                .cancel(id, &reason)
                .await
                .map_err(|e| CliError::new(format!("flow {id}: {e}")))?;
            Ok(render::cancel_requested(id, transition))
        }
    }
}

/// Reads a flow's whole log and checks that the stop point lies inside it.
///
/// A stop point before the first event or past the last one is refused rather than answered
/// with an empty or final state: either is almost always a mistyped time or number.
async fn read_log(
    store: &dyn Store,
    archive: &str,
    id: FlowId,
    at: Option<StopAt>,
    progress: Progress,
) -> Result<(Vec<RawEvent>, StopAt), CliError> {
    let events = match read_events(store, id, progress).await {
        Ok(events) => events,
        Err(error @ StoreError::UnknownFlow { .. }) => {
            return Err(not_live(archive, id, error).await)
        }
        Err(error) => return Err(error.into()),
    };
    let stop = within_log(id, &events, at)?;
    Ok((events, stop))
}

/// A flow's whole log (what `flowstate::store::read_all` reads), with a bar once it turns out
/// to be long: the first batch is read without one, and only a full first batch asks the
/// store how long the log is.
async fn read_events(
    store: &dyn Store,
    id: FlowId,
    progress: Progress,
) -> Result<Vec<RawEvent>, StoreError> {
    let mut events = store.read(id, 1, READ_BATCH).await?;
    if events.len() < READ_BATCH {
        return Ok(events);
    }
    let first = events.first().map_or(1, |event| event.seq);
    let last = store
        .flow(id)
        .await?
        .map_or(first, |summary| summary.events());
    let bar = progress.bar(last.saturating_sub(first) + 1, "reading events");
    bar.inc(events.len() as u64);
    loop {
        let next = events.last().map_or(1, |event| event.seq + 1);
        let batch = store.read(id, next, READ_BATCH).await?;
        let done = batch.len() < READ_BATCH;
        bar.inc(batch.len() as u64);
        events.extend(batch);
        if done {
            return Ok(events);
        }
    }
}

/// The error for a flow the store does not have: if the archive has it, say so and where to
/// look; otherwise the store's own "flow `<id>` is not in the store" (also when there is no
/// archive to look in).
async fn not_live(archive: &str, id: FlowId, error: StoreError) -> CliError {
    let archived = match ArchiveStore::open(archive, ArchiveAccess::MustExist) {
        Ok(archive) => archive.contains(id).await.unwrap_or(false),
        Err(_) => false,
    };
    if archived {
        CliError::new(format!(
            "flow {id} is archived, no longer in the store: see flowstate archive show {id}"
        ))
    } else {
        error.into()
    }
}

/// Checks that the stop point lies inside the log `events` of flow `id`.
pub(crate) fn within_log(
    id: FlowId,
    events: &[RawEvent],
    at: Option<StopAt>,
) -> Result<StopAt, CliError> {
    let stop = at.unwrap_or_default();
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(CliError::new(format!("flow {id} has an empty log")));
    };
    match stop {
        StopAt::Seq(seq) if seq > last.seq => Err(CliError::new(format!(
            "flow {id} has {} events; --at {seq} is past its last event",
            last.seq
        ))),
        StopAt::Time(time) if stop.excludes(first.seq, first.time) => Err(CliError::new(format!(
            "flow {id} did not exist yet at {time}: it was created at {}",
            first.time
        ))),
        _ => Ok(stop),
    }
}

pub(crate) fn flow_args(args: &FlowArgs) -> Result<(FlowId, Option<StopAt>), CliError> {
    let id = parse_id(&args.id)?;
    let at = args.at.as_deref().map(parse_at).transpose()?;
    Ok((id, at))
}

pub(crate) fn parse_id(text: &str) -> Result<FlowId, CliError> {
    Ok(text.parse::<FlowId>()?)
}

/// `--at`: a sequence number or an RFC 3339 time.
fn parse_at(text: &str) -> Result<StopAt, CliError> {
    if let Ok(seq) = text.trim().parse::<u64>() {
        if seq == 0 {
            return Err(CliError::new(
                "--at 0 is before the first event: events are numbered from 1",
            ));
        }
        return Ok(StopAt::Seq(seq));
    }
    Timestamp::parse_rfc3339(text.trim())
        .map(StopAt::Time)
        .map_err(|_| {
            CliError::new(format!(
                "--at {text:?} is neither an event sequence number (such as 3) nor an RFC 3339 time (such as 2026-11-25T04:20:00Z)"
            ))
        })
}

/// A duration: a whole number with a unit, `ms`, `s`, `m`, `h` or `d` (`0` needs none), as
/// `--flag` takes it.
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration, CliError> {
    let invalid = || {
        CliError::new(format!(
            "--{flag} {text:?} is not a duration such as 250ms, 90s, 30m, 12h or 7d"
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
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(invalid)
}

fn parse_time(flag: &str, text: &str) -> Result<Timestamp, CliError> {
    Timestamp::parse_rfc3339(text.trim()).map_err(|e| {
        CliError::new(format!(
            "--{flag} {text:?} is not an RFC 3339 time such as 2026-11-25T04:20:00Z ({e})"
        ))
    })
}

fn parse_kind(text: &str) -> Result<FlowKind, CliError> {
    FlowKind::parse(text.trim()).ok_or_else(|| {
        let kinds: Vec<&str> = FlowKind::ALL.iter().map(|kind| kind.key()).collect();
        CliError::new(format!(
            "unknown kind {text:?}: expected one of {}",
            kinds.join(", ")
        ))
    })
}

/// `--state`: a state key (or spec label) of the machine of `kind`, or of any machine when no
/// kind is given. Returns the key, which is what stores index: `RUNNING` and `active current`
/// are accepted and mean `running` and `active_current`.
fn parse_state(kind: Option<FlowKind>, text: &str) -> Result<String, CliError> {
    let kinds = kind.map_or_else(|| FlowKind::ALL.to_vec(), |kind| vec![kind]);
    if let Some(status) = kinds
        .iter()
        .find_map(|kind| FlowStatus::parse(*kind, text.trim()))
    {
        return Ok(status.key().to_owned());
    }
    let valid: Vec<String> = kinds
        .iter()
        .map(|kind| format!("{kind}: {}", state_keys(*kind).join(", ")))
        .collect();
    Err(CliError::new(format!(
        "unknown state {text:?}; valid states are {}",
        valid.join("; ")
    )))
}

fn state_keys(kind: FlowKind) -> Vec<&'static str> {
    fn keys<M: Machine>() -> Vec<&'static str> {
        M::STATES.iter().map(|state| state.key()).collect()
    }
    // FlowKind is non-exhaustive; the status of a kind names its machine exhaustively.
    match FlowStatus::initial(kind) {
        FlowStatus::TaskGraph(_) => keys::<FlowState>(),
        FlowStatus::Plan(_) => keys::<PlanState>(),
        FlowStatus::Function(_) => keys::<ActivationState>(),
    }
}

fn list_query(args: LsArgs) -> Result<FlowQuery, CliError> {
    let kind = args.kind.as_deref().map(parse_kind).transpose()?;
    let status = args
        .state
        .as_deref()
        .map(|text| parse_state(kind, text))
        .transpose()?;
    Ok(FlowQuery {
        kind,
        definition: args.definition,
        status,
        created_from: args
            .created_from
            .as_deref()
            .map(|text| parse_time("created-from", text))
            .transpose()?,
        created_before: args
            .created_before
            .as_deref()
            .map(|text| parse_time("created-before", text))
            .transpose()?,
        after: args.after.as_deref().map(parse_id).transpose()?,
        // clap bounds the value to 1..=MAX_PAGE_SIZE; 0 asks the store for its default page.
        limit: args
            .limit
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        let parse = |text| parse_duration("max-age", text).ok();
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Some(Duration::from_secs(1_800)));
        assert_eq!(parse("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse("7d"), Some(Duration::from_secs(604_800)));
        for bad in [
            "",
            "7",
            "d",
            "-1d",
            "1w",
            "1.5h",
            "99999999999999999999d",
            "1 s",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let Err(CliError(message)) = parse_duration("timeout", "soon") else {
            panic!("soon is not a duration");
        };
        assert!(message.starts_with("--timeout \"soon\""), "{message}");
    }

    #[test]
    fn at_is_a_sequence_number_or_a_time() {
        assert!(matches!(parse_at("3"), Ok(StopAt::Seq(3))));
        assert!(matches!(
            parse_at("2026-11-25T04:20:00Z"),
            Ok(StopAt::Time(t)) if t == Timestamp::from_micros(1_795_580_400_000_000)
        ));
        assert!(parse_at("0").is_err());
        assert!(parse_at("yesterday").is_err());
        assert!(parse_at("-1").is_err());
    }

    #[test]
    fn states_are_normalised_to_keys_and_checked_against_the_kind() {
        assert_eq!(
            parse_state(None, "RUNNING").ok(),
            Some("running".to_owned())
        );
        assert_eq!(
            parse_state(Some(FlowKind::Function), "active current").ok(),
            Some("active_current".to_owned())
        );
        assert!(parse_state(Some(FlowKind::Plan), "running").is_err());
        assert!(parse_state(None, "bogus").is_err());
    }

    #[test]
    fn unknown_kinds_list_the_valid_ones() {
        let Err(CliError(message)) = parse_kind("dag") else {
            panic!("dag is not a kind");
        };
        assert!(message.contains("task_graph, plan, function"), "{message}");
    }
}
