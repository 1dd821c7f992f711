//! Child program of the crash test: appends to a store forever and prints each acknowledged
//! event as `ack FLOW SEQ`, flushing after every line, until it is killed.
//!
//! Usage: `flowstate-crash-appender DB FLOWS`. It continues the flows already in the store
//! (folding each log, so a damaged log stops it with an error) and creates the missing ones.
//! Each flow is a durable-function activation cycling through the legal transitions
//! active current → sleeping → active replay → active current, so every log must fold.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use flowstate_core::machine::ActivationState;
use flowstate_core::{EventBody, FlowId, FlowKind, FlowStatus};
use flowstate_engine::FlowWriter;
use flowstate_store::{FlowQuery, Store, SystemClock};
use flowstate_store_sqlite::{SqliteOptions, SqliteStore};

fn next_transition(status: FlowStatus) -> ActivationState {
    match status {
        FlowStatus::Function(ActivationState::ActiveCurrent) => ActivationState::Sleeping,
        FlowStatus::Function(ActivationState::Sleeping) => ActivationState::ActiveReplay,
        _ => ActivationState::ActiveCurrent,
    }
}

async fn run(path: &str, flows: usize) -> Result<(), String> {
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(path, clock.clone(), SqliteOptions::default())
            .map_err(|e| e.to_string())?,
    );
    let existing = store
        .list(&FlowQuery::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut writers = Vec::new();
    for summary in &existing.flows {
        writers.push(
            FlowWriter::load(store.as_ref(), summary.id)
                .await
                .map_err(|e| format!("flow {} does not load: {e}", summary.id))?,
        );
    }
    let mut counter: u64 = 0;
    while writers.len() < flows {
        counter += 1;
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&counter.to_be_bytes());
        random[8..].copy_from_slice(&std::process::id().to_be_bytes()[2..]);
        let mut writer = FlowWriter::new(FlowId::from_parts(
            flowstate_core::Clock::now(clock.as_ref()),
            random,
        ));
        let created = EventBody::FlowCreated {
            kind: FlowKind::Function,
            definition: "crash-appender".into(),
            input: serde_json::json!({ "purpose": "crash test" }),
        };
        let outcome = writer
            .append(store.as_ref(), clock.as_ref(), vec![created])
            .await
            .map_err(|e| e.to_string())?;
        ack(writer.flow(), outcome.first_seq);
        writers.push(writer);
    }
    let mut tasks = Vec::new();
    for writer in writers {
        tasks.push(tokio::spawn(append_forever(
            writer,
            store.clone(),
            clock.clone(),
        )));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Appends one transition at a time to one flow, acknowledging each, until an error.
async fn append_forever(
    mut writer: FlowWriter,
    store: Arc<dyn Store>,
    clock: Arc<SystemClock>,
) -> Result<(), String> {
    loop {
        let status = writer
            .record()
            .map(|r| r.status)
            .ok_or("flow not created")?;
        let body = EventBody::ActivationStateChanged {
            to: next_transition(status),
            diagnostic: None,
        };
        let outcome = writer
            .append(store.as_ref(), clock.as_ref(), vec![body])
            .await
            .map_err(|e| e.to_string())?;
        ack(writer.flow(), outcome.first_seq);
    }
}

fn ack(flow: FlowId, seq: u64) {
    let mut out = std::io::stdout().lock();
    // A failed write means the parent is gone; there is nobody left to tell.
    let _written = writeln!(out, "ack {flow} {seq}").and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(flows)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: flowstate-crash-appender DB FLOWS");
        return ExitCode::from(2);
    };
    flowstate_testkit::run_child(run(path, flows))
}
