//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through `lapin` directly, side by side, twice: confirmed
//! batches of 100 (each batch waits for its confirms), and pipelined
//! publishes (a window of unconfirmed publishes: the raw publisher keeps
//! `WINDOW` in flight and waits for the oldest confirm when full; the
//! library gets `WINDOW` concurrent `publish` calls).
//!
//! `scripts/brokers up rabbitmq && cargo bench -p backend-rabbitmq --bench rabbitmq_vs_raw`
//! (`RABBITMQ_URL`, `BENCH_MESSAGES` to change the defaults).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use conformance_tests::throughput::{
    batched_publish, compare, pipelined_consume_ack, pipelined_publish, publish_consume_ack,
};

use backend_rabbitmq::RabbitTransport;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use transport_core::Transport;

const SIZE: usize = 1024;
const MAX_IN_FLIGHT: usize = BATCH * 2;
const BATCH: usize = 100;
const WINDOW: usize = 1024;

fn main() {
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    compare(
        &format!(
            "rabbitmq: {SIZE}-byte messages, confirmed batches of {BATCH}, publish -> consume -> ack (raw: lapin)"
        ),
        30_000,
        1_000,
        |n| raw(&url, n, Publishing::Batches),
        |n| library(&url, n, Publishing::Batches),
    );
    compare(
        &format!("rabbitmq: {SIZE}-byte messages, pipelined confirms (window {WINDOW}), publish -> consume -> ack (raw: lapin)"),
        30_000,
        1_000,
        |n| raw(&url, n, Publishing::Pipelined),
        |n| library(&url, n, Publishing::Pipelined),
    );
    // On one machine the broker's CPU bounds the end-to-end figures above;
    // publishing alone shows what pipelining the confirms buys.
    compare(
        &format!("rabbitmq: {SIZE}-byte messages, publishing only, batches of {BATCH} (raw: lapin)"),
        30_000,
        1_000,
        |n| raw(&url, n, Publishing::BatchesOnly),
        |n| library(&url, n, Publishing::BatchesOnly),
    );
    compare(
        &format!("rabbitmq: {SIZE}-byte messages, publishing only, pipelined confirms (window {WINDOW}) (raw: lapin)"),
        30_000,
        1_000,
        |n| raw(&url, n, Publishing::PipelinedOnly),
        |n| library(&url, n, Publishing::PipelinedOnly),
    );
}

#[derive(Clone, Copy)]
enum Publishing {
    /// Batches of `BATCH`, each waiting for all its confirms.
    Batches,
    /// Up to `WINDOW` unconfirmed publishes at any time.
    Pipelined,
    /// `Batches`, timed until the last confirm; consumed afterwards, untimed.
    BatchesOnly,
    /// `Pipelined`, timed until the last confirm; consumed afterwards, untimed.
    PipelinedOnly,
}

impl Publishing {
    fn timed_consumer(self) -> bool {
        matches!(self, Publishing::Batches | Publishing::Pipelined)
    }
}

fn topic(what: &str) -> String {
    format!("bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn library(url: &str, n: usize, publishing: Publishing) -> Duration {
    let t: Arc<dyn Transport> = Arc::new(RabbitTransport::connect(url).await.unwrap());
    match publishing {
        Publishing::Batches => publish_consume_ack(t, n, SIZE, BATCH, MAX_IN_FLIGHT).await,
        Publishing::Pipelined => pipelined_consume_ack(t, n, SIZE, WINDOW, MAX_IN_FLIGHT).await,
        Publishing::BatchesOnly => batched_publish(t, n, SIZE, BATCH).await,
        Publishing::PipelinedOnly => pipelined_publish(t, n, SIZE, WINDOW).await,
    }
}

async fn raw(url: &str, n: usize, publishing: Publishing) -> Duration {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let pub_ch = conn.create_channel().await.unwrap();
    pub_ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let topic = topic("raw");
    let queue = format!("{topic}/g");
    pub_ch
        .exchange_declare(
            topic.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    pub_ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    pub_ch
        .queue_bind(
            queue.as_str().into(),
            topic.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let con_ch = conn.create_channel().await.unwrap();
    con_ch
        .basic_qos((BATCH * 2) as u16, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = con_ch
        .basic_consume(
            queue.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let payload = vec![b'x'; SIZE];
    let start = Instant::now();
    let publisher = {
        let topic = topic.clone();
        tokio::spawn(async move {
            // Batches: wait for every confirm after each BATCH publishes.
            // Pipelined: wait for the oldest confirm once WINDOW are out.
            let mut confirms = VecDeque::new();
            for i in 0..n {
                let props = BasicProperties::default()
                    .with_message_id(uuid::Uuid::now_v7().to_string().into())
                    .with_delivery_mode(2);
                confirms.push_back(
                    pub_ch
                        .basic_publish(
                            topic.as_str().into(),
                            topic.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            &payload,
                            props,
                        )
                        .await
                        .unwrap(),
                );
                match publishing {
                    Publishing::Batches | Publishing::BatchesOnly if (i + 1) % BATCH == 0 => {
                        for c in confirms.drain(..) {
                            c.await.unwrap();
                        }
                    }
                    Publishing::Pipelined | Publishing::PipelinedOnly if confirms.len() == WINDOW => {
                        confirms.pop_front().unwrap().await.unwrap();
                    }
                    _ => {}
                }
            }
            for c in confirms {
                c.await.unwrap();
            }
        })
    };
    let mut elapsed = None;
    let mut publisher = Some(publisher);
    if !publishing.timed_consumer() {
        publisher.take().unwrap().await.unwrap();
        elapsed = Some(start.elapsed());
    }
    for _ in 0..n {
        let d = consumer.next().await.unwrap().unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    match elapsed {
        Some(elapsed) => elapsed,
        None => {
            let elapsed = start.elapsed();
            publisher.take().unwrap().await.unwrap();
            elapsed
        }
    }
}
