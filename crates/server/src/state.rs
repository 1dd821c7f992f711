//! [`ApiState`]: what the handlers share — the engine, the accepted tokens, the shutdown
//! signal, the HTTP client and waiting attempts of HTTP steps, the registrations file, the
//! archive, whether the worker runs.
//!
//! It is plain data: it must never hold behaviour beyond being built. What is done with it
//! lives with the routes that do it (`routes::steps` registers HTTP steps, `archived` opens
//! the archive).

use std::sync::Arc;

use flowstate::Engine;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("tokens", &self.inner.tokens.len())
            .finish_non_exhaustive()
    }
}

/// The shared data behind an [`ApiState`].
pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) tokens: Vec<String>,
    pub(crate) stopped: tokio::sync::watch::Receiver<bool>,
    pub(crate) http: reqwest::Client,
    pub(crate) waiting: Arc<crate::http_steps::Waiting>,
    pub(crate) report_base: String,
    /// The HTTP step registrations, and the lock that serializes registering and removing
    /// (choosing the version, writing the file, changing the registry).
    pub(crate) steps: tokio::sync::Mutex<crate::registrations::StepsFile>,
    /// The archive's URL, if the server has one: read for archived flows.
    pub(crate) archive: Option<String>,
    /// The archive, once opened (an S3 client is built once, not per request).
    pub(crate) opened_archive: std::sync::OnceLock<flowstate::archive::ArchiveStore>,
    /// Whether the engine's worker runs (`/readyz`): set while its task runs.
    pub(crate) worker_running: Arc<std::sync::atomic::AtomicBool>,
}

impl ApiState {
    /// State over `engine`, served at `addr`, accepting `tokens` (none: no authentication);
    /// streams end when `stopped` turns true.
    #[must_use]
    pub fn new(
        engine: Engine,
        addr: std::net::SocketAddr,
        tokens: Vec<String>,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                tokens,
                stopped,
                // No redirects: an HTTP step calls exactly the URL it was registered with.
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap_or_default(),
                waiting: Arc::default(),
                report_base: format!("http://{addr}/api/v1/work"),
                steps: tokio::sync::Mutex::default(),
                archive: None,
                opened_archive: std::sync::OnceLock::new(),
                worker_running: Arc::default(),
            }),
        }
    }

    /// Reads archived flows from the archive at `url` (see `ServerConfig::archive`). Call it
    /// on a new state, before it is shared.
    #[must_use]
    pub fn with_archive(mut self, url: Option<String>) -> Self {
        let unshared = Arc::get_mut(&mut self.inner).map(|inner| inner.archive = url);
        debug_assert!(unshared.is_some(), "with_archive on a shared state");
        self
    }
}
