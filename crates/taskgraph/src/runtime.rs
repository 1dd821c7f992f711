//! The scheduler, sans I/O: given the compiled graph and the flow's folded state, it decides
//! which transitions to record and which work to launch. It keeps no atom state of its own:
//! every decision is a function of the log (through [`FlowRecord`]), which is what makes
//! resuming after a crash depend only on what is stored.
//!
//! Readiness is checked incrementally: after an atom changes, only its neighbours (and its
//! retry) are re-examined, each by looking at its own predecessors or successors. So the cost
//! per task depends on the task's degree, not on the flow's size (TaskFlow rescans successors
//! breadth-first and becomes quadratic in chain length).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flowstate_core::machine::{FlowState, RetryState, TaskState};
use flowstate_core::{AtomRecord, AtomState, EventBody, Failure, FlowRecord, Intention};
use serde_json::Value;

use crate::compile::{AtomKind, Graph, Source};
use crate::retry::{Decision, History};
use crate::task::Inputs;

pub use flowstate_core::limits::MAX_RESULT_BYTES;

/// An atom's state, the same for tasks and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting.
    Pending,
    /// Executing.
    Running,
    /// Executed.
    Success,
    /// Execute failed.
    Failure,
    /// Reverting.
    Reverting,
    /// Reverted.
    Reverted,
    /// Revert failed (terminal).
    RevertFailure,
    /// Skipped.
    Ignore,
    /// A retry preparing its next attempt.
    Retrying,
}

impl Phase {
    fn of(state: AtomState) -> Self {
        match state {
            AtomState::Task(state) => match state {
                TaskState::Pending => Self::Pending,
                TaskState::Running => Self::Running,
                TaskState::Success => Self::Success,
                TaskState::Failure => Self::Failure,
                TaskState::Reverting => Self::Reverting,
                TaskState::Reverted => Self::Reverted,
                TaskState::RevertFailure => Self::RevertFailure,
                TaskState::Ignore => Self::Ignore,
            },
            AtomState::Retry(state) => match state {
                RetryState::Pending => Self::Pending,
                RetryState::Running => Self::Running,
                RetryState::Success => Self::Success,
                RetryState::Failure => Self::Failure,
                RetryState::Reverting => Self::Reverting,
                RetryState::Reverted => Self::Reverted,
                RetryState::RevertFailure => Self::RevertFailure,
                RetryState::Ignore => Self::Ignore,
                RetryState::Retrying => Self::Retrying,
            },
        }
    }

    /// The phase of a stored atom; a revert failure that was repaired counts as reverted.
    fn of_record(record: &AtomRecord) -> Self {
        match Self::of(record.state) {
            Self::RevertFailure if record.revert_recovered => Self::Reverted,
            phase => phase,
        }
    }

    fn task(self) -> TaskState {
        match self {
            Self::Pending => TaskState::Pending,
            Self::Running => TaskState::Running,
            Self::Success => TaskState::Success,
            Self::Failure => TaskState::Failure,
            Self::Reverting => TaskState::Reverting,
            Self::Reverted => TaskState::Reverted,
            Self::RevertFailure => TaskState::RevertFailure,
            // Tasks never retry; the graph only asks this of retries.
            Self::Ignore | Self::Retrying => TaskState::Ignore,
        }
    }

    fn retry(self) -> RetryState {
        match self {
            Self::Pending => RetryState::Pending,
            Self::Running => RetryState::Running,
            Self::Success => RetryState::Success,
            Self::Failure => RetryState::Failure,
            Self::Reverting => RetryState::Reverting,
            Self::Reverted => RetryState::Reverted,
            Self::RevertFailure => RetryState::RevertFailure,
            Self::Ignore => RetryState::Ignore,
            Self::Retrying => RetryState::Retrying,
        }
    }

    /// Done with, from a successor's point of view when reverting.
    fn settled_for_revert(self) -> bool {
        matches!(self, Self::Pending | Self::Reverted | Self::Ignore)
    }
}

