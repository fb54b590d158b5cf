//! The Redis Streams transport: builder, publish, subscribe, settle and the
//! dead-letter operations.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Value;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::backend::{on_drop, pull_subscription, Fetch, InFlightLimit, Lifecycle, Settler};
use transport_core::{
    Capabilities, DeadLetter, DeadLetterQueue, Delivery, DeliveryInfo, Error, ErrorKind, KeyOrdering, Message,
    Publisher, Redrive, Result, Secret, StartFrom, SubscribeOptions, Subscriber, Subscription, Transport,
};

use crate::config::RedisConfig;
use crate::core::{self, map_err, scripts, Entry};
use crate::SCHEME;

/// How long one `XREADGROUP` blocks. Short, so nacks without delay and
/// timed-out deliveries are picked up promptly by an idle consumer.
const BLOCK: Duration = Duration::from_millis(200);
/// How often nacked entries whose delay is over are claimed.
const DUE_INTERVAL: Duration = Duration::from_millis(100);

/// Builds a [`RedisTransport`].
#[derive(Debug, Clone, Default)]
pub struct RedisBuilder {
    config: RedisConfig,
}

impl RedisBuilder {
    /// Host and port.
    pub fn host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.config.host = host.into();
        self.config.port = port;
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
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    conn: ConnectionManager,
    lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The keys of one topic and group.
#[derive(Clone)]
struct Keys {
    stream: String,
    delayed: String,
    failures: String,
    dlq: String,
}

impl Keys {
    fn new(prefix: &str, topic: &str, options: &SubscribeOptions) -> Self {
        // ':' is not allowed in topic names, so these never collide with a stream.
        Keys {
            stream: format!("{prefix}{topic}"),
            delayed: format!("{prefix}{topic}:{}:delayed", options.group),
            failures: format!("{prefix}{topic}:{}:failures", options.group),
            dlq: format!("{prefix}{}", options.dlq_topic(topic)),
        }
    }
}

fn tag(op: &'static str) -> impl Fn(Error) -> Error {
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
        let conn = core::connect(&config, config.command_timeout).await?;
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                config,
                conn,
                lifecycle: Arc::new(Lifecycle::new(SCHEME)),
            }),
        })
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        self.inner.lifecycle.check(op)
    }

    fn xadd(&self, pipe: &mut redis::Pipeline, stream: &str, message: &Message) {
        let cmd = pipe.cmd("XADD").arg(stream);
        if let Some(n) = self.inner.config.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in core::encode(message) {
            cmd.arg(k).arg(v);
        }
    }

    fn check_message(&self, message: &Message) -> Result<()> {
        message.validate()?;
        message.check_size(self.inner.config.max_message_size)
    }
}

#[async_trait]
impl Publisher for RedisTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.publish_batch_inner("publish", topic, vec![message]).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.publish_batch_inner("publish_batch", topic, messages).await
    }
}

impl RedisTransport {
    async fn publish_batch_inner(&self, op: &'static str, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open(op)?;
        validate_topic(topic).map_err(tag(op))?;
        for m in &messages {
            self.check_message(m).map_err(tag(op))?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let stream = format!("{}{topic}", self.inner.config.key_prefix);
        // MULTI/EXEC: a batch is stored whole or not at all, in order.
        let mut pipe = redis::pipe();
        if messages.len() > 1 {
            pipe.atomic();
        }
        for m in &messages {
            self.xadd(&mut pipe, &stream, m);
            pipe.ignore();
        }
        let mut conn = self.inner.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| map_err(op, e))
    }
}

async fn create_group(conn: &mut ConnectionManager, keys: &Keys, group: &str, start: StartFrom) -> Result<()> {
    let id = match start {
        StartFrom::Earliest => "0",
        StartFrom::Latest => "$",
    };
    let r = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(group)
        .arg(id)
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map_err(|e| map_err("subscribe", e)),
    }
}

