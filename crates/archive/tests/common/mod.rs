//! Shared by the archive tests: a live store on a manual clock, an archive, and plan flows in
//! every state. Each scenario is an `async fn(Env)`, run on every store.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowstate_archive::{
    list_live, ArchiveError, ArchiveObserver, ArchivePolicy, ArchiveQuery, ArchiveStep,
    ArchiveStore, Archiver,
};
use flowstate_core::machine::{FlowState, PlanState};
use flowstate_core::{
    Clock, EventBody, FlowId, FlowKind, FlowStatus, ManualClock, RawEvent, StopAt, Timestamp,
};
use flowstate_engine::FlowWriter;
use flowstate_store::{read_all, FlowQuery, Store};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

/// 2026-01-01T00:00:00Z.
pub const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

pub const HOUR: Duration = Duration::from_secs(3600);

/// A live store and an archive, both fresh.
pub struct Env {
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualClock>,
    pub archive: ArchiveStore,
    /// Keeps a store's directory (or a PostgreSQL schema) alive for the test.
    pub _keep: Option<Box<dyn std::any::Any + Send>>,
    counter: std::sync::atomic::AtomicU8,
}

impl Env {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<ManualClock>,
        keep: Option<Box<dyn std::any::Any + Send>>,
    ) -> Self {
        Self {
            store,
            clock,
            archive: ArchiveStore::memory(),
            _keep: keep,
            counter: std::sync::atomic::AtomicU8::new(0),
        }
    }

    pub fn memory() -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let store = Arc::new(flowstate_store::MemoryStore::new(clock.clone()));
        Self::new(store, clock, None)
    }

    pub fn sqlite() -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let dir = tempfile::tempdir().expect("temp dir");
        let store = flowstate_store_sqlite::SqliteStore::open(
            dir.path().join("live.db"),
            clock.clone(),
            flowstate_store_sqlite::SqliteOptions::default(),
        )
        .expect("open sqlite");
        Self::new(Arc::new(store), clock, Some(Box::new(dir)))
    }

    pub fn archiver(&self, policy: ArchivePolicy) -> Archiver {
        Archiver::new(
            self.store.clone(),
            self.archive.clone(),
            policy,
            self.clock.clone(),
        )
        .expect("valid policy")
    }

    fn next_id(&self) -> FlowId {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        FlowId::from_parts(self.clock.now(), [n; 10])
    }

    /// A plan flow taken through `states` (after its creation), one append each, with
    /// `padding` bytes of input so that sizes differ.
    pub async fn plan(&self, states: &[PlanState], padding: usize) -> FlowId {
        let id = self.next_id();
        let mut writer = FlowWriter::new(id);
        let created = EventBody::FlowCreated {
            kind: FlowKind::Plan,
            definition: "onboarding".to_owned(),
            input: serde_json::json!({ "padding": "x".repeat(padding) }),
        };
        writer
            .append(self.store.as_ref(), self.clock.as_ref(), vec![created])
            .await
            .expect("create plan");
        for to in states {
            let body = EventBody::PlanStateChanged {
                to: *to,
                reason: None,
            };
            writer
                .append(self.store.as_ref(), self.clock.as_ref(), vec![body])
                .await
                .expect("plan transition");
        }
        id
    }

    /// A deactivated plan flow (created, completed, deactivated: 3 events).
    pub async fn deactivated(&self, padding: usize) -> FlowId {
        self.plan(&[PlanState::Completed, PlanState::Deactivated], padding)
            .await
    }

    /// A task graph still running (never archived).
    pub async fn task_graph(&self) -> FlowId {
        self.task_graph_in(&[FlowState::Running]).await
    }

    /// A task graph taken through `states` (after its creation), in one append.
    pub async fn task_graph_in(&self, states: &[FlowState]) -> FlowId {
        let id = self.next_id();
        let mut writer = FlowWriter::new(id);
        let mut bodies = vec![EventBody::FlowCreated {
            kind: FlowKind::TaskGraph,
            definition: "order".to_owned(),
            input: serde_json::Value::Null,
        }];
        bodies.extend(
            states
                .iter()
                .map(|to| EventBody::FlowStateChanged { to: *to }),
        );
        writer
            .append(self.store.as_ref(), self.clock.as_ref(), bodies)
            .await
            .expect("task graph");
        id
    }

    /// A durable function: done with `outcome` when `done`, else still active.
    pub async fn function(&self, done: bool) -> FlowId {
        let id = self.next_id();
        let mut writer = FlowWriter::new(id);
        let mut bodies = vec![EventBody::FlowCreated {
            kind: FlowKind::Function,
            definition: "checkout".to_owned(),
            input: serde_json::json!(7),
        }];
        if done {
            bodies.push(EventBody::FunctionReturned {
                outcome: Ok(serde_json::json!(8)),
            });
            bodies.push(EventBody::ActivationStateChanged {
                to: flowstate_core::machine::ActivationState::Done,
                diagnostic: None,
            });
        }
        writer
            .append(self.store.as_ref(), self.clock.as_ref(), bodies)
            .await
            .expect("function");
        id
    }

    /// Marks a deactivated flow archived in the live log only, as a pass that crashed after
    /// its first step leaves it.
    pub async fn mark_only(&self, id: FlowId) {
        let mut writer = FlowWriter::load(self.store.as_ref(), id)
            .await
            .expect("load");
        let body = EventBody::PlanStateChanged {
            to: PlanState::Archived,
            reason: None,
        };
        writer
            .append(self.store.as_ref(), self.clock.as_ref(), vec![body])
            .await
            .expect("mark archived");
    }

    pub async fn live(&self, id: FlowId) -> bool {
        self.store.flow(id).await.expect("lookup").is_some()
    }

    pub async fn log(&self, id: FlowId) -> Vec<RawEvent> {
        read_all(self.store.as_ref(), id).await.expect("read log")
    }

    pub async fn status(&self, id: FlowId) -> FlowStatus {
        self.store
            .flow(id)
            .await
            .expect("lookup")
            .expect("live")
            .status
    }

    pub async fn archived_ids(&self) -> Vec<FlowId> {
        let mut ids = Vec::new();
        let mut query = ArchiveQuery {
            after: None,
            limit: 2,
        };
        loop {
            let page = self.archive.list(&query).await.expect("list archive");
            ids.extend(page.flows.iter().map(|entry| entry.id));
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => return ids,
            }
        }
    }

    pub async fn live_ids(&self) -> BTreeSet<FlowId> {
        let mut ids = BTreeSet::new();
        let mut query = FlowQuery {
            limit: 2,
            ..FlowQuery::default()
        };
        loop {
            let page = list_live(self.store.as_ref(), &query)
                .await
                .expect("list live");
            ids.extend(page.flows.iter().map(|f| f.id));
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => return ids,
            }
        }
    }
}

