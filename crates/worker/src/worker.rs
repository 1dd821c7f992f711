//! The loop itself. One task owns all the loop's state (which flows it holds, which runs are
//! in flight), so there are no locks; runs are tokio tasks in one `JoinSet`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::{Clock, FlowId, FlowKind, Timestamp};
use flowstate_store::{Claim, Release, Store, StoreError};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{ConfigError, WorkerConfig};
use crate::stats::{bump, Counters, WorkerStats};
use crate::{FlowRunner, RunError};

/// Most due timers fired in one pass.
pub const TIMER_BATCH: usize = 256;

/// Why a worker stopped other than by a shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A setting is out of bounds.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store was closed (or refuses every write); the worker cannot go on.
    #[error("the store stopped: {0}")]
    Store(StoreError),
}

/// Asks a running [`Worker`] to stop: it claims nothing more, lets runs in flight finish
/// within [`WorkerConfig::shutdown_grace`], then aborts the rest and gives their flows back.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Starts the shutdown; [`Worker::run`] returns when it is complete.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// One engine process's worker: claims flows of the kinds it has runners for and runs them.
#[derive(Debug)]
pub struct Worker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    runners: HashMap<FlowKind, Arc<dyn FlowRunner>>,
    counters: Counters,
    shutdown: ShutdownHandle,
}

/// What a run task returns: its flow and how the run ended.
type RunResult = (FlowId, Result<(), RunError>);

/// A joined run task.
type Joined = Result<(tokio::task::Id, RunResult), tokio::task::JoinError>;

/// A flow this worker holds a lease on, with its run in flight.
struct Held {
    claim: Claim,
    run: AbortHandle,
    conflict_reruns: u32,
}

/// The loop's state: what it holds and what it should look at next.
struct LoopState {
    held: HashMap<FlowId, Held>,
    runs: JoinSet<RunResult>,
    /// Which flow each run task is for, so a panic is charged to its flow.
    tasks: HashMap<tokio::task::Id, FlowId>,
    /// Claim flows at the next chance (woken, polled, or the last claim was full).
    look_for_flows: bool,
    /// Fire due timers at the next chance.
    look_for_timers: bool,
    /// The last claim got all it asked for: more flows are probably waiting.
    backlog: bool,
    /// When the next timer may be claimed, if any.
    next_timer: Option<Instant>,
    /// The next fallback poll: pushed back whenever a wake-up made the loop look anyway.
    poll_at: Instant,
    /// When the earliest flow this worker parked becomes claimable again.
    unpark_at: Option<Instant>,
    renew_at: Instant,
}

