//! The wire types of the flowstate HTTP API (`/api/v1`): what a client sends (requests,
//! query parameters) and what the server answers (views, problems), with their OpenAPI
//! schemas (`utoipa::ToSchema`, `utoipa::IntoParams`).
//!
//! **What it owns:** the shape of every JSON body of the API, and the one place where a
//! time becomes RFC 3339 ([`Time`]). The server serializes these types, the CLI reads them,
//! the OpenAPI document is generated from them. The core's types keep their log format (times
//! in µs since the epoch): this crate holds its own views of them, converted with `From`
//! (core → view) and `From` (view → core, for a client that folds or renders records).
//!
//! **What it must never do:** perform I/O, decide anything about a flow, or change the
//! JSON the API has always written: a snapshot test per view (`tests/snapshots.rs`) makes
//! every change of the wire format visible. Values a flow produced (inputs, outputs,
//! attributes, signal values) stay `serde_json::Value`.

pub mod control;
pub mod events;
pub mod flows;
pub mod problem;
pub mod record;
pub mod schema;
pub mod steps;
mod time;

pub use control::{Outcome, ReasonRequest, RequestOutcome, SignalRequest};
pub use events::{EventBodyView, EventPage, EventParams, EventView, StreamMessage, TimedBody};
pub use flows::{
    AtParams, FlowPage, FlowSummaryView, ListParams, StartRequest, Started, IDEMPOTENCY_KEY_HEADER,
};
pub use problem::{ProblemCode, ProblemDetails};
pub use record::{
    AttributeView, FlowView, FunctionView, JournalEntryView, OutcomeView, PlanView, StepView,
    WorkView,
};
pub use steps::{HttpStepRequest, Mode, Registered, Report, ReportKey, ReportedError, StepList};
pub use time::Time;
