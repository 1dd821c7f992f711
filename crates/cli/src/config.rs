//! The configuration file and the precedence of settings: a flag beats the environment, which
//! beats the configuration file, which beats the built-in default.
//!
//! The file is read only when named, by `--config PATH` or `FLOWSTATE_CONFIG`; there is no
//! implicit one (a `flowstate.toml` picked up from whatever directory the command runs in
//! could point the CLI, and the token from the environment, at another server). It is TOML:
//!
//! ```toml
//! store = "flows.db"                 # --store / FLOWSTATE_STORE
//! archive = "flowstate-archive"      # --archive / FLOWSTATE_ARCHIVE
//! server = "http://127.0.0.1:7280"   # --server / FLOWSTATE_SERVER
//! tokens = ["0123456789abcdef0123"]  # --token / FLOWSTATE_TOKEN (the client sends the first)
//! log_format = "json"                # --log-format / FLOWSTATE_LOG_FORMAT (human or json)
//! addr = "127.0.0.1:7280"            # serve --addr / FLOWSTATE_ADDR
//! examples = true                    # serve: false is --no-examples
//! archive_deactivated = false        # serve --archive-deactivated
//! steps_file = "flows.db.http-steps.json"  # serve --steps-file / FLOWSTATE_STEPS_FILE
//! archive_max_age = "7d"             # serve --archive-max-age / FLOWSTATE_ARCHIVE_MAX_AGE
//! archive_max_live_flows = 100000    # serve --archive-max-live-flows / FLOWSTATE_ARCHIVE_MAX_LIVE_FLOWS
//! archive_max_live_bytes = 1000000000  # serve --archive-max-live-bytes / FLOWSTATE_ARCHIVE_MAX_LIVE_BYTES
//! archive_interval = "60s"           # serve --archive-interval / FLOWSTATE_ARCHIVE_INTERVAL
//! retention = "7d"                   # serve --retention / FLOWSTATE_RETENTION
//! idempotency_window = "24h"         # serve --idempotency-window / FLOWSTATE_IDEMPOTENCY_WINDOW
//! ```
//!
//! An unknown key, a value of the wrong type and a file that cannot be read are each a
//! one-line error naming the file and the key. Paths in it mean what they would on the command
//! line (relative to the working directory).

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::{Cli, CliError, Command};

/// The environment variable naming the configuration file.
pub(crate) const CONFIG_ENV: &str = "FLOWSTATE_CONFIG";

/// Largest configuration file read.
pub(crate) const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Every key the file may hold.
pub(crate) const KEYS: [&str; 15] = [
    "store",
    "archive",
    "server",
    "tokens",
    "log_format",
    "addr",
    "examples",
    "archive_deactivated",
    "steps_file",
    "archive_max_age",
    "archive_max_live_flows",
    "archive_max_live_bytes",
    "archive_interval",
    "retention",
    "idempotency_window",
];

/// The keys whose value is a count (a non-negative integer).
const COUNT_KEYS: [&str; 2] = ["archive_max_live_flows", "archive_max_live_bytes"];

/// The file's contents; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    store: Option<String>,
    archive: Option<String>,
    server: Option<String>,
    tokens: Option<Tokens>,
    log_format: Option<String>,
    addr: Option<String>,
    examples: Option<bool>,
    archive_deactivated: Option<bool>,
    steps_file: Option<String>,
    archive_max_age: Option<String>,
    archive_max_live_flows: Option<u64>,
    archive_max_live_bytes: Option<u64>,
    archive_interval: Option<String>,
    retention: Option<String>,
    idempotency_window: Option<String>,
}

/// `tokens`: a list, or one string (comma separated, as in `FLOWSTATE_TOKEN`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Tokens {
    One(String),
    Many(Vec<String>),
}

impl Tokens {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(text) => text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            Self::Many(list) => list,
        }
    }
}

/// Reads and checks the file at `path`.
pub(crate) fn load(path: &Path) -> Result<ConfigFile, CliError> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| CliError::new(format!("cannot read the config file {shown}: {e}")))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(CliError::new(format!(
            "the config file {shown} is {size} bytes; at most {MAX_CONFIG_BYTES} (MAX_CONFIG_BYTES) are read"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("cannot read the config file {shown}: {e}")))?;
    parse(&text).map_err(|reason| CliError::new(format!("config file {shown}: {reason}")))
}