impl Worker {
    /// A worker on `store`; add runners with [`Worker::with_runner`], then [`Worker::run`].
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            store,
            clock,
            config,
            runners: HashMap::new(),
            counters: Counters::default(),
            shutdown: ShutdownHandle(Arc::new(watch::Sender::new(false))),
        })
    }

    /// Runs the flows of `kind` with `runner`. A kind without a runner is treated like a
    /// missing definition: its flows stay ready for another process.
    #[must_use]
    pub fn with_runner(mut self, kind: FlowKind, runner: Arc<dyn FlowRunner>) -> Self {
        self.runners.insert(kind, runner);
        self
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// What it has done so far.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// A handle that stops [`Worker::run`].
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Works until shut down (see [`ShutdownHandle`]) or until the store is closed.
    pub async fn run(&self) -> Result<WorkerStats, WorkerError> {
        let mut wakeups = self.store.wakeups();
        let mut stop = self.shutdown.0.subscribe();
        let mut state = LoopState {
            held: HashMap::new(),
            runs: JoinSet::new(),
            tasks: HashMap::new(),
            look_for_flows: true,
            look_for_timers: true,
            backlog: false,
            next_timer: None,
            poll_at: Instant::now() + self.config.poll_interval,
            unpark_at: None,
            renew_at: Instant::now() + self.config.lease / 3,
        };
        let mut stopping: Option<Instant> = None;
        loop {
            if stopping.is_none() && *stop.borrow_and_update() {
                stopping = Some(Instant::now() + self.config.shutdown_grace);
            }
            match stopping {
                Some(deadline) if state.runs.is_empty() || Instant::now() >= deadline => {
                    self.give_back(&mut state).await;
                    return Ok(self.stats());
                }
                Some(_) => {}
                None => {
                    if state.look_for_timers {
                        state.look_for_timers = false;
                        self.fire_due_timers(&mut state).await?;
                    }
                    self.claim_and_start(&mut state).await?;
                }
            }
            let mut wake_at = state.poll_at.min(state.renew_at);
            for at in [state.next_timer, state.unpark_at].into_iter().flatten() {
                wake_at = wake_at.min(at);
            }
            if let Some(deadline) = stopping {
                wake_at = wake_at.min(deadline);
            }
            tokio::select! {
                biased;
                _ = stop.changed(), if stopping.is_none() => {}
                Some(joined) = state.runs.join_next_with_id() => {
                    self.finished(&mut state, joined).await?;
                }
                changed = wakeups.changed() => {
                    if changed.is_err() {
                        return Err(WorkerError::Store(StoreError::Closed));
                    }
                    state.look_for_flows = true;
                    state.look_for_timers = true;
                    state.poll_at = Instant::now() + self.config.poll_interval;
                }
                () = tokio::time::sleep_until(wake_at) => {
                    let now = Instant::now();
                    if state.next_timer.is_some_and(|t| t <= now) {
                        state.look_for_timers = true;
                    }
                    if state.unpark_at.is_some_and(|t| t <= now) {
                        state.unpark_at = None;
                        state.look_for_flows = true;
                    }
                    if now >= state.poll_at {
                        // The fallback: a missed wake-up, or leases of a dead process ran out.
                        state.look_for_flows = true;
                        state.look_for_timers = true;
                        state.poll_at = now + self.config.poll_interval;
                    }
                }
            }
            if Instant::now() >= state.renew_at {
                self.renew(&mut state).await?;
                state.renew_at = Instant::now() + self.config.lease / 3;
            }
        }
    }

    /// Claims as many flows as there is room for (in batches) and starts their runs.
    async fn claim_and_start(&self, state: &mut LoopState) -> Result<(), WorkerError> {
        // Refill in batches, not one flow per finished run: each claim is a round trip that
        // every worker of the database pays for.
        let refill = (self.config.claim_batch.min(self.config.max_in_flight) / 4).max(1);
        while state.look_for_flows {
            let room = self.config.max_in_flight.saturating_sub(state.held.len());
            if room < refill && !state.held.is_empty() {
                return Ok(());
            }
            let asked = room.min(self.config.claim_batch);
            if asked == 0 {
                return Ok(());
            }
            let claims = match self
                .store
                .claim(&self.config.id, asked, self.config.lease)
                .await
            {
                Ok(claims) => claims,
                Err(error) => {
                    self.store_error("claim", error)?;
                    state.look_for_flows = false;
                    return Ok(());
                }
            };
            bump(&self.counters.claimed, claims.len() as u64);
            state.backlog = claims.len() == asked;
            state.look_for_flows = state.backlog;
            for claim in claims {
                self.start(state, claim, 0).await;
            }
        }
        Ok(())
    }

    /// Starts the run of a claimed flow (or parks it when no runner takes its kind).
    async fn start(&self, state: &mut LoopState, claim: Claim, conflict_reruns: u32) {
        let flow = claim.flow;
        let Some(runner) = self.runners.get(&claim.kind).cloned() else {
            bump(&self.counters.missing_definitions, 1);
            tracing::warn!(%flow, kind = %claim.kind, "no runner for this kind of flow in this process; parked");
            self.park(state, &claim).await;
            return;
        };
        let run = state
            .runs
            .spawn(async move { (flow, runner.run(flow).await) });
        state.tasks.insert(run.id(), flow);
        state.held.insert(
            flow,
            Held {
                claim,
                run,
                conflict_reruns,
            },
        );
    }

    /// Handles the end of a run.
    async fn finished(&self, state: &mut LoopState, joined: Joined) -> Result<(), WorkerError> {
        let (flow, result) = match joined {
            Ok((id, (flow, result))) => {
                state.tasks.remove(&id);
                (flow, result)
            }
            Err(error) => {
                let Some(flow) = state.tasks.remove(&error.id()) else {
                    return Ok(());
                };
                if error.is_cancelled() {
                    // Aborted because its lease was lost: already forgotten.
                    return Ok(());
                }
                (
                    flow,
                    Err(RunError::Failed {
                        message: format!("the run panicked: {error}"),
                    }),
                )
            }
        };
        let Some(held) = state.held.remove(&flow) else {
            return Ok(());
        };
        if state.backlog {
            state.look_for_flows = true;
        }
        match result {
            Ok(()) => match self
                .store
                .release(&self.config.id, &held.claim, Release::Idle)
                .await
            {
                Ok(true) => bump(&self.counters.completed, 1),
                Ok(false) => bump(&self.counters.leases_lost, 1),
                Err(error) => self.store_error("release", error)?,
            },
            Err(RunError::Conflict { .. }) => {
                bump(&self.counters.conflicts, 1);
                tracing::info!(%flow, "another process advanced the flow; re-reading its log");
                if held.conflict_reruns >= self.config.max_conflict_reruns {
                    self.park(state, &held.claim).await;
                    return Ok(());
                }
                // Run again from the re-read log, if the flow is still ours.
                match self
                    .store
                    .renew(&self.config.id, &[flow], self.config.lease)
                    .await
                {
                    Ok(renewed) if renewed.contains(&flow) => {
                        self.start(state, held.claim, held.conflict_reruns + 1)
                            .await;
                    }
                    Ok(_) => bump(&self.counters.leases_lost, 1),
                    Err(error) => self.store_error("renew", error)?,
                }
            }
            Err(error) => {
                if matches!(error, RunError::MissingDefinition { .. }) {
                    bump(&self.counters.missing_definitions, 1);
                }
                tracing::warn!(%flow, %error, "run failed; the flow is parked and will be retried");
                self.park(state, &held.claim).await;
            }
        }
        Ok(())
    }

    /// Leaves a flow ready but untouchable for [`WorkerConfig::park_for`], then anyone's.
    async fn park(&self, state: &mut LoopState, claim: &Claim) {
        bump(&self.counters.parked, 1);
        let unpark = Instant::now() + self.config.park_for;
        state.unpark_at = Some(state.unpark_at.map_or(unpark, |at| at.min(unpark)));
        if let Err(error) = self
            .store
            .renew(&self.config.id, &[claim.flow], self.config.park_for)
            .await
        {
            // The lease runs out on its own; the flow is only parked for longer.
            let _ = self.store_error("park", error);
        }
    }

    /// Extends the leases of flows in flight; aborts the runs of flows no longer held.
    async fn renew(&self, state: &mut LoopState) -> Result<(), WorkerError> {
        if state.held.is_empty() {
            return Ok(());
        }
        let flows: Vec<FlowId> = state.held.keys().copied().collect();
        let renewed = match self
            .store
            .renew(&self.config.id, &flows, self.config.lease)
            .await
        {
            Ok(renewed) => renewed,
            Err(error) => return self.store_error("renew", error),
        };
        if renewed.len() == flows.len() {
            return Ok(());
        }
        let renewed: std::collections::HashSet<FlowId> = renewed.into_iter().collect();
        for flow in flows {
            if !renewed.contains(&flow) {
                if let Some(held) = state.held.remove(&flow) {
                    held.run.abort();
                    bump(&self.counters.leases_lost, 1);
                    tracing::warn!(%flow, "lease lost (another worker took the flow); run aborted");
                }
            }
        }
        Ok(())
    }

    /// Fires due timers: marks their flows ready, then completes them.
    async fn fire_due_timers(&self, state: &mut LoopState) -> Result<(), WorkerError> {
        loop {
            let due = match self
                .store
                .claim_due_timers(&self.config.id, TIMER_BATCH, self.config.lease)
                .await
            {
                Ok(due) => due,
                Err(error) => return self.store_error("claim timers", error),
            };
            for timer in &due {
                match self.store.mark_ready(timer.flow).await {
                    // A flow deleted since (archived) needs no wake-up.
                    Ok(()) | Err(StoreError::UnknownFlow { .. }) => {}
                    Err(error) => {
                        // Not completed: it fires again when its lease runs out.
                        self.store_error("fire timer", error)?;
                        continue;
                    }
                }
                match self.store.complete_timer(&self.config.id, timer).await {
                    Ok(true) => bump(&self.counters.timers_fired, 1),
                    Ok(false) => {}
                    Err(error) => self.store_error("complete timer", error)?,
                }
                state.look_for_flows = true;
            }
            if due.len() < TIMER_BATCH {
                break;
            }
        }
        state.next_timer = match self.store.next_timer_due().await {
            Ok(next) => next.map(|due| self.instant_of(due)),
            Err(error) => {
                self.store_error("next timer", error)?;
                None
            }
        };
        Ok(())
    }

    /// The monotonic instant at which the store's clock reads `time`.
    fn instant_of(&self, time: Timestamp) -> Instant {
        let ahead = time
            .as_micros()
            .saturating_sub(self.clock.now().as_micros());
        Instant::now() + Duration::from_micros(u64::try_from(ahead).unwrap_or(0))
    }

    /// At shutdown: aborts what is still running and gives its flows back, ready.
    async fn give_back(&self, state: &mut LoopState) {
        state.runs.abort_all();
        while let Some(joined) = state.runs.join_next_with_id().await {
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(error) => error.id(),
            };
            let Some(flow) = state.tasks.remove(&id) else {
                continue;
            };
            if let Ok((_, (_, Ok(())))) = joined {
                // It finished just before the abort: an ordinary release.
                if let Some(held) = state.held.remove(&flow) {
                    if let Ok(true) = self
                        .store
                        .release(&self.config.id, &held.claim, Release::Idle)
                        .await
                    {
                        bump(&self.counters.completed, 1);
                    }
                }
            }
        }
        for (_, held) in state.held.drain() {
            bump(&self.counters.aborted_at_shutdown, 1);
            if let Err(error) = self
                .store
                .release(&self.config.id, &held.claim, Release::StillReady)
                .await
            {
                let _ = self.store_error("release at shutdown", error);
            }
        }
    }

    /// Counts a failed store call; a closed store ends the worker.
    fn store_error(&self, what: &str, error: StoreError) -> Result<(), WorkerError> {
        bump(&self.counters.store_errors, 1);
        if matches!(error, StoreError::Closed | StoreError::Poisoned { .. }) {
            return Err(WorkerError::Store(error));
        }
        tracing::warn!(%error, "worker: {what} failed; retrying at the next poll");
        Ok(())
    }
}
