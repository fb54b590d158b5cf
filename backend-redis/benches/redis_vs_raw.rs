//! The same publish -> consume -> ack workload (1 KiB messages) through this
//! backend and through the `redis` crate directly, side by side.
//!
//! `scripts/brokers up redis && cargo bench -p backend-redis --bench redis_vs_raw`
//! (`REDIS_URL`, `BENCH_MESSAGES` to change the defaults).

use std::time::{Duration, Instant};

use backend_redis::RedisTransport;
use futures::StreamExt;
use transport_core::{Bytes, Message, Publisher, SubscribeOptions, Subscriber};

const SIZE: usize = 1024;
const BATCH: usize = 100;

fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up both paths (script loading, connections).
        raw(&url, 1_000).await;
        library(&url, 1_000).await;
        let raw_t = raw(&url, n).await;
        let lib_t = library(&url, n).await;
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!("redis, {n} messages of {SIZE} bytes, batches of {BATCH}, publish -> consume -> ack");
        println!("  raw redis crate: {:>9.0} msg/s", rate(raw_t));
        println!("  transport:       {:>9.0} msg/s", rate(lib_t));
        println!("  ratio:           {:>9.2}x", rate(lib_t) / rate(raw_t));
    });
}

fn topic(what: &str) -> String {
    format!("bench-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn library(url: &str, n: usize) -> Duration {
    let t = RedisTransport::connect(url).await.unwrap();
    let topic = topic("lib");
    let mut sub = t
        .subscribe(&topic, SubscribeOptions::new("g").max_in_flight(BATCH))
        .await
        .unwrap();
    let payload = Bytes::from(vec![b'x'; SIZE]);
    let start = Instant::now();
    let publisher = {
        let (t, topic, payload) = (t.clone(), topic.clone(), payload.clone());
        tokio::spawn(async move {
            for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                let batch = chunk.iter().map(|_| Message::new(payload.clone())).collect();
                t.publish_batch(&topic, batch).await.unwrap();
            }
        })
    };
    for _ in 0..n {
        sub.next().await.unwrap().unwrap().ack().await.unwrap();
    }
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    elapsed
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
