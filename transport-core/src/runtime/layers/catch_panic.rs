//! A panic in the handler is a failure worth a retry with the panic message as
//! its reason, so retries and the dead-letter reason show it.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::task::{Context as TaskContext, Poll};

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

use crate::runtime::handler::BoxError;
use crate::runtime::Context;
use crate::settle::Outcome;

/// Catches panics of the services inside it. Put it innermost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// The service of [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> Service<Context> for CatchPanic<S>
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
        let counters = ctx.counters.clone();
        // A closure handler panics in `call` itself, before any future exists.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(ctx))) {
            Ok(future) => async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(result) => result.map_err(Into::into),
                    Err(panic) => {
                        counters.panicked();
                        Ok(Outcome::retry(panic_reason(panic.as_ref())))
                    }
                }
            }
            .boxed(),
            Err(panic) => {
                counters.panicked();
                let outcome = Outcome::retry(panic_reason(panic.as_ref()));
                async move { Ok(outcome) }.boxed()
            }
        }
    }
}

/// "handler panicked: <message>".
pub(crate) fn panic_reason(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %text, "handler panicked");
    format!("handler panicked: {text}")
}
