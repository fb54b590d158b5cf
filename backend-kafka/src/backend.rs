//! The Kafka transport: the builder, and the raw backend the core wraps,
//! which delegates to `provision`, `publisher`, `subscriber` (with `group`
//! and `settle`), `dead_letter_queue` and `backlog`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::producer::Producer;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result,
    SubscribeOptions, Transport,
};

use crate::config::{KafkaConfig, SaslMechanism};
use crate::core::{blocking, kafka, Kafka};
use crate::SCHEME;

/// Builds a Kafka transport.
#[derive(Debug, Clone, Default)]
pub struct KafkaBuilder {
    pub(crate) config: KafkaConfig,
}

impl KafkaBuilder {
    /// Bootstrap brokers (`host:port`).
    pub fn brokers(mut self, brokers: Vec<String>) -> Self {
        self.config.brokers = brokers;
        self
    }
    /// SASL authentication.
    pub fn sasl(
        mut self,
        mechanism: SaslMechanism,
        user: impl Into<String>,
        password: impl Into<transport_core::Secret>,
    ) -> Self {
        self.config.sasl = Some(mechanism);
        self.config.user = Some(user.into());
        self.config.password = Some(password.into());
        self
    }
    /// TLS, optionally with a CA file (PEM).
    pub fn tls(mut self, ca_file: Option<String>) -> Self {
        self.config.tls = true;
        self.config.ca_file = ca_file;
        self
    }
    /// Create missing topics (default on).
    pub fn create_topics(mut self, on: bool) -> Self {
        self.config.create_topics = on;
        self
    }
    /// Partitions of topics created on demand.
    pub fn partitions(mut self, n: i32) -> Self {
        self.config.partitions = n;
        self
    }
    /// Consumer-group session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// The partition assignment strategies this member offers its group
    /// (see [`KafkaConfig::assignment`]): `range`, `roundrobin`.
    pub fn assignment<I, S>(mut self, strategies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.assignment = strategies.into_iter().map(Into::into).collect();
        self
    }
    /// Replication factor of topics created on demand.
    pub fn replication(mut self, n: i32) -> Self {
        self.config.replication = n;
        self
    }
    /// `min.insync.replicas` of topics created on demand (see
    /// [`KafkaConfig::min_insync_replicas`]).
    pub fn min_insync_replicas(mut self, n: i32) -> Self {
        self.config.min_insync_replicas = Some(n);
        self
    }
    /// Largest message accepted (at most the broker's `message.max.bytes`).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.config.max_message_bytes = n;
        self
    }
    /// How long a publish may wait for its delivery report.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }
    /// Kafka group ids `<topic>.<group>` (default) or the group name as is.
    pub fn scoped_groups(mut self, on: bool) -> Self {
        self.config.scoped_groups = on;
        self
    }
    /// Whether `purge` sends DeleteRecords (off for brokers without it).
    pub fn purge_deletes_records(mut self, on: bool) -> Self {
        self.config.purge_deletes_records = on;
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<Arc<dyn Transport>> {
        KafkaTransport::with_config(self.config).await
    }
}

/// A Kafka transport (see the crate docs for the mapping):
/// `KafkaTransport::connect("kafka://...")`, `KafkaTransport::builder()` or
/// `KafkaTransport::with_config(config)`, each returning the [`Transport`]
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
