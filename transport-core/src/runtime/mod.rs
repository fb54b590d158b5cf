//! The consumer runtime: runs a [`Handler`] over a subscription with bounded
//! concurrency, per-key order, retries with backoff, dead-lettering and
//! graceful shutdown.
//!
//! Layer order for one delivery: the handler runs (a panic is caught and
//! counts as a transient failure); success acks; a transient failure nacks
//! with the [`RetryPolicy`] delay until the last attempt, which dead-letters;
//! a permanent failure dead-letters at once with the handler's reason.

mod handler;
mod retry;
mod stats;

pub use handler::{Failure, Handler, HandlerError};
pub use retry::RetryPolicy;
pub use stats::ConsumerStats;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::task::JoinSet;

use crate::capabilities::Capabilities;
use crate::delivery::Delivery;
use crate::error::Result;
use crate::options::SubscribeOptions;
use crate::transport::Transport;
use stats::Counters;

/// Runs a handler over one topic and group.
///
/// ```no_run
/// # async fn demo(transport: std::sync::Arc<dyn transport_core::Transport>) -> transport_core::Result<()> {
/// use transport_core::runtime::{Consumer, HandlerError};
/// use transport_core::{Received, SubscribeOptions};
///
/// let stats = Consumer::new(&*transport, "orders", SubscribeOptions::new("billing"))
///     .concurrency(16)
///     .run(
///         |msg: Received| async move {
///             if msg.payload().is_empty() {
///                 return Err(HandlerError::permanent("empty order"));
///             }
///             Ok(())
///         },
///         tokio::time::sleep(std::time::Duration::from_secs(60)),
///     )
///     .await?;
/// println!("acked {}", stats.acked);
/// # Ok(()) }
/// ```
pub struct Consumer<'t> {
    transport: &'t dyn Transport,
    topic: String,
    options: SubscribeOptions,
    concurrency: usize,
    retry: RetryPolicy,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
}

impl<'t> Consumer<'t> {
    /// A consumer of `topic` with `options`; 8 handlers at a time, the
    /// default [`RetryPolicy`], 30 s to drain on shutdown.
    pub fn new(transport: &'t dyn Transport, topic: impl Into<String>, options: SubscribeOptions) -> Self {
        Consumer {
            transport,
            topic: topic.into(),
            options,
            concurrency: 8,
            retry: RetryPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            counters: Arc::default(),
        }
    }

    /// Handlers running at once, at most (messages of one key still run one at a time).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Delay between attempts after a transient failure.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
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

    /// Run until `shutdown` completes or the subscription ends. On shutdown,
    /// fetching stops, running handlers get `shutdown_timeout` to finish,
    /// and every delivery not settled by then is left for redelivery.
    pub async fn run<H: Handler>(self, handler: H, shutdown: impl Future<Output = ()> + Send) -> Result<ConsumerStats> {
        let mut subscription = self.transport.subscribe(&self.topic, self.options.clone()).await?;
        let ctx = Arc::new(TaskContext {
            handler,
            retry: self.retry,
            capabilities: self.transport.capabilities(),
            ack_timeout: self.options.ack_timeout,
            counters: self.counters.clone(),
        });
        let mut tasks: JoinSet<Option<String>> = JoinSet::new();
        // Keys with a handler running, and the deliveries of that key waiting behind it.
        let mut busy_keys: HashMap<String, VecDeque<Delivery>> = HashMap::new();
        let mut running = 0usize;
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let key = match done {
                        Ok(key) => key,
                        Err(e) => { tracing::error!(error = %e, "handler task failed"); None }
                    };
                    let next = key.as_ref().and_then(|k| {
                        let queue = busy_keys.get_mut(k)?;
                        let next = queue.pop_front();
                        if next.is_none() { busy_keys.remove(k); }
                        next
                    });
                    match next {
                        Some(delivery) => spawn(&mut tasks, &ctx, delivery),
                        None => running -= 1,
                    }
                }
                next = subscription.next(), if running < self.concurrency => {
                    match next {
                        Some(Ok(delivery)) => {
                            self.counters.received();
                            match delivery.key().map(str::to_owned) {
                                Some(key) => match busy_keys.get_mut(&key) {
                                    Some(queue) => queue.push_back(delivery),
                                    None => {
                                        busy_keys.insert(key, VecDeque::new());
                                        running += 1;
                                        spawn(&mut tasks, &ctx, delivery);
                                    }
                                },
                                None => {
                                    running += 1;
                                    spawn(&mut tasks, &ctx, delivery);
                                }
                            }
                        }
                        Some(Err(e)) => {
                            self.counters.receive_error();
                            if !e.is_retryable() {
                                tracing::error!(error = %e, topic = %self.topic, "subscription failed");
                                drain(tasks, self.shutdown_timeout).await;
                                return Err(e);
                            }
                            tracing::warn!(error = %e, topic = %self.topic, "receive failed; the backend retries");
                        }
                        None => break,
                    }
                }
            }
        }

        // Stop fetching first: what is queued behind a busy key goes back unsettled.
        drop(subscription);
        drop(busy_keys);
        drain(tasks, self.shutdown_timeout).await;
        Ok(self.counters.snapshot())
    }
}

