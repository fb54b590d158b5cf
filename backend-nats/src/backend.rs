//! The NATS JetStream transport: builder, publish, subscribe, settle and the
//! dead-letter operations.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_trait::async_trait;
use futures::stream::StreamExt;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::backend::{on_drop, pull_subscription, Fetch, InFlightLimit, Lifecycle, Settler};
use transport_core::{
    Capabilities, DeadLetter, DeadLetterQueue, Delivery, DeliveryInfo, Error, ErrorKind, KeyOrdering, Message,
    Publisher, Redrive, Result, StartFrom, SubscribeOptions, Subscriber, Subscription, Transport,
};

use crate::config::{NatsConfig, Storage};
use crate::core::{self, err, other};
use crate::SCHEME;

/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_millis(500);
/// Headers and framing NATS adds on top of what `Message::encoded_len` counts.
const HEADER_OVERHEAD: usize = 4096;

/// Builds a [`NatsTransport`].
#[derive(Debug, Clone, Default)]
pub struct NatsBuilder {
    config: NatsConfig,
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
    /// Connect.
    pub async fn connect(self) -> Result<NatsTransport> {
        NatsTransport::with_config(self.config).await
    }
}

/// A NATS JetStream transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct NatsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    /// Streams known to exist, by name.
    streams: Mutex<HashSet<String>>,
    max_message_size: usize,
    lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn tag(op: &'static str) -> impl Fn(Error) -> Error {
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
        let client = core::connect(&config).await?;
        let js = jetstream::new(client.clone());
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

    fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }

    fn stream_name(&self, topic: &str) -> String {
        format!("{}{}", self.inner.config.stream_prefix, core::escape(topic))
    }

    /// Create the topic's stream unless known to exist.
    async fn ensure_stream(&self, topic: &str, op: &'static str) -> Result<stream::Stream> {
        let name = self.stream_name(topic);
        let c = &self.inner.config;
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_owned()],
            storage: match c.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: c.replicas,
            max_age: c.max_age.unwrap_or_default(),
            duplicate_window: c.duplicate_window,
            ..Default::default()
        };
        let s = self
            .inner
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| other(op, e))?;
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
        Ok(s)
    }

    fn stream_known(&self, topic: &str) -> bool {
        let name = self.stream_name(topic);
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name)
    }

    fn forget_stream(&self, topic: &str) {
        let name = self.stream_name(topic);
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
    }

    fn check_message(&self, m: &Message) -> Result<()> {
        m.validate()?;
        core::check_headers(m)?;
        m.check_size(self.inner.max_message_size)
    }

    /// Publish and wait for the `PubAck`; (re)creates the stream when missing.
    async fn publish_one(&self, op: &'static str, topic: &str, m: &Message, dedup: bool) -> Result<()> {
        if !self.stream_known(topic) {
            self.ensure_stream(topic, op).await?;
        }
        for attempt in 0..2 {
            let sent = self
                .inner
                .js
                .publish_with_headers(topic.to_owned(), core::encode(m, dedup), m.payload.clone())
                .await;
            let result = match sent {
                Ok(ack) => ack.await.map(drop),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    let kind = match e.kind() {
                        K::StreamNotFound if attempt == 0 => {
                            // Deleted behind our back: declare it again.
                            self.forget_stream(topic);
                            self.ensure_stream(topic, op).await?;
                            continue;
                        }
                        K::StreamNotFound => ErrorKind::NotFound,
                        K::TimedOut => ErrorKind::Timeout,
                        K::BrokenPipe => ErrorKind::ConnectionLost,
                        K::MaxPayloadExceeded => ErrorKind::MessageTooLarge,
                        _ => ErrorKind::Backend,
                    };
                    return Err(err(kind, op, e));
                }
            }
        }
        unreachable!("the loop returns")
    }
}

