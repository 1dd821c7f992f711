//! HTTP step registrations (`/steps`) and the reports of asynchronous HTTP steps
//! (`/work/{token}`).
//!
//! [`HttpStepRequest`] is also the entry of the server's registrations file: its JSON must
//! never change in a way an older file cannot be read with.

use flowstate_core::{InputSpec, Predicate, RetryPolicy, StepSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

/// An HTTP step as the API receives it (and as the registrations file keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HttpStep)]
pub struct HttpStepRequest {
    /// Its name.
    pub name: String,
    /// What it reads.
    #[serde(default)]
    #[schema(value_type = Vec<crate::schema::InputSpec>)]
    pub inputs: Vec<InputSpec>,
    /// What it produces.
    pub outputs: Vec<String>,
    /// The URL the engine POSTs each work item to.
    #[schema(format = Uri)]
    pub url: String,
    /// A mapped step: the list input giving one work item per element.
    #[serde(default)]
    pub map_over: Option<String>,
    /// For a mapped step: most items at once.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub parallelism: Option<u32>,
    /// Runs only if this holds over its inputs.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::Predicate>)]
    pub predicate: Option<Predicate>,
    /// Retries (default: none).
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::RetryPolicy>)]
    pub retry: Option<RetryPolicy>,
    /// Longest an attempt (the HTTP call, and for an async step the wait for its report)
    /// may take.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `sync` (the answer holds the outputs) or `async` (reported later).
    #[serde(default)]
    pub mode: Mode,
}

/// How an HTTP step answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The answer holds the outputs.
    #[default]
    Sync,
    /// The answer accepts the work; the outputs are reported later.
    Async,
}

/// The answer of `POST /steps`: the version registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The step.
    pub name: String,
    /// Its new version.
    pub version: u32,
}

/// The answer of `GET /steps`: the registered plan steps (newest versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepList {
    /// The steps.
    #[schema(value_type = Vec<crate::schema::StepSpec>)]
    pub steps: Vec<StepSpec>,
}

/// A report of an asynchronous HTTP step's attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The outputs, on success.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Map<String, Value>>,
    /// The failure, otherwise.
    #[serde(default)]
    pub error: Option<ReportedError>,
}

/// A failure reported by an asynchronous HTTP step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedError {
    /// Its kind.
    pub kind: String,
    /// What happened.
    #[serde(default)]
    pub message: String,
    /// Whether another attempt may succeed.
    #[serde(default)]
    pub retryable: bool,
}

/// Query parameter of a report: the attempt's secret, part of the report URL it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportKey {
    /// The attempt's secret.
    pub key: String,
}
