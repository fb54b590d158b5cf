//! Whether a transport was closed, shared by the wrapper (which refuses
//! calls after `close`) and a backend's read loops (which end then), and
//! settling a delivery its holder dropped.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a transport was closed.
#[derive(Debug, Default)]
pub struct Lifecycle {
    closed: AtomicBool,
}

impl Lifecycle {
    /// An open transport.
    pub(crate) fn new() -> Self {
        Lifecycle::default()
    }

    /// Mark closed; returns whether it was open.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Whether it was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
