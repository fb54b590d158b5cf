//! The SQS + SNS transport: the builder and the `Transport` impl, which
//! delegates to `provision`, `publisher`, `subscriber` and `dead_letters`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use transport_core::backend::Lifecycle;
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, Error, ErrorKind, KeyOrdering, Result,
    SubscribeOptions, Transport,
};

use crate::config::SqsConfig;
use crate::core::{self, map_sdk};
use crate::dead_letters::SqsDeadLetters;
use crate::SCHEME;

/// Largest payload that fits 256 KiB even base64-encoded, with room for
/// the attributes.
pub(crate) const MAX_MESSAGE: usize = (core::WIRE_LIMIT - 8 * 1024) / 4 * 3;
/// Longest visibility timeout / nack delay SQS allows.
pub(crate) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// Dead letters a peek or redrive looks at to find the oldest.
pub(crate) const DLQ_SCAN: usize = 1000;

/// Builds an [`SqsTransport`].
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
    pub async fn connect(self) -> Result<SqsTransport> {
        SqsTransport::with_config(self.config).await
    }
}

/// An SQS + SNS transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct SqsTransport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: SqsConfig,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sns: aws_sdk_sns::Client,
    pub(crate) topics: Mutex<HashMap<String, String>>,
    pub(crate) queues: Mutex<HashMap<String, (String, String)>>,
    pub(crate) lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for SqsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

pub(crate) fn secs(d: Duration) -> i32 {
    d.min(MAX_VISIBILITY).as_secs_f64().ceil() as i32
}

impl SqsTransport {
    /// A builder.
    pub fn builder() -> SqsBuilder {
        SqsBuilder::default()
    }

    /// Connect from an `sqs://` URL (see [`SqsConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(SqsConfig::from_url(url).map_err(tag("connect"))?).await
    }

    /// Connect with a configuration; checks the endpoint and credentials
    /// with one cheap call.
    pub async fn with_config(config: SqsConfig) -> Result<Self> {
        config.check_region().map_err(tag("connect"))?;
        let sdk = config.sdk_config().await;
        let t = SqsTransport {
            inner: Arc::new(Inner {
                sqs: aws_sdk_sqs::Client::new(&sdk),
                sns: aws_sdk_sns::Client::new(&sdk),
                config,
                topics: Mutex::default(),
                queues: Mutex::default(),
                lifecycle: Arc::new(Lifecycle::new(SCHEME)),
            }),
        };
        let limit = t.inner.config.connect_timeout;
        let check = t.inner.sqs.list_queues().max_results(1).send();
        match tokio::time::timeout(limit, check).await {
            Ok(answer) => answer.map_err(|e| map_sdk("connect", e))?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                    "no answer from the endpoint within {limit:?} (connect_timeout_ms); check the endpoint and region"
                ),
                )
                .with_backend(SCHEME)
                .with_operation("connect"))
            }
        };
        Ok(t)
    }

    pub(crate) fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }

    pub(crate) fn fifo(&self) -> bool {
        self.inner.config.fifo
    }

    pub(crate) fn point_to_point(&self) -> bool {
        self.inner.config.point_to_point
    }
}

#[async_trait]
impl Transport for SqsTransport {
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

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.check_open("dead_letters")?;
        options.validate(topic).map_err(tag("dead_letters"))?;
        let name = options.dlq_topic(topic);
        Ok(Box::new(SqsDeadLetters {
            transport: self.clone(),
            queue_name: core::dlq_queue_name(&self.inner.config, &name),
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
