//! HTTP steps: a plan step whose body is a URL. The engine POSTs the work item's inputs to it
//! (with the idempotency key in an `Idempotency-Key` header and in the body) and reads the
//! outputs from the JSON object it answers. Transport errors, 408, 429 and 5xx are retried
//! under the step's policy; any other answer that is not a 2xx JSON object fails the item.
//!
//! Registered over the API, an HTTP step lives in this process's registry (a new version
//! each time its name is registered again); a restarted server needs it registered again,
//! and until then flows that use it wait (parked) rather than fail.

use std::time::Duration;

use flowstate::core::{InputSpec, Predicate, RetryPolicy, StepSpec};
use flowstate::plan::{Step, StepContext, StepError};
use serde::Deserialize;
use serde_json::{json, Value};

/// The timeout of an HTTP step that sets none (as Argyll's `STEP_TIMEOUT`).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest step URL accepted.
pub const MAX_URL_BYTES: usize = 2_048;

/// An HTTP step as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStepRequest {
    /// Its name.
    pub name: String,
    /// What it reads.
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// What it produces.
    pub outputs: Vec<String>,
    /// The URL the engine POSTs each work item to.
    pub url: String,
    /// A mapped step: the list input giving one work item per element.
    #[serde(default)]
    pub map_over: Option<String>,
    /// For a mapped step: most items at once.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Runs only if this holds over its inputs.
    #[serde(default)]
    pub predicate: Option<Predicate>,
    /// Retries (default: none).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Longest an attempt (the HTTP call) may take.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Why an HTTP step was refused.
pub(crate) fn invalid_url(url: &str) -> Option<String> {
    if url.len() > MAX_URL_BYTES {
        return Some(format!(
            "the URL is over {MAX_URL_BYTES} bytes (MAX_URL_BYTES)"
        ));
    }
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => None,
        Ok(parsed) => Some(format!(
            "the URL's scheme is {:?}; use http or https",
            parsed.scheme()
        )),
        Err(error) => Some(format!("{url:?} is not a URL: {error}")),
    }
}

/// The step, as version `version`, calling its URL with `client`.
pub(crate) fn step(request: HttpStepRequest, version: u32, client: reqwest::Client) -> Step {
    let timeout = request
        .timeout_ms
        .unwrap_or(u64::try_from(DEFAULT_HTTP_TIMEOUT.as_millis()).unwrap_or(30_000));
    let spec = StepSpec {
        name: request.name,
        version,
        inputs: request.inputs,
        outputs: request.outputs,
        map_over: request.map_over,
        parallelism: request.parallelism.unwrap_or(1),
        predicate: request.predicate,
        retry: request.retry.unwrap_or_default(),
        timeout_ms: Some(timeout),
        compensable: false,
    };
    let url = request.url;
    Step::from_spec(spec).body(move |ctx| call(client.clone(), url.clone(), ctx))
}

async fn call(client: reqwest::Client, url: String, ctx: StepContext) -> Result<Value, StepError> {
    let key = ctx.idempotency_key();
    let body = json!({
        "flow": ctx.flow,
        "step": ctx.step,
        "item": ctx.item,
        "attempt": ctx.attempt,
        "inputs": ctx.inputs,
        "idempotency_key": key,
        "completion_token": ctx.completion_token(),
    });
    let response = client
        .post(&url)
        .header("Idempotency-Key", &key)
        .json(&body)
        .send()
        .await
        .map_err(|error| StepError::retryable("HttpTransport", error.to_string()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| StepError::retryable("HttpTransport", error.to_string()))?;
    let excerpt: String = text.chars().take(512).collect();
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        return Err(StepError::retryable(
            format!("Http{}", status.as_u16()),
            format!("{url} answered {status}: {excerpt}"),
        ));
    }
    if !status.is_success() {
        return Err(StepError::permanent(
            format!("Http{}", status.as_u16()),
            format!("{url} answered {status}: {excerpt}"),
        ));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(outputs @ Value::Object(_)) => Ok(outputs),
        _ => Err(StepError::permanent(
            "HttpBadOutputs",
            format!("{url} answered {status} without a JSON object of outputs: {excerpt}"),
        )),
    }
}
