//! The archiver on PostgreSQL: the same scenarios as on the memory store and SQLite.
//!
//! The server comes from `FLOWSTATE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets a schema of its own, dropped at
//! the end. Without a reachable server the tests print that they were skipped; with
//! `CI=true` they fail instead.

mod common;

use std::sync::Arc;

use common::Env;
use flowstate_core::ManualClock;
use flowstate_store_postgres::testing::{test_database, TestSchema};
use flowstate_store_postgres::PostgresStore;

async fn postgres() -> Option<Env> {
    let url = test_database().await?;
    let schema = TestSchema::new(&url, "flowstate_archive_test");
    let clock = Arc::new(ManualClock::new(common::START));
    let store = PostgresStore::connect(&url, Some(&schema.name), clock.clone())
        .await
        .expect("connect");
    Some(Env::new(Arc::new(store), clock, Some(Box::new(schema))))
}

macro_rules! on_postgres {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let Some(env) = postgres().await else { return };
                common::$scenario(env).await;
            }
        )*
    };
}

on_postgres!(
    age_selects_only_old_deactivated_flows,
    count_limit_archives_oldest_then_largest,
    byte_limit_archives_until_the_store_is_within_it,
    flows_are_archived_in_batches,
    a_failed_verification_keeps_the_live_flow,
    a_pass_stopped_between_any_two_steps_is_finished_by_the_next,
    a_flow_left_archived_in_the_live_store_is_recovered,
    archived_flows_are_listed_read_and_replayed,
    finished_flows_of_every_kind_are_archived,
);
