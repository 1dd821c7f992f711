//! The archiver on the memory store and on SQLite: selection by age, by count and by bytes
//! (oldest, then largest, first), batches, flows that are never archived, a verification that
//! fails, passes stopped between any two steps and finished by the next, and archived flows
//! listed, read and replayed. Every scenario runs on every store (see `common`).

mod common;

use common::Env;

macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::common::$scenario(super::Env::memory()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::common::$scenario(super::Env::sqlite()).await;
                }
            )*
        }
    };
}

on_every_store!(
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