/// Parses a file's text: unknown keys first (named, with the known ones), then types.
fn parse(text: &str) -> Result<ConfigFile, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_message(&e))?;
    if let Some(key) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!(
            "unknown key {key:?} (known keys: {})",
            KEYS.join(", ")
        ));
    }
    for (key, value) in &table {
        let fits = match key.as_str() {
            "examples" | "archive_deactivated" => value.is_bool(),
            key if COUNT_KEYS.contains(&key) => value.as_integer().is_some_and(|n| n >= 0),
            "tokens" => {
                value.is_str()
                    || value
                        .as_array()
                        .is_some_and(|list| list.iter().all(toml::Value::is_str))
            }
            _ => value.is_str(),
        };
        if !fits {
            let expected = match key.as_str() {
                "examples" | "archive_deactivated" => "true or false",
                key if COUNT_KEYS.contains(&key) => "a whole number, 0 or more",
                "tokens" => "a list of strings (or one string)",
                _ => "a string",
            };
            return Err(format!(
                "key {key:?} is a {}; expected {expected}",
                value.type_str()
            ));
        }
    }
    table.try_into().map_err(|e| toml_message(&e))
}

/// The file's archive and retention keys, for `serve`.
struct ArchivingKeys {
    max_age: Option<String>,
    max_live_flows: Option<u64>,
    max_live_bytes: Option<u64>,
    interval: Option<String>,
    retention: Option<String>,
}

impl ConfigFile {
    fn archiving(&self) -> ArchivingKeys {
        ArchivingKeys {
            max_age: self.archive_max_age.clone(),
            max_live_flows: self.archive_max_live_flows,
            max_live_bytes: self.archive_max_live_bytes,
            interval: self.archive_interval.clone(),
            retention: self.retention.clone(),
        }
    }
}

/// Fills in `serve`'s archive and retention settings from the file where neither a flag
/// nor the environment gave them (durations are checked when `serve` reads them).
fn apply_archiving(args: &mut crate::ServeArgs, serve: &ArgMatches, keys: ArchivingKeys) {
    if let Some(value) = keys.max_age.filter(|_| !given(serve, "archive_max_age")) {
        args.archive_max_age = Some(value);
    }
    if let Some(value) = keys
        .max_live_flows
        .filter(|_| !given(serve, "archive_max_live_flows"))
    {
        args.archive_max_live_flows = Some(value);
    }
    if let Some(value) = keys
        .max_live_bytes
        .filter(|_| !given(serve, "archive_max_live_bytes"))
    {
        args.archive_max_live_bytes = Some(value);
    }
    if let Some(value) = keys.interval.filter(|_| !given(serve, "archive_interval")) {
        args.archive_interval = Some(value);
    }
    if let Some(value) = keys.retention.filter(|_| !given(serve, "retention")) {
        args.retention = Some(value);
    }
}

/// A TOML error's message without the source excerpt it draws over several lines.
fn toml_message(error: &toml::de::Error) -> String {
    let message = error.message().trim().to_owned();
    match error.span() {
        Some(span) => format!("{message} (at byte {})", span.start),
        None => message,
    }
}

