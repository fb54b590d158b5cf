//! A transport a service builds itself (a backend's config)
//! reports exactly what one opened by `transport::connect` reports: the
//! same metrics through a Prometheus exporter, the same publish span with
//! the same attributes, the trace context written into the message, and
//! the same error context. There is one wrapper around every backend, and
//! no constructor skips it.
//!
//! On memory:// always; on each real broker whose URL scripts/test exports
//! (`REDIS_URL`, `NATS_URL`, `RABBITMQ_URL`, `SQS_URL`, `KAFKA_URL`),
//! skipped with a message without it, a failure under `CI`.

#![cfg(feature = "otel")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::live;
use common::spans::{named, Recorder};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use opentelemetry::KeyValue;
use transport::{ErrorKind, Message, Operation, SubscribeOptions, Transport};

/// What one transport reported for a publish, a refused publish and a
/// receive, with the topic names taken out so two runs compare.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    metrics: BTreeSet<String>,
    span_attributes: BTreeSet<String>,
    traceparent: bool,
    refusal: String,
}

async fn report(t: &Arc<dyn Transport>, label: &str, render: &dyn Fn() -> String, recorder: &Recorder) -> Report {
    let topic = format!("telemetry-{label}-{}", uuid::Uuid::now_v7().simple());
    let options = SubscribeOptions::new("g").ack_timeout(Duration::from_secs(30));
    let mut sub = t.subscribe(&topic, options).await.expect("subscribe");
    t.publish(&topic, Message::new("measured")).await.expect("publish");
    let bad = format!("bad {label}!");
    let refused = t.publish(&bad, Message::new("x")).await.expect_err("an invalid name");
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        (refused.backend(), refused.operation()),
        (t.backend(), Some(Operation::Publish)),
        "{label}: {refused}"
    );
    let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a delivery within 30 s")
        .expect("open")
        .expect("delivery");
    let traceparent = delivery.headers().contains("traceparent");
    delivery.ack().await.expect("ack");

    let text = render();
    let metrics = text
        .lines()
        .filter(|l| l.contains(&topic) || l.contains(&bad))
        // Durations differ from run to run; their count does not.
        .filter(|l| !l.contains("quantile=") && !l.contains("_sum{"))
        .map(|l| l.replace(&topic, "TOPIC").replace(&bad, "BAD"))
        .collect();
    let spans = recorder.spans_with(&[&format!("publish {topic}")]).await;
    let publish = named(&spans, &format!("publish {topic}"));
    let span_attributes = publish
        .attributes
        .iter()
        // The id and the time spent differ by nature.
        .filter(|kv: &&KeyValue| !["messaging.message.id", "busy_ns", "idle_ns"].contains(&kv.key.as_str()))
        .map(|kv| format!("{}={}", kv.key, kv.value.as_str().replace(&topic, "TOPIC")))
        .chain([format!("kind={:?}", publish.span_kind)])
        .collect();
    Report {
        metrics,
        span_attributes,
        traceparent,
        refusal: refused.to_string().replace(&bad, "BAD"),
    }
}

async fn built_like_connected(url: &str, built: Arc<dyn Transport>) {
    let recorder = Recorder::start();
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    // Thread-local, and the test runs on one thread: other tests' metrics
    // stay out.
    let _guard = metrics::set_default_local_recorder(&prometheus);
    let render = || handle.render();

    let connected = transport::connect(url).await.expect("connect");
    let by_config = report(&built, "built", &render, &recorder).await;
    let by_url = report(&connected, "connected", &render, &recorder).await;
    assert!(
        by_url
            .metrics
            .iter()
            .any(|l| l.starts_with("messaging_client_sent_messages")),
        "{url}: no publish counted: {:?}",
        by_url.metrics
    );
    assert!(by_url.traceparent, "{url}: no trace context in the message");
    assert_eq!(by_config, by_url, "{url}: a built transport reports differently");
    let _ = built.close().await;
    let _ = connected.close().await;
}

#[tokio::test]
async fn memory() {
    use transport::memory::{MemoryConfig, MemoryTransport};
    let built = MemoryTransport::with_config(MemoryConfig {
        max_message_size: 1 << 20,
        ..MemoryConfig::default()
    });
    built_like_connected("memory://", built).await;
}

// Each broker: the transport from the backend's own constructor, from a
// configuration built in code, against the one `connect(url)` opens.

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis() {
    use transport::redis::{RedisConfig, RedisTransport};
    if let Some(url) = live("REDIS_URL") {
        let config = RedisConfig::from_url(&url).expect("config");
        let built = RedisTransport::with_config(RedisConfig {
            host: config.host.clone(),
            port: config.port,
            db: config.db,
            ..RedisConfig::default()
        })
        .await
        .expect("with_config");
        built_like_connected(&url, built).await;
    }
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats() {
    use transport::nats::{NatsConfig, NatsTransport};
    if let Some(url) = live("NATS_URL") {
        let built = NatsTransport::with_config(NatsConfig::from_url(&url).expect("config"))
            .await
            .expect("with_config");
        built_like_connected(&url, built).await;
    }
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn rabbitmq() {
    use transport::rabbitmq::{RabbitConfig, RabbitTransport};
    if let Some(url) = live("RABBITMQ_URL") {
        let built = RabbitTransport::with_config(RabbitConfig::from_url(&url).expect("config"))
            .await
            .expect("with_config");
        built_like_connected(&url, built).await;
    }
}

#[cfg(feature = "sqs")]
#[tokio::test]
async fn sqs() {
    use transport::sqs::{SqsConfig, SqsTransport};
    if let Some(url) = live("SQS_URL") {
        let built = SqsTransport::with_config(SqsConfig::from_url(&url).expect("config"))
            .await
            .expect("with_config");
        built_like_connected(&url, built).await;
    }
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka() {
    use transport::kafka::{KafkaConfig, KafkaTransport};
    if let Some(url) = live("KAFKA_URL") {
        let built = KafkaTransport::with_config(KafkaConfig::from_url(&url).expect("config"))
            .await
            .expect("with_config");
        built_like_connected(&url, built).await;
    }
}
