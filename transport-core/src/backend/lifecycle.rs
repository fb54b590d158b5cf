//! The closed guard every transport needs, error tagging with the backend's
//! name, and settling a delivery its holder dropped.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::names::validate_topic;

/// Whether a transport was closed, and the backend name errors carry.
#[derive(Debug)]
pub struct Lifecycle {
    backend: &'static str,
    closed: AtomicBool,
}

impl Lifecycle {
    /// An open transport of `backend`.
    pub fn new(backend: &'static str) -> Self {
        Lifecycle {
            backend,
            closed: AtomicBool::new(false),
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// `Closed` once [`close`](Self::close) was called.
    pub fn check(&self, operation: &'static str) -> Result<()> {
        if self.is_closed() {
            return Err(self.error(ErrorKind::Closed, operation, "the transport was closed"));
        }
        Ok(())
    }

    /// Mark closed; returns whether it was open.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Whether it was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// What every publish checks before anything reaches the broker: the
    /// transport is open, the topic name is valid, and every message is
    /// valid and at most `max_size` bytes (all of a batch before any of
    /// it is sent). Errors are tagged with the backend and `operation`.
    pub fn check_publish(
        &self,
        operation: &'static str,
        topic: &str,
        messages: &[Message],
        max_size: usize,
    ) -> Result<()> {
        self.check(operation)?;
        let tag = self.tag(operation);
        validate_topic(topic).map_err(&tag)?;
        for m in messages {
            m.validate().map_err(&tag)?;
            m.check_size(max_size).map_err(&tag)?;
        }
        Ok(())
    }

    /// Tag an error with this backend and `operation` (for `map_err`).
    pub fn tag(&self, operation: &'static str) -> impl Fn(Error) -> Error {
        let backend = self.backend;
        move |e| e.with_backend(backend).with_operation(operation)
    }

    /// A new error of `kind` from this backend's `operation`.
    pub fn error(&self, kind: ErrorKind, operation: &'static str, message: impl Into<String>) -> Error {
        Error::new(kind, message)
            .with_backend(self.backend)
            .with_operation(operation)
    }
}

/// Run `settle` in the background if a tokio runtime is there; used by a
/// settler's `Drop` to hand an unsettled delivery back at once. Without a
/// runtime the broker's ack timeout brings it back later.
pub fn on_drop(settle: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(settle);
    }
}
