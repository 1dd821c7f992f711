//! Support for tests that need real processes. The binaries in `src/bin` are child programs
//! that tests start and SIGKILL; nothing here is part of flowstate's API.

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
