//! What a handler returns, and the handler trait with its closure impl.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::delivery::Received;

/// How a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying later (timeouts, unavailable dependencies).
    Transient,
    /// Retrying cannot help (malformed input): dead-letter at once.
    Permanent,
}

/// A handler's failure and its reason (which becomes the dead-letter reason).
///
/// Any error converts into a transient failure, so `?` works in handlers.
pub struct HandlerError {
    kind: Failure,
    reason: String,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(reason: impl fmt::Display) -> Self {
        HandlerError {
            kind: Failure::Transient,
            reason: reason.to_string(),
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        HandlerError {
            kind: Failure::Permanent,
            reason: reason.to_string(),
        }
    }

    /// Transient or permanent.
    pub fn kind(&self) -> Failure {
        self.kind
    }

    /// Why it failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.kind, self.reason)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::transient(e)
    }
}

/// Handles one message. Implemented for every
/// `Fn(Received) -> impl Future<Output = Result<(), HandlerError>>`.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handle one message.
    async fn handle(&self, message: Received) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(Received) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, message: Received) -> Result<(), HandlerError> {
        (self)(message).await
    }
}
