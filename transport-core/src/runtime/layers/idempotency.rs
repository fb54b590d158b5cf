//! Acknowledge a message already processed without calling the handler.

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

use crate::runtime::handler::{outcome_of, BoxError};
use crate::runtime::idempotency::{Claim, IdempotencyStore};
use crate::runtime::Context;
use crate::settle::Outcome;

type KeyFn = Arc<dyn Fn(&Context) -> String + Send + Sync>;

/// Claims each message in an [`IdempotencyStore`] before the handler runs:
/// a message already processed is acked without calling the handler
/// (counted as a duplicate); one being processed elsewhere is waited for
/// (up to half the ack timeout) and then acked if that succeeded, or
/// retried after the other claim's remaining lease; after success the message is marked
/// done (for `ttl`, 7 days by default), after a failure the claim is
/// released. A store that cannot be reached is a failure worth a retry.
///
/// The key is the message id, or what [`key_with`](Self::key_with) derives
/// (a business key header, when producers may publish the same fact twice
/// under two ids). A message whose id does not survive a redelivery
/// ([`DeliveryInfo::stable_id`](crate::DeliveryInfo::stable_id) false: a
/// foreign RabbitMQ message without `message_id`) is dead-lettered with a
/// reason saying so unless the key is derived: keyed by such an id, every
/// redelivery would look new and be processed again.
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn IdempotencyStore>,
    ttl: Duration,
    lease: Duration,
    key: Option<KeyFn>,
}

impl IdempotencyLayer {
    /// Deduplicate through `store`; done keys kept 7 days, claims of 5 minutes.
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        IdempotencyLayer {
            store,
            ttl: Duration::from_secs(7 * 24 * 3600),
            lease: Duration::from_secs(300),
            key: None,
        }
    }

    /// How long a processed message is remembered.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim lasts if its consumer dies while processing; longer
    /// than the handler's timeout.
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Derive the deduplication key from the context instead of the message id.
    pub fn key_with(mut self, key: impl Fn(&Context) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency {
            inner,
            config: self.clone(),
        }
    }
}

/// The service of [`IdempotencyLayer`].
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    config: IdempotencyLayer,
}

impl<S> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Claim `(group, key)`; while another consumer holds the claim, wait (up
/// to `patience`, polling from 20 ms up to 1 s) for it to finish, so a
/// duplicate delivered at the same time as its original is acked once the
/// original is done instead of being retried (and burning an attempt).
async fn claim(
    store: &dyn IdempotencyStore,
    group: &str,
    key: &str,
    lease: Duration,
    patience: Duration,
) -> crate::error::Result<Claim> {
    let until = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(20);
    loop {
        match store.claim(group, key, lease).await? {
            Claim::InProgress(left) if tokio::time::Instant::now() + pause < until => {
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return Ok(other),
        }
    }
}

impl<S> Service<Context> for Idempotency<S>
where
    S: Service<Context, Response = Outcome> + Clone + Send + 'static,
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
        // The claim is async, so the call happens later: take the service
        // that was made ready and leave a clone behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let config = self.config.clone();
        async move {
            let key = match &config.key {
                Some(f) => f(&ctx),
                // An id unique to this delivery would let a redelivery
                // through as new: processed twice, silently. Refused with a
                // reason an operator can act on (nothing is lost: the dead
                // letter can be redriven once the key is derived).
                None if !ctx.info().stable_id => {
                    return Ok(Outcome::DeadLetter {
                        reason: format!(
                            "message {} has no id that survives a redelivery (a RabbitMQ message published \
                             without message_id), so the idempotency layer cannot deduplicate it: set message_id \
                             on the producer, or derive the key with IdempotencyLayer::key_with",
                            ctx.id()
                        ),
                    });
                }
                None => ctx.id().to_owned(),
            };
            let group = ctx.group().to_owned();
            let store = &config.store;
            match claim(store.as_ref(), &group, &key, config.lease, ctx.ack_timeout() / 2).await {
                Ok(Claim::Acquired) => {}
                Ok(Claim::Done) => {
                    ctx.counters.duplicate();
                    tracing::debug!(id = ctx.id(), %key, "already processed; acknowledging the duplicate");
                    return Ok(Outcome::Ack);
                }
                Ok(Claim::InProgress(left)) => {
                    // Still claimed after waiting: the other consumer is slow
                    // or gone; come back when its claim runs out.
                    return Ok(Outcome::retry_after(
                        left.max(Duration::from_millis(100)),
                        format!("message {key} is being processed by another consumer"),
                    ));
                }
                Err(e) => return Ok(Outcome::retry(format!("idempotency store unavailable: {e}"))),
            }
            let outcome = outcome_of(inner.call(ctx.clone()).await);
            let stored = match outcome {
                Outcome::Ack => store.complete(&group, &key, config.ttl).await,
                _ => store.release(&group, &key).await,
            };
            if let Err(e) = stored {
                // The effect happened (or failed) already; acking is still
                // right, and a redelivery before the claim expires retries.
                tracing::warn!(id = ctx.id(), %key, error = %e, "recording in the idempotency store failed");
            }
            Ok(outcome)
        }
        .boxed()
    }
}
