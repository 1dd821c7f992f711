//! The flowstate server: one engine process behind an HTTP/JSON API, with Server-Sent Events
//! and the web UI.
//!
//! **What it owns:** the HTTP surface (routes, request limits, bearer-token authentication,
//! problem-details errors, the OpenAPI document), the event streams, serving the UI, the
//! HTTP step registrations file ([`registrations`]), and what operators watch: `/metrics`
//! (Prometheus text format), `/healthz` and `/readyz` (503 `not_ready` when the store
//! stopped writing or the worker is down: a supervisor should restart a process whose
//! `/readyz` keeps failing). It assembles a [`flowstate::Engine`]
//! (store by URL, example definitions, the kept HTTP steps, worker) and runs it.
//!
//! **What it must never do:** decide anything about a flow. Every request goes through the
//! engines' public API (`Plans`, task graphs, `Functions`) or reads the store; a refused
//! request changes nothing.

mod archived;
mod auth;
mod examples;
mod extract;
pub mod http_steps;
mod observe;
mod openapi;
mod problem;
pub mod registrations;
mod routes;
mod state;
mod ui;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use observe::UPKEEP_INTERVAL;
pub use problem::Problem;
pub use routes::flows::MAX_EVENTS_PER_REQUEST;
pub use routes::streams::{MAX_STRAY_FLOWS, MAX_STREAM_READ, MAX_WATCHED_FLOWS};
pub use routes::{router, CONTENT_SECURITY_POLICY, MAX_REQUEST_BYTES};
pub use state::ApiState;

/// Shortest bearer token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7280";

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The store URL (a path or `sqlite://…`, or `postgres://…`).
    pub store: String,
    /// The archive (a directory, `file://`, `memory://` or `s3://BUCKET/PREFIX`), if any:
    /// where the API reads archived flows (`GET /flows?archived=true`, and a flow no longer
    /// in the live store), and where finished flows go when `archive_deactivated`.
    pub archive: Option<String>,
    /// Whether the engine moves finished flows of every kind (deactivated plans, ended task
    /// graphs, done functions) to `archive`, by `archiving`'s policy and interval.
    pub archive_deactivated: bool,
    /// The archive policy's thresholds, how often the archive worker looks, and how long a
    /// done durable function keeps its journal.
    pub archiving: Archiving,
    /// Bearer tokens accepted; empty means no authentication, allowed on loopback only.
    pub tokens: Vec<String>,
    /// Whether to register the example steps, task graphs and functions.
    pub examples: bool,
    /// Where HTTP step registrations are kept across restarts (see [`registrations`]).
    /// `None`: next to an SQLite store's file ([`registrations::default_steps_file`]); for a
    /// PostgreSQL store, nowhere: registrations then live as long as the process.
    pub steps_file: Option<PathBuf>,
    /// How long idempotency keys of starts are kept (`Idempotency-Key`, a chosen `id`):
    /// [`flowstate::DEFAULT_IDEMPOTENCY_WINDOW`] unless configured.
    pub idempotency_window: std::time::Duration,
}

impl ServerConfig {
    /// A server on the store at `store`, listening on a free loopback port (`127.0.0.1:0`),
    /// with no archive, no tokens (so loopback only), no examples, the default steps file,
    /// archiving settings and idempotency window: set the fields that differ with
    /// `ServerConfig { .., ..ServerConfig::new(store) }`.
    #[must_use]
    pub fn new(store: impl Into<String>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: store.into(),
            archive: None,
            archive_deactivated: false,
            archiving: Archiving::default(),
            tokens: Vec::new(),
            examples: false,
            steps_file: None,
            idempotency_window: flowstate::DEFAULT_IDEMPOTENCY_WINDOW,
        }
    }
}

/// How finished flows are kept: the archive worker's policy and interval, and how long a
/// done durable function keeps its whole journal (its retention) before dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archiving {
    /// Which finished flows the archive worker moves (max age, max live flows and bytes).
    pub policy: flowstate::archive::ArchivePolicy,
    /// How long the archive worker waits between passes.
    pub interval: Duration,
    /// How long a done durable function keeps its journal.
    pub journal_retention: Duration,
}

