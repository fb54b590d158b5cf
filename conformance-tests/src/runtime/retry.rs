//! Failures and their retries: backoff through the broker's nack delay,
//! dead-lettering after the last attempt, timeouts and panics as failures
//! worth a retry, and tower's readiness passed through the layers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use transport_core::runtime::{
    handler_fn, BreakerConfig, CatchPanicLayer, CircuitBreakerLayer, Context, HandlerError, HandlerTimeoutLayer,
    IdempotencyLayer, LeaseLayer, MemoryIdempotencyStore, RetryDelayLayer, RetryPolicy,
};
use transport_core::{Message, Outcome, Transport};

use super::*;
use crate::support::*;
use crate::{ensure, Check};

/// Transient failures are retried, permanent ones dead-lettered at once,
/// exhausted ones after `max_attempts` with the reason; a panicking handler
/// does not stop the consumer.
pub async fn runtime_retries_and_dead_letters(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "runtime", &options, 4).await?;
    for kind in ["ok", "flaky", "poison", "panic"] {
        t.publish(&topic, Message::new(kind).with_header("kind", kind)).await?;
    }
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(200),
        )))
        .layer(CatchPanicLayer)
        .service(handler_fn(|ctx: Context| async move {
            match ctx.headers().get("kind") {
                Some("flaky") if ctx.attempt() < 3 => Err(HandlerError::retry("dependency unavailable")),
                Some("poison") => Err(HandlerError::permanent("order total is negative")),
                Some("panic") => panic!("handler bug on attempt {}", ctx.attempt()),
                _ => Ok(()),
            }
        }));
    let (s, _) = run_until(consumer, service, timing().receive, |s| {
        s.acked >= 2 && s.dead_lettered >= 2
    })
    .await?;
    ensure!(s.acked == 2 && s.dead_lettered == 2, "stats after the run: {s:?}");
    ensure!(s.panicked == 3, "expected 3 panics, counted {}", s.panicked);
    ensure!(
        s.retried == 4,
        "expected 4 retries (2 flaky, 2 panic), counted {}",
        s.retried
    );
    dlq_depth(t.as_ref(), &topic, &options, 2).await?;
    let dlq = t.dead_letters(&topic, &options).await?;
    let dead: HashMap<String, Option<String>> = dlq
        .peek(10)
        .await?
        .into_iter()
        .map(|d| (d.message.headers.get("kind").unwrap_or("").to_owned(), d.reason.clone()))
        .collect();
    let poison = dead.get("poison").cloned().flatten().unwrap_or_default();
    ensure!(poison == "order total is negative", "poison reason is {poison:?}");
    let panicked = dead.get("panic").cloned().flatten().unwrap_or_default();
    ensure!(
        panicked.starts_with("failed 3 of 3 allowed attempts: handler panicked: handler bug on attempt 3"),
        "panic reason is {panicked:?}"
    );
    dlq.purge().await?;
    Ok(())
}

