//! The archiver against S3-compatible storage, when `FLOWSTATE_TEST_S3` names a bucket
//! (`s3://BUCKET`, with the `AWS_*` variables for the endpoint and credentials; for example a
//! local `moto_server` with `AWS_ENDPOINT=http://127.0.0.1:5055 AWS_ALLOW_HTTP=true`; the
//! bucket must exist, since the archive never creates one). `.ci/run` starts such a server
//! and creates the bucket. Without the variable the tests print that they were skipped, and
//! with `CI=true` they fail instead, so that CI never passes by skipping.

mod common;

use common::Env;
use flowstate_archive::{ArchiveAccess, ArchiveStore};

/// A SQLite store and an archive under a prefix of its own in the test bucket.
fn s3() -> Option<Env> {
    let Ok(bucket) = std::env::var("FLOWSTATE_TEST_S3") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FLOWSTATE_TEST_S3 names no S3 bucket (.ci/run starts a local one)"
        );
        eprintln!("skipped: FLOWSTATE_TEST_S3 names no S3 bucket");
        return None;
    };
    let prefix = format!(
        "flowstate-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let url = format!("{}/{prefix}", bucket.trim_end_matches('/'));
    let mut env = Env::sqlite();
    env.archive = ArchiveStore::open(&url, ArchiveAccess::CreateIfMissing).expect("S3 location");
    Some(env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_flows_are_listed_read_and_replayed_on_s3() {
    let Some(env) = s3() else { return };
    common::archived_flows_are_listed_read_and_replayed(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_between_any_two_steps_is_finished_by_the_next_on_s3() {
    let Some(env) = s3() else { return };
    common::a_pass_stopped_between_any_two_steps_is_finished_by_the_next(env).await;
}
