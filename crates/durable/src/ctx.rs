//! The context: the membrane between a durable function and the world. Every effect is
//! matched against the journal first (replay: the recorded outcome, nothing runs) and only
//! past its end does it run and get recorded.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::Location;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::machine::ActivationState;
use flowstate_core::{
    Call, Clock, Diagnostic, EventBody, Failure, FlowId, FlowStatus, JournalEntry, Replay,
    Replayer, Timestamp,
};
use flowstate_store::{FlowWriter, NewTimer, Store, WriteError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a run of the activation stops before the function returns.
#[derive(Debug)]
pub(crate) enum Stop {
    /// It waits for a timer (`Some`) or a signal (`None`): it goes to sleep.
    Sleep { timer: Option<NewTimer> },
    /// The code does not reproduce the journal.
    Diverged(Diagnostic),
    /// The live function waits for something no effect will settle.
    Deadlocked,
    /// Someone cancelled the activation: it is done with a `Cancelled` failure.
    Cancelled(String),
    /// Recording failed (a conflict with another run, a store error).
    Write(WriteError),
    /// The function used the context in a way that cannot be journaled.
    Misuse(String),
}

/// One run of an activation: its journal as loaded, where replay is, and its writer.
pub(crate) struct Activation {
    pub(crate) flow: FlowId,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Live effects hold it from their call until their entry is durable: one at a time, so
    /// journal order is call order.
    pub(crate) writer: flowstate_rt::Mutex<FlowWriter>,
    pub(crate) journal: Vec<JournalEntry>,
    pub(crate) sleeps_ended: BTreeSet<u32>,
    /// Entries of `journal` matched so far.
    pub(crate) cursor: Cell<u32>,
    /// The function's own task: effects come from it alone (see `replay`).
    pub(crate) task: Cell<Option<flowstate_rt::TaskId>>,
    /// Whether the activation is active current (past the end of its journal, recorded).
    pub(crate) live: Cell<bool>,
    pub(crate) stop: RefCell<Option<Stop>>,
    /// Live effects in flight, awaiting the outside world (a step's body, a commit): while
    /// there are none, nothing outside the runtime can wake the function.
    pub(crate) live_ops: Cell<usize>,
    /// Why the activation was cancelled, if it was (it stops at its next live effect).
    pub(crate) cancelled: RefCell<Option<String>>,
    /// Polls of the function so far (progress, for the deadlock check).
    pub(crate) polls: Cell<u64>,
    /// The run's control task, waiting for the function to return or the run to stop.
    pub(crate) control: RefCell<Option<std::task::Waker>>,
}

/// Counts one live effect in flight for as long as it lives (also when its task is aborted).
struct LiveOp<'a>(&'a Cell<usize>);

impl<'a> LiveOp<'a> {
    fn start(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Self(count)
    }
}

impl Drop for LiveOp<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Activation {
    pub(crate) fn replaying(&self) -> bool {
        (self.cursor.get() as usize) < self.journal.len()
    }

    /// Stops the run (the first reason stays) and wakes its control task.
    pub(crate) fn stop_with(&self, stop: Stop) {
        {
            let mut current = self.stop.borrow_mut();
            if current.is_none() {
                *current = Some(stop);
            }
        }
        self.wake_control();
    }

    /// Goes to sleep until `timer` (or a signal), unless the activation was cancelled: then
    /// it stops for good instead.
    fn sleep_unless_cancelled(&self, timer: Option<NewTimer>) {
        let cancelled = self.cancelled.borrow().clone();
        self.stop_with(match cancelled {
            Some(reason) => Stop::Cancelled(reason),
            None => Stop::Sleep { timer },
        });
    }

    /// Stages the end of replay (active replay → active current) once.
    fn ensure_live(&self, writer: &mut FlowWriter) -> Result<(), WriteError> {
        if self.live.get() {
            return Ok(());
        }
        let replaying = matches!(
            writer.record().map(|r| r.status),
            Some(FlowStatus::Function(ActivationState::ActiveReplay))
        );
        if replaying {
            writer.stage(
                self.clock.as_ref(),
                vec![EventBody::ActivationStateChanged {
                    to: ActivationState::ActiveCurrent,
                    diagnostic: None,
                }],
            )?;
        }
        self.live.set(true);
        Ok(())
    }

