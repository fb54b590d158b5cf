//! Counters of a running consumer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a consumer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries acknowledged after success.
    pub acked: u64,
    /// Deliveries nacked for a later retry.
    pub retried: u64,
    /// Deliveries sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Handler panics (each also counted as a retry or dead-letter).
    pub panicked: u64,
    /// Settlements that failed (the message comes back).
    pub settle_errors: u64,
    /// Errors from the subscription stream.
    pub receive_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    panicked: AtomicU64,
    settle_errors: AtomicU64,
    receive_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }
    pub(crate) fn acked(&self) {
        self.acked.fetch_add(1, Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Relaxed);
    }
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }
    pub(crate) fn panicked(&self) {
        self.panicked.fetch_add(1, Relaxed);
    }
    pub(crate) fn settle_error(&self) {
        self.settle_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn receive_error(&self) {
        self.receive_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            received: self.received.load(Relaxed),
            acked: self.acked.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            settle_errors: self.settle_errors.load(Relaxed),
            receive_errors: self.receive_errors.load(Relaxed),
        }
    }
}
