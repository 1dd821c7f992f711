//! Listeners: observe flow, atom and engine transitions (for logging, timing, progress).
//!
//! Transitions are delivered after they are durable (persist, then notify), in log order. A
//! listener runs on the engine's task, so it must be quick; hand heavy work to a channel.
//! With no listener registered the engine skips all of this: no copies, no calls.

use std::collections::HashMap;
use std::sync::Arc;

use flowstate_core::sync::{Mutex, RwLock};

use flowstate_core::machine::{EngineState, FlowState};
use flowstate_core::{EventBody, FlowId};

/// One transition, as listeners see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The flow changed state.
    Flow {
        /// The new state.
        to: FlowState,
    },
    /// An atom changed state (its state key: "running", "success", ...).
    Atom {
        /// The atom.
        atom: String,
        /// The new state's key.
        to: &'static str,
        /// Its result, on success.
        result: Option<serde_json::Value>,
        /// Its failure, on failure or revert failure.
        failure: Option<flowstate_core::Failure>,
    },
}

/// Receives transitions.
pub trait Listener: Send + Sync {
    /// A durable flow or atom transition.
    fn on_transition(&self, flow: FlowId, transition: &Transition);

    /// The engine state machine moved (not persisted; for timing and debugging).
    fn on_engine(&self, _flow: FlowId, _state: EngineState) {}
}

/// Fans transitions out to listeners, after they are durable.
#[derive(Default)]
pub(crate) struct Notifier {
    listeners: RwLock<Vec<Arc<dyn Listener>>>,
    /// Staged, not yet durable, per flow.
    staged: Mutex<HashMap<FlowId, Vec<Transition>>>,
}

impl Notifier {
    pub(crate) fn add(&self, listener: Arc<dyn Listener>) {
        self.listeners.write().push(listener);
    }

    pub(crate) fn wants(&self) -> bool {
        !self.listeners.read().is_empty()
    }

    pub(crate) fn engine(&self, flow: FlowId, state: EngineState) {
        for listener in self.listeners.read().iter() {
            listener.on_engine(flow, state);
        }
    }

    /// Remembers transitions that are staged; [`Notifier::flush`] delivers them.
    pub(crate) fn events(&self, flow: FlowId, events: &[EventBody]) {
        let transitions = events.iter().filter_map(|event| match event {
            EventBody::FlowStateChanged { to } => Some(Transition::Flow { to: *to }),
            EventBody::TaskStateChanged {
                atom,
                to,
                result,
                failure,
                ..
            } => Some(Transition::Atom {
                atom: atom.clone(),
                to: flowstate_core::Machine::key(*to),
                result: result.clone(),
                failure: failure.clone(),
            }),
            EventBody::RetryStateChanged {
                atom,
                to,
                result,
                failure,
                ..
            } => Some(Transition::Atom {
                atom: atom.clone(),
                to: flowstate_core::Machine::key(*to),
                result: result.clone(),
                failure: failure.clone(),
            }),
            _ => None,
        });
        self.staged
            .lock()
            .entry(flow)
            .or_default()
            .extend(transitions);
    }

    /// Forgets the staged transitions of `flow`: their append was refused.
    pub(crate) fn discard(&self, flow: FlowId) {
        self.staged.lock().remove(&flow);
    }

    /// Delivers the staged transitions of `flow`, now durable.
    pub(crate) fn flush(&self, flow: FlowId) {
        let ready = self.staged.lock().remove(&flow).unwrap_or_default();
        let listeners = self.listeners.read();
        for transition in &ready {
            for listener in listeners.iter() {
                listener.on_transition(flow, transition);
            }
        }
    }
}

/// A listener that records every transition as `"name STATE"` strings, for tests and
/// debugging (TaskFlow's `CaptureListener`).
#[derive(Debug, Default)]
pub struct CaptureListener {
    captured: Mutex<Vec<String>>,
}

impl CaptureListener {
    /// What was captured so far.
    #[must_use]
    pub fn captured(&self) -> Vec<String> {
        self.captured.lock().clone()
    }

    /// Forgets what was captured.
    pub fn clear(&self) {
        self.captured.lock().clear();
    }
}

impl Listener for CaptureListener {
    fn on_transition(&self, _flow: FlowId, transition: &Transition) {
        let line = match transition {
            Transition::Flow { to } => format!("flow {}", flowstate_core::Machine::label(*to)),
            Transition::Atom {
                atom, to, result, ..
            } => match result {
                Some(result) if *to == "success" => {
                    format!("{atom} {}({result})", to.to_uppercase())
                }
                _ => format!("{atom} {}", to.to_uppercase()),
            },
        };
        self.captured.lock().push(line);
    }
}
