//! One error type for every backend: a [`ErrorKind`] to match on, a retryable
//! flag that retry layers trust, and the backend and operation that failed.

use std::error::Error as StdError;
use std::fmt;

use crate::operation::Operation;

/// What went wrong, independent of the broker.
///
/// Non-exhaustive: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend cannot do this operation (or not with these options).
    Unsupported,
    /// A topic or group name, option or URL is not acceptable.
    InvalidArgument,
    /// The message is larger than the backend accepts.
    MessageTooLarge,
    /// The broker refused the credentials: who this is was not accepted.
    Unauthorized,
    /// The broker or database knows who this is and refused the operation:
    /// a missing permission (an ACL, a vhost's permissions, a grant). The
    /// message names what was refused. Not retried: a permission is
    /// configuration.
    Forbidden,
    /// A topic, queue, group or stream does not exist (and is not created on demand).
    NotFound,
    /// The broker did not answer in time.
    Timeout,
    /// The connection dropped; the operation may or may not have happened.
    ConnectionLost,
    /// The transport or subscription was closed by the caller.
    Closed,
    /// The delivery was already redelivered (its ack timeout passed), so it can
    /// no longer be settled through this handle.
    DeliveryExpired,
    /// A received message or event could not be decoded.
    Decode,
    /// Some messages of a batch were not published (see the message for which).
    PartialFailure,
    /// A TLS handshake failed: the server's certificate is not trusted
    /// (unknown CA, expired, another host name), the server refused the
    /// client certificate or demanded one, or the other end does not speak
    /// TLS. A configuration error: never retried.
    Tls,
    /// Any other broker error.
    Backend,
}

impl ErrorKind {
    /// Whether an operation failing with this kind is worth retrying as is.
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::ConnectionLost | ErrorKind::PartialFailure
        )
    }

    /// A short stable name, used in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::MessageTooLarge => "message too large",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionLost => "connection lost",
            ErrorKind::Closed => "closed",
            ErrorKind::DeliveryExpired => "delivery expired",
            ErrorKind::Decode => "decode",
            ErrorKind::PartialFailure => "partial failure",
            ErrorKind::Tls => "tls",
            ErrorKind::Backend => "backend error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every operation in this library.
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    backend: &'static str,
    operation: Option<Operation>,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

/// Shorthand for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error; retryable according to [`ErrorKind::default_retryable`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            retryable: kind.default_retryable(),
            backend: "",
            operation: None,
            message: message.into(),
            source: None,
        }
    }

    /// `Unsupported`, naming the backend and the operation.
    pub fn unsupported(backend: &'static str, operation: Operation, why: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, why)
            .with_backend(backend)
            .with_operation(operation)
    }

    /// `InvalidArgument` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// Set the backend name (`"redis"`, `"memory"`, ...).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    /// Set the operation that failed.
    pub fn with_operation(mut self, operation: Operation) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Name the backend and operation unless the error already names them
    /// (an error from deeper down keeps the more precise context).
    pub(crate) fn in_context(mut self, backend: &'static str, operation: Operation) -> Self {
        if self.backend.is_empty() {
            self.backend = backend;
        }
        self.operation.get_or_insert(operation);
        self
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Override whether the error is retryable.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The backend that produced the error (empty when none is known).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The operation that failed, when known.
    pub fn operation(&self) -> Option<Operation> {
        self.operation
    }

    /// The message without backend, operation or kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.backend.is_empty() {
            write!(f, "{}: ", self.backend)?;
        }
        if let Some(operation) = self.operation {
            write!(f, "{operation} failed: ")?;
        }
        write!(f, "{} ({})", self.message, self.kind)?;
        if let Some(source) = &self.source {
            let text = source.to_string();
            if !text.is_empty() && !self.message.contains(&text) {
                write!(f, ": {text}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("backend", &self.backend)
            .field("operation", &self.operation)
            .field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_backend_operation_and_kind() {
        let e = Error::new(ErrorKind::Timeout, "no reply in 5s")
            .with_backend("redis")
            .with_operation(Operation::Publish);
        assert_eq!(e.to_string(), "redis: publish failed: no reply in 5s (timeout)");
        assert!(e.is_retryable());
        assert!(!Error::invalid("x").is_retryable());
        assert!(!e.with_retryable(false).is_retryable());
    }
}