async fn drain(mut tasks: JoinSet<Option<String>>, timeout: Duration) {
    let finished = tokio::time::timeout(timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown deadline passed; unfinished deliveries will be redelivered"
        );
        // Aborting drops their deliveries unsettled: the broker redelivers them.
        tasks.shutdown().await;
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

struct TaskContext<H> {
    handler: H,
    retry: RetryPolicy,
    capabilities: Capabilities,
    ack_timeout: Duration,
    counters: Arc<Counters>,
}

fn spawn<H: Handler>(tasks: &mut JoinSet<Option<String>>, ctx: &Arc<TaskContext<H>>, delivery: Delivery) {
    let ctx = ctx.clone();
    tasks.spawn(async move {
        let key = delivery.key().map(str::to_owned);
        handle_one(&ctx, delivery).await;
        key
    });
}

async fn handle_one<H: Handler>(ctx: &TaskContext<H>, delivery: Delivery) {
    let received = delivery.received();
    let outcome = AssertUnwindSafe(ctx.handler.handle(received)).catch_unwind().await;
    let failure = match outcome {
        Ok(Ok(())) => {
            match delivery.ack().await {
                Ok(()) => ctx.counters.acked(),
                Err(e) => {
                    ctx.counters.settle_error();
                    tracing::warn!(error = %e, "ack failed; the message will be redelivered");
                }
            }
            return;
        }
        Ok(Err(e)) => e,
        Err(panic) => {
            ctx.counters.panicked();
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            HandlerError::transient(format!("handler panicked: {text}"))
        }
    };
    let id = delivery.id().to_owned();
    let attempt = delivery.attempt();
    let result = if failure.kind() == Failure::Permanent || delivery.is_last_attempt() {
        let reason = failure.reason().to_owned();
        tracing::warn!(%id, attempt, %reason, "dead-lettering");
        let r = delivery.dead_letter(reason).await;
        if r.is_ok() {
            ctx.counters.dead_lettered();
        }
        r
    } else {
        let delay = ctx.retry.delay_for(attempt);
        tracing::debug!(%id, attempt, ?delay, reason = failure.reason(), "retrying later");
        let r = if ctx.capabilities.nack_delay {
            delivery.nack(Some(delay)).await
        } else {
            // The broker cannot delay a redelivery: hold the message for the
            // delay (within its ack timeout) and then nack it.
            tokio::time::sleep(delay.min(ctx.ack_timeout / 2)).await;
            delivery.nack(None).await
        };
        if r.is_ok() {
            ctx.counters.retried();
        }
        r
    };
    if let Err(e) = result {
        ctx.counters.settle_error();
        tracing::warn!(%id, error = %e, "settling a failed delivery failed; it will be redelivered");
    }
}
