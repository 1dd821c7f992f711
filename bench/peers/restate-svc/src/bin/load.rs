//! The load of `flowstate-bench http` (crates/bench/src/http.rs), aimed at Restate.
//!
//! `clients` concurrent HTTP/1.1 clients (keep-alive, one reqwest client with the same pool
//! setting as ours) each POST one-way invocations of the one-step service
//! (`/Echo/run/send`, body `{"text":N}`) back to back for `seconds`. Each accepted reply
//! (Restate answers `/send` once the invocation is appended to its log and the partition
//! processor has taken it: `{"status":"Accepted"}`) counts as a start, like our 201. Then,
//! like ours, it polls every 100 ms until no invocation is left unfinished, asking Restate's
//! admin SQL API (`/query` on the admin port). Prints the same Markdown row as ours.
//!
//! One difference from ours: the reply body is read (`bytes()`) before the next request, so
//! the keep-alive connection is certainly reused; ours drops the response after the status.
//! Unlike ours, the measured phase follows a warm-up of the same load (rounds of WARMUP seconds,
//! every invocation of them completed, until a round has no send slower than 500 ms): a fresh
//! node settles its partitions' leaders in its first seconds.
//! Usage: load [SECONDS] [CLIENTS] [INGRESS_URL] [ADMIN_URL] [WARMUP]
//!        (defaults 5 64 http://127.0.0.1:8080 http://127.0.0.1:9070 2)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1);
}

/// Counts of invocations of the Echo service by status, through the admin SQL API.
async fn statuses(client: &reqwest::Client, admin: &str) -> Vec<(String, u64)> {
    let body = serde_json::json!({
        "query": "SELECT status, count(*) AS n FROM sys_invocation_status \
                  WHERE target_service_name = 'Echo' GROUP BY status"
    });
    let response = client
        .post(format!("{admin}/query"))
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|error| fail(error));
    if !response.status().is_success() {
        let status = response.status();
        fail(format!("query: {status}: {}", response.text().await.unwrap_or_default()));
    }
    let value: serde_json::Value = response.json().await.unwrap_or_else(|error| fail(error));
    value["rows"]
        .as_array()
        .unwrap_or_else(|| fail(format!("query: no rows in {value}")))
        .iter()
        .map(|row| {
            (
                row["status"].as_str().unwrap_or("?").to_owned(),
                row["n"].as_u64().unwrap_or_else(|| fail(format!("query: bad row {row}"))),
            )
        })
        .collect()
}

/// `clients` keep-alive clients sending one-way invocations back to back for `seconds`: the
/// number accepted, their latencies, and how long the phase took.
async fn send_for(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    seconds: u64,
) -> (u64, Vec<Duration>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client_no| {
            let (client, url, stop, started) =
                (client.clone(), url.to_owned(), stop.clone(), started.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({"text": client_no as u64 * 1_000_000 + n});
                    let sent = Instant::now();
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status().is_success() => {
                            let reply = response.bytes().await.unwrap_or_else(|e| fail(e));
                            if !reply.windows(8).any(|w| w == b"Accepted") {
                                fail(format!("reply {}", String::from_utf8_lossy(&reply)));
                            }
                            latencies.push(sent.elapsed());
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => fail(format!(
                            "status {}: {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        )),
                        Err(error) => fail(error),
                    }
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_else(|error| fail(error)));
    }
    let load = began.elapsed();
    (started.load(Ordering::Relaxed), latencies, load)
}

/// Polls every 100 ms until no invocation of the service is unfinished; returns how many
/// completed invocations Restate still records.
async fn wait_all_completed(client: &reqwest::Client, admin: &str) -> u64 {
    loop {
        let counts = statuses(client, admin).await;
        let unfinished: u64 = counts
            .iter()
            .filter(|(status, _)| status != "completed")
            .map(|(_, n)| n)
            .sum();
        if unfinished == 0 {
            return counts.iter().map(|(_, n)| n).sum::<u64>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: &str| args.next().unwrap_or_else(|| default.to_owned());
    let seconds: u64 = arg("5").parse().unwrap_or_else(|e| fail(e));
    let clients: usize = arg("64").parse().unwrap_or_else(|e| fail(e));
    let ingress = arg("http://127.0.0.1:8080");
    let admin = arg("http://127.0.0.1:9070");
    let warmup: u64 = arg("2").parse().unwrap_or_else(|e| fail(e));

    let url = format!("{ingress}/Echo/run/send");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap_or_else(|error| fail(error));
    // Warm-up: the same load for `warmup` seconds, every invocation completed before measuring
    // (a fresh Restate node is still settling its partitions' leaders in its first seconds).
    // Repeated (at most 10 times) until no send of a round took longer than 500 ms.
    let mut warm = 0;
    for _ in 0..if warmup > 0 { 10 } else { 0 } {
        let (n, latencies, _) = send_for(&client, &url, clients, warmup).await;
        warm = wait_all_completed(&client, &admin).await;
        let slowest = latencies.iter().max().copied().unwrap_or_default();
        eprintln!(
            "warm-up: {n} invocations accepted in {warmup} s (slowest {} ms), {warm} completed so far",
            slowest.as_millis()
        );
        if slowest < Duration::from_millis(500) {
            break;
        }
    }

    let began = Instant::now();
    let (total, mut latencies, load) = send_for(&client, &url, clients, seconds).await;
    // Wait until Restate finished every invocation.
    let completed = wait_all_completed(&client, &admin).await - warm;
    let all_done = began.elapsed();
    if completed != total {
        eprintln!("note: {completed} completed invocations recorded, {total} accepted");
    }
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
    };
    println!(
        "| {total} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
        load.as_secs_f64(),
        total as f64 / load.as_secs_f64(),
        at(0.5),
        at(0.99),
        all_done.as_secs_f64(),
        total as f64 / all_done.as_secs_f64()
    );
}
