//! Reading a group's work queue (`basic.consume` read by the
//! subscription, reopened after a channel or connection loss) and settling
//! deliveries: ack (batched, see `acks`), nack through the TTL retry
//! queues, dead-letter, the library's ack-timeout sweep.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use transport_core::backend::Settler;
use transport_core::backend::{on_drop, Backoff};
use transport_core::{
    Delivery, DeliveryInfo, Error, ErrorKind, Message, Result, SubscribeOptions, Subscriber, Subscription,
};

use crate::acks::{requeue, Outstanding, Single};
use crate::backend::{dlq_queue, now_ms, tag, work_queue, RabbitTransport};
use crate::core::{self, err, map_err, H_ATTEMPTS, H_FIRST_FAILURE};

/// What a subscription, its background tasks and its deliveries share.
pub(crate) struct Shared {
    pub(crate) transport: RabbitTransport,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) queue: String,
    pub(crate) dlq_topic: String,
    pub(crate) options: SubscribeOptions,
    /// Deliveries handed out and not settled, by (channel generation,
    /// delivery tag), and acks waiting to be sent. The sweeper nacks expired
    /// ones.
    pub(crate) outstanding: Arc<Outstanding>,
    pub(crate) generation: AtomicU64,
    /// The consuming channel, kept open while any delivery of it may still
    /// be settled (dropping the last handle closes it, requeueing the rest).
    pub(crate) channel: Mutex<Option<Channel>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last delivery is settled: send the acks still waiting, on a
        // channel kept open until they are out.
        let (outstanding, channel) = (
            self.outstanding.clone(),
            self.channel.lock().ok().and_then(|mut c| c.take()),
        );
        if outstanding.has_acks() {
            on_drop(async move {
                outstanding.flush(true).await;
                drop(channel);
            });
        }
    }
}

#[async_trait]
impl Subscriber for RabbitTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = "subscribe";
        self.check_open(op)?;
        options.validate(topic).map_err(tag(op))?;
        transport_core::backend::refuse_replay(&options).map_err(tag(op))?;
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
            outstanding: self.outstanding(options.max_in_flight),
            generation: AtomicU64::new(0),
            channel: Mutex::default(),
        });
        // Declare and start consuming before returning, so the group exists.
        let first = open_consumer(&shared).await?;
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        tokio::spawn(flusher(Arc::downgrade(&shared), shared.outstanding.clone()));
        let reader = Reader::new(shared, first);
        let deliveries = futures::stream::unfold(reader, |mut r| async move { r.next().await.map(|d| (d, r)) });
        Ok(transport_core::backend::subscription(
            topic,
            options.group,
            deliveries.boxed(),
        ))
    }
}

pub(crate) struct Consuming {
    pub(crate) channel: Channel,
    pub(crate) consumer: lapin::Consumer,
    pub(crate) tag: String,
    pub(crate) generation: u64,
}

pub(crate) async fn open_consumer(s: &Arc<Shared>) -> Result<Consuming> {
    let op = "subscribe";
    let conn = &s.transport.inner.conn;
    let connection = conn.connection().await?;
    let channel = connection.create_channel().await.map_err(|e| map_err(op, e))?;
    conn.declare_work_queue(&connection, &s.topic, &s.queue, op).await?;
    let publisher = conn.publisher().await?;
    conn.declare_dead_letter_queue(&publisher, &s.dlq_topic, op).await?;
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

/// The subscription's stream: reads the AMQP consumer directly (no task
/// in between, so a delivery costs no extra hop), registering each
/// delivery when it is handed out; reopens the consumer when the channel or
/// connection drops.
pub(crate) struct Reader {
    s: Arc<Shared>,
    current: Option<Consuming>,
    backoff: Backoff,
    /// Wait this long before reopening (set after a failed reopen).
    pause: Option<Duration>,
}

impl Reader {
    pub(crate) fn new(s: Arc<Shared>, first: Consuming) -> Self {
        Reader {
            s,
            current: Some(first),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(6)),
            pause: None,
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.s.transport.inner.lifecycle.is_closed() {
                return None;
            }
            let Some(c) = self.current.as_mut() else {
                if let Some(pause) = self.pause.take() {
                    tokio::time::sleep(pause).await;
                }
                match open_consumer(&self.s).await {
                    Ok(c) => {
                        self.backoff.reset();
                        self.current = Some(c);
                    }
                    Err(e) => {
                        self.pause = Some(self.backoff.next_pause());
                        // The first failure of a streak is the caller's to
                        // see; later ones only pace the retries.
                        if self.backoff.failures() == 1 {
                            return Some(Err(e.with_retryable(true)));
                        }
                    }
                }
                continue;
            };
            match c.consumer.next().await {
                Some(Ok(d)) => return Some(Ok(make_delivery(&self.s, c.generation, d))),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, queue = %self.s.queue, "consumer failed; reconnecting");
                    self.current = None;
                }
                None => self.current = None,
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Send the acks that wait, stop consuming, and hand back what the
        // channel prefetched but nobody took.
        let (s, current) = (self.s.clone(), self.current.take());
        on_drop(async move {
            s.outstanding.flush(true).await;
            if let Some(mut c) = current {
                let _ = c
                    .channel
                    .basic_cancel(c.tag.as_str().into(), BasicCancelOptions::default())
                    .await;
                while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), c.consumer.next()).await {
                    requeue(&d.acker).await;
                }
            }
        });
    }
}

