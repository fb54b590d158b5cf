//! Checks of the consumer runtime and its layers: the same stack must mean
//! the same on every backend (backoff through the broker's nack delay,
//! leases through `extend`, a breaker that burns no attempts, idempotency,
//! timeouts and panics as transient failures, graceful shutdown).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::Notify;
use tower::{Service, ServiceBuilder};
use transport_core::runtime::{
    handler_fn, outcome_of, BoxError, BreakerConfig, CatchPanicLayer, CircuitBreakerLayer, Consumer, ConsumerStats,
    Context, HandlerError, HandlerFn, HandlerTimeoutLayer, IdempotencyLayer, LeaseLayer, MemoryIdempotencyStore,
    RetryDelayLayer, RetryPolicy, StatsHandle,
};
use transport_core::{Message, Outcome, StartFrom, SubscribeOptions, Transport};

use crate::ensure;
use crate::support::*;
use crate::Check;

/// Which attempts each message id was handled at.
type Calls = Arc<Mutex<HashMap<String, Vec<u32>>>>;

fn record(calls: &Calls, ctx: &Context) {
    calls
        .lock()
        .unwrap()
        .entry(ctx.id().to_owned())
        .or_default()
        .push(ctx.attempt());
}

/// A handler that records each call in `calls`, works `pause`, and succeeds.
fn recording(
    calls: &Calls,
    pause: Duration,
) -> HandlerFn<impl Fn(Context) -> BoxFuture<'static, Result<(), HandlerError>> + Clone + Send + Sync + 'static> {
    let calls = calls.clone();
    handler_fn(move |ctx: Context| {
        let calls = calls.clone();
        async move {
            record(&calls, &ctx);
            tokio::time::sleep(pause).await;
            Ok::<_, HandlerError>(())
        }
        .boxed()
    })
}

/// Wait until `done` holds for the consumer's counters, or `within` passes.
async fn until(stats: &StatsHandle, within: Duration, done: impl Fn(&ConsumerStats) -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done(&stats.get()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A topic whose group exists (so it receives what is published next) and
/// the consumer for it.
async fn consumer(
    t: &Arc<dyn Transport>,
    what: &str,
    options: &SubscribeOptions,
    concurrency: usize,
) -> Result<(String, Consumer), CheckFailure> {
    // Where the broker replays, a new group starting at the earliest
    // message sees everything on this fresh topic; elsewhere a first
    // subscription creates the group before anything is published. (One
    // group join fewer matters on Kafka, where each join rebalances.)
    let (topic, options) = if t.capabilities().replay {
        (unique(what), options.clone().start(StartFrom::Earliest))
    } else {
        let (topic, probe) = fresh(t.as_ref(), what, options.clone()).await?;
        drop(probe);
        (topic, options.clone())
    };
    let consumer = Consumer::new(t.clone(), &topic, options)
        .concurrency(concurrency)
        .shutdown_timeout(Duration::from_secs(10));
    Ok((topic, consumer))
}

/// Run `service` in a spawned consumer until `done` holds (or the receive
/// deadline passes), then shut it down; the final counters and whether
/// `done` was reached.
async fn run_until<S>(
    consumer: Consumer,
    service: S,
    within: Duration,
    done: impl Fn(&ConsumerStats) -> bool + Send + 'static,
) -> Result<(ConsumerStats, bool), CheckFailure>
where
    S: Service<Context, Response = Outcome> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let stats = consumer.stats_handle();
    let reached = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let reached = reached.clone();
        async move {
            reached.store(until(&stats, within, done).await, AtomicOrdering::SeqCst);
        }
    };
    let running = tokio::spawn(consumer.run(service, shutdown));
    let stats = running
        .await
        .map_err(|e| CheckFailure(format!("the consumer task failed: {e}")))??;
    Ok((stats, reached.load(AtomicOrdering::SeqCst)))
}

/// Run `service` until both messages of the check were acked and `quiet`
/// passed after that (a late redelivery shows too), within the receive
/// deadline plus `slack`; fail unless each was handled once, at attempt 1
/// (`why`: what a later attempt would mean), and nothing was retried.
async fn two_acked_once_each<S>(
    consumer: Consumer,
    service: S,
    calls: &Calls,
    slack: Duration,
    quiet: Duration,
    why: &str,
) -> CheckResult
where
    S: Service<Context, Response = Outcome> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let settled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (s, reached) = run_until(consumer, service, timing().receive + slack, {
        let settled_at = settled_at.clone();
        move |s| {
            if s.acked < 2 {
                return false;
            }
            let mut at = settled_at.lock().unwrap();
            at.get_or_insert_with(Instant::now).elapsed() >= quiet
        }
    })
    .await?;
    ensure!(reached, "the two messages were not acked in time: {s:?}");
    let calls = calls.lock().unwrap().clone();
    ensure!(calls.len() == 2, "handled {} messages, published 2", calls.len());
    for (id, attempts) in &calls {
        ensure!(attempts == &[1], "{id} was handled at attempts {attempts:?}: {why}");
    }
    ensure!(s.acked == 2 && s.retried == 0 && s.settle_errors == 0, "stats: {s:?}");
    Ok(())
}

