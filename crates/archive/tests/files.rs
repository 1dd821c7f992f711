//! Archive files and locations: the file format (a newer format refused, damaged files and
//! files of another flow refused), a local directory (files fsynced where the key says,
//! inspection never creates a directory, stray files skipped by listings), location URLs,
//! and live listings that hide archived flows.

mod common;

use std::time::Duration;

use common::{put_raw, Env, HOUR, START};
use flowstate_archive::{
    list_live, ArchiveAccess, ArchiveError, ArchivePolicy, ArchiveQuery, ArchiveStore,
    ArchivedFlow, Archiver, ARCHIVE_FORMAT_VERSION,
};
use flowstate_core::machine::PlanState;
use flowstate_core::{FlowId, FlowStatus, StopAt};
use flowstate_store::FlowQuery;

async fn one_archived(env: &Env) -> (FlowId, Vec<u8>) {
    let id = env.deactivated(20).await;
    env.mark_only(id).await;
    let archived = ArchivedFlow::from_log(id, env.log(id).await).expect("archivable");
    let bytes = archived.encode().expect("encode");
    (id, bytes)
}

#[tokio::test]
async fn the_file_is_self_contained_json_and_encodes_deterministically() {
    let env = Env::memory();
    let (id, bytes) = one_archived(&env).await;
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(json["format"], u64::from(ARCHIVE_FORMAT_VERSION));
    assert_eq!(json["flow"], id.to_string());
    assert_eq!(json["kind"], "plan");
    assert_eq!(json["definition"], "onboarding");
    let events = json["events"].as_array().expect("events");
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["format"], 1);
    assert_eq!(events[0]["body"]["type"], "flow_created");
    assert_eq!(events[3]["body"]["to"], "archived");
    assert_eq!(json["archived_at"], events[3]["time"]);
    // The same log always gives the same bytes (a recovery rewrites the same file).
    let again = ArchivedFlow::from_log(id, env.log(id).await)
        .expect("archivable")
        .encode()
        .expect("encode");
    assert_eq!(again, bytes);
    let decoded = ArchivedFlow::decode(id, &bytes).expect("decode");
    assert_eq!(decoded.events, env.log(id).await);
}

#[tokio::test]
async fn only_logs_that_end_archived_make_archive_files() {
    let env = Env::memory();
    let id = env.deactivated(0).await;
    assert!(matches!(
        ArchivedFlow::from_log(id, env.log(id).await),
        Err(ArchiveError::NotArchivable { .. })
    ));
}