/// Nacks (requeues) deliveries not settled within the ack timeout. Runs
/// while anything still refers to the subscription.
pub(crate) async fn sweep(weak: Weak<Shared>) {
    loop {
        let every = match weak.upgrade() {
            Some(s) => {
                for single in s.outstanding.expired(Instant::now()) {
                    tracing::debug!(queue = %s.queue, "ack timeout passed; requeueing");
                    requeue(single.acker()).await;
                    single.done();
                }
                (s.options.ack_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
            }
            None => return,
        };
        tokio::time::sleep(every).await;
    }
}

/// Sends acks that waited [`crate::acks::FLUSH_AFTER`] without filling a
/// batch. Ends with the subscription (whose drop sends the rest).
pub(crate) async fn flusher(weak: Weak<Shared>, outstanding: Arc<Outstanding>) {
    while weak.strong_count() > 0 {
        if tokio::time::timeout(Duration::from_millis(500), outstanding.wait_for_acks())
            .await
            .is_ok()
        {
            outstanding.flush(true).await;
        }
    }
}

pub(crate) fn make_delivery(s: &Arc<Shared>, generation: u64, d: lapin::message::Delivery) -> Delivery {
    let key = (generation, d.delivery_tag);
    s.outstanding
        .handed(key, Instant::now() + s.options.ack_timeout, d.acker.clone());
    // A producer that is not this library keys by routing key alone: on the
    // topic's exchange, a routing key other than the topic is the key (this
    // library also sends the `transport-key` header, which wins).
    let routing_key =
        (d.exchange.as_str() == &*s.topic && !d.routing_key.as_str().is_empty() && d.routing_key.as_str() != &*s.topic)
            .then(|| d.routing_key.as_str().to_owned());
    let mut decoded = core::decode(&d.properties, d.data);
    if decoded.message.key.is_none() {
        decoded.message.key = routing_key;
    }
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
        stable_id: decoded.stable_id,
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

pub(crate) struct RabbitSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: (u64, u64),
    pub(crate) message: Arc<Message>,
    pub(crate) attempt: u32,
    pub(crate) first_failure_ms: Option<u64>,
    pub(crate) settled: bool,
}

pub(crate) fn expired(op: &'static str) -> Error {
    err(
        ErrorKind::DeliveryExpired,
        op,
        "the ack timeout passed and the message was requeued, or its channel closed",
    )
}

/// Ack the original once its copy (retry or dead letter) is stored, so a
/// crash in between duplicates and never loses; if storing failed, requeue
/// it and return why.
async fn ack_once_stored(single: Single, op: &'static str, stored: Result<()>) -> Result<()> {
    let result = match stored {
        Ok(()) => single
            .acker()
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|e| map_err(op, e)),
        Err(e) => {
            requeue(single.acker()).await;
            Err(e)
        }
    };
    single.done();
    result
}

impl RabbitSettler {
    /// Take the delivery to settle it with a frame of its own.
    fn single(&mut self, op: &'static str) -> Result<Single> {
        self.settled = true;
        self.shared.outstanding.take(self.key).ok_or_else(|| expired(op))
    }
}

#[async_trait]
impl Settler for RabbitSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settled = true;
        match self.shared.outstanding.ack(self.key).await {
            true => Ok(()),
            false => Err(expired("ack")),
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let single = self.single("nack")?;
        let delay = delay.filter(|d| !d.is_zero());
        let Some(delay) = delay else {
            let result = single
                .acker()
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| map_err("nack", e));
            single.done();
            return result;
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
        ack_once_stored(single, "nack", result).await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let single = self.single("dead_letter")?;
        let s = &self.shared;
        let conn = &s.transport.inner.conn;
        let stored = async {
            let ch = conn.publisher().await?;
            conn.declare_dead_letter_queue(&ch, &s.dlq_topic, "dead_letter").await?;
            s.transport
                .publish_to("dead_letter", &s.dlq_topic, &s.dlq_topic, &dead, &[])
                .await
        }
        .await;
        ack_once_stored(single, "dead_letter", stored).await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        match self.shared.outstanding.extend(self.key, Instant::now() + by) {
            true => Ok(()),
            false => Err(expired("extend")),
        }
    }
}

impl Drop for RabbitSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: requeue now rather than after the ack timeout.
        // Without a runtime the sweeper cannot run either; the message
        // returns when the channel closes.
        // Taken and dropped unsent, a `Single` requeues it.
        drop(self.shared.outstanding.take(self.key));
    }
}