/// Graceful shutdown: handlers running when it is asked finish and are
/// acked; deliveries waiting (behind a busy key, or not started) are not
/// acked and come back; nothing is lost.
pub async fn graceful_shutdown_drains(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_in_flight(12);
    let (topic, consumer) = consumer(t, "shutdown", &options, 4).await?;
    // Three keys: deliveries of a key queue behind the one running.
    let sent: Vec<Message> = (0..30)
        .map(|i| Message::new(format!("s{i}")).with_key(format!("k{}", i % 3)))
        .collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let done = Arc::new(Mutex::new(HashSet::new()));
    let started = Arc::new(Notify::new());
    let handler = {
        let (done, started) = (done.clone(), started.clone());
        move |ctx: Context| {
            let (done, started) = (done.clone(), started.clone());
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                // Shutdown was asked as the first handler started: by now
                // every running handler is told (to wrap up early).
                if ctx.is_shutting_down() {
                    done.lock().unwrap().insert(ctx.id().to_owned());
                }
                Ok::<_, HandlerError>(())
            }
        }
    };
    let stats = consumer
        .run_fn(handler, async move { started.notified().await })
        .await?;
    let finished: HashSet<String> = done.lock().unwrap().clone();
    ensure!(!finished.is_empty(), "no handler finished before shutdown completed");
    ensure!(
        stats.acked as usize == finished.len(),
        "{} handlers finished but {} deliveries were acked (waiting deliveries must not be acked)",
        finished.len(),
        stats.acked
    );
    ensure!(finished.len() < sent.len(), "shutdown did not stop fetching");
    let mut sub = t.subscribe(&topic, options).await?;
    let rest: HashSet<String> = receive_and_ack(&mut sub, sent.len() - finished.len())
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(rest.is_disjoint(&finished), "messages acked before shutdown came back");
    let all: HashSet<String> = sent.iter().map(|m| m.id.clone()).collect();
    ensure!(
        rest.union(&finished).cloned().collect::<HashSet<_>>() == all,
        "messages were lost across shutdown"
    );
    expect_quiet(&mut sub, "after the rest").await
}

