//! The NATS JetStream transport: its public type, and the raw backend the core
//! wraps (`core::Nats`), which delegates to `publisher`, `subscriber`,
//! `dead_letter_queue` and `backlog`.

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result, SubscribeOptions,
};

use crate::config::{NatsConfig, Storage};
use crate::core::Nats;
use crate::dead_letter_queue::NatsDeadLetters;
use crate::SCHEME;

/// A NATS JetStream transport (see the crate docs for the mapping):
/// `NatsTransport::connect("nats://...")` or
/// `NatsTransport::with_config(config)`, each returning the [`Transport`](transport_core::Transport)
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type NatsTransport = Connector<NatsConfig>;

#[async_trait]
impl RawTransport for Nats {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKeySingleConsumer,
            nack_delay: true,
            dead_letter_ops: true,
            replay: true,
            ack_timeout_redelivery: true,
            publish_dedup: true,
            durable: self.inner.config.storage == Storage::File,
            max_message_size: Some(self.inner.max_message_size),
            backlog: BacklogAccuracy::EXACT,
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
        Ok(Box::new(NatsDeadLetters {
            nats: self.clone(),
            topic: options.dlq_topic(topic),
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        let _ = self.inner.client.flush().await;
        Ok(())
    }
}