#[async_trait]
impl Publisher for NatsTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.check_open("publish")?;
        validate_topic(topic).map_err(tag("publish"))?;
        self.check_message(&message).map_err(tag("publish"))?;
        self.publish_one("publish", topic, &message, true).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let op = "publish_batch";
        self.check_open(op)?;
        validate_topic(topic).map_err(tag(op))?;
        for m in &messages {
            self.check_message(m).map_err(tag(op))?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        if !self.stream_known(topic) {
            self.ensure_stream(topic, op).await?;
        }
        // Send all, then wait for every PubAck: one connection keeps the order.
        let mut acks = Vec::with_capacity(messages.len());
        for m in &messages {
            let ack = self
                .inner
                .js
                .publish_with_headers(topic.to_owned(), core::encode(m, true), m.payload.clone())
                .await
                .map_err(|e| other(op, e))?;
            acks.push((m.id.clone(), ack));
        }
        for (id, ack) in acks {
            ack.await
                .map_err(|e| other(op, format!("message {id} was not confirmed: {e}")))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for NatsTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        let stream = self.ensure_stream(topic, op).await?;
        let dlq_topic = options.dlq_topic(topic);
        self.ensure_stream(&dlq_topic, op).await?;
        let durable = core::escape(&options.group);
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_timeout,
            deliver_policy: match options.start {
                StartFrom::Earliest => consumer::DeliverPolicy::All,
                StartFrom::Latest => consumer::DeliverPolicy::New,
            },
            // The library enforces max attempts (dead-letter, not drop), and
            // max_in_flight per subscription; the server limits stay wide.
            max_deliver: -1,
            max_ack_pending: 20_000,
            filter_subject: topic.to_owned(),
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| other(op, e))?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let shared = Arc::new(Shared {
            transport: self.clone(),
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            dlq_topic,
            options: options.clone(),
            in_flight: in_flight.clone(),
        });
        let fetch = NatsFetch {
            shared,
            consumer,
            batch: None,
        };
        Ok(pull_subscription(
            topic,
            options.group,
            self.inner.lifecycle.clone(),
            in_flight,
            fetch,
        ))
    }
}

struct Shared {
    transport: NatsTransport,
    topic: Arc<str>,
    group: Arc<str>,
    dlq_topic: String,
    options: SubscribeOptions,
    in_flight: Arc<InFlightLimit>,
}

/// Reads with pull batches of at most the free in-flight slots, one
/// message at a time as they arrive.
struct NatsFetch {
    shared: Arc<Shared>,
    consumer: consumer::PullConsumer,
    batch: Option<consumer::pull::Batch>,
}

#[async_trait]
impl Fetch for NatsFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let batch = match self.batch.as_mut() {
            Some(batch) => batch,
            None => {
                let batch = self
                    .consumer
                    .batch()
                    .max_messages(max)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                    .map_err(|e| other("receive", e))?;
                self.batch.insert(batch)
            }
        };
        match batch.next().await {
            None => {
                self.batch = None;
                Ok(Vec::new())
            }
            Some(Ok(msg)) => Ok(vec![self.delivery(msg)]),
            Some(Err(e)) => {
                self.batch = None;
                Err(other("receive", e))
            }
        }
    }
}

impl NatsFetch {
    fn delivery(&self, msg: jetstream::Message) -> Delivery {
        let s = &self.shared;
        let (attempt, published) = match msg.info() {
            Ok(info) => (info.delivered.max(1) as u32, Some(info.published)),
            Err(_) => (1, None),
        };
        let fallback = published
            .map(|p| p.unix_timestamp_nanos().to_string())
            .unwrap_or_default();
        let message = core::decode(msg.headers.as_ref(), msg.payload.clone(), || fallback);
        let info = DeliveryInfo {
            topic: s.topic.clone(),
            group: s.group.clone(),
            attempt,
            max_attempts: s.options.dead_letter.max_attempts,
            ack_timeout: s.options.ack_timeout,
            // JetStream keeps no failure time; the publish time bounds it.
            first_failure: None,
        };
        let settler = NatsSettler {
            shared: s.clone(),
            msg: Some(msg),
        };
        transport_core::backend::delivery(Arc::new(message), info, Box::new(settler))
    }
}

struct NatsSettler {
    shared: Arc<Shared>,
    msg: Option<jetstream::Message>,
}