#[tokio::test]
async fn a_newer_format_a_damaged_file_and_another_flows_file_are_refused() {
    let env = Env::memory();
    let (id, bytes) = one_archived(&env).await;
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");

    json["format"] = serde_json::json!(ARCHIVE_FORMAT_VERSION + 1);
    put_raw(&env.archive, id, json.to_string().as_bytes()).await;
    let refused = env.archive.read(id).await;
    assert!(
        matches!(
            refused,
            Err(ArchiveError::NewerFormat { flow, found, supported })
                if flow == id && found == ARCHIVE_FORMAT_VERSION + 1 && supported == ARCHIVE_FORMAT_VERSION
        ),
        "{refused:?}"
    );
    let message = refused.map(|_| ()).expect_err("refused").to_string();
    assert!(message.contains("upgrade flowstate"), "{message}");

    json["format"] = serde_json::json!(ARCHIVE_FORMAT_VERSION);
    let other = FlowId::from_parts(START, [0xab; 10]);
    json["flow"] = serde_json::json!(other.to_string());
    put_raw(&env.archive, id, json.to_string().as_bytes()).await;
    assert!(matches!(
        env.archive.read(id).await,
        Err(ArchiveError::Corrupt { .. })
    ));

    for damaged in [
        &b"not json"[..],
        b"{\"format\":1}",
        &bytes[..bytes.len() / 2],
    ] {
        put_raw(&env.archive, id, damaged).await;
        assert!(matches!(
            env.archive.read(id).await,
            Err(ArchiveError::Corrupt { .. })
        ));
    }

    // A file whose log does not fold is read, but refuses to replay.
    json["flow"] = serde_json::json!(id.to_string());
    json["events"].as_array_mut().expect("events").remove(1);
    put_raw(&env.archive, id, json.to_string().as_bytes()).await;
    assert!(env.archive.read(id).await.is_ok());
    assert!(matches!(
        env.archive.replay(id, StopAt::End).await,
        Err(ArchiveError::Fold { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_archive_holds_one_file_per_flow() {
    let env = Env::sqlite();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("archive");
    // Inspection never creates an archive.
    let missing = ArchiveStore::open(&root.display().to_string(), ArchiveAccess::MustExist);
    assert!(matches!(missing, Err(ArchiveError::Location { .. })));
    assert!(!root.exists());

    let archive = ArchiveStore::open(
        &format!("file://{}", root.display()),
        ArchiveAccess::CreateIfMissing,
    )
    .expect("open");
    let a = env.deactivated(10).await;
    let b = env.deactivated(10).await;
    env.clock.advance(2 * HOUR);
    let archiver = Archiver::new(
        env.store.clone(),
        archive,
        ArchivePolicy {
            max_age: HOUR,
            ..ArchivePolicy::default()
        },
        env.clock.clone(),
    )
    .expect("archiver");
    let report = archiver.run_once().await.expect("pass");
    assert_eq!(report.archived, 2, "{report:?}");
    let file = root.join("flows").join(format!("{a}.json"));
    let bytes = std::fs::read(&file).expect("the file is where its key says");
    assert_eq!(bytes.len() as u64, {
        let listed = archiver
            .archive()
            .list(&ArchiveQuery::default())
            .await
            .expect("list");
        listed.flows[0].bytes
    });

    // Stray files (a write in progress, anything else) are not archived flows.
    std::fs::write(root.join("flows").join(format!("{b}.json#1")), b"partial").expect("stray");
    std::fs::write(root.join("flows").join("notes.txt"), b"x").expect("stray");
    let reopened =
        ArchiveStore::open(&root.display().to_string(), ArchiveAccess::MustExist).expect("reopen");
    let listed = reopened.list(&ArchiveQuery::default()).await.expect("list");
    assert_eq!(
        listed.flows.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    let record = reopened.replay(b, StopAt::End).await.expect("replay");
    assert_eq!(record.status, FlowStatus::Plan(PlanState::Archived));
}

#[tokio::test]
async fn locations_are_parsed_and_bad_ones_refused() {
    assert!(ArchiveStore::open("memory://", ArchiveAccess::MustExist).is_ok());
    for bad in ["redis://x", "", "s3://"] {
        assert!(
            matches!(
                ArchiveStore::open(bad, ArchiveAccess::CreateIfMissing),
                Err(ArchiveError::Location { .. })
            ),
            "{bad:?}"
        );
    }
    // An S3 location is built from the URL and the environment, without a request.
    let s3 = ArchiveStore::open("s3://flowstate-archive/prod/eu", ArchiveAccess::MustExist)
        .expect("s3 location");
    let id = FlowId::from_parts(START, [1; 10]);
    assert_eq!(s3.key(id).as_ref(), format!("prod/eu/flows/{id}.json"));
    // A prefix applies to memory archives too.
    let prefixed = ArchiveStore::open("memory://team-a", ArchiveAccess::MustExist).expect("memory");
    assert_eq!(prefixed.key(id).as_ref(), format!("team-a/flows/{id}.json"));
    let page = prefixed
        .list(&ArchiveQuery {
            after: None,
            limit: 5_000,
        })
        .await;
    assert!(matches!(page, Err(ArchiveError::Policy { .. })));
}

#[tokio::test]
async fn policies_over_the_limits_are_refused() {
    let env = Env::memory();
    let refused = Archiver::new(
        env.store.clone(),
        env.archive.clone(),
        ArchivePolicy {
            batch_size: 0,
            ..ArchivePolicy::default()
        },
        env.clock.clone(),
    );
    assert!(matches!(refused, Err(ArchiveError::Policy { .. })));
}

#[tokio::test]
async fn live_listings_hide_archived_flows_and_still_fill_their_pages() {
    let env = Env::memory();
    let mut live = Vec::new();
    for n in 0..9 {
        let id = env.deactivated(0).await;
        if n % 3 == 0 {
            live.push(id);
        } else {
            env.mark_only(id).await;
        }
        env.clock.advance(Duration::from_millis(1));
    }
    let first = list_live(
        env.store.as_ref(),
        &FlowQuery {
            limit: 2,
            ..FlowQuery::default()
        },
    )
    .await
    .expect("page");
    assert_eq!(
        first.flows.iter().map(|f| f.id).collect::<Vec<_>>(),
        live[..2].to_vec()
    );
    assert_eq!(first.next_after, Some(live[1]));
    let all = env.live_ids().await;
    assert_eq!(all, live.iter().copied().collect());
    // Asking for archived flows by status shows those still in the live store.
    let archived = list_live(
        env.store.as_ref(),
        &FlowQuery {
            status: Some("archived".to_owned()),
            limit: 100,
            ..FlowQuery::default()
        },
    )
    .await
    .expect("page");
    assert_eq!(archived.flows.len(), 6);
}

#[tokio::test]
async fn the_loop_archives_on_every_pass_until_shutdown() {
    let env = Env::memory();
    let first = env.deactivated(0).await;
    env.clock.advance(2 * HOUR);
    let archiver = env.archiver(ArchivePolicy {
        max_age: HOUR,
        ..ArchivePolicy::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let archiver = archiver.clone();
        async move {
            archiver
                .run(Duration::from_millis(5), async move {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let waited = std::time::Instant::now();
    while env.live(first).await {
        assert!(waited.elapsed() < Duration::from_secs(30), "first pass");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A flow deactivated later is taken by a later pass.
    let second = env.deactivated(0).await;
    env.clock.advance(2 * HOUR);
    while env.live(second).await {
        assert!(waited.elapsed() < Duration::from_secs(30), "later pass");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.send(()).expect("the loop runs");
    let total = running.await.expect("the loop ends");
    assert_eq!(total.archived, 2, "{total:?}");
    assert_eq!(env.archived_ids().await.len(), 2);
}
