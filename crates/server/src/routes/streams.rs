//! The event streams (Server-Sent Events, event `flow_event`): one flow's events as they are
//! recorded (`GET /flows/{id}/stream`), and every change of a recent flow (`GET
//! /events/stream`), each message a `flowstate_api::StreamMessage`.
//!
//! It must never read every flow on a poll (the all-flows stream watches a window of the
//! newest flows), and never keep a task alive for a client that went away or past the
//! server's shutdown.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flowstate::core::{Event, FlowId, Timestamp};
use flowstate::store::{FlowQuery, FlowSummary, Store, StoreError};
use flowstate_api::{EventParams, StreamMessage};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::extract::{flow_id, ApiQuery};
use crate::problem::{store_problem, Problem};
use crate::routes::flows::MAX_EVENTS_PER_REQUEST;
use crate::state::ApiState;
use crate::STREAM_POLL;

/// Most flows the all-flows stream watches for changes: the newest ones (by id, that is by
/// creation time), plus every flow created while it runs (the window slides forward).
pub const MAX_WATCHED_FLOWS: usize = 1_000;

/// Most flows one poll of the all-flows stream reads; after a burst of more new flows than
/// this it looks for the newest ones again instead of reading its way through the burst.
pub const MAX_STREAM_READ: usize = 4 * MAX_WATCHED_FLOWS;

/// Most flows below its window the all-flows stream follows: flows created while it runs
/// whose ids sort before the window (a child flow's id carries its parent's creation time; a
/// process whose clock lags makes ids in the past). The one found first is dropped first.
pub const MAX_STRAY_FLOWS: usize = 256;

/// How far before its previous poll the all-flows stream looks for flows created since
/// (creation times come from the clock of the process that created the flow).
const STRAY_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

// The window is found with listings of `MAX_WATCHED_FLOWS` flows.
const _: () = assert!(MAX_WATCHED_FLOWS <= flowstate::core::limits::MAX_PAGE_SIZE);

fn sse(receiver: mpsc::Receiver<StreamMessage>) -> Response {
    let stream = ReceiverStream::new(receiver).map(|message| {
        let data = serde_json::to_value(&message).unwrap_or_default();
        Ok::<_, Infallible>(
            SseEvent::default()
                .event("flow_event")
                .data(data.to_string()),
        )
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Sends one stream message; false when the client went away or the server stops (a client
/// that stopped reading must not keep the task, and the server's shutdown, waiting).
async fn send_or_stop(
    sender: &mpsc::Sender<StreamMessage>,
    message: StreamMessage,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    if *stopped.borrow() {
        return false;
    }
    tokio::select! {
        sent = sender.send(message) => sent.is_ok(),
        _ = stopped.changed() => false,
    }
}

/// Waits for the next poll, or returns false when the server stops.
async fn next_poll(stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(STREAM_POLL) => !*stopped.borrow(),
        changed = stopped.changed() => changed.is_ok() && !*stopped.borrow(),
    }
}

async fn require_flow(state: &ApiState, flow: FlowId) -> Result<(), Problem> {
    match state.inner.engine.store().flow(flow).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Problem::not_found(format!("flow {flow} does not exist"))),
        Err(error) => Err(store_problem(&error)),
    }
}

/// Server-Sent Events: the flow's events as they are recorded (event `flow_event`)
///
/// From `after` (default: the start); `limit` is not read.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{id}/stream",
    tag = "streams",
    params(("id" = String, Path, format = Uuid, description = "The flow"), EventParams),
    responses((status = 200, description = "text/event-stream: one `flow_event` per recorded event", content_type = "text/event-stream", body = StreamMessage))
)]
pub(crate) async fn flow_stream(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Response, Problem> {
    let flow = flow_id(&id)?;
    require_flow(&state, flow).await?;
    let (sender, receiver) = mpsc::channel(256);
    let stopped = state.inner.stopped.clone();
    let store = state.inner.engine.store().clone();
    let next = params.after.saturating_add(1);
    tokio::spawn(follow_flow(store, flow, next, sender, stopped));
    Ok(sse(receiver))
}

/// Sends `flow`'s events from `next` on, until the client goes away or the server stops.
async fn follow_flow(
    store: std::sync::Arc<dyn Store>,
    flow: FlowId,
    mut next: u64,
    sender: mpsc::Sender<StreamMessage>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        match store.read(flow, next, MAX_EVENTS_PER_REQUEST).await {
            Ok(events) => {
                for raw in events {
                    next = raw.seq + 1;
                    let kind = Event::decode(&raw)
                        .map(|event| event.body.type_name())
                        .unwrap_or("undecodable");
                    let message = StreamMessage {
                        flow,
                        seq: raw.seq,
                        status: None,
                        kind: kind.to_owned(),
                    };
                    if !send_or_stop(&sender, message, &mut stopped).await {
                        return; // the client went away
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%flow, %error, "event stream read failed");
            }
        }
        if sender.is_closed() || !next_poll(&mut stopped).await {
            return;
        }
    }
}

/// Server-Sent Events: every change of a flow (event `flow_event`, type `changed`)
///
/// A change of any recent flow (its last sequence number moved), for live lists: the newest
/// [`MAX_WATCHED_FLOWS`] flows when the stream opens, and every flow created while it runs
/// (the window slides forward; a new flow whose id sorts below the window is found by its
/// creation time and followed too, up to [`MAX_STRAY_FLOWS`]). A poll lists only that window
/// (an index range by id) and the flows created since the previous poll, never every flow;
/// changes of older flows are followed by their own streams.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "streams",
    responses((status = 200, description = "text/event-stream: one `flow_event` per change", content_type = "text/event-stream", body = StreamMessage))
)]
pub(crate) async fn all_stream(State(state): State<ApiState>) -> Response {
    let (sender, receiver) = mpsc::channel(256);
    let mut stopped = state.inner.stopped.clone();
    let store = state.inner.engine.store().clone();
    tokio::spawn(async move {
        let mut flows = AllFlows::default();
        loop {
            for message in flows.poll(store.as_ref()).await {
                if !send_or_stop(&sender, message, &mut stopped).await {
                    return;
                }
            }
            if sender.is_closed() || !next_poll(&mut stopped).await {
                return;
            }
        }
    });
    sse(receiver)
}

