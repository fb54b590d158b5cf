//! A handler call that takes too long is a failure worth a retry.

use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

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
        HandlerTimeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`HandlerTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct HandlerTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Context> for HandlerTimeout<S>
where
    S: Service<Context, Response = Outcome>,
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
        let limit = self.limit;
        let counters = ctx.counters.clone();
        let call = self.inner.call(ctx);
        async move {
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => {
                    counters.timed_out();
                    Ok(Outcome::retry(format!("handler timed out after {limit:?}")))
                }
            }
        }
        .boxed()
    }
}
