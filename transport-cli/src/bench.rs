//! `transport bench`: publish -> consume -> ack throughput and latency of
//! one workload (payload size, publishers, batch, consumers, keys), or a
//! sweep over them (`sweep`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use transport::{Bytes, Message, SubscribeOptions, Transport};

use crate::cli::BenchArgs;
use crate::target::{connect, url_or_env, CliError, CliResult};

const SENT_AT: &str = "bench-sent-us";
/// A run ends with an error when no delivery arrives for this long.
const STALL: Duration = Duration::from_secs(30);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Payload bytes.
    pub size: usize,
    /// Publishing tasks.
    pub publishers: usize,
    /// Messages per `publish_batch` (1: `publish`).
    pub batch: usize,
    /// Subscriptions of the one group, each receiving and acking.
    pub consumers: usize,
    /// Distinct ordering keys, round robin (0: no key).
    pub keys: usize,
}

/// When publishing stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Messages(u64),
    /// Publish for this long (then let the consumers drain), at most
    /// `max` messages, at most `rate` per second when given.
    Seconds {
        seconds: f64,
        max: u64,
        rate: Option<f64>,
    },
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub messages: u64,
    /// From the first publish to the last ack.
    pub seconds: f64,
    /// The rate the latency figures were measured at (in a sweep, a second
    /// run paced at half the throughput; otherwise this run's rate).
    pub latency_rate: f64,
    /// Publish to receipt, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Measurement {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

/// How far publishers may run ahead of the consumers: a producer with flow
/// control. Enough to keep every publisher's batches in flight twice over,
/// otherwise small (2048 messages, 16 MiB), so latency measures the path
/// rather than a queue the bench built, and a slow consumer cannot make it
/// hold gigabytes.
fn lead(point: &Point) -> u64 {
    let in_flight = 2 * point.batch.max(1) * point.publishers.max(1);
    in_flight.max(((16 << 20) / point.size.max(1)).clamp(1, 2048)) as u64
}

/// What the publishers and consumers of one run share.
struct Shared {
    broker: Arc<dyn Transport>,
    topic: String,
    point: Point,
    payload: Bytes,
    start: Instant,
    /// Publish at most this many messages, for at most this long, at most
    /// this many per second.
    most: u64,
    seconds: f64,
    rate: Option<f64>,
    /// Sequence numbers handed to publishers; messages published; received.
    claimed: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    done_publishing: AtomicBool,
    /// One permit per message the publishers may have ahead of the acks;
    /// closed when a consumer gives up, so that no publisher waits forever.
    window: tokio::sync::Semaphore,
}

