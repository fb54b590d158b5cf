//! Typed events through the consumer runtime (default layers: retry delays,
//! panic catching), against the plain-bytes path in the same run, in
//! alternating rounds of one process: messages/s (median of the rounds, with
//! their spread) and the encoded size of one event.
//!
//! - `bytes`: the same JSON bytes published and handled as bytes (no
//!   decoding): the runtime's own cost.
//! - `serde`: bytes published, decoded by hand in the handler with
//!   `serde_json` (what a service without contracts does).
//! - `event`: CloudEvents by hand, `Event::to_message` and `Event::decode`
//!   (the envelope's own cost: id, time, attributes as headers).
//! - `json`: events written by a `Contract` with the `Json` codec and read
//!   by the `Router` into the typed handler.
//! - `validated_json`: the same with `ValidatedJson` (checked against the
//!   JSON Schema when written and when read).
//! - `avro`: the same with the `Avro` codec (binary, schema derived by
//!   `apache-avro`).
//!
//! ```text
//! cargo bench -p transport --features avro --bench contracts
//! TRANSPORT_URL=nats://127.0.0.1:4222 cargo bench -p transport --features avro,nats --bench contracts
//! ```
//! `BENCH_MESSAGES` (default 100000 on memory://, 10000 on a broker),
//! `BENCH_ROUNDS` (default 5).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use apache_avro::AvroSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use transport::contracts::{Avro, Contract, EventType, Json, Router, ValidatedJson, Version};
use transport::runtime::{Consumer, Context, HandlerError};
use transport::{Message, Outcome, SubscribeOptions, Transport};

/// An order of a few lines: the size of a typical domain event.
#[derive(Clone, Serialize, Deserialize, JsonSchema, AvroSchema)]
struct Order {
    order_id: String,
    customer_id: String,
    #[schemars(length(equal = 3))]
    currency: String,
    #[schemars(range(min = 1))]
    total_cents: i64,
    lines: Vec<Line>,
    note: Option<String>,
}

#[derive(Clone, Serialize, Deserialize, JsonSchema, AvroSchema)]
struct Line {
    sku: String,
    #[schemars(range(min = 1))]
    quantity: u32,
    unit_cents: i64,
}

/// The same data under two codecs (a router takes one codec per type and version).
macro_rules! declare {
    ($name:ident, $codec:ty) => {
        #[derive(Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        struct $name(Order);
        impl EventType for $name {
            const TYPE: &'static str = "bench.order.placed";
            const VERSION: Version = Version::new(1, 0);
            type Codec = $codec;
        }
    };
}
declare!(JsonOrder, Json);
declare!(CheckedOrder, ValidatedJson);

/// The order as Avro data (a record of its own: Avro names the type).
#[derive(Clone, Serialize, Deserialize, AvroSchema)]
struct AvroOrder {
    order_id: String,
    customer_id: String,
    currency: String,
    total_cents: i64,
    lines: Vec<Line>,
    note: Option<String>,
}

impl EventType for AvroOrder {
    const TYPE: &'static str = "bench.order.placed";
    const VERSION: Version = Version::new(1, 0);
    type Codec = Avro;
}

impl From<Order> for AvroOrder {
    fn from(o: Order) -> Self {
        AvroOrder {
            order_id: o.order_id,
            customer_id: o.customer_id,
            currency: o.currency,
            total_cents: o.total_cents,
            lines: o.lines,
            note: o.note,
        }
    }
}