/// Overwrites `flow`'s archive file with `bytes`.
pub async fn put_raw(archive: &ArchiveStore, flow: FlowId, bytes: &[u8]) {
    let key: Path = archive.key(flow);
    archive
        .objects()
        .put(&key, PutPayload::from(bytes.to_vec()))
        .await
        .expect("put raw");
}

/// Damages every file right after it is written (before it is read back).
#[derive(Debug)]
pub struct Corrupting {
    pub archive: ArchiveStore,
}

#[async_trait]
impl ArchiveObserver for Corrupting {
    async fn step(&self, flow: FlowId, step: ArchiveStep) {
        if step == ArchiveStep::Written {
            put_raw(&self.archive, flow, b"{\"format\":1,\"flow\":").await;
        }
    }
}

/// Records every step, and never returns from `stop_at` (the pass hangs there until it is
/// dropped, like a process killed between two steps).
#[derive(Debug, Default)]
pub struct Stopping {
    pub stop_at: Option<ArchiveStep>,
    pub steps: Mutex<Vec<(FlowId, ArchiveStep)>>,
    /// Notified when the pass reaches `stop_at`.
    pub reached: tokio::sync::Notify,
}

#[async_trait]
impl ArchiveObserver for Stopping {
    async fn step(&self, flow: FlowId, step: ArchiveStep) {
        if let Ok(mut steps) = self.steps.lock() {
            steps.push((flow, step));
        }
        if self.stop_at == Some(step) {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

// ---- scenarios, run on every store ----

pub async fn age_selects_only_old_deactivated_flows(env: Env) {
    let old = env.deactivated(10).await;
    let active = env.plan(&[], 0).await;
    let completed = env.plan(&[PlanState::Completed], 0).await;
    let failed = env.plan(&[PlanState::Failed], 0).await;
    let graph = env.task_graph().await;
    env.clock.advance(2 * HOUR);
    let young = env.deactivated(10).await;
    env.clock.advance(HOUR / 2);

    let archiver = env.archiver(ArchivePolicy {
        max_age: HOUR,
        ..ArchivePolicy::default()
    });
    let report = archiver.run_once().await.expect("pass");
    assert_eq!(report.archived, 1, "{report:?}");
    assert_eq!(report.recovered, 0);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.bytes > 0);
    assert_eq!(
        report.events, 4,
        "created, completed, deactivated, archived"
    );
    assert!(!env.live(old).await, "the old flow left the live store");
    assert_eq!(env.archived_ids().await, vec![old]);
    for id in [active, completed, failed, graph, young] {
        assert!(env.live(id).await);
    }

    env.clock.advance(HOUR);
    let report = archiver.run_once().await.expect("pass");
    assert_eq!(report.archived, 1, "{report:?}");
    assert!(!env.live(young).await);

    // Nothing else is ever archived, however old it gets.
    env.clock.advance(1_000 * HOUR);
    let report = archiver.run_once().await.expect("pass");
    assert_eq!(report.archived, 0, "{report:?}");
    assert_eq!(env.archived_ids().await, vec![old, young]);
    for id in [active, completed, failed, graph] {
        assert!(env.live(id).await);
    }
    assert_eq!(
        env.live_ids().await,
        [active, completed, failed, graph].into_iter().collect()
    );
}

pub async fn count_limit_archives_oldest_then_largest(env: Env) {
    // Two equally old flows (the clock does not move between them), then a newer, larger one.
    let small = env.deactivated(10).await;
    let large = env.deactivated(1_000).await;
    env.clock.advance(HOUR);
    let newest = env.deactivated(5_000).await;
    let active = env.plan(&[], 0).await;
    let graph = env.task_graph().await;

    let policy = ArchivePolicy {
        max_age: 1_000 * HOUR,
        max_live_flows: Some(4),
        ..ArchivePolicy::default()
    };
    // 5 live flows, at most 4: one goes, the oldest, and of the two oldest the larger.
    let report = env.archiver(policy).run_once().await.expect("pass");
    assert_eq!(report.archived, 1, "{report:?}");
    assert_eq!(env.archived_ids().await, vec![large]);
    assert!(env.live(small).await && env.live(newest).await);

    // At most 1: every deactivated flow goes, and still never an active one.
    let policy = ArchivePolicy {
        max_live_flows: Some(1),
        ..policy
    };
    let report = env.archiver(policy).run_once().await.expect("pass");
    assert_eq!(report.archived, 2, "{report:?}");
    assert!(env.live(active).await && env.live(graph).await);
    let mut archived = env.archived_ids().await;
    archived.sort();
    let mut expected = vec![small, large, newest];
    expected.sort();
    assert_eq!(archived, expected);
}

pub async fn byte_limit_archives_until_the_store_is_within_it(env: Env) {
    let a = env.deactivated(3_000).await;
    env.clock.advance(HOUR);
    let b = env.deactivated(2_000).await;
    env.clock.advance(HOUR);
    let c = env.deactivated(1_000).await;
    let active = env.plan(&[], 4_000).await;
    let mut total = 0;
    for id in [a, b, c, active] {
        total += env
            .store
            .flow(id)
            .await
            .expect("lookup")
            .expect("live")
            .bytes;
    }
    let size_a = env
        .store
        .flow(a)
        .await
        .expect("lookup")
        .expect("live")
        .bytes;
    // Just under what is left without a: both a and b must go (the oldest first), c stays.
    let policy = ArchivePolicy {
        max_age: 1_000 * HOUR,
        max_live_bytes: Some(total - size_a - 1),
        ..ArchivePolicy::default()
    };
    let report = env.archiver(policy).run_once().await.expect("pass");
    assert_eq!(report.archived, 2, "{report:?}");
    assert!(!env.live(a).await && !env.live(b).await);
    assert!(env.live(c).await && env.live(active).await);
    let report = env.archiver(policy).run_once().await.expect("pass");
    assert_eq!(report.archived, 0, "within the limit now: {report:?}");
}

pub async fn flows_are_archived_in_batches(env: Env) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(env.deactivated(n * 10).await);
    }
    env.clock.advance(2 * HOUR);
    let observer = Arc::new(Stopping::default());
    let archiver = env
        .archiver(ArchivePolicy {
            max_age: HOUR,
            batch_size: 3,
            ..ArchivePolicy::default()
        })
        .with_observer(observer.clone());
    let report = archiver.run_once().await.expect("pass");
    assert_eq!(report.archived, 7, "{report:?}");
    assert_eq!(report.batches, 3, "3 + 3 + 1");
    let steps = observer.steps.lock().expect("steps").clone();
    // Every flow went through the four steps in order.
    for id in &ids {
        let mine: Vec<ArchiveStep> = steps
            .iter()
            .filter(|(flow, _)| flow == id)
            .map(|(_, step)| *step)
            .collect();
        assert_eq!(mine, ArchiveStep::ALL.to_vec());
    }
    // A batch is finished before the next starts.
    let deleted_first = steps
        .iter()
        .position(|(_, step)| *step == ArchiveStep::Deleted)
        .expect("deletes");
    let marked = steps
        .iter()
        .filter(|(_, step)| *step == ArchiveStep::Marked)
        .count();
    let marked_before = steps[..deleted_first]
        .iter()
        .filter(|(_, step)| *step == ArchiveStep::Marked)
        .count();
    assert_eq!(marked, 7);
    assert!(
        marked_before <= 3,
        "{marked_before} marked before the first delete"
    );
    assert_eq!(env.archived_ids().await.len(), 7);
    assert!(env.live_ids().await.is_empty());
}

