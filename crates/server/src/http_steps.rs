//! HTTP steps: a plan step whose body is a URL. The engine POSTs the work item's inputs to it
//! (with the idempotency key in an `Idempotency-Key` header and in the body) and reads the
//! outputs from the JSON object it answers. Transport errors, 408, 429 and 5xx are retried
//! under the step's policy; any other answer that is not a 2xx JSON object fails the item.
//!
//! The server calls whatever URL a step was registered with (no redirects are followed):
//! registering a step is a way to make the server POST to any address it can reach, which
//! is why registration needs a token on any non-loopback server.
//!
//! An **asynchronous** HTTP step (`"mode": "async"`) is POSTed the same, with a `report_url`;
//! its 2xx answer only accepts the work, and the worker reports later by POSTing
//! `{"outputs": {...}}` or `{"error": {"kind", "message", "retryable"}}` to that URL, which
//! carries the attempt's completion token and a random key of that attempt (the URL is the
//! worker's only credential: reports need no bearer token). The attempt waits for the report (under the
//! step's timeout, which covers the whole wait); a report for an attempt that is not waiting
//! (stale, duplicate, or after the attempt timed out) is refused with 409 and changes
//! nothing. If the server restarts meanwhile, the attempt is run again with the same token
//! and idempotency key, so the worker is asked again and its report finds it waiting.
//!
//! Registered over the API, an HTTP step gets a new version each time its name is
//! registered again, and every registration and removal is kept in the server's
//! registrations file (see [`crate::registrations`]) before it is answered, so a restarted
//! server has every version again before its worker runs a flow. Without a file (a
//! PostgreSQL store with no `steps_file`) they live in this process only, and flows that use
//! them wait (parked) after a restart until they are registered again.

use std::time::Duration;

use flowstate::core::StepSpec;
use flowstate::plan::{Step, StepContext, StepError};
use serde_json::{json, Value};

/// The timeout of an HTTP step that sets none (as Argyll's `STEP_TIMEOUT`).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest step URL accepted.
pub const MAX_URL_BYTES: usize = 2_048;

pub use flowstate_api::{HttpStepRequest, Mode, Report, ReportedError};

/// An attempt waiting for its report: the secret its report URL carries, and where to hand
/// the report.
type Waiter = (
    String,
    tokio::sync::oneshot::Sender<Result<Value, StepError>>,
);

/// Attempts of asynchronous HTTP steps waiting for their report, by completion token.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    by_token: flowstate::core::sync::Mutex<std::collections::HashMap<String, Waiter>>,
}

impl Waiting {
    fn lock(
        &self,
    ) -> flowstate::core::sync::MutexGuard<'_, std::collections::HashMap<String, Waiter>> {
        self.by_token.lock()
    }

    /// Hands a report to the attempt waiting for it; `false` if none waits for `token`
    /// with this `key` (the secret of its report URL).
    pub(crate) fn report(&self, token: &str, key: &str, report: Report) -> Result<bool, String> {
        let result = match (report.outputs, report.error) {
            (Some(outputs), None) => Ok(Value::Object(outputs)),
            (None, Some(error)) if error.retryable => {
                Err(StepError::retryable(error.kind, error.message))
            }
            (None, Some(error)) => Err(StepError::permanent(error.kind, error.message)),
            _ => return Err("a report holds either \"outputs\" or \"error\"".to_owned()),
        };
        let mut waiting = self.lock();
        let Some((secret, _)) = waiting.get(token) else {
            return Ok(false);
        };
        if !crate::auth::same_secret(secret, key) {
            return Ok(false);
        }
        let Some((_, sender)) = waiting.remove(token) else {
            return Ok(false);
        };
        Ok(sender.send(result).is_ok())
    }
}

/// Removes a waiting attempt's entry when the attempt ends (reported, timed out, aborted),
/// unless a newer run of the same attempt registered since (its secret differs).
struct Registration<'a> {
    waiting: &'a Waiting,
    token: String,
    secret: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock();
        if waiting
            .get(&self.token)
            .is_some_and(|(secret, _)| *secret == self.secret)
        {
            waiting.remove(&self.token);
        }
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
                    let secret = format!("{:032x}", rand::random::<u128>());
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    waiting
                        .lock()
                        .insert(token.clone(), (secret.clone(), sender));
                    let _registered = Registration {
                        waiting: &waiting,
                        token: token.clone(),
                        secret: secret.clone(),
                    };
                    let report_url = format!("{report_base}/{}?key={secret}", encode_token(&token));
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

/// A completion token as one path segment: its bytes in hex (a step name may hold any
/// character a URL would need escaped).
pub(crate) fn encode_token(token: &str) -> String {
    token.bytes().map(|byte| format!("{byte:02x}")).collect()
}

/// The completion token of a path segment, if it is one [`encode_token`] made.
pub(crate) fn decode_token(segment: &str) -> Option<String> {
    if !segment.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..segment.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(segment.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Largest answer read from a step's URL: what a result may hold.
pub const MAX_RESPONSE_BYTES: usize = flowstate::core::limits::MAX_RESULT_BYTES;

/// The answer's body, refused (permanently) past [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response, url: &str) -> Result<String, StepError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| StepError::retryable("HttpTransport", error.to_string()))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(StepError::permanent(
                "HttpTooLarge",
                format!("{url} answered more than {MAX_RESPONSE_BYTES} bytes (MAX_RESPONSE_BYTES)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
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
    let text = read_capped(response, url).await?;
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
