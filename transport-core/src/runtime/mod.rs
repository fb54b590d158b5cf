//! The consumer runtime: runs a handler over a subscription with bounded
//! concurrency, per-key order and graceful shutdown, with everything around
//! the handler as [`tower`] middleware.
//!
//! A consumer runs a [`tower::Service`] that takes a [`Context`] (the
//! message, topic, group, attempt, a [`Lease`] and the shutdown signal) and
//! returns an [`Outcome`]: ack, retry (with an optional delay) or
//! dead-letter. Layers only change that outcome; exactly one place,
//! [`Delivery::settle`](crate::Delivery::settle), turns it into a broker
//! operation and decides that a retry on the last attempt dead-letters.
//! tower's own layers (`tower::limit`, `tower::load_shed`, `tower::timeout`)
//! stack in as well: an error from a service is a failure worth a retry.
//!
//! # Layers, outermost first, and why in this order
//!
//! | layer | does | why here |
//! |---|---|---|
//! | [`RetryDelayLayer`] | gives a retry without a delay the policy's backoff (with jitter) | sees every retry the layers below produce |
//! | [`LeaseLayer`] | extends the delivery every half ack timeout while the call runs | covers everything below, including a breaker holding a call |
//! | [`CircuitBreakerLayer`] | stops calling a failing downstream; holds failed calls until it closes | before idempotency, so held calls keep no claim |
//! | [`IdempotencyLayer`] | acks a message already processed without calling the handler | claims right before the handler, releases on failure |
//! | [`HandlerTimeoutLayer`] | a call over its time is a failure worth a retry | the breaker counts timeouts |
//! | [`CatchPanicLayer`] | a panic is a failure worth a retry with the panic message | innermost, so every layer sees panics as failures |
//!
//! The runtime catches panics that escape every layer too, so a panic never
//! takes the consumer down.
//!
//! ```no_run
//! # async fn demo(transport: std::sync::Arc<dyn transport_core::Transport>) -> transport_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use transport_core::runtime::*;
//! use transport_core::SubscribeOptions;
//!
//! let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(5));
//! let service = tower::ServiceBuilder::new()
//!     .layer(RetryDelayLayer::new(RetryPolicy::default()))
//!     .layer(LeaseLayer::new())
//!     .layer(breaker.clone())
//!     .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
//!     .layer(HandlerTimeoutLayer::new(Duration::from_secs(10)))
//!     .layer(CatchPanicLayer)
//!     .service(handler_fn(|ctx: Context| async move {
//!         if ctx.payload().is_empty() {
//!             return Err(HandlerError::permanent("empty order"));
//!         }
//!         Ok(())
//!     }));
//! let consumer = Consumer::new(transport, "orders", SubscribeOptions::new("billing")).concurrency(16);
//! let stats = consumer.stats_handle();
//! // Any future ends it: a signal, a shutdown channel; here, ten minutes.
//! let running = tokio::spawn(consumer.run(service, tokio::time::sleep(Duration::from_secs(600))));
//! # let _ = (stats, running);
//! # Ok(()) }
//! ```

mod context;
mod dispatch;
mod handler;
mod idempotency;
mod layers;
mod stats;
mod waiting;

pub use context::{current_link, link_to_current, Context, Lease, Link};
pub use handler::{handler_fn, outcome_of, BoxError, Failure, HandlerError, HandlerFn, IntoOutcome};
pub use idempotency::{Claim, IdempotencyStore, MemoryIdempotencyStore};
pub use layers::breaker::{BreakerConfig, BreakerHandle, BreakerState, CircuitBreaker, CircuitBreakerLayer};
pub use layers::catch_panic::{CatchPanic, CatchPanicLayer};
pub use layers::idempotency::{Idempotency, IdempotencyLayer};
pub use layers::lease::{LeaseKeeper, LeaseLayer};
pub use layers::retry::{RetryDelay, RetryDelayLayer, RetryPolicy};
pub use layers::timeout::{HandlerTimeout, HandlerTimeoutLayer};
pub use layers::wrap_call::WrapCall;
pub use stats::ConsumerStats;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::error::Result;
use crate::options::SubscribeOptions;
use crate::settle::Outcome;
use crate::transport::Transport;
use dispatch::{finish, not_ready, start, Shared};
use layers::catch_panic::panic_reason;
use stats::Counters;
use waiting::{keep_leases, OrderingKey, Waiting};