pub async fn a_failed_verification_keeps_the_live_flow(env: Env) {
    let id = env.deactivated(100).await;
    let original = env.log(id).await;
    env.clock.advance(2 * HOUR);
    let policy = ArchivePolicy {
        max_age: HOUR,
        ..ArchivePolicy::default()
    };
    let corrupting = env.archiver(policy).with_observer(Arc::new(Corrupting {
        archive: env.archive.clone(),
    }));
    let report = corrupting.run_once().await.expect("pass");
    assert_eq!(report.archived, 0, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].flow, id);
    assert!(
        report.failed[0].error.contains("does not match"),
        "{report:?}"
    );
    // The live flow is intact (marked archived, so hidden from live listings).
    let log = env.log(id).await;
    assert_eq!(log.len(), original.len() + 1);
    assert_eq!(&log[..original.len()], &original[..]);
    assert_eq!(env.status(id).await, FlowStatus::Plan(PlanState::Archived));
    assert!(!env.live_ids().await.contains(&id));
    assert!(matches!(
        env.archive.read(id).await,
        Err(ArchiveError::Corrupt { .. })
    ));

    // The next pass (storage healthy again) finishes it.
    let report = env.archiver(policy).run_once().await.expect("pass");
    assert_eq!(report.recovered, 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!env.live(id).await);
    let archived = env.archive.read(id).await.expect("read archived");
    assert_eq!(archived.events, log);
}

