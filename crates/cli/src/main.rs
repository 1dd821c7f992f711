//! The `flowstate` command line: run the server, drive flows through it, inspect the flows in
//! a store and its archive.
//!
//! This file owns the grammar (clap), the runtime and the error contract: every failure is one
//! `error: <message>` line on stderr and exit status 1 (a server's problem details become
//! `error: <detail> (<code>)`); only clap's own usage errors keep their usual status 2. Where
//! settings come from is [`config`]'s; what the store-side commands do lives in [`commands`]
//! and [`archive`], the commands that go through a server in [`remote`] (over [`client`]), how
//! results look (tables or JSON) in [`render`], progress bars in [`progress`].

mod archive;
mod client;
mod commands;
mod config;
mod logging;
mod progress;
mod remote;
mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use flowstate::core::limits::MAX_PAGE_SIZE;

/// Run and drive durable flows: serve the engine, start flows and follow them, send signals,
/// suspend, resume and cancel them through the server; list flows, show their state at any
/// point and read their logs from the store; list, show and replay archived flows.
///
/// Settings come from flags, then the environment, then the configuration file (--config or
/// FLOWSTATE_CONFIG: TOML with the keys store, archive, server, tokens, log_format, addr,
/// examples, archive_deactivated, steps_file), then the defaults.
#[derive(Debug, Parser)]
#[command(name = "flowstate", version)]
pub(crate) struct Cli {
    /// The store: a file path, sqlite://PATH or postgres://...
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = flowstate::STORE_ENV,
        default_value = flowstate::DEFAULT_STORE
    )]
    pub(crate) store: String,

    /// The archive: a directory, file://PATH, s3://BUCKET[/PREFIX] (configured by the AWS_*
    /// environment variables) or memory://.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = flowstate_archive::ARCHIVE_ENV,
        default_value = flowstate_archive::DEFAULT_ARCHIVE
    )]
    pub(crate) archive: String,

    /// A TOML configuration file (no file is read unless one is named).
    #[arg(long, global = true, value_name = "PATH", env = config::CONFIG_ENV)]
    pub(crate) config: Option<PathBuf>,

    /// The server commands go through: start, signal, cancel, suspend, resume, steps, flows
    /// watch.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = client::SERVER_ENV,
        default_value = client::DEFAULT_SERVER
    )]
    pub(crate) server: String,

    /// A bearer token. `serve` accepts every one given (comma separated in the environment);
    /// commands that go through a server send the first.
    #[arg(
        long = "token",
        id = "tokens",
        global = true,
        value_name = "TOKEN",
        env = "FLOWSTATE_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) tokens: Vec<String>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// How log lines are written to stderr: human (coloured on a terminal) or json (one
    /// object per line). RUST_LOG filters them (default: info for flowstate under serve,
    /// warnings otherwise).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "FLOWSTATE_LOG_FORMAT",
        default_value = "human"
    )]
    pub(crate) log_format: logging::LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Inspect flows (in the store), or watch them (through the server).
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Archived flows: list them, show and replay them, move deactivated flows there.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Run the engine with its HTTP API and web UI (on the store given by --store).
    Serve(ServeArgs),
    /// Start a flow through the server: a plan by goals, or a task graph or durable function
    /// by name. Prints its id.
    Start(StartArgs),
    /// Send a signal to a durable function through the server.
    Signal(SignalArgs),
    /// Cancel a flow through the server: a durable function stops at its next effect and is
    /// done with a `Cancelled` failure; an active plan fails, compensates and deactivates; an
    /// unfinished task graph reverts what ran.
    Cancel(CancelArgs),
    /// Suspend a task graph through the server: running atoms finish, nothing new starts, and
    /// it stays SUSPENDED until resumed (plans and functions have no suspended state).
    Suspend(ControlArgs),
    /// Resume a SUSPENDED task graph through the server.
    Resume(ControlArgs),
    /// The server's plan steps: list them, register HTTP steps, remove them.
    #[command(subcommand)]
    Steps(StepsCommand),
}

