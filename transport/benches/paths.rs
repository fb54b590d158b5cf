//! Throughput of the paths a service takes, each beside its limit, in
//! alternating rounds of one process (so a noisy machine slows them all
//! alike): the median of the rounds and their spread.
//!
//! - `mpsc`: a bare `tokio::sync::mpsc` hand-off of the same messages, the
//!   physical limit of an in-process broker (memory:// only).
//! - `connect`: [`transport::connect`], publish -> subscription -> ack, one
//!   publisher and one consumer, single publishes and batches of 100.
//!   With batches, the consumer side is the bare subscription loop
//!   (receive, ack): the limit of the consumer runtime.
//! - `runtime/none`, `runtime/default`, `runtime/full`: the `Consumer`
//!   runtime behind the same publisher, with no layers, the default layers
//!   (`run_fn`: retry delays, panic catching) and the README's full stack
//!   (retry delays, lease, breaker, idempotency on the in-memory store,
//!   handler timeout, panic catching).
//! - `keys`/`concurrency`: the default stack with 1, 16 and 256 ordering
//!   keys (16 handler calls at a time), and with 1 and 64 handler calls at
//!   a time (256 keys), each beside the bare loop over the same keys
//!   (`connect/keysN`: a backend that keeps per-key order across
//!   consumers hands out one message of a key at a time).
//!
//! ```text
//! cargo bench -p transport --bench paths                      memory://
//! TRANSPORT_URL=nats://127.0.0.1:4222 cargo bench -p transport --all-features --bench paths
//! ```
//! `BENCH_MESSAGES` (default 200000 on memory://, 20000 on a broker) and
//! `BENCH_ROUNDS` (default 5) change the size; `BENCH_ONLY=runtime` runs
//! only the workloads whose name contains it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use transport::runtime::{
    handler_fn, BreakerConfig, CatchPanicLayer, CircuitBreakerLayer, Consumer, Context, HandlerTimeoutLayer,
    IdempotencyLayer, LeaseLayer, MemoryIdempotencyStore, RetryDelayLayer, RetryPolicy,
};
use transport::{Bytes, Message, SubscribeOptions, Transport};

const PAYLOAD: usize = 1024;
/// The bare subscription loop (receive, ack) behind a publisher of batches
/// of 100: what the runtime's workloads are measured against.
const LOOP: &str = "connect/batch100";
/// The publisher stays at most this many messages ahead of the acks, as a
/// producer with flow control would.
const AHEAD: u64 = 2048;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One workload: its name, the name of its limit, and how to run it.
struct Workload {
    name: &'static str,
    limit: Option<&'static str>,
    run: Run,
}

#[derive(Clone, Copy)]
enum Run {
    Mpsc {
        batch: usize,
    },
    Connect {
        batch: usize,
        keys: usize,
    },
    Runtime {
        stack: Stack,
        keys: usize,
        concurrency: usize,
    },
}

#[derive(Clone, Copy)]
enum Stack {
    None,
    Default,
    Full,
}

fn workloads(memory: bool) -> Vec<Workload> {
    let w = |name, limit, run| Workload { name, limit, run };
    let rt = |stack, keys, concurrency| Run::Runtime {
        stack,
        keys,
        concurrency,
    };
    let mut all = Vec::new();
    if memory {
        all.push(w("mpsc", None, Run::Mpsc { batch: 1 }));
        all.push(w("mpsc/batch100", None, Run::Mpsc { batch: 100 }));
    }
    let limit = |l| memory.then_some(l);
    all.extend([
        w("connect", limit("mpsc"), Run::Connect { batch: 1, keys: 0 }),
        w(
            "connect/batch100",
            limit("mpsc/batch100"),
            Run::Connect { batch: 100, keys: 0 },
        ),
        w("connect/keys1", None, Run::Connect { batch: 100, keys: 1 }),
        w("connect/keys16", None, Run::Connect { batch: 100, keys: 16 }),
        w("connect/keys256", None, Run::Connect { batch: 100, keys: 256 }),
        w("runtime/none", Some(LOOP), rt(Stack::None, 0, 16)),
        w("runtime/default", Some(LOOP), rt(Stack::Default, 0, 16)),
        w("runtime/full", Some(LOOP), rt(Stack::Full, 0, 16)),
        w("keys/1", Some("connect/keys1"), rt(Stack::Default, 1, 16)),
        w("keys/16", Some("connect/keys16"), rt(Stack::Default, 16, 16)),
        w("keys/256", Some("connect/keys256"), rt(Stack::Default, 256, 16)),
        w("concurrency/1", Some("connect/keys256"), rt(Stack::Default, 256, 1)),
        w("concurrency/64", Some("connect/keys256"), rt(Stack::Default, 256, 64)),
    ]);
    all
}

