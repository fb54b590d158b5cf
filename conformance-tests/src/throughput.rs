//! The workloads the backend benchmarks share: publish `n` messages while
//! one subscription receives and acks each, measured end to end, or the
//! publishing alone. Each backend's bench runs them next to the same
//! workload written against its raw client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use transport_core::{Bytes, Message, SubscribeOptions, Subscription, Transport};

/// How the publisher sends.
#[derive(Debug, Clone, Copy)]
pub enum Publishing {
    /// `publish_batch` calls of this many messages, one after the other
    /// (each waits for its confirms where the backend has them).
    Batches(usize),
    /// One `publish` per message, this many calls in flight at once (a
    /// service answering many requests, or a loader that pipelines): shows
    /// how well concurrent publishes share the connection.
    Window(usize),
}

/// What is timed.
#[derive(Debug, Clone, Copy)]
pub enum Timed {
    /// From the first publish to the last ack, the subscription consuming
    /// while the publisher publishes.
    EndToEnd,
    /// Until the last publish returned (confirmed, on backends with
    /// confirms); the messages are consumed afterwards, untimed, so the
    /// broker is left as it was found.
    PublishingOnly,
}

/// Publish `n` messages of `size` bytes to a fresh topic with one group
/// (prefetch `max_in_flight`) as `publishing` says, and time what `timed`
/// says.
pub async fn measure(
    t: Arc<dyn Transport>,
    n: usize,
    size: usize,
    publishing: Publishing,
    timed: Timed,
    max_in_flight: usize,
) -> Duration {
    let topic = crate::unique("bench");
    let mut sub = t
        .subscribe(&topic, SubscribeOptions::new("bench").max_in_flight(max_in_flight))
        .await
        .expect("subscribe");
    let payload = Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let publisher = tokio::spawn(publish_all(t, topic, n, payload, publishing));
    match timed {
        Timed::EndToEnd => {
            drain(&mut sub, n).await;
            let elapsed = start.elapsed();
            publisher.await.expect("publisher task");
            elapsed
        }
        Timed::PublishingOnly => {
            publisher.await.expect("publisher task");
            let elapsed = start.elapsed();
            drain(&mut sub, n).await;
            elapsed
        }
    }
}

/// [`measure`] end to end with batches: the workload every backend's bench
/// compares with its raw client.
pub async fn publish_consume_ack(
    t: Arc<dyn Transport>,
    n: usize,
    size: usize,
    batch: usize,
    max_in_flight: usize,
) -> Duration {
    measure(t, n, size, Publishing::Batches(batch), Timed::EndToEnd, max_in_flight).await
}

async fn publish_all(t: Arc<dyn Transport>, topic: String, n: usize, payload: Bytes, publishing: Publishing) {
    match publishing {
        Publishing::Batches(batch) => {
            let mut sent = 0;
            while sent < n {
                let k = batch.max(1).min(n - sent);
                let messages = (0..k).map(|_| Message::new(payload.clone())).collect();
                t.publish_batch(&topic, messages).await.expect("publish");
                sent += k;
            }
        }
        Publishing::Window(window) => {
            futures::stream::iter(0..n)
                .map(|_| t.publish(&topic, Message::new(payload.clone())))
                .buffer_unordered(window.max(1))
                .for_each(|r| {
                    r.expect("publish");
                    std::future::ready(())
                })
                .await
        }
    }
}

/// Receive and ack `n` deliveries.
async fn drain(sub: &mut Subscription, n: usize) {
    for _ in 0..n {
        let d = sub.next().await.expect("subscription ended").expect("receive");
        d.ack().await.expect("ack");
    }
}

/// Run a raw-client workload and the library workload side by side on a
/// 2-thread runtime and print both and their ratio. `BENCH_MESSAGES`
/// overrides `default_n`; `warm_up` messages go through each path first
/// (connections, scripts) when non-zero. `BENCH_ROUNDS` (default 1) runs the
/// pair that many times (default 6), alternating which goes first (raw,
/// library, library, raw, ...), and compares the totals: with an even
/// count, a broker that slows steadily as it fills favours neither side.
/// The spread of the per-round ratios is printed too: on one machine the
/// broker shares the cores with the bench, and a single round can be off by
/// 10-20 %, so a ratio means something only beside its spread.
pub fn compare<R, RF, L, LF>(what: &str, default_n: usize, warm_up: usize, raw: R, library: L)
where
    R: Fn(usize) -> RF,
    RF: std::future::Future<Output = Duration>,
    L: Fn(usize) -> LF,
    LF: std::future::Future<Output = Duration>,
{
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let n = env("BENCH_MESSAGES", default_n);
    let rounds = env("BENCH_ROUNDS", 6).max(1);
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
        let (mut raw_ts, mut lib_ts) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            // Alternate which goes first, so a broker that slows as it
            // fills does not always favour the same side.
            let (r, l) = if round % 2 == 1 {
                let r = raw(n).await;
                (r, library(n).await)
            } else {
                let l = library(n).await;
                (raw(n).await, l)
            };
            if rounds > 1 {
                let rate = |d: Duration| n as f64 / d.as_secs_f64();
                println!(
                    "  round {round}: raw {:.0} msg/s, transport {:.0} msg/s",
                    rate(r),
                    rate(l)
                );
            }
            raw_ts.push(r);
            lib_ts.push(l);
        }
        let label = match rounds {
            1 => format!("{what}, {n} messages"),
            _ => format!("{what}, {rounds} rounds of {n} messages"),
        };
        let total = |ts: &[Duration]| ts.iter().sum::<Duration>();
        print_comparison(&label, n * rounds, total(&raw_ts), total(&lib_ts));
        if rounds > 2 {
            // Library rate over raw rate in each round = raw time over library time.
            let mut ratios: Vec<f64> = raw_ts
                .iter()
                .zip(&lib_ts)
                .map(|(r, l)| r.as_secs_f64() / l.as_secs_f64())
                .collect();
            ratios.sort_by(f64::total_cmp);
            let median = (ratios[(rounds - 1) / 2] + ratios[rounds / 2]) / 2.0;
            println!(
                "  per round:  median {median:.2}x, from {:.2}x to {:.2}x",
                ratios[0],
                ratios[rounds - 1]
            );
        }
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
