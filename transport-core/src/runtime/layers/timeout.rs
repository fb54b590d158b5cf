//! A handler call that takes too long is a failure worth a retry.

use std::time::Duration;

use futures::future::FutureExt;

use super::wrap_call::{wrap_call_layer, AroundCall, CallFuture, InnerCall};

use crate::runtime::Context;
use crate::settle::Outcome;

/// Limits each call of the services inside it to a duration. The call is
/// dropped (cancelled at its next `.await`) and the outcome is a retry with
/// "handler timed out after ..." as the reason. Unlike `tower::timeout`, the
/// reason names the limit and the consumer's counters record it.
#[derive(Debug, Clone, Copy)]
pub struct HandlerTimeoutLayer {
    limit: Duration,
}

impl HandlerTimeoutLayer {
    /// Calls longer than `limit` fail.
    pub fn new(limit: Duration) -> Self {
        HandlerTimeoutLayer { limit }
    }
}

wrap_call_layer!(HandlerTimeoutLayer => HandlerTimeout);

impl AroundCall for HandlerTimeoutLayer {
    fn around<F: InnerCall>(&self, ctx: Context, next: impl FnOnce(Context) -> F) -> CallFuture {
        let limit = self.limit;
        let counters = ctx.counters.clone();
        let call = next(ctx);
        async move {
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => {
                    counters.timed_out();
                    Ok(Outcome::retry(format!("handler timed out after {limit:?}")))
                }
            }
        }
        .boxed()
    }
}
