//! The in-memory transport: builder, publish, subscribe, settle and the
//! dead-letter operations.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::backend::Settler;
use transport_core::{
    Capabilities, DeadLetter, DeadLetterQueue, Delivery, DeliveryInfo, Error, ErrorKind, KeyOrdering, Message,
    Publisher, Redrive, Result, SubscribeOptions, Subscriber, Subscription, Transport,
};

use crate::config::MemoryConfig;
use crate::core::{Broker, Fetched, Requeue, Topic};
use crate::SCHEME;

/// Builds a [`MemoryTransport`].
#[derive(Debug, Clone, Default)]
pub struct MemoryBuilder {
    config: MemoryConfig,
}

impl MemoryBuilder {
    /// Share topics with every other handle of this name in the process.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Largest message in bytes (default 1 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Consumed messages kept for new groups starting at `Earliest` (default 100,000).
    pub fn replay_window(mut self, messages: usize) -> Self {
        self.config.replay_window = messages;
        self
    }

    /// The transport.
    pub fn build(self) -> MemoryTransport {
        MemoryTransport::with_config(self.config)
    }
}

/// A complete broker inside the process: groups, competing consumers,
/// per-key order, ack timeouts, nack delays, attempts and dead-letter queues.
/// Nothing survives the process.
#[derive(Clone)]
pub struct MemoryTransport {
    broker: Arc<Broker>,
    config: Arc<MemoryConfig>,
    closed: Arc<AtomicBool>,
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn named_brokers() -> &'static Mutex<HashMap<String, Weak<Broker>>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, Weak<Broker>>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

impl MemoryTransport {
    /// A private broker with default settings.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A builder.
    pub fn builder() -> MemoryBuilder {
        MemoryBuilder::default()
    }

    /// From a `memory://` URL (see [`MemoryConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::with_config(
            MemoryConfig::from_url(url).map_err(|e| e.with_backend(SCHEME))?,
        ))
    }

    /// From a configuration.
    pub fn with_config(config: MemoryConfig) -> Self {
        let broker = match &config.name {
            None => Arc::new(Broker::default()),
            Some(name) => {
                let mut brokers = named_brokers().lock().unwrap_or_else(|e| e.into_inner());
                match brokers.get(name).and_then(Weak::upgrade) {
                    Some(b) => b,
                    None => {
                        let b = Arc::new(Broker::default());
                        brokers.insert(name.clone(), Arc::downgrade(&b));
                        b
                    }
                }
            }
        };
        MemoryTransport {
            broker,
            config: Arc::new(config),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.closed.load(AtomicOrdering::Relaxed) {
            return Err(Error::new(ErrorKind::Closed, "the transport was closed")
                .with_backend(SCHEME)
                .with_operation(op));
        }
        Ok(())
    }

    fn check_message(&self, message: &Message) -> Result<()> {
        message.validate()?;
        message.check_size(self.config.max_message_size)
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Publisher for MemoryTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        let tag = |e: Error| e.with_backend(SCHEME).with_operation("publish");
        self.check_open("publish")?;
        validate_topic(topic).map_err(tag)?;
        self.check_message(&message).map_err(tag)?;
        self.broker.topic(topic).append([message], self.config.replay_window);
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let tag = |e: Error| e.with_backend(SCHEME).with_operation("publish_batch");
        self.check_open("publish_batch")?;
        validate_topic(topic).map_err(tag)?;
        // All or nothing: check every message before storing any.
        for m in &messages {
            self.check_message(m).map_err(tag)?;
        }
        self.broker.topic(topic).append(messages, self.config.replay_window);
        Ok(())
    }
}

#[async_trait]
impl Subscriber for MemoryTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.check_open("subscribe")?;
        options
            .validate(topic)
            .map_err(|e| e.with_backend(SCHEME).with_operation("subscribe"))?;
        let source = self.broker.topic(topic);
        source.join(&options.group, options.start);
        let dlq = self.broker.topic(&options.dlq_topic(topic));
        dlq.mark_dead_letter_topic();
        let group = options.group.clone();
        let consumer = Arc::new(Consumer {
            source,
            dlq,
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            options,
            outstanding: AtomicUsize::new(0),
            closed: self.closed.clone(),
            replay_window: self.config.replay_window,
        });
        let deliveries = stream::unfold((consumer, Vec::new()), |(consumer, mut buf)| async move {
            let delivery = consumer.next(&mut buf).await?;
            Some((Ok(delivery), (consumer, buf)))
        });
        Ok(transport_core::backend::subscription(topic, group, deliveries.boxed()))
    }
}

/// One subscription's view of a group.
struct Consumer {
    source: Arc<Topic>,
    dlq: Arc<Topic>,
    topic: Arc<str>,
    group: Arc<str>,
    options: SubscribeOptions,
    /// Deliveries handed out (or buffered) and not settled yet.
    outstanding: AtomicUsize,
    closed: Arc<AtomicBool>,
    replay_window: usize,
}

