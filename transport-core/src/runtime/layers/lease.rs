//! Keeps a delivery leased while a long call runs, so the broker does not
//! hand it to another consumer meanwhile.

use std::time::Duration;

use futures::future::FutureExt;
use tokio::time::Instant;

use super::wrap_call::{wrap_call_layer, AroundCall, CallFuture, InnerCall};

use crate::runtime::Context;

/// Extends the delivery by a full ack timeout every half ack timeout while
/// the call inside runs, up to `max_total` (one hour by default) after which
/// the lease is left to run out and the broker redelivers. Needs a backend
/// that can extend ([`Capabilities::extend`](crate::Capabilities::extend));
/// elsewhere the first failed extension is logged and the call goes on.
///
/// Pair it with a [`HandlerTimeoutLayer`](super::timeout::HandlerTimeoutLayer) inside: a
/// hung handler is otherwise held until `max_total`.
#[derive(Debug, Clone, Copy)]
pub struct LeaseLayer {
    max_total: Duration,
}

impl LeaseLayer {
    /// Extend for at most one hour per call.
    pub fn new() -> Self {
        LeaseLayer {
            max_total: Duration::from_secs(3600),
        }
    }

    /// Stop extending after `max_total`.
    pub fn max_total(mut self, max_total: Duration) -> Self {
        self.max_total = max_total;
        self
    }
}

impl Default for LeaseLayer {
    fn default() -> Self {
        LeaseLayer::new()
    }
}

wrap_call_layer!(LeaseLayer => LeaseKeeper);

impl AroundCall for LeaseLayer {
    fn around<F: InnerCall>(&self, ctx: Context, next: impl FnOnce(Context) -> F) -> CallFuture {
        let lease = ctx.lease().clone();
        let id = ctx.id().to_owned();
        let until = Instant::now() + self.max_total;
        let call = next(ctx);
        async move {
            tokio::pin!(call);
            let period = lease.ack_timeout() / 2;
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            let mut keeping = true;
            loop {
                tokio::select! {
                    biased;
                    result = &mut call => return result,
                    now = ticks.tick(), if keeping => {
                        if now >= until {
                            tracing::warn!(%id, "lease extended for the longest allowed; the message may be redelivered");
                            keeping = false;
                        } else if let Err(e) = lease.renew().await {
                            tracing::warn!(%id, error = %e, "extending the lease failed; the message may be redelivered");
                            keeping = false;
                        }
                    }
                }
            }
        }
        .boxed()
    }
}
