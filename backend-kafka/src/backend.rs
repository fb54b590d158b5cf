//! The Kafka transport: builder, topics, publish, subscribe and the
//! dead-letter operations.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rdkafka::Message as _;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::{
    Capabilities, DeadLetter, DeadLetterQueue, Error, ErrorKind, KeyOrdering, Message, Publisher, Redrive, Result,
    SubscribeOptions, Subscriber, Subscription, Transport,
};

use crate::config::{KafkaConfig, SaslMechanism};
use crate::core::{self, err, kafka, Context};
use crate::{consumer, SCHEME};

/// Room librdkafka needs above the largest message for the record batch.
const BATCH_OVERHEAD: usize = 64 * 1024;

/// Builds a [`KafkaTransport`].
#[derive(Debug, Clone, Default)]
pub struct KafkaBuilder {
    config: KafkaConfig,
}

impl KafkaBuilder {
    /// Bootstrap brokers (`host:port`).
    pub fn brokers(mut self, brokers: Vec<String>) -> Self {
        self.config.brokers = brokers;
        self
    }
    /// SASL authentication.
    pub fn sasl(
        mut self,
        mechanism: SaslMechanism,
        user: impl Into<String>,
        password: impl Into<transport_core::Secret>,
    ) -> Self {
        self.config.sasl = Some(mechanism);
        self.config.user = Some(user.into());
        self.config.password = Some(password.into());
        self
    }
    /// TLS, optionally with a CA file (PEM).
    pub fn tls(mut self, ca_file: Option<String>) -> Self {
        self.config.tls = true;
        self.config.ca_file = ca_file;
        self
    }
    /// Create missing topics (default on).
    pub fn create_topics(mut self, on: bool) -> Self {
        self.config.create_topics = on;
        self
    }
    /// Partitions of topics created on demand.
    pub fn partitions(mut self, n: i32) -> Self {
        self.config.partitions = n;
        self
    }
    /// Consumer-group session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }
    /// Replication factor of topics created on demand.
    pub fn replication(mut self, n: i32) -> Self {
        self.config.replication = n;
        self
    }
    /// Largest message accepted (at most the broker's `message.max.bytes`).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.config.max_message_bytes = n;
        self
    }
    /// How long a publish may wait for its delivery report.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }
    /// Kafka group ids `<topic>.<group>` (default) or the group name as is.
    pub fn scoped_groups(mut self, on: bool) -> Self {
        self.config.scoped_groups = on;
        self
    }
    /// Whether `purge` sends DeleteRecords (off for brokers without it).
    pub fn purge_deletes_records(mut self, on: bool) -> Self {
        self.config.purge_deletes_records = on;
        self
    }
    /// Connect.
    pub async fn connect(self) -> Result<KafkaTransport> {
        KafkaTransport::with_config(self.config).await
    }
}

/// A Kafka transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    context: Context,
    producer: FutureProducer<Context>,
    admin: AdminClient<Context>,
    /// Topics known to exist.
    topics: Mutex<HashSet<String>>,
    closed: AtomicBool,
}

impl fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

/// Run a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(op: &'static str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| err(ErrorKind::Backend, op, e))?
}

impl KafkaTransport {
    /// A builder.
    pub fn builder() -> KafkaBuilder {
        KafkaBuilder::default()
    }

