//! The NATS JetStream transport: the builder, and the raw backend the core
//! wraps (`core::Nats`), which delegates to `publisher`, `subscriber`,
//! `dead_letter_queue` and `backlog`.

use std::sync::Arc;

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result,
    SubscribeOptions, Transport,
};

use crate::config::{NatsConfig, Storage};
use crate::core::Nats;
use crate::dead_letter_queue::NatsDeadLetters;
use crate::SCHEME;

/// Builds a NATS JetStream transport.
#[derive(Debug, Clone, Default)]
pub struct NatsBuilder {
    pub(crate) config: NatsConfig,
}

impl NatsBuilder {
    /// Server addresses.
    pub fn servers(mut self, servers: Vec<String>) -> Self {
        self.config.servers = servers;
        self
    }
    /// User and password.
    pub fn user_and_password(mut self, user: impl Into<String>, password: impl Into<transport_core::Secret>) -> Self {
        self.config.user = Some(user.into());
        self.config.password = Some(password.into());
        self
    }
    /// Token.
    pub fn token(mut self, token: impl Into<transport_core::Secret>) -> Self {
        self.config.token = Some(token.into());
        self
    }
    /// Require TLS.
    pub fn tls(mut self, tls: bool) -> Self {
        self.config.tls = tls;
        self
    }
    /// Storage of streams created on demand.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.config.storage = storage;
        self
    }
    /// Wait for the server's confirmation of every ack.
    pub fn double_ack(mut self, on: bool) -> Self {
        self.config.double_ack = on;
        self
    }
    /// How long connecting may take.
    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }
    /// How long any request may go unanswered (default 10 s).
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }
    /// Replicas of the streams this backend creates (1 to 5, default 1;
    /// 3 on a three-node cluster, so a stream survives losing a node).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.config.replicas = replicas;
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<Arc<dyn Transport>> {
        NatsTransport::with_config(self.config).await
    }
}

/// A NATS JetStream transport (see the crate docs for the mapping):
/// `NatsTransport::connect("nats://...")`, `NatsTransport::builder()` or
/// `NatsTransport::with_config(config)`, each returning the [`Transport`]
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