    /// Stages `bodies` (after the end of replay, if not recorded yet) and commits them.
    ///
    /// A signal delivered meanwhile (the only thing anyone else appends to a live activation's
    /// log) makes the commit conflict; then the log is read again and the same events are
    /// staged on top of the delivery, so that a step's result is not thrown away (and the
    /// step run again) because a signal arrived while it ran.
    async fn record(&self, writer: &mut FlowWriter, bodies: Vec<EventBody>) -> Result<(), ()> {
        let _in_flight = LiveOp::start(&self.live_ops);
        // Only a commit of just these events can be replayed on top of a delivery.
        let rebasable = !writer.has_staged();
        let mut rebases = 0;
        loop {
            let was_live = self.live.get();
            let from = writer.durable_next_seq();
            let staged = self
                .ensure_live(writer)
                .and_then(|()| writer.stage(self.clock.as_ref(), bodies.clone()));
            let committed = match staged {
                Ok(()) => writer
                    .commit(
                        self.store.as_ref(),
                        flowstate_store::AppendExtras::default(),
                    )
                    .await
                    .map(drop),
                Err(error) => Err(error),
            };
            let error = match committed {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let conflict = matches!(
                error,
                WriteError::Store(flowstate_store::StoreError::Conflict { .. })
            );
            if !(conflict && rebasable && rebases < MAX_REBASES) {
                self.stop_with(Stop::Write(error));
                return Err(());
            }
            rebases += 1;
            match self.only_deliveries_since(from).await {
                Some(fresh) => {
                    let cancel = fresh
                        .record()
                        .and_then(|r| r.function.as_ref())
                        .and_then(|f| f.cancel_requested.clone());
                    *self.cancelled.borrow_mut() = cancel;
                    *writer = fresh;
                    self.live.set(was_live);
                }
                None => {
                    self.stop_with(Stop::Write(error));
                    return Err(());
                }
            }
        }
    }

    /// The log read again, if everything appended from `from` on is a delivered signal or a
    /// request to cancel.
    async fn only_deliveries_since(&self, from: u64) -> Option<FlowWriter> {
        let fresh = FlowWriter::load(self.store.as_ref(), self.flow)
            .await
            .ok()?;
        let added = self
            .store
            .read(self.flow, from, flowstate_core::limits::MAX_READ_BATCH)
            .await
            .ok()?
            .into_iter()
            .map(|raw| flowstate_core::Event::decode(&raw).map(|e| e.body))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        added
            .iter()
            .all(|body| {
                matches!(
                    body,
                    EventBody::SignalDelivered { .. } | EventBody::CancelRequested { .. }
                )
            })
            .then_some(fresh)
    }

    /// Matches `call` against the journal. `Err(())` when the run must stop (a divergence,
    /// recorded in `stop`).
    fn replay(&self, call: Call<'_>, location: &str) -> Result<Replayed, ()> {
        if self.stop.borrow().is_some() {
            return Err(());
        }
        // One cursor cannot reproduce how concurrent branches interleaved: a replayed effect
        // returns at once, a live one later. Until effects of concurrent branches are
        // journaled per branch, they are refused rather than replayed wrongly.
        let here = flowstate_rt::current_task();
        if self.task.get().is_some() && here != self.task.get() {
            self.stop_with(Stop::Misuse(format!(
                "{call} at {location} was called from a task other than the function's own; effects of concurrent branches (flowstate_rt::all, race, spawn) are not supported yet"
            )));
            return Err(());
        }
        let mut replayer = Replayer::starting_at(&self.journal, self.cursor.get());
        match replayer.call(call, location) {
            Replay::Recorded { position, entry } => {
                self.cursor.set(position + 1);
                Ok(Replayed::Recorded {
                    position,
                    entry: entry.clone(),
                })
            }
            Replay::Live { .. } => {
                // A cancelled activation stops at its first effect past its journal.
                let cancelled = self.cancelled.borrow().clone();
                if let Some(reason) = cancelled {
                    self.stop_with(Stop::Cancelled(reason));
                    return Err(());
                }
                Ok(Replayed::Live)
            }
            Replay::Unpatched => Ok(Replayed::Unpatched),
            Replay::Diverged(diagnostic) => {
                self.stop_with(Stop::Diverged(diagnostic));
                Err(())
            }
        }
    }

    /// The position the next live entry takes.
    fn next_position(writer: &FlowWriter) -> u32 {
        writer
            .record()
            .and_then(|r| r.function.as_ref())
            .map_or(0, |f| u32::try_from(f.journal.len()).unwrap_or(u32::MAX))
    }
}

enum Replayed {
    Recorded { position: u32, entry: JournalEntry },
    Live,
    Unpatched,
}

/// Most times one effect's commit is staged again on top of signals delivered meanwhile.
const MAX_REBASES: usize = 16;

/// A step body that panics fails its step (recorded as `Panicked`) rather than the run.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<T, F: Future<Output = Result<T, Failure>>> Future for CatchUnwind<F> {
    type Output = Result<T, Failure>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                std::task::Poll::Ready(Err(Failure::new("Panicked", message)))
            }
        }
    }
}