#[async_trait]
impl Subscriber for RedisTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.check_open("subscribe")?;
        options.validate(topic).map_err(tag("subscribe"))?;
        let keys = Keys::new(&self.inner.config.key_prefix, topic, &options);
        let mut control = self.inner.conn.clone();
        create_group(&mut control, &keys, &options.group, options.start).await?;
        // XREADGROUP BLOCK holds its connection: each subscription gets its own.
        let reader = core::connect(&self.inner.config, BLOCK + self.inner.config.command_timeout).await?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let consumer = Arc::new(ConsumerShared {
            control,
            keys,
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            name: format!("c-{}", uuid::Uuid::now_v7().simple()),
            options: options.clone(),
            in_flight: in_flight.clone(),
        });
        let fetch = RedisFetch {
            shared: consumer,
            reader,
            last_due: None,
            last_reclaim: Instant::now(),
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

/// What a subscription and its deliveries share.
struct ConsumerShared {
    /// Connection for settlement (not the blocking reader).
    control: ConnectionManager,
    keys: Keys,
    topic: Arc<str>,
    group: Arc<str>,
    name: String,
    options: SubscribeOptions,
    in_flight: Arc<InFlightLimit>,
}

/// One read: due nacks, timed-out deliveries, then new entries.
struct RedisFetch {
    shared: Arc<ConsumerShared>,
    reader: ConnectionManager,
    last_due: Option<Instant>,
    last_reclaim: Instant,
}

#[async_trait]
impl Fetch for RedisFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let entries = self.fill(max).await?;
        Ok(entries.into_iter().map(|e| self.delivery(e)).collect())
    }

    async fn recover(&mut self, error: &Error) -> Result<()> {
        if error.kind() == ErrorKind::NotFound {
            // The stream or group vanished (flushed, or a restart without
            // persistence): declare it again.
            let s = &self.shared;
            let mut conn = s.control.clone();
            create_group(&mut conn, &s.keys, &s.group, StartFrom::Earliest).await?;
        }
        Ok(())
    }
}

impl RedisFetch {
    /// Up to `capacity` entries: due nacks first, then timed-out
    /// deliveries, then new entries.
    async fn fill(&mut self, capacity: usize) -> Result<Vec<Entry>> {
        let mut buf = Vec::new();
        let s = self.shared.clone();
        let k = &s.keys;
        let now = Instant::now();
        if self.last_due.is_none_or(|t| now.duration_since(t) >= DUE_INTERVAL) {
            self.last_due = Some(now);
            let reply: Value = scripts()
                .claim_due
                .key(&k.stream)
                .key(&k.delayed)
                .key(&k.failures)
                .arg(&*s.group)
                .arg(&s.name)
                .arg(core::now_ms())
                .arg(capacity)
                .invoke_async(&mut self.reader)
                .await
                .map_err(|e| map_err("receive", e))?;
            buf.extend(core::parse_claimed(reply));
        }
        let reclaim_every = (s.options.ack_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        if buf.len() < capacity && now.duration_since(self.last_reclaim) >= reclaim_every {
            self.last_reclaim = now;
            let reply: Value = scripts()
                .reclaim
                .key(&k.stream)
                .key(&k.delayed)
                .key(&k.failures)
                .arg(&*s.group)
                .arg(&s.name)
                .arg(s.options.ack_timeout.as_millis() as u64)
                .arg(capacity - buf.len())
                .arg(core::now_ms())
                .invoke_async(&mut self.reader)
                .await
                .map_err(|e| map_err("receive", e))?;
            buf.extend(core::parse_claimed(reply));
        }
        if buf.is_empty() {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*s.group)
                .arg(&s.name)
                .arg("COUNT")
                .arg(capacity)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&k.stream)
                .arg(">")
                .query_async(&mut self.reader)
                .await
                .map_err(|e| map_err("receive", e))?;
            buf.extend(core::parse_read(reply));
        }
        Ok(buf)
    }

    fn delivery(&self, entry: Entry) -> Delivery {
        let s = &self.shared;
        let info = DeliveryInfo {
            topic: s.topic.clone(),
            group: s.group.clone(),
            attempt: entry.attempt,
            max_attempts: s.options.dead_letter.max_attempts,
            ack_timeout: s.options.ack_timeout,
            first_failure: entry.first_failure,
        };
        let settler = RedisSettler {
            shared: s.clone(),
            entry_id: entry.entry_id,
            settled: false,
        };
        transport_core::backend::delivery(Arc::new(entry.message), info, Box::new(settler))
    }
}

struct RedisSettler {
    shared: Arc<ConsumerShared>,
    entry_id: String,
    settled: bool,
}

impl RedisSettler {
    fn begin(&mut self) -> (Arc<ConsumerShared>, String) {
        self.settled = true;
        let s = self.shared.clone();
        s.in_flight.release();
        (s, std::mem::take(&mut self.entry_id))
    }
}

fn expired(op: &'static str) -> Error {
    Error::new(
        ErrorKind::DeliveryExpired,
        "the entry is no longer pending for the group (settled elsewhere or trimmed)",
    )
    .with_backend(SCHEME)
    .with_operation(op)
}