impl Default for Archiving {
    fn default() -> Self {
        Self {
            policy: flowstate::archive::ArchivePolicy::default(),
            interval: flowstate::archive::DEFAULT_INTERVAL,
            journal_retention: flowstate::durable::DEFAULT_JOURNAL_RETENTION,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No tokens and a non-loopback address: anyone on the network could drive the engine.
    #[error("refusing to listen on {addr} without authentication: configure a token (--token or FLOWSTATE_TOKEN) or listen on a loopback address")]
    Unauthenticated {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A token too short to be a secret (an empty one would still count as configured).
    #[error("a token of {length} bytes is too short; use at least {MIN_TOKEN_BYTES} (MIN_TOKEN_BYTES), for example 32 random hex digits")]
    WeakToken {
        /// Its length.
        length: usize,
    },
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] flowstate::Error),
    /// The examples could not be registered.
    #[error("registering the examples failed: {0}")]
    Examples(String),
    /// The HTTP step registrations file could not be read, or its steps registered.
    #[error("the HTTP step registrations file {}: {reason}", path.display())]
    StepsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A server that is running: its address, its engine, and how to stop it.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    steps_file: Option<PathBuf>,
    engine: flowstate::Engine,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: tokio::task::JoinHandle<Result<flowstate::worker::WorkerStats, flowstate::Error>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RunningServer {
    /// Where it listens (the port chosen when the configuration said 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its HTTP step registrations are kept, if anywhere.
    #[must_use]
    pub fn steps_file(&self) -> Option<&Path> {
        self.steps_file.as_deref()
    }

    /// Its engine.
    #[must_use]
    pub fn engine(&self) -> &flowstate::Engine {
        &self.engine
    }

    /// Stops accepting requests, lets the worker finish or release its flows, and closes
    /// the store.
    pub async fn shutdown(self) {
        // The worker first: while its runs finish (within its grace), the API stays up, so
        // that asynchronous steps can still report.
        self.engine.shutdown_handle().shutdown();
        if let Ok(Err(error)) = self.worker.await {
            tracing::warn!(%error, "the worker stopped with an error");
        }
        let _ = self.stop.send(true);
        let mut http = self.http;
        if tokio::time::timeout(HTTP_DRAIN, &mut http).await.is_err() {
            tracing::warn!("requests still open after {HTTP_DRAIN:?}; closing them");
            http.abort();
        }
        if let Err(error) = self.engine.store().close().await {
            tracing::warn!(%error, "closing the store failed");
        }
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// Builds the engine, starts its worker and the HTTP server, and returns once it listens.
pub async fn serve(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.tokens.is_empty() && !config.addr.ip().is_loopback() {
        return Err(ServerError::Unauthenticated { addr: config.addr });
    }
    if let Some(short) = config.tokens.iter().find(|t| t.len() < MIN_TOKEN_BYTES) {
        return Err(ServerError::WeakToken {
            length: short.len(),
        });
    }
    // Before the engine, so that its metrics count from its start.
    observe::recorder();
    let engine = engine(&config).await?;
    let (listener, addr) = listen(config.addr).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = ApiState::new(engine.clone(), addr, config.tokens.clone(), stopped.clone())
        .with_archive(config.archive.clone());
    // Every kept HTTP step version is registered again before the API serves and the worker
    // runs a flow, so flows planned with them find them.
    let steps_file = config
        .steps_file
        .clone()
        .or_else(|| registrations::default_steps_file(&config.store));
    if let Some(path) = &steps_file {
        if let Err(reason) = routes::steps::load_steps(&state, path.clone()).await {
            if let Err(error) = engine.store().close().await {
                tracing::warn!(%error, "closing the store failed");
            }
            return Err(ServerError::StepsFile {
                path: path.clone(),
                reason,
            });
        }
    }
    let worker_running = state.inner.worker_running.clone();
    let app = router(state);
    let mut http_stop = stopped;
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let running = engine.clone();
    worker_running.store(true, std::sync::atomic::Ordering::Release);
    let worker = tokio::spawn(async move {
        let ran = running.run().await;
        worker_running.store(false, std::sync::atomic::Ordering::Release);
        if let Err(error) = &ran {
            tracing::error!(%error, "the worker stopped; /readyz answers 503");
        }
        ran
    });
    tracing::info!(
        %addr,
        store = %config.store,
        steps_file = ?steps_file,
        "flowstate server listening"
    );
    Ok(RunningServer {
        addr,
        steps_file,
        engine,
        http,
        worker,
        stop,
    })
}

/// The engine of `config`: its store, the examples if asked, the archiver if asked.
async fn engine(config: &ServerConfig) -> Result<flowstate::Engine, ServerError> {
    let mut builder = flowstate::Engine::builder(config.store.clone())
        .journal_retention(config.archiving.journal_retention)
        .idempotency_window(config.idempotency_window);
    if config.examples {
        builder = examples::steps()
            .into_iter()
            .fold(builder, flowstate::EngineBuilder::step);
        builder = examples::task_graphs()
            .into_iter()
            .fold(builder, flowstate::EngineBuilder::task_graph);
    }
    if let Some(archive) = config
        .archive
        .as_ref()
        .filter(|_| config.archive_deactivated)
    {
        builder = builder.archive(
            archive.clone(),
            config.archiving.policy,
            config.archiving.interval,
        );
    }
    let engine = builder.build().await?;
    if config.examples {
        examples::register_functions(engine.functions()).map_err(ServerError::Examples)?;
    }
    Ok(engine)
}

/// A listener on `addr`, and the address it got (the port chosen when `addr` said 0).
async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr, source })?;
    Ok((listener, local))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Longest the HTTP server may take to finish open requests at shutdown.
pub const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// How often the event streams look for new events (they also wake on the store's
/// wake-ups).
pub const STREAM_POLL: Duration = Duration::from_millis(250);
