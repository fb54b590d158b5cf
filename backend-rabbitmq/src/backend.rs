//! The RabbitMQ transport: builder, publish, subscribe, settle and the
//! dead-letter operations.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Acker;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use tokio::sync::mpsc;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::backend::Settler;
use transport_core::headers::DLQ_GROUP;
use transport_core::{
    Capabilities, DeadLetter, DeadLetterQueue, Delivery, DeliveryInfo, Error, ErrorKind, KeyOrdering, Message,
    Publisher, Redrive, Result, SubscribeOptions, Subscriber, Subscription, Transport,
};

use crate::config::RabbitConfig;
use crate::core::{self, err, map_err, Conn, H_ATTEMPTS, H_FIRST_FAILURE};
use crate::SCHEME;

/// Builds a [`RabbitTransport`].
#[derive(Debug, Clone, Default)]
pub struct RabbitBuilder {
    config: RabbitConfig,
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
    /// Connect.
    pub async fn connect(self) -> Result<RabbitTransport> {
        RabbitTransport::with_config(self.config).await
    }
}

/// A RabbitMQ transport (see the crate docs for the mapping).
#[derive(Clone)]
pub struct RabbitTransport {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    closed: AtomicBool,
}

impl fmt::Debug for RabbitTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitTransport")
            .field("config", self.inner.conn.config())
            .finish_non_exhaustive()
    }
}

fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

fn work_queue(topic: &str, group: &str) -> String {
    // '/' is not allowed in topic or group names: no collision with anything else.
    format!("{topic}/{group}")
}

fn dlq_queue(dlq_topic: &str) -> String {
    format!("{dlq_topic}/#dlq")
}

fn now_ms() -> u64 {
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
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.inner.closed.load(AtomicOrdering::Relaxed) {
            return Err(err(ErrorKind::Closed, op, "the transport was closed"));
        }
        Ok(())
    }

    fn check_message(&self, m: &Message) -> Result<()> {
        m.validate()?;
        m.check_size(self.inner.conn.config().max_message_size)
    }

    /// Publish (mandatory, persistent) and wait for the confirm. An
    /// unroutable message (no group subscribed yet) is `NotFound`, not lost.
    async fn send(
        &self,
        op: &'static str,
        ch: &Channel,
        exchange: &str,
        routing_key: &str,
        m: &Message,
        props: BasicProperties,
    ) -> Result<lapin::PublisherConfirm> {
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &m.payload,
            props,
        )
        .await
        .map_err(|e| map_err(op, e))
    }

    fn confirmed(op: &'static str, target: &str, id: &str, c: Confirmation) -> Result<()> {
        match c {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(err(
                ErrorKind::NotFound,
                op,
                format!("message {id} to {target} was returned unroutable: no group has subscribed to the topic yet (RabbitMQ keeps no messages without a queue)"),
            )),
            Confirmation::Nack(_) => Err(err(ErrorKind::Backend, op, format!("RabbitMQ refused message {id} (nack)"))
                .with_retryable(true)),
        }
    }

    async fn publish_to(
        &self,
        op: &'static str,
        exchange: &str,
        routing_key: &str,
        m: &Message,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let ch = self.inner.conn.publisher().await?;
        let confirm = self
            .send(op, &ch, exchange, routing_key, m, core::properties(m, extra))
            .await?;
        let c = confirm.await.map_err(|e| map_err(op, e))?;
        Self::confirmed(op, if exchange.is_empty() { routing_key } else { exchange }, &m.id, c)
    }
}

#[async_trait]
impl Publisher for RabbitTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.publish_batch_inner("publish", topic, vec![message]).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.publish_batch_inner("publish_batch", topic, messages).await
    }
}