/// `serve [--addr ADDR] [--no-examples] [--archive-deactivated] [--archive-max-age D]
/// [--archive-max-live-flows N] [--archive-max-live-bytes B] [--archive-interval D]
/// [--retention D] [--steps-file PATH]` (tokens: the global `--token`).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where to listen (port 0: any free port, printed); without a token only a loopback
    /// address is accepted.
    #[arg(long, value_name = "ADDR", env = "FLOWSTATE_ADDR", default_value = flowstate_server::DEFAULT_ADDR)]
    pub(crate) addr: std::net::SocketAddr,
    /// Do not register the example steps, task graph and function.
    #[arg(long)]
    pub(crate) no_examples: bool,
    /// Move finished flows of every kind (deactivated plans, ended task graphs, done
    /// functions) to --archive, by the --archive-* thresholds.
    #[arg(long)]
    pub(crate) archive_deactivated: bool,
    /// Archive finished flows whose last event is at least this old: 90s, 30m, 12h, 7d
    /// (default 7d).
    #[arg(long, value_name = "DURATION", env = "FLOWSTATE_ARCHIVE_MAX_AGE")]
    pub(crate) archive_max_age: Option<String>,
    /// While the store holds more flows than this, archive finished ones whatever their age.
    #[arg(long, value_name = "N", env = "FLOWSTATE_ARCHIVE_MAX_LIVE_FLOWS")]
    pub(crate) archive_max_live_flows: Option<u64>,
    /// While the store's events add up to more bytes than this, archive finished flows
    /// whatever their age.
    #[arg(long, value_name = "BYTES", env = "FLOWSTATE_ARCHIVE_MAX_LIVE_BYTES")]
    pub(crate) archive_max_live_bytes: Option<u64>,
    /// How long the archive worker waits between passes (default 60s).
    #[arg(long, value_name = "DURATION", env = "FLOWSTATE_ARCHIVE_INTERVAL")]
    pub(crate) archive_interval: Option<String>,
    /// How long a done durable function keeps its whole journal before dropping it
    /// (default 7d).
    #[arg(long, value_name = "DURATION", env = "FLOWSTATE_RETENTION")]
    pub(crate) retention: Option<String>,
    /// Where HTTP step registrations are kept across restarts (default: next to an SQLite
    /// store, STORE.http-steps.json; none for PostgreSQL, where registrations then last as
    /// long as the process).
    #[arg(long, value_name = "PATH", env = "FLOWSTATE_STEPS_FILE")]
    pub(crate) steps_file: Option<PathBuf>,
    /// How long the idempotency keys of starts (`Idempotency-Key`, a chosen id) are kept: a
    /// start repeated within it gives the first flow (default 24h; 250ms, 90s, 30m, 12h, 7d).
    #[arg(long, value_name = "DURATION", env = "FLOWSTATE_IDEMPOTENCY_WINDOW")]
    pub(crate) idempotency_window: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArchiveCommand {
    /// List archived flows, by id (creation order), one page at a time.
    Ls(ArchiveLsArgs),
    /// Show an archived flow's state, at its end or at an earlier point of its log.
    Show(FlowArgs),
    /// Print an archived flow's events, all of them or up to a point.
    Events(FlowArgs),
    /// Run one archive pass: move finished flows of every kind from the store to the archive.
    Run(ArchiveRunArgs),
}

/// `archive ls [--after ID] [--limit N]`.
#[derive(Debug, Args)]
pub(crate) struct ArchiveLsArgs {
    /// Only flows after this id (the previous page's last id).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,

    /// Flows per page (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_PAGE_SIZE as u64))]
    pub(crate) limit: Option<u64>,
}

/// `archive run`: the policy of one pass.
#[derive(Debug, Args)]
pub(crate) struct ArchiveRunArgs {
    /// Archive finished flows whose last event is at least this old: 90s, 30m, 12h, 7d
    /// (default 7d).
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_age: Option<String>,

    /// Flows archived together (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=flowstate_archive::MAX_BATCH_SIZE as u64))]
    pub(crate) batch: Option<u64>,

