//! The Kafka transport: its public type, and what describes the raw backend the
//! core wraps (its name, capabilities and close). Each concern of the raw
//! backend is the trait impl in its own file: publishing in `publisher`,
//! reading in `subscriber`, the dead-letter queue in `dead_letter_queue`, the
//! backlog in `backlog`. Topics are created in `provision`; the group and its
//! poll thread are `group`, a partition's bookkeeping `partition`, a delivery
//! is settled in `settle`.

use async_trait::async_trait;
use rdkafka::producer::Producer;
use transport_core::backend::{Connector, RawTransport};
use transport_core::{Accuracy, BacklogAccuracy, Capabilities, KeyOrdering, Result};

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

    async fn close(&self) -> Result<()> {
        let t = self.clone();
        blocking(move || t.inner.producer.flush(t.inner.config.publish_timeout).map_err(kafka)).await
    }
}
