//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through `rdkafka` directly, side by side.
//!
//! `scripts/brokers up kafka && BENCH_ROUNDS=4 BENCH_MESSAGES=4000 cargo bench -p backend-kafka --bench kafka_vs_raw`
//! (`KAFKA_URL` to point elsewhere). Tansu on SQLite slows down steadily as
//! its database grows, so one raw-then-library pair favours the raw side;
//! an even number of rounds alternates the order and cancels the drift.
//!
//! The raw side is what a careful rdkafka user writes: the same producer
//! settings (`acks=all`, idempotence, every batch's delivery reports
//! awaited), a `StreamConsumer` in a group that stores each offset after
//! processing and auto-commits them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_kafka::{KafkaConfig, KafkaTransport};
use conformance_tests::throughput::{compare, publish_consume_ack};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use transport_core::Transport;

const SIZE: usize = 1024;
const BATCH: usize = 100;
const MAX_IN_FLIGHT: usize = BATCH * 2;

fn main() {
    let url = std::env::var("KAFKA_URL")
        .unwrap_or_else(|_| "kafka://127.0.0.1:9092?session_timeout_ms=6000&delete_records=false".into());
    compare(
        &format!("kafka: {SIZE}-byte messages, batches of {BATCH}, publish -> consume -> ack (raw: rdkafka)"),
        4_000,
        1_000,
        |n| raw(&url, n),
        |n| library(&url, n),
    );
}

async fn library(url: &str, n: usize) -> Duration {
    let t: Arc<dyn Transport> = KafkaTransport::connect(url).await.unwrap();
    let elapsed = publish_consume_ack(t.clone(), n, SIZE, BATCH, MAX_IN_FLIGHT).await;
    t.close().await.unwrap();
    elapsed
}

async fn raw(url: &str, n: usize) -> Duration {
    let config = KafkaConfig::from_url(url).unwrap();
    let topic = conformance_tests::unique("bench-raw");
    let admin: AdminClient<DefaultClientContext> = config.client_config().create().unwrap();
    let new = NewTopic::new(&topic, config.partitions, TopicReplication::Fixed(1));
    admin.create_topics([&new], &AdminOptions::new()).await.unwrap();

    let consumer: StreamConsumer = config
        .client_config()
        .set("group.id", format!("{topic}.bench"))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "100")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    // Joined before the clock starts, as the library's subscribe returns
    // once the group assigned its partitions.
    let joined = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "the raw consumer never joined"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }

    let producer: FutureProducer = config
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let payload = vec![b'x'; SIZE];
    let start = Instant::now();
    let publisher = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                let k = BATCH.min(n - sent);
                let reports: Vec<_> = (0..k)
                    .map(|_| {
                        producer
                            .send_result(FutureRecord::<(), [u8]>::to(&topic).payload(&payload[..]))
                            .map_err(|(e, _)| e)
                            .unwrap()
                    })
                    .collect();
                for r in reports {
                    r.await.unwrap().map_err(|(e, _)| e).unwrap();
                }
                sent += k;
            }
            producer.flush(Timeout::After(Duration::from_secs(10))).unwrap();
        })
    };
    for _ in 0..n {
        let m = consumer.recv().await.unwrap();
        consumer.store_offset_from_message(&m).unwrap();
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    elapsed
}