/// A run that must stop never resumes: the driver drops the function's task.
async fn halted<T>() -> T {
    std::future::pending().await
}

fn location(at: &'static Location<'static>) -> String {
    format!("{}:{}:{}", at.file(), at.line(), at.column())
}

/// The context of a durable function: its only way to the world. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) act: Rc<Activation>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("flow", &self.act.flow)
            .field("replaying", &self.act.replaying())
            .finish()
    }
}

impl Ctx {
    /// The activation's flow id.
    #[must_use]
    pub fn flow(&self) -> FlowId {
        self.act.flow
    }

    /// Whether the function is replaying its journal (effects return recorded outcomes).
    #[must_use]
    pub fn is_replaying(&self) -> bool {
        self.act.replaying()
    }

    /// The console loophole: logs `message` when live, stays quiet during replay, and is
    /// never journaled (so it may differ between versions).
    pub fn log(&self, message: impl std::fmt::Display) {
        if !self.act.replaying() {
            tracing::info!(flow = %self.act.flow, "{message}");
        }
    }

    /// Runs `body` (at least once: again after a crash before its result was recorded) and
    /// journals its value or its error. Replayed, it returns the recorded outcome and runs
    /// nothing; recorded errors keep their kind. The idempotency key for the outside world
    /// is `FLOW/POSITION`, the same on every run of this effect.
    #[track_caller]
    pub fn step<T, F, Fut>(&self, name: &str, body: F) -> impl Future<Output = Result<T, Failure>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let at = location(Location::caller());
        let (act, name) = (self.act.clone(), name.to_owned());
        async move {
            let replayed = match act.replay(Call::Step { name: &name }, &at) {
                Ok(replayed) => replayed,
                Err(()) => return halted().await,
            };
            if let Replayed::Recorded {
                entry: JournalEntry::Step { outcome, .. },
                ..
            } = replayed
            {
                return outcome.and_then(|value| {
                    serde_json::from_value(value)
                        .map_err(|e| Failure::new("InvalidRecordedValue", e.to_string()))
                });
            }
            let mut writer = act.writer.lock().await;
            let position = Activation::next_position(&writer);
            let in_flight = LiveOp::start(&act.live_ops);
            let key = format!("{}/{position}", act.flow);
            let outcome = CatchUnwind(Box::pin(body(key))).await;
            let recorded = outcome
                .and_then(|value| {
                    serde_json::to_value(value)
                        .map_err(|e| Failure::new("InvalidOutput", e.to_string()))
                })
                .and_then(Failure::within_result_limit);
            let entry = JournalEntry::Step {
                name: name.clone(),
                outcome: recorded.clone(),
            };
            let committed = act
                .record(
                    &mut writer,
                    vec![EventBody::JournalEntryRecorded { position, entry }],
                )
                .await;
            drop(in_flight);
            drop(writer);
            match committed {
                // What was recorded, exactly as a replay will return it.
                Ok(()) => recorded.and_then(|value| {
                    serde_json::from_value(value)
                        .map_err(|e| Failure::new("InvalidRecordedValue", e.to_string()))
                }),
                Err(()) => halted().await,
            }
        }
    }

    /// A journaled value: replayed as recorded, otherwise made by `make` and recorded.
    async fn value(
        act: Rc<Activation>,
        call: Call<'static>,
        at: String,
        make: impl FnOnce() -> JournalEntry,
    ) -> JournalEntry {
        match act.replay(call, &at) {
            Ok(Replayed::Recorded { entry, .. }) => entry,
            Ok(_) => {
                let mut writer = act.writer.lock().await;
                let position = Activation::next_position(&writer);
                let entry = make();
                let body = EventBody::JournalEntryRecorded {
                    position,
                    entry: entry.clone(),
                };
                match act.record(&mut writer, vec![body]).await {
                    Ok(()) => entry,
                    Err(()) => halted().await,
                }
            }
            Err(()) => halted().await,
        }
    }

    /// The time, journaled (the same on every replay).
    #[track_caller]
    pub fn now(&self) -> impl Future<Output = Timestamp> {
        let at = location(Location::caller());
        let act = self.act.clone();
        let clock = act.clock.clone();
        async move {
            match Self::value(act, Call::Now, at, move || JournalEntry::Now {
                time: clock.now(),
            })
            .await
            {
                JournalEntry::Now { time } => time,
                _ => halted().await,
            }
        }
    }

    /// A random number, journaled.
    #[track_caller]
    pub fn random(&self) -> impl Future<Output = u64> {
        let at = location(Location::caller());
        let act = self.act.clone();
        async move {
            let make = || JournalEntry::Random {
                value: rand::random(),
            };
            match Self::value(act, Call::Random, at, make).await {
                JournalEntry::Random { value } => value,
                _ => halted().await,
            }
        }
    }

    /// A new uuid (v4), journaled.
    #[track_caller]
    pub fn uuid(&self) -> impl Future<Output = uuid::Uuid> {
        let at = location(Location::caller());
        let act = self.act.clone();
        async move {
            let make = || JournalEntry::Uuid {
                value: uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string(),
            };
            match Self::value(act, Call::Uuid, at, make).await {
                JournalEntry::Uuid { value } => value.parse().unwrap_or_default(),
                _ => halted().await,
            }
        }
    }

    /// Whether the code of change `change` applies: `true` for new activations and for old
    /// ones that reach this point after the change was deployed; `false` when replaying a
    /// journal written before it (take the old path then).
    #[track_caller]
    pub fn patched(&self, change: &str) -> impl Future<Output = bool> {
        let at = location(Location::caller());
        let (act, change) = (self.act.clone(), change.to_owned());
        async move {
            match act.replay(Call::Patched { change: &change }, &at) {
                Ok(Replayed::Recorded { .. }) => true,
                Ok(Replayed::Unpatched) => false,
                Ok(Replayed::Live) => {
                    let mut writer = act.writer.lock().await;
                    let position = Activation::next_position(&writer);
                    let entry = JournalEntry::Patched { change };
                    let body = EventBody::JournalEntryRecorded { position, entry };
                    match act.record(&mut writer, vec![body]).await {
                        Ok(()) => true,
                        Err(()) => halted().await,
                    }
                }
                Err(()) => halted().await,
            }
        }
    }

    /// A durable timer: the activation sleeps (unloaded) until `duration` from when the
    /// sleep was first reached (recorded, so a replay sleeps until the same time).
    #[track_caller]
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        let until = self.act.clock.now().saturating_add(duration);
        self.sleep_at(until, Location::caller())
    }

    /// A durable timer until `time`.
    #[track_caller]
    pub fn sleep_until(&self, time: Timestamp) -> impl Future<Output = ()> {
        self.sleep_at(time, Location::caller())
    }

    fn sleep_at(
        &self,
        until: Timestamp,
        at: &'static Location<'static>,
    ) -> impl Future<Output = ()> {
        let at = location(at);
        let act = self.act.clone();
        async move {
            let (position, until) = match act.replay(Call::Sleep, &at) {
                Ok(Replayed::Recorded {
                    position,
                    entry: JournalEntry::Sleep { until },
                }) => {
                    if act.sleeps_ended.contains(&position) {
                        return;
                    }
                    (Some(position), until)
                }
                Ok(_) => (None, until),
                Err(()) => return halted().await,
            };
            let mut writer = act.writer.lock().await;
            let position = match position {
                Some(position) => position,
                None => {
                    // A new sleep: its entry goes with what follows (its end, or the sleep).
                    let position = Activation::next_position(&writer);
                    let entry = JournalEntry::Sleep { until };
                    let staged = act.ensure_live(&mut writer).and_then(|()| {
                        writer.stage(
                            act.clock.as_ref(),
                            vec![EventBody::JournalEntryRecorded { position, entry }],
                        )
                    });
                    if let Err(error) = staged {
                        act.stop_with(Stop::Write(error));
                        return halted().await;
                    }
                    position
                }
            };
            if act.replaying() {
                // The journal goes on past a sleep it does not record as ended.
                act.stop_with(Stop::Diverged(Diagnostic {
                    position,
                    logged: "a sleep that never ended, followed by more entries".into(),
                    attempted: "waited for the sleep".into(),
                    location: at,
                }));
                return halted().await;
            }
            if act.clock.now() >= until {
                let ended = vec![EventBody::SleepEnded { position }];
                if act.record(&mut writer, ended).await.is_err() {
                    halted::<()>().await;
                }
                return;
            }
            if let Err(error) = act.ensure_live(&mut writer) {
                act.stop_with(Stop::Write(error));
                return halted().await;
            }
            act.sleep_unless_cancelled(Some(NewTimer {
                name: format!("sleep-{position}"),
                due: until,
            }));
            halted().await
        }
    }

    /// Waits for the oldest signal named `name` that anyone sent to this flow (by flow id),
    /// consuming it. The activation sleeps (unloaded) until one arrives.
    #[track_caller]
    pub fn signal<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<T, Failure>> {
        let at = location(Location::caller());
        let (act, name) = (self.act.clone(), name.to_owned());
        async move {
            let decode = |value: serde_json::Value| {
                serde_json::from_value::<T>(value)
                    .map_err(|e| Failure::new("InvalidSignal", e.to_string()))
            };
            match act.replay(Call::Signal { name: &name }, &at) {
                Ok(Replayed::Recorded {
                    entry: JournalEntry::Signal { value, .. },
                    ..
                }) => return decode(value),
                Ok(_) => {}
                Err(()) => return halted().await,
            }
            let mut writer = act.writer.lock().await;
            let delivered = writer
                .record()
                .and_then(|r| r.function.as_ref())
                .and_then(|f| f.pending_signal(&name))
                .cloned();
            let Some(value) = delivered else {
                let awaited = act.ensure_live(&mut writer).and_then(|()| {
                    writer.stage(
                        act.clock.as_ref(),
                        vec![EventBody::SignalAwaited { name: name.clone() }],
                    )
                });
                match awaited {
                    Ok(()) => act.sleep_unless_cancelled(None),
                    Err(error) => act.stop_with(Stop::Write(error)),
                }
                return halted().await;
            };
            let position = Activation::next_position(&writer);
            let entry = JournalEntry::Signal {
                name: name.clone(),
                value: value.clone(),
            };
            let body = EventBody::JournalEntryRecorded { position, entry };
            match act.record(&mut writer, vec![body]).await {
                Ok(()) => decode(value),
                Err(()) => halted().await,
            }
        }
    }
}
