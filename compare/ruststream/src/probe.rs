//! What both sides of a run share, so the workload is the same whichever
//! library carries it: the payload, the flow control of the publisher, the
//! count of handled messages and the latency samples.
//!
//! Latency travels in the message: the first 8 bytes of every payload are
//! the publish time (nanoseconds since the probe was made) and the next 8 its
//! sequence number. Sampling by index (as backend-memory's
//! `memory_throughput` bench does) needs the i-th message received to be the
//! i-th sent; RustStream has no batch publish, so its batches are 100
//! JetStream publishes in flight at once, which NATS may store in another
//! order, and a runtime with more than one handler call at a time finishes
//! messages out of order on either side. A stamp the handler reads is right
//! in every case.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::sync::Notify;

/// Bytes per message.
pub const PAYLOAD: usize = 1024;
/// Every `SAMPLE`th message (by sequence number) has its latency kept.
const SAMPLE: u64 = 16;
/// The publisher stays at most this many messages ahead of the handled
/// ones, as a producer with flow control would: latency then measures the
/// path, not a queue that grows for the whole run (RustStream's in-memory
/// broker queues without bound, ours up to `max_in_flight` plus its log).
const AHEAD: u64 = 1024;
/// The consumer wakes a held publisher every this many messages. A wake-up
/// rather than a `yield_now` loop: the machine has 2 cores, which a spinning
/// publisher would take from the broker (nats-server) and the consumer.
const WAKE_EVERY: u64 = 64;

/// One run's shared state: made before the run, read after it.
pub struct Probe {
    /// Time zero of the stamps (not of the throughput clock, which starts
    /// at the first publish).
    origin: Instant,
    n: u64,
    handled: AtomicU64,
    /// Latency + 1 in nanoseconds of every `SAMPLE`th message, 0 while not
    /// received.
    latencies: Vec<AtomicU64>,
    /// Rung every `WAKE_EVERY` handled messages, for a held publisher.
    advanced: Notify,
    /// Rung when the `n`th message was handled.
    done: Notify,
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Messages per second, first publish to the last message handled.
    pub rate: f64,
    /// Publish-to-receive latency, median of the sampled messages.
    pub p50: Duration,
    /// Publish-to-receive latency, 99th percentile of the sampled messages.
    pub p99: Duration,
}

impl Probe {
    /// A probe for a run of `n` messages.
    pub fn new(n: u64) -> Arc<Self> {
        Arc::new(Probe {
            origin: Instant::now(),
            n,
            handled: AtomicU64::new(0),
            latencies: (0..n.div_ceil(SAMPLE)).map(|_| AtomicU64::new(0)).collect(),
            advanced: Notify::new(),
            done: Notify::new(),
        })
    }

    /// Messages in the run.
    pub fn n(&self) -> u64 {
        self.n
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// A fresh 1 KiB payload for message `seq`, stamped now. Fresh on both
    /// sides, as a producer's payloads are: ours freezes it into the
    /// `Bytes` of a `Message`, RustStream takes the buffer as it is
    /// (`OutgoingMessage::produced`), neither copies it.
    pub fn payload(&self, seq: u64) -> BytesMut {
        let mut buf = BytesMut::with_capacity(PAYLOAD);
        buf.put_u64_le(self.now());
        buf.put_u64_le(seq);
        buf.resize(PAYLOAD, 7);
        buf
    }

    /// Called by the consumer for every message it received: the latency
    /// of a sampled one, the count, the wake-ups.
    pub fn received(&self, payload: &[u8]) {
        let now = self.now();
        let stamp = u64::from_le_bytes(payload[0..8].try_into().expect("a stamped payload"));
        let seq = u64::from_le_bytes(payload[8..16].try_into().expect("a stamped payload"));
        if seq % SAMPLE == 0 {
            if let Some(slot) = self.latencies.get((seq / SAMPLE) as usize) {
                slot.store(now.saturating_sub(stamp) + 1, Ordering::Relaxed);
            }
        }
        let handled = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if handled % WAKE_EVERY == 0 || handled == self.n {
            self.advanced.notify_one();
        }
        if handled == self.n {
            self.done.notify_one();
        }
    }

    /// Waits while the publisher, having sent `sent`, is more than `AHEAD`
    /// messages ahead of the consumer. (A publisher that waits is more than
    /// `WAKE_EVERY` ahead, so a wake-up is always coming.)
    pub async fn hold(&self, sent: u64) {
        while sent.saturating_sub(self.handled.load(Ordering::Acquire)) > AHEAD {
            self.advanced.notified().await;
        }
    }

    /// Resolves once `n` messages were handled.
    pub async fn finished(&self) {
        while self.handled.load(Ordering::Acquire) < self.n {
            self.done.notified().await;
        }
    }

    /// The run's throughput over `elapsed` and its latency percentiles.
    pub fn sample(&self, elapsed: Duration) -> Sample {
        let mut latencies: Vec<u64> = self
            .latencies
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .filter(|&l| l > 0)
            .map(|l| l - 1)
            .collect();
        latencies.sort_unstable();
        let pct = |p: f64| {
            let i = (latencies.len().saturating_sub(1) as f64 * p) as usize;
            latencies.get(i).map_or(Duration::ZERO, |&ns| Duration::from_nanos(ns))
        };
        Sample {
            rate: self.n as f64 / elapsed.as_secs_f64(),
            p50: pct(0.5),
            p99: pct(0.99),
        }
    }
}
