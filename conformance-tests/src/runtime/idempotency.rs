//! The idempotency layer: an effect once per group, a failed claim
//! released, groups independent of each other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::ServiceBuilder;
use transport_core::runtime::{
    handler_fn, Consumer, Context, HandlerError, IdempotencyLayer, MemoryIdempotencyStore, RetryDelayLayer, RetryPolicy,
};
use transport_core::{Message, StartFrom, Transport};

use super::*;
use crate::support::*;
use crate::{ensure, Check};

/// A message delivered twice (redelivered after its handler succeeded, or
/// published twice with one id) has its effect applied once.
pub async fn runtime_idempotency_applies_once(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g");
    let (topic, consumer) = consumer(t, "idempotency", &options, 4).await?;
    let caps = t.capabilities();
    let effects: Calls = Arc::default();
    let store = Arc::new(MemoryIdempotencyStore::new());
    let service = ServiceBuilder::new()
        .layer(tower::layer::layer_fn(NackAfterSuccess))
        .layer(IdempotencyLayer::new(store))
        // Long enough that the second copy of "published twice", handled at
        // the same time, finds the first in progress and waits for it
        // instead of burning an attempt.
        .service(recording(&effects, Duration::from_millis(300)));
    let twice = Message::new("published twice");
    let renacked = Message::new("nacked after success").with_header("nack-after", "1");
    let plain: Vec<Message> = (0..2).map(|i| Message::new(format!("plain{i}"))).collect();
    t.publish(&topic, twice.clone()).await?;
    t.publish(&topic, twice.clone()).await?;
    t.publish(&topic, renacked.clone()).await?;
    for m in &plain {
        t.publish(&topic, m.clone()).await?;
    }
    // The broker may drop the second publish itself (publish deduplication).
    let expected_duplicates = if caps.publish_dedup { 1 } else { 2 };
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| {
        s.duplicates >= expected_duplicates && s.acked >= 3 + expected_duplicates
    })
    .await?;
    ensure!(reached, "not all messages and duplicates were settled: {s:?}");
    let effects = effects.lock().unwrap().clone();
    let mut ids: Vec<&String> = effects.keys().collect();
    ids.sort();
    ensure!(
        effects.len() == 4,
        "effects for {} messages, published 4 distinct: {ids:?}",
        effects.len()
    );
    for (id, attempts) in &effects {
        ensure!(attempts.len() == 1, "{id} had its effect {} times", attempts.len());
    }
    ensure!(
        s.duplicates == expected_duplicates || (caps.duplicates_possible && s.duplicates > expected_duplicates),
        "{} duplicates acked, expected {expected_duplicates}",
        s.duplicates
    );
    ensure!(s.retried == 1 && s.dead_lettered == 0, "stats: {s:?}");
    Ok(())
}

/// A failed call releases its idempotency claim: the retry claims it again
/// at once and runs the handler (it is not taken for a duplicate, nor put
/// off until the claim's lease runs out).
pub async fn runtime_idempotency_releases_a_failed_claim(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "idempotency-release", &options, 2).await?;
    t.publish(&topic, Message::new("fails once")).await?;
    let calls: Calls = Arc::default();
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(50),
        )))
        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
        .service(handler_fn({
            let calls = calls.clone();
            move |ctx: Context| {
                let calls = calls.clone();
                async move {
                    record(&calls, &ctx);
                    if ctx.attempt() == 1 {
                        return Err(HandlerError::retry("downstream hiccup"));
                    }
                    Ok(())
                }
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    let calls = calls.lock().unwrap().clone();
    ensure!(reached, "the retry was not handled and acked: {s:?}, calls {calls:?}");
    ensure!(
        calls.len() == 1 && calls.values().all(|a| a == &[1, 2]),
        "handler calls by attempt {calls:?}: the retry must run the handler"
    );
    ensure!(s.duplicates == 0 && s.retried == 1 && s.acked == 1, "stats: {s:?}");
    Ok(())
}

/// Two consumer groups sharing one idempotency store each process the
/// message once: keys are per group.
pub async fn runtime_idempotency_groups_are_independent(t: &Arc<dyn Transport>) -> CheckResult {
    let caps = t.capabilities();
    let topic = unique("idempotency-groups");
    let mut consumers = Vec::new();
    for group in ["g1", "g2"] {
        let mut options = short(group);
        if caps.replay {
            options = options.start(StartFrom::Earliest);
        } else {
            drop(t.subscribe(&topic, options.clone()).await?);
        }
        consumers.push(
            Consumer::new(t.clone(), &topic, options)
                .concurrency(2)
                .shutdown_timeout(Duration::from_secs(10)),
        );
    }
    t.publish(&topic, Message::new("fact")).await?;
    let store = Arc::new(MemoryIdempotencyStore::new());
    let effects: Arc<Mutex<Vec<String>>> = Arc::default();
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(store))
        .service(handler_fn({
            let effects = effects.clone();
            move |ctx: Context| {
                let effects = effects.clone();
                async move {
                    effects.lock().unwrap().push(ctx.group().to_owned());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, HandlerError>(())
                }
            }
        }));
    let second = consumers.pop().expect("two consumers");
    let first = consumers.pop().expect("two consumers");
    let (a, b) = futures::join!(
        run_until(first, service.clone(), timing().receive, |s| s.acked >= 1),
        run_until(second, service, timing().receive, |s| s.acked >= 1),
    );
    let ((a, a_done), (b, b_done)) = (a?, b?);
    let mut effects = effects.lock().unwrap().clone();
    effects.sort();
    ensure!(
        a_done && b_done && effects == ["g1", "g2"],
        "effects by group {effects:?} (stats {a:?} and {b:?}): each group must process the message once"
    );
    ensure!(
        a.duplicates == 0 && b.duplicates == 0,
        "duplicates counted across groups: {a:?} and {b:?}"
    );
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(runtime_idempotency_applies_once),
        check!(runtime_idempotency_releases_a_failed_claim),
        check!(runtime_idempotency_groups_are_independent, |c| c
            .single_group
            .then_some("point-to-point: a topic has one group")),
    ]
}
