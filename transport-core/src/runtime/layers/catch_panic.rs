//! A panic in the handler is a failure worth a retry with the panic message as
//! its reason, so retries and the dead-letter reason show it.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::future::FutureExt;

use super::wrap_call::{wrap_call_layer, AroundCall, CallFuture, InnerCall};

use crate::runtime::Context;
use crate::settle::Outcome;

/// Catches panics of the services inside it. Put it innermost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

wrap_call_layer!(CatchPanicLayer => CatchPanic);

impl AroundCall for CatchPanicLayer {
    fn around<F: InnerCall>(&self, ctx: Context, next: impl FnOnce(Context) -> F) -> CallFuture {
        let counters = ctx.counters.clone();
        // A closure handler panics in `call` itself, before any future exists.
        match std::panic::catch_unwind(AssertUnwindSafe(|| next(ctx))) {
            Ok(future) => async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(result) => result,
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
