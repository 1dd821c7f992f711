//! `flowstate-bench http`: flows started per second over HTTP.
//!
//! A server (`flowstate_server::serve`, SQLite `synchronous=FULL`, its worker running) in this
//! process; `clients` concurrent HTTP/1.1 clients (keep-alive) each POST one-step plans
//! (`{"kind":"plan","goals":["echo"],"inputs":{"text":N}}`) back to back for `seconds`.
//! Reported: accepted starts per second (each a durable append before the 201), the POST
//! latency, and how long the worker took to finish every started flow.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::machine::PlanState;
use flowstate_core::{FlowKind, FlowStatus};
use flowstate_store::FlowQuery;

#[derive(clap::Args, Debug)]
pub(crate) struct HttpArgs {
    /// Directory for the database file (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1);
}

pub(crate) async fn http(args: HttpArgs) {
    let temp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))
        .unwrap_or_else(|error| fail(error));
    let config = flowstate_server::ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap_or_else(|error| fail(error)),
        examples: true,
        idempotency_window: flowstate_engine::DEFAULT_IDEMPOTENCY_WINDOW,
        ..flowstate_server::ServerConfig::new(temp.path().join("http.db").display().to_string())
    };
    let server = flowstate_server::serve(config)
        .await
        .unwrap_or_else(|error| fail(error));
    let url = format!("http://{}/api/v1/flows", server.addr());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .unwrap_or_else(|error| fail(error));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client_no| {
            let (client, url, stop, started) =
                (client.clone(), url.clone(), stop.clone(), started.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({
                        "kind": "plan", "goals": ["echo"], "inputs": {"text": client_no as u64 * 1_000_000 + n}
                    });
                    let sent = Instant::now();
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status() == 201 => {
                            latencies.push(sent.elapsed());
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => fail(format!("status {}", response.status())),
                        Err(error) => fail(error),
                    }
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_else(|error| fail(error)));
    }
    let load = began.elapsed();
    let total = started.load(Ordering::Relaxed);
    // Wait until the worker finished every flow.
    let store = server.engine().store().clone();
    loop {
        let mut unfinished = 0_u64;
        let mut query = FlowQuery {
            kind: Some(FlowKind::Plan),
            limit: 1_000,
            ..FlowQuery::default()
        };
        loop {
            let page = store.list(&query).await.unwrap_or_else(|error| fail(error));
            unfinished += page
                .flows
                .iter()
                .filter(|f| f.status != FlowStatus::Plan(PlanState::Deactivated))
                .count() as u64;
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => break,
            }
        }
        if unfinished == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_done = began.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
    };
    println!(
        "HTTP: {} clients POSTing one-step plans for {} s, SQLite synchronous=FULL, worker in the same process",
        args.clients, args.seconds
    );
    println!();
    println!("| flows started | seconds | starts/s | POST p50 ms | POST p99 ms | all finished after s | finished/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
        load.as_secs_f64(),
        total as f64 / load.as_secs_f64(),
        at(0.5),
        at(0.99),
        all_done.as_secs_f64(),
        total as f64 / all_done.as_secs_f64()
    );
    server.shutdown().await;
}
