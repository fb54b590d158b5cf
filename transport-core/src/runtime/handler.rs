//! Handlers: what a handler returns, and [`handler_fn`], which makes an async
//! closure a [`tower::Service`] the runtime can run.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tower::Service;

use super::context::Context;
use crate::settle::Outcome;

/// The error type tower layers use; the runtime accepts any service whose
/// error converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying later (timeouts, unavailable dependencies): the
    /// outcome is [`Outcome::Retry`](crate::Outcome::Retry).
    Retry,
    /// Retrying cannot help (malformed input): dead-letter at once.
    Permanent,
}

/// A handler's failure and its reason (which becomes the dead-letter reason).
///
/// Any error converts into a failure worth a retry, so `?` works in handlers;
/// [`permanent`](Self::permanent) marks what retrying cannot fix.
pub struct HandlerError {
    kind: Failure,
    reason: String,
    delay: Option<Duration>,
}

impl HandlerError {
    /// A failure worth retrying (after the retry layer's backoff).
    pub fn retry(reason: impl fmt::Display) -> Self {
        HandlerError {
            kind: Failure::Retry,
            reason: reason.to_string(),
            delay: None,
        }
    }

    /// A failure worth retrying, not before `delay` (a downstream said when:
    /// `Retry-After`, a rate limit window). The retry layer keeps this delay.
    pub fn retry_after(delay: Duration, reason: impl fmt::Display) -> Self {
        HandlerError {
            delay: Some(delay),
            ..HandlerError::retry(reason)
        }
    }

    /// A failure retrying cannot fix: the message is dead-lettered at once.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        HandlerError {
            kind: Failure::Permanent,
            reason: reason.to_string(),
            delay: None,
        }
    }

    /// Retry or permanent.
    pub fn kind(&self) -> Failure {
        self.kind
    }

    /// Why it failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The outcome this failure asks for.
    pub fn into_outcome(self) -> Outcome {
        match self.kind {
            Failure::Retry => Outcome::Retry {
                delay: self.delay,
                reason: self.reason,
            },
            Failure::Permanent => Outcome::DeadLetter { reason: self.reason },
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.kind, self.reason)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Failure::Retry => "retryable",
            Failure::Permanent => "permanent",
        };
        write!(f, "{kind} failure: {}", self.reason)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retry(e)
    }
}

/// The outcome of a service call: `Ok` is the service's own outcome; an
/// error (a tower layer's timeout, overload or a broken service) is a
/// failure worth a retry with the error as its reason.
pub fn outcome_of<E: Into<BoxError>>(result: Result<Outcome, E>) -> Outcome {
    match result {
        Ok(outcome) => outcome,
        Err(e) => {
            let e: BoxError = e.into();
            Outcome::retry(e.to_string())
        }
    }
}

/// What a handler closure may return: `Result<(), HandlerError>` (or any
/// error convertible into [`HandlerError`]), or an [`Outcome`] directly.
pub trait IntoOutcome {
    /// The outcome.
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl<E: Into<HandlerError>> IntoOutcome for Result<(), E> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(()) => Outcome::Ack,
            Err(e) => e.into().into_outcome(),
        }
    }
}

/// An async closure as a [`Service`]: `Ok(())` acks, a [`HandlerError`]
/// retries or dead-letters. See [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

/// Make an async closure taking a [`Context`] the innermost service of a
/// consumer stack.
///
/// ```no_run
/// use transport_core::runtime::{handler_fn, Context, HandlerError};
///
/// let handler = handler_fn(|ctx: Context| async move {
///     if ctx.payload().is_empty() {
///         return Err(HandlerError::permanent("empty order"));
///     }
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut, R>(f: F) -> HandlerFn<F>
where
    F: Fn(Context) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoOutcome,
{
    HandlerFn { f }
}

impl<F, Fut, R> Service<Context> for HandlerFn<F>
where
    F: Fn(Context) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoOutcome,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        (self.f)(ctx).map(|r| Ok(r.into_outcome())).boxed()
    }
}

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_outcomes() {
        assert_eq!(Ok::<(), HandlerError>(()).into_outcome(), Outcome::Ack);
        assert_eq!(
            Err::<(), _>(HandlerError::permanent("bad")).into_outcome(),
            Outcome::dead_letter("bad")
        );
        assert_eq!(
            Err::<(), _>(HandlerError::retry_after(Duration::from_secs(2), "429")).into_outcome(),
            Outcome::retry_after(Duration::from_secs(2), "429")
        );
        let io = std::io::Error::other("connection reset");
        assert_eq!(Err::<(), _>(io).into_outcome(), Outcome::retry("connection reset"));
        let boxed: Result<Outcome, BoxError> = Err("overloaded".into());
        assert_eq!(outcome_of(boxed), Outcome::retry("overloaded"));
    }
}
