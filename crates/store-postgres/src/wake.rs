//! Wake-ups across processes with `LISTEN/NOTIFY`.
//!
//! Every transaction that makes a flow claimable (sets its ready flag, or leaves it ready on
//! release) or sets a timer also runs `pg_notify`, which PostgreSQL delivers at commit to
//! every listening session. Each store keeps one extra connection that `LISTEN`s and turns a
//! notification for its schema into a [`Wakeups`] tick, so idle workers in every process
//! wake at once instead of polling. Notifications are hints: a worker that misses one (its
//! listener was reconnecting) finds the work at its next poll, and a reconnect wakes
//! everyone, since something may have been missed meanwhile.

use std::time::Duration;

use flowstate_store::{StoreError, Wakeups};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::pg_error;

/// The notification channel all flowstate stores share; the payload names the schema.
pub const CHANNEL: &str = "flowstate_wake";

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// How long the listener waits before reconnecting after its connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Where this store's wake-ups go: its own workers, and every process on the same schema.
#[derive(Debug)]
pub(crate) struct WakeChannel {
    /// The schema, so that processes on other schemas of the database ignore the ticks.
    payload: String,
    wakeups: Wakeups,
}

impl WakeChannel {
    pub(crate) fn new(payload: String, wakeups: Wakeups) -> Self {
        Self { payload, wakeups }
    }

    /// Queues the notification in `tx`; PostgreSQL sends it only if `tx` commits.
    pub(crate) async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        let notify = tx.prepare_cached(NOTIFY).await.map_err(pg_error)?;
        tx.execute(&notify, &[&CHANNEL, &self.payload])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Sends the notification now (outside a transaction).
    pub(crate) async fn notify_now(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<(), StoreError> {
        let notify = client.prepare_cached(NOTIFY).await.map_err(pg_error)?;
        client
            .execute(&notify, &[&CHANNEL, &self.payload])
            .await
            .map_err(pg_error)?;
        self.wake_here();
        Ok(())
    }

    /// Wakes this process's workers without waiting for the notification's round trip.
    pub(crate) fn wake_here(&self) {
        self.wakeups.wake();
    }

    /// Keeps one session listening, reconnecting after failures, until the task is aborted.
    pub(crate) async fn listen(self: std::sync::Arc<Self>, config: tokio_postgres::Config) {
        loop {
            if let Ok((client, mut connection)) = config.connect(NoTls).await {
                let payload = self.payload.clone();
                let wakeups = self.wakeups.clone();
                // The connection must be polled for the LISTEN to complete and for
                // notifications to arrive; it ends when the session fails.
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) if n.payload() == payload => {
                                wakeups.wake();
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    // Whatever was notified before we listened is found by one look.
                    self.wakeups.wake();
                    let _ended = driver.await;
                } else {
                    driver.abort();
                }
                drop(client);
            }
            self.wakeups.wake();
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }
}
