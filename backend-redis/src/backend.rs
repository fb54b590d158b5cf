//! The Redis Streams transport: the builder and the `Transport` impl, which
//! delegates to `provision`, `publisher`, `subscriber` and `dead_letters`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use transport_core::backend::Lifecycle;
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, Error, KeyOrdering, Result, Secret, SubscribeOptions,
    Transport,
};

use crate::config::RedisConfig;
use crate::core::{self, Conn};
use crate::dead_letters::RedisDeadLetters;
use crate::SCHEME;

/// Builds a [`RedisTransport`].
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
    pub async fn connect(self) -> Result<RedisTransport> {
        RedisTransport::with_config(self.config).await
    }
}

/// A Redis Streams transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct RedisTransport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) conn: Conn,
    pub(crate) lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

impl RedisTransport {
    /// A builder.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// Connect to a `redis://` or `rediss://` URL (see [`RedisConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(RedisConfig::from_url(url).map_err(tag("connect"))?).await
    }

    /// Connect with a configuration.
    pub async fn with_config(config: RedisConfig) -> Result<Self> {
        config.check_cluster().map_err(tag("connect"))?;
        let conn = core::connect(&config, config.command_timeout).await?;
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                config,
                conn,
                lifecycle: Arc::new(Lifecycle::new(SCHEME)),
            }),
        })
    }

    pub(crate) fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }
}

#[async_trait]
impl Transport for RedisTransport {
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
            max_message_size: Some(self.inner.config.max_message_size),
            backlog: BacklogAccuracy::EXACT,
            ..Capabilities::default()
        }
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.check_open("dead_letters")?;
        options.validate(topic).map_err(tag("dead_letters"))?;
        let name = options.dlq_topic(topic);
        Ok(Box::new(RedisDeadLetters {
            transport: self.clone(),
            key: format!("{}{name}", self.inner.config.key_prefix),
            topic: name,
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.check_open("backlog")?;
        options.validate(topic).map_err(tag("backlog"))?;
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.lifecycle.close();
        Ok(())
    }
}