/// Transient failures are retried, permanent ones dead-lettered at once,
/// exhausted ones after `max_attempts` with the reason; a panicking handler
/// does not stop the consumer.
pub async fn runtime_retries_and_dead_letters(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(3);
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
    let options = short("g").max_attempts(5);
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

/// A handler running three ack timeouts is not redelivered meanwhile when
/// the lease layer extends it.
pub async fn runtime_lease_extends_long_handler(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = Duration::from_millis(1_000);
    let options = SubscribeOptions::new("g").ack_timeout(ack_timeout);
    // Room for more than the two long calls: a redelivery would be fetched
    // and handled at once, and show up as a second call.
    let (topic, consumer) = consumer(t, "lease", &options, 4).await?;
    for i in 0..2 {
        t.publish(&topic, Message::new(format!("long{i}"))).await?;
    }
    let calls: Calls = Arc::default();
    let service = ServiceBuilder::new()
        .layer(LeaseLayer::new())
        .service(recording(&calls, ack_timeout * 3));
    // Keep consuming for a while after the acks: a late redelivery shows too.
    let settled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (s, reached) = run_until(consumer, service, timing().receive + ack_timeout * 3, {
        let settled_at = settled_at.clone();
        move |s| {
            if s.acked < 2 {
                return false;
            }
            let mut at = settled_at.lock().unwrap();
            at.get_or_insert_with(Instant::now).elapsed() >= ack_timeout * 2
        }
    })
    .await?;
    ensure!(reached, "the long handlers were not acked in time: {s:?}");
    let calls = calls.lock().unwrap().clone();
    ensure!(calls.len() == 2, "handled {} messages, published 2", calls.len());
    for (id, attempts) in &calls {
        ensure!(
            attempts == &[1],
            "{id} was handled at attempts {attempts:?}: redelivered while its handler ran"
        );
    }
    ensure!(s.acked == 2 && s.retried == 0, "stats: {s:?}");
    Ok(())
}

/// With a failing downstream the breaker opens; while it is open nothing
/// is settled (no attempt is burned, nothing dead-lettered); once the
/// downstream recovers every message is processed.
pub async fn runtime_breaker_holds_while_open(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "breaker", &options, 2).await?;
    let stats = consumer.stats_handle();
    let down = Arc::new(AtomicBool::new(true));
    let calls: Calls = Arc::default();
    let processed: Calls = Arc::default();
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(2).open_for(Duration::from_millis(300)));
    let handle = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(50),
        )))
        .layer(LeaseLayer::new())
        .layer(breaker)
        .layer(CatchPanicLayer)
        .service(handler_fn({
            let (down, calls, processed) = (down.clone(), calls.clone(), processed.clone());
            move |ctx: Context| {
                let (down, calls, processed) = (down.clone(), calls.clone(), processed.clone());
                async move {
                    record(&calls, &ctx);
                    if down.load(AtomicOrdering::SeqCst) {
                        return Err(HandlerError::retry("downstream unavailable"));
                    }
                    record(&processed, &ctx);
                    Ok(())
                }
            }
        }));
    let n = 6;
    for i in 0..n {
        t.publish(&topic, Message::new(format!("b{i}"))).await?;
    }
    let running = tokio::spawn(consumer.run(service, {
        let stats = stats.clone();
        let processed = processed.clone();
        async move {
            let deadline = Instant::now() + timing().receive * 2;
            while Instant::now() < deadline {
                if stats.get().acked >= n && processed.lock().unwrap().len() as u64 >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }));
    // Opened, then two failed probes reopened it: the downstream stayed down
    // across several open periods.
    let deadline = Instant::now() + timing().receive;
    while handle.opened() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened = handle.opened();
    let while_open = stats.get();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = stats.get();
    down.store(false, AtomicOrdering::SeqCst);
    let s = running
        .await
        .map_err(|e| CheckFailure(format!("the consumer task failed: {e}")))??;
    ensure!(
        opened >= 3,
        "the breaker opened {opened} times, expected at least 3 while down"
    );
    ensure!(
        later.retried == while_open.retried && later.dead_lettered == 0 && later.acked == 0,
        "settled while the breaker was open: {while_open:?} then {later:?}"
    );
    // Only failures before the breaker first opened may be retried: with a
    // streak of 2, at most one.
    ensure!(
        while_open.retried <= 1,
        "{} retries before the breaker opened",
        while_open.retried
    );
    ensure!(
        s.dead_lettered == 0,
        "dead-lettered while the downstream was down: {s:?}"
    );
    let processed = processed.lock().unwrap().clone();
    ensure!(
        processed.len() as u64 == n,
        "processed {} of {n} after the downstream recovered: {s:?}",
        processed.len()
    );
    let duplicates_ok = t.capabilities().duplicates_possible;
    for (id, attempts) in &processed {
        ensure!(
            attempts.len() == 1 || duplicates_ok,
            "{id} processed {} times",
            attempts.len()
        );
    }
    let calls = calls.lock().unwrap().clone();
    let highest = calls.values().flatten().max().copied().unwrap_or(0);
    ensure!(
        highest <= 2,
        "a message reached attempt {highest}: attempts were burned while the breaker was open"
    );
    if t.capabilities().dead_letter_ops {
        dlq_depth(t.as_ref(), &topic, &options, 0).await?;
    }
    Ok(())
}

/// Turns the first successful attempt of messages marked `nack-after` into a
/// retry, as if settling had failed after the handler's effect.
#[derive(Clone)]
struct NackAfterSuccess<S>(S);

impl<S> Service<Context> for NackAfterSuccess<S>
where
    S: Service<Context, Response = Outcome> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Outcome, BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let fail = ctx.attempt() == 1 && ctx.headers().contains("nack-after");
        let call = self.0.call(ctx);
        async move {
            match outcome_of(call.await) {
                Outcome::Ack if fail => Ok(Outcome::retry("settling failed after the handler")),
                other => Ok(other),
            }
        }
        .boxed()
    }
}

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