impl Consumer {
    /// The next delivery; `None` once the transport is closed. `buf` holds
    /// fetched messages in reverse order.
    async fn next(self: &Arc<Self>, buf: &mut Vec<Fetched>) -> Option<Delivery> {
        loop {
            if self.closed.load(AtomicOrdering::Relaxed) {
                return None;
            }
            if let Some(f) = buf.pop() {
                return Some(self.delivery(f));
            }
            // Register for wake-ups before looking, so none is missed.
            let notified = self.source.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let capacity = self
                .options
                .max_in_flight
                .saturating_sub(self.outstanding.load(AtomicOrdering::Acquire));
            let mut wake_at = None;
            if capacity > 0 {
                wake_at = self.source.fetch(&self.group, capacity, self.options.ack_timeout, buf);
                if !buf.is_empty() {
                    self.outstanding.fetch_add(buf.len(), AtomicOrdering::AcqRel);
                    buf.reverse();
                    continue;
                }
            }
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn delivery(self: &Arc<Self>, f: Fetched) -> Delivery {
        let info = DeliveryInfo {
            topic: self.topic.clone(),
            group: self.group.clone(),
            attempt: f.attempt,
            max_attempts: self.options.dead_letter.max_attempts,
            ack_timeout: self.options.ack_timeout,
            first_failure: f.first_failure,
        };
        let settler = MemorySettler {
            consumer: self.clone(),
            seq: f.seq,
            token: f.token,
            settled: false,
        };
        transport_core::backend::delivery(f.message, info, Box::new(settler))
    }

    fn slot_freed(&self) {
        self.outstanding.fetch_sub(1, AtomicOrdering::AcqRel);
    }
}

struct MemorySettler {
    consumer: Arc<Consumer>,
    seq: u64,
    token: u64,
    settled: bool,
}

impl MemorySettler {
    fn begin(&mut self) -> &Consumer {
        self.settled = true;
        self.consumer.slot_freed();
        &self.consumer
    }
}

fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

#[async_trait]
impl Settler for MemorySettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        c.source.complete(&c.group, seq, token).map(drop).map_err(tag("ack"))
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        let how = match delay {
            Some(d) if !d.is_zero() => Requeue::After(d),
            _ => Requeue::Now,
        };
        c.source.requeue(&c.group, seq, token, how).map_err(tag("nack"))
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        c.source
            .dead_letter(&c.group, seq, token, &c.dlq, dead, c.replay_window)
            .map_err(tag("dead_letter"))
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        let c = &self.consumer;
        c.source
            .extend(&c.group, self.seq, self.token, by)
            .map_err(tag("extend"))
    }
}

impl Drop for MemorySettler {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: not acked, so it goes back to the group now.
            self.consumer.slot_freed();
            let c = &self.consumer;
            let _ = c.source.requeue(&c.group, self.seq, self.token, Requeue::Now);
        }
    }
}

/// A group's dead-letter queue: the retained log of its dead-letter topic.
struct MemoryDeadLetters {
    broker: Arc<Broker>,
    name: String,
    replay_window: usize,
}

impl MemoryDeadLetters {
    fn queue(&self) -> Option<Arc<Topic>> {
        self.broker.existing_topic(&self.name)
    }
}

#[async_trait]
impl DeadLetterQueue for MemoryDeadLetters {
    fn topic(&self) -> &str {
        &self.name
    }

    async fn depth(&self) -> Result<u64> {
        Ok(self.queue().map_or(0, |q| q.len() as u64))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let Some(q) = self.queue() else { return Ok(Vec::new()) };
        Ok(q.retained()
            .into_iter()
            .take(n)
            .map(|m| DeadLetter::from_message((*m).clone()))
            .collect())
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let Some(q) = self.queue() else { return Ok(0) };
        let limit = usize::try_from(count.limit()).unwrap_or(usize::MAX);
        let taken = q.remove_front(limit);
        let mut targets = Vec::with_capacity(taken.len());
        for m in &taken {
            match redrive_message(m).and_then(|(t, msg)| validate_topic(&t).map(|()| (t, msg))) {
                Ok(target) => targets.push(target),
                Err(e) => {
                    q.restore_front(taken);
                    return Err(e.with_backend(SCHEME).with_operation("redrive"));
                }
            }
        }
        let moved = targets.len() as u64;
        for (topic, message) in targets {
            self.broker.topic(&topic).append([message], self.replay_window);
        }
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        Ok(self.queue().map_or(0, |q| q.remove_front(usize::MAX).len() as u64))
    }
}

#[async_trait]
impl Transport for MemoryTransport {
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
            max_message_size: Some(self.config.max_message_size),
            ..Capabilities::default()
        }
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.check_open("dead_letters")?;
        options.validate(topic).map_err(tag("dead_letters"))?;
        Ok(Box::new(MemoryDeadLetters {
            broker: self.broker.clone(),
            name: options.dlq_topic(topic),
            replay_window: self.config.replay_window,
        }))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, AtomicOrdering::Relaxed);
        self.broker.notify_all();
        Ok(())
    }
}