impl NatsSettler {
    fn take(&mut self) -> (Arc<Shared>, jetstream::Message) {
        let s = self.shared.clone();
        s.in_flight.release();
        (s, self.msg.take().expect("settled once"))
    }
}

#[async_trait]
impl Settler for NatsSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, msg) = self.take();
        let r = if s.transport.inner.config.double_ack {
            msg.double_ack().await
        } else {
            msg.ack().await
        };
        r.map_err(|e| other("ack", e))
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (_, msg) = self.take();
        msg.ack_with(AckKind::Nak(delay.filter(|d| !d.is_zero())))
            .await
            .map_err(|e| other("nack", e))
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, msg) = self.take();
        // Store the copy first, then terminate the original: a crash in
        // between duplicates the message, it never loses it.
        if let Err(e) = s.transport.publish_one("dead_letter", &s.dlq_topic, &dead, false).await {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return Err(e);
        }
        msg.ack_with(AckKind::Term).await.map_err(|e| other("dead_letter", e))
    }

    async fn extend(&self, _by: Duration) -> Result<()> {
        match &self.msg {
            Some(m) => m.ack_with(AckKind::Progress).await.map_err(|e| other("extend", e)),
            None => Err(err(ErrorKind::InvalidArgument, "extend", "delivery already settled")),
        }
    }
}

impl Drop for NatsSettler {
    fn drop(&mut self) {
        if self.msg.is_none() {
            return;
        }
        // Dropped unsettled: hand it back now rather than after ack_wait.
        let (_, msg) = self.take();
        on_drop(async move {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
        });
    }
}

/// A group's dead-letter stream.
struct NatsDeadLetters {
    transport: NatsTransport,
    topic: String,
}

impl NatsDeadLetters {
    async fn stream(&self, op: &'static str) -> Result<Option<stream::Stream>> {
        match self
            .transport
            .inner
            .js
            .get_stream(self.transport.stream_name(&self.topic))
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => Ok(None),
            Err(e) => Err(other(op, e)),
        }
    }

    /// The oldest `n` messages with their sequence numbers.
    async fn oldest(&self, op: &'static str, n: u64) -> Result<Vec<(u64, Message)>> {
        let Some(mut s) = self.stream(op).await? else {
            return Ok(Vec::new());
        };
        let state = s.info().await.map_err(|e| other(op, e))?.state.clone();
        let mut out = Vec::new();
        let mut seq = state.first_sequence;
        while (out.len() as u64) < n && seq <= state.last_sequence && state.messages > 0 {
            match s.get_raw_message(seq).await {
                Ok(raw) => {
                    let fallback = raw.sequence.to_string();
                    out.push((seq, core::decode(Some(&raw.headers), raw.payload, || fallback)));
                }
                Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => {}
                Err(e) => return Err(other(op, e)),
            }
            seq += 1;
        }
        Ok(out)
    }
}

#[async_trait]
impl DeadLetterQueue for NatsDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        match self.stream("depth").await? {
            Some(mut s) => Ok(s.info().await.map_err(|e| other("depth", e))?.state.messages),
            None => Ok(0),
        }
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .oldest("peek", n as u64)
            .await?
            .into_iter()
            .map(|(_, m)| DeadLetter::from_message(m))
            .collect())
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let Some(s) = self.stream("redrive").await? else {
            return Ok(0);
        };
        let mut moved = 0;
        for (seq, dead) in self.oldest("redrive", count.limit()).await? {
            let (topic, message) = redrive_message(&dead).map_err(tag("redrive"))?;
            validate_topic(&topic).map_err(tag("redrive"))?;
            // Publish (confirmed) first, then delete: never lost, at worst twice.
            self.transport.publish_one("redrive", &topic, &message, false).await?;
            s.delete_message(seq).await.map_err(|e| other("redrive", e))?;
            moved += 1;
        }
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        match self.stream("purge").await? {
            Some(s) => Ok(s.purge().await.map_err(|e| other("purge", e))?.purged),
            None => Ok(0),
        }
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

    async fn close(&self) -> Result<()> {
        self.inner.lifecycle.close();
        let _ = self.inner.client.flush().await;
        Ok(())
    }
}
