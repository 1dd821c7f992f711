//! Flow creation, for every kind: one id policy, one way to record a new flow, and
//! idempotent starts.
//!
//! A flow's id is minted from the clock and 74 random bits ([`mint_flow_id`]: a UUIDv7,
//! so ids sort by creation time), or chosen by the caller ([`Creation::with_id`]: a child's
//! stable id, or a client's id that makes a start idempotent). A new flow's first append
//! carries its `flow_created` (and `child_of`, and whatever the kind records with its
//! creation, such as a plan's `plan_started`), checked against the fold like every event.
//!
//! **Idempotent starts** ([`StartOptions`], [`Creation::with_start`]): a start with an
//! idempotency key records the key in the same transaction as the flow (the store's
//! [`flowstate_store::IdempotencyKey`]), with the request's [`Creation::fingerprint`] and an
//! expiry (the creation time plus the window, [`DEFAULT_IDEMPOTENCY_WINDOW`] unless the
//! engine says otherwise). Starting again with a live key writes nothing: the same
//! fingerprint gives the first flow ([`Created::Existing`]), another fingerprint
//! [`CreateError::KeyReused`]. A client-chosen id without a key is its own key (its text), so
//! a start with an id replays the same way within the window; after the window a taken id is
//! [`CreateError::Exists`] (ids are never reused; only the answer changes).
//!
//! **The fingerprint** is `v1:` and the SHA-256, in hex, of a canonical JSON encoding (object
//! keys sorted at every level, no whitespace, numbers and strings as `serde_json` writes them)
//! of `{"definition", "id", "input", "kind", "parent", "request"}`: the kind's key, the
//! definition, the input, the parent (or `null`), the chosen id (or `null`) and what else
//! the front door says defines the request ([`Creation::with_request`]: a plan's goals and
//! choices), so two requests have the same fingerprint exactly when they would start the same
//! flow. What a creation records beyond its request (a plan's computed plan) is left out, so a
//! retry after a step was registered again still matches. `1` and `1.0` are different inputs.
//!
//! **Must never:** decide a kind's definitions or inputs (the front door checks them before it
//! stages a creation), or overwrite a flow: a creation whose id is taken is
//! [`CreateError::Exists`], and nothing is written.

use std::time::Duration;

use flowstate_core::{Clock, EventBody, FlowId, FlowKind};
use flowstate_store::{IdempotencyKey, Store, StoreError};
use sha2::{Digest, Sha256};

use crate::{AppendExtras, FlowWriter, WriteError};

/// How long an idempotency key is kept by default: a day.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// A new flow's id: the clock's time and 74 random bits (UUIDv7).
#[must_use]
pub fn mint_flow_id(clock: &dyn Clock) -> FlowId {
    FlowId::from_parts(clock.now(), rand::random())
}

/// How a client starts a flow: with an id of its choosing, an idempotency key, both or
/// neither. With either, starting again with the same request gives the first flow and
/// changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartOptions {
    /// The flow's id, instead of a minted one (also its idempotency key when `idempotency_key`
    /// is not given).
    pub id: Option<FlowId>,
    /// The start's idempotency key, 1 to
    /// [`flowstate_core::limits::MAX_IDEMPOTENCY_KEY_BYTES`] bytes.
    pub idempotency_key: Option<String>,
}

impl StartOptions {
    /// No id and no key: every start makes a new flow.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The flow gets the id `id`.
    #[must_use]
    pub fn with_id(mut self, id: FlowId) -> Self {
        self.id = Some(id);
        self
    }

    /// The start is idempotent under `key`.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What a recorded creation gave: a new flow, or the flow an earlier start with the same key
/// (or id) and the same request made (nothing was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Created {
    /// The flow was created now.
    New(FlowId),
    /// The same start was made before: its flow.
    Existing(FlowId),
}

impl Created {
    /// The flow's id.
    #[must_use]
    pub fn id(self) -> FlowId {
        match self {
            Self::New(id) | Self::Existing(id) => id,
        }
    }

    /// Whether an earlier start made the flow.
    #[must_use]
    pub fn is_existing(self) -> bool {
        matches!(self, Self::Existing(_))
    }
}

