//! End-to-end throughput and latency of the in-memory backend:
//! publish -> receive -> ack of 1 KiB messages, one publisher and one
//! consumer, single publishes and batches of 100.
//!
//! `cargo bench -p backend-memory --bench memory_throughput`
//! (`BENCH_MESSAGES=N` to change the count, `BENCH_ROUNDS=N` the rounds;
//! the best and the median round are printed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::{MemoryConfig, MemoryTransport};
use futures::StreamExt;
use transport_core::{Bytes, Message, SubscribeOptions};

const PAYLOAD: usize = 1024;
/// Every `SAMPLE`th message's latency is measured.
const SAMPLE: usize = 16;
/// The publisher stays at most this many messages ahead of the consumer, as
/// a producer with flow control would: latency then measures the path, not
/// an ever-growing queue.
const AHEAD: usize = 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let n = env("BENCH_MESSAGES", 2_000_000);
    let rounds = env("BENCH_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("in-memory backend, {n} messages of {PAYLOAD} bytes, publish -> receive -> ack, {rounds} rounds");
    for batch in [1usize, 100] {
        let mut results: Vec<Run> = (0..rounds).map(|_| rt.block_on(run(n, batch))).collect();
        results.sort_by_key(|r| r.elapsed);
        let (best, median) = (&results[0], &results[results.len() / 2]);
        println!(
            "  batch {batch:>3}: best {:>9.0} msg/s, median {:>9.0} msg/s; median round's latency p50 {:>8.1?} p99 {:>8.1?}",
            n as f64 / best.elapsed.as_secs_f64(),
            n as f64 / median.elapsed.as_secs_f64(),
            median.p50,
            median.p99
        );
    }
}

struct Run {
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn run(n: usize, batch: usize) -> Run {
    let t = Arc::new(MemoryTransport::with_config(MemoryConfig {
        replay_window: 1024,
        ..MemoryConfig::default()
    }));
    let mut sub = t
        .subscribe("bench", SubscribeOptions::new("g").max_in_flight(1024))
        .await
        .unwrap();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    // One publisher and one consumer of one topic without keys: the i-th
    // message received is the i-th sent, so send times are kept by index
    // instead of travelling in the message.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n.div_ceil(SAMPLE)).map(|_| AtomicU64::new(0)).collect());
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let publisher = {
        let (t, sent_at, received) = (t.clone(), sent_at.clone(), received.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                let k = batch.min(n - sent);
                let now = start.elapsed().as_nanos() as u64;
                for i in (sent..sent + k).filter(|i| i % SAMPLE == 0) {
                    sent_at[i / SAMPLE].store(now, Ordering::Relaxed);
                }
                if k == 1 {
                    t.publish("bench", Message::new(payload.clone())).await.unwrap();
                } else {
                    let msgs = (0..k).map(|_| Message::new(payload.clone())).collect();
                    t.publish_batch("bench", msgs).await.unwrap();
                }
                sent += k;
                while sent - received.load(Ordering::Relaxed) as usize > AHEAD {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(n / SAMPLE + 1);
    for i in 0..n {
        let d = sub.next().await.unwrap().unwrap();
        if i % SAMPLE == 0 {
            let sent = sent_at[i / SAMPLE].load(Ordering::Relaxed);
            latencies.push((start.elapsed().as_nanos() as u64).saturating_sub(sent));
        }
        d.ack().await.unwrap();
        if i % 64 == 0 {
            received.store(i as u64, Ordering::Relaxed);
        }
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    latencies.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(latencies[((latencies.len() - 1) as f64 * p) as usize]);
    Run {
        elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}