/// Runs a service over one topic and group. Owns its transport, so
/// `tokio::spawn(consumer.run(service, shutdown))` works.
///
/// The fixed core: at most [`concurrency`](Self::concurrency) handler calls
/// at once; messages of one key handled one at a time in arrival order;
/// every delivery the subscription hands out (at most its `max_in_flight`)
/// is taken at once and keeps its lease while it waits for its turn (where
/// the backend can [`extend`](crate::Delivery::extend)), so none expires
/// unseen in a buffer.
///
/// How: the consumer's own task reads the subscription and runs up to
/// `concurrency` handler calls concurrently (not in parallel: like
/// `StreamExt::for_each_concurrent`, so a delivery is never handed to
/// another task and back). Deliveries that may not start yet (behind a
/// running one of their key, or with every call slot taken, or while the
/// service is not ready, e.g. an open circuit breaker) wait in one queue
/// whose leases the consumer extends every half ack timeout. On shutdown,
/// fetching stops, handlers see [`Context::shutdown`] and get the shutdown
/// timeout to finish, and every delivery not settled by then (including
/// those queued behind a busy key) is left unsettled for redelivery.
///
/// A handler that computes for long without awaiting holds up every other
/// call of its consumer and the keeping of leases: move such work to
/// [`tokio::task::spawn_blocking`] (or `tokio::spawn` it and await the
/// handle) so it runs on other cores.
pub struct Consumer {
    transport: Arc<dyn Transport>,
    topic: String,
    options: SubscribeOptions,
    concurrency: usize,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
}

impl Consumer {
    /// A consumer of `topic` with `options`; 8 handler calls at a time, 30 s
    /// to drain on shutdown.
    pub fn new(transport: Arc<dyn Transport>, topic: impl Into<String>, options: SubscribeOptions) -> Self {
        Consumer {
            transport,
            topic: topic.into(),
            options,
            concurrency: 8,
            shutdown_timeout: Duration::from_secs(30),
            counters: Arc::default(),
        }
    }

