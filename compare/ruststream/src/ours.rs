//! This library's side: `transport::connect` (`memory://`, `nats://`),
//! `publish` / `publish_batch`, and either the bare subscription loop
//! (receive, ack) or the consumer runtime (`Consumer::run_fn`, its default
//! layers), as transport/benches/paths.rs drives them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use transport::runtime::{Consumer, Context, HandlerError};
use transport::{Message, SubscribeOptions, Transport};

use crate::probe::Probe;
use crate::{Consume, Workload, GROUP, IN_FLIGHT};

/// The in-memory broker as the comparison uses it: a private broker per
/// run (so both sides start empty), keeping 1024 consumed messages for
/// replay like backend-memory's own throughput bench, instead of the
/// default 100,000 (RustStream's default broker keeps none).
pub const MEMORY_URL: &str = "memory://?replay_window=1024";

/// A publisher connection and a consumer connection to one broker (one
/// handle for `memory://`, whose unnamed brokers are private to a handle).
pub struct Pair {
    pub publisher: Arc<dyn Transport>,
    pub consumer: Arc<dyn Transport>,
}

impl Pair {
    /// Two connections to `url`: a producer and a consumer are usually two
    /// services, and RustStream's side has two connections too.
    pub async fn connect(url: &str) -> transport::Result<Pair> {
        Ok(Pair {
            publisher: transport::connect(url).await?,
            consumer: transport::connect(url).await?,
        })
    }

    /// One handle both ways.
    pub fn single(t: Arc<dyn Transport>) -> Pair {
        Pair {
            publisher: t.clone(),
            consumer: t,
        }
    }

    pub async fn close(self) {
        let _ = self.publisher.close().await;
        let _ = self.consumer.close().await;
    }
}

/// One run on `topic`; the time from the first publish to the last
/// message handled.
pub async fn run(pair: &Pair, topic: &str, w: Workload, probe: &Arc<Probe>, concurrency: usize) -> Duration {
    let options = SubscribeOptions::new(GROUP).max_in_flight(IN_FLIGHT);
    match w.consume {
        Consume::Loop => {
            let mut sub = pair.consumer.subscribe(topic, options).await.expect("subscribed");
            let begin = Instant::now();
            let publisher = tokio::spawn(publish(
                pair.publisher.clone(),
                topic.to_owned(),
                probe.clone(),
                w.batch,
            ));
            for _ in 0..probe.n() {
                let d = sub.next().await.expect("a delivery").expect("received");
                probe.received(d.payload());
                d.ack().await.expect("acked");
            }
            let elapsed = begin.elapsed();
            publisher.await.expect("the publisher finished");
            elapsed
        }
        Consume::Runtime => {
            // The group exists before the first publish (memory: its cursor;
            // NATS: the durable consumer, deliver policy New), as paths.rs
            // does: `Consumer::run` subscribes only once it runs.
            drop(
                pair.consumer
                    .subscribe(topic, options.clone())
                    .await
                    .expect("subscribed"),
            );
            let stop = Arc::new(Notify::new());
            let shutdown = {
                let stop = stop.clone();
                async move { stop.notified().await }
            };
            let handler = {
                let probe = probe.clone();
                move |ctx: Context| {
                    let probe = probe.clone();
                    async move {
                        probe.received(ctx.payload());
                        Ok::<(), HandlerError>(())
                    }
                }
            };
            // `run_fn`: the default layers (retry delays, panic catching),
            // what a service gets without choosing.
            let consumer = Consumer::new(pair.consumer.clone(), topic, options).concurrency(concurrency);
            let running = tokio::spawn(consumer.run_fn(handler, shutdown));
            let begin = Instant::now();
            let publisher = tokio::spawn(publish(
                pair.publisher.clone(),
                topic.to_owned(),
                probe.clone(),
                w.batch,
            ));
            probe.finished().await;
            let elapsed = begin.elapsed();
            publisher.await.expect("the publisher finished");
            stop.notify_one();
            let stats = running.await.expect("the consumer task").expect("the consumer ran");
            assert!(
                stats.acked >= probe.n(),
                "every message acked ({} of {})",
                stats.acked,
                probe.n()
            );
            elapsed
        }
    }
}

/// Publishes the run's messages one at a time (`publish`, which returns
/// once the broker stored it: on NATS once the PubAck came) or in
/// `publish_batch` calls of `batch` (on NATS: all sent, then every PubAck
/// awaited).
async fn publish(publisher: Arc<dyn Transport>, topic: String, probe: Arc<Probe>, batch: usize) {
    let n = probe.n();
    let mut sent = 0;
    while sent < n {
        let k = (batch as u64).min(n - sent);
        if k == 1 {
            let message = Message::new(probe.payload(sent).freeze());
            publisher.publish(&topic, message).await.expect("published");
        } else {
            let messages = (sent..sent + k)
                .map(|seq| Message::new(probe.payload(seq).freeze()))
                .collect();
            publisher.publish_batch(&topic, messages).await.expect("published");
        }
        sent += k;
        probe.hold(sent).await;
    }
}