    /// Connect to a `kafka://` or `kafka+ssl://` URL (see [`KafkaConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(KafkaConfig::from_url(url).map_err(tag("connect"))?).await
    }

    /// Connect with a configuration. Fails fast (within `request_timeout`)
    /// when the brokers cannot be reached or refuse the credentials.
    pub async fn with_config(config: KafkaConfig) -> Result<Self> {
        let op = "connect";
        config.validate().map_err(tag(op))?;
        let context = Context::default();
        let mut pc = core::client_config(&config);
        pc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", config.publish_timeout.as_millis().to_string())
            .set(
                "message.max.bytes",
                (config.max_message_bytes + BATCH_OVERHEAD).to_string(),
            )
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("allow.auto.create.topics", "false");
        let producer: FutureProducer<Context> = pc.create_with_context(context.clone()).map_err(|e| kafka(op, e))?;
        let admin: AdminClient<Context> = core::client_config(&config)
            .create_with_context(context.clone())
            .map_err(|e| kafka(op, e))?;
        let transport = KafkaTransport {
            inner: Arc::new(Inner {
                config,
                context,
                producer,
                admin,
                topics: Mutex::default(),
                closed: AtomicBool::new(false),
            }),
        };
        // Metadata is the cheapest request that proves the brokers answer and
        // accept the credentials; librdkafka would otherwise retry quietly.
        let t = transport.clone();
        let timeout = t.inner.config.request_timeout;
        let probe = blocking(op, move || {
            t.inner
                .producer
                .client()
                .fetch_metadata(None, timeout)
                .map(drop)
                .map_err(|e| t.connect_error(e))
        })
        .await;
        probe?;
        Ok(transport)
    }

    fn connect_error(&self, e: KafkaError) -> Error {
        if let Some(why) = self.inner.context.auth_failure() {
            return err(
                ErrorKind::Unauthorized,
                "connect",
                format!("{why}; check the credentials"),
            );
        }
        let mut e = kafka("connect", e);
        if e.kind() == ErrorKind::Timeout || e.kind() == ErrorKind::Backend {
            e = err(
                ErrorKind::ConnectionLost,
                "connect",
                format!(
                    "{e}; no Kafka broker answered at {}",
                    self.inner.config.brokers.join(",")
                ),
            )
            .with_retryable(true);
        }
        e
    }

    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    pub(crate) fn context(&self) -> Context {
        self.inner.context.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(AtomicOrdering::Acquire)
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.is_closed() {
            return Err(err(ErrorKind::Closed, op, "the transport was closed"));
        }
        Ok(())
    }

    fn check_message(&self, m: &Message) -> Result<()> {
        m.validate()?;
        m.check_size(self.inner.config.max_message_bytes)
    }

    fn known(&self, topic: &str) -> bool {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic)
    }

    /// Make sure `topic` exists: create it (with `partitions`) when allowed,
    /// otherwise `NotFound` when missing.
    pub(crate) async fn ensure_topic(&self, op: &'static str, topic: &str, partitions: i32) -> Result<()> {
        if self.known(topic) {
            return Ok(());
        }
        let c = &self.inner.config;
        if c.create_topics {
            let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(c.replication));
            let options = AdminOptions::new().operation_timeout(Some(c.request_timeout));
            let results = self
                .inner
                .admin
                .create_topics([&new], &options)
                .await
                .map_err(|e| kafka(op, e))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(err(core::kind_of(code), op, format!("creating topic {name}: {code}")));
                    }
                }
            }
        }
        // Wait until the topic shows in metadata with its partitions, so a
        // consumer or producer started next finds it.
        let t = self.clone();
        let name = topic.to_owned();
        let create = c.create_topics;
        let timeout = c.request_timeout;
        blocking(op, move || {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let found = t
                    .inner
                    .producer
                    .client()
                    .fetch_metadata(Some(&name), timeout)
                    .map_err(|e| kafka(op, e))?
                    .topics()
                    .iter()
                    .any(|m| m.name() == name && m.error().is_none() && !m.partitions().is_empty());
                if found {
                    return Ok(());
                }
                if !create || std::time::Instant::now() > deadline {
                    return Err(err(
                        ErrorKind::NotFound,
                        op,
                        format!("topic {name} does not exist (and creating topics is off)"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await?;
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned());
        Ok(())
    }

    fn record<'a>(topic: &'a str, m: &'a Message) -> FutureRecord<'a, str, [u8]> {
        let mut r = FutureRecord::to(topic)
            .payload(m.payload.as_ref())
            .headers(core::encode_headers(m));
        if let Some(k) = &m.key {
            r = r.key(k.as_str());
        }
        r
    }

    fn delivery_error(&self, op: &'static str, e: KafkaError) -> Error {
        if let Some(why) = self.inner.context.auth_failure() {
            return err(ErrorKind::Unauthorized, op, why);
        }
        kafka(op, e)
    }

    /// Publish one message and wait for its delivery report (no checks:
    /// callers validated it; dead-letter copies may carry more headers).
    pub(crate) async fn produce(&self, op: &'static str, topic: &str, m: &Message) -> Result<()> {
        self.ensure_topic(op, topic, self.inner.config.partitions).await?;
        self.inner
            .producer
            .send(
                Self::record(topic, m),
                Timeout::After(self.inner.config.publish_timeout),
            )
            .await
            .map(drop)
            .map_err(|(e, _)| self.delivery_error(op, e))
    }
}

#[async_trait]
impl Publisher for KafkaTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.check_open("publish")?;
        validate_topic(topic).map_err(tag("publish"))?;
        self.check_message(&message).map_err(tag("publish"))?;
        self.produce("publish", topic, &message).await
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
        self.ensure_topic(op, topic, self.inner.config.partitions).await?;
        // Enqueue in order (librdkafka keeps the order per partition, and
        // idempotence keeps it across retries), then await every report.
        let mut reports = Vec::with_capacity(messages.len());
        for m in &messages {
            let mut record = Self::record(topic, m);
            loop {
                match self.inner.producer.send_result(record) {
                    Ok(report) => {
                        reports.push(report);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.inner.producer.poll(Duration::from_millis(1));
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        reports.truncate(0);
                        return Err(self.delivery_error(op, e));
                    }
                }
            }
        }
        let mut failed = Vec::new();
        let mut first_kind = None;
        for (m, report) in messages.iter().zip(reports) {
            let outcome = match report.await {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(self.delivery_error(op, e)),
                Err(_) => Some(err(ErrorKind::ConnectionLost, op, "the producer went away")),
            };
            if let Some(e) = outcome {
                first_kind.get_or_insert(e.kind());
                failed.push(format!("{} ({e})", m.id));
            }
        }
        match (failed.len(), first_kind) {
            (0, _) => Ok(()),
            (n, Some(kind)) if n == messages.len() => Err(err(
                kind,
                op,
                format!("no message was published: {}", failed.join(", ")),
            )),
            _ => Err(err(
                ErrorKind::PartialFailure,
                op,
                format!("not published: {}", failed.join(", ")),
            )),
        }
    }
}

#[async_trait]
impl Subscriber for KafkaTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        self.ensure_topic(op, topic, self.inner.config.partitions).await?;
        self.ensure_topic(op, &options.dlq_topic(topic), self.inner.config.dlq_partitions)
            .await?;
        consumer::subscribe(self.clone(), topic, options).await
    }
}