pub async fn a_pass_stopped_between_any_two_steps_is_finished_by_the_next(env: Env) {
    let policy = ArchivePolicy {
        max_age: HOUR,
        ..ArchivePolicy::default()
    };
    for stop_at in [
        ArchiveStep::Marked,
        ArchiveStep::Written,
        ArchiveStep::Verified,
    ] {
        let id = env.deactivated(50).await;
        let original = env.log(id).await;
        env.clock.advance(2 * HOUR);
        let observer = Arc::new(Stopping {
            stop_at: Some(stop_at),
            ..Stopping::default()
        });
        let stopping = env.archiver(policy).with_observer(observer.clone());
        tokio::select! {
            pass = stopping.run_once() => panic!("the pass did not stop at {stop_at:?}: {pass:?}"),
            () = observer.reached.notified() => {}
        }
        // Dropped mid-pass: the flow is live and archived, hidden, maybe already written.
        assert!(env.live(id).await, "{stop_at:?}");
        assert_eq!(env.status(id).await, FlowStatus::Plan(PlanState::Archived));
        assert!(!env.live_ids().await.contains(&id), "no duplicate visible");
        assert_eq!(
            env.archive.contains(id).await.expect("head"),
            stop_at != ArchiveStep::Marked
        );

        let report = env.archiver(policy).run_once().await.expect("pass");
        assert_eq!(report.recovered, 1, "{stop_at:?}: {report:?}");
        assert_eq!(report.archived, 0, "{stop_at:?}: {report:?}");
        assert!(!env.live(id).await);
        let archived = env.archive.read(id).await.expect("read");
        assert_eq!(&archived.events[..original.len()], &original[..]);
        assert_eq!(archived.events.len(), original.len() + 1);
    }
    let archived = env.archived_ids().await;
    let unique: BTreeSet<FlowId> = archived.iter().copied().collect();
    assert_eq!(archived.len(), 3);
    assert_eq!(unique.len(), 3);
}

