//! The loop itself. One task owns the loop's state (what to look at next, which run tasks
//! exist); each run is a tokio task that also settles its flow (releases or parks it), so a
//! burst of finished runs never queues store round trips in the loop; and a separate renewer
//! task keeps the leases of flows in flight, so renewals never wait behind the loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowstate_core::sync::{Mutex, MutexGuard};
use std::time::Duration;

use flowstate_core::limits::MAX_LEASE_SECS;
use flowstate_core::{Clock, FlowId, FlowKind, Timestamp};
use flowstate_store::{Claim, Release, Store, StoreError, WakeCounts};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{ConfigError, WorkerConfig};
use crate::stats::{bump, Counters, WorkerStats};
use crate::{FlowRunner, RunError};

/// Most due timers fired in one transaction.
pub const TIMER_BATCH: usize = 256;

/// Longest a flow is parked after failing again and again: each consecutive failure in this
/// worker doubles [`WorkerConfig::park_for`] up to this.
pub const MAX_PARK: Duration = Duration::from_secs(600);

const _: () = assert!(MAX_PARK.as_secs() <= MAX_LEASE_SECS, "a park is a lease");

/// Most flows whose consecutive failures a worker remembers (for the park backoff).
pub const MAX_TRACKED_FAILURES: usize = 65_536;

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
    /// [`Worker::run`] was called a second time: a worker runs once.
    #[error("this worker already ran (or is running); build another one")]
    AlreadyStarted,
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
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    runners: HashMap<FlowKind, Arc<dyn FlowRunner>>,
    /// The kinds it has runners for: the only ones it claims.
    kinds: Vec<FlowKind>,
    shutdown: ShutdownHandle,
    started: AtomicBool,
}

/// What the loop, the run tasks and the renewer share.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    config: WorkerConfig,
    counters: Counters,
    /// The flows this worker holds a lease on, each with its run task. The loop adds a flow
    /// when it starts its run; the run removes it when it settles the flow; the renewer
    /// removes (and aborts) the runs of flows whose lease it lost or could not confirm.
    /// **Invariant:** at most one run per flow, and an entry is removed only by (or on
    /// behalf of) the run it names: every removal checks the run's task id, because the
    /// same flow may be claimed again while an earlier run's end is still being booked.
    held: Mutex<HashMap<FlowId, HeldFlow>>,
    /// Consecutive failed runs per flow in this worker, for the park backoff.
    failures: Mutex<HashMap<FlowId, u32>>,
}

#[derive(Debug)]
struct HeldFlow {
    claim: Claim,
    run: AbortHandle,
    /// Until when the lease is known to be ours: when the last successful claim or renewal
    /// was sent, plus the lease. A run is aborted shortly before it, whether or not the store
    /// answers, so that it never outlives its lease (another process may hold it by then).
    confirmed_until: Instant,
}

/// How a run task left its flow.
#[derive(Debug)]
enum Settled {
    /// Released: nothing more to do now.
    Released,
    /// Parked: ready, but nobody's for this long.
    Parked(Duration),
    /// The lease was gone when the run ended; the new holder has the flow.
    LeaseLost,
    /// A store call failed; the lease runs out on its own.
    StoreFailed(StoreError),
}

/// What a run task returns.
type RunResult = (FlowId, Settled);

/// A joined run task.
type Joined = Result<(tokio::task::Id, RunResult), tokio::task::JoinError>;

/// The loop's state: which run tasks exist and what to look at next.
struct LoopState {
    runs: JoinSet<RunResult>,
    /// Which flow each run task is for, so a panic is charged to its flow.
    tasks: HashMap<tokio::task::Id, Claim>,
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
    /// When the flows this worker parked become claimable again (one entry per park).
    unparks: BinaryHeap<Reverse<Instant>>,
    /// The wake-up counters as last seen.
    seen: WakeCounts,
}

