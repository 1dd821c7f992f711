//! The one rebase routine: how a run commits what it staged when clients may append requests
//! (a suspension, a cancellation, a signal, a child's end) to the same log while it runs.
//!
//! A run reads a flow's log, decides, and commits its decisions with the sequence number it
//! read ([`FlowWriter::commit`]). If a client delivered a request meanwhile
//! ([`crate::deliver()`]), the commit conflicts. That is not another run (which would hold the
//! flow's lease), so the run need not give the flow up: [`commit_or_rebase`] reads the log
//! again and, if everything appended since is a request that the kind's `is_request` accepts,
//! hands the run the re-read state ([`Committed::Rebased`]); the run stages again what it had
//! not recorded and decides the rest again. Anything else appended meanwhile is another run's
//! work, and the conflict goes to the caller (and the worker runs the flow again from its log).
//!
//! **Must never:** stage or decide anything itself: what a request means is the kind's
//! business. Never retry the refused append as it was: its decisions were made on a state
//! that is gone.

use flowstate_core::{Event, EventBody, FlowId};
use flowstate_store::{AppendOutcome, Store, StoreError};

use crate::{AppendExtras, FlowWriter, WriteError};

/// Most times one commit goes on on top of requests appended meanwhile before it lands. Each
/// rebase needs a request that a client appended during the last attempt, so the budget is
/// only reached by a flood of requests racing one run; past it the conflict goes to the
/// caller, and the worker runs the flow again from its log.
pub const MAX_REBASES: usize = 16;

/// Most events [`appended_only`] reads: more than this appended meanwhile is treated as
/// another run's work. Task graphs and plans take one suspension and one cancellation at a
/// time; a durable function may take a burst of signals while one of its steps runs.
pub const MAX_REQUESTS_APPENDED: usize = 1_024;

/// Rebases of the commit in progress, against [`MAX_REBASES`]. Kept by the run across its
/// attempts (a run that starts over because requests arrived before it recorded anything
/// keeps counting); a commit that lands starts the count again.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rebases {
    count: usize,
}

impl Rebases {
    /// Rebases since the last commit that landed.
    #[must_use]
    pub fn count(self) -> usize {
        self.count
    }
}

/// What [`commit_or_rebase`] did.
#[derive(Debug)]
#[must_use = "a rebased run must stage again what it had not recorded and decide again"]
pub enum Committed {
    /// The staged events are durable (`None`: nothing was staged, nothing was sent).
    Recorded(Option<AppendOutcome>),
    /// Requests were appended since the writer last read the log. The writer now holds the
    /// log with them and nothing staged: what was staged is not recorded, and the caller
    /// stages again what it still means and decides the rest again.
    Rebased,
}

/// Commits what `writer` staged, with `extras`. On a conflict whose cause is only requests
/// (every event appended since the writer's last read satisfies `is_request`, at most
/// [`MAX_REQUESTS_APPENDED`] of them) and while `rebases` is within [`MAX_REBASES`], reloads
/// the writer on top of them and returns [`Committed::Rebased`]. Any other conflict, and every
/// other error, is returned as it is ([`WriteError::is_conflict`] tells the two apart).
pub async fn commit_or_rebase(
    writer: &mut FlowWriter,
    store: &dyn Store,
    extras: AppendExtras,
    rebases: &mut Rebases,
    is_request: impl Fn(&EventBody) -> bool,
) -> Result<Committed, WriteError> {
    let from = writer.durable_next_seq();
    let conflict = match writer.commit(store, extras).await {
        Ok(outcome) => {
            rebases.count = 0;
            return Ok(Committed::Recorded(outcome));
        }
        Err(error) if error.is_conflict() => error,
        Err(error) => return Err(error),
    };
    if rebases.count >= MAX_REBASES {
        return Err(conflict);
    }
    rebases.count += 1;
    let flow = writer.flow();
    let reloaded = FlowWriter::load(store, flow).await?;
    if !appended_only(store, flow, from, reloaded.durable_next_seq(), is_request).await? {
        return Err(conflict);
    }
    *writer = reloaded;
    Ok(Committed::Rebased)
}

/// Whether the events `from..to` of `flow` (appended by others while a run held the flow)
/// are all requests that `is_request` accepts, at most [`MAX_REQUESTS_APPENDED`] of them.
/// Events that do not decode are not requests; a failed read is an error, not an answer.
pub async fn appended_only(
    store: &dyn Store,
    flow: FlowId,
    from: u64,
    to: u64,
    is_request: impl Fn(&EventBody) -> bool,
) -> Result<bool, StoreError> {
    let wanted = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    if wanted == 0 || wanted > MAX_REQUESTS_APPENDED {
        return Ok(false);
    }
    let raw = store.read(flow, from, wanted).await?;
    Ok(raw.len() == wanted
        && raw
            .iter()
            .all(|raw| Event::decode(raw).is_ok_and(|event| is_request(&event.body))))
}