fn main() {
    let url = env("TRANSPORT_URL").unwrap_or_else(|| "memory://".into());
    let memory = url.starts_with("memory:");
    let n: u64 = env("BENCH_MESSAGES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if memory { 200_000 } else { 20_000 });
    let rounds: usize = env("BENCH_ROUNDS").and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let only = env("BENCH_ONLY");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let broker = runtime.block_on(transport::connect(&url)).expect("connects");
    let workloads: Vec<Workload> = workloads(memory)
        .into_iter()
        .filter(|w| only.as_deref().is_none_or(|o| w.name.contains(o)))
        .collect();
    println!(
        "{}: {n} messages of {PAYLOAD} bytes per run, {rounds} alternating rounds (median, min-max)",
        broker.backend()
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for round in 0..rounds {
        for (i, w) in workloads.iter().enumerate() {
            let topic = format!("bench-paths-{}-{round}-{i}", std::process::id());
            let seconds = runtime.block_on(run(&broker, &topic, n, w.run));
            rates[i].push(n as f64 / seconds);
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    println!(
        "{:<20} {:>12} {:>22} {:>16}",
        "workload", "msg/s", "spread", "vs its limit"
    );
    for (i, w) in workloads.iter().enumerate() {
        let (lo, hi) = spread(&rates[i]);
        let ratio = w
            .limit
            .and_then(|l| workloads.iter().position(|o| o.name == l))
            .map(|j| format!("{:.2}x {}", medians[i] / medians[j], workloads[j].name))
            .unwrap_or_default();
        println!(
            "{:<20} {:>12.0} {:>10.0}-{:<11.0} {:>16}",
            w.name, medians[i], lo, hi, ratio
        );
    }
    let _ = runtime.block_on(broker.close());
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    (lo, hi)
}

fn message(payload: &Bytes, i: u64, keys: usize) -> Message {
    let m = Message::new(payload.clone());
    match keys {
        0 => m,
        keys => m.with_key(format!("k{}", i % keys as u64)),
    }
}

/// Seconds from the first publish to the last message settled.
async fn run(broker: &Arc<dyn Transport>, topic: &str, n: u64, run: Run) -> f64 {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let options = SubscribeOptions::new("bench").max_in_flight(1024);
    let done = Arc::new(AtomicU64::new(0));
    match run {
        Run::Mpsc { batch } => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Message>>(AHEAD as usize / batch);
            let start = Instant::now();
            let publisher = tokio::spawn(async move {
                let mut sent = 0;
                while sent < n {
                    let k = (batch as u64).min(n - sent);
                    let msgs = (sent..sent + k).map(|i| message(&payload, i, 0)).collect();
                    tx.send(msgs).await.expect("the receiver waits");
                    sent += k;
                }
            });
            let mut received = 0;
            while received < n {
                let batch = rx.recv().await.expect("the sender sends n");
                received += batch.len() as u64;
                drop(batch);
            }
            let seconds = start.elapsed().as_secs_f64();
            publisher.await.expect("the publisher finished");
            seconds
        }
        Run::Connect { batch, keys } => {
            let mut sub = broker.subscribe(topic, options).await.expect("subscribed");
            let start = Instant::now();
            let publisher = publish(broker.clone(), topic.into(), n, batch, keys, done.clone());
            for _ in 0..n {
                let d = sub.next().await.expect("a delivery").expect("received");
                d.ack().await.expect("acked");
                done.fetch_add(1, Ordering::Relaxed);
            }
            let seconds = start.elapsed().as_secs_f64();
            publisher.await.expect("the publisher finished");
            seconds
        }
        Run::Runtime {
            stack,
            keys,
            concurrency,
        } => {
            // The group exists before the first publish, as with the loop.
            drop(broker.subscribe(topic, options.clone()).await.expect("subscribed"));
            let finished = Arc::new(Notify::new());
            let consumer = Consumer::new(broker.clone(), topic, options).concurrency(concurrency);
            let (count, all_done) = (done.clone(), finished.clone());
            let handler = move |_ctx: Context| {
                let (count, all_done) = (count.clone(), all_done.clone());
                async move {
                    if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        all_done.notify_one();
                    }
                    Ok::<(), transport::runtime::HandlerError>(())
                }
            };
            let stop = finished.clone();
            let shutdown = async move { stop.notified().await };
            let start = Instant::now();
            let publisher = publish(broker.clone(), topic.into(), n, 100, keys, done.clone());
            let stats = match stack {
                Stack::None => {
                    let service = handler_fn(handler);
                    consumer.run(service, shutdown).await
                }
                Stack::Default => consumer.run_fn(handler, shutdown).await,
                Stack::Full => {
                    let service = tower::ServiceBuilder::new()
                        .layer(RetryDelayLayer::new(RetryPolicy::default()))
                        .layer(LeaseLayer::new())
                        .layer(CircuitBreakerLayer::new(
                            BreakerConfig::consecutive_failures(5).open_for(Duration::from_secs(10)),
                        ))
                        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
                        .layer(HandlerTimeoutLayer::new(Duration::from_secs(10)))
                        .layer(CatchPanicLayer)
                        .service(handler_fn(handler));
                    consumer.run(service, shutdown).await
                }
            }
            .expect("the consumer ran");
            let seconds = start.elapsed().as_secs_f64();
            publisher.await.expect("the publisher finished");
            assert!(stats.acked >= n, "every message acked ({} of {n})", stats.acked);
            seconds
        }
    }
}

/// Publishes `n` messages in batches of `batch`, at most [`AHEAD`] ahead
/// of `done`.
fn publish(
    broker: Arc<dyn Transport>,
    topic: String,
    n: u64,
    batch: usize,
    keys: usize,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < n {
            let k = (batch as u64).min(n - sent);
            if k == 1 {
                broker
                    .publish(&topic, message(&payload, sent, keys))
                    .await
                    .expect("published");
            } else {
                let msgs = (sent..sent + k).map(|i| message(&payload, i, keys)).collect();
                broker.publish_batch(&topic, msgs).await.expect("published");
            }
            sent += k;
            while sent - done.load(Ordering::Relaxed) > AHEAD {
                tokio::task::yield_now().await;
            }
        }
    })
}