/// A group's dead-letter topic, read with the library's own group
/// (`dlq_group`), whose committed offsets mark what was redriven or purged.
struct KafkaDeadLetters {
    transport: KafkaTransport,
    topic: String,
    consumer: Arc<BaseConsumer<Context>>,
}

/// A record read from the dead-letter topic.
struct Dead {
    partition: i32,
    offset: i64,
    timestamp: i64,
    message: Message,
}

impl KafkaDeadLetters {
    /// Per partition: (first offset not yet redriven or purged, high watermark).
    fn ranges(&self, op: &'static str) -> Result<Vec<(i32, i64, i64)>> {
        let timeout = self.transport.inner.config.request_timeout;
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| kafka(op, e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| kafka(op, e))?;
        let mut out = Vec::new();
        for p in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, timeout)
                .map_err(|e| kafka(op, e))?;
            let done = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            out.push((p, done.max(low).min(high), high));
        }
        Ok(out)
    }

    /// The oldest `n` records not yet redriven or purged (by timestamp
    /// across partitions), left in place.
    fn oldest(&self, op: &'static str, n: u64) -> Result<Vec<Dead>> {
        let ranges: Vec<(i32, i64, i64)> = self.ranges(op)?.into_iter().filter(|(_, s, h)| s < h).collect();
        if ranges.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, start, _) in &ranges {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*start));
        }
        self.consumer.assign(&tpl).map_err(|e| kafka(op, e))?;
        let mut out = Vec::new();
        let mut remaining: std::collections::HashMap<i32, (i64, u64)> = ranges
            .iter()
            .map(|(p, s, h)| (*p, (*h, ((h - s) as u64).min(n))))
            .collect();
        let deadline = std::time::Instant::now() + self.transport.inner.config.request_timeout * 2;
        while remaining.values().any(|(_, left)| *left > 0) {
            if std::time::Instant::now() > deadline {
                let _ = self.consumer.unassign();
                return Err(err(ErrorKind::Timeout, op, "reading the dead-letter topic timed out"));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(record)) => {
                    if let Some((high, left)) = remaining.get_mut(&record.partition()) {
                        if *left > 0 && record.offset() < *high {
                            *left -= 1;
                            out.push(Dead {
                                partition: record.partition(),
                                offset: record.offset(),
                                timestamp: record.timestamp().to_millis().unwrap_or(0),
                                message: core::decode(&record),
                            });
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = self.consumer.unassign();
                    return Err(kafka(op, e));
                }
                None => {}
            }
        }
        let _ = self.consumer.unassign();
        out.sort_by_key(|d| (d.timestamp, d.partition, d.offset));
        out.truncate(n as usize);
        Ok(out)
    }

    fn commit(&self, op: &'static str, partition: i32, offset: i64) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| kafka(op, e))
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(KafkaDeadLetters) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = KafkaDeadLetters {
            transport: self.transport.clone(),
            topic: self.topic.clone(),
            consumer: self.consumer.clone(),
        };
        blocking(op, move || f(me)).await
    }
}