const _: () = assert!(MAX_REQUESTS_APPENDED <= flowstate_core::limits::MAX_READ_BATCH);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowstate_core::{Clock, FlowKind, ManualClock, Timestamp};
    use flowstate_store::MemoryStore;

    use super::*;
    use crate::deliver;

    /// A signal: what a client delivers (named "request") or what a test's runs stage.
    fn signal(name: &str) -> EventBody {
        EventBody::SignalDelivered {
            name: name.to_owned(),
            value: serde_json::Value::Null,
        }
    }

    fn is_request(body: &EventBody) -> bool {
        matches!(body, EventBody::SignalDelivered { name, .. } if name == "request")
    }

    /// A durable function's log, created and committed by `writer`.
    async fn created() -> (MemoryStore, Arc<ManualClock>, FlowWriter) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_767_225_600_000_000,
        )));
        let store = MemoryStore::new(clock.clone());
        let mut writer = FlowWriter::new(FlowId::from_parts(clock.now(), [5; 10]));
        let created = EventBody::FlowCreated {
            kind: FlowKind::Function,
            definition: "f".to_owned(),
            input: serde_json::Value::Null,
        };
        writer.stage(clock.as_ref(), vec![created]).expect("stage");
        writer
            .commit(&store, AppendExtras::default())
            .await
            .expect("commit");
        (store, clock, writer)
    }

    async fn request(store: &MemoryStore, clock: &ManualClock, flow: FlowId) {
        let appended = deliver::<WriteError>(store, clock, flow, |_| Ok(Some(signal("request"))))
            .await
            .expect("deliver");
        assert!(appended);
    }

    async fn stage_and_commit(
        writer: &mut FlowWriter,
        store: &MemoryStore,
        clock: &ManualClock,
        rebases: &mut Rebases,
    ) -> Result<Committed, WriteError> {
        writer.stage(clock, vec![signal("run")]).expect("stage");
        commit_or_rebase(writer, store, AppendExtras::default(), rebases, is_request).await
    }

    #[tokio::test]
    async fn a_commit_rebases_on_requests_and_lands_after() {
        let (store, clock, mut writer) = created().await;
        request(&store, &clock, writer.flow()).await;
        let mut rebases = Rebases::default();
        let first = stage_and_commit(&mut writer, &store, &clock, &mut rebases).await;
        assert!(matches!(first, Ok(Committed::Rebased)));
        assert_eq!(rebases.count(), 1);
        assert!(!writer.has_staged(), "a rebase drops what was staged");
        assert_eq!(writer.durable_next_seq(), 3, "the request is in the state");
        let second = stage_and_commit(&mut writer, &store, &clock, &mut rebases).await;
        assert!(matches!(second, Ok(Committed::Recorded(Some(_)))));
        assert_eq!(rebases.count(), 0, "a landed commit starts the count again");
        assert_eq!(
            flowstate_store::read_all(&store, writer.flow())
                .await
                .expect("read")
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn other_events_appended_meanwhile_are_a_conflict() {
        let (store, clock, mut writer) = created().await;
        let mut other = FlowWriter::load(&store, writer.flow()).await.expect("load");
        other
            .stage(clock.as_ref(), vec![signal("other")])
            .expect("stage");
        other
            .commit(&store, AppendExtras::default())
            .await
            .expect("commit");
        let mut rebases = Rebases::default();
        let error = stage_and_commit(&mut writer, &store, &clock, &mut rebases)
            .await
            .expect_err("another run's events");
        assert!(error.is_conflict());
    }

    #[tokio::test]
    async fn the_budget_ends_in_a_conflict() {
        let (store, clock, mut writer) = created().await;
        let mut rebases = Rebases::default();
        for round in 0..=MAX_REBASES {
            request(&store, &clock, writer.flow()).await;
            let outcome = stage_and_commit(&mut writer, &store, &clock, &mut rebases).await;
            if round < MAX_REBASES {
                assert!(matches!(outcome, Ok(Committed::Rebased)), "round {round}");
            } else {
                assert!(outcome.expect_err("over budget").is_conflict());
            }
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_read_limit_are_not_only_requests() {
        let (store, _clock, writer) = created().await;
        let flow = writer.flow();
        let from = writer.durable_next_seq();
        let too_many = from + MAX_REQUESTS_APPENDED as u64 + 1;
        let only = appended_only(&store, flow, from, too_many, |_| true)
            .await
            .expect("read");
        assert!(!only);
        assert!(!appended_only(&store, flow, from, from, |_| true)
            .await
            .expect("read"));
    }
}
