//! The RabbitMQ transport: the builder and the `Transport` impl, which
//! delegates to `publisher`, `subscriber` and `dead_letters` (queues and
//! exchanges are declared in `core`).

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use transport_core::backend::Lifecycle;
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, Error, KeyOrdering, Result, SubscribeOptions,
    Transport,
};

use crate::acks::Outstanding;
use crate::config::RabbitConfig;
use crate::core::Conn;
use crate::dead_letters::RabbitDeadLetters;
use crate::SCHEME;

/// Builds a [`RabbitTransport`].
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
    pub async fn connect(self) -> Result<RabbitTransport> {
        RabbitTransport::with_config(self.config).await
    }
}

/// A RabbitMQ transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct RabbitTransport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Conn,
    pub(crate) lifecycle: Lifecycle,
    /// Every subscription's batched acks, so that `close` sends them
    /// before the connection goes.
    pub(crate) acks: Mutex<Vec<Weak<Outstanding>>>,
}

impl RabbitTransport {
    /// The ack table of a new subscription, registered for `close`.
    pub(crate) fn outstanding(&self, prefetch: usize) -> Arc<Outstanding> {
        let outstanding = Arc::new(Outstanding::new(prefetch));
        let mut all = self.inner.acks.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&outstanding));
        outstanding
    }
}

impl fmt::Debug for RabbitTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitTransport")
            .field("config", self.inner.conn.config())
            .finish_non_exhaustive()
    }
}

pub(crate) fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

pub(crate) fn work_queue(topic: &str, group: &str) -> String {
    // '/' is not allowed in topic or group names: no collision with anything else.
    format!("{topic}/{group}")
}

pub(crate) fn dlq_queue(dlq_topic: &str) -> String {
    format!("{dlq_topic}/#dlq")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RabbitTransport {
    /// A builder.
    pub fn builder() -> RabbitBuilder {
        RabbitBuilder::default()
    }

    /// Connect to an `amqp://` or `amqps://` URL (see [`RabbitConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(RabbitConfig::from_url(url).map_err(tag("connect"))?).await
    }

    /// Connect with a configuration.
    pub async fn with_config(config: RabbitConfig) -> Result<Self> {
        Ok(RabbitTransport {
            inner: Arc::new(Inner {
                conn: Conn::open(config).await?,
                lifecycle: Lifecycle::new(SCHEME),
                acks: Mutex::default(),
            }),
        })
    }

    pub(crate) fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }
}

#[async_trait]
impl Transport for RabbitTransport {
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

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.check_open("dead_letters")?;
        options.validate(topic).map_err(tag("dead_letters"))?;
        let name = options.dlq_topic(topic);
        Ok(Box::new(RabbitDeadLetters {
            transport: self.clone(),
            queue: dlq_queue(&name),
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
