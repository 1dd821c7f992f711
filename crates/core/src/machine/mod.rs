//! The state machines of `docs/spec/state-machines.md` (the repository's copy of the shared
//! spec), as data.
//!
//! Each machine is an enum whose transitions are one table, declared with `state_machine!`
//! next to the enum. [`Machine::transition`] is the only way to ask whether `from → to` may
//! happen; it answers with one of three outcomes, exactly as TaskFlow's `check_*_transition`:
//!
//! - [`Transition::Allowed`]: the pair is in the table; record it.
//! - [`Transition::Ignored`]: a no-op by the spec (same state, or a listed ignored pair, such as
//!   suspending a flow that already finished); record nothing.
//! - `Err(`[`InvalidState`]`)`: every other pair. Callers must surface it, never swallow it.
//!
//! **Invariant:** the tables of `tables.rs` are a transcription of the spec and nothing else.
//! The step and work item machines of plans (`plan_steps.rs`) are the one exception: the spec
//! leaves them out, so they are ours, in the same form. The test `tests/spec_tables.rs`
//! enumerates every `(from, to)` pair of every machine and compares the answer with an
//! independent transcription of the same spec text (for steps and work items, of the tables as
//! the code has them).

mod plan_steps;
mod tables;

use std::fmt;

pub use plan_steps::{StepState, WorkState};
pub use tables::{
    ActivationState, EngineState, FlowState, JobState, PairState, PlanState, RetryState, TaskState,
};

/// What the tables say about one requested transition that is not refused.
#[must_use = "an Allowed transition must be recorded and an Ignored one must not"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The pair is listed as allowed: the caller records the change.
    Allowed,
    /// The spec lists the pair as a no-op (including `from == to`): nothing is recorded.
    Ignored,
}

/// A transition that the spec tables do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {machine} transition {from} -> {to}: not allowed by the state table")]
#[non_exhaustive]
pub struct InvalidState {
    /// Which machine refused ("flow", "task", ...).
    pub machine: &'static str,
    /// The state the machine was in, as the spec names it.
    pub from: &'static str,
    /// The state that was requested, as the spec names it.
    pub to: &'static str,
}

/// A state machine from the spec: a finite set of states and a transition table.
pub trait Machine: Copy + Eq + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// The machine's name in error messages ("flow", "task", "completion pair", ...).
    const MACHINE: &'static str;
    /// Every state, in the order the spec lists them.
    const STATES: &'static [Self];
    /// The state a new instance is born in.
    const INITIAL: Self;

    /// The state's name as the spec writes it ("RUNNING", "active current", ...).
    fn label(self) -> &'static str;

    /// The state's stable key in logs, indexes and the CLI ("running", "active_current", ...).
    fn key(self) -> &'static str;

    /// Parses a state from its key or its spec label (case-insensitive).
    fn parse(text: &str) -> Option<Self> {
        Self::STATES.iter().copied().find(|state| {
            state.key().eq_ignore_ascii_case(text) || state.label().eq_ignore_ascii_case(text)
        })
    }

    /// Classifies `from → to` against the spec table.
    fn transition(from: Self, to: Self) -> Result<Transition, InvalidState>;

    /// Moves `self` to `to` when the table allows it; leaves it unchanged when the table says
    /// the request is ignored; refuses otherwise.
    fn advance(&mut self, to: Self) -> Result<Transition, InvalidState> {
        let outcome = Self::transition(*self, to)?;
        if outcome == Transition::Allowed {
            *self = to;
        }
        Ok(outcome)
    }
}

/// Declares a state machine: the enum, its labels and keys, and its table.
///
/// `allowed` lists `FROM -> [TO, ...]`; `ignored` lists `[FROM, ...] -> [TO, ...]` cross
/// products of no-op pairs. A pair in neither list is refused, except `from == to`, which the
/// spec makes a no-op for every machine.
macro_rules! state_machine {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $machine:literal, initial $initial:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal / $key:literal, )+
        }
        allowed { $( $from:ident -> [ $($to:ident),* $(,)? ] ),* $(,)? }
        ignored { $( [ $($ifrom:ident),* $(,)? ] -> [ $($ito:ident),* $(,)? ] ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $key)] $variant, )+
        }

        impl $crate::machine::Machine for $name {
            const MACHINE: &'static str = $machine;
            const STATES: &'static [Self] = &[ $( Self::$variant, )+ ];
            const INITIAL: Self = Self::$initial;

            fn label(self) -> &'static str {
                match self { $( Self::$variant => $label, )+ }
            }

            fn key(self) -> &'static str {
                match self { $( Self::$variant => $key, )+ }
            }

            #[allow(unreachable_patterns, unused_variables)]
            fn transition(
                from: Self,
                to: Self,
            ) -> Result<$crate::machine::Transition, $crate::machine::InvalidState> {
                use $crate::machine::Transition;
                if from == to {
                    return Ok(Transition::Ignored);
                }
                match (from, to) {
                    $( $( (Self::$from, Self::$to) => return Ok(Transition::Allowed), )* )*
                    _ => {}
                }
                $(
                    if matches!(from, $(Self::$ifrom)|*) && matches!(to, $(Self::$ito)|*) {
                        return Ok(Transition::Ignored);
                    }
                )*
                Err($crate::machine::InvalidState {
                    machine: $machine,
                    from: from.label(),
                    to: to.label(),
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::machine::Machine::label(*self))
            }
        }
    };
}

pub(crate) use state_machine;
