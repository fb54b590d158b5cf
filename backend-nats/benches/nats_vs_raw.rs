//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through `async-nats` JetStream directly, side by side.
//!
//! `scripts/brokers up nats && cargo bench -p backend-nats --bench nats_vs_raw`
//! (`NATS_URL`, `BENCH_MESSAGES` to change the defaults).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::throughput::{compare, publish_consume_ack};

use async_nats::jetstream::{self, consumer, stream};
use backend_nats::NatsTransport;
use futures::StreamExt;
use transport_core::{Bytes, Transport};

const SIZE: usize = 1024;
const MAX_IN_FLIGHT: usize = BATCH * 2;
const BATCH: usize = 100;

fn main() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    compare(
        &format!(
            "nats jetstream: {SIZE}-byte messages, batches of {BATCH}, publish -> consume -> ack (raw: async-nats)"
        ),
        50_000,
        1_000,
        |n| raw(&url, n),
        |n| library(&url, n),
    );
}

fn topic(what: &str) -> String {
    format!("bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn library(url: &str, n: usize) -> Duration {
    let t: Arc<dyn Transport> = NatsTransport::connect(url).await.unwrap();
    publish_consume_ack(t, n, SIZE, BATCH, MAX_IN_FLIGHT).await
}

async fn raw(url: &str, n: usize) -> Duration {
    let client = async_nats::connect(url.trim_start_matches("nats://")).await.unwrap();
    let js = jetstream::new(client);
    let topic = topic("raw");
    let s = js
        .get_or_create_stream(stream::Config {
            name: topic.replace('-', "_"),
            subjects: vec![topic.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let c: consumer::PullConsumer = s
        .get_or_create_consumer(
            "g",
            consumer::pull::Config {
                durable_name: Some("g".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let payload = Bytes::from(vec![b'x'; SIZE]);
    let start = Instant::now();
    let publisher = {
        let (js, topic) = (js.clone(), topic.clone());
        tokio::spawn(async move {
            for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                let mut acks = Vec::new();
                for _ in chunk {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
                    acks.push(
                        js.publish_with_headers(topic.clone(), h, payload.clone())
                            .await
                            .unwrap(),
                    );
                }
                for a in acks {
                    a.await.unwrap();
                }
            }
        })
    };
    let mut got = 0;
    while got < n {
        let mut batch = c
            .batch()
            .max_messages(BATCH * 2)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            m.unwrap().ack().await.unwrap();
            got += 1;
        }
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    elapsed
}