async fn nack_entry(s: &ConsumerShared, entry_id: &str, delay: Duration) -> Result<()> {
    let now = core::now_ms();
    let mut conn = s.control.clone();
    let k = &s.keys;
    let done: i64 = scripts()
        .nack
        .key(&k.stream)
        .key(&k.delayed)
        .key(&k.failures)
        .arg(&*s.group)
        .arg(entry_id)
        .arg(now + delay.as_millis() as u64)
        .arg(now)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| map_err("nack", e))?;
    if done == 0 {
        return Err(expired("nack"));
    }
    Ok(())
}

#[async_trait]
impl Settler for RedisSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, id) = self.begin();
        let k = &s.keys;
        let mut conn = s.control.clone();
        let _: i64 = scripts()
            .ack
            .key(&k.stream)
            .key(&k.delayed)
            .key(&k.failures)
            .arg(&*s.group)
            .arg(&id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_err("ack", e))?;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (s, id) = self.begin();
        nack_entry(&s, &id, delay.unwrap_or_default()).await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, id) = self.begin();
        let k = &s.keys;
        let mut invocation = scripts().dead_letter.prepare_invoke();
        invocation
            .key(&k.stream)
            .key(&k.delayed)
            .key(&k.failures)
            .key(&k.dlq)
            .arg(&*s.group)
            .arg(&id);
        for (f, v) in core::encode(&dead) {
            invocation.arg(f).arg(v);
        }
        let mut conn = s.control.clone();
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_err("dead_letter", e))?;
        if done == 0 {
            return Err(expired("dead_letter"));
        }
        Ok(())
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        // The ack timeout is "idle longer than ack_timeout" (XPENDING IDLE):
        // setting the entry's idle time to ack_timeout - by makes it due
        // exactly `by` from now. JUSTID leaves the delivery count alone.
        let s = &self.shared;
        let idle = s.options.ack_timeout.saturating_sub(by);
        let mut conn = s.control.clone();
        let claimed: Vec<String> = redis::cmd("XCLAIM")
            .arg(&s.keys.stream)
            .arg(&*s.group)
            .arg(&s.name)
            .arg(0)
            .arg(&self.entry_id)
            .arg("IDLE")
            .arg(idle.as_millis() as u64)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err("extend", e))?;
        if claimed.is_empty() {
            // No longer pending: acked, dead-lettered or trimmed meanwhile.
            return Err(expired("extend"));
        }
        Ok(())
    }
}

impl Drop for RedisSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: hand it back now rather than after the ack
        // timeout, when a runtime is there to do it.
        let (s, id) = self.begin();
        on_drop(async move {
            if let Err(e) = nack_entry(&s, &id, Duration::ZERO).await {
                tracing::debug!(error = %e, "returning a dropped delivery failed; the ack timeout will");
            }
        });
    }
}

/// A group's dead-letter stream.
struct RedisDeadLetters {
    transport: RedisTransport,
    topic: String,
    key: String,
}

impl RedisDeadLetters {
    fn conn(&self) -> ConnectionManager {
        self.transport.inner.conn.clone()
    }

    async fn range(&self, n: usize) -> Result<Vec<(String, Message)>> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(n)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| map_err("peek", e))?;
        Ok(core::parse_range(reply))
    }
}

#[async_trait]
impl DeadLetterQueue for RedisDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        redis::cmd("XLEN")
            .arg(&self.key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| map_err("depth", e))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .range(n)
            .await?
            .into_iter()
            .map(|(_, m)| DeadLetter::from_message(m))
            .collect())
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let mut moved = 0u64;
        let limit = count.limit();
        while moved < limit {
            let chunk = (limit - moved).min(100) as usize;
            let entries = self.range(chunk).await?;
            if entries.is_empty() {
                break;
            }
            for (entry_id, dead) in entries {
                let (topic, message) = redrive_message(&dead).map_err(tag("redrive"))?;
                validate_topic(&topic).map_err(tag("redrive"))?;
                let target = format!("{}{topic}", self.transport.inner.config.key_prefix);
                let mut invocation = scripts().redrive.prepare_invoke();
                invocation.key(&self.key).key(&target).arg(&entry_id);
                for (f, v) in core::encode(&message) {
                    invocation.arg(f).arg(v);
                }
                // XDEL and XADD in one script: the message is in exactly one place.
                let done: i64 = invocation
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(|e| map_err("redrive", e))?;
                moved += done as u64;
                if moved >= limit {
                    break;
                }
            }
        }
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        redis::cmd("XTRIM")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| map_err("purge", e))
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
            replay: true,
            ack_timeout_redelivery: true,
            max_message_size: Some(self.inner.config.max_message_size),
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

    async fn close(&self) -> Result<()> {
        self.inner.lifecycle.close();
        Ok(())
    }
}