    /// While the store holds more flows than this, archive finished ones whatever their age
    /// (oldest, then largest, first).
    #[arg(long, value_name = "N")]
    pub(crate) max_live_flows: Option<u64>,

    /// While the store's events add up to more bytes than this, archive finished flows
    /// whatever their age (oldest, then largest, first).
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_live_bytes: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum FlowsCommand {
    /// List flows, oldest first, one page at a time.
    Ls(LsArgs),
    /// Show a flow's state, now or as it was at an earlier point of its log.
    Show(FlowArgs),
    /// Print a flow's events, all of them or up to a point.
    Events(FlowArgs),
    /// Follow a flow's events as they are recorded, until it ends (through the server); with
    /// no id, follow changes of every flow.
    Watch(WatchArgs),
    /// Send a signal to a durable function by writing to the store directly, without a
    /// server (`flowstate signal` goes through one).
    Signal(SignalArgs),
    /// Cancel a flow of any kind by writing the request to the store directly, without a
    /// server (`flowstate cancel` goes through one); the engine that runs the flow honours it.
    Cancel(CancelArgs),
}

/// `flows watch [ID]`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The flow; without one, every flow's changes (until the server stops).
    pub(crate) id: Option<String>,
}

/// `start (--goal G... | --graph NAME | --function NAME) [--input ...]... [--wait]`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["goals", "graph", "function"])))]
pub(crate) struct StartArgs {
    /// A plan's goal: an attribute or a step name (repeat for several).
    #[arg(long = "goal", id = "goals", value_name = "GOAL")]
    pub(crate) goals: Vec<String>,
    /// A registered task graph to run.
    #[arg(long, value_name = "NAME")]
    pub(crate) graph: Option<String>,
    /// A registered durable function to run.
    #[arg(long, value_name = "NAME")]
    pub(crate) function: Option<String>,
    /// Input. A plan or task graph takes KEY=JSON (repeat; name='"text"' for a string) or a
    /// JSON object; a function takes one JSON value.
    #[arg(long = "input", id = "inputs", value_name = "KEY=JSON|JSON")]
    pub(crate) inputs: Vec<String>,
    /// For a plan: which step provides an attribute several steps could provide.
    #[arg(
        long = "choose",
        id = "choices",
        value_name = "ATTR=STEP",
        requires = "goals"
    )]
    pub(crate) choices: Vec<String>,
    /// For a plan: its definition name (default "plan").
    #[arg(long, value_name = "NAME", requires = "goals")]
    pub(crate) name: Option<String>,
    /// Follow the flow to its end, then print its final state (exit status 1 if it failed).
    #[arg(long)]
    pub(crate) wait: bool,
    /// The flow's id (a UUID), chosen here: starting again with the same id and request
    /// gives the same flow (within the server's idempotency window).
    #[arg(long, value_name = "UUID")]
    pub(crate) id: Option<String>,
    /// Makes the start idempotent: starting again with the same key and request gives the
    /// first flow (within the server's idempotency window); another request is refused.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
}

/// `suspend ID [--reason TEXT]`, `resume ID [--reason TEXT]`.
#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// The flow's id.
    pub(crate) id: String,
    /// Why (the server logs it).
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StepsCommand {
    /// List the steps new plans are planned from.
    Ls,
    /// Register an HTTP step: the server POSTs each work item to URL (registering a name
    /// again makes a new version). The server keeps it across restarts in its registrations
    /// file (serve --steps-file).
    Register(Box<RegisterArgs>),
    /// Remove a step from what new plans are planned from (running flows keep it).
    Rm(RemoveArgs),
}

