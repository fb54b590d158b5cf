//! The SQS + SNS transport: the builder, and the raw backend the core
//! wraps, which delegates to `provision`, `publisher`, `subscriber` (with
//! `settle` and `deletes`), `dead_letter_queue` and `backlog`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result,
    SubscribeOptions, Transport,
};

use crate::config::SqsConfig;
use crate::core::{Sqs, MAX_MESSAGE, MAX_VISIBILITY};
use crate::dead_letter_queue::SqsDeadLetters;
use crate::SCHEME;

/// Builds an SQS + SNS transport.
#[derive(Debug, Clone, Default)]
pub struct SqsBuilder {
    pub(crate) config: SqsConfig,
}

impl SqsBuilder {
    /// Region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }
    /// Endpoint override (emulators, compatible services).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }
    /// Static credentials (otherwise the standard chain).
    pub fn credentials(mut self, access_key: impl Into<String>, secret_key: impl Into<transport_core::Secret>) -> Self {
        self.config.access_key = Some(access_key.into());
        self.config.secret_key = Some(secret_key.into());
        self
    }
    /// FIFO topics and queues.
    pub fn fifo(mut self, on: bool) -> Self {
        self.config.fifo = on;
        self
    }
    /// Create missing topics, queues and subscriptions (default on).
    pub fn create(mut self, on: bool) -> Self {
        self.config.create = on;
        self
    }
    /// Prefix of every topic and queue name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }
    /// Long-poll wait of one receive (at most 20 s; zero is short polling).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.config.wait = wait.min(Duration::from_secs(20));
        self
    }
    /// Point-to-point mode: a topic is one SQS queue, no SNS (see the crate docs).
    pub fn point_to_point(mut self, on: bool) -> Self {
        self.config.point_to_point = on;
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<Arc<dyn Transport>> {
        SqsTransport::with_config(self.config).await
    }
}

/// An SQS + SNS transport (see the crate docs for the mapping):
/// `SqsTransport::connect("sqs://...")`, `SqsTransport::builder()` or
/// `SqsTransport::with_config(config)`, each returning the [`Transport`]
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type SqsTransport = Connector<SqsConfig>;

#[async_trait]
impl RawTransport for Sqs {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        let fifo = self.fifo();
        Capabilities {
            extend: true,
            ordering: if fifo { KeyOrdering::PerKey } else { KeyOrdering::None },
            // A receive hands out several messages of a group at once, so
            // later ones are in hand before a nacked one comes back.
            ordering_across_nack: false,
            nack_delay: true,
            max_nack_delay: Some(MAX_VISIBILITY),
            native_dead_letter: true,
            dead_letter_ops: true,
            ack_timeout_redelivery: true,
            publish_dedup: fifo,
            duplicates_possible: !fifo,
            durable: true,
            max_message_size: Some(MAX_MESSAGE),
            backlog: BacklogAccuracy {
                waiting: Accuracy::Approximate,
                in_flight: Accuracy::Approximate,
                dead_letters: Accuracy::Approximate,
                oldest_waiting_age: Accuracy::Unavailable,
            },
            max_batch_size: Some(10),
            single_group: self.point_to_point(),
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
        Ok(Box::new(SqsDeadLetters::new(self, options.dlq_topic(topic))))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