/// What a new flow is: its kind, definition and input, and how it gets its id.
#[derive(Debug, Clone)]
#[must_use = "a creation does nothing until it is staged and recorded"]
pub struct Creation {
    id: Option<FlowId>,
    kind: FlowKind,
    definition: String,
    input: serde_json::Value,
    parent: Option<FlowId>,
    then: Vec<EventBody>,
    key: Option<String>,
    request: serde_json::Value,
    window: Duration,
}

impl Creation {
    /// A flow of `kind` running `definition` with `input`, with a minted id.
    pub fn new(kind: FlowKind, definition: impl Into<String>, input: serde_json::Value) -> Self {
        Self {
            id: None,
            kind,
            definition: definition.into(),
            input,
            parent: None,
            then: Vec::new(),
            key: None,
            request: serde_json::Value::Null,
            window: DEFAULT_IDEMPOTENCY_WINDOW,
        }
    }

    /// The flow gets the id `id` instead of a minted one.
    pub fn with_id(mut self, id: FlowId) -> Self {
        self.id = Some(id);
        self
    }

    /// The creation is idempotent under `key` (see the module's documentation).
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A client's start: its id (which is its key when it gives no key) and its key.
    pub fn with_start(mut self, options: &StartOptions) -> Self {
        if let Some(id) = options.id {
            self = self.with_id(id);
        }
        self.key = options
            .idempotency_key
            .clone()
            .or_else(|| options.id.map(|id| id.to_string()));
        self
    }

    /// What else defines the request, for the fingerprint (a plan's goals and choices).
    pub fn with_request(mut self, request: serde_json::Value) -> Self {
        self.request = request;
        self
    }