/// `steps register NAME --url URL --output O... [...]`.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// The step's name.
    pub(crate) name: String,
    /// Where the server POSTs each work item (http or https).
    #[arg(long, value_name = "URL")]
    pub(crate) url: String,
    /// A required input attribute (repeat).
    #[arg(long = "input", id = "inputs", value_name = "ATTR")]
    pub(crate) inputs: Vec<String>,
    /// An optional input attribute, with the JSON value used when nothing provides it
    /// (repeat).
    #[arg(long = "optional", id = "optional", value_name = "ATTR[=JSON]")]
    pub(crate) optional: Vec<String>,
    /// An attribute it produces (repeat; at least one).
    #[arg(long = "output", id = "outputs", value_name = "ATTR", required = true)]
    pub(crate) outputs: Vec<String>,
    /// sync: the answer holds the outputs; async: the answer accepts the work and the outputs
    /// are reported later to the report_url the server sends.
    #[arg(long, value_enum, default_value = "sync")]
    pub(crate) mode: StepMode,
    /// Attempts in all (1: no retry).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) attempts: Option<u32>,
    /// Delay before the second attempt, doubling each time: 250ms, 2s, 1m (default 100ms).
    #[arg(long, value_name = "DURATION")]
    pub(crate) backoff: Option<String>,
    /// Longest delay between attempts (default 60s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_backoff: Option<String>,
    /// Retry after exactly the backoff, without jitter.
    #[arg(long)]
    pub(crate) no_jitter: bool,
    /// Longest an attempt may take (for an async step: until its report): 500ms, 30s, 10m
    /// (the server's default is 30s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) timeout: Option<String>,
    /// A mapped step: the list input that gives one work item per element.
    #[arg(long, value_name = "ATTR")]
    pub(crate) map_over: Option<String>,
    /// For a mapped step: most work items at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) parallelism: Option<u32>,
    /// Run only if this predicate over its inputs holds, as JSON, e.g.
    /// '{"op":"greater_than","input":"amount","value":100}'.
    #[arg(long, value_name = "JSON")]
    pub(crate) predicate: Option<String>,
}

/// How an HTTP step answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StepMode {
    /// The answer holds the outputs.
    Sync,
    /// The answer accepts the work; the outputs are reported later.
    Async,
}

/// `steps rm NAME`.
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The step's name.
    pub(crate) name: String,
}

/// `cancel ID [--reason TEXT]`, `flows cancel ID [--reason TEXT]`.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The flow's id (`flows cancel`: a durable function's).
    pub(crate) id: String,
    /// Why (kept in a function's outcome, in a plan's failure).
    #[arg(long, default_value = "cancelled by the operator")]
    pub(crate) reason: String,
}

/// `signal ID NAME [--value JSON]`, `flows signal ID NAME [--value JSON]`.
#[derive(Debug, Args)]
pub(crate) struct SignalArgs {
    /// The durable function's flow id.
    pub(crate) id: String,
    /// The signal's name.
    pub(crate) name: String,
    /// Its value, as JSON (default `null`).
    #[arg(long, value_name = "JSON")]
    pub(crate) value: Option<String>,
}

/// Filters and paging for `flows ls`.
///
/// Values that clap cannot check by type (kinds, states, times, ids) stay text here and are
/// parsed by [`commands`], so that a bad value is a one-line error with status 1 that names
/// what was expected, rather than a usage screen.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only flows of this kind: task_graph, plan or function.
    #[arg(long)]
    pub(crate) kind: Option<String>,

    /// Only flows running this definition.
    #[arg(long, value_name = "NAME")]
    pub(crate) definition: Option<String>,

    /// Only flows in this state (for example running, sleeping, deactivated).
    #[arg(long)]
    pub(crate) state: Option<String>,

    /// Only flows created at or after this time.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) created_from: Option<String>,

    /// Only flows created before this time.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) created_before: Option<String>,

    /// Only flows after this id (the previous page's last id).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,

    /// Flows per page (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_PAGE_SIZE as u64))]
    pub(crate) limit: Option<u64>,
}

/// One flow, optionally at a point of its log.
#[derive(Debug, Args)]
pub(crate) struct FlowArgs {
    /// The flow's id.
    pub(crate) id: String,

    /// Stop at this point: an event's sequence number (3) or an RFC 3339 time
    /// (2026-11-25T04:20:00Z; events recorded at or before it are included).
    #[arg(long, value_name = "SEQ|TIME")]
    pub(crate) at: Option<String>,
}

/// A failure, already phrased for the user.
///
/// It deliberately does not implement `Display`, so that the blanket `From` below (which lets
/// `?` turn any library error into its message) does not overlap with `From<T> for T`.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

