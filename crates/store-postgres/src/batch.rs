//! Batching of small statements: calls that arrive together share one statement (and one
//! round trip) instead of costing one each. With thousands of flows a second, the database's
//! CPU goes into per-statement work (parse, bind, executor start, locks, WAL records), so
//! batching is what lets several engine processes share one server. Group commit of appends
//! (`group.rs`), reads of logs and releases of leases go through here.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

/// Calls waiting for a batch; callers wait when it is full (backpressure).
pub const QUEUE_CAPACITY: usize = 16_384;

/// Starts `workers` tasks that each take everything queued (up to `max` calls) and hand it
/// to `run` as one batch. They stop when every sender is dropped.
pub(crate) fn spawn<T, F, Fut>(workers: usize, max: usize, run: F) -> mpsc::Sender<T>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let receiver = Arc::new(Mutex::new(receiver));
    let run = Arc::new(run);
    for _ in 0..workers {
        let (receiver, run) = (receiver.clone(), run.clone());
        tokio::spawn(async move {
            loop {
                let mut batch = Vec::new();
                {
                    let mut queue = receiver.lock().await;
                    let Some(first) = queue.recv().await else {
                        return;
                    };
                    batch.push(first);
                    while batch.len() < max {
                        match queue.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                }
                run(batch).await;
            }
        });
    }
    sender
}
