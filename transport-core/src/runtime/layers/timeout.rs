//! A handler call that takes too long is a failure worth a retry.

use std::future::Future;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tower::Layer;

use super::wrap_call::{AroundCall, WrapCall};

use crate::runtime::handler::BoxError;
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

impl<S> Layer<S> for HandlerTimeoutLayer {
    type Service = HandlerTimeout<S>;
    fn layer(&self, inner: S) -> HandlerTimeout<S> {
        WrapCall::new(inner, *self)
    }
}

/// The service of [`HandlerTimeoutLayer`].
pub type HandlerTimeout<S> = WrapCall<S, HandlerTimeoutLayer>;

impl AroundCall for HandlerTimeoutLayer {
    fn around<F>(&self, ctx: Context, next: impl FnOnce(Context) -> F) -> BoxFuture<'static, Result<Outcome, BoxError>>
    where
        F: Future<Output = Result<Outcome, BoxError>> + Send + 'static,
    {
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