/// Every layer passes readiness through: under the whole stack sits
/// tower's `ConcurrencyLimit`, which refuses a call that was not made ready
/// first (a layer that answered "ready" itself would make every call fail).
pub async fn runtime_layers_pass_readiness_through(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g");
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
    let options = short("g").max_attempts(3);
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

/// The context describes the delivery (id, key, headers, payload, topic,
/// group, attempt, max attempts, last attempt, first failure, ack timeout,
/// shutdown), and messages published from a handler, alone, in a batch or
/// from code without the context, carry the flow's correlation id and name
/// the handled message as their cause (an existing flow's correlation id is
/// kept).
pub async fn runtime_follow_up_is_linked(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(2);
    let (topic, consumer) = consumer(t, "followup", &options, 2).await?;
    let (next_topic, mut next_sub) = fresh(t.as_ref(), "followup-next", short("g")).await?;
    let first = Message::new("order placed")
        .with_key("customer-9")
        .with_header("ce-correlationid", "flow-42")
        .with_header("h", "v");
    t.publish(&topic, first.clone()).await?;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed_at: Arc<Mutex<Option<std::time::SystemTime>>> = Arc::default();
    let service = handler_fn({
        let (seen, failed_at, topic) = (seen.clone(), failed_at.clone(), topic.clone());
        move |ctx: Context| {
            let (next_topic, seen, failed_at, topic) =
                (next_topic.clone(), seen.clone(), failed_at.clone(), topic.clone());
            async move {
                let mut problems = Vec::new();
                let mut expect = |ok: bool, what: &str| {
                    if !ok {
                        problems.push(what.to_owned());
                    }
                };
                expect(ctx.key() == Some("customer-9"), "key");
                expect(ctx.headers().get("h") == Some("v"), "headers");
                expect(ctx.payload().as_ref() == b"order placed", "payload");
                expect(ctx.message().id == ctx.id(), "message");
                expect(ctx.topic() == topic, "topic");
                expect(ctx.group() == "g", "group");
                expect(ctx.max_attempts() == 2, "max_attempts");
                expect(ctx.is_last_attempt() == (ctx.attempt() == 2), "is_last_attempt");
                expect(ctx.ack_timeout() == timing().short_ack, "ack_timeout");
                expect(ctx.lease().ack_timeout() == timing().short_ack, "lease ack_timeout");
                expect(!ctx.is_shutting_down(), "is_shutting_down");
                if ctx.attempt() == 1 {
                    expect(ctx.first_failure().is_none(), "first_failure on attempt 1");
                    seen.lock().unwrap().extend(problems);
                    *failed_at.lock().unwrap() = Some(std::time::SystemTime::now());
                    return Err(HandlerError::retry("fail once"));
                }
                let failed = failed_at.lock().unwrap().unwrap_or(std::time::UNIX_EPOCH);
                if ctx.transport().capabilities().first_failure_time {
                    expect(
                        ctx.first_failure().is_some_and(|f| {
                            f + Duration::from_millis(500) >= failed && f <= failed + Duration::from_millis(500)
                        }),
                        "first_failure on attempt 2",
                    );
                }
                seen.lock().unwrap().extend(problems);
                ctx.publish(&next_topic, Message::new("payment requested")).await?;
                ctx.publish_batch(
                    &next_topic,
                    vec![Message::new("stock reserved"), Message::new("mail queued")],
                )
                .await?;
                // Code without the context links through the task; a message
                // that would start its own flow (correlation = its own id,
                // as a fresh event) joins the handled one's.
                let audit = Message::new("audit");
                let own = audit.id.clone();
                let linked = transport_core::runtime::link_to_current(audit.with_header("ce-correlationid", own));
                ctx.transport().publish(&next_topic, linked).await?;
                Ok::<_, HandlerError>(())
            }
        }
    });
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(reached, "the handler did not finish: {s:?}");
    let problems = seen.lock().unwrap().clone();
    ensure!(
        problems.is_empty(),
        "the context described the delivery wrongly: {problems:?}"
    );
    let mut texts = HashSet::new();
    for _ in 0..4 {
        let d = next(&mut next_sub).await?;
        let text = String::from_utf8_lossy(d.payload()).into_owned();
        let h = d.headers();
        // The handled message belonged to flow-42: the flow goes on.
        ensure!(
            h.get("ce-correlationid") == Some("flow-42") && h.get("ce-causationid") == Some(first.id.as_str()),
            "follow-up {text:?} has headers {h:?}, expected correlation flow-42 and causation {}",
            first.id
        );
        texts.insert(text);
        d.ack().await?;
    }
    ensure!(
        texts == HashSet::from(["payment requested", "stock reserved", "mail queued", "audit"].map(String::from)),
        "follow-ups received: {texts:?}"
    );
    expect_quiet(&mut next_sub, "after the follow-ups").await
}

/// Each call's attempt, the outcome the services inside returned, and how
/// long the call took.
type Outcomes = Arc<Mutex<Vec<(u32, Outcome, Duration)>>>;

/// Records what the services inside it return: the outcome as the runtime
/// settles it, seen from outside the layers under test.
#[derive(Clone)]
struct RecordOutcomes<S> {
    inner: S,
    seen: Outcomes,
}

impl<S> Service<Context> for RecordOutcomes<S>
where
    S: Service<Context, Response = Outcome> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Outcome, BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let (attempt, seen, started) = (ctx.attempt(), self.seen.clone(), Instant::now());
        let call = self.inner.call(ctx);
        async move {
            let outcome = outcome_of(call.await);
            seen.lock().unwrap().push((attempt, outcome.clone(), started.elapsed()));
            Ok(outcome)
        }
        .boxed()
    }
}

