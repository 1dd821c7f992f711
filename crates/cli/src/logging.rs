//! The process's logs: `tracing` events from every flowstate crate, written to stderr as
//! human lines (coloured on a terminal) or, with `--log-format json`, as one JSON object per
//! line. `RUST_LOG` filters them (the `tracing-subscriber` directive syntax); without it the
//! server logs flowstate's `info` events and everyone's warnings, and the other commands
//! only warnings and errors (their stderr is for the person at the terminal).
//!
//! It must never log anywhere but stderr: stdout is a command's output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter of `flowstate serve` when `RUST_LOG` is not set.
pub(crate) const SERVE_FILTER: &str = "warn,flowstate=info";

/// The filter of the other commands when `RUST_LOG` is not set.
pub(crate) const COMMAND_FILTER: &str = "warn";

/// How log lines are written (`--log-format`, `FLOWSTATE_LOG_FORMAT`, config key
/// `log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people (coloured when stderr is a terminal).
    #[default]
    Human,
    /// One JSON object per line, with the event's fields (`flow`, `kind`, `outcome`, ...).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?} is not human or json")),
        }
    }
}

/// Installs the process's subscriber, once, before any command runs. `serving`: the
/// command is `serve` (see [`SERVE_FILTER`]). A `RUST_LOG` that does not parse is reported
/// on stderr and the default is used.
pub(crate) fn init(format: LogFormat, serving: bool) {
    let default = if serving {
        SERVE_FILTER
    } else {
        COMMAND_FILTER
    };
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|error| {
                eprintln!(
                    "warning: RUST_LOG={directives:?} is not a filter ({error}); using {default:?}"
                );
                EnvFilter::new(default)
            }),
        _ => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A subscriber set already (never, in the binary) is left as it is.
    let _already = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