    /// Keeps the idempotency key for `window` after the creation (default
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`]).
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The flow is the child of `parent` (`child_of` is recorded with its creation).
    pub fn child_of(mut self, parent: FlowId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// `events` are recorded in the creation's append, after `flow_created` (and `child_of`).
    pub fn then(mut self, events: impl IntoIterator<Item = EventBody>) -> Self {
        self.then.extend(events);
        self
    }

    /// The request's fingerprint (see the module's documentation).
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let id = self.id.map(|id| id.to_string());
        let parent = self.parent.map(|id| id.to_string());
        let whole = serde_json::json!({
            "definition": self.definition,
            "id": id,
            "input": self.input,
            "kind": self.kind.key(),
            "parent": parent,
            "request": self.request,
        });
        let mut encoded = Vec::new();
        canonical(&whole, &mut encoded);
        let digest = Sha256::digest(&encoded);
        let mut text = String::with_capacity(3 + 2 * digest.len());
        text.push_str("v1:");
        for byte in digest {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        text
    }

    /// A writer for the new flow with its creation staged (checked and folded), timed by
    /// `clock`: record it with [`record`], or stage more and commit it with the flow's first
    /// decisions. An idempotency key over its limit is refused here, with nothing written.
    pub fn stage(self, clock: &dyn Clock) -> Result<FlowWriter, WriteError> {
        let idempotency = match &self.key {
            Some(key) => {
                flowstate_store::validate::check_idempotency_key(key).map_err(StoreError::from)?;
                Some(IdempotencyKey {
                    key: key.clone(),
                    fingerprint: self.fingerprint(),
                    expires_at: clock.now().saturating_add(self.window),
                })
            }
            None => None,
        };
        let id = self.id.unwrap_or_else(|| mint_flow_id(clock));
        let mut events = Vec::with_capacity(2 + self.then.len());
        events.push(EventBody::FlowCreated {
            kind: self.kind,
            definition: self.definition,
            input: self.input,
        });
        events.extend(self.parent.map(|parent| EventBody::ChildOf { parent }));
        events.extend(self.then);
        let mut writer = FlowWriter::new(id);
        writer.stage(clock, events)?;
        writer.set_idempotency(idempotency);
        Ok(writer)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `value` as JSON with the keys of every object sorted (whatever order the map keeps).
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        serde_json::Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                scalar(&serde_json::Value::String(key.clone()), out);
                out.push(b':');
                canonical(&fields[key], out);
            }
            out.push(b'}');
        }
        other => scalar(other, out),
    }
}

fn scalar(value: &serde_json::Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail.
    let _infallible = serde_json::to_writer(&mut *out, value);
}

/// Why a creation was not recorded. Exhaustive on purpose: a creation finds its id taken, its
/// key used by another request, or fails to write, and every front door maps each to its own
/// error.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A flow with the id exists already (made by another request, or before the window);
    /// nothing was written.
    #[error("flow {flow} exists already")]
    Exists {
        /// The id.
        flow: FlowId,
    },
    /// The idempotency key started a flow with another request; nothing was written.
    #[error("idempotency key {key:?} was used for another request, which started flow {flow}")]
    KeyReused {
        /// The key.
        key: String,
        /// The flow it started.
        flow: FlowId,
    },
    /// The creation was refused or the store failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Records the creation staged in `writer` (by [`Creation::stage`]), marked ready for workers
/// when `ready` (else it runs in this process, or waits to be started). Returns its id, and
/// whether an earlier start with the same key and request made it ([`Created::Existing`]:
/// nothing was written).
pub async fn record(
    store: &dyn Store,
    mut writer: FlowWriter,
    ready: bool,
) -> Result<Created, CreateError> {
    let flow = writer.flow();
    let extras = AppendExtras {
        ready: Some(ready),
        ..AppendExtras::default()
    };
    let ours = writer.idempotency().map(|key| key.fingerprint.clone());
    match writer.commit(store, extras).await {
        Ok(_) => Ok(Created::New(flow)),
        Err(error) => settled(error, flow, ours.as_deref()),
    }
}

/// What a failed creation's commit means: a live key of the same request is the earlier
/// flow ([`Created::Existing`] inside `Ok`), and the rest are errors. For the front doors
/// that commit a creation with its first decisions: `fingerprint` is the one the creation was
/// staged with ([`FlowWriter::idempotency`]).
pub fn settled(
    error: WriteError,
    flow: FlowId,
    fingerprint: Option<&str>,
) -> Result<Created, CreateError> {
    match error {
        WriteError::Store(StoreError::KeyTaken {
            key,
            flow: existing,
            fingerprint: theirs,
        }) => {
            if fingerprint == Some(theirs.as_str()) {
                Ok(Created::Existing(existing))
            } else if key == existing.to_string() {
                // A chosen id without a key is its own key: taken by another request.
                Err(CreateError::Exists { flow: existing })
            } else {
                Err(CreateError::KeyReused {
                    key,
                    flow: existing,
                })
            }
        }
        error if error.is_conflict() => Err(CreateError::Exists { flow }),
        error => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowstate_core::{ManualClock, Timestamp};
    use flowstate_store::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn a_chosen_id_is_created_once() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_767_225_600_000_000,
        )));
        let store = MemoryStore::new(clock.clone());
        let id = mint_flow_id(clock.as_ref());
        let creation = Creation::new(FlowKind::Function, "f", serde_json::json!(1)).with_id(id);
        let writer = creation.clone().stage(clock.as_ref()).expect("stage");
        assert_eq!(
            record(&store, writer, true).await.expect("record"),
            Created::New(id)
        );
        let again = creation.stage(clock.as_ref()).expect("stage");
        let error = record(&store, again, true).await.expect_err("taken");
        assert!(matches!(error, CreateError::Exists { flow } if flow == id));
        let summary = flowstate_store::Store::flow(&store, id)
            .await
            .expect("read")
            .expect("exists");
        assert!(summary.ready);
    }

    #[tokio::test]
    async fn a_child_records_its_parent() {
        let clock = ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000));
        let parent = mint_flow_id(&clock);
        let writer = Creation::new(FlowKind::Function, "child", serde_json::Value::Null)
            .child_of(parent)
            .stage(&clock)
            .expect("stage");
        assert_eq!(writer.record().and_then(|r| r.parent), Some(parent));
        assert_ne!(writer.flow(), parent, "a minted id");
    }

    fn fixture() -> (Arc<ManualClock>, MemoryStore) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_767_225_600_000_000,
        )));
        let store = MemoryStore::new(clock.clone());
        (clock, store)
    }

    #[tokio::test]
    async fn a_key_replays_the_same_request_and_refuses_another() {
        let (clock, store) = fixture();
        let start = |input: serde_json::Value| {
            Creation::new(FlowKind::Function, "f", input)
                .with_start(&StartOptions::new().with_idempotency_key("order-7"))
                .stage(clock.as_ref())
                .expect("stage")
        };
        let first = record(&store, start(serde_json::json!({"a": 1, "b": 2})), true)
            .await
            .expect("first");
        assert!(!first.is_existing());
        let again = record(&store, start(serde_json::json!({"b": 2, "a": 1})), true)
            .await
            .expect("replay");
        assert_eq!(again, Created::Existing(first.id()));
        let error = record(&store, start(serde_json::json!({"a": 2})), true)
            .await
            .expect_err("another request");
        assert!(
            matches!(&error, CreateError::KeyReused { key, flow } if key == "order-7" && *flow == first.id()),
            "{error:?}"
        );
        let all = store.list(&flowstate_store::FlowQuery::default()).await;
        assert_eq!(all.expect("list").flows.len(), 1);
    }

    #[tokio::test]
    async fn a_chosen_id_replays_within_the_window_and_is_never_reused() {
        let (clock, store) = fixture();
        let id = mint_flow_id(clock.as_ref());
        let start = |input: serde_json::Value| {
            Creation::new(FlowKind::Function, "f", input)
                .with_start(&StartOptions::new().with_id(id))
                .idempotency_window(Duration::from_secs(60))
                .stage(clock.as_ref())
                .expect("stage")
        };
        let first = record(&store, start(serde_json::json!(1)), true).await;
        assert_eq!(first.expect("first"), Created::New(id));
        let again = record(&store, start(serde_json::json!(1)), true).await;
        assert_eq!(again.expect("replay"), Created::Existing(id));
        let other = record(&store, start(serde_json::json!(2)), true).await;
        assert!(matches!(other, Err(CreateError::Exists { flow }) if flow == id));
        clock.advance(Duration::from_secs(60));
        let late = record(&store, start(serde_json::json!(1)), true).await;
        assert!(matches!(late, Err(CreateError::Exists { flow }) if flow == id));
    }

    #[test]
    fn the_fingerprint_covers_the_request_and_nothing_else() {
        let base = || {
            Creation::new(
                FlowKind::Plan,
                "p",
                serde_json::json!({"x": [1, {"b": 1, "a": 2}]}),
            )
        };
        let print = base().fingerprint();
        assert_eq!(print.len(), 67);
        assert!(print.starts_with("v1:"));
        let reordered = Creation::new(
            FlowKind::Plan,
            "p",
            serde_json::json!({"x": [1, {"a": 2, "b": 1}]}),
        );
        assert_eq!(reordered.fingerprint(), print, "key order does not count");
        let then = base().then([EventBody::ChildOf {
            parent: FlowId::from_parts(Timestamp::EPOCH, [0; 10]),
        }]);
        assert_eq!(then.fingerprint(), print, "recorded extras do not count");
        let key = base()
            .with_idempotency_key("k")
            .idempotency_window(Duration::ZERO);
        assert_eq!(key.fingerprint(), print, "the key and window do not count");
        for other in [
            Creation::new(
                FlowKind::Function,
                "p",
                serde_json::json!({"x": [1, {"b": 1, "a": 2}]}),
            ),
            Creation::new(
                FlowKind::Plan,
                "q",
                serde_json::json!({"x": [1, {"b": 1, "a": 2}]}),
            ),
            Creation::new(
                FlowKind::Plan,
                "p",
                serde_json::json!({"x": [1.0, {"b": 1, "a": 2}]}),
            ),
            base().with_request(serde_json::json!({"goals": ["g"]})),
            base().child_of(FlowId::from_parts(Timestamp::EPOCH, [1; 10])),
            base().with_id(FlowId::from_parts(Timestamp::EPOCH, [2; 10])),
        ] {
            assert_ne!(other.fingerprint(), print, "{other:?}");
        }
    }

    #[test]
    fn a_key_over_its_limit_is_refused_before_anything_is_written() {
        let clock = ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000));
        let long = "k".repeat(flowstate_core::limits::MAX_IDEMPOTENCY_KEY_BYTES + 1);
        let error = Creation::new(FlowKind::Function, "f", serde_json::Value::Null)
            .with_idempotency_key(long)
            .stage(&clock)
            .expect_err("refused");
        assert!(
            matches!(
                error,
                WriteError::Store(StoreError::Invalid(
                    flowstate_store::InvalidInput::BadIdempotencyKey { .. }
                ))
            ),
            "{error:?}"
        );
    }
}
