//! The HTTP client of the server's API (`/api/v1`): requests with the bearer token, answers
//! read under a size cap, problem details turned into one-line errors, and Server-Sent Events
//! read line by line under a line cap.
//!
//! It owns how the CLI talks to a server and nothing about what a command means: the
//! commands are in [`crate::remote`]. Plain HTTP only: the server speaks nothing else (put a
//! TLS proxy in front of it and the CLI behind the proxy's plain side, or use an SSH tunnel).

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The server the CLI talks to when neither `--server`, `FLOWSTATE_SERVER` nor the
/// configuration file names one: `flowstate serve`'s default address.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7280";

/// The environment variable naming the server.
pub(crate) const SERVER_ENV: &str = "FLOWSTATE_SERVER";

/// Longest wait for a connection to the server.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a whole answer (streams excepted).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest silence on an event stream: the server sends a keep-alive comment every 15
/// seconds, so a stream that says nothing for this long has lost its server.
pub(crate) const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Largest answer read (a page of events, a flow's folded state).
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Longest line of an event stream accepted (the server's messages are a few hundred bytes).
pub(crate) const MAX_SSE_LINE_BYTES: usize = 64 * 1024;

/// Largest event of an event stream accepted (its `data` lines together).
pub(crate) const MAX_SSE_EVENT_BYTES: usize = 256 * 1024;

/// The server's detail for a path it has no route for.
const NO_ROUTE: &str = "no such API route";

/// Most characters of a non-JSON error answer quoted in an error message.
const MAX_QUOTED_CHARS: usize = 200;

/// Why a call to the server failed, phrased for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ClientError {
    /// `--server` is not something the client can talk to.
    #[error("--server {url:?} {reason}")]
    BadServer {
        /// What was given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Nothing answers at the server's address.
    #[error("no flowstate server answers at {url} ({reason}); start one with `flowstate serve`, or name another with --server URL or FLOWSTATE_SERVER")]
    Unreachable {
        /// The server.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The server answered with problem details: its `detail` and stable `code`.
    #[error("{detail} ({code})")]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The stable code (`not_found`, `invalid_state`, ...).
        code: String,
        /// What is wrong.
        detail: String,
    },
    /// The server answered with an error that is not problem details.
    #[error("the server answered {status} to {method} {path}: {excerpt}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// The start of the answer.
        excerpt: String,
    },
    /// The exchange failed after the connection was made.
    #[error("{method} {path} on {url} failed: {reason}")]
    Transport {
        /// The server.
        url: String,
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The answer is not what the API promises.
    #[error("the server's answer to {path} is not valid: {reason}")]
    Invalid {
        /// The request's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An event stream ended or went silent.
    #[error("the event stream {path} {reason}")]
    Stream {
        /// The stream's path.
        path: String,
        /// What happened.
        reason: String,
    },
}

/// A client of one server, with the bearer token to send (if any).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// The server as given, for messages.
    url: String,
    /// `…/api/v1`, without a trailing slash.
    api: Url,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `server` (`http://HOST:PORT`, optionally with a path prefix),
    /// sending `token` as `Authorization: Bearer`.
    pub(crate) fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadServer {
            url: server.to_owned(),
            reason,
        };
        let parsed = Url::parse(server.trim())
            .map_err(|e| bad(format!("is not a URL such as {DEFAULT_SERVER}: {e}")))?;
        match parsed.scheme() {
            "http" => {}
            "https" => return Err(bad("uses https: this build speaks plain HTTP only, as the server does (reach a TLS-terminating proxy through a tunnel, or use http://)".to_owned())),
            other => return Err(bad(format!("has scheme {other:?}; use http://HOST:PORT"))),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("names no host".to_owned()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("must not carry a query or a fragment".to_owned()));
        }
        let base = parsed.as_str().trim_end_matches('/');
        let api = Url::parse(&format!("{base}/api/v1"))
            .map_err(|e| bad(format!("cannot be extended with /api/v1: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The API never redirects; following one could hand the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(format!("cannot be used: {e}")))?;
        Ok(Self {
            http,
            url: base.to_owned(),
            api,
            token: token.filter(|token| !token.is_empty()),
        })
    }

    /// `/api/v1` followed by `segments` (each escaped as one path segment) and `query`.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// GET, and the answer as the API type `T` (`Value`: as it is).
    pub(crate) async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ClientError> {
        let path = url.path().to_owned();
        decode(path, self.call(Method::GET, url, None::<&()>, &[]).await?)
    }

    /// POST `body` as JSON, and the answer as the API type `T` (`()` for an empty one).
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        url: Url,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, ClientError> {
        self.post_with(url, body, &[]).await
    }

    /// POST `body` as JSON with extra `headers` (name, value), and the answer as `T`.
    pub(crate) async fn post_with<T: DeserializeOwned>(
        &self,
        url: Url,
        body: &(impl Serialize + ?Sized),
        headers: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let path = url.path().to_owned();
        decode(
            path,
            self.call(Method::POST, url, Some(body), headers).await?,
        )
    }

    /// DELETE (the answer is empty).
    pub(crate) async fn delete(&self, url: Url) -> Result<(), ClientError> {
        self.call(Method::DELETE, url, None::<&()>, &[])
            .await
            .map(drop)
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let path = url.path().to_owned();
        let mut request = self
            .request(method.clone(), url)
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request, &method, &path).await?;
        let status = response.status();
        let problem = is_problem(&response);
        let bytes = self.read_capped(response, &method, &path).await?;
        if !status.is_success() {
            return Err(failure(status, problem, &bytes, &method, &path));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Invalid {
            path,
            reason: format!("not JSON: {e}"),
        })
    }

    /// Opens an event stream (`text/event-stream`).
    pub(crate) async fn stream(&self, url: Url) -> Result<EventStream, ClientError> {
        let path = url.path().to_owned();
        let request = self
            .request(Method::GET, url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.send(request, &Method::GET, &path).await?;
        let status = response.status();
        if !status.is_success() {
            let problem = is_problem(&response);
            let bytes = self.read_capped(response, &Method::GET, &path).await?;
            return Err(failure(status, problem, &bytes, &Method::GET, &path));
        }
        Ok(EventStream {
            response,
            path,
            buffer: Vec::new(),
            event: SseEvent::default(),
            data_bytes: 0,
        })
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
    ) -> Result<reqwest::Response, ClientError> {
        request.send().await.map_err(|error| {
            if error.is_connect() {
                ClientError::Unreachable {
                    url: self.url.clone(),
                    reason: innermost(&error),
                }
            } else {
                ClientError::Transport {
                    url: self.url.clone(),
                    method: method.clone(),
                    path: path.to_owned(),
                    reason: if error.is_timeout() {
                        format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
                    } else {
                        innermost(&error)
                    },
                }
            }
        })
    }

    /// The whole body, refused past [`MAX_RESPONSE_BYTES`].
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        method: &Method,
        path: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(ClientError::Invalid {
                            path: path.to_owned(),
                            reason: format!(
                                "it is over {MAX_RESPONSE_BYTES} bytes (MAX_RESPONSE_BYTES)"
                            ),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        method: method.clone(),
                        path: path.to_owned(),
                        reason: innermost(&error),
                    })
                }
            }
        }
    }
}

