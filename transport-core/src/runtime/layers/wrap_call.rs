//! The one tower service behind every layer that only wraps each call of the
//! services inside it (a time limit, a backoff delay, a lease kept, a panic
//! caught): the layer says what happens around one call, this file does the
//! tower plumbing (readiness, error conversion) once.
//!
//! The circuit breaker and the idempotency layer are not of this kind: they
//! decide whether and when to call the inner service at all (and call it
//! again), so they keep services of their own.

use std::future::Future;
use std::task::{Context as TaskContext, Poll};

use futures::future::{BoxFuture, TryFutureExt};
use tower::Service;

use crate::runtime::handler::BoxError;
use crate::runtime::Context;
use crate::settle::Outcome;

/// The future of one call, as every layer of this kind returns it.
pub type CallFuture = BoxFuture<'static, Result<Outcome, BoxError>>;

/// The call of the services inside a layer, once `next` started it.
pub trait InnerCall: Future<Output = Result<Outcome, BoxError>> + Send + 'static {}

impl<F> InnerCall for F where F: Future<Output = Result<Outcome, BoxError>> + Send + 'static {}

/// What a layer does around one call: it gets the delivery's context and
/// `next`, which starts the call of the services inside (exactly once, or
/// not at all), and returns the outcome's future.
///
/// Public only so [`WrapCall`]'s bounds can name it; it is not re-exported.
pub trait AroundCall: Send + Sync + 'static {
    /// The future of one call, with whatever the layer adds around it.
    fn around<F: InnerCall>(&self, ctx: Context, next: impl FnOnce(Context) -> F) -> CallFuture;
}

/// The [`tower::Layer`] impl of a layer whose service is [`WrapCall`], and
/// the public name of that service.
macro_rules! wrap_call_layer {
    ($layer:ident => $service:ident) => {
        impl<S> tower::Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> $service<S> {
                $crate::runtime::layers::wrap_call::WrapCall::new(inner, self.clone())
            }
        }

        #[doc = concat!("The service of [`", stringify!($layer), "`].")]
        pub type $service<S> = $crate::runtime::layers::wrap_call::WrapCall<S, $layer>;
    };
}
pub(crate) use wrap_call_layer;

/// The service of [`HandlerTimeoutLayer`](crate::runtime::HandlerTimeoutLayer),
/// [`RetryDelayLayer`](crate::runtime::RetryDelayLayer),
/// [`LeaseLayer`](crate::runtime::LeaseLayer) and
/// [`CatchPanicLayer`](crate::runtime::CatchPanicLayer): the inner service
/// with the layer's settings.
#[derive(Debug, Clone)]
pub struct WrapCall<S, L> {
    inner: S,
    layer: L,
}

impl<S, L> WrapCall<S, L> {
    pub(crate) fn new(inner: S, layer: L) -> Self {
        WrapCall { inner, layer }
    }
}

impl<S, L> Service<Context> for WrapCall<S, L>
where
    S: Service<Context, Response = Outcome>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
    L: AroundCall,
{
    type Response = Outcome;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let inner = &mut self.inner;
        self.layer.around(ctx, |ctx| inner.call(ctx).map_err(Into::into))
    }
}