    /// Handler calls running at once, at most (messages of one key still
    /// run one at a time). A call's slot is free again once its delivery
    /// is settled.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long running handlers may take to finish once shutdown is asked.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Live counters, readable while [`run`](Self::run) goes on.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.counters.clone())
    }

    /// Run `handler` (an async closure taking a [`Context`]) with the
    /// default layers: [`RetryDelayLayer`] with the default [`RetryPolicy`] and
    /// [`CatchPanicLayer`]. See [`run`](Self::run).
    pub async fn run_fn<F, Fut, R>(
        self,
        handler: F,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ConsumerStats>
    where
        F: Fn(Context) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoOutcome,
    {
        let service = tower::ServiceBuilder::new()
            .layer(RetryDelayLayer::new(RetryPolicy::default()))
            .layer(CatchPanicLayer)
            .service(handler_fn(handler));
        self.run(service, shutdown).await
    }

    /// Run `service` until `shutdown` completes or the subscription ends;
    /// returns the counters. A subscription error that retrying cannot fix
    /// stops the consumer (after draining) and is returned.
    pub async fn run<S>(self, service: S, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<ConsumerStats>
    where
        S: Service<Context, Response = Outcome> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let mut subscription = self.transport.subscribe(&self.topic, self.options.clone()).await?;
        self.counters
            .attach(self.transport.backend(), &self.topic, &self.options.group);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            transport: self.transport.clone(),
            counters: self.counters.clone(),
            capabilities: self.transport.capabilities(),
            shutdown: stop.clone(),
        });
        // The service every call goes through, replaced by a fresh clone of
        // the pristine one once it failed or panicked (tower: discard such
        // a one).
        let pristine = service;
        let mut service = pristine.clone();
        let mut waiting = Waiting::default();
        // The calls running (at most `concurrency`), each to its settlement.
        let mut running = FuturesUnordered::new();
        // The leases of waiting deliveries are kept from here, every half
        // ack timeout, where the backend can extend them.
        let can_extend = shared.capabilities.extend;
        let period = (self.options.ack_timeout / 2).max(Duration::from_millis(1));
        // Each beat's extensions end before the next beat: one that hangs
        // never makes the next beat skip.
        let extend_limit = period * 3 / 4;
        let beat = tokio::time::sleep(period);
        tokio::pin!(beat);
        // The extensions of one beat run beside the loop, which keeps
        // reading, starting calls and watching for shutdown meanwhile; a
        // beat that finds the last one still running skips.
        let mut keeping: Option<tokio::task::JoinHandle<()>> = None;
        let mut failure = None;
        tokio::pin!(shutdown);

        loop {
            let may_start = waiting.has_ready() && running.len() < self.concurrency;
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                // A call settled: the next delivery of its key may start.
                Some(key) = running.next(), if !running.is_empty() => {
                    if let Some(key) = key {
                        waiting.finished(&key);
                    }
                }
                // A delivery may start once the service is ready (a circuit
                // breaker may hold it: the delivery waits, its lease kept).
                ready = std::future::poll_fn(|cx| poll_ready(&mut service, cx)), if may_start => {
                    // `may_start` saw one ready, and nothing took it since.
                    let Some(parked) = waiting.next_ready() else { continue };
                    // Its key's turn ends when its call settles (or fails
                    // to start).
                    let key = OrderingKey::of(&parked.delivery);
                    match ready {
                        Ok(()) => {
                            // `start` runs the service's `call` and builds
                            // the context and span; a panic there (past
                            // `call`'s own net) loses this delivery to
                            // redelivery, never the consumer or its key.
                            let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                start(&shared, &mut service, parked)
                            }));
                            match started {
                                Ok((handling, reusable)) => {
                                    if !reusable {
                                        service = pristine.clone();
                                    }
                                    running.push(finish(shared.clone(), handling, key));
                                }
                                Err(_) => {
                                    tracing::error!("starting a delivery's call panicked; the delivery will be redelivered");
                                    service = pristine.clone();
                                    if let Some(key) = key {
                                        waiting.finished(&key);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            service = pristine.clone();
                            running.push(finish(shared.clone(), not_ready(parked, e), key));
                        }
                    }
                }
                _ = &mut beat, if can_extend => {
                    beat.as_mut().reset(tokio::time::Instant::now() + period);
                    if keeping.as_ref().is_none_or(|k| k.is_finished()) {
                        keeping = Some(tokio::spawn(keep_leases(waiting.deliveries(), extend_limit)));
                    }
                }
                // Taken at once, whatever is running: a delivery left in the
                // subscription's buffer would have no one keeping its lease.
                next = subscription.next() => match next {
                    Some(Ok(delivery)) => {
                        self.counters.received();
                        waiting.arrive(delivery);
                    }
                    Some(Err(e)) => {
                        self.counters.receive_error();
                        if !e.is_retryable() {
                            tracing::error!(error = %e, topic = %self.topic, "subscription failed");
                            failure = Some(e);
                            break;
                        }
                        tracing::warn!(error = %e, topic = %self.topic, "receive failed; the backend retries");
                    }
                    None => break,
                },
            }
        }

        // Stop fetching (nothing polls the subscription any more), tell
        // handlers, let waiting deliveries go back unsettled. The
        // subscription is dropped only once the running handlers settled:
        // on some backends dropping it hands back what it still holds, and
        // a handler that finishes within the shutdown timeout must have its
        // ack count.
        stop.cancel();
        if let Some(keeping) = keeping {
            keeping.abort();
            // Its shares of the waiting deliveries go before the
            // subscription does.
            let _ = keeping.await;
        }
        drop(waiting);
        drain(running, self.shutdown_timeout).await;
        drop(subscription);
        match failure {
            Some(e) => Err(e),
            None => Ok(self.counters.snapshot()),
        }
    }
}

/// The service's readiness; a panic in `poll_ready` is a failure like an
/// error (the service is replaced, the delivery retried).
fn poll_ready<S>(service: &mut S, cx: &mut std::task::Context<'_>) -> Poll<std::result::Result<(), BoxError>>
where
    S: Service<Context>,
    S::Error: Into<BoxError>,
{
    match std::panic::catch_unwind(AssertUnwindSafe(|| service.poll_ready(cx))) {
        Ok(ready) => ready.map_err(Into::into),
        Err(panic) => Poll::Ready(Err(
            format!("poll_ready panicked: {}", panic_reason(panic.as_ref())).into()
        )),
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("backend", &self.transport.backend())
            .field("topic", &self.topic)
            .field("group", &self.options.group)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Let the running calls finish within `timeout`; what has not settled by
/// then is dropped unsettled (the broker redelivers it).
async fn drain<F: Future>(mut running: FuturesUnordered<F>, timeout: Duration) {
    let finished = tokio::time::timeout(timeout, async { while running.next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            left = running.len(),
            "shutdown deadline passed; unfinished deliveries will be redelivered"
        );
        // Dropping them drops their deliveries unsettled; a handler's future
        // that panics in its drop must not take the consumer down.
        if std::panic::catch_unwind(AssertUnwindSafe(move || drop(running))).is_err() {
            tracing::error!("dropping an unfinished handler panicked");
        }
    }
}

/// Reads a running consumer's counters.
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    /// The counters now.
    pub fn get(&self) -> ConsumerStats {
        self.0.snapshot()
    }
}
