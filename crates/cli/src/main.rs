//! The `flowstate` command line: inspect the flows in a store.
//!
//! This file owns the grammar (clap), the runtime and the error contract: every failure is one
//! `error: <message>` line on stderr and exit status 1; only clap's own usage errors keep their
//! usual status 2. What each command does lives in [`commands`], how results look (tables or
//! JSON) in [`render`].

mod archive;
mod commands;
mod render;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use flowstate::core::limits::MAX_PAGE_SIZE;

/// Inspect durable flows: list them, show their state at any point, read their logs; send
/// signals to durable functions, and cancels them; list, show and replay archived flows.
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

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Inspect flows.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Archived flows: list them, show and replay them, move deactivated flows there.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Run the engine with its HTTP API and web UI (on the store given by --store).
    Serve(ServeArgs),
}

/// `serve [--addr ADDR] [--token T]... [--no-examples] [--archive-deactivated]`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where to listen; without a token only a loopback address is accepted.
    #[arg(long, value_name = "ADDR", env = "FLOWSTATE_ADDR", default_value = flowstate_server::DEFAULT_ADDR)]
    pub(crate) addr: std::net::SocketAddr,
    /// Bearer tokens every API call must carry (comma separated in the environment).
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "FLOWSTATE_TOKEN",
        value_delimiter = ','
    )]
    pub(crate) tokens: Vec<String>,
    /// Do not register the example steps, task graph and function.
    #[arg(long)]
    pub(crate) no_examples: bool,
    /// Move deactivated plans to --archive (after a week, checked every minute).
    #[arg(long)]
    pub(crate) archive_deactivated: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArchiveCommand {
    /// List archived flows, by id (creation order), one page at a time.
    Ls(ArchiveLsArgs),
    /// Show an archived flow's state, at its end or at an earlier point of its log.
    Show(FlowArgs),
    /// Print an archived flow's events, all of them or up to a point.
    Events(FlowArgs),
    /// Run one archive pass: move deactivated plan flows from the store to the archive.
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
    /// Archive deactivated flows whose last event is at least this old: 90s, 30m, 12h, 7d
    /// (default 7d).
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_age: Option<String>,

    /// Flows archived together (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=flowstate_archive::MAX_BATCH_SIZE as u64))]
    pub(crate) batch: Option<u64>,

    /// While the store holds more flows than this, archive deactivated ones whatever their age
    /// (oldest, then largest, first).
    #[arg(long, value_name = "N")]
    pub(crate) max_live_flows: Option<u64>,

    /// While the store's events add up to more bytes than this, archive deactivated flows
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
    /// Send a signal to a durable function (it waits in the function's inbox and wakes it).
    Signal(SignalArgs),
    /// Cancel a durable function: it stops at its next effect and is done with a
    /// `Cancelled` failure.
    Cancel(CancelArgs),
}

/// `flows cancel ID [--reason TEXT]`.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The durable function's flow id.
    pub(crate) id: String,
    /// Why (kept in the function's outcome).
    #[arg(long, default_value = "cancelled by the operator")]
    pub(crate) reason: String,
}

/// `flows signal ID NAME [--value JSON]`.
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
fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let config = flowstate_server::ServerConfig {
            addr: args.addr,
            store: cli.store.clone(),
            archive: args.archive_deactivated.then(|| cli.archive.clone()),
            tokens: args.tokens.clone(),
            examples: !args.no_examples,
        };
        let server = flowstate_server::serve(config)
            .await
            .map_err(|e| CliError::new(e.to_string()))?;
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
    let cli = Cli::parse();
    match run(cli) {
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
    let output = runtime.block_on(commands::run(cli))?;
    // Output is written only after the store is closed, so a reader that stops early
    // (`flowstate flows ls | head`) never cuts a store operation short.
    match std::io::stdout().lock().write_all(output.stdout.as_bytes()) {
        Ok(()) => {}
        // The reader went away: that is its choice, not a failure of ours.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(error) => return Err(CliError::new(format!("cannot write the output: {error}"))),
    }
    if let Some(hint) = output.hint {
        let _unreported = writeln!(std::io::stderr(), "{hint}");
    }
    Ok(())
}