impl RabbitTransport {
    async fn publish_batch_inner(&self, op: &'static str, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_open(op)?;
        validate_topic(topic).map_err(tag(op))?;
        for m in &messages {
            self.check_message(m).map_err(tag(op))?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let ch = self.inner.conn.publisher().await?;
        self.inner.conn.declare_exchange(&ch, topic, op).await?;
        // Send all on one channel (in order), then wait for every confirm.
        let mut confirms = Vec::with_capacity(messages.len());
        for m in &messages {
            let routing_key = m.key.as_deref().unwrap_or(topic);
            let c = self
                .send(op, &ch, topic, routing_key, m, core::properties(m, &[]))
                .await?;
            confirms.push((m.id.as_str(), c));
        }
        for (id, c) in confirms {
            Self::confirmed(op, topic, id, c.await.map_err(|e| map_err(op, e))?)?;
        }
        Ok(())
    }
}

/// What a subscription, its pump task and its deliveries share.
struct Shared {
    transport: RabbitTransport,
    topic: Arc<str>,
    group: Arc<str>,
    queue: String,
    dlq_topic: String,
    options: SubscribeOptions,
    /// Deliveries handed out or buffered and not settled: (channel generation,
    /// delivery tag) -> deadline and acker. The sweeper nacks expired ones.
    pending: Mutex<HashMap<(u64, u64), (Instant, Acker)>>,
    generation: AtomicU64,
    /// The consuming channel, kept open while any delivery of it may still
    /// be settled (dropping the last handle closes it, requeueing the rest).
    channel: Mutex<Option<Channel>>,
}

impl Shared {
    fn take_pending(&self, key: (u64, u64)) -> Option<Acker> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .map(|(_, a)| a)
    }
}

#[async_trait]
impl Subscriber for RabbitTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        let queue = work_queue(topic, &options.group);
        let dlq_topic = options.dlq_topic(topic);
        if queue.len() > 250 || dlq_queue(&dlq_topic).len() > 250 {
            return Err(err(
                ErrorKind::InvalidArgument,
                op,
                "topic and group names are too long for RabbitMQ queue names (255 bytes)",
            ));
        }
        let shared = Arc::new(Shared {
            transport: self.clone(),
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            queue,
            dlq_topic,
            options: options.clone(),
            pending: Mutex::default(),
            generation: AtomicU64::new(0),
            channel: Mutex::default(),
        });
        // Declare and start consuming before returning, so the group exists.
        let first = open_consumer(&shared).await?;
        let (tx, rx) = mpsc::channel(options.max_in_flight.max(1));
        tokio::spawn(pump(shared.clone(), first, tx));
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        let deliveries = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|d| (d, rx)) });
        Ok(transport_core::backend::subscription(
            topic,
            options.group,
            deliveries.boxed(),
        ))
    }
}

struct Consuming {
    channel: Channel,
    consumer: lapin::Consumer,
    tag: String,
    generation: u64,
}

async fn open_consumer(s: &Arc<Shared>) -> Result<Consuming> {
    let op = "subscribe";
    let conn = &s.transport.inner.conn;
    let connection = conn.connection().await?;
    let channel = connection.create_channel().await.map_err(|e| map_err(op, e))?;
    let publisher = conn.publisher().await?;
    conn.declare_queue(&publisher, &s.topic, &s.queue, core::work_queue_args(conn.config()), op)
        .await?;
    conn.declare_queue(
        &publisher,
        &s.dlq_topic,
        &dlq_queue(&s.dlq_topic),
        FieldTable::default(),
        op,
    )
    .await?;
    channel
        .basic_qos(
            s.options.max_in_flight.min(u16::MAX as usize) as u16,
            BasicQosOptions::default(),
        )
        .await
        .map_err(|e| map_err(op, e))?;
    let tag = format!("transport-{}", uuid::Uuid::now_v7().simple());
    let consumer = channel
        .basic_consume(
            s.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_err(op, e))?;
    let generation = s.generation.fetch_add(1, AtomicOrdering::Relaxed) + 1;
    *s.channel.lock().unwrap_or_else(|e| e.into_inner()) = Some(channel.clone());
    Ok(Consuming {
        channel,
        consumer,
        tag,
        generation,
    })
}