/// A `changed` message: `flow`'s last event is now `seq`, its status `status`.
fn changed(flow: FlowId, seq: u64, status: &str) -> StreamMessage {
    StreamMessage {
        flow,
        seq,
        status: Some(status.to_owned()),
        kind: "changed".to_owned(),
    }
}

/// What the all-flows stream knows between polls.
#[derive(Default)]
struct AllFlows {
    /// The last sequence number of each watched flow.
    seen: HashMap<FlowId, u64>,
    /// `None`: find the newest flows; `Some(after)`: the window is the flows after it.
    floor: Option<Option<FlowId>>,
    /// Whether the window was read once (the first read reports nothing).
    started: bool,
    /// The flows below the window it follows.
    strays: Strays,
}

impl AllFlows {
    /// The changes since the previous poll.
    async fn poll(&mut self, store: &dyn Store) -> Vec<StreamMessage> {
        let mut changes = Vec::new();
        if self.floor.is_none() {
            match newest_floor(store).await {
                Ok(found) => self.floor = Some(found),
                Err(error) => tracing::warn!(%error, "the all-flows stream could not list flows"),
            }
        }
        if let Some(after) = self.floor {
            match watched(store, after).await {
                Ok((flows, complete)) => self.window(&flows, complete, &mut changes),
                Err(error) => tracing::warn!(%error, "the all-flows stream could not list flows"),
            }
        }
        if let Some(Some(edge)) = self.floor {
            match self.strays.poll(store, edge).await {
                Ok(found) => changes.extend(found),
                Err(error) => {
                    tracing::warn!(%error, "the all-flows stream could not list new flows")
                }
            }
        }
        changes
    }

    /// Notes the window's flows (`complete`: all of them were read), adding their changes.
    fn window(&mut self, flows: &[FlowSummary], complete: bool, changes: &mut Vec<StreamMessage>) {
        for flow in flows {
            let last = flow.next_seq - 1;
            let before = self.seen.insert(flow.id, last);
            if self.started && before != Some(last) {
                changes.push(changed(flow.id, last, flow.status.key()));
            }
        }
        // Slide the window: keep the newest, forget the rest.
        if flows.len() > MAX_WATCHED_FLOWS {
            let edge = flows[flows.len() - MAX_WATCHED_FLOWS - 1].id;
            self.floor = Some(Some(edge));
            self.seen.retain(|id, _| *id > edge);
        }
        if !complete {
            // More new flows than one poll reads: find the newest again.
            self.floor = None;
        }
        self.started = true;
    }
}

