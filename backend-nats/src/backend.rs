//! The NATS JetStream transport: the builder and the `Transport` impl, which
//! delegates to `provision`, `publisher`, `subscriber` and `dead_letters`.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self};
use async_trait::async_trait;
use transport_core::backend::Lifecycle;
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, Error, ErrorKind, KeyOrdering, Result, SubscribeOptions,
    Transport,
};

use crate::config::{NatsConfig, Storage};
use crate::core::{self, err};
use crate::dead_letters::NatsDeadLetters;
use crate::SCHEME;

/// Headers and framing NATS adds on top of what `Message::encoded_len` counts.
pub(crate) const HEADER_OVERHEAD: usize = 4096;

/// Builds a [`NatsTransport`].
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
    pub async fn connect(self) -> Result<NatsTransport> {
        NatsTransport::with_config(self.config).await
    }
}

/// A NATS JetStream transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct NatsTransport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: NatsConfig,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Streams known to exist, by name.
    pub(crate) streams: Mutex<HashSet<String>>,
    pub(crate) max_message_size: usize,
    pub(crate) lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

impl NatsTransport {
    /// A builder.
    pub fn builder() -> NatsBuilder {
        NatsBuilder::default()
    }

    /// Connect to a `nats://` or `tls://` URL (see [`NatsConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(NatsConfig::from_url(url).map_err(tag("connect"))?).await
    }

    /// Connect with a configuration.
    pub async fn with_config(config: NatsConfig) -> Result<Self> {
        if !(1..=5).contains(&config.replicas) {
            return Err(tag("connect")(Error::invalid(format!(
                "replicas must be 1 to 5, got {}",
                config.replicas
            ))));
        }
        let client = core::connect(&config).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.request_timeout);
        // Fail now, clearly, when the server has no JetStream: the API
        // answers even for a stream that does not exist.
        let probe = client
            .request("$JS.API.INFO", transport_core::Bytes::new())
            .await
            .map_err(|e| {
                err(
                    ErrorKind::Unsupported,
                    "connect",
                    format!("JetStream is not available ({e}); start nats-server with -js"),
                )
            })?;
        if String::from_utf8_lossy(&probe.payload).contains("\"error\"") {
            return Err(err(
                ErrorKind::Unauthorized,
                "connect",
                format!(
                    "JetStream refused the account: {}",
                    String::from_utf8_lossy(&probe.payload)
                ),
            ));
        }
        let max_message_size = client.server_info().max_payload.saturating_sub(HEADER_OVERHEAD);
        Ok(NatsTransport {
            inner: Arc::new(Inner {
                config,
                client,
                js,
                streams: Mutex::default(),
                max_message_size,
                lifecycle: Arc::new(Lifecycle::new(SCHEME)),
            }),
        })
    }

    pub(crate) fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }
}

#[async_trait]
impl Transport for NatsTransport {
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

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.check_open("dead_letters")?;
        options.validate(topic).map_err(tag("dead_letters"))?;
        Ok(Box::new(NatsDeadLetters {
            transport: self.clone(),
            topic: options.dlq_topic(topic),
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.check_open("backlog")?;
        options.validate(topic).map_err(tag("backlog"))?;
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.lifecycle.close();
        let _ = self.inner.client.flush().await;
        Ok(())
    }
}