/// Moves deliveries from the AMQP consumer to the subscription, registering
/// each with its deadline; reconnects when the channel or connection drops.
async fn pump(s: Arc<Shared>, first: Consuming, tx: mpsc::Sender<Result<Delivery>>) {
    let mut current = Some(first);
    let mut failures = 0u32;
    loop {
        if s.transport.inner.closed.load(AtomicOrdering::Relaxed) || tx.is_closed() {
            break;
        }
        let Some(c) = current.as_mut() else {
            match open_consumer(&s).await {
                Ok(c) => {
                    failures = 0;
                    current = Some(c);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 && tx.send(Err(e.with_retryable(true))).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures.min(5)))).await;
                }
            }
            continue;
        };
        tokio::select! {
            _ = tx.closed() => break,
            next = c.consumer.next() => match next {
                Some(Ok(d)) => {
                    let delivery = make_delivery(&s, c.generation, d);
                    // When the subscription is gone the delivery is dropped,
                    // which hands it back to the queue.
                    if tx.send(Ok(delivery)).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, queue = %s.queue, "consumer failed; reconnecting");
                    current = None;
                }
                None => current = None,
            }
        }
    }
    // Stop consuming, and hand back what the channel prefetched but nobody took.
    if let Some(mut c) = current {
        let _ = c
            .channel
            .basic_cancel(c.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), c.consumer.next()).await {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// Nacks (requeues) deliveries not settled within the ack timeout. Runs
/// while anything still refers to the subscription.
async fn sweep(weak: Weak<Shared>) {
    loop {
        let every = match weak.upgrade() {
            Some(s) => {
                let now = Instant::now();
                let expired: Vec<Acker> = {
                    let mut pending = s.pending.lock().unwrap_or_else(|e| e.into_inner());
                    let keys: Vec<_> = pending
                        .iter()
                        .filter(|(_, (d, _))| *d <= now)
                        .map(|(k, _)| *k)
                        .collect();
                    keys.into_iter()
                        .filter_map(|k| pending.remove(&k).map(|(_, a)| a))
                        .collect()
                };
                for acker in expired {
                    tracing::debug!(queue = %s.queue, "ack timeout passed; requeueing");
                    let _ = acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                }
                (s.options.ack_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
            }
            None => return,
        };
        tokio::time::sleep(every).await;
    }
}

fn make_delivery(s: &Arc<Shared>, generation: u64, d: lapin::message::Delivery) -> Delivery {
    let key = (generation, d.delivery_tag);
    s.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (Instant::now() + s.options.ack_timeout, d.acker.clone()));
    let tag_text = d.delivery_tag.to_string();
    let decoded = core::decode(&d.properties, d.data, || tag_text);
    let attempt = decoded.previous_attempts + 1;
    let first_failure = decoded
        .first_failure_ms
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let message = Arc::new(decoded.message);
    let info = DeliveryInfo {
        topic: s.topic.clone(),
        group: s.group.clone(),
        attempt,
        max_attempts: s.options.dead_letter.max_attempts,
        ack_timeout: s.options.ack_timeout,
        first_failure,
    };
    let settler = RabbitSettler {
        shared: s.clone(),
        key,
        message: message.clone(),
        attempt,
        first_failure_ms: decoded.first_failure_ms,
        settled: false,
    };
    transport_core::backend::delivery(message, info, Box::new(settler))
}

struct RabbitSettler {
    shared: Arc<Shared>,
    key: (u64, u64),
    message: Arc<Message>,
    attempt: u32,
    first_failure_ms: Option<u64>,
    settled: bool,
}

fn expired(op: &'static str) -> Error {
    err(
        ErrorKind::DeliveryExpired,
        op,
        "the ack timeout passed and the message was requeued, or its channel closed",
    )
}

impl RabbitSettler {
    fn acker(&mut self, op: &'static str) -> Result<Acker> {
        self.settled = true;
        self.shared.take_pending(self.key).ok_or_else(|| expired(op))
    }
}

#[async_trait]
impl Settler for RabbitSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let acker = self.acker("ack")?;
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|e| map_err("ack", e))
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let acker = self.acker("nack")?;
        let delay = delay.filter(|d| !d.is_zero());
        let Some(delay) = delay else {
            return acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| map_err("nack", e));
        };
        // No delayed-message plugin: park a copy in a TTL queue that
        // dead-letters back to the work queue, then ack the original.
        let s = &self.shared;
        let conn = &s.transport.inner.conn;
        let ms = core::delay_bucket_ms(delay.as_millis() as u64);
        let retry = format!("{}/retry-{ms}", s.queue);
        let result = async {
            let ch = conn.publisher().await?;
            conn.declare_retry_queue(&ch, &retry, &s.queue, ms).await?;
            let first = self.first_failure_ms.unwrap_or_else(now_ms);
            let extra = [
                (H_ATTEMPTS, self.attempt.to_string()),
                (H_FIRST_FAILURE, first.to_string()),
            ];
            s.transport.publish_to("nack", "", &retry, &self.message, &extra).await
        }
        .await;
        match result {
            Ok(()) => acker
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(|e| map_err("nack", e)),
            Err(e) => {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                Err(e)
            }
        }
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let acker = self.acker("dead_letter")?;
        let s = &self.shared;
        let ch = s.transport.inner.conn.publisher().await;
        let stored = match ch {
            Ok(ch) => {
                match s
                    .transport
                    .inner
                    .conn
                    .declare_queue(
                        &ch,
                        &s.dlq_topic,
                        &dlq_queue(&s.dlq_topic),
                        FieldTable::default(),
                        "dead_letter",
                    )
                    .await
                {
                    Ok(()) => {
                        s.transport
                            .publish_to("dead_letter", &s.dlq_topic, &s.dlq_topic, &dead, &[])
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        // Stored first, then removed: a crash in between duplicates, never loses.
        match stored {
            Ok(()) => acker
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(|e| map_err("dead_letter", e)),
            Err(e) => {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                Err(e)
            }
        }
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&self.key) {
            Some((deadline, _)) => {
                *deadline = Instant::now() + by;
                Ok(())
            }
            None => Err(expired("extend")),
        }
    }
}

impl Drop for RabbitSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: requeue now rather than after the ack timeout.
        if let Some(acker) = self.shared.take_pending(self.key) {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let _ = acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    });
                }
                Err(_) => {
                    // Without a runtime the sweeper cannot run either; the
                    // message returns when the channel closes.
                }
            }
        }
    }
}

