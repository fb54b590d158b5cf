//! Counters of a running consumer, written by the runtime and its layers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use crate::telemetry::names::*;

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
    ($($field:ident => $bump:ident : $metric:expr, [$($label:expr),*]),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $($field: AtomicU64,)*
            /// The same counts as metrics, labelled with the consumer's
            /// backend, topic and group once it runs.
            meters: OnceLock<Meters>,
        }

        #[derive(Debug)]
        struct Meters {
            $($field: metrics::Counter,)*
            process: metrics::Histogram,
            breaker: metrics::Gauge,
        }

        impl Counters {
            $(pub(crate) fn $bump(&self) {
                self.$field.fetch_add(1, Relaxed);
                if let Some(m) = self.meters.get() {
                    m.$field.increment(1);
                }
            })*

            /// Register the metrics, labelled (once: a consumer runs once).
            /// Metrics count from here, in whatever recorder the
            /// application installed before.
            pub(crate) fn attach(&self, system: &'static str, topic: &str, group: &str) {
                let base = [
                    (SYSTEM, system.to_owned()),
                    (DESTINATION, topic.to_owned()),
                    (GROUP, group.to_owned()),
                ];
                let with = |extra: &[(&'static str, &'static str)]| {
                    let mut labels: Vec<metrics::Label> =
                        base.iter().map(|(k, v)| metrics::Label::new(*k, v.clone())).collect();
                    labels.extend(extra.iter().map(|(k, v)| metrics::Label::new(*k, *v)));
                    labels
                };
                let _ = self.meters.set(Meters {
                    $($field: metrics::counter!($metric, with(&[$($label),*])),)*
                    process: metrics::histogram!(PROCESS_DURATION, with(&[])),
                    breaker: metrics::gauge!(BREAKER_STATE, with(&[])),
                });
            }

            /// A handler call took `took`.
            pub(crate) fn processed(&self, took: Duration) {
                if let Some(m) = self.meters.get() {
                    m.process.record(took.as_secs_f64());
                }
            }

            /// A circuit breaker's state after a call: 0 closed, 1 open, 2 half-open.
            pub(crate) fn breaker_state(&self, state: f64) {
                if let Some(m) = self.meters.get() {
                    m.breaker.set(state);
                }
            }

            pub(crate) fn snapshot(&self) -> ConsumerStats {
                ConsumerStats {
                    $($field: self.$field.load(Relaxed),)*
                }
            }
        }
    };
}

counters! {
    received => received: CONSUMED_MESSAGES, [],
    acked => acked: SETTLED_MESSAGES, [(OUTCOME, "ack")],
    retried => retried: SETTLED_MESSAGES, [(OUTCOME, "retry")],
    dead_lettered => dead_lettered: SETTLED_MESSAGES, [(OUTCOME, "dead_letter")],
    panicked => panicked: HANDLER_FAILURES, [(FAILURE, "panic")],
    timed_out => timed_out: HANDLER_FAILURES, [(FAILURE, "timeout")],
    duplicates => duplicate: DUPLICATES, [],
    breaker_opened => breaker_opened: BREAKER_OPENED, [],
    settle_errors => settle_error: SETTLED_MESSAGES, [(OUTCOME, "error")],
    receive_errors => receive_error: RECEIVE_ERRORS, [],
}