/// The retry layer's backoff goes through the broker's nack delay: with a
/// 500 ms policy, attempts are at least 500 ms apart, and not far more; a
/// handler's own `retry_after` (1.2 s) wins over the policy.
pub async fn runtime_backoff_between_attempts(t: &Arc<dyn Transport>) -> CheckResult {
    let delay = Duration::from_millis(500);
    // Brokers round delays up (RabbitMQ to 100 ms buckets, SQS to whole
    // seconds) and deliver after a poll; 2.5 s on top is "not far more".
    let slack = Duration::from_millis(2_500);
    let options = opts("g").max_attempts(5);
    let (topic, consumer) = consumer(t, "backoff", &options, 2).await?;
    t.publish(&topic, Message::new("flaky")).await?;
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(
            RetryPolicy::exponential(delay, delay).without_jitter(),
        ))
        .service(handler_fn({
            let times = times.clone();
            move |ctx: Context| {
                let times = times.clone();
                async move {
                    times.lock().unwrap().push(Instant::now());
                    match ctx.attempt() {
                        1 => Err(HandlerError::retry("not yet")),
                        // The downstream said when: that delay wins over the policy's.
                        2 => Err(HandlerError::retry_after(Duration::from_millis(1_200), "rate limited")),
                        _ => Ok(()),
                    }
                }
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(
        reached,
        "the message was not acked within {:?}: {s:?}",
        timing().receive
    );
    let times = times.lock().unwrap().clone();
    ensure!(times.len() == 3, "expected 3 attempts, saw {}", times.len());
    for (i, (pair, asked)) in times.windows(2).zip([delay, Duration::from_millis(1_200)]).enumerate() {
        let gap = pair[1] - pair[0];
        ensure!(
            gap >= asked && gap <= asked + slack,
            "attempt {} came {gap:?} after attempt {}; {asked:?} was asked (at most {:?} allowed)",
            i + 2,
            i + 1,
            asked + slack
        );
    }
    ensure!(s.retried == 2 && s.dead_lettered == 0, "stats: {s:?}");
    Ok(())
}

/// Every layer passes readiness through: under the whole stack sits
/// tower's `ConcurrencyLimit`, which refuses a call that was not made ready
/// first (a layer that answered "ready" itself would make every call fail).
pub async fn runtime_layers_pass_readiness_through(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g");
    let (topic, consumer) = consumer(t, "readiness", &options, 3).await?;
    let sent: Vec<Message> = (0..6).map(|i| Message::new(format!("r{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let calls: Calls = Arc::default();
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(50),
        )))
        .layer(LeaseLayer::new())
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(10)))
        .layer(CatchPanicLayer)
        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
        .layer(CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(5)))
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(recording(&calls, Duration::from_millis(20)));
    let n = sent.len() as u64;
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.acked >= n).await?;
    ensure!(reached, "not every message was handled through the whole stack: {s:?}");
    let calls = calls.lock().unwrap().clone();
    ensure!(
        calls.len() == sent.len() && calls.values().all(|a| a == &[1]),
        "handled {calls:?}: each message once, at attempt 1, was expected"
    );
    ensure!(s.retried == 0 && s.panicked == 0, "stats: {s:?}");
    Ok(())
}

/// A handler call that times out and one that panics are transient
/// failures: retried, and the consumer keeps running.
pub async fn runtime_timeout_and_panic_are_retried(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "timeout", &options, 4).await?;
    for kind in ["slow", "boom", "fine"] {
        t.publish(&topic, Message::new(kind).with_header("kind", kind)).await?;
    }
    let calls: Calls = Arc::default();
    let limit = Duration::from_millis(300);
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(50),
        )))
        .layer(HandlerTimeoutLayer::new(limit))
        .layer(CatchPanicLayer)
        .service(handler_fn({
            let calls = calls.clone();
            move |ctx: Context| {
                let calls = calls.clone();
                async move {
                    record(&calls, &ctx);
                    match ctx.headers().get("kind") {
                        Some("slow") if ctx.attempt() == 1 => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Ok(())
                        }
                        Some("boom") if ctx.attempt() == 1 => panic!("bug"),
                        _ => Ok::<_, HandlerError>(()),
                    }
                }
            }
        }));
    let started = Instant::now();
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 3).await?;
    ensure!(reached, "not all three were acked: {s:?}");
    ensure!(
        s.timed_out == 1 && s.panicked == 1 && s.retried == 2 && s.dead_lettered == 0,
        "stats: {s:?}"
    );
    ensure!(
        started.elapsed() < timing().receive,
        "the timed-out call was not cut off at {limit:?}"
    );
    let calls = calls.lock().unwrap().clone();
    for (id, attempts) in &calls {
        let kind = if attempts.len() == 2 { "retried" } else { "handled" };
        ensure!(
            attempts.len() <= 2 && attempts.iter().enumerate().all(|(i, a)| *a == i as u32 + 1),
            "{id} {kind} at attempts {attempts:?}"
        );
    }
    Ok(())
}