/// Run `point` on a fresh topic of `broker`.
pub async fn measure(
    broker: &Arc<dyn Transport>,
    point: Point,
    limit: Limit,
    bar: Option<&ProgressBar>,
) -> CliResult<Measurement> {
    let topic = format!("bench-{}", transport::new_id().replace('-', ""));
    let mut subs = Vec::new();
    for _ in 0..point.consumers.max(1) {
        let sub = broker
            .subscribe(&topic, SubscribeOptions::new("bench").max_in_flight(512))
            .await
            .map_err(|e| CliError::new(format!("bench on {}: subscribing failed: {e}", broker.backend())))?;
        subs.push(sub);
    }
    let (most, seconds, rate) = match limit {
        Limit::Messages(n) => (n, f64::INFINITY, None),
        Limit::Seconds { seconds, max, rate } => (max, seconds, rate),
    };
    let run = Arc::new(Shared {
        broker: broker.clone(),
        topic,
        point,
        payload: Bytes::from(vec![b'x'; point.size]),
        start: Instant::now(),
        most,
        seconds,
        rate,
        claimed: AtomicU64::new(0),
        published: AtomicU64::new(0),
        received: AtomicU64::new(0),
        done_publishing: AtomicBool::new(false),
        window: tokio::sync::Semaphore::new(lead(&point) as usize),
    });
    let publishers: Vec<_> = (0..point.publishers.max(1))
        .map(|_| tokio::spawn(publisher(run.clone())))
        .collect();
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|sub| tokio::spawn(consumer(run.clone(), sub, bar.cloned())))
        .collect();

    let mut errors = Vec::new();
    for p in publishers {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("publishing failed: {e}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    run.done_publishing.store(true, Ordering::SeqCst);
    if let Some(bar) = bar {
        bar.set_length(run.published.load(Ordering::SeqCst));
    }
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut end = run.start;
    for c in consumers {
        match c.await {
            Ok(Ok((h, last))) => {
                let _ = latency.add(h);
                end = end.max(last);
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    // A consumer's failure is the cause; the publishers' "stopped" follows.
    errors.sort_by_key(|e| e.starts_with("publishing failed"));
    if let Some(e) = errors.first() {
        return Err(CliError::new(format!("bench on {}: {e}", broker.backend())));
    }
    let ms = |v: u64| v as f64 / 1000.0;
    let messages = run.published.load(Ordering::SeqCst);
    let seconds = (end - run.start).as_secs_f64().max(1e-9);
    Ok(Measurement {
        messages,
        seconds,
        latency_rate: messages as f64 / seconds,
        p50_ms: ms(latency.value_at_quantile(0.5)),
        p99_ms: ms(latency.value_at_quantile(0.99)),
        max_ms: ms(latency.max()),
    })
}

/// Claims batches of sequence numbers and publishes them until the limit.
async fn publisher(run: Arc<Shared>) -> Result<(), String> {
    let batch = run.point.batch.max(1) as u64;
    while run.start.elapsed().as_secs_f64() < run.seconds {
        let first = run.claimed.fetch_add(batch, Ordering::SeqCst);
        if first >= run.most {
            break;
        }
        let k = batch.min(run.most - first);
        if let Some(rate) = run.rate {
            // Paced: message `first` is due at first / rate.
            tokio::time::sleep_until((run.start + Duration::from_secs_f64(first as f64 / rate)).into()).await;
        }
        match run.window.acquire_many(k as u32).await {
            Ok(permits) => permits.forget(),
            Err(_) => return Err("stopped: a consumer failed".into()),
        }
        let mut msgs: Vec<Message> = (first..first + k)
            .map(|i| {
                let m = Message::new(run.payload.clone()).with_header(SENT_AT, now_us().to_string());
                match run.point.keys {
                    0 => m,
                    keys => m.with_key(format!("k{}", i % keys as u64)),
                }
            })
            .collect();
        let sent = if k == 1 {
            run.broker.publish(&run.topic, msgs.pop().expect("one")).await
        } else {
            run.broker.publish_batch(&run.topic, msgs).await
        };
        sent.map_err(|e| e.to_string())?;
        run.published.fetch_add(k, Ordering::SeqCst);
    }
    Ok(())
}

/// Receives and acks until everything published arrived; the latencies
/// and when the last one arrived.
async fn consumer(
    run: Arc<Shared>,
    sub: transport::Subscription,
    bar: Option<ProgressBar>,
) -> Result<(Histogram<u64>, Instant), String> {
    let result = receive(&run, sub, bar).await;
    if result.is_err() {
        run.window.close();
    }
    result
}

async fn receive(
    run: &Shared,
    mut sub: transport::Subscription,
    bar: Option<ProgressBar>,
) -> Result<(Histogram<u64>, Instant), String> {
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut last = run.start;
    loop {
        if run.done_publishing.load(Ordering::SeqCst)
            && run.received.load(Ordering::SeqCst) >= run.published.load(Ordering::SeqCst)
        {
            return Ok((latency, last));
        }
        let d = match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Err(_) => {
                if last.elapsed() > STALL && run.start.elapsed() > STALL {
                    return Err(format!(
                        "only {} of {} messages arrived (nothing for {}s)",
                        run.received.load(Ordering::SeqCst),
                        run.published.load(Ordering::SeqCst),
                        STALL.as_secs()
                    ));
                }
                continue;
            }
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) if e.is_retryable() => continue,
            Ok(Some(Err(e))) => return Err(format!("receiving failed: {e}")),
            Ok(None) => return Err("the subscription ended".into()),
        };
        if let Some(sent) = d.headers().get(SENT_AT).and_then(|s| s.parse::<u64>().ok()) {
            let _ = latency.record(now_us().saturating_sub(sent));
        }
        d.ack().await.map_err(|e| format!("acking failed: {e}"))?;
        run.received.fetch_add(1, Ordering::SeqCst);
        run.window.add_permits(1);
        last = Instant::now();
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
}

/// The workload the arguments describe.
pub fn point_of(args: &BenchArgs) -> Point {
    Point {
        size: args.size,
        publishers: args.concurrency.max(1),
        batch: args.batch.max(1),
        consumers: args.consumers.max(1),
        keys: args.keys,
    }
}

/// `transport bench` for one point (a sweep or a redraw is `sweep::command`).
pub async fn run(args: BenchArgs) -> CliResult {
    let url = url_or_env(args.url.clone())?;
    let broker = connect(&url).await?;
    let point = point_of(&args);
    let count = args.count.max(1);
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let result = measure(&broker, point, Limit::Messages(count), Some(&bar)).await;
    bar.finish_and_clear();
    let _ = broker.close().await;
    let m = result.map_err(|e| CliError::new(format!("{e} ({url})")))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backend": broker.backend(),
                "size": point.size,
                "count": m.messages,
                "concurrency": point.publishers,
                "batch": point.batch,
                "consumers": point.consumers,
                "keys": point.keys,
                "seconds": m.seconds,
                "messages_per_second": m.rate(),
                "latency_ms": {"p50": m.p50_ms, "p99": m.p99_ms, "max": m.max_ms},
            })
        );
    } else {
        println!(
            "{}: {} messages of {} bytes, {} publisher(s), batch {}, {} consumer(s), {} key(s)",
            broker.backend(),
            m.messages,
            point.size,
            point.publishers,
            point.batch,
            point.consumers,
            point.keys
        );
        println!("  end to end: {:.0} msg/s ({:.2}s)", m.rate(), m.seconds);
        println!(
            "  latency:    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            m.p50_ms, m.p99_ms, m.max_ms
        );
    }
    Ok(())
}