/// Work to launch outside the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Run a task's `execute`.
    Execute {
        /// The atom.
        atom: usize,
        /// Its inputs.
        inputs: Inputs,
        /// The attempt number (for the idempotency key).
        attempt: u32,
    },
    /// Run a task's `revert`.
    Revert {
        /// The atom.
        atom: usize,
        /// Its execute and revert inputs.
        inputs: Inputs,
        /// What its execute did.
        outcome: crate::task::Outcome,
        /// The attempt number of the execution being undone.
        attempt: u32,
    },
}

/// What one scheduling round decided.
#[derive(Debug, Default)]
pub struct Step {
    /// Transitions to record (one atomic append) before launching the work.
    pub events: Vec<EventBody>,
    /// Work to launch once the events are durable.
    pub launch: Vec<Work>,
    /// Atoms that could start but were held back (suspension or capacity).
    pub held_back: bool,
    /// The round stopped early (after a retry reset): schedule again once `events` are
    /// recorded, even if nothing was launched.
    pub again: bool,
}

/// The scheduler of one flow run.
#[derive(Debug)]
pub struct Runtime {
    graph: Arc<Graph>,
    /// Atoms whose readiness may have changed since they were last examined.
    candidates: BTreeSet<usize>,
    /// Atoms whose execute or revert is in flight.
    running: BTreeSet<usize>,
    /// Readiness checks made so far: the scheduler's cost, which must grow with the number of
    /// transitions and not with the flow's size (see `tests/faults.rs`).
    examinations: u64,
    /// Unrepaired revert failures, counted from the record on the first round and then kept
    /// up to date by `reverted` and `revert_retried` (so no round scans every atom).
    revert_failures: Option<usize>,
}

/// The state an atom would have after `pending` events: the record's, overlaid with changes
/// made earlier in the same decision.
struct View<'a> {
    record: &'a FlowRecord,
    overlay: BTreeMap<usize, (Phase, Intention)>,
    /// Results decided earlier in the same round (retry controllers run inline).
    results: BTreeMap<usize, Value>,
    graph: Arc<Graph>,
}

impl View<'_> {
    fn get(&self, atom: usize) -> (Phase, Intention) {
        if let Some(state) = self.overlay.get(&atom) {
            return *state;
        }
        self.record
            .atoms
            .get(&self.graph.atoms[atom].name)
            .map_or((Phase::Pending, Intention::Execute), |r| {
                (Phase::of_record(r), r.intention)
            })
    }

    fn atom(&self, atom: usize) -> Option<&AtomRecord> {
        self.record.atoms.get(&self.graph.atoms[atom].name)
    }

    fn result(&self, atom: usize) -> Option<&Value> {
        self.results
            .get(&atom)
            .or_else(|| self.atom(atom)?.result.as_ref())
    }
}

impl Runtime {
    /// A scheduler for `graph`; every atom is examined on the first round.
    #[must_use]
    pub fn new(graph: Arc<Graph>) -> Self {
        let candidates = graph.order.iter().copied().collect();
        Self {
            graph,
            candidates,
            running: BTreeSet::new(),
            examinations: 0,
            revert_failures: None,
        }
    }

    /// The compiled graph.
    #[must_use]
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// Readiness checks made so far.
    #[must_use]
    pub fn examinations(&self) -> u64 {
        self.examinations
    }

    /// Whether any execute or revert is in flight.
    #[must_use]
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Adds an atom that changed, its neighbours and its retries to `set`.
    fn touch_into(&self, set: &mut BTreeSet<usize>, atom: usize) {
        let compiled = &self.graph.atoms[atom];
        set.insert(atom);
        set.extend(compiled.preds.iter().copied());
        set.extend(compiled.succs.iter().copied());
        let mut retry = compiled.retry;
        while let Some(r) = retry {
            set.insert(r);
            retry = self.graph.atoms[r].retry;
        }
    }

