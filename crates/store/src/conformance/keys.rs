//! Conformance cases for idempotency keys of creations: a live key creates once (also when
//! many creations race for it), reports the flow it made and its fingerprint, writes nothing
//! when refused, is replaced once expired, survives a reopen, and is checked against its
//! limits.

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::limits::{MAX_FINGERPRINT_BYTES, MAX_IDEMPOTENCY_KEY_BYTES};
use flowstate_core::{Clock, FlowId, FlowKind};

use super::{assert_invalid, creation, event, fixture, new_flow_id, Fixture, StoreFactory};
use crate::{AppendBatch, IdempotencyKey, InvalidInput, Store, StoreError};

/// A creation of a new flow carrying `key` with `fingerprint`, kept for `window`.
fn keyed(fx: &Fixture, key: &str, fingerprint: &str, window: Duration) -> (FlowId, AppendBatch) {
    let flow = new_flow_id(&fx.clock);
    let mut batch = creation(
        flow,
        FlowKind::Function,
        "keyed",
        vec![event(fx.clock.now(), &serde_json::json!({"created": true}))],
    );
    if let Some(create) = batch.create.as_mut() {
        create.idempotency = Some(IdempotencyKey {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            expires_at: fx.clock.now().saturating_add(window),
        });
    }
    (flow, batch)
}

const HOUR: Duration = Duration::from_secs(3_600);

/// Asserts that `result` is `KeyTaken` naming `flow` and `fingerprint`.
fn assert_taken<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    key: &str,
    flow: FlowId,
    fingerprint: &str,
    what: &str,
) {
    match result {
        Err(StoreError::KeyTaken {
            key: k,
            flow: f,
            fingerprint: p,
        }) => assert_eq!(
            (k.as_str(), f, p.as_str()),
            (key, flow, fingerprint),
            "{what}"
        ),
        other => panic!("{what}: expected KeyTaken, got {other:?}"),
    }
}

async fn assert_absent(store: &dyn Store, flow: FlowId, what: &str) {
    assert!(
        store.flow(flow).await.expect("flow").is_none(),
        "{what}: the refused creation wrote its flow"
    );
}

/// The same key twice: the second creation (same or another fingerprint, another flow or the
/// same one) writes nothing and names the first flow and its fingerprint; many creations
/// racing for one key make exactly one flow.
pub async fn an_idempotency_key_creates_once<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let (first, batch) = keyed(&fx, "order-1", "fp-a", HOUR);
    fx.store.append(batch).await.expect("first creation");
    for fingerprint in ["fp-a", "fp-b"] {
        let (again, batch) = keyed(&fx, "order-1", fingerprint, HOUR);
        assert_taken(
            fx.store.append(batch).await,
            "order-1",
            first,
            "fp-a",
            fingerprint,
        );
        assert_absent(fx.store.as_ref(), again, fingerprint).await;
    }
    // The key is checked before the flow's existence.
    let (_, mut batch) = keyed(&fx, "order-1", "fp-a", HOUR);
    batch.flow = first;
    assert_taken(
        fx.store.append(batch).await,
        "order-1",
        first,
        "fp-a",
        "same flow",
    );
    assert_eq!(
        fx.store.read(first, 1, 10).await.expect("read").len(),
        1,
        "nothing appended to the first flow"
    );
    // Another key is another creation.
    let (other, batch) = keyed(&fx, "order-2", "fp-a", HOUR);
    fx.store.append(batch).await.expect("another key");
    assert!(fx.store.flow(other).await.expect("flow").is_some());

    // Racing creations with one key: exactly one wins, every other names the winner.
    let mut racers = Vec::new();
    let mut flows = Vec::new();
    for _ in 0..16 {
        let (flow, batch) = keyed(&fx, "race", "fp-r", HOUR);
        flows.push(flow);
        let store = fx.store.clone();
        racers.push(tokio::spawn(async move { store.append(batch).await }));
    }
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("join"));
    }
    let winners: Vec<FlowId> = flows
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(flow, _)| *flow)
        .collect();
    assert_eq!(winners.len(), 1, "one creation wins the key: {outcomes:?}");
    for (flow, outcome) in flows.iter().zip(outcomes) {
        if *flow != winners[0] {
            assert_taken(outcome, "race", winners[0], "fp-r", "racer");
            assert_absent(fx.store.as_ref(), *flow, "racer").await;
        }
    }
}

