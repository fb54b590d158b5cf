//! The quickstart's full stack of layers, as the benchmarks run it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use transport::runtime::{
    handler_fn, BoxError, BreakerConfig, CatchPanicLayer, CircuitBreakerLayer, Context, HandlerTimeoutLayer,
    IdempotencyLayer, IntoOutcome, LeaseLayer, MemoryIdempotencyStore, RetryDelayLayer, RetryPolicy,
};
use transport::Outcome;

/// `handler` inside retry delays, lease, breaker, idempotency (in-memory
/// store), handler timeout and panic catching, outermost first.
pub fn full_stack<F, Fut, R>(
    handler: F,
) -> impl tower::Service<Context, Response = Outcome, Error = BoxError, Future: Send> + Clone + Send + 'static
where
    F: Fn(Context) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoOutcome,
{
    tower::ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::default()))
        .layer(LeaseLayer::new())
        .layer(CircuitBreakerLayer::new(
            BreakerConfig::consecutive_failures(5).open_for(Duration::from_secs(10)),
        ))
        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(10)))
        .layer(CatchPanicLayer)
        .service(handler_fn(handler))
}