    /// Marks an atom whose state changed: its neighbours and retries may now be ready.
    fn touch(&mut self, atom: usize) {
        let mut candidates = std::mem::take(&mut self.candidates);
        self.touch_into(&mut candidates, atom);
        self.candidates = candidates;
    }

    /// Marks atoms whose work is in flight (a scheduler rebuilt while they run): they are
    /// not examined until their outcome is recorded.
    pub fn in_flight(&mut self, atoms: impl IntoIterator<Item = usize>) {
        self.running.extend(atoms);
    }

    /// A cancellation: every atom that is not reverted or ignored gets the intention REVERT,
    /// as when a failure at the top reverts everything. Nothing new executes, atoms that run
    /// are reverted once they finish, and done atoms revert in reverse order.
    pub fn cancel(&mut self, record: &FlowRecord) -> Vec<EventBody> {
        let mut view = View {
            record,
            overlay: BTreeMap::new(),
            results: BTreeMap::new(),
            graph: self.graph.clone(),
        };
        let mut step = Step::default();
        let every: Vec<usize> = (0..self.graph.atoms.len()).collect();
        for changed in self.mark_revert(&mut view, &mut step, &every) {
            self.touch(changed);
        }
        step.events
    }

    /// Reverts that failed and were not repaired: re-running a FAILURE flow runs them again.
    pub fn failed_reverts(&mut self, record: &FlowRecord) -> Vec<Work> {
        let view = View {
            record,
            overlay: BTreeMap::new(),
            results: BTreeMap::new(),
            graph: self.graph.clone(),
        };
        let mut work = Vec::new();
        for index in 0..self.graph.atoms.len() {
            let is_task = matches!(self.graph.atoms[index].kind, AtomKind::Task(_));
            if view.get(index).0 != Phase::RevertFailure || !is_task {
                continue;
            }
            work.push(Work::Revert {
                atom: index,
                inputs: Self::view_inputs(&view, index, true),
                outcome: outcome_of(view.atom(index)),
                attempt: view.atom(index).map_or(0, |a| a.executions),
            });
            self.running.insert(index);
        }
        work
    }

    /// Records the outcome of running a failed revert again: a success repairs the atom.
    pub fn revert_retried(&mut self, atom: usize, outcome: Result<(), Failure>) -> Vec<EventBody> {
        self.running.remove(&atom);
        self.touch(atom);
        if outcome.is_ok() {
            if let Some(count) = self.revert_failures.as_mut() {
                *count = count.saturating_sub(1);
            }
        }
        match outcome {
            Ok(()) => vec![EventBody::AtomRevertRecovered {
                atom: self.graph.atoms[atom].name.clone(),
            }],
            Err(_) => Vec::new(),
        }
    }

    /// Work interrupted by a crash: atoms the log shows RUNNING or REVERTING are run again,
    /// with the attempt number they had (no new event: the state is already recorded).
    pub fn resume_in_flight(&mut self, record: &FlowRecord) -> Vec<Work> {
        let mut work = Vec::new();
        for index in 0..self.graph.atoms.len() {
            let view = View {
                record,
                overlay: BTreeMap::new(),
                results: BTreeMap::new(),
                graph: self.graph.clone(),
            };
            let (phase, _) = view.get(index);
            let attempt = view.atom(index).map_or(0, |a| a.executions);
            match (phase, &self.graph.atoms[index].kind) {
                (Phase::Running, AtomKind::Task(_)) => {
                    work.push(Work::Execute {
                        atom: index,
                        inputs: self.inputs(record, index, false),
                        attempt,
                    });
                }
                (Phase::Reverting, AtomKind::Task(_)) => {
                    let outcome = outcome_of(view.atom(index));
                    work.push(Work::Revert {
                        atom: index,
                        inputs: self.inputs(record, index, true),
                        outcome,
                        attempt,
                    });
                }
                _ => continue,
            }
            self.running.insert(index);
        }
        work
    }

