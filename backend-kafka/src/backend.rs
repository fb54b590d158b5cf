//! The Kafka transport: its public type, and the raw backend the core wraps,
//! which delegates to `provision`, `publisher`, `subscriber` (with `group`
//! and `settle`), `dead_letter_queue` and `backlog`.

use async_trait::async_trait;
use rdkafka::producer::Producer;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result, SubscribeOptions,
};

use crate::config::KafkaConfig;
use crate::core::{blocking, kafka, Kafka};
use crate::SCHEME;

/// A Kafka transport (see the crate docs for the mapping):
/// `KafkaTransport::connect("kafka://...")` or
/// `KafkaTransport::with_config(config)`, each returning the [`Transport`](transport_core::Transport)
/// every backend is, wrapped by the core (validation, error context,
/// telemetry); connecting fails fast (within `request_timeout`) when the
/// brokers cannot be reached or refuse the credentials.
pub type KafkaTransport = Connector<KafkaConfig>;

#[async_trait]
impl RawTransport for Kafka {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKey,
            ordering_across_nack: true,
            nack_delay: true,
            dead_letter_ops: true,
            first_failure_time: true,
            replay: true,
            ack_timeout_redelivery: true,
            durable: true,
            max_message_size: Some(self.inner.config.max_message_bytes),
            backlog: BacklogAccuracy {
                waiting: Accuracy::Approximate,
                in_flight: Accuracy::Unavailable,
                dead_letters: Accuracy::Exact,
                oldest_waiting_age: Accuracy::Exact,
            },
            ..Capabilities::default()
        }
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.store(topic, messages).await
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        self.read(request).await
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let dlq = options.dlq_topic(topic);
        self.ensure_topic(&dlq, self.inner.config.dlq_partitions).await?;
        Ok(Box::new(self.offsets_reader(dlq, &self.inner.config.dlq_group)?))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        let t = self.clone();
        blocking(move || t.inner.producer.flush(t.inner.config.publish_timeout).map_err(kafka)).await
    }
}
