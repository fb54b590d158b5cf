//! Per-subscription flow control shared by backends: how many deliveries a
//! subscription holds unsettled, and waiting for a slot to free up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts a subscription's unsettled deliveries against its `max_in_flight`.
#[derive(Debug)]
pub struct InFlightLimit {
    max: usize,
    outstanding: AtomicUsize,
    released: Notify,
}

impl InFlightLimit {
    /// A limit of `max` unsettled deliveries.
    pub fn new(max: usize) -> Self {
        InFlightLimit {
            max,
            outstanding: AtomicUsize::new(0),
            released: Notify::new(),
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.max.saturating_sub(self.outstanding.load(Ordering::Acquire))
    }

    /// `n` deliveries were handed out.
    pub fn taken(&self, n: usize) {
        self.outstanding.fetch_add(n, Ordering::AcqRel);
    }

    /// One delivery was settled (or given up).
    pub fn release(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.released.notify_one();
    }

    /// Wait until a slot is free, or `at_most` passed (so callers can also
    /// notice other changes, such as a closed transport).
    pub async fn wait_for_slot(&self, at_most: Duration) {
        if self.free() == 0 {
            let _ = tokio::time::timeout(at_most, self.released.notified()).await;
        }
    }
}