    /// Reads an atom's inputs from the record (results of earlier atoms, initial inputs,
    /// injected values).
    #[must_use]
    pub fn inputs(&self, record: &FlowRecord, atom: usize, with_revert: bool) -> Inputs {
        let view = View {
            record,
            overlay: BTreeMap::new(),
            results: BTreeMap::new(),
            graph: self.graph.clone(),
        };
        Self::view_inputs(&view, atom, with_revert)
    }

    fn view_inputs(view: &View<'_>, atom: usize, with_revert: bool) -> Inputs {
        let graph = &view.graph;
        let compiled = &graph.atoms[atom];
        let mut inputs = Inputs::new();
        let sources = compiled.inputs.iter().chain(
            with_revert
                .then_some(&compiled.revert_inputs)
                .into_iter()
                .flatten(),
        );
        for (argument, source) in sources {
            let value = match source {
                Source::Initial(name) => view.record.input.get(name).cloned(),
                Source::Atom {
                    atom: provider,
                    name,
                } => view
                    .result(*provider)
                    .and_then(|result| match &graph.atoms[*provider].kind {
                        AtomKind::Task(task) => task.provides.extract(result, name),
                        AtomKind::Retry(_) => Some(result.clone()),
                    }),
            };
            inputs.insert(argument.clone(), value.unwrap_or(Value::Null));
        }
        if let AtomKind::Task(task) = &compiled.kind {
            inputs.extend(task.inject.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        inputs
    }

    /// One scheduling round: up to `capacity` new executes or reverts. With `stopping` (a
    /// suspension or an unrecoverable failure) nothing new starts; `held_back` then says
    /// whether something could have.
    pub fn schedule(&mut self, record: &FlowRecord, capacity: usize, stopping: bool) -> Step {
        let mut step = Step::default();
        let mut view = View {
            record,
            overlay: BTreeMap::new(),
            results: BTreeMap::new(),
            graph: self.graph.clone(),
        };
        let failed_reverts = *self.revert_failures.get_or_insert_with(|| {
            record
                .atoms
                .values()
                .filter(|a| Phase::of_record(a) == Phase::RevertFailure)
                .count()
        });
        let blocked = failed_reverts > 0;
        let mut examined = std::mem::take(&mut self.candidates);
        let mut retouched = BTreeSet::new();
        while let Some(atom) = examined.pop_first() {
            if self.running.contains(&atom) {
                continue;
            }
            self.examinations += 1;
            let (phase, intention) = view.get(atom);
            let action = self.readiness(&view, atom, phase, intention, blocked);
            let Some(action) = action else { continue };
            if stopping || step.launch.len() >= capacity {
                step.held_back = true;
                retouched.insert(atom);
                continue;
            }
            let changed = match action {
                Ready::Execute => self.start_execute(&mut view, &mut step, atom),
                Ready::Revert => self.start_revert(&mut view, &mut step, atom),
                Ready::Retry => {
                    // One retry per round: a controller that keeps failing inside a retrying
                    // scope cannot loop without the engine getting a say (a suspension) and
                    // each round's append stays small.
                    let changed = self.start_retry(&mut view, &mut step, atom);
                    for changed in changed {
                        self.touch_into(&mut retouched, changed);
                    }
                    retouched.extend(examined);
                    step.again = true;
                    break;
                }
            };
            for changed in changed {
                self.touch_into(&mut examined, changed);
            }
        }
        self.candidates = retouched;
        step
    }

    fn readiness(
        &self,
        view: &View<'_>,
        atom: usize,
        phase: Phase,
        intention: Intention,
        blocked: bool,
    ) -> Option<Ready> {
        let compiled = &self.graph.atoms[atom];
        match (phase, intention) {
            (Phase::Pending, Intention::Execute) if !blocked => {
                let preds_done = compiled.preds.iter().all(|&p| {
                    let (phase, intention) = view.get(p);
                    matches!(phase, Phase::Success | Phase::Ignore)
                        && matches!(intention, Intention::Execute | Intention::Ignore)
                });
                preds_done.then_some(Ready::Execute)
            }
            (Phase::Success | Phase::Failure, Intention::Revert) if !blocked => {
                let succs_done = compiled
                    .succs
                    .iter()
                    .all(|&s| view.get(s).0.settled_for_revert());
                let scope_done = compiled
                    .scope
                    .iter()
                    .all(|&s| view.get(s).0.settled_for_revert());
                (succs_done && scope_done).then_some(Ready::Revert)
            }
            (Phase::Success, Intention::Retry) if !blocked => {
                let scope_done = compiled
                    .scope
                    .iter()
                    .all(|&s| view.get(s).0.settled_for_revert());
                scope_done.then_some(Ready::Retry)
            }
            _ => None,
        }
    }

    /// Starts an atom's execute; returns the atoms whose state changed.
    fn start_execute(&mut self, view: &mut View<'_>, step: &mut Step, atom: usize) -> Vec<usize> {
        let compiled = &self.graph.atoms[atom];
        if !self.deciders_allow(view, atom) {
            return self.ignore_from(view, step, atom);
        }
        match &compiled.kind {
            AtomKind::Task(_) => {
                let attempt = view.atom(atom).map_or(0, |a| a.executions) + 1;
                step.events.push(self.transition(
                    atom,
                    Phase::Running,
                    Intention::Execute,
                    None,
                    None,
                ));
                view.overlay
                    .insert(atom, (Phase::Running, Intention::Execute));
                step.launch.push(Work::Execute {
                    atom,
                    inputs: Self::view_inputs(view, atom, false),
                    attempt,
                });
                self.running.insert(atom);
                vec![atom]
            }
            AtomKind::Retry(_) => {
                step.events.push(self.transition(
                    atom,
                    Phase::Running,
                    Intention::Execute,
                    None,
                    None,
                ));
                self.run_controller(view, step, atom)
            }
        }
    }

    /// Runs a retry controller's execute inline (it is cheap and deterministic) and records
    /// its outcome.
    fn run_controller(&mut self, view: &mut View<'_>, step: &mut Step, atom: usize) -> Vec<usize> {
        let attempts = view
            .atom(atom)
            .map(|a| a.history.clone())
            .unwrap_or_default();
        self.controller_outcome(view, step, atom, &attempts)
    }

    /// Runs the controller with `attempts` as its history and records SUCCESS with the value
    /// it provides, or FAILURE and the resolution of that failure.
    fn controller_outcome(
        &mut self,
        view: &mut View<'_>,
        step: &mut Step,
        atom: usize,
        attempts: &[flowstate_core::RetryAttempt],
    ) -> Vec<usize> {
        let AtomKind::Retry(retry) = &self.graph.atoms[atom].kind else {
            return Vec::new();
        };
        let no_failures = BTreeMap::new();
        let history = History {
            attempts,
            current: &no_failures,
        };
        let inputs = Self::view_inputs(view, atom, false);
        match retry.controller.execute(&history, &inputs) {
            Ok(value) => {
                let event = self.transition(
                    atom,
                    Phase::Success,
                    Intention::Execute,
                    Some(value.clone()),
                    None,
                );
                step.events.push(event);
                view.overlay
                    .insert(atom, (Phase::Success, Intention::Execute));
                view.results.insert(atom, value);
                vec![atom]
            }
            Err(failure) => {
                let event = self.transition(
                    atom,
                    Phase::Failure,
                    Intention::Revert,
                    None,
                    Some(failure.clone()),
                );
                step.events.push(event);
                view.overlay
                    .insert(atom, (Phase::Failure, Intention::Revert));
                let mut changed = vec![atom];
                changed.extend(self.resolve(view, step, atom, failure));
                changed
            }
        }
    }

    fn deciders_allow(&self, view: &View<'_>, atom: usize) -> bool {
        let compiled = &self.graph.atoms[atom];
        if compiled.deciders.is_empty() {
            return true;
        }
        let history: BTreeMap<String, Value> = compiled
            .preds
            .iter()
            .filter(|&&p| view.get(p).0 == Phase::Success)
            .map(|&p| {
                let result = view
                    .atom(p)
                    .and_then(|a| a.result.clone())
                    .unwrap_or_default();
                (self.graph.atoms[p].name.clone(), result)
            })
            .collect();
        compiled
            .deciders
            .iter()
            .filter(|(source, _)| view.get(*source).0 != Phase::Ignore)
            .all(|(_, decider)| decider(&history))
    }

    /// Ignores `atom` and everything after it that has not run (a decider said no).
    fn ignore_from(&self, view: &mut View<'_>, step: &mut Step, atom: usize) -> Vec<usize> {
        let mut changed = Vec::new();
        let mut stack = vec![atom];
        let mut seen = BTreeSet::new();
        while let Some(next) = stack.pop() {
            if !seen.insert(next) {
                continue;
            }
            if view.get(next) != (Phase::Pending, Intention::Execute) {
                continue;
            }
            step.events
                .push(self.transition(next, Phase::Ignore, Intention::Ignore, None, None));
            view.overlay
                .insert(next, (Phase::Ignore, Intention::Ignore));
            changed.push(next);
            stack.extend(self.graph.atoms[next].succs.iter().rev().copied());
        }
        changed
    }

    fn start_revert(&mut self, view: &mut View<'_>, step: &mut Step, atom: usize) -> Vec<usize> {
        let compiled = &self.graph.atoms[atom];
        step.events
            .push(self.transition(atom, Phase::Reverting, Intention::Revert, None, None));
        match &compiled.kind {
            AtomKind::Task(_) => {
                view.overlay
                    .insert(atom, (Phase::Reverting, Intention::Revert));
                let attempt = view.atom(atom).map_or(0, |a| a.executions);
                step.launch.push(Work::Revert {
                    atom,
                    inputs: Self::view_inputs(view, atom, true),
                    outcome: outcome_of(view.atom(atom)),
                    attempt,
                });
                self.running.insert(atom);
            }
            AtomKind::Retry(_) => {
                // A controller has nothing to undo.
                step.events.push(self.transition(
                    atom,
                    Phase::Reverted,
                    Intention::Revert,
                    None,
                    None,
                ));
                view.overlay
                    .insert(atom, (Phase::Reverted, Intention::Revert));
            }
        }
        vec![atom]
    }

    /// The scope of a retry that decided RETRY has reverted: record the attempt in the
    /// history, reset the scope, and run the controller again.
    fn start_retry(&mut self, view: &mut View<'_>, step: &mut Step, atom: usize) -> Vec<usize> {
        let scope = self.graph.atoms[atom].scope.clone();
        let stuck = scope.iter().any(|&s| {
            view.atom(s)
                .is_some_and(|a| a.state.key() == "revert_failure")
        });
        if stuck {
            // REVERT_FAILURE is terminal, even once repaired: the scope cannot be reset, so
            // the retry gives up as if it had decided REVERT.
            let failure = Failure::new(
                "RevertFailed",
                "an atom of the scope failed to revert, so the scope cannot run again",
            );
            return self.resolve(view, step, atom, failure);
        }
        let failures: BTreeMap<String, Failure> = scope
            .iter()
            .filter_map(|&s| {
                let record = view.atom(s)?;
                Some((self.graph.atoms[s].name.clone(), record.failure.clone()?))
            })
            .collect();
        let failures_of_attempt = failures.clone();
        step.events.push(EventBody::RetryStateChanged {
            atom: self.graph.atoms[atom].name.clone(),
            to: RetryState::Retrying,
            intention: Intention::Execute,
            result: None,
            failure: None,
            failures,
        });
        view.overlay
            .insert(atom, (Phase::Retrying, Intention::Execute));
        let mut changed = vec![atom];
        for &s in &scope {
            match view.get(s) {
                (Phase::Reverted | Phase::Ignore, _) => {
                    step.events.push(self.transition(
                        s,
                        Phase::Pending,
                        Intention::Execute,
                        None,
                        None,
                    ));
                }
                (Phase::Pending, Intention::Execute) => continue,
                (Phase::Pending, _) => step.events.push(self.intention(s, Intention::Execute)),
                _ => continue,
            }
            view.overlay.insert(s, (Phase::Pending, Intention::Execute));
            changed.push(s);
        }
        step.events
            .push(self.transition(atom, Phase::Running, Intention::Execute, None, None));
        // The fold moves the ended attempt into the history when it applies RETRYING; the
        // controller sees the same history now.
        let mut attempts = view
            .atom(atom)
            .map(|a| a.history.clone())
            .unwrap_or_default();
        attempts.push(flowstate_core::RetryAttempt {
            value: view.result(atom).cloned().unwrap_or_default(),
            failures: failures_of_attempt,
        });
        changed.extend(self.controller_outcome(view, step, atom, &attempts));
        changed
    }

    /// Records the outcome of an execute, and on failure decides what to revert.
    pub fn executed(
        &mut self,
        record: &FlowRecord,
        atom: usize,
        outcome: Result<Value, Failure>,
    ) -> Vec<EventBody> {
        // A result the log cannot hold is the task's failure, not the engine's: recorded,
        // resolved like any failure, so the flow never wedges on it.
        let outcome = outcome.and_then(Failure::within_result_limit);
        self.running.remove(&atom);
        self.touch(atom);
        let mut step = Step::default();
        let mut view = View {
            record,
            overlay: BTreeMap::new(),
            results: BTreeMap::new(),
            graph: self.graph.clone(),
        };
        let intention = view.get(atom).1;
        match outcome {
            Ok(value) => {
                step.events.push(self.transition(
                    atom,
                    Phase::Success,
                    intention,
                    Some(value),
                    None,
                ));
            }
            Err(failure) => {
                step.events.push(self.transition(
                    atom,
                    Phase::Failure,
                    Intention::Revert,
                    None,
                    Some(failure.clone()),
                ));
                view.overlay
                    .insert(atom, (Phase::Failure, Intention::Revert));
                let changed = self.resolve(&mut view, &mut step, atom, failure);
                for changed in changed {
                    self.touch(changed);
                }
            }
        }
        step.events
    }

    /// Records the outcome of a revert.
    pub fn reverted(&mut self, atom: usize, outcome: Result<(), Failure>) -> Vec<EventBody> {
        self.running.remove(&atom);
        self.touch(atom);
        if outcome.is_err() {
            *self.revert_failures.get_or_insert(0) += 1;
        }
        match outcome {
            Ok(()) => vec![self.transition(atom, Phase::Reverted, Intention::Revert, None, None)],
            Err(failure) => vec![self.transition(
                atom,
                Phase::RevertFailure,
                Intention::Revert,
                None,
                Some(failure),
            )],
        }
    }

    /// Failure resolution: ask the nearest retry; RETRY reverts and re-runs its scope, REVERT
    /// defers to the enclosing retry, REVERT_ALL (or no retry at all) reverts everything.
    fn resolve(
        &self,
        view: &mut View<'_>,
        step: &mut Step,
        failed: usize,
        failure: Failure,
    ) -> Vec<usize> {
        let mut retry = self.graph.atoms[failed].retry;
        loop {
            let Some(r) = retry else {
                return self.mark_revert(
                    view,
                    step,
                    &(0..self.graph.atoms.len()).collect::<Vec<_>>(),
                );
            };
            let (phase, intention) = view.get(r);
            if intention != Intention::Execute || phase != Phase::Success {
                // Already being retried or reverted by an earlier decision: just revert the
                // failed atom with the rest of that scope.
                let scope = self.graph.atoms[r].scope.clone();
                return self.mark_revert(view, step, &scope);
            }
            let AtomKind::Retry(controller) = &self.graph.atoms[r].kind else {
                return Vec::new();
            };
            let attempts = view.atom(r).map(|a| a.history.clone()).unwrap_or_default();
            let mut current: BTreeMap<String, Failure> = self.graph.atoms[r]
                .scope
                .iter()
                .filter_map(|&s| {
                    Some((
                        self.graph.atoms[s].name.clone(),
                        view.atom(s)?.failure.clone()?,
                    ))
                })
                .collect();
            current.insert(self.graph.atoms[failed].name.clone(), failure.clone());
            let history = History {
                attempts: &attempts,
                current: &current,
            };
            let inputs = Self::view_inputs(view, r, false);
            match controller.controller.on_failure(&history, &inputs) {
                Decision::Retry => {
                    step.events.push(self.intention(r, Intention::Retry));
                    view.overlay.insert(r, (phase, Intention::Retry));
                    let scope = self.graph.atoms[r].scope.clone();
                    let mut changed = vec![r];
                    changed.extend(self.mark_revert(view, step, &scope));
                    return changed;
                }
                Decision::Revert => retry = self.graph.atoms[r].retry,
                Decision::RevertAll => retry = None,
            }
        }
    }

    /// Gives every atom of `atoms` the intention REVERT (one event each where it changes).
    fn mark_revert(&self, view: &mut View<'_>, step: &mut Step, atoms: &[usize]) -> Vec<usize> {
        let mut changed = Vec::new();
        for &atom in atoms {
            let (phase, intention) = view.get(atom);
            if intention == Intention::Revert
                || matches!(
                    phase,
                    Phase::Reverted | Phase::RevertFailure | Phase::Ignore
                )
            {
                continue;
            }
            step.events.push(self.intention(atom, Intention::Revert));
            view.overlay.insert(atom, (phase, Intention::Revert));
            changed.push(atom);
        }
        changed
    }

    /// The flow's final state once nothing runs and nothing can start, or `None` if work
    /// remains (for a suspension: `Some(SUSPENDED)` when work was held back).
    #[must_use]
    pub fn outcome(&self, record: &FlowRecord, held_back: bool) -> FlowState {
        let view = View {
            record,
            overlay: BTreeMap::new(),
            results: BTreeMap::new(),
            graph: self.graph.clone(),
        };
        let phases: Vec<Phase> = (0..self.graph.atoms.len()).map(|a| view.get(a).0).collect();
        if phases.contains(&Phase::RevertFailure) {
            FlowState::Failure
        } else if phases
            .iter()
            .all(|p| matches!(p, Phase::Success | Phase::Ignore))
        {
            FlowState::Success
        } else if held_back {
            FlowState::Suspended
        } else {
            FlowState::Reverted
        }
    }

    fn transition(
        &self,
        atom: usize,
        to: Phase,
        intention: Intention,
        result: Option<Value>,
        failure: Option<Failure>,
    ) -> EventBody {
        let compiled = &self.graph.atoms[atom];
        match compiled.kind {
            AtomKind::Task(_) => EventBody::TaskStateChanged {
                atom: compiled.name.clone(),
                to: to.task(),
                intention,
                result,
                failure,
            },
            AtomKind::Retry(_) => EventBody::RetryStateChanged {
                atom: compiled.name.clone(),
                to: to.retry(),
                intention,
                result,
                failure,
                failures: BTreeMap::new(),
            },
        }
    }

    fn intention(&self, atom: usize, intention: Intention) -> EventBody {
        let compiled = &self.graph.atoms[atom];
        EventBody::AtomIntentionChanged {
            atom: compiled.name.clone(),
            retry: compiled.is_retry(),
            intention,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ready {
    Execute,
    Revert,
    Retry,
}

fn outcome_of(record: Option<&AtomRecord>) -> crate::task::Outcome {
    match record {
        Some(AtomRecord {
            failure: Some(failure),
            state,
            ..
        }) if Phase::of(*state) != Phase::Success => crate::task::Outcome::Failure(failure.clone()),
        Some(record) => crate::task::Outcome::Result(record.result.clone().unwrap_or_default()),
        None => crate::task::Outcome::Result(Value::Null),
    }
}