/// A key past its expiry counts as absent: a new creation replaces it (and is then the
/// live one), and keys that expired meanwhile are no obstacle to anything.
pub async fn an_expired_idempotency_key_is_replaced<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let window = Duration::from_secs(10);
    let (first, batch) = keyed(&fx, "k", "fp-1", window);
    fx.store.append(batch).await.expect("first");
    // Expired keys to purge, and one that stays live.
    for n in 0..40 {
        let (_, batch) = keyed(&fx, &format!("old-{n}"), "fp", window);
        fx.store.append(batch).await.expect("old key");
    }
    let (live, batch) = keyed(&fx, "live", "fp-l", HOUR);
    fx.store.append(batch).await.expect("live key");
    fx.clock.advance(Duration::from_secs(9));
    let (_, batch) = keyed(&fx, "k", "fp-2", window);
    assert_taken(fx.store.append(batch).await, "k", first, "fp-1", "live");
    fx.clock.advance(Duration::from_secs(1));
    let (second, batch) = keyed(&fx, "k", "fp-2", window);
    fx.store
        .append(batch)
        .await
        .expect("the expired key is replaced");
    let (_, batch) = keyed(&fx, "k", "fp-1", window);
    assert_taken(
        fx.store.append(batch).await,
        "k",
        second,
        "fp-2",
        "replaced",
    );
    for n in 0..40 {
        let (_, batch) = keyed(&fx, &format!("old-{n}"), "fp-new", window);
        fx.store.append(batch).await.expect("an expired key again");
    }
    let (_, batch) = keyed(&fx, "live", "fp-x", HOUR);
    assert_taken(
        fx.store.append(batch).await,
        "live",
        live,
        "fp-l",
        "live key",
    );
    assert!(
        fx.store.flow(first).await.expect("flow").is_some(),
        "flows stay"
    );
}

/// Keys are durable: after a reopen a live key still refuses, naming its flow.
pub async fn idempotency_keys_survive_a_reopen<F: StoreFactory>(factory: &F) {
    let (fx, location) = fixture(factory).await;
    let (first, batch) = keyed(&fx, "durable", "fp-d", HOUR);
    fx.store.append(batch).await.expect("first");
    fx.store.close().await.expect("close");
    let reopened: Arc<dyn Store> = factory.open(&location, fx.clock.clone()).await;
    let fx = Fixture {
        clock: fx.clock,
        store: reopened,
    };
    let (again, batch) = keyed(&fx, "durable", "fp-d", HOUR);
    assert_taken(
        fx.store.append(batch).await,
        "durable",
        first,
        "fp-d",
        "after a reopen",
    );
    assert_absent(fx.store.as_ref(), again, "after a reopen").await;
    fx.store.close().await.expect("close");
}

/// Keys and fingerprints over their limits (or empty) are refused, and nothing is written.
pub async fn idempotency_key_limits_are_refused<F: StoreFactory>(factory: &F) {
    let (fx, _location) = fixture(factory).await;
    let long_key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
    let long_print = "f".repeat(MAX_FINGERPRINT_BYTES + 1);
    for (key, fingerprint, what, limit) in [
        ("", "fp", "idempotency key", MAX_IDEMPOTENCY_KEY_BYTES),
        (
            long_key.as_str(),
            "fp",
            "idempotency key",
            MAX_IDEMPOTENCY_KEY_BYTES,
        ),
        ("k", "", "fingerprint", MAX_FINGERPRINT_BYTES),
        (
            "k",
            long_print.as_str(),
            "fingerprint",
            MAX_FINGERPRINT_BYTES,
        ),
    ] {
        let (flow, batch) = keyed(&fx, key, fingerprint, HOUR);
        let invalid = assert_invalid(fx.store.append(batch).await, what);
        assert!(
            matches!(invalid, InvalidInput::BadIdempotencyKey { what: w, limit: l, .. } if w == what && l == limit),
            "{what}: {invalid:?}"
        );
        assert_absent(fx.store.as_ref(), flow, what).await;
    }
    let (_, batch) = keyed(&fx, &"k".repeat(MAX_IDEMPOTENCY_KEY_BYTES), "fp", HOUR);
    fx.store.append(batch).await.expect("a key at the limit");
}