/// The retry layer gives each retry the policy's delay for the attempt that
/// failed (exponential, capped) and keeps a delay the handler named.
pub async fn runtime_retry_delays_follow_the_policy(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g").max_attempts(6);
    let (topic, consumer) = consumer(t, "retry-delays", &options, 1).await?;
    t.publish(&topic, Message::new("flaky")).await?;
    let outcomes: Outcomes = Arc::default();
    let ms = Duration::from_millis;
    let service = ServiceBuilder::new()
        .layer(record_outcomes(&outcomes))
        .layer(RetryDelayLayer::new(
            RetryPolicy::exponential(ms(40), ms(100)).without_jitter(),
        ))
        .service(handler_fn(|ctx: Context| async move {
            match ctx.attempt() {
                1..=3 => Err(HandlerError::retry("not yet")),
                4 => Err(HandlerError::retry_after(Duration::from_millis(30), "rate limited")),
                _ => Ok(()),
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(reached, "the message was not acked: {s:?}");
    // In whole milliseconds: the backoff grows in f32 (80 ms comes out as 79.999998).
    let delays: Vec<(u32, Option<u64>)> = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|(attempt, outcome, _)| match outcome {
            Outcome::Retry { delay, .. } => (*attempt, delay.map(|d| (d.as_secs_f64() * 1e3).round() as u64)),
            _ => (*attempt, None),
        })
        .collect();
    let expected = vec![(1, Some(40)), (2, Some(80)), (3, Some(100)), (4, Some(30)), (5, None)];
    ensure!(
        delays == expected,
        "retry delays by attempt {delays:?}, expected {expected:?}"
    );
    ensure!(s.retried == 4 && s.acked == 1, "stats: {s:?}");
    Ok(())
}

/// The timeout layer cuts a call off at its own limit (not before, and not
/// much after), as a retry that names the limit.
pub async fn runtime_timeout_cuts_off_at_its_limit(t: &Arc<dyn Transport>) -> CheckResult {
    let limit = Duration::from_millis(200);
    let options = opts("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "timeout-limit", &options, 2).await?;
    t.publish(&topic, Message::new("hangs once")).await?;
    let outcomes: Outcomes = Arc::default();
    let service = ServiceBuilder::new()
        .layer(record_outcomes(&outcomes))
        .layer(HandlerTimeoutLayer::new(limit))
        .service(handler_fn(|ctx: Context| async move {
            if ctx.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, HandlerError>(())
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(reached, "the message was not acked: {s:?}");
    let outcomes = outcomes.lock().unwrap().clone();
    ensure!(outcomes.len() == 2, "calls: {outcomes:?}");
    let (attempt, outcome, took) = &outcomes[0];
    ensure!(
        *attempt == 1 && outcome == &Outcome::retry("handler timed out after 200ms"),
        "the first call ended as {outcome} at attempt {attempt}"
    );
    within_bounds("the timed-out call", *took, limit, limit + Duration::from_millis(400))?;
    ensure!(outcomes[1].1 == Outcome::Ack, "the retry ended as {}", outcomes[1].1);
    ensure!(s.timed_out == 1 && s.retried == 1, "stats: {s:?}");
    Ok(())
}

/// A closure handler that panics before it returns its future (in `call`
/// itself) is caught by the panic layer like any other panic: a retry with
/// the panic message, counted as a panic.
pub async fn runtime_panic_in_call_is_caught_and_counted(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "panic-in-call", &options, 2).await?;
    t.publish(&topic, Message::new("p")).await?;
    let outcomes: Outcomes = Arc::default();
    let service = ServiceBuilder::new()
        .layer(record_outcomes(&outcomes))
        .layer(CatchPanicLayer)
        .service(handler_fn(|ctx: Context| {
            if ctx.attempt() == 1 {
                panic!("no future on attempt {}", ctx.attempt());
            }
            async move { Ok::<_, HandlerError>(()) }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(reached, "the message was not acked: {s:?}");
    let outcomes: Vec<(u32, Outcome)> = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|(a, o, _)| (*a, o.clone()))
        .collect();
    ensure!(
        outcomes
            == [
                (1, Outcome::retry("handler panicked: no future on attempt 1")),
                (2, Outcome::Ack)
            ],
        "outcomes: {outcomes:?}"
    );
    ensure!(s.panicked == 1 && s.retried == 1 && s.acked == 1, "stats: {s:?}");
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(runtime_retries_and_dead_letters, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(runtime_backoff_between_attempts, |c| (!c.nack_delay)
            .then_some("the backend cannot delay a redelivery")),
        check!(runtime_layers_pass_readiness_through),
        check!(runtime_timeout_and_panic_are_retried),
        check!(runtime_retry_delays_follow_the_policy),
        check!(runtime_timeout_cuts_off_at_its_limit),
        check!(runtime_panic_in_call_is_caught_and_counted),
    ]
}
