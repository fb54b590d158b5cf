//! Counters of a running consumer, written by the runtime and its layers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a consumer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries handed back for a later retry.
    pub retried: u64,
    /// Deliveries sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Handler panics (each also counted as a retry or dead-letter).
    pub panicked: u64,
    /// Handler calls that ran out of time (each also a retry or dead-letter).
    pub timed_out: u64,
    /// Duplicates acknowledged by the idempotency layer without running the handler.
    pub duplicates: u64,
    /// Times a circuit breaker opened.
    pub breaker_opened: u64,
    /// Settlements that failed (the message comes back).
    pub settle_errors: u64,
    /// Errors from the subscription stream.
    pub receive_errors: u64,
}

macro_rules! counters {
    ($($field:ident => $bump:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $($field: AtomicU64,)*
        }

        impl Counters {
            $(pub(crate) fn $bump(&self) {
                self.$field.fetch_add(1, Relaxed);
            })*

            pub(crate) fn snapshot(&self) -> ConsumerStats {
                ConsumerStats {
                    $($field: self.$field.load(Relaxed),)*
                }
            }
        }
    };
}

counters! {
    received => received,
    acked => acked,
    retried => retried,
    dead_lettered => dead_lettered,
    panicked => panicked,
    timed_out => timed_out,
    duplicates => duplicate,
    breaker_opened => breaker_opened,
    settle_errors => settle_error,
    receive_errors => receive_error,
}