/// Whether the user gave `id` (on the command line or in the environment).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills in from the configuration file (if one is named) every setting the command line and
/// the environment left at its default.
pub(crate) fn apply(cli: &mut Cli, matches: &ArgMatches) -> Result<(), CliError> {
    let Some(path) = cli.config.clone() else {
        return Ok(());
    };
    let file = load(&path)?;
    let archiving = file.archiving();
    if let Some(store) = file.store.filter(|_| !given(matches, "store")) {
        cli.store = store;
    }
    if let Some(archive) = file.archive.filter(|_| !given(matches, "archive")) {
        cli.archive = archive;
    }
    if let Some(server) = file.server.filter(|_| !given(matches, "server")) {
        cli.server = server;
    }
    if let Some(tokens) = file.tokens.filter(|_| !given(matches, "tokens")) {
        cli.tokens = tokens.into_vec();
    }
    if let Some(format) = file.log_format.filter(|_| !given(matches, "log_format")) {
        cli.log_format = format.parse().map_err(|reason: String| {
            CliError::new(format!("config file {}: {reason}", path.display()))
        })?;
    }
    if let (Command::Serve(args), Some(serve)) =
        (&mut cli.command, matches.subcommand_matches("serve"))
    {
        if let Some(addr) = file.addr.filter(|_| !given(serve, "addr")) {
            args.addr = addr.trim().parse().map_err(|e| {
                CliError::new(format!(
                    "config file {}: addr {addr:?} is not an address such as 127.0.0.1:7280 ({e})",
                    path.display()
                ))
            })?;
        }
        if let Some(examples) = file.examples.filter(|_| !given(serve, "no_examples")) {
            args.no_examples = !examples;
        }
        if let Some(archive) = file
            .archive_deactivated
            .filter(|_| !given(serve, "archive_deactivated"))
        {
            args.archive_deactivated = archive;
        }
        if let Some(steps_file) = file.steps_file.filter(|_| !given(serve, "steps_file")) {
            args.steps_file = Some(steps_file.into());
        }
        apply_archiving(args, serve, archiving);
        if let Some(window) = file
            .idempotency_window
            .filter(|_| !given(serve, "idempotency_window"))
        {
            crate::commands::parse_duration("idempotency-window", &window).map_err(|e| {
                CliError::new(format!(
                    "config file {}: idempotency_window: {}",
                    path.display(),
                    e.0
                ))
            })?;
            args.idempotency_window = Some(window);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses() {
        let file = parse(
            r#"
            store = "a.db"
            archive = "arch"
            server = "http://127.0.0.1:1"
            tokens = ["x", "y"]
            log_format = "json"
            addr = "127.0.0.1:0"
            examples = false
            archive_deactivated = true
            steps_file = "a.db.steps.json"
            archive_max_age = "3d"
            archive_max_live_flows = 1000
            archive_max_live_bytes = 1000000
            archive_interval = "30s"
            retention = "1d"
            idempotency_window = "12h"
            "#,
        )
        .expect("valid");
        assert_eq!(file.store.as_deref(), Some("a.db"));
        assert_eq!(file.steps_file.as_deref(), Some("a.db.steps.json"));
        assert_eq!(file.idempotency_window.as_deref(), Some("12h"));
        assert_eq!(
            file.tokens.map(Tokens::into_vec),
            Some(vec!["x".to_owned(), "y".to_owned()])
        );
        assert_eq!(file.examples, Some(false));
        assert_eq!(file.archive_max_age.as_deref(), Some("3d"));
        assert_eq!(file.archive_max_live_flows, Some(1000));
        assert_eq!(file.archive_max_live_bytes, Some(1_000_000));
        assert_eq!(file.archive_interval.as_deref(), Some("30s"));
        assert_eq!(file.retention.as_deref(), Some("1d"));
        assert_eq!(file.log_format.as_deref(), Some("json"));
        let one = parse(r#"tokens = "a, b""#).expect("valid");
        assert_eq!(
            one.tokens.map(Tokens::into_vec),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(parse("").is_ok());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let error = parse("store = \"a\"\nstroe = \"b\"\n")
            .err()
            .unwrap_or_default();
        assert!(error.contains("unknown key \"stroe\""), "{error}");
        assert!(error.contains("known keys: store"), "{error}");
        let error = parse("examples = \"no\"").err().unwrap_or_default();
        assert!(error.contains("key \"examples\" is a string"), "{error}");
        let error = parse("archive_max_live_flows = -1")
            .err()
            .unwrap_or_default();
        assert!(error.contains("a whole number"), "{error}");
        let error = parse("tokens = [1]").err().unwrap_or_default();
        assert!(error.contains("key \"tokens\""), "{error}");
        let error = parse("[store]\nx = 1").err().unwrap_or_default();
        assert!(error.contains("key \"store\" is a table"), "{error}");
        let error = parse("store = ").err().unwrap_or_default();
        assert!(!error.is_empty() && !error.contains('\n'), "{error}");
    }
}
