//! HTTP steps: a plan step whose body is a URL. The engine POSTs the work item's inputs to it
//! (with the idempotency key in an `Idempotency-Key` header and in the body) and reads the
//! outputs from the JSON object it answers. Transport errors, 408, 429 and 5xx are retried
//! under the step's policy; any other answer that is not a 2xx JSON object fails the item.
//!
//! An **asynchronous** HTTP step (`"mode": "async"`) is POSTed the same, with a `report_url`;
//! its 2xx answer only accepts the work, and the worker reports later by POSTing
//! `{"outputs": {...}}` or `{"error": {"kind", "message", "retryable"}}` to that URL, which
//! carries the attempt's completion token. The attempt waits for the report (under the
//! step's timeout, which covers the whole wait); a report for an attempt that is not waiting
//! (stale, duplicate, or after the attempt timed out) is refused with 409 and changes
//! nothing. If the server restarts meanwhile, the attempt is run again with the same token
//! and idempotency key, so the worker is asked again and its report finds it waiting.
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
    /// Longest an attempt (the HTTP call, and for an async step the wait for its report)
    /// may take.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `sync` (the answer holds the outputs) or `async` (reported later).
    #[serde(default)]
    pub mode: Mode,
}

/// How an HTTP step answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The answer holds the outputs.
    #[default]
    Sync,
    /// The answer accepts the work; the outputs are reported later.
    Async,
}

/// A report of an asynchronous HTTP step's attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The outputs, on success.
    #[serde(default)]
    pub outputs: Option<serde_json::Map<String, Value>>,
    /// The failure, otherwise.
    #[serde(default)]
    pub error: Option<ReportedError>,
}

/// A failure reported by an asynchronous HTTP step.
#[derive(Debug, Clone, Deserialize)]
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

/// Attempts of asynchronous HTTP steps waiting for their report, by completion token.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    by_token: std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::oneshot::Sender<Result<Value, StepError>>>,
    >,
}

impl Waiting {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, tokio::sync::oneshot::Sender<Result<Value, StepError>>>,
    > {
        self.by_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a report to the attempt waiting for it; `false` if none waits for `token`.
    pub(crate) fn report(&self, token: &str, report: Report) -> Result<bool, String> {
        let result = match (report.outputs, report.error) {
            (Some(outputs), None) => Ok(Value::Object(outputs)),
            (None, Some(error)) if error.retryable => {
                Err(StepError::retryable(error.kind, error.message))
            }
            (None, Some(error)) => Err(StepError::permanent(error.kind, error.message)),
            _ => return Err("a report holds either \"outputs\" or \"error\"".to_owned()),
        };
        let Some(sender) = self.lock().remove(token) else {
            return Ok(false);
        };
        Ok(sender.send(result).is_ok())
    }
}

/// Removes a waiting attempt's entry when the attempt ends (reported, timed out, aborted).
struct Registration<'a> {
    waiting: &'a Waiting,
    token: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.token);
    }
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

/// The step, as version `version`, calling its URL with `client`; an asynchronous one
/// waits in `waiting` for the report to `{report_base}/{token}`.
pub(crate) fn step(
    request: HttpStepRequest,
    version: u32,
    client: reqwest::Client,
    waiting: std::sync::Arc<Waiting>,
    report_base: String,
) -> Step {
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
    let (url, mode) = (request.url, request.mode);
    Step::from_spec(spec).body(move |ctx| {
        let (client, url, waiting, report_base) = (
            client.clone(),
            url.clone(),
            waiting.clone(),
            report_base.clone(),
        );
        async move {
            match mode {
                Mode::Sync => call(&client, &url, &ctx, None).await,
                Mode::Async => {
                    let token = ctx.completion_token();
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    waiting.lock().insert(token.clone(), sender);
                    let _registered = Registration {
                        waiting: &waiting,
                        token: token.clone(),
                    };
                    let report_url = format!("{report_base}/{}", encode_token(&token));
                    call(&client, &url, &ctx, Some(&report_url)).await?;
                    receiver.await.unwrap_or_else(|_| {
                        Err(StepError::retryable(
                            "Abandoned",
                            "the report was never delivered",
                        ))
                    })
                }
            }
        }
    })
}

/// A completion token as one path segment (`/` becomes `~`; flow ids, item and attempt
/// numbers have no `~`, and step names are refused with one at registration).
pub(crate) fn encode_token(token: &str) -> String {
    token.replace('/', "~")
}

/// The completion token of a path segment.
pub(crate) fn decode_token(segment: &str) -> String {
    segment.replace('~', "/")
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    ctx: &StepContext,
    report_url: Option<&str>,
) -> Result<Value, StepError> {
    let key = ctx.idempotency_key();
    let mut body = json!({
        "flow": ctx.flow,
        "step": ctx.step,
        "item": ctx.item,
        "attempt": ctx.attempt,
        "inputs": ctx.inputs,
        "idempotency_key": key,
        "completion_token": ctx.completion_token(),
    });
    if let (Some(report_url), Value::Object(fields)) = (report_url, &mut body) {
        fields.insert("report_url".to_owned(), json!(report_url));
    }
    let response = client
        .post(url)
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
    if report_url.is_some() {
        return Ok(Value::Null); // Accepted; the outputs come with the report.
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(outputs @ Value::Object(_)) => Ok(outputs),
        _ => Err(StepError::permanent(
            "HttpBadOutputs",
            format!("{url} answered {status} without a JSON object of outputs: {excerpt}"),
        )),
    }
}