fn order(i: u64) -> Order {
    Order {
        order_id: format!("o-{i}"),
        customer_id: format!("c-{}", i % 1000),
        currency: "EUR".into(),
        total_cents: 4_250,
        lines: (0..3)
            .map(|l| Line {
                sku: format!("sku-{l}"),
                quantity: 1 + l,
                unit_cents: 1_000 + l as i64 * 125,
            })
            .collect(),
        note: None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Bytes,
    Serde,
    Event,
    Json,
    ValidatedJson,
    Avro,
}

const PATHS: [(&str, Path); 6] = [
    ("bytes", Path::Bytes),
    ("serde", Path::Serde),
    ("event", Path::Event),
    ("json", Path::Json),
    ("validated_json", Path::ValidatedJson),
    ("avro", Path::Avro),
];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    let url = env("TRANSPORT_URL").unwrap_or_else(|| "memory://".into());
    let memory = url.starts_with("memory:");
    let n: u64 = env("BENCH_MESSAGES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if memory { 100_000 } else { 10_000 });
    let rounds: usize = env("BENCH_ROUNDS").and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let broker = runtime.block_on(transport::connect(&url)).expect("connects");
    println!(
        "{}: {n} events per run, {rounds} alternating rounds (median, min-max), default layers",
        broker.backend()
    );
    let mut rates = vec![Vec::new(); PATHS.len()];
    let mut sizes = vec![0usize; PATHS.len()];
    for round in 0..rounds {
        for (i, (_, path)) in PATHS.iter().enumerate() {
            let topic = format!("bench-contracts-{}-{round}-{i}", std::process::id());
            let (seconds, size) = runtime.block_on(run(&broker, &topic, n, *path));
            rates[i].push(n as f64 / seconds);
            sizes[i] = size;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&rates[0]);
    println!(
        "{:<16} {:>10} {:>22} {:>10} {:>16}",
        "path", "events/s", "spread", "vs bytes", "bytes/event"
    );
    for (i, (name, _)) in PATHS.iter().enumerate() {
        let lo = rates[i].iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates[i].iter().copied().fold(0.0, f64::max);
        let m = median(&rates[i]);
        println!(
            "{:<16} {:>10.0} {:>10.0}-{:<11.0} {:>9.2}x {:>16}",
            name,
            m,
            lo,
            hi,
            m / base,
            sizes[i]
        );
    }
    let _ = runtime.block_on(broker.close());
}

/// The messages of one path for events `from..to`.
fn messages(path: Path, from: u64, to: u64) -> Vec<Message> {
    thread_local! {
        static JSON: Contract<JsonOrder> = Contract::new().expect("declared");
        static CHECKED: Contract<CheckedOrder> = Contract::new().expect("declared");
        static AVRO: Contract<AvroOrder> = Contract::new().expect("declared");
    }
    (from..to)
        .map(|i| match path {
            Path::Bytes | Path::Serde => Message::json(&order(i)).expect("encodes"),
            Path::Event => transport::Event::new("bench.order.placed", "bench", order(i))
                .with_version("1.0")
                .to_message()
                .expect("encodes"),
            Path::Json => JSON.with(|c| c.to_message(&c.event("bench", JsonOrder(order(i)))).expect("valid")),
            Path::ValidatedJson => {
                CHECKED.with(|c| c.to_message(&c.event("bench", CheckedOrder(order(i)))).expect("valid"))
            }
            Path::Avro => AVRO.with(|c| {
                c.to_message(&c.event("bench", AvroOrder::from(order(i))))
                    .expect("valid")
            }),
        })
        .collect()
}

/// Seconds from the first publish to the last event handled, and the size
/// of one event (payload and headers).
async fn run(broker: &Arc<dyn Transport>, topic: &str, n: u64, path: Path) -> (f64, usize) {
    let options = SubscribeOptions::new("bench").max_in_flight(1024);
    drop(broker.subscribe(topic, options.clone()).await.expect("subscribed"));
    let sample = &messages(path, 0, 1)[0];
    let size = sample.payload.len() + sample.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Notify::new());
    let count = {
        let (done, finished) = (done.clone(), finished.clone());
        move || {
            if done.fetch_add(1, Ordering::Relaxed) + 1 == n {
                finished.notify_one();
            }
        }
    };
    let start = Instant::now();
    let publisher = {
        let (broker, topic, done) = (broker.clone(), topic.to_owned(), done.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                let k = 100.min(n - sent);
                broker
                    .publish_batch(&topic, messages(path, sent, sent + k))
                    .await
                    .expect("published");
                sent += k;
                while sent - done.load(Ordering::Relaxed) > 2048 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let consumer = Consumer::new(broker.clone(), topic, options).concurrency(16);
    let stop = async move { finished.notified().await };
    let stats = match path {
        Path::Bytes | Path::Serde | Path::Event => {
            consumer
                .run_fn(
                    move |ctx: Context| {
                        let count = count.clone();
                        async move {
                            match path {
                                Path::Serde => {
                                    let order: Order =
                                        serde_json::from_slice(ctx.payload()).map_err(HandlerError::permanent)?;
                                    std::hint::black_box(order);
                                }
                                Path::Event => {
                                    let event = transport::Event::<Order>::decode(ctx.message())
                                        .map_err(HandlerError::permanent)?;
                                    std::hint::black_box(event);
                                }
                                _ => {}
                            }
                            count();
                            Ok::<_, HandlerError>(())
                        }
                    },
                    stop,
                )
                .await
        }
        Path::Json => {
            let router = Router::new()
                .route(move |_: Context, order: JsonOrder| {
                    std::hint::black_box(order);
                    count();
                    async { Outcome::Ack }
                })
                .expect("declared");
            consumer.run(default_layers(router), stop).await
        }
        Path::Avro => {
            let router = Router::new()
                .route(move |_: Context, order: AvroOrder| {
                    std::hint::black_box(order);
                    count();
                    async { Outcome::Ack }
                })
                .expect("declared");
            consumer.run(default_layers(router), stop).await
        }
        Path::ValidatedJson => {
            let router = Router::new()
                .route(move |_: Context, order: CheckedOrder| {
                    std::hint::black_box(order);
                    count();
                    async { Outcome::Ack }
                })
                .expect("declared");
            consumer.run(default_layers(router), stop).await
        }
    }
    .expect("the consumer ran");
    let seconds = start.elapsed().as_secs_f64();
    publisher.await.expect("the publisher finished");
    assert!(stats.acked >= n && stats.dead_lettered == 0, "{stats:?}");
    (seconds, size)
}

/// The layers `Consumer::run_fn` puts around a handler.
fn default_layers(
    router: Router,
) -> impl tower::Service<Context, Response = Outcome, Error = transport::runtime::BoxError, Future: Send>
       + Clone
       + Send
       + 'static {
    tower::ServiceBuilder::new()
        .layer(transport::runtime::RetryDelayLayer::new(
            transport::runtime::RetryPolicy::default(),
        ))
        .layer(transport::runtime::CatchPanicLayer)
        .service(router)
}