impl LoopState {
    fn parked(&mut self, parked_for: Duration) {
        self.unparks.push(Reverse(Instant::now() + parked_for));
    }
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
            shared: Arc::new(Shared {
                store,
                config,
                counters: Counters::default(),
                held: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
            }),
            clock,
            runners: HashMap::new(),
            kinds: Vec::new(),
            shutdown: ShutdownHandle(Arc::new(watch::Sender::new(false))),
            started: AtomicBool::new(false),
        })
    }

    /// Runs the flows of `kind` with `runner`. The worker claims only flows of the kinds it
    /// has runners for; the others stay ready for processes that have.
    #[must_use]
    pub fn with_runner(mut self, kind: FlowKind, runner: Arc<dyn FlowRunner>) -> Self {
        self.runners.insert(kind, runner);
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
        self
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &WorkerConfig {
        &self.shared.config
    }

    /// What it has done so far.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }

    /// A handle that stops [`Worker::run`].
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Works until shut down (see [`ShutdownHandle`]) or until the store is closed. A worker
    /// runs once: a second call is refused.
    pub async fn run(&self) -> Result<WorkerStats, WorkerError> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(WorkerError::AlreadyStarted);
        }
        let renewer = tokio::spawn(self.shared.clone().renew_forever());
        let result = self.work().await;
        renewer.abort();
        result
    }

    async fn work(&self) -> Result<WorkerStats, WorkerError> {
        let config = &self.shared.config;
        let mut wakeups = self.shared.store.wakeups();
        let mut stop = self.shutdown.0.subscribe();
        let mut state = LoopState {
            runs: JoinSet::new(),
            tasks: HashMap::new(),
            look_for_flows: true,
            look_for_timers: true,
            backlog: false,
            next_timer: None,
            poll_at: Instant::now() + config.poll_interval,
            unparks: BinaryHeap::new(),
            seen: *wakeups.borrow_and_update(),
        };
        let mut stopping: Option<Instant> = None;
        loop {
            if stopping.is_none() && *stop.borrow_and_update() {
                stopping = Some(Instant::now() + config.shutdown_grace);
            }
            match stopping {
                Some(deadline) if state.runs.is_empty() || Instant::now() >= deadline => {
                    self.give_back(&mut state).await;
                    return Ok(self.stats());
                }
                Some(_) => {}
                None => {
                    // Due timers are looked at however busy the runs keep the loop.
                    if state.next_timer.is_some_and(|t| t <= Instant::now()) {
                        state.look_for_timers = true;
                    }
                    if state.look_for_timers {
                        state.look_for_timers = false;
                        self.fire_due_timers(&mut state).await?;
                    }
                    self.claim_and_start(&mut state).await?;
                }
            }
            let wake_at = match stopping {
                // While stopping only runs matter: timers and parked flows are left to others.
                Some(deadline) => deadline.min(state.poll_at),
                None => [
                    state.next_timer,
                    state.unparks.peek().map(|Reverse(at)| *at),
                ]
                .into_iter()
                .flatten()
                .fold(state.poll_at, Instant::min),
            };
            tokio::select! {
                biased;
                _ = stop.changed(), if stopping.is_none() => {}
                Some(joined) = state.runs.join_next_with_id() => {
                    self.finished(&mut state, joined).await?;
                    // Take every other run that ended meanwhile before claiming again.
                    while let Some(joined) = state.runs.try_join_next_with_id() {
                        self.finished(&mut state, joined).await?;
                    }
                }
                changed = wakeups.changed() => {
                    if changed.is_err() {
                        return Err(WorkerError::Store(StoreError::Closed));
                    }
                    let now = *wakeups.borrow_and_update();
                    state.look_for_flows |= now.flows != state.seen.flows;
                    state.look_for_timers |= now.timers != state.seen.timers;
                    state.seen = now;
                }
                () = tokio::time::sleep_until(wake_at) => {
                    let now = Instant::now();
                    if state.next_timer.is_some_and(|t| t <= now) {
                        state.look_for_timers = true;
                    }
                    while state.unparks.peek().is_some_and(|Reverse(at)| *at <= now) {
                        state.unparks.pop();
                        state.look_for_flows = true;
                    }
                    if now >= state.poll_at {
                        // The fallback: a missed wake-up, or leases of a dead process ran out.
                        state.look_for_flows = true;
                        state.look_for_timers = true;
                        state.poll_at = now + config.poll_interval;
                    }
                }
            }
        }
    }

    /// Claims as many flows as there is room for (in batches) and starts their runs.
    async fn claim_and_start(&self, state: &mut LoopState) -> Result<(), WorkerError> {
        let config = &self.shared.config;
        // Refill in batches, not one flow per finished run: each claim is a round trip that
        // every worker of the database pays for.
        let refill = (config.claim_batch.min(config.max_in_flight) / 4).max(1);
        while state.look_for_flows {
            let running = state.runs.len();
            let room = config.max_in_flight.saturating_sub(running);
            if room == 0 || (room < refill && running > 0) {
                return Ok(());
            }
            let asked = room.min(config.claim_batch);
            let sent = Instant::now();
            let claims = match self
                .shared
                .store
                .claim(&config.id, &self.kinds, asked, config.lease)
                .await
            {
                Ok(claims) => claims,
                Err(error) => {
                    self.shared.store_error("claim", error)?;
                    state.look_for_flows = false;
                    return Ok(());
                }
            };
            bump(&self.shared.counters.claimed, claims.len() as u64);
            metrics::counter!("flowstate_flows_claimed_total").increment(claims.len() as u64);
            state.backlog = claims.len() == asked;
            state.look_for_flows = state.backlog;
            for claim in claims {
                self.start(state, claim, sent + config.lease).await;
            }
            self.shared.count_held();
        }
        Ok(())
    }

    /// Starts the run of a claimed flow (or parks it when no runner takes its kind).
    async fn start(&self, state: &mut LoopState, claim: Claim, confirmed_until: Instant) {
        let flow = claim.flow;
        let Some(runner) = self.runners.get(&claim.kind).cloned() else {
            bump(&self.shared.counters.missing_definitions, 1);
            let why = format!("no runner for {} flows in this process", claim.kind);
            let parked_for = self.shared.park(&claim, &why).await;
            state.parked(parked_for);
            return;
        };
        let shared = self.shared.clone();
        let task_claim = claim.clone();
        // Hold the lock across the spawn so that the run cannot end (and remove itself)
        // before it is registered.
        let mut held = self.shared.held();
        if let Some(running) = held.get_mut(&flow) {
            // This worker's own earlier run is still going (its lease had run out and the
            // claim went back to the same worker): the claim only refreshed the lease.
            running.confirmed_until = running.confirmed_until.max(confirmed_until);
            return;
        }
        let run = state
            .runs
            .spawn(async move { (flow, shared.run_and_settle(runner, task_claim).await) });
        state.tasks.insert(run.id(), claim.clone());
        held.insert(
            flow,
            HeldFlow {
                claim,
                run,
                confirmed_until,
            },
        );
    }

    /// Books the end of a run task.
    async fn finished(&self, state: &mut LoopState, joined: Joined) -> Result<(), WorkerError> {
        let (id, settled) = match joined {
            Ok((id, (_, settled))) => (id, settled),
            Err(error) => {
                let id = error.id();
                if error.is_cancelled() {
                    // Aborted because its lease was lost (already forgotten) or at shutdown.
                    state.tasks.remove(&id);
                    return Ok(());
                }
                let Some(claim) = state.tasks.get(&id).cloned() else {
                    return Ok(());
                };
                self.shared.forget(claim.flow, id);
                let why = format!("the run panicked: {error}");
                (id, Settled::Parked(self.shared.park(&claim, &why).await))
            }
        };
        let Some(claim) = state.tasks.remove(&id) else {
            return Ok(());
        };
        // Normally the run removed itself when it settled; this covers a run that ended
        // another way. Only this run's entry: the flow may already run again.
        self.shared.forget(claim.flow, id);
        self.shared.count_held();
        if state.backlog {
            state.look_for_flows = true;
        }
        match settled {
            Settled::Released | Settled::LeaseLost => Ok(()),
            Settled::Parked(parked_for) => {
                state.parked(parked_for);
                Ok(())
            }
            Settled::StoreFailed(error) => self.shared.store_error("settling a run", error),
        }
    }

    /// Fires one batch of due timers (their flows become ready). A full batch means more are
    /// due: the next batch fires on the next turn of the loop, after this one's flows were
    /// claimed, so that a storm of timers starts work at once rather than after the last.
    async fn fire_due_timers(&self, state: &mut LoopState) -> Result<(), WorkerError> {
        let store = &self.shared.store;
        // One transaction per batch: the timers go and their flows become ready together,
        // so a timer fires once and its wake-up cannot be lost.
        let fired = match store.fire_due_timers(TIMER_BATCH).await {
            Ok(fired) => fired,
            Err(error) => {
                // Not again at once: at the next wake-up or poll.
                state.next_timer = None;
                return self.shared.store_error("fire timers", error);
            }
        };
        bump(&self.shared.counters.timers_fired, fired.len() as u64);
        metrics::counter!("flowstate_timers_fired_total").increment(fired.len() as u64);
        if !fired.is_empty() {
            state.look_for_flows = true;
        }
        if fired.len() == TIMER_BATCH {
            state.next_timer = Some(Instant::now());
            return Ok(());
        }
        state.next_timer = match store.next_timer_due().await {
            Ok(next) => next.map(|due| self.instant_of(due)),
            Err(error) => {
                self.shared.store_error("next timer", error)?;
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
            if let Ok((id, (flow, _))) = joined {
                // It settled its flow just before the abort.
                state.tasks.remove(&id);
                self.shared.forget(flow, id);
            }
        }
        let unsettled: Vec<HeldFlow> = self.shared.held().drain().map(|(_, h)| h).collect();
        let config = &self.shared.config;
        for held in unsettled {
            bump(&self.shared.counters.aborted_at_shutdown, 1);
            let released = self
                .shared
                .store
                .release(&config.id, &held.claim, Release::StillReady)
                .await;
            if let Err(error) = released {
                let _ = self.shared.store_error("release at shutdown", error);
            }
        }
    }
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, HashMap<FlowId, HeldFlow>> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.held.lock()
    }

    /// Removes `flow`'s entry if it still belongs to the run task `run`.
    fn forget(&self, flow: FlowId, run: tokio::task::Id) -> Option<HeldFlow> {
        let mut held = self.held();
        if held.get(&flow).is_some_and(|h| h.run.id() == run) {
            return held.remove(&flow);
        }
        None
    }

    /// The body of a run task: runs the flow, re-runs it after conflicts, then releases or
    /// parks it.
    async fn run_and_settle(&self, runner: Arc<dyn FlowRunner>, claim: Claim) -> Settled {
        let (store, config, counters) = (&self.store, &self.config, &self.counters);
        let flow = claim.flow;
        let mut reruns = 0;
        loop {
            let ran = runner.run(flow).await;
            if !matches!(ran, Err(RunError::Conflict { .. })) {
                // Settling: from here on, the renewer must not count this flow's release as
                // a lost lease (nor abort the settling).
                self.forget(flow, tokio::task::id());
            }
            match ran {
                Ok(()) => {
                    self.succeeded(flow);
                    return match store.release(&config.id, &claim, Release::Idle).await {
                        Ok(true) => {
                            bump(&counters.completed, 1);
                            Settled::Released
                        }
                        Ok(false) => {
                            self.lease_lost(flow, "the release found the lease taken");
                            Settled::LeaseLost
                        }
                        Err(error) => Settled::StoreFailed(error),
                    };
                }
                Err(RunError::Conflict {
                    expected, actual, ..
                }) => {
                    bump(&counters.conflicts, 1);
                    metrics::counter!("flowstate_conflicts_total").increment(1);
                    tracing::info!(
                        flow = %flow,
                        expected,
                        actual,
                        "conflict: another process advanced the flow; re-reading its log"
                    );
                    if reruns >= config.max_conflict_reruns {
                        self.forget(flow, tokio::task::id());
                        let why = format!("{reruns} runs in a row met a conflict");
                        return Settled::Parked(self.park(&claim, &why).await);
                    }
                    reruns += 1;
                    // Run again from the re-read log, if the flow is still ours.
                    match store.renew(&config.id, &[flow], config.lease).await {
                        Ok(renewed) if renewed.contains(&flow) => {}
                        Ok(_) => {
                            self.forget(flow, tokio::task::id());
                            self.lease_lost(flow, "the renewal after a conflict found it taken");
                            return Settled::LeaseLost;
                        }
                        Err(error) => {
                            self.forget(flow, tokio::task::id());
                            return Settled::StoreFailed(error);
                        }
                    }
                }
                Err(error) => {
                    if matches!(error, RunError::MissingDefinition { .. }) {
                        bump(&counters.missing_definitions, 1);
                    }
                    let why = format!("the run failed: {error}");
                    return Settled::Parked(self.park(&claim, &why).await);
                }
            }
        }
    }

    fn failures(&self) -> MutexGuard<'_, HashMap<FlowId, u32>> {
        self.failures.lock()
    }

    fn succeeded(&self, flow: FlowId) {
        self.failures().remove(&flow);
    }

    /// Leaves a flow ready but untouchable for a while, then anyone's: [`WorkerConfig::
    /// park_for`] after one failure, doubling with each consecutive failure in this worker up
    /// to [`MAX_PARK`]. Returns how long. Logs the park once, saying `why`.
    async fn park(&self, claim: &Claim, why: &str) -> Duration {
        bump(&self.counters.parked, 1);
        metrics::counter!("flowstate_flows_parked_total").increment(1);
        let parked_for = {
            let mut failures = self.failures();
            let tracked = failures.len() < MAX_TRACKED_FAILURES;
            let failed = match failures.get_mut(&claim.flow) {
                Some(count) => {
                    *count = count.saturating_add(1);
                    *count
                }
                None if tracked => *failures.entry(claim.flow).or_insert(1),
                None => 1,
            };
            let factor = 1u32 << failed.saturating_sub(1).min(16);
            self.config
                .park_for
                .saturating_mul(factor)
                .min(MAX_PARK.max(self.config.park_for))
        };
        let parked = self
            .store
            .renew(&self.config.id, &[claim.flow], parked_for)
            .await;
        if let Err(error) = parked {
            // The lease runs out on its own; the flow is only parked for longer.
            let _ = self.store_error("park", error);
        }
        tracing::warn!(
            flow = %claim.flow,
            kind = claim.kind.key(),
            parked_secs = parked_for.as_secs_f64(),
            reason = why,
            "flow parked; it stays ready and is retried after the park"
        );
        parked_for
    }

    /// Counts and logs a lease this worker lost (another worker may hold the flow now).
    fn lease_lost(&self, flow: FlowId, why: &str) {
        bump(&self.counters.leases_lost, 1);
        metrics::counter!("flowstate_leases_lost_total").increment(1);
        tracing::warn!(flow = %flow, reason = why, "lease lost");
    }

    /// Sets the leases-held gauge from the flows this worker holds.
    fn count_held(&self) {
        metrics::gauge!("flowstate_leases_held").set(self.held().len() as f64);
    }

    /// Every third of a lease, extends the leases of flows in flight. Aborts the runs of
    /// flows no longer held (another worker took them after this one stalled) and of flows
    /// whose lease could not be confirmed in time (the store did not answer): a run never
    /// outlives the last lease this worker knows it had.
    async fn renew_forever(self: Arc<Self>) {
        let lease = self.config.lease;
        let margin = lease / 10;
        let mut renew_at = Instant::now() + lease / 3;
        loop {
            // Wake for the next renewal, or sooner when a lease that could not be confirmed
            // is about to run out.
            let deadline = self
                .held()
                .values()
                .map(|h| {
                    h.confirmed_until
                        .checked_sub(margin)
                        .unwrap_or(h.confirmed_until)
                })
                .min()
                .map_or(renew_at, |at| at.min(renew_at));
            tokio::time::sleep_until(deadline).await;
            if Instant::now() < renew_at {
                self.abort_unconfirmed(margin);
                continue;
            }
            renew_at = Instant::now() + lease / 3;
            let snapshot: Vec<(FlowId, tokio::task::Id)> = self
                .held()
                .iter()
                .map(|(flow, held)| (*flow, held.run.id()))
                .collect();
            if !snapshot.is_empty() {
                let flows: Vec<FlowId> = snapshot.iter().map(|(flow, _)| *flow).collect();
                let sent = Instant::now();
                let renewal = tokio::time::timeout(
                    lease / 3,
                    self.store.renew(&self.config.id, &flows, lease),
                )
                .await;
                match renewal {
                    Ok(Ok(renewed)) => {
                        let renewed: HashSet<FlowId> = renewed.into_iter().collect();
                        let mut held = self.held();
                        for (flow, run) in &snapshot {
                            let Some(entry) = held.get_mut(flow).filter(|h| h.run.id() == *run)
                            else {
                                // Ended (and released) since the snapshot, or a new run.
                                continue;
                            };
                            if renewed.contains(flow) {
                                entry.confirmed_until = sent + lease;
                            } else if let Some(lost) = held.remove(flow) {
                                lost.run.abort();
                                self.lease_lost(
                                    *flow,
                                    "another worker took the flow; its run was aborted",
                                );
                            }
                        }
                    }
                    Ok(Err(error)) => {
                        let _ = self.store_error("renew", error);
                    }
                    Err(_) => {
                        tracing::warn!("lease renewal timed out");
                        bump(&self.counters.store_errors, 1);
                    }
                }
            }
            self.abort_unconfirmed(margin);
        }
    }

    /// Aborts the runs whose lease may run out within `margin` without a confirmed renewal.
    fn abort_unconfirmed(&self, margin: Duration) {
        let now = Instant::now();
        let mut held = self.held();
        let expiring: Vec<FlowId> = held
            .iter()
            .filter(|(_, h)| h.confirmed_until <= now + margin)
            .map(|(flow, _)| *flow)
            .collect();
        for flow in expiring {
            if let Some(lost) = held.remove(&flow) {
                lost.run.abort();
                self.lease_lost(flow, "not renewed in time; its run was aborted");
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
