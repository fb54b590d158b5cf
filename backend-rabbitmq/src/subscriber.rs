//! Reading a group's work queue: `basic.consume` read by the subscription,
//! reopened after a channel or connection loss, and the library's
//! ack-timeout sweep; each delivery is settled by `settle`.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use transport_core::backend::{on_drop, Deliveries, RawSubscribe, ReconnectBackoff, SubscribeRequest};
use transport_core::{Delivery, ErrorKind, Result};

use crate::acks::{requeue, Outstanding};
use crate::core::{self, err, map_err, Rabbit};
use crate::names;
use crate::settle::{RabbitSettler, Shared};

#[async_trait]
impl RawSubscribe for Rabbit {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        let (topic, options) = (request.topic(), request.options());
        let queue = names::work_queue(topic, &options.group);
        let dlq_topic = request.dlq_topic();
        if queue.len() > 250 || names::dlq_queue(&dlq_topic).len() > 250 {
            return Err(err(
                ErrorKind::InvalidArgument,
                "topic and group names are too long for RabbitMQ queue names (255 bytes)",
            ));
        }
        let shared = Arc::new(Shared {
            rabbit: self.clone(),
            request: request.clone(),
            queue,
            dlq_topic,
            outstanding: self.outstanding(options.max_in_flight),
            generation: AtomicU64::new(0),
            channel: Mutex::default(),
        });
        // Declare before returning, so the group exists (and a refusal is
        // the caller's error); consume only once the stream is read, so a
        // subscription that is never read takes no messages. Prefetched
        // messages a subscription hands back count as a delivery on quorum
        // queues before RabbitMQ 4.3, so the next reader would see them one
        // attempt further on.
        declare_queues(&shared).await?;
        tokio::spawn(sweep(Arc::downgrade(&shared)));
        tokio::spawn(flusher(Arc::downgrade(&shared), shared.outstanding.clone()));
        let reader = Reader::new(shared);
        Ok(futures::stream::unfold(reader, |mut r| async move { r.next().await.map(|d| (d, r)) }).boxed())
    }
}

pub(crate) struct Consuming {
    pub(crate) channel: Channel,
    pub(crate) consumer: lapin::Consumer,
    pub(crate) tag: String,
    pub(crate) generation: u64,
}

/// The group's work queue (bound to the topic) and its dead-letter queue.
async fn declare_queues(s: &Shared) -> Result<()> {
    let conn = &s.rabbit.inner.conn;
    let connection = conn.connection().await?;
    conn.declare_work_queue(&connection, s.request.topic(), &s.queue)
        .await?;
    let publisher = conn.publisher().await?;
    conn.declare_dead_letter_queue(&publisher, &s.dlq_topic).await?;
    // The retry queues of the configured delays, so that without
    // provisioning a missing one fails the subscribe, not a nack.
    for delay in &conn.config().retry_delays {
        let ms = delay.as_millis() as u64;
        conn.declare_retry_queue(&publisher, &names::retry_queue(&s.queue, ms), &s.queue, ms)
            .await?;
    }
    Ok(())
}

/// A channel consuming the work queue (declared again first when `declare`:
/// after a reconnect the broker may be a node that lost them).
pub(crate) async fn open_consumer(s: &Arc<Shared>, declare: bool) -> Result<Consuming> {
    if declare {
        declare_queues(s).await?;
    }
    let connection = s.rabbit.inner.conn.connection().await?;
    let channel = connection.create_channel().await.map_err(map_err)?;
    channel
        .basic_qos(
            s.request.options().max_in_flight.min(u16::MAX as usize) as u16,
            BasicQosOptions::default(),
        )
        .await
        .map_err(map_err)?;
    let tag = names::consumer_tag();
    let consumer = channel
        .basic_consume(
            s.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(map_err)?;
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
    backoff: ReconnectBackoff,
    /// Wait this long before reopening (set after a failed reopen).
    pause: Option<Duration>,
    /// The queues were declared by `read` and nothing was consumed yet.
    declared: bool,
    /// Ended by an error no reopening can fix.
    closed: bool,
}

impl Reader {
    pub(crate) fn new(s: Arc<Shared>) -> Self {
        Reader {
            s,
            current: None,
            backoff: ReconnectBackoff::new(Duration::from_millis(200), Duration::from_secs(6)),
            pause: None,
            declared: true,
            closed: false,
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.closed || self.s.request.is_closed() {
                return None;
            }
            let Some(c) = self.current.as_mut() else {
                if let Some(pause) = self.pause.take() {
                    tokio::time::sleep(pause).await;
                }
                match open_consumer(&self.s, !std::mem::take(&mut self.declared)).await {
                    Ok(c) => {
                        self.backoff.reset();
                        self.current = Some(c);
                    }
                    // Nothing a reconnect can fix (no permission to read the
                    // queue): the stream ends with it.
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::Unauthorized
                                | ErrorKind::Forbidden
                                | ErrorKind::Tls
                                | ErrorKind::InvalidArgument
                        ) =>
                    {
                        self.closed = true;
                        return Some(Err(e.with_retryable(false)));
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
                (s.request.options().ack_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
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
        .handed(key, Instant::now() + s.request.options().ack_timeout, d.acker.clone());
    // A producer that is not this library keys by routing key alone: on the
    // topic's exchange, a routing key other than the topic is the key (this
    // library also sends the `transport-key` header, which wins).
    let routing_key = (d.exchange.as_str() == s.request.topic()
        && !d.routing_key.as_str().is_empty()
        && d.routing_key.as_str() != s.request.topic())
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
    let mut info = s.request.info(attempt, first_failure);
    info.stable_id = decoded.stable_id;
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
