//! The RabbitMQ transport: the builder, and the raw backend the core wraps,
//! which delegates to `publisher`, `subscriber` (with `settle`),
//! `dead_letter_queue` and `backlog` (queues and exchanges are declared in
//! `provision`).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result,
    SubscribeOptions, Transport,
};

use crate::config::RabbitConfig;
use crate::core::Rabbit;
use crate::dead_letter_queue::RabbitDeadLetters;
use crate::{names, SCHEME};

/// Builds a RabbitMQ transport.
#[derive(Debug, Clone, Default)]
pub struct RabbitBuilder {
    pub(crate) config: RabbitConfig,
}

impl RabbitBuilder {
    /// Host and port.
    pub fn host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.config.host = host.into();
        self.config.port = port;
        self
    }
    /// Virtual host.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.config.vhost = vhost.into();
        self
    }
    /// User and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<transport_core::Secret>) -> Self {
        self.config.user = user.into();
        self.config.password = password.into();
        self
    }
    /// Use TLS.
    pub fn tls(mut self, tls: bool) -> Self {
        self.config.tls = tls;
        self
    }
    /// One active consumer per group (strict order, no competition).
    pub fn single_active_consumer(mut self, on: bool) -> Self {
        self.config.single_active_consumer = on;
        self
    }
    /// Most publishes in flight without a confirm (default 1024; see
    /// [`RabbitConfig::publish_window`]).
    pub fn publish_window(mut self, messages: usize) -> Self {
        self.config.publish_window = messages.max(1);
        self
    }
    /// The nodes of a cluster (`host:port`), tried in turn: every queue is
    /// then a replicated quorum queue.
    pub fn nodes(mut self, nodes: Vec<String>) -> Self {
        self.config.nodes = nodes;
        self
    }
    /// Members of each quorum queue declared (default: the broker's, every
    /// node of the cluster).
    pub fn quorum_group_size(mut self, members: u32) -> Self {
        self.config.quorum_group_size = Some(members.max(1));
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<Arc<dyn Transport>> {
        RabbitTransport::with_config(self.config).await
    }
}

/// A RabbitMQ transport (see the crate docs for the mapping):
/// `RabbitTransport::connect("amqp://...")`, `RabbitTransport::builder()` or
/// `RabbitTransport::with_config(config)`, each returning the [`Transport`]
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type RabbitTransport = Connector<RabbitConfig>;

#[async_trait]
impl RawTransport for Rabbit {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKeySingleConsumer,
            nack_delay: true,
            dead_letter_ops: true,
            ack_timeout_redelivery: true,
            durable: true,
            max_message_size: Some(self.inner.conn.config().max_message_size),
            backlog: BacklogAccuracy {
                waiting: Accuracy::Approximate,
                dead_letters: Accuracy::Exact,
                ..BacklogAccuracy::default()
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
        let name = options.dlq_topic(topic);
        Ok(Box::new(RabbitDeadLetters {
            rabbit: self.clone(),
            queue: names::dlq_queue(&name),
            topic: name,
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        let acks: Vec<_> = {
            let all = self.inner.acks.lock().unwrap_or_else(|e| e.into_inner());
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for outstanding in acks {
            outstanding.flush(true).await;
        }
        self.inner.conn.close().await;
        Ok(())
    }
}
