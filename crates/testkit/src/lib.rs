//! Support for tests that need real processes. The binaries in `src/bin` are child programs
//! that tests start and SIGKILL; nothing here is part of flowstate's API.

pub mod functions;
pub mod mix;

/// Runs a child program's body on a two-thread tokio runtime: exit status 0 when it
/// succeeds, 1 (after one `error:` line) when it fails or the runtime cannot start.
pub fn run_child<F>(body: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Appends `line` to the log at `path` and fsyncs it, in one write: a SIGKILL between two
/// writes would leave half a line for the next process to append to.
pub fn append_line(path: impl AsRef<std::path::Path>, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

/// The `KIND KEY` lines child programs append to their call logs (`start KEY`, `done KEY`).
#[must_use]
pub fn log_lines(log: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

/// Waits until the call log holds `count` `done` lines (progress measured in finished
/// steps, not in time, so a slow machine changes nothing).
///
/// # Panics
///
/// After two minutes without reaching it: the child made no progress.
pub async fn wait_for_done(log: &std::path::Path, count: usize) {
    let waited = std::time::Instant::now();
    while log_lines(log)
        .iter()
        .filter(|(kind, _)| kind == "done")
        .count()
        < count
    {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(120),
            "the child made no progress: fewer than {count} steps done"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
