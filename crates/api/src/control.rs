//! The bodies of signal, suspend, resume and cancel, and what a control request did.
//!
//! It must never say more than the engine answered: `recorded` or `ignored`.

use flowstate_core::Transition;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /flows/{id}/signals`: a signal for a durable function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Signal)]
pub struct SignalRequest {
    /// The signal's name (1 to 256 bytes).
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: Value,
}

/// The body of suspend, resume and cancel: `{}` or `{"reason": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Reason)]
pub struct ReasonRequest {
    /// Why (logged; a cancel records it). Empty: none, and not sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// What a control request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestOutcome {
    /// `recorded` in the flow's log, or `ignored` (a no-op by the state table).
    pub outcome: Outcome,
}

/// Whether a request was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Recorded in the flow's log.
    Recorded,
    /// A no-op by the state table: nothing recorded.
    Ignored,
}

impl From<Transition> for RequestOutcome {
    fn from(transition: Transition) -> Self {
        Self {
            outcome: match transition {
                Transition::Allowed => Outcome::Recorded,
                Transition::Ignored => Outcome::Ignored,
            },
        }
    }
}

impl Outcome {
    /// The outcome as written on the wire.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::Ignored => "ignored",
        }
    }
}