/// The flows below the all-flows stream's window that it follows (see [`MAX_STRAY_FLOWS`]).
#[derive(Default)]
struct Strays {
    /// Each flow's last sequence number as last reported (`None`: not reported yet).
    last: HashMap<FlowId, Option<u64>>,
    /// In the order they were found, for dropping the oldest.
    found: std::collections::VecDeque<FlowId>,
    /// When the previous poll looked for new flows.
    since: Option<Timestamp>,
}

impl Strays {
    /// Finds the flows created since the previous poll whose ids sort at or below `edge`,
    /// then reads every followed flow's index row: the changes to report.
    async fn poll(
        &mut self,
        store: &dyn Store,
        edge: FlowId,
    ) -> Result<Vec<StreamMessage>, StoreError> {
        self.find(store, edge).await?;
        let mut changes = Vec::new();
        for id in self.found.clone() {
            let Some(flow) = store.flow(id).await? else {
                // Deleted (archived): no longer followed.
                self.last.remove(&id);
                self.found.retain(|found| *found != id);
                continue;
            };
            let last = flow.next_seq - 1;
            if self.last.insert(id, Some(last)) != Some(Some(last)) {
                changes.push(changed(id, last, flow.status.key()));
            }
        }
        Ok(changes)
    }

    /// Starts following the flows created since the previous poll whose ids sort at or
    /// below `edge`.
    async fn find(&mut self, store: &dyn Store, edge: FlowId) -> Result<(), StoreError> {
        use flowstate::core::Clock as _;
        let now = flowstate::store::SystemClock.now();
        let since = self.since.unwrap_or(now);
        self.since = Some(now);
        let slack = i64::try_from(STRAY_SLACK.as_micros()).unwrap_or(i64::MAX);
        let created = store
            .list(&FlowQuery {
                created_from: Some(Timestamp::from_micros(
                    since.as_micros().saturating_sub(slack),
                )),
                limit: flowstate::core::limits::MAX_PAGE_SIZE,
                ..FlowQuery::default()
            })
            .await?;
        for flow in created.flows.iter().filter(|flow| flow.id <= edge) {
            if self.last.contains_key(&flow.id) {
                continue;
            }
            if self.found.len() >= MAX_STRAY_FLOWS {
                if let Some(oldest) = self.found.pop_front() {
                    self.last.remove(&oldest);
                }
            }
            self.found.push_back(flow.id);
            self.last.insert(flow.id, None);
        }
        Ok(())
    }
}

/// The flows after `after` in id order, at most [`MAX_STREAM_READ`], and whether that was
/// all of them.
async fn watched(
    store: &dyn Store,
    after: Option<FlowId>,
) -> Result<(Vec<FlowSummary>, bool), StoreError> {
    let mut flows = Vec::new();
    let mut query = FlowQuery {
        after,
        limit: flowstate::core::limits::MAX_PAGE_SIZE,
        ..FlowQuery::default()
    };
    loop {
        let page = store.list(&query).await?;
        flows.extend(page.flows);
        match page.next_after {
            None => return Ok((flows, true)),
            Some(_) if flows.len() >= MAX_STREAM_READ => return Ok((flows, false)),
            Some(next) => query.after = Some(next),
        }
    }
}

/// Where the newest flows begin: an `after` id with at most [`MAX_WATCHED_FLOWS`] flows
/// after it (`None`: all flows are that few). Ids are UUIDv7, ordered by creation time, so
/// the smallest id of a moment is a bound; it looks back from now in doubling spans (1 s,
/// 2 s, 4 s, …), each a listing of at most `MAX_WATCHED_FLOWS + 1` flows.
async fn newest_floor(store: &dyn Store) -> Result<Option<FlowId>, StoreError> {
    use flowstate::core::Clock as _;
    let now = flowstate::store::SystemClock.now();
    let mut best = FlowId::from_parts(now, [0; 10]);
    let mut span: i64 = 1_000_000;
    loop {
        let start = now.as_micros().saturating_sub(span);
        let candidate =
            (start > 0).then(|| FlowId::from_parts(Timestamp::from_micros(start), [0; 10]));
        let query = FlowQuery {
            after: candidate,
            limit: MAX_WATCHED_FLOWS,
            ..FlowQuery::default()
        };
        if store.list(&query).await?.next_after.is_some() {
            return Ok(Some(best));
        }
        match candidate {
            None => return Ok(None),
            Some(candidate) => best = candidate,
        }
        span = span.saturating_mul(2);
    }
}
