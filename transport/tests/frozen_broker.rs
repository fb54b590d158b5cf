//! A broker that stops answering after the connection is up (a hung
//! process, a network partition that drops packets) cannot hang any
//! operation: with the broker process frozen (`SIGSTOP`), every operation
//! (publish, publish_batch, subscribe, ack, nack, the dead-letter
//! operations, close) ends within a bound derived from the URL's timeouts,
//! and those that fail do so with a typed, retryable error. Once the broker
//! is thawed (`SIGCONT`) a publish goes through again without reconnecting
//! by hand.
//!
//! Against the brokers `scripts/brokers up` started (their pid files under
//! `.brokers/`); skipped with a message when one is not running, a failure
//! under `CI`. A guard thaws the broker even when an assertion fails.

#![cfg(any(
    feature = "redis",
    feature = "nats",
    feature = "rabbitmq",
    feature = "sqs",
    feature = "kafka"
))]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{brokers, pid};
use futures::StreamExt;
use transport::{ErrorKind, Message, SubscribeOptions, Transport};

/// Frozen while it lives; thawed on drop, whatever happened.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        let ok = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
        assert!(ok.is_ok_and(|s| s.success()), "cannot SIGSTOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// `op` ends within `bound`; if it fails, with a retryable kind (the
/// broker did not answer: Timeout or ConnectionLost).
async fn bounded<T, F>(what: &str, bound: Duration, op: F) -> Option<T>
where
    F: std::future::Future<Output = transport::Result<T>>,
{
    let start = Instant::now();
    let outcome = tokio::time::timeout(bound + Duration::from_secs(30), op).await;
    let took = start.elapsed();
    let result = outcome.unwrap_or_else(|_| panic!("{what} still runs {took:?} after the broker went silent"));
    assert!(took <= bound, "{what} took {took:?}, bound {bound:?}");
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::Timeout | ErrorKind::ConnectionLost),
                "{what}: {e} ({:?}) is not a timeout or a lost connection",
                e.kind()
            );
            assert!(e.is_retryable(), "{what}: {e} is not retryable");
            None
        }
    }
}

/// The whole story for one broker: `query` sets its timeouts (about 1.5 s)
/// and `bound` is what any operation may take with them.
/// `recovery_not_proven` names a broker defect that rules out the last part.
async fn goes_silent(name: &str, query: &str, bound: Duration, recovery_not_proven: Option<&str>) {
    let (Some(pid), Some(base)) = (pid(name), brokers(&["url", name])) else {
        if std::env::var("CI").is_ok() {
            panic!("{name} is not running (scripts/brokers up {name})");
        }
        eprintln!("skipped: {name} is not running (scripts/brokers up {name})");
        return;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}{query}");
    let t: Arc<dyn Transport> = transport::connect(&url).await.expect("connect");
    let topic = format!("silent-{name}-{}", uuid::Uuid::now_v7().simple());
    let options = SubscribeOptions::new("g")
        .ack_timeout(Duration::from_secs(30))
        .max_attempts(3);
    let mut sub = t.subscribe(&topic, options.clone()).await.expect("subscribe");
    for i in 0..3 {
        t.publish(&topic, Message::new(format!("m{i}")).with_key("k"))
            .await
            .expect("publish");
    }
    let mut held = Vec::new();
    while held.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("a delivery within 30 s")
            .expect("stream open")
            .expect("delivery");
        held.push(d);
    }
    let dlq = t.dead_letters(&topic, &options).await.expect("dead letters");

    let frozen = Frozen::new(pid);
    bounded("publish", bound, t.publish(&topic, Message::new("during"))).await;
    bounded(
        "publish_batch",
        bound,
        t.publish_batch(&topic, vec![Message::new("b1"), Message::new("b2")]),
    )
    .await;
    bounded("subscribe", bound, t.subscribe(&topic, SubscribeOptions::new("other"))).await;
    let nacked = held.pop().unwrap();
    bounded("nack", bound, nacked.nack(None)).await;
    let acked = held.pop().unwrap();
    bounded("ack", bound, acked.ack()).await;
    bounded("dead-letter depth", bound, dlq.depth()).await;
    bounded("dead-letter peek", bound, dlq.peek(10)).await;
    bounded("dead-letter redrive", bound, dlq.redrive_all()).await;
    bounded("dead-letter purge", bound, dlq.purge()).await;
    drop(frozen);

    if let Some(why) = recovery_not_proven {
        eprintln!("NOT PROVEN on {name}: publishing again after the thaw: {why}");
        drop(sub);
        bounded("close", bound, t.close()).await;
        return;
    }
    // Thawed: the same transport publishes again by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match t.publish(&topic, Message::new("after")).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => panic!("{name}: no publish within 60 s of the broker answering again: {e}"),
        }
    }
    drop(sub);
    bounded("close", bound, t.close()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis() {
    goes_silent(
        "redis",
        "connect_timeout_ms=1500&command_timeout_ms=1500",
        Duration::from_secs(4),
        None,
    )
    .await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats() {
    goes_silent(
        "nats",
        "connect_timeout_ms=1500&request_timeout_ms=1500",
        Duration::from_secs(4),
        None,
    )
    .await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn rabbitmq() {
    goes_silent(
        "rabbitmq",
        "connect_timeout_ms=1500&request_timeout_ms=1500",
        Duration::from_secs(4),
        None,
    )
    .await;
}

#[cfg(feature = "sqs")]
#[tokio::test]
async fn sqs() {
    goes_silent(
        "sqs",
        "connect_timeout_ms=1500&request_timeout_ms=1500",
        Duration::from_secs(4),
        None,
    )
    .await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka() {
    // Tansu 0.6, the Kafka-protocol broker here, breaks when the idempotent
    // producer publishes again after its publishes timed out.
    goes_silent(
        "kafka",
        "request_timeout_ms=1500&publish_timeout_ms=1500",
        Duration::from_secs(4),
        Some(
            "Tansu 0.6's storage task panics when an idempotent producer publishes again after timeouts \
             (reproduction: cargo run -p backend-kafka --example tansu_repro -- freeze PID)",
        ),
    )
    .await;
}
