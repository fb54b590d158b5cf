//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through `lapin` directly, side by side.
//!
//! `scripts/brokers up rabbitmq && cargo bench -p backend-rabbitmq --bench rabbitmq_vs_raw`
//! (`RABBITMQ_URL`, `BENCH_MESSAGES` to change the defaults).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::throughput::{compare, publish_consume_ack};

use backend_rabbitmq::RabbitTransport;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use transport_core::Transport;

const SIZE: usize = 1024;
const MAX_IN_FLIGHT: usize = BATCH * 2;
const BATCH: usize = 100;

fn main() {
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    compare(
        &format!(
            "rabbitmq: {SIZE}-byte messages, confirmed batches of {BATCH}, publish -> consume -> ack (raw: lapin)"
        ),
        30_000,
        1_000,
        |n| raw(&url, n),
        |n| library(&url, n),
    );
}

fn topic(what: &str) -> String {
    format!("bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn library(url: &str, n: usize) -> Duration {
    let t: Arc<dyn Transport> = Arc::new(RabbitTransport::connect(url).await.unwrap());
    publish_consume_ack(t, n, SIZE, BATCH, MAX_IN_FLIGHT).await
}

async fn raw(url: &str, n: usize) -> Duration {
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
            for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                let mut confirms = Vec::new();
                for _ in chunk {
                    let props = BasicProperties::default()
                        .with_message_id(uuid::Uuid::now_v7().to_string().into())
                        .with_delivery_mode(2);
                    confirms.push(
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
                }
                for c in confirms {
                    c.await.unwrap();
                }
            }
        })
    };
    for _ in 0..n {
        let d = consumer.next().await.unwrap().unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    elapsed
}
