//! The same workloads (1 KiB messages) through this backend and through
//! `lapin` directly, side by side: confirmed batches of 100 (each batch
//! waits for its confirms) and pipelined publishes (the raw publisher keeps
//! `WINDOW` unconfirmed and waits for the oldest confirm when full; the
//! library gets `WINDOW` concurrent `publish` calls), each timed end to end
//! (publish -> consume -> ack) and publishing alone.
//!
//! `scripts/brokers up rabbitmq && cargo bench -p backend-rabbitmq --bench rabbitmq_vs_raw`
//! (`RABBITMQ_URL`, `BENCH_MESSAGES` to change the defaults).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::throughput::{compare, measure, Publishing, Timed};

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
    // On one machine the broker's CPU bounds the end-to-end figures;
    // publishing alone shows what pipelining the confirms buys.
    for (timed, what) in [
        (Timed::EndToEnd, "publish -> consume -> ack"),
        (Timed::PublishingOnly, "publishing only"),
    ] {
        for (publishing, how) in [
            (Publishing::Batches(BATCH), format!("confirmed batches of {BATCH}")),
            (
                Publishing::Window(WINDOW),
                format!("pipelined confirms (window {WINDOW})"),
            ),
        ] {
            compare(
                &format!("rabbitmq: {SIZE}-byte messages, {how}, {what} (raw: lapin)"),
                30_000,
                1_000,
                |n| raw(&url, n, publishing, timed),
                |n| library(&url, n, publishing, timed),
            );
        }
    }
}

fn topic(what: &str) -> String {
    format!("bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn library(url: &str, n: usize, publishing: Publishing, timed: Timed) -> Duration {
    let t: Arc<dyn Transport> = RabbitTransport::connect(url).await.unwrap();
    measure(t, n, SIZE, publishing, timed, MAX_IN_FLIGHT).await
}

async fn raw(url: &str, n: usize, publishing: Publishing, timed: Timed) -> Duration {
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
                    Publishing::Batches(batch) if (i + 1) % batch == 0 => {
                        for c in confirms.drain(..) {
                            c.await.unwrap();
                        }
                    }
                    Publishing::Window(window) if confirms.len() == window => {
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
    let drain = async {
        for _ in 0..n {
            let d = consumer.next().await.unwrap().unwrap();
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    };
    match timed {
        Timed::EndToEnd => {
            drain.await;
            let elapsed = start.elapsed();
            publisher.await.unwrap();
            elapsed
        }
        Timed::PublishingOnly => {
            publisher.await.unwrap();
            let elapsed = start.elapsed();
            drain.await;
            elapsed
        }
    }
}
