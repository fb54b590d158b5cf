//! The workload the backend benchmarks share: publish `n` messages in
//! batches while one subscription receives and acks each, measured end to
//! end. Each backend's bench runs it next to the same workload written
//! against its raw client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use transport_core::{Bytes, Message, SubscribeOptions, Transport};

/// Publish `n` messages of `size` bytes in batches of `batch` to a fresh
/// topic while one subscription (prefetch `max_in_flight`) receives and acks
/// them; the time from the first publish to the last ack.
pub async fn publish_consume_ack(
    t: Arc<dyn Transport>,
    n: usize,
    size: usize,
    batch: usize,
    max_in_flight: usize,
) -> Duration {
    let topic = crate::unique("bench");
    let mut sub = t
        .subscribe(&topic, SubscribeOptions::new("bench").max_in_flight(max_in_flight))
        .await
        .expect("subscribe");
    let payload = Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let publisher = {
        let (t, topic) = (t.clone(), topic.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                let k = batch.max(1).min(n - sent);
                let messages = (0..k).map(|_| Message::new(payload.clone())).collect();
                t.publish_batch(&topic, messages).await.expect("publish");
                sent += k;
            }
        })
    };
    for _ in 0..n {
        let d = sub.next().await.expect("subscription ended").expect("receive");
        d.ack().await.expect("ack");
    }
    let elapsed = start.elapsed();
    publisher.await.expect("publisher task");
    elapsed
}

/// Run a raw-client workload and the library workload side by side on a
/// 2-thread runtime and print both and their ratio. `BENCH_MESSAGES`
/// overrides `default_n`; `warm_up` messages go through each path first
/// (connections, scripts) when non-zero.
pub fn compare<R, RF, L, LF>(what: &str, default_n: usize, warm_up: usize, raw: R, library: L)
where
    R: Fn(usize) -> RF,
    RF: std::future::Future<Output = Duration>,
    L: Fn(usize) -> LF,
    LF: std::future::Future<Output = Duration>,
{
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if warm_up > 0 {
            raw(warm_up).await;
            library(warm_up).await;
        }
        let raw_t = raw(n).await;
        let lib_t = library(n).await;
        print_comparison(&format!("{what}, {n} messages"), n, raw_t, lib_t);
    });
}

/// Print raw and library throughput and their ratio.
pub fn print_comparison(what: &str, n: usize, raw: Duration, library: Duration) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{what}");
    println!("  raw client: {:>9.0} msg/s", rate(raw));
    println!("  transport:  {:>9.0} msg/s", rate(library));
    println!("  ratio:      {:>9.2}x", rate(library) / rate(raw));
}
