//! The kinds of flow, each in a module of its own: its record and the arms of the fold that
//! apply its events (`taskgraph`, `plan`, `function`).
//!
//! **What this module owns:** the split of the fold by kind, and the two helpers every kind
//! shares: [`advance`] (a recorded transition must be one the tables allow) and [`wrong_kind`].
//! The envelope checks (gaps, duplicates, the flow's id, creation first) and the dispatch by
//! kind are `crate::fold`'s; a kind module sees only events that passed them.
//!
//! **What a kind module must never do:** apply another kind's events or touch the parts of a
//! flow record that belong to another kind; perform I/O, read the clock or draw randomness; or
//! change anything when it refuses an event (`Folder::apply` is atomic).

pub(crate) mod function;
pub(crate) mod plan;
pub(crate) mod taskgraph;

use crate::event::{Event, FlowKind};
use crate::fold::FoldError;
use crate::machine::{Machine, Transition};

/// Applies one recorded transition: only an allowed one may be in a log.
pub(crate) fn advance<M: Machine>(seq: u64, state: &mut M, to: M) -> Result<(), FoldError> {
    let from = *state;
    match state.advance(to) {
        Ok(Transition::Allowed) => Ok(()),
        Ok(Transition::Ignored) => Err(FoldError::IgnoredRecorded {
            seq,
            machine: M::MACHINE,
            from: from.label(),
            to: to.label(),
        }),
        Err(source) => Err(FoldError::Transition { seq, source }),
    }
}

/// An event that a flow of `kind` cannot have.
pub(crate) fn wrong_kind(event: &Event, kind: FlowKind) -> FoldError {
    FoldError::WrongKind {
        seq: event.seq,
        event: event.body.type_name(),
        kind,
    }
}