/// `serve`: the engine's worker and the HTTP server, on a multi-threaded runtime, until
/// SIGTERM or Ctrl-C.
/// `serve`'s archive policy, archive interval and journal retention: the flags (or their
/// environment variables, or the configuration file), else the defaults.
fn archiving(args: &ServeArgs) -> Result<flowstate_server::Archiving, CliError> {
    let defaults = flowstate_server::Archiving::default();
    let duration = |flag: &str, text: Option<&String>, default| {
        text.map(|text| commands::parse_duration(flag, text))
            .transpose()
            .map(|parsed| parsed.unwrap_or(default))
    };
    Ok(flowstate_server::Archiving {
        policy: flowstate_archive::ArchivePolicy {
            max_age: duration(
                "archive-max-age",
                args.archive_max_age.as_ref(),
                defaults.policy.max_age,
            )?,
            max_live_flows: args.archive_max_live_flows,
            max_live_bytes: args.archive_max_live_bytes,
            ..defaults.policy
        },
        interval: duration(
            "archive-interval",
            args.archive_interval.as_ref(),
            defaults.interval,
        )?,
        journal_retention: duration(
            "retention",
            args.retention.as_ref(),
            defaults.journal_retention,
        )?,
    })
}

fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let config = flowstate_server::ServerConfig {
            addr: args.addr,
            store: cli.store.clone(),
            archive: Some(cli.archive.clone()),
            archive_deactivated: args.archive_deactivated,
            archiving: archiving(args)?,
            tokens: cli.tokens.clone(),
            examples: !args.no_examples,
            steps_file: args.steps_file.clone(),
            idempotency_window: match &args.idempotency_window {
                Some(text) => commands::parse_duration("idempotency-window", text)?,
                None => flowstate::DEFAULT_IDEMPOTENCY_WINDOW,
            },
        };
        let server = flowstate_server::serve(config)
            .await
            .map_err(|e| CliError::new(e.to_string()))?;
        // The first line says where it listens (with port 0, the port chosen), for people and
        // for programs that start it.
        let _unreported = writeln!(
            std::io::stdout(),
            "flowstate listening on http://{} (store {}); Ctrl-C stops it",
            server.addr(),
            cli.store
        );
        server.run_until_signal().await;
        Ok(())
    })
}

fn main() -> ExitCode {
    // Usage errors (unknown flag, missing argument, --help) are printed by clap, which exits.
    let matches = Cli::command().get_matches();
    let result = Cli::from_arg_matches(&matches)
        .map_err(CliError::from)
        .and_then(|mut cli| {
            config::apply(&mut cli, &matches)?;
            logging::init(cli.log_format, matches!(cli.command, Command::Serve(_)));
            run(cli)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(message)) => {
            // One line, always: a message that carries a newline (a parser's, say) would
            // otherwise break scripts that read the first line of stderr.
            let line = message
                .lines()
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            // Nothing sensible is left to do if stderr itself is gone.
            let _unreported = writeln!(std::io::stderr(), "error: {line}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Serve(args) = &cli.command {
        return serve(&cli, args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    let output = if remote::goes_through_server(&cli.command) {
        runtime.block_on(remote::run(cli))?
    } else {
        runtime.block_on(commands::run(cli))?
    };
    write_output(&output)
}

/// Prints a command's result on stdout and its hint on stderr.
///
/// Store commands' output is written only after the store is closed, so a reader that stops
/// early (`flowstate flows ls | head`) never cuts a store operation short.
fn write_output(output: &render::Output) -> Result<(), CliError> {
    match std::io::stdout().lock().write_all(output.stdout.as_bytes()) {
        Ok(()) => {}
        // The reader went away: that is its choice, not a failure of ours.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(error) => return Err(CliError::new(format!("cannot write the output: {error}"))),
    }
    if let Some(hint) = &output.hint {
        let _unreported = writeln!(std::io::stderr(), "{hint}");
    }
    if let Some(failure) = &output.failure {
        return Err(CliError::new(failure.clone()));
    }
    Ok(())
}