fn record_outcomes<S>(seen: &Outcomes) -> impl tower::Layer<S, Service = RecordOutcomes<S>> + Clone {
    let seen = seen.clone();
    tower::layer::layer_fn(move |inner| RecordOutcomes {
        inner,
        seen: seen.clone(),
    })
}

/// Messages of one key are handled one at a time and in order, the next
/// one only after the one before it is settled. Two deliveries held at a
/// time: the second of a key waits behind the first, and every settlement
/// lets the next one in while one of its key is still held (a key forgotten
/// too early shows as two of it running at once).
pub async fn runtime_keys_run_one_at_a_time_in_order(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_in_flight(2);
    let (topic, consumer) = consumer(t, "keys", &options, 4).await?;
    let caps = t.capabilities();
    let per_key = 5;
    let mut sent = Vec::new();
    for key in ["a", "b"] {
        for seq in 0..per_key {
            sent.push(
                Message::new(format!("{key}{seq}"))
                    .with_key(key)
                    .with_header("seq", seq.to_string()),
            );
        }
        sent.push(Message::new(format!("{key}-unkeyed")));
    }
    t.publish_batch(&topic, sent.clone()).await?;
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlaps: Arc<Mutex<Vec<String>>> = Arc::default();
    let order: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let service = handler_fn({
        let (running, overlaps, order) = (running.clone(), overlaps.clone(), order.clone());
        move |ctx: Context| {
            let (running, overlaps, order) = (running.clone(), overlaps.clone(), order.clone());
            async move {
                let key = ctx.key().map(str::to_owned);
                if let Some(key) = &key {
                    if !running.lock().unwrap().insert(key.clone()) {
                        overlaps.lock().unwrap().push(ctx.id().to_owned());
                    }
                    let seq = ctx
                        .headers()
                        .get("seq")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u32::MAX);
                    order.lock().unwrap().entry(key.clone()).or_default().push(seq);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                if let Some(key) = &key {
                    running.lock().unwrap().remove(key);
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    let n = sent.len() as u64;
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.acked >= n).await?;
    ensure!(reached, "not every message was acked: {s:?}");
    let overlaps = overlaps.lock().unwrap().clone();
    ensure!(
        overlaps.is_empty(),
        "{overlaps:?} started while another message of their key was running"
    );
    let order = order.lock().unwrap().clone();
    ensure!(order.len() == 2, "handled keys {order:?}");
    if caps.ordered_per_key_single_consumer() {
        for (key, seqs) in &order {
            let mut expected: Vec<u32> = (0..per_key).collect();
            if caps.duplicates_possible {
                expected = seqs.clone();
                expected.sort();
            }
            ensure!(seqs == &expected, "key {key} handled in the order {seqs:?}");
        }
    }
    ensure!(
        s.received == n || (caps.duplicates_possible && s.received > n),
        "{} deliveries counted as received, {n} handed out: {s:?}",
        s.received
    );
    ensure!(s.acked == n && s.retried == 0, "stats: {s:?}");
    Ok(())
}

/// At most `concurrency` handler calls run at once, and that many do.
pub async fn runtime_concurrency_is_bounded(t: &Arc<dyn Transport>) -> CheckResult {
    let limit = 3;
    let options = short("g").max_in_flight(16);
    let (topic, consumer) = consumer(t, "concurrency", &options, limit).await?;
    let sent: Vec<Message> = (0..3 * limit).map(|i| Message::new(format!("c{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    // (running now, most at once)
    let counts: Arc<Mutex<(usize, usize)>> = Arc::default();
    let service = handler_fn({
        let counts = counts.clone();
        move |_ctx: Context| {
            let counts = counts.clone();
            async move {
                {
                    let mut c = counts.lock().unwrap();
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                counts.lock().unwrap().0 -= 1;
                Ok::<_, HandlerError>(())
            }
        }
    });
    let n = sent.len() as u64;
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.acked >= n).await?;
    ensure!(reached, "not every message was acked: {s:?}");
    let peak = counts.lock().unwrap().1;
    ensure!(
        peak == limit,
        "{peak} handler calls ran at once with a concurrency of {limit} (and {} messages ready)",
        sent.len()
    );
    Ok(())
}

/// A delivery waiting for its turn keeps its lease: with one call at a
/// time, the first call runs two and a half ack timeouts (the lease layer
/// keeps it), and the other delivery, held and waiting all that time, is not
/// redelivered. (Unkeyed: brokers that lock a key hand out one of it at a
/// time, so only the call limit makes a delivery wait on every backend.)
pub async fn runtime_waiting_deliveries_keep_their_lease(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = timing().short_ack;
    let options = short("g");
    let (topic, consumer) = consumer(t, "waiting-lease", &options, 1).await?;
    for text in ["one", "two"] {
        t.publish(&topic, Message::new(text)).await?;
    }
    let calls: Calls = Arc::default();
    let first = Arc::new(AtomicBool::new(true));
    let service = ServiceBuilder::new().layer(LeaseLayer::new()).service(handler_fn({
        let (calls, first) = (calls.clone(), first.clone());
        move |ctx: Context| {
            let (calls, first) = (calls.clone(), first.clone());
            async move {
                record(&calls, &ctx);
                if first.swap(false, AtomicOrdering::SeqCst) {
                    tokio::time::sleep(ack_timeout * 5 / 2).await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    }));
    // Keep consuming an ack timeout after both acks: a late redelivery shows too.
    two_acked_once_each(
        consumer,
        service,
        &calls,
        ack_timeout * 3,
        ack_timeout,
        "its lease ran out while it waited",
    )
    .await
}

/// A delivery that waited most of an ack timeout for its turn starts its
/// handler with a fresh lease: a handler shorter than one ack timeout (and
/// no lease layer) finishes before the delivery could expire, however old
/// the waiting heartbeat's last renewal was.
pub async fn runtime_waited_delivery_starts_with_a_fresh_lease(t: &Arc<dyn Transport>) -> CheckResult {
    // The heartbeat renews at half a timeout; the first handler ends just
    // before the second renewal would. The second then runs 0.8 timeouts:
    // from the old renewal that is past its lease, from a fresh one well
    // within it (0.15 and 0.2 timeouts either side).
    let ack_timeout = timing().short_ack * 2;
    let options = SubscribeOptions::new("g").ack_timeout(ack_timeout);
    let (topic, consumer) = consumer(t, "fresh-lease", &options, 1).await?;
    for text in ["one", "two"] {
        t.publish(&topic, Message::new(text)).await?;
    }
    let calls: Calls = Arc::default();
    let first = Arc::new(AtomicBool::new(true));
    let service = handler_fn({
        let (calls, first) = (calls.clone(), first.clone());
        move |ctx: Context| {
            let (calls, first) = (calls.clone(), first.clone());
            async move {
                record(&calls, &ctx);
                if first.swap(false, AtomicOrdering::SeqCst) {
                    // Renewed by hand halfway, so the first is not at risk itself.
                    tokio::time::sleep(ack_timeout * 2 / 5).await;
                    ctx.lease().renew().await?;
                    tokio::time::sleep(ack_timeout * 9 / 20).await;
                } else {
                    tokio::time::sleep(ack_timeout * 4 / 5).await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    two_acked_once_each(
        consumer,
        service,
        &calls,
        ack_timeout * 2,
        ack_timeout / 2,
        "it expired while its handler ran",
    )
    .await
}

/// The lease layer stops extending after its `max_total`: a call hung
/// beyond it is left to expire and the broker redelivers the message (not
/// before `max_total`, and about an ack timeout after it at most).
pub async fn runtime_lease_gives_up_after_max_total(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = timing().short_ack;
    let options = short("g");
    let (topic, consumer) = consumer(t, "lease-max", &options, 2).await?;
    t.publish(&topic, Message::new("hangs")).await?;
    let starts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let service = ServiceBuilder::new()
        .layer(LeaseLayer::new().max_total(ack_timeout))
        .service(handler_fn({
            let starts = starts.clone();
            move |ctx: Context| {
                let starts = starts.clone();
                async move {
                    starts.lock().unwrap().push((ctx.attempt(), Instant::now()));
                    if ctx.attempt() == 1 {
                        // Hung, until the consumer stops.
                        tokio::select! {
                            _ = ctx.shutdown() => {}
                            _ = tokio::time::sleep(ack_timeout * 20) => {}
                        }
                    }
                    Ok::<_, HandlerError>(())
                }
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(
        reached,
        "the hung call's message was not redelivered after max_total: {s:?}"
    );
    let starts = starts.lock().unwrap().clone();
    ensure!(
        starts.len() == 2 && starts[0].0 == 1 && starts[1].0 == 2,
        "calls at attempts {:?}",
        starts.iter().map(|(a, _)| a).collect::<Vec<_>>()
    );
    // Extended at half a timeout for a whole one more, then left: back
    // after one and a half timeouts, on a backend's polling besides.
    within_bounds(
        "redelivery after the lease layer's max_total",
        starts[1].1 - starts[0].1,
        ack_timeout,
        ack_timeout * 3,
    )
}

/// The retry layer gives each retry the policy's delay for the attempt that
/// failed (exponential, capped) and keeps a delay the handler named.
pub async fn runtime_retry_delays_follow_the_policy(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(6);
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
    let options = short("g").max_attempts(3);
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
    let options = short("g").max_attempts(3);
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

/// Dead-lettered messages are not failures a breaker counts: a run of
/// poison messages leaves it closed, and the healthy message after them is
/// handled.
pub async fn runtime_breaker_ignores_permanent_failures(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g");
    let (topic, consumer) = consumer(t, "breaker-poison", &options, 1).await?;
    for i in 0..3 {
        t.publish(&topic, Message::new(format!("poison{i}")).with_header("kind", "poison"))
            .await?;
    }
    t.publish(&topic, Message::new("fine")).await?;
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(2).open_for(Duration::from_millis(200)));
    let handle = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(breaker)
        .service(handler_fn(|ctx: Context| async move {
            match ctx.headers().get("kind") {
                Some("poison") => Err(HandlerError::permanent("malformed")),
                _ => Ok(()),
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| {
        s.acked >= 1 && s.dead_lettered >= 3
    })
    .await?;
    ensure!(reached, "not every message was settled: {s:?}");
    ensure!(
        handle.opened() == 0 && s.breaker_opened == 0,
        "the breaker opened {} times on dead-lettered messages",
        handle.opened()
    );
    ensure!(s.dead_lettered == 3 && s.acked == 1, "stats: {s:?}");
    dlq_depth(t.as_ref(), &topic, &options, 3).await?;
    t.dead_letters(&topic, &options).await?.purge().await?;
    Ok(())
}

/// A failed call releases its idempotency claim: the retry claims it again
/// at once and runs the handler (it is not taken for a duplicate, nor put
/// off until the claim's lease runs out).
pub async fn runtime_idempotency_releases_a_failed_claim(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(3);
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

/// Shutdown drains the running calls and leaves the deliveries waiting for
/// their turn unsettled: with two calls at a time, two running (until
/// shutdown, one of them wrapping up for a while after it) and three held
/// waiting when shutdown is asked, both running ones finish and are acked,
/// and the three waiting come back.
pub async fn runtime_shutdown_leaves_queued_deliveries(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_in_flight(8);
    let (topic, consumer) = consumer(t, "shutdown-queued", &options, 2).await?;
    let sent: Vec<Message> = (0..5).map(|i| Message::new(format!("q{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await?;
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let service = handler_fn({
        let handled = handled.clone();
        move |ctx: Context| {
            let handled = handled.clone();
            async move {
                let second = {
                    let mut handled = handled.lock().unwrap();
                    handled.push(ctx.id().to_owned());
                    handled.len() == 2
                };
                // Busy until told to stop (renewing, where the backend can):
                // the others wait for the two calls allowed.
                while tokio::time::timeout(ctx.ack_timeout() / 2, ctx.shutdown())
                    .await
                    .is_err()
                {
                    let _ = ctx.lease().renew().await;
                }
                if second {
                    // Wrapping up takes a while, well within the shutdown timeout.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    let n = sent.len() as u64;
    // Shut down once all five are held: two running, three waiting.
    let (s, reached) = run_until(consumer, service, timing().receive, move |s| s.received >= n).await?;
    ensure!(reached, "the consumer did not take all {n} deliveries: {s:?}");
    let handled = handled.lock().unwrap().clone();
    ensure!(
        handled.len() == 2 && s.acked == 2,
        "handled {handled:?} and acked {}: the two running calls, and only they, must finish and be acked",
        s.acked
    );
    let mut sub = t.subscribe(&topic, options).await?;
    let rest: HashSet<String> = receive_and_ack(&mut sub, sent.len() - 2)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let expected: HashSet<String> = sent
        .iter()
        .map(|m| m.id.clone())
        .filter(|id| !handled.contains(id))
        .collect();
    ensure!(
        rest == expected,
        "after shutdown {rest:?} came back, the queued {expected:?} were due (the consumer's counts: {s:?})"
    );
    expect_quiet(&mut sub, "after the queued deliveries").await
}

/// Two deliveries of one key never run at once in the runtime, also when
/// the broker hands the key out again: a handler that outlives its lease
/// gets its message redelivered (a broker that locks keys hands out the
/// redelivery as the key's one delivery), and that redelivery waits for the
/// running call; so does the next one behind it.
pub async fn runtime_redelivered_key_waits_for_the_running_call(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = timing().short_ack;
    let options = short("g").max_attempts(10);
    let (topic, consumer) = consumer(t, "key-redelivered", &options, 4).await?;
    t.publish(&topic, Message::new("slow").with_key("k")).await?;
    // (attempt, started, ended) of each call.
    type Spans = Arc<Mutex<Vec<(u32, Instant, Option<Instant>)>>>;
    let spans: Spans = Arc::default();
    let service = handler_fn({
        let spans = spans.clone();
        move |ctx: Context| {
            let spans = spans.clone();
            async move {
                let i = {
                    let mut spans = spans.lock().unwrap();
                    spans.push((ctx.attempt(), Instant::now(), None));
                    spans.len() - 1
                };
                // The first two calls outlive their leases (no lease layer).
                if ctx.attempt() <= 2 {
                    tokio::time::sleep(ack_timeout * 3 / 2).await;
                }
                spans.lock().unwrap()[i].2 = Some(Instant::now());
                Ok::<_, HandlerError>(())
            }
        }
    });
    let (s, reached) = run_until(consumer, service, timing().receive + ack_timeout * 4, |s| s.acked >= 1).await?;
    ensure!(reached, "no call of the message was acked: {s:?}");
    let spans = spans.lock().unwrap().clone();
    let attempts: Vec<u32> = spans.iter().map(|(a, _, _)| *a).collect();
    ensure!(
        spans.len() >= 3 && attempts.windows(2).all(|w| w[0] < w[1]),
        "calls at attempts {attempts:?}: three, in order, were due"
    );
    for pair in spans.windows(2) {
        let ((a, _, ended), (b, started, _)) = (pair[0], pair[1]);
        ensure!(
            ended.is_some_and(|e| e <= started),
            "attempt {b} of the key started while attempt {a} was still running"
        );
    }
    Ok(())
}

/// A call the breaker holds (failed while open) lets shutdown go: it is
/// given back at once, not kept until the breaker would let it through or
/// the shutdown timeout cuts it off.
pub async fn runtime_breaker_held_call_lets_shutdown_go(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(5);
    let (topic, consumer) = consumer(t, "breaker-shutdown", &options, 1).await?;
    t.publish(&topic, Message::new("down")).await?;
    // Open for far longer than the check: only shutdown can end the hold.
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(1).open_for(Duration::from_secs(600)));
    let service = ServiceBuilder::new()
        .layer(breaker)
        .service(handler_fn(|_ctx: Context| async move {
            Err::<(), _>(HandlerError::retry("downstream unavailable"))
        }));
    let asked_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (s, reached) = run_until(consumer, service, timing().receive, {
        let asked_at = asked_at.clone();
        move |s| {
            let open = s.breaker_opened >= 1;
            if open {
                asked_at.lock().unwrap().get_or_insert_with(Instant::now);
            }
            open
        }
    })
    .await?;
    let stopped = Instant::now();
    ensure!(reached, "the breaker did not open: {s:?}");
    let asked = asked_at.lock().unwrap().expect("set when reached");
    // The consumer's shutdown timeout is 10 s; a hold it had to cut off
    // takes all of it.
    within_bounds(
        "shutdown with a call held by the open breaker",
        stopped - asked,
        Duration::ZERO,
        Duration::from_secs(2),
    )?;
    ensure!(s.dead_lettered == 0 && s.retried <= 1, "stats: {s:?}");
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(graceful_shutdown_drains, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_retries_and_dead_letters, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(runtime_backoff_between_attempts, |c| (!c.nack_delay)
            .then_some("the backend cannot delay a redelivery")),
        check!(runtime_lease_extends_long_handler, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_breaker_holds_while_open, |c| (!c.extend).then_some(
            "the backend cannot extend a delivery, so held calls would time out"
        )),
        check!(runtime_idempotency_applies_once),
        check!(runtime_layers_pass_readiness_through),
        check!(runtime_timeout_and_panic_are_retried),
        check!(runtime_follow_up_is_linked),
        check!(runtime_keys_run_one_at_a_time_in_order),
        check!(runtime_concurrency_is_bounded),
        check!(runtime_waiting_deliveries_keep_their_lease, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_waited_delivery_starts_with_a_fresh_lease, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_lease_gives_up_after_max_total, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_retry_delays_follow_the_policy),
        check!(runtime_timeout_cuts_off_at_its_limit),
        check!(runtime_panic_in_call_is_caught_and_counted),
        check!(runtime_breaker_ignores_permanent_failures, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(runtime_idempotency_releases_a_failed_claim),
        check!(runtime_shutdown_leaves_queued_deliveries, |c| (!c
            .ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_redelivered_key_waits_for_the_running_call, |c| (!c
            .ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_breaker_held_call_lets_shutdown_go),
        check!(runtime_idempotency_groups_are_independent, |c| c
            .single_group
            .then_some("point-to-point: a topic has one group")),
    ]
}
