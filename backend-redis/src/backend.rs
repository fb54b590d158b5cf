//! The Redis Streams transport: the builder, and the raw backend the core
//! wraps, which delegates to `publisher`, `subscriber`, `dead_letter_queue`
//! and `backlog`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result, Secret,
    SubscribeOptions, Transport,
};

use crate::config::RedisConfig;
use crate::core::Core;
use crate::dead_letter_queue::RedisDeadLetters;
use crate::{names, SCHEME};

/// Builds a Redis Streams transport.
#[derive(Debug, Clone, Default)]
pub struct RedisBuilder {
    pub(crate) config: RedisConfig,
}

impl RedisBuilder {
    /// Host and port.
    pub fn host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.config.host = host.into();
        self.config.port = port;
        self
    }
    /// Seed nodes (`host:port`) of a Redis Cluster: switches to cluster mode.
    pub fn cluster(mut self, nodes: Vec<String>) -> Self {
        self.config.cluster_nodes = nodes;
        self
    }
    /// Database number.
    pub fn db(mut self, db: i64) -> Self {
        self.config.db = db;
        self
    }
    /// ACL user and password.
    pub fn credentials(mut self, username: Option<String>, password: impl Into<Secret>) -> Self {
        self.config.username = username;
        self.config.password = Some(password.into());
        self
    }
    /// Use TLS.
    pub fn tls(mut self, tls: bool) -> Self {
        self.config.tls = tls;
        self
    }
    /// Prefix for every key this backend creates.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }
    /// Approximate stream length cap (`XADD MAXLEN ~`).
    pub fn max_len(mut self, entries: u64) -> Self {
        self.config.max_len = Some(entries);
        self
    }
    /// Replicas that must hold a publish before it returns (`WAIT`), and
    /// how long to wait for them.
    pub fn wait_replicas(mut self, replicas: u32, timeout: std::time::Duration) -> Self {
        self.config.wait_replicas = replicas;
        self.config.wait_timeout = timeout;
        self
    }
    /// Largest message in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<Arc<dyn Transport>> {
        RedisTransport::with_config(self.config).await
    }
}

/// A Redis Streams transport (see the crate docs for the mapping):
/// `RedisTransport::connect("redis://...")`, `RedisTransport::builder()` or
/// `RedisTransport::with_config(config)`, each returning the [`Transport`]
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type RedisTransport = Connector<RedisConfig>;

/// The raw backend the core's wrapper calls.
pub(crate) struct Redis {
    pub(crate) core: Arc<Core>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.core.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RawTransport for Redis {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKeySingleConsumer,
            nack_delay: true,
            dead_letter_ops: true,
            first_failure_time: true,
            replay: true,
            ack_timeout_redelivery: true,
            max_message_size: Some(self.core.config.max_message_size),
            backlog: BacklogAccuracy::EXACT,
            ..Capabilities::default()
        }
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.core.store(topic, messages).await
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        self.core.read(request).await
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let name = options.dlq_topic(topic);
        Ok(Box::new(RedisDeadLetters {
            core: self.core.clone(),
            key: names::stream(&self.core.config, &name),
            topic: name,
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.core.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