/// A group's dead-letter queue: the classic queue bound to the DLQ topic.
struct RabbitDeadLetters {
    transport: RabbitTransport,
    topic: String,
    queue: String,
}

impl RabbitDeadLetters {
    async fn channel(&self, op: &'static str) -> Result<Channel> {
        let conn = &self.transport.inner.conn;
        let ch = conn
            .connection()
            .await?
            .create_channel()
            .await
            .map_err(|e| map_err(op, e))?;
        let publisher = conn.publisher().await?;
        conn.declare_queue(&publisher, &self.topic, &self.queue, FieldTable::default(), op)
            .await?;
        Ok(ch)
    }
}

#[async_trait]
impl DeadLetterQueue for RabbitDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        let ch = self.channel("depth").await?;
        let q = ch
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map_err("depth", e))?;
        let _ = ch.close(200, "done".into()).await;
        Ok(q.message_count() as u64)
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let ch = self.channel("peek").await?;
        let mut out = Vec::new();
        while out.len() < n {
            let Some(got) = ch
                .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(|e| map_err("peek", e))?
            else {
                break;
            };
            let d = got.delivery;
            let tag = d.delivery_tag.to_string();
            out.push(DeadLetter::from_message(
                core::decode(&d.properties, d.data, || tag).message,
            ));
        }
        // Closing the channel puts every fetched message back where it was.
        let _ = ch.close(200, "peeked".into()).await;
        Ok(out)
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let ch = self.channel("redrive").await?;
        let mut moved = 0;
        while moved < count.limit() {
            let Some(got) = ch
                .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(|e| map_err("redrive", e))?
            else {
                break;
            };
            let d = got.delivery;
            let tag = d.delivery_tag.to_string();
            let dead = core::decode(&d.properties, d.data, || tag).message;
            let (topic, message) = redrive_message(&dead).map_err(tag_op("redrive"))?;
            validate_topic(&topic).map_err(tag_op("redrive"))?;
            // Straight into the failing group's queue: other groups never see it.
            let published = match dead.headers.get(DLQ_GROUP) {
                Some(group) => {
                    self.transport
                        .publish_to("redrive", "", &work_queue(&topic, group), &message, &[])
                        .await
                }
                None => self.transport.publish_batch(&topic, vec![message]).await,
            };
            if let Err(e) = published {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return Err(e);
            }
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| map_err("redrive", e))?;
            moved += 1;
        }
        let _ = ch.close(200, "redriven".into()).await;
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        let ch = self.channel("purge").await?;
        let n = ch
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| map_err("purge", e))?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(n as u64)
    }
}

fn tag_op(op: &'static str) -> impl Fn(Error) -> Error {
    tag(op)
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

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, AtomicOrdering::Relaxed);
        self.inner.conn.close().await;
        Ok(())
    }
}
