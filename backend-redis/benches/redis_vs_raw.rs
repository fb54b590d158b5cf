//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through the `redis` crate directly, side by side.
//!
//! `scripts/brokers up redis && cargo bench -p backend-redis --bench redis_vs_raw`
//! (`REDIS_URL`, `BENCH_MESSAGES` to change the defaults).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_tests::throughput::{compare, publish_consume_ack};

use backend_redis::RedisTransport;
use transport_core::Transport;

const SIZE: usize = 1024;
const MAX_IN_FLIGHT: usize = BATCH;
const BATCH: usize = 100;

fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    compare(
        &format!("redis: {SIZE}-byte messages, batches of {BATCH}, publish -> consume -> ack (raw: redis crate)"),
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
    let t: Arc<dyn Transport> = RedisTransport::connect(url).await.unwrap();
    publish_consume_ack(t, n, SIZE, BATCH, MAX_IN_FLIGHT).await
}

async fn raw(url: &str, n: usize) -> Duration {
    let client = redis::Client::open(url).unwrap();
    let mut control = client.get_multiplexed_async_connection().await.unwrap();
    let mut reader = client.get_multiplexed_async_connection().await.unwrap();
    let topic = topic("raw");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&topic)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut control)
        .await
        .unwrap();
    let payload = vec![b'x'; SIZE];
    let start = Instant::now();
    let publisher = {
        let (mut conn, topic, payload) = (control.clone(), topic.clone(), payload.clone());
        tokio::spawn(async move {
            for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for _ in chunk {
                    let id = uuid::Uuid::now_v7().to_string();
                    pipe.cmd("XADD")
                        .arg(&topic)
                        .arg("*")
                        .arg("id")
                        .arg(id)
                        .arg("payload")
                        .arg(&payload)
                        .ignore();
                }
                let _: () = pipe.query_async(&mut conn).await.unwrap();
            }
        })
    };
    let mut got = 0;
    while got < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(&topic)
            .arg(">")
            .query_async(&mut reader)
            .await
            .unwrap();
        for key in reply.keys {
            for entry in key.ids {
                let _: i64 = redis::cmd("XACK")
                    .arg(&topic)
                    .arg("g")
                    .arg(&entry.id)
                    .query_async(&mut control)
                    .await
                    .unwrap();
                got += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    elapsed
}
