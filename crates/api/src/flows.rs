//! Listing and starting flows: the list's query and page ([`ListParams`], [`FlowPage`] of
//! [`FlowSummaryView`]s), the start request and its answer, `?at=`.
//!
//! It must never hold a time that is not a [`Time`].

use std::collections::BTreeMap;

use flowstate_core::FlowId;
use flowstate_store::FlowSummary;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::time::Time;

/// Query parameters of `GET /flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only flows of this kind.
    #[param(value_type = Option<crate::schema::FlowKind>)]
    pub kind: Option<String>,
    /// Only flows in this status (its key).
    pub status: Option<String>,
    /// Only flows of this definition.
    pub definition: Option<String>,
    /// The page after this flow id (the previous page's `next_after`).
    #[param(format = Uuid)]
    pub after: Option<String>,
    /// The page size (0: the default).
    #[serde(default)]
    #[param(minimum = 0, maximum = 1000)]
    pub limit: usize,
    /// Include archived flows (read from the archive, merged by id).
    #[serde(default)]
    pub archived: bool,
}

/// Query parameter of `GET /flows/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtParams {
    /// The state as of this sequence number (`SEQ`) or RFC 3339 time (default: now).
    pub at: Option<String>,
}

/// A page of flows, by id (creation order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowPage {
    /// The flows.
    pub flows: Vec<FlowSummaryView>,
    /// The cursor of the next page (`?after=`), `null` on the last.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_after: Option<FlowId>,
}

/// A flow as the listing shows it: live, archived (`archived: true`), or an archived flow
/// whose file cannot be read (`error`, without what only its contents say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowSummaryView {
    /// The flow.
    #[schema(value_type = String, format = Uuid)]
    pub id: FlowId,
    /// Its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::FlowKind>)]
    pub kind: Option<String>,
    /// The definition it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Its status key (`archived` for an archived flow).
    pub status: String,
    /// When it was created.
    pub created_at: Time,
    /// When it last changed (archived: when it was archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    /// How many events its log has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// The size of its log (archived: of its file), in bytes.
    pub bytes: u64,
    /// Whether a worker may take it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Read from the archive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub archived: bool,
    /// Why its archive file cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&FlowSummary> for FlowSummaryView {
    fn from(flow: &FlowSummary) -> Self {
        Self {
            id: flow.id,
            kind: Some(flow.kind.key().to_owned()),
            definition: Some(flow.definition.clone()),
            status: flow.status.key().to_owned(),
            created_at: flow.created_at.into(),
            updated_at: Some(flow.updated_at.into()),
            events: Some(flow.events()),
            bytes: flow.bytes,
            ready: Some(flow.ready),
            archived: false,
            error: None,
        }
    }
}

/// `POST /flows`: a plan by goals and inputs, or a registered task graph or durable
/// function by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StartRequest {
    /// A goal-driven plan.
    Plan {
        /// The goals: step or attribute names.
        goals: Vec<String>,
        /// Initial attributes.
        #[serde(default)]
        #[schema(value_type = Object)]
        inputs: Map<String, Value>,
        /// Which step provides an attribute, where several could.
        #[serde(default)]
        choices: BTreeMap<String, String>,
        /// The flow's definition name (default `plan`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The flow's id, chosen by the client (a UUID): a start with an id is idempotent, as
        /// with an `Idempotency-Key` (the id is the key when no header is given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>, format = Uuid)]
        id: Option<FlowId>,
    },
    /// A registered task graph.
    TaskGraph {
        /// Its name.
        name: String,
        /// Its inputs.
        #[serde(default)]
        inputs: BTreeMap<String, Value>,
        /// The flow's id, chosen by the client (a UUID): a start with an id is idempotent, as
        /// with an `Idempotency-Key` (the id is the key when no header is given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>, format = Uuid)]
        id: Option<FlowId>,
    },
    /// A registered durable function.
    Function {
        /// Its name.
        name: String,
        /// Its input.
        #[serde(default)]
        input: Value,
        /// The flow's id, chosen by the client (a UUID): a start with an id is idempotent, as
        /// with an `Idempotency-Key` (the id is the key when no header is given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>, format = Uuid)]
        id: Option<FlowId>,
    },
}

/// The answer of `POST /flows`: 201 with the new flow, or 200 with `existing: true` when
/// the same start (same `Idempotency-Key` or `id`, same request) was made before, within the
/// server's idempotency window: the first start's flow, nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Started {
    /// The flow.
    #[schema(value_type = String, format = Uuid)]
    pub id: FlowId,
    /// An earlier start made it (the answer is a replay).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub existing: bool,
}

/// The header that makes a start idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
