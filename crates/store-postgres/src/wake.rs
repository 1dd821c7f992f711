//! Wake-ups across processes with `LISTEN/NOTIFY`.
//!
//! Every transaction that makes a flow claimable (sets its ready flag) or sets a timer also
//! runs `pg_notify`, which PostgreSQL delivers at commit to every listening session; a
//! release that leaves a flow ready, and `mark_ready`, notify right after their commit. Each
//! store keeps one extra connection that `LISTEN`s and turns a notification for its schema
//! into a [`Wakeups`] tick of the right kind, so idle workers in every process wake at once
//! instead of polling. Notifications are hints: a worker that misses one (its listener was
//! reconnecting) finds the work at its next poll, and a reconnect wakes everyone, since
//! something may have been missed meanwhile. A notification that cannot be sent after a
//! commit is logged, never reported as a failure of the write it follows.

use std::time::Duration;

use flowstate_store::{StoreError, WakeKind, Wakeups};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::pg_error;

/// The notification channel all flowstate stores share; the payload is `KIND:SCHEMA`.
pub const CHANNEL: &str = "flowstate_wake";

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// How long the listener waits before reconnecting after its connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

fn kind_key(kind: WakeKind) -> &'static str {
    match kind {
        WakeKind::Flows => "flows",
        WakeKind::Timers => "timers",
    }
}

/// The wake-ups an append causes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wakes {
    flows: bool,
    timers: bool,
}

impl Wakes {
    pub(crate) fn of(batch: &flowstate_store::AppendBatch) -> Self {
        Self {
            flows: batch.ready == Some(true),
            timers: !batch.timers.is_empty(),
        }
    }

    pub(crate) fn add(&mut self, other: Self) {
        self.flows |= other.flows;
        self.timers |= other.timers;
    }

    fn kinds(self) -> impl Iterator<Item = WakeKind> {
        [
            self.flows.then_some(WakeKind::Flows),
            self.timers.then_some(WakeKind::Timers),
        ]
        .into_iter()
        .flatten()
    }
}

/// Where this store's wake-ups go: its own workers, and every process on the same schema.
#[derive(Debug)]
pub(crate) struct WakeChannel {
    /// The schema, so that processes on other schemas of the database ignore the ticks.
    schema: String,
    wakeups: Wakeups,
}

impl WakeChannel {
    pub(crate) fn new(schema: String, wakeups: Wakeups) -> Self {
        Self { schema, wakeups }
    }

    fn payload(&self, kind: WakeKind) -> String {
        format!("{}:{}", kind_key(kind), self.schema)
    }

    /// Queues the notification in `tx`; PostgreSQL sends it only if `tx` commits.
    pub(crate) async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        kind: WakeKind,
    ) -> Result<(), StoreError> {
        let notify = tx.prepare_cached(NOTIFY).await.map_err(pg_error)?;
        tx.execute(&notify, &[&CHANNEL, &self.payload(kind)])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Queues the notifications of `wakes` in `tx`.
    pub(crate) async fn notify_all(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        wakes: Wakes,
    ) -> Result<(), StoreError> {
        for kind in wakes.kinds() {
            self.notify(tx, kind).await?;
        }
        Ok(())
    }

    /// Ticks this process's counters for `wakes` (after the commit that notified them).
    pub(crate) fn wake_here_all(&self, wakes: Wakes) {
        for kind in wakes.kinds() {
            self.wake_here(kind);
        }
    }

    /// Sends the notification now, after a write committed: a failure is logged, not
    /// returned (the write happened; the other processes find it at their next poll).
    pub(crate) async fn notify_now(&self, client: &deadpool_postgres::Object, kind: WakeKind) {
        self.wake_here(kind);
        let sent = match client.prepare_cached(NOTIFY).await {
            Ok(notify) => client
                .execute(&notify, &[&CHANNEL, &self.payload(kind)])
                .await
                .map(drop),
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "could not notify other processes; they will find the work at their next poll");
        }
    }

    /// Wakes this process's workers without waiting for the notification's round trip.
    pub(crate) fn wake_here(&self, kind: WakeKind) {
        self.wakeups.wake(kind);
    }

    /// Keeps one session listening, reconnecting after failures, until the task is aborted.
    pub(crate) async fn listen(self: std::sync::Arc<Self>, config: tokio_postgres::Config) {
        loop {
            match config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let schema = self.schema.clone();
                    let wakeups = self.wakeups.clone();
                    // The connection must be polled for the LISTEN to complete and for
                    // notifications to arrive; it ends when the session fails.
                    let driver = tokio::spawn(async move {
                        while let Some(message) =
                            std::future::poll_fn(|cx| connection.poll_message(cx)).await
                        {
                            let notification = match message {
                                Ok(AsyncMessage::Notification(n)) => n,
                                Ok(_) => continue,
                                Err(error) => {
                                    tracing::warn!(%error, "wake-up listener lost its session; reconnecting");
                                    break;
                                }
                            };
                            match notification.payload().split_once(':') {
                                Some(("flows", s)) if s == schema => wakeups.wake(WakeKind::Flows),
                                Some(("timers", s)) if s == schema => {
                                    wakeups.wake(WakeKind::Timers);
                                }
                                _ => {}
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                        Ok(()) => {
                            // Whatever was notified before we listened is found by one look.
                            self.wakeups.wake_all();
                            let _ended = driver.await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "wake-up listener could not LISTEN; retrying");
                            driver.abort();
                        }
                    }
                    drop(client);
                }
                Err(error) => {
                    tracing::warn!(%error, "wake-up listener cannot connect; retrying (workers poll meanwhile)");
                }
            }
            self.wakeups.wake_all();
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }
}