#[async_trait]
impl DeadLetterQueue for KafkaDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        self.run("depth", |d| {
            Ok(d.ranges("depth")?.iter().map(|(_, s, h)| (h - s) as u64).sum())
        })
        .await
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let dead = self.run("peek", move |d| d.oldest("peek", n as u64)).await?;
        Ok(dead.into_iter().map(|d| DeadLetter::from_message(d.message)).collect())
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let op = "redrive";
        let limit = count.limit();
        let dead = self.run(op, move |d| d.oldest(op, limit)).await?;
        let mut moved = 0;
        for d in dead {
            let (topic, message) = redrive_message(&d.message).map_err(tag(op))?;
            validate_topic(&topic).map_err(tag(op))?;
            // Published (report awaited) before the offset moves past it:
            // never lost, at worst redriven twice.
            self.transport.produce(op, &topic, &message).await?;
            let (partition, next) = (d.partition, d.offset + 1);
            self.run(op, move |q| q.commit(op, partition, next)).await?;
            moved += 1;
        }
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        let op = "purge";
        // Kafka cannot delete single records: the ops group's offset moves to
        // the end (what depth, peek and redrive see), and the records are
        // also deleted up to there where the broker supports DeleteRecords.
        let (count, ends) = self
            .run(op, |d| {
                let ranges = d.ranges(op)?;
                let count = ranges.iter().map(|(_, s, h)| (h - s) as u64).sum::<u64>();
                for (p, s, h) in &ranges {
                    if s < h {
                        d.commit(op, *p, *h)?;
                    }
                }
                Ok((count, ranges))
            })
            .await?;
        if count > 0 && self.transport.inner.config.purge_deletes_records {
            let mut tpl = TopicPartitionList::new();
            for (p, _, h) in &ends {
                let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*h));
            }
            let options = AdminOptions::new().operation_timeout(Some(self.transport.inner.config.request_timeout));
            if let Err(e) = self.transport.inner.admin.delete_records(&tpl, &options).await {
                tracing::debug!(error = %e, topic = %self.topic, "DeleteRecords not applied; records stay until retention");
            }
        }
        Ok(count)
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKey,
            ordering_across_nack: true,
            nack_delay: true,
            dead_letter_ops: true,
            replay: true,
            ack_timeout_redelivery: true,
            durable: true,
            max_message_size: Some(self.inner.config.max_message_bytes),
            ..Capabilities::default()
        }
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let op = "dead_letters";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        let dlq = options.dlq_topic(topic);
        self.ensure_topic(op, &dlq, self.inner.config.dlq_partitions).await?;
        let mut cc = core::client_config(&self.inner.config);
        cc.set("group.id", &self.inner.config.dlq_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100");
        let consumer: BaseConsumer<Context> = cc.create_with_context(self.context()).map_err(|e| kafka(op, e))?;
        Ok(Box::new(KafkaDeadLetters {
            transport: self.clone(),
            topic: dlq,
            consumer: Arc::new(consumer),
        }))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, AtomicOrdering::Release);
        let t = self.clone();
        blocking("close", move || {
            t.inner
                .producer
                .flush(t.inner.config.publish_timeout)
                .map_err(|e| kafka("close", e))
        })
        .await
    }
}
