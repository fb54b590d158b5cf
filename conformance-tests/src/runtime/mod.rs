//! Checks of the consumer runtime and its layers: the same stack must mean
//! the same on every backend (backoff through the broker's nack delay,
//! leases through `extend`, a breaker that burns no attempts, idempotency,
//! timeouts and panics as transient failures, graceful shutdown).
//!
//! One file per concern: `dispatch.rs`, `retry.rs`, `lease.rs`,
//! `breaker.rs`, `idempotency.rs`, `contracts.rs`; the helpers they share are here.

mod breaker;
mod contracts;
mod dispatch;
mod idempotency;
mod lease;
mod retry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

pub use breaker::*;
pub use contracts::*;
pub use dispatch::*;
use futures::future::BoxFuture;
use futures::FutureExt;
pub use idempotency::*;
pub use lease::*;
pub use retry::*;
use tower::Service;
use transport_core::runtime::{
    handler_fn, outcome_of, BoxError, Consumer, ConsumerStats, Context, HandlerError, HandlerFn, StatsHandle,
};
use transport_core::{Outcome, StartFrom, SubscribeOptions, Transport};

use crate::support::*;
use crate::{ensure, Check};

/// Which attempts each message id was handled at.
pub(crate) type Calls = Arc<Mutex<HashMap<String, Vec<u32>>>>;

pub(crate) fn record(calls: &Calls, ctx: &Context) {
    calls
        .lock()
        .unwrap()
        .entry(ctx.id().to_owned())
        .or_default()
        .push(ctx.attempt());
}

/// A handler that records each call in `calls`, works `pause`, and succeeds.
pub(crate) fn recording(
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
pub(crate) async fn until(stats: &StatsHandle, within: Duration, done: impl Fn(&ConsumerStats) -> bool) -> bool {
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
pub(crate) async fn consumer(
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
pub(crate) async fn run_until<S>(
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
pub(crate) async fn two_acked_once_each<S>(
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

/// Turns the first successful attempt of messages marked `nack-after` into a
/// retry, as if settling had failed after the handler's effect.
#[derive(Clone)]
pub(crate) struct NackAfterSuccess<S>(S);

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

/// Each call's attempt, the outcome the services inside returned, and how
/// long the call took.
pub(crate) type Outcomes = Arc<Mutex<Vec<(u32, Outcome, Duration)>>>;

/// Records what the services inside it return: the outcome as the runtime
/// settles it, seen from outside the layers under test.
#[derive(Clone)]
pub(crate) struct RecordOutcomes<S> {
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

pub(crate) fn record_outcomes<S>(seen: &Outcomes) -> impl tower::Layer<S, Service = RecordOutcomes<S>> + Clone {
    let seen = seen.clone();
    tower::layer::layer_fn(move |inner| RecordOutcomes {
        inner,
        seen: seen.clone(),
    })
}

/// The runtime checks, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    [
        dispatch::checks(),
        retry::checks(),
        contracts::checks(),
        lease::checks(),
        breaker::checks(),
        idempotency::checks(),
    ]
    .concat()
}