pub async fn a_flow_left_archived_in_the_live_store_is_recovered(env: Env) {
    let id = env.deactivated(10).await;
    env.mark_only(id).await;
    assert!(!env.live_ids().await.contains(&id));
    // Recovery does not wait for the age: the flow is already hidden.
    let report = env
        .archiver(ArchivePolicy::default())
        .run_once()
        .await
        .expect("pass");
    assert_eq!(report.recovered, 1, "{report:?}");
    assert!(!env.live(id).await);
    assert_eq!(env.archived_ids().await, vec![id]);
}

pub async fn archived_flows_are_listed_read_and_replayed(env: Env) {
    let mut ids = Vec::new();
    let mut logs = Vec::new();
    for n in 0..5 {
        let id = env.deactivated(n).await;
        env.clock.advance(Duration::from_secs(1));
        logs.push(env.log(id).await);
        ids.push(id);
    }
    env.clock.advance(2 * HOUR);
    let archiver = env.archiver(ArchivePolicy {
        max_age: HOUR,
        ..ArchivePolicy::default()
    });
    archiver.run_once().await.expect("pass");

    // Listed by id, in pages.
    assert_eq!(env.archived_ids().await, ids);
    let first = env
        .archive
        .list(&ArchiveQuery {
            after: None,
            limit: 3,
        })
        .await
        .expect("page");
    assert_eq!(first.flows.len(), 3);
    assert_eq!(first.next_after, Some(ids[2]));
    assert!(first.flows.iter().all(|entry| entry.bytes > 0));
    let rest = env
        .archive
        .list(&ArchiveQuery {
            after: first.next_after,
            limit: 3,
        })
        .await
        .expect("page");
    assert_eq!(
        rest.flows.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    assert_eq!(rest.next_after, None);

    // Read: the whole live log plus the archived transition.
    let archived = env.archive.read(ids[1]).await.expect("read");
    assert_eq!(archived.kind, FlowKind::Plan);
    assert_eq!(archived.definition, "onboarding");
    assert_eq!(&archived.events[..3], &logs[1][..]);
    assert_eq!(archived.archived_at, archived.events[3].time);
    let events = env.archive.events(ids[1]).await.expect("events");
    assert_eq!(events.len(), 4);
    assert!(matches!(
        events[3].body,
        EventBody::PlanStateChanged {
            to: PlanState::Archived,
            ..
        }
    ));

    // Replay, now and back in time.
    let now = env
        .archive
        .replay(ids[1], StopAt::End)
        .await
        .expect("replay");
    assert_eq!(now.status, FlowStatus::Plan(PlanState::Archived));
    let at_2 = env
        .archive
        .replay(ids[1], StopAt::Seq(2))
        .await
        .expect("replay");
    assert_eq!(at_2.status, FlowStatus::Plan(PlanState::Completed));
    let at_time = env
        .archive
        .replay(ids[1], StopAt::Time(logs[1][2].time))
        .await
        .expect("replay");
    assert_eq!(at_time.status, FlowStatus::Plan(PlanState::Deactivated));

    // An id the archive does not have.
    let missing = FlowId::from_parts(START, [0xee; 10]);
    assert!(matches!(
        env.archive.read(missing).await,
        Err(ArchiveError::NotArchived { flow }) if flow == missing
    ));
    assert!(!env.archive.contains(missing).await.expect("head"));
}

/// Every kind's finished flows are archived by the policy, each read back and replayed from
/// the archive as it ended (task graphs and functions have no `archived` state: their copy
/// is their live log); flows that have not finished stay, however old.
pub async fn finished_flows_of_every_kind_are_archived(env: Env) {
    use flowstate_core::machine::ActivationState;
    let success = env
        .task_graph_in(&[FlowState::Running, FlowState::Success])
        .await;
    let failure = env
        .task_graph_in(&[FlowState::Running, FlowState::Failure])
        .await;
    let reverted = env
        .task_graph_in(&[FlowState::Running, FlowState::Reverted])
        .await;
    let done = env.function(true).await;
    let plan = env.deactivated(0).await;
    let running = env.task_graph().await;
    let active = env.function(false).await;
    let logs = [
        env.log(success).await,
        env.log(failure).await,
        env.log(reverted).await,
        env.log(done).await,
    ];
    env.clock.advance(2 * HOUR);
    let young = env
        .task_graph_in(&[FlowState::Running, FlowState::Success])
        .await;
    let archiver = env.archiver(ArchivePolicy {
        max_age: HOUR,
        ..ArchivePolicy::default()
    });
    let report = archiver.run_once().await.expect("pass");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.archived, 5, "{report:?}");
    let mut expected = vec![success, failure, reverted, done, plan];
    expected.sort();
    assert_eq!(env.archived_ids().await, expected);
    assert_eq!(
        env.live_ids().await,
        [running, active, young].into_iter().collect()
    );
    let ended = [
        FlowStatus::TaskGraph(FlowState::Success),
        FlowStatus::TaskGraph(FlowState::Failure),
        FlowStatus::TaskGraph(FlowState::Reverted),
        FlowStatus::Function(ActivationState::Done),
    ];
    for ((id, log), status) in [success, failure, reverted, done]
        .into_iter()
        .zip(&logs)
        .zip(ended)
    {
        let archived = env.archive.read(id).await.expect("read");
        assert_eq!(&archived.events, log, "the whole live log, nothing added");
        let record = env.archive.replay(id, StopAt::End).await.expect("replay");
        assert_eq!(record.status, status);
    }
    let function = env.archive.read(done).await.expect("read");
    assert_eq!(function.kind, FlowKind::Function);
    assert_eq!(function.definition, "checkout");

    // Old enough now: the young graph goes too; flows still running never do.
    env.clock.advance(1_000 * HOUR);
    let report = archiver.run_once().await.expect("pass");
    assert_eq!(report.archived, 1, "{report:?}");
    assert_eq!(
        env.live_ids().await,
        [running, active].into_iter().collect()
    );
}
