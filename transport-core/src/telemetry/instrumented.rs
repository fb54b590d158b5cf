//! The decorator every transport opened by URL goes through: metrics and a
//! span for each publish, and the trace context written into each message.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::names::*;
use crate::backlog::Backlog;
use crate::capabilities::Capabilities;
use crate::dead_letter::DeadLetterQueue;
use crate::error::Result;
use crate::message::Message;
use crate::options::SubscribeOptions;
use crate::subscription::Subscription;
use crate::transport::{Publisher, Subscriber, Transport};

/// A transport that measures and traces what it publishes:
/// `messaging.client.sent.messages` and `messaging.client.operation.duration`
/// per backend and topic, a `publish <topic>` span (OpenTelemetry producer
/// kind, messaging attributes), and with the `otel` feature the current
/// trace context as `traceparent`/`tracestate` headers of every message.
/// `transport::connect` wraps every backend in it; the metrics cost nothing
/// until the application installs a `metrics` recorder.
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Transport>,
}

impl Instrumented {
    /// `inner`, instrumented.
    pub fn wrap(inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
        Arc::new(Instrumented { inner })
    }

    async fn send(&self, op: &'static str, topic: &str, mut messages: Vec<Message>) -> Result<()> {
        let backend = self.inner.backend();
        let count = messages.len();
        let span = tracing::info_span!(
            "publish",
            otel.name = format!("{op} {topic}"),
            otel.kind = "producer",
            messaging.system = backend,
            messaging.destination.name = topic,
            messaging.operation.name = op,
            messaging.operation.type = "send",
            messaging.batch.message_count = count,
            messaging.message.id = messages.first().map(|m| m.id.as_str()).unwrap_or_default(),
            error.type = tracing::field::Empty,
        );
        async {
            // A message that already carries a trace context keeps it: that
            // is where it was created (OpenTelemetry's "creation context"),
            // e.g. the request that wrote it to an outbox the relay now
            // publishes; the consumer's span joins that trace.
            #[cfg(feature = "otel")]
            for m in messages
                .iter_mut()
                .filter(|m| !m.headers.contains(super::propagation::TRACEPARENT))
            {
                super::propagation::inject(&tracing::Span::current(), m);
            }
            #[cfg(not(feature = "otel"))]
            let _ = &mut messages;
            let start = Instant::now();
            let result = if op == "publish" && count == 1 {
                let m = messages.pop().expect("one message");
                self.inner.publish(topic, m).await
            } else {
                self.inner.publish_batch(topic, messages).await
            };
            let labels = [
                (SYSTEM, backend.to_owned()),
                (DESTINATION, topic.to_owned()),
                (OPERATION_NAME, op.to_owned()),
            ];
            metrics::histogram!(OPERATION_DURATION, &labels).record(start.elapsed().as_secs_f64());
            match &result {
                Ok(()) => metrics::counter!(SENT_MESSAGES, &labels).increment(count as u64),
                Err(e) => {
                    // A low-cardinality identifier: `invalid_argument`, `timeout`, ...
                    let kind = e.kind().as_str().replace(' ', "_");
                    tracing::Span::current().record(ERROR_TYPE, kind.as_str());
                    let mut failed = labels.to_vec();
                    failed.push((ERROR_TYPE, kind));
                    metrics::counter!(SENT_MESSAGES, &failed).increment(count as u64);
                }
            }
            result
        }
        .instrument(span)
        .await
    }
}

#[async_trait]
impl Publisher for Instrumented {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.send("publish", topic, vec![message]).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.send("publish_batch", topic, messages).await
    }
}

#[async_trait]
impl Subscriber for Instrumented {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.inner.subscribe(topic, options).await
    }
}

#[async_trait]
impl Transport for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.inner.dead_letters(topic, options).await
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.inner.backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
