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
//! Where one consumer reads messages without keys in order (`mpsc`,
//! `connect`), every 16th message's publish-to-receipt time is kept and the
//! median round's p50 and p99 printed.
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
use std::time::Instant;

use futures::StreamExt;
use support::full_stack;
use tokio::sync::Notify;
use transport::runtime::{handler_fn, Consumer, Context};
use transport::{Bytes, Message, SubscribeOptions, Transport};

#[path = "support/full_stack.rs"]
mod support;

const PAYLOAD: usize = 1024;
/// The bare subscription loop (receive, ack) behind a publisher of batches
/// of 100: what the runtime's workloads are measured against.
const LOOP: &str = "connect/batch100";
/// The publisher stays at most this many messages ahead of the acks, as a
/// producer with flow control would.
const AHEAD: u64 = 2048;

/// Every `SAMPLE`th message's publish-to-receipt time is kept.
const SAMPLE: u64 = 16;

/// Send times of every `SAMPLE`th message, by index: with one consumer and
/// no keys the i-th message received is the i-th sent, so no time travels
/// in the message.
struct Latency {
    start: Instant,
    sent: Vec<AtomicU64>,
    seen: std::sync::Mutex<Vec<u64>>,
}

impl Latency {
    fn new(n: u64) -> Arc<Self> {
        Arc::new(Latency {
            start: Instant::now(),
            sent: (0..n.div_ceil(SAMPLE)).map(|_| AtomicU64::new(0)).collect(),
            seen: std::sync::Mutex::new(Vec::with_capacity((n / SAMPLE) as usize + 1)),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn sending(&self, first: u64, count: u64) {
        let now = self.now();
        for i in (first..first + count).filter(|i| i % SAMPLE == 0) {
            self.sent[(i / SAMPLE) as usize].store(now, Ordering::Relaxed);
        }
    }

    fn received(&self, i: u64) {
        if i % SAMPLE == 0 {
            let sent = self.sent[(i / SAMPLE) as usize].load(Ordering::Relaxed);
            let took = self.now().saturating_sub(sent);
            self.seen.lock().expect("not poisoned").push(took);
        }
    }

    /// p50 and p99 in microseconds.
    fn percentiles(&self) -> (f64, f64) {
        let mut seen = self.seen.lock().expect("not poisoned").clone();
        seen.sort_unstable();
        let at = |p: f64| {
            seen.get(((seen.len().max(1) - 1) as f64 * p) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1e3
        };
        (at(0.5), at(0.99))
    }
}

/// What one run measured.
struct Measured {
    seconds: f64,
    /// p50 and p99 publish-to-receipt in microseconds, where measured.
    latency: Option<(f64, f64)>,
}

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
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for round in 0..rounds {
        for (i, w) in workloads.iter().enumerate() {
            let topic = format!("bench-paths-{}-{round}-{i}", std::process::id());
            let measured = runtime.block_on(run(&broker, &topic, n, w.run));
            rates[i].push(n as f64 / measured.seconds);
            if let Some((p50, p99)) = measured.latency {
                p50s[i].push(p50);
                p99s[i].push(p99);
            }
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    println!(
        "{:<20} {:>12} {:>22} {:>22} {:>20}",
        "workload", "msg/s", "spread", "vs its limit", "latency p50 / p99"
    );
    for (i, w) in workloads.iter().enumerate() {
        let (lo, hi) = spread(&rates[i]);
        let ratio = w
            .limit
            .and_then(|l| workloads.iter().position(|o| o.name == l))
            .map(|j| format!("{:.2}x {}", medians[i] / medians[j], workloads[j].name))
            .unwrap_or_default();
        let latency = if p50s[i].is_empty() {
            String::new()
        } else {
            format!("{:.0} / {:.0} µs", median(&p50s[i]), median(&p99s[i]))
        };
        println!(
            "{:<20} {:>12.0} {:>10.0}-{:<11.0} {:>22} {:>20}",
            w.name, medians[i], lo, hi, ratio, latency
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

/// Seconds from the first publish to the last message settled, and the
/// latency where one consumer reads messages without keys in order.
async fn run(broker: &Arc<dyn Transport>, topic: &str, n: u64, run: Run) -> Measured {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let options = SubscribeOptions::new("bench").max_in_flight(1024);
    let done = Arc::new(AtomicU64::new(0));
    match run {
        Run::Mpsc { batch } => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Message>>(AHEAD as usize / batch);
            let latency = Latency::new(n);
            let start = Instant::now();
            let sending = latency.clone();
            let publisher = tokio::spawn(async move {
                let mut sent = 0;
                while sent < n {
                    let k = (batch as u64).min(n - sent);
                    let msgs = (sent..sent + k).map(|i| message(&payload, i, 0)).collect();
                    sending.sending(sent, k);
                    tx.send(msgs).await.expect("the receiver waits");
                    sent += k;
                }
            });
            let mut received = 0;
            while received < n {
                let batch = rx.recv().await.expect("the sender sends n");
                for _ in &batch {
                    latency.received(received);
                    received += 1;
                }
                drop(batch);
            }
            let seconds = start.elapsed().as_secs_f64();
            publisher.await.expect("the publisher finished");
            Measured {
                seconds,
                latency: Some(latency.percentiles()),
            }
        }
        Run::Connect { batch, keys } => {
            let mut sub = broker.subscribe(topic, options).await.expect("subscribed");
            let latency = (keys == 0).then(|| Latency::new(n));
            let start = Instant::now();
            let publisher = publish(
                broker.clone(),
                topic.into(),
                n,
                batch,
                keys,
                done.clone(),
                latency.clone(),
            );
            for i in 0..n {
                let d = sub.next().await.expect("a delivery").expect("received");
                if let Some(latency) = &latency {
                    latency.received(i);
                }
                d.ack().await.expect("acked");
                done.fetch_add(1, Ordering::Relaxed);
            }
            let seconds = start.elapsed().as_secs_f64();
            publisher.await.expect("the publisher finished");
            Measured {
                seconds,
                latency: latency.map(|l| l.percentiles()),
            }
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
            let publisher = publish(broker.clone(), topic.into(), n, 100, keys, done.clone(), None);
            let stats = match stack {
                Stack::None => {
                    let service = handler_fn(handler);
                    consumer.run(service, shutdown).await
                }
                Stack::Default => consumer.run_fn(handler, shutdown).await,
                Stack::Full => consumer.run(full_stack(handler), shutdown).await,
            }
            .expect("the consumer ran");
            let seconds = start.elapsed().as_secs_f64();
            publisher.await.expect("the publisher finished");
            assert!(stats.acked >= n, "every message acked ({} of {n})", stats.acked);
            Measured { seconds, latency: None }
        }
    }
}

/// Publishes `n` messages in batches of `batch`, at most [`AHEAD`] ahead
/// of `done`, noting send times in `latency`.
fn publish(
    broker: Arc<dyn Transport>,
    topic: String,
    n: u64,
    batch: usize,
    keys: usize,
    done: Arc<AtomicU64>,
    latency: Option<Arc<Latency>>,
) -> tokio::task::JoinHandle<()> {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < n {
            let k = (batch as u64).min(n - sent);
            if let Some(latency) = &latency {
                latency.sending(sent, k);
            }
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