/// Whether the answer says it is problem details.
/// An answer read as the API type `T`: what the server promises, else [`ClientError::Invalid`].
fn decode<T: DeserializeOwned>(path: String, answer: Value) -> Result<T, ClientError> {
    serde_json::from_value(answer).map_err(|e| ClientError::Invalid {
        path,
        reason: format!("not what the API describes: {e}"),
    })
}

fn is_problem(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/problem+json"))
}

/// The error for a non-2xx answer: its problem details when it has them (also when a proxy
/// forgot the content type but kept the body), otherwise the status and the start of the body.
fn failure(
    status: StatusCode,
    problem: bool,
    body: &[u8],
    method: &Method,
    path: &str,
) -> ClientError {
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
        let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
        if let (Some(code), Some(mut detail)) =
            (text("code"), text("detail").or_else(|| text("title")))
        {
            if status == StatusCode::NOT_FOUND && detail == NO_ROUTE {
                // Which route: the server may be older than this CLI.
                detail =
                    format!("{detail} {method} {path} on this server (is it older than this CLI?)");
            }
            return ClientError::Problem {
                status: status.as_u16(),
                code,
                detail,
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String = text.trim().chars().take(MAX_QUOTED_CHARS).collect();
    if excerpt.is_empty() {
        excerpt = if problem {
            "an empty problem".to_owned()
        } else {
            "no body".to_owned()
        };
    }
    ClientError::Status {
        status,
        method: method.clone(),
        path: path.to_owned(),
        excerpt,
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"): reqwest's
/// own message is a generic "error sending request".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One Server-Sent Event: its type (`message` when unnamed) and its data lines joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field.
    pub(crate) event: String,
    /// The `data:` lines, joined with newlines.
    pub(crate) data: String,
}

/// An open event stream, read one event at a time.
#[derive(Debug)]
pub(crate) struct EventStream {
    response: reqwest::Response,
    path: String,
    /// Bytes received and not yet split into lines.
    buffer: Vec<u8>,
    /// The event being assembled.
    event: SseEvent,
    data_bytes: usize,
}

impl EventStream {
    /// The next event; `None` when the server closed the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            while let Some(line) = take_line(&mut self.buffer) {
                if let Some(event) = self.line(&line)? {
                    return Ok(Some(event));
                }
            }
            if self.buffer.len() > MAX_SSE_LINE_BYTES {
                return Err(self.error(format!(
                    "sent a line over {MAX_SSE_LINE_BYTES} bytes (MAX_SSE_LINE_BYTES)"
                )));
            }
            let chunk = tokio::time::timeout(STREAM_IDLE_TIMEOUT, self.response.chunk())
                .await
                .map_err(|_| {
                    self.error(format!(
                        "went silent for {}s (no keep-alive either)",
                        STREAM_IDLE_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| self.error(format!("broke off: {}", innermost(&e))))?;
            match chunk {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                // An event not terminated by a blank line is incomplete: dropped, per spec.
                None => return Ok(None),
            }
        }
    }

    /// Applies one line; an event when the line is the blank one that ends it.
    fn line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, ClientError> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            self.data_bytes = 0;
            if event.data.is_empty() && event.event.is_empty() {
                return Ok(None);
            }
            return Ok(Some(SseEvent {
                event: if event.event.is_empty() {
                    "message".to_owned()
                } else {
                    event.event
                },
                data: event.data,
            }));
        }
        if line.starts_with(b":") {
            return Ok(None); // a comment: the server's keep-alive
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| self.error("sent a line that is not UTF-8".to_owned()))?;
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event.event),
            "data" => {
                self.data_bytes += value.len() + 1;
                if self.data_bytes > MAX_SSE_EVENT_BYTES {
                    return Err(self.error(format!(
                        "sent an event over {MAX_SSE_EVENT_BYTES} bytes (MAX_SSE_EVENT_BYTES)"
                    )));
                }
                if !self.event.data.is_empty() {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
            }
            // `id` and `retry` matter to reconnecting browsers; unknown fields are ignored.
            _ => {}
        }
        Ok(None)
    }

    fn error(&self, reason: String) -> ClientError {
        ClientError::Stream {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Takes one line (ended by `\n`, `\r\n` or `\r`) off the front of `buffer`, without its end.
/// A `\r` at the very end of the buffer waits for the next byte (it may be half of `\r\n`).
fn take_line(buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buffer.iter().position(|b| *b == b'\n' || *b == b'\r')?;
    let skip = match (buffer[end], buffer.get(end + 1)) {
        (b'\r', Some(b'\n')) => 2,
        (b'\r', None) => return None,
        _ => 1,
    };
    let line = buffer[..end].to_vec();
    buffer.drain(..end + skip);
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut buffer = input.to_vec();
        let mut out = Vec::new();
        while let Some(line) = take_line(&mut buffer) {
            out.push(line);
        }
        (out, buffer)
    }

    #[test]
    fn lines_end_with_any_line_break_and_a_trailing_cr_waits() {
        let (found, rest) = lines(b"a\nb\r\nc\rd");
        assert_eq!(found, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(rest, b"d");
        let (found, rest) = lines(b"x\r");
        assert!(found.is_empty());
        assert_eq!(rest, b"x\r");
        let (found, _) = lines(b"\n\n");
        assert_eq!(found, [Vec::<u8>::new(), Vec::new()]);
    }

    #[test]
    fn servers_are_plain_http_urls() {
        assert!(Client::new("http://127.0.0.1:7280", None).is_ok());
        let client = Client::new("http://example.invalid/prefix/", None).expect("a prefix");
        assert_eq!(
            client.url(&["flows", "a b"], &[]).as_str(),
            "http://example.invalid/prefix/api/v1/flows/a%20b"
        );
        for bad in [
            "127.0.0.1:7280",
            "https://example.invalid",
            "ftp://example.invalid",
            "http://",
            "http://x/?a=1",
        ] {
            assert!(Client::new(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn problems_become_detail_and_code() {
        let body = br#"{"type":"t","title":"Not Found","status":404,"detail":"flow x does not exist","code":"not_found"}"#;
        let error = failure(StatusCode::NOT_FOUND, true, body, &Method::GET, "/p");
        assert_eq!(error.to_string(), "flow x does not exist (not_found)");
        let error = failure(
            StatusCode::BAD_GATEWAY,
            false,
            b"<html>bad gateway</html>",
            &Method::GET,
            "/p",
        );
        assert_eq!(
            error.to_string(),
            "the server answered 502 Bad Gateway to GET /p: <html>bad gateway</html>"
        );
    }
}
