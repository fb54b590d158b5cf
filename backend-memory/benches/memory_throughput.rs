//! End-to-end throughput and latency of the in-memory backend:
//! publish -> receive -> ack, single publishes and batches.
//!
//! `cargo bench -p backend-memory --bench memory_throughput`
//! (`BENCH_MESSAGES=N` to change the count).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::MemoryTransport;
use futures::StreamExt;
use transport_core::{Message, Publisher, SubscribeOptions, Subscriber};

const PAYLOAD: usize = 128;

fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("in-memory backend, {n} messages of {PAYLOAD} bytes, publish -> receive -> ack");
    for batch in [1usize, 100] {
        let (elapsed, p50, p99) = rt.block_on(run(n, batch));
        println!(
            "  batch {batch:>3}: {:>10.0} msg/s end to end, latency p50 {:>8.1?} p99 {:>8.1?}",
            n as f64 / elapsed.as_secs_f64(),
            p50,
            p99
        );
    }
}

async fn run(n: usize, batch: usize) -> (Duration, Duration, Duration) {
    let t = Arc::new(MemoryTransport::builder().replay_window(1024).build());
    let mut sub = t
        .subscribe("bench", SubscribeOptions::new("g").max_in_flight(1024))
        .await
        .unwrap();
    let payload = transport_core::Bytes::from(vec![7u8; PAYLOAD]);
    let start = Instant::now();
    let publisher = {
        let t = t.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                let k = batch.min(n - sent);
                // The id carries the send time (nanoseconds since start) so the
                // consumer can measure latency without a side table.
                let now = start.elapsed().as_nanos();
                if k == 1 {
                    t.publish("bench", Message::new(payload.clone()).with_id(now.to_string()))
                        .await
                        .unwrap();
                } else {
                    let msgs = (0..k)
                        .map(|_| Message::new(payload.clone()).with_id(now.to_string()))
                        .collect();
                    t.publish_batch("bench", msgs).await.unwrap();
                }
                sent += k;
                if sent % 4096 < k {
                    // Let the consumer run on a busy runtime; keeps memory flat.
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(n / 64 + 1);
    for i in 0..n {
        let d = sub.next().await.unwrap().unwrap();
        if i % 64 == 0 {
            let sent: u128 = d.id().parse().unwrap();
            latencies.push(start.elapsed().as_nanos().saturating_sub(sent) as u64);
        }
        d.ack().await.unwrap();
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    latencies.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(latencies[((latencies.len() - 1) as f64 * p) as usize]);
    (elapsed, pct(0.5), pct(0.99))
}
